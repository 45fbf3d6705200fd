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
}
