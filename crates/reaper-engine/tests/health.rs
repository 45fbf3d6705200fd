//! Throttling from the database's health against real servers: replica lag on a PostgreSQL
//! streaming replica and a MariaDB replica the tests start themselves, lag produced for real
//! (replay paused; the replica's SQL thread held on a row lock) — batches pause while it is over
//! the threshold, resume after, a critical level stops the job resumably, and an unreachable
//! replica counts as exceeded; load (sessions kept busy) and lock waits reaper causes (an
//! application session blocked by a PostgreSQL batch held open before its commit; on MariaDB,
//! where the signal knows reaper's sessions by their user, by a transaction of reaper's user).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reaper_core::config::{DatabaseConfig, HealthConfig};
use reaper_core::health::{Reading, Reason, Signal, Verdict};
use reaper_core::lifecycle::JobState;
use reaper_core::span::Span;
use reaper_core::sql::Backend;
use reaper_engine::health::HealthGate;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_testkit::engine::{EngineTest as Setup, erase_tenant, job, settings};
use reaper_testkit::{PrivateMariaDb, PrivatePostgres, TestDatabase};
use sea_orm::{ConnectionTrait, TransactionTrait};

/// The gate `health` (the JSON of `[database.health]`) describes for the database at `url`.
async fn gate(url: &str, health: serde_json::Value) -> Arc<HealthGate> {
    let health: HealthConfig = serde_json::from_value(health).unwrap();
    let config = DatabaseConfig {
        url: url.to_owned(),
        max_connections: 2,
        statement_timeout: Span::from_secs(30),
        lock_timeout: Span::from_millis(50),
        health: Some(health),
    };
    Arc::new(HealthGate::connect(&config).await.unwrap())
}

/// Worker settings with `gate`.
fn gated(gate: &Arc<HealthGate>) -> RunSettings {
    RunSettings {
        health: gate.clone(),
        ..settings()
    }
}

/// Polls `condition` every 50 ms until it holds; fails naming `what` after `limit`.
async fn until<F: Future<Output = bool>>(what: &str, limit: Duration, condition: impl Fn() -> F) {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Four sessions of `url` each running `sleep_sql` (a few seconds of real load).
fn busy_sessions(url: &str, sleep_sql: &'static str) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let conn = sea_orm::Database::connect(&url).await.unwrap();
                conn.execute_unprepared(sleep_sql).await.unwrap();
            })
        })
        .collect()
}

/// A job erasing tenant 1 under `gate` while the `busy` sessions run: no batch in its first
/// second, and done once they end.
async fn no_batch_until_the_sessions_end(
    s: &Setup,
    gate: &Arc<HealthGate>,
    busy: Vec<tokio::task::JoinHandle<()>>,
) {
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    let with_gate = gated(gate);
    let outcome = run_beside(s, &id, &with_gate, async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(
            batches(s, &id).await,
            0,
            "no batch while the database is busy"
        );
    })
    .await;
    for task in busy {
        task.await.unwrap();
    }
    assert_eq!(outcome, RunOutcome::Done, "resumed once the sessions ended");
}

/// The gate's last reading of `signal`.
async fn reading(gate: &HealthGate, signal: Signal) -> Option<Reading> {
    gate.last_readings().await.get(&signal).cloned()
}

/// Whether the gate, read now for `target`, holds its batches for `reason`.
async fn holds_for(gate: &HealthGate, reason: Reason) -> bool {
    let verdict = gate.check("events").await;
    matches!(verdict, Verdict::Pause { reasons, .. } if reasons.contains(&reason))
}

/// Runs `id` with `settings` while `meanwhile` runs, as a worker would beside the rest of the
/// world; the run's outcome.
async fn run_beside(
    s: &Setup,
    id: &str,
    settings: &RunSettings,
    meanwhile: impl Future<Output = ()>,
) -> RunOutcome {
    let (outcome, ()) = tokio::join!(s.run_with(id, settings, &|| false), meanwhile);
    outcome
}

/// The job's batches so far, from the ledger.
async fn batches(s: &Setup, id: &str) -> i64 {
    s.job(id).await.batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replica_lag_pauses_batches_then_resumes_and_a_critical_lag_stops_resumably() {
    let primary = PrivatePostgres::start();
    let replica_server = primary.start_replica();
    let s = Setup::on(
        TestDatabase::postgres_on(primary.admin_url.clone()).await,
        2_000,
        Span::from_millis(50),
    )
    .await;
    let replica_url = replica_server.url_of(database_name(&s));
    let replica = ReplicaConnection::connect(&replica_url).await;
    let gate = lag_gate(&s, &replica_url).await;
    // Replay paused, writes on the primary wait on the replica: real lag, growing.
    let lag = ReplayPaused(&replica);
    lag_pauses_then_stops_resumably(&s, &gate, &lag).await;
    until(
        "the replica replayed the purge",
        Duration::from_secs(20),
        || async { replica.events().await == s.test.int("SELECT count(*) FROM events").await },
    )
    .await;
}

/// PostgreSQL's lag: the replica's replay paused.
struct ReplayPaused<'a>(&'a ReplicaConnection);

impl Lagging for ReplayPaused<'_> {
    type Held = ();

    async fn fall_behind(&self, _: &Setup, _: i64) {
        self.0.exec("SELECT pg_wal_replay_pause()").await;
    }

    async fn catch_up(&self, (): ()) {
        self.0.exec("SELECT pg_wal_replay_resume()").await;
    }
}

/// How a test makes its replica fall behind for real, and lets it catch up.
trait Lagging {
    /// What keeps the replica behind until it is given back.
    type Held;

    /// Starts the lag; `row` is an `events` row the test may touch to produce it.
    async fn fall_behind(&self, s: &Setup, row: i64) -> Self::Held;

    /// Ends the lag.
    async fn catch_up(&self, held: Self::Held);
}

/// The database's name in the test's URL (the replica has it under the same name).
fn database_name(s: &Setup) -> &str {
    s.test.url.rsplit('/').next().unwrap_or_default()
}

/// Waits until the replica at `replica_url` has the fixture; a gate pausing above 2 s of lag and
/// stopping above 6 s, in step with it.
async fn lag_gate(s: &Setup, replica_url: &str) -> Arc<HealthGate> {
    until(
        "the replica has the fixture",
        Duration::from_secs(30),
        || async { ReplicaConnection::connect(replica_url).await.events().await == 2_000 },
    )
    .await;
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms", "stop_for": "1s",
            "replica_lag": {"replicas": [replica_url], "pause_above": "2s", "stop_above": "6s"}}),
    )
    .await;
    assert_eq!(gate.check("events").await, Verdict::Go, "a replica in step");
    gate
}

/// What replica lag does to a job, on either backend: over the pause level no batch runs and
/// the job resumes once the replica catches up; over the critical level the job stops for now,
/// pending with its attempt given back, and finishes after `stop_for` once the lag is gone.
async fn lag_pauses_then_stops_resumably(s: &Setup, gate: &Arc<HealthGate>, lag: &impl Lagging) {
    let held = lag.fall_behind(s, 2).await;
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    until("the lag passes 2s", Duration::from_secs(20), || async {
        holds_for(gate, Reason::Over(Signal::ReplicaLag)).await
    })
    .await;
    let with_gate = gated(gate);
    let outcome = run_beside(s, &id, &with_gate, async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(batches(s, &id).await, 0, "no batch while the lag is over");
        lag.catch_up(held).await;
    })
    .await;
    assert_eq!(
        outcome,
        RunOutcome::Done,
        "resumed once the replica caught up"
    );
    assert_eq!(
        s.test
            .int("SELECT count(*) FROM events WHERE tenant_id = 1")
            .await,
        0
    );

    let held = lag.fall_behind(s, 3).await;
    let id = s.submit(erase_tenant(2, serde_json::json!({})), 5).await;
    until("the lag passes 6s", Duration::from_secs(30), || async {
        gate.check("events").await;
        matches!(reading(gate, Signal::ReplicaLag).await, Some(Reading::Value(lag)) if lag > 6.5)
    })
    .await;
    let outcome = s.run_with(&id, &with_gate, &|| false).await;
    let RunOutcome::Throttled { reason, .. } = outcome else {
        panic!("stopped for the lag, not {outcome:?}")
    };
    assert!(
        reason.contains("replica_lag") && reason.contains("critical level 6.0s"),
        "{reason}"
    );
    let record = s.job(&id).await;
    assert_eq!(
        (record.state.as_str(), record.attempts, record.batches),
        ("pending", 0, 0)
    );
    assert_eq!(record.last_error.as_deref(), Some(reason.as_str()));
    assert!(record.run_after.is_some_and(|at| at > chrono::Utc::now()));
    lag.catch_up(held).await;
    until("the replica caught up", Duration::from_secs(20), || async {
        matches!(gate.check("events").await, Verdict::Go)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // stop_for
    assert_eq!(
        s.run_with(&id, &with_gate, &|| false).await,
        RunOutcome::Done
    );
    let (state, attempts, _) = s.state(&id).await;
    assert_eq!((state.as_str(), attempts), (JobState::Done.as_str(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_replica_counts_as_exceeded_and_holds_every_batch() {
    let s = Setup::new(Backend::Postgres, 500).await;
    let name = database_name(&s);
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nobody.local_addr().unwrap().port();
    drop(nobody);
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms",
            "replica_lag": {"replicas": [format!("postgres://postgres@127.0.0.1:{port}/{name}")],
                "pause_above": "5s", "stop_above": "10s"}}),
    )
    .await;
    let verdict = gate.check("events").await;
    assert!(
        matches!(&verdict, Verdict::Pause { reasons, why } if reasons == &[Reason::Unknown] && why.contains("unknown")),
        "{verdict:?}"
    );
    let id = s.submit(erase_tenant(1, serde_json::json!({})), 5).await;
    let with_gate = gated(&gate);
    let started = Instant::now();
    let outcome = s
        .run_with(&id, &with_gate, &|| {
            started.elapsed() > Duration::from_millis(1_500)
        })
        .await;
    assert_eq!(
        outcome,
        RunOutcome::Continue,
        "stopped while held, not failed"
    );
    assert_eq!(batches(&s, &id).await, 0);
    assert_eq!(with_gate.progress.rows.load(Ordering::Relaxed), 0);
    let (state, attempts, error) = s.state(&id).await;
    assert_eq!((state.as_str(), attempts, error), ("pending", 0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_load_pauses_batches_until_the_busy_sessions_end() {
    let s = Setup::new(Backend::Postgres, 1_000).await;
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms", "load": {"pause_above": 2}}),
    )
    .await;
    assert_eq!(gate.check("events").await, Verdict::Go);
    let busy = busy_sessions(&s.test.url, "SELECT pg_sleep(3)");
    until(
        "four busy sessions count",
        Duration::from_secs(10),
        || async { holds_for(&gate, Reason::Over(Signal::Load)).await },
    )
    .await;
    assert!(matches!(reading(&gate, Signal::Load).await, Some(Reading::Value(n)) if n >= 3.0));
    no_batch_until_the_sessions_end(&s, &gate, busy).await;
    assert_eq!(
        s.test
            .int("SELECT count(*) FROM events WHERE tenant_id = 1")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_s_live_thresholds_make_a_configured_signal_stricter_for_one_target() {
    let s = Setup::new(Backend::Postgres, 10).await;
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms", "load": {"pause_above": 50}}),
    )
    .await;
    let busy = busy_sessions(&s.test.url, "SELECT pg_sleep(2)");
    until(
        "four busy sessions count",
        Duration::from_secs(10),
        || async {
            gate.check("events").await;
            matches!(reading(&gate, Signal::Load).await, Some(Reading::Value(n)) if n >= 3.0)
        },
    )
    .await;
    let stricter = std::collections::BTreeMap::from([("load.pause_above".to_owned(), 2.0)]);
    let looser = std::collections::BTreeMap::from([("load.pause_above".to_owned(), 500.0)]);
    // The configured threshold (50) lets the batches go; the operator's 2 holds them, for
    // the target it was set on only; a looser value changes nothing.
    assert_eq!(gate.check("events").await, Verdict::Go);
    assert!(matches!(
        gate.check_under("events", &stricter).await,
        Verdict::Pause { ref reasons, .. } if reasons == &[Reason::Over(Signal::Load)]
    ));
    assert_eq!(gate.check_under("events", &looser).await, Verdict::Go);
    assert_eq!(gate.check("other").await, Verdict::Go);
    for task in busy {
        task.await.unwrap();
    }
    until("the sessions ended", Duration::from_secs(10), || async {
        gate.check_under("events", &stricter).await == Verdict::Go
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lock_waits_a_reaper_batch_causes_pause_the_batches() {
    let _scenario = fail::FailScenario::setup();
    let s = Setup::new(Backend::Postgres, 2_000).await;
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms", "lock_waits": {"pause_above": 0}}),
    )
    .await;
    assert_eq!(gate.check("events").await, Verdict::Go);
    // Job A's first batch holds its rows for 6 s before it commits; an application session
    // waits for one of them.
    let application = sea_orm::Database::connect(&s.test.url).await.unwrap();
    fail::cfg("batch::before_commit", "1*sleep(6000)").unwrap();
    let holder = s
        .submit(
            erase_tenant(1, serde_json::json!({"strategy": "keyset"})),
            5,
        )
        .await;
    let holder_run = spawn_run_apart(&s, holder);
    let holder_run = until_held(
        &s,
        holder_run,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reaper' \
         AND state = 'idle in transaction' AND query LIKE 'WITH lease AS%'",
    )
    .await;
    // Job B, on another table, waits while the application waits; A's commit ends it.
    a_job_waits_while_the_application_does(&s, &gate, application, 1, async {}).await;
    assert_eq!(holder_run.join().unwrap(), RunOutcome::Done);
    assert_eq!(gate.check("events").await, Verdict::Go, "no wait left");
}

/// `application` updates row `row` of `events`, which reaper holds, and waits; the gate then
/// reads one lock wait, and a job on `tokens` commits no batch while it lasts. `release` ends
/// the hold (or nothing, when a batch's commit will); the job is then done.
async fn a_job_waits_while_the_application_does(
    s: &Setup,
    gate: &Arc<HealthGate>,
    application: sea_orm::DatabaseConnection,
    row: i64,
    release: impl Future<Output = ()>,
) {
    let application = tokio::spawn(async move {
        application
            .execute_unprepared(&format!(
                "UPDATE events SET payload = 'app' WHERE id = {row}"
            ))
            .await
            .unwrap();
    });
    until(
        "the application waits for reaper",
        Duration::from_secs(10),
        || async { holds_for(gate, Reason::Over(Signal::LockWaits)).await },
    )
    .await;
    assert_eq!(
        reading(gate, Signal::LockWaits).await,
        Some(Reading::Value(1.0))
    );
    let id = s
        .submit(
            job(
                "tokens",
                serde_json::json!([{"column": "user_id", "op": "lt", "value": 50}]),
                serde_json::json!({}),
            ),
            5,
        )
        .await;
    let outcome = run_beside(s, &id, &gated(gate), async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(
            batches(s, &id).await,
            0,
            "no batch while reaper blocks the application"
        );
        release.await;
    })
    .await;
    application.await.unwrap();
    assert_eq!(outcome, RunOutcome::Done);
}

/// Waits until `held` (a count query) reads 1 or more: job A's batch holds its rows. Fails with A's
/// outcome if its run ended first.
async fn until_held(
    s: &Setup,
    run: std::thread::JoinHandle<RunOutcome>,
    held: &str,
) -> std::thread::JoinHandle<RunOutcome> {
    let started = Instant::now();
    while s.test.int(held).await < 1 {
        if run.is_finished() {
            panic!(
                "job A's run ended before its batch held rows: {:?}",
                run.join()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "job A's batch never held rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run
}

/// Runs job `id` once, without a gate, on a thread and runtime of its own with its own
/// connections: the fault point's sleep before its commit blocks that thread only, not the
/// test's runtime (whose I/O a blocked worker could hold up).
fn spawn_run_apart(s: &Setup, id: String) -> std::thread::JoinHandle<RunOutcome> {
    let (url, catalog) = (s.test.url.clone(), s.catalog.clone());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let db = reaper_engine::Database::connect(&DatabaseConfig {
                url,
                max_connections: 2,
                statement_timeout: Span::from_secs(30),
                lock_timeout: Span::from_millis(50),
                health: None,
            })
            .await
            .unwrap();
            runner::run_job(&db, &catalog, &id, &settings(), &|| false)
                .await
                .unwrap()
                .outcome
        })
    })
}

/// A connection to a replica's database, for the test's own reads and replication controls.
struct ReplicaConnection {
    conn: sea_orm::DatabaseConnection,
}

impl ReplicaConnection {
    async fn connect(url: &str) -> Self {
        let mut options = sea_orm::ConnectOptions::new(url.to_owned());
        options.max_connections(1).sqlx_logging(false);
        Self {
            conn: sea_orm::Database::connect(options).await.unwrap(),
        }
    }

    async fn exec(&self, sql: &str) {
        self.conn
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Rows of `events` it has, 0 before the table reached it.
    async fn events(&self) -> i64 {
        let backend = self.conn.get_database_backend();
        match self
            .conn
            .query_one_raw(sea_orm::Statement::from_string(
                backend,
                "SELECT count(*) FROM events",
            ))
            .await
        {
            Ok(Some(row)) => row.try_get_by_index::<i64>(0).unwrap_or(0),
            _ => 0,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_replica_lag_pauses_batches_then_resumes_and_a_critical_lag_stops_resumably() {
    let primary = PrivateMariaDb::start_primary();
    let replica_server = primary.start_replica();
    let s = Setup::on(
        TestDatabase::mysql_on(primary.admin_url.clone()).await,
        2_000,
        Span::from_millis(50),
    )
    .await;
    let replica_url = replica_server.url_of(database_name(&s));
    let gate = lag_gate(&s, &replica_url).await;
    let replica = sea_orm::Database::connect(replica_url.as_str())
        .await
        .unwrap();
    lag_pauses_then_stops_resumably(&s, &gate, &RowHeldOnReplica(&replica)).await;

    // Replication stopped: the lag is unknown, which holds the batches too.
    replica
        .execute_unprepared("STOP REPLICA SQL_THREAD")
        .await
        .unwrap();
    until("the lag is unknown", Duration::from_secs(10), || async {
        holds_for(&gate, Reason::Unknown).await
    })
    .await;
}

/// MariaDB's lag: a transaction on the replica holds a row the next replicated change needs,
/// so the SQL thread waits on it while the primary goes on.
struct RowHeldOnReplica<'a>(&'a sea_orm::DatabaseConnection);

impl Lagging for RowHeldOnReplica<'_> {
    type Held = sea_orm::DatabaseTransaction;

    async fn fall_behind(&self, s: &Setup, row: i64) -> Self::Held {
        let hold = self.0.begin().await.unwrap();
        hold.execute_unprepared(&format!("SELECT * FROM events WHERE id = {row} FOR UPDATE"))
            .await
            .unwrap();
        s.test
            .exec(&format!(
                "UPDATE events SET payload = 'moved' WHERE id = {row}"
            ))
            .await;
        hold
    }

    async fn catch_up(&self, held: Self::Held) {
        held.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_load_and_lock_waits_on_reaper_s_user_pause_the_batches() {
    let server = PrivateMariaDb::start();
    // The application's own user: lock waits count only where reaper's user blocks another.
    server.cli(&[
        "-e",
        "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
         CREATE USER app@'%'; GRANT ALL ON *.* TO app@'%'",
    ]);
    let s = Setup::on(
        TestDatabase::mysql_on(server.admin_url.clone()).await,
        2_000,
        Span::from_millis(50),
    )
    .await;
    let app_url = s.test.url.replacen("root@", "app@", 1);
    let gate = gate(
        &s.test.url,
        serde_json::json!({"sample_every": "100ms",
            "load": {"pause_above": 2}, "lock_waits": {"pause_above": 0}}),
    )
    .await;
    assert_eq!(gate.check("events").await, Verdict::Go);

    // Load: four sessions busy for 3 s.
    let busy = busy_sessions(&app_url, "SELECT SLEEP(3)");
    until(
        "four busy sessions count",
        Duration::from_secs(10),
        || async { holds_for(&gate, Reason::Over(Signal::Load)).await },
    )
    .await;
    no_batch_until_the_sessions_end(&s, &gate, busy).await;

    // Lock waits: a session of reaper's database user holds a row in a transaction, as a
    // batch does until it commits (on MariaDB the signal knows reaper's sessions by their
    // user); the application waits for it.
    let reaper_side = sea_orm::Database::connect(s.test.url.as_str())
        .await
        .unwrap();
    let hold = reaper_side.begin().await.unwrap();
    hold.execute_unprepared("SELECT * FROM events WHERE id = 2 FOR UPDATE")
        .await
        .unwrap();
    let application = sea_orm::Database::connect(&app_url).await.unwrap();
    a_job_waits_while_the_application_does(&s, &gate, application, 2, async {
        hold.rollback().await.unwrap();
    })
    .await;
}
