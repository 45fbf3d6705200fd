//! The `reaper` binary: the one place that wires configuration, database, queue, workers and
//! signals. Everything it calls is a library; errors become `anyhow` only in this crate.
//!
//! This file parses the command line and dispatches: the schema is [`cli`], the commands are
//! [`commands`] (errors become exit statuses in [`commands::CommandError::exit`]), the daemon's
//! wiring is [`daemon`], and the stop signals are [`signals`].

/// `println!` that returns the write's error instead of panicking, so that a closed pipe
/// (`reaper status ID --audit | head -1`) ends the command quietly
/// ([`commands::CommandError::exit`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod actions;
mod api;
mod archive_purge;
mod cli;
mod commands;
mod daemon;
mod demo;
mod enqueue_flags;
mod intake;
mod job_view;
mod policy_view;
mod producer;
mod purge;
mod queue;
mod redis_connection;
mod scheduler;
mod settings;
mod signals;
mod signing;
mod target_view;
mod ui;
mod vacuum;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{
    AuditCommand, Cli, Command, ConfigCommand, ConfiguredCommand, LogFormat, ReceiptCommand,
};
use crate::commands::{CommandError, CommandResult};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon listens for stop signals before anything else (the runtime, the logging, the
    // configuration, the connections), so that a signal during start-up stops it gracefully
    // (exit 0) instead of killing it.
    let daemon_signals = match &cli.command {
        Command::Configured(ConfiguredCommand::Run { .. }) => {
            match signals::StopSignals::new(false) {
                Ok(signals) => Some(signals),
                Err(error) => return CommandError::from(error).exit(),
            }
        }
        _ => None,
    };
    // TLS (Redis, PostgreSQL, MySQL) runs on rustls with ring. Name the provider for the whole
    // process: with a second one compiled in (aws-lc-rs, which a dependency may enable), rustls
    // cannot pick one and panics at the first TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return CommandError::from(error).exit(),
    };
    runtime.block_on(start(cli, daemon_signals))
}

async fn start(cli: Cli, daemon_signals: Option<signals::StopSignals>) -> ExitCode {
    // The demo's and a purge's output is for people (a purge's is a live progress bar, which a
    // log line would break); their logs stay quiet unless REAPER_LOG asks otherwise.
    let default_filter = match cli.command {
        Command::Demo { .. } | Command::Configured(ConfiguredCommand::Purge { .. }) => "warn",
        Command::Configured(_) => "warn,reaper=info,reaper_engine=info",
    };
    init_logging(cli.log_format, default_filter);
    // Fault injection for the crash tests: only test builds compile the fault points, and
    // only the FAILPOINTS variable configures them.
    let _failpoints = std::env::var_os("FAILPOINTS").map(|_| fail::FailScenario::setup());
    dispatch(cli, daemon_signals)
        .await
        .unwrap_or_else(CommandError::exit)
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REAPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colour only for a person at a terminal: redirected logs carry no escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(cli: Cli, daemon_signals: Option<signals::StopSignals>) -> CommandResult {
    let command = match cli.command {
        Command::Demo { dir } => {
            demo::run(&dir).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Configured(command) => command,
    };
    let settings = settings::load(cli.config.as_deref()).map_err(CommandError::Invalid)?;
    let result = run_configured(command, &settings, daemon_signals).await;
    match &settings.path {
        Some(_) => result,
        None => result.map_err(|error| error.on_embedded_defaults(&settings.config.database.url)),
    }
}

/// `reaper receipt JOB` makes one; `reaper receipt verify FILE` checks one.
async fn receipt(
    settings: &settings::Settings,
    job: Option<String>,
    command: Option<ReceiptCommand>,
) -> CommandResult {
    match (command, job) {
        (
            Some(ReceiptCommand::Verify {
                file,
                public_key,
                database,
            }),
            _,
        ) => commands::receipt::verify(settings, &file, &public_key, database).await,
        (None, Some(job)) => commands::receipt::make(settings, &job).await,
        (None, None) => Err(CommandError::Invalid(
            "reaper receipt JOB, or reaper receipt verify FILE --public-key HEX".into(),
        )),
    }
}

async fn run_configured(
    command: ConfiguredCommand,
    settings: &settings::Settings,
    daemon_signals: Option<signals::StopSignals>,
) -> CommandResult {
    match command {
        ConfiguredCommand::Migrate => commands::migrate::run(settings).await,
        ConfiguredCommand::Config {
            command: ConfigCommand::Check { json },
        } => commands::config::check(settings, json).await,
        ConfiguredCommand::Enqueue { file, json, flags } => {
            commands::enqueue::run(settings, file, json, flags).await
        }
        ConfiguredCommand::Status {
            job,
            audit,
            after,
            limit,
        } => {
            let audit = audit.then_some(commands::jobs::AuditPage { after, limit });
            commands::jobs::status(settings, &job, audit).await
        }
        ConfiguredCommand::Jobs {
            state,
            target,
            limit,
            json,
        } => commands::jobs::list(settings, state, target, limit, json).await,
        ConfiguredCommand::Cancel { job } => commands::jobs::cancel(settings, &job).await,
        ConfiguredCommand::Pause { job } => {
            commands::jobs::act(settings, reaper_engine::ledger::Action::Pause, &job).await
        }
        ConfiguredCommand::Resume { job } => {
            commands::jobs::act(settings, reaper_engine::ledger::Action::Resume, &job).await
        }
        ConfiguredCommand::Retry { job } => {
            commands::jobs::act(settings, reaper_engine::ledger::Action::Retry, &job).await
        }
        ConfiguredCommand::Restore {
            job,
            reason,
            requested_by,
            batch_size,
        } => commands::jobs::restore(settings, &job, (reason, requested_by, batch_size)).await,
        ConfiguredCommand::Receipt { job, command } => receipt(settings, job, command).await,
        ConfiguredCommand::Audit {
            command: AuditCommand::Verify { job },
        } => commands::audit::verify(settings, &job).await,
        ConfiguredCommand::Hold { args } => commands::holds::place(settings, args).await,
        ConfiguredCommand::Holds { all, limit } => {
            commands::holds::list(settings, all, limit).await
        }
        ConfiguredCommand::Release { hold, by } => {
            commands::holds::release(settings, &hold, by).await
        }
        ConfiguredCommand::Target { command } => commands::targets::run(settings, command).await,
        ConfiguredCommand::Purge { args } => commands::purge::run(settings, &args).await,
        ConfiguredCommand::Policies { json } => commands::policies::run(settings, json).await,
        ConfiguredCommand::Run { until_idle } => {
            let signals = match daemon_signals {
                Some(signals) => signals,
                None => signals::StopSignals::new(false)?,
            };
            daemon::run(settings, signals, until_idle).await
        }
    }
}
