//! Redis through Sentinel: a master, a replica and three sentinels the test starts
//! (`reaper_testkit::RedisSentinels`). The master is killed in the middle of a run of many
//! jobs; after the promotion every job finishes, each row removed exactly once (the invariant
//! checker), readiness reports the outage and the recovery, and the daemon's intake and the CLI
//! reach the new master. [`jobs_survive_a_failover`] is the scenario; `cluster.rs` runs it on a
//! Redis Cluster.

use std::time::{Duration, Instant};

use reaper_testkit::engine::erase_tenant;
use reaper_testkit::{RedisSentinels, Removal, SENTINEL_MASTER, TestDatabase};
use redis::AsyncCommands;
use serde_json::json;

use crate::daemon::RedisDeployment;
use crate::poll_until;

const SLOW_BATCHES: (&str, &str) = ("FAILPOINTS", "batch::before_commit=sleep(40)");

/// `[queue]`'s `KEY = [URLS]` line (a TOML array of strings).
pub(crate) fn url_list(urls: &[String]) -> String {
    urls.iter()
        .map(|url| format!("\"{url}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The daemon of `d` (whose queue is `queue`, 10,000 rows of `events`) runs eight jobs; `kill`
/// kills the Redis master in the middle (it runs on a blocking thread and returns once a
/// replica took over). Readiness must report the outage while `kill` runs and recover; a job
/// then pushed by `intake` (the `LPUSH` of its JSON to `<queue>:intake` on the new master) and
/// one enqueued by the CLI run too; every job ends `done` without an error and every row is
/// removed exactly once. The daemon's `/metrics` at the end.
pub(crate) async fn jobs_survive_a_failover(
    d: &RedisDeployment,
    queue: &str,
    kill: impl FnOnce() -> Duration + Send + 'static,
    intake: impl AsyncFnOnce(String, String),
) -> String {
    let test = &d.deployment.test;
    let expected = test.ids("events", "true").await;
    let before = test.snapshot_events().await;
    let daemon = d.start(&[SLOW_BATCHES]);
    let api = d.api();
    let mut ids = Vec::new();
    for tenant in 0..8 {
        ids.push(
            api.submit(&erase_tenant(tenant, json!({"batch_size": 50})))
                .await,
        );
    }
    api.wait_mid_run(&ids[0], 3).await;

    let kill = tokio::task::spawn_blocking(kill);
    let mut outage = Vec::new();
    while !kill.is_finished() {
        let (status, readiness) = api.get("/readyz").await;
        if status != 200 {
            outage.push(readiness);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = kill.await.unwrap();
    eprintln!("a replica took over {took:?} after the kill");
    assert!(
        outage.iter().any(|readiness| readiness["queue"]
            .as_str()
            .is_some_and(|queue| queue.starts_with("unavailable"))),
        "readiness never reported the queue's outage: {outage:?}"
    );
    let promoted_at = Instant::now();
    poll_until(
        Duration::from_secs(30),
        "not ready after the promotion",
        async || match api.get("/readyz").await {
            (200, _) => Ok(()),
            (_, readiness) => Err(format!("{readiness}\n{}", daemon.log_text())),
        },
    )
    .await;
    eprintln!(
        "{} unready samples, the first {:?}; ready {:?} after the promotion",
        outage.len(),
        outage.first(),
        promoted_at.elapsed()
    );

    let job = erase_tenant(8, json!({"batch_size": 50, "idempotency_key": "after-8"}));
    intake(format!("{queue}:intake"), job.to_string()).await;
    ids.push(api.wait_for_key("after-8", Duration::from_secs(20)).await);
    ids.push(
        d.deployment
            .enqueue(&erase_tenant(9, json!({"batch_size": 50}))),
    );
    for id in &ids {
        let done = api.wait_for(id, "done", Duration::from_secs(90)).await;
        assert_eq!(done["last_error"], serde_json::Value::Null, "{done}");
    }
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 50)
        .await;
    api.text("/metrics").await
}

#[tokio::test]
async fn killing_the_master_mid_run_delays_jobs_but_every_one_finishes_exactly_once() {
    let redis = RedisSentinels::start();
    let keys = format!(
        "sentinel = {{ master = \"{SENTINEL_MASTER}\", sentinels = [{}] }}",
        url_list(&redis.urls())
    );
    let queue = "reaper-sentinel";
    let d = RedisDeployment::at(
        TestDatabase::postgres().await,
        10_000,
        &redis.master.url,
        queue,
        &keys,
    )
    .await;
    let replica_url = redis.replica.url.clone();
    let promoted = format!("127.0.0.1:{}", redis.replica.port());
    let redis = std::sync::Arc::new(std::sync::Mutex::new(redis));
    let killed = redis.clone();
    let kill = move || killed.lock().unwrap().kill_master_and_wait_for_promotion();
    let intake = async |key: String, job: String| {
        let mut new_master = redis::Client::open(replica_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = new_master.lpush(key, job).await.unwrap();
    };
    let metrics = jobs_survive_a_failover(&d, queue, kill, intake).await;

    assert_eq!(
        redis.lock().unwrap().master_address(),
        Some(promoted.clone())
    );
    assert!(
        metrics.contains(&format!("reaper_redis_master{{address=\"{promoted}\"}} 1")),
        "{metrics}"
    );
    assert_reconnected(&metrics);
}

/// `metrics` count at least one reconnect to Redis.
pub(crate) fn assert_reconnected(metrics: &str) {
    let reconnects = metrics
        .lines()
        .find_map(|line| line.strip_prefix("reaper_redis_reconnects_total "))
        .and_then(|value| value.parse::<f64>().ok());
    assert!(reconnects.is_some_and(|count| count >= 1.0), "{metrics}");
}
