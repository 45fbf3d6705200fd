//! The daemon on Redis and PostgreSQL, through its producers (HTTP API, plain Redis commands)
//! and under failure: cancel, SIGTERM, SIGKILL, FLUSHALL, a killed database connection, and
//! transient failures that never stop. Each test has its own database and its own queue name.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reaper_core::sql::Backend;
use reaper_testkit::{PrivateRedis, TestQueue};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::{Deployment, config_text, reaper};

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// A Redis-fed deployment on PostgreSQL with the API on a free port.
pub(crate) struct RedisDeployment {
    pub(crate) deployment: Deployment,
    queue_name: String,
    redis_url: String,
    pub(crate) port: u16,
    _queue: Option<TestQueue>,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisDeployment {
    pub(crate) async fn new(rows: u32, private_redis: Option<&PrivateRedis>) -> Self {
        let deployment = Deployment::new(Backend::Postgres, rows).await;
        let (queue, redis_url, queue_name) = match private_redis {
            Some(redis) => (None, redis.url.clone(), "reaper-private".to_owned()),
            None => {
                let queue = TestQueue::new().await;
                let url = queue.url.clone();
                let name = queue.name.clone();
                (Some(queue), url, name)
            }
        };
        let port = free_port();
        let text = config_text(&deployment.test.url, deployment.dir.path(), "")
            .replace(
                &format!(
                    "backend = \"sqlite\"\nurl = \"sqlite://{}?mode=rwc\"",
                    deployment.dir.path().join("queue.db").display()
                ),
                &format!(
                    "backend = \"redis\"\nurl = \"{redis_url}\"\nname = \"{queue_name}\"\nheartbeat = \"1s\""
                ),
            )
            .replace(
                "[worker]",
                &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\n[worker]"),
            )
            .replace("lease = \"10s\"", "lease = \"3s\"")
            .replace("slice = \"5s\"", "slice = \"2s\"");
        assert!(text.contains("backend = \"redis\""), "{text}");
        std::fs::write(&deployment.config, text).unwrap();
        deployment.migrate();
        Self {
            deployment,
            queue_name,
            redis_url,
            port,
            _queue: queue,
        }
    }

    pub(crate) fn start(&self, env: &[(&str, &str)]) -> Daemon {
        Daemon::start(
            &self.deployment.config,
            self.deployment.dir.path(),
            self.port,
            env,
        )
    }

    pub(crate) fn api(&self) -> Api {
        Api::at(self.port)
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// A running `reaper run`, killed on drop; its log is printed when a test fails.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Daemon {
    pub(crate) fn start(config: &Path, dir: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        let mut command = reaper(Some(config));
        command
            .env("REAPER_API_TOKEN", TOKEN)
            .envs(env.iter().copied());
        Self::spawn(command, dir, port)
    }

    /// `reaper run` from `command` (configured by the caller, whose API token must be
    /// [`TOKEN`]), once its API listens on `port`.
    pub(crate) fn spawn(mut command: std::process::Command, dir: &Path, port: u16) -> Self {
        let log = dir.join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .arg("run")
            .env("REAPER_LOG", "info,reaper=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let daemon = Self {
            child: Some(child),
            log,
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon did not start listening:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its status and how long it took.
    pub(crate) fn wait(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "daemon did not exit within {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log {}:\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

pub(crate) struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// The API of the daemon listening on `port`.
    pub(crate) fn at(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            // No pooled connections: a test may kill the daemon that served the last call.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// `GET path` as text, which must answer 200 (`/metrics`).
    pub(crate) async fn text(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn submit(&self, job: &Value) -> String {
        let (status, body) = self
            .call(reqwest::Method::POST, "/v1/jobs", Some(job))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the job is in `state`, within `limit`.
    pub(crate) async fn wait_for(&self, id: &str, state: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if job["state"] == state {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id} not {state} within {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn erase_tenant(tenant: i64, extra: Value) -> Value {
    let mut job = json!({
        "target": "events",
        "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": tenant}]},
        "requested_by": "daemon-test",
        "reason": "erasure",
    });
    if let (Value::Object(job), Value::Object(extra)) = (&mut job, extra) {
        job.extend(extra);
    }
    job
}

#[tokio::test]
async fn the_api_accepts_runs_lists_and_audits_jobs_and_refuses_what_it_must() {
    let d = RedisDeployment::new(2_000, None).await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[]);
    let api = d.api();

    // Without the token, or with a wrong one: 401, nothing runs.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", api.base))
        .json(&erase_tenant(1, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = reqwest::Client::new()
        .get(format!("{}/v1/jobs", api.base))
        .bearer_auth("test-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // An invalid job: 400 naming the field; nothing is written.
    let everything = test.checksum("events", "1 = 1").await;
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(&json!({"target": "events", "filter": {"all": [{"column": "password", "op": "eq", "value": 1}]}, "requested_by": "t", "reason": "r"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["fields"][0]["field"], "filter.all[0].column", "{body}");
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/v1/jobs",
            Some(&json!({"target": "events", "oops": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("oops"), "{body}");
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 0);
    assert_eq!(test.checksum("events", "1 = 1").await, everything);

    // A job runs to done; a repeated idempotency key yields the same job.
    let expected = test.ids("events", "tenant_id = 3").await;
    let job = erase_tenant(3, json!({"idempotency_key": "erase-3", "batch_size": 50}));
    let id = api.submit(&job).await;
    let (status, again) = api
        .call(reqwest::Method::POST, "/v1/jobs", Some(&job))
        .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
    let done = api.wait_for(&id, "done", Duration::from_secs(20)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    test.assert_exactly_once(&id, &expected, 50).await;
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 1);

    let (status, audit) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}/audit?limit=2"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    assert_eq!(audit["entries"][0]["batch_no"], 1);
    assert_eq!(audit["next_after_batch"], 2);
    let (status, listed) = api
        .call(
            reqwest::Method::GET,
            "/v1/jobs?state=done&target=events",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
    let (status, _) = api
        .call(reqwest::Method::GET, "/v1/jobs?state=finished", None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(reqwest::Method::GET, "/v1/jobs/no-such-job", None)
        .await;
    assert_eq!(status, 404);

    // Operational endpoints.
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{}/readyz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let metrics = client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Per-policy series exist once a policy is configured (tests/e2e/retention.rs).
    for name in reaper_engine::instruments::ALWAYS {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            "reaper_rows_deleted_total{{target=\"events\",mode=\"hard\"}} {}",
            expected.len()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn plain_redis_commands_submit_a_job_that_is_done_and_audited() {
    let d = RedisDeployment::new(1_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id = 2").await;
    let _daemon = d.start(&[]);
    let mut redis = d.redis().await;
    let intake = format!("{}:intake", d.queue_name);
    // Exactly what the README tells other services to do.
    let job = erase_tenant(2, json!({"idempotency_key": "from-redis-2"}));
    let _: i64 = redis.lpush(&intake, job.to_string()).await.unwrap();
    let _: i64 = redis.lpush(&intake, "{not json").await.unwrap();
    let _: i64 = redis
        .lpush(
            &intake,
            json!({"target": "nope", "requested_by": "x", "reason": "y"}).to_string(),
        )
        .await
        .unwrap();

    let api = d.api();
    let started = Instant::now();
    let id = loop {
        let (_, listed) = api
            .call(
                reqwest::Method::GET,
                "/v1/jobs?idempotency_key=from-redis-2",
                None,
            )
            .await;
        if let Some(id) = listed["jobs"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not accepted: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    api.wait_for(&id, "done", Duration::from_secs(20)).await;
    test.assert_exactly_once(&id, &expected, 100).await;

    // The two bad messages are refused with their error, and nothing else was accepted.
    let rejected_key = format!("{}:intake:rejected", d.queue_name);
    let started = Instant::now();
    let rejected: Vec<String> = loop {
        let rejected: Vec<String> = redis.lrange(&rejected_key, 0, -1).await.unwrap();
        if rejected.len() == 2 || started.elapsed() > Duration::from_secs(10) {
            break rejected;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let errors: Vec<String> = rejected
        .iter()
        .map(|entry| {
            serde_json::from_str::<Value>(entry).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("invalid job: key must be a string")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("target: unknown target `nope`")),
        "{errors:?}"
    );
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 1);
    let left: i64 = redis.llen(&intake).await.unwrap();
    assert_eq!(left, 0);
}

/// Every batch takes at least this long in these tests (a fault point), so signals land mid-job.
const SLOW_BATCHES: (&str, &str) = ("FAILPOINTS", "batch::before_commit=sleep(100)");

#[tokio::test]
async fn cancel_stops_a_running_job_at_a_batch_boundary() {
    let d = RedisDeployment::new(2_000, None).await;
    let test = &d.deployment.test;
    let before = test.ids("events", "tenant_id IN (1, 2)").await;
    let _daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"});
    let id = api.submit(&job).await;
    let started = Instant::now();
    while api.job(&id).await["batches"].as_i64().unwrap() < 2 {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["cancel"], "stopping");
    let cancelled = api
        .wait_for(&id, "cancelled", Duration::from_secs(10))
        .await;
    let after = test.ids("events", "tenant_id IN (1, 2)").await;
    let deleted: std::collections::BTreeSet<String> = before.difference(&after).cloned().collect();
    assert!(!after.is_empty() && !deleted.is_empty(), "{cancelled}");
    assert_eq!(cancelled["rows_deleted"], deleted.len());
    test.assert_exactly_once(&id, &deleted, 20).await;
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 409);
}

/// SIGTERM mid-job: exit 0 within the grace period; a new daemon finishes exactly once.
#[tokio::test]
async fn sigterm_mid_job_exits_cleanly_and_a_new_daemon_finishes_exactly_once() {
    let d = RedisDeployment::new(2_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id IN (1, 2)").await;
    let mut daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"});
    let id = api.submit(&job).await;
    while api.job(&id).await["batches"].as_i64().unwrap() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    let (status, took) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", daemon.log_text());
    assert!(took < Duration::from_secs(5), "took {took:?} (grace 5 s)");
    let stopped = test
        .int(&format!(
            "SELECT rows_deleted FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    assert!(
        (stopped as usize) < expected.len(),
        "the job finished before the signal"
    );
    drop(daemon);

    let _second = d.start(&[]);
    let done = api.wait_for(&id, "done", Duration::from_secs(20)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    test.assert_exactly_once(&id, &expected, 20).await;
}

/// SIGKILL mid-job: another daemon takes the job over once the dead one's lease expires (3 s
/// here; 15 s by default) and finishes it exactly once.
#[tokio::test]
async fn sigkill_mid_job_another_daemon_finishes_exactly_once() {
    let d = RedisDeployment::new(2_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id IN (1, 2)").await;
    let mut first = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"});
    let id = api.submit(&job).await;
    while api.job(&id).await["batches"].as_i64().unwrap() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let killed = Instant::now();
    let _second = d.start(&[]);
    let done = api.wait_for(&id, "done", Duration::from_secs(30)).await;
    eprintln!(
        "recovered and finished {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(done["rows_deleted"], expected.len());
    test.assert_exactly_once(&id, &expected, 20).await;
}

/// FLUSHALL mid-run (on a private Redis: it would wipe other tests' keys): the job is in the
/// ledger, so it still completes, exactly once.
#[tokio::test]
async fn flushall_mid_run_loses_no_job() {
    let redis_server = PrivateRedis::start();
    let d = RedisDeployment::new(2_000, Some(&redis_server)).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id IN (1, 2)").await;
    let _daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"});
    let id = api.submit(&job).await;
    while api.job(&id).await["batches"].as_i64().unwrap() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut redis = d.redis().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let done = api.wait_for(&id, "done", Duration::from_secs(40)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    test.assert_exactly_once(&id, &expected, 20).await;
}

/// The worker's database connection is killed mid-batch: the batch rolls back, the run is
/// retried, and the job completes exactly once.
#[tokio::test]
async fn a_killed_database_connection_is_retried_and_the_job_completes() {
    let d = RedisDeployment::new(2_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id IN (1, 2)").await;
    let _daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let job = json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"});
    let id = api.submit(&job).await;
    while api.job(&id).await["batches"].as_i64().unwrap() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let database = test.url.rsplit('/').next().unwrap().to_owned();
    let admin = sea_orm::Database::connect(reaper_testkit::postgres_admin_url())
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    // Mid-batch: the fault point holds each batch 100 ms between its statement and COMMIT, when
    // the worker's session is `idle in transaction` (a session merely `active` may be running
    // the COMMIT of a batch that is then safe already).
    let started = Instant::now();
    loop {
        let killed = admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' \
                 AND application_name = 'reaper' AND state = 'idle in transaction'"
            ))
            .await
            .unwrap();
        if killed.rows_affected() >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no reaper session mid-batch to kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = api.wait_for(&id, "done", Duration::from_secs(30)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done}");
    test.assert_exactly_once(&id, &expected, 20).await;
}

/// A job that fails transiently every time is dead after max_attempts, with its error.
#[tokio::test]
async fn a_job_failing_transiently_every_time_is_dead_after_max_attempts() {
    let d = RedisDeployment::new(500, None).await;
    let test = &d.deployment.test;
    let everything = test.checksum("events", "1 = 1").await;
    let _daemon = d.start(&[("FAILPOINTS", "batch::before_commit=return")]);
    let api = d.api();
    let id = api.submit(&erase_tenant(1, json!({}))).await;
    let dead = api.wait_for(&id, "dead", Duration::from_secs(30)).await;
    assert_eq!(dead["attempts"], 5, "{dead}");
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 5 attempts") && error.contains("injected fault"),
        "{error}"
    );
    assert_eq!(test.checksum("events", "1 = 1").await, everything);
}

/// The Rust client crate, as another service would use it.
#[tokio::test]
async fn the_rust_client_enqueues_follows_and_reads_the_audit() {
    let d = RedisDeployment::new(1_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id = 4").await;
    let _daemon = d.start(&[]);
    let client = reaper_client::Client::new(format!("http://127.0.0.1:{}", d.port), TOKEN).unwrap();

    let request: reaper_client::JobRequest = serde_json::from_value(erase_tenant(
        4,
        json!({"idempotency_key": "client-4", "batch_size": 30}),
    ))
    .unwrap();
    let submitted = client.enqueue(&request).await.unwrap();
    assert!(submitted.created);
    assert!(!client.enqueue(&request).await.unwrap().created);
    let started = Instant::now();
    let job = loop {
        let job = client.status(&submitted.id).await.unwrap();
        if job.is_finished() {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (job.state.as_str(), job.rows_deleted as usize),
        ("done", expected.len())
    );
    let audit = client.audit(&submitted.id).await.unwrap();
    assert_eq!(audit.len(), expected.len().div_ceil(30));
    assert_eq!(
        audit
            .iter()
            .map(|entry| entry.row_count as usize)
            .sum::<usize>(),
        expected.len()
    );
    assert!(matches!(
        client.cancel(&submitted.id).await,
        Err(reaper_client::ClientError::Conflict(_))
    ));

    let invalid: reaper_client::JobRequest =
        serde_json::from_value(json!({"target": "events", "requested_by": "c", "reason": "r"}))
            .unwrap();
    match client.enqueue(&invalid).await {
        Err(reaper_client::ClientError::Invalid { fields, .. }) => {
            assert_eq!(fields[0].field, "filter", "{fields:?}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let wrong = reaper_client::Client::new(format!("http://127.0.0.1:{}", d.port), "nope").unwrap();
    assert!(matches!(
        wrong.status(&submitted.id).await,
        Err(reaper_client::ClientError::Unauthorized(_))
    ));
}

/// The CLI against a Redis deployment: enqueue from flags, list, cancel a pending job, and
/// `config check` hiding the token.
#[tokio::test]
async fn the_cli_enqueues_from_flags_lists_and_cancels() {
    let d = RedisDeployment::new(500, None).await;
    let test = &d.deployment.test;
    let everything = test.checksum("events", "1 = 1").await;
    let output = crate::run(d.deployment.reaper().args([
        "enqueue",
        "--target",
        "events",
        "--where",
        "tenant_id=3",
        "--older-than",
        "created_at=1d",
        "--reason",
        "cli test",
        "--idempotency-key",
        "cli-3",
    ]));
    assert!(output.status.success(), "{}", crate::stderr(&output));
    let id = crate::stdout(&output).trim().to_owned();
    let bad = crate::run(d.deployment.reaper().args([
        "enqueue",
        "--target",
        "events",
        "--where",
        "tenant_id=three",
        "--reason",
        "r",
    ]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(crate::stderr(&bad).contains("--where tenant_id=three: `three` is not an integer"));

    let listed = crate::run(
        d.deployment
            .reaper()
            .args(["jobs", "--state", "pending", "--json"]),
    );
    let jobs: Value = serde_json::from_str(&crate::stdout(&listed)).unwrap();
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["request"]["filter"]["all"][0]["value"], 3);

    let cancelled = crate::run(d.deployment.reaper().args(["cancel", &id]));
    assert!(cancelled.status.success());
    assert!(
        crate::stdout(&cancelled).contains("cancelled"),
        "{}",
        crate::stdout(&cancelled)
    );
    let again = crate::run(d.deployment.reaper().args(["cancel", &id]));
    assert!(!again.status.success());
    assert_eq!(test.checksum("events", "1 = 1").await, everything);

    let check = crate::run(d.deployment.reaper().args(["config", "check"]));
    assert!(check.status.success(), "{}", crate::stderr(&check));
    let shown = crate::stdout(&check);
    assert!(
        shown.contains("<redacted>") && !shown.contains(TOKEN),
        "{shown}"
    );
}

/// A second signal exits at once, mid-batch; the batch rolls back and a new daemon still
/// finishes the job exactly once.
#[tokio::test]
async fn a_second_signal_exits_at_once_and_the_batch_rolls_back() {
    let d = RedisDeployment::new(1_000, None).await;
    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id = 1").await;
    let mut daemon = d.start(&[("FAILPOINTS", "batch::before_commit=sleep(3000)")]);
    let api = d.api();
    let id = api
        .submit(&erase_tenant(1, json!({"batch_size": 20})))
        .await;
    // Wait until the first batch is inside its transaction (the job is claimed).
    while api.job(&id).await["state"] != "running" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    daemon.signal("TERM");
    let (status, _) = daemon.wait(Duration::from_secs(5));
    let took = second.elapsed();
    assert_eq!(status.code(), Some(130), "{}", daemon.log_text());
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} after the second signal"
    );
    assert_eq!(
        test.int(&format!(
            "SELECT batches FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await,
        0,
        "the batch in flight must have rolled back"
    );
    drop(daemon);
    let _second = d.start(&[]);
    api.wait_for(&id, "done", Duration::from_secs(30)).await;
    test.assert_exactly_once(&id, &expected, 20).await;
}
