//! Queue workers: pull a job id, run the job through the engine, and re-enqueue what the
//! engine says must run again (a continuation after a slice, or a retry after backoff).
//!
//! Attempts, retries and deadness are decided by the engine from the ledger, identically on
//! every queue backend; apalis only transports ids. Timeouts are the engine's slice, enforced
//! inside the handler (apalis' timeout layer would leave tasks marked running).

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::BackendExt;
use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt, WorkerContext};
use reaper_core::catalog::Catalog;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_engine::{Database, ledger};

use crate::queue::{JobMessage, JobQueue};

/// What every handler call needs.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(crate) db: Database,
    pub(crate) catalog: Catalog,
    pub(crate) queue: JobQueue,
    pub(crate) settings: RunSettings,
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
    let should_stop = || worker.is_shutting_down();
    let report = runner::run_job(
        &state.db,
        &state.catalog,
        &message.job_id,
        &state.settings,
        &should_stop,
    )
    .await;
    let requeue_at = match report {
        Ok(report) => match report.outcome {
            // Stopping: the job is `pending` in the ledger and the next daemon's reconciler
            // re-enqueues it. Pushing now could wait on the queue's write lock, which apalis
            // holds while it shuts down (measured: SQLite's full 10 s busy timeout).
            RunOutcome::Continue if worker.is_shutting_down() => {
                tracing::info!(message = "Stopping; the job stays pending for the reconciler.", job_id = %message.job_id);
                None
            }
            RunOutcome::Continue => Some(None),
            RunOutcome::RetryLater { run_after, .. } => Some(Some(run_after)),
            RunOutcome::Done
            | RunOutcome::Dead { .. }
            | RunOutcome::NotClaimed
            | RunOutcome::Cancelled
            | RunOutcome::LeaseLost => None,
        },
        Err(error) => {
            // The ledger could not record the outcome: the job stays claimed until its lease
            // expires, so try again just after that.
            tracing::error!(message = "Could not record the job's outcome.", job_id = %message.job_id, %error);
            Some(Some(reaper_engine::batch::lease_until(
                chrono::Utc::now(),
                state.settings.lease,
            )))
        }
    };
    if let Some(not_before) = requeue_at {
        state.queue.push(&message.job_id, not_before).await?;
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

/// Runs `concurrency` job slots until `shutdown` resolves; the batch in flight commits or rolls
/// back and its job is handed back as a continuation before this returns.
pub(crate) async fn run_workers(
    state: Arc<WorkerState>,
    concurrency: u32,
    poll_interval: Duration,
    grace: Duration,
    shutdown: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    let name = state.settings.owner.clone();
    let JobQueue::Sqlite(storage) = state.queue.clone();
    let monitor = Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new(name.clone())
                .backend(storage.clone().poll_with_interval(poll_interval))
                .data(state.clone())
                .concurrency(concurrency as usize)
                .build(handle)
        })
        .shutdown_timeout(grace);
    monitor.run_with_signal(shutdown).await?;
    Ok(())
}
