//! Legal holds (issue 14) on real SQLite, PostgreSQL and MariaDB: every batch leaves held rows
//! in place and counts them (audit row and job result), a hold takes effect for every batch
//! that begins after it commits (one placed while a job runs included), a released hold lets a
//! new job delete the rows, and holds that cannot be read fail the batch with nothing deleted —
//! for one table and across relations (a held row keeps its subtree and its ancestors); dry
//! runs count the held rows and `max_rows` counts only the rows removed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use chrono::Utc;
use reaper_core::holds::HoldRequest;
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::{JobResult, JobState};
use reaper_core::sql::{Backend, RowLocking};
use reaper_engine::batch::{BatchResult, LeaseHolder, run_batch};
use reaper_engine::holds;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::engine::{EngineTest, erase_tenant, job};
use reaper_testkit::shop::{hanging_off, shop_with, state};
use reaper_testkit::{AuditEntry, GraphSnapshot, GraphTable, Removal};

reaper_testkit::on_every_backend!(
    held_rows_by_keys_and_by_filter_are_skipped_counted_then_deleted_once_released,
    a_hold_placed_while_a_job_runs_applies_to_every_batch_after_it,
    holds_that_cannot_be_read_fail_the_batch_and_nothing_is_deleted,
    graph_holds_keep_held_rows_their_subtree_and_ancestors_and_the_rest_goes,
    a_hold_placed_mid_graph_job_applies_to_every_transaction_after_it,
    graph_holds_that_cannot_be_read_fail_the_transaction_and_nothing_is_deleted,
    dry_runs_count_held_rows_and_max_rows_counts_only_rows_removed,
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
    place_all(&s, [hold(&serde_json::json!({"keys": [3, 53]}))]).await;
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

/// Stores hold `h-old` on `target` by a filter on `column`, which the catalog does not allow
/// (a column since dropped from it), then runs `job`: it dies naming the hold. The job's id.
async fn a_stored_hold_that_no_longer_applies_kills_the_job(
    s: &EngineTest,
    (target, column): (&str, &str),
    job: serde_json::Value,
) -> String {
    s.test
        .exec(&format!(
            "INSERT INTO reaper_holds (id, target, held_filter, reason, placed_by, placed_at) VALUES \
             ('h-old', '{target}', '{{\"all\":[{{\"column\":\"{column}\",\"op\":\"eq\",\"value\":1}}]}}', \
             'case 1', 'legal', {})",
            s.ts("2026-01-01 00:00:00")
        ))
        .await;
    let id = s.submit(job, 3).await;
    let outcome = s.run_once(&id).await;
    let RunOutcome::Dead { error } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(error.contains("legal hold h-old"), "{error}");
    assert!(error.contains("nothing was deleted"), "{error}");
    id
}

async fn holds_that_cannot_be_read_fail_the_batch_and_nothing_is_deleted(backend: Backend) {
    let s = EngineTest::new(backend, 100).await;
    let before = s.snapshot().await;
    // A stored hold whose filter the catalog no longer allows (a column since dropped from it).
    a_stored_hold_that_no_longer_applies_kills_the_job(
        &s,
        ("events", "payload"),
        erase_tenant(4, serde_json::json!({})),
    )
    .await;
    before.assert_untouched(&s.test).await;

    // The holds table unreadable: the batch fails, nothing deleted.
    let other = s.submit(erase_tenant(5, serde_json::json!({})), 1).await;
    run_with_holds_unreadable(&s, &other).await;
    before.assert_untouched(&s.test).await;
}

// ---- Jobs across relations: the shop of `reaper_testkit::shop` (users ← sessions, orders ←
// order_items, events, reviews `set_null`), children in batches of 7.

const CHILD_BATCH: u32 = 7;

/// The tables the graph snapshot checks (reviews are nulled, not removed: checked apart).
const REMOVED_TABLES: [GraphTable<'static>; 5] = [
    GraphTable {
        name: "users",
        key: "id",
        max_batch: 3,
    },
    GraphTable {
        name: "sessions",
        key: "id",
        max_batch: CHILD_BATCH as i64,
    },
    GraphTable {
        name: "orders",
        key: "id",
        max_batch: CHILD_BATCH as i64,
    },
    GraphTable {
        name: "order_items",
        key: "id",
        max_batch: CHILD_BATCH as i64,
    },
    GraphTable {
        name: "events",
        key: "id",
        max_batch: CHILD_BATCH as i64,
    },
];

/// A hold on `target` (`keys` or `filter` given in `rows`).
fn hold_on(target: &str, rows: serde_json::Value) -> HoldRequest {
    let mut request = rows;
    request["target"] = target.into();
    request["reason"] = format!("case {target}").into();
    request["placed_by"] = "legal".into();
    serde_json::from_value(request).unwrap()
}

/// A hold on one row of `target` by a filter on its `id`.
fn hold_by_filter(target: &str, id: i64) -> HoldRequest {
    hold_on(
        target,
        serde_json::json!({"filter": {"all": [{"column": "id", "op": "eq", "value": id}]}}),
    )
}

/// The erasure of tenant 1's users (1, 4, 7, … 28), windows of 3 users.
fn erase_tenant_1(key: &str) -> serde_json::Value {
    job(
        "users",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
        serde_json::json!({"batch_size": 3, "idempotency_key": key}),
    )
}

/// Every table's ids now (reviews: those still pointing at a user), less `minus`.
fn without(
    rows: &BTreeMap<&'static str, BTreeSet<String>>,
    minus: &BTreeMap<&'static str, BTreeSet<String>>,
) -> BTreeMap<&'static str, BTreeSet<String>> {
    rows.iter()
        .map(|(table, ids)| {
            let gone = minus.get(table).cloned().unwrap_or_default();
            (*table, ids.difference(&gone).cloned().collect())
        })
        .collect()
}

/// Tenant 1's users of the 30-user shop: 1, 4, 7, … 28.
fn tenant_1_users() -> BTreeSet<i64> {
    (1..=30).filter(|u| u % 3 == 1).collect()
}

/// Places every hold of `requests` now.
async fn place_all(s: &EngineTest, requests: impl IntoIterator<Item = HoldRequest>) {
    let now = Utc::now();
    for request in requests {
        holds::place(&s.db, &s.catalog, &request, now)
            .await
            .unwrap();
    }
}

/// Runs job `id` for its first window only (the run stops before the next): `pending` again.
async fn run_one_window(s: &EngineTest, id: &str) {
    let run_settings = reaper_testkit::engine::settings();
    let progress = run_settings.progress.clone();
    let one_window = move || progress.batches.load(Ordering::Relaxed) >= 1;
    let outcome = s.run_with(id, &run_settings, &one_window).await;
    assert_eq!(outcome, RunOutcome::Continue);
}

fn ids(ids: &[i64]) -> BTreeSet<String> {
    ids.iter().map(ToString::to_string).collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

/// Tenant 1's users under five holds — user 4 by key and user 10 by filter (parents: their whole
/// subtree stays), order 191 by key (an inner table: its items and its user stay), order item
/// 711 by filter and review 161 by key (children: their ancestors stay, the `set_null` review
/// keeps its column and so its user) — lose every other row; the job ends `done` with the kept
/// rows counted per table in its result and its audit, and its receipt's verification is 0.
/// Released, a new job removes the rest.
async fn graph_holds_keep_held_rows_their_subtree_and_ancestors_and_the_rest_goes(
    backend: Backend,
) {
    let s = shop_with(backend, 30, CHILD_BATCH).await;
    place_all(
        &s,
        [
            hold_on("users", serde_json::json!({"keys": [4]})),
            hold_by_filter("users", 10),
            hold_on("orders", serde_json::json!({"keys": [191]})),
            hold_by_filter("order_items", 711),
            hold_on("reviews", serde_json::json!({"keys": [161]})),
        ],
    )
    .await;
    let all = state(&s).await;
    let tenant_1 = tenant_1_users();
    // What stays of tenant 1: users 4 and 10 whole; user 7, order 71, item 711; user 19, order
    // 191 and its items; user 16 and review 161.
    let kept = BTreeMap::from([
        ("users", ids(&[4, 10, 7, 19, 16])),
        ("sessions", ids(&[41, 42, 101, 102])),
        ("orders", ids(&[41, 42, 101, 102, 71, 191])),
        (
            "order_items",
            ids(&[
                411, 412, 413, 421, 422, 423, 1011, 1012, 1013, 1021, 1022, 1023, 711, 1911, 1912,
                1913,
            ]),
        ),
        ("events", ids(&[41, 42, 101, 102])),
        ("reviews", ids(&[41, 101, 161])),
    ]);
    let expected = without(&hanging_off(&tenant_1), &kept);
    let before = GraphSnapshot::take(&s.test, &REMOVED_TABLES).await;
    let id = s.submit(erase_tenant_1("first"), 1).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    s.assert_clean(&id, JobState::Done, 1).await;
    before.assert_removed_exactly(&s.test, &expected).await;
    let nulled = s.test.ids("reviews", "user_id IS NULL").await;
    assert_eq!(nulled, expected["reviews"], "reviews nulled");
    assert_eq!(state(&s).await, without(&all, &expected));

    let held = counts(&[
        ("users", 5),
        ("sessions", 4),
        ("orders", 6),
        ("order_items", 16),
        ("events", 4),
        ("reviews", 3),
    ]);
    let job = s.job(&id).await;
    let summary = job.job_result().and_then(|r| r.summary().cloned()).unwrap();
    assert_eq!(summary.held, held, "kept rows per table in the result");
    assert_eq!(job.rows_held, 38);
    let removed: BTreeMap<String, u64> = expected
        .iter()
        .map(|(table, rows)| ((*table).to_owned(), rows.len() as u64))
        .collect();
    assert_eq!(summary.tables, removed, "removed rows per table");
    // Every audit row chains, the held-only ones included.
    let chain = reaper_engine::audit_chain::verify_job(&s.db, &id).await;
    assert_eq!(chain.unwrap().unwrap().unwrap().rows as i64, job.batches);

    let receipt = reaper_engine::receipt::build(&s.db, &s.catalog, &job, Utc::now())
        .await
        .unwrap();
    for (table, entry) in &receipt.tables {
        assert_eq!(entry.still_matching, 0, "{table}: {receipt:?}");
        assert_eq!(Some(&entry.held), held.get(table), "{table}");
    }
    assert_eq!(receipt.holds.len(), 5, "{:?}", receipt.holds);
    assert!(receipt.holds.iter().any(|h| h.reason == "case order_items"));

    for placed in holds::list(&s.db, Some(Utc::now()), 10).await.unwrap() {
        holds::release(&s.db, &placed.id, "legal", Utc::now())
            .await
            .unwrap();
    }
    let before = GraphSnapshot::take(&s.test, &REMOVED_TABLES).await;
    let again = s.submit(erase_tenant_1("after-release"), 1).await;
    assert_eq!(s.run_to_end(&again).await, RunOutcome::Done);
    before.assert_removed_exactly(&s.test, &kept).await;
    assert_eq!(state(&s).await, without(&all, &hanging_off(&tenant_1)));
    assert_eq!(s.job(&again).await.rows_held, 0);
}

/// The job stops after its first window (users 1, 4, 7); then holds on users 1 (removed already:
/// it stays removed) and 28 and, by filter, on item 2511 are placed; the rest of the job, every
/// transaction of which begins after the holds committed, keeps user 28's subtree and item 2511
/// with its order and user.
async fn a_hold_placed_mid_graph_job_applies_to_every_transaction_after_it(backend: Backend) {
    let s = shop_with(backend, 30, CHILD_BATCH).await;
    let all = state(&s).await;
    let id = s.submit(erase_tenant_1("mid"), 1).await;
    run_one_window(&s, &id).await;
    assert_eq!(s.test.ids("users", "id IN (1, 4, 7)").await.len(), 0);

    place_all(
        &s,
        [
            hold_on("users", serde_json::json!({"keys": [1, 28]})),
            hold_by_filter("order_items", 2511),
        ],
    )
    .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let tenant_1 = tenant_1_users();
    let kept = BTreeMap::from([
        ("users", ids(&[28, 25])),
        ("sessions", ids(&[281, 282])),
        ("orders", ids(&[281, 282, 251])),
        (
            "order_items",
            ids(&[2811, 2812, 2813, 2821, 2822, 2823, 2511]),
        ),
        ("events", ids(&[281, 282])),
        ("reviews", ids(&[281])),
    ]);
    let expected = without(&hanging_off(&tenant_1), &kept);
    assert_eq!(state(&s).await, without(&all, &expected));
    let job = s.job(&id).await;
    let summary = job.job_result().and_then(|r| r.summary().cloned()).unwrap();
    // Every kept row is counted as held, in its table.
    let held: BTreeMap<String, u64> = kept
        .iter()
        .map(|(table, rows)| ((*table).to_owned(), rows.len() as u64))
        .collect();
    assert_eq!(summary.held, held);
    let audited: Vec<AuditEntry> = s.test.audit_of(&id).await;
    let batches: Vec<i64> = audited.iter().map(|entry| entry.batch_no).collect();
    assert_eq!(batches, (1..=job.batches).collect::<Vec<_>>());
}

/// A stored hold on a child table whose filter the catalog no longer allows fails the graph
/// job before it removes anything; a holds table that becomes unreadable after the job's first
/// window fails its next transaction (the pre-check is behind it): nothing more is deleted from
/// any table.
async fn graph_holds_that_cannot_be_read_fail_the_transaction_and_nothing_is_deleted(
    backend: Backend,
) {
    let s = shop_with(backend, 12, CHILD_BATCH).await;
    let all = state(&s).await;
    let id = a_stored_hold_that_no_longer_applies_kills_the_job(
        &s,
        ("order_items", "price"),
        erase_tenant_1("unreadable"),
    )
    .await;
    assert_eq!(state(&s).await, all, "nothing removed from any table");
    assert_eq!(s.job(&id).await.batches, 0);

    s.test.exec("DELETE FROM reaper_holds").await;
    let other = s.submit(erase_tenant_1("renamed"), 1).await;
    run_one_window(&s, &other).await;
    let after_one_window = state(&s).await;
    assert_ne!(after_one_window, all);
    let batches = s.job(&other).await.batches;
    run_with_holds_unreadable(&s, &other).await;
    assert_eq!(state(&s).await, after_one_window, "nothing more removed");
    assert_eq!(s.job(&other).await.batches, batches);
}

/// Holds on user 4 and, by filter, on item 711: a dry run of tenant 1's erasure reports every
/// matching row per table and how many of them are kept; the `max_rows` pre-check of user 7's
/// erasure (14 rows, 3 of them kept: user 7, order 71, item 711) counts 11. One table alike:
/// tenant 3's 10 events, 2 of them held.
async fn dry_runs_count_held_rows_and_max_rows_counts_only_rows_removed(backend: Backend) {
    let s = shop_with(backend, 30, CHILD_BATCH).await;
    place_all(
        &s,
        [
            hold_on("users", serde_json::json!({"keys": [4]})),
            hold_by_filter("order_items", 711),
        ],
    )
    .await;
    let all = state(&s).await;
    let mut dry = erase_tenant_1("dry");
    dry["dry_run"] = true.into();
    let id = s.submit(dry, 1).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let report = match s.job(&id).await.job_result().unwrap() {
        JobResult::DryRun(report) => report,
        other => panic!("{other:?}"),
    };
    let tenant_1 = tenant_1_users();
    let matching: BTreeMap<String, u64> = hanging_off(&tenant_1)
        .into_iter()
        .map(|(table, rows)| (table.to_owned(), rows.len() as u64))
        .collect();
    assert_eq!(report.tables, matching);
    assert_eq!((report.matching_rows, report.held_rows), (10, 2));
    let held = counts(&[
        ("users", 2),
        ("sessions", 2),
        ("orders", 3),
        ("order_items", 7),
        ("events", 2),
        ("reviews", 1),
    ]);
    assert_eq!(report.held, held);

    let user_7 = |max_rows: u64, key: &str| {
        job(
            "users",
            serde_json::json!([{"column": "id", "op": "eq", "value": 7}]),
            serde_json::json!({"max_rows": max_rows, "idempotency_key": key}),
        )
    };
    let refused = s.submit(user_7(10, "cap-10"), 1).await;
    let outcome = s.run_to_end(&refused).await;
    assert!(
        matches!(&outcome, RunOutcome::Dead { error } if error.contains("more than max_rows (10)")),
        "{outcome:?}"
    );
    assert_eq!(state(&s).await, all, "nothing removed");
    let runs = s.submit(user_7(11, "cap-11"), 1).await;
    assert_eq!(s.run_to_end(&runs).await, RunOutcome::Done);
    let job = s.job(&runs).await;
    assert_eq!((job.rows_deleted, job.rows_held), (11, 3));

    // One table: the events fixture, tenant 3 (ids 3, 13, … 93), keys 3 and 13 held.
    let e = EngineTest::new(backend, 100).await;
    place_all(&e, [hold(&serde_json::json!({"keys": [3, 13]}))]).await;
    let dry = e
        .submit(erase_tenant(3, serde_json::json!({"dry_run": true})), 1)
        .await;
    assert_eq!(e.run_to_end(&dry).await, RunOutcome::Done);
    let Some(JobResult::DryRun(report)) = e.job(&dry).await.job_result() else {
        panic!("not a dry run");
    };
    assert_eq!((report.matching_rows, report.held_rows), (10, 2));
    assert!(report.held.is_empty(), "per table only across relations");
    let capped = |max_rows: u64| {
        erase_tenant(
            3,
            serde_json::json!({"max_rows": max_rows, "batch_size": 3,
                "idempotency_key": format!("cap-{max_rows}")}),
        )
    };
    let refused = e.submit(capped(7), 1).await;
    assert!(matches!(
        e.run_to_end(&refused).await,
        RunOutcome::Dead { .. }
    ));
    let before = e.snapshot().await;
    let runs = e.submit(capped(8), 1).await;
    let expected: BTreeSet<String> = tenant_3(100).difference(&ids(&[3, 13])).cloned().collect();
    e.run_and_check(&runs, &before, &expected, Removal::Hard, 3)
        .await;
    let job = e.job(&runs).await;
    assert_eq!((job.rows_deleted, job.rows_held), (8, 2));
}

/// User 7's erasure is one window of six transactions: sessions, order items, orders, events,
/// reviews, the user. While the first (sessions) is about to commit, another connection places
/// a hold on item 711 by filter: that transaction read the holds before and removes user 7's
/// sessions; every later one keeps item 711, its order 71 and user 7, and removes the rest.
/// PostgreSQL and MariaDB: on SQLite the hold's write would wait for the batch's write lock (one
/// writer), so it lands between transactions, as `a_hold_placed_mid_graph_job_…` shows.
async fn a_hold_committed_between_two_transactions_of_a_window_applies_from_the_next(
    backend: Backend,
) {
    let _scenario = fail::FailScenario::setup();
    let s = shop_with(backend, 30, CHILD_BATCH).await;
    let all = state(&s).await;
    let url = s.test.url.clone();
    let placed_at = s.ts("2026-01-01 00:00:00");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = calls.clone();
    fail::cfg_callback("graph::before_commit", move || {
        if counter.fetch_add(1, Ordering::SeqCst) != 0 {
            return;
        }
        reaper_testkit::exec_from_another_client(
            &url,
            &[format!(
                "INSERT INTO reaper_holds (id, target, held_filter, reason, placed_by, placed_at) \
                 VALUES ('mid', 'order_items', \
                 '{{\"all\":[{{\"column\":\"id\",\"op\":\"eq\",\"value\":711}}]}}', \
                 'case mid', 'legal', {placed_at})"
            )],
        );
    })
    .unwrap();
    let id = s
        .submit(
            job(
                "users",
                serde_json::json!([{"column": "id", "op": "eq", "value": 7}]),
                serde_json::json!({}),
            ),
            1,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    fail::cfg("graph::before_commit", "off").unwrap();
    let mut expected = hanging_off(&BTreeSet::from([7]));
    let kept = BTreeMap::from([
        ("users", ids(&[7])),
        ("orders", ids(&[71])),
        ("order_items", ids(&[711])),
    ]);
    expected = without(&expected, &kept);
    assert_eq!(state(&s).await, without(&all, &expected));
    let summary = s
        .job(&id)
        .await
        .job_result()
        .and_then(|r| r.summary().cloned());
    assert_eq!(
        summary.unwrap().held,
        counts(&[("users", 1), ("orders", 1), ("order_items", 1)])
    );
}

mod between_transactions {
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres() {
        super::a_hold_committed_between_two_transactions_of_a_window_applies_from_the_next(
            reaper_core::sql::Backend::Postgres,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn mariadb() {
        super::a_hold_committed_between_two_transactions_of_a_window_applies_from_the_next(
            reaper_core::sql::Backend::MySql,
        )
        .await;
    }
}

/// Moves the holds table out of reach, then runs `id` once: its batch fails (dead, or retried
/// later) rather than run without the holds.
async fn run_with_holds_unreadable(s: &EngineTest, id: &str) {
    s.test
        .exec("ALTER TABLE reaper_holds RENAME TO reaper_holds_moved")
        .await;
    let outcome = s.run_once(id).await;
    assert!(
        matches!(
            outcome,
            RunOutcome::Dead { .. } | RunOutcome::RetryLater { .. }
        ),
        "{outcome:?}"
    );
}
