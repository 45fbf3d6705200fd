//! Accepting a job, whoever submits it (HTTP API, CLI, Redis intake): the ledger first, then
//! the queue. A job is accepted once it is in the ledger; if the push then fails, the
//! reconciler enqueues it later, so the producer still gets its id.

use chrono::Utc;
use reaper_core::catalog::Catalog;
use reaper_core::job::JobRequest;
use reaper_core::retention;
use reaper_core::validate::{FieldError, ValidationError};
use reaper_engine::ledger::{self, Submitted};
use reaper_engine::{Database, EngineError, instruments};

use crate::queue::JobQueue;

/// Validates, records and enqueues `request`. A repeated idempotency key returns the existing
/// job and enqueues nothing. `source` labels the metrics (`api`, `cli`, `redis`, `scheduler`).
/// Producers may not use the scheduler's key prefix (`policy:`): a forged key could take a
/// retention window's place.
pub(crate) async fn accept(
    db: &Database,
    catalog: &Catalog,
    queue: &JobQueue,
    request: &JobRequest,
    default_max_attempts: u32,
    source: &'static str,
) -> Result<Submitted, EngineError> {
    // Case-insensitively: MySQL's default collation compares keys that way.
    if let Some(key) = &request.idempotency_key
        && key
            .get(..retention::KEY_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(retention::KEY_PREFIX))
    {
        instruments::job_submitted(source, false);
        return Err(EngineError::Invalid(ValidationError {
            errors: vec![FieldError {
                field: "idempotency_key".into(),
                message: format!(
                    "keys starting with `{}` are reserved for retention policies",
                    retention::KEY_PREFIX
                ),
            }],
        }));
    }
    accept_as(
        db,
        catalog,
        queue,
        request,
        default_max_attempts,
        source,
        None,
    )
    .await
}

/// [`accept`] for any source, including the retention scheduler (`policy` set, its reserved
/// keys allowed).
pub(crate) async fn accept_as(
    db: &Database,
    catalog: &Catalog,
    queue: &JobQueue,
    request: &JobRequest,
    default_max_attempts: u32,
    source: &'static str,
    policy: Option<&str>,
) -> Result<Submitted, EngineError> {
    let submitted = match ledger::submit(
        db,
        catalog,
        request,
        default_max_attempts,
        Utc::now(),
        policy,
    )
    .await
    {
        Ok(submitted) => submitted,
        Err(error @ EngineError::Invalid(_)) => {
            instruments::job_submitted(source, false);
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if submitted.created {
        instruments::job_submitted(source, true);
        tracing::info!(message = "Accepted a job.", job_id = %submitted.job.id, target = %submitted.job.target, source);
        if let Err(error) = queue.push(&submitted.job.id, None).await {
            tracing::warn!(message = "Could not enqueue an accepted job; the reconciler will.", job_id = %submitted.job.id, %error);
        }
    }
    Ok(submitted)
}
