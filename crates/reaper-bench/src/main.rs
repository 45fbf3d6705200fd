//! `reaper-bench`: measures reaper's engine against the two ways people delete by hand, on
//! PostgreSQL, and prints figures and ratios (not a test: nothing here passes or fails).
//!
//! ```text
//! cargo run --release -p reaper-bench -- engine            # 1,000,000 rows (and 100,000 for memory)
//! cargo run --release -p reaper-bench -- engine --rows 200000 --repeat 1
//! cargo run --release -p reaper-bench -- mariadb           # vs pt-archiver (percona-toolkit)
//! cargo run --release -p reaper-bench -- daemon            # jobs/s through Redis, end to end
//! cargo run --release -p reaper-bench -- load              # OLTP p99 during a purge
//! cargo run --release -p reaper-bench -- graph             # erasures across five tables
//! cargo run --release -p reaper-bench -- selective         # one user's erasure on 10,000,000 rows
//! ```
//!
//! Data: `events(id bigserial primary key, tenant_id int, created_at timestamptz, payload text
//! ~200 bytes)` with indexes on `created_at` and `tenant_id`; `created_at` is spread so that
//! `created_at < cutoff` matches exactly 50% of the rows, scattered over the whole id range.
//! Each variant gets a freshly loaded, vacuumed and analyzed table.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use reaper_core::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use reaper_core::config::DatabaseConfig;
use reaper_core::job::JobRequest;
use reaper_core::span::Span;
use reaper_core::strategy::StrategySetting;
use reaper_core::throttle::Throttle;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_engine::{Database, ledger, migration::Migrator};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;

mod daemon;
mod graph;
mod mariadb;
mod oltp;
mod selective;

#[derive(Debug, Parser)]
#[command(about = "reaper benchmarks; prints figures and ratios")]
enum Bench {
    /// PostgreSQL: unbounded DELETE vs a hand-written keyset loop vs reaper's engine with audit.
    Engine {
        /// Rows in the table (half of them match).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows per batch for the loop and the engine.
        #[arg(long, default_value_t = 5_000)]
        batch: u32,
        /// Also measure the engine's peak memory on a table this size, to compare with `rows`.
        #[arg(long, default_value_t = 100_000)]
        small_rows: u64,
        /// Runs of each variant, interleaved; the medians are reported (this machine's
        /// run-to-run noise is about ±15%).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[command(flatten)]
        postgres: PostgresServer,
    },
    /// MariaDB/MySQL: unbounded DELETE vs pt-archiver (with and without --bulk-delete) vs
    /// reaper's engine with audit.
    Mariadb {
        /// Rows in the table (half of them match).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows per chunk for pt-archiver and per batch for the engine.
        #[arg(long, default_value_t = 5_000)]
        batch: u32,
        /// Runs of each variant, interleaved; medians are reported.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Host and port of the server (root, no password), for reaper and pt-archiver alike;
        /// the benchmark creates (and drops) its own database `reaper_bench`.
        #[arg(long, default_value = "127.0.0.1:3306")]
        mysql_host: String,
    },
    /// The real daemon on Redis and PostgreSQL: single-row erase jobs through the Redis intake;
    /// jobs/s end to end and enqueue→done latency.
    Daemon {
        /// Jobs (one row each).
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// The daemon's worker slots.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// Then jobs at this steady rate (jobs/s), one at a time, for the latency a producer
        /// sees when there is no backlog; 0 skips the phase.
        #[arg(long, default_value_t = 200)]
        steady_rate: u32,
        /// How long the steady phase lasts, in seconds.
        #[arg(long, default_value_t = 10)]
        steady_seconds: u32,
        #[command(flatten)]
        servers: Servers,
    },
    /// PostgreSQL: p50/p99 of a fixed-rate OLTP load (select, insert, update by key) on the
    /// table without a purge, during one unbounded DELETE, and during a throttled reaper purge.
    Load(oltp::LoadArgs),
    /// PostgreSQL: erasures across a graph of tables — users with 100 rows each over four
    /// tables through the daemon (erasures/s, p50/p99), and one user with a million child rows
    /// (rows/s, longest transaction) against one hand-written transaction.
    Graph {
        /// Users erased through the daemon.
        #[arg(long, default_value_t = 1_000)]
        users: u64,
        /// Child rows of the one big user.
        #[arg(long, default_value_t = 1_000_000)]
        children: u64,
        /// The daemon's worker slots.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        #[command(flatten)]
        servers: Servers,
    },
    /// One user's erasure (~50 rows, index on the user column) on a 10,000,000-row table:
    /// per-job time with the strategy the engine chooses against a keyset walk of the primary
    /// key, and the plans; PostgreSQL, or `--backend mariadb|sqlite`.
    Selective(selective::SelectiveArgs),
}

/// PostgreSQL and Redis for the benchmarks that run the daemon.
#[derive(Debug, clap::Args)]
struct Servers {
    #[command(flatten)]
    postgres: PostgresServer,
    /// Redis; the benchmark uses its own queue name and deletes its keys afterwards.
    #[arg(
        long,
        env = "REAPER_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
}

/// The PostgreSQL server a benchmark runs on.
#[derive(Debug, clap::Args)]
pub(crate) struct PostgresServer {
    /// An admin connection; the benchmark creates (and drops) its own database `reaper_bench`
    /// (`selective`: `reaper_bench_selective`).
    #[arg(
        long,
        env = "REAPER_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) postgres_url: String,
}

/// The engine's settings for a benchmark run: one worker that never has to renew its lease or
/// cut a slice short within a run.
pub(crate) fn bench_run_settings() -> RunSettings {
    RunSettings::for_worker(
        "reaper-bench".into(),
        Duration::from_secs(300),
        Duration::from_secs(3_600),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
}

/// Fixed reference time, so the cutoff and the data agree on every run.
pub(crate) const BASE: &str = "2026-01-01 00:00:00+00";
/// `created_at = BASE - bucket * 1 hour` with `bucket` in 0..1000; `< CUTOFF` ⇔ bucket ≥ 500.
pub(crate) const CUTOFF: &str = "2025-12-11T04:00:01Z";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Engine {
            rows,
            batch,
            small_rows,
            repeat,
            postgres,
        } => {
            engine(
                rows,
                batch,
                small_rows,
                repeat.max(1),
                &postgres.postgres_url,
            )
            .await
        }
        Bench::Mariadb {
            rows,
            batch,
            repeat,
            mysql_host,
        } => mariadb::run(rows, batch, repeat.max(1), &mysql_host).await,
        Bench::Daemon {
            jobs,
            concurrency,
            steady_rate,
            steady_seconds,
            servers,
        } => {
            daemon::run(
                jobs,
                concurrency,
                daemon::Steady {
                    rate: steady_rate,
                    seconds: steady_seconds,
                },
                &servers.postgres.postgres_url,
                &servers.redis_url,
            )
            .await
        }
        Bench::Load(args) => oltp::run(args).await,
        Bench::Selective(args) => selective::run(args).await,
        Bench::Graph {
            users,
            children,
            concurrency,
            servers,
        } => {
            graph::run(
                users,
                children,
                concurrency,
                &servers.postgres.postgres_url,
                &servers.redis_url,
            )
            .await
        }
    }
}

/// What one variant did.
pub(crate) struct Figures {
    pub(crate) rows: u64,
    pub(crate) total: Duration,
    pub(crate) longest: Duration,
    pub(crate) batches: u64,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.rows as f64 / self.total.as_secs_f64()
    }
}

async fn engine(
    rows: u64,
    batch: u32,
    small_rows: u64,
    repeat: usize,
    admin_url: &str,
) -> anyhow::Result<()> {
    let url = create_database(admin_url).await?;
    let conn = sea_orm::Database::connect(&url).await?;
    let version: String = query_one(&conn, "SHOW server_version").await?;
    println!(
        "reaper engine benchmark — PostgreSQL {version}, {rows} rows, 50% matching spread over the id range, batch {batch}"
    );
    println!(
        "(a fresh, vacuumed, analyzed table for every run; loading is not timed; {repeat} interleaved runs per variant, medians)\n"
    );

    let (mut unbounded, mut loops, mut engines, mut physicals, mut peak_large) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
    let mut sweep_rows = Vec::new();
    for run in 1..=repeat {
        load(&conn, rows).await?;
        keep_run(
            &mut unbounded,
            &format!("run {run}: unbounded DELETE (one transaction)"),
            unbounded_delete(&conn).await?,
        );
        load(&conn, rows).await?;
        keep_run(
            &mut loops,
            &format!("run {run}: hand-written keyset loop, {batch}/batch"),
            keyset_loop(&conn, batch).await?,
        );
        load(&conn, rows).await?;
        let name = format!("run {run}: reaper engine, {batch}/batch + audit");
        let (figures, _) =
            reported_engine(&url, batch, StrategySetting::Keyset, &name, &mut peak_large).await?;
        engines.push(figures);
        load(&conn, rows).await?;
        let name = format!("run {run}: reaper physical, ≤{batch}/batch + audit");
        let (figures, swept) = reported_engine(
            &url,
            batch,
            StrategySetting::Physical,
            &name,
            &mut peak_large,
        )
        .await?;
        sweep_rows.push(swept);
        physicals.push(figures);
    }
    load(&conn, small_rows).await?;
    let (_, peak_small, _) = reaper_engine(&url, batch, StrategySetting::Keyset).await?;
    load(&conn, small_rows).await?;
    let (_, peak_small_physical, _) = reaper_engine(&url, batch, StrategySetting::Physical).await?;
    let peak_small = peak_small.max(peak_small_physical);

    let (unbounded, loops, engines, physicals) = (
        median(unbounded),
        median(loops),
        median(engines),
        median(physicals),
    );
    println!("\nmedians:");
    report("unbounded DELETE (one transaction)", &unbounded);
    report(&format!("hand-written keyset loop, {batch}/batch"), &loops);
    report(&format!("reaper engine, {batch}/batch + audit"), &engines);
    report(
        &format!("reaper physical, ≤{batch}/batch + audit"),
        &physicals,
    );
    println!();
    // The labels' column, as the figures have always been printed (scripts compare them).
    let pad = 29;
    print_ratio(
        "physical / unbounded DELETE",
        pad,
        &physicals,
        &unbounded,
        "   (target ≥ 0.70×)",
    );
    println!(
        "{:<pad$} = {:.1} ms (target ≤ 50 ms; worst of all runs)",
        "physical longest batch txn",
        physicals.longest.as_secs_f64() * 1e3
    );
    println!(
        "{:<pad$} = {} of {} rows (the rows the keyset sweep took after the physical pass, worst run)",
        "physical sweep's share",
        sweep_rows.iter().max().copied().unwrap_or(0),
        physicals.rows
    );
    print_ratio(
        "reaper / unbounded DELETE",
        pad,
        &engines,
        &unbounded,
        "   (target ≥ 0.30×)",
    );
    print_ratio(
        "reaper / hand-written loop",
        pad,
        &engines,
        &loops,
        "   (target ≥ 0.90×)",
    );
    print_longest(pad, &engines, " (target ≤ 50 ms; worst of all runs)");
    println!(
        "reaper peak RSS during the run: {:.1} MiB at {small_rows} rows, {:.1} MiB at {rows} rows (target: the same)",
        peak_small as f64 / 1024.0,
        peak_large as f64 / 1024.0
    );
    conn.close().await.ok();
    drop_database(admin_url).await?;
    Ok(())
}

/// `label = ratio×note`, the label padded to `pad`: how many times the other variant's rate
/// reaper's is.
pub(crate) fn print_ratio(label: &str, pad: usize, reaper: &Figures, other: &Figures, note: &str) {
    println!("{label:<pad$} = {:.2}×{note}", reaper.rate() / other.rate());
}

/// reaper's longest batch transaction, in the column of [`print_ratio`].
pub(crate) fn print_longest(pad: usize, reaper: &Figures, note: &str) {
    let label = "reaper longest batch txn";
    println!(
        "{label:<pad$} = {:.1} ms{note}",
        reaper.longest.as_secs_f64() * 1e3
    );
}

/// Reports one run of a variant and keeps it for the medians.
pub(crate) fn keep_run(runs: &mut Vec<Figures>, label: &str, figures: Figures) {
    report(label, &figures);
    runs.push(figures);
}

/// The run with the median rate, carrying the worst longest transaction of all runs.
pub(crate) fn median(mut runs: Vec<Figures>) -> Figures {
    let longest = runs.iter().map(|run| run.longest).max().unwrap_or_default();
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut middle = runs.swap_remove(runs.len() / 2);
    middle.longest = longest;
    middle
}

pub(crate) fn report(name: &str, figures: &Figures) {
    println!(
        "{name:<40} {:>9} rows {:>8.0} rows/s  total {:>7.2} s  batches {:>4}  longest txn {:>8.1} ms",
        figures.rows,
        figures.rate(),
        figures.total.as_secs_f64(),
        figures.batches,
        figures.longest.as_secs_f64() * 1e3
    );
}

/// The database the benchmarks create and drop (`selective` uses its own).
pub(crate) const BENCH_DATABASE: &str = "reaper_bench";

/// Connects to `admin_url` (failing with `needed` when it cannot) and creates an empty
/// database `name` after `drop_statement` removed any earlier one; the admin connection.
pub(crate) async fn recreate_bench_database(
    admin_url: &str,
    name: &str,
    drop_statement: &str,
    needed: &str,
) -> anyhow::Result<DatabaseConnection> {
    let admin = sea_orm::Database::connect(admin_url)
        .await
        .with_context(|| needed.to_owned())?;
    admin.execute_unprepared(drop_statement).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(admin)
}

async fn create_database(admin_url: &str) -> anyhow::Result<String> {
    create_named_database(admin_url, BENCH_DATABASE).await
}

/// Creates an empty PostgreSQL database `name` (dropping any earlier one) next to the one
/// `admin_url` names; its URL.
pub(crate) async fn create_named_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let admin = recreate_bench_database(
        admin_url,
        name,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        &format!("PostgreSQL is needed at {admin_url}"),
    )
    .await?;
    admin.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

async fn drop_database(admin_url: &str) -> anyhow::Result<()> {
    drop_named_database(admin_url, BENCH_DATABASE).await
}

/// Drops the PostgreSQL database `name`, closing its sessions.
pub(crate) async fn drop_named_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = sea_orm::Database::connect(admin_url).await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// The first column of the first row `sql` returns, on any backend.
pub(crate) async fn query_one<T: sea_orm::TryGetable>(
    conn: &DatabaseConnection,
    sql: &str,
) -> anyhow::Result<T> {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index(0)?)
}

/// (Re)creates `events` with `rows` rows; `created_at` buckets come from a multiplicative hash
/// of the id, so the matching half is scattered over the id range.
async fn load(conn: &DatabaseConnection, rows: u64) -> anyhow::Result<()> {
    conn.execute_unprepared(&format!(
        "DROP TABLE IF EXISTS events;
         DROP TABLE IF EXISTS reaper_audit; DROP TABLE IF EXISTS reaper_jobs; DROP TABLE IF EXISTS reaper_migrations;
         CREATE TABLE events (id bigserial PRIMARY KEY, tenant_id int NOT NULL, created_at timestamptz NOT NULL, payload text NOT NULL);
         INSERT INTO events (tenant_id, created_at, payload)
         SELECT i % 100, TIMESTAMPTZ '{BASE}' - ((i * 2654435761) % 1000) * INTERVAL '1 hour', repeat(md5(i::text), 6) || 'xxxxxxxx'
           FROM generate_series(1, {rows}) AS i;
         CREATE INDEX events_created_at ON events (created_at);
         CREATE INDEX events_tenant_id ON events (tenant_id);"
    ))
    .await?;
    conn.execute_unprepared("VACUUM ANALYZE events").await?;
    conn.execute_unprepared("CHECKPOINT").await?;
    Ok(())
}

fn cutoff() -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(CUTOFF)?.with_timezone(&Utc))
}

async fn unbounded_delete(conn: &DatabaseConnection) -> anyhow::Result<Figures> {
    timed_delete(
        conn,
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM events WHERE created_at < $1",
            [cutoff()?.into()],
        ),
    )
    .await
}

/// One unbounded DELETE in one transaction, timed.
pub(crate) async fn timed_delete(
    conn: &DatabaseConnection,
    delete: Statement,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let result = conn.execute_raw(delete).await?;
    let total = started.elapsed();
    Ok(Figures {
        rows: result.rows_affected(),
        total,
        longest: total,
        batches: 1,
    })
}

/// What a careful engineer writes by hand: keyset on the primary key, one autocommitted
/// statement per batch, returning only the count and the last key.
async fn keyset_loop(conn: &DatabaseConnection, batch: u32) -> anyhow::Result<Figures> {
    let sql = "WITH d AS (DELETE FROM events WHERE id IN \
                 (SELECT id FROM events WHERE created_at < $1 AND id > $2 ORDER BY id LIMIT $3) RETURNING id) \
               SELECT count(*), max(id) FROM d";
    let cutoff = cutoff()?;
    let (mut last, mut rows, mut batches, mut longest) = (0_i64, 0_u64, 0_u64, Duration::ZERO);
    let started = Instant::now();
    loop {
        let statement_started = Instant::now();
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [cutoff.into(), last.into(), i64::from(batch).into()],
            ))
            .await?
            .context("no row")?;
        longest = longest.max(statement_started.elapsed());
        let count: i64 = row.try_get_by_index(0)?;
        if count == 0 {
            break;
        }
        last = row.try_get_by_index::<i64>(1)?;
        rows += count as u64;
        batches += 1;
    }
    Ok(Figures {
        rows,
        total: started.elapsed(),
        longest,
        batches,
    })
}

/// [`reaper_engine`], reported under `name`, its peak RSS folded into `peak`. Returns the
/// figures and the rows a physical run's keyset sweep removed.
async fn reported_engine(
    url: &str,
    batch: u32,
    strategy: StrategySetting,
    name: &str,
    peak: &mut u64,
) -> anyhow::Result<(Figures, u64)> {
    let (figures, run_peak, swept) = reaper_engine(url, batch, strategy).await?;
    *peak = (*peak).max(run_peak);
    report(name, &figures);
    Ok((figures, swept))
}

/// The engine as the daemon runs it: ledger, lease, one transaction per batch with the audit
/// entry and the checkpoint, walking the way `strategy` says. Returns the figures, the peak RSS
/// (KiB) of the run and the rows a physical run's keyset sweep removed.
pub(crate) async fn reaper_engine(
    url: &str,
    batch: u32,
    strategy: StrategySetting,
) -> anyhow::Result<(Figures, u64, u64)> {
    let throttle = Throttle {
        strategy,
        ..Throttle::default()
    };
    let catalog = Catalog::new([events_target(batch, batch, throttle)]);
    let (db, id) = submit_purge(url, &catalog, batch).await?;
    let settings = bench_run_settings();
    reset_peak_rss();
    let started = Instant::now();
    let report = runner::run_job(&db, &catalog, &id, &settings, &|| false).await?;
    let total = started.elapsed();
    let peak = peak_rss_kib();
    println!(
        "  engine: {:.2} s inside batch transactions, {:.2} s outside them (claim, max_rows pre-check, finish)",
        report.batch_time.as_secs_f64(),
        (total - report.batch_time).as_secs_f64()
    );
    anyhow::ensure!(
        report.outcome == RunOutcome::Done,
        "the engine did not finish: {:?}",
        report.outcome
    );
    let swept = ledger::get(&db, &id)
        .await?
        .and_then(|job| job.job_result())
        .and_then(|result| result.summary().and_then(|summary| summary.sweep_rows))
        .unwrap_or(0);
    Ok((
        Figures {
            rows: report.rows,
            total,
            longest: report.longest_batch,
            batches: report.batches,
        },
        peak,
        swept,
    ))
}

/// The `events` table as a catalog target: batches start at `batch_size` rows (at most
/// `max_batch_size`), paced by `throttle`.
pub(crate) fn events_target(batch_size: u32, max_batch_size: u32, throttle: Throttle) -> Target {
    Target {
        max_batch_size,
        throttle,
        ..bench_target(
            "events",
            &[
                ("created_at", ColumnType::Timestamp),
                ("tenant_id", ColumnType::Int),
            ],
            batch_size,
        )
    }
}

/// A bench table as a catalog target: int key `id`, filterable `columns`, hard deletes in
/// batches of `batch_size` rows, at most 10,000,000 rows a job, no throttle.
pub(crate) fn bench_target(name: &str, columns: &[(&str, ColumnType)], batch_size: u32) -> Target {
    Target {
        name: name.into(),
        schema: None,
        table: name.into(),
        primary_key: "id".into(),
        key_type: KeyType::Int,
        columns: columns
            .iter()
            .map(|&(column, column_type)| (column.to_owned(), column_type))
            .collect(),
        default_mode: Mode::Hard,
        batch_size,
        max_batch_size: batch_size,
        soft_delete_column: None,
        max_rows: 10_000_000,
        max_attempts: None,
        throttle: Throttle::default(),
    }
}

/// Connects the engine (as the daemon would: 4 connections, 50 ms lock timeout), creates its
/// tables and submits the purge of every row older than [`CUTOFF`]; returns the job's id.
pub(crate) async fn submit_purge(
    url: &str,
    catalog: &Catalog,
    batch: u32,
) -> anyhow::Result<(Database, String)> {
    let request = serde_json::json!({
        "target": "events", "batch_size": batch, "requested_by": "reaper-bench", "reason": "benchmark",
        "filter": {"all": [{"column": "created_at", "op": "lt", "value": CUTOFF}]}
    });
    submit(url, catalog, request).await
}

/// Connects the engine (as the daemon would: 4 connections, 50 ms lock timeout), creates its
/// tables and submits `request`; returns the job's id.
pub(crate) async fn submit(
    url: &str,
    catalog: &Catalog,
    request: serde_json::Value,
) -> anyhow::Result<(Database, String)> {
    let db = connect_engine(url).await?;
    let id = submit_on(&db, catalog, request).await?;
    Ok((db, id))
}

/// Connects the engine as the daemon would (4 connections, 60 s statement timeout, 50 ms lock
/// timeout) and creates its tables.
pub(crate) async fn connect_engine(url: &str) -> anyhow::Result<Database> {
    let db = Database::connect(&DatabaseConfig {
        url: url.to_owned(),
        max_connections: 4,
        statement_timeout: Span::from_secs(60),
        lock_timeout: Span::from_millis(50),
        health: None,
    })
    .await?;
    Migrator::up(db.connection(), None).await?;
    Ok(db)
}

/// Submits `request` to the ledger of `db` (three attempts, run by the queue); the job's id.
pub(crate) async fn submit_on(
    db: &Database,
    catalog: &Catalog,
    request: serde_json::Value,
) -> anyhow::Result<String> {
    let request: JobRequest = serde_json::from_value(request)?;
    Ok(ledger::submit(
        db,
        catalog,
        &request,
        3,
        Utc::now(),
        None,
        ledger::RunBy::Queue,
    )
    .await?
    .job
    .id)
}

/// Resets the kernel's high-water mark of this process's RSS (Linux `clear_refs` 5).
fn reset_peak_rss() {
    if let Err(error) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak RSS ({error}); memory figures include earlier work");
    }
}

/// `VmHWM` from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
