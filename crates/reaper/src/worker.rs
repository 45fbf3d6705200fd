//! Queue workers: pull a job id, run the job through the engine, and re-enqueue what the
//! engine says must run again (a continuation after a slice, or a retry after backoff).
//!
//! Attempts, retries and deadness are decided by the engine from the ledger, identically on
//! every queue backend; apalis only transports ids. Timeouts are the engine's slice, enforced
//! inside the handler (apalis' timeout layer would leave tasks marked running).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis::prelude::{BackendExt, PollSnapshot, PollStrategy};
use apalis::prelude::{
    BoxDynError, Data, Monitor, MonitorError, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use reaper_core::catalog::Catalog;
use reaper_core::config::WorkerConfig;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_engine::{Database, instruments, ledger};

use crate::queue::{JobMessage, JobQueue};

/// What every handler call needs.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(crate) db: Database,
    pub(crate) catalog: Catalog,
    pub(crate) queue: JobQueue,
    pub(crate) settings: RunSettings,
    /// True while workers poll the queue (`/readyz`).
    pub(crate) workers_alive: Arc<AtomicBool>,
}

impl WorkerState {
    pub(crate) fn new(
        db: Database,
        catalog: Catalog,
        queue: JobQueue,
        config: &WorkerConfig,
    ) -> Self {
        Self {
            db,
            catalog,
            queue,
            settings: RunSettings::for_worker(
                unique_worker_name(),
                config.lease.as_duration(),
                config.slice.as_duration(),
                config.retry_base.as_duration(),
                config.retry_max.as_duration(),
            ),
            workers_alive: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A stop flag that turns true once `trigger` resolves (or its task is dropped).
pub(crate) fn stop_when(
    trigger: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        trigger.await;
        let _ = sender.send(true);
    });
    (receiver, task)
}

/// Wakes an idle worker every `every`. apalis 1.0's own interval strategy replaces its timer
/// without polling the new one, so no waker is registered; when that coincides with an empty
/// fetch, the worker sleeps until its next heartbeat (measured: 3 of 30 restarted daemons
/// picked their job up after ~30 s instead of ~0.2 s). This one polls the timer it arms;
/// measured 0 stalls in 150 runs.
struct ArmedInterval {
    every: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl ArmedInterval {
    fn new(every: Duration) -> Self {
        Self {
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl PollStrategy for ArmedInterval {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _snapshot: &PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        use std::future::Future;
        let mut fired = false;
        // Re-arm and poll again until the timer is pending: that poll registers the waker.
        while self.sleep.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = tokio::time::Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
        }
        if fired {
            std::task::Poll::Ready(Some(()))
        } else {
            std::task::Poll::Pending
        }
    }
}

/// How long workers must poll without an error before they count as pulling: three poll
/// intervals, and at least half a second.
fn settled_after(poll_interval: Duration) -> Duration {
    (poll_interval * 3).max(Duration::from_millis(500))
}

/// A worker name unique per process start: apalis refuses a name seen within a heartbeat, and
/// two processes sharing a name would steal each other's in-flight jobs.
pub(crate) fn unique_worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "reaper".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

async fn handle(
    message: JobMessage,
    state: Data<Arc<WorkerState>>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    // The run is a task of its own. apalis drops its handlers when a worker ends on a queue
    // error (Redis flushed or restarted); a run dropped inside a batch transaction could hand
    // its connection back to the pool still inside that transaction, and later statements on
    // that connection would run in it, never commit, and hold the job's row lock (seen in the
    // FLUSHALL test). Detached, the run always reaches a batch boundary and records its outcome.
    let state: Arc<WorkerState> = (*state).clone();
    tokio::spawn(run_and_requeue(message, state, worker))
        .await
        .map_err(|error| -> BoxDynError {
            format!("the job's run ended abnormally: {error}").into()
        })?
}

/// Whether, and when, a job goes back on the queue after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requeue {
    /// The run ended the job, or someone else will pick it up (the reconciler, a resume).
    No,
    /// A continuation: at once.
    Now,
    /// A retry: not before this moment.
    At(chrono::DateTime<chrono::Utc>),
}

async fn run_and_requeue(
    message: JobMessage,
    state: Arc<WorkerState>,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let should_stop = || worker.is_shutting_down();
    let report = runner::run_job(
        &state.db,
        &state.catalog,
        &message.job_id,
        &state.settings,
        &should_stop,
    )
    .await;
    let requeue = match report {
        Ok(report) => match report.outcome {
            // Stopping: the job is `pending` in the ledger and the next daemon's reconciler
            // re-enqueues it. Pushing now could wait on the queue's write lock, which apalis
            // holds while it shuts down (measured: SQLite's full 10 s busy timeout).
            RunOutcome::Continue
                if worker.is_shutting_down() && !state.queue.push_during_shutdown_is_safe() =>
            {
                tracing::info!(message = "Stopping; the job stays pending for the reconciler.", job_id = %message.job_id);
                Requeue::No
            }
            RunOutcome::Continue => Requeue::Now,
            RunOutcome::RetryLater { run_after, .. } | RunOutcome::Throttled { run_after, .. } => {
                Requeue::At(run_after)
            }
            RunOutcome::Done
            | RunOutcome::Paused
            | RunOutcome::Dead { .. }
            | RunOutcome::NotClaimed
            | RunOutcome::Cancelled
            | RunOutcome::LeaseLost => Requeue::No,
        },
        Err(error) => {
            // The ledger could not record the outcome: the job stays claimed until its lease
            // expires, so try again just after that.
            tracing::error!(message = "Could not record the job's outcome.", job_id = %message.job_id, %error);
            Requeue::At(reaper_engine::batch::lease_until(
                chrono::Utc::now(),
                state.settings.lease,
            ))
        }
    };
    match requeue {
        Requeue::No => {}
        Requeue::Now => state.queue.push(&message.job_id, None).await?,
        Requeue::At(not_before) => state.queue.push(&message.job_id, Some(not_before)).await?,
    }
    Ok(())
}

/// Jobs re-enqueued per reconciliation pass, at most (the rest wait for the next pass).
const RECONCILE_BATCH: u32 = 500;

/// Compares the ledger with the queue every `every`, starting at once, and re-enqueues the jobs
/// the queue lost: due `pending` jobs untouched for `stranded_after`, and `running` jobs whose
/// worker's lease expired. The ledger is the truth; a duplicate message is harmless because a
/// claim is a compare-and-set. Runs until the task is dropped.
pub(crate) async fn reconcile(state: Arc<WorkerState>, every: Duration, stranded_after: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match ledger::take_stranded(
            &state.db,
            chrono::Utc::now(),
            stranded_after,
            state.settings.lease,
            RECONCILE_BATCH,
        )
        .await
        {
            Ok(jobs) => {
                for job in jobs {
                    match state.queue.push(&job.id, None).await {
                        Ok(()) => {
                            tracing::warn!(message = "Re-enqueued a job the queue had lost.", job_id = %job.id, state = %job.state)
                        }
                        Err(error) => {
                            tracing::error!(message = "Could not re-enqueue a stranded job.", job_id = %job.id, %error)
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(message = "Cannot read the ledger to reconcile.", %error),
        }
    }
}

/// Runs `concurrency` job slots until `stop` turns true; the batch in flight commits or rolls
/// back before this returns (or `grace` runs out, and the database rolls it back).
///
/// apalis ends a worker on any queue error (Redis restarted or flushed, a connection reset),
/// dropping the runs in flight: their batches roll back and their jobs wait for the lease to
/// expire and the reconciler. Workers are then rebuilt under a new name (apalis refuses a name
/// seen within a heartbeat), after a growing pause, until `stop`.
pub(crate) async fn run_workers(
    state: Arc<WorkerState>,
    concurrency: u32,
    poll_interval: Duration,
    grace: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut restarts = 0u32;
    loop {
        let name = if restarts == 0 {
            state.settings.owner.clone()
        } else {
            format!("{}-r{restarts}", state.settings.owner)
        };
        let generation = WorkerGeneration {
            name,
            concurrency,
            poll_interval,
            grace,
        };
        let ended = generation.run(&state, stop.clone()).await;
        if *stop.borrow() {
            if let Err(error) = ended {
                tracing::warn!(message = "Workers ended with an error while stopping.", %error);
            }
            return Ok(());
        }
        restarts += 1;
        if !pause_before_restart(restarts, ended, stop.clone()).await {
            return Ok(());
        }
    }
}

/// One set of workers under one name, from start until apalis ends them or `stop`.
struct WorkerGeneration {
    /// The worker name apalis registers (unique per generation).
    name: String,
    concurrency: u32,
    poll_interval: Duration,
    grace: Duration,
}

impl WorkerGeneration {
    /// Runs the workers and keeps `reaper_workers_alive` / `/readyz` true while they poll.
    async fn run(
        self,
        state: &Arc<WorkerState>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), MonitorError> {
        let Self {
            name,
            concurrency,
            poll_interval,
            grace,
        } = self;
        let shutdown = async move {
            // A dropped sender means the process is going down: stop too.
            let _ = stop.wait_for(|stopping| *stopping).await;
            Ok(())
        };
        let state_for_workers = state.clone();
        let slots = concurrency as usize;
        // One macro, not a generic function: apalis' backend trait bounds differ per storage.
        macro_rules! monitor {
            ($storage:expr) => {{
                let storage = $storage;
                Monitor::new()
                    .register(move |_runs| {
                        WorkerBuilder::new(name.clone())
                            .backend(
                                storage
                                    .clone()
                                    .poll_with_strategy(ArmedInterval::new(poll_interval)),
                            )
                            .data(state_for_workers.clone())
                            .concurrency(slots)
                            .build(handle)
                    })
                    .shutdown_timeout(grace)
                    .run_with_signal(shutdown)
                    .await
            }};
        }
        let run = async {
            match state.queue.clone() {
                JobQueue::Sqlite { storage, .. } => monitor!(storage),
                JobQueue::Redis(storage) => monitor!(storage),
            }
        };
        tokio::pin!(run);
        // Alive (`/readyz`, `reaper_workers_alive`) only once the workers have kept polling
        // for a few poll intervals: apalis ends them on the first failed poll, so workers the
        // queue refuses (an ACL that denies the poll's scripts, a wrong password) never count
        // as pulling, however often they are restarted.
        let ended = tokio::select! {
            ended = &mut run => ended,
            () = tokio::time::sleep(settled_after(poll_interval)) => {
                instruments::workers_alive(concurrency);
                state.workers_alive.store(true, Ordering::Relaxed);
                run.await
            }
        };
        instruments::workers_alive(0);
        state.workers_alive.store(false, Ordering::Relaxed);
        ended
    }
}

/// Logs why the workers ended and waits a pause that grows with `restarts` (capped at 5 s);
/// false when `stop` turns true during the pause.
async fn pause_before_restart(
    restarts: u32,
    ended: Result<(), MonitorError>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let pause = Duration::from_millis(250 * u64::from(restarts.min(20)));
    match ended {
        Err(error) => {
            tracing::error!(message = "Workers stopped on a queue error; restarting.", %error, restarts, pause_ms = pause.as_millis() as u64)
        }
        Ok(()) => {
            tracing::error!(
                message = "Workers stopped unexpectedly; restarting.",
                restarts,
                pause_ms = pause.as_millis() as u64
            )
        }
    }
    tokio::select! {
        () = tokio::time::sleep(pause) => true,
        _ = stop.wait_for(|stopping| *stopping) => false,
    }
}
