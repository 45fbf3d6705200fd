//! One batch transaction: select the next keys after the checkpoint, delete (or soft-delete)
//! them, write the audit entry and advance the checkpoint under the lease — all committed
//! together or not at all.
//!
//! A crash, kill or lost connection anywhere before COMMIT rolls the whole batch back: rows,
//! audit and checkpoint stay as they were, and the job resumes from the committed checkpoint.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reaper_core::catalog::{KeyType, Mode};
use reaper_core::holds::HeldRows;
use reaper_core::sql::rows::LockedJob;
use reaper_core::sql::{self, Backend, RowLocking, holds, ledger, mysql, postgres, rows, sqlite};
use reaper_core::validate::ValidatedJob;
use reaper_core::value::KeyValue;
use sea_orm::{
    DatabaseTransaction, DbErr, QueryResult, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use crate::database::{Database, execute, query_all};
use crate::error::{EngineError, database_code};
use crate::ledger::decode;

/// Who may write the batch: the job and the lease token its worker claimed it with.
#[derive(Debug, Clone, Copy)]
pub struct LeaseHolder<'a> {
    /// Ledger id of the job.
    pub job_id: &'a str,
    /// The lease token.
    pub token: &'a str,
    /// How far each committed batch pushes the lease expiry.
    pub lease: Duration,
}

impl<'a> LeaseHolder<'a> {
    /// The context of a PostgreSQL batch statement this holder runs at `now`: the lease pushed
    /// to `now + lease`.
    pub(crate) fn batch_context<'h>(
        &self,
        now: DateTime<Utc>,
        locking: RowLocking,
        (held, count_held): (&'h [HeldRows], bool),
    ) -> postgres::BatchContext<'h>
    where
        'a: 'h,
    {
        postgres::BatchContext {
            job_id: self.job_id,
            lease_token: self.token,
            now,
            lease_until: lease_until(now, self.lease),
            locking,
            held,
            count_held,
        }
    }
}

/// The context of a PostgreSQL batch rendered for a dry-run report: placeholders for the lease
/// values, which are bound per batch when the job really runs.
pub(crate) fn report_context(now: DateTime<Utc>) -> postgres::BatchContext<'static> {
    postgres::BatchContext {
        job_id: "<job id>",
        lease_token: "<lease token>",
        now,
        lease_until: now,
        locking: RowLocking::Direct,
        held: &[],
        count_held: true,
    }
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResult {
    /// Committed. `selected == 0` means the pass is over (no key left after the checkpoint).
    Committed {
        /// Rows deleted or soft-deleted.
        rows: u64,
        /// Matching rows of the window left in place under a legal hold.
        held: u64,
        /// Keys the batch's window held; more than `rows` when concurrent changes removed or
        /// changed some of them first.
        selected: u64,
        /// The new checkpoint: the end of the key window (`None` when `selected == 0`).
        last_key: Option<KeyValue>,
        /// BEGIN to COMMIT.
        elapsed: Duration,
        /// The batch ran with `SKIP LOCKED`, so it may have passed over rows.
        skipped_locked: bool,
    },
    /// The batch's lease check refused it: somebody asked to cancel the job, or the lease is
    /// lost (another worker holds the job). The batch was rolled back and changed nothing. The
    /// check cannot tell which; the lease-guarded `cancelled` transition that follows can (it
    /// succeeds only while the lease is still ours).
    Refused,
}

/// Runs one batch of at most `limit` rows after `after`. With [`RowLocking::Direct`], a row
/// held by another transaction (PostgreSQL: past `lock_timeout`, SQLSTATE 55P03; MySQL: `NOWAIT`)
/// or a row inserted into the key window meanwhile (MySQL) rolls the attempt back and the batch
/// reruns with `SKIP LOCKED`, deleting by key; the result says which ran.
pub async fn run_batch(
    db: &Database,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    holder: LeaseHolder<'_>,
    locking: RowLocking,
) -> Result<BatchResult, EngineError> {
    run_batch_in_pass(db, job, (after, limit), holder, locking, true).await
}

/// [`run_batch`] in a pass that counts the held rows it leaves (`count_held`) or not: only the
/// job's first pass over its rows counts them, so each held row is counted once per job.
pub async fn run_batch_in_pass(
    db: &Database,
    job: &ValidatedJob,
    (after, limit): (Option<&KeyValue>, u32),
    holder: LeaseHolder<'_>,
    locking: RowLocking,
    count_held: bool,
) -> Result<BatchResult, EngineError> {
    let batch = BatchCall {
        job,
        after,
        limit,
        holder,
        now: Utc::now(),
        locking,
        count_held,
    };
    match run_transaction(db, &batch).await {
        Err(error)
            if locking == RowLocking::Direct
                && (is_lock_conflict(&error) || matches!(error, EngineError::WindowChanged)) =>
        {
            tracing::debug!(
                message =
                    "Rows are locked by other transactions; taking the others with SKIP LOCKED."
            );
            let rerun = BatchCall {
                now: Utc::now(),
                locking: RowLocking::SkipLocked,
                ..batch
            };
            run_transaction(db, &rerun).await
        }
        other => other,
    }
}

/// PostgreSQL `lock_not_available` (55P03, from `lock_timeout`); MySQL `NOWAIT` conflicts (3572;
/// MariaDB answers `NOWAIT` with 1205).
fn is_lock_conflict(error: &EngineError) -> bool {
    matches!(error, EngineError::Database { error, .. }
        if matches!(database_code(error).as_deref(), Some("55P03" | "3572" | "1205")))
}

/// One attempt at the batch, in its own transaction: committed, refused (rolled back) or
/// failed (rolled back).
async fn run_transaction(db: &Database, batch: &BatchCall<'_>) -> Result<BatchResult, EngineError> {
    let started = Instant::now();
    let txn = begin(db).await?;
    let written = backend_batch(&txn, db.backend(), batch).await;
    // Without the `failpoints` feature the fault point compiles to nothing and this closure is
    // a plain `Ok`; with it, it can return the injected error.
    #[allow(clippy::bind_instead_of_map)]
    let written = written.and_then(|outcome| {
        fail::fail_point!("batch::before_commit", |_| Err(EngineError::Injected(
            "batch::before_commit"
        )));
        Ok(outcome)
    });
    Ok(
        match end_transaction(txn, written, Option::is_some).await? {
            Some(Window {
                rows,
                held,
                selected,
                last_key,
            }) => BatchResult::Committed {
                rows,
                held,
                selected,
                last_key,
                elapsed: started.elapsed(),
                // SQLite has one writer at a time: nothing is ever passed over there.
                skipped_locked: db.backend() != Backend::Sqlite
                    && batch.locking == RowLocking::SkipLocked,
            },
            None => BatchResult::Refused,
        },
    )
}

/// Ends a batch transaction by what was written in it: COMMIT when `keep` says so, ROLLBACK
/// for any other outcome and after an error, which is returned. A failed rollback after an
/// error is only logged: the batch failed either way.
pub(crate) async fn end_transaction<T>(
    txn: DatabaseTransaction,
    written: Result<T, EngineError>,
    keep: impl FnOnce(&T) -> bool,
) -> Result<T, EngineError> {
    match written {
        Ok(outcome) if keep(&outcome) => {
            txn.commit().await?;
            Ok(outcome)
        }
        Ok(outcome) => {
            txn.rollback().await?;
            Ok(outcome)
        }
        Err(error) => {
            if let Err(rollback_error) = txn.rollback().await {
                tracing::warn!(message = "Rollback after a failed batch failed.", error = %rollback_error);
            }
            Err(error)
        }
    }
}

/// Opens a batch transaction; on SQLite `IMMEDIATE`, which takes the write lock up front
/// instead of failing to upgrade mid-batch.
pub(crate) async fn begin(db: &Database) -> Result<DatabaseTransaction, DbErr> {
    match db.backend() {
        Backend::Postgres | Backend::MySql => db.connection().begin().await,
        Backend::Sqlite => {
            db.connection()
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await
        }
    }
}

/// What a batch wrote: rows removed, rows held, keys in its window, the window's last key.
struct Window {
    rows: u64,
    held: u64,
    selected: u64,
    last_key: Option<KeyValue>,
}

/// `None` when the lease check refused the batch.
type Written = Option<Window>;

/// One batch's request, as `run_transaction` hands it to the backend's batch.
#[derive(Clone, Copy)]
struct BatchCall<'a> {
    job: &'a ValidatedJob,
    /// The checkpoint: keys after it.
    after: Option<&'a KeyValue>,
    limit: u32,
    holder: LeaseHolder<'a>,
    /// The batch's time (audit, soft-delete, lease expiry).
    now: DateTime<Utc>,
    locking: RowLocking,
    /// The pass counts the held rows it leaves.
    count_held: bool,
}

/// The batch on `backend`, after the first statement of every batch: the legal holds active on
/// the target, read in this transaction (unreadable: the batch fails, nothing removed).
async fn backend_batch(
    txn: &DatabaseTransaction,
    backend: Backend,
    batch: &BatchCall<'_>,
) -> Result<Written, EngineError> {
    let active = crate::holds::read_active(txn, backend, &[&batch.job.target], batch.now).await?;
    let held = active.on(&batch.job.target.name);
    match backend {
        Backend::Postgres => postgres_batch(txn, batch, held).await,
        // Archive mode copies the window's rows by key before deleting them.
        Backend::Sqlite if held.is_empty() && batch.job.mode != Mode::Archive => {
            sqlite_batch(txn, batch).await
        }
        Backend::Sqlite => sqlite_held_batch(txn, batch, held).await,
        Backend::MySql => mysql_batch(txn, batch, held).await,
    }
}

async fn postgres_batch(
    txn: &DatabaseTransaction,
    batch: &BatchCall<'_>,
    held: &[HeldRows],
) -> Result<Written, EngineError> {
    let context = batch
        .holder
        .batch_context(batch.now, batch.locking, (held, batch.count_held));
    let rows = query_all(
        txn,
        Backend::Postgres,
        &postgres::delete_batch(batch.job, batch.after, batch.limit, &context),
    )
    .await?;
    let row = rows.first().ok_or_else(|| {
        EngineError::Corrupt("the batch statement returned no summary row".into())
    })?;
    let summary = decode(row, Backend::Postgres, postgres::BatchSummary::decode)?;
    if !summary.lease_held {
        return Ok(None);
    }
    let last_key = match summary.window_end {
        Some(text) => Some(parse_key(batch.job.target.key_type, &text)?),
        None => None,
    };
    Ok(Some(Window {
        rows: summary.row_count,
        held: summary.rows_held,
        selected: summary.selected,
        last_key,
    }))
}

async fn sqlite_batch(
    txn: &DatabaseTransaction,
    batch: &BatchCall<'_>,
) -> Result<Written, EngineError> {
    let window = sqlite::delete_batch(batch.job, batch.after, batch.limit, batch.now);
    let Some((locked, mut keys)) =
        lease_then_window(txn, Backend::Sqlite, batch.job, batch.holder, &window).await?
    else {
        return Ok(None);
    };
    keys.sort();
    // One writer at a time on SQLite: every key of the window is removed.
    let window = HeldWindow::all_removed(keys);
    record(txn, Backend::Sqlite, batch, &locked, window, false).await
}

/// SQLite while a hold is active on the target, or in archive mode: the window (with each key's
/// hold), then the keys not held copied to the archive (archive mode) and removed by key (one
/// writer at a time: none changed in between).
async fn sqlite_held_batch(
    txn: &DatabaseTransaction,
    batch: &BatchCall<'_>,
    held: &[HeldRows],
) -> Result<Written, EngineError> {
    let select = holds::select_window(Backend::Sqlite, batch.job, batch.after, batch.limit, held);
    let Some((locked, window)) =
        lease_then_held_window(txn, Backend::Sqlite, batch, (&select, !held.is_empty())).await?
    else {
        return Ok(None);
    };
    if !window.removed.is_empty() {
        archive_if_asked(txn, Backend::Sqlite, batch, &window.removed).await?;
        let remove =
            sql::graph::remove_parents(Backend::Sqlite, batch.job, &window.removed, batch.now);
        execute(txn, Backend::Sqlite, &remove).await?;
    }
    record(txn, Backend::Sqlite, batch, &locked, window, false).await
}

/// A batch's key window split by the legal holds: the keys it removes and how many it leaves.
struct HeldWindow {
    /// Keys removed, ascending.
    removed: Vec<KeyValue>,
    /// Matching keys left in place under a hold.
    held: u64,
    /// The window's last key (held or not): the new checkpoint.
    end: Option<KeyValue>,
}

impl HeldWindow {
    fn all_removed(keys: Vec<KeyValue>) -> Self {
        Self {
            end: keys.last().cloned(),
            removed: keys,
            held: 0,
        }
    }

    /// Reads [`holds::select_window`]'s rows (key, then 1 for a held key), in key order.
    fn read(rows: &[QueryResult], key_type: KeyType, marked: bool) -> Result<Self, DbErr> {
        let mut window = Self::all_removed(Vec::with_capacity(rows.len()));
        for row in rows {
            let key = read_key(row, key_type)?;
            window.end = Some(key.clone());
            if marked && row.try_get_by_index::<i64>(1)? != 0 {
                window.held += 1;
            } else {
                window.removed.push(key);
            }
        }
        Ok(window)
    }
}

/// [`lease_then_window`] for a window selected with each key's hold.
async fn lease_then_held_window(
    txn: &DatabaseTransaction,
    backend: Backend,
    batch: &BatchCall<'_>,
    (window, marked): (&sql::Statement, bool),
) -> Result<Option<(LockedJob, HeldWindow)>, EngineError> {
    let Some(locked) = lock_job(txn, backend, batch.holder).await? else {
        return Ok(None);
    };
    let rows = query_all(txn, backend, window).await?;
    let window = HeldWindow::read(&rows, batch.job.target.key_type, marked)?;
    Ok(Some((locked, window)))
}

async fn mysql_batch(
    txn: &DatabaseTransaction,
    batch: &BatchCall<'_>,
    held: &[HeldRows],
) -> Result<Written, EngineError> {
    let select = mysql::lock_batch(batch.job, batch.after, batch.limit, batch.locking, held);
    let Some((locked, window)) =
        lease_then_held_window(txn, Backend::MySql, batch, (&select, !held.is_empty())).await?
    else {
        return Ok(None);
    };
    // Tests insert into the locked window here, as a concurrent writer could.
    fail::fail_point!("batch::window_locked");
    // Every key is locked by this transaction, so every one not held is removed.
    if let (Some(last), false) = (&window.end, window.removed.is_empty()) {
        archive_if_asked(txn, Backend::MySql, batch, &window.removed).await?;
        match batch.locking {
            // NOWAIT locked every matching row of the window: one range pass removes them.
            RowLocking::Direct => {
                let range = mysql::delete_window(batch.job, batch.after, last, batch.now, held);
                let removed = execute(txn, Backend::MySql, &range).await?;
                if removed != window.removed.len() as u64 {
                    return Err(EngineError::WindowChanged);
                }
            }
            RowLocking::SkipLocked => {
                let keys = mysql::delete_keys(batch.job, &window.removed, batch.now);
                execute(txn, Backend::MySql, &keys).await?;
            }
        }
    }
    let skipped_locked = batch.locking == RowLocking::SkipLocked;
    record(txn, Backend::MySql, batch, &locked, window, skipped_locked).await
}

/// In archive mode, copies the rows of `keys` (locked, about to be deleted) to the archive.
async fn archive_if_asked(
    txn: &DatabaseTransaction,
    backend: Backend,
    batch: &BatchCall<'_>,
    keys: &[KeyValue],
) -> Result<(), EngineError> {
    if batch.job.mode != Mode::Archive {
        return Ok(());
    }
    let at = (batch.holder.job_id, batch.now);
    crate::archive::copy_before_delete(txn, backend, &batch.job.target, keys, at).await
}

/// The start of the multi-statement batches (SQLite, MySQL): the lease check, then `window`,
/// the statement that selects (or deletes, returning) the batch's keys. The job's `batches` and
/// the window's keys, or `None` when the lease check refuses.
async fn lease_then_window(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    holder: LeaseHolder<'_>,
    window: &sql::Statement,
) -> Result<Option<(LockedJob, Vec<KeyValue>)>, EngineError> {
    let Some(locked) = lock_job(txn, backend, holder).await? else {
        return Ok(None);
    };
    let rows = query_all(txn, backend, window).await?;
    Ok(Some((locked, read_keys(&rows, job.target.key_type)?)))
}

/// The lease check of the multi-statement batches: the job's `batches` and audit chain head, or
/// `None` when it refuses (lease lost or cancel requested).
pub(crate) async fn lock_job(
    txn: &DatabaseTransaction,
    backend: Backend,
    holder: LeaseHolder<'_>,
) -> Result<Option<LockedJob>, EngineError> {
    let rows = query_all(
        txn,
        backend,
        &ledger::lock_job(backend, holder.job_id, holder.token),
    )
    .await?;
    rows.first()
        .map(|row| decode(row, backend, rows::decode_locked_job))
        .transpose()
}

/// Writes the audit entry (when the window removed or held rows) and advances the checkpoint
/// to the window's end, in the batch's transaction. An empty window writes nothing: it is the
/// end of the pass.
async fn record(
    txn: &DatabaseTransaction,
    backend: Backend,
    batch: &BatchCall<'_>,
    locked: &LockedJob,
    window: HeldWindow,
    skipped_locked: bool,
) -> Result<Written, EngineError> {
    let BatchCall {
        job, holder, now, ..
    } = *batch;
    let Some(last_key) = window.end else {
        return Ok(Some(Window {
            rows: 0,
            held: 0,
            selected: 0,
            last_key: None,
        }));
    };
    let keys = window.removed;
    let count = keys.len() as u64;
    // Held rows count only in the job's first pass over them (`selected` counts them always:
    // a full window is not the end of the pass).
    let held = if batch.count_held { window.held } else { 0 };
    let audited = Audited {
        target: &job.target.name,
        mode: job.mode.as_str(),
        keys: &keys,
        held,
    };
    let at = (&last_key, skipped_locked, now);
    audit_and_advance(txn, backend, job, (holder, locked), &audited, at).await?;
    Ok(Some(Window {
        rows: count,
        held,
        selected: count + window.held,
        last_key: Some(last_key),
    }))
}

/// The end of a one-table batch (and of a restore batch): its audit row, unless it removed and
/// held nothing (a window whose rows were all held, in a pass that does not count them: only the
/// checkpoint moves), then the checkpoint `last_key`, counters and lease, under the lease
/// checked in this transaction.
pub(crate) async fn audit_and_advance(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (holder, locked): (LeaseHolder<'_>, &LockedJob),
    audited: &Audited<'_>,
    (last_key, skipped_locked, now): (&KeyValue, bool, DateTime<Utc>),
) -> Result<(), EngineError> {
    let count = audited.keys.len() as u64;
    let head = if count > 0 || audited.held > 0 {
        Some(insert_chained_audit(txn, backend, job, (holder, locked), audited, now).await?)
    } else {
        None
    };
    let advance = ledger::advance_checkpoint(
        backend,
        holder.job_id,
        holder.token,
        last_key,
        (count, audited.held),
        (skipped_locked, head.as_deref()),
        now,
        lease_until(now, holder.lease),
    );
    update_own_job(txn, backend, &advance, holder.job_id).await
}

/// One audit row about to be written: the table, mode (or effect), removed keys and held count.
pub(crate) struct Audited<'a> {
    pub(crate) target: &'a str,
    pub(crate) mode: &'a str,
    pub(crate) keys: &'a [KeyValue],
    pub(crate) held: u64,
}

/// Inserts the audit row of a batch, numbered and chained after the job row `locked` (its
/// `batches` and chain head, read under the lease in this transaction); returns the row's hash,
/// the job's new chain head.
pub(crate) async fn insert_chained_audit(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (holder, locked): (LeaseHolder<'_>, &LockedJob),
    audited: &Audited<'_>,
    now: DateTime<Utc>,
) -> Result<String, EngineError> {
    let mut entry = ledger::AuditEntry {
        job_id: holder.job_id,
        batch_no: locked.batches + 1,
        keys: audited.keys,
        held: audited.held,
        prev_hash: &locked.chain_head,
        row_hash: "",
        at: crate::audit_chain::audit_time(backend, now),
    };
    let content = ledger::audit_content(job, audited.target, audited.mode, &entry);
    let row_hash = crate::audit_chain::hash(&content);
    entry.row_hash = &row_hash;
    let insert = ledger::insert_audit_as(backend, job, audited.target, audited.mode, &entry);
    execute(txn, backend, &insert).await?;
    Ok(row_hash)
}

/// Runs a lease-guarded update of the job's own ledger row, locked by [`lock_job`] in this
/// transaction: it must change exactly that row.
pub(crate) async fn update_own_job(
    txn: &DatabaseTransaction,
    backend: Backend,
    update: &sql::Statement,
    job_id: &str,
) -> Result<(), EngineError> {
    if execute(txn, backend, update).await? != 1 {
        return Err(EngineError::Corrupt(format!(
            "job {job_id}'s ledger row was changed by something other than this worker while it \
             held the lease; the batch was rolled back"
        )));
    }
    Ok(())
}

/// Reads every key of a key-selecting statement's rows.
pub(crate) fn read_keys(rows: &[QueryResult], key_type: KeyType) -> Result<Vec<KeyValue>, DbErr> {
    rows.iter().map(|row| read_key(row, key_type)).collect()
}

/// Reads a key selected by `write_key_projection` (PostgreSQL) or `RETURNING pk` (SQLite).
fn read_key(row: &QueryResult, key_type: KeyType) -> Result<KeyValue, DbErr> {
    match key_type {
        KeyType::Int => row.try_get_by_index::<i64>(0).map(KeyValue::Int),
        KeyType::Text | KeyType::Uuid => row.try_get_by_index::<String>(0).map(KeyValue::Text),
    }
}

/// Parses a key the database returned as text (checkpoints, PostgreSQL batch summaries).
pub fn parse_key(key_type: KeyType, text: &str) -> Result<KeyValue, EngineError> {
    key_type.parse_key(text).ok_or_else(|| {
        EngineError::Corrupt(format!("`{text}` is not a valid {} key", key_type.as_str()))
    })
}

/// `now + lease`, saturating.
pub fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The statements one batch runs, rendered for a dry-run report (lease values are
/// placeholders; they are bound per batch when the job really runs).
pub fn describe_batch(backend: Backend, job: &ValidatedJob, now: DateTime<Utc>) -> String {
    let limit = job.batch_size;
    match backend {
        Backend::Postgres => {
            postgres::delete_batch(job, None, limit, &report_context(now)).to_string()
        }
        Backend::Sqlite => {
            let lease = ledger::lock_job(backend, "<job id>", "<lease token>");
            let delete = sqlite::delete_batch(job, None, limit, now);
            format!(
                "BEGIN IMMEDIATE;\n{lease};\n{delete};\n{};\n{};\nCOMMIT;",
                audit_placeholder(backend, job, now),
                checkpoint_placeholder(backend, now)
            )
        }
        Backend::MySql => {
            let lease = ledger::lock_job(backend, "<job id>", "<lease token>");
            let lock = mysql::lock_batch(job, None, limit, RowLocking::Direct, &[]);
            let delete = mysql::delete_keys(job, &[KeyValue::Text("<locked keys>".into())], now);
            format!(
                "BEGIN;\n{lease};\n{lock};\n{delete};\n{};\n{};\nCOMMIT;",
                audit_placeholder(backend, job, now),
                checkpoint_placeholder(backend, now)
            )
        }
    }
}

fn audit_placeholder(backend: Backend, job: &ValidatedJob, now: DateTime<Utc>) -> sql::Statement {
    ledger::insert_audit(
        backend,
        job,
        &ledger::AuditEntry {
            job_id: "<job id>",
            batch_no: 1,
            keys: &[],
            held: 0,
            prev_hash: "<chain head>",
            row_hash: "<row hash>",
            at: now,
        },
    )
}

fn checkpoint_placeholder(backend: Backend, now: DateTime<Utc>) -> sql::Statement {
    ledger::advance_checkpoint(
        backend,
        "<job id>",
        "<lease token>",
        &KeyValue::Text("<last key>".into()),
        (0, 0),
        (false, Some("<row hash>")),
        now,
        now,
    )
}

/// Counts matching rows, stopping at `cap` when given.
pub async fn count_matching(
    db: &Database,
    job: &ValidatedJob,
    cap: Option<u64>,
) -> Result<u64, EngineError> {
    let statement = sql::count_matching(db.backend(), job, cap);
    Ok(crate::database::query_count(db.connection(), db.backend(), &statement).await?)
}

/// The rows of a retention window's due range still in the target (`job` validated at the
/// window's end, `from` its start minus the policy's age), counted up to `cap`.
pub async fn count_due_in_range(
    db: &Database,
    job: &ValidatedJob,
    age_column: &str,
    from: DateTime<Utc>,
    cap: u64,
) -> Result<u64, EngineError> {
    let statement = sql::retention::due_in_range(db.backend(), job, age_column, from, cap);
    Ok(crate::database::query_count(db.connection(), db.backend(), &statement).await?)
}

/// A policy's backlog: the rows its job validated now still matches, counted up to `cap`.
pub async fn count_backlog(
    db: &Database,
    job: &ValidatedJob,
    cap: u64,
) -> Result<u64, EngineError> {
    let statement = sql::retention::backlog(db.backend(), job, cap);
    Ok(crate::database::query_count(db.connection(), db.backend(), &statement).await?)
}

/// The first `limit` matching keys after `after`, without locking or writing.
pub async fn sample_keys(
    db: &Database,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
) -> Result<Vec<KeyValue>, EngineError> {
    let rows = db
        .query_all(&sql::select_keys(db.backend(), job, after, limit))
        .await?;
    let key_type = job.target.key_type;
    Ok(read_keys(&rows, key_type)?)
}
