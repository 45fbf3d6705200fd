//! `reaper enqueue`: submit a job to the ledger and the queue, given as JSON or as flags.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Read;

use anyhow::Context;
use reaper_core::job::JobRequest;
use reaper_engine::EngineError;

use super::{CommandError, CommandResult, connect};
use crate::enqueue_flags::EnqueueFlags;
use crate::producer;
use crate::queue::JobQueue;
use crate::settings::Settings;

/// Submits the job and prints its id.
pub(crate) async fn run(
    settings: &Settings,
    file: Option<PathBuf>,
    json: Option<String>,
    flags: EnqueueFlags,
) -> CommandResult {
    let request = request(settings, file, json, flags)?;
    let db = connect(settings).await?;
    let queue = JobQueue::open(&settings.config.queue).await?;
    let producer = producer::Producer {
        db,
        catalog: settings.catalog.clone(),
        queue,
        default_max_attempts: settings.config.worker.max_attempts,
    };
    let submitted = producer
        .accept(&request, "cli", None)
        .await
        .map_err(|error| match error {
            EngineError::Invalid(error) => CommandError::Invalid(error.to_string()),
            error @ EngineError::KeyReused { .. } => CommandError::Conflict(error.to_string()),
            error => error.into(),
        })?;
    if !submitted.created {
        eprintln!(
            "a job with idempotency key `{}` exists already",
            submitted.job.idempotency_key
        );
    }
    outln!("{}", submitted.job.id);
    Ok(ExitCode::SUCCESS)
}

/// The job from `--file` (`-`: standard input), `--json`, or the flags. JSON is read field by
/// field and checked against the catalog, so every problem is reported at once (exit status 2),
/// and a file that is not UTF-8 text is refused input too.
fn request(
    settings: &Settings,
    file: Option<PathBuf>,
    json: Option<String>,
    flags: EnqueueFlags,
) -> Result<JobRequest, CommandError> {
    let bytes = match (file, json) {
        (Some(path), None) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            Some(bytes)
        }
        (Some(path), None) => {
            Some(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        (None, Some(json)) => Some(json.into_bytes()),
        _ => None,
    };
    match bytes {
        Some(bytes) => producer::parse(&bytes, &settings.catalog)
            .map_err(|refused| CommandError::Invalid(refused.to_string())),
        None => flags
            .into_request(&settings.catalog)
            .map_err(CommandError::Invalid),
    }
}
