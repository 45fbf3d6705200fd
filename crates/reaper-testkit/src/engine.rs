//! The engine as its tests drive it: the fixture catalog, a migrated database, and submit /
//! claim / run helpers. Tests reach the engine's API through here, so a change of that API is
//! adapted in one place.

use reaper_core::lifecycle::JobState;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use reaper_core::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use reaper_core::config::DatabaseConfig;
use reaper_core::graph::{Action, Relation};
use reaper_core::job::JobRequest;
use reaper_core::span::Span;
use reaper_core::sql::Backend;
use reaper_engine::Database;
use reaper_engine::ledger::{self, ClaimFrom, JobRecord};
use reaper_engine::migration::Migrator;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use sea_orm_migration::MigratorTrait;

use crate::{Removal, TableSnapshot, TestDatabase};

/// `Target::fixture(name)`: a target for tests, so that each test states only what it changes.
pub trait TargetFixture {
    /// Table `name`, int key `id`, no filterable column, hard by default, batches of 100 up to
    /// 1,000, at most 1,000,000 rows per job, no soft-delete column, no throttle.
    fn fixture(name: &str) -> Self;
    /// Adds a filterable column.
    fn column(self, name: &str, column_type: ColumnType) -> Self;
}

impl TargetFixture for Target {
    fn fixture(name: &str) -> Self {
        Self {
            name: name.into(),
            schema: None,
            table: name.into(),
            primary_key: "id".into(),
            key_type: KeyType::Int,
            columns: BTreeMap::new(),
            default_mode: Mode::Hard,
            batch_size: 100,
            max_batch_size: 1_000,
            soft_delete_column: None,
            max_rows: 1_000_000,
            max_attempts: None,
            throttle: Default::default(),
        }
    }

    fn column(mut self, name: &str, column_type: ColumnType) -> Self {
        self.columns.insert(name.into(), column_type);
        self
    }
}

/// The `events` fixture as a target (see [`TestDatabase::seed_events`]).
pub fn events_target() -> Target {
    Target {
        soft_delete_column: Some("deleted_at".into()),
        ..Target::fixture("events")
            .column("tenant_id", ColumnType::Int)
            .column("kind", ColumnType::Text)
            .column("created_at", ColumnType::Timestamp)
    }
}

/// The `tokens` fixture as a target (uuid keys).
pub fn tokens_target() -> Target {
    Target {
        key_type: KeyType::Uuid,
        ..Target::fixture("tokens").column("user_id", ColumnType::Int)
    }
}

/// A worker's settings: 60 s lease and slice, quick retries.
pub fn settings() -> RunSettings {
    RunSettings::for_worker(
        "test-worker".into(),
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_millis(10),
        Duration::from_millis(100),
    )
}

/// A job on `target` whose filter is `conditions` (a JSON array), with `extra` fields.
pub fn job(
    target: &str,
    conditions: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let filter = serde_json::Map::from_iter([("all".to_owned(), conditions)]);
    let mut job = serde_json::json!({
        "target": target,
        "requested_by": "engine-test",
        "reason": "invariants",
    });
    job["filter"] = serde_json::Value::Object(filter);
    if let (Some(job), serde_json::Value::Object(extra)) = (job.as_object_mut(), extra) {
        job.extend(extra);
    }
    job
}

/// A job erasing one tenant's `events`, with `extra` fields.
pub fn erase_tenant(tenant: i64, extra: serde_json::Value) -> serde_json::Value {
    job(
        "events",
        serde_json::json!([{"column": "tenant_id", "op": "eq", "value": tenant}]),
        extra,
    )
}

/// reaper's connection to `test`'s database: 4 connections, 30 s statements, `lock_timeout`.
pub async fn connect(test: &TestDatabase, lock_timeout: Span) -> Database {
    Database::connect(&DatabaseConfig {
        url: test.url.clone(),
        max_connections: 4,
        statement_timeout: Span::from_secs(30),
        lock_timeout,
        health: None,
    })
    .await
    .unwrap()
}

/// [`connect`], with reaper's own tables migrated.
pub async fn migrated(test: &TestDatabase, lock_timeout: Span) -> Database {
    let db = connect(test, lock_timeout).await;
    Migrator::up(db.connection(), None).await.unwrap();
    db
}

/// The relation `parent.id` → `child.column` with `action`, on an indexed column.
pub fn relation(parent: &str, child: &str, column: &str, action: Action) -> Relation {
    Relation::new(parent, child, column, "id", action)
}

/// A migrated test database with the `events` and `tokens` fixtures and their catalog.
#[derive(Debug)]
pub struct EngineTest {
    pub test: TestDatabase,
    pub db: Database,
    pub catalog: Catalog,
}

impl EngineTest {
    /// `events` rows of the fixture, 500 tokens, a 50 ms lock timeout.
    pub async fn new(backend: Backend, events: u32) -> Self {
        Self::with_lock_timeout(backend, events, Span::from_millis(50)).await
    }

    pub async fn with_lock_timeout(backend: Backend, events: u32, lock_timeout: Span) -> Self {
        Self::on(TestDatabase::new(backend).await, events, lock_timeout).await
    }

    /// The fixtures in `test` (a database on a server of the test's own, say).
    pub async fn on(test: TestDatabase, events: u32, lock_timeout: Span) -> Self {
        test.seed_events(events).await;
        test.seed_tokens(500).await;
        let db = migrated(&test, lock_timeout).await;
        Self {
            test,
            db,
            catalog: Catalog::new([events_target(), tokens_target()]),
        }
    }

    /// Submits `job` (JSON) with this default of attempts; the job's id.
    pub async fn submit(&self, job: serde_json::Value, max_attempts: u32) -> String {
        self.submit_to(&self.catalog, job, max_attempts)
            .await
            .job
            .id
    }

    /// Submits against another catalog.
    pub async fn submit_to(
        &self,
        catalog: &Catalog,
        job: serde_json::Value,
        max_attempts: u32,
    ) -> ledger::Submitted {
        let request: JobRequest = serde_json::from_value(job).unwrap();
        ledger::submit(
            &self.db,
            catalog,
            &request,
            max_attempts,
            Utc::now(),
            None,
            ledger::RunBy::Queue,
        )
        .await
        .unwrap()
    }

    /// One run, as one queue pull.
    pub async fn run_once(&self, id: &str) -> RunOutcome {
        self.run_with(id, &settings(), &|| false).await
    }

    /// One run with these settings and this stop request.
    pub async fn run_with(
        &self,
        id: &str,
        settings: &RunSettings,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> RunOutcome {
        runner::run_job(&self.db, &self.catalog, id, settings, should_stop)
            .await
            .unwrap()
            .outcome
    }

    /// Runs until the job ends, as a queue would (continuations at once). A retry is a
    /// failure here: a test that expects one says how many with [`Self::run_to_end_retrying`].
    pub async fn run_to_end(&self, id: &str) -> RunOutcome {
        self.run_to_end_retrying(id, 0).await
    }

    /// Runs until the job ends, allowing exactly `retries` transient failures (retried at once).
    pub async fn run_to_end_retrying(&self, id: &str, retries: usize) -> RunOutcome {
        let mut failures = Vec::new();
        for _ in 0..50 {
            match self.run_once(id).await {
                RunOutcome::Continue => {}
                RunOutcome::RetryLater { error, .. } => {
                    failures.push(error);
                    assert!(
                        failures.len() <= retries,
                        "job {id} failed transiently {} times, {retries} expected: {failures:?}",
                        failures.len()
                    );
                }
                other => {
                    assert_eq!(
                        failures.len(),
                        retries,
                        "job {id}: transient failures {failures:?}"
                    );
                    return other;
                }
            }
        }
        panic!("job {id} did not finish in 50 runs");
    }

    /// Claims `id` for `owner` with `token`, the lease ending `lease` from now (as a worker
    /// pulling it from the queue).
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        token: &str,
        lease: chrono::Duration,
    ) -> Option<JobRecord> {
        claim(&self.db, id, owner, token, lease).await
    }

    /// The job's ledger row.
    pub async fn job(&self, id: &str) -> JobRecord {
        ledger::get(&self.db, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no job {id}"))
    }

    /// Waits (polling every 2 ms) until the job has committed `batches` batches; fails after
    /// `limit`.
    pub async fn wait_for_batches(&self, id: &str, batches: i64, limit: Duration) {
        let started = std::time::Instant::now();
        while self.job(id).await.batches < batches {
            assert!(
                started.elapsed() < limit,
                "the job never committed {batches} batches"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The job's state, attempts and last error, from the ledger.
    pub async fn state(&self, id: &str) -> (String, i64, Option<String>) {
        job_state(&self.test, id).await
    }

    /// The job ended `state` after exactly `attempts` claims, and no error was recorded.
    pub async fn assert_clean(&self, id: &str, state: JobState, attempts: i64) {
        assert_clean(&self.test, id, state, attempts).await;
    }

    /// Timestamp literal for the test's own SQL, in the backend's storage form.
    pub fn ts(&self, iso: &str) -> String {
        match self.test.backend {
            Backend::Postgres => format!("TIMESTAMPTZ '{iso}+00'"),
            Backend::Sqlite => format!("'{iso}'"),
            Backend::MySql => format!("TIMESTAMP '{iso}'"),
        }
    }

    /// The `events` table before a run.
    pub async fn snapshot(&self) -> TableSnapshot {
        self.test.snapshot_events().await
    }

    /// Runs `id` to its end (no retry), proves it `done` after one attempt, and proves the
    /// invariants: exactly `expected` removed in batches of at most `max_batch`.
    pub async fn run_and_check(
        &self,
        id: &str,
        before: &TableSnapshot,
        expected: &std::collections::BTreeSet<String>,
        removal: Removal,
        max_batch: i64,
    ) {
        assert_eq!(self.run_to_end(id).await, RunOutcome::Done);
        self.assert_clean(id, JobState::Done, 1).await;
        before
            .assert_removed_exactly(&self.test, expected, removal, max_batch)
            .await;
    }
}

/// Claims `id` as a queue worker would.
pub async fn claim(
    db: &Database,
    id: &str,
    owner: &str,
    token: &str,
    lease: chrono::Duration,
) -> Option<JobRecord> {
    let now = Utc::now();
    let lease = ledger::Lease {
        id,
        owner,
        token,
        now,
        lease_until: now + lease,
    };
    ledger::claim(db, &lease, ClaimFrom::Queue).await.unwrap()
}

/// A job's state, attempts and last error, read with plain SQL.
pub async fn job_state(test: &TestDatabase, id: &str) -> (String, i64, Option<String>) {
    let rows = test
        .optional_strings(&format!(
            "SELECT state, {}, last_error FROM reaper_jobs WHERE id = '{id}'",
            test.as_text("attempts")
        ))
        .await;
    assert_eq!(rows.len(), 1, "no job {id} in the ledger");
    let row = &rows[0];
    (
        row[0].clone().unwrap(),
        row[1].as_deref().unwrap().parse().unwrap(),
        row[2].clone(),
    )
}

/// The job ended `state` after exactly `attempts` claims, and no error was recorded.
pub async fn assert_clean(test: &TestDatabase, id: &str, state: JobState, attempts: i64) {
    let (actual, claims, error) = job_state(test, id).await;
    assert_eq!(
        (actual.as_str(), claims, error.as_deref()),
        (state.as_str(), attempts, None),
        "job {id}: state, attempts, last error"
    );
}
