//! The engine against real SQLite, PostgreSQL and MariaDB. Every test that deletes takes a
//! snapshot of the table before the run and proves the invariants after it
//! (`reaper_testkit::TableSnapshot`): exactly the expected rows removed, every other row
//! unchanged, each removed row audited exactly once, each audit entry consistent, batch numbers
//! contiguous, ledger counters equal to the audit's sums. Runs that should not fail are driven
//! with no retry allowed, and their attempts and last error are checked.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use reaper_core::catalog::{Catalog, ColumnType, Target};
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::JobState;
use reaper_core::span::Span;
use reaper_core::sql::Backend;
use reaper_core::sql::RowLocking;
use reaper_engine::batch::{self, BatchResult, LeaseHolder};
use reaper_engine::ledger;
use reaper_engine::runner::{self, RunOutcome};
use reaper_engine::schema_check;
use reaper_testkit::Removal;
use reaper_testkit::engine::{EngineTest as Setup, erase_tenant, events_target, job, settings};

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
    rows_growing_past_max_rows_while_the_job_runs_never_exceed_the_cap,
    a_paused_job_waits_for_an_explicit_resume_and_finishes_exactly_once,
    jobs_sharing_a_rate_cap_keep_their_leases_through_long_waits,
);

/// A catalog whose `events` target carries `throttle`.
fn throttled(throttle: reaper_core::throttle::Throttle) -> Catalog {
    Catalog::new([Target {
        throttle,
        ..events_target()
    }])
}

/// Row counts of a job's audit entries, in batch order.
async fn batch_sizes(s: &Setup, id: &str) -> Vec<i64> {
    s.test
        .audit_of(id)
        .await
        .iter()
        .map(|entry| entry.row_count)
        .collect()
}

/// How an adaptive run's batch size is set.
#[derive(Clone, Copy)]
enum Size {
    /// The target's batch size: where adaptive sizing starts, free to grow to its maximum.
    Target(u32),
    /// The job's own batch size: where it starts, and a ceiling it never grows past.
    Job(u32),
}

/// Runs a job on `tenants` sized by `size`, with an adaptive batch size aiming at `target`
/// (between 20 and 400 rows), proves the invariants, and returns its batch sizes.
async fn adaptive_run(s: &mut Setup, target: Duration, tenants: [i64; 4], size: Size) -> Vec<i64> {
    use reaper_core::throttle::{Adaptive, Throttle};
    let list = tenants.map(|tenant| tenant.to_string()).join(", ");
    let expected = s
        .test
        .ids("events", &format!("tenant_id IN ({list})"))
        .await;
    let throttle = Throttle {
        adaptive: Some(Adaptive {
            target,
            min: 20,
            max: 400,
        }),
        ..Throttle::default()
    };
    let (target_size, options) = match size {
        Size::Target(rows) => (rows, serde_json::json!({})),
        Size::Job(rows) => (400, serde_json::json!({"batch_size": rows})),
    };
    s.catalog = Catalog::new([Target {
        throttle,
        batch_size: target_size,
        ..events_target()
    }]);
    let before = s.snapshot().await;
    let filter = serde_json::json!([{"column": "tenant_id", "op": "in", "value": tenants}]);
    let id = s.submit(job("events", filter, options), 5).await;
    s.run_and_check(&id, &before, &expected, Removal::Hard, 400)
        .await;
    batch_sizes(s, &id).await
}

async fn the_adaptive_batch_size_grows_when_fast_and_shrinks_when_slow(backend: Backend) {
    let mut s = Setup::new(backend, 6_000).await;
    // A target no batch can reach (10 s): every full batch grows by half from the target's
    // batch size, up to the maximum.
    let sizes = adaptive_run(
        &mut s,
        Duration::from_secs(10),
        [0, 1, 2, 3],
        Size::Target(40),
    )
    .await;
    assert_eq!(&sizes[..6], &[40, 60, 90, 135, 203, 305], "{sizes:?}");
    assert!(
        sizes[6..sizes.len() - 1].iter().all(|size| *size == 400),
        "{sizes:?}"
    );
    // A target every batch misses (1 µs): each full batch halves, down to the minimum.
    let sizes = adaptive_run(
        &mut s,
        Duration::from_micros(1),
        [4, 5, 6, 7],
        Size::Job(320),
    )
    .await;
    assert_eq!(&sizes[..5], &[320, 160, 80, 40, 20], "{sizes:?}");
    assert!(
        sizes[5..sizes.len() - 1].iter().all(|size| *size == 20),
        "{sizes:?}"
    );
}

/// Seconds between consecutive batches of one job, from their audit entries, with the rows of
/// the earlier batch.
async fn gaps(s: &Setup, id: &str) -> Vec<(f64, i64)> {
    let entries = s.test.audit_of(id).await;
    entries
        .windows(2)
        .map(|pair| {
            let gap = (pair[1].created_at - pair[0].created_at).as_seconds_f64();
            (gap, pair[0].row_count)
        })
        .collect()
}

/// Erases `tenant` (600 rows, exactly `expected`) in batches of 50 with `throttle` on the
/// target, checking the invariants; the gaps between its 12 batches.
async fn erase_throttled(
    s: &mut Setup,
    tenant: i64,
    expected: &BTreeSet<String>,
    throttle: reaper_core::throttle::Throttle,
) -> Vec<(f64, i64)> {
    s.catalog = throttled(throttle);
    let before = s.snapshot().await;
    let id = s
        .submit(
            erase_tenant(tenant, serde_json::json!({"batch_size": 50})),
            5,
        )
        .await;
    s.run_and_check(&id, &before, expected, Removal::Hard, 50)
        .await;
    let gaps = gaps(s, &id).await;
    assert_eq!(gaps.len(), 11, "{gaps:?}");
    gaps
}

/// How precisely the audit records when a batch started: MariaDB's `TIMESTAMP` keeps whole
/// seconds; the others microseconds (5 ms allowed for the two clocks' readings).
fn audit_resolution(backend: Backend) -> f64 {
    match backend {
        Backend::MySql => 1.0,
        Backend::Postgres | Backend::Sqlite => 0.005,
    }
}

async fn the_rows_per_second_cap_and_the_pause_pace_the_batches(backend: Backend) {
    use reaper_core::throttle::Throttle;
    let mut s = Setup::new(backend, 6_000).await;
    let resolution = audit_resolution(backend);
    let expected = s.test.ids("events", "tenant_id = 1").await;
    assert_eq!(expected.len(), 600);
    // 250 rows/s in batches of 50: each batch books 200 ms, far longer than a batch of 50 rows
    // takes even on a loaded machine, so an unthrottled run cannot pass.
    let rate = 250.0;
    let capped = erase_throttled(
        &mut s,
        1,
        &expected,
        Throttle {
            max_rows_per_second: Some(250),
            ..Throttle::default()
        },
    )
    .await;
    // Lower bound, from the commits themselves (the audit time is the batch's start): in any
    // stretch of batches, the rows before the last one took at least rows / rate — less how
    // much a booking's reply can vary in latency (the slot is timed from the reply; a late
    // start pushes the shared line, so the difference never accumulates).
    let resolution = resolution + 0.015;
    for first in 0..capped.len() {
        let (mut span, mut rows) = (0.0, 0);
        for (gap, batch_rows) in &capped[first..] {
            span += gap;
            rows += batch_rows;
            assert!(
                rows as f64 <= rate * (span + resolution),
                "{rows} rows in {span:.3} s, over the cap of {rate} rows/s: {capped:?}"
            );
        }
    }
    // Upper bound: the cap is all that slows the job (the whole run within 2× its share + 1 s).
    let span: f64 = capped.iter().map(|(gap, _)| gap).sum();
    let share: f64 = capped.iter().map(|(_, rows)| *rows as f64 / rate).sum();
    assert!(
        span <= share * 2.0 + 1.0,
        "{span:.3} s for a share of {share:.3} s: the throttle waits too long: {capped:?}"
    );

    // A pause after each batch (150 ms; 300 ms on MariaDB, whose audit times are whole seconds,
    // so that a pause cut in half shows even there): each batch starts at least a pause after
    // the previous one, and not much more.
    let pause = if backend == Backend::MySql {
        0.300
    } else {
        0.150
    };
    let expected = s.test.ids("events", "tenant_id = 2").await;
    let paused = erase_throttled(
        &mut s,
        2,
        &expected,
        Throttle {
            pause: Duration::from_secs_f64(pause),
            ..Throttle::default()
        },
    )
    .await;
    for (gap, _) in &paused {
        assert!(
            *gap >= pause - resolution,
            "a batch started {gap:.3} s after the previous one, within the {pause} s pause: {paused:?}"
        );
    }
    let span: f64 = paused.iter().map(|(gap, _)| gap).sum();
    let pauses = pause * paused.len() as f64;
    assert!(
        span >= pauses - resolution && span <= pauses * 2.0 + 1.0,
        "{} pauses of {pause} s took {span:.3} s: {paused:?}",
        paused.len()
    );
}

async fn stop_at_max_rows_finishes_at_the_cap_and_leaves_the_rest(backend: Backend) {
    let s = Setup::new(backend, 2_000).await;
    let matching = s.test.ids("events", "tenant_id = 3").await;
    assert!(
        matching.len() > 150,
        "fixture too small: {}",
        matching.len()
    );
    let before = s.snapshot().await;
    let id = s
        .submit(
            erase_tenant(
                3,
                serde_json::json!({"batch_size": 40, "max_rows": 150, "stop_at_max_rows": true}),
            ),
            5,
        )
        .await;
    // The lowest keys went first (keyset order), each audited once.
    let mut by_key: Vec<i64> = matching.iter().map(|key| key.parse().unwrap()).collect();
    by_key.sort_unstable();
    let lowest: BTreeSet<String> = by_key[..150].iter().map(ToString::to_string).collect();
    s.run_and_check(&id, &before, &lowest, Removal::Hard, 40)
        .await;
    let job = s.job(&id).await;
    assert_eq!(job.rows_deleted, 150);
    assert!(
        job.result
            .as_deref()
            .unwrap()
            .contains("\"stopped_at_max_rows\":true"),
        "{:?}",
        job.result
    );
}

/// Rows that start matching while a job runs (changed to match, ahead of its checkpoint) grow
/// the match past `max_rows`: the job never deletes past its cap, and it is refused (dead, with
/// its reason) rather than ending `done` as if nothing were left.
async fn rows_growing_past_max_rows_while_the_job_runs_never_exceed_the_cap(backend: Backend) {
    let s = Setup::new(backend, 2_000).await;
    let matching = s.test.ids("events", "tenant_id = 4").await;
    assert_eq!(matching.len(), 200);
    // Within the cap when the job starts (200 ≤ 250) …
    let id = s
        .submit(
            erase_tenant(4, serde_json::json!({"batch_size": 50, "max_rows": 250})),
            5,
        )
        .await;
    let first = settings();
    let progress = first.progress.clone();
    let after_one_batch = || progress.batches.load(std::sync::atomic::Ordering::Relaxed) >= 1;
    assert_eq!(
        s.run_with(&id, &first, &after_one_batch).await,
        RunOutcome::Continue
    );
    assert_eq!(s.job(&id).await.rows_deleted, 50);
    // … then 100 more rows start matching, ahead of its checkpoint: 150 + 100 left, 50 over.
    s.test
        .exec("UPDATE events SET tenant_id = 4 WHERE tenant_id = 5 AND id > 1000")
        .await;
    let now_matching = s.test.ids("events", "tenant_id = 4").await;
    assert_eq!(now_matching.len(), 250);
    let before = s.snapshot().await;
    match s.run_to_end(&id).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("stopped at max_rows (250): 250 rows deleted and more rows still match"),
            "{error}"
        ),
        other => panic!("expected the job refused at its cap, got {other:?}"),
    }
    let checked = before
        .assert_removed_within(&s.test, &now_matching, Removal::Hard, 50)
        .await;
    assert_eq!(
        checked.removed.len(),
        200,
        "deleted up to the cap, not past it"
    );
    let job = s.job(&id).await;
    assert_eq!((job.rows_deleted, job.batches), (250, 5));
}

async fn a_paused_job_waits_for_an_explicit_resume_and_finishes_exactly_once(backend: Backend) {
    let s = Setup::new(backend, 2_000).await;
    let expected = s.test.ids("events", "tenant_id = 0").await;
    let before = s.snapshot().await;
    let id = s
        .submit(erase_tenant(0, serde_json::json!({"batch_size": 50})), 5)
        .await;
    let mut foreground = settings();
    foreground.stop_as = runner::StopAs::Paused;
    foreground.claim_from = ledger::ClaimFrom::Resume;
    // Asked to stop once the first batch committed.
    let progress = foreground.progress.clone();
    let stop_after_one = || progress.batches.load(std::sync::atomic::Ordering::Relaxed) >= 1;
    assert_eq!(
        s.run_with(&id, &foreground, &stop_after_one).await,
        RunOutcome::Paused
    );
    let paused = s.job(&id).await;
    assert_eq!(
        (paused.state, paused.rows_deleted, paused.attempts),
        (JobState::Paused, 50, 0)
    );
    // Neither a queue worker nor the reconciler takes a paused job.
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    let far = Utc::now() + chrono::Duration::days(1);
    let stranded = ledger::take_stranded(&s.db, far, Duration::ZERO, Duration::ZERO, 10)
        .await
        .unwrap();
    assert!(stranded.iter().all(|job| job.id != id), "{stranded:?}");
    // The explicit resume finishes it from its checkpoint.
    assert_eq!(
        s.run_with(&id, &foreground, &|| false).await,
        RunOutcome::Done
    );
    s.assert_clean(&id, JobState::Done, 1).await;
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 50)
        .await;

    // A paused job can be cancelled, and is never run after that.
    let matching = s.test.ids("events", "tenant_id = 9").await;
    let before = s.snapshot().await;
    let other = s
        .submit(erase_tenant(9, serde_json::json!({"batch_size": 50})), 5)
        .await;
    let progress = foreground.progress.clone();
    let batches = progress.batches.load(std::sync::atomic::Ordering::Relaxed);
    let stop_after_one = || progress.batches.load(std::sync::atomic::Ordering::Relaxed) > batches;
    assert_eq!(
        s.run_with(&other, &foreground, &stop_after_one).await,
        RunOutcome::Paused
    );
    assert!(matches!(
        ledger::request_cancel(&s.db, &other, Utc::now())
            .await
            .unwrap(),
        Some(ledger::CancelOutcome::Cancelled(_))
    ));
    assert_eq!(
        s.run_with(&other, &foreground, &|| false).await,
        RunOutcome::NotClaimed
    );
    let cancelled = s.job(&other).await;
    assert_eq!(
        (cancelled.state, cancelled.rows_deleted),
        (JobState::Cancelled, 50)
    );
    let checked = before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 50)
        .await;
    assert_eq!(checked.removed.len(), 50);
}

async fn jobs_sharing_a_rate_cap_keep_their_leases_through_long_waits(backend: Backend) {
    use reaper_core::throttle::Throttle;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = Setup::new(backend, 1_000).await;
    s.catalog = throttled(Throttle {
        max_rows_per_second: Some(120),
        ..Throttle::default()
    });
    let before = s.snapshot().await;
    let mut ids = Vec::new();
    let mut expected = BTreeSet::new();
    for tenant in 0..4 {
        expected.extend(s.test.ids("events", &format!("tenant_id = {tenant}")).await);
        ids.push(
            s.submit(
                erase_tenant(tenant, serde_json::json!({"batch_size": 150})),
                5,
            )
            .await,
        );
    }
    let mut shared = settings();
    shared.lease = Duration::from_secs(2);
    // Other jobs have just booked 3.2 s of the target's shared budget (384 rows at 120
    // rows/s): each job, once claimed, waits about that long before its batch, longer than its
    // 2 s lease (whole seconds: MySQL stores the lease's expiry in seconds), which the wait
    // must keep alive.
    shared.pacer.book(&s.db, "events", 384, 120).await.unwrap();
    // Another worker tries to take every job over all along: it can only if a lease lapses.
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let thief = {
        let (test, ids, done) = (s.test.url.clone(), ids.clone(), done.clone());
        let db = s.db.clone();
        tokio::spawn(async move {
            let _ = test;
            let mut stolen = Vec::new();
            // Only once every job has been claimed by its run (a pending job is anyone's).
            let started = std::time::Instant::now();
            loop {
                let mut running = 0;
                for id in &ids {
                    let job = ledger::get(&db, id).await.unwrap().unwrap();
                    running += usize::from(job.started_at.is_some());
                }
                if running == ids.len() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the jobs were never claimed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while !done.load(Ordering::Relaxed) {
                for id in &ids {
                    let claimed = reaper_testkit::engine::claim(
                        &db,
                        id,
                        "thief",
                        "thief-token",
                        chrono::Duration::seconds(60),
                    )
                    .await;
                    if let Some(job) = claimed {
                        stolen.push(job.id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stolen
        })
    };
    let runs =
        futures::future::join_all(ids.iter().map(|id| s.run_with(id, &shared, &|| false))).await;
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        thief.await.unwrap(),
        Vec::<String>::new(),
        "a lease lapsed during a wait"
    );
    for (outcome, id) in runs.into_iter().zip(&ids) {
        assert_eq!(outcome, RunOutcome::Done);
        s.assert_clean(id, JobState::Done, 1).await;
    }
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 100)
        .await;
    // The waits really outlasted the lease: from each claim to its batch, more than 2 s
    // (MariaDB's whole seconds: a measured 3 s means more than 2 s).
    let margin = if backend == Backend::MySql { 0.5 } else { 0.0 };
    for id in &ids {
        let claimed = s.job(id).await.started_at.unwrap();
        let batch = s.test.audit_of(id).await[0].created_at;
        let waited = (batch - claimed).as_seconds_f64();
        assert!(
            waited > shared.lease.as_secs_f64() + margin,
            "job {id} waited {waited:.3} s for its batch, within its {:?} lease",
            shared.lease
        );
    }
}

async fn hard_delete_removes_every_matching_row_exactly_once(backend: Backend) {
    let s = Setup::new(backend, 5_000).await;
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
    let before = s.snapshot().await;
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
    s.run_and_check(&id, &before, &expected, Removal::Hard, 97)
        .await;
    let job = s.job(&id).await;
    assert_eq!(
        (job.passes, job.locked_rows_skipped),
        (1, false),
        "an uncontended job makes one clean pass"
    );
    assert_eq!(job.batches, expected.len().div_ceil(97) as i64);
}

async fn a_failure_before_commit_changes_nothing_and_the_rerun_is_exactly_once(backend: Backend) {
    let scenario = fail::FailScenario::setup();
    let s = Setup::new(backend, 3_000).await;
    let expected = s.test.ids("events", "tenant_id = 4").await;
    let before = s.snapshot().await;
    let id = s
        .submit(erase_tenant(4, serde_json::json!({"batch_size": 50})), 5)
        .await;
    // Batches 1–3 commit; batch 4 deletes, audits and advances, then fails before COMMIT.
    fail::cfg("batch::before_commit", "3*off->return").unwrap();
    let outcome = s.run_once(&id).await;
    assert!(
        matches!(&outcome, RunOutcome::RetryLater { error, .. } if error.contains("injected fault")),
        "{outcome:?}"
    );
    // Exactly three batches committed: what is gone is what they audited, nothing more.
    let checked = before
        .assert_removed_within(&s.test, &expected, Removal::Hard, 50)
        .await;
    assert_eq!(
        checked.removed.len(),
        150,
        "exactly three batches committed"
    );
    let job = s.job(&id).await;
    assert_eq!((job.batches, job.rows_deleted, job.attempts), (3, 150, 1));
    assert_eq!(
        job.checkpoint.as_deref(),
        Some(checked.entries[2].last_key.as_str()),
        "checkpoint is the last committed batch's"
    );
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("injected fault at batch::before_commit"),
        "{:?}",
        job.last_error
    );

    fail::cfg("batch::before_commit", "off").unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    // One failed attempt, one that finished.
    assert_eq!(s.state(&id).await.1, 2);
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 50)
        .await;
    scenario.teardown();
}

async fn soft_delete_run_twice_changes_nothing_the_second_time(backend: Backend) {
    let s = Setup::new(backend, 2_000).await;
    let filter = serde_json::json!([{"column": "kind", "op": "eq", "value": "login"}]);
    let expected = s.test.ids("events", "kind = 'login'").await;
    let before = s.snapshot().await;
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
    s.run_and_check(&first, &before, &expected, Removal::Soft, 64)
        .await;
    assert_eq!(
        s.test.int("SELECT count(*) FROM events").await,
        2_000,
        "soft delete keeps rows"
    );

    // The second run finds nothing left to mark: no row changes, no audit entry.
    let before = s.snapshot().await;
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
    s.assert_clean(&second, JobState::Done, 1).await;
    before.assert_untouched(&s.test).await;
    assert_eq!(
        (
            s.job(&second).await.rows_deleted,
            s.job(&second).await.batches
        ),
        (0, 0)
    );
}

async fn dry_run_writes_nothing(backend: Backend) {
    let s = Setup::new(backend, 2_000).await;
    let before = s.snapshot().await;
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
    s.assert_clean(&id, JobState::Done, 1).await;
    before.assert_untouched(&s.test).await;
    assert_eq!(s.test.int("SELECT count(*) FROM reaper_audit").await, 0);
    let result: serde_json::Value =
        serde_json::from_str(s.job(&id).await.result.as_deref().unwrap()).unwrap();
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
    let s = Setup::new(backend, 1_000).await;
    let before = s.snapshot().await;
    let id = s
        .submit(erase_tenant(2, serde_json::json!({"max_rows": 99})), 5)
        .await;
    match s.run_to_end(&id).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("more than max_rows (99) rows match")
                && error.contains("nothing was deleted"),
            "{error}"
        ),
        other => panic!("expected dead, got {other:?}"),
    }
    before.assert_untouched(&s.test).await;
    // Exactly at the cap is allowed.
    let expected = s.test.ids("events", "tenant_id = 2").await;
    assert_eq!(expected.len(), 100);
    let at_cap = s
        .submit(
            erase_tenant(2, serde_json::json!({"max_rows": 100, "batch_size": 30})),
            5,
        )
        .await;
    s.run_and_check(&at_cap, &before, &expected, Removal::Hard, 30)
        .await;
}

async fn uuid_keys_are_paged_exactly_once(backend: Backend) {
    let s = Setup::new(backend, 10).await;
    let expected = s.test.ids("tokens", "user_id = 2").await;
    let before = s.test.snapshot_tokens().await;
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
    s.run_and_check(&id, &before, &expected, Removal::Hard, 7)
        .await;
}

async fn a_lost_lease_rolls_the_batch_back(backend: Backend) {
    let s = Setup::new(backend, 500).await;
    let matching = s.test.ids("events", "tenant_id = 1").await;
    let before = s.snapshot().await;
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    s.claim(&id, "worker-a", "token-a", chrono::Duration::seconds(60))
        .await
        .unwrap();
    // A second claim while the lease is live gets nothing.
    assert!(
        s.claim(&id, "worker-b", "token-b", chrono::Duration::zero())
            .await
            .is_none()
    );
    let request: JobRequest = serde_json::from_str(&s.job(&id).await.request).unwrap();
    let validated = reaper_core::validate::validate(&request, &s.catalog, Utc::now()).unwrap();
    let stale = LeaseHolder {
        job_id: &id,
        token: "token-b",
        lease: Duration::from_secs(60),
    };
    assert_eq!(
        batch::run_batch(&s.db, &validated, None, 100, stale, RowLocking::Direct)
            .await
            .unwrap(),
        BatchResult::Refused
    );
    before.assert_untouched(&s.test).await;
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
    let checked = before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 100)
        .await;
    assert_eq!(checked.removed.len(), 50, "the lease holder's batch");
}

async fn a_job_invalid_at_run_time_is_dead_and_deletes_nothing(backend: Backend) {
    let mut s = Setup::new(backend, 500).await;
    let before = s.snapshot().await;
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
    before.assert_untouched(&s.test).await;
}

async fn transient_failures_end_dead_after_max_attempts(backend: Backend) {
    let scenario = fail::FailScenario::setup();
    let s = Setup::new(backend, 500).await;
    let before = s.snapshot().await;
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 3).await;
    fail::cfg("batch::before_commit", "return").unwrap();
    match s.run_to_end_retrying(&id, 2).await {
        RunOutcome::Dead { error } => assert!(
            error.contains("gave up after 3 attempts; last error: injected fault"),
            "{error}"
        ),
        other => panic!("expected dead, got {other:?}"),
    }
    let job = s.job(&id).await;
    assert_eq!((job.state, job.attempts), (JobState::Dead, 3));
    assert!(job.last_error.unwrap().contains("injected fault"));
    assert_eq!(
        s.run_once(&id).await,
        RunOutcome::NotClaimed,
        "a dead job is never claimed again"
    );
    before.assert_untouched(&s.test).await;
    scenario.teardown();
}

async fn a_repeated_idempotency_key_yields_one_job(backend: Backend) {
    let s = Setup::new(backend, 10).await;
    let keyed = erase_tenant(1, serde_json::json!({"idempotency_key": "erase-1"}));
    let first = s.submit_to(&s.catalog, keyed.clone(), 5).await;
    let second = s.submit_to(&s.catalog, keyed, 5).await;
    assert!(first.created && !second.created);
    assert_eq!(first.job.id, second.job.id);
    assert_eq!(s.test.int("SELECT count(*) FROM reaper_jobs").await, 1);
    assert_eq!(first.job.max_attempts, 5, "the worker's default");
    // A target's own max_attempts overrides the worker's.
    let strict = Catalog::new(s.catalog.targets().map(|target| Target {
        max_attempts: Some(2),
        ..target.clone()
    }));
    let submitted = s
        .submit_to(&strict, erase_tenant(2, serde_json::json!({})), 5)
        .await;
    assert_eq!(submitted.job.max_attempts, 2);
}

async fn schema_check_names_missing_tables_and_columns(backend: Backend) {
    let s = Setup::new(backend, 10).await;
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
    let s = Setup::new(backend, 2_000).await;
    let expected = s.test.ids("events", "tenant_id = 5").await;
    let before = s.snapshot().await;
    let locker = sea_orm::Database::connect(&s.test.url).await.unwrap();
    let held = locker.begin().await.unwrap();
    held.execute_unprepared("SELECT id FROM events WHERE tenant_id = 5 AND id < 600 FOR UPDATE")
        .await
        .unwrap();
    let id = s
        .submit(erase_tenant(5, serde_json::json!({"batch_size": 40})), 5)
        .await;
    match s.run_once(&id).await {
        RunOutcome::RetryLater { error, .. } => assert!(
            error.contains("stayed locked by other transactions through 3 passes"),
            "{error}"
        ),
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(s.job(&id).await.passes, 3);
    let held_rows = s.test.ids("events", "tenant_id = 5 AND id < 600").await;
    let checked = before
        .assert_removed_within(&s.test, &expected, Removal::Hard, 40)
        .await;
    assert!(
        checked.removed.is_disjoint(&held_rows),
        "a locked row was deleted"
    );
    // The locker runs REPEATABLE READ: InnoDB also next-key-locks the first index entry past its
    // range (id 605), which reaper rightly passes over too. PostgreSQL locks exactly the rows.
    let extra = expected.len() - checked.removed.len() - held_rows.len();
    assert!(
        extra == 0 || (backend == Backend::MySql && extra == 1),
        "{extra} rows remain beyond the 60 held"
    );
    held.rollback().await.unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert_eq!(s.state(&id).await.1, 2, "one retry, then done");
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 40)
        .await;
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
/// for it (`pg_stat_activity` shows the batch waiting on a lock before the commit) — must survive,
/// and the pass must end complete and unmarked.
#[tokio::test]
async fn postgres_rows_changed_to_no_longer_match_while_the_batch_waits_are_kept() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let s = Setup::with_lock_timeout(Backend::Postgres, 2_000, Span::from_secs(5)).await;
    let changed = s.test.ids("events", "tenant_id = 5 AND id < 300").await;
    let expected: BTreeSet<String> = s
        .test
        .ids("events", "tenant_id = 5")
        .await
        .difference(&changed)
        .cloned()
        .collect();
    let before = s
        .snapshot()
        .await
        .with_rows_changed_by_others(changed.iter().cloned());
    let other = sea_orm::Database::connect(&s.test.url).await.unwrap();
    let moving = other.begin().await.unwrap();
    moving
        .execute_unprepared("UPDATE events SET tenant_id = 99 WHERE tenant_id = 5 AND id < 300")
        .await
        .unwrap();
    let id = s
        .submit(erase_tenant(5, serde_json::json!({"batch_size": 40})), 5)
        .await;
    let database = s.test.url.rsplit('/').next().unwrap().to_owned();
    let watcher = s.test.conn.clone();
    let committer = tokio::spawn(async move {
        // Commit only once the batch is seen waiting on the moved rows' lock.
        let started = std::time::Instant::now();
        loop {
            let waiting = watcher
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' \
                         AND application_name = 'reaper' AND wait_event_type = 'Lock'"
                    ),
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index::<i64>(0)
                .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "the batch was never seen waiting for the moved rows' lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        moving.commit().await.unwrap();
    });
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    committer.await.unwrap();
    s.assert_clean(&id, JobState::Done, 1).await;
    assert_eq!(
        s.test.ids("events", "tenant_id = 99").await,
        changed,
        "rows that stopped matching were deleted"
    );
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 40)
        .await;
    let job = s.job(&id).await;
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
    let s = Setup::new(Backend::MySql, 1_000).await;
    s.test.exec("DELETE FROM events WHERE id = 13").await;
    let mut expected = s.test.ids("events", "tenant_id = 3").await;
    expected.insert("13".into());
    let before = s
        .snapshot()
        .await
        .with_rows_inserted_later(["13".to_owned()]);
    let id = s
        .submit(erase_tenant(3, serde_json::json!({"batch_size": 50})), 5)
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
    s.assert_clean(&id, JobState::Done, 1).await;
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 50)
        .await;
    // The range delete saw one row too many, rolled back, and the rerun by key re-selected the
    // window, new row included: one pass, marked by the rerun.
    let job = s.job(&id).await;
    assert_eq!((job.passes, job.locked_rows_skipped), (1, true));
    scenario.teardown();
}

/// SQLite compares timestamps as text: a column in another format is refused at start-up, with
/// its key and the offending value, before any job could match the wrong rows.
#[tokio::test]
async fn sqlite_timestamps_in_another_format_are_refused_at_start_up() {
    let s = Setup::new(Backend::Sqlite, 10).await;
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
    let s = Setup::new(backend, 10).await;
    let quiet = Duration::from_secs(60);
    let started = Utc::now();
    let pending = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    let running = s.submit(erase_tenant(2, serde_json::json!({})), 5).await;
    let lease = Duration::from_secs(600);
    s.claim(&running, "w", "t", chrono::Duration::seconds(600))
        .await
        .unwrap();
    // Between the submission and the claim, so that each side of a threshold below is
    // 5 s away from it even when a loaded machine takes seconds for them.
    let now = started + (Utc::now() - started) / 2;
    assert!(Utc::now() - started < chrono::Duration::seconds(10));
    // The ids `take_stranded` takes `seconds` after the submissions.
    let db = &s.db;
    let taken_after = move |seconds: i64| async move {
        ledger::take_stranded(
            db,
            now + chrono::Duration::seconds(seconds),
            quiet,
            lease,
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect::<Vec<_>>()
    };
    // Just enqueued: its message is in the queue; the live lease is respected.
    assert!(taken_after(55).await.is_empty());
    // Untouched past `quiet`: the pending job is taken, once; the lease is still live.
    assert_eq!(taken_after(120).await, vec![pending.clone()]);
    assert!(taken_after(121).await.is_empty());
    // The worker died: just past its lease, the running job is taken too (and the pending one
    // again, untouched for `quiet` since it was last taken).
    assert_eq!(taken_after(605).await, vec![pending, running]);
    assert!(taken_after(606).await.is_empty());
}

async fn cancel_stops_a_running_job_at_a_batch_boundary(backend: Backend) {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(backend, 3_000).await;
    // Each of the 300 batches takes at least 5 ms, so the request lands long before the end.
    fail::cfg("batch::before_commit", "sleep(5)").unwrap();
    let matching = s.test.ids("events", "tenant_id IN (1, 2, 3)").await;
    let before = s.snapshot().await;
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
        s.wait_for_batches(&id, 2, Duration::from_secs(20)).await;
        ledger::request_cancel(&s.db, &id, Utc::now())
            .await
            .unwrap()
    };
    let run_settings = settings();
    let (outcome, cancel) = tokio::join!(s.run_with(&id, &run_settings, &|| false), canceller);
    // The worker may record `cancelled` before the request reads the job back.
    assert!(
        matches!(
            cancel,
            Some(ledger::CancelOutcome::Stopping(_) | ledger::CancelOutcome::Cancelled(_))
        ),
        "{cancel:?}"
    );
    assert_eq!(outcome, RunOutcome::Cancelled);
    s.assert_clean(&id, JobState::Cancelled, 1).await;
    let job = s.job(&id).await;
    assert!(job.finished_at.is_some() && job.lease_owner.is_none());
    let checked = before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 3)
        .await;
    assert!(
        checked.removed.len() >= 6 && checked.removed.len() < matching.len(),
        "cancel should stop mid-job: {} of {} deleted",
        checked.removed.len(),
        matching.len()
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
    let s = Setup::new(backend, 200).await;
    let before = s.snapshot().await;
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    let outcome = ledger::request_cancel(&s.db, &id, Utc::now())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Some(ledger::CancelOutcome::Cancelled(_))),
        "{outcome:?}"
    );
    s.assert_clean(&id, JobState::Cancelled, 0).await;
    assert_eq!(s.run_once(&id).await, RunOutcome::NotClaimed);
    before.assert_untouched(&s.test).await;
    assert_eq!(
        ledger::request_cancel(&s.db, "no-such-job", Utc::now())
            .await
            .unwrap(),
        None
    );
    // A running job whose worker died with a cancel request pending ends cancelled when it is
    // next claimed, without another batch.
    let id = s.submit(erase_tenant(2, serde_json::json!({})), 5).await;
    s.claim(&id, "dead-worker", "tok", chrono::Duration::zero())
        .await
        .unwrap();
    assert!(matches!(
        ledger::request_cancel(&s.db, &id, Utc::now())
            .await
            .unwrap(),
        Some(ledger::CancelOutcome::Stopping(_))
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.run_once(&id).await, RunOutcome::Cancelled);
    before.assert_untouched(&s.test).await;
}

async fn jobs_are_listed_newest_first_by_state_and_target_in_pages(backend: Backend) {
    let s = Setup::new(backend, 10).await;
    let tenant_0 = s.test.ids("events", "tenant_id = 0").await;
    let before = s.snapshot().await;
    let mut ids = Vec::new();
    for tenant in 0..5 {
        ids.push(
            s.submit(erase_tenant(tenant, serde_json::json!({})), 5)
                .await,
        );
    }
    s.run_and_check(&ids[0], &before, &tenant_0, Removal::Hard, 100)
        .await;
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
    let pending = ledger::list(&s.db, Some(JobState::Pending), Some("events"), None, 10)
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

    // One requester's jobs, through the requester index: two requesters share their first 190
    // characters (MySQL's indexed prefix) and are still told apart.
    let long = "r".repeat(190);
    let longer = format!("{long}-2");
    let mut by = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for (tenant, requester) in [
        (5, "ann"),
        (6, long.as_str()),
        (7, "ann"),
        (8, longer.as_str()),
    ] {
        let request = job(
            "events",
            serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
            serde_json::json!({"requested_by": requester}),
        );
        by.entry(requester)
            .or_default()
            .push(s.submit(request, 5).await);
    }
    let listed = |jobs: Vec<ledger::JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let ann = ledger::list_of(&s.db, "ann", None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(listed(ann), [by["ann"][1].clone(), by["ann"][0].clone()]);
    let first = ledger::list_of(&s.db, "ann", None, None, None, 1)
        .await
        .unwrap();
    let after = ledger::list_of(
        &s.db,
        "ann",
        Some(JobState::Pending),
        Some("events"),
        Some(&first[0].id),
        10,
    )
    .await
    .unwrap();
    assert_eq!(listed(after), [by["ann"][0].clone()]);
    for requester in [long.as_str(), longer.as_str()] {
        let jobs = ledger::list_of(&s.db, requester, None, None, None, 10)
            .await
            .unwrap();
        assert_eq!(listed(jobs), by[requester]);
    }
    assert!(
        ledger::list_of(&s.db, "bob", None, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
