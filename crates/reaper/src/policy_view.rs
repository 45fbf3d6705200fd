//! Retention policies as shown (`reaper policies`, `GET /v1/policies`, the per-policy gauges of
//! `/metrics`): each policy's schedule, next window and runs, read from the ledger, so every
//! daemon shows the same thing whichever of them ran the job.

use chrono::{DateTime, Utc};
use reaper_core::catalog::Catalog;
use reaper_core::lifecycle::JobState;
use reaper_core::retention::{self, Policy};
use reaper_core::sql::retention::COUNT_CAP;
use reaper_core::validate::ValidatedJob;
use reaper_core::views::{KeepingUp, PolicyRunView, PolicyView, PolicyWindow};
use reaper_engine::ledger::{self, JobRecord};
use reaper_engine::{Database, EngineError, batch, instruments};

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
        due_rows: job.due_rows,
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
        keeping_up: None,
        keeping_up_error: None,
    })
}

/// Past windows whose due ranges [`keeping_up`] counts.
pub(crate) const KEEPING_UP_WINDOWS: usize = 3;

/// The policy's job as validated at `moment` (its cutoff is `moment − max_age`).
fn job_at(
    policy: &Policy,
    catalog: &Catalog,
    moment: DateTime<Utc>,
) -> Result<ValidatedJob, EngineError> {
    reaper_core::validate::validate(
        &policy.job_request(None, retention::SCHEDULER),
        catalog,
        moment,
    )
    .map_err(EngineError::from)
}

/// `tick − max_age`: where the due range of the window ending at `tick` starts or ends. An age
/// beyond chrono's range (a policy keeping rows for millennia) saturates at the earliest time
/// instead of overflowing.
fn cutoff_at(policy: &Policy, tick: DateTime<Utc>) -> DateTime<Utc> {
    chrono::Duration::from_std(policy.max_age.as_duration())
        .ok()
        .and_then(|age| tick.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The rows of the due range of the window ending at tick `end` still in the target: `age` in
/// `[previous tick − max_age, end − max_age)`, or everything older than `end − max_age` for
/// the policy's first tick. Counted through the age column's index, up to [`COUNT_CAP`].
pub(crate) async fn due_in_window(
    db: &Database,
    catalog: &Catalog,
    policy: &Policy,
    end: DateTime<Utc>,
) -> Result<u64, EngineError> {
    let job = job_at(policy, catalog, end)?;
    match policy.latest_window(end - chrono::Duration::seconds(1)) {
        Some(start) => {
            batch::count_due_in_range(
                db,
                &job,
                &policy.age_column,
                cutoff_at(policy, start),
                COUNT_CAP,
            )
            .await
        }
        None => batch::count_backlog(db, &job, COUNT_CAP).await,
    }
}

/// Whether `policy` keeps up at `now`: per past window (newest first), what its run removed
/// against what became due in it and what of it is still there; what became due since the
/// newest tick; the backlog. `runs` are the policy's newest jobs. Several counts on the
/// target, each under [`COUNT_CAP`].
pub(crate) async fn keeping_up(
    db: &Database,
    catalog: &Catalog,
    policy: &Policy,
    runs: &[JobRecord],
    now: DateTime<Utc>,
) -> Result<KeepingUp, EngineError> {
    let mut windows = Vec::new();
    let mut tick = policy.latest_window(now);
    while let Some(end) = tick.filter(|_| windows.len() < KEEPING_UP_WINDOWS) {
        let key = policy.window_key(end);
        let run = runs.iter().find(|run| run.idempotency_key == key);
        windows.push(PolicyWindow {
            window_end: end,
            job_id: run.map(|run| run.id.clone()),
            rows_removed: run.map(|run| run.rows_deleted),
            became_due: run.and_then(|run| run.due_rows),
            still_due: due_in_window(db, catalog, policy, end).await?,
        });
        tick = policy.latest_window(end - chrono::Duration::seconds(1));
    }
    let due_now = job_at(policy, catalog, now)?;
    let due_since_last_window = match policy.latest_window(now) {
        Some(latest) => {
            let from = cutoff_at(policy, latest);
            batch::count_due_in_range(db, &due_now, &policy.age_column, from, COUNT_CAP).await?
        }
        None => 0,
    };
    let backlog = batch::count_backlog(db, &due_now, COUNT_CAP).await?;
    Ok(KeepingUp {
        windows,
        due_since_last_window,
        backlog,
        count_cap: COUNT_CAP,
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
