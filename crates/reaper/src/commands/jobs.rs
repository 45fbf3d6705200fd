//! The job commands that read or cancel one job or list them: `reaper status`, `reaper jobs`,
//! `reaper cancel`.

use std::process::ExitCode;

use chrono::Utc;
use reaper_core::lifecycle::JobState;
use reaper_engine::ledger;

use super::{CommandError, CommandResult, connect};
use crate::job_view;
use crate::settings::Settings;

/// Prints a job (and with `with_audit` its audit entries) as JSON.
pub(crate) async fn status(settings: &Settings, id: &str, with_audit: bool) -> CommandResult {
    let db = connect(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    let mut shown = serde_json::to_value(job_view::job_view(job)?)?;
    if with_audit {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = ledger::audit_of_job(&db, id, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.batch_no;
            entries.extend(page.into_iter().map(job_view::audit_view));
        }
        shown["audit"] = serde_json::to_value(entries)?;
    }
    println!("{}", serde_json::to_string_pretty(&shown)?);
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
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36}  {:<10} {:<16} {:>10} {:>8} {:>8}  created",
        "id", "state", "target", "rows", "batches", "attempts"
    );
    for job in jobs {
        println!(
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
    match ledger::request_cancel(&db, id, Utc::now()).await? {
        Some(ledger::CancelOutcome::Cancelled(job)) => {
            println!(
                "{}: cancelled ({} rows deleted before)",
                job.id, job.rows_deleted
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ledger::CancelOutcome::Stopping(job)) => {
            println!(
                "{}: stopping at its next batch boundary ({} rows deleted so far)",
                job.id, job.rows_deleted
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
