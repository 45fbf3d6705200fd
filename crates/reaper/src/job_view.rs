//! How a job and its audit entries look to people and services: the JSON of the HTTP API and
//! of `reaper status` / `reaper jobs`, one shape for both. Stored JSON text (the request, the
//! result, the audited keys) is shown as JSON, not as strings holding JSON.

use chrono::{DateTime, Utc};
use reaper_engine::ledger::{AuditRecord, JobRecord};
use serde::Serialize;

/// A job as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    pub(crate) id: String,
    pub(crate) idempotency_key: String,
    pub(crate) target: String,
    /// `pending`, `running`, `done`, `dead` or `cancelled`.
    pub(crate) state: String,
    pub(crate) rows_deleted: i64,
    pub(crate) batches: i64,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) progress: Progress,
    /// Summary of a finished job, or the report of a dry run.
    pub(crate) result: Option<serde_json::Value>,
    /// The request as accepted.
    pub(crate) request: serde_json::Value,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) run_after: Option<DateTime<Utc>>,
    pub(crate) cancel_requested_at: Option<DateTime<Utc>>,
    /// The worker holding the job, while it runs.
    pub(crate) lease_owner: Option<String>,
}

/// Where a job is in its keyset walk.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Progress {
    /// Last key of the last committed batch (the job resumes after it).
    pub(crate) checkpoint: Option<String>,
    /// Keyset passes started.
    pub(crate) passes: i64,
    pub(crate) updated_at: DateTime<Utc>,
}

/// Stored JSON text as JSON; text that is not JSON (it always is) stays a string.
fn as_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        Self {
            request: as_json(&job.request),
            result: job.result.as_deref().map(as_json),
            progress: Progress {
                checkpoint: job.checkpoint,
                passes: job.passes,
                updated_at: job.updated_at,
            },
            id: job.id,
            idempotency_key: job.idempotency_key,
            target: job.target,
            state: job.state,
            rows_deleted: job.rows_deleted,
            batches: job.batches,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            run_after: job.run_after,
            cancel_requested_at: job.cancel_requested_at,
            lease_owner: job.lease_owner,
        }
    }
}

/// One audit entry as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditView {
    pub(crate) batch_no: i64,
    pub(crate) target: String,
    pub(crate) mode: String,
    pub(crate) row_count: i64,
    pub(crate) first_key: String,
    pub(crate) last_key: String,
    /// Every key the batch deleted.
    pub(crate) deleted_keys: serde_json::Value,
    pub(crate) requested_by: String,
    pub(crate) reason: String,
    pub(crate) created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditView {
    fn from(entry: AuditRecord) -> Self {
        Self {
            deleted_keys: as_json(&entry.deleted_keys),
            batch_no: entry.batch_no,
            target: entry.target,
            mode: entry.mode,
            row_count: entry.row_count,
            first_key: entry.first_key,
            last_key: entry.last_key,
            requested_by: entry.requested_by,
            reason: entry.reason,
            created_at: entry.created_at,
        }
    }
}

/// The job states a listing may filter on.
pub(crate) const STATES: &[&str] = &["pending", "running", "done", "dead", "cancelled"];
