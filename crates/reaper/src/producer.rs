//! Accepting a job, whoever submits it (HTTP API, CLI, Redis intake): the ledger first, then
//! the queue. A job is accepted once it is in the ledger; if the push then fails, the
//! reconciler enqueues it later, so the producer still gets its id.

use chrono::Utc;
use reaper_core::catalog::Catalog;
use reaper_core::job::JobRequest;
use reaper_core::retention;
use reaper_core::validate::ValidationError;
use reaper_engine::ledger::{self, Submitted};
use reaper_engine::{Database, EngineError, instruments};

use crate::queue::JobQueue;

/// Why bytes a producer sent are not a job.
#[derive(Debug)]
pub(crate) enum Unacceptable {
    /// Not UTF-8 text, or not JSON at all: there are no fields to name.
    Unreadable(String),
    /// A JSON job with problems, each naming its field.
    Invalid(ValidationError),
}

impl std::fmt::Display for Unacceptable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unacceptable::Unreadable(message) => write!(f, "invalid job: {message}"),
            Unacceptable::Invalid(error) => error.fmt(f),
        }
    }
}

/// Reads a job as a producer sent it (HTTP body, `--file`, `--json`, intake message): UTF-8
/// JSON, read field by field, and checked against the catalog, so that every problem is
/// reported at once with its field.
pub(crate) fn parse(bytes: &[u8], catalog: &Catalog) -> Result<JobRequest, Unacceptable> {
    let text = std::str::from_utf8(bytes).map_err(|error| {
        Unacceptable::Unreadable(format!(
            "not UTF-8 text: invalid byte at offset {}",
            error.valid_up_to()
        ))
    })?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| Unacceptable::Unreadable(error.to_string()))?;
    reaper_core::validate::check_json(&value, catalog, Utc::now()).map_err(Unacceptable::Invalid)
}

/// What accepting a job needs: the ledger, the catalog, the queue and the attempts a job gets
/// when it asks for none. Each producer (HTTP API, Redis intake, scheduler, CLI) holds one.
#[derive(Debug, Clone)]
pub(crate) struct Producer {
    pub(crate) db: Database,
    pub(crate) catalog: Catalog,
    pub(crate) queue: JobQueue,
    pub(crate) default_max_attempts: u32,
}

impl Producer {
    /// [`accept`]s `request` from `source` (for `policy`, the scheduler's windows).
    pub(crate) async fn accept(
        &self,
        request: &JobRequest,
        source: &'static str,
        policy: Option<&str>,
    ) -> Result<Submitted, EngineError> {
        accept(
            &self.db,
            &self.catalog,
            &self.queue,
            request,
            self.default_max_attempts,
            source,
            policy,
        )
        .await
    }
}

/// Validates, records and enqueues `request`. A repeated idempotency key returns the existing
/// job and enqueues nothing. `source` labels the metrics (`api`, `cli`, `redis`, `scheduler`);
/// `policy` names the retention policy submitting (the scheduler's windows), none for producers.
/// Producers may not use the scheduler's key prefix (`policy:`): a forged key could take a
/// retention window's place.
async fn accept(
    db: &Database,
    catalog: &Catalog,
    queue: &JobQueue,
    request: &JobRequest,
    default_max_attempts: u32,
    source: &'static str,
    policy: Option<&str>,
) -> Result<Submitted, EngineError> {
    // Case-insensitively: MySQL's default collation compares keys that way.
    if policy.is_none()
        && let Some(key) = &request.idempotency_key
        && key
            .get(..retention::KEY_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(retention::KEY_PREFIX))
    {
        instruments::job_submitted(source, false);
        return Err(EngineError::Invalid(ValidationError::of(
            "idempotency_key",
            format!(
                "keys starting with `{}` are reserved for retention policies",
                retention::KEY_PREFIX
            ),
        )));
    }
    let submitted = match ledger::submit(
        db,
        catalog,
        request,
        default_max_attempts,
        Utc::now(),
        policy,
        ledger::RunBy::Queue,
    )
    .await
    {
        Ok(submitted) => submitted,
        Err(error @ (EngineError::Invalid(_) | EngineError::KeyReused { .. })) => {
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
