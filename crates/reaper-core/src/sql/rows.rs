//! The rows reaper reads back from its own tables, each column list beside its decoder.
//!
//! Statements in [`ledger`](crate::sql::ledger) select [`JOB_COLUMNS`] or [`AUDIT_COLUMNS`];
//! [`JobRecord::decode`] and [`AuditRecord::decode`] read those columns by name through
//! [`Row`], which the engine implements over its driver's rows (decoding each backend's
//! timestamps). A test holds each list and its decoder to the same names.

use chrono::{DateTime, Utc};

use crate::lifecycle::{JobResult, JobState};

/// One result row, read by column name.
pub trait Row {
    /// The driver's error.
    type Error;
    /// A text column.
    fn text(&self, column: &'static str) -> Result<Option<String>, Self::Error>;
    /// An integer column (64-bit).
    fn int(&self, column: &'static str) -> Result<Option<i64>, Self::Error>;
    /// A boolean column.
    fn flag(&self, column: &'static str) -> Result<Option<bool>, Self::Error>;
    /// A timestamp column written by reaper.
    fn time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, Self::Error>;
    /// A value reaper never writes (a NULL in a NOT NULL column, an unknown state).
    fn corrupt(column: &'static str, problem: String) -> Self::Error;
}

/// One of [`Row`]'s readers.
type Reader<R, T> = fn(&R, &'static str) -> Result<Option<T>, <R as Row>::Error>;

/// Reads a column that is never NULL.
pub(crate) fn required<R: Row, T>(
    row: &R,
    column: &'static str,
    read: Reader<R, T>,
) -> Result<T, R::Error> {
    read(row, column)?.ok_or_else(|| R::corrupt(column, "is NULL".into()))
}

/// Columns every job read returns ([`JobRecord::decode`] reads them by name).
pub const JOB_COLUMNS: &str = "id, idempotency_key, target, request, state, checkpoint, passes, rows_deleted, \
     rows_held, batches, attempts, max_attempts, lease_owner, lease_expires_at, run_after, last_error, result, created_at, \
     updated_at, started_at, finished_at, locked_rows_skipped, cancel_requested_at, policy, pause_requested_at, chain_head, due_rows";

/// A job's row in the ledger (`reaper_jobs`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Ledger id.
    pub id: String,
    /// Unique key (the id when the producer gave none).
    pub idempotency_key: String,
    /// Target name.
    pub target: String,
    /// The accepted request, as JSON text.
    pub request: String,
    /// Where the job is in its life.
    pub state: JobState,
    /// Last key of the last committed batch of the current pass.
    pub checkpoint: Option<String>,
    /// Keyset passes started (more than one only when rows were locked during a pass).
    pub passes: i64,
    /// Rows deleted (or soft-deleted) so far.
    pub rows_deleted: i64,
    /// Matching rows left in place under legal holds so far.
    pub rows_held: i64,
    /// Batches committed so far.
    pub batches: i64,
    /// Claims that did not end cleanly, including the current one.
    pub attempts: i64,
    /// The job is dead when a claim would exceed this.
    pub max_attempts: i64,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When that lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Not to run before (after a transient failure).
    pub run_after: Option<DateTime<Utc>>,
    /// The last error, kept for status.
    pub last_error: Option<String>,
    /// The stored [`JobResult`] as JSON text: a summary (done, cancelled) or dry-run report.
    pub result: Option<String>,
    /// Acceptance time; the reference time of `older_than`.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First claim.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached an end state ([`JobState::FINISHED`]).
    pub finished_at: Option<DateTime<Utc>>,
    /// The current keyset pass may have passed over rows other transactions held (PostgreSQL),
    /// so its end must look for them.
    pub locked_rows_skipped: bool,
    /// When somebody asked the job to stop (it stops at the next batch boundary): the mark
    /// every batch's lease check refuses on, set by a cancel and by a pause request alike.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The retention policy that submitted the job, if one did.
    pub policy: Option<String>,
    /// Set with `cancel_requested_at` when the stop asked for is a pause: the job's worker
    /// then leaves it `paused` instead of `cancelled`.
    pub pause_requested_at: Option<DateTime<Utc>>,
    /// The newest audit row's hash (the head of the job's audit chain).
    pub chain_head: Option<String>,
    /// For a retention window's job: the rows that became due in its window (counted, up to
    /// [`crate::sql::retention::COUNT_CAP`], when the scheduler submitted it).
    pub due_rows: Option<i64>,
}

impl JobRecord {
    /// Reads one row of [`JOB_COLUMNS`].
    pub fn decode<R: Row>(row: &R) -> Result<Self, R::Error> {
        let state = required(row, "state", R::text)?;
        Ok(Self {
            id: required(row, "id", R::text)?,
            idempotency_key: required(row, "idempotency_key", R::text)?,
            target: required(row, "target", R::text)?,
            request: required(row, "request", R::text)?,
            state: state
                .parse()
                .map_err(|error| R::corrupt("state", format!("{error}")))?,
            checkpoint: row.text("checkpoint")?,
            passes: required(row, "passes", R::int)?,
            rows_deleted: required(row, "rows_deleted", R::int)?,
            rows_held: required(row, "rows_held", R::int)?,
            batches: required(row, "batches", R::int)?,
            attempts: required(row, "attempts", R::int)?,
            max_attempts: required(row, "max_attempts", R::int)?,
            lease_owner: row.text("lease_owner")?,
            lease_expires_at: row.time("lease_expires_at")?,
            run_after: row.time("run_after")?,
            last_error: row.text("last_error")?,
            result: row.text("result")?,
            created_at: required(row, "created_at", R::time)?,
            updated_at: required(row, "updated_at", R::time)?,
            started_at: row.time("started_at")?,
            finished_at: row.time("finished_at")?,
            locked_rows_skipped: required(row, "locked_rows_skipped", R::flag)?,
            cancel_requested_at: row.time("cancel_requested_at")?,
            policy: row.text("policy")?,
            pause_requested_at: row.time("pause_requested_at")?,
            chain_head: row.text("chain_head")?,
            due_rows: row.int("due_rows")?,
        })
    }

    /// True once the job reached an end state.
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// The stored result, typed; `None` while there is none (or it is unreadable).
    pub fn job_result(&self) -> Option<JobResult> {
        self.result.as_deref().and_then(JobResult::parse)
    }

    /// A `done` run that stopped at its `max_rows` with matching rows left (its stored
    /// summary says so).
    pub fn stopped_at_max_rows(&self) -> bool {
        self.job_result()
            .as_ref()
            .and_then(JobResult::summary)
            .is_some_and(|summary| summary.stopped_at_max_rows)
    }
}

/// Columns every audit read returns ([`AuditRecord::decode`] reads them by name).
pub const AUDIT_COLUMNS: &str = "id, job_id, batch_no, target, mode, row_count, rows_held, first_key, last_key, deleted_keys, requested_by, reason, created_at, prev_hash, row_hash";

/// One committed batch, as the audit log (`reaper_audit`) records it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Audit row id.
    pub id: i64,
    /// Ledger id of the job.
    pub job_id: String,
    /// 1-based batch number within the job.
    pub batch_no: i64,
    /// Target name.
    pub target: String,
    /// `hard`, `soft`, `archive`, `restore`, or a related table's effect.
    pub mode: String,
    /// Rows in the batch.
    pub row_count: i64,
    /// Matching rows the batch left in place under legal holds.
    pub rows_held: i64,
    /// Smallest key of the batch.
    pub first_key: String,
    /// Largest key of the batch.
    pub last_key: String,
    /// Every key of the batch, as a JSON array.
    pub deleted_keys: String,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// Commit time of the batch.
    pub created_at: DateTime<Utc>,
    /// The previous audit row's hash (empty for the first; NULL before the chain existed).
    pub prev_hash: Option<String>,
    /// This row's hash ([`crate::audit_chain`]).
    pub row_hash: Option<String>,
}

impl AuditRecord {
    /// Reads one row of [`AUDIT_COLUMNS`].
    pub fn decode<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            id: required(row, "id", R::int)?,
            job_id: required(row, "job_id", R::text)?,
            batch_no: required(row, "batch_no", R::int)?,
            target: required(row, "target", R::text)?,
            mode: required(row, "mode", R::text)?,
            row_count: required(row, "row_count", R::int)?,
            rows_held: required(row, "rows_held", R::int)?,
            first_key: required(row, "first_key", R::text)?,
            last_key: required(row, "last_key", R::text)?,
            deleted_keys: required(row, "deleted_keys", R::text)?,
            requested_by: required(row, "requested_by", R::text)?,
            reason: required(row, "reason", R::text)?,
            created_at: required(row, "created_at", R::time)?,
            prev_hash: row.text("prev_hash")?,
            row_hash: row.text("row_hash")?,
        })
    }
}

/// Columns of [`count_unfinished_by_state`](crate::sql::ledger::count_unfinished_by_state).
pub const STATE_COUNT_COLUMNS: &str = "state, COUNT(*) AS jobs";

/// One row of [`STATE_COUNT_COLUMNS`]: a state and how many jobs are in it.
pub fn decode_state_count<R: Row>(row: &R) -> Result<(JobState, u64), R::Error> {
    let state = required(row, "state", R::text)?;
    let state = state
        .parse()
        .map_err(|error| R::corrupt("state", format!("{error}")))?;
    let jobs = required(row, "jobs", R::int)?;
    Ok((state, u64::try_from(jobs).unwrap_or(0)))
}

/// Columns every read of `reaper_job_actions` returns ([`ActionRecord::decode`] reads them).
pub const ACTION_COLUMNS: &str = "id, job_id, action, actor, outcome, created_at";

/// One operator action on a job (cancel, pause, resume, retry, a policy run now), as
/// `reaper_job_actions` records it: who asked, when, and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    /// Row id (ascending with time).
    pub id: i64,
    /// The job acted on.
    pub job_id: String,
    /// `cancel`, `pause`, `resume`, `retry` or `run` (see `sql::ledger::Action`).
    pub action: String,
    /// Who asked (the signed-in name, `$USER` for the CLI, `api` for a bare API call).
    pub actor: String,
    /// What it did: `cancelled`, `stopping`, `paused`, `pending`, `created`.
    pub outcome: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl ActionRecord {
    /// Reads one row of [`ACTION_COLUMNS`].
    pub fn decode<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            id: required(row, "id", R::int)?,
            job_id: required(row, "job_id", R::text)?,
            action: required(row, "action", R::text)?,
            actor: required(row, "actor", R::text)?,
            outcome: required(row, "outcome", R::text)?,
            created_at: required(row, "created_at", R::time)?,
        })
    }
}

/// One committed batch as the job page's chart reads it (`sql::ledger::batch_series`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPoint {
    /// 1-based batch number.
    pub batch_no: i64,
    /// Rows it removed.
    pub row_count: i64,
    /// Its commit time.
    pub created_at: DateTime<Utc>,
}

impl BatchPoint {
    /// Reads one row of `sql::ledger::BATCH_SERIES_COLUMNS`.
    pub fn decode<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(Self {
            batch_no: required(row, "batch_no", R::int)?,
            row_count: required(row, "row_count", R::int)?,
            created_at: required(row, "created_at", R::time)?,
        })
    }
}

/// Columns of [`lock_job`](crate::sql::ledger::lock_job): the job's committed batches and the
/// head of its audit chain.
pub const LOCKED_JOB_COLUMNS: &str = "batches, chain_head";

/// The job's row as a batch locks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedJob {
    /// Batches committed (the batch being written is number `batches + 1`).
    pub batches: i64,
    /// The newest audit row's hash (empty before the first).
    pub chain_head: String,
}

/// The row of [`LOCKED_JOB_COLUMNS`].
pub fn decode_locked_job<R: Row>(row: &R) -> Result<LockedJob, R::Error> {
    Ok(LockedJob {
        batches: required(row, "batches", R::int)?,
        chain_head: row.text("chain_head")?.unwrap_or_default(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A row that has every column and records which ones were read.
    #[derive(Default)]
    pub(crate) struct Recording {
        pub(crate) read: RefCell<Vec<&'static str>>,
    }

    impl Row for Recording {
        type Error = String;
        fn text(&self, column: &'static str) -> Result<Option<String>, String> {
            self.read.borrow_mut().push(column);
            Ok(Some(
                if column == "state" {
                    JobState::Done.as_str()
                } else {
                    "x"
                }
                .into(),
            ))
        }
        fn int(&self, column: &'static str) -> Result<Option<i64>, String> {
            self.read.borrow_mut().push(column);
            Ok(Some(1))
        }
        fn flag(&self, column: &'static str) -> Result<Option<bool>, String> {
            self.read.borrow_mut().push(column);
            Ok(Some(false))
        }
        fn time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, String> {
            self.read.borrow_mut().push(column);
            Ok(Some(DateTime::UNIX_EPOCH))
        }
        fn corrupt(column: &'static str, problem: String) -> String {
            format!("{column} {problem}")
        }
    }

    /// The names of a column list, aliases taken as the name.
    pub(crate) fn names(columns: &str) -> Vec<&str> {
        columns
            .split(',')
            .map(|column| {
                let name = column.trim().rsplit(' ').next().unwrap_or(column);
                name.rsplit('.').next().unwrap_or(name)
            })
            .collect()
    }

    fn read_by<T>(decode: impl Fn(&Recording) -> Result<T, String>) -> Vec<&'static str> {
        let row = Recording::default();
        decode(&row).unwrap();
        row.read.into_inner()
    }

    #[test]
    fn each_decoder_reads_exactly_its_column_list() {
        let mut job = read_by(JobRecord::decode);
        // `state` is read first, to parse it once.
        job.sort_unstable();
        let mut listed = names(JOB_COLUMNS);
        listed.sort_unstable();
        assert_eq!(job, listed);
        assert_eq!(read_by(AuditRecord::decode), names(AUDIT_COLUMNS));
        assert_eq!(read_by(decode_state_count), names(STATE_COUNT_COLUMNS));
        assert_eq!(read_by(decode_locked_job), names(LOCKED_JOB_COLUMNS));
        assert_eq!(read_by(ActionRecord::decode), names(ACTION_COLUMNS));
        assert_eq!(
            read_by(BatchPoint::decode),
            crate::sql::ledger::BATCH_SERIES_COLUMNS
        );
    }
}
