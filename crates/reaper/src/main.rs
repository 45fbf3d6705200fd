//! The `reaper` binary: the one place that wires configuration, database, queue, workers and
//! signals. Everything it calls is a library; errors become `anyhow` only here.

mod demo;
mod queue;
mod settings;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};
use reaper_core::job::JobRequest;
use reaper_engine::runner::RunSettings;
use reaper_engine::schema_check::{self, CheckError};
use reaper_engine::{Database, EngineError, ledger};
use sea_orm_migration::MigratorTrait;

use crate::queue::JobQueue;
use crate::settings::Settings;
use crate::worker::WorkerState;

/// reaper deletes database rows safely, in the background, at scale.
#[derive(Debug, Parser)]
#[command(name = "reaper", version, about)]
struct Cli {
    /// Configuration file; the embedded defaults (config/reaper.toml) when absent.
    #[arg(long, global = true, env = "REAPER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Zero set-up tour: a SQLite database with sample rows, the embedded queue, one worker;
    /// runs a hard delete, a soft delete and a dry run, then prints a summary and the audit log.
    Demo {
        /// Where the demo's database and queue files go (recreated on every run).
        #[arg(long, default_value = ".reaper/demo")]
        dir: PathBuf,
    },
    /// Commands that read the configuration.
    #[command(flatten)]
    Configured(ConfiguredCommand),
}

#[derive(Debug, Subcommand)]
enum ConfiguredCommand {
    /// Create or upgrade reaper's own tables (reaper_jobs, reaper_audit) in the target database.
    Migrate,
    /// Submit a job (JSON, see README) to the ledger and the queue; prints its id.
    Enqueue {
        /// A file holding the job's JSON; `-` reads standard input.
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
        /// The job's JSON inline.
        #[arg(long)]
        json: Option<String>,
    },
    /// Show a job: state, rows, batches, attempts, last error, result.
    Status {
        /// The job id.
        job: String,
        /// Also print the job's audit entries.
        #[arg(long)]
        audit: bool,
    },
    /// Run workers until SIGTERM/SIGINT (or, with --until-idle, until no job is unfinished).
    Run {
        /// Exit once the ledger holds no pending or running job.
        #[arg(long)]
        until_idle: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (and the catalog against the database) and print it, secrets redacted.
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's output is for people; its logs stay quiet unless REAPER_LOG asks otherwise.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        Command::Configured(_) => "warn,reaper=info,reaper_engine=info",
    };
    init_logging(cli.log_format, default_filter);
    // Fault injection for the crash tests: only test builds compile the fault points, and
    // only the FAILPOINTS variable configures them.
    let _failpoints = std::env::var_os("FAILPOINTS").map(|_| fail::FailScenario::setup());
    match dispatch(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REAPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Exit status 2: the input (config or job) was refused; nothing was deleted.
const EXIT_INVALID: u8 = 2;

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = match cli.command {
        Command::Demo { dir } => {
            demo::run(&dir).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Configured(command) => command,
    };
    let settings = match settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match command {
        ConfiguredCommand::Migrate => {
            let db = connect(&settings).await?;
            reaper_engine::migration::Migrator::up(db.connection(), None)
                .await
                .context("migration failed")?;
            println!("reaper tables are up to date ({})", db.backend());
            Ok(ExitCode::SUCCESS)
        }
        ConfiguredCommand::Config {
            command: ConfigCommand::Check,
        } => config_check(&settings).await,
        ConfiguredCommand::Enqueue { file, json } => enqueue(&settings, file, json).await,
        ConfiguredCommand::Status { job, audit } => status(&settings, &job, audit).await,
        ConfiguredCommand::Run { until_idle } => run(&settings, until_idle).await,
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<Database> {
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
/// does not exist stops start-up with the key that names it.
async fn connect_checked(settings: &Settings) -> anyhow::Result<Result<Database, String>> {
    let db = connect(settings).await?;
    match schema_check::check_catalog(&db, &settings.catalog).await {
        Ok(()) => Ok(Ok(db)),
        Err(CheckError::Config(error)) => Ok(Err(error.to_string())),
        Err(CheckError::Engine(error)) => Err(error.into()),
    }
}

async fn config_check(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut shown = settings.config.clone();
    shown.database.url = reaper_engine::database::redact_url(&shown.database.url);
    shown.queue.url = reaper_engine::database::redact_url(&shown.queue.url);
    match connect_checked(settings).await? {
        Ok(_) => {
            println!("{}", toml_like(&shown)?);
            println!("# configuration is valid; every target exists in the database");
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("{message}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

/// The effective configuration as pretty JSON (one shape, no TOML serializer needed).
fn toml_like(config: &reaper_core::config::Config) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(config)?)
}

async fn enqueue(
    settings: &Settings,
    file: Option<PathBuf>,
    json: Option<String>,
) -> anyhow::Result<ExitCode> {
    let text = match (file, json) {
        (Some(path), None) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (Some(path), None) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (None, Some(json)) => json,
        _ => anyhow::bail!("give the job with --file FILE or --json '{{…}}'"),
    };
    let request: JobRequest = match serde_json::from_str(&text) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("invalid job: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let db = connect(settings).await?;
    let submitted = match ledger::submit(
        &db,
        &settings.catalog,
        &request,
        settings.config.worker.max_attempts,
        Utc::now(),
    )
    .await
    {
        Ok(submitted) => submitted,
        Err(EngineError::Invalid(error)) => {
            eprintln!("{error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(error) => return Err(error.into()),
    };
    if submitted.created {
        JobQueue::open(&settings.config.queue)
            .await?
            .push(&submitted.job.id, None)
            .await?;
    } else {
        eprintln!(
            "a job with idempotency key `{}` exists already",
            submitted.job.idempotency_key
        );
    }
    println!("{}", submitted.job.id);
    Ok(ExitCode::SUCCESS)
}

async fn status(settings: &Settings, id: &str, with_audit: bool) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        eprintln!("no job `{id}`");
        return Ok(ExitCode::FAILURE);
    };
    let mut shown = serde_json::to_value(&job)?;
    if with_audit {
        shown["audit"] = serde_json::to_value(ledger::audit_of_job(&db, id).await?)?;
    }
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(ExitCode::SUCCESS)
}

async fn run(settings: &Settings, until_idle: bool) -> anyhow::Result<ExitCode> {
    let db = match connect_checked(settings).await? {
        Ok(db) => db,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    ledger::unfinished(&db, 1)
        .await
        .context("cannot read the ledger; did you run `reaper migrate`?")?;
    let queue = JobQueue::open(&settings.config.queue).await?;
    let worker_config = &settings.config.worker;
    let state = Arc::new(WorkerState {
        db: db.clone(),
        catalog: settings.catalog.clone(),
        queue,
        settings: RunSettings {
            owner: worker::unique_worker_name(),
            lease: worker_config.lease.as_duration(),
            slice: worker_config.slice.as_duration(),
            retry_base: worker_config.retry_base.as_duration(),
            retry_max: worker_config.retry_max.as_duration(),
        },
    });
    tracing::info!(message = "Starting workers.", worker = %state.settings.owner, concurrency = worker_config.concurrency);
    let stop = async move {
        if until_idle {
            tokio::select! {
                result = shutdown_signal() => result,
                () = wait_until_idle(&db) => Ok(()),
            }
        } else {
            shutdown_signal().await
        }
    };
    let reconciler = tokio::spawn(worker::reconcile(
        state.clone(),
        worker_config.reconcile_every.as_duration(),
        worker_config.stranded_after.as_duration(),
    ));
    let stopped = worker::run_workers(
        state,
        worker_config.concurrency,
        settings.config.queue.poll_interval.as_duration(),
        worker_config.shutdown_grace.as_duration(),
        stop,
    )
    .await;
    reconciler.abort();
    stopped?;
    tracing::info!(message = "Workers stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Resolves when the ledger has had no pending or running job for two polls in a row.
pub(crate) async fn wait_until_idle(db: &Database) {
    let mut idle_polls = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match ledger::unfinished(db, 1).await {
            Ok(jobs) if jobs.is_empty() => idle_polls += 1,
            Ok(_) => idle_polls = 0,
            Err(error) => tracing::warn!(message = "Cannot read the ledger.", %error),
        }
        if idle_polls >= 2 {
            return;
        }
    }
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
