//! Redis for tests: each test gets its own queue name (every key reaper and apalis write starts
//! with it) on `REAPER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`), and its keys are
//! deleted when the handle drops. Destructive tests (FLUSHALL, restarts) get a private
//! `redis-server` on a free loopback port instead, so they never touch other tests' keys.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared test Redis URL.
pub fn redis_url() -> String {
    std::env::var("REAPER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A queue name of one's own on the shared test Redis.
#[derive(Debug)]
pub struct TestQueue {
    pub url: String,
    pub name: String,
}

impl TestQueue {
    /// Fails loudly when Redis is not reachable.
    pub async fn new() -> Self {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|error| {
                panic!("Redis is required at {url} (REAPER_TEST_REDIS_URL): {error}")
            });
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .unwrap();
        let name = format!("reaper-test-{}", uuid::Uuid::new_v4().simple());
        Self { url, name }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.name);
        // Drop runs inside the test's runtime: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut connection) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut connection)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut connection);
            }
        })
        .join();
    }
}

/// A private `redis-server` on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct PrivateRedis {
    pub url: String,
    child: Child,
    /// With persistence: the server's working directory, where its append-only file lives.
    data: Option<tempfile::TempDir>,
    /// Arguments beyond the defaults (TLS, ACL files: `crate::tls_servers`), kept for restarts.
    extra: Vec<String>,
}

impl PrivateRedis {
    /// Without persistence. Fails loudly when `redis-server` is not installed.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With persistence: an append-only file in a temp dir of its own, synced on every write
    /// (`appendfsync always`), so that [`PrivateRedis::restart`] keeps every key.
    pub fn with_data() -> Self {
        Self::start_with(Some(tempfile::tempdir().unwrap()))
    }

    fn start_with(data: Option<tempfile::TempDir>) -> Self {
        Self::start_with_args(data, Vec::new())
    }

    /// Without persistence, with `extra` arguments (a TLS port and its certificates); `url`
    /// stays the plain port's, for the test's own administration.
    pub(crate) fn start_with_args(data: Option<tempfile::TempDir>, extra: Vec<String>) -> Self {
        let port = crate::private_servers::free_port();
        let url = format!("redis://127.0.0.1:{port}/0");
        let child = spawn_redis(
            port,
            &url,
            data.as_ref().map(tempfile::TempDir::path),
            &extra,
        );
        Self {
            url,
            child,
            data,
            extra,
        }
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap()
    }

    /// Kills the server (kill -9) and leaves it down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (kill -9) and starts it again on the same port: empty without
    /// persistence (a restart without data), with every key from its append-only file with it.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_redis(
            self.port(),
            &self.url,
            self.data.as_ref().map(tempfile::TempDir::path),
            &self.extra,
        );
    }

    /// `DBSIZE`: how many keys the server holds.
    pub fn keys(&self) -> i64 {
        let mut connection = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("DBSIZE").query(&mut connection).unwrap()
    }
}

/// Starts `redis-server` on `port` and waits until it answers, 10 s at most; persistent in
/// `data` when given; `extra` arguments last.
// The caller owns the child: `PrivateRedis` kills and waits for it on drop.
#[allow(clippy::zombie_processes)]
fn spawn_redis(port: u16, url: &str, data: Option<&std::path::Path>, extra: &[String]) -> Child {
    let mut command = Command::new("redis-server");
    command.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
    ]);
    match data {
        Some(dir) => command
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir),
        None => command.args(["--appendonly", "no"]),
    };
    command.args(extra);
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("redis-server is required for this test: {error}"));
    let answers = || {
        redis::Client::open(url)
            .and_then(|client| client.get_connection())
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            .is_ok()
    };
    crate::private_servers::wait_until_answers(
        child,
        &format!("redis-server on port {port}"),
        Duration::from_secs(10),
        answers,
    )
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
