//! `load`: what a purge does to the production traffic on the same table. A fixed-rate OLTP
//! load (single-row SELECT by key, INSERT, UPDATE by key) runs on `events` while nothing is
//! purged, while one unbounded `DELETE` removes the matching half, and while reaper's engine
//! purges the same rows under a throttle; it prints p50/p99 per request type and phase.
//!
//! The load is open-loop: request k of a type is due at `start + k / rate`, whether or not the
//! earlier ones have finished, and its latency runs from that due moment to its completion. A
//! stall therefore shows in every request that was due during it (no coordinated omission).
//! One OS thread keeps the schedule (`nanosleep` is precise to ~0.1 ms, tokio's timer only to
//! 1 ms) and hands each request to the runtime; each type has its own pool of connections, so
//! updates stuck behind a lock do not hold up the selects. Ids are uniform over the loaded id
//! range (half of them are rows the purge deletes), the same sequence in every phase.
//!
//! Phases, each on a freshly loaded table, each after 2 s of load that is not measured:
//! (a) no purge, `--phase-secs` long; (b) one `DELETE … WHERE created_at < cutoff` from its
//! start until it commits, plus 1 s; (c) reaper's `runner::run_job` with the throttle from the
//! flags, from its start until the job is done, plus 1 s; (d) the same with no rows-per-second
//! cap (`--gated-max-rows-per-second`) but gated by the database's health signals (load and lock
//! waits on the same PostgreSQL, `--health-load`, `--health-lock-waits`), printing the
//! controller's decisions as a time series (rate, batch size, signal values, paused or not). A
//! request counts in the phase in which it was due.
//!
//! The default throttle (adaptive toward 30 ms batches of 100..5,000 rows, 10 ms pause, at most
//! 15,000 rows/s) is the fastest of the settings tried that kept every p99 within 1.5× in every
//! quiet run on a 2-core machine. The load generator and PostgreSQL share that machine, so
//! anything else running there shows in the figures: the report prints the machine's CPU use
//! and the cluster's checkpoints per phase, and warns when a checkpoint fell into a phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use reaper_core::catalog::Catalog;
use reaper_core::health::{Reading, Signal, Verdict};
use reaper_core::throttle::{Adaptive, Throttle};
use reaper_engine::health::HealthGate;
use reaper_engine::runner::{self, RunOutcome};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value,
};

/// Flags of `load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Rows in the table (half of them match).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Length of the phase without a purge; the purge phases last as long as their purge, plus
    /// 1 s.
    #[arg(long, default_value_t = 20)]
    phase_secs: u64,
    /// Requests per second of each type (select, insert, update), at fixed intervals.
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// Connections per request type (the purge has its own).
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Adaptive batch size: the duration one batch transaction should take; 0 turns adaptation
    /// off (every batch is --max-batch rows).
    #[arg(long, default_value_t = 30)]
    target_batch_ms: u64,
    /// The smallest adaptive batch.
    #[arg(long, default_value_t = 100)]
    min_batch: u32,
    /// The largest batch.
    #[arg(long, default_value_t = 5_000)]
    max_batch: u32,
    /// The first batch's size (adaptation starts here).
    #[arg(long, default_value_t = 1_000)]
    start_batch: u32,
    /// Sleep after every batch.
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// Cap on the purge's rows per second; 0: no cap. Of the caps tried on a 2-core machine
    /// (10k, 15k, 20k, 30k, 40k), 15k is the highest that met the p99 target in every quiet run.
    #[arg(long, default_value_t = 15_000)]
    max_rows_per_second: u32,
    /// Which phases to run: any of a (no purge), b (unbounded DELETE), c (reaper), d (reaper
    /// gated by health signals); (a) is needed for the ratios. `ac` is the quick loop for trying
    /// throttle settings, `ad` for health thresholds.
    #[arg(long, default_value = "abc")]
    phases: String,
    /// Phase (d): the rows-per-second cap under the health gate; 0: none.
    #[arg(long, default_value_t = 0)]
    gated_max_rows_per_second: u32,
    /// Phase (d): pause while more sessions than this are active (`[database.health.load]`).
    #[arg(long, default_value_t = 2)]
    health_load: u32,
    /// Phase (d): pause while more sessions than this wait for a lock reaper holds.
    #[arg(long, default_value_t = 0)]
    health_lock_waits: u32,
    /// Phase (d): read the signals at most this often, in ms (`sample_every`).
    #[arg(long, default_value_t = 100)]
    health_sample_ms: u64,
    /// Also write every request (phase, type, due ms since the phase's window start, latency ms)
    /// and every reaper batch commit as it was seen (phase, "batch", ms, rows so far) to this
    /// CSV file, for plots.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// The server (on this machine: 127.0.0.1, localhost or [::1]).
    #[command(flatten)]
    postgres: crate::PostgresServer,
}

/// Load before each phase's measurement, not counted.
const WARMUP: Duration = Duration::from_secs(2);
/// Load measured after a purge ends (the backlog it caused drains here).
const TAIL: Duration = Duration::from_secs(1);
/// The target: during a reaper purge the load's p99 stays within this factor of its p99
/// without a purge, for every request type.
const TARGET_RATIO: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Select,
    Insert,
    Update,
}

const OPS: [Op; 3] = [Op::Select, Op::Insert, Op::Update];

impl Op {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::Select => "select",
            Op::Insert => "insert",
            Op::Update => "update",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purge {
    None,
    Unbounded,
    Reaper,
    Gated,
}

impl Purge {
    fn label(self) -> &'static str {
        match self {
            Purge::None => "(a) no purge",
            Purge::Unbounded => "(b) unbounded DELETE",
            Purge::Reaper => "(c) reaper, throttled",
            Purge::Gated => "(d) reaper, health-gated",
        }
    }

    /// A reaper purge, throttled or gated.
    fn is_reaper(self) -> bool {
        matches!(self, Purge::Reaper | Purge::Gated)
    }
}

/// One point of phase (d)'s time series: what the controller saw and did.
#[derive(Debug, Clone)]
struct Point {
    at: Duration,
    rows: u64,
    batch_size: u32,
    load: Option<f64>,
    lock_waits: Option<f64>,
    paused: bool,
}

/// One request as measured.
#[derive(Debug)]
struct Sample {
    op: Op,
    due: Instant,
    /// From the due moment to the request's task starting (the generator's own delay; part of
    /// the latency).
    lag: Duration,
    /// From the due moment to completion.
    latency: Duration,
    error: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct OpStats {
    count: usize,
    errors: usize,
    first_error: Option<String>,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

#[derive(Debug)]
struct PurgeFigures {
    rows: u64,
    duration: Duration,
    batches: u64,
    longest_batch: Duration,
    batch_time: Duration,
    /// Rows per batch in order (reaper's audit).
    sizes: Vec<i64>,
}

#[derive(Debug)]
struct PhaseResult {
    purge: Purge,
    window: Duration,
    ops: [OpStats; 3],
    lag_p99: Duration,
    /// WAL the whole cluster wrote during the window.
    wal_bytes: i64,
    /// Checkpoints the cluster made during the window: another database's DROP forces one, and
    /// so does passing max_wal_size.
    checkpoints: i64,
    /// Share of the machine's CPU time (all cores) that was busy during the window, whoever
    /// used it.
    cpu_busy: Option<f64>,
    purge_figures: Option<PurgeFigures>,
    trace: Trace,
    /// Phase (d): the controller's decisions over time.
    series: Vec<Point>,
}

/// What `--trace` writes.
#[derive(Debug)]
struct Trace {
    start: Instant,
    samples: Vec<Sample>,
    /// Reaper batch commits as seen: when, and rows deleted so far.
    commits: Vec<(Instant, u64)>,
}

pub(crate) async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.phases.contains('a') && args.phases.chars().all(|c| "abcd".contains(c)),
        "--phases: letters from `abcd`, with `a` (the baseline of every ratio)"
    );
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    anyhow::ensure!(
        args.min_batch >= 1 && args.min_batch <= args.max_batch,
        "--min-batch must be between 1 and --max-batch"
    );
    anyhow::ensure!(
        is_local(&args.postgres.postgres_url),
        "--postgres-url must point at 127.0.0.1, localhost or [::1]: the benchmark drops and \
         creates a database there and loads it heavily"
    );
    let url = crate::create_database(&args.postgres.postgres_url).await?;
    let result = phases(&args, &url).await;
    crate::drop_database(&args.postgres.postgres_url).await?;
    result
}

/// Whether a `postgres://` URL's host is this machine's loopback.
fn is_local(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

async fn phases(args: &LoadArgs, url: &str) -> anyhow::Result<()> {
    let conn = sea_orm::Database::connect(url).await?;
    let version: String = crate::query_one(&conn, "SHOW server_version").await?;
    println!(
        "reaper OLTP-load benchmark — PostgreSQL {version}, {} rows, 50% matching spread over the id range",
        args.rows
    );
    println!(
        "load: {} req/s each of select / insert / update by primary key, open-loop at fixed intervals, \
         {} connections per type; latency from each request's due time",
        args.rate, args.connections
    );
    println!("purge (c) throttle: {}", describe_throttle(args));
    println!("purge (d): {}", describe_gate(args));
    println!(
        "(a fresh, vacuumed, analyzed table per phase; {} s of unmeasured load before each; (a) lasts {} s, \
         (b) and (c) from the purge's start to its end plus {} s)\n",
        WARMUP.as_secs(),
        args.phase_secs,
        TAIL.as_secs()
    );
    let mut results = Vec::new();
    for purge in [Purge::None, Purge::Unbounded, Purge::Reaper, Purge::Gated] {
        if !args.phases.contains(&purge.label()[1..2]) {
            continue;
        }
        let result = phase(&conn, url, args, purge).await?;
        println!(
            "{} done: {:.1} s measured",
            purge.label(),
            result.window.as_secs_f64()
        );
        results.push(result);
    }
    conn.close().await.ok();
    print_report(args, &results);
    if let Some(path) = &args.trace {
        write_trace(path, &results)?;
        println!("trace written to {}", path.display());
    }
    Ok(())
}

fn describe_throttle(args: &LoadArgs) -> String {
    let adaptive = if args.target_batch_ms > 0 {
        format!(
            "adaptive batch toward {} ms per batch ({}..{} rows, starting at {})",
            args.target_batch_ms,
            args.min_batch,
            args.max_batch,
            args.start_batch.clamp(args.min_batch, args.max_batch)
        )
    } else {
        format!("fixed batches of {} rows", args.max_batch)
    };
    let cap = match args.max_rows_per_second {
        0 => "no rows/s cap".to_owned(),
        cap => format!("≤ {cap} rows/s"),
    };
    format!("{adaptive}, pause {} ms, {cap}", args.pause_ms)
}

fn describe_gate(args: &LoadArgs) -> String {
    let cap = match args.gated_max_rows_per_second {
        0 => "no rows/s cap".to_owned(),
        cap => format!("≤ {cap} rows/s"),
    };
    format!(
        "as (c) but {cap}, gated by health: pause while active sessions > {} or sessions waiting on reaper's locks > {}, read every {} ms",
        args.health_load, args.health_lock_waits, args.health_sample_ms
    )
}

/// Phase (d)'s health gate on the benchmark's database.
async fn health_gate(args: &LoadArgs, url: &str) -> anyhow::Result<HealthGate> {
    use reaper_core::config::{DatabaseConfig, HealthConfig, SessionLimits};
    use reaper_core::span::Span;
    let sessions = |pause_above| SessionLimits {
        pause_above,
        resume_below: None,
        stop_above: None,
    };
    let config = DatabaseConfig {
        url: url.to_owned(),
        max_connections: 1,
        statement_timeout: Span::from_secs(60),
        lock_timeout: Span::from_millis(50),
        health: Some(HealthConfig {
            sample_every: Span::from_millis(args.health_sample_ms),
            stop_for: Span::from_secs(60),
            replica_lag: None,
            load: Some(sessions(args.health_load)),
            lock_waits: Some(sessions(args.health_lock_waits)),
        }),
    };
    Ok(HealthGate::connect(&config).await?)
}

fn throttle(args: &LoadArgs) -> Throttle {
    Throttle {
        pause: Duration::from_millis(args.pause_ms),
        max_rows_per_second: (args.max_rows_per_second > 0).then_some(args.max_rows_per_second),
        adaptive: (args.target_batch_ms > 0).then(|| Adaptive {
            target: Duration::from_millis(args.target_batch_ms),
            min: args.min_batch,
            max: args.max_batch,
        }),
        ..Throttle::default()
    }
}

async fn phase(
    conn: &DatabaseConnection,
    url: &str,
    args: &LoadArgs,
    purge: Purge,
) -> anyhow::Result<PhaseResult> {
    crate::load(conn, args.rows).await?;
    // The engine's tables and the job exist before the load starts; only the run is measured.
    let engine = if purge.is_reaper() {
        let start = if args.target_batch_ms > 0 {
            args.start_batch.clamp(args.min_batch, args.max_batch)
        } else {
            args.max_batch
        };
        let mut throttle = throttle(args);
        if purge == Purge::Gated {
            throttle.max_rows_per_second =
                (args.gated_max_rows_per_second > 0).then_some(args.gated_max_rows_per_second);
        }
        let catalog = Catalog::new([crate::events_target(start, args.max_batch, throttle)]);
        let (db, id) = crate::submit_purge(url, &catalog, start).await?;
        Some(Engine { db, catalog, id })
    } else {
        None
    };

    let pools = connect_pools(url, args.connections).await?;
    let load = Load::start(&pools, args.rate, args.rows)?;
    tokio::time::sleep(WARMUP).await;
    let window = measure(conn, (args, url), purge, engine.as_ref()).await;
    // The load stops and its connections close whether or not the purge went well.
    let samples = load.stop().await;
    for pool in pools {
        pool.close().await.ok();
    }
    let (window, samples) = (window?, samples?);

    let mut purge_figures = window.purge_figures;
    if let (Some(figures), Some(engine)) = (purge_figures.as_mut(), &engine) {
        let rows = engine
            .db
            .connection()
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT row_count FROM reaper_audit WHERE job_id = $1 ORDER BY batch_no",
                [engine.id.clone().into()],
            ))
            .await?;
        figures.sizes = rows
            .iter()
            .map(|row| row.try_get_by_index::<i64>(0))
            .collect::<Result<_, _>>()?;
    }
    if let Some(engine) = engine {
        engine.db.connection().clone().close().await.ok();
    }
    if let Some(figures) = &purge_figures {
        anyhow::ensure!(
            figures.rows == args.rows / 2,
            "{} deleted {} rows, expected {}",
            purge.label(),
            figures.rows,
            args.rows / 2
        );
    }

    let in_window: Vec<Sample> = samples
        .into_iter()
        .filter(|sample| sample.due >= window.start && sample.due < window.end)
        .collect();
    let ops = OPS.map(|op| {
        let of_op: Vec<&Sample> = in_window.iter().filter(|sample| sample.op == op).collect();
        stats(&of_op)
    });
    let mut lags: Vec<Duration> = in_window.iter().map(|sample| sample.lag).collect();
    lags.sort_unstable();
    Ok(PhaseResult {
        purge,
        window: window.end - window.start,
        ops,
        lag_p99: percentile(&lags, 0.99),
        wal_bytes: window.wal_bytes,
        checkpoints: window.checkpoints,
        cpu_busy: window.cpu_busy,
        purge_figures,
        trace: Trace {
            start: window.start,
            samples: in_window,
            commits: window.commits,
        },
        series: window.series,
    })
}

/// The purge's engine, connected, with its catalog and submitted job.
struct Engine {
    db: reaper_engine::Database,
    catalog: Catalog,
    id: String,
}

/// One measured window: when, what the cluster did, what the purge did.
struct Window {
    start: Instant,
    end: Instant,
    wal_bytes: i64,
    checkpoints: i64,
    cpu_busy: Option<f64>,
    commits: Vec<(Instant, u64)>,
    purge_figures: Option<PurgeFigures>,
    series: Vec<Point>,
}

/// The measured window of a phase, the load running: the phase's purge (or `--phase-secs` of
/// nothing), then the tail.
async fn measure(
    conn: &DatabaseConnection,
    (args, url): (&LoadArgs, &str),
    purge: Purge,
    engine: Option<&Engine>,
) -> anyhow::Result<Window> {
    let wal_start = wal_position(conn).await?;
    let checkpoints_start = checkpoints(conn).await?;
    let cpu_start = cpu_times();
    let start = Instant::now();
    let mut commits = Vec::new();
    let mut series = Vec::new();
    let purge_figures = match (purge, engine) {
        (Purge::None, _) => {
            tokio::time::sleep(Duration::from_secs(args.phase_secs)).await;
            None
        }
        (Purge::Unbounded, _) => {
            let figures = crate::unbounded_delete(conn).await?;
            Some(PurgeFigures {
                rows: figures.rows,
                duration: figures.total,
                batches: 1,
                longest_batch: figures.total,
                batch_time: figures.total,
                sizes: vec![i64::try_from(figures.rows).unwrap_or(i64::MAX)],
            })
        }
        (Purge::Reaper | Purge::Gated, Some(engine)) => {
            let mut settings = crate::bench_run_settings();
            if purge == Purge::Gated {
                settings.health = Arc::new(health_gate(args, url).await?);
            }
            let sampler = Sampler::start(&settings, start);
            // Watches the run's progress to time each batch commit (for --trace).
            let progress = settings.progress.clone();
            let watching = Arc::new(AtomicBool::new(true));
            let watcher = tokio::spawn({
                let watching = watching.clone();
                async move {
                    let mut seen = 0;
                    let mut commits = Vec::new();
                    while watching.load(Ordering::Relaxed) {
                        let rows = progress.rows.load(Ordering::Relaxed);
                        if rows != seen {
                            seen = rows;
                            commits.push((Instant::now(), rows));
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    commits
                }
            });
            let started = Instant::now();
            let report =
                runner::run_job(&engine.db, &engine.catalog, &engine.id, &settings, &|| {
                    false
                })
                .await;
            let duration = started.elapsed();
            watching.store(false, Ordering::Relaxed);
            commits = watcher.await?;
            series = sampler.stop().await?;
            let report = report?;
            anyhow::ensure!(
                report.outcome == RunOutcome::Done,
                "the engine did not finish: {:?}",
                report.outcome
            );
            Some(PurgeFigures {
                rows: report.rows,
                duration,
                batches: report.batches,
                longest_batch: report.longest_batch,
                batch_time: report.batch_time,
                sizes: Vec::new(),
            })
        }
        (Purge::Reaper | Purge::Gated, None) => anyhow::bail!("the engine was not prepared"),
    };
    if purge != Purge::None {
        tokio::time::sleep(TAIL).await;
    }
    let end = Instant::now();
    let cpu_busy = match (cpu_start, cpu_times()) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            Some((busy1 - busy0) as f64 / (total1 - total0) as f64)
        }
        _ => None,
    };
    Ok(Window {
        start,
        end,
        cpu_busy,
        wal_bytes: wal_position(conn).await? - wal_start,
        checkpoints: checkpoints(conn).await? - checkpoints_start,
        commits,
        purge_figures,
        series,
    })
}

/// Samples a gated run's controller every [`Sampler::EVERY`]: rows so far, the next batch's
/// size, the health readings, whether the batches are held.
struct Sampler {
    sampling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Point>>,
}

impl Sampler {
    const EVERY: Duration = Duration::from_millis(250);

    fn start(settings: &runner::RunSettings, start: Instant) -> Self {
        let sampling = Arc::new(AtomicBool::new(true));
        let (progress, gate) = (settings.progress.clone(), settings.health.clone());
        let task = tokio::spawn({
            let sampling = sampling.clone();
            async move {
                let mut points = Vec::new();
                while sampling.load(Ordering::Relaxed) && !gate.is_off() {
                    let readings = gate.last_readings().await;
                    let value = |signal| match readings.get(&signal) {
                        Some(Reading::Value(value)) => Some(*value),
                        _ => None,
                    };
                    let paused = !matches!(gate.last_verdict().await, None | Some(Verdict::Go));
                    points.push(Point {
                        at: start.elapsed(),
                        rows: progress.rows.load(Ordering::Relaxed),
                        batch_size: progress.batch_size.load(Ordering::Relaxed),
                        load: value(Signal::Load),
                        lock_waits: value(Signal::LockWaits),
                        paused,
                    });
                    tokio::time::sleep(Self::EVERY).await;
                }
                points
            }
        });
        Self { sampling, task }
    }

    async fn stop(self) -> anyhow::Result<Vec<Point>> {
        self.sampling.store(false, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// The cluster's WAL insert position, in bytes.
async fn wal_position(conn: &DatabaseConnection) -> anyhow::Result<i64> {
    crate::query_one(
        conn,
        "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint",
    )
    .await
}

/// Checkpoints of the cluster so far. Another test suite on the same server dropping its
/// databases forces checkpoints, which stall every commit for tens of milliseconds.
async fn checkpoints(conn: &DatabaseConnection) -> anyhow::Result<i64> {
    crate::query_one(
        conn,
        "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
    )
    .await
}

/// Busy and total CPU time of the machine so far (`/proc/stat`, all cores, in ticks); `None`
/// where there is no such file.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

fn write_trace(path: &std::path::Path, results: &[PhaseResult]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "phase,kind,ms,value")?;
    for result in results {
        let phase = &result.purge.label()[1..2];
        let since = |at: Instant| ms(at.saturating_duration_since(result.trace.start));
        for sample in &result.trace.samples {
            writeln!(
                out,
                "{phase},{},{:.3},{:.3}",
                sample.op.name(),
                since(sample.due),
                ms(sample.latency)
            )?;
        }
        for (at, rows) in &result.trace.commits {
            writeln!(out, "{phase},batch,{:.3},{rows}", since(*at))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One pool per request type, every connection opened up front.
async fn connect_pools(url: &str, connections: u32) -> anyhow::Result<[DatabaseConnection; 3]> {
    let mut pools = Vec::new();
    for op in OPS {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(connections)
            .min_connections(connections)
            .connect_timeout(Duration::from_secs(10))
            // Requests wait for a connection as long as a stall lasts: that wait is latency.
            .acquire_timeout(Duration::from_secs(600))
            .statement_timeout(Duration::from_secs(300))
            // No ping before each request: one round trip per request would be measured too.
            .test_before_acquire(false)
            .sqlx_logging(false)
            .set_application_name(format!("reaper-bench-load-{}", op.name()));
        let pool = sea_orm::Database::connect(options).await?;
        // Open every connection now (concurrent sleeps take one each), not in the middle of a
        // measured stall.
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let pool = pool.clone();
            opening.spawn(async move { pool.execute_unprepared("SELECT pg_sleep(0.05)").await });
        }
        while let Some(opened) = opening.join_next().await {
            opened??;
        }
        pools.push(pool);
    }
    pools
        .try_into()
        .map_err(|_| anyhow::anyhow!("three pools expected"))
}

/// The running load: a scheduler thread and the requests it spawned.
struct Load {
    stop: Arc<AtomicBool>,
    scheduler: std::thread::JoinHandle<()>,
    samples: tokio::sync::mpsc::UnboundedReceiver<Sample>,
}

impl Load {
    fn start(pools: &[DatabaseConnection; 3], rate: u32, rows: u64) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, samples) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        let pools = pools.clone();
        let stopped = stop.clone();
        let statements = Arc::new(Statements::new());
        let scheduler = std::thread::Builder::new()
            .name("load-scheduler".into())
            .spawn(move || {
                // Types interleave: select at 0, insert at 1/3, update at 2/3 of each interval.
                let step = 1.0 / (3.0 * f64::from(rate));
                let mut ids = SplitMix64(0x5eed);
                let start = Instant::now();
                let mut k: u64 = 0;
                while !stopped.load(Ordering::Relaxed) {
                    let due = start + Duration::from_secs_f64(k as f64 * step);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let op = OPS[(k % 3) as usize];
                    let id = i64::try_from(1 + ids.next() % rows.max(1)).unwrap_or(1);
                    let pool = pools[op.index()].clone();
                    let sender = sender.clone();
                    let statements = statements.clone();
                    runtime.spawn(async move {
                        let lag = due.elapsed();
                        let result = statements.run(&pool, op, id).await;
                        let latency = due.elapsed();
                        // The receiver is gone only when the phase gave up waiting.
                        let _ = sender.send(Sample {
                            op,
                            due,
                            lag,
                            latency,
                            error: result.err().map(|error| error.to_string()),
                        });
                    });
                    k += 1;
                }
            })?;
        Ok(Self {
            stop,
            scheduler,
            samples,
        })
    }

    /// Stops scheduling and waits for every request in flight.
    async fn stop(mut self) -> anyhow::Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        let scheduler = self.scheduler;
        tokio::task::spawn_blocking(move || scheduler.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the load scheduler panicked"))?;
        let mut samples = Vec::new();
        // The channel closes once the last request's task has sent its sample.
        let drained = tokio::time::timeout(Duration::from_secs(600), async {
            while let Some(sample) = self.samples.recv().await {
                samples.push(sample);
            }
        })
        .await;
        drained.context("requests still unfinished 10 minutes after the load stopped")?;
        Ok(samples)
    }
}

/// The three requests.
struct Statements {
    insert: String,
    payload: String,
}

impl Statements {
    fn new() -> Self {
        Self {
            // Newer than the cutoff: the purge's row count stays exact.
            insert: format!(
                "INSERT INTO events (tenant_id, created_at, payload) VALUES ($1, TIMESTAMPTZ '{}', $2)",
                crate::BASE
            ),
            payload: "u".repeat(200),
        }
    }

    async fn run(&self, pool: &DatabaseConnection, op: Op, id: i64) -> Result<(), DbErr> {
        match op {
            Op::Select => {
                pool.query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT id, tenant_id, created_at, payload FROM events WHERE id = $1",
                    [id.into()],
                ))
                .await?;
            }
            Op::Insert => {
                pool.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    self.insert.as_str(),
                    [Value::from((id % 100) as i32), self.payload.clone().into()],
                ))
                .await?;
            }
            Op::Update => {
                pool.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE events SET payload = $2 WHERE id = $1",
                    [id.into(), self.payload.clone().into()],
                ))
                .await?;
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (SplitMix64): the same ids in every phase and run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn stats(samples: &[&Sample]) -> OpStats {
    let mut latencies: Vec<Duration> = samples.iter().map(|sample| sample.latency).collect();
    latencies.sort_unstable();
    let errors: Vec<&String> = samples
        .iter()
        .filter_map(|sample| sample.error.as_ref())
        .collect();
    OpStats {
        count: latencies.len(),
        errors: errors.len(),
        first_error: errors.first().map(|error| (*error).clone()),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print_report(args: &LoadArgs, results: &[PhaseResult]) {
    let Some(baseline) = results.iter().find(|r| r.purge == Purge::None) else {
        return;
    };
    println!();
    println!(
        "{:<24} {:>7}  {:<6} {:>6} {:>9} {:>9} {:>9} {:>10}  errors",
        "phase", "window", "op", "n", "p50 ms", "p99 ms", "max ms", "p99/(a)"
    );
    for result in results {
        for op in OPS {
            let stats = &result.ops[op.index()];
            let ratio = ms(stats.p99) / ms(baseline.ops[op.index()].p99);
            println!(
                "{:<24} {:>6.1}s  {:<6} {:>6} {:>9.2} {:>9.2} {:>9.1} {:>9.2}×  {}",
                result.purge.label(),
                result.window.as_secs_f64(),
                op.name(),
                stats.count,
                ms(stats.p50),
                ms(stats.p99),
                ms(stats.max),
                ratio,
                stats.errors
            );
        }
    }
    println!();
    for result in results {
        for op in OPS {
            if let Some(error) = &result.ops[op.index()].first_error {
                println!(
                    "{} {}: {} errors, first: {error}",
                    result.purge.label(),
                    op.name(),
                    result.ops[op.index()].errors
                );
            }
        }
    }
    println!(
        "cluster WAL written per phase: {}",
        results
            .iter()
            .map(|r| format!(
                "{} {:.0} MB",
                &r.purge.label()[..3],
                r.wal_bytes as f64 / 1e6
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "during each phase: machine CPU busy (all {} cores, anyone's) / checkpoints of the cluster: {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        results
            .iter()
            .map(|r| format!(
                "{} {} / {}",
                &r.purge.label()[..3],
                r.cpu_busy
                    .map_or("?".to_owned(), |busy| format!("{:.0}%", busy * 100.0)),
                r.checkpoints
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "load generator's own lag p99 (due → request started; inside the latencies): {}",
        results
            .iter()
            .map(|r| format!("{} {:.2} ms", &r.purge.label()[..3], ms(r.lag_p99)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for result in results {
        let Some(figures) = &result.purge_figures else {
            continue;
        };
        let rate = figures.rows as f64 / figures.duration.as_secs_f64();
        match result.purge {
            Purge::Unbounded => println!(
                "{}: {} rows in {:.2} s ({rate:.0} rows/s), one transaction",
                result.purge.label(),
                figures.rows,
                figures.duration.as_secs_f64()
            ),
            _ => {
                let sizes = &figures.sizes;
                let last_half = &sizes[sizes.len() / 2..];
                let mut sorted_tail = last_half.to_vec();
                sorted_tail.sort_unstable();
                let settled = sorted_tail.get(sorted_tail.len() / 2).copied().unwrap_or(0);
                let mean_batch = if figures.batches > 0 {
                    ms(figures.batch_time) / figures.batches as f64
                } else {
                    0.0
                };
                println!(
                    "{}: {} rows in {:.2} s ({rate:.0} rows/s), {} batches, {:.2} s inside batch transactions \
                     ({:.0}% of the time; mean {mean_batch:.1} ms, longest {:.1} ms)",
                    result.purge.label(),
                    figures.rows,
                    figures.duration.as_secs_f64(),
                    figures.batches,
                    figures.batch_time.as_secs_f64(),
                    100.0 * figures.batch_time.as_secs_f64() / figures.duration.as_secs_f64(),
                    ms(figures.longest_batch)
                );
                println!(
                    "    batch sizes (audit row_count): first {:?}, settled at ~{settled} (median of the last half; \
                     range there {}–{}), last {:?}",
                    &sizes[..sizes.len().min(8)],
                    sorted_tail.first().copied().unwrap_or(0),
                    sorted_tail.last().copied().unwrap_or(0),
                    &sizes[sizes.len().saturating_sub(3)..]
                );
            }
        }
    }
    print_series(results);
    println!();
    for result in results.iter().filter(|r| r.purge != Purge::None) {
        let mut met = true;
        let ratios: Vec<String> = OPS
            .iter()
            .map(|&op| {
                let ratio = ms(result.ops[op.index()].p99) / ms(baseline.ops[op.index()].p99);
                met &= ratio <= TARGET_RATIO;
                format!("{} {ratio:.2}×", op.name())
            })
            .collect();
        let verdict = match (result.purge.is_reaper(), met) {
            (false, _) => String::new(),
            (true, met) => format!(
                " — p99 target (≤ {TARGET_RATIO}× every type) {}",
                if met { "MET" } else { "NOT MET" }
            ),
        };
        println!(
            "p99 {} / (a): {}{verdict}",
            &result.purge.label()[..3],
            ratios.join(", ")
        );
    }
    for result in results.iter().filter(|r| r.purge == Purge::Gated) {
        if let Some(figures) = &result.purge_figures {
            let rate = figures.rows as f64 / figures.duration.as_secs_f64();
            println!(
                "(d) rate {rate:.0} rows/s — rate target (≥ {GATED_RATE_TARGET} rows/s, twice the default cap) {}",
                if rate >= f64::from(GATED_RATE_TARGET) {
                    "MET"
                } else {
                    "NOT MET"
                }
            );
        }
    }
    if results.iter().any(|r| r.checkpoints > 0) {
        println!(
            "warning: the cluster checkpointed during a measured phase (another database's DROP, or \
             max_wal_size); commits stall then, so that phase's p99 says more about the checkpoint \
             than about the purge — run again on a quiet server"
        );
    }
    println!("throttle used: {}", describe_throttle(args));
    if results.iter().any(|r| r.purge == Purge::Gated) {
        println!("gate used (d): {}", describe_gate(args));
    }
}

/// Phase (d) must purge at least this fast: twice the default cap of phase (c).
const GATED_RATE_TARGET: u32 = 30_000;

/// Phase (d)'s time series: per sample, the rate since the last one, the next batch's size, the
/// signals and whether the gate held the batches.
fn print_series(results: &[PhaseResult]) {
    for result in results.iter().filter(|r| !r.series.is_empty()) {
        println!(
            "\n{} controller, every {} ms: t s, rows/s since the last sample, next batch size, active sessions, lock waits, held",
            result.purge.label(),
            Sampler::EVERY.as_millis()
        );
        let mut previous: Option<&Point> = None;
        for point in &result.series {
            let rate = previous.map_or(0.0, |before| {
                (point.rows - before.rows) as f64 / (point.at - before.at).as_secs_f64()
            });
            let show = |value: Option<f64>| value.map_or("?".to_owned(), |v| format!("{v:.0}"));
            println!(
                "  {:>6.2} {:>8.0} {:>6} {:>4} {:>4} {}",
                point.at.as_secs_f64(),
                rate,
                point.batch_size,
                show(point.load),
                show(point.lock_waits),
                if point.paused { "held" } else { "" }
            );
            previous = Some(point);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres:pw@localhost/postgres",
            "postgresql://u@[::1]:5433/db?sslmode=disable",
            "postgres://127.0.0.1/postgres",
        ] {
            assert!(is_local(url), "{url}");
        }
        for url in [
            "postgres://postgres@db.internal:5432/postgres",
            "postgres://postgres@10.0.0.5/postgres",
            "postgres://localhost.example.com/postgres",
            "not a url",
        ] {
            assert!(!is_local(url), "{url}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
