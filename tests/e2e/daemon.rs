//! The daemon on Redis and PostgreSQL, through its producers (HTTP API, plain Redis commands)
//! and under failure: cancel, SIGTERM, SIGKILL, SIGSTOP past the lease, FLUSHALL, a Redis
//! restart, a dead daemon's intake messages, a killed database connection, and transient
//! failures that never stop. Each test has its own database and its own queue name; each fault
//! test first proves the fault hit where it claims; every test that deletes proves the
//! invariants with a snapshot of the table (`reaper_testkit::TableSnapshot`) and checks the
//! job's attempts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reaper_testkit::engine::assert_clean;
use reaper_testkit::{PrivateRedis, Removal, TableSnapshot, TestDatabase, TestQueue};
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

pub(crate) use reaper_testkit::free_port;

impl RedisDeployment {
    pub(crate) async fn new(rows: u32, private_redis: Option<&PrivateRedis>) -> Self {
        Self::on(TestDatabase::postgres().await, rows, private_redis).await
    }

    /// The deployment on `test` (a database on a PostgreSQL server the test owns).
    pub(crate) async fn on(
        test: TestDatabase,
        rows: u32,
        private_redis: Option<&PrivateRedis>,
    ) -> Self {
        let (queue, redis_url, queue_name) = match private_redis {
            Some(redis) => (None, redis.url.clone(), "reaper-private".to_owned()),
            None => {
                let queue = TestQueue::new().await;
                let url = queue.url.clone();
                let name = queue.name.clone();
                (Some(queue), url, name)
            }
        };
        let mut d = Self::at(test, rows, &redis_url, &queue_name, "").await;
        d._queue = queue;
        d
    }

    /// The deployment on `test` with its queue `queue_name` on the Redis `redis_url` names (a
    /// server the test owns), the `[queue]` section ending with `queue_keys` (TOML lines:
    /// `[queue.tls]`'s keys, a sentinel, a cluster).
    pub(crate) async fn at(
        test: TestDatabase,
        rows: u32,
        redis_url: &str,
        queue_name: &str,
        queue_keys: &str,
    ) -> Self {
        let deployment = Deployment::on(test, rows).await;
        let port = free_port();
        let text = config_text(&deployment.test.url, deployment.dir.path(), "")
            .replace(
                &format!(
                    "backend = \"sqlite\"\nurl = \"sqlite://{}?mode=rwc\"",
                    deployment.dir.path().join("queue.db").display()
                ),
                &format!(
                    "backend = \"redis\"\nurl = \"{redis_url}\"\nname = \"{queue_name}\"\nheartbeat = \"1s\"\n{queue_keys}"
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
            queue_name: queue_name.to_owned(),
            redis_url: redis_url.to_owned(),
            port,
            _queue: None,
        }
    }

    /// A deployment with what a deleting test needs before anything runs: the keys matching
    /// `condition` and a snapshot of `events`.
    pub(crate) async fn prepared(
        rows: u32,
        private_redis: Option<&PrivateRedis>,
        condition: &str,
    ) -> (Self, BTreeSet<String>, TableSnapshot) {
        let d = Self::new(rows, private_redis).await;
        let matching = d.deployment.test.ids("events", condition).await;
        let before = d.deployment.test.snapshot_events().await;
        (d, matching, before)
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

    /// `reaper enqueue` of tenant 3's events with `more` flags, which must succeed; the job's id.
    pub(crate) fn enqueue_tenant_3(&self, more: &[&str]) -> String {
        let flags = ["enqueue", "--target", "events", "--where", "tenant_id=3"];
        let output = crate::run(
            self.deployment
                .reaper()
                .args(flags)
                .args(["--reason", "cli test"])
                .args(more),
        );
        assert!(output.status.success(), "{}", crate::stderr(&output));
        crate::stdout(&output).trim().to_owned()
    }

    /// A daemon with [`ONE_SLOW_SLICE`] running [`erase_two_tenants`], two batches in; the
    /// daemon, the API and the job's id.
    pub(crate) async fn mid_run(&self) -> (Daemon, Api, String) {
        let daemon = self.start(&ONE_SLOW_SLICE);
        let api = self.api();
        let id = api.submit(&erase_two_tenants()).await;
        api.wait_mid_run(&id, 2).await;
        (daemon, api, id)
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
        let mut daemon = Self {
            child: Some(child),
            log,
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                daemon.child = None;
                panic!("daemon exited with {status}:\n{}", daemon.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "daemon did not start listening:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far, without terminal colours.
    pub(crate) fn log_text(&self) -> String {
        strip_colours(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits until the log has a line containing every one of `needles`; that line (without
    /// terminal colours).
    pub(crate) fn wait_for_log(&self, needles: &[&str], limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let log = self.log_text();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
            {
                return line.to_owned();
            }
            assert!(
                started.elapsed() < limit,
                "no log line with {needles:?} within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP, returning once the kernel reports the process stopped.
    pub(crate) fn freeze(&self) {
        self.signal("STOP");
        let stat = format!("/proc/{}/stat", self.pid());
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&stat).unwrap();
            // `pid (comm) state …`: the state follows the command's closing parenthesis.
            if text
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('T')
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the daemon did not stop: {text}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
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

    /// `GET path` as JSON: the status and the body.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
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

    pub(crate) async fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST /v1/jobs/{id}/{action}` with `body`: the status and the answer.
    pub(crate) async fn act(&self, id: &str, action: &str, body: Option<&Value>) -> (u16, Value) {
        let path = format!("/v1/jobs/{id}/{action}");
        self.call(reqwest::Method::POST, &path, body).await
    }

    /// The operator actions recorded on the job, newest first: `[action, actor, outcome]`.
    pub(crate) async fn actions(&self, id: &str) -> Vec<[String; 3]> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}/actions")).await;
        assert_eq!(status, 200, "{body}");
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        body["actions"]
            .as_array()
            .unwrap_or_else(|| panic!("no actions in {body}"))
            .iter()
            .map(|action| {
                [
                    text(&action["action"]),
                    text(&action["actor"]),
                    text(&action["outcome"]),
                ]
            })
            .collect()
    }

    /// Polls the job until `until` holds for it, within `limit`; the job then.
    pub(crate) async fn wait_until(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        until: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if until(&job) {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "job {id}: not {what} within {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the job is in `state`, within `limit`.
    pub(crate) async fn wait_for(&self, id: &str, state: &str, limit: Duration) -> Value {
        self.wait_until(id, state, limit, |job| job["state"] == state)
            .await
    }

    /// Polls until the job is `done`, and checks it took exactly `attempts` claims and
    /// recorded no error.
    pub(crate) async fn wait_done(&self, id: &str, attempts: i64, limit: Duration) -> Value {
        let job = self.wait_for(id, "done", limit).await;
        assert_eq!(
            (job["attempts"].as_i64(), &job["last_error"]),
            (Some(attempts), &Value::Null),
            "job {id}: attempts and last error: {job}"
        );
        job
    }

    /// Waits until a job with this idempotency key is in the ledger; its id.
    pub(crate) async fn wait_for_key(&self, key: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let (_, listed) = self.get(&format!("/v1/jobs?idempotency_key={key}")).await;
            if let Some(id) = listed["jobs"][0]["id"].as_str() {
                return id.to_owned();
            }
            assert!(
                started.elapsed() < limit,
                "no job with key {key} within {limit:?}: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job has committed `batches` batches and is still running: a fault
    /// injected now hits a job in the middle of its run.
    pub(crate) async fn wait_mid_run(&self, id: &str, batches: i64) -> Value {
        let job = self
            .wait_until(id, "running", Duration::from_secs(20), |job| {
                job["batches"].as_i64().unwrap() >= batches
            })
            .await;
        assert_eq!(job["state"], "running", "the job is not mid-run: {job}");
        job
    }
}

/// Sessions of reaper on this test's PostgreSQL database in `state` (`idle in transaction`:
/// a batch between its statement and its COMMIT, where the slow-batch fault point holds it).
pub(crate) async fn reaper_sessions(test: &TestDatabase, state: &str) -> i64 {
    test.int(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'reaper' AND state = '{state}'"
    ))
    .await
}

/// Waits, 10 s at most, until a batch is inside its transaction.
pub(crate) async fn wait_mid_batch(test: &TestDatabase) {
    let started = Instant::now();
    while reaper_sessions(test, "idle in transaction").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no batch was seen inside its transaction"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
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
async fn the_api_refuses_a_missing_or_wrong_token_and_health_needs_none() {
    let d = RedisDeployment::new(10, None).await;
    let _daemon = d.start(&[]);
    let api = d.api();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", api.base))
        .json(&erase_tenant(1, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // One character off, same length.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/jobs", api.base))
        .bearer_auth("test-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        d.deployment
            .test
            .int("SELECT count(*) FROM reaper_jobs")
            .await,
        0
    );
    let client = reqwest::Client::new();
    // Ready once the workers have polled for a few intervals without an error.
    let started = Instant::now();
    loop {
        let response = client
            .get(format!("{}/readyz", api.base))
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz not 200 within 10 s: {}",
            response.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_api_refuses_an_invalid_job_naming_the_field_and_records_nothing() {
    let d = RedisDeployment::new(500, None).await;
    let test = &d.deployment.test;
    let before = test.snapshot_events().await;
    let _daemon = d.start(&[]);
    let api = d.api();
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
    before.assert_untouched(test).await;
}

#[tokio::test]
async fn an_api_job_is_done_exactly_once_and_a_repeated_key_returns_it() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id = 3").await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[]);
    let api = d.api();
    let job = erase_tenant(3, json!({"idempotency_key": "erase-3", "batch_size": 50}));
    let id = api.submit(&job).await;
    let (status, again) = api
        .call(reqwest::Method::POST, "/v1/jobs", Some(&job))
        .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
    let done = api.wait_done(&id, 1, Duration::from_secs(20)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 50)
        .await;
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 1);
    let metrics = api.text("/metrics").await;
    // Per-policy series exist once a policy is configured (tests/e2e/retention.rs).
    for name in reaper_engine::instruments::always() {
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
async fn the_api_pages_a_job_s_audit_and_lists_jobs_by_state_and_target() {
    let (d, expected, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 3").await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[]);
    let api = d.api();
    let id = api
        .submit(&erase_tenant(3, json!({"batch_size": 30})))
        .await;
    api.wait_done(&id, 1, Duration::from_secs(20)).await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 30)
        .await;
    let (status, audit) = api.get(&format!("/v1/jobs/{id}/audit?limit=2")).await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    assert_eq!(audit["entries"][0]["batch_no"], 1);
    assert_eq!(audit["next_after_batch"], 2);
    let (status, rest) = api.get(&format!("/v1/jobs/{id}/audit?after_batch=2")).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["entries"][0]["batch_no"], 3);
    assert_eq!(
        rest["entries"].as_array().unwrap().len(),
        expected.len().div_ceil(30) - 2
    );
    let (status, listed) = api.get("/v1/jobs?state=done&target=events").await;
    assert_eq!(status, 200);
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
    let (status, none) = api.get("/v1/jobs?state=pending").await;
    assert_eq!((status, none["jobs"].as_array().unwrap().len()), (200, 0));
    let (status, _) = api.get("/v1/jobs?state=finished").await;
    assert_eq!(status, 400);
    let (status, _) = api.get("/v1/jobs/no-such-job").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn plain_redis_commands_submit_a_job_that_is_done_and_audited() {
    let (d, expected, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 2").await;
    let test = &d.deployment.test;
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
    let id = api
        .wait_for_key("from-redis-2", Duration::from_secs(10))
        .await;
    api.wait_done(&id, 1, Duration::from_secs(20)).await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 100)
        .await;

    // The two bad messages are refused with their error, and nothing else was accepted.
    let rejected_key = format!("{}:intake:rejected", d.queue_name);
    let started = Instant::now();
    let rejected: Vec<String> = loop {
        let rejected: Vec<String> = redis.lrange(&rejected_key, 0, -1).await.unwrap();
        if rejected.len() >= 2 {
            break rejected;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "two messages not rejected within 10 s: {rejected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let errors = crate::rejection_errors(&rejected);
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
pub(crate) const SLOW_BATCHES: (&str, &str) = ("FAILPOINTS", "batch::before_commit=sleep(100)");

/// Slow batches in one long slice: a job stays running (no hand-over between slices) until an
/// operator stops it.
pub(crate) const ONE_SLOW_SLICE: [(&str, &str); 3] = [
    SLOW_BATCHES,
    ("REAPER_WORKER__LEASE", "60s"),
    ("REAPER_WORKER__SLICE", "30s"),
];

/// A job on tenants 1 and 2 (200 rows) in batches of 20.
pub(crate) fn erase_two_tenants() -> Value {
    json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 20, "requested_by": "t", "reason": "r"})
}

#[tokio::test]
async fn cancel_stops_a_running_job_at_a_batch_boundary() {
    let (d, matching, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    // One long slice: the job stays running (no hand-over between slices) until cancelled.
    let (_daemon, api, id) = d.mid_run().await;
    let (status, body) = api.act(&id, "cancel", None).await;
    // Usually `stopping` (202); when the worker reaches its batch boundary between the cancel's
    // write and its read-back, the reply already says `cancelled` (200).
    assert!(
        (status == 202 && body["cancel"] == "stopping")
            || (status == 200 && body["cancel"] == "cancelled"),
        "{status} {body}"
    );
    let cancelled = api
        .wait_for(&id, "cancelled", Duration::from_secs(10))
        .await;
    assert_clean(test, &id, reaper_core::lifecycle::JobState::Cancelled, 1).await;
    let checked = before
        .assert_removed_within(test, &matching, Removal::Hard, 20)
        .await;
    assert!(
        !checked.removed.is_empty() && checked.removed.len() < matching.len(),
        "{cancelled}"
    );
    assert_eq!(cancelled["rows_deleted"], checked.removed.len());
    let (status, _) = api.act(&id, "cancel", None).await;
    assert_eq!(status, 409);
}

/// SIGTERM mid-job: exit 0 within the grace period, the job `pending` again with its attempt
/// given back; a new daemon finishes exactly once.
#[tokio::test]
async fn sigterm_mid_job_exits_cleanly_and_a_new_daemon_finishes_exactly_once() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    let mut daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase_two_tenants()).await;
    api.wait_mid_run(&id, 2).await;
    daemon.signal("TERM");
    let (status, took) = daemon.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", daemon.log_text());
    assert!(took < Duration::from_secs(5), "took {took:?} (grace 5 s)");
    let stopped = api_less_job(test, &id).await;
    assert_eq!(stopped.0, "pending", "{stopped:?}");
    assert!(
        stopped.1 < expected.len() as i64,
        "the job finished before the signal: {stopped:?}"
    );
    drop(daemon);

    let _second = d.start(&[]);
    let done = api.wait_done(&id, 1, Duration::from_secs(20)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 20)
        .await;
}

/// SIGKILL mid-job: another daemon takes the job over once the dead one's lease expires (3 s
/// here; 15 s by default) and finishes it exactly once.
#[tokio::test]
async fn sigkill_mid_job_another_daemon_finishes_exactly_once() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    let mut first = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase_two_tenants()).await;
    api.wait_mid_run(&id, 2).await;
    first.kill();
    let killed = Instant::now();
    // Killed mid-run: the ledger still says running, with rows left.
    let orphan = api_less_job(test, &id).await;
    assert_eq!(orphan.0, "running");
    assert!(orphan.1 < expected.len() as i64, "finished before the kill");
    let _second = d.start(&[]);
    // The first claim, and the takeover.
    let done = api.wait_done(&id, 2, Duration::from_secs(30)).await;
    eprintln!(
        "recovered and finished {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(done["rows_deleted"], expected.len());
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 20)
        .await;
}

/// A job's state and rows deleted, read from the ledger (the daemon that served the API may be
/// dead).
async fn api_less_job(test: &TestDatabase, id: &str) -> (String, i64) {
    let state = test
        .strings(&format!("SELECT state FROM reaper_jobs WHERE id = '{id}'"))
        .await;
    let rows = test
        .int(&format!(
            "SELECT rows_deleted FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    (state[0].clone(), rows)
}

/// A worker frozen (SIGSTOP) between batches past its lease: another daemon takes the job over;
/// woken (SIGCONT), the first one's next write to the job (its slice's hand-over) is refused by
/// the lease check, and the job is finished exactly once by the second.
#[tokio::test]
async fn a_worker_frozen_past_its_lease_is_refused_when_it_wakes() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    // A 1 s pause after each batch: the worker spends nearly all its time between batches,
    // outside any transaction (a frozen transaction would hold the job's ledger row).
    let first = d.start(&[("REAPER_TARGETS__EVENTS__PAUSE", "1s")]);
    let api = d.api();
    let id = api
        .submit(&json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "in", "value": [1, 2]}]}, "batch_size": 50, "requested_by": "t", "reason": "r"}))
        .await;
    let running = api.wait_mid_run(&id, 1).await;
    let owner = running["lease_owner"].clone();
    // Freeze it between batches: no session of it inside a transaction.
    let started = Instant::now();
    loop {
        first.freeze();
        if reaper_sessions(test, "idle in transaction").await == 0
            && reaper_sessions(test, "active").await == 0
        {
            break;
        }
        first.signal("CONT");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "could not freeze the worker between batches"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second daemon (without the pause) takes the job over once the lease (3 s) expired.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let second = Daemon::start(
        &d.deployment.config,
        d.deployment.dir.path(),
        port,
        &[("REAPER_API__LISTEN", listen.as_str())],
    );
    let second_api = Api::at(port);
    second_api
        .wait_until(&id, "taken over", Duration::from_secs(20), |job| {
            job["lease_owner"] != owner && job["lease_owner"].is_string() || job["state"] == "done"
        })
        .await;
    first.signal("CONT");
    let done = second_api.wait_done(&id, 2, Duration::from_secs(20)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    // Woken past its slice, the first worker's hand-over was refused by the lease check.
    first.wait_for_log(
        &["Lost the job's lease; another worker has it."],
        Duration::from_secs(10),
    );
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 50)
        .await;
    drop(second);
}

/// FLUSHALL mid-run (on a private Redis: it would wipe other tests' keys): the job is in the
/// ledger, so it still completes, exactly once.
#[tokio::test]
async fn flushall_mid_run_loses_no_job() {
    let redis_server = PrivateRedis::start();
    let (d, expected, before) =
        RedisDeployment::prepared(2_000, Some(&redis_server), "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase_two_tenants()).await;
    api.wait_mid_run(&id, 2).await;
    let mut redis = d.redis().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mid = api_less_job(test, &id).await;
    assert!(
        mid.1 < expected.len() as i64,
        "the job finished before the flush"
    );
    let done = api.wait_for(&id, "done", Duration::from_secs(40)).await;
    // The run in flight survives the flush (it is detached from apalis' handler).
    assert!(done["attempts"].as_i64().unwrap() <= 2, "{done}");
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert_eq!(done["rows_deleted"], expected.len());
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 20)
        .await;
}

/// A job accepted while every worker is frozen (SIGSTOP), whose queue message is then lost,
/// comes back only through the reconciler: it says so in its log, and the job finishes once.
async fn a_lost_message_is_brought_back_by_the_reconciler(lose: impl FnOnce(&mut PrivateRedis)) {
    let mut redis_server = PrivateRedis::start();
    let (d, expected, before) =
        RedisDeployment::prepared(1_000, Some(&redis_server), "tenant_id = 4").await;
    let test = &d.deployment.test;
    let daemon = d.start(&[]);
    daemon.freeze();
    let id = d
        .deployment
        .enqueue(&erase_tenant(4, json!({"batch_size": 30})));
    assert!(redis_server.keys() > 0, "the job was never enqueued");
    lose(&mut redis_server);
    assert_eq!(redis_server.keys(), 0, "the message survived");
    // Still pending and never claimed: no worker took it before the loss.
    assert_eq!(
        reaper_testkit::engine::job_state(test, &id).await,
        ("pending".to_owned(), 0, None)
    );
    daemon.signal("CONT");
    let line = daemon.wait_for_log(
        &["Re-enqueued a job the queue had lost.", &id],
        Duration::from_secs(20),
    );
    assert!(line.contains("state=pending"), "{line}");
    d.api().wait_done(&id, 1, Duration::from_secs(20)).await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 30)
        .await;
}

#[tokio::test]
async fn a_message_flushed_before_any_worker_took_it_is_reconciled() {
    a_lost_message_is_brought_back_by_the_reconciler(|redis| {
        let mut connection = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_message_lost_in_a_redis_restart_without_data_is_reconciled() {
    a_lost_message_is_brought_back_by_the_reconciler(PrivateRedis::restart).await;
}

/// A daemon that died holding intake messages it had claimed but not submitted: a live daemon
/// hands them back (and says so), submits them, and the job runs exactly once.
#[tokio::test]
async fn a_dead_daemon_s_claimed_intake_messages_are_handed_back_and_run_once() {
    let (d, expected, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 5").await;
    let test = &d.deployment.test;
    let mut redis = d.redis().await;
    // What a daemon that died mid-claim leaves: the message in its claimed list, its last
    // heartbeat long ago.
    let job = erase_tenant(5, json!({"idempotency_key": "claimed-by-the-dead"}));
    let dead = "dead-daemon-1";
    let _: i64 = redis
        .lpush(
            format!("{}:intake:claimed:{dead}", d.queue_name),
            job.to_string(),
        )
        .await
        .unwrap();
    let _: i64 = redis
        .zadd(format!("{}:intake:daemons", d.queue_name), dead, 1_000)
        .await
        .unwrap();
    let daemon = d.start(&[]);
    let line = daemon.wait_for_log(
        &["Handed back the intake messages of a dead daemon.", dead],
        Duration::from_secs(20),
    );
    assert!(line.contains("returned=1"), "{line}");
    let api = d.api();
    let id = api
        .wait_for_key("claimed-by-the-dead", Duration::from_secs(10))
        .await;
    api.wait_done(&id, 1, Duration::from_secs(20)).await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 100)
        .await;
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 1);
    let left: i64 = redis
        .llen(format!("{}:intake:claimed:{dead}", d.queue_name))
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// The worker's database connection is killed mid-batch: the batch rolls back, the run is
/// retried, and the job completes exactly once.
#[tokio::test]
async fn a_killed_database_connection_is_retried_and_the_job_completes() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let id = api.submit(&erase_two_tenants()).await;
    api.wait_mid_run(&id, 2).await;
    // Mid-batch: the fault point holds each batch 100 ms between its statement and COMMIT, when
    // the worker's session is `idle in transaction` (a session merely `active` may be running
    // the COMMIT of a batch that is then safe already).
    let started = Instant::now();
    loop {
        let killed = test
            .int(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'reaper' AND state = 'idle in transaction'",
            )
            .await;
        if killed >= 1 {
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
    assert_eq!(
        done["attempts"], 2,
        "one failed attempt, one that finished: {done}"
    );
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 20)
        .await;
}

/// A job that fails transiently every time is dead after max_attempts, with its error.
#[tokio::test]
async fn a_job_failing_transiently_every_time_is_dead_after_max_attempts() {
    let d = RedisDeployment::new(500, None).await;
    let test = &d.deployment.test;
    let before = test.snapshot_events().await;
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
    before.assert_untouched(test).await;
}

/// The Rust client crate, as another service would use it.
#[tokio::test]
async fn the_rust_client_enqueues_follows_and_reads_the_audit() {
    let (d, expected, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 4").await;
    let test = &d.deployment.test;
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
    assert_clean(
        test,
        &submitted.id,
        reaper_core::lifecycle::JobState::Done,
        1,
    )
    .await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 30)
        .await;
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
    let before = test.snapshot_events().await;
    let id = d.enqueue_tenant_3(&[
        "--older-than",
        "created_at=1d",
        "--idempotency-key",
        "cli-3",
    ]);
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
    before.assert_untouched(test).await;

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
    let (d, expected, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 1").await;
    let test = &d.deployment.test;
    let mut daemon = d.start(&[("FAILPOINTS", "batch::before_commit=sleep(3000)")]);
    let api = d.api();
    let id = api
        .submit(&erase_tenant(1, json!({"batch_size": 20})))
        .await;
    // The first batch is inside its transaction, held by the fault point before its COMMIT.
    wait_mid_batch(test).await;
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Still there: the first signal waits for the batch in flight.
    assert_eq!(
        reaper_sessions(test, "idle in transaction").await,
        1,
        "the batch left its transaction before the second signal"
    );
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
    // The first claim died with the process; the second finished.
    api.wait_done(&id, 2, Duration::from_secs(30)).await;
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 20)
        .await;
}
