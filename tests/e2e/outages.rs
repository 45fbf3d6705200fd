//! Outages, answered fast and truthfully: the database unreachable behind a proxy the test
//! freezes (health, readiness and metrics within 2 s, reads 503 after `api.ledger_wait`),
//! connection errors that name their cause within seconds, and readiness that means the workers
//! are pulling (a Redis user whose ACL lets it read the queue but not poll it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reaper_core::sql::Backend;
use reaper_testkit::PrivateRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::{RedisDeployment, TOKEN, free_port};
use crate::{Deployment, poll_until, reaper, run, stderr};

/// A TCP proxy to the database that the test can freeze: a frozen proxy holds every byte and
/// every new connection, as a network partition does (nothing is refused, nothing answers).
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let frozen = flag.clone();
                tokio::spawn(async move {
                    wait_while(&frozen).await;
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::join!(
                        pump(from_client, to_server, frozen.clone()),
                        pump(from_server, to_client, frozen.clone()),
                    );
                });
            }
        });
        Self { port, frozen, task }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_while(frozen: &AtomicBool) {
    while frozen.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        wait_while(&frozen).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// `GET path` (with the token), its status, `Retry-After`, body and how long it took.
/// `Ok` once `/readyz` on `port` answers 200; else its body.
async fn ready(port: u16) -> Result<(), String> {
    let (status, _, body, _) = timed_get(port, "/readyz").await;
    if status == 200 { Ok(()) } else { Err(body) }
}

async fn timed_get(port: u16, path: &str) -> (u16, Option<String>, String, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    (status, retry_after, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_unreachable_health_and_metrics_answer_within_2s_and_reads_fail_503() {
    let d = RedisDeployment::new(100, None).await;
    let mut url = reqwest::Url::parse(&d.deployment.test.url).unwrap();
    let upstream: SocketAddr =
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .unwrap();
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.port)).unwrap();
    let text = std::fs::read_to_string(&d.deployment.config)
        .unwrap()
        .replace(&d.deployment.test.url, url.as_str())
        .replace("[api]\n", "[api]\nledger_wait = \"1s\"\n");
    assert!(
        text.contains(url.as_str()) && text.contains("ledger_wait"),
        "{text}"
    );
    std::fs::write(&d.deployment.config, text).unwrap();
    let _daemon = d.start(&[]);
    let api = d.api();
    let id = api
        .submit(&serde_json::json!({
            "target": "events", "all_rows": true, "dry_run": true,
            "requested_by": "outage-test", "reason": "outage"
        }))
        .await;
    api.wait_for(&id, "done", Duration::from_secs(10)).await;
    let (status, _, metrics, _) = timed_get(d.port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("\nreaper_ledger_up 1"), "{metrics}");
    assert!(metrics.contains("\nreaper_jobs_pending 0"), "{metrics}");

    proxy.freeze(true);
    let (status, _, body, healthz) = timed_get(d.port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body, readyz) = timed_get(d.port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        readiness["database"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    let (status, _, metrics, scrape) = timed_get(d.port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("\nreaper_ledger_up 0"), "{metrics}");
    for series in reaper_engine::instruments::ledger_derived() {
        assert!(
            !metrics.lines().any(|line| line.starts_with(series)),
            "{series} is reported while the ledger cannot be read:\n{metrics}"
        );
    }
    assert!(metrics.contains("reaper_rows_deleted_total"), "{metrics}");
    let (status, retry_after, body, read) = timed_get(d.port, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert!(
        body.contains("the database did not answer within 1s"),
        "{body}"
    );
    eprintln!(
        "database frozen: /healthz {} ms, /readyz {} ms, /metrics {} ms, GET /v1/jobs/ID {} ms",
        healthz.as_millis(),
        readyz.as_millis(),
        scrape.as_millis(),
        read.as_millis()
    );
    for (what, took) in [
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/metrics", scrape),
    ] {
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    }
    assert!(
        read >= Duration::from_millis(900) && read < Duration::from_secs(2),
        "GET /v1/jobs/ID took {read:?} with api.ledger_wait = 1s"
    );

    // Back: ready again, and the ledger series are back.
    proxy.freeze(false);
    let port = d.port;
    poll_until(
        Duration::from_secs(30),
        "not ready after the database came back",
        async || ready(port).await,
    )
    .await;
    let (_, _, metrics, _) = timed_get(d.port, "/metrics").await;
    assert!(metrics.contains("\nreaper_ledger_up 1"), "{metrics}");
    assert!(metrics.contains("\nreaper_jobs_pending 0"), "{metrics}");
}

/// `reaper migrate` against `url`: the exit status, standard error, and how long it took.
fn migrate_with(dir: &std::path::Path, url: &str) -> (Option<i32>, String, Duration) {
    let config = dir.join(format!("reaper-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&config, crate::config_text(url, dir, "")).unwrap();
    let started = Instant::now();
    let output = run(reaper(Some(&config)).arg("migrate"));
    (output.status.code(), stderr(&output), started.elapsed())
}

#[tokio::test]
async fn connecting_fails_within_seconds_naming_the_cause() {
    let d = Deployment::new(Backend::Postgres, 1).await;
    let dir = d.dir.path();
    let closed = free_port();
    // A port that accepts and then says nothing, as a firewall that drops packets would.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mysql = reaper_testkit::mysql_admin_url();
    let mysql_bad_password = mysql.replacen("mysql://root@", "mysql://root:wrong-password@", 1);
    assert_ne!(mysql, mysql_bad_password, "{mysql}");
    let cases = [
        (
            format!("postgres://postgres@127.0.0.1:{closed}/reaper"),
            format!("connection refused by 127.0.0.1:{closed}"),
        ),
        (
            "postgres://postgres@no-such-host.invalid:5432/reaper".to_owned(),
            "unknown host in no-such-host.invalid:5432".to_owned(),
        ),
        (
            d.test.url.rsplit_once('/').unwrap().0.to_owned() + "/no_such_database_h5",
            "database `no_such_database_h5` does not exist".to_owned(),
        ),
        (
            "postgres://no_such_role_h5@127.0.0.1:5432/postgres".to_owned(),
            "authentication failed for user `no_such_role_h5`".to_owned(),
        ),
        (
            mysql_bad_password.rsplit_once('/').unwrap().0.to_owned() + "/mysql",
            "authentication failed for user `root`".to_owned(),
        ),
        (
            mysql.rsplit_once('/').unwrap().0.to_owned() + "/no_such_database_h5",
            "database `no_such_database_h5` does not exist".to_owned(),
        ),
        (
            format!("postgres://postgres@127.0.0.1:{silent_port}/reaper"),
            format!("timed out after 5s connecting to 127.0.0.1:{silent_port}"),
        ),
    ];
    for (url, cause) in cases {
        let (code, stderr, took) = migrate_with(dir, &url);
        eprintln!("{url}: {} ms", took.as_millis());
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains(&cause),
            "{url}: wanted {cause:?} in {stderr}"
        );
        assert!(!stderr.contains(" at line "), "{url}: {stderr}");
        assert!(!stderr.contains("pool timed out"), "{url}: {stderr}");
        assert!(took < Duration::from_secs(7), "{url} took {took:?}");
    }
    drop(silent);
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_workers_cannot_poll() {
    let redis_server = PrivateRedis::start();
    let d = RedisDeployment::new(10, Some(&redis_server)).await;
    let mut admin = redis::Client::open(redis_server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // May read the queue (its depth answers) but not run the scripts a poll runs.
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "reader",
                "on",
                ">reader-pw",
                "~*",
                "&*",
                "+@read",
                "+@connection",
                "+info",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let limited = redis_server
        .url
        .replacen("redis://", "redis://reader:reader-pw@", 1);
    let text = std::fs::read_to_string(&d.deployment.config)
        .unwrap()
        .replace(
            &format!("url = \"{}\"", redis_server.url),
            &format!("url = \"{limited}\""),
        );
    assert!(text.contains(&limited), "{text}");
    std::fs::write(&d.deployment.config, text).unwrap();
    let daemon = d.start(&[]);

    // Sampled often for a few seconds: never ready, and it says the workers are the reason.
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let (status, _, body, _) = timed_get(d.port, "/readyz").await;
        assert_eq!(
            status,
            503,
            "ready while the workers cannot poll: {body}\n{}",
            daemon.log_text()
        );
        let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The queue answers its depth, but it is not "ok": the workers cannot poll it.
        let queue = readiness["queue"].as_str().unwrap();
        assert!(
            queue.starts_with("unavailable") && queue.contains("no permissions"),
            "{body}"
        );
        assert_ne!(readiness["workers"], "ok", "{body}");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("{samples} /readyz samples, none ready");

    // The same user allowed to poll: the workers pull, and the daemon is ready.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "+@all"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(15),
        "not ready once the workers may poll",
        async || {
            ready(d.port)
                .await
                .map_err(|body| format!("{body}\n{}", daemon.log_text()))
        },
    )
    .await;
}
