//! Live target control and the shared rows-per-second budget (issue 16) on real SQLite,
//! PostgreSQL and MariaDB: the budget's one-statement booking spaces slots on the database's
//! clock, gives unused time back, and stays exact when many bookings race; controls change with
//! their history in one transaction and refused input changes nothing; a running job waits at its
//! batch boundary while its target is paused and runs on once resumed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use chrono::Utc;
use reaper_core::controls::ThrottlePatch;
use reaper_core::lifecycle::JobState;
use reaper_core::sql::Backend;
use reaper_engine::controls::{self, Changer};
use reaper_engine::runner::RunOutcome;
use reaper_testkit::engine::{EngineTest, erase_tenant};

reaper_testkit::on_every_backend!(
    multi_thread;
    bookings_take_consecutive_slots_on_the_database_clock_and_give_unused_time_back,
    racing_bookings_lose_no_time,
    changes_are_recorded_and_refused_input_changes_nothing,
    a_paused_target_holds_its_running_job_at_the_batch_boundary_until_resumed,
);

/// `actual` is within `tolerance` of `expected`.
fn near(actual: Duration, expected: Duration, tolerance: Duration, what: &str) {
    let difference = actual.abs_diff(expected);
    assert!(
        difference <= tolerance,
        "{what}: {actual:?}, expected {expected:?} ± {tolerance:?}"
    );
}

/// The wait a booking of `cost` µs with `correction` gives.
async fn book(s: &EngineTest, cost: i64, correction: i64) -> Duration {
    let free_in = controls::book_budget(&s.db, "events", cost, correction)
        .await
        .unwrap();
    reaper_core::throttle::budget_wait(free_in, cost)
}

async fn bookings_take_consecutive_slots_on_the_database_clock_and_give_unused_time_back(
    backend: Backend,
) {
    let s = EngineTest::new(backend, 0).await;
    let tolerance = Duration::from_millis(80);
    // Three batches of 200 ms each, booked at once: each starts when the one before ends.
    let first = book(&s, 200_000, 0).await;
    let second = book(&s, 200_000, 0).await;
    let third = book(&s, 200_000, 0).await;
    near(first, Duration::ZERO, tolerance, "first");
    near(second, Duration::from_millis(200), tolerance, "second");
    near(third, Duration::from_millis(400), tolerance, "third");
    // The third batch used nothing of its slot: giving its 200 ms back moves the next slot up.
    let fourth = book(&s, 100_000, -200_000).await;
    near(
        fourth,
        Duration::from_millis(400),
        tolerance,
        "after a give-back",
    );
    // Idle time is not saved up: after the line ran dry, a booking waits for nothing, even with
    // time to give back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    near(
        book(&s, 100_000, -500_000).await,
        Duration::ZERO,
        Duration::ZERO,
        "after idling",
    );
}

async fn racing_bookings_lose_no_time(backend: Backend) {
    let s = EngineTest::new(backend, 0).await;
    // 3 "daemons" × 10 bookings of 20 ms each, all at once: the line grows by exactly 600 ms.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let db = s.db.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            for _ in 0..10 {
                let free_in = controls::book_budget(&db, "events", 20_000, 0)
                    .await
                    .unwrap();
                waits.push(free_in);
            }
            waits
        }));
    }
    let started = std::time::Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let last = book(&s, 1, 0).await;
    // The line ends 600 ms after the first booking began; we are `elapsed` into it.
    near(
        last + elapsed,
        Duration::from_millis(600),
        Duration::from_millis(100),
        "the line's end",
    );
}

async fn changes_are_recorded_and_refused_input_changes_nothing(backend: Backend) {
    let s = EngineTest::new(backend, 0).await;
    let lease = Duration::from_secs(60);
    let by = |actor: &'static str| Changer {
        actor,
        reason: Some("load test"),
        now: Utc::now(),
    };
    assert_eq!(controls::get(&s.db, "events").await.unwrap(), None);
    let paused = controls::pause(&s.db, &s.catalog, "events", by("ann"))
        .await
        .unwrap();
    assert!(paused.paused);
    let patch: ThrottlePatch = serde_json::from_value(serde_json::json!({
        "max_rows_per_second": 500, "max_batch_size": 200,
        "thresholds": {"replica_lag.pause_above": 5.5}
    }))
    .unwrap();
    let set = controls::set(&s.db, &s.catalog, "events", &patch, lease, by("bob"))
        .await
        .unwrap();
    assert!(set.paused, "a throttle change keeps the pause");
    assert_eq!(set.overrides.max_rows_per_second, Some(500));
    // Refused: above the configured largest batch, a negative cap, an unknown target.
    for (target, json) in [
        ("events", serde_json::json!({"max_batch_size": 1_000_000})),
        ("events", serde_json::json!({"max_rows_per_second": -1})),
        ("nope", serde_json::json!({"max_rows_per_second": 5})),
    ] {
        let patch: ThrottlePatch = serde_json::from_value(json).unwrap();
        let error = controls::set(&s.db, &s.catalog, target, &patch, lease, by("eve"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, reaper_engine::EngineError::Invalid(_)),
            "{error}"
        );
    }
    let error = controls::pause(&s.db, &s.catalog, "nope", by("eve"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown target `nope`"),
        "{error}"
    );
    let stored = controls::get(&s.db, "events").await.unwrap().unwrap();
    assert_eq!(
        stored.overrides, set.overrides,
        "refused input changed nothing"
    );
    assert_eq!(stored.changed_by, "bob");
    assert_eq!(
        stored.overrides.thresholds.as_ref().unwrap()["replica_lag.pause_above"],
        5.5
    );
    controls::resume(&s.db, &s.catalog, "events", by("ann"))
        .await
        .unwrap();
    let cleared = controls::clear(&s.db, &s.catalog, "events", by("cat"))
        .await
        .unwrap();
    assert!(!cleared.paused && cleared.overrides.is_empty());
    let history = controls::changes(&s.db, "events", 10).await.unwrap();
    let summary: Vec<(&str, &str)> = history
        .iter()
        .map(|change| (change.action.as_str(), change.actor.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("clear", "cat"),
            ("resume", "ann"),
            ("set", "bob"),
            ("pause", "ann")
        ]
    );
    assert_eq!(history[2].after["override"]["max_rows_per_second"], 500);
    assert_eq!(history[2].after["paused"], true);
    assert_eq!(history[2].reason.as_deref(), Some("load test"));
    assert!(
        controls::changes(&s.db, "nope", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(controls::list(&s.db).await.unwrap().len() == 1);
}

async fn a_paused_target_holds_its_running_job_at_the_batch_boundary_until_resumed(
    backend: Backend,
) {
    let s = EngineTest::new(backend, 1_000).await;
    let by = Changer {
        actor: "ann",
        reason: None,
        now: Utc::now(),
    };
    controls::pause(&s.db, &s.catalog, "events", by)
        .await
        .unwrap();
    let id = s
        .submit(erase_tenant(3, serde_json::json!({"batch_size": 20})), 3)
        .await;
    let run = {
        let (db, catalog, id) = (s.db.clone(), s.catalog.clone(), id.clone());
        tokio::spawn(async move {
            let mut settings = reaper_testkit::engine::settings();
            settings.lease = Duration::from_secs(2);
            settings.slice = Duration::from_secs(60);
            reaper_engine::runner::run_job(&db, &catalog, &id, &settings, &|| false).await
        })
    };
    // Claimed and waiting: running, under a lease it keeps renewing, nothing deleted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = s.job(&id).await;
    assert_eq!(
        (waiting.state, waiting.batches, waiting.rows_deleted),
        (JobState::Running, 0, 0)
    );
    assert!(
        waiting.lease_expires_at.unwrap() > Utc::now(),
        "the lease was kept alive: {waiting:?}"
    );
    let resumed_at = std::time::Instant::now();
    controls::resume(&s.db, &s.catalog, "events", by)
        .await
        .unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.outcome, RunOutcome::Done);
    assert!(resumed_at.elapsed() < Duration::from_secs(10));
    s.assert_clean(&id, JobState::Done, 1).await;
    assert_eq!(s.job(&id).await.rows_deleted, 100);
}
