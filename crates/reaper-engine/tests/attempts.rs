//! Attempts are counted at claim and never exceed the job's `max_attempts` (invariant I6 of
//! the reliability matrix), on real SQLite, PostgreSQL and MariaDB: a job whose worker dies
//! on every claim is refused a further claim once its attempts are used up, and the next
//! worker records it `dead` with the reason without counting another attempt or running a
//! batch.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use reaper_core::sql::Backend;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::engine::{EngineTest, erase_tenant};

reaper_testkit::on_every_backend!(
    a_job_whose_worker_dies_on_every_claim_ends_dead_with_attempts_at_most_max,
    a_cancel_requested_of_a_used_up_job_cancels_it,
);

/// Claims `id` as a worker that dies at once (its lease already over), `times` times.
async fn claim_and_die(s: &EngineTest, id: &str, times: i64) {
    for attempt in 1..=times {
        let claimed = s
            .claim(
                id,
                "doomed-worker",
                &format!("tok-{attempt}"),
                chrono::Duration::zero(),
            )
            .await
            .unwrap_or_else(|| panic!("claim {attempt} refused"));
        assert_eq!(claimed.attempts, attempt);
        // The lease must be in the past for the next claim.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_job_whose_worker_dies_on_every_claim_ends_dead_with_attempts_at_most_max(
    backend: Backend,
) {
    let s = EngineTest::new(backend, 200).await;
    let before = s.snapshot().await;
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 3).await;
    claim_and_die(&s, &id, 3).await;
    // A fourth claim is refused before it counts anything.
    assert!(
        s.claim(
            &id,
            "another-worker",
            "tok-4",
            chrono::Duration::seconds(60)
        )
        .await
        .is_none(),
        "a used-up job was claimed"
    );
    assert_eq!(s.state(&id).await.1, 3);
    // A worker pulling it records why it is dead, counting nothing and deleting nothing.
    let outcome = s.run_once(&id).await;
    let RunOutcome::Dead { error } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        error.starts_with("gave up after 3 attempts; last error: none recorded"),
        "{error}"
    );
    let (state, attempts, last_error) = s.state(&id).await;
    assert_eq!(
        (state.as_str(), attempts, last_error.as_deref()),
        ("dead", 3, Some(error.as_str()))
    );
    let job = s.job(&id).await;
    assert_eq!((job.batches, job.rows_deleted), (0, 0));
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    before.assert_untouched(&s.test).await;
}

async fn a_cancel_requested_of_a_used_up_job_cancels_it(backend: Backend) {
    let s = EngineTest::new(backend, 50).await;
    let before = s.snapshot().await;
    let id = s.submit(erase_tenant(2, serde_json::json!({})), 2).await;
    claim_and_die(&s, &id, 2).await;
    reaper_engine::ledger::request_cancel(&s.db, &id, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(s.run_once(&id).await, RunOutcome::Cancelled);
    assert_eq!(s.state(&id).await.1, 2);
    before.assert_untouched(&s.test).await;
}
