//! Retention policies as shown (`reaper policies`, `GET /v1/policies`, the per-policy gauges of
//! `/metrics`): each policy's schedule, next window and runs, read from the ledger, so every
//! daemon shows the same thing whichever of them ran the job.

use chrono::{DateTime, Utc};
use reaper_core::lifecycle::JobState;
use reaper_core::retention::Policy;
use reaper_core::views::{PolicyRunView, PolicyView};
use reaper_engine::ledger::{self, JobRecord};
use reaper_engine::{Database, EngineError, instruments};

/// A `done` run that stopped at its `max_rows` with matching rows left (its stored summary
/// says so).
pub(crate) fn stopped_at_cap(job: &JobRecord) -> bool {
    job.stopped_at_max_rows()
}

fn run_view(job: JobRecord) -> PolicyRunView {
    PolicyRunView {
        stopped_at_max_rows: stopped_at_cap(&job),
        duration_seconds: job
            .finished_at
            .map(|finished| (finished - job.created_at).as_seconds_f64()),
        job_id: job.id,
        state: job.state,
        rows_deleted: job.rows_deleted,
        created_at: job.created_at,
        finished_at: job.finished_at,
        last_error: job.last_error,
    }
}

async fn newest(
    db: &Database,
    policy: &Policy,
    states: &[JobState],
) -> Result<Option<JobRecord>, EngineError> {
    Ok(ledger::policy_jobs(db, &policy.name, states, 1)
        .await?
        .into_iter()
        .next())
}

/// `policy` with its newest run and last success.
pub(crate) async fn policy_view(
    db: &Database,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<PolicyView, EngineError> {
    let last_run = newest(db, policy, &[]).await?.map(run_view);
    let last_success_at = newest(db, policy, &[JobState::Done])
        .await?
        .and_then(|job| job.finished_at);
    Ok(PolicyView {
        name: policy.name.clone(),
        target: policy.target.clone(),
        schedule: policy.schedule_text.clone(),
        enabled: policy.enabled,
        age_column: policy.age_column.clone(),
        max_age: policy.max_age.to_string(),
        mode: policy.mode.map(|mode| mode.as_str().to_owned()),
        max_rows_per_run: policy.max_rows_per_run,
        next_run_at: policy.enabled.then(|| policy.next_window(now)).flatten(),
        interval_seconds: policy.interval(now).map(|interval| interval.as_secs_f64()),
        last_run,
        last_success_at,
    })
}

/// Sets the per-policy gauges from the ledger (called at scrape time).
pub(crate) async fn record_metrics(
    db: &Database,
    policies: &[Policy],
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    for policy in policies {
        let finished = newest(db, policy, JobState::FINISHED).await?;
        let success = newest(db, policy, &[JobState::Done]).await?;
        instruments::policy_status(
            &policy.name,
            &instruments::PolicyStatus {
                last_run_at: finished.as_ref().and_then(|job| job.finished_at),
                last_run_rows: finished.as_ref().map_or(0, |job| job.rows_deleted),
                last_run_duration: finished.as_ref().and_then(|job| {
                    job.finished_at
                        .map(|finished| (finished - job.created_at).as_seconds_f64())
                }),
                last_run_succeeded: finished
                    .as_ref()
                    .is_some_and(|job| job.state == JobState::Done),
                last_run_capped: finished.as_ref().is_some_and(stopped_at_cap),
                last_success_at: success.and_then(|job| job.finished_at),
                interval: policy.interval(now),
                next_run_at: policy.enabled.then(|| policy.next_window(now)).flatten(),
            },
        );
    }
    Ok(())
}
