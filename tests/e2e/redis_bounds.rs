//! What the daemon leaves in Redis: bounded however many jobs pass (issue 11 §7), on a private
//! `redis-server` so that every key in it is the daemon's.

use std::time::{Duration, Instant};

use reaper_testkit::PrivateRedis;

use crate::daemon::RedisDeployment;

/// The private Redis's keys and the bytes they use (`MEMORY USAGE`, summed).
async fn footprint(redis: &mut redis::aio::MultiplexedConnection) -> (u64, u64, Vec<String>) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(redis)
        .await
        .unwrap();
    let mut bytes = 0;
    for key in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(redis)
            .await
            .unwrap();
        bytes += used.unwrap_or(0);
    }
    (keys.len() as u64, bytes, keys)
}

/// Pushes `count` erase jobs through the intake and waits until the ledger has `done_after`
/// jobs done and the vacuum has emptied apalis' finished sets.
async fn pass_jobs(
    d: &RedisDeployment,
    redis: &mut redis::aio::MultiplexedConnection,
    from: u64,
    count: u64,
    done_after: i64,
) {
    let mut pipe = redis::pipe();
    for n in from..from + count {
        let job = serde_json::json!({
            "target": "events",
            "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": n % 10}]},
            "requested_by": "e2e", "reason": "bounded redis", "idempotency_key": format!("bound-{n}"),
        });
        pipe.lpush("reaper-private:intake", job.to_string())
            .ignore();
    }
    pipe.query_async::<()>(redis).await.unwrap();
    let started = Instant::now();
    loop {
        let done = d
            .deployment
            .test
            .int("SELECT count(*) FROM reaper_jobs WHERE state = 'done'")
            .await;
        let (finished, data): (u64, u64) = redis::pipe()
            .scard("reaper-private:done")
            .hlen("reaper-private:data")
            .query_async(redis)
            .await
            .unwrap();
        if done == done_after && finished == 0 && data == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{done} of {done_after} jobs done, {finished} finished ids and {data} payloads left in Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_holds_a_bounded_number_of_keys_and_bytes_however_many_jobs_pass() {
    let private = PrivateRedis::start();
    let d = RedisDeployment::new(1_000, Some(&private)).await;
    // The jobs erase tenants 0 to 9 over and over: every row once, whatever repeats.
    let expected = d.deployment.test.ids("events", "1 = 1").await;
    let before = d.deployment.test.snapshot_events().await;
    let _daemon = d.start(&[("REAPER_QUEUE__VACUUM_EVERY", "200ms")]);
    let mut redis = redis::Client::open(private.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    pass_jobs(&d, &mut redis, 0, 40, 40).await;
    let (keys_40, bytes_40, _) = footprint(&mut redis).await;
    pass_jobs(&d, &mut redis, 40, 200, 240).await;
    let (keys_240, bytes_240, names) = footprint(&mut redis).await;
    eprintln!(
        "after 40 jobs: {keys_40} keys, {bytes_40} bytes; after 240: {keys_240} keys, {bytes_240} bytes: {names:?}"
    );
    assert!(
        !names.iter().any(|key| key.contains(":meta:")),
        "finished messages' metadata left: {names:?}"
    );
    // Six times the jobs, not one key more; the bytes only as far as Redis' own allocation noise.
    assert!(
        keys_240 <= keys_40,
        "{keys_40} keys grew to {keys_240}: {names:?}"
    );
    assert!(
        bytes_240 <= bytes_40 + 4_096,
        "{bytes_40} bytes grew to {bytes_240}"
    );
    assert_eq!(
        d.deployment
            .test
            .int("SELECT count(*) FROM reaper_jobs WHERE attempts <> 1 OR last_error IS NOT NULL")
            .await,
        0,
        "a job needed a retry or kept an error"
    );
    before
        .assert_removed_exactly(
            &d.deployment.test,
            &expected,
            reaper_testkit::Removal::Hard,
            1_000,
        )
        .await;
}

/// The ACL the README documents for the daemon's Redis user, for queue `reaper-private`.
const ACL: &[&str] = &[
    "on",
    ">reaper-secret-password",
    "resetkeys",
    "~reaper-private*",
    "~core:apalis:queues:list",
    "resetchannels",
    "&tasks:reaper-private*",
    "+@all",
    "-@dangerous",
];

/// Waits until the ledger says job `id` is done, or `limit` passes; whether it is.
async fn done_within(d: &RedisDeployment, id: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let state = d
            .deployment
            .test
            .strings(&format!("SELECT state FROM reaper_jobs WHERE id = '{id}'"))
            .await;
        if state.first().is_some_and(|state| state == "done") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_documented_acl_is_enough_and_apalis_global_key_is_needed() {
    let private = PrivateRedis::start();
    let d = RedisDeployment::new(500, Some(&private)).await;
    let mut admin = redis::Client::open(private.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let limited_url = private
        .url
        .replace("redis://", "redis://reaper:reaper-secret-password@");
    let id = d.deployment.enqueue(&serde_json::json!({
        "target": "events",
        "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 3}]},
        "requested_by": "e2e", "reason": "acl",
    }));

    // Without apalis' global key the workers cannot register: the job waits.
    let mut without: Vec<&str> = ACL.to_vec();
    without.retain(|rule| *rule != "~core:apalis:queues:list");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reaper")
        .arg(&without)
        .query_async(&mut admin)
        .await
        .unwrap();
    let daemon = d.start(&[("REAPER_QUEUE_URL", &limited_url)]);
    assert!(
        !done_within(&d, &id, Duration::from_secs(4)).await,
        "the job ran although apalis could not write core:apalis:queues:list"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("can't access at least one of the keys"),
        "{log}"
    );
    drop(daemon);

    // With the documented ACL, it runs.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reaper")
        .arg("reset")
        .arg(ACL)
        .query_async(&mut admin)
        .await
        .unwrap();
    let daemon = d.start(&[("REAPER_QUEUE_URL", &limited_url)]);
    assert!(
        done_within(&d, &id, Duration::from_secs(20)).await,
        "the job did not run under the documented ACL:\n{}",
        daemon.log_text()
    );
    // And nothing outside the prefix but apalis' registry.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|key| key.starts_with("reaper-private") || key == "core:apalis:queues:list"),
        "{keys:?}"
    );
}
