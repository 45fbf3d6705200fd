//! The retention scheduler inside `reaper run`: each tick of each enabled policy's cron schedule
//! (apalis-cron) becomes one job for the window the tick opens.
//!
//! Exactly one job per window, however many daemons tick: the job's idempotency key is
//! `policy:NAME:WINDOW-START`, and the ledger keeps one job per key (apalis-cron itself does not
//! deduplicate: every replica fires every tick). A window missed while every daemon was down
//! runs once at start-up — only the newest missed window, not one job per missed tick — and
//! only for a policy that has run before, so adding a policy never starts a purge before its
//! first scheduled tick (`reaper purge --policy` runs one now).
//!
//! This module submits jobs; it never deletes. The jobs run on the workers like any other.

use std::sync::Arc;

use apalis_cron::CronScheduler;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reaper_core::catalog::Catalog;
use reaper_core::retention::{self, Policy};
use reaper_engine::ledger::{self, Submitted};
use reaper_engine::{Database, EngineError, ErrorClass};

/// Tries to submit one window's job (1 + 2 + 4 + 8 s apart) before leaving it to a peer or the
/// next start's catch-up.
const SUBMIT_ATTEMPTS: u32 = 5;

use crate::producer;
use crate::queue::JobQueue;

/// What submitting a window's job needs.
#[derive(Debug)]
pub(crate) struct Scheduler {
    pub(crate) db: Database,
    pub(crate) catalog: Catalog,
    pub(crate) queue: JobQueue,
    pub(crate) policies: Vec<Policy>,
    pub(crate) default_max_attempts: u32,
}

impl Scheduler {
    /// Submits the job of `policy`'s window starting at `window` (one per window: a repeated
    /// key returns the existing job).
    pub(crate) async fn submit_window(
        &self,
        policy: &Policy,
        window: DateTime<Utc>,
    ) -> Result<Submitted, EngineError> {
        let request = policy.job_request(Some(window), retention::SCHEDULER);
        producer::accept_as(
            &self.db,
            &self.catalog,
            &self.queue,
            &request,
            self.default_max_attempts,
            "scheduler",
            Some(&policy.name),
        )
        .await
    }

    /// Runs the newest window of `policy` if it has run before and has no job for that window
    /// yet (every daemon was down at its tick). Returns the job it created.
    pub(crate) async fn catch_up(&self, policy: &Policy, now: DateTime<Utc>) -> Option<Submitted> {
        let window = policy.latest_window(now)?;
        match ledger::policy_jobs(&self.db, &policy.name, &[], 1).await {
            Ok(history) if history.is_empty() => return None,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(message = "Cannot read a policy's runs; no catch-up for it now.", policy = %policy.name, %error);
                return None;
            }
        }
        match self.submit_window(policy, window).await {
            Ok(submitted) if submitted.created => {
                tracing::info!(message = "Caught up on a window missed while no daemon ran.", policy = %policy.name, %window, job_id = %submitted.job.id);
                Some(submitted)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::error!(message = "Cannot submit a policy's missed window.", policy = %policy.name, %window, %error);
                None
            }
        }
    }

    /// For each enabled policy: arms its schedule, catches up, then submits its job at each tick
    /// until `stop` turns true.
    pub(crate) async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.policies.len() {
            if !self.policies[index].enabled {
                continue;
            }
            let scheduler = self.clone();
            let mut stop = stop.clone();
            tasks.spawn(async move {
                let policy = &scheduler.policies[index];
                let mut ticks = std::pin::pin!(
                    CronScheduler::new(policy.schedule().clone()).into_stream()
                );
                // Arm the schedule (its first poll fixes the next tick after now) before the
                // catch-up looks back from a later now: every tick is then the stream's or the
                // catch-up's, none falls between them.
                let mut armed = match futures::poll!(ticks.next()) {
                    std::task::Poll::Ready(tick) => Some(tick),
                    std::task::Poll::Pending => None,
                };
                scheduler.catch_up(policy, Utc::now()).await;
                loop {
                    let tick = match armed.take() {
                        Some(tick) => tick,
                        None => tokio::select! {
                            tick = ticks.next() => tick,
                            _ = stop.wait_for(|stopping| *stopping) => return,
                        },
                    };
                    let tick = match tick {
                        Some(Ok(tick)) => tick,
                        Some(Err(error)) => {
                            // A tick already past when its timer was set (the process stalled);
                            // its window is caught up at the next start or taken by a peer.
                            tracing::warn!(message = "Skipped a tick.", policy = %policy.name, %error);
                            continue;
                        }
                        None => {
                            tracing::info!(message = "The policy's schedule has no more ticks.", policy = %policy.name);
                            return;
                        }
                    };
                    let Some(window) = i64::try_from(tick.get_timestamp())
                        .ok()
                        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                    else {
                        continue;
                    };
                    // The database may be briefly unreachable at the tick: retry for a while
                    // (a peer daemon submitting the same window meanwhile is harmless).
                    for attempt in 1..=SUBMIT_ATTEMPTS {
                        match scheduler.submit_window(policy, window).await {
                            Ok(submitted) if submitted.created => {
                                tracing::info!(message = "Submitted a retention window.", policy = %policy.name, %window, job_id = %submitted.job.id);
                                break;
                            }
                            Ok(submitted) => {
                                tracing::debug!(message = "Another daemon submitted this window.", policy = %policy.name, %window, job_id = %submitted.job.id);
                                break;
                            }
                            Err(error) if error.class() == ErrorClass::Transient && attempt < SUBMIT_ATTEMPTS => {
                                tracing::warn!(message = "Cannot submit a retention window yet; retrying.", policy = %policy.name, %window, attempt, %error);
                                let pause = std::time::Duration::from_secs(1 << attempt);
                                tokio::select! {
                                    () = tokio::time::sleep(pause) => {}
                                    _ = stop.wait_for(|stopping| *stopping) => return,
                                }
                            }
                            Err(error) => {
                                tracing::error!(message = "Cannot submit a retention window.", policy = %policy.name, %window, %error);
                                break;
                            }
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
