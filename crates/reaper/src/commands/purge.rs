//! `reaper purge`: a retention purge now, in the foreground (the purge itself is
//! [`crate::purge`]); `--resume` continues a stopped one.

use std::process::ExitCode;

use chrono::Utc;
use reaper_engine::ledger;

use super::{CommandError, CommandResult, check_ledger, connect_checked};
use crate::purge::{self, PurgeArgs, PurgeEnd};
use crate::settings::Settings;

/// Runs the purge `args` describe; exits 130 when a signal stopped it.
pub(crate) async fn run(settings: &Settings, args: &PurgeArgs) -> CommandResult {
    let end = match &args.resume {
        Some(id) => resume(settings, id).await?,
        None => match start(settings, args).await? {
            Some(end) => end,
            None => return Ok(ExitCode::SUCCESS),
        },
    };
    Ok(match end {
        PurgeEnd::Done => ExitCode::SUCCESS,
        PurgeEnd::Stopped => ExitCode::from(130),
        PurgeEnd::Failed => ExitCode::FAILURE,
    })
}

/// Continues the paused (or orphaned) purge `id`.
async fn resume(settings: &Settings, id: &str) -> Result<PurgeEnd, CommandError> {
    let db = connect_checked(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    if job.is_finished() {
        return Err(CommandError::Conflict(format!(
            "job {id} is already {}; nothing to resume",
            job.state
        )));
    }
    Ok(purge::run_foreground(&db, settings, job, None).await?)
}

/// Submits a new purge (written `paused`) and runs it; `None` after a dry run.
async fn start(settings: &Settings, args: &PurgeArgs) -> Result<Option<PurgeEnd>, CommandError> {
    let (request, policy) = purge::request(args, &settings.catalog, &settings.policies)
        .map_err(CommandError::Invalid)?;
    let validated = purge::validated(&request, &settings.catalog).map_err(CommandError::Invalid)?;
    let db = connect_checked(settings).await?;
    warn_of_paused(&db, settings, &validated.target.name).await;
    if args.dry_run {
        purge::dry_run(&db, &validated).await?;
        return Ok(None);
    }
    check_ledger(&db).await?;
    // Rows legal holds keep are not counted: the purge leaves them.
    let matching = reaper_engine::graph_run::count_removable(
        &db,
        &validated,
        validated.max_rows.saturating_add(1),
    )
    .await?;
    if let Err(refusal) = validated.check_max_rows(matching) {
        return Err(CommandError::Invalid(refusal.to_string()));
    }
    let submitted = ledger::submit(
        &db,
        &settings.catalog,
        &request,
        settings.config.worker.max_attempts,
        Utc::now(),
        policy.as_deref(),
        ledger::RunBy::Foreground,
    )
    .await?;
    let end = purge::run_foreground(&db, settings, submitted.job, Some(matching)).await?;
    Ok(Some(end))
}

/// Warns of purges of `target` left paused (stopped by a signal, never resumed): a new purge
/// does not continue them, and their rows may be what this one is about to count. A ledger that
/// cannot be read (not migrated yet) has nothing to warn of; the purge itself then says why.
async fn warn_of_paused(db: &reaper_engine::Database, settings: &Settings, target: &str) {
    let paused = ledger::list(
        db,
        Some(reaper_core::lifecycle::JobState::Paused),
        Some(target),
        None,
        20,
    )
    .await
    .unwrap_or_default();
    for job in paused {
        eprintln!(
            "warning: purge job {} of target `{target}` is paused ({} rows removed so far); resume it with: {}",
            job.id,
            job.rows_deleted,
            settings.command_line(&format!("purge --resume {}", job.id))
        );
    }
}
