//! The MariaDB/MySQL section: the same data shape as the PostgreSQL benchmark, against
//! pt-archiver, the tool MySQL users purge with today.
//!
//! It installs nothing: when `pt-archiver` (Debian package `percona-toolkit`) is missing it
//! says so and skips those rows. The InnoDB buffer pool must hold the table, or every variant
//! measures the disk instead; when it is smaller the benchmark says so, raises it for the run
//! (`SET GLOBAL innodb_buffer_pool_size`, dynamic since MariaDB 10.2 / MySQL 5.7) and puts it
//! back at the end.

use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::{Figures, median, print_longest, print_ratio, reaper_engine, report};

/// [`crate::CUTOFF`] as a MySQL DATETIME literal: `< CUTOFF` matches exactly half, scattered.
const CUTOFF_DATETIME: &str = "2025-12-11 04:00:01";

pub(crate) async fn run(rows: u64, batch: u32, repeat: usize, host: &str) -> anyhow::Result<()> {
    let admin_url = format!("mysql://root@{host}/mysql");
    let admin = crate::recreate_bench_database(
        &admin_url,
        crate::BENCH_DATABASE,
        "DROP DATABASE IF EXISTS reaper_bench",
        &format!("MariaDB/MySQL is needed at {host}"),
    )
    .await?;
    let url = format!("mysql://root@{host}/reaper_bench");
    let conn = sea_orm::Database::connect(&url).await?;
    let version: String = scalar(&conn, "SELECT VERSION()").await?;
    println!(
        "reaper MariaDB/MySQL benchmark — {version}, {rows} rows, 50% matching spread over the id range, {batch} rows per batch/chunk"
    );

    let pt_archiver = which("pt-archiver");
    if pt_archiver.is_none() {
        println!(
            "pt-archiver is not installed (Debian: apt-get install percona-toolkit); its rows are skipped."
        );
    }

    load(&conn, rows).await?;
    let restore_pool = fit_buffer_pool(&conn, crate::BENCH_DATABASE, "events").await?;
    println!("(a fresh, analyzed table for every run; loading is not timed)\n");

    let (mut unbounded, mut bulk, mut single, mut engines) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=repeat {
        load(&conn, rows).await?;
        crate::keep_run(
            &mut unbounded,
            &format!("run {run}: unbounded DELETE (one transaction)"),
            unbounded_delete(&conn).await?,
        );
        if let Some(pt) = &pt_archiver {
            load(&conn, rows).await?;
            crate::keep_run(
                &mut bulk,
                &format!("run {run}: pt-archiver --bulk-delete"),
                archiver(&conn, pt, host, batch, true).await?,
            );
            load(&conn, rows).await?;
            crate::keep_run(
                &mut single,
                &format!("run {run}: pt-archiver (row by row)"),
                archiver(&conn, pt, host, batch, false).await?,
            );
        }
        load(&conn, rows).await?;
        let (figures, _, _) =
            reaper_engine(&url, batch, reaper_core::strategy::StrategySetting::Keyset).await?;
        report(&format!("run {run}: reaper engine + audit"), &figures);
        engines.push(figures);
    }

    let unbounded = median(unbounded);
    let engines = median(engines);
    println!("\nmedians:");
    report("unbounded DELETE (one transaction)", &unbounded);
    let bulk = (!bulk.is_empty()).then(|| median(bulk));
    let single = (!single.is_empty()).then(|| median(single));
    if let Some(bulk) = &bulk {
        report(
            &format!("pt-archiver --purge --limit {batch} --commit-each --bulk-delete"),
            bulk,
        );
    }
    if let Some(single) = &single {
        report(
            &format!("pt-archiver --purge --limit {batch} --commit-each"),
            single,
        );
    }
    report(&format!("reaper engine, {batch}/batch + audit"), &engines);
    println!();
    let pad = "reaper / pt-archiver --bulk-delete".len();
    print_ratio("reaper / unbounded DELETE", pad, &engines, &unbounded, "");
    if let Some(bulk) = &bulk {
        print_ratio(
            "reaper / pt-archiver --bulk-delete",
            pad,
            &engines,
            bulk,
            "   (target ≥ 1.30×; reaper also writes an audit entry per batch)",
        );
    }
    if let Some(single) = &single {
        print_ratio("reaper / pt-archiver row by row", pad, &engines, single, "");
    }
    print_longest(pad, &engines, "");

    restore_buffer_pool(&conn, restore_pool).await?;
    conn.close().await.ok();
    admin
        .execute_unprepared("DROP DATABASE IF EXISTS reaper_bench")
        .await?;
    Ok(())
}

/// Raises the InnoDB buffer pool for the run when it cannot hold `schema`.`table` (data and
/// indexes, with room to spare), saying so; the original size in MiB, for
/// [`restore_buffer_pool`] (`None`: unchanged).
pub(crate) async fn fit_buffer_pool(
    conn: &DatabaseConnection,
    schema: &str,
    table: &str,
) -> anyhow::Result<Option<u64>> {
    let needed_mib: f64 = scalar::<f64>(
        conn,
        &format!(
            "SELECT CAST((data_length + index_length) / 1048576 AS DOUBLE) FROM information_schema.tables \
             WHERE table_schema = '{schema}' AND table_name = '{table}'"
        ),
    )
    .await?;
    let pool_mib: f64 = scalar::<f64>(
        conn,
        "SELECT CAST(@@innodb_buffer_pool_size / 1048576 AS DOUBLE)",
    )
    .await?;
    if pool_mib >= needed_mib * 1.5 {
        println!(
            "InnoDB buffer pool: {pool_mib:.0} MiB, holds the table ({needed_mib:.0} MiB with indexes)."
        );
        return Ok(None);
    }
    let raised = ((needed_mib * 2.0 / 128.0).ceil() * 128.0) as u64;
    conn.execute_unprepared(&format!(
        "SET GLOBAL innodb_buffer_pool_size = {}",
        raised * 1_048_576
    ))
    .await?;
    println!(
        "InnoDB buffer pool: {pool_mib:.0} MiB is too small for the table ({needed_mib:.0} MiB with indexes); \
         raised to {raised} MiB for this run, restored at the end."
    );
    Ok(Some(pool_mib as u64))
}

/// Puts the buffer pool back to what [`fit_buffer_pool`] found.
pub(crate) async fn restore_buffer_pool(
    conn: &DatabaseConnection,
    original: Option<u64>,
) -> anyhow::Result<()> {
    if let Some(original) = original {
        conn.execute_unprepared(&format!(
            "SET GLOBAL innodb_buffer_pool_size = {}",
            original * 1_048_576
        ))
        .await?;
    }
    Ok(())
}

async fn scalar<T: sea_orm::TryGetable>(conn: &DatabaseConnection, sql: &str) -> anyhow::Result<T> {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::MySql, sql.to_owned()))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index(0)?)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// (Re)creates `events`: the PostgreSQL section's shape, generated with MariaDB's Sequence engine.
async fn load(conn: &DatabaseConnection, rows: u64) -> anyhow::Result<()> {
    conn.execute_unprepared(
        "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS reaper_audit; DROP TABLE IF EXISTS reaper_jobs; \
         DROP TABLE IF EXISTS reaper_migrations",
    )
    .await?;
    conn.execute_unprepared(&format!(
        "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, tenant_id INT NOT NULL, created_at DATETIME(6) NOT NULL, \
           payload TEXT NOT NULL, KEY events_created_at (created_at), KEY events_tenant_id (tenant_id)) ENGINE=InnoDB;
         INSERT INTO events (tenant_id, created_at, payload)
         SELECT seq % 100, TIMESTAMP '2026-01-01 00:00:00' - INTERVAL ((seq * 2654435761) % 1000) HOUR,
                CONCAT(REPEAT(MD5(seq), 6), 'xxxxxxxx')
           FROM seq_1_to_{rows};
         ANALYZE TABLE events;"
    ))
    .await?;
    Ok(())
}

async fn matching(conn: &DatabaseConnection) -> anyhow::Result<u64> {
    let count: i64 = scalar(
        conn,
        &format!("SELECT COUNT(*) FROM events WHERE created_at < '{CUTOFF_DATETIME}'"),
    )
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

async fn unbounded_delete(conn: &DatabaseConnection) -> anyhow::Result<Figures> {
    crate::timed_delete(
        conn,
        Statement::from_sql_and_values(
            DbBackend::MySql,
            "DELETE FROM events WHERE created_at < ?",
            [CUTOFF_DATETIME.into()],
        ),
    )
    .await
}

/// `pt-archiver --purge --limit N --commit-each [--bulk-delete]`, timed as a whole process; rows
/// are counted in the table before and after. Its longest transaction is not observable from
/// outside, so it is reported as 0.
async fn archiver(
    conn: &DatabaseConnection,
    program: &std::path::Path,
    host: &str,
    batch: u32,
    bulk: bool,
) -> anyhow::Result<Figures> {
    let (address, port) = host.split_once(':').unwrap_or((host, "3306"));
    let before = matching(conn).await?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--source")
        .arg(format!(
            "h={address},P={port},u=root,D=reaper_bench,t=events,A=utf8mb4"
        ))
        .args([
            "--purge",
            "--where",
            &format!("created_at < '{CUTOFF_DATETIME}'"),
        ])
        .args(["--limit", &batch.to_string(), "--commit-each"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if bulk {
        command.arg("--bulk-delete");
    }
    let started = Instant::now();
    let output = command.output().await.context("cannot run pt-archiver")?;
    let total = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "pt-archiver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = matching(conn).await?;
    let rows = before - after;
    Ok(Figures {
        rows,
        total,
        longest: std::time::Duration::ZERO,
        batches: rows.div_ceil(u64::from(batch)),
    })
}
