//! `daemon`: end-to-end throughput of the real `reaper run` on Redis and PostgreSQL with
//! single-row erase jobs ("delete user k's row"), enqueued with plain Redis commands (the
//! documented intake) as fast as one producer can. Prints jobs/s from the first enqueue to the
//! last job done, and the p50/p99 of each job's enqueue→done latency (done = the ledger's
//! `finished_at`, written by the daemon on the same host clock). Then jobs at a steady rate,
//! one at a time (no backlog): the enqueue→done latency a producer sees in normal operation.
//! Then, once the daemon's vacuum has run, what the queue holds in Redis: its keys and their
//! bytes (`MEMORY USAGE`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// The steady phase: `rate` jobs a second for `seconds` seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steady {
    pub(crate) rate: u32,
    pub(crate) seconds: u32,
}

impl Steady {
    fn jobs(self) -> u64 {
        u64::from(self.rate) * u64::from(self.seconds)
    }
}

/// Runs the benchmark; `jobs` single-row erase jobs as one backlog, then the `steady` phase,
/// the daemon with `concurrency` slots.
pub(crate) async fn run(
    jobs: u64,
    concurrency: u32,
    steady: Steady,
    postgres_admin_url: &str,
    redis_url: &str,
) -> anyhow::Result<()> {
    let reaper = build_reaper()?;
    let url = crate::create_database(postgres_admin_url).await?;
    let conn = sea_orm::Database::connect(&url).await?;
    let users = jobs + steady.jobs();
    conn.execute_unprepared(&format!(
        "CREATE TABLE profiles (id bigserial PRIMARY KEY, user_id bigint NOT NULL, payload text NOT NULL);
         INSERT INTO profiles (user_id, payload) SELECT g, repeat('x', 200) FROM generate_series(1, {users}) g;
         CREATE INDEX profiles_user ON profiles (user_id);"
    ))
    .await?;
    conn.execute_unprepared("VACUUM ANALYZE profiles").await?;
    let targets = r#"
[targets.profiles]
table = "profiles"
primary_key = "id"
key_type = "int"
batch_size = 1000
[targets.profiles.columns]
user_id = "int"
"#;
    let mut daemon = RunningDaemon::start(&reaper, &url, redis_url, concurrency, targets).await?;
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let started = Instant::now();
    let erasures = (1..=jobs).map(|user| erasure("profiles", "user_id", user));
    let enqueued = daemon.enqueue(&mut redis, erasures).await?;
    let produced = started.elapsed();
    wait_finished(&conn, jobs).await?;
    let finished = Finished::read(&conn, &enqueued).await?;
    let steady_finished = if steady.jobs() > 0 {
        let erasures = (jobs + 1..=users).map(|user| erasure("profiles", "user_id", user));
        let enqueued = daemon
            .enqueue_steadily(&mut redis, erasures, steady.rate)
            .await?;
        wait_finished(&conn, users).await?;
        Some(Finished::read(&conn, &enqueued).await?)
    } else {
        None
    };
    let left: i64 = crate::query_one(&conn, "SELECT count(*) FROM profiles").await?;
    // What Redis holds once the vacuum has run (every 2 s here; a minute by default).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (redis_keys, redis_bytes) = footprint(&mut redis, &daemon.queue).await?;
    daemon.stop(&mut redis).await?;
    conn.close().await.ok();
    crate::drop_database(postgres_admin_url).await?;

    let rate = jobs as f64 / finished.elapsed.as_secs_f64();
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
        finished.elapsed.as_secs_f64()
    );
    println!(
        "  end-to-end                      {rate:>9.0} jobs/s   (target ≥ 1,000: {:.2}×)",
        rate / 1000.0
    );
    finished.print_latencies();
    if let Some(steady_finished) = steady_finished {
        println!(
            "then {} jobs at a steady {} jobs/s (no backlog): enqueue → done",
            steady.jobs(),
            steady.rate
        );
        steady_finished.print_latencies();
        println!(
            "  p99 against the target (≤ 250 ms) {:>7.2}×",
            steady_finished.percentile(0.99).as_secs_f64() / 0.250
        );
    }
    println!("  rows left in the table          {left:>9}");
    println!(
        "  Redis after the vacuum          {redis_keys:>9} keys, {redis_bytes} bytes (keys under `{}`)",
        daemon.queue
    );
    Ok(())
}

/// An erase job for `user` on `target` by `column`, keyed `erase-USER`.
pub(crate) fn erasure(target: &str, column: &str, user: u64) -> (String, serde_json::Value) {
    let key = format!("erase-{user}");
    let job = serde_json::json!({
        "target": target,
        "filter": {"all": [{"column": column, "op": "eq", "value": user}]},
        "requested_by": "bench",
        "reason": "erasure",
        "idempotency_key": key,
    });
    (key, job)
}

/// A `reaper run` on Redis with its own queue name, config directory and catalog.
pub(crate) struct RunningDaemon {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// The queue's name (its Redis keys' prefix).
    pub(crate) queue: String,
}

impl RunningDaemon {
    /// Writes the config (`targets` appended), migrates, starts the daemon and gives it two
    /// seconds to connect and register before any clock starts.
    pub(crate) async fn start(
        reaper: &std::path::Path,
        url: &str,
        redis_url: &str,
        concurrency: u32,
        targets: &str,
    ) -> anyhow::Result<Self> {
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
{targets}"#,
                pool = concurrency + 4,
            ),
        )?;
        let status = std::process::Command::new(reaper)
            .args(["--config", &config.display().to_string(), "migrate"])
            .status()?;
        anyhow::ensure!(status.success(), "reaper migrate failed");
        let child = std::process::Command::new(reaper)
            .args(["--config", &config.display().to_string(), "run"])
            .env("REAPER_LOG", "warn")
            .spawn()
            .context("cannot start the reaper daemon")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Self { child, dir, queue })
    }

    /// Pushes the jobs on the Redis intake, 500 per pipeline; when each was enqueued, by key.
    pub(crate) async fn enqueue(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        jobs: impl Iterator<Item = (String, serde_json::Value)>,
    ) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
        let intake = format!("{}:intake", self.queue);
        let jobs: Vec<_> = jobs.collect();
        let mut enqueued_at = HashMap::with_capacity(jobs.len());
        for chunk in jobs.chunks(500) {
            let mut pipe = redis::pipe();
            let now = Utc::now();
            for (key, job) in chunk {
                pipe.lpush(&intake, job.to_string()).ignore();
                enqueued_at.insert(key.clone(), now);
            }
            pipe.query_async::<()>(redis).await?;
        }
        Ok(enqueued_at)
    }

    /// Pushes the jobs on the Redis intake one at a time, `rate` a second on a fixed schedule
    /// (a late push is not made up for by a burst); when each was enqueued, by key.
    pub(crate) async fn enqueue_steadily(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        jobs: impl Iterator<Item = (String, serde_json::Value)>,
        rate: u32,
    ) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
        let intake = format!("{}:intake", self.queue);
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut enqueued_at = HashMap::new();
        for (key, job) in jobs {
            ticks.tick().await;
            let now = Utc::now();
            redis::cmd("LPUSH")
                .arg(&intake)
                .arg(job.to_string())
                .query_async::<()>(redis)
                .await?;
            enqueued_at.insert(key, now);
        }
        Ok(enqueued_at)
    }

    /// SIGTERM, then deletes the queue's Redis keys and the config directory.
    pub(crate) async fn stop(
        &mut self,
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let mut cleanup = redis::pipe();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.queue))
            .query_async(redis)
            .await?;
        for key in keys {
            cleanup.del(key).ignore();
        }
        cleanup.query_async::<()>(redis).await?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Waits until `jobs` jobs are finished (or nothing moves for 60 s).
pub(crate) async fn wait_finished(conn: &DatabaseConnection, jobs: u64) -> anyhow::Result<()> {
    let mut last_done = 0;
    let mut last_progress = Instant::now();
    loop {
        let done: i64 = crate::query_one(
            conn,
            "SELECT count(*) FROM reaper_jobs WHERE state IN ('done', 'dead', 'cancelled')",
        )
        .await?;
        if done as u64 >= jobs {
            return Ok(());
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
}

/// The finished jobs as the ledger records them: each job's enqueue→done latency (sorted),
/// the first enqueue to the last finish, and how many did not end `done`.
pub(crate) struct Finished {
    latencies: Vec<Duration>,
    /// First enqueue → last `finished_at`.
    pub(crate) elapsed: Duration,
    not_done: u64,
}

impl Finished {
    pub(crate) async fn read(
        conn: &DatabaseConnection,
        enqueued_at: &HashMap<String, DateTime<Utc>>,
    ) -> anyhow::Result<Self> {
        let first_enqueue = enqueued_at.values().min().copied().unwrap_or_else(Utc::now);
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
        latencies.sort();
        Ok(Self {
            latencies,
            elapsed: (last_finish - first_enqueue).to_std().unwrap_or_default(),
            not_done,
        })
    }

    /// The latency at quantile `p` (0..=1).
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        self.latencies
            .get(((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    /// p50, p99 and the jobs not done.
    pub(crate) fn print_latencies(&self) {
        println!(
            "  enqueue → done latency p50      {:>9.1} ms",
            self.percentile(0.50).as_secs_f64() * 1e3
        );
        println!(
            "  enqueue → done latency p99      {:>9.1} ms",
            self.percentile(0.99).as_secs_f64() * 1e3
        );
        println!("  jobs not done                   {:>9}", self.not_done);
    }
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
pub(crate) fn build_reaper() -> anyhow::Result<std::path::PathBuf> {
    // Another build of reaper (an earlier commit's, say), for figures side by side.
    if let Some(binary) = std::env::var_os("REAPER_BENCH_BINARY") {
        return Ok(binary.into());
    }
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
