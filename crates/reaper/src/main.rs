//! The `reaper` binary: the one place that wires configuration, database, queue, workers and
//! signals. Everything it calls is a library; errors become `anyhow` only here.

mod api;
mod demo;
mod enqueue_flags;
mod intake;
mod job_view;
mod policy_view;
mod producer;
mod purge;
mod queue;
mod scheduler;
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
use reaper_core::lifecycle::JobState;
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
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing would buy nothing.
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
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing would buy nothing.
enum ConfiguredCommand {
    /// Create or upgrade reaper's own tables (reaper_jobs, reaper_audit) in the target database.
    Migrate,
    /// Submit a job to the ledger and the queue, from flags or as JSON (see README); prints
    /// its id.
    Enqueue {
        /// A file holding the job's JSON; `-` reads standard input.
        #[arg(long, conflicts_with_all = ["json", "target"])]
        file: Option<PathBuf>,
        /// The job's JSON inline.
        #[arg(long, conflicts_with = "target")]
        json: Option<String>,
        #[command(flatten)]
        flags: enqueue_flags::EnqueueFlags,
    },
    /// Show a job: state, rows, batches, attempts, last error, progress, result.
    Status {
        /// The job id.
        job: String,
        /// Also print the job's audit entries.
        #[arg(long)]
        audit: bool,
    },
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state (pending, running, paused, done, dead, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs on this target.
        #[arg(long)]
        target: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a job to stop: a pending job is cancelled at once, a running one at its next batch
    /// boundary. What it deleted stays deleted (and audited).
    Cancel {
        /// The job id.
        job: String,
    },
    /// Run a retention purge now, in the foreground, without a daemon: a policy's
    /// (`--policy NAME`) or ad hoc (`--target T --older-than 30d`). Shows a progress bar;
    /// Ctrl-C stops at a batch boundary and prints how to resume.
    Purge {
        #[command(flatten)]
        args: purge::PurgeArgs,
    },
    /// List the retention policies: schedule, next and last run, last result, and how many
    /// rows the next run would remove.
    Policies {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        ConfiguredCommand::Enqueue { file, json, flags } => {
            enqueue(&settings, file, json, flags).await
        }
        ConfiguredCommand::Status { job, audit } => status(&settings, &job, audit).await,
        ConfiguredCommand::Jobs {
            state,
            target,
            limit,
            json,
        } => jobs(&settings, state, target, limit, json).await,
        ConfiguredCommand::Cancel { job } => cancel(&settings, &job).await,
        ConfiguredCommand::Purge { args } => purge_command(&settings, &args).await,
        ConfiguredCommand::Policies { json } => policies(&settings, json).await,
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
    if shown.api.token.is_some() {
        shown.api.token = Some("<redacted>".into());
    }
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
    flags: enqueue_flags::EnqueueFlags,
) -> anyhow::Result<ExitCode> {
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
    let request = match parsed {
        Ok(request) => request,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let db = connect(settings).await?;
    let queue = JobQueue::open(&settings.config.queue).await?;
    let submitted = match producer::accept(
        &db,
        &settings.catalog,
        &queue,
        &request,
        settings.config.worker.max_attempts,
        "cli",
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
    if !submitted.created {
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

async fn jobs(
    settings: &Settings,
    state: Option<String>,
    target: Option<String>,
    limit: u32,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let state = match state.as_deref().map(str::parse::<JobState>).transpose() {
        Ok(state) => state,
        Err(error) => {
            eprintln!("--state: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
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

async fn cancel(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
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
        Some(ledger::CancelOutcome::Finished(job)) => {
            eprintln!("{}: already {}; nothing to cancel", job.id, job.state);
            Ok(ExitCode::FAILURE)
        }
        None => {
            eprintln!("no job `{id}`");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn purge_command(settings: &Settings, args: &purge::PurgeArgs) -> anyhow::Result<ExitCode> {
    let lease = settings.config.worker.lease.as_duration();
    let end = match &args.resume {
        Some(id) => {
            let db = match connect_checked(settings).await? {
                Ok(db) => db,
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let Some(job) = ledger::get(&db, id).await? else {
                eprintln!("no job `{id}`");
                return Ok(ExitCode::FAILURE);
            };
            if job.is_finished() {
                eprintln!("job {id} is already {}; nothing to resume", job.state);
                return Ok(ExitCode::FAILURE);
            }
            purge::run_foreground(&db, &settings.catalog, job, lease, None).await?
        }
        None => {
            let (request, policy) =
                match purge::request(args, &settings.catalog, &settings.policies) {
                    Ok(found) => found,
                    Err(message) => {
                        eprintln!("{message}");
                        return Ok(ExitCode::from(EXIT_INVALID));
                    }
                };
            let validated = match purge::validated(&request, &settings.catalog) {
                Ok(validated) => validated,
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let db = match connect_checked(settings).await? {
                Ok(db) => db,
                Err(message) => {
                    eprintln!("{message}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            if args.dry_run {
                purge::dry_run(&db, &validated).await?;
                return Ok(ExitCode::SUCCESS);
            }
            ledger::active(&db, 1)
                .await
                .context("cannot read the ledger; did you run `reaper migrate`?")?;
            let matching = reaper_engine::batch::count_matching(
                &db,
                &validated,
                Some(validated.max_rows.saturating_add(1)),
            )
            .await?;
            if let Err(refusal) = validated.check_max_rows(matching) {
                eprintln!("{refusal}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            let submitted = ledger::submit_paused(
                &db,
                &settings.catalog,
                &request,
                settings.config.worker.max_attempts,
                Utc::now(),
                policy.as_deref(),
            )
            .await?;
            purge::run_foreground(&db, &settings.catalog, submitted.job, lease, Some(matching))
                .await?
        }
    };
    Ok(match end {
        purge::PurgeEnd::Done => ExitCode::SUCCESS,
        purge::PurgeEnd::Stopped => ExitCode::from(130),
        purge::PurgeEnd::Failed => ExitCode::FAILURE,
    })
}

async fn policies(settings: &Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for policy in &settings.policies {
        let view = policy_view::policy_view(&db, policy, now).await?;
        let job = reaper_core::validate::validate(
            &policy.job_request(None, reaper_core::retention::SCHEDULER),
            &settings.catalog,
            now,
        )?;
        // One slow or failing count must not hide the other policies.
        let next_rows =
            match reaper_engine::batch::count_matching(&db, &job, Some(job.max_rows)).await {
                Ok(count) => Some(count),
                Err(error) => {
                    eprintln!(
                        "{}: cannot count the rows of its next run: {error}",
                        policy.name
                    );
                    None
                }
            };
        rows.push((view, next_rows));
    }
    if as_json {
        let shown: Vec<_> = rows
            .into_iter()
            .map(|(view, next_rows)| {
                let mut value = serde_json::to_value(view).unwrap_or_default();
                value["next_run_rows"] = next_rows.map_or(serde_json::Value::Null, Into::into);
                value
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no retention policies are configured ([[retention]] in the config file)");
        return Ok(ExitCode::SUCCESS);
    }
    let when = |at: Option<chrono::DateTime<Utc>>| {
        at.map_or("-".to_owned(), |at| {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    println!(
        "{:<24} {:<14} {:<16} {:<19}  {:<19}  {:<9} {:>10}  {:>10}",
        "policy",
        "target",
        "schedule",
        "next run (UTC)",
        "last run (UTC)",
        "result",
        "rows",
        "next rows"
    );
    for (view, next_rows) in rows {
        let (last_at, result, last_rows) = match &view.last_run {
            Some(run) => (
                when(run.finished_at.or(Some(run.created_at))),
                run.state.to_string(),
                run.rows_deleted.to_string(),
            ),
            None => ("never".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<24} {:<14} {:<16} {:<19}  {:<19}  {:<9} {:>10}  {:>10}",
            view.name,
            view.target,
            view.schedule,
            if view.enabled {
                when(view.next_run_at)
            } else {
                "disabled".to_owned()
            },
            last_at,
            result,
            last_rows,
            next_rows.map_or("?".to_owned(), |rows| rows.to_string())
        );
        if let Some(error) = view
            .last_run
            .as_ref()
            .and_then(|run| run.last_error.as_ref())
        {
            println!("    last error: {error}");
        }
    }
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
    ledger::active(&db, 1)
        .await
        .context("cannot read the ledger; did you run `reaper migrate`?")?;
    let metrics = install_metrics(&settings.catalog, &settings.policies)?;
    let config = &settings.config;
    let queue = JobQueue::open(&config.queue).await?;
    let state = Arc::new(WorkerState::new(
        db.clone(),
        settings.catalog.clone(),
        queue.clone(),
        &config.worker,
    ));
    // Bind before anything runs, so a taken port stops start-up with a clear message.
    let listener = match &config.api.listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("api.listen: cannot listen on {address}"))?,
        ),
        None => None,
    };
    tracing::info!(message = "Starting workers.", worker = %state.settings.owner, concurrency = config.worker.concurrency, queue = ?config.queue.backend, api = ?config.api.listen);

    let idle_db = db.clone();
    // Listening from now on, so that neither signal can arrive while nobody listens.
    let mut signals = StopSignals::new(false)?;
    let (stop, _signals) = worker::stop_when(async move {
        if until_idle {
            tokio::select! {
                () = signals.recv() => {}
                () = wait_until_idle(&idle_db) => {}
            }
        } else {
            signals.recv().await;
        }
        tracing::info!(
            message = "Stopping: no new jobs are taken; the batches in flight finish. A second signal exits at once (status 130)."
        );
    });

    let api = listener.map(|listener| {
        let api_state = Arc::new(api::ApiState {
            db: db.clone(),
            catalog: settings.catalog.clone(),
            queue: queue.clone(),
            token: config.api.token.clone().unwrap_or_default(),
            default_max_attempts: config.worker.max_attempts,
            metrics,
            workers_alive: state.workers_alive.clone(),
            policies: settings.policies.clone(),
        });
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = api::serve(listener, api_state, stop).await {
                tracing::error!(message = "The HTTP API stopped.", %error);
            }
        })
    });
    let intake = match config.queue.backend {
        reaper_core::config::QueueBackend::Redis => {
            let intake = Arc::new(intake::Intake {
                keys: intake::IntakeKeys::new(&config.queue.name),
                daemon: state.settings.owner.clone(),
                redis_url: config.queue.url.clone(),
                heartbeat: config.queue.heartbeat.as_duration(),
                db: db.clone(),
                catalog: settings.catalog.clone(),
                queue: queue.clone(),
                default_max_attempts: config.worker.max_attempts,
            });
            Some(tokio::spawn(intake.run(stop.clone())))
        }
        reaper_core::config::QueueBackend::Sqlite => None,
    };
    let scheduler = settings
        .policies
        .iter()
        .any(|policy| policy.enabled)
        .then(|| {
            let scheduler = Arc::new(scheduler::Scheduler {
                db: db.clone(),
                catalog: settings.catalog.clone(),
                queue: queue.clone(),
                policies: settings.policies.clone(),
                default_max_attempts: config.worker.max_attempts,
            });
            tokio::spawn(scheduler.run(stop.clone()))
        });
    let reconciler = tokio::spawn(worker::reconcile(
        state.clone(),
        config.worker.reconcile_every.as_duration(),
        config.worker.stranded_after.as_duration(),
    ));
    let stopped = worker::run_workers(
        state,
        config.worker.concurrency,
        config.queue.poll_interval.as_duration(),
        config.worker.shutdown_grace.as_duration(),
        stop,
    )
    .await;
    reconciler.abort();
    for task in [intake, api, scheduler].into_iter().flatten() {
        // Both stop on the same flag; neither holds a transaction.
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!(message = "A background task did not stop in time.");
        }
    }
    stopped?;
    tracing::info!(message = "Workers stopped.");
    Ok(ExitCode::SUCCESS)
}

/// The Prometheus recorder behind `/metrics`, with batch-duration buckets.
fn install_metrics(
    catalog: &reaper_core::catalog::Catalog,
    policies: &[reaper_core::retention::Policy],
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                reaper_engine::instruments::BATCH_DURATION.to_owned(),
            ),
            reaper_engine::instruments::BATCH_DURATION_BUCKETS,
        )?
        .install_recorder()?;
    reaper_engine::instruments::describe();
    reaper_engine::instruments::register_targets(catalog.names());
    reaper_engine::instruments::register_policies(
        policies.iter().map(|policy| policy.name.as_str()),
    );
    Ok(handle)
}

/// Resolves when the ledger has had no pending or running job for two polls in a row.
pub(crate) async fn wait_until_idle(db: &Database) {
    let mut idle_polls = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match ledger::active(db, 1).await {
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
    StopSignals::new(false)?.recv().await;
    Ok(())
}

/// The signals that stop reaper (SIGINT, SIGTERM, and for a foreground purge SIGHUP), listened
/// to from creation on. The first one is for the caller to act on; the second one ends the
/// process with status 130 from inside the signal handler (the batch in flight rolls back in
/// the database), so it works whatever the runtime's threads are busy with.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignals")
            .field("hangup", &self.hangup.is_some())
            .finish()
    }
}

impl StopSignals {
    pub(crate) fn new(with_hangup: bool) -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        use tokio::signal::unix::{SignalKind, signal};
        // The exit is registered before the flag that arms it, so the first signal only arms it.
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping: &[i32] = if with_hangup {
            &[SIGINT, SIGTERM, SIGHUP]
        } else {
            &[SIGINT, SIGTERM]
        };
        for &number in stopping {
            signal_hook::flag::register_conditional_shutdown(number, 130, armed.clone())?;
            signal_hook::flag::register(number, armed.clone())?;
        }
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: if with_hangup {
                Some(signal(SignalKind::hangup())?)
            } else {
                None
            },
        })
    }

    /// The next stop signal.
    pub(crate) async fn recv(&mut self) {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = hangup => {}
        }
    }
}
