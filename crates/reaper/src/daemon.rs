//! `reaper run`: the daemon's wiring. It checks the catalog and the ledger, installs the metrics
//! recorder, opens the queue, binds the API, then runs the workers beside the HTTP API, the
//! Redis intake, the scheduler, the reconciler, the Redis vacuum and the archive purge until a
//! stop signal (or, with `--until-idle`, until the ledger has no unfinished job). The workers stop first (each
//! batch in flight commits or rolls back), then the reconciler, then the intake, the API, the
//! scheduler, the vacuum and the archive purge.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use reaper_core::config::QueueBackend;
use reaper_engine::{Database, ledger};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::commands::{CommandError, CommandResult, check_ledger, connect_checked};
use crate::queue::JobQueue;
use crate::redis_connection::RedisTarget;
use crate::settings::Settings;
use crate::signals::StopSignals;
use crate::worker::{self, WorkerState};
use crate::{api, intake, scheduler};

/// Runs the daemon until it is told to stop. `signals` listen from before the configuration was
/// read, so a stop signal during start-up is a graceful stop (exit 0), not a kill. With
/// `until_idle`, a job that ended `dead` while it ran makes the exit status 1, and is named.
pub(crate) async fn run(
    settings: &Settings,
    signals: StopSignals,
    until_idle: bool,
) -> CommandResult {
    let started = chrono::Utc::now();
    let db = connect_checked(settings).await?;
    check_ledger(&db).await?;
    let metrics = install_metrics(&settings.catalog, &settings.policies)?;
    let config = &settings.config;
    let queue = JobQueue::open(&config.queue).await?;
    let state = worker_state(settings, &db, &queue).await?;
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

    let (stop, _signals) = stop_flag(signals, db.clone(), until_idle);
    let api = listener.map(|listener| spawn_api(settings, &state, metrics, listener, &stop));
    let redis = match config.queue.backend {
        QueueBackend::Redis => Some(redis_checked(&config.queue).await?),
        QueueBackend::Sqlite => None,
    };
    let intake = redis
        .clone()
        .map(|redis| spawn_intake(settings, &state, redis, &stop));
    let vacuum = redis.map(|redis| spawn_vacuum(settings, redis, &stop));
    let scheduler = spawn_scheduler(settings, &state, &stop);
    let archive_purge = spawn_archive_purge(settings, &db, &stop);
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
    for task in [intake, api, scheduler, vacuum, Some(archive_purge)]
        .into_iter()
        .flatten()
    {
        // All stop on the same flag; none holds a transaction.
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!(message = "A background task did not stop in time.");
        }
    }
    stopped?;
    tracing::info!(message = "Workers stopped.");
    if until_idle {
        dead_since(&db, started).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What every worker of this daemon shares: the ledger, catalog, queue and run settings, with
/// the database health gate `[database.health]` describes.
async fn worker_state(
    settings: &Settings,
    db: &reaper_engine::Database,
    queue: &JobQueue,
) -> anyhow::Result<Arc<WorkerState>> {
    let config = &settings.config;
    let mut state = WorkerState::new(
        db.clone(),
        settings.catalog.clone(),
        queue.clone(),
        &config.worker,
    );
    state.settings.health =
        Arc::new(reaper_engine::health::HealthGate::connect(&config.database).await?);
    register_health_signals(settings, &state.settings.health);
    Ok(Arc::new(state))
}

/// The purge of archived rows older than `archive.keep`, every `archive.purge_every`, until
/// the daemon stops.
fn spawn_archive_purge(
    settings: &Settings,
    db: &reaper_engine::Database,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let archive = &settings.config.archive;
    tokio::spawn(crate::archive_purge::run(
        db.clone(),
        archive.keep.as_duration(),
        archive.purge_every.as_duration(),
        stop.clone(),
    ))
}

/// Fails naming each job that ended `dead` since `started` (for `run --until-idle`, whose
/// caller wants to know whether everything it queued went through).
async fn dead_since(
    db: &Database,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<(), CommandError> {
    let dead: Vec<_> = ledger::list(
        db,
        Some(reaper_core::lifecycle::JobState::Dead),
        None,
        None,
        1000,
    )
    .await?
    .into_iter()
    .filter(|job| job.finished_at.is_some_and(|at| at >= started))
    .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let mut message = format!("{} job(s) ended dead:", dead.len());
    for job in &dead {
        message.push_str(&format!(
            "\n  {} (target {}): {}",
            job.id,
            job.target,
            job.last_error.as_deref().unwrap_or("no error recorded")
        ));
    }
    Err(CommandError::Failed(anyhow::anyhow!(message)))
}

/// The daemon's stop flag: it turns true on the first stop signal, or with `until_idle` once
/// the ledger is idle.
fn stop_flag(
    mut signals: StopSignals,
    db: Database,
    until_idle: bool,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    worker::stop_when(async move {
        if until_idle {
            tokio::select! {
                () = signals.recv() => {}
                () = wait_until_idle(&db) => {}
            }
        } else {
            signals.recv().await;
        }
        tracing::info!(
            message = "Stopping: no new jobs are taken; the batches in flight finish. A second signal exits at once (status 130)."
        );
    })
}

/// The HTTP API, until `stop`.
fn spawn_api(
    settings: &Settings,
    state: &WorkerState,
    metrics: PrometheusHandle,
    listener: tokio::net::TcpListener,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let config = &settings.config;
    let api_state = Arc::new(api::ApiState {
        producer: producer(settings, state),
        token: config.api.token.clone().unwrap_or_default(),
        metrics,
        workers_alive: state.workers_alive.clone(),
        policies: settings.policies.clone(),
        ledger_wait: config.api.ledger_wait.map_or(
            std::time::Duration::from_secs(reaper_core::config::DEFAULT_LEDGER_WAIT_SECS),
            |wait| wait.as_duration(),
        ),
        ui: crate::ui::UiState {
            read_token: config.api.read_token.clone(),
            sessions: Default::default(),
        },
        worker_lease: config.worker.lease.as_duration(),
    });
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(error) = api::serve(listener, api_state, stop).await {
            tracing::error!(message = "The HTTP API stopped.", %error);
        }
    })
}

/// What the daemon's producers (API, intake, scheduler) accept jobs with: the workers' ledger
/// connection and queue, the configured catalog and default attempts.
fn producer(settings: &Settings, state: &WorkerState) -> crate::producer::Producer {
    crate::producer::Producer {
        db: state.db.clone(),
        catalog: settings.catalog.clone(),
        queue: state.queue.clone(),
        default_max_attempts: settings.config.worker.max_attempts,
    }
}

/// How to reach the Redis queue, once it was tried. A user the ACL does not allow what the
/// daemon does is logged as an error naming the user and what it was denied, but does not stop
/// the daemon: its workers retry, and start once the ACL is fixed (`/readyz` says unready).
async fn redis_checked(queue: &reaper_core::config::QueueConfig) -> anyhow::Result<RedisTarget> {
    let redis = RedisTarget::from_config(queue)?;
    let mut connection = redis.connect().await?;
    if let Err(error) = crate::queue::check_redis_access(&redis, &mut connection, queue).await {
        tracing::error!(message = "Redis refuses what the daemon needs; its workers fail until the ACL allows it.", %error);
    }
    Ok(redis)
}

/// The Redis intake list, until `stop` (Redis queues only).
fn spawn_intake(
    settings: &Settings,
    state: &WorkerState,
    redis: RedisTarget,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let config = &settings.config;
    let intake = Arc::new(intake::Intake {
        keys: intake::IntakeKeys::new(&config.queue.name),
        daemon: state.settings.owner.clone(),
        redis,
        heartbeat: config.queue.heartbeat.as_duration(),
        producer: producer(settings, state),
    });
    tokio::spawn(intake.run(stop.clone()))
}

/// The vacuum of finished Redis messages, until `stop` (Redis queues only: the SQLite queue's
/// apalis rows are its own business).
fn spawn_vacuum(
    settings: &Settings,
    redis: RedisTarget,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let queue = &settings.config.queue;
    tokio::spawn(crate::vacuum::run(
        redis,
        crate::vacuum::VacuumKeys::new(&queue.name),
        queue.vacuum_every.as_duration(),
        stop.clone(),
    ))
}

/// The retention scheduler, until `stop` (none when no policy is enabled).
fn spawn_scheduler(
    settings: &Settings,
    state: &WorkerState,
    stop: &watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    settings
        .policies
        .iter()
        .any(|policy| policy.enabled)
        .then(|| {
            let scheduler = Arc::new(scheduler::Scheduler {
                producer: producer(settings, state),
                policies: settings.policies.clone(),
            });
            tokio::spawn(scheduler.run(stop.clone()))
        })
}

/// The Prometheus recorder behind `/metrics`, with batch-duration buckets.
fn install_metrics(
    catalog: &reaper_core::catalog::Catalog,
    policies: &[reaper_core::retention::Policy],
) -> anyhow::Result<PrometheusHandle> {
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

/// Creates the health signal gauges of the configured signals for every target.
fn register_health_signals(settings: &Settings, gate: &reaper_engine::health::HealthGate) {
    let signals: Vec<&'static str> = gate
        .rules()
        .limits
        .keys()
        .map(|signal| signal.as_str())
        .collect();
    reaper_engine::instruments::register_health_signals(settings.catalog.names(), &signals);
}

/// Resolves when the ledger has had no pending or running job for two polls in a row.
async fn wait_until_idle(db: &Database) {
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
