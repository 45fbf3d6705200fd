//! `daemon`: end-to-end throughput of the real `reaper run` on Redis and PostgreSQL with
//! single-row erase jobs ("delete user k's row"), enqueued with plain Redis commands (the
//! documented intake) as fast as one producer can. Prints jobs/s from the first enqueue to the
//! last job done, and the p50/p99 of each job's enqueue→done latency (done = the ledger's
//! `finished_at`, written by the daemon on the same host clock). Then, once the daemon's vacuum
//! has run, what the queue holds in Redis: its keys and their bytes (`MEMORY USAGE`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Runs the benchmark; `jobs` single-row erase jobs, the daemon with `concurrency` slots.
pub(crate) async fn run(
    jobs: u64,
    concurrency: u32,
    postgres_admin_url: &str,
    redis_url: &str,
) -> anyhow::Result<()> {
    let reaper = build_reaper()?;
    let url = crate::create_database(postgres_admin_url).await?;
    let conn = sea_orm::Database::connect(&url).await?;
    conn.execute_unprepared(&format!(
        "CREATE TABLE profiles (id bigserial PRIMARY KEY, user_id bigint NOT NULL, payload text NOT NULL);
         INSERT INTO profiles (user_id, payload) SELECT g, repeat('x', 200) FROM generate_series(1, {jobs}) g;
         CREATE INDEX profiles_user ON profiles (user_id);"
    ))
    .await?;
    conn.execute_unprepared("VACUUM ANALYZE profiles").await?;
    let dir = std::env::temp_dir().join(format!("reaper-bench-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let queue = format!("reaper-bench-{}", std::process::id());
    let config = dir.join("reaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{url}"
max_connections = {pool}

[queue]
backend = "redis"
url = "{redis_url}"
name = "{queue}"
poll_interval = "100ms"
fetch_batch = {concurrency}
vacuum_every = "2s"

[worker]
concurrency = {concurrency}

[targets.profiles]
table = "profiles"
primary_key = "id"
key_type = "int"
batch_size = 1000
[targets.profiles.columns]
user_id = "int"
"#,
            pool = concurrency + 4,
        ),
    )?;
    let status = std::process::Command::new(&reaper)
        .args(["--config", &config.display().to_string(), "migrate"])
        .status()?;
    anyhow::ensure!(status.success(), "reaper migrate failed");
    let mut daemon = std::process::Command::new(&reaper)
        .args(["--config", &config.display().to_string(), "run"])
        .env("REAPER_LOG", "warn")
        .spawn()
        .context("cannot start the reaper daemon")?;
    // Let it connect and register before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = redis::Client::open(redis_url)?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let intake = format!("{queue}:intake");
    let mut enqueued_at: HashMap<String, DateTime<Utc>> = HashMap::with_capacity(jobs as usize);
    let started = Instant::now();
    let first_enqueue = Utc::now();
    for chunk_start in (1..=jobs).step_by(500) {
        let mut pipe = redis::pipe();
        let now = Utc::now();
        for user in chunk_start..(chunk_start + 500).min(jobs + 1) {
            let key = format!("erase-{user}");
            let job = serde_json::json!({
                "target": "profiles",
                "filter": {"all": [{"column": "user_id", "op": "eq", "value": user}]},
                "requested_by": "bench",
                "reason": "erasure",
                "idempotency_key": key,
            });
            pipe.lpush(&intake, job.to_string()).ignore();
            enqueued_at.insert(key, now);
        }
        pipe.query_async::<()>(&mut redis).await?;
    }
    let produced = started.elapsed();

    // Wait until every job is finished (or nothing moves for 60 s).
    let mut last_done = 0;
    let mut last_progress = Instant::now();
    loop {
        let done: i64 = crate::query_one(
            &conn,
            "SELECT count(*) FROM reaper_jobs WHERE state IN ('done', 'dead', 'cancelled')",
        )
        .await?;
        if done as u64 >= jobs {
            break;
        }
        if done != last_done {
            last_done = done;
            last_progress = Instant::now();
        }
        anyhow::ensure!(
            last_progress.elapsed() < Duration::from_secs(60),
            "stalled at {done} of {jobs} jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT idempotency_key, state, finished_at FROM reaper_jobs",
        ))
        .await?;
    let mut latencies = Vec::with_capacity(rows.len());
    let mut last_finish = first_enqueue;
    let mut not_done = 0;
    for row in &rows {
        let key: String = row.try_get_by_index(0)?;
        let state: String = row.try_get_by_index(1)?;
        let finished: DateTime<Utc> = row.try_get_by_index(2)?;
        if state != "done" {
            not_done += 1;
        }
        last_finish = last_finish.max(finished);
        if let Some(enqueued) = enqueued_at.get(&key) {
            latencies.push((finished - *enqueued).to_std().unwrap_or_default());
        }
    }
    let left: i64 = crate::query_one(&conn, "SELECT count(*) FROM profiles").await?;
    // What Redis holds once the vacuum has run (every 2 s here; a minute by default).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (redis_keys, redis_bytes) = footprint(&mut redis, &queue).await?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let mut cleanup = redis::pipe();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}*"))
        .query_async(&mut redis)
        .await?;
    for key in keys {
        cleanup.del(key).ignore();
    }
    cleanup.query_async::<()>(&mut redis).await?;
    conn.close().await.ok();
    crate::drop_database(postgres_admin_url).await?;
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    let elapsed = (last_finish - first_enqueue).to_std().unwrap_or_default();
    let rate = jobs as f64 / elapsed.as_secs_f64();
    println!(
        "daemon throughput: {jobs} single-row erase jobs, Redis intake → PostgreSQL, concurrency {concurrency}"
    );
    println!(
        "  producer enqueued all in        {:>9.3} s ({:.0} jobs/s)",
        produced.as_secs_f64(),
        jobs as f64 / produced.as_secs_f64()
    );
    println!(
        "  first enqueue → last job done   {:>9.3} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  end-to-end                      {rate:>9.0} jobs/s   (target ≥ 1,000: {:.2}×)",
        rate / 1000.0
    );
    println!(
        "  enqueue → done latency p50      {:>9.1} ms",
        percentile(0.50).as_secs_f64() * 1e3
    );
    println!(
        "  enqueue → done latency p99      {:>9.1} ms",
        percentile(0.99).as_secs_f64() * 1e3
    );
    println!("  jobs not done                   {not_done:>9}");
    println!("  rows left in the table          {left:>9}");
    println!(
        "  Redis after the vacuum          {redis_keys:>9} keys, {redis_bytes} bytes (keys under `{queue}`)"
    );
    Ok(())
}

/// The keys under the queue's prefix and the bytes they use.
async fn footprint(
    redis: &mut redis::aio::MultiplexedConnection,
    queue: &str,
) -> anyhow::Result<(u64, u64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{queue}*"))
        .query_async(redis)
        .await?;
    let mut bytes = 0;
    for key in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(redis)
            .await?;
        bytes += used.unwrap_or(0);
    }
    Ok((keys.len() as u64, bytes))
}

/// Builds the release binary (the benchmark measures what operators run) and returns its path.
fn build_reaper() -> anyhow::Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "reaper", "--bin", "reaper"])
        .env("SQLX_OFFLINE", "true")
        .status()
        .context("cannot run cargo to build reaper")?;
    anyhow::ensure!(status.success(), "building reaper failed");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Ok(root.join("target/release/reaper"))
}
