//! Turning ledger records into their public shapes (`reaper_core::views`). Stored JSON text
//! (the request, the result, the audited keys) becomes JSON.

use reaper_core::views::{AuditView, JobView, Progress};
use reaper_engine::EngineError;
use reaper_engine::ledger::{AuditRecord, JobRecord};

/// Stored JSON text as JSON; text that is not JSON (it always is) stays a string.
fn as_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// A ledger row as shown. Fails only if the stored request is unreadable (corrupt ledger).
pub(crate) fn job_view(job: JobRecord) -> Result<JobView, EngineError> {
    let request = serde_json::from_str(&job.request).map_err(|error| {
        EngineError::Corrupt(format!(
            "job {}: stored request is unreadable: {error}",
            job.id
        ))
    })?;
    Ok(JobView {
        request,
        result: job.result.as_deref().map(as_json),
        progress: Progress {
            checkpoint: job.checkpoint,
            passes: job.passes,
            updated_at: job.updated_at,
            tables: Default::default(),
        },
        id: job.id,
        idempotency_key: job.idempotency_key,
        target: job.target,
        state: job.state,
        rows_deleted: job.rows_deleted,
        rows_held: job.rows_held,
        chain_head: job.chain_head,
        batches: job.batches,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        last_error: job.last_error,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        run_after: job.run_after,
        // The stop mark of a pause request is not a cancel.
        cancel_requested_at: job
            .cancel_requested_at
            .filter(|_| job.pause_requested_at.is_none()),
        pause_requested_at: job.pause_requested_at,
        lease_owner: job.lease_owner,
        policy: job.policy,
    })
}

/// [`job_view`] with its per-table progress read from the audit (one grouped query): for a
/// job that has removed rows of more tables than its own target (a job across relations).
pub(crate) async fn job_view_with_tables(
    db: &reaper_engine::Database,
    job: JobRecord,
) -> Result<JobView, EngineError> {
    let tables = reaper_engine::ledger::rows_by_table(db, &job.id).await?;
    let mut view = job_view(job)?;
    if tables.keys().any(|table| *table != view.target) {
        view.progress.tables = tables;
    }
    Ok(view)
}

/// An audit row as shown.
pub(crate) fn audit_view(entry: AuditRecord) -> AuditView {
    AuditView {
        deleted_keys: as_json(&entry.deleted_keys),
        batch_no: entry.batch_no,
        target: entry.target,
        mode: entry.mode,
        row_count: entry.row_count,
        rows_held: entry.rows_held,
        first_key: entry.first_key,
        last_key: entry.last_key,
        requested_by: entry.requested_by,
        reason: entry.reason,
        created_at: entry.created_at,
    }
}
