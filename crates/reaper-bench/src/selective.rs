//! `selective`: one user's erasure on a large table (issue 13), on PostgreSQL, MariaDB/MySQL or
//! SQLite.
//!
//! Table `erasable(id bigint primary key, user_id bigint, created_at, payload)` with an index on
//! `user_id`; every user has 50 rows (`user_id = id % (rows / 50)`), spread over the whole key
//! range, so a walk of the primary key reads the whole table to find them. Loaded in one
//! statement (PostgreSQL `generate_series`, MariaDB's Sequence engine, SQLite a recursive CTE),
//! then indexed and analyzed; the load is timed and printed.
//!
//! 1. The plans: the engine's plan guard on the first batch (from a dry run), and `EXPLAIN` of
//!    the batch statement the engine sends for a later batch (MariaDB: the locking key window;
//!    SQLite: the delete itself; PostgreSQL: the key selection of its batch statement).
//! 2. `--jobs` erasures of different users through the engine (`runner::run_job`: ledger, lease,
//!    pre-check, plan guard, audit, checkpoint) with the strategy it chooses (`auto`): per-job
//!    median, p95 and max, and the chosen strategy and reason from each job's result.
//! 3. `--walk-jobs` erasures of other users by a hand-written keyset walk of the primary key
//!    (`… AND id > ? ORDER BY id LIMIT n`, the filter's index made unusable: PostgreSQL
//!    `user_id + 0`, MariaDB `FORCE INDEX (PRIMARY)`, SQLite `NOT INDEXED`), one transaction per
//!    batch, stopping at the first short batch: per-job time and the ratio to the engine's.
//!
//! Its own database (`reaper_bench_selective`) on PostgreSQL and MariaDB, dropped at the end;
//! on SQLite a file, removed at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use reaper_core::catalog::{Catalog, ColumnType};
use reaper_core::job::JobRequest;
use reaper_core::sql::{self, Backend, RowLocking};
use reaper_core::validate::{self, ValidatedJob};
use reaper_core::value::KeyValue;
use reaper_engine::database::to_sea;
use reaper_engine::runner::{self, RunOutcome, RunSettings};
use reaper_engine::{Database, ledger};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};

use crate::query_one;

/// The benchmark's table.
const TABLE: &str = "erasable";
/// Its own database on PostgreSQL and MariaDB/MySQL.
const DATABASE: &str = "reaper_bench_selective";
/// Rows of every user.
const ROWS_PER_USER: u64 = 50;

/// Where the benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Server {
    Postgres,
    Mariadb,
    Sqlite,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SelectiveArgs {
    /// Rows in the table (50 per user).
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Erasures through the engine, one user each.
    #[arg(long, default_value_t = 20)]
    jobs: u64,
    /// Erasures by the keyset walk of the primary key (each reads the whole table).
    #[arg(long, default_value_t = 3)]
    walk_jobs: u64,
    /// Rows per batch, for the engine and the walk.
    #[arg(long, default_value_t = 1_000)]
    batch: u32,
    /// The database server.
    #[arg(long, value_enum, default_value_t = Server::Postgres)]
    backend: Server,
    #[command(flatten)]
    postgres: crate::PostgresServer,
    /// MariaDB/MySQL host and port (root, no password), as for `reaper-bench mariadb`.
    #[arg(long, default_value = "127.0.0.1:3306")]
    mysql_host: String,
    /// The SQLite file (created, and removed at the end); default in the temporary directory.
    #[arg(long)]
    sqlite_path: Option<PathBuf>,
}

/// The benchmark's database, and how to remove it.
enum Place {
    Postgres { admin_url: String },
    Mysql { admin_url: String },
    Sqlite { file: PathBuf },
}

impl Place {
    /// Creates an empty database for the run; the place and the URL of the database.
    async fn create(args: &SelectiveArgs) -> anyhow::Result<(Self, String)> {
        match args.backend {
            Server::Postgres => {
                let admin_url = args.postgres.postgres_url.clone();
                let url = crate::create_named_database(&admin_url, DATABASE).await?;
                Ok((Self::Postgres { admin_url }, url))
            }
            Server::Mariadb => {
                let host = &args.mysql_host;
                let admin_url = format!("mysql://root@{host}/mysql");
                let admin = crate::recreate_bench_database(
                    &admin_url,
                    DATABASE,
                    &format!("DROP DATABASE IF EXISTS {DATABASE}"),
                    &format!("MariaDB/MySQL is needed at {host}"),
                )
                .await?;
                admin.close().await.ok();
                let url = format!("mysql://root@{host}/{DATABASE}");
                Ok((Self::Mysql { admin_url }, url))
            }
            Server::Sqlite => {
                let file = args
                    .sqlite_path
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("{DATABASE}.sqlite3")));
                remove_sqlite(&file)?;
                let url = format!("sqlite://{}?mode=rwc", file.display());
                Ok((Self::Sqlite { file }, url))
            }
        }
    }

    /// Drops the database (removes the SQLite file and its journals).
    async fn remove(&self) -> anyhow::Result<()> {
        match self {
            Self::Postgres { admin_url } => crate::drop_named_database(admin_url, DATABASE).await,
            Self::Mysql { admin_url } => {
                let admin = sea_orm::Database::connect(admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
                    .await?;
                Ok(())
            }
            Self::Sqlite { file } => remove_sqlite(file),
        }
    }
}

/// Removes a SQLite database file and its journals.
fn remove_sqlite(file: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = file.to_path_buf().into_os_string();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).context("cannot remove the SQLite file");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs the benchmark and drops its database, whether it succeeded or not.
pub(crate) async fn run(args: SelectiveArgs) -> anyhow::Result<()> {
    let (place, url) = Place::create(&args).await?;
    let outcome = measure(&args, &url).await;
    let removed = place.remove().await;
    outcome.and(removed)
}

/// Load, plans, engine jobs, walk jobs, figures.
async fn measure(args: &SelectiveArgs, url: &str) -> anyhow::Result<()> {
    let conn = sea_orm::Database::connect(url).await?;
    let backend = match args.backend {
        Server::Postgres => Backend::Postgres,
        Server::Mariadb => Backend::MySql,
        Server::Sqlite => Backend::Sqlite,
    };
    let users = (args.rows / ROWS_PER_USER).max(1);
    let version: String = query_one(&conn, version_query(backend)).await?;
    println!(
        "reaper selective-erasure benchmark — {:?} {version}, {} rows, {users} users × {ROWS_PER_USER} rows spread over the id range, \
         index on user_id, batch {}",
        args.backend, args.rows, args.batch
    );
    let started = Instant::now();
    load(&conn, backend, args.rows, users).await?;
    println!(
        "load: {:.1} s (one INSERT … SELECT, then the indexes and ANALYZE)",
        started.elapsed().as_secs_f64()
    );
    let restore_pool = match backend {
        Backend::MySql => crate::mariadb::fit_buffer_pool(&conn, DATABASE, TABLE).await?,
        _ => None,
    };
    let outcome = compare(args, &conn, backend, url, users).await;
    if backend == Backend::MySql {
        crate::mariadb::restore_buffer_pool(&conn, restore_pool).await?;
    }
    conn.close().await.ok();
    outcome
}

/// The plans, the engine's jobs and the walk's, and the figures.
async fn compare(
    args: &SelectiveArgs,
    conn: &DatabaseConnection,
    backend: Backend,
    url: &str,
    users: u64,
) -> anyhow::Result<()> {
    let catalog = Catalog::new([crate::bench_target(
        TABLE,
        &[("user_id", ColumnType::Int)],
        args.batch,
    )]);
    // Distinct users spread over the user ids: the engine's first, then the walk's.
    let total = (args.jobs + args.walk_jobs).max(1);
    let user = |index: u64| (index * (users / total).max(1)) % users;
    let db = crate::connect_engine(url).await?;
    show_plans(&db, conn, &catalog, args.batch, user(0)).await?;

    println!("\nreaper engine, strategy auto, {} jobs:", args.jobs);
    let settings = crate::bench_run_settings();
    let mut engine = Vec::new();
    for index in 0..args.jobs {
        engine.push(engine_job(&db, conn, &catalog, &settings, args.batch, user(index)).await?);
    }
    drop(db);

    println!(
        "\nkeyset walk of the primary key (filter index not usable), {} jobs:",
        args.walk_jobs
    );
    let mut walk = Vec::new();
    for index in args.jobs..args.jobs + args.walk_jobs {
        walk.push(walk_job(conn, backend, args.batch, user(index)).await?);
    }
    summarize(&engine, &walk);
    Ok(())
}

fn version_query(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "SHOW server_version",
        Backend::MySql => "SELECT VERSION()",
        Backend::Sqlite => "SELECT sqlite_version()",
    }
}

/// (Re)creates the table with `rows` rows, `user_id = id % users`, its primary key and the
/// index on `user_id`, analyzed.
async fn load(
    conn: &DatabaseConnection,
    backend: Backend,
    rows: u64,
    users: u64,
) -> anyhow::Result<()> {
    let statements = match backend {
        Backend::Postgres => vec![
            format!("DROP TABLE IF EXISTS {TABLE}"),
            format!(
                "CREATE TABLE {TABLE} (id bigint NOT NULL, user_id bigint NOT NULL, created_at timestamptz NOT NULL, payload text NOT NULL)"
            ),
            format!(
                "INSERT INTO {TABLE} SELECT i, i % {users}, TIMESTAMPTZ '{}' - (i % 1000) * INTERVAL '1 minute', md5(i::text) \
                 FROM generate_series(1, {rows}) AS i",
                crate::BASE
            ),
            format!("ALTER TABLE {TABLE} ADD PRIMARY KEY (id)"),
            format!("CREATE INDEX {TABLE}_user_id ON {TABLE} (user_id)"),
            format!("VACUUM ANALYZE {TABLE}"),
        ],
        Backend::MySql => vec![
            format!("DROP TABLE IF EXISTS {TABLE}"),
            format!(
                "CREATE TABLE {TABLE} (id BIGINT NOT NULL PRIMARY KEY, user_id BIGINT NOT NULL, created_at DATETIME(6) NOT NULL, \
                 payload CHAR(32) NOT NULL) ENGINE=InnoDB"
            ),
            format!(
                "INSERT INTO {TABLE} SELECT seq, seq % {users}, TIMESTAMP '2026-01-01 00:00:00' - INTERVAL (seq % 1000) MINUTE, MD5(seq) \
                 FROM seq_1_to_{rows}"
            ),
            format!("CREATE INDEX {TABLE}_user_id ON {TABLE} (user_id)"),
            format!("ANALYZE TABLE {TABLE}"),
        ],
        Backend::Sqlite => vec![
            format!("DROP TABLE IF EXISTS {TABLE}"),
            format!(
                "CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL)"
            ),
            format!(
                "INSERT INTO {TABLE} (id, user_id, created_at, payload) \
                 WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows}) \
                 SELECT i, i % {users}, '2026-01-01 00:00:00', hex(randomblob(16)) FROM seq"
            ),
            format!("CREATE INDEX {TABLE}_user_id ON {TABLE} (user_id)"),
            "ANALYZE".to_owned(),
        ],
    };
    for statement in statements {
        conn.execute_unprepared(&statement)
            .await
            .with_context(|| format!("loading: {statement}"))?;
    }
    Ok(())
}

/// The erasure of `user`, as a client submits it.
fn erasure(user: u64, batch: u32) -> serde_json::Value {
    serde_json::json!({
        "target": TABLE, "batch_size": batch, "requested_by": "reaper-bench", "reason": "benchmark",
        "filter": {"all": [{"column": "user_id", "op": "eq", "value": user}]}
    })
}

/// Prints the engine's plans for `user`'s erasure: the plan guard's reading of the first batch
/// (a dry run) and `EXPLAIN` of a later batch's statement.
async fn show_plans(
    db: &Database,
    conn: &DatabaseConnection,
    catalog: &Catalog,
    batch: u32,
    user: u64,
) -> anyhow::Result<()> {
    let request: JobRequest = serde_json::from_value(erasure(user, batch))?;
    let job = validate::validate(&request, catalog, Utc::now())
        .map_err(|error| anyhow::anyhow!("the erasure is invalid: {error:?}"))?;
    let report = runner::dry_run(db, &job).await?;
    println!("\nplans for user {user}'s erasure:");
    if let Some(strategy) = report.strategy {
        println!(
            "  strategy (dry run): {:?} ({:?})",
            strategy.strategy, strategy.reason
        );
    }
    if let Some(plan) = report.plan {
        println!(
            "  plan guard, first batch: {:?}, {:?} — {}",
            plan.verdict, plan.access, plan.plan
        );
    }
    let first: i64 = query_one(conn, &user_query("min(id)", user)).await?;
    let last: i64 = query_one(conn, &user_query("max(id)", user)).await?;
    println!("  EXPLAIN of a later batch (after key {first}):");
    for statement in engine_batch(db.backend(), &job, first, last, batch) {
        for line in explain(conn, db.backend(), to_sea(db.backend(), &statement)).await? {
            println!("    {line}");
        }
    }
    println!("  EXPLAIN of the walk's batch (for comparison):");
    let txn = walk_transaction(conn, db.backend()).await?;
    let walk = walk_select(db.backend(), user, 0, batch);
    for line in explain(&txn, db.backend(), walk).await? {
        println!("    {line}");
    }
    txn.rollback().await?;
    Ok(())
}

/// The statements of the engine's batch after key `after` that find the user's rows:
/// PostgreSQL's key selection (the `batch` CTE of its one statement); MariaDB/MySQL's locking
/// key window, then its range delete up to `last`; SQLite's delete.
fn engine_batch(
    backend: Backend,
    job: &ValidatedJob,
    after: i64,
    last: i64,
    batch: u32,
) -> Vec<sql::Statement> {
    let after = KeyValue::Int(after);
    match backend {
        Backend::Postgres => vec![sql::select_keys(backend, job, Some(&after), batch)],
        Backend::MySql => vec![
            sql::mysql::lock_batch(job, Some(&after), batch, RowLocking::Direct, &[]),
            sql::mysql::delete_window(job, Some(&after), &KeyValue::Int(last), Utc::now(), &[]),
        ],
        Backend::Sqlite => vec![sql::sqlite::delete_batch(
            job,
            Some(&after),
            batch,
            Utc::now(),
        )],
    }
}

/// `statement`'s plan, one line per row (never runs it).
async fn explain(
    conn: &impl ConnectionTrait,
    backend: Backend,
    mut statement: Statement,
) -> anyhow::Result<Vec<String>> {
    statement.sql = match backend {
        Backend::Sqlite => format!("EXPLAIN QUERY PLAN {}", statement.sql),
        Backend::Postgres | Backend::MySql => format!("EXPLAIN {}", statement.sql),
    };
    let rows = conn.query_all_raw(statement).await?;
    rows.iter()
        .map(|row| match backend {
            Backend::Postgres => Ok(row.try_get_by_index::<String>(0)?),
            Backend::Sqlite => Ok(row.try_get::<String>("", "detail")?),
            Backend::MySql => {
                let text = |column: &str| {
                    row.try_get::<Option<String>>("", column)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "NULL".to_owned())
                };
                // `rows` comes as text or as a number, by server version.
                let estimate = row
                    .try_get::<Option<String>>("", "rows")
                    .ok()
                    .flatten()
                    .or_else(|| {
                        let rows = row.try_get::<Option<i64>>("", "rows").ok().flatten();
                        rows.map(|rows| rows.to_string())
                    })
                    .or_else(|| {
                        let rows = row.try_get::<Option<u64>>("", "rows").ok().flatten();
                        rows.map(|rows| rows.to_string())
                    })
                    .unwrap_or_else(|| "?".to_owned());
                Ok(format!(
                    "table {} type {} key {} rows {estimate} Extra {}",
                    text("table"),
                    text("type"),
                    text("key"),
                    text("Extra")
                ))
            }
        })
        .collect()
}

/// One engine job: how long `run_job` took and the strategy it chose, checked against the
/// user's rows before and after.
async fn engine_job(
    db: &Database,
    conn: &DatabaseConnection,
    catalog: &Catalog,
    settings: &RunSettings,
    batch: u32,
    user: u64,
) -> anyhow::Result<Duration> {
    let expected = user_rows(conn, user).await?;
    let id = crate::submit_on(db, catalog, erasure(user, batch)).await?;
    let started = Instant::now();
    let report = runner::run_job(db, catalog, &id, settings, &|| false).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        report.outcome == RunOutcome::Done,
        "user {user}'s erasure did not finish: {:?}",
        report.outcome
    );
    let left = user_rows(conn, user).await?;
    anyhow::ensure!(
        report.rows == expected && left == 0,
        "user {user}: {expected} rows, the engine deleted {}, {left} left",
        report.rows
    );
    let choice = ledger::get(db, &id)
        .await?
        .and_then(|job| job.job_result())
        .and_then(|result| result.summary().and_then(|summary| summary.strategy));
    let chosen = choice.map_or_else(
        || "not recorded".to_owned(),
        |choice| format!("{:?} ({:?})", choice.strategy, choice.reason),
    );
    println!(
        "  user {user:>7}: {:>3} rows in {:>8.2} ms ({:.2} ms inside {} batch transactions), strategy {chosen}",
        report.rows,
        ms(took),
        ms(report.batch_time),
        report.batches
    );
    Ok(took)
}

/// How many rows `user` has.
async fn user_rows(conn: &DatabaseConnection, user: u64) -> anyhow::Result<u64> {
    let count: i64 = query_one(conn, &user_query("count(*)", user)).await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// `SELECT <aggregate> FROM erasable WHERE user_id = <user>`.
fn user_query(aggregate: &str, user: u64) -> String {
    format!("SELECT {aggregate} FROM {TABLE} WHERE user_id = {user}")
}

/// `SELECT id … WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?` with the filter's index made
/// unusable, so that the statement walks the primary key.
fn walk_select(backend: Backend, user: u64, after: i64, batch: u32) -> Statement {
    let (sql, db_backend) = match backend {
        Backend::Postgres => (
            "SELECT id FROM erasable WHERE user_id + 0 = $1 AND id > $2 ORDER BY id LIMIT $3",
            DbBackend::Postgres,
        ),
        Backend::MySql => (
            "SELECT id FROM erasable FORCE INDEX (PRIMARY) WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?",
            DbBackend::MySql,
        ),
        Backend::Sqlite => (
            "SELECT id FROM erasable NOT INDEXED WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?",
            DbBackend::Sqlite,
        ),
    };
    let user = i64::try_from(user).unwrap_or(i64::MAX);
    Statement::from_sql_and_values(
        db_backend,
        sql,
        [user.into(), after.into(), i64::from(batch).into()],
    )
}

/// A transaction for a batch of the walk. On PostgreSQL it also turns off the plans that do
/// not walk the primary key (a sequential or bitmap scan, then a sort), which the planner
/// prefers on smaller tables: the walk reads the whole table either way, but in key order only
/// so.
async fn walk_transaction(
    conn: &DatabaseConnection,
    backend: Backend,
) -> anyhow::Result<DatabaseTransaction> {
    let txn = conn.begin().await?;
    if backend == Backend::Postgres {
        txn.execute_unprepared("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            .await?;
    }
    Ok(txn)
}

/// `DELETE FROM erasable WHERE id IN (…keys)`.
fn delete_keys(db_backend: DbBackend, keys: &[i64]) -> Statement {
    let placeholders: Vec<String> = (1..=keys.len())
        .map(|n| match db_backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        })
        .collect();
    Statement::from_sql_and_values(
        db_backend,
        format!(
            "DELETE FROM {TABLE} WHERE id IN ({})",
            placeholders.join(", ")
        ),
        keys.iter().map(|&key| key.into()),
    )
}

/// One erasure by the keyset walk of the primary key: a transaction per batch (select the next
/// keys, delete them), until a batch comes back short. Checked like the engine's.
async fn walk_job(
    conn: &DatabaseConnection,
    backend: Backend,
    batch: u32,
    user: u64,
) -> anyhow::Result<Duration> {
    let expected = user_rows(conn, user).await?;
    let (mut after, mut rows, mut batches) = (0_i64, 0_u64, 0_u64);
    let started = Instant::now();
    loop {
        let txn = walk_transaction(conn, backend).await?;
        let keys = txn
            .query_all_raw(walk_select(backend, user, after, batch))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<i64>(0))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(&last) = keys.last() {
            txn.execute_raw(delete_keys(conn.get_database_backend(), &keys))
                .await?;
            after = last;
        }
        txn.commit().await?;
        rows += keys.len() as u64;
        batches += 1;
        if keys.len() < batch as usize {
            break;
        }
    }
    let took = started.elapsed();
    let left = user_rows(conn, user).await?;
    anyhow::ensure!(
        rows == expected && left == 0,
        "user {user}: {expected} rows, the walk deleted {rows}, {left} left"
    );
    println!(
        "  user {user:>7}: {rows:>3} rows in {:>8.2} ms, {batches} batches",
        ms(took)
    );
    Ok(took)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The `quantile` (0..=1) of sorted `times` (nearest rank).
fn quantile(sorted: &[Duration], quantile: f64) -> Duration {
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// Per-job median, p95 and max of both, and the ratio of the medians.
fn summarize(engine: &[Duration], walk: &[Duration]) {
    let sorted = |times: &[Duration]| {
        let mut times = times.to_vec();
        times.sort();
        times
    };
    let (engine, walk) = (sorted(engine), sorted(walk));
    println!("\nper job:");
    for (label, times) in [
        ("reaper engine, auto", &engine),
        ("keyset walk of the primary key", &walk),
    ] {
        println!(
            "{label:<32} {:>3} jobs  median {:>9.2} ms  p95 {:>9.2} ms  max {:>9.2} ms",
            times.len(),
            ms(quantile(times, 0.5)),
            ms(quantile(times, 0.95)),
            ms(quantile(times, 1.0))
        );
    }
    let (engine_median, walk_median) = (quantile(&engine, 0.5), quantile(&walk, 0.5));
    if !engine_median.is_zero() && !walk.is_empty() {
        println!(
            "walk / engine (medians)          = {:.0}×",
            walk_median.as_secs_f64() / engine_median.as_secs_f64()
        );
    }
}
