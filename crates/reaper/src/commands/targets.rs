//! `reaper target list|show|pause|resume|set|clear`: live control of targets, straight on the
//! ledger database the daemons read their controls from (every daemon applies a change to the
//! batches it starts within a second). Each change is recorded with who made it.

use std::process::ExitCode;

use chrono::Utc;
use reaper_core::controls::ThrottlePatch;
use reaper_core::views::TargetView;
use reaper_engine::{EngineError, controls};

use super::{CommandError, CommandResult, check_ledger, connect};
use crate::settings::Settings;
use crate::target_view;

/// `reaper target …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TargetCommand {
    /// Every catalog target: paused or not, the rows-per-second cap and largest batch in force,
    /// who changed it last.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One target as JSON: configured throttle, override, what is in force, and its recorded
    /// changes (who, when, what).
    Show {
        /// The catalog target.
        target: String,
    },
    /// Pause a target on every daemon: no batch of it starts; running jobs wait at their batch
    /// boundary, keeping their lease and checkpoint. Survives restarts until resumed.
    Pause {
        /// The catalog target.
        target: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Resume a paused target.
    Resume {
        /// The catalog target.
        target: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Lower a target's throttle live; `none` clears one value (the configured one applies). A
    /// value may only lower the configuration.
    Set {
        /// The catalog target.
        target: String,
        #[command(flatten)]
        values: SetArgs,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Clear a target's override: the configured throttle applies again (a pause stays).
    Clear {
        /// The catalog target.
        target: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// The values `reaper target set` changes.
#[derive(Debug, clap::Args)]
pub(crate) struct SetArgs {
    /// Rows per second, all daemons together (at most the configured cap).
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    max_rows_per_second: Option<String>,
    /// The largest batch (at most the configured max_batch_size).
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    max_batch_size: Option<String>,
    /// The smallest adaptive batch (adaptive targets only).
    #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
    min_batch_size: Option<String>,
    /// The duration an adaptive batch aims at, in milliseconds (adaptive targets only).
    #[arg(long, value_name = "MS|none", allow_hyphen_values = true)]
    target_batch_duration_ms: Option<String>,
    /// Live database-health thresholds as a JSON object, e.g. `{"load.pause_above": 4}` (names:
    /// replica_lag, load or lock_waits, then .pause_above or .stop_above), or `none`.
    #[arg(long, value_name = "JSON|none")]
    thresholds: Option<String>,
}

impl SetArgs {
    /// The change these flags ask for; a value that is no number (or `none`) is refused input.
    fn patch(self) -> Result<ThrottlePatch, CommandError> {
        Ok(ThrottlePatch {
            max_rows_per_second: number("--max-rows-per-second", self.max_rows_per_second)?,
            max_batch_size: number("--max-batch-size", self.max_batch_size)?,
            min_batch_size: number("--min-batch-size", self.min_batch_size)?,
            target_batch_duration_ms: number(
                "--target-batch-duration-ms",
                self.target_batch_duration_ms,
            )?,
            thresholds: self
                .thresholds
                .map(|text| match text.as_str() {
                    "none" => Ok(None),
                    json => serde_json::from_str(json).map(Some).map_err(|error| {
                        CommandError::Invalid(format!(
                            "--thresholds: {error}; give a JSON object of numbers, e.g. \
                             '{{\"replica_lag.pause_above\": 5}}', or none"
                        ))
                    }),
                })
                .transpose()?,
            requested_by: None,
            reason: None,
        })
    }
}

/// Who changes a target and why.
#[derive(Debug, clap::Args)]
pub(crate) struct ChangeArgs {
    /// Why (recorded with the change).
    #[arg(long)]
    reason: Option<String>,
    /// Who (default: $USER).
    #[arg(long)]
    by: Option<String>,
}

/// Runs a `reaper target` command.
pub(crate) async fn run(settings: &Settings, command: TargetCommand) -> CommandResult {
    let db = connect(settings).await?;
    check_ledger(&db).await?;
    let catalog = &settings.catalog;
    let (target, action, change) = match command {
        TargetCommand::List { json } => {
            let targets = target_view::all(&db, catalog).await?;
            return print_list(&targets, json);
        }
        TargetCommand::Show { target } => {
            return match target_view::one(&db, catalog, &target).await? {
                Some(view) => print(&view),
                None => Err(CommandError::Invalid(
                    reaper_core::controls::check_target(catalog, &target)
                        .err()
                        .map_or_else(
                            || format!("no target `{target}`"),
                            |e| e.errors[0].message.clone(),
                        ),
                )),
            };
        }
        TargetCommand::Pause { target, change } => (target, Change::Pause, change),
        TargetCommand::Resume { target, change } => (target, Change::Resume, change),
        TargetCommand::Clear { target, change } => (target, Change::Clear, change),
        TargetCommand::Set {
            target,
            values,
            change,
        } => (target, Change::Set(Box::new(values.patch()?)), change),
    };
    let actor = crate::cli::requested_by(change.by);
    let by = controls::Changer {
        actor: &actor,
        reason: change.reason.as_deref(),
        now: Utc::now(),
    };
    let lease = settings.config.worker.lease.as_duration();
    let changed = match &action {
        Change::Pause => controls::pause(&db, catalog, &target, by).await,
        Change::Resume => controls::resume(&db, catalog, &target, by).await,
        Change::Set(patch) => controls::set(&db, catalog, &target, patch, lease, by).await,
        Change::Clear => controls::clear(&db, catalog, &target, by).await,
    };
    match changed {
        Ok(_) => match target_view::one(&db, catalog, &target).await? {
            Some(view) => print(&view),
            None => Err(CommandError::NotFound(format!("no target `{target}`"))),
        },
        Err(EngineError::Invalid(invalid)) => {
            let problems: Vec<String> = invalid.errors.iter().map(ToString::to_string).collect();
            Err(CommandError::Invalid(format!(
                "refused; nothing changed: {}",
                problems.join("; ")
            )))
        }
        Err(error) => Err(error.into()),
    }
}

/// A change `reaper target` makes.
enum Change {
    Pause,
    Resume,
    Set(Box<ThrottlePatch>),
    Clear,
}

/// A `--flag N|none` value: `none` clears, a whole number sets (checked by the core).
fn number(flag: &str, given: Option<String>) -> Result<Option<Option<i64>>, CommandError> {
    given
        .map(|text| match text.trim() {
            "none" => Ok(None),
            number => number.parse::<i64>().map(Some).map_err(|_| {
                CommandError::Invalid(format!(
                    "{flag}: `{text}` is not a whole number (or `none` to clear it)"
                ))
            }),
        })
        .transpose()
}

fn print(view: &TargetView) -> CommandResult {
    outln!("{}", serde_json::to_string_pretty(view)?);
    Ok(ExitCode::SUCCESS)
}

fn print_list(targets: &[TargetView], json: bool) -> CommandResult {
    if json {
        outln!("{}", serde_json::to_string_pretty(targets)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24} {:<7} {:>12} {:>10}  CHANGED",
        "TARGET",
        "STATE",
        "ROWS/S",
        "MAX BATCH"
    );
    for target in targets {
        let rate = target
            .effective
            .max_rows_per_second
            .map_or_else(|| "-".to_owned(), |rate| rate.to_string());
        let changed = match (&target.changed_by, target.changed_at) {
            (Some(by), Some(at)) => format!("{by} at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
            _ => "-".to_owned(),
        };
        outln!(
            "{:<24} {:<7} {:>12} {:>10}  {changed}",
            target.name,
            if target.paused { "paused" } else { "active" },
            rate,
            target.effective.max_batch_size
        );
    }
    Ok(ExitCode::SUCCESS)
}
