//! Statements on reaper's own ledger table `reaper_jobs` (the truth about every job) and the
//! read side of `reaper_audit`.
//!
//! Mostly portable; the writer renders each backend's placeholders and value encodings, and the
//! differences are explicit here: MySQL has neither `ON CONFLICT` (it has `ON DUPLICATE KEY`) nor
//! `RETURNING`, SQLite has no `FOR UPDATE`. Every transition of a running job is guarded by its
//! lease token, so a worker that lost its lease changes nothing — except three writes that
//! take no token, each documented where it is built: [`touch_stranded`] (the reconciler marks a
//! job it re-enqueues), [`request_cancel`] (marks a running job; its batches then refuse) and
//! [`claim`] (takes over a `running` job whose lease expired). Each statement's doc states the
//! plan it expects; the rows they return are read by [`rows`](crate::sql::rows).

use chrono::{DateTime, Utc};

use crate::lifecycle::JobState;
use crate::sql::rows::{
    ACTION_COLUMNS, AUDIT_COLUMNS, JOB_COLUMNS, LOCKED_JOB_COLUMNS, STATE_COUNT_COLUMNS,
};
use crate::sql::{Backend, SqlWriter, Statement};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// A job as first written to the ledger.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Ledger id.
    pub id: &'a str,
    /// Unique; the id when the producer gave none.
    pub idempotency_key: &'a str,
    /// Target name (for listing without parsing the request).
    pub target: &'a str,
    /// The request as JSON, exactly as accepted.
    pub request_json: &'a str,
    /// Runs allowed before the job is dead.
    pub max_attempts: u32,
    /// Acceptance time, also the reference time of `older_than`.
    pub now: DateTime<Utc>,
    /// The retention policy that submitted the job, if one did.
    pub policy: Option<&'a str>,
    /// Written `paused` instead of `pending`: a foreground run (`reaper purge`) that no queue
    /// worker or reconciler may take; its runner claims it with [`ClaimFrom::Resume`].
    pub paused: bool,
}

fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.to_owned())
}

/// `INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING …` (MySQL: `ON DUPLICATE KEY
/// UPDATE id = id`, a no-op, and no `RETURNING`): a new job comes back in the same round trip;
/// for a repeated key nothing is inserted and the caller reads the existing job instead.
/// Expected plan: a single-row insert plus the unique `idempotency_key` check.
pub fn insert_job(backend: Backend, job: &NewJob<'_>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push(
        "INSERT INTO reaper_jobs (id, idempotency_key, target, request, state, passes, rows_deleted, batches, \
         attempts, max_attempts, created_at, updated_at, policy) VALUES (",
    )
    .param(text(job.id))
    .push(", ")
    .param(text(job.idempotency_key))
    .push(", ")
    .param(text(job.target))
    .push(", ")
    .param(text(job.request_json))
    .push(", ")
    .state(if job.paused {
        JobState::Paused
    } else {
        JobState::Pending
    })
    .push(", 1, 0, 0, 0, ")
    .param(SqlValue::Int(i64::from(job.max_attempts)))
    .push(", ")
    .param(SqlValue::Timestamp(job.now))
    .push(", ")
    .param(SqlValue::Timestamp(job.now))
    .push(", ");
    match job.policy {
        Some(policy) => w.param(text(policy)),
        None => w.push("NULL"),
    };
    match backend {
        Backend::MySql => {
            w.push(") ON DUPLICATE KEY UPDATE id = id");
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push(") ON CONFLICT (idempotency_key) DO NOTHING RETURNING ")
                .push(JOB_COLUMNS);
        }
    }
    w.finish()
}

/// One job by id. Expected plan: the primary key.
pub fn get_job(backend: Backend, id: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE id = ")
        .param(text(id));
    w.finish()
}

/// One job by idempotency key. Expected plan: the unique `idempotency_key` index.
pub fn get_job_by_key(backend: Backend, key: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE idempotency_key = ")
        .param(text(key));
    w.finish()
}

/// The daemons' work ([`JobState::ACTIVE`]: `pending` or `running`), oldest first. Expected
/// plan: the `(state, created_at)` index, one range per state, merged and sorted (the callers
/// ask for one row: is there any work left).
pub fn active_jobs(backend: Backend, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE state IN ")
        .states(JobState::ACTIVE)
        .push(" ORDER BY created_at, id LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// Jobs the queue may have lost: `pending`, due and untouched since `pending_quiet_since` (its
/// message should have been taken long ago), or `running` under a lease that expired before
/// `now` (its worker died) and untouched since `running_quiet_since`. "Untouched" also spaces
/// out re-enqueues of the same job. Oldest first. Expected plan: the `(state, created_at)` index,
/// one range per state.
pub fn stranded_jobs(
    backend: Backend,
    now: DateTime<Utc>,
    pending_quiet_since: DateTime<Utc>,
    running_quiet_since: DateTime<Utc>,
    limit: u32,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE (state = ")
        .state(JobState::Pending)
        .push(" AND (run_after IS NULL OR run_after <= ")
        .param(SqlValue::Timestamp(now))
        .push(") AND updated_at < ")
        .param(SqlValue::Timestamp(pending_quiet_since))
        .push(") OR (state = ")
        .state(JobState::Running)
        .push(" AND lease_expires_at < ")
        .param(SqlValue::Timestamp(now))
        .push(" AND updated_at < ")
        .param(SqlValue::Timestamp(running_quiet_since))
        .push(") ORDER BY created_at, id LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// Marks a stranded job as re-enqueued now, so the next reconciliation leaves it alone for a
/// while instead of enqueueing it again on every pass. Only while it is still in the `state`
/// it was found in. One of the three writes without the lease token: it changes only
/// `updated_at`, which no lease holder relies on. Expected plan: the primary key.
pub fn touch_stranded(
    backend: Backend,
    id: &str,
    state: JobState,
    now: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET updated_at = ")
        .param(SqlValue::Timestamp(now))
        .push(" WHERE id = ")
        .param(text(id))
        .push(" AND state = ")
        .param(text(state.as_str()));
    w.finish()
}

/// Which states a claim may take a job from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimFrom {
    /// A worker pulling from the queue: `pending`, or `running` under an expired lease.
    Queue,
    /// `reaper purge --resume`: also a `paused` job (one a foreground purge left on Ctrl-C).
    Resume,
}

/// Claims the job: `pending`, or `running` under an expired lease (its worker died), while it
/// has attempts left. Counts the attempt here, at claim, so a job that kills its worker every
/// time still runs out of attempts; a job whose attempts are used up is not claimed, so
/// `attempts` never exceeds `max_attempts` ([`claim_used_up`] takes it to record why it is
/// dead). No row returned: somebody else holds it, it is finished, or its attempts are used up.
/// On MySQL (no `RETURNING`) the caller checks the affected rows and reads the job back. Taking
/// over an expired lease is one of the three writes without the lease token: the old holder's
/// token is replaced, so its next write changes nothing. Expected plan: the primary key.
pub fn claim(backend: Backend, lease: &Lease<'_>, from: ClaimFrom) -> Statement {
    lease_statement(backend, lease, from, AttemptsLeft::Some)
}

/// Takes the lease of a job that [`claim`] refused because its attempts are used up (its
/// workers kept dying), without counting an attempt: its holder only records it `dead` with
/// the reason. Same states as [`claim`]; no row: the job has attempts left, is held or is
/// finished. Expected plan: the primary key.
pub fn claim_used_up(backend: Backend, lease: &Lease<'_>, from: ClaimFrom) -> Statement {
    lease_statement(backend, lease, from, AttemptsLeft::None)
}

/// A lease a claim takes: on which job, for whom, with which token, from when until when.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// The job.
    pub id: &'a str,
    /// The worker taking it.
    pub owner: &'a str,
    /// The fresh token every write of the holder is guarded by.
    pub token: &'a str,
    /// The claim's time.
    pub now: DateTime<Utc>,
    /// When the lease expires unless renewed.
    pub lease_until: DateTime<Utc>,
}

/// Which jobs a lease statement takes: those with attempts left (counting this one), or those
/// without (counting nothing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttemptsLeft {
    Some,
    None,
}

/// The statement of [`claim`] and [`claim_used_up`].
fn lease_statement(
    backend: Backend,
    lease: &Lease<'_>,
    from: ClaimFrom,
    attempts: AttemptsLeft,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET state = ")
        .state(JobState::Running)
        .push(", lease_owner = ")
        .param(text(lease.owner))
        .push(", lease_token = ")
        .param(text(lease.token))
        .push(", lease_expires_at = ")
        .param(SqlValue::Timestamp(lease.lease_until));
    if attempts == AttemptsLeft::Some {
        w.push(", attempts = attempts + 1");
    }
    w.push(", run_after = NULL, started_at = COALESCE(started_at, ")
        .param(SqlValue::Timestamp(lease.now))
        .push("), updated_at = ")
        .param(SqlValue::Timestamp(lease.now))
        .push(" WHERE id = ")
        .param(text(lease.id))
        .push(match attempts {
            AttemptsLeft::Some => " AND attempts < max_attempts",
            AttemptsLeft::None => " AND attempts >= max_attempts",
        })
        .push(" AND (state ");
    match from {
        ClaimFrom::Queue => w.push("= ").state(JobState::Pending),
        ClaimFrom::Resume => w.push("IN ").states(JobState::UNCLAIMED),
    };
    w.push(" OR (state = ")
        .state(JobState::Running)
        .push(" AND lease_expires_at < ")
        .param(SqlValue::Timestamp(lease.now))
        .push("))");
    if backend != Backend::MySql {
        w.push(" RETURNING ").push(JOB_COLUMNS);
    }
    w.finish()
}

/// Locks the job's ledger row if and only if this worker holds its lease and nobody asked to
/// cancel the job, returning `batches` (the batch being written is number `batches + 1`). No
/// row: the lease is lost or the job is being cancelled (the caller reads which). Used by the
/// SQLite and MySQL batches (PostgreSQL does this inside its single statement); SQLite has no
/// `FOR UPDATE` and needs none, its `BEGIN IMMEDIATE` already holds the database's write lock.
/// Expected plan: the primary key. Returns [`LOCKED_JOB_COLUMNS`].
pub fn lock_job(backend: Backend, job_id: &str, token: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(LOCKED_JOB_COLUMNS)
        .push(" FROM reaper_jobs")
        .lease_guard(job_id, token)
        .push(" AND cancel_requested_at IS NULL");
    if backend != Backend::Sqlite {
        w.push(" FOR UPDATE");
    }
    w.finish()
}

/// Advances the checkpoint and counters and renews the lease, in the batch's transaction, after
/// [`lock_job`] (so exactly one row is affected): `batches + 1` when the batch removed or held
/// rows (its audit row has that number), `rows_deleted + rows`, `rows_held + held`.
/// `skipped_locked` marks the pass. Expected
/// plan: the primary key (the row is locked already).
#[allow(clippy::too_many_arguments)] // One statement's bound values; a struct would only rename them.
pub fn advance_checkpoint(
    backend: Backend,
    job_id: &str,
    token: &str,
    last_key: &KeyValue,
    (rows, held): (u64, u64),
    (skipped_locked, chain_head): (bool, Option<&str>),
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET checkpoint = ")
        .param(SqlValue::Text(last_key.to_text()));
    write_chain_head(&mut w, chain_head);
    w.push(", batches = batches + ")
        .param(SqlValue::Int(i64::from(rows > 0 || held > 0)))
        .push(", rows_deleted = rows_deleted + ")
        .param(SqlValue::Int(i64::try_from(rows).unwrap_or(i64::MAX)))
        .push(", rows_held = rows_held + ")
        .param(SqlValue::Int(i64::try_from(held).unwrap_or(i64::MAX)));
    if skipped_locked {
        w.push(", locked_rows_skipped = TRUE");
    }
    w.push(", lease_expires_at = ")
        .param(SqlValue::Timestamp(lease_until))
        .push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .lease_guard(job_id, token);
    w.finish()
}

/// Counts a committed batch of a job across relations and renews the lease, after
/// [`lock_job`]: `batches + audit_rows` (the audit rows it wrote, numbered on from `batches`:
/// one per table it removed rows of or left rows in under a legal hold), `rows_deleted + rows`,
/// `rows_held + held`, and the checkpoint only for a parent batch (`Some`: the end of the
/// window of parent keys; child batches keep it where it is). Expected plan: the primary key.
pub fn count_graph_batch(
    backend: Backend,
    holder: (&str, &str),
    checkpoint: Option<&KeyValue>,
    (rows, held, audit_rows): (u64, u64, u64),
    chain_head: Option<&str>,
    (now, lease_until): (DateTime<Utc>, DateTime<Utc>),
) -> Statement {
    let (job_id, token) = holder;
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET ");
    if let Some(head) = chain_head {
        w.push("chain_head = ")
            .param(SqlValue::Text(head.to_owned()))
            .push(", ");
    }
    if let Some(checkpoint) = checkpoint {
        w.push("checkpoint = ")
            .param(SqlValue::Text(checkpoint.to_text()))
            .push(", ");
    }
    w.push("batches = batches + ")
        .param(SqlValue::Int(i64::try_from(audit_rows).unwrap_or(i64::MAX)))
        .push(", rows_deleted = rows_deleted + ")
        .param(SqlValue::Int(i64::try_from(rows).unwrap_or(i64::MAX)))
        .push(", rows_held = rows_held + ")
        .param(SqlValue::Int(i64::try_from(held).unwrap_or(i64::MAX)))
        .push(", lease_expires_at = ")
        .param(SqlValue::Timestamp(lease_until))
        .push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .lease_guard(job_id, token);
    w.finish()
}

/// `, chain_head = $head` when the batch wrote an audit row.
fn write_chain_head(w: &mut SqlWriter, chain_head: Option<&str>) {
    if let Some(head) = chain_head {
        w.push(", chain_head = ")
            .param(SqlValue::Text(head.to_owned()));
    }
}

/// Columns read back by [`rows_by_table`].
pub const ROWS_BY_TABLE_COLUMNS: [&str; 2] = ["target", "row_count"];

/// `sum(row_count)` as a 64-bit integer on every backend (PostgreSQL sums a bigint to a
/// numeric, MySQL to a decimal).
fn sum_of_rows(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(sum(row_count) AS BIGINT)",
        Backend::MySql => "CAST(sum(row_count) AS SIGNED)",
        Backend::Sqlite => "sum(row_count)",
    }
}

/// Rows a job removed per target, summed over its audit rows: `SELECT target, sum(row_count)
/// … GROUP BY target`. Expected plan: the `(job_id, batch_no)` unique index, then a small
/// aggregate.
pub fn rows_by_table(backend: Backend, job_id: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT target, ")
        .push(sum_of_rows(backend))
        .push(" AS row_count FROM reaper_audit WHERE job_id = ")
        .param(text(job_id))
        .push(" GROUP BY target ORDER BY target");
    w.finish()
}

/// Columns read back by [`held_by_table`].
pub const HELD_BY_TABLE_COLUMNS: [&str; 2] = ["target", "rows_held"];

/// Matching rows a job left in place under legal holds, per target, summed over its audit
/// rows (targets with none left out). Expected plan: as [`rows_by_table`]'s.
pub fn held_by_table(backend: Backend, job_id: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT target, ")
        .push(match backend {
            Backend::Postgres => "CAST(sum(rows_held) AS BIGINT)",
            Backend::MySql => "CAST(sum(rows_held) AS SIGNED)",
            Backend::Sqlite => "sum(rows_held)",
        })
        .push(" AS rows_held FROM reaper_audit WHERE job_id = ")
        .param(text(job_id))
        .push(" AND rows_held > 0 GROUP BY target ORDER BY target");
    w.finish()
}

/// One audit row for one committed batch.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Ledger id of the job.
    pub job_id: &'a str,
    /// 1-based batch number.
    pub batch_no: i64,
    /// The keys the batch removed, ascending.
    pub keys: &'a [KeyValue],
    /// Matching rows the batch left in place under a legal hold.
    pub held: u64,
    /// The job's chain head before this row (empty for the first row).
    pub prev_hash: &'a str,
    /// This row's hash, of [`audit_content`] ([`crate::audit_chain`]).
    pub row_hash: &'a str,
    /// Batch time.
    pub at: DateTime<Utc>,
}

/// `INSERT INTO reaper_audit …` for one batch (SQLite and MySQL; PostgreSQL writes it inside its
/// batch statement). Expected plan: a single-row insert plus the unique `(job_id, batch_no)`
/// check.
pub fn insert_audit(backend: Backend, job: &ValidatedJob, entry: &AuditEntry<'_>) -> Statement {
    insert_audit_as(backend, job, &job.target.name, job.mode.as_str(), entry)
}

/// [`insert_audit`] for rows of another table than the job's own: a child batch of a job across
/// relations names the child's target and its effect (`hard`, `soft`, `set_null`).
pub fn insert_audit_as(
    backend: Backend,
    job: &ValidatedJob,
    target: &str,
    mode: &str,
    entry: &AuditEntry<'_>,
) -> Statement {
    let (keys_json, first, last) = audit_keys(entry.keys);
    let mut w = SqlWriter::new(backend);
    w.push(
        "INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, rows_held, first_key, last_key, \
         deleted_keys, requested_by, reason, created_at, prev_hash, row_hash) VALUES (",
    );
    let values = [
        text(entry.job_id),
        SqlValue::Int(entry.batch_no),
        SqlValue::Text(target.to_owned()),
        SqlValue::Text(mode.to_owned()),
        SqlValue::Int(i64::try_from(entry.keys.len()).unwrap_or(i64::MAX)),
        SqlValue::Int(i64::try_from(entry.held).unwrap_or(i64::MAX)),
        SqlValue::Text(first),
        SqlValue::Text(last),
        SqlValue::Text(keys_json),
        SqlValue::Text(job.requested_by.clone()),
        SqlValue::Text(job.reason.clone()),
        SqlValue::Timestamp(entry.at),
        SqlValue::Text(entry.prev_hash.to_owned()),
        SqlValue::Text(entry.row_hash.to_owned()),
    ];
    for (index, value) in values.into_iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(value);
    }
    w.push(")");
    w.finish()
}

/// The key list as an audit row stores it: JSON, first and last key (empty when none).
fn audit_keys(keys: &[KeyValue]) -> (String, String, String) {
    let json = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
    let first = keys.first().map(KeyValue::to_text).unwrap_or_default();
    let last = keys.last().map(KeyValue::to_text).unwrap_or_default();
    (json, first, last)
}

/// What the audit chain hashes for the row [`insert_audit_as`] writes: its fields as stored,
/// after `entry.prev_hash` ([`crate::audit_chain::content`]).
pub fn audit_content(
    job: &ValidatedJob,
    target: &str,
    mode: &str,
    entry: &AuditEntry<'_>,
) -> String {
    let (keys_json, first, last) = audit_keys(entry.keys);
    let fields = crate::audit_chain::ChainFields {
        job_id: entry.job_id,
        batch_no: entry.batch_no,
        target,
        mode,
        row_count: i64::try_from(entry.keys.len()).unwrap_or(i64::MAX),
        rows_held: i64::try_from(entry.held).unwrap_or(i64::MAX),
        first_key: &first,
        last_key: &last,
        deleted_keys: &keys_json,
        requested_by: &job.requested_by,
        reason: &job.reason,
        created_at: entry.at,
    };
    crate::audit_chain::content(entry.prev_hash, &fields)
}

/// The end state of one run of a job, written under its lease.
#[derive(Debug, Clone)]
pub enum Transition<'a> {
    /// The slice ended cleanly with work left: back to `pending`. The claim's attempt is given
    /// back, because a continuation is not a failure.
    Continue,
    /// Stopped by its foreground runner (`reaper purge`, Ctrl-C): `paused`, which no daemon
    /// picks up; `reaper purge --resume` continues it. The attempt is given back.
    Pause,
    /// A transient failure: back to `pending` (`paused` for a foreground run, which retries
    /// it itself), not before `run_after`, keeping the attempt.
    RetryLater {
        /// The error, kept for status.
        error: &'a str,
        /// Earliest next run.
        run_after: DateTime<Utc>,
        /// A foreground run's job: `paused`, so that no daemon adopts it meanwhile.
        paused: bool,
    },
    /// Stopped for now because the database's health is over a critical level
    /// ([`crate::health`]): back to `pending` (`paused` for a foreground run) with its
    /// checkpoint, not before `run_after`, the reason kept as its last error. The attempt is
    /// given back: the job did not fail.
    Throttled {
        /// Why, kept for status.
        reason: &'a str,
        /// Earliest next run.
        run_after: DateTime<Utc>,
        /// A foreground run's job: `paused`, so that no daemon adopts it meanwhile.
        paused: bool,
    },
    /// Finished: `done`, with its result (a JSON summary or dry-run report).
    Done {
        /// JSON text.
        result: &'a str,
    },
    /// Permanent failure or attempts exhausted: `dead`, keeping the error.
    Dead {
        /// The error, kept for status.
        error: &'a str,
    },
    /// Stopped at a batch boundary because somebody asked: `cancelled`, with what was done.
    Cancelled {
        /// JSON summary of what the job deleted before it stopped.
        result: &'a str,
    },
    /// Stopped at a batch boundary because somebody asked for a pause ([`request_pause`]):
    /// `paused` with its checkpoint, the stop marks cleared so that a resumed run's batches
    /// pass the lease check again; the attempt is given back. Only while the pause is still
    /// asked for: a cancel that came meanwhile cleared `pause_requested_at`, and then this
    /// changes nothing and the caller records `cancelled`.
    PausedOnRequest,
}

impl Transition<'_> {
    /// The state the job is left in.
    pub fn state(&self) -> JobState {
        match self {
            Transition::Continue
            | Transition::RetryLater { paused: false, .. }
            | Transition::Throttled { paused: false, .. } => JobState::Pending,
            Transition::Pause
            | Transition::PausedOnRequest
            | Transition::RetryLater { paused: true, .. }
            | Transition::Throttled { paused: true, .. } => JobState::Paused,
            Transition::Done { .. } => JobState::Done,
            Transition::Dead { .. } => JobState::Dead,
            Transition::Cancelled { .. } => JobState::Cancelled,
        }
    }
}

/// Applies a [`Transition`], only if `token` still holds the lease. Zero rows affected means
/// the lease was lost; the caller must not act as if the transition happened. Expected plan:
/// the primary key.
pub fn transition(
    backend: Backend,
    id: &str,
    token: &str,
    now: DateTime<Utc>,
    to: &Transition<'_>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ")
        .param(SqlValue::Timestamp(now));
    w.push(", state = ").state(to.state());
    match to {
        Transition::Continue | Transition::Pause => {
            w.push(", attempts = attempts - 1");
        }
        Transition::RetryLater {
            error, run_after, ..
        } => {
            w.push(", last_error = ")
                .param(text(error))
                .push(", run_after = ")
                .param(SqlValue::Timestamp(*run_after));
        }
        Transition::Throttled {
            reason, run_after, ..
        } => {
            w.push(", attempts = attempts - 1, last_error = ")
                .param(text(reason))
                .push(", run_after = ")
                .param(SqlValue::Timestamp(*run_after));
        }
        Transition::Done { result } | Transition::Cancelled { result } => {
            w.push(", result = ")
                .param(text(result))
                .push(", finished_at = ")
                .param(SqlValue::Timestamp(now));
        }
        Transition::Dead { error } => {
            w.push(", last_error = ")
                .param(text(error))
                .push(", finished_at = ")
                .param(SqlValue::Timestamp(now));
        }
        Transition::PausedOnRequest => {
            w.push(
                ", attempts = attempts - 1, cancel_requested_at = NULL, pause_requested_at = NULL",
            );
        }
    }
    w.lease_guard(id, token);
    if matches!(to, Transition::PausedOnRequest) {
        w.push(" AND pause_requested_at IS NOT NULL");
    }
    w.finish()
}

/// Asks a job to stop. An unclaimed ([`JobState::UNCLAIMED`]: `pending` or `paused`) job is
/// `cancelled` at once; a `running` one is marked, and its next batch transaction refuses to
/// run (the lease checks look at the mark), so it stops at a batch boundary and its worker
/// records `cancelled`; a pause asked for earlier is withdrawn (the cancel wins). Finished jobs
/// are left alone. One of the three writes without the
/// lease token: it sets only the mark (and `updated_at`) on a running job, never its state.
/// Assignments are ordered so MySQL, which evaluates them left to right with the new values,
/// still sees the old `state` in each `CASE`. Expected plan: the primary key.
pub fn request_cancel(backend: Backend, id: &str, now: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ")
        .param(SqlValue::Timestamp(now))
        .push("), pause_requested_at = NULL, finished_at = CASE WHEN state IN ")
        .states(JobState::UNCLAIMED)
        .push(" THEN ")
        .param(SqlValue::Timestamp(now))
        .push(" ELSE finished_at END, updated_at = ")
        .param(SqlValue::Timestamp(now))
        .push(", state = CASE WHEN state IN ")
        .states(JobState::UNCLAIMED)
        .push(" THEN ")
        .state(JobState::Cancelled)
        .push(" ELSE state END WHERE id = ")
        .param(text(id))
        .push(" AND state IN ")
        .states(JobState::UNFINISHED);
    w.finish()
}

/// One page of jobs, newest first, optionally of one state and one target, after the cursor
/// `before_id` (ids are UUIDv7, so their order is their creation order). Expected plan: the
/// primary key backwards, filtered; the `(state, created_at)` index when a state is given and
/// rare.
pub fn list_jobs(
    backend: Backend,
    state: Option<JobState>,
    target: Option<&str>,
    before_id: Option<&str>,
    limit: u32,
) -> Statement {
    list_jobs_of(backend, None, state, target, before_id, limit)
}

/// [`list_jobs`] of one requester (`requested_by` in the job's request) when given. Expected
/// plan: the `reaper_jobs_requested_by` index (the requester's expression, then `id`)
/// backwards from the cursor, stopping at LIMIT — on PostgreSQL and SQLite an expression
/// index on the request's `requested_by`, on MySQL/MariaDB (no expression indexes on
/// MariaDB) an index on the virtual column `requested_by`, a prefix, so the full value is
/// compared too.
pub fn list_jobs_of(
    backend: Backend,
    requester: Option<&str>,
    state: Option<JobState>,
    target: Option<&str>,
    before_id: Option<&str>,
    limit: u32,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE 1 = 1");
    if let Some(requester) = requester {
        match backend {
            // The exact text of the index's expression: the planner matches it.
            Backend::Postgres => {
                w.push(" AND (request::jsonb ->> 'requested_by') = ")
                    .param(text(requester));
            }
            Backend::Sqlite => {
                w.push(" AND json_extract(request, '$.requested_by') = ")
                    .param(text(requester));
            }
            Backend::MySql => {
                w.push(" AND requested_by = LEFT(")
                    .param(text(requester))
                    .push(", 190) AND JSON_UNQUOTE(JSON_EXTRACT(request, '$.requested_by')) = ")
                    .param(text(requester));
            }
        }
    }
    if let Some(state) = state {
        w.push(" AND state = ").param(text(state.as_str()));
    }
    if let Some(target) = target {
        w.push(" AND target = ").param(text(target));
    }
    if let Some(before) = before_id {
        w.push(" AND id < ").param(text(before));
    }
    w.push(" ORDER BY id DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// The newest jobs of retention policy `policy`, optionally only in one of `states`. Expected
/// plan: the `(policy, created_at)` index backwards, stopping at LIMIT.
pub fn policy_jobs(backend: Backend, policy: &str, states: &[JobState], limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE policy = ")
        .param(text(policy));
    if !states.is_empty() {
        w.push(" AND state IN (");
        for (index, state) in states.iter().enumerate() {
            if index > 0 {
                w.push(", ");
            }
            w.param(text(state.as_str()));
        }
        w.push(")");
    }
    w.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// Unfinished jobs per state ([`JobState::UNFINISHED`]: `pending`, `running`, `paused`): the
/// work waiting in and taken from the queue, and foreground purges left paused, as the ledger
/// counts them. Expected plan: an index-only scan of `(state, created_at)`. Returns
/// [`STATE_COUNT_COLUMNS`].
pub fn count_unfinished_by_state(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(STATE_COUNT_COLUMNS)
        .push(" FROM reaper_jobs WHERE state IN ")
        .states(JobState::UNFINISHED)
        .push(" GROUP BY state");
    w.finish()
}

/// Extends the lease of a running job before a long throttle wait, so that the wait cannot
/// outlast it. Zero rows: the lease is lost (or the job is being cancelled). Expected plan: the
/// primary key.
pub fn renew_lease(
    backend: Backend,
    id: &str,
    token: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET lease_expires_at = ")
        .param(SqlValue::Timestamp(lease_until))
        .push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .lease_guard(id, token)
        .push(" AND cancel_requested_at IS NULL");
    w.finish()
}

/// Starts another keyset pass from the beginning (after a pass that skipped locked rows),
/// with the pass's skipped-rows mark cleared. Expected plan: the primary key.
pub fn restart_pass(backend: Backend, id: &str, token: &str, now: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET checkpoint = NULL, passes = passes + 1, locked_rows_skipped = FALSE, updated_at = ")
        .param(SqlValue::Timestamp(now))
        .lease_guard(id, token);
    w.finish()
}

/// One page of a job's audit entries in batch order, after batch `after_batch`. Expected plan:
/// the unique `(job_id, batch_no)` index, in order, stopping at LIMIT.
pub fn audit_of_job(backend: Backend, job_id: &str, after_batch: i64, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(AUDIT_COLUMNS)
        .push(" FROM reaper_audit WHERE job_id = ")
        .param(text(job_id))
        .push(" AND batch_no > ")
        .param(SqlValue::Int(after_batch))
        .push(" ORDER BY batch_no LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// The newest audit entries of the whole deployment. Expected plan: the primary key (`id`,
/// ascending with commit order) backwards, stopping at LIMIT.
pub fn recent_audit(backend: Backend, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(AUDIT_COLUMNS)
        .push(" FROM reaper_audit ORDER BY id DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// Asks a job to pause. A `pending` job is `paused` at once (its queue message finds nothing to
/// claim); a `running` one gets the stop mark every batch's lease check refuses on
/// (`cancel_requested_at`, as for a cancel) and `pause_requested_at`, which tells its worker
/// to leave it `paused` with its checkpoint ([`Transition::PausedOnRequest`]) instead of
/// `cancelled`. A job being cancelled, paused already or finished is left alone (the caller
/// reads which). Without the lease token, like [`request_cancel`]: on a running job it sets
/// only the marks, never its state. Assignments are ordered so MySQL, which evaluates them left
/// to right, still sees the old `state` in each `CASE`. Expected plan: the primary key.
pub fn request_pause(backend: Backend, id: &str, now: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET pause_requested_at = CASE WHEN state = ")
        .state(JobState::Running)
        .push(" THEN COALESCE(pause_requested_at, ")
        .param(SqlValue::Timestamp(now))
        .push(") ELSE pause_requested_at END, cancel_requested_at = CASE WHEN state = ")
        .state(JobState::Running)
        .push(" THEN COALESCE(cancel_requested_at, ")
        .param(SqlValue::Timestamp(now))
        .push(") ELSE cancel_requested_at END");
    w.push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .push(", state = CASE WHEN state = ")
        .state(JobState::Pending)
        .push(" THEN ")
        .state(JobState::Paused)
        .push(" ELSE state END WHERE id = ")
        .param(text(id))
        .push(" AND state IN ")
        .states(JobState::ACTIVE)
        .push(" AND (cancel_requested_at IS NULL OR pause_requested_at IS NOT NULL)");
    w.finish()
}

/// Hands a `paused` job back to the daemons: `pending`, due now (the caller enqueues it). Its
/// checkpoint, counters and attempts stay. Anything else is left alone. Expected plan: the
/// primary key.
pub fn resume_paused(backend: Backend, id: &str, now: DateTime<Utc>) -> Statement {
    back_to_pending(
        backend,
        id,
        now,
        "UPDATE reaper_jobs SET ",
        JobState::Paused,
    )
}

/// Gives a `dead` job one more attempt from its checkpoint: `pending` again with `max_attempts`
/// one above the attempts it used (the caller enqueues it and records the retry). The last
/// error stays until the new attempt replaces it. Expected plan: the primary key.
pub fn retry_dead(backend: Backend, id: &str, now: DateTime<Utc>) -> Statement {
    back_to_pending(
        backend,
        id,
        now,
        "UPDATE reaper_jobs SET max_attempts = attempts + 1, finished_at = NULL, ",
        JobState::Dead,
    )
}

/// `head` (the update and its own assignments), then: due now, `pending`, only from `from`.
fn back_to_pending(
    backend: Backend,
    id: &str,
    now: DateTime<Utc>,
    head: &'static str,
    from: JobState,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push(head)
        .push("run_after = NULL, updated_at = ")
        .param(SqlValue::Timestamp(now))
        .push(", state = ")
        .state(JobState::Pending)
        .push(" WHERE id = ")
        .param(text(id))
        .push(" AND state = ")
        .state(from);
    w.finish()
}

/// An operator action on a job, as recorded in `reaper_job_actions`.
#[derive(Debug, Clone, Copy)]
pub struct ActionEntry<'a> {
    /// The job acted on.
    pub job_id: &'a str,
    /// `cancel`, `pause`, `resume`, `retry` or `run`.
    pub action: &'a str,
    /// Who asked.
    pub actor: &'a str,
    /// What it did (`cancelled`, `stopping`, `paused`, `pending`, `created`).
    pub outcome: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// Records an operator action, in the transaction that made the change it records. Expected
/// plan: a single-row insert.
pub fn insert_action(backend: Backend, entry: &ActionEntry<'_>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_job_actions (job_id, action, actor, outcome, created_at) VALUES (")
        .param(text(entry.job_id))
        .push(", ")
        .param(text(entry.action))
        .push(", ")
        .param(text(entry.actor))
        .push(", ")
        .param(text(entry.outcome))
        .push(", ")
        .param(SqlValue::Timestamp(entry.at))
        .push(")");
    w.finish()
}

/// A job's recorded actions, newest first. Expected plan: the `(job_id, id)` index backwards,
/// stopping at LIMIT. Returns [`ACTION_COLUMNS`].
pub fn job_actions(backend: Backend, job_id: &str, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(ACTION_COLUMNS)
        .push(" FROM reaper_job_actions WHERE job_id = ")
        .param(text(job_id))
        .push(" ORDER BY id DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// Jobs per state, every state (the dashboard's overview). Expected plan: an index-only scan of
/// `(state, created_at)` (100,000 jobs: a few milliseconds). Returns [`STATE_COUNT_COLUMNS`].
pub fn count_by_state(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(STATE_COUNT_COLUMNS)
        .push(" FROM reaper_jobs GROUP BY state");
    w.finish()
}

/// Pending jobs that failed before and wait for their retry. Expected plan: the `(state,
/// created_at)` index's `pending` range (the queue's backlog, small), filtered.
pub fn count_retrying(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT COUNT(*) FROM reaper_jobs WHERE state = ")
        .state(JobState::Pending)
        .push(" AND last_error IS NOT NULL");
    w.finish()
}

/// Running jobs per lease owner (a worker of some daemon): the workers at work across every
/// daemon on this ledger. Expected plan: the `(state, created_at)` index's `running` range.
/// Returns [`ROWS_BY_TABLE_COLUMNS`]-like pairs: `lease_owner`, `row_count` (the job count).
pub fn running_by_owner(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT lease_owner AS target, COUNT(*) AS row_count FROM reaper_jobs WHERE state = ")
        .state(JobState::Running)
        .push(" AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner");
    w.finish()
}

/// Rows removed per target since `since`, summed over the audit (the overview's last hour and
/// day). Expected plan: an index-only range scan of `reaper_audit_created` (`created_at,
/// target, row_count`), no heap visit, then a small aggregate. Returns
/// [`ROWS_BY_TABLE_COLUMNS`].
pub fn rows_since(backend: Backend, since: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT target, ")
        .push(sum_of_rows(backend))
        .push(" AS row_count FROM reaper_audit WHERE created_at >= ")
        .param(SqlValue::Timestamp(since))
        .push(" GROUP BY target ORDER BY target");
    w.finish()
}

/// The jobs of `ids` (the dashboard's live poll of one page of jobs). Expected plan: one
/// primary-key probe per id. An empty list reads nothing (`IN (NULL)`).
pub fn jobs_by_ids(backend: Backend, ids: &[&str]) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(JOB_COLUMNS)
        .push(" FROM reaper_jobs WHERE id IN (");
    if ids.is_empty() {
        w.push("NULL");
    }
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(text(id));
    }
    w.push(")");
    w.finish()
}

/// Columns of [`batch_series`].
pub const BATCH_SERIES_COLUMNS: [&str; 3] = ["batch_no", "row_count", "created_at"];

/// The newest `limit` batches of a job, newest first, without their keys (the job page's
/// chart of rows per batch and batch time). Expected plan: the unique `(job_id, batch_no)`
/// index backwards, stopping at LIMIT.
pub fn batch_series(backend: Backend, job_id: &str, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT batch_no, row_count, created_at FROM reaper_audit WHERE job_id = ")
        .param(text(job_id))
        .push(" ORDER BY batch_no DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::at;

    fn lease() -> Lease<'static> {
        Lease {
            id: "j1",
            owner: "w1",
            token: "tok",
            now: at(),
            lease_until: at(),
        }
    }

    #[test]
    fn claim_takes_pending_or_expired_leases_and_counts_the_attempt() {
        expect![[r#"
            UPDATE reaper_jobs SET state = 'running', lease_owner = $1, lease_token = $2, lease_expires_at = $3, attempts = attempts + 1, run_after = NULL, started_at = COALESCE(started_at, $4), updated_at = $5 WHERE id = $6 AND attempts < max_attempts AND (state = 'pending' OR (state = 'running' AND lease_expires_at < $7)) RETURNING id, idempotency_key, target, request, state, checkpoint, passes, rows_deleted, rows_held, batches, attempts, max_attempts, lease_owner, lease_expires_at, run_after, last_error, result, created_at, updated_at, started_at, finished_at, locked_rows_skipped, cancel_requested_at, policy, pause_requested_at, chain_head, due_rows
            -- parameters: 'w1', 'tok', '2026-11-25T08:30:00+00:00', '2026-11-25T08:30:00+00:00', '2026-11-25T08:30:00+00:00', 'j1', '2026-11-25T08:30:00+00:00'"#]]
        .assert_eq(&claim(Backend::Postgres, &lease(), ClaimFrom::Queue).to_string());
        let resume = claim(Backend::Postgres, &lease(), ClaimFrom::Resume).sql;
        assert!(
            resume.contains("AND (state IN ('pending', 'paused') OR (state = 'running'"),
            "{resume}"
        );
    }

    #[test]
    fn a_used_up_job_is_taken_without_counting_and_never_claimed() {
        let claim = claim(Backend::Sqlite, &lease(), ClaimFrom::Queue).sql;
        assert!(
            claim.contains("WHERE id = ? AND attempts < max_attempts AND (state"),
            "{claim}"
        );
        let used_up = claim_used_up(Backend::Sqlite, &lease(), ClaimFrom::Queue).sql;
        assert!(!used_up.contains("attempts + 1"), "{used_up}");
        assert!(
            used_up.contains("WHERE id = ? AND attempts >= max_attempts AND (state = 'pending' OR (state = 'running'"),
            "{used_up}"
        );
    }

    #[test]
    fn mysql_claims_without_returning_and_inserts_without_on_conflict() {
        let claim = claim(Backend::MySql, &lease(), ClaimFrom::Queue).sql;
        assert!(claim.ends_with("lease_expires_at < ?))"), "{claim}");
        let insert = insert_job(
            Backend::MySql,
            &NewJob {
                id: "j1",
                idempotency_key: "k",
                target: "t",
                request_json: "{}",
                max_attempts: 3,
                now: at(),
                policy: None,
                paused: false,
            },
        )
        .sql;
        assert!(
            insert.ends_with("ON DUPLICATE KEY UPDATE id = id"),
            "{insert}"
        );
        assert_eq!(
            lock_job(Backend::MySql, "j1", "tok").sql,
            "SELECT batches, chain_head FROM reaper_jobs WHERE id = ? AND lease_token = ? AND state = 'running' AND cancel_requested_at IS NULL FOR UPDATE"
        );
        assert!(
            !lock_job(Backend::Sqlite, "j1", "tok")
                .sql
                .contains("FOR UPDATE")
        );
    }

    #[test]
    fn checkpoint_is_guarded_by_the_lease_and_audit_lists_keys() {
        let checkpoint = advance_checkpoint(
            Backend::Sqlite,
            "j1",
            "tok",
            &KeyValue::Int(42),
            (3, 0),
            (false, None),
            at(),
            at(),
        );
        expect!["UPDATE reaper_jobs SET checkpoint = ?, batches = batches + ?, rows_deleted = rows_deleted + ?, rows_held = rows_held + ?, lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_token = ? AND state = 'running'"]
            .assert_eq(&checkpoint.sql);
        let marked = advance_checkpoint(
            Backend::MySql,
            "j1",
            "tok",
            &KeyValue::Int(42),
            (3, 0),
            (true, Some("h")),
            at(),
            at(),
        );
        assert!(
            marked.sql.contains("locked_rows_skipped = TRUE"),
            "{}",
            marked.sql
        );
        let job = crate::sql::test_support::job(&serde_json::json!({"all_rows": true}));
        let keys = [KeyValue::Int(40), KeyValue::Int(41), KeyValue::Int(42)];
        let audit = insert_audit(
            Backend::Sqlite,
            &job,
            &AuditEntry {
                job_id: "j1",
                batch_no: 2,
                keys: &keys,
                held: 0,
                prev_hash: "",
                row_hash: "h",
                at: at(),
            },
        );
        expect![[r#"
            INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, rows_held, first_key, last_key, deleted_keys, requested_by, reason, created_at, prev_hash, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            -- parameters: 'j1', 2, 'events', 'hard', 3, 0, '40', '42', '[40,41,42]', 'svc', 'test', '2026-11-25 08:30:00', '', 'h'"#]]
        .assert_eq(&audit.to_string());
    }

    #[test]
    fn transitions_are_guarded_by_the_lease() {
        let dead = transition(
            Backend::Sqlite,
            "j1",
            "tok",
            at(),
            &Transition::Dead { error: "boom" },
        );
        expect![[r#"UPDATE reaper_jobs SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?, state = 'dead', last_error = ?, finished_at = ? WHERE id = ? AND lease_token = ? AND state = 'running'"#]]
            .assert_eq(&dead.sql);
        let cont = transition(Backend::Postgres, "j1", "tok", at(), &Transition::Continue);
        assert!(
            cont.sql
                .contains("state = 'pending', attempts = attempts - 1"),
            "{}",
            cont.sql
        );
        // A health stop gives the attempt back and keeps its reason and its time.
        let throttled = transition(
            Backend::Postgres,
            "j1",
            "tok",
            at(),
            &Transition::Throttled {
                reason: "database health: replica_lag 75.0s is over its critical level 60.0s",
                run_after: at(),
                paused: false,
            },
        );
        expect![[r#"UPDATE reaper_jobs SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = $1, state = 'pending', attempts = attempts - 1, last_error = $2, run_after = $3 WHERE id = $4 AND lease_token = $5 AND state = 'running'"#]]
            .assert_eq(&throttled.sql);
    }

    #[test]
    fn a_pause_marks_a_running_job_pauses_a_pending_one_and_a_cancel_withdraws_it() {
        let pause = request_pause(Backend::MySql, "j1", at()).sql;
        // MySQL assigns left to right: both marks read the old state before `state` changes.
        let state_at = pause.find(", state = CASE").unwrap();
        assert!(
            pause.find("cancel_requested_at = CASE").unwrap() < state_at,
            "{pause}"
        );
        expect![[r#"UPDATE reaper_jobs SET pause_requested_at = CASE WHEN state = 'running' THEN COALESCE(pause_requested_at, ?) ELSE pause_requested_at END, cancel_requested_at = CASE WHEN state = 'running' THEN COALESCE(cancel_requested_at, ?) ELSE cancel_requested_at END, updated_at = ?, state = CASE WHEN state = 'pending' THEN 'paused' ELSE state END WHERE id = ? AND state IN ('pending', 'running') AND (cancel_requested_at IS NULL OR pause_requested_at IS NOT NULL)"#]]
            .assert_eq(&pause);
        let cancel = request_cancel(Backend::Sqlite, "j1", at()).sql;
        assert!(cancel.contains("pause_requested_at = NULL"), "{cancel}");
        let paused = transition(
            Backend::Postgres,
            "j1",
            "tok",
            at(),
            &Transition::PausedOnRequest,
        )
        .sql;
        assert!(
            paused.contains("state = 'paused', attempts = attempts - 1, cancel_requested_at = NULL, pause_requested_at = NULL")
                && paused.ends_with("AND state = 'running' AND pause_requested_at IS NOT NULL"),
            "{paused}"
        );
    }

    #[test]
    fn resume_and_retry_take_only_paused_and_dead_jobs() {
        expect![[r#"UPDATE reaper_jobs SET run_after = NULL, updated_at = $1, state = 'pending' WHERE id = $2 AND state = 'paused'"#]]
            .assert_eq(&resume_paused(Backend::Postgres, "j1", at()).sql);
        expect![[r#"UPDATE reaper_jobs SET max_attempts = attempts + 1, finished_at = NULL, run_after = NULL, updated_at = ?, state = 'pending' WHERE id = ? AND state = 'dead'"#]]
            .assert_eq(&retry_dead(Backend::MySql, "j1", at()).sql);
        expect![[r#"SELECT id, job_id, action, actor, outcome, created_at FROM reaper_job_actions WHERE job_id = ? ORDER BY id DESC LIMIT ?"#]]
            .assert_eq(&job_actions(Backend::Sqlite, "j1", 20).sql);
    }
}
