//! The engine against real SQLite and PostgreSQL: every deletion test checks the invariants
//! (each matching row deleted once and audited once, rows outside the filter untouched, audit
//! rows = batches, audited counts = rows deleted = the job's counter, no batch over its size).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use reaper_core::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use reaper_core::config::DatabaseConfig;
use reaper_core::job::JobRequest;
use reaper_core::span::Span;
use reaper_core::sql::Backend;
use reaper_core::sql::RowLocking;
use reaper_engine::Database;
use reaper_engine::batch::{self, BatchResult, LeaseHolder};
use reaper_engine::ledger;
use reaper_engine::migration::Migrator;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_engine::schema_check;
use reaper_testkit::TestDatabase;
use sea_orm_migration::MigratorTrait;

fn catalog() -> Catalog {
    Catalog::new([
        Target {
            name: "events".into(),
            schema: None,
            table: "events".into(),
            primary_key: "id".into(),
            key_type: KeyType::Int,
            columns: BTreeMap::from([
                ("tenant_id".into(), ColumnType::Int),
                ("kind".into(), ColumnType::Text),
                ("created_at".into(), ColumnType::Timestamp),
            ]),
            default_mode: Mode::Hard,
            batch_size: 100,
            max_batch_size: 1_000,
            soft_delete_column: Some("deleted_at".into()),
            max_rows: 1_000_000,
            max_attempts: None,
            throttle: Default::default(),
        },
        Target {
            name: "tokens".into(),
            schema: None,
            table: "tokens".into(),
            primary_key: "id".into(),
            key_type: KeyType::Uuid,
            columns: BTreeMap::from([("user_id".into(), ColumnType::Int)]),
            default_mode: Mode::Hard,
            batch_size: 100,
            max_batch_size: 1_000,
            soft_delete_column: None,
            max_rows: 1_000_000,
            max_attempts: None,
            throttle: Default::default(),
        },
    ])
}

fn settings() -> RunSettings {
    RunSettings::for_worker(
        "test-worker".into(),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_millis(10),
        Duration::from_millis(100),
    )
}

struct Setup {
    test: TestDatabase,
    db: Database,
    catalog: Catalog,
}

async fn setup(backend: Backend, events: u32) -> Setup {
    setup_with_lock_timeout(backend, events, Span::from_millis(50)).await
}

async fn setup_with_lock_timeout(backend: Backend, events: u32, lock_timeout: Span) -> Setup {
    let test = TestDatabase::new(backend).await;
    test.seed_events(events).await;
    test.seed_tokens(500).await;
    let db = Database::connect(&DatabaseConfig {
        url: test.url.clone(),
        max_connections: 4,
        statement_timeout: Span::from_secs(30),
        lock_timeout,
    })
    .await
    .unwrap();
    Migrator::up(db.connection(), None).await.unwrap();
    Setup {
        test,
        db,
        catalog: catalog(),
    }
}

impl Setup {
    async fn submit(&self, job: serde_json::Value, max_attempts: u32) -> String {
        let request: JobRequest = serde_json::from_value(job).unwrap();
        ledger::submit(
            &self.db,
            &self.catalog,
            &request,
            max_attempts,
            Utc::now(),
            None,
        )
        .await
        .unwrap()
        .job
        .id
    }

    async fn run_once(&self, id: &str) -> RunOutcome {
        runner::run_job(&self.db, &self.catalog, id, &settings(), &|| false)
            .await
            .unwrap()
            .outcome
    }

    /// Runs until done or dead, as a queue would (continuations and retries at once).
    async fn run_to_end(&self, id: &str) -> RunOutcome {
        for _ in 0..50 {
            match self.run_once(id).await {
                RunOutcome::Continue | RunOutcome::RetryLater { .. } => continue,
                other => return other,
            }
        }
        panic!("job {id} did not finish in 50 runs");
    }

    /// Timestamp literal for the test's own SQL, in the backend's storage form.
    fn ts(&self, iso: &str) -> String {
        match self.test.backend {
            Backend::Postgres => format!("TIMESTAMPTZ '{iso}+00'"),
            Backend::Sqlite => format!("'{iso}'"),
            Backend::MySql => format!("TIMESTAMP '{iso}'"),
        }
    }
}

fn job(target: &str, conditions: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut job = serde_json::Map::new();
    job.insert("target".into(), target.into());
    job.insert(
        "filter".into(),
        serde_json::Value::Object(serde_json::Map::from_iter([("all".to_owned(), conditions)])),
    );
    job.insert("requested_by".into(), "engine-test".into());
    job.insert("reason".into(), "invariants".into());
    if let serde_json::Value::Object(extra) = extra {
        job.extend(extra);
    }
    serde_json::Value::Object(job)
}

reaper_testkit::on_every_backend!(
    stranded_jobs_are_found_on_both_sides_of_each_threshold,
    hard_delete_removes_every_matching_row_exactly_once,
    a_failure_before_commit_changes_nothing_and_the_rerun_is_exactly_once,
    soft_delete_run_twice_changes_nothing_the_second_time,
    dry_run_writes_nothing,
    max_rows_refuses_before_deleting_anything,
    uuid_keys_are_paged_exactly_once,
    a_lost_lease_rolls_the_batch_back,
    a_job_invalid_at_run_time_is_dead_and_deletes_nothing,
    transient_failures_end_dead_after_max_attempts,
    a_repeated_idempotency_key_yields_one_job,
    schema_check_names_missing_tables_and_columns,
    cancel_stops_a_running_job_at_a_batch_boundary,
    cancel_of_a_pending_job_is_immediate_and_deletes_nothing,
    jobs_are_listed_newest_first_by_state_and_target_in_pages,
    the_adaptive_batch_size_grows_when_fast_and_shrinks_when_slow,
    the_rows_per_second_cap_and_the_pause_pace_the_batches,
    stop_at_max_rows_finishes_at_the_cap_and_leaves_the_rest,
    a_paused_job_waits_for_an_explicit_resume_and_finishes_exactly_once,
    jobs_sharing_a_rate_cap_keep_their_leases_through_long_waits,
);

/// A catalog whose `events` target carries `throttle`.
fn throttled(throttle: reaper_core::throttle::Throttle) -> Catalog {
    let mut events = catalog().get("events").unwrap().clone();
    events.max_batch_size = 1_000;
    events.throttle = throttle;
    Catalog::new([events])
}

/// Row counts of a job's audit entries, in batch order.
async fn batch_sizes(s: &Setup, id: &str) -> Vec<i64> {
    s.test
        .strings(&format!(
            "SELECT {} FROM reaper_audit WHERE job_id = '{id}' ORDER BY batch_no",
            s.test.as_text("row_count")
        ))
        .await
        .into_iter()
        .map(|count| count.parse().unwrap())
        .collect()
}

async fn the_adaptive_batch_size_grows_when_fast_and_shrinks_when_slow(backend: Backend) {
    use reaper_core::throttle::{Adaptive, Throttle};
    let mut s = setup(backend, 6_000).await;
    let matching = "tenant_id IN (0, 1, 2, 3)";
    let expected = s.test.ids("events", matching).await;
    // A target no batch can reach (10 s): every full batch grows by half, up to the maximum,
    // from the target's batch size (a job's own batch_size would be a ceiling).
    let mut events = throttled(Throttle {
        adaptive: Some(Adaptive {
            target: Duration::from_secs(10),
            min: 20,
            max: 400,
        }),
        ..Throttle::default()
    })
    .get("events")
    .unwrap()
    .clone();
    events.batch_size = 40;
    s.catalog = Catalog::new([events]);
    let all_tenants =
        serde_json::json!([{"column": "tenant_id", "op": "in", "value": [0, 1, 2, 3]}]);
    let id = s
        .submit(job("events", all_tenants, serde_json::json!({})), 5)
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let sizes = batch_sizes(&s, &id).await;
    assert_eq!(&sizes[..6], &[40, 60, 90, 135, 203, 305], "{sizes:?}");
    assert!(
        sizes[6..sizes.len() - 1].iter().all(|size| *size == 400),
        "{sizes:?}"
    );
    s.test.assert_exactly_once(&id, &expected, 400).await;

    // A target every batch misses (1 µs): each full batch halves, down to the minimum.
    let expected = s.test.ids("events", "tenant_id IN (4, 5, 6, 7)").await;
    s.catalog = throttled(Throttle {
        adaptive: Some(Adaptive {
            target: Duration::from_micros(1),
            min: 20,
            max: 400,
        }),
        ..Throttle::default()
    });
    let other_tenants =
        serde_json::json!([{"column": "tenant_id", "op": "in", "value": [4, 5, 6, 7]}]);
    let id = s
        .submit(
            job(
                "events",
                other_tenants,
                serde_json::json!({"batch_size": 320}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let sizes = batch_sizes(&s, &id).await;
    assert_eq!(&sizes[..5], &[320, 160, 80, 40, 20], "{sizes:?}");
    assert!(
        sizes[5..sizes.len() - 1].iter().all(|size| *size == 20),
        "{sizes:?}"
    );
    s.test.assert_exactly_once(&id, &expected, 320).await;
}

async fn the_rows_per_second_cap_and_the_pause_pace_the_batches(backend: Backend) {
    use reaper_core::throttle::Throttle;
    let mut s = setup(backend, 6_000).await;
    let matching = "tenant_id = 1";
    let expected = s.test.ids("events", matching).await;
    assert!(
        expected.len() >= 500,
        "fixture too small: {}",
        expected.len()
    );
    // 4,000 rows/s in batches of 100: every batch after the first waits ~25 ms.
    s.catalog = throttled(Throttle {
        max_rows_per_second: Some(4_000),
        ..Throttle::default()
    });
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
                serde_json::json!({"batch_size": 100}),
            ),
            5,
        )
        .await;
    let started = std::time::Instant::now();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let floor = Duration::from_secs_f64((expected.len() as f64 - 100.0) / 4_000.0);
    assert!(
        started.elapsed() >= floor,
        "{} rows took {:?}, under the cap's floor {floor:?}",
        expected.len(),
        started.elapsed()
    );
    s.test.assert_exactly_once(&id, &expected, 100).await;

    // A 30 ms pause after each of the full batches.
    let matching = "tenant_id = 2";
    let expected = s.test.ids("events", matching).await;
    s.catalog = throttled(Throttle {
        pause: Duration::from_millis(30),
        ..Throttle::default()
    });
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
                serde_json::json!({"batch_size": 100}),
            ),
            5,
        )
        .await;
    let started = std::time::Instant::now();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let full_batches = (expected.len() / 100) as u32;
    assert!(
        started.elapsed() >= Duration::from_millis(30) * full_batches,
        "{full_batches} pauses of 30 ms, but the job took {:?}",
        started.elapsed()
    );
    s.test.assert_exactly_once(&id, &expected, 100).await;
}

async fn stop_at_max_rows_finishes_at_the_cap_and_leaves_the_rest(backend: Backend) {
    let s = setup(backend, 2_000).await;
    let before = s.test.ids("events", "tenant_id = 3").await;
    assert!(before.len() > 150, "fixture too small: {}", before.len());
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 3}]),
                serde_json::json!({"batch_size": 40, "max_rows": 150, "stop_at_max_rows": true}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!(job.rows_deleted, 150);
    assert!(
        job.result
            .as_deref()
            .unwrap()
            .contains("\"stopped_at_max_rows\":true"),
        "{:?}",
        job.result
    );
    let left = s.test.ids("events", "tenant_id = 3").await;
    assert_eq!(left.len(), before.len() - 150);
    // The lowest keys went first (keyset order), each audited once.
    let deleted: BTreeSet<String> = before.difference(&left).cloned().collect();
    let mut by_key: Vec<i64> = before.iter().map(|key| key.parse().unwrap()).collect();
    by_key.sort_unstable();
    let lowest: BTreeSet<String> = by_key[..150].iter().map(ToString::to_string).collect();
    assert_eq!(deleted, lowest);
    s.test.assert_exactly_once(&id, &deleted, 40).await;
}

async fn a_paused_job_waits_for_an_explicit_resume_and_finishes_exactly_once(backend: Backend) {
    let s = setup(backend, 2_000).await;
    let matching = "tenant_id = 0";
    let expected = s.test.ids("events", matching).await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 0}]),
                serde_json::json!({"batch_size": 50}),
            ),
            5,
        )
        .await;
    let mut foreground = settings();
    foreground.stop_as = runner::StopAs::Paused;
    foreground.claim_from = ledger::ClaimFrom::Resume;
    // Asked to stop once the first batch committed.
    let progress = foreground.progress.clone();
    let stop_after_one = || progress.batches.load(std::sync::atomic::Ordering::Relaxed) >= 1;
    let report = runner::run_job(&s.db, &s.catalog, &id, &foreground, &stop_after_one)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Paused);
    let paused = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!(
        (paused.state.as_str(), paused.rows_deleted, paused.attempts),
        ("paused", 50, 0)
    );
    // Neither a queue worker nor the reconciler takes a paused job.
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    let far = Utc::now() + chrono::Duration::days(1);
    let stranded = ledger::take_stranded(&s.db, far, Duration::ZERO, Duration::ZERO, 10)
        .await
        .unwrap();
    assert!(stranded.iter().all(|job| job.id != id), "{stranded:?}");
    // The explicit resume finishes it from its checkpoint.
    let report = runner::run_job(&s.db, &s.catalog, &id, &foreground, &|| false)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Done);
    s.test.assert_exactly_once(&id, &expected, 50).await;

    // A paused job can be cancelled, and is never run after that.
    let other = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 9}]),
                serde_json::json!({"batch_size": 50}),
            ),
            5,
        )
        .await;
    let progress = foreground.progress.clone();
    let before = progress.batches.load(std::sync::atomic::Ordering::Relaxed);
    let stop_after_one = || progress.batches.load(std::sync::atomic::Ordering::Relaxed) > before;
    let report = runner::run_job(&s.db, &s.catalog, &other, &foreground, &stop_after_one)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::Paused);
    assert!(matches!(
        ledger::request_cancel(&s.db, &other, Utc::now())
            .await
            .unwrap(),
        Some(ledger::CancelOutcome::Cancelled(_))
    ));
    let report = runner::run_job(&s.db, &s.catalog, &other, &foreground, &|| false)
        .await
        .unwrap();
    assert_eq!(report.outcome, RunOutcome::NotClaimed);
    let cancelled = ledger::get(&s.db, &other).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.state.as_str(), cancelled.rows_deleted),
        ("cancelled", 50)
    );
}

async fn jobs_sharing_a_rate_cap_keep_their_leases_through_long_waits(backend: Backend) {
    use reaper_core::throttle::Throttle;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = setup(backend, 1_000).await;
    // Four jobs share 80 rows/s in batches of 50: each waits ~2.5 s between its two batches,
    // longer than its 2 s lease (whole seconds: MySQL stores the lease's expiry in seconds),
    // which the wait must keep alive.
    s.catalog = throttled(Throttle {
        max_rows_per_second: Some(80),
        ..Throttle::default()
    });
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for tenant in 0..4 {
        expected.push(s.test.ids("events", &format!("tenant_id = {tenant}")).await);
        ids.push(
            s.submit(
                job(
                    "events",
                    serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
                    serde_json::json!({"batch_size": 50}),
                ),
                5,
            )
            .await,
        );
    }
    let mut shared = settings();
    shared.lease = Duration::from_secs(2);
    // Another worker tries to take every job over all along: it can only if a lease lapses.
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let thief = {
        let (db, ids, done, progress) = (
            s.db.clone(),
            ids.clone(),
            done.clone(),
            shared.progress.clone(),
        );
        tokio::spawn(async move {
            let mut stolen = Vec::new();
            // Only once every job has been claimed by its run (a pending job is anyone's).
            while progress.batches.load(Ordering::Relaxed) < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while !done.load(Ordering::Relaxed) {
                for id in &ids {
                    let now = Utc::now();
                    let lease = now + chrono::Duration::seconds(60);
                    if let Some(job) = ledger::claim(
                        &db,
                        id,
                        "thief",
                        "thief-token",
                        now,
                        lease,
                        ledger::ClaimFrom::Queue,
                    )
                    .await
                    .unwrap()
                    {
                        stolen.push(job.id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stolen
        })
    };
    let runs = futures::future::join_all(
        ids.iter()
            .map(|id| runner::run_job(&s.db, &s.catalog, id, &shared, &|| false)),
    )
    .await;
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        thief.await.unwrap(),
        Vec::<String>::new(),
        "a lease lapsed during a wait"
    );
    for ((run, id), expected) in runs.into_iter().zip(&ids).zip(&expected) {
        assert_eq!(run.unwrap().outcome, RunOutcome::Done);
        s.test.assert_exactly_once(id, expected, 50).await;
    }
}

async fn hard_delete_removes_every_matching_row_exactly_once(backend: Backend) {
    let s = setup(backend, 5_000).await;
    let matching = format!(
        "tenant_id IN (1, 3) AND created_at < {}",
        s.ts("2025-11-15 00:00:00")
    );
    let expected = s.test.ids("events", &matching).await;
    assert!(
        expected.len() > 300,
        "fixture too small: {}",
        expected.len()
    );
    let untouched = s
        .test
        .checksum("events", &format!("NOT ({matching})"))
        .await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([
                    {"column": "tenant_id", "op": "in", "value": [1, 3]},
                    {"column": "created_at", "op": "lt", "value": "2025-11-15T00:00:00Z"}
                ]),
                serde_json::json!({"batch_size": 97}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert!(
        s.test.ids("events", &matching).await.is_empty(),
        "matching rows remain"
    );
    assert_eq!(
        s.test
            .checksum("events", &format!("NOT ({matching})"))
            .await,
        untouched,
        "rows outside the filter changed"
    );
    s.test.assert_exactly_once(&id, &expected, 97).await;
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.passes, job.locked_rows_skipped),
        (1, false),
        "an uncontended job makes one clean pass"
    );
    assert_eq!(
        s.test
            .int(&format!(
                "SELECT batches FROM reaper_jobs WHERE id = '{id}'"
            ))
            .await,
        expected.len().div_ceil(97) as i64
    );
}

async fn a_failure_before_commit_changes_nothing_and_the_rerun_is_exactly_once(backend: Backend) {
    let scenario = fail::FailScenario::setup();
    let s = setup(backend, 3_000).await;
    let matching = "tenant_id = 4";
    let expected = s.test.ids("events", matching).await;
    let untouched = s
        .test
        .checksum("events", &format!("NOT ({matching})"))
        .await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 4}]),
                serde_json::json!({"batch_size": 50}),
            ),
            5,
        )
        .await;
    // Batches 1–3 commit; batch 4 deletes, audits and advances, then fails before COMMIT.
    fail::cfg("batch::before_commit", "3*off->return").unwrap();
    let outcome = s.run_once(&id).await;
    assert!(
        matches!(&outcome, RunOutcome::RetryLater { error, .. } if error.contains("injected fault")),
        "{outcome:?}"
    );
    let remaining = s.test.ids("events", matching).await;
    assert_eq!(
        remaining.len(),
        expected.len() - 150,
        "exactly three batches committed"
    );
    let accounting = s.test.accounting(&id).await;
    assert_eq!(
        (
            accounting.audit_rows,
            accounting.ledger_batches,
            accounting.ledger_rows
        ),
        (3, 3, 150)
    );
    let checkpoint = s
        .test
        .strings(&format!(
            "SELECT checkpoint FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    let third_batch_last = s
        .test
        .strings(&format!(
            "SELECT last_key FROM reaper_audit WHERE job_id = '{id}' AND batch_no = 3"
        ))
        .await;
    assert_eq!(
        checkpoint, third_batch_last,
        "checkpoint is the last committed batch's"
    );
    let last_error = s
        .test
        .strings(&format!(
            "SELECT last_error FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    assert!(
        last_error[0].contains("injected fault at batch::before_commit"),
        "{last_error:?}"
    );

    fail::cfg("batch::before_commit", "off").unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert!(s.test.ids("events", matching).await.is_empty());
    assert_eq!(
        s.test
            .checksum("events", &format!("NOT ({matching})"))
            .await,
        untouched
    );
    s.test.assert_exactly_once(&id, &expected, 50).await;
    scenario.teardown();
}

async fn soft_delete_run_twice_changes_nothing_the_second_time(backend: Backend) {
    let s = setup(backend, 2_000).await;
    let filter = serde_json::json!([{"column": "kind", "op": "eq", "value": "login"}]);
    let expected = s.test.ids("events", "kind = 'login'").await;
    let outside = s.test.checksum("events", "kind <> 'login'").await;
    let first = s
        .submit(
            job(
                "events",
                filter.clone(),
                serde_json::json!({"mode": "soft", "batch_size": 64}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&first).await, RunOutcome::Done);
    assert_eq!(
        s.test
            .ids("events", "kind = 'login' AND deleted_at IS NOT NULL")
            .await,
        expected,
        "every matching row soft-deleted"
    );
    assert_eq!(
        s.test.int("SELECT count(*) FROM events").await,
        2_000,
        "soft delete keeps rows"
    );
    assert_eq!(s.test.checksum("events", "kind <> 'login'").await, outside);
    s.test.assert_exactly_once(&first, &expected, 64).await;

    let everything = s.test.checksum("events", "1 = 1").await;
    let audit_before = s.test.int("SELECT count(*) FROM reaper_audit").await;
    let second = s
        .submit(
            job(
                "events",
                filter,
                serde_json::json!({"mode": "soft", "batch_size": 64}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&second).await, RunOutcome::Done);
    assert_eq!(
        s.test.checksum("events", "1 = 1").await,
        everything,
        "the second soft delete changed rows"
    );
    assert_eq!(
        s.test.int("SELECT count(*) FROM reaper_audit").await,
        audit_before,
        "the second soft delete wrote audit entries"
    );
    s.test
        .assert_exactly_once(&second, &BTreeSet::new(), 64)
        .await;
}

async fn dry_run_writes_nothing(backend: Backend) {
    let s = setup(backend, 2_000).await;
    let everything = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "ge", "value": 7}]),
                serde_json::json!({"dry_run": true, "batch_size": 150}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert_eq!(s.test.checksum("events", "1 = 1").await, everything);
    assert_eq!(s.test.int("SELECT count(*) FROM reaper_audit").await, 0);
    let result: serde_json::Value = serde_json::from_str(
        &s.test
            .strings(&format!("SELECT result FROM reaper_jobs WHERE id = '{id}'"))
            .await[0],
    )
    .unwrap();
    assert_eq!(result["matching_rows"], 600);
    assert_eq!(result["batches"], 4);
    assert_eq!(
        result["sample_keys"],
        serde_json::json!([7, 8, 9, 17, 18, 19, 27, 28, 29, 37])
    );
    let sql = result["sql"].as_str().unwrap();
    assert!(
        sql.contains("tenant_id") && sql.contains(" >= "),
        "{result}"
    );
}

async fn max_rows_refuses_before_deleting_anything(backend: Backend) {
    let s = setup(backend, 1_000).await;
    let everything = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
                serde_json::json!({"max_rows": 99}),
            ),
            5,
        )
        .await;
    match s.run_to_end(&id).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("more than max_rows (99) rows match")
                && error.contains("nothing was deleted"),
            "{error}"
        ),
        other => panic!("expected dead, got {other:?}"),
    }
    assert_eq!(s.test.checksum("events", "1 = 1").await, everything);
    // Exactly at the cap is allowed.
    let at_cap = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
                serde_json::json!({"max_rows": 100, "batch_size": 30}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&at_cap).await, RunOutcome::Done);
    assert_eq!(
        s.test
            .int("SELECT count(*) FROM events WHERE tenant_id = 2")
            .await,
        0
    );
}

async fn uuid_keys_are_paged_exactly_once(backend: Backend) {
    let s = setup(backend, 10).await;
    let expected = s.test.ids("tokens", "user_id = 2").await;
    let untouched = s.test.checksum("tokens", "user_id <> 2").await;
    let id = s
        .submit(
            job(
                "tokens",
                serde_json::json!([{"column": "user_id", "op": "eq", "value": 2}]),
                serde_json::json!({"batch_size": 7}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert!(s.test.ids("tokens", "user_id = 2").await.is_empty());
    assert_eq!(s.test.checksum("tokens", "user_id <> 2").await, untouched);
    s.test.assert_exactly_once(&id, &expected, 7).await;
}

async fn a_lost_lease_rolls_the_batch_back(backend: Backend) {
    let s = setup(backend, 500).await;
    let everything = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let now = Utc::now();
    ledger::claim(
        &s.db,
        &id,
        "worker-a",
        "token-a",
        now,
        batch::lease_until(now, Duration::from_secs(60)),
        ledger::ClaimFrom::Queue,
    )
    .await
    .unwrap()
    .unwrap();
    // A second claim while the lease is live gets nothing.
    assert!(
        ledger::claim(
            &s.db,
            &id,
            "worker-b",
            "token-b",
            now,
            now,
            ledger::ClaimFrom::Queue
        )
        .await
        .unwrap()
        .is_none()
    );
    let request: JobRequest =
        serde_json::from_str(&ledger::get(&s.db, &id).await.unwrap().unwrap().request).unwrap();
    let validated = reaper_core::validate::validate(&request, &s.catalog, now).unwrap();
    let stale = LeaseHolder {
        job_id: &id,
        token: "token-b",
        lease: Duration::from_secs(60),
    };
    assert_eq!(
        batch::run_batch(&s.db, &validated, None, 100, stale, RowLocking::Direct)
            .await
            .unwrap(),
        BatchResult::LeaseLost
    );
    assert_eq!(
        s.test.checksum("events", "1 = 1").await,
        everything,
        "a batch without the lease changed rows"
    );
    assert_eq!(s.test.int("SELECT count(*) FROM reaper_audit").await, 0);
    let holder = LeaseHolder {
        job_id: &id,
        token: "token-a",
        lease: Duration::from_secs(60),
    };
    assert!(matches!(
        batch::run_batch(&s.db, &validated, None, 100, holder, RowLocking::Direct)
            .await
            .unwrap(),
        BatchResult::Committed { rows: 50, .. }
    ));
}

async fn a_job_invalid_at_run_time_is_dead_and_deletes_nothing(backend: Backend) {
    let mut s = setup(backend, 500).await;
    let everything = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "kind", "op": "eq", "value": "view"}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    // The operator removed `kind` from the filterable columns before the job ran.
    let mut targets: Vec<Target> = s.catalog.targets().cloned().collect();
    targets[0].columns.remove("kind");
    s.catalog = Catalog::new(targets);
    match s.run_to_end(&id).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("filter.all[0].column: `kind` is not a filterable column"),
            "{error}"
        ),
        other => panic!("expected dead, got {other:?}"),
    }
    assert_eq!(s.test.checksum("events", "1 = 1").await, everything);
}

async fn transient_failures_end_dead_after_max_attempts(backend: Backend) {
    let scenario = fail::FailScenario::setup();
    let s = setup(backend, 500).await;
    let everything = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
                serde_json::json!({}),
            ),
            3,
        )
        .await;
    fail::cfg("batch::before_commit", "return").unwrap();
    for attempt in 1..=2 {
        assert!(
            matches!(s.run_once(&id).await, RunOutcome::RetryLater { .. }),
            "attempt {attempt}"
        );
    }
    match s.run_once(&id).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("gave up after 3 attempts; last error: injected fault"),
            "{error}"
        ),
        other => panic!("expected dead, got {other:?}"),
    }
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("dead", 3));
    assert!(job.last_error.unwrap().contains("injected fault"));
    assert_eq!(
        s.run_once(&id).await,
        RunOutcome::NotClaimed,
        "a dead job is never claimed again"
    );
    assert_eq!(s.test.checksum("events", "1 = 1").await, everything);
    scenario.teardown();
}

async fn a_repeated_idempotency_key_yields_one_job(backend: Backend) {
    let s = setup(backend, 10).await;
    let request: JobRequest = serde_json::from_value(job(
        "events",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
        serde_json::json!({"idempotency_key": "erase-1"}),
    ))
    .unwrap();
    let first = ledger::submit(&s.db, &s.catalog, &request, 5, Utc::now(), None)
        .await
        .unwrap();
    let second = ledger::submit(&s.db, &s.catalog, &request, 5, Utc::now(), None)
        .await
        .unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.job.id, second.job.id);
    assert_eq!(s.test.int("SELECT count(*) FROM reaper_jobs").await, 1);
    assert_eq!(first.job.max_attempts, 5, "the worker's default");
    // A target's own max_attempts overrides the worker's.
    let mut catalog_targets: Vec<_> = s
        .catalog
        .names()
        .into_iter()
        .map(|name| s.catalog.get(name).unwrap().clone())
        .collect();
    for target in &mut catalog_targets {
        target.max_attempts = Some(2);
    }
    let strict = Catalog::new(catalog_targets);
    let other: JobRequest = serde_json::from_value(job(
        "events",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
        serde_json::json!({}),
    ))
    .unwrap();
    let submitted = ledger::submit(&s.db, &strict, &other, 5, Utc::now(), None)
        .await
        .unwrap();
    assert_eq!(submitted.job.max_attempts, 2);
}

async fn schema_check_names_missing_tables_and_columns(backend: Backend) {
    let s = setup(backend, 10).await;
    schema_check::check_catalog(&s.db, &s.catalog)
        .await
        .unwrap();
    let mut targets: Vec<Target> = s.catalog.targets().cloned().collect();
    targets[0].columns.insert("colour".into(), ColumnType::Text);
    targets[1].table = "tokenz".into();
    let error = schema_check::check_catalog(&s.db, &Catalog::new(targets))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "targets.events.columns.colour: column `colour` does not exist in table `events`"
        ),
        "{error}"
    );
    assert!(
        error.contains("targets.tokens.table: table `tokenz` does not exist in the database"),
        "{error}"
    );
}

/// PostgreSQL and MariaDB: rows another transaction holds are passed over (`SKIP LOCKED`); the
/// pass is marked, its end finds them, and the job retries until it can take them — never
/// skipping them for good.
async fn rows_locked_by_others_are_deleted_once_released(backend: Backend) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let s = setup(backend, 2_000).await;
    let expected = s.test.ids("events", "tenant_id = 5").await;
    let locker = sea_orm::Database::connect(&s.test.url).await.unwrap();
    let held = locker.begin().await.unwrap();
    held.execute_unprepared("SELECT id FROM events WHERE tenant_id = 5 AND id < 600 FOR UPDATE")
        .await
        .unwrap();
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 5}]),
                serde_json::json!({"batch_size": 40}),
            ),
            5,
        )
        .await;
    match s.run_once(&id).await {
        RunOutcome::RetryLater { error, .. } => assert!(
            error.contains("stayed locked by other transactions through 3 passes"),
            "{error}"
        ),
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(ledger::get(&s.db, &id).await.unwrap().unwrap().passes, 3);
    let remaining = s.test.ids("events", "tenant_id = 5").await;
    let held_rows = s.test.ids("events", "tenant_id = 5 AND id < 600").await;
    assert!(held_rows.is_subset(&remaining), "a locked row was deleted");
    // The locker runs REPEATABLE READ: InnoDB also next-key-locks the first index entry past its
    // range (id 605), which reaper rightly passes over too. PostgreSQL locks exactly the rows.
    let extra = remaining.len() - held_rows.len();
    assert!(
        extra == 0 || (backend == Backend::MySql && extra == 1),
        "{} rows remain beyond the 60 held",
        extra
    );
    held.rollback().await.unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert!(s.test.ids("events", "tenant_id = 5").await.is_empty());
    s.test.assert_exactly_once(&id, &expected, 40).await;
}

#[tokio::test]
async fn postgres_rows_locked_by_others_are_deleted_once_released() {
    rows_locked_by_others_are_deleted_once_released(Backend::Postgres).await;
}

#[tokio::test]
async fn mariadb_rows_locked_by_others_are_deleted_once_released() {
    rows_locked_by_others_are_deleted_once_released(Backend::MySql).await;
}

/// PostgreSQL only: a batch takes no row locks up front, so its DELETE re-checks the filter. A row
/// another transaction changes so that it no longer matches — committing while the batch waits
/// for it — must survive, and the pass must end complete and unmarked.
#[tokio::test]
async fn postgres_rows_changed_to_no_longer_match_while_the_batch_waits_are_kept() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let s = setup_with_lock_timeout(Backend::Postgres, 2_000, Span::from_secs(5)).await;
    let changed = s.test.ids("events", "tenant_id = 5 AND id < 300").await;
    let expected: BTreeSet<String> = s
        .test
        .ids("events", "tenant_id = 5")
        .await
        .difference(&changed)
        .cloned()
        .collect();
    let other = sea_orm::Database::connect(&s.test.url).await.unwrap();
    let moving = other.begin().await.unwrap();
    moving
        .execute_unprepared("UPDATE events SET tenant_id = 99 WHERE tenant_id = 5 AND id < 300")
        .await
        .unwrap();
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 5}]),
                serde_json::json!({"batch_size": 40}),
            ),
            5,
        )
        .await;
    let committer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        moving.commit().await.unwrap();
    });
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    committer.await.unwrap();
    assert_eq!(
        s.test.ids("events", "tenant_id = 99").await,
        changed,
        "rows that stopped matching were deleted"
    );
    assert!(s.test.ids("events", "tenant_id = 5").await.is_empty());
    s.test.assert_exactly_once(&id, &expected, 40).await;
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.passes, job.locked_rows_skipped),
        (1, false),
        "waiting within lock_timeout needs no second pass"
    );
}

/// MariaDB: a batch deletes its locked key window as one primary-key range. A matching row
/// inserted into that window while the batch runs (READ COMMITTED takes no gap locks) must not be
/// deleted unaudited: the batch notices, rolls back, and reruns by key, auditing the new row.
#[tokio::test]
async fn mariadb_a_row_inserted_into_the_locked_window_is_never_deleted_unaudited() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let scenario = fail::FailScenario::setup();
    let s = setup(Backend::MySql, 1_000).await;
    s.test.exec("DELETE FROM events WHERE id = 13").await;
    let mut expected = s.test.ids("events", "tenant_id = 3").await;
    expected.insert("13".into());
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 3}]),
                serde_json::json!({"batch_size": 50}),
            ),
            5,
        )
        .await;
    let url = s.test.url.clone();
    let inserted = Arc::new(AtomicBool::new(false));
    let once = inserted.clone();
    fail::cfg_callback("batch::window_locked", move || {
        if once.swap(true, Ordering::SeqCst) {
            return;
        }
        let url = url.clone();
        // The batch is mid-transaction on the runtime's threads; the insert gets its own.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                use sea_orm::ConnectionTrait;
                let writer = sea_orm::Database::connect(&url).await.unwrap();
                writer
                    .execute_unprepared("INSERT INTO events (id, tenant_id, kind, created_at, payload) VALUES (13, 3, 'view', '2025-12-01', 'late')")
                    .await
                    .unwrap();
            });
        })
        .join()
        .unwrap();
    })
    .unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert!(inserted.load(Ordering::SeqCst), "the fault point never ran");
    assert!(s.test.ids("events", "tenant_id = 3").await.is_empty());
    s.test.assert_exactly_once(&id, &expected, 50).await;
    // The range delete saw one row too many, rolled back, and the rerun by key re-selected the
    // window, new row included: one pass, marked by the rerun.
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!((job.passes, job.locked_rows_skipped), (1, true));
    scenario.teardown();
}

/// SQLite compares timestamps as text: a column in another format is refused at start-up, with
/// its key and the offending value, before any job could match the wrong rows.
#[tokio::test]
async fn sqlite_timestamps_in_another_format_are_refused_at_start_up() {
    let s = setup(Backend::Sqlite, 10).await;
    schema_check::check_catalog(&s.db, &s.catalog)
        .await
        .unwrap();
    s.test
        .exec("UPDATE events SET created_at = '2025-12-01T10:00:00Z' WHERE id = 7")
        .await;
    let error = schema_check::check_catalog(&s.db, &s.catalog)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("targets.events.columns.created_at: SQLite timestamps must be UTC text like `2026-01-31 08:00:00`")
            && error.contains("found `2025-12-01T10:00:00Z`"),
        "{error}"
    );
}

async fn stranded_jobs_are_found_on_both_sides_of_each_threshold(backend: Backend) {
    let s = setup(backend, 10).await;
    let quiet = Duration::from_secs(60);
    let pending = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let running = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let now = Utc::now();
    let lease = Duration::from_secs(600);
    ledger::claim(
        &s.db,
        &running,
        "w",
        "t",
        now,
        now + chrono::Duration::seconds(600),
        ledger::ClaimFrom::Queue,
    )
    .await
    .unwrap()
    .unwrap();
    let ids = |jobs: Vec<ledger::JobRecord>| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>();
    // Just enqueued: its message is in the queue; the live lease is respected.
    assert!(
        ids(
            ledger::take_stranded(&s.db, now + chrono::Duration::seconds(59), quiet, lease, 10)
                .await
                .unwrap()
        )
        .is_empty()
    );
    // Untouched past `quiet`: the pending job is taken, once; the lease is still live.
    assert_eq!(
        ids(ledger::take_stranded(
            &s.db,
            now + chrono::Duration::seconds(120),
            quiet,
            lease,
            10
        )
        .await
        .unwrap()),
        vec![pending.clone()]
    );
    assert!(
        ids(ledger::take_stranded(
            &s.db,
            now + chrono::Duration::seconds(121),
            quiet,
            lease,
            10
        )
        .await
        .unwrap())
        .is_empty()
    );
    // The worker died: just past its lease, the running job is taken too (and the pending one
    // again, untouched for `quiet` since it was last taken).
    assert_eq!(
        ids(ledger::take_stranded(
            &s.db,
            now + chrono::Duration::seconds(601),
            quiet,
            lease,
            10
        )
        .await
        .unwrap()),
        vec![pending, running]
    );
    assert!(
        ids(ledger::take_stranded(
            &s.db,
            now + chrono::Duration::seconds(602),
            quiet,
            lease,
            10
        )
        .await
        .unwrap())
        .is_empty()
    );
}

async fn cancel_stops_a_running_job_at_a_batch_boundary(backend: Backend) {
    let _scenario = fail::FailScenario::setup();
    let s = setup(backend, 3_000).await;
    // Each of the 300 batches takes at least 5 ms, so the request lands long before the end.
    fail::cfg("batch::before_commit", "sleep(5)").unwrap();
    let matching = "tenant_id IN (1, 2, 3)";
    let before = s.test.ids("events", matching).await;
    let untouched = s
        .test
        .checksum("events", "tenant_id NOT IN (1, 2, 3)")
        .await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "in", "value": [1, 2, 3]}]),
                serde_json::json!({"batch_size": 3}),
            ),
            5,
        )
        .await;
    let canceller = async {
        loop {
            let batches = s
                .test
                .int(&format!(
                    "SELECT batches FROM reaper_jobs WHERE id = '{id}'"
                ))
                .await;
            if batches >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ledger::request_cancel(&s.db, &id, Utc::now())
            .await
            .unwrap()
    };
    let run_settings = settings();
    let (report, cancel) = tokio::join!(
        runner::run_job(&s.db, &s.catalog, &id, &run_settings, &|| false),
        canceller
    );
    // The worker may record `cancelled` before the request reads the job back.
    assert!(
        matches!(
            cancel,
            Some(ledger::CancelOutcome::Stopping(_) | ledger::CancelOutcome::Cancelled(_))
        ),
        "{cancel:?}"
    );
    assert_eq!(report.unwrap().outcome, RunOutcome::Cancelled);
    let job = ledger::get(&s.db, &id).await.unwrap().unwrap();
    assert_eq!(job.state, "cancelled");
    assert!(job.finished_at.is_some() && job.lease_owner.is_none());
    let after = s.test.ids("events", matching).await;
    let deleted: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert!(
        deleted.len() >= 6 && !after.is_empty(),
        "cancel should stop mid-job: {} deleted, {} left",
        deleted.len(),
        after.len()
    );
    s.test.assert_exactly_once(&id, &deleted, 3).await;
    assert_eq!(
        s.test
            .checksum("events", "tenant_id NOT IN (1, 2, 3)")
            .await,
        untouched
    );
    // Cancelled is final: another run claims nothing.
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    assert!(matches!(
        ledger::request_cancel(&s.db, &id, Utc::now())
            .await
            .unwrap(),
        Some(ledger::CancelOutcome::Finished(_))
    ));
}

async fn cancel_of_a_pending_job_is_immediate_and_deletes_nothing(backend: Backend) {
    let s = setup(backend, 200).await;
    let untouched = s.test.checksum("events", "1 = 1").await;
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 1}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let outcome = ledger::request_cancel(&s.db, &id, Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Some(ledger::CancelOutcome::Cancelled(job)) if job.state == "cancelled"),
        "{outcome:?}"
    );
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    assert_eq!(s.test.checksum("events", "1 = 1").await, untouched);
    assert_eq!(
        ledger::request_cancel(&s.db, "no-such-job", Utc::now())
            .await
            .unwrap(),
        None
    );
    // A running job whose worker died with a cancel request pending ends cancelled when it is
    // next claimed, without another batch.
    let id = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 2}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let now = Utc::now();
    ledger::claim(
        &s.db,
        &id,
        "dead-worker",
        "tok",
        now,
        now,
        ledger::ClaimFrom::Queue,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(
        ledger::request_cancel(&s.db, &id, now).await.unwrap(),
        Some(ledger::CancelOutcome::Stopping(_))
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.run_once(&id).await, RunOutcome::Cancelled);
    assert_eq!(s.test.checksum("events", "1 = 1").await, untouched);
}

async fn jobs_are_listed_newest_first_by_state_and_target_in_pages(backend: Backend) {
    let s = setup(backend, 10).await;
    let mut ids = Vec::new();
    for tenant in 0..5 {
        ids.push(
            s.submit(
                job(
                    "events",
                    serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
                    serde_json::json!({}),
                ),
                5,
            )
            .await,
        );
    }
    assert_eq!(s.run_to_end(&ids[0]).await, RunOutcome::Done);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let page = ledger::list(&s.db, None, None, None, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        newest_first[..3]
    );
    let next = ledger::list(&s.db, None, None, Some(&page[2].id), 3)
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        newest_first[3..]
    );
    let pending = ledger::list(&s.db, Some("pending"), Some("events"), None, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 4);
    assert!(
        ledger::list(&s.db, None, Some("tokens"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let counts = ledger::unfinished_counts(&s.db).await.unwrap();
    assert_eq!((counts.pending, counts.running, counts.paused), (4, 0, 0));
}
