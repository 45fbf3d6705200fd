//! Operator actions and the dashboard's reads on every backend: a pause stops a running job at a
//! batch boundary and keeps its checkpoint, a resume finishes it exactly once, a cancel
//! withdraws a pause, a dead job is retried from its checkpoint, each action is recorded with
//! who asked; the overview's counts and the chart's series read what the runs wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use chrono::Utc;
use reaper_core::lifecycle::JobState;
use reaper_core::sql::Backend;
use reaper_engine::ledger::{self, Acted};
use reaper_engine::runner::RunOutcome;
use reaper_testkit::Removal;
use reaper_testkit::engine::{EngineTest as Setup, job, settings};

reaper_testkit::on_every_backend!(
    a_paused_job_keeps_its_checkpoint_and_a_resume_finishes_it_exactly_once,
    a_cancel_withdraws_a_pause_and_a_dead_job_is_retried_from_its_checkpoint,
    a_policy_window_and_its_backlog_are_counted_under_a_cap,
);

fn three_tenants() -> serde_json::Value {
    job(
        "events",
        serde_json::json!([{"column": "tenant_id", "op": "in", "value": [1, 2, 3]}]),
        serde_json::json!({"batch_size": 3}),
    )
}

async fn a_paused_job_keeps_its_checkpoint_and_a_resume_finishes_it_exactly_once(backend: Backend) {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(backend, 3_000).await;
    fail::cfg("batch::before_commit", "sleep(5)").unwrap();
    let matching = s.test.ids("events", "tenant_id IN (1, 2, 3)").await;
    let before = s.snapshot().await;
    let id = s.submit(three_tenants(), 5).await;
    let pauser = async {
        s.wait_for_batches(&id, 2, Duration::from_secs(20)).await;
        ledger::pause(&s.db, &id, "ann", Utc::now()).await.unwrap()
    };
    let run_settings = settings();
    let (outcome, paused) = tokio::join!(s.run_with(&id, &run_settings, &|| false), pauser);
    assert!(matches!(paused, Some(Acted::Changed(_))), "{paused:?}");
    assert_eq!(outcome, RunOutcome::Paused);
    fail::cfg("batch::before_commit", "off").unwrap();
    let job = s.job(&id).await;
    assert_eq!(job.state, JobState::Paused);
    assert!(job.cancel_requested_at.is_none() && job.pause_requested_at.is_none());
    assert!(job.checkpoint.is_some() && job.lease_owner.is_none());
    // No worker takes it; a second pause and a retry are refused.
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    let again = ledger::pause(&s.db, &id, "ann", Utc::now()).await.unwrap();
    assert!(matches!(again, Some(Acted::Refused(_))), "{again:?}");
    let retry = ledger::retry(&s.db, &id, "ann", Utc::now()).await.unwrap();
    assert!(matches!(retry, Some(Acted::Refused(_))), "{retry:?}");
    let stopped = before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 3)
        .await;
    assert!(stopped.removed.len() >= 6 && stopped.removed.len() < matching.len());

    let resumed = ledger::resume(&s.db, &id, "bob", Utc::now()).await.unwrap();
    assert!(
        matches!(&resumed, Some(Acted::Changed(job)) if job.state == JobState::Pending),
        "{resumed:?}"
    );
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    // The pause gave its attempt back.
    s.assert_clean(&id, JobState::Done, 1).await;
    before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 3)
        .await;
    let actions = ledger::actions_of_job(&s.db, &id, 10).await.unwrap();
    let recorded: Vec<(&str, &str, &str)> = actions
        .iter()
        .map(|action| {
            (
                action.action.as_str(),
                action.actor.as_str(),
                action.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [("resume", "bob", "pending"), ("pause", "ann", "stopping")]
    );

    // The dashboard's reads, on what this run wrote.
    let states = ledger::count_by_state(&s.db).await.unwrap();
    assert_eq!((states["done"], states["dead"]), (1, 0));
    let rows = ledger::rows_since(&s.db, Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(rows["events"] as usize, matching.len());
    let series = ledger::batch_series(&s.db, &id, 5).await.unwrap();
    let last = s.job(&id).await.batches;
    assert_eq!(
        series
            .iter()
            .map(|point| point.batch_no)
            .collect::<Vec<_>>(),
        (last - 4..=last).collect::<Vec<_>>()
    );
    let found = ledger::jobs_by_ids(&s.db, &[id.as_str(), "no-such-job"])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(ledger::jobs_by_ids(&s.db, &[]).await.unwrap().is_empty());
}

async fn a_cancel_withdraws_a_pause_and_a_dead_job_is_retried_from_its_checkpoint(
    backend: Backend,
) {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(backend, 3_000).await;
    // A pending job pauses at once; a cancel ends it.
    let pending = s.submit(three_tenants(), 5).await;
    let paused = ledger::pause(&s.db, &pending, "ann", Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(&paused, Some(Acted::Changed(job)) if job.state == JobState::Paused),
        "{paused:?}"
    );
    assert!(matches!(
        ledger::cancel(&s.db, &pending, "ann", Utc::now())
            .await
            .unwrap(),
        Some(ledger::CancelOutcome::Cancelled(_))
    ));
    // A running job asked to pause, then to cancel: the cancel wins.
    let running = s.submit(three_tenants(), 5).await;
    s.claim(&running, "w", "tok", chrono::Duration::seconds(60))
        .await
        .unwrap();
    ledger::pause(&s.db, &running, "ann", Utc::now())
        .await
        .unwrap();
    assert!(s.job(&running).await.pause_requested_at.is_some());
    ledger::cancel(&s.db, &running, "bob", Utc::now())
        .await
        .unwrap();
    let job = s.job(&running).await;
    assert!(job.pause_requested_at.is_none() && job.cancel_requested_at.is_some());
    let not_paused = ledger::transition(
        &s.db,
        &running,
        "tok",
        Utc::now(),
        &ledger::Transition::PausedOnRequest,
    )
    .await
    .unwrap();
    assert!(!not_paused, "a withdrawn pause must not pause the job");
    assert_eq!(s.job(&running).await.state, JobState::Running);

    // Dead after its attempts, with three batches committed; a retry finishes it from there.
    let matching = s.test.ids("events", "tenant_id IN (1, 2, 3)").await;
    s.test
        .exec(&format!(
            "DELETE FROM reaper_jobs WHERE id IN ('{pending}', '{running}')"
        ))
        .await;
    let before = s.snapshot().await;
    let dead = s.submit(three_tenants(), 1).await;
    fail::cfg("batch::before_commit", "3*off->return").unwrap();
    assert!(matches!(s.run_once(&dead).await, RunOutcome::Dead { .. }));
    fail::cfg("batch::before_commit", "off").unwrap();
    let job = s.job(&dead).await;
    assert_eq!(
        (job.state, job.batches, job.attempts),
        (JobState::Dead, 3, 1)
    );
    let retried = ledger::retry(&s.db, &dead, "carol", Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(&retried, Some(Acted::Changed(job)) if job.max_attempts == 2 && job.state == JobState::Pending),
        "{retried:?}"
    );
    assert_eq!(s.run_to_end(&dead).await, RunOutcome::Done);
    assert_eq!(s.job(&dead).await.attempts, 2);
    before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 3)
        .await;
    let actions = ledger::actions_of_job(&s.db, &dead, 10).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].action.as_str(), actions[0].actor.as_str()),
        ("retry", "carol")
    );
    assert_eq!(
        ledger::retry(&s.db, "no-such-job", "x", Utc::now())
            .await
            .unwrap(),
        None
    );
}

/// The keeping-up reads of the policies page: `events` holds `created_at` 0–99 days before
/// 2026-01-01, each day on 30 of the 3,000 rows.
async fn a_policy_window_and_its_backlog_are_counted_under_a_cap(backend: Backend) {
    let s = Setup::new(backend, 3_000).await;
    let day = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(&format!("{text}T00:00:00Z"))
            .unwrap()
            .to_utc()
    };
    let older_than_30d =
        serde_json::json!([{"column": "created_at", "op": "older_than", "value": "30d"}]);
    let request =
        serde_json::from_value(job("events", older_than_30d, serde_json::json!({}))).unwrap();
    // The window 2026-01-21 → 2026-01-31: due rows have created_at in [2025-12-22, 2026-01-01),
    // days 1 to 10 before 2026-01-01.
    let at_end = reaper_core::validate::validate(&request, &s.catalog, day("2026-01-31")).unwrap();
    let from = day("2025-12-22");
    let due =
        |cap| reaper_engine::batch::count_due_in_range(&s.db, &at_end, "created_at", from, cap);
    assert_eq!(due(1_000).await.unwrap(), 300);
    assert_eq!(due(100).await.unwrap(), 100);
    // Backlog at the window's end: days 1 to 99 before 2026-01-01.
    assert_eq!(
        reaper_engine::batch::count_backlog(&s.db, &at_end, 10_000_000)
            .await
            .unwrap(),
        2_970
    );
    assert_eq!(
        reaper_engine::batch::count_backlog(&s.db, &at_end, 7)
            .await
            .unwrap(),
        7
    );
}
