//! Legal holds (issue 14) on real SQLite, PostgreSQL and MariaDB: every batch leaves held rows
//! in place and counts them (audit row and job result), a hold takes effect for every batch
//! that begins after it commits (one placed while a job runs included), a released hold lets a
//! new job delete the rows, and holds that cannot be read fail the batch with nothing deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;

use chrono::Utc;
use reaper_core::holds::HoldRequest;
use reaper_core::job::JobRequest;
use reaper_core::sql::{Backend, RowLocking};
use reaper_engine::batch::{BatchResult, LeaseHolder, run_batch};
use reaper_engine::holds;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::Removal;
use reaper_testkit::engine::{EngineTest, erase_tenant};

reaper_testkit::on_every_backend!(
    held_rows_by_keys_and_by_filter_are_skipped_counted_then_deleted_once_released,
    a_hold_placed_while_a_job_runs_applies_to_every_batch_after_it,
    holds_that_cannot_be_read_fail_the_batch_and_nothing_is_deleted,
);

fn hold(json: &serde_json::Value) -> HoldRequest {
    let mut base =
        serde_json::json!({"target": "events", "reason": "case 7", "placed_by": "legal"});
    base.as_object_mut()
        .unwrap()
        .extend(json.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

/// Tenant 3's keys (`id % 10 = 3`) of the first `rows` events.
fn tenant_3(rows: i64) -> BTreeSet<String> {
    (1..=rows)
        .filter(|id| id % 10 == 3)
        .map(|id| id.to_string())
        .collect()
}

/// Tenant 3's rows held by the two holds of the first test: keys 3 and 23, and every `click`
/// (`id % 4 = 1`, so `id % 20 = 13`).
fn held_of_tenant_3(rows: i64) -> BTreeSet<String> {
    (1..=rows)
        .filter(|id| id % 10 == 3 && (*id == 3 || *id == 23 || id % 4 == 1))
        .map(|id| id.to_string())
        .collect()
}

async fn held_rows_by_keys_and_by_filter_are_skipped_counted_then_deleted_once_released(
    backend: Backend,
) {
    let s = EngineTest::new(backend, 400).await;
    let now = Utc::now();
    let by_keys = holds::place(
        &s.db,
        &s.catalog,
        &hold(&serde_json::json!({"keys": [3, 23]})),
        now,
    )
    .await
    .unwrap();
    let by_filter = holds::place(
        &s.db,
        &s.catalog,
        &hold(&serde_json::json!({"filter": {"all": [{"column": "kind", "op": "eq", "value": "click"}]}})),
        now,
    )
    .await
    .unwrap();
    let active = holds::list(&s.db, Some(Utc::now()), 10).await.unwrap();
    assert_eq!(active.len(), 2);

    let held = held_of_tenant_3(400);
    assert_eq!(held.len(), 22);
    let before = s.snapshot().await;
    // On PostgreSQL the first job walks the heap (physical order, then its keyset sweep); the
    // second job walks the keys, as every job elsewhere.
    let strategy = if backend == Backend::Postgres {
        "physical"
    } else {
        "keyset"
    };
    let id = s
        .submit(
            erase_tenant(
                3,
                serde_json::json!({"batch_size": 5, "strategy": strategy}),
            ),
            3,
        )
        .await;
    let expected: BTreeSet<String> = tenant_3(400).difference(&held).cloned().collect();
    s.run_and_check(&id, &before, &expected, Removal::Hard, 5)
        .await;
    let job = s.job(&id).await;
    assert_eq!((job.rows_deleted, job.rows_held), (18, 22));
    let summary = job.job_result().and_then(|r| r.summary().cloned()).unwrap();
    assert_eq!(summary.held.get("events"), Some(&22), "{summary:?}");
    let sum = s.test.as_int("sum(rows_held)");
    let audited_held: i64 = s
        .test
        .int(&format!(
            "SELECT {sum} FROM reaper_audit WHERE job_id = '{id}'"
        ))
        .await;
    assert_eq!(audited_held, 22);

    // Released, the rows go with the next job, and nothing else does.
    for placed in [&by_keys, &by_filter] {
        let released = holds::release(&s.db, &placed.id, "legal", Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert!(!released.is_active(Utc::now()));
    }
    assert!(
        holds::list(&s.db, Some(Utc::now()), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let before = s.snapshot().await;
    let again = s
        .submit(
            erase_tenant(
                3,
                serde_json::json!({"batch_size": 5, "idempotency_key": "again"}),
            ),
            3,
        )
        .await;
    s.run_and_check(&again, &before, &held, Removal::Hard, 5)
        .await;
    assert_eq!(s.job(&again).await.rows_held, 0);
}

async fn a_hold_placed_while_a_job_runs_applies_to_every_batch_after_it(backend: Backend) {
    let s = EngineTest::new(backend, 200).await;
    let json = erase_tenant(3, serde_json::json!({"batch_size": 5}));
    let id = s.submit(json.clone(), 3).await;
    s.claim(&id, "w", "tok", chrono::Duration::seconds(60))
        .await
        .unwrap();
    let request: JobRequest = serde_json::from_value(json).unwrap();
    let job = reaper_core::validate::validate(&request, &s.catalog, Utc::now()).unwrap();
    let holder = LeaseHolder {
        job_id: &id,
        token: "tok",
        lease: std::time::Duration::from_secs(60),
    };
    // The first batch (keys 3 … 43) commits before the hold.
    let first = run_batch(&s.db, &job, None, 5, holder, RowLocking::Direct)
        .await
        .unwrap();
    let BatchResult::Committed {
        rows: 5, last_key, ..
    } = first
    else {
        panic!("{first:?}");
    };
    // Key 3 is gone already: the hold cannot bring it back; key 53 is still there.
    holds::place(
        &s.db,
        &s.catalog,
        &hold(&serde_json::json!({"keys": [3, 53]})),
        Utc::now(),
    )
    .await
    .unwrap();
    let mut after = last_key;
    let mut held = 0;
    loop {
        let result = run_batch(&s.db, &job, after.as_ref(), 5, holder, RowLocking::Direct)
            .await
            .unwrap();
        let BatchResult::Committed {
            held: batch_held,
            selected,
            last_key,
            ..
        } = result
        else {
            panic!("{result:?}");
        };
        held += batch_held;
        if selected == 0 {
            break;
        }
        after = last_key;
    }
    assert_eq!(held, 1);
    let left = s.test.ids("events", "tenant_id = 3").await;
    assert_eq!(left, BTreeSet::from(["53".to_owned()]));
    assert_eq!(s.job(&id).await.rows_held, 1);
}

async fn holds_that_cannot_be_read_fail_the_batch_and_nothing_is_deleted(backend: Backend) {
    let s = EngineTest::new(backend, 100).await;
    let before = s.snapshot().await;
    // A stored hold whose filter the catalog no longer allows (a column since dropped from it).
    s.test
        .exec(&format!(
            "INSERT INTO reaper_holds (id, target, held_filter, reason, placed_by, placed_at) VALUES \
             ('h-old', 'events', '{{\"all\":[{{\"column\":\"payload\",\"op\":\"eq\",\"value\":\"x\"}}]}}', \
             'case 1', 'legal', {})",
            s.ts("2026-01-01 00:00:00")
        ))
        .await;
    let id = s.submit(erase_tenant(4, serde_json::json!({})), 3).await;
    let outcome = s.run_once(&id).await;
    let RunOutcome::Dead { error } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(error.contains("legal hold h-old"), "{error}");
    assert!(error.contains("nothing was deleted"), "{error}");
    before.assert_untouched(&s.test).await;

    // The holds table unreadable: the batch fails, nothing deleted.
    s.test
        .exec("ALTER TABLE reaper_holds RENAME TO reaper_holds_moved")
        .await;
    let other = s.submit(erase_tenant(5, serde_json::json!({})), 1).await;
    let outcome = s.run_once(&other).await;
    assert!(
        matches!(
            outcome,
            RunOutcome::Dead { .. } | RunOutcome::RetryLater { .. }
        ),
        "{outcome:?}"
    );
    before.assert_untouched(&s.test).await;
}
