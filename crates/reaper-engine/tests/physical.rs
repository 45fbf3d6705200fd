//! Physical-order batches on PostgreSQL (heap-block ranges, then a keyset sweep), held to the
//! same invariants as every deletion test (`reaper_testkit::TableSnapshot`): exactly the
//! expected rows removed, each audited once, audit entries no larger than the batch size,
//! contiguous batch numbers, ledger counters equal to the audit's sums.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use reaper_core::lifecycle::{JobResult, JobState, JobSummary};
use reaper_core::sql::Backend;
use reaper_core::strategy::{self, ChoiceReason, Strategy, Tid};
use reaper_engine::ledger;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::Removal;
use reaper_testkit::engine::{EngineTest as Setup, job, settings};

/// `created_at` before this matches ~45% of the fixture's rows, spread over every block.
const CUTOFF: &str = "2025-11-05T00:00:00Z";
const CUTOFF_SQL: &str = "created_at < TIMESTAMPTZ '2025-11-05 00:00:00+00'";

/// The retention job on `events`, with `extra` fields.
fn retention(extra: serde_json::Value) -> serde_json::Value {
    job(
        "events",
        serde_json::json!([{"column": "created_at", "op": "lt", "value": CUTOFF}]),
        extra,
    )
}

/// The finished job's summary.
async fn summary(s: &Setup, id: &str) -> JobSummary {
    let result = s.job(id).await.result.expect("a finished job has a result");
    JobResult::parse(&result)
        .and_then(|result| result.summary().cloned())
        .unwrap_or_else(|| panic!("not a summary: {result}"))
}

/// Runs `id` once, stopping after `batches` batches of this run (a slice end, as a queue sees).
async fn run_batches(s: &Setup, id: &str, batches: u64) -> RunOutcome {
    let run_settings = settings();
    let progress = run_settings.progress.clone();
    s.run_with(id, &run_settings, &move || {
        progress.batches.load(Ordering::Relaxed) >= batches
    })
    .await
}

/// The block a row lives in now.
async fn block_of(s: &Setup, id: &str) -> u64 {
    let tid = s
        .test
        .strings(&format!("SELECT ctid::text FROM events WHERE id = {id}"))
        .await;
    Tid::parse_sql_text(&tid[0]).unwrap().block
}

/// The job's physical checkpoint (it must be in its physical pass).
async fn physical_checkpoint(s: &Setup, id: &str) -> Tid {
    let job = s.job(id).await;
    assert_eq!(
        job.passes,
        strategy::PHYSICAL_PASS,
        "not in the physical pass"
    );
    let text = job.checkpoint.expect("a physical checkpoint");
    strategy::decode_checkpoint(&text).unwrap_or_else(|| panic!("not a tuple position: {text}"))
}

/// The erasure of tenant `tenant`'s events in batches of `batch_size`.
fn tenant_erasure(tenant: i64, batch_size: u32) -> serde_json::Value {
    job(
        "events",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
        serde_json::json!({"batch_size": batch_size}),
    )
}

#[tokio::test]
async fn a_job_its_count_puts_within_one_batch_walks_by_keyset_without_an_estimate() {
    // Tenants of 500 rows each, 10% of the table: by the estimate alone, physical order.
    let s = Setup::new(Backend::Postgres, 5_000).await;
    s.test.exec("ANALYZE events").await;
    let matching = s.test.ids("events", "tenant_id = 3").await;
    assert_eq!(matching.len(), 500);
    let before = s.snapshot().await;
    let id = s.submit(tenant_erasure(3, 500), 5).await;
    s.run_and_check(&id, &before, &matching, Removal::Hard, 500)
        .await;
    let choice = summary(&s, &id).await.strategy.expect("recorded");
    assert_eq!(
        (choice.strategy, choice.reason, choice.estimate),
        (Strategy::Keyset, ChoiceReason::OneBatch, None)
    );

    // One row more than a batch takes: the estimate decides.
    let matching = s.test.ids("events", "tenant_id = 4").await;
    let before = s.snapshot().await;
    let id = s.submit(tenant_erasure(4, 499), 5).await;
    s.run_and_check(&id, &before, &matching, Removal::Hard, 499)
        .await;
    let choice = summary(&s, &id).await.strategy.expect("recorded");
    assert_eq!(choice.reason, ChoiceReason::Estimate);
    assert!(choice.estimate.is_some(), "{choice:?}");
}

#[tokio::test]
async fn a_large_share_is_removed_in_physical_order_in_batches_no_larger_than_the_batch_size() {
    let s = Setup::new(Backend::Postgres, 20_000).await;
    s.test.exec("ANALYZE events").await;
    let matching = s.test.ids("events", CUTOFF_SQL).await;
    let before = s.snapshot().await;
    let id = s
        .submit(retention(serde_json::json!({"batch_size": 100})), 5)
        .await;
    // Dense blocks: the LIMIT cuts the ranges; no batch may remove more than 100 rows (the
    // checker holds every audit entry to it).
    s.run_and_check(&id, &before, &matching, Removal::Hard, 100)
        .await;
    let summary = summary(&s, &id).await;
    let choice = summary.strategy.expect("the strategy is recorded");
    assert_eq!(
        (choice.strategy, choice.reason),
        (Strategy::Physical, ChoiceReason::Estimate)
    );
    let estimate = choice.estimate.expect("the estimate is recorded");
    assert!(
        estimate.table_rows == 20_000 && estimate.matching_rows > 5_000,
        "{estimate:?}"
    );
    // Nothing moved meanwhile: the sweep found nothing.
    assert_eq!(summary.sweep_rows, Some(0));
    assert_eq!(summary.rows_deleted, matching.len() as u64);
    let sizes: Vec<i64> = s
        .test
        .audit_of(&id)
        .await
        .iter()
        .map(|e| e.row_count)
        .collect();
    assert!(sizes.iter().all(|&size| size <= 100), "{sizes:?}");
    // The span follows the density the batches see, so batches stay near the limit: at
    // most 1.5× the batches full ones would take (ranges over it reran selecting 100).
    let fewest = matching.len().div_ceil(100);
    assert!(
        sizes.len() <= fewest * 3 / 2,
        "{} batches for {fewest}: {sizes:?}",
        sizes.len()
    );
}

#[tokio::test]
async fn rows_moved_behind_the_position_and_rows_inserted_into_passed_blocks_are_swept() {
    let s = Setup::new(Backend::Postgres, 20_000).await;
    let before_rows = s.test.ids("events", CUTOFF_SQL).await;
    let id = s
        .submit(
            retention(serde_json::json!({"batch_size": 200, "strategy": "physical"})),
            5,
        )
        .await;
    let mut before = s.snapshot().await;
    assert_eq!(run_batches(&s, &id, 3).await, RunOutcome::Continue);
    let position = physical_checkpoint(&s, &id).await;
    assert!(position.block > 0, "{position:?}");
    // Free the space of the passed blocks, so that new row versions and new rows land there.
    s.test.exec("VACUUM events").await;
    // Matching rows far ahead of the position: an UPDATE writes their new versions behind it.
    let ahead: Vec<String> = s
        .test
        .strings(&format!(
            "SELECT id::text FROM events WHERE {CUTOFF_SQL} AND (ctid::text::point)[0] > {} \
             ORDER BY id LIMIT 20",
            position.block + 20
        ))
        .await;
    assert_eq!(ahead.len(), 20);
    s.test
        .exec(&format!(
            "UPDATE events SET payload = 'moved' WHERE id IN ({})",
            ahead.join(", ")
        ))
        .await;
    let mut moved_behind = 0;
    for key in &ahead {
        if block_of(&s, key).await < position.block {
            moved_behind += 1;
        }
    }
    assert!(moved_behind > 0, "no updated row moved behind the position");
    // New matching rows, into the passed blocks' free space.
    let inserted = s
        .test
        .strings(
            "INSERT INTO events (tenant_id, kind, created_at, payload) \
             SELECT 1, 'view', TIMESTAMPTZ '2025-01-01 00:00:00+00', 'late' \
             FROM generate_series(1, 30) RETURNING id::text",
        )
        .await;
    let mut inserted_behind = 0;
    for key in &inserted {
        if block_of(&s, key).await < position.block {
            inserted_behind += 1;
        }
    }
    assert!(
        inserted_behind > 0,
        "no inserted row landed behind the position"
    );
    before = before.with_rows_inserted_later(inserted.iter().cloned());
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    s.assert_clean(&id, JobState::Done, 1).await;
    let mut expected: BTreeSet<String> = before_rows;
    expected.extend(inserted.iter().cloned());
    // The updated rows changed (payload) and are gone: the checker sees them as removed.
    before
        .assert_removed_exactly(&s.test, &expected, Removal::Hard, 200)
        .await;
    assert!(s.test.ids("events", CUTOFF_SQL).await.is_empty());
    let summary = summary(&s, &id).await;
    assert_eq!(
        summary
            .strategy
            .map(|choice| (choice.strategy, choice.reason)),
        Some((Strategy::Physical, ChoiceReason::Job))
    );
    let swept = summary.sweep_rows.unwrap();
    assert!(
        swept >= (moved_behind + inserted_behind) as u64,
        "the sweep took {swept} rows; {moved_behind} moved and {inserted_behind} inserted behind"
    );
}

#[tokio::test]
async fn a_crash_mid_pass_resumes_from_the_committed_block_position() {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(Backend::Postgres, 10_000).await;
    let matching = s.test.ids("events", CUTOFF_SQL).await;
    let before = s.snapshot().await;
    let id = s
        .submit(
            retention(serde_json::json!({"batch_size": 150, "strategy": "physical"})),
            5,
        )
        .await;
    assert_eq!(run_batches(&s, &id, 4).await, RunOutcome::Continue);
    let position = physical_checkpoint(&s, &id).await;
    let committed = s.job(&id).await;
    // The next batch's statement runs, then the transaction dies before COMMIT.
    fail::cfg("physical::before_commit", "return").unwrap();
    assert!(matches!(
        s.run_once(&id).await,
        RunOutcome::RetryLater { .. }
    ));
    fail::cfg("physical::before_commit", "off").unwrap();
    let after_crash = s.job(&id).await;
    assert_eq!(physical_checkpoint(&s, &id).await, position);
    assert_eq!(
        (after_crash.rows_deleted, after_crash.batches),
        (committed.rows_deleted, committed.batches)
    );
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    before
        .assert_removed_exactly(&s.test, &matching, Removal::Hard, 150)
        .await;
    assert_eq!(summary(&s, &id).await.sweep_rows, Some(0));
}

#[tokio::test]
async fn cancel_stops_a_physical_pass_at_a_batch_boundary() {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(Backend::Postgres, 10_000).await;
    fail::cfg("physical::before_commit", "sleep(5)").unwrap();
    let matching = s.test.ids("events", CUTOFF_SQL).await;
    let before = s.snapshot().await;
    let id = s
        .submit(
            retention(serde_json::json!({"batch_size": 20, "strategy": "physical"})),
            5,
        )
        .await;
    let canceller = async {
        let started = std::time::Instant::now();
        while s.job(&id).await.batches < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no two batches"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ledger::request_cancel(&s.db, &id, Utc::now())
            .await
            .unwrap()
    };
    let run_settings = settings();
    let (outcome, _) = tokio::join!(s.run_with(&id, &run_settings, &|| false), canceller);
    assert_eq!(outcome, RunOutcome::Cancelled);
    s.assert_clean(&id, JobState::Cancelled, 1).await;
    let checked = before
        .assert_removed_within(&s.test, &matching, Removal::Hard, 20)
        .await;
    assert!(
        checked.removed.len() >= 40 && checked.removed.len() < matching.len(),
        "{} of {}",
        checked.removed.len(),
        matching.len()
    );
    let summary = summary(&s, &id).await;
    assert_eq!(
        summary.strategy.map(|choice| choice.strategy),
        Some(Strategy::Physical)
    );
}

#[tokio::test]
async fn a_soft_physical_job_marks_each_matching_row_once() {
    let s = Setup::new(Backend::Postgres, 8_000).await;
    // Some rows were soft-deleted before: they are neither touched nor counted.
    s.test
        .exec(
            "UPDATE events SET deleted_at = TIMESTAMPTZ '2025-06-01 00:00:00+00' WHERE id % 7 = 0",
        )
        .await;
    let matching = s
        .test
        .ids("events", &format!("{CUTOFF_SQL} AND deleted_at IS NULL"))
        .await;
    let before = s.snapshot().await;
    let id = s
        .submit(
            retention(
                serde_json::json!({"batch_size": 100, "mode": "soft", "strategy": "physical"}),
            ),
            5,
        )
        .await;
    s.run_and_check(&id, &before, &matching, Removal::Soft, 100)
        .await;
    let summary = summary(&s, &id).await;
    assert_eq!(summary.rows_deleted, matching.len() as u64);
    // New versions of soft-deleted rows no longer match: the sweep has nothing to take.
    assert_eq!(summary.sweep_rows, Some(0));
}

#[tokio::test]
async fn a_dry_run_shows_the_strategy_and_the_physical_batch_and_writes_nothing() {
    let s = Setup::new(Backend::Postgres, 5_000).await;
    s.test.exec("ANALYZE events").await;
    let before = s.snapshot().await;
    let id = s
        .submit(retention(serde_json::json!({"dry_run": true})), 5)
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    before.assert_untouched(&s.test).await;
    let result = s.job(&id).await.result.unwrap();
    let Some(JobResult::DryRun(report)) = JobResult::parse(&result) else {
        panic!("not a dry-run report: {result}");
    };
    assert_eq!(
        report
            .strategy
            .map(|choice| (choice.strategy, choice.reason)),
        Some((Strategy::Physical, ChoiceReason::Estimate))
    );
    assert!(
        report.sql.contains("ctid > $3::tid AND ctid < $4::tid"),
        "{}",
        report.sql
    );
    assert!(report.sql.contains("keyset sweep"), "{}", report.sql);
    // A selective filter keeps the keyset.
    let one_tenant = s
        .submit(
            job(
                "events",
                serde_json::json!([{"column": "tenant_id", "op": "eq", "value": 3}, {"column": "kind", "op": "eq", "value": "view"}, {"column": "created_at", "op": "lt", "value": "2025-09-25T00:00:00Z"}]),
                serde_json::json!({"dry_run": true}),
            ),
            5,
        )
        .await;
    assert_eq!(s.run_to_end(&one_tenant).await, RunOutcome::Done);
    let result = s.job(&one_tenant).await.result.unwrap();
    let Some(JobResult::DryRun(report)) = JobResult::parse(&result) else {
        panic!("not a dry-run report: {result}");
    };
    assert_eq!(
        report.strategy.map(|choice| choice.strategy),
        Some(Strategy::Keyset)
    );
}

#[tokio::test]
async fn a_row_held_by_another_transaction_is_skipped_by_the_pass_and_taken_later() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let s = Setup::new(Backend::Postgres, 5_000).await;
    let matching = s.test.ids("events", CUTOFF_SQL).await;
    let held = s
        .test
        .strings(&format!(
            "SELECT id::text FROM events WHERE {CUTOFF_SQL} ORDER BY ctid LIMIT 1"
        ))
        .await;
    let before = s.snapshot().await;
    let holder = s.db.connection().begin().await.unwrap();
    holder
        .execute_unprepared(&format!(
            "SELECT 1 FROM events WHERE id = {} FOR UPDATE",
            held[0]
        ))
        .await
        .unwrap();
    let id = s
        .submit(
            retention(serde_json::json!({"batch_size": 100, "strategy": "physical"})),
            5,
        )
        .await;
    // The physical pass skips the held row after the lock timeout; the sweep cannot take it
    // either while it is held, so the job retries later instead of finishing.
    assert!(matches!(
        s.run_once(&id).await,
        RunOutcome::RetryLater { .. }
    ));
    assert_eq!(
        s.test.ids("events", CUTOFF_SQL).await,
        held.iter().cloned().collect::<BTreeSet<_>>()
    );
    holder.commit().await.unwrap();
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    before
        .assert_removed_exactly(&s.test, &matching, Removal::Hard, 100)
        .await;
}
