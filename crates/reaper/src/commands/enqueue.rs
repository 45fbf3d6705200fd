//! `reaper enqueue`: submit a job to the ledger and the queue, given as JSON or as flags.

use std::path::PathBuf;
use std::process::ExitCode;

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
    let submitted = producer::accept(
        &db,
        &settings.catalog,
        &queue,
        &request,
        settings.config.worker.max_attempts,
        "cli",
    )
    .await
    .map_err(|error| match error {
        EngineError::Invalid(error) => CommandError::Invalid(error.to_string()),
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

/// The job from `--file` (`-`: standard input), `--json`, or the flags.
fn request(
    settings: &Settings,
    file: Option<PathBuf>,
    json: Option<String>,
    flags: EnqueueFlags,
) -> Result<JobRequest, CommandError> {
    let text = match (file, json) {
        (Some(path), None) if path.as_os_str() == "-" => {
            Some(std::io::read_to_string(std::io::stdin())?)
        }
        (Some(path), None) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, Some(json)) => Some(json),
        _ => None,
    };
    let parsed = match text {
        Some(text) => serde_json::from_str::<JobRequest>(&text)
            .map_err(|error| format!("invalid job: {error}")),
        None => flags.into_request(&settings.catalog),
    };
    parsed.map_err(CommandError::Invalid)
}
