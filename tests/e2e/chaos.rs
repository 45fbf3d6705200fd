//! The chaos suite (issue 17; the table is `docs/chaos.md`): real daemons on a test-owned
//! PostgreSQL database and a private `redis-server`, under faults injected from outside —
//! kill -9 at random moments, a worker that dies on every attempt, Redis paused past its
//! timeouts, an audit insert that raises, the database turned read-only, the same queue
//! message delivered twice, a rolling restart of three daemons while a retention policy ticks
//! every second. Each scenario first proves the fault hit where it claims, then runs one
//! checker ([`Settled`]) over every table it touched: the rows of the snapshot removed exactly once and audited exactly once, nothing
//! else changed (`TableSnapshot`), every job in exactly one terminal state within a bounded
//! time, no session left idle in a transaction, the Redis server's memory bounded.
//!
//! These tests form the nextest group `chaos` (`.config/nextest.toml`): they run one at a time,
//! beside the rest of the suite.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use rand::{Rng, SeedableRng};
use reaper_testkit::{
    PrivateMariaDb, PrivatePostgres, PrivateRedis, Removal, SmallDisk, TableSnapshot, TestDatabase,
};
use sea_orm::{ConnectionTrait, SqliteTransactionMode, TransactionOptions, TransactionTrait};
use serde_json::{Value, json};

use crate::Deployment;
use crate::daemon::{Api, Daemon, RedisDeployment, free_port, reaper_sessions, wait_mid_batch};

/// Every batch takes at least this long (a fault point), so faults land mid-batch.
const SLOW_BATCHES: (&str, &str) = ("FAILPOINTS", "batch::before_commit=sleep(100)");

/// The seed of the kill loop's timings: `CHAOS_SEED` replays a run, else a fixed one.
const DEFAULT_SEED: u64 = 0x5eed_0017;

/// At most this much memory on the private Redis after a scenario (an empty server uses ~1 MB).
const REDIS_MEMORY_LIMIT: i64 = 16 * 1024 * 1024;

fn erase(tenants: &[i64], batch_size: i64) -> Value {
    json!({
        "target": "events",
        "filter": {"all": [{"column": "tenant_id", "op": "in", "value": tenants}]},
        "batch_size": batch_size,
        "requested_by": "chaos",
        "reason": "chaos",
    })
}

/// A job's state, attempts and last error, from the ledger (no daemon needed).
async fn ledger_job(test: &TestDatabase, id: &str) -> (String, i64, Option<String>) {
    reaper_testkit::engine::job_state(test, id).await
}

/// Waits until job `id` is `done` or `dead` (a daemon without the chaos checker: SQLite,
/// MariaDB); its (state, attempts, last error).
async fn wait_finished(
    test: &TestDatabase,
    id: &str,
    limit: Duration,
) -> (String, i64, Option<String>) {
    let started = Instant::now();
    loop {
        let job = ledger_job(test, id).await;
        if ["done", "dead"].contains(&job.0.as_str()) {
            return job;
        }
        assert!(
            started.elapsed() < limit,
            "not finished within {limit:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a scenario must leave behind, checked by [`Settled::check`].
struct Settled<'a> {
    test: &'a TestDatabase,
    redis: &'a PrivateRedis,
    jobs: Vec<String>,
    /// How long the jobs may take to reach a terminal state once the faults stopped.
    within: Duration,
}

impl Settled<'_> {
    /// Waits until every job is in exactly one terminal state; then checks that no session of
    /// the database is idle in a transaction and that Redis' memory is bounded. The jobs'
    /// final (state, attempts, last error).
    async fn check(&self) -> Vec<(String, i64, Option<String>)> {
        let started = Instant::now();
        let finals = loop {
            let mut finals = Vec::new();
            for id in &self.jobs {
                let rows = self
                    .test
                    .int(&format!(
                        "SELECT count(*) FROM reaper_jobs WHERE id = '{id}'"
                    ))
                    .await;
                assert_eq!(rows, 1, "job {id}: {rows} ledger rows");
                finals.push(ledger_job(self.test, id).await);
            }
            if finals
                .iter()
                .all(|(state, _, _)| ["done", "dead", "cancelled"].contains(&state.as_str()))
            {
                break finals;
            }
            assert!(
                started.elapsed() < self.within,
                "jobs not all finished within {:?}: {finals:?}",
                self.within
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("settled in {:?}: {finals:?}", started.elapsed());
        // No session idle in a transaction (a killed client's session ends with its socket).
        let started = Instant::now();
        loop {
            let idle = self
                .test
                .int(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
                )
                .await;
            if idle == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{idle} sessions left idle in a transaction"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let memory = redis_memory(self.redis);
        eprintln!(
            "redis: used_memory {memory} bytes, {} keys",
            self.redis.keys()
        );
        assert!(
            memory < REDIS_MEMORY_LIMIT,
            "Redis uses {memory} bytes (limit {REDIS_MEMORY_LIMIT})"
        );
        finals
    }
}

/// `INFO memory`'s `used_memory`.
fn redis_memory(redis: &PrivateRedis) -> i64 {
    let mut connection = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn redis_connection(redis: &PrivateRedis) -> redis::Connection {
    redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A daemon of `d` with its API on a port of its own (several may run at once).
fn another_daemon(d: &RedisDeployment, env: &[(&str, &str)]) -> (Daemon, u16) {
    daemon_of(&d.deployment, env)
}

/// A daemon of `deployment` (either queue) with its API on a port of its own.
fn daemon_of(deployment: &Deployment, env: &[(&str, &str)]) -> (Daemon, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.push(("REAPER_API__LISTEN", listen.as_str()));
    (
        Daemon::start(&deployment.config, deployment.dir.path(), port, &env),
        port,
    )
}

/// Adds `line` to the config file's `[worker]` table: for the CLI that submits (a job's
/// `max_attempts` is fixed when it is accepted) and for every daemon.
fn worker_setting(deployment: &Deployment, line: &str) {
    let config = &deployment.config;
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("[worker]\n"), "{text}");
    std::fs::write(
        config,
        text.replacen("[worker]\n", &format!("[worker]\n{line}\n"), 1),
    )
    .unwrap();
}

/// A scenario's deployment: a private Redis, a PostgreSQL database with `events`, the keys the
/// scenario's jobs must remove (the rows of some tenants) and the table as it was before.
struct Scenario {
    redis: PrivateRedis,
    d: RedisDeployment,
    expected: BTreeSet<String>,
    before: TableSnapshot,
}

impl Scenario {
    /// `rows` events; the jobs must remove exactly the rows of `tenants`; `worker` lines are
    /// added to the config's `[worker]` table.
    async fn new(rows: u32, tenants: &[i64], worker: &[&str]) -> Self {
        let test = TestDatabase::postgres().await;
        Self::on(test, PrivateRedis::start(), rows, tenants, worker).await
    }

    /// The scenario on `test` (a database on a cluster the test owns) and `redis`.
    async fn on(
        test: TestDatabase,
        redis: PrivateRedis,
        rows: u32,
        tenants: &[i64],
        worker: &[&str],
    ) -> Self {
        let d = RedisDeployment::on(test, rows, Some(&redis)).await;
        for line in worker {
            worker_setting(&d.deployment, line);
        }
        let expected = keys_of(&d.deployment.test, tenants).await;
        let before = d.deployment.test.snapshot_events().await;
        Self {
            redis,
            d,
            expected,
            before,
        }
    }

    fn test(&self) -> &TestDatabase {
        &self.d.deployment.test
    }

    /// The one checker after the faults: [`Settled::check`] on `jobs`, then the snapshot's
    /// proof that exactly the expected rows were removed, each audited once, in batches of at
    /// most `max_batch`. The jobs' final (state, attempts, last error).
    async fn settle(
        &self,
        jobs: Vec<String>,
        within: Duration,
        max_batch: i64,
    ) -> Vec<(String, i64, Option<String>)> {
        let test = self.test();
        let finals = Settled {
            test,
            redis: &self.redis,
            jobs,
            within,
        }
        .check()
        .await;
        self.before
            .assert_removed_exactly(test, &self.expected, Removal::Hard, max_batch)
            .await;
        finals
    }

    /// [`Scenario::settle`], every job `done` with no error.
    async fn settle_done(
        &self,
        jobs: Vec<String>,
        within: Duration,
        max_batch: i64,
    ) -> Vec<(String, i64, Option<String>)> {
        let finals = self.settle(jobs, within, max_batch).await;
        for (state, _, error) in &finals {
            assert_eq!((state.as_str(), error), ("done", &None), "{finals:?}");
        }
        finals
    }

    /// [`Scenario::settle`] for one job in batches of 20 that a fault failed at least once:
    /// `done` after two attempts or more. Its `last_error` is the fault's transient error when
    /// the worker could record the retry (the database back before its lease ran out), or none
    /// when the fault cut the worker off and the job was taken over after its lease.
    async fn settle_retried(&self, id: String) {
        let finals = self.settle(vec![id], Duration::from_secs(60), 20).await;
        let (state, attempts, error) = &finals[0];
        assert_eq!(state, "done", "{finals:?}");
        assert!(
            error
                .as_deref()
                .is_none_or(|error| error.starts_with("transient")),
            "{finals:?}"
        );
        assert!(*attempts >= 2, "never retried: {finals:?}");
    }
}

/// While a fault holds: no row of `events` removed for a second. The rows left.
async fn nothing_removed_for_a_second(test: &TestDatabase) -> i64 {
    let left = test.int("SELECT count(*) FROM events").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        test.int("SELECT count(*) FROM events").await,
        left,
        "rows removed while the fault held"
    );
    left
}

/// Keys matching any of `tenants` (`tenant_id = id % 10`).
async fn keys_of(test: &TestDatabase, tenants: &[i64]) -> BTreeSet<String> {
    let list: Vec<String> = tenants.iter().map(i64::to_string).collect();
    test.ids("events", &format!("tenant_id IN ({})", list.join(", ")))
        .await
}

/// Submits each job through the ledger and the queue (`reaper enqueue`, no daemon needed).
fn enqueue_all(d: &RedisDeployment, jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|job| d.deployment.enqueue(job)).collect()
}

/// kill -9 at random moments, at least 30 times, while four jobs run in slow batches on two
/// workers; then one daemon finishes them. Every job ends `done`, every row of its tenants
/// removed and audited exactly once. The timings come from a seed, printed; `CHAOS_SEED=N`
/// replays them; `CHAOS_KILLS=N` kills more often.
#[tokio::test]
async fn chaos_kill_9_at_random_moments_loses_and_repeats_nothing() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .map(|seed| seed.parse().expect("CHAOS_SEED must be a number"))
        .unwrap_or(DEFAULT_SEED);
    let kills: usize = std::env::var("CHAOS_KILLS")
        .ok()
        .map(|kills| kills.parse().expect("CHAOS_KILLS must be a number"))
        .unwrap_or(30);
    eprintln!("chaos kill loop: CHAOS_SEED={seed} CHAOS_KILLS={kills}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let tenants = [1, 2, 3, 4];
    let s = Scenario::new(8_000, &tenants, &["max_attempts = 1000"]).await;
    let (d, test, expected) = (&s.d, s.test(), &s.expected);
    let ids = enqueue_all(
        d,
        &tenants
            .iter()
            .map(|tenant| erase(&[*tenant], 10))
            .collect::<Vec<_>>(),
    );
    let env = [
        ("FAILPOINTS", "batch::before_commit=sleep(150)"),
        ("REAPER_WORKER__LEASE", "2s"),
        ("REAPER_WORKER__SLICE", "1s"),
    ];
    let (mut mid_batch, mut mid_run) = (0, 0);
    for kill in 0..kills {
        let mut daemon = d.start(&env);
        let wait = Duration::from_millis(rng.random_range(100..1_500));
        tokio::time::sleep(wait).await;
        // Where the kill lands: a batch inside its transaction, or a claimed job between
        // batches, or neither (starting up, waiting for a lease to expire).
        let in_batch = reaper_sessions(test, "idle in transaction").await;
        let running = test
            .int("SELECT count(*) FROM reaper_jobs WHERE state = 'running'")
            .await;
        daemon.kill();
        eprintln!("kill {kill}: after {wait:?}, {in_batch} batches open, {running} jobs running");
        if in_batch > 0 {
            mid_batch += 1;
        }
        if running > 0 {
            mid_run += 1;
        }
    }
    let progress = test
        .int("SELECT CAST(COALESCE(sum(rows_deleted), 0) AS bigint) FROM reaper_jobs")
        .await;
    eprintln!(
        "{kills} kills: {mid_batch} inside a batch, {mid_run} with a job running; {progress} of {} rows removed meanwhile",
        expected.len()
    );
    assert!(
        mid_batch * 4 >= kills && mid_run * 2 >= kills,
        "too few kills hit a running job ({mid_batch} mid-batch, {mid_run} mid-run of {kills})"
    );
    assert!(
        progress > 0 && progress < expected.len() as i64,
        "the jobs did not run between kills ({progress} rows)"
    );
    let _last = d.start(&env);
    let finals = s.settle_done(ids, Duration::from_secs(60), 10).await;
    let attempts: i64 = finals.iter().map(|job| job.1).sum();
    assert!(
        attempts > finals.len() as i64,
        "no job was ever interrupted: {finals:?}"
    );
}

/// A poison job: its worker dies (kill -9, as a segfault would) inside a batch on every
/// attempt. With `max_attempts` 3 it ends `dead` with `attempts` 3 (the attempts are counted
/// at claim, so the crashes count; the claim that finds them used up counts nothing), nothing
/// of it committed; a healthy job submitted afterwards still runs.
#[tokio::test]
async fn chaos_a_job_that_kills_its_worker_every_time_ends_dead_after_max_attempts() {
    let s = Scenario::new(2_000, &[3], &["max_attempts = 3"]).await;
    let (d, test) = (&s.d, s.test());
    let env = [
        // Every batch of the poison job stays open until the worker is killed.
        ("FAILPOINTS", "batch::before_commit=sleep(5000)"),
        ("REAPER_WORKER__LEASE", "2s"),
        ("REAPER_WORKER__SLICE", "1s"),
    ];
    let ids = enqueue_all(d, &[erase(&[1], 20)]);
    let poison = &ids[0];
    for attempt in 1..=3 {
        let mut daemon = d.start(&env);
        let started = Instant::now();
        // Claimed for this attempt, and its batch open.
        loop {
            let (state, attempts, _) = ledger_job(test, poison).await;
            if state == "running"
                && attempts == attempt
                && reaper_sessions(test, "idle in transaction").await > 0
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "attempt {attempt} never opened a batch: {state} {attempts}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon.kill();
        eprintln!("attempt {attempt}: killed mid-batch");
    }
    // A daemon that does not crash: the next claim finds the attempts used up.
    let (daemon, port) = another_daemon(d, &[]);
    let api = Api::at(port);
    let dead = api.wait_for(poison, "dead", Duration::from_secs(30)).await;
    let error = dead["last_error"].as_str().unwrap();
    assert!(error.contains("3 attempts"), "{dead}");
    let healthy_id = api.submit(&erase(&[3], 50)).await;
    api.wait_done(&healthy_id, 1, Duration::from_secs(20)).await;
    let finals = s
        .settle(
            vec![poison.clone(), healthy_id],
            Duration::from_secs(10),
            50,
        )
        .await;
    // Three claims that crashed; the fourth found them used up, counted nothing and ran
    // nothing: attempts never exceed max_attempts.
    assert_eq!(
        (finals[0].0.as_str(), finals[0].1),
        ("dead", 3),
        "{finals:?}"
    );
    assert_eq!(dead["rows_deleted"], 0, "{dead}");
    assert_eq!(dead["batches"], 0, "{dead}");
    drop(daemon);
}

/// Redis stalled: `CLIENT PAUSE 8000 ALL` (past the 5 s response timeout) while a job runs.
/// The daemon survives or restarts its workers, the job finishes once, and a job submitted
/// after the stall is consumed (never alive but not consuming, apalis-redis#76).
#[tokio::test]
async fn chaos_redis_paused_past_its_timeouts_stalls_nothing_for_good() {
    let s = Scenario::new(2_000, &[1, 2, 5, 6], &[]).await;
    let (d, redis) = (&s.d, &s.redis);
    let daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let first = api.submit(&erase(&[1, 2], 20)).await;
    api.wait_mid_run(&first, 2).await;
    let mut control = redis_connection(redis);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(8000)
        .arg("ALL")
        .query(&mut control)
        .unwrap();
    // The pause is in effect: a command from another client waits for it.
    let probe_started = Instant::now();
    let mut probe = redis_connection(redis);
    let _: String = redis::cmd("PING").query(&mut probe).unwrap();
    let stalled = probe_started.elapsed();
    eprintln!("a PING waited {stalled:?}");
    assert!(
        stalled >= Duration::from_secs(6),
        "the pause was not in effect ({stalled:?})"
    );
    // Submitted after the stall: the daemon that started still consumes.
    let second = api.submit(&erase(&[5, 6], 20)).await;
    s.settle_done(vec![first, second], Duration::from_secs(60), 20)
        .await;
    drop(daemon);
}

/// The audit insert fails (a trigger on `reaper_audit` raises): the job ends `dead` with the
/// trigger's error and nothing is deleted; with the trigger gone, the same request completes.
#[tokio::test]
async fn chaos_a_failing_audit_insert_deletes_nothing() {
    let s = Scenario::new(1_000, &[1], &[]).await;
    let (d, test) = (&s.d, s.test());
    test.exec(
        "CREATE FUNCTION chaos_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'chaos: audit refused'; END $$; \
         CREATE TRIGGER chaos_refuse_audit BEFORE INSERT ON reaper_audit \
         FOR EACH ROW EXECUTE FUNCTION chaos_refuse_audit();",
    )
    .await;
    let daemon = d.start(&[]);
    let api = d.api();
    let refused = api.submit(&erase(&[1], 20)).await;
    let dead = api
        .wait_for(&refused, "dead", Duration::from_secs(20))
        .await;
    // The trigger raised, inside the batch.
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("chaos: audit refused"),
        "{dead}"
    );
    assert_eq!(dead["rows_deleted"], 0, "{dead}");
    s.before.assert_untouched(test).await;

    test.exec("DROP TRIGGER chaos_refuse_audit ON reaper_audit")
        .await;
    let again = api.submit(&erase(&[1], 20)).await;
    api.wait_done(&again, 1, Duration::from_secs(20)).await;
    s.settle(vec![refused, again], Duration::from_secs(10), 20)
        .await;
    drop(daemon);
}

/// Makes database `name` read-only for new sessions (or writable again), and ends reaper's
/// sessions so that its pool reconnects with the setting.
async fn read_only(test: &TestDatabase, name: &str, on: bool) {
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    test.exec(&format!("ALTER DATABASE \"{name}\" {setting}"))
        .await;
    test.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'reaper'",
    )
    .await;
}

/// The target database made read-only mid-job (`ALTER DATABASE … SET
/// default_transaction_read_only`, sessions restarted): batches fail as transient, nothing
/// half-done; made writable again, the job completes exactly once.
#[tokio::test]
async fn chaos_a_database_turned_read_only_mid_job_resumes_when_writable() {
    let s = Scenario::new(2_000, &[1, 2], &["max_attempts = 100"]).await;
    let (d, test, expected) = (&s.d, s.test(), &s.expected);
    let name = test.strings("SELECT current_database()").await.remove(0);
    let daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase(&[1, 2], 20)).await;
    api.wait_mid_run(&id, 2).await;
    read_only(test, &name, true).await;
    let line = daemon.wait_for_log(&["read-only transaction"], Duration::from_secs(20));
    eprintln!("refused while read-only: {line}");
    let left = nothing_removed_for_a_second(test).await;
    assert!(left > 2_000 - expected.len() as i64, "finished before");
    read_only(test, &name, false).await;
    s.settle_retried(id).await;
    drop(daemon);
}

/// The same queue message delivered twice (a copy of its id pushed to apalis' active list while
/// no worker polls): the job is claimed once and deletes once.
#[tokio::test]
async fn chaos_a_message_delivered_twice_deletes_once() {
    let s = Scenario::new(1_000, &[4], &[]).await;
    let (d, redis) = (&s.d, &s.redis);
    let daemon = d.start(&[]);
    daemon.freeze();
    let id = d.deployment.enqueue(&erase(&[4], 20));
    let mut connection = redis_connection(redis);
    // apalis-redis keeps a new task's id in `Q:scheduled` until a poll promotes it to
    // `Q:active`: a copy of the id in `Q:active` is a second delivery of the same message.
    let queued: Vec<String> = redis::cmd("ZRANGE")
        .arg("reaper-private:scheduled")
        .arg(0)
        .arg(-1)
        .query(&mut connection)
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let _: i64 = redis::cmd("RPUSH")
        .arg("reaper-private:active")
        .arg(&queued[0])
        .query(&mut connection)
        .unwrap();
    let waiting = |connection: &mut redis::Connection| -> (i64, i64) {
        (
            redis::cmd("LLEN")
                .arg("reaper-private:active")
                .query(connection)
                .unwrap(),
            redis::cmd("ZCARD")
                .arg("reaper-private:scheduled")
                .query(connection)
                .unwrap(),
        )
    };
    assert_eq!(
        waiting(&mut connection),
        (1, 1),
        "the two deliveries are not queued"
    );
    daemon.signal("CONT");
    let api = d.api();
    api.wait_done(&id, 1, Duration::from_secs(20)).await;
    // Both deliveries were taken from the queue.
    let started = Instant::now();
    loop {
        let left = waiting(&mut connection);
        if left == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{left:?} never taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finals = s.settle_done(vec![id], Duration::from_secs(10), 20).await;
    assert_eq!(finals[0].1, 1, "claimed twice: {finals:?}");
    drop(daemon);
}

/// The retention policy of the rolling restart: every second, on tenant 7's rows (no erase job
/// touches them), in batches of 10; `enabled = false` turns its schedule off.
fn rolling_policy(enabled: bool) -> String {
    format!(
        "\n[[retention]]\nname = \"{ROLLING_POLICY}\"\ntarget = \"events\"\nage_column = \"created_at\"\n\
         max_age = \"1d\"\nschedule = \"* * * * * *\"\nbatch_size = 10\nenabled = {enabled}\n\
         filter = [{{ column = \"tenant_id\", op = \"eq\", value = 7 }}]\n"
    )
}

const ROLLING_POLICY: &str = "rolling";

/// The windows named (`window=… UTC`) by the log lines of `logs` that contain `message`, each
/// as often as it is named.
fn windows_logged(logs: &str, message: &str) -> Vec<DateTime<Utc>> {
    logs.lines()
        .filter(|line| line.contains(message))
        .map(|line| {
            let named = line
                .split("window=")
                .nth(1)
                .and_then(|rest| rest.split(" UTC").next())
                .unwrap_or_else(|| panic!("no window in {line}"));
            chrono::NaiveDateTime::parse_from_str(named, "%Y-%m-%d %H:%M:%S")
                .unwrap_or_else(|error| panic!("{named}: {error}"))
                .and_utc()
        })
        .collect()
}

/// The ledger's windows of the rolling policy (from the keys `policy:NAME:WINDOW`) and the
/// ids of their jobs, oldest window first.
async fn policy_windows(test: &TestDatabase) -> Vec<(DateTime<Utc>, String)> {
    let rows = test
        .optional_strings(&format!(
            "SELECT idempotency_key, id FROM reaper_jobs WHERE policy = '{ROLLING_POLICY}' \
             ORDER BY idempotency_key"
        ))
        .await;
    rows.into_iter()
        .map(|row| {
            let key = row[0].clone().unwrap_or_default();
            let window = key
                .strip_prefix(&format!("policy:{ROLLING_POLICY}:"))
                .and_then(|window| DateTime::parse_from_rfc3339(window).ok())
                .unwrap_or_else(|| panic!("not a window key: {key}"));
            (window.to_utc(), row[1].clone().unwrap_or_default())
        })
        .collect()
}

/// Stops `daemon` with SIGTERM: it must exit 0 within 10 s. How long it took.
fn stop(daemon: &mut Daemon, what: &str) -> Duration {
    daemon.signal("TERM");
    let (status, took) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{what}: {status}");
    took
}

/// A rolling restart of three daemons (each in turn: SIGTERM, exit 0, a new one started) twice
/// over while six erase jobs run and a retention policy ticks every second on rows they do not
/// touch. Then the policy is turned off and one daemon drains what is left. Every erase job and
/// every window's job done, every row of the six tenants and of the policy's removed and
/// audited exactly once (one snapshot); every window between the policy's first and last
/// covered by exactly one job or logged as skipped behind an unfinished run, none submitted
/// twice.
#[tokio::test]
async fn chaos_a_rolling_restart_of_three_daemons_finishes_every_job_once() {
    let erased = [0, 1, 2, 3, 4, 5];
    let s = Scenario::new(10_000, &[0, 1, 2, 3, 4, 5, 7], &[]).await;
    let (d, test) = (&s.d, s.test());
    let config = &d.deployment.config;
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, format!("{text}{}", rolling_policy(true))).unwrap();
    let env = [("FAILPOINTS", "batch::before_commit=sleep(150)")];
    let mut daemons: Vec<Daemon> = (0..3).map(|_| another_daemon(d, &env).0).collect();
    let mut stopped: Vec<Daemon> = Vec::new();
    let restarts_began = Utc::now();
    let mut ids = enqueue_all(
        d,
        &erased
            .iter()
            .map(|tenant| erase(&[*tenant], 10))
            .collect::<Vec<_>>(),
    );
    let (mut stopped_mid_run, mut stopped_mid_policy) = (0, 0);
    for round in 0..2 {
        for (slot, daemon) in daemons.iter_mut().enumerate() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let running = test
                .int("SELECT count(*) FROM reaper_jobs WHERE state = 'running' AND policy IS NULL")
                .await;
            let policy_running = test
                .int("SELECT count(*) FROM reaper_jobs WHERE state = 'running' AND policy IS NOT NULL")
                .await;
            stopped_mid_run += i64::from(running > 0);
            stopped_mid_policy += i64::from(policy_running > 0);
            let took = stop(daemon, &format!("round {round}, daemon {slot}"));
            eprintln!(
                "round {round}, daemon {slot}: stopped in {took:?} with {running} erase jobs \
                 and {policy_running} policy jobs running"
            );
            stopped.push(std::mem::replace(daemon, another_daemon(d, &env).0));
        }
    }
    let restarts_ended = Utc::now();
    assert!(
        stopped_mid_run >= 3,
        "the restarts missed the jobs ({stopped_mid_run} of 6 mid-run)"
    );
    assert!(
        stopped_mid_policy >= 1,
        "no restart stopped a daemon while a policy job ran"
    );
    // The policy runs on after the restarts until the erase jobs are done and its rows gone.
    let started = Instant::now();
    while test
        .int("SELECT count(*) FROM reaper_jobs WHERE policy IS NULL AND state <> 'done'")
        .await
        + test
            .int("SELECT count(*) FROM events WHERE tenant_id = 7")
            .await
        > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "erase jobs or the policy's rows unfinished after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (slot, daemon) in daemons.iter_mut().enumerate() {
        stop(daemon, &format!("last daemon {slot}"));
    }
    stopped.append(&mut daemons);
    // With the schedule off, one daemon finishes a window's job submitted just before the stop.
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        text.replace(&rolling_policy(true), &rolling_policy(false)),
    )
    .unwrap();
    let windows = policy_windows(test).await;
    let drain = another_daemon(d, &env).0;
    ids.extend(windows.iter().map(|(_, id)| id.clone()));
    let finals = s.settle_done(ids, Duration::from_secs(60), 10).await;
    assert_eq!(
        policy_windows(test).await,
        windows,
        "a window submitted with the schedule off"
    );
    stopped.push(drain);
    let logs: String = stopped.iter().map(Daemon::log_text).collect();
    let submitted = [
        windows_logged(&logs, "Submitted a retention window."),
        windows_logged(&logs, "Caught up on a window missed"),
    ]
    .concat();
    let skipped: BTreeSet<DateTime<Utc>> = windows_logged(&logs, "Skipped a window")
        .into_iter()
        .collect();
    let jobs: Vec<DateTime<Utc>> = windows.iter().map(|(window, _)| *window).collect();
    // No window submitted twice: one ledger job and one creating log line per window.
    let mut once: Vec<DateTime<Utc>> = submitted.clone();
    once.sort_unstable();
    assert_eq!(once, jobs, "windows created per log vs ledger jobs");
    // Every window between the first and the last is a job or was skipped, none lost.
    let (first, last) = (jobs[0], jobs[jobs.len() - 1]);
    let covered: BTreeSet<DateTime<Utc>> = jobs.iter().chain(&skipped).copied().collect();
    let mut window = first;
    while window <= last {
        assert!(
            covered.contains(&window),
            "window {window} lost: jobs {jobs:?}, skipped {skipped:?}"
        );
        window += chrono::Duration::seconds(1);
    }
    assert!(
        first <= restarts_began + chrono::Duration::seconds(2) && last >= restarts_ended,
        "the policy did not tick through the restarts ({restarts_began} to {restarts_ended}): \
         {first} to {last}"
    );
    // The policy's jobs removed its 1 000 rows between them (each audited once: the snapshot).
    let policy_rows = test
        .int(&format!(
            "SELECT CAST(COALESCE(SUM(rows_deleted), 0) AS BIGINT) FROM reaper_jobs \
             WHERE policy = '{ROLLING_POLICY}'"
        ))
        .await;
    assert_eq!(policy_rows, 1_000);
    eprintln!(
        "policy: {} windows from {first} to {last}, {} jobs, {} skipped, {stopped_mid_policy} of \
         6 stops with its job running; erase attempts {:?}",
        (last - first).num_seconds() + 1,
        jobs.len(),
        skipped.len(),
        finals
            .iter()
            .take(6)
            .map(|(_, attempts, _)| *attempts)
            .collect::<Vec<_>>()
    );
}

/// Redis restarted (the private server killed and started again on its port) while a job runs
/// and another waits in the queue: the workers reconnect, both jobs finish once. The keys
/// the server held before and after the restart.
async fn redis_restarted_mid_run(redis: PrivateRedis) -> (i64, i64) {
    let mut s = Scenario::on(
        TestDatabase::postgres().await,
        redis,
        2_000,
        &[1, 2, 3],
        &[],
    )
    .await;
    let daemon =
        s.d.start(&[SLOW_BATCHES, ("REAPER_WORKER__CONCURRENCY", "1")]);
    let api = s.d.api();
    let first = api.submit(&erase(&[1, 2], 20)).await;
    api.wait_mid_run(&first, 2).await;
    // One worker, busy: the second job's message waits in the queue.
    let second = api.submit(&erase(&[3], 20)).await;
    let before = s.redis.keys();
    s.redis.restart();
    let after = s.redis.keys();
    eprintln!("redis keys: {before} before the restart, {after} after");
    assert_eq!(
        ledger_job(s.test(), &second).await.0,
        "pending",
        "the second job ran before the restart"
    );
    s.settle_done(vec![first, second], Duration::from_secs(60), 20)
        .await;
    drop(daemon);
    (before, after)
}

/// Without its data: both the running job's and the waiting job's messages are lost; the
/// reconciler re-enqueues them from the ledger.
#[tokio::test]
async fn chaos_redis_restarted_without_its_data_mid_run_loses_no_job() {
    let (before, after) = redis_restarted_mid_run(PrivateRedis::start()).await;
    assert!(before > 0);
    assert_eq!(after, 0, "the restart kept data");
}

/// With its data (append-only file, synced on every write): the queue, the workers' in-flight
/// sets and heartbeats come back as they were; nothing runs twice.
#[tokio::test]
async fn chaos_redis_restarted_with_its_data_mid_run_loses_and_repeats_nothing() {
    let (before, after) = redis_restarted_mid_run(PrivateRedis::with_data()).await;
    assert!(
        after > 0,
        "the restart lost the data ({before} keys before)"
    );
}

/// The test-owned PostgreSQL cluster that holds both the target and the ledger is restarted
/// (`pg_ctl restart -m fast`: every session ended) and then crashed (`-m immediate`: no
/// shutdown checkpoint, crash recovery on start), each while a batch is open. Each time the
/// batch rolls back, the daemon's pool reconnects, and batches commit again; the job ends
/// `done`, every row removed and audited exactly once.
#[tokio::test]
async fn chaos_postgres_restarted_and_crashed_mid_batch_finishes_the_job_once() {
    let cluster = PrivatePostgres::start();
    let test = TestDatabase::postgres_on(cluster.admin_url.clone()).await;
    let tenants = [1, 2, 3, 4];
    let s = Scenario::on(
        test,
        PrivateRedis::start(),
        4_000,
        &tenants,
        &["max_attempts = 100"],
    )
    .await;
    let (d, test) = (&s.d, s.test());
    let daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase(&tenants, 20)).await;
    api.wait_mid_run(&id, 2).await;
    for mode in ["fast", "immediate"] {
        // From the ledger, not the API: right after a restart the API may answer 503 (the
        // ledger unavailable, retry), as documented.
        let batches_sql = format!("SELECT batches FROM reaper_jobs WHERE id = '{id}'");
        let batches = test.int(&batches_sql).await;
        wait_mid_batch(test).await;
        let started = Instant::now();
        cluster.restart(mode);
        eprintln!(
            "restart -m {mode} with a batch open, after {batches} batches: {:?}",
            started.elapsed()
        );
        // The daemon carries on: batches commit again after the restart.
        while test.int(&batches_sql).await <= batches + 1 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no batch committed after the restart -m {mode}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let log = cluster.log();
    assert!(
        log.contains("terminating connection due to administrator command"),
        "{log}"
    );
    assert!(
        log.contains("not properly shut down"),
        "no crash recovery:\n{log}"
    );
    s.settle_retried(id).await;
    drop(daemon);
}

/// A full disk under SQLite (a 16 MB tmpfs holding the target database, which also holds the
/// ledger, filled up to its last byte while the daemon is frozen): batches fail with "database
/// or disk is full" (SQLITE_FULL, transient), whole — nothing is removed while the disk is
/// full; space freed, the job finishes exactly once.
/// Freezes the daemon where it holds no SQLite write lock. A daemon stopped inside one of its
/// queue polls would keep the write lock while frozen, and nothing else could write: then it
/// runs a moment and is frozen again.
async fn freeze_outside_a_write(daemon: &Daemon, test: &TestDatabase) {
    let immediate = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    for _ in 0..20 {
        daemon.freeze();
        match test.conn.begin_with_options(immediate).await {
            Ok(probe) => {
                probe.rollback().await.unwrap();
                return;
            }
            Err(error) => {
                eprintln!("frozen inside a write ({error}); thawing it a moment");
                daemon.signal("CONT");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("the daemon held SQLite's write lock at every freeze");
}

#[tokio::test]
async fn chaos_a_full_disk_under_sqlite_stops_whole_batches_and_freed_space_finishes_the_job() {
    let disk = SmallDisk::mount(16);
    let deployment = Deployment::on(TestDatabase::sqlite_in(disk.path()).await, 20_000).await;
    deployment.migrate();
    worker_setting(&deployment, "max_attempts = 1000");
    let test = &deployment.test;
    let tenants = [1, 2, 3, 4, 5];
    let expected = keys_of(test, &tenants).await;
    let before = test.snapshot_events().await;
    let (mut daemon, _) = daemon_of(&deployment, &[]);
    freeze_outside_a_write(&daemon, test).await;
    let id = deployment.enqueue(&erase(&tenants, 1_000));
    let filled = disk.fill();
    eprintln!("disk filled with {filled} bytes");
    daemon.signal("CONT");
    let line = daemon.wait_for_log(&["database or disk is full"], Duration::from_secs(30));
    eprintln!("while full: {line}");
    nothing_removed_for_a_second(test).await;
    assert_ne!(ledger_job(test, &id).await.0, "done");
    disk.free();
    let finals = wait_finished(test, &id, Duration::from_secs(60)).await;
    eprintln!("after the space was freed: {finals:?}");
    assert_eq!(
        (finals.0.as_str(), &finals.2),
        ("done", &None),
        "{finals:?}"
    );
    // Once: the writes refused while the disk was full (the claim's own update first)
    // changed nothing, not even the attempts.
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 1_000)
        .await;
    daemon.signal("TERM");
    let (status, _) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// A real deadlock between a batch and another session (PostgreSQL; reaper's sessions wait
/// up to 10 s for a row lock here instead of 50 ms, and the database detects deadlocks after
/// 100 ms, so the wait cycle is one the database must break, not a lock timeout): the other
/// session records a witness row and locks the tenant's second row; the batch locks the first
/// and waits for the second; the other session then asks for the first. PostgreSQL aborts one
/// of the two with `deadlock detected` (40P01): either the batch (rolled back, retried as
/// transient) and the other session commits its witness, or the other session (its
/// transaction rolled back whole, no witness). The log and the witness table say which; either
/// way the job finishes exactly once.
#[tokio::test]
async fn chaos_a_deadlock_with_another_session_loses_neither_side() {
    let s = Scenario::new(1_000, &[6], &["max_attempts = 10"]).await;
    let (d, test, expected) = (&s.d, s.test(), &s.expected);
    let name = test.strings("SELECT current_database()").await.remove(0);
    test.exec(&format!(
        "ALTER DATABASE \"{name}\" SET deadlock_timeout = '100ms'; \
         CREATE TABLE chaos_witness (note text NOT NULL)"
    ))
    .await;
    let mut keys = expected
        .iter()
        .map(|key| key.parse::<i64>().unwrap())
        .collect::<Vec<_>>();
    keys.sort_unstable();
    let (first, second) = (keys[0], keys[1]);
    let other = test.conn.begin().await.unwrap();
    other
        .execute_unprepared(&format!(
            "SET LOCAL deadlock_timeout = '100ms'; \
             INSERT INTO chaos_witness VALUES ('other session'); \
             SELECT id FROM events WHERE id = {second} FOR UPDATE"
        ))
        .await
        .unwrap();
    let daemon = d.start(&[("REAPER_DATABASE__LOCK_TIMEOUT", "10s")]);
    let api = d.api();
    let id = api.submit(&erase(&[6], 20)).await;
    // The batch holds the first row and waits for the second.
    let started = Instant::now();
    while test
        .int(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'reaper' AND wait_event_type = 'Lock'",
        )
        .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the batch never waited for the other session's row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cycle: the other session asks for the row the batch holds.
    let other_side = other
        .execute_unprepared(&format!(
            "SELECT id FROM events WHERE id = {first} FOR UPDATE"
        ))
        .await;
    let other_lost = match other_side {
        Ok(_) => {
            other.commit().await.unwrap();
            false
        }
        Err(error) => {
            assert!(
                error.to_string().contains("deadlock detected"),
                "the other session failed otherwise: {error}"
            );
            other.rollback().await.unwrap();
            true
        }
    };
    let finals = s.settle(vec![id], Duration::from_secs(30), 20).await;
    assert_eq!(finals[0].0, "done", "{finals:?}");
    let witnesses = test.int("SELECT count(*) FROM chaos_witness").await;
    let batch_lost = daemon.log_text().contains("deadlock detected");
    eprintln!(
        "deadlock broken by aborting {}; job {finals:?}; witness rows {witnesses}",
        if other_lost {
            "the other session"
        } else {
            "reaper's batch"
        }
    );
    // Exactly one side was aborted; the other session's transaction is whole or gone whole.
    assert!(
        other_lost != batch_lost,
        "other lost: {other_lost}, batch lost: {batch_lost}"
    );
    assert_eq!(witnesses, i64::from(!other_lost));
    // The ledger says it too: a retried batch keeps the deadlock as the job's last error.
    if batch_lost {
        assert!(
            finals[0].1 >= 2,
            "the aborted batch was not retried: {finals:?}"
        );
        let error = finals[0].2.as_deref().unwrap_or_default();
        assert!(error.contains("deadlock detected"), "{finals:?}");
    } else {
        assert_eq!(finals[0].2, None, "{finals:?}");
    }
    drop(daemon);
}

/// Reaper's MariaDB sessions with a transaction open on `test`'s database (a batch between
/// its statements and its COMMIT): their connection ids.
async fn mariadb_open_batches(test: &TestDatabase) -> Vec<String> {
    test.strings(
        "SELECT CAST(t.trx_mysql_thread_id AS CHAR) FROM information_schema.INNODB_TRX t \
         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
         WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()",
    )
    .await
}

/// Waits (20 s at most) until one of reaper's MariaDB sessions has a batch open; their ids.
async fn wait_mariadb_open_batch(test: &TestDatabase) -> Vec<String> {
    let started = Instant::now();
    loop {
        let open = mariadb_open_batches(test).await;
        if !open.is_empty() {
            return open;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no batch opened"
        );
        // InnoDB refreshes INNODB_TRX only when it was last read over 100 ms ago: a faster
        // poll reads the same stale answer for ever.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A MariaDB deployment on `test` (target and ledger; the embedded SQLite queue) whose job
/// erases tenants 1 and 2 in slow batches of 20, submitted to a running daemon.
struct MariaDbRun {
    deployment: Deployment,
    expected: BTreeSet<String>,
    before: TableSnapshot,
    daemon: Daemon,
    id: String,
}

impl MariaDbRun {
    async fn start(test: TestDatabase) -> Self {
        let deployment = Deployment::on(test, 2_000).await;
        deployment.migrate();
        worker_setting(&deployment, "max_attempts = 100");
        let tenants = [1, 2];
        let expected = keys_of(&deployment.test, &tenants).await;
        let before = deployment.test.snapshot_events().await;
        let (daemon, port) = daemon_of(&deployment, &[SLOW_BATCHES]);
        let id = Api::at(port).submit(&erase(&tenants, 20)).await;
        Self {
            deployment,
            expected,
            before,
            daemon,
            id,
        }
    }

    /// The job `done` after at least one retry (the fault failed a run), exactly the tenants'
    /// rows removed and audited once, no transaction left open.
    async fn settle(&self) {
        let test = &self.deployment.test;
        let finals = wait_finished(test, &self.id, Duration::from_secs(60)).await;
        eprintln!("after the faults: {finals:?}");
        assert_eq!(finals.0, "done", "{finals:?}");
        assert!(
            finals.1 >= 2,
            "no interrupted batch was retried: {finals:?}"
        );
        // The failed run is in the log: retried, or (when the connection died before the
        // failure could be recorded) left to its lease to expire and claimed again.
        let log = self.daemon.log_text();
        assert!(
            log.contains("Job will be retried")
                || log.contains("Could not record the job's outcome"),
            "{log}"
        );
        self.before
            .assert_removed_exactly(test, &self.expected, Removal::Hard, 20)
            .await;
        assert_eq!(mariadb_open_batches(test).await, Vec::<String>::new());
    }
}

/// MariaDB: reaper's session killed (`KILL CONNECTION`) while its batch is open, twice. The
/// batch rolls back (InnoDB), the lost connection is transient, the job finishes exactly once
/// and no transaction is left open.
#[tokio::test]
async fn chaos_mariadb_session_killed_mid_batch_is_rolled_back_and_retried() {
    let run = MariaDbRun::start(TestDatabase::mysql().await).await;
    let test = &run.deployment.test;
    for kill in 1..=2 {
        for connection in wait_mariadb_open_batch(test).await {
            // The batch may have committed meanwhile and its connection gone: that KILL fails.
            let killed = test
                .conn
                .execute_unprepared(&format!("KILL CONNECTION {connection}"))
                .await;
            eprintln!("kill {kill}: KILL CONNECTION {connection}: {killed:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    run.settle().await;
}

/// A test-owned MariaDB server (target and ledger) killed (kill -9) with a batch open and
/// started again: InnoDB's crash recovery rolls the batch back, the daemon reconnects, the job
/// finishes exactly once.
#[tokio::test]
async fn chaos_mariadb_crashed_and_restarted_mid_batch_finishes_the_job_once() {
    let mut server = PrivateMariaDb::start();
    let run = MariaDbRun::start(TestDatabase::mysql_on(server.admin_url.clone()).await).await;
    let test = &run.deployment.test;
    let batches_sql = format!("SELECT batches FROM reaper_jobs WHERE id = '{}'", run.id);
    wait_mariadb_open_batch(test).await;
    let batches = test.int(&batches_sql).await;
    let started = Instant::now();
    server.crash_and_restart();
    eprintln!(
        "crashed with a batch open after {batches} batches, back in {:?}",
        started.elapsed()
    );
    run.settle().await;
}
