//! The job ledger (`reaper_jobs`): accepting jobs idempotently, reading them, claiming them
//! under a lease and recording how each run ended.
//!
//! Architecture invariant: a job exists for reaper once it is a row here; queues only carry
//! its id. Every transition of a running job is conditioned on its lease token.

use chrono::{DateTime, Utc};
use reaper_core::catalog::Catalog;
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::JobState;
use reaper_core::sql::rows;
use reaper_core::sql::{Backend, Statement, ledger, session};
use reaper_core::validate::validate;
use sea_orm::QueryResult;

use crate::database::{Database, DbRow};
use crate::error::EngineError;

pub use reaper_core::sql::ledger::{ClaimFrom, Lease, Transition};
pub use reaper_core::sql::rows::{ActionRecord, AuditRecord, BatchPoint, JobRecord};

/// Reads a row of `T`'s columns by name.
pub(crate) fn decode<'r, T>(
    row: &'r QueryResult,
    backend: Backend,
    decoder: fn(&DbRow<'r>) -> Result<T, sea_orm::DbErr>,
) -> Result<T, EngineError> {
    Ok(decoder(&DbRow { row, backend })?)
}

/// The result of submitting a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The job in the ledger (the existing one for a repeated idempotency key).
    pub job: JobRecord,
    /// False when the idempotency key was already known and nothing new was created.
    pub created: bool,
}

/// Who will run a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunBy {
    /// The daemon's workers, through the queue: the job is written `pending`.
    Queue,
    /// A foreground run (`reaper purge`): the job is written `paused`, so no daemon takes it;
    /// the caller claims it with [`ClaimFrom::Resume`].
    Foreground,
}

/// Validates `request` against `catalog` and writes it to the ledger, `pending` or `paused`
/// as `run_by` says. A repeated idempotency key returns the existing job. An invalid job is
/// refused and never written. `default_max_attempts` applies unless the target sets its own.
/// `policy` names the retention policy submitting it (none for producers).
pub async fn submit(
    db: &Database,
    catalog: &Catalog,
    request: &JobRequest,
    default_max_attempts: u32,
    now: DateTime<Utc>,
    policy: Option<&str>,
    run_by: RunBy,
) -> Result<Submitted, EngineError> {
    let validated = validate(request, catalog, now)?;
    let max_attempts = validated
        .target
        .max_attempts
        .unwrap_or(default_max_attempts);
    let id = uuid::Uuid::now_v7().to_string();
    let key = request
        .idempotency_key
        .clone()
        .unwrap_or_else(|| id.clone());
    let request_json = serde_json::to_string(request)
        .map_err(|error| EngineError::Corrupt(format!("cannot encode the job request: {error}")))?;
    let statement = ledger::insert_job(
        db.backend(),
        &ledger::NewJob {
            id: &id,
            idempotency_key: &key,
            target: &request.target,
            request_json: &request_json,
            max_attempts,
            now,
            policy,
            paused: run_by == RunBy::Foreground,
        },
    );
    let inserted = match db.backend() {
        Backend::Postgres | Backend::Sqlite => first_job(db, &statement).await?,
        Backend::MySql => {
            db.execute(&statement).await?;
            None
        }
    };
    let job = match inserted {
        Some(job) => job,
        None => get_by_key(db, &key).await?.ok_or_else(|| {
            EngineError::Corrupt(format!(
                "job with idempotency key `{key}` vanished after insert"
            ))
        })?,
    };
    // Affected-row counts of an upsert differ per backend; whose id the key maps to does not.
    let created = job.id == id;
    // A producer's key stands for one request: the same request again is a safe retry, a
    // different one is a producer bug that must not silently skip the new deletion. Compared
    // as decoded requests, so key order and spacing do not matter. (Retention windows are
    // keyed by the scheduler, whose request for a window is its own.)
    if !created && policy.is_none() {
        let stored: JobRequest = serde_json::from_str(&job.request).map_err(|error| {
            EngineError::Corrupt(format!(
                "the stored request of job {} cannot be read: {error}",
                job.id
            ))
        })?;
        if stored != *request {
            return Err(EngineError::KeyReused {
                key,
                job_id: job.id,
            });
        }
    }
    Ok(Submitted { job, created })
}

/// One job by id.
pub async fn get(db: &Database, id: &str) -> Result<Option<JobRecord>, EngineError> {
    first_job(db, &ledger::get_job(db.backend(), id)).await
}

/// One job by idempotency key.
pub async fn get_by_key(db: &Database, key: &str) -> Result<Option<JobRecord>, EngineError> {
    first_job(db, &ledger::get_job_by_key(db.backend(), key)).await
}

/// The newest jobs of retention policy `policy`, only those in `states` unless it is empty.
pub async fn policy_jobs(
    db: &Database,
    policy: &str,
    states: &[JobState],
    limit: u32,
) -> Result<Vec<JobRecord>, EngineError> {
    all_jobs(
        db,
        &ledger::policy_jobs(db.backend(), policy, states, limit),
    )
    .await
}

/// The daemons' work ([`JobState::ACTIVE`]: `pending` or `running`), oldest first; `paused`
/// jobs belong to whoever resumes them.
pub async fn active(db: &Database, limit: u32) -> Result<Vec<JobRecord>, EngineError> {
    all_jobs(db, &ledger::active_jobs(db.backend(), limit)).await
}

/// Jobs the queue may have lost (see `reaper_core::sql::ledger::stranded_jobs`), each marked
/// as re-enqueued now. A `pending` job counts as lost once untouched for `pending_quiet`; a
/// `running` one as soon as its lease expired (its worker is dead), then again every `lease`
/// while nobody claims it. The caller enqueues them; a job another worker takes meanwhile is
/// simply not claimed twice.
pub async fn take_stranded(
    db: &Database,
    now: DateTime<Utc>,
    pending_quiet: std::time::Duration,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<JobRecord>, EngineError> {
    let before = |quiet: std::time::Duration| {
        chrono::Duration::from_std(quiet)
            .ok()
            .and_then(|quiet| now.checked_sub_signed(quiet))
            .unwrap_or(now)
    };
    let rows = db
        .query_all(&ledger::stranded_jobs(
            db.backend(),
            now,
            before(pending_quiet),
            before(lease.min(pending_quiet)),
            limit,
        ))
        .await?;
    let mut stranded = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = decode(row, db.backend(), JobRecord::decode)?;
        if db
            .execute(&ledger::touch_stranded(
                db.backend(),
                &job.id,
                job.state,
                now,
            ))
            .await?
            == 1
        {
            stranded.push(job);
        }
    }
    Ok(stranded)
}

/// Claims a job with a fresh lease (see `reaper_core::sql::ledger::claim`), counting an
/// attempt. `None` when the job is finished, unknown, held by a live lease, in a state `from`
/// does not take, or out of attempts (see [`claim_used_up`]).
pub async fn claim(
    db: &Database,
    lease: &Lease<'_>,
    from: ClaimFrom,
) -> Result<Option<JobRecord>, EngineError> {
    take_lease(db, lease.id, &ledger::claim(db.backend(), lease, from)).await
}

/// Takes the lease of a job [`claim`] refused because its attempts are used up, counting
/// nothing, so that its holder records it `dead`. `None` when the job has attempts left or
/// [`claim`] would not take it for another reason.
pub async fn claim_used_up(
    db: &Database,
    lease: &Lease<'_>,
    from: ClaimFrom,
) -> Result<Option<JobRecord>, EngineError> {
    take_lease(
        db,
        lease.id,
        &ledger::claim_used_up(db.backend(), lease, from),
    )
    .await
}

/// Runs a lease-taking `statement` on job `id` and returns the job it took.
async fn take_lease(
    db: &Database,
    id: &str,
    statement: &Statement,
) -> Result<Option<JobRecord>, EngineError> {
    match db.backend() {
        // No UPDATE … RETURNING on MySQL: the update's match count decides, then a read.
        Backend::MySql => {
            if db.execute(statement).await? == 1 {
                get(db, id).await
            } else {
                Ok(None)
            }
        }
        Backend::Postgres | Backend::Sqlite => first_job(db, statement).await,
    }
}

/// Applies a transition under the lease. False when the lease was lost (nothing changed).
pub async fn transition(
    db: &Database,
    id: &str,
    token: &str,
    now: DateTime<Utc>,
    to: &Transition<'_>,
) -> Result<bool, EngineError> {
    Ok(db
        .execute(&ledger::transition(db.backend(), id, token, now, to))
        .await?
        == 1)
}

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job was `pending` or `paused` and is `cancelled` now.
    Cancelled(JobRecord),
    /// The job is running; it stops at its next batch boundary.
    Stopping(JobRecord),
    /// The job had finished already; nothing changed.
    Finished(JobRecord),
}

/// Asks job `id` to stop (see `reaper_core::sql::ledger::request_cancel`), recorded as asked
/// by nobody in particular; the API and the CLI use [`cancel`]. `None` for an unknown id.
pub async fn request_cancel(
    db: &Database,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<CancelOutcome>, EngineError> {
    cancel(db, id, "unknown", now).await
}

/// Asks job `id` to stop on behalf of `actor` (see `reaper_core::sql::ledger::request_cancel`),
/// and records who asked in the same transaction. `None` for an unknown id.
pub async fn cancel(
    db: &Database,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<CancelOutcome>, EngineError> {
    match get(db, id).await? {
        None => return Ok(None),
        Some(job) if job.is_finished() => return Ok(Some(CancelOutcome::Finished(job))),
        Some(_) => {}
    }
    let statement = ledger::request_cancel(db.backend(), id, now);
    let acted = act(db, id, Action::Cancel, actor, now, &statement).await?;
    Ok(acted.map(|acted| {
        let job = acted.job();
        match job.state {
            JobState::Cancelled => CancelOutcome::Cancelled(job),
            JobState::Pending | JobState::Running => CancelOutcome::Stopping(job),
            // It finished (or its foreground run paused it) on its own between the two reads.
            JobState::Paused | JobState::Done | JobState::Dead => CancelOutcome::Finished(job),
        }
    }))
}

/// An operator action on a job, as recorded in `reaper_job_actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop for good ([`cancel`]).
    Cancel,
    /// Stop at a batch boundary, keeping the checkpoint ([`pause`]).
    Pause,
    /// Hand a paused job back to the daemons ([`resume`]).
    Resume,
    /// One more attempt for a dead job ([`retry`]).
    Retry,
    /// A retention policy's run submitted now, off its schedule ([`record_action`]).
    Run,
    /// A restore job of this (archive or soft) job submitted ([`record_action`]).
    Restore,
}

impl Action {
    /// The stored word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Retry => "retry",
            Action::Run => "run",
            Action::Restore => "restore",
        }
    }
}

/// What [`pause`], [`resume`] and [`retry`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// The action applied; the job as it is now.
    Changed(JobRecord),
    /// The job's state does not take the action (a pause of a finished job, a resume of a
    /// running one); nothing changed.
    Refused(JobRecord),
}

impl Acted {
    /// The job, either way.
    pub fn job(self) -> JobRecord {
        match self {
            Acted::Changed(job) | Acted::Refused(job) => job,
        }
    }
}

/// Asks job `id` to pause (see `reaper_core::sql::ledger::request_pause`): a pending job is
/// `paused` now, a running one at its next batch boundary. `None` for an unknown id.
pub async fn pause(
    db: &Database,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Acted>, EngineError> {
    let statement = ledger::request_pause(db.backend(), id, now);
    act(db, id, Action::Pause, actor, now, &statement).await
}

/// Makes a `paused` job `pending` again; the caller enqueues it. `None` for an unknown id.
pub async fn resume(
    db: &Database,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Acted>, EngineError> {
    let statement = ledger::resume_paused(db.backend(), id, now);
    act(db, id, Action::Resume, actor, now, &statement).await
}

/// Gives a `dead` job one more attempt from its checkpoint; the caller enqueues it. `None` for
/// an unknown id.
pub async fn retry(
    db: &Database,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Acted>, EngineError> {
    let statement = ledger::retry_dead(db.backend(), id, now);
    act(db, id, Action::Retry, actor, now, &statement).await
}

/// Records an action whose change was made elsewhere (a policy run now is a job submitted
/// through the producer).
pub async fn record_action(
    db: &Database,
    job_id: &str,
    action: Action,
    actor: &str,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    db.execute(&ledger::insert_action(
        db.backend(),
        &ledger::ActionEntry {
            job_id,
            action: action.as_str(),
            actor,
            outcome,
            at: now,
        },
    ))
    .await?;
    Ok(())
}

/// A job's recorded actions, newest first.
pub async fn actions_of_job(
    db: &Database,
    job_id: &str,
    limit: u32,
) -> Result<Vec<ActionRecord>, EngineError> {
    let rows = db
        .query_all(&ledger::job_actions(db.backend(), job_id, limit))
        .await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), ActionRecord::decode))
        .collect()
}

/// Runs an action's `statement` on job `id` and, when it changed the job, records the action
/// (with what it left the job as) in the same transaction. On PostgreSQL a running job's batch
/// holds its ledger row for the batch's duration; the action waits for it as a cancel does.
async fn act(
    db: &Database,
    id: &str,
    action: Action,
    actor: &str,
    now: DateTime<Utc>,
    statement: &Statement,
) -> Result<Option<Acted>, EngineError> {
    use sea_orm::TransactionTrait;
    let backend = db.backend();
    let txn = db.connection().begin().await?;
    if backend == Backend::Postgres {
        crate::database::execute(&txn, backend, &session::cancel_lock_timeout()).await?;
    }
    let changed = crate::database::execute(&txn, backend, statement).await? == 1;
    let rows = crate::database::query_all(&txn, backend, &ledger::get_job(backend, id)).await?;
    let Some(job) = rows
        .first()
        .map(|row| decode(row, backend, JobRecord::decode))
        .transpose()?
    else {
        txn.rollback().await?;
        return Ok(None);
    };
    if !changed {
        txn.rollback().await?;
        return Ok(Some(Acted::Refused(job)));
    }
    let outcome = match (action, job.state) {
        (Action::Pause | Action::Cancel, JobState::Running) => "stopping",
        (_, state) => state.as_str(),
    };
    crate::database::execute(
        &txn,
        backend,
        &ledger::insert_action(
            backend,
            &ledger::ActionEntry {
                job_id: id,
                action: action.as_str(),
                actor,
                outcome,
                at: now,
            },
        ),
    )
    .await?;
    txn.commit().await?;
    Ok(Some(Acted::Changed(job)))
}

/// One page of jobs, newest first (see `reaper_core::sql::ledger::list_jobs`).
pub async fn list(
    db: &Database,
    state: Option<JobState>,
    target: Option<&str>,
    before_id: Option<&str>,
    limit: u32,
) -> Result<Vec<JobRecord>, EngineError> {
    all_jobs(
        db,
        &ledger::list_jobs(db.backend(), state, target, before_id, limit),
    )
    .await
}

/// One page of one requester's jobs, newest first, through the requester index (see
/// `reaper_core::sql::ledger::list_jobs_of`).
pub async fn list_of(
    db: &Database,
    requester: &str,
    state: Option<JobState>,
    target: Option<&str>,
    before_id: Option<&str>,
    limit: u32,
) -> Result<Vec<JobRecord>, EngineError> {
    let statement = ledger::list_jobs_of(
        db.backend(),
        Some(requester),
        state,
        target,
        before_id,
        limit,
    );
    all_jobs(db, &statement).await
}

/// Unfinished jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnfinishedCounts {
    /// Waiting for a worker.
    pub pending: u64,
    /// Claimed under a lease.
    pub running: u64,
    /// Foreground purges stopped by Ctrl-C, waiting for `reaper purge --resume`.
    pub paused: u64,
}

/// Unfinished jobs by state.
pub async fn unfinished_counts(db: &Database) -> Result<UnfinishedCounts, EngineError> {
    let rows = db
        .query_all(&ledger::count_unfinished_by_state(db.backend()))
        .await?;
    let mut counts = UnfinishedCounts::default();
    for row in &rows {
        let (state, count) = decode(row, db.backend(), rows::decode_state_count)?;
        match state {
            JobState::Pending => counts.pending = count,
            JobState::Running => counts.running = count,
            JobState::Paused => counts.paused = count,
            JobState::Done | JobState::Dead | JobState::Cancelled => {}
        }
    }
    Ok(counts)
}

/// Extends a running job's lease to `lease_until` under its token. False when the lease was
/// lost or a cancel was requested.
pub async fn renew_lease(
    db: &Database,
    id: &str,
    token: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<bool, EngineError> {
    Ok(db
        .execute(&ledger::renew_lease(
            db.backend(),
            id,
            token,
            now,
            lease_until,
        ))
        .await?
        == 1)
}

/// Starts another keyset pass under the lease. False when the lease was lost.
pub async fn restart_pass(
    db: &Database,
    id: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<bool, EngineError> {
    Ok(db
        .execute(&ledger::restart_pass(db.backend(), id, token, now))
        .await?
        == 1)
}

/// One page of a job's audit entries, in batch order, after batch `after_batch` (0: from the
/// start).
pub async fn audit_of_job(
    db: &Database,
    job_id: &str,
    after_batch: i64,
    limit: u32,
) -> Result<Vec<AuditRecord>, EngineError> {
    let rows = db
        .query_all(&ledger::audit_of_job(
            db.backend(),
            job_id,
            after_batch,
            limit,
        ))
        .await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), AuditRecord::decode))
        .collect()
}

/// Keeps on a retention window's job (just created by the scheduler) the rows that became due
/// in its window; a job that has a count keeps it.
pub async fn record_due_rows(db: &Database, id: &str, due_rows: u64) -> Result<(), EngineError> {
    db.execute(&reaper_core::sql::retention::record_due_rows(
        db.backend(),
        id,
        due_rows,
    ))
    .await?;
    Ok(())
}

/// Rows a job removed per target, from its audit (a job across relations).
pub async fn rows_by_table(
    db: &Database,
    job_id: &str,
) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
    named_counts(
        db,
        &ledger::rows_by_table(db.backend(), job_id),
        ledger::ROWS_BY_TABLE_COLUMNS,
    )
    .await
}

/// Matching rows a job left in place under legal holds, per target, from its audit.
pub async fn held_by_table(
    db: &Database,
    job_id: &str,
) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
    named_counts(
        db,
        &ledger::held_by_table(db.backend(), job_id),
        ledger::HELD_BY_TABLE_COLUMNS,
    )
    .await
}

/// The newest audit entries, newest first.
pub async fn recent_audit(db: &Database, limit: u32) -> Result<Vec<AuditRecord>, EngineError> {
    let rows = db
        .query_all(&ledger::recent_audit(db.backend(), limit))
        .await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), AuditRecord::decode))
        .collect()
}

/// The jobs of `ids` that exist, in no particular order.
pub async fn jobs_by_ids(db: &Database, ids: &[&str]) -> Result<Vec<JobRecord>, EngineError> {
    all_jobs(db, &ledger::jobs_by_ids(db.backend(), ids)).await
}

/// Jobs per state, every state (the dashboard's overview).
pub async fn count_by_state(
    db: &Database,
) -> Result<std::collections::BTreeMap<&'static str, u64>, EngineError> {
    let rows = db.query_all(&ledger::count_by_state(db.backend())).await?;
    let mut counts: std::collections::BTreeMap<&'static str, u64> = JobState::ALL
        .iter()
        .map(|state| (state.as_str(), 0))
        .collect();
    for row in &rows {
        let (state, count) = decode(row, db.backend(), rows::decode_state_count)?;
        counts.insert(state.as_str(), count);
    }
    Ok(counts)
}

/// Pending jobs waiting for a retry after a failure.
pub async fn count_retrying(db: &Database) -> Result<u64, EngineError> {
    Ok(crate::database::query_count(
        db.connection(),
        db.backend(),
        &ledger::count_retrying(db.backend()),
    )
    .await?)
}

/// Running jobs per lease owner (worker), across every daemon on this ledger.
pub async fn running_by_owner(
    db: &Database,
) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
    named_counts(
        db,
        &ledger::running_by_owner(db.backend()),
        ledger::ROWS_BY_TABLE_COLUMNS,
    )
    .await
}

/// Rows removed per target since `since`, from the audit.
pub async fn rows_since(
    db: &Database,
    since: DateTime<Utc>,
) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
    named_counts(
        db,
        &ledger::rows_since(db.backend(), since),
        ledger::ROWS_BY_TABLE_COLUMNS,
    )
    .await
}

/// `(name, count)` rows, read by the column names `[name, count]`, as a map.
async fn named_counts(
    db: &Database,
    statement: &Statement,
    [name, count]: [&str; 2],
) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
    let rows = db.query_all(statement).await?;
    rows.iter()
        .map(|row| {
            let key: String = row.try_get("", name)?;
            let value: i64 = row.try_get("", count)?;
            Ok((key, u64::try_from(value).unwrap_or(0)))
        })
        .collect()
}

/// The newest `limit` batches of a job, oldest first (the job page's chart).
pub async fn batch_series(
    db: &Database,
    job_id: &str,
    limit: u32,
) -> Result<Vec<BatchPoint>, EngineError> {
    let rows = db
        .query_all(&ledger::batch_series(db.backend(), job_id, limit))
        .await?;
    let mut points = rows
        .iter()
        .map(|row| decode(row, db.backend(), BatchPoint::decode))
        .collect::<Result<Vec<_>, _>>()?;
    points.reverse();
    Ok(points)
}

async fn all_jobs(db: &Database, statement: &Statement) -> Result<Vec<JobRecord>, EngineError> {
    let rows = db.query_all(statement).await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), JobRecord::decode))
        .collect()
}

async fn first_job(db: &Database, statement: &Statement) -> Result<Option<JobRecord>, EngineError> {
    let rows = db.query_all(statement).await?;
    rows.first()
        .map(|row| decode(row, db.backend(), JobRecord::decode))
        .transpose()
}
