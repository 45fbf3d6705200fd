//! The commands that read the configuration, one module per command or family, and the one
//! mapping from how a command failed to what the user sees and the exit status.
//!
//! Exit statuses: 0 success; 1 a failure, or a job that does not exist or is in the wrong state;
//! 2 refused input (configuration, flags or job), nothing was deleted; 130 stopped by a signal.

pub(crate) mod audit;
pub(crate) mod config;
pub(crate) mod enqueue;
pub(crate) mod holds;
pub(crate) mod jobs;
pub(crate) mod migrate;
pub(crate) mod policies;
pub(crate) mod purge;
pub(crate) mod receipt;
pub(crate) mod targets;

use std::process::ExitCode;

use anyhow::Context;
use reaper_engine::Database;
use reaper_engine::schema_check::{self, CheckError};

use crate::settings::Settings;

/// What a command ends with when it does not succeed: the status it exits with, and its message.
pub(crate) type CommandResult = Result<ExitCode, CommandError>;

/// How a command failed.
#[derive(Debug)]
pub(crate) enum CommandError {
    /// The input (configuration, flags or job) was refused; nothing was deleted. Exit status 2.
    Invalid(String),
    /// The job named does not exist. Exit status 1.
    NotFound(String),
    /// The job is in a state the command cannot act on (finished already). Exit status 1.
    Conflict(String),
    /// Anything else (the database, the queue, a file). Exit status 1, `error: ` in front.
    Failed(anyhow::Error),
}

/// Exit status 2: the input (config or job) was refused; nothing was deleted.
const EXIT_INVALID: u8 = 2;

impl CommandError {
    /// Prints the message to standard error and returns the exit status: the one place where
    /// an error becomes a status.
    pub(crate) fn exit(self) -> ExitCode {
        match self {
            CommandError::Invalid(message) => {
                eprintln!("{message}");
                ExitCode::from(EXIT_INVALID)
            }
            CommandError::NotFound(message) | CommandError::Conflict(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
            // The reader of standard output went away (`reaper status ID --audit | head -1`):
            // what it wanted was printed, so end quietly.
            CommandError::Failed(error) if is_closed_pipe(&error) => ExitCode::SUCCESS,
            CommandError::Failed(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// The error, with a note that no configuration file was given and the embedded demo
    /// defaults (whose database is `database_url`) were used: the likely cause when a command
    /// cannot open the database or finds no tables or jobs.
    pub(crate) fn on_embedded_defaults(self, database_url: &str) -> Self {
        let database = reaper_engine::database::redact_url(database_url);
        let note = format!(
            "note: no --config (or REAPER_CONFIG) was given, so the embedded demo defaults were \
             used, with database.url = {database}; run `reaper demo` to create the demo's \
             database, or pass --config FILE"
        );
        match self {
            CommandError::Invalid(message) => CommandError::Invalid(format!("{message}\n{note}")),
            CommandError::NotFound(message) => CommandError::NotFound(format!("{message}\n{note}")),
            CommandError::Failed(error) if !is_closed_pipe(&error) => {
                CommandError::Failed(anyhow::anyhow!("{error:#}\n{note}"))
            }
            other => other,
        }
    }

    /// The job `id` does not exist.
    pub(crate) fn no_job(id: &str) -> Self {
        CommandError::NotFound(format!("no job `{id}`"))
    }
}

/// Whether `error` is a write to a pipe whose reader has exited.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Any other error is a failure (`?` on database, queue, file and JSON errors).
impl<E: Into<anyhow::Error>> From<E> for CommandError {
    fn from(error: E) -> Self {
        CommandError::Failed(error.into())
    }
}

/// Connects to the configured database.
pub(crate) async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    Database::connect(&settings.config.database)
        .await
        .with_context(|| {
            format!(
                "cannot connect to database.url `{}`",
                reaper_engine::database::redact_url(&settings.config.database.url)
            )
        })
}

/// Connects and checks the catalog against the real schema: a target whose table or column
/// does not exist is refused input, with the key that names it.
pub(crate) async fn connect_checked(settings: &Settings) -> Result<Database, CommandError> {
    let db = connect(settings).await?;
    match schema_check::check_catalog(&db, &settings.catalog).await {
        Ok(()) => Ok(db),
        Err(CheckError::Config(error)) => Err(CommandError::Invalid(error.to_string())),
        Err(CheckError::Engine(error)) => Err(error.into()),
    }
}

/// Reads the ledger once, so that a database without reaper's tables stops a command that is
/// about to write with a hint, before it does anything.
pub(crate) async fn check_ledger(db: &Database) -> anyhow::Result<()> {
    reaper_engine::ledger::active(db, 1)
        .await
        .context("cannot read the ledger; did you run `reaper migrate`?")?;
    // The newest tables: every batch reads the targets' live controls.
    reaper_engine::controls::list(db)
        .await
        .context("cannot read the targets' controls; did you run `reaper migrate`?")?;
    Ok(())
}
