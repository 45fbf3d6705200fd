//! The retention scheduler inside `reaper run`: each tick of each enabled policy's cron schedule
//! (apalis-cron) becomes one job for the window the tick opens.
//!
//! Exactly one job per window, however many daemons tick: the job's idempotency key is
//! `policy:NAME:WINDOW-START`, and the ledger keeps one job per key (apalis-cron itself does not
//! deduplicate: every replica fires every tick). A window missed while every daemon was down
//! runs once at start-up — only the newest missed window, not one job per missed tick — and
//! only for a policy that has run before, so adding a policy never starts a purge before its
//! first scheduled tick (`reaper purge --policy` runs one now). A policy's runs never overlap:
//! while its previous job is unfinished, a new window is skipped (and logged), so a slow or
//! capped run is not joined by a second one on the same rows. A daemon that is up loses no
//! window to a late timer: when a tick comes after the next window opened (the process or the
//! machine stalled), the newest window's job is submitted and each window it jumped over is
//! logged as skipped (at most [`MAX_JUMPED_WINDOWS`]): a newer window's job removes every row an
//! older one would have (its cutoff is later), and submitting the older ones first would make
//! the no-overlap rule skip the newest.
//!
//! This module submits jobs; it never deletes. The jobs run on the workers like any other.

use std::sync::Arc;
use std::time::Duration;

use apalis_cron::CronScheduler;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use reaper_core::lifecycle::JobState;
use reaper_core::retention::{self, Policy};
use reaper_engine::ledger::{self, JobRecord};
use reaper_engine::{EngineError, ErrorClass};

use crate::producer::Producer;

/// Tries to submit one window's job (2, 4, 8 and 16 s apart) before leaving it to a peer or the
/// next start's catch-up.
const SUBMIT_ATTEMPTS: u32 = 5;

/// At most this many windows jumped over by a late tick are looked at (the newest); a daemon
/// stalled for longer catches up like one that was down.
const MAX_JUMPED_WINDOWS: usize = 16;

/// What submitting a window did.
#[derive(Debug)]
pub(crate) enum WindowJob {
    /// This call created the window's job.
    Created(JobRecord),
    /// The window's job existed already (another daemon, or an earlier tick).
    Existing(JobRecord),
    /// The policy's previous job is unfinished; this window is not run.
    Skipped {
        /// The unfinished job.
        previous: JobRecord,
    },
}

/// The longest the scheduler waits for a window's due count before submitting its job.
const DUE_COUNT_WAIT: Duration = Duration::from_secs(5);

/// What submitting a window's job needs.
#[derive(Debug)]
pub(crate) struct Scheduler {
    pub(crate) producer: Producer,
    pub(crate) policies: Vec<Policy>,
}

impl Scheduler {
    /// Submits the job of `policy`'s window starting at `window`, unless the policy's previous
    /// job is unfinished. One job per window: a repeated key returns the existing job.
    pub(crate) async fn submit_window(
        &self,
        policy: &Policy,
        window: DateTime<Utc>,
    ) -> Result<WindowJob, EngineError> {
        let key = policy.window_key(window);
        let unfinished =
            ledger::policy_jobs(&self.producer.db, &policy.name, JobState::UNFINISHED, 1).await?;
        if let Some(previous) = unfinished.into_iter().next()
            && previous.idempotency_key != key
        {
            return Ok(WindowJob::Skipped { previous });
        }
        // What became due in the window, counted before its job removes any of it. A count
        // that fails or outlasts DUE_COUNT_WAIT (no index on the age column, a huge first
        // window) leaves the job without one rather than the window late or without its job.
        let count = crate::policy_view::due_in_window(
            &self.producer.db,
            &self.producer.catalog,
            policy,
            window,
        );
        let due = match tokio::time::timeout(DUE_COUNT_WAIT, count).await {
            Ok(Ok(due)) => Some(due),
            Ok(Err(error)) => {
                tracing::warn!(message = "Cannot count the rows that became due in a window.", policy = %policy.name, %window, %error);
                None
            }
            Err(_) => {
                tracing::warn!(message = "Counting the rows that became due in a window took too long; the window's job is submitted without the count.", policy = %policy.name, %window, wait = ?DUE_COUNT_WAIT);
                None
            }
        };
        let request = policy.job_request(Some(window), retention::SCHEDULER);
        let submitted = self
            .producer
            .accept(&request, "scheduler", Some(&policy.name))
            .await?;
        if let (true, Some(due)) = (submitted.created, due)
            && let Err(error) =
                ledger::record_due_rows(&self.producer.db, &submitted.job.id, due).await
        {
            tracing::warn!(message = "Cannot record the rows that became due in a window.", policy = %policy.name, %window, %error);
        }
        Ok(if submitted.created {
            WindowJob::Created(submitted.job)
        } else {
            WindowJob::Existing(submitted.job)
        })
    }

    /// Runs the newest window of `policy` if it has run before and has no job for that window
    /// yet (every daemon was down at its tick). Returns the job it created.
    pub(crate) async fn catch_up(&self, policy: &Policy, now: DateTime<Utc>) -> Option<JobRecord> {
        let window = policy.latest_window(now)?;
        match ledger::policy_jobs(&self.producer.db, &policy.name, &[], 1).await {
            Ok(history) if history.is_empty() => return None,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(message = "Cannot read a policy's runs; no catch-up for it now.", policy = %policy.name, %error);
                return None;
            }
        }
        match self.submit_window(policy, window).await {
            Ok(WindowJob::Created(job)) => {
                tracing::info!(message = "Caught up on a window missed while no daemon ran.", policy = %policy.name, %window, job_id = %job.id);
                Some(job)
            }
            Ok(WindowJob::Skipped { previous }) => {
                tracing::info!(message = "Skipped a window: the policy's previous run is unfinished.", policy = %policy.name, %window, previous = %previous.id, previous_state = %previous.state);
                None
            }
            Ok(WindowJob::Existing(_)) => None,
            Err(error) => {
                tracing::error!(message = "Cannot submit a policy's missed window.", policy = %policy.name, %window, %error);
                None
            }
        }
    }

    /// Submits `policy`'s window, retrying transient errors for a while (a peer daemon
    /// submitting the same window meanwhile is harmless).
    async fn submit_with_retries(
        &self,
        policy: &Policy,
        window: DateTime<Utc>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        for attempt in 1..=SUBMIT_ATTEMPTS {
            match self.submit_window(policy, window).await {
                Ok(WindowJob::Created(job)) => {
                    tracing::info!(message = "Submitted a retention window.", policy = %policy.name, %window, job_id = %job.id);
                    return;
                }
                Ok(WindowJob::Existing(job)) => {
                    tracing::debug!(message = "Another daemon submitted this window.", policy = %policy.name, %window, job_id = %job.id);
                    return;
                }
                Ok(WindowJob::Skipped { previous }) => {
                    tracing::info!(message = "Skipped a window: the policy's previous run is unfinished.", policy = %policy.name, %window, previous = %previous.id, previous_state = %previous.state);
                    return;
                }
                Err(error)
                    if error.class() == ErrorClass::Transient && attempt < SUBMIT_ATTEMPTS =>
                {
                    tracing::warn!(message = "Cannot submit a retention window yet; retrying.", policy = %policy.name, %window, attempt, %error);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1 << attempt)) => {}
                        _ = stop.wait_for(|stopping| *stopping) => return,
                    }
                }
                Err(error) => {
                    tracing::error!(message = "Cannot submit a retention window.", policy = %policy.name, %window, %error);
                    return;
                }
            }
        }
    }

    /// For each enabled policy: arms its schedule, catches up, then submits its window at each
    /// tick until `stop` turns true.
    pub(crate) async fn run(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.policies.len() {
            if self.policies[index].enabled {
                tasks.spawn(self.clone().tick(index, stop.clone()));
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn tick(self: Arc<Self>, index: usize, mut stop: tokio::sync::watch::Receiver<bool>) {
        let policy = &self.policies[index];
        let schedule = || Box::pin(CronScheduler::new(policy.schedule().clone()).into_stream());
        let mut ticks = schedule();
        // Arm the schedule (its first poll fixes the next tick after now) before the catch-up
        // looks back from a later now: every tick is then the stream's or the catch-up's, none
        // falls between them.
        let mut armed = match futures::poll!(ticks.next()) {
            std::task::Poll::Ready(tick) => Some(tick),
            std::task::Poll::Pending => None,
        };
        let mut last_window = self
            .catch_up(policy, Utc::now())
            .await
            .and_then(|job| policy.latest_window(job.created_at));
        let mut submissions = tokio::task::JoinSet::new();
        loop {
            let tick = match armed.take() {
                Some(tick) => tick,
                None => tokio::select! {
                    tick = ticks.next() => tick,
                    _ = stop.wait_for(|stopping| *stopping) => break,
                },
            };
            let window = match tick {
                Some(Ok(tick)) => i64::try_from(tick.get_timestamp())
                    .ok()
                    .and_then(|seconds| DateTime::from_timestamp(seconds, 0)),
                Some(Err(error)) => {
                    // The tick was already past when its timer was set (the process stalled).
                    // apalis-cron keeps returning this tick: start the schedule afresh, and run
                    // the window we are in now, which the late tick belonged to or followed.
                    tracing::warn!(message = "A tick came late; running the current window.", policy = %policy.name, %error);
                    ticks = schedule();
                    policy.latest_window(Utc::now())
                }
                None => {
                    tracing::info!(message = "The policy's schedule has no more ticks.", policy = %policy.name);
                    break;
                }
            };
            let Some(window) = window else { continue };
            if last_window.is_some_and(|last| window <= last) {
                continue;
            }
            // A timer that fired late (the process or the machine stalled past a tick) jumps
            // over windows this daemon was up for: the newest window's job covers their rows,
            // so they are logged, not submitted.
            if let Some(last) = last_window {
                let jumped = policy.windows_between(last, window, MAX_JUMPED_WINDOWS);
                for skipped in jumped.iter().filter(|jumped| **jumped < window) {
                    tracing::info!(message = "Skipped a window: a late tick jumped over it; the newest window's job covers its rows.", policy = %policy.name, window = %skipped, newest = %window);
                }
            }
            last_window = Some(window);
            // Submitting may wait on the database (and retry); the next tick must not.
            let scheduler = self.clone();
            let stop = stop.clone();
            submissions.spawn(async move {
                let policy = &scheduler.policies[index];
                scheduler.submit_with_retries(policy, window, stop).await;
            });
            while submissions.try_join_next().is_some() {}
        }
        while submissions.join_next().await.is_some() {}
    }
}
