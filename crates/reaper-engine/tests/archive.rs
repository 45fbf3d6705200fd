//! Archive mode and restore (issue 14) on real SQLite, PostgreSQL and MariaDB: an archive job
//! copies every row it deletes (every column, typed) in the batch's transaction; a restore job
//! puts them back — compared column by column with the table before, NULLs, timestamps,
//! decimals and bytes included — resumes from its checkpoint, never overwrites a key that
//! exists again (it reports it), clears a soft-delete job's marks only where they are still the
//! job's, and refuses a hard job; old archive rows are purged by the built-in retention.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use chrono::Utc;
use reaper_core::catalog::{Catalog, ColumnType, Target};
use reaper_core::lifecycle::{JobState, RestoreReport};
use reaper_core::sql::Backend;
use reaper_engine::archive::{self, RestoreAsk};
use reaper_engine::ledger::RunBy;
use reaper_engine::runner::RunOutcome;
use reaper_engine::{EngineError, ledger};
use reaper_testkit::engine::{
    EngineTest, TargetFixture, erase_tenant, events_target, job, settings,
};
use reaper_testkit::shop::{hanging_off, shop_with, state};

reaper_testkit::on_every_backend!(
    archived_rows_are_restored_column_for_column_across_a_stop,
    a_restore_reports_keys_that_exist_again_and_restores_the_rest,
    a_soft_restore_clears_only_the_marks_the_job_set,
    a_hard_job_is_refused_and_nothing_changes,
    archive_rows_older_than_keep_are_purged_in_bounded_batches,
    held_rows_are_neither_archived_nor_deleted,
    a_graph_is_archived_and_restored_parents_first_column_for_column_across_a_stop,
    a_graph_restore_reports_each_tables_conflicts_with_their_keys_and_restores_the_rest,
    a_soft_restore_reports_the_keys_it_left,
    held_rows_across_relations_are_neither_archived_nor_removed,
    a_restore_with_an_oldest_first_checkpoint_starts_again_from_the_newest_row,
    a_row_archived_twice_is_restored_once_from_its_newest_copy,
);

/// `payments`: an int key, a filter column, and a column of each kind a restore must bring back
/// typed: a decimal, text with quotes, a newline and a non-ASCII letter, a timestamp with
/// microseconds, bytes, a double that needs all 17 significant digits — each NULL in some rows.
async fn payments(s: &mut EngineTest, rows: u32) {
    let sql = match s.test.backend {
        Backend::Postgres => format!(
            "CREATE TABLE payments (id bigint PRIMARY KEY, grp int NOT NULL, amount numeric(12,2), \
             note text, paid_at timestamptz, data bytea, rate double precision);
             INSERT INTO payments SELECT i, i % 3,
               CASE WHEN i % 5 = 0 THEN NULL ELSE (i * 1.25)::numeric(12,2) END,
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'note \"' || i || E'\\n' || 'é' END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE TIMESTAMPTZ '2026-01-01 00:00:00.123456+00' + i * INTERVAL '1 hour' END,
               CASE WHEN i % 6 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END,
               CASE WHEN i % 7 = 0 THEN NULL ELSE i / 7.0::float8 END
             FROM generate_series(1, {rows}) AS i;"
        ),
        Backend::MySql => format!(
            "CREATE TABLE payments (id BIGINT PRIMARY KEY, grp INT NOT NULL, amount DECIMAL(12,2), \
             note TEXT, paid_at DATETIME(6), data VARBINARY(64), rate DOUBLE);
             INSERT INTO payments SELECT seq, seq % 3,
               IF(seq % 5 = 0, NULL, seq * 1.25),
               IF(seq % 3 = 0, NULL, CONCAT('note \"', seq, '\\n', 'é')),
               IF(seq % 4 = 0, NULL, TIMESTAMP '2026-01-01 00:00:00.123456' + INTERVAL seq HOUR),
               IF(seq % 6 = 0, NULL, UNHEX(MD5(seq))),
               IF(seq % 7 = 0, NULL, seq / 7e0)
             FROM seq_1_to_{rows};"
        ),
        Backend::Sqlite => format!(
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, amount NUMERIC, \
             note TEXT, paid_at TEXT, data BLOB, rate REAL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO payments SELECT i, i % 3,
               CASE WHEN i % 5 = 0 THEN NULL ELSE i * 1.25 END,
               CASE WHEN i % 3 = 0 THEN NULL ELSE 'note \"' || i || char(10) || 'é' END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE strftime('%Y-%m-%d %H:%M:%f', '2026-01-01 00:00:00.123', '+' || i || ' hours') END,
               CASE WHEN i % 6 = 0 THEN NULL ELSE CAST('b' || i AS BLOB) END,
               CASE WHEN i % 7 = 0 THEN NULL ELSE i / 7.0 END
             FROM n;"
        ),
    };
    s.test.exec(&sql).await;
    s.catalog = Catalog::new([
        events_target(),
        Target {
            batch_size: 7,
            ..Target::fixture("payments").column("grp", ColumnType::Int)
        },
    ]);
}

/// Every row of `payments`, every column as text (bytes as hex; SQLite: with each value's
/// storage class), in key order: equal before and after means every value and type came back.
async fn checksum(s: &EngineTest) -> Vec<Vec<Option<String>>> {
    let sql = match s.test.backend {
        Backend::Postgres => {
            "SELECT id::text, grp::text, amount::text, note, paid_at::text, encode(data, 'hex'), \
             rate::text FROM payments ORDER BY id"
        }
        Backend::MySql => {
            "SELECT CAST(id AS CHAR), CAST(grp AS CHAR), CAST(amount AS CHAR), note, \
             CAST(paid_at AS CHAR), HEX(data), CAST(rate AS CHAR) FROM payments ORDER BY id"
        }
        Backend::Sqlite => {
            "SELECT CAST(id AS TEXT), CAST(grp AS TEXT), typeof(amount) || ':' || CAST(amount AS TEXT), \
             typeof(note) || ':' || note, typeof(paid_at) || ':' || paid_at, \
             typeof(data) || ':' || hex(data), typeof(rate) || ':' || printf('%!.17g', rate) \
             FROM payments ORDER BY id"
        }
    };
    s.test.optional_strings(sql).await
}

fn archive_group(group: i64, batch_size: u32) -> serde_json::Value {
    job(
        "payments",
        serde_json::json!([{"column": "grp", "op": "eq", "value": group}]),
        serde_json::json!({"mode": "archive", "batch_size": batch_size}),
    )
}

async fn restore(s: &EngineTest, source: &str) -> Result<String, EngineError> {
    restore_in_batches(s, source, None).await
}

async fn restore_in_batches(
    s: &EngineTest,
    source: &str,
    batch_size: Option<u32>,
) -> Result<String, EngineError> {
    let ask = RestoreAsk {
        requested_by: "ops",
        batch_size,
        ..RestoreAsk::default()
    };
    let submitted = archive::submit_restore(
        &s.db,
        &s.catalog,
        source,
        ask,
        (3, Utc::now(), RunBy::Queue),
    )
    .await?;
    Ok(submitted.expect("the source job exists").job.id)
}

async fn count(s: &EngineTest, sql: &str) -> i64 {
    s.test.int(&format!("SELECT count(*) {sql}")).await
}

fn report(s: &ledger::JobRecord) -> RestoreReport {
    s.job_result()
        .and_then(|result| result.summary().cloned())
        .and_then(|summary| summary.restore)
        .expect("a restore job's summary")
}

async fn archived_rows_are_restored_column_for_column_across_a_stop(backend: Backend) {
    let mut s = EngineTest::new(backend, 10).await;
    payments(&mut s, 120).await;
    let before = checksum(&s).await;
    let id = s.submit(archive_group(1, 7), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    s.assert_clean(&id, JobState::Done, 1).await;
    assert_eq!(count(&s, "FROM payments WHERE grp = 1").await, 0);
    assert_eq!(count(&s, "FROM payments").await, 80);
    assert_eq!(
        count(&s, &format!("FROM reaper_archive WHERE job_id = '{id}'")).await,
        40
    );
    let modes = s
        .test
        .strings(&format!(
            "SELECT DISTINCT mode FROM reaper_audit WHERE job_id = '{id}'"
        ))
        .await;
    assert_eq!(modes, ["archive"]);
    let receipt = reaper_engine::receipt::build(&s.db, &s.catalog, &s.job(&id).await, Utc::now())
        .await
        .unwrap();
    let table = &receipt.tables["payments"];
    assert_eq!(
        (table.mode.as_str(), table.removed, table.archived),
        ("archive", 40, 40)
    );

    let restore_id = restore(&s, &id).await.unwrap();
    // Stopped after its second batch, the restore goes on from its checkpoint.
    let progress = settings();
    let stop = || progress.progress.batches.load(Ordering::Relaxed) >= 2;
    let restore_job = s.job(&restore_id).await;
    assert_eq!(restore_job.state, JobState::Pending);
    let outcome = s.run_with(&restore_id, &progress, &stop).await;
    assert_eq!(outcome, RunOutcome::Continue);
    assert_eq!(count(&s, "FROM payments WHERE grp = 1").await, 14);
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    assert_eq!(s.state(&restore_id).await.2, None);
    assert_eq!(checksum(&s).await, before, "every row, every column back");
    assert_eq!(count(&s, "FROM reaper_archive").await, 0);
    let done = s.job(&restore_id).await;
    assert_eq!((done.rows_deleted, done.rows_held), (40, 0));
    let report = report(&done);
    assert_eq!((report.restored, report.conflicts), (40, 0));
    assert_eq!(report.source_job, id);
    let audited = s
        .test
        .strings(&format!(
            "SELECT DISTINCT mode FROM reaper_audit WHERE job_id = '{restore_id}'"
        ))
        .await;
    assert_eq!(audited, ["restore"]);
    let chain = reaper_engine::audit_chain::verify_job(&s.db, &restore_id)
        .await
        .unwrap()
        .unwrap();
    assert!(chain.is_ok(), "{chain:?}");
}

async fn a_restore_reports_keys_that_exist_again_and_restores_the_rest(backend: Backend) {
    let mut s = EngineTest::new(backend, 10).await;
    payments(&mut s, 60).await;
    let id = s.submit(archive_group(2, 6), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    // Keys 5 and 29 (group 2) are inserted again by somebody else meanwhile.
    s.test
        .exec("INSERT INTO payments (id, grp, note) VALUES (5, 9, 'new five'), (29, 9, 'new 29')")
        .await;
    let restore_id = restore(&s, &id).await.unwrap();
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    let done = s.job(&restore_id).await;
    let report = report(&done);
    assert_eq!((report.restored, report.conflicts), (18, 2));
    assert_eq!(report.conflict_keys, ["5", "29"]);
    assert_eq!(done.rows_held, 2);
    // Not overwritten; the rest of the group is back.
    let kept = s
        .test
        .strings("SELECT note FROM payments WHERE grp = 9 ORDER BY id")
        .await;
    assert_eq!(kept, ["new five", "new 29"]);
    assert_eq!(count(&s, "FROM payments WHERE grp = 2").await, 18);
    // The two stay archived, for a later restore once the conflict is settled.
    assert_eq!(count(&s, "FROM reaper_archive").await, 2);
    s.test
        .exec("DELETE FROM payments WHERE id IN (5, 29)")
        .await;
    let again = restore(&s, &id).await.unwrap();
    assert_eq!(s.run_to_end(&again).await, RunOutcome::Done);
    assert_eq!(count(&s, "FROM payments WHERE grp = 2").await, 20);
    assert_eq!(count(&s, "FROM reaper_archive").await, 0);
}

/// A restore whose checkpoint is a plain archive id, as the oldest-first walk of reaper versions
/// before 2026-12-02 wrote it: read as "below that id" the newest-first walk would skip every
/// newer row; it starts again from the newest row instead, and every row comes back once.
async fn a_restore_with_an_oldest_first_checkpoint_starts_again_from_the_newest_row(
    backend: Backend,
) {
    let mut s = EngineTest::new(backend, 10).await;
    payments(&mut s, 60).await;
    let before = checksum(&s).await;
    let id = s.submit(archive_group(1, 7), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert_eq!(count(&s, "FROM reaper_archive").await, 20);
    // As if the older walk had taken the seven oldest archive rows.
    let seventh = s
        .test
        .int(&format!(
            "SELECT id FROM reaper_archive WHERE job_id = '{id}' ORDER BY id LIMIT 1 OFFSET 6"
        ))
        .await;
    let restore_id = restore(&s, &id).await.unwrap();
    s.test
        .exec(&format!(
            "UPDATE reaper_jobs SET checkpoint = '{seventh}' WHERE id = '{restore_id}'"
        ))
        .await;
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    assert_eq!(checksum(&s).await, before, "every row back");
    assert_eq!(count(&s, "FROM reaper_archive").await, 0);
    let report = report(&s.job(&restore_id).await);
    assert_eq!((report.restored, report.conflicts), (20, 0));
}

async fn a_soft_restore_clears_only_the_marks_the_job_set(backend: Backend) {
    let s = EngineTest::new(backend, 200).await;
    let tenant: BTreeSet<String> = s.test.ids("events", "tenant_id = 4").await;
    assert_eq!(tenant.len(), 20);
    let id = s
        .submit(
            erase_tenant(4, serde_json::json!({"mode": "soft", "batch_size": 6})),
            3,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    assert_eq!(
        count(&s, "FROM events WHERE tenant_id = 4 AND deleted_at IS NULL").await,
        0
    );
    // Somebody soft-deleted rows 14 and 94 again since, with their own time.
    let later = s.ts("2027-01-01 00:00:00");
    s.test
        .exec(&format!(
            "UPDATE events SET deleted_at = {later} WHERE id IN (14, 94)"
        ))
        .await;
    let restore_id = restore(&s, &id).await.unwrap();
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    let report = report(&s.job(&restore_id).await);
    assert_eq!((report.restored, report.conflicts), (18, 2));
    let still = s
        .test
        .ids("events", "tenant_id = 4 AND deleted_at IS NOT NULL")
        .await;
    assert_eq!(still, BTreeSet::from(["14".to_owned(), "94".to_owned()]));
}

async fn a_hard_job_is_refused_and_nothing_changes(backend: Backend) {
    let s = EngineTest::new(backend, 100).await;
    let id = s.submit(erase_tenant(5, serde_json::json!({})), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let before = s.snapshot().await;
    let jobs = count(&s, "FROM reaper_jobs").await;
    let refused = restore(&s, &id).await.unwrap_err();
    assert!(matches!(refused, EngineError::Invalid(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("ran in hard mode"),
        "{refused}"
    );
    assert_eq!(count(&s, "FROM reaper_jobs").await, jobs);
    before
        .assert_removed_exactly(&s.test, &BTreeSet::new(), reaper_testkit::Removal::Hard, 1)
        .await;
    // Unfinished jobs and unknown ones are refused too.
    let pending = s
        .submit(erase_tenant(6, serde_json::json!({"mode": "soft"})), 3)
        .await;
    let unfinished = restore(&s, &pending).await.unwrap_err();
    assert!(
        unfinished.to_string().contains("only a finished job"),
        "{unfinished}"
    );
    let ask = RestoreAsk {
        requested_by: "ops",
        ..RestoreAsk::default()
    };
    let unknown = archive::submit_restore(
        &s.db,
        &s.catalog,
        "no-such-job",
        ask,
        (3, Utc::now(), RunBy::Queue),
    )
    .await
    .unwrap();
    assert!(unknown.is_none());
}

async fn archive_rows_older_than_keep_are_purged_in_bounded_batches(backend: Backend) {
    let mut s = EngineTest::new(backend, 10).await;
    payments(&mut s, 90).await;
    let old = s.submit(archive_group(0, 10), 3).await;
    assert_eq!(s.run_to_end(&old).await, RunOutcome::Done);
    let recent = s.submit(archive_group(1, 10), 3).await;
    assert_eq!(s.run_to_end(&recent).await, RunOutcome::Done);
    let long_ago = s.ts("2020-01-01 00:00:00");
    s.test
        .exec(&format!(
            "UPDATE reaper_archive SET archived_at = {long_ago} WHERE job_id = '{old}'"
        ))
        .await;
    let keep = chrono::Duration::days(30);
    let purged = archive::purge_expired(&s.db, Utc::now() - keep, 7)
        .await
        .unwrap();
    assert_eq!(purged, 30);
    assert_eq!(
        count(&s, &format!("FROM reaper_archive WHERE job_id = '{old}'")).await,
        0
    );
    assert_eq!(
        count(
            &s,
            &format!("FROM reaper_archive WHERE job_id = '{recent}'")
        )
        .await,
        30
    );
    assert_eq!(
        archive::purge_expired(&s.db, Utc::now() - keep, 7)
            .await
            .unwrap(),
        0
    );
}

async fn held_rows_are_neither_archived_nor_deleted(backend: Backend) {
    let s = EngineTest::new(backend, 100).await;
    let hold: reaper_core::holds::HoldRequest = serde_json::from_value(serde_json::json!({
        "target": "events", "keys": [3, 13], "reason": "case 9", "placed_by": "legal"
    }))
    .unwrap();
    reaper_engine::holds::place(&s.db, &s.catalog, &hold, Utc::now())
        .await
        .unwrap();
    let id = s
        .submit(
            erase_tenant(3, serde_json::json!({"mode": "archive", "batch_size": 4})),
            3,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let job = s.job(&id).await;
    assert_eq!((job.rows_deleted, job.rows_held), (8, 2));
    let left = s.test.ids("events", "tenant_id = 3").await;
    assert_eq!(left, BTreeSet::from(["3".to_owned(), "13".to_owned()]));
    let archived: BTreeSet<String> = s
        .test
        .strings(&format!(
            "SELECT row_key FROM reaper_archive WHERE job_id = '{id}'"
        ))
        .await
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = (23..=93).step_by(10).map(|id| id.to_string()).collect();
    assert_eq!(archived, expected);
}

/// Every row of every shop table, every column as text (SQLite: with its storage class), in key
/// order: equal before and after means every value came back where it was.
async fn shop_checksum(s: &EngineTest) -> Vec<(&'static str, Vec<Vec<Option<String>>>)> {
    let mut tables = Vec::new();
    for (table, column) in [
        ("users", "tenant_id"),
        ("sessions", "user_id"),
        ("orders", "user_id"),
        ("order_items", "order_id"),
        ("events", "user_id"),
        ("reviews", "user_id"),
    ] {
        let text = |expr: &str| match s.test.backend {
            Backend::Sqlite => format!("typeof({expr}) || ':' || {expr}"),
            Backend::Postgres | Backend::MySql => s.test.as_text(expr),
        };
        let sql = format!(
            "SELECT {}, {} FROM {table} ORDER BY id",
            text("id"),
            text(column)
        );
        tables.push((table, s.test.optional_strings(&sql).await));
    }
    tables
}

fn archive_tenant(tenant: i64, batch_size: u32) -> serde_json::Value {
    job(
        "users",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
        serde_json::json!({"mode": "archive", "batch_size": batch_size}),
    )
}

/// The rows per table of one job's audit: `(target, mode, rows, rows left)`, summed.
async fn audited(s: &EngineTest, id: &str) -> Vec<Vec<Option<String>>> {
    let rows = s.test.as_text("sum(row_count)");
    let held = s.test.as_text("sum(rows_held)");
    s.test
        .optional_strings(&format!(
            "SELECT target, mode, {rows}, {held} FROM reaper_audit WHERE job_id = '{id}' \
             GROUP BY target, mode"
        ))
        .await
}

fn row(values: &[&str]) -> Vec<Option<String>> {
    values
        .iter()
        .map(|value| Some((*value).to_owned()))
        .collect()
}

async fn a_graph_is_archived_and_restored_parents_first_column_for_column_across_a_stop(
    backend: Backend,
) {
    let s = shop_with(backend, 12, 3).await;
    let before = shop_checksum(&s).await;
    let original = state(&s).await;
    let id = s.submit(archive_tenant(1, 2), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    // Users 1, 4, 7 and 10, and everything hanging off them, are gone (reviews: nulled).
    let erased = hanging_off(&BTreeSet::from([1, 4, 7, 10]));
    let now = state(&s).await;
    for (table, ids) in &original {
        let left: BTreeSet<String> = ids.difference(&erased[table]).cloned().collect();
        assert_eq!(now[table], left, "{table}");
    }
    // Every row removed or nulled is in the archive, with its table, once.
    let mut archived = s
        .test
        .optional_strings(&format!(
            "SELECT target, {} FROM reaper_archive WHERE job_id = '{id}' GROUP BY target",
            s.test.as_text("count(*)")
        ))
        .await;
    archived.sort();
    let expected: Vec<Vec<Option<String>>> = erased
        .iter()
        .map(|(table, ids)| row(&[table, &ids.len().to_string()]))
        .collect();
    assert_eq!(archived, expected);
    // Deleted rows are audited `archive`, nulled ones `set_null`.
    let modes = audited(&s, &id).await;
    assert!(
        modes.contains(&row(&["order_items", "archive", "24", "0"])),
        "{modes:?}"
    );
    assert!(
        modes.contains(&row(&["reviews", "set_null", "4", "0"])),
        "{modes:?}"
    );

    // 56 rows, 5 per batch: stopped after its third batch, it goes on from its checkpoint.
    let restore_id = restore_in_batches(&s, &id, Some(5)).await.unwrap();
    let progress = settings();
    let stop = || progress.progress.batches.load(Ordering::Relaxed) >= 3;
    let outcome = s.run_with(&restore_id, &progress, &stop).await;
    assert_eq!(outcome, RunOutcome::Continue);
    assert_ne!(shop_checksum(&s).await, before, "stopped mid-way");
    // Resumed from its checkpoint for three batches more, then cancelled.
    let progress = settings();
    let stop = || progress.progress.batches.load(Ordering::Relaxed) >= 3;
    let outcome = s.run_with(&restore_id, &progress, &stop).await;
    assert_eq!(outcome, RunOutcome::Continue);
    ledger::request_cancel(&s.db, &restore_id, Utc::now())
        .await
        .unwrap();
    if s.job(&restore_id).await.state != JobState::Cancelled {
        assert_eq!(s.run_once(&restore_id).await, RunOutcome::Cancelled);
    }
    let cancelled = s.job(&restore_id).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.rows_deleted, 30, "six batches of 5");
    assert_eq!(count(&s, "FROM reaper_archive").await, 56 - 30);
    // A new restore puts back the rest.
    let again = restore_in_batches(&s, &id, Some(5)).await.unwrap();
    assert_eq!(s.run_to_end(&again).await, RunOutcome::Done);
    assert_eq!(
        shop_checksum(&s).await,
        before,
        "every row, every column back"
    );
    assert_eq!(count(&s, "FROM reaper_archive").await, 0);
    let done = s.job(&again).await;
    let total: usize = erased.values().map(BTreeSet::len).sum();
    assert_eq!(total, 56);
    assert_eq!((done.rows_deleted, done.rows_held), (26, 0));
    let report = report(&done);
    assert_eq!((report.restored, report.conflicts), (26, 0));
    assert!(report.tables.is_empty(), "{report:?}");
    // Each row put back once, by one of the two, under its own table.
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    for job in [&restore_id, &again] {
        for row in audited(&s, job).await {
            let rows: u64 = row[2].as_deref().unwrap().parse().unwrap();
            *sums.entry(row[0].clone().unwrap()).or_default() += rows;
        }
    }
    let restored: Vec<Vec<Option<String>>> = sums
        .into_iter()
        .map(|(table, rows)| row(&[&table, "restore", &rows.to_string(), "0"]))
        .collect();
    let expected: Vec<Vec<Option<String>>> = erased
        .iter()
        .map(|(table, ids)| row(&[table, "restore", &ids.len().to_string(), "0"]))
        .collect();
    assert_eq!(restored, expected);
    for job in [&restore_id, &again] {
        let chain = reaper_engine::audit_chain::verify_job(&s.db, job)
            .await
            .unwrap()
            .unwrap();
        assert!(chain.is_ok(), "{chain:?}");
    }
}

/// Every nulled review archived twice, both copies side by side (as a row nulled, set again and
/// nulled again by one job would be), and older than the rest of the archive so that their
/// users come back first: one restore batch reads both copies of each key in one run. Each
/// review gets its value back once, from the newest copy; the older copies conflict with it,
/// stay archived and are reported.
async fn a_row_archived_twice_is_restored_once_from_its_newest_copy(backend: Backend) {
    let s = shop_with(backend, 9, 2).await;
    let original = shop_checksum(&s).await;
    let id = s.submit(archive_tenant(1, 2), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let top = s.test.int("SELECT max(id) FROM reaper_archive").await;
    let copy = |rows: &str| {
        format!(
            "INSERT INTO reaper_archive (job_id, target, row_key, row_json, archived_at) \
             SELECT job_id, target, row_key, row_json, archived_at FROM reaper_archive \
             WHERE job_id = '{id}' AND id <= {top} AND {rows} ORDER BY id"
        )
    };
    let nulled = count(
        &s,
        &format!("FROM reaper_archive WHERE job_id = '{id}' AND target = 'reviews'"),
    )
    .await;
    assert!(nulled > 0);
    s.test.exec(&copy("target = 'reviews'")).await;
    s.test.exec(&copy("target = 'reviews'")).await;
    s.test.exec(&copy("target <> 'reviews'")).await;
    s.test
        .exec(&format!("DELETE FROM reaper_archive WHERE id <= {top}"))
        .await;
    let restore_id = restore_in_batches(&s, &id, Some(1_000)).await.unwrap();
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    assert_eq!(
        shop_checksum(&s).await,
        original,
        "every row and value back once"
    );
    let report = report(&s.job(&restore_id).await);
    assert_eq!(report.conflicts, nulled as u64);
    assert_eq!(count(&s, "FROM reaper_archive").await, nulled);
}

async fn a_graph_restore_reports_each_tables_conflicts_with_their_keys_and_restores_the_rest(
    backend: Backend,
) {
    let s = shop_with(backend, 9, 2).await;
    let original = state(&s).await;
    let id = s.submit(archive_tenant(1, 2), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    // Meanwhile: user 4 and order 11 exist again (other rows), review 71 got a user again,
    // and user 7's copy is gone (purged), so its sessions, orders and their items have no
    // parent to come back to.
    s.test
        .exec("INSERT INTO users (id, tenant_id) VALUES (4, 9)")
        .await;
    s.test
        .exec("INSERT INTO orders (id, user_id) VALUES (11, 2)")
        .await;
    s.test
        .exec("UPDATE reviews SET user_id = 2 WHERE id = 71")
        .await;
    s.test
        .exec(&format!(
            "DELETE FROM reaper_archive WHERE job_id = '{id}' AND target = 'users' AND row_key = '7'"
        ))
        .await;
    let restore_id = restore(&s, &id).await.unwrap();
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    let done = s.job(&restore_id).await;
    let report = report(&done);
    let conflicts = [
        ("users", vec!["4"]),
        ("sessions", vec!["71", "72"]),
        ("orders", vec!["11", "71", "72"]),
        (
            "order_items",
            vec!["711", "712", "713", "721", "722", "723"],
        ),
        ("reviews", vec!["71"]),
    ];
    let mut reported: Vec<(&str, Vec<String>)> = report
        .tables
        .iter()
        .map(|(table, conflicts)| {
            assert_eq!(conflicts.conflicts, conflicts.conflict_keys.len() as u64);
            let mut keys = conflicts.conflict_keys.clone();
            keys.sort_by_key(|key| key.parse::<i64>().unwrap());
            (table.as_str(), keys)
        })
        .collect();
    reported.sort_by_key(|(table, _)| conflicts.iter().position(|(t, _)| t == table));
    let expected: Vec<(&str, Vec<String>)> = conflicts
        .iter()
        .map(|(table, keys)| (*table, keys.iter().map(|k| (*k).to_owned()).collect()))
        .collect();
    assert_eq!(reported, expected);
    assert_eq!(report.conflicts, 13);
    assert_eq!(done.rows_held, 13);
    assert_eq!(report.conflict_keys, ["4"]);
    // 42 rows archived, user 7's copy purged, 13 left.
    assert_eq!(report.restored, 42 - 1 - 13);
    // The rest is back; what exists again was not overwritten.
    let now = state(&s).await;
    let missing = BTreeSet::from([
        ("users", "7"),
        ("sessions", "71"),
        ("sessions", "72"),
        ("orders", "71"),
        ("orders", "72"),
        ("order_items", "711"),
        ("order_items", "712"),
        ("order_items", "713"),
        ("order_items", "721"),
        ("order_items", "722"),
        ("order_items", "723"),
    ]);
    for (table, ids) in &original {
        let expected: BTreeSet<String> = ids
            .iter()
            .filter(|id| !missing.contains(&(*table, id.as_str())))
            .cloned()
            .collect();
        assert_eq!(now[table], expected, "{table}");
    }
    assert_eq!(
        count(&s, "FROM users WHERE id = 4 AND tenant_id = 9").await,
        1
    );
    assert_eq!(
        count(&s, "FROM orders WHERE id = 11 AND user_id = 2").await,
        1
    );
    assert_eq!(
        count(&s, "FROM reviews WHERE id = 71 AND user_id = 2").await,
        1
    );
    assert_eq!(
        count(&s, "FROM reviews WHERE id = 41 AND user_id = 4").await,
        1
    );
    // The rows not restored stay archived, for a later restore.
    assert_eq!(
        count(&s, &format!("FROM reaper_archive WHERE job_id = '{id}'")).await,
        13
    );
}

async fn a_soft_restore_reports_the_keys_it_left(backend: Backend) {
    let s = EngineTest::new(backend, 200).await;
    let id = s
        .submit(
            erase_tenant(4, serde_json::json!({"mode": "soft", "batch_size": 6})),
            3,
        )
        .await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let later = s.ts("2027-01-01 00:00:00");
    s.test
        .exec(&format!(
            "UPDATE events SET deleted_at = {later} WHERE id IN (94, 14)"
        ))
        .await;
    s.test.exec("DELETE FROM events WHERE id = 54").await;
    let restore_id = restore(&s, &id).await.unwrap();
    assert_eq!(s.run_to_end(&restore_id).await, RunOutcome::Done);
    let report = report(&s.job(&restore_id).await);
    assert_eq!((report.restored, report.conflicts), (17, 3));
    assert_eq!(report.conflict_keys, ["14", "54", "94"]);
    assert!(report.tables.is_empty());
}

async fn held_rows_across_relations_are_neither_archived_nor_removed(backend: Backend) {
    let s = shop_with(backend, 12, 3).await;
    let original = state(&s).await;
    // Item 411 is held: it keeps its order 41 and user 4; the rest goes as without a hold.
    let hold: reaper_core::holds::HoldRequest = serde_json::from_value(serde_json::json!({
        "target": "order_items", "keys": [411], "reason": "case 12", "placed_by": "legal"
    }))
    .unwrap();
    reaper_engine::holds::place(&s.db, &s.catalog, &hold, Utc::now())
        .await
        .unwrap();
    let id = s.submit(archive_tenant(1, 2), 3).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let kept = BTreeSet::from([("users", "4"), ("orders", "41"), ("order_items", "411")]);
    let mut removed = hanging_off(&BTreeSet::from([1, 4, 7, 10]));
    for (table, ids) in &mut removed {
        ids.retain(|id| !kept.contains(&(*table, id.as_str())));
    }
    let now = state(&s).await;
    for (table, ids) in &original {
        let left: BTreeSet<String> = ids.difference(&removed[table]).cloned().collect();
        assert_eq!(now[table], left, "{table}");
    }
    for (table, ids) in &removed {
        let archived: BTreeSet<String> = s
            .test
            .strings(&format!(
                "SELECT row_key FROM reaper_archive WHERE job_id = '{id}' AND target = '{table}'"
            ))
            .await
            .into_iter()
            .collect();
        assert_eq!(
            &archived, ids,
            "{table}: exactly the rows removed or nulled"
        );
    }
    assert_eq!(s.job(&id).await.rows_held, 3);
}
