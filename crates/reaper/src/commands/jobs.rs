//! The job commands that read or act on one job or list them: `reaper status`, `reaper jobs`,
//! `reaper cancel`, `reaper pause`, `reaper resume`, `reaper retry`. Actions are recorded as
//! asked by `$USER`.

use std::process::ExitCode;

use chrono::Utc;
use reaper_core::lifecycle::JobState;
use reaper_engine::ledger;

use super::{CommandError, CommandResult, connect};
use crate::job_view;
use crate::settings::Settings;

/// Which audit entries `reaper status --audit` prints: those after batch `after`, at most
/// `limit` of them (a job of 100,000 batches is read a page at a time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditPage {
    pub(crate) after: i64,
    pub(crate) limit: u32,
}

/// Prints a job (and with `audit` a page of its audit entries) as JSON; when more entries
/// follow the page, standard error says how to get them.
pub(crate) async fn status(
    settings: &Settings,
    id: &str,
    audit: Option<AuditPage>,
) -> CommandResult {
    let db = connect(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    let mut shown = serde_json::to_value(job_view::job_view_with_tables(&db, job).await?)?;
    let mut next = None;
    if let Some(page) = audit {
        // One more than asked, to know whether another page follows.
        let mut entries =
            ledger::audit_of_job(&db, id, page.after, page.limit.saturating_add(1)).await?;
        if entries.len() > page.limit as usize {
            entries.truncate(page.limit as usize);
            next = entries.last().map(|entry| entry.batch_no);
        }
        let views: Vec<_> = entries.into_iter().map(job_view::audit_view).collect();
        shown["audit"] = serde_json::to_value(views)?;
    }
    outln!("{}", serde_json::to_string_pretty(&shown)?);
    if let (Some(after), Some(page)) = (next, audit) {
        eprintln!(
            "more audit entries follow: reaper status {id} --audit --after {after} --limit {}",
            page.limit
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists jobs, newest first, as a table or JSON.
pub(crate) async fn list(
    settings: &Settings,
    state: Option<String>,
    target: Option<String>,
    limit: u32,
    as_json: bool,
) -> CommandResult {
    let state = state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(|error| CommandError::Invalid(format!("--state: {error}")))?;
    let db = connect(settings).await?;
    let jobs = ledger::list(&db, state, target.as_deref(), None, limit).await?;
    if as_json {
        let views = jobs
            .into_iter()
            .map(job_view::job_view)
            .collect::<Result<Vec<_>, _>>()?;
        outln!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<36}  {:<10} {:<16} {:>10} {:>8} {:>8}  created",
        "id",
        "state",
        "target",
        "rows",
        "batches",
        "attempts"
    );
    for job in jobs {
        outln!(
            "{:<36}  {:<10} {:<16} {:>10} {:>8} {:>8}  {}",
            job.id,
            job.state,
            job.target,
            job.rows_deleted,
            job.batches,
            job.attempts,
            job.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a job to stop.
pub(crate) async fn cancel(settings: &Settings, id: &str) -> CommandResult {
    let db = connect(settings).await?;
    let actor = crate::cli::requested_by(None);
    match ledger::cancel(&db, id, &actor, Utc::now()).await? {
        Some(ledger::CancelOutcome::Cancelled(job)) => {
            outln!(
                "{}: cancelled ({} rows deleted before)",
                job.id,
                job.rows_deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ledger::CancelOutcome::Stopping(job)) => {
            outln!(
                "{}: stopping at its next batch boundary ({} rows deleted so far)",
                job.id,
                job.rows_deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ledger::CancelOutcome::Finished(job)) => Err(CommandError::Conflict(format!(
            "{}: already {}; nothing to cancel",
            job.id, job.state
        ))),
        None => Err(CommandError::no_job(id)),
    }
}

/// Submits the restore job of an archive or soft-delete job (see [`crate::actions::restore`])
/// and prints its id; a job that cannot be restored is refused input (exit status 2).
pub(crate) async fn restore(
    settings: &Settings,
    id: &str,
    (reason, requested_by, batch_size): (Option<String>, Option<String>, Option<u32>),
) -> CommandResult {
    let producer = producer(settings).await?;
    let actor = crate::cli::requested_by(requested_by);
    let ask = reaper_engine::archive::RestoreAsk {
        requested_by: &actor,
        reason: reason.as_deref(),
        batch_size,
        idempotency_key: None,
    };
    let restored = crate::actions::restore(&producer, id, ask, "cli");
    match restored.await {
        Ok(crate::actions::Outcome::Done(_, job)) => {
            outln!("{}", job.id);
            Ok(ExitCode::SUCCESS)
        }
        Ok(crate::actions::Outcome::Conflict(message)) => Err(CommandError::Conflict(message)),
        Ok(crate::actions::Outcome::NotFound(_)) => Err(CommandError::no_job(id)),
        Err(reaper_engine::EngineError::Invalid(error)) => {
            Err(CommandError::Invalid(error.to_string()))
        }
        Err(error) => Err(error.into()),
    }
}

/// The producer the job actions need: the ledger, the catalog and the queue.
async fn producer(settings: &Settings) -> Result<crate::producer::Producer, CommandError> {
    Ok(crate::producer::Producer {
        db: connect(settings).await?,
        catalog: settings.catalog.clone(),
        queue: crate::queue::JobQueue::open(&settings.config.queue).await?,
        default_max_attempts: settings.config.worker.max_attempts,
    })
}

/// Pauses, resumes or retries a job (see [`crate::actions`]); a resumed or retried job goes on
/// the queue, so this opens it.
pub(crate) async fn act(settings: &Settings, action: ledger::Action, id: &str) -> CommandResult {
    let producer = producer(settings).await?;
    let actor = crate::cli::requested_by(None);
    match crate::actions::act(&producer, action, id, &actor).await? {
        crate::actions::Outcome::Done(word, job) => {
            let said = match word {
                "stopping" => "pausing at its next batch boundary",
                "paused" => "paused",
                _ if action == ledger::Action::Retry => "pending again, one more attempt",
                _ => "pending again, from its checkpoint",
            };
            outln!(
                "{}: {said} ({} rows deleted so far)",
                job.id,
                job.rows_deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        crate::actions::Outcome::Conflict(message) => Err(CommandError::Conflict(message)),
        crate::actions::Outcome::NotFound(_) => Err(CommandError::no_job(id)),
    }
}
