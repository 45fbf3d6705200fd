//! `reaper demo`: a zero set-up tour on the embedded defaults.
//!
//! It never reads the user's configuration or environment: it always works on its own SQLite
//! files under `--dir` (recreated each run), so it cannot touch a real database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use figment::Figment;
use figment::providers::{Format, Toml};
use reaper_core::config::Config;
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::JobResult;
use reaper_engine::ledger::{self, JobRecord};
use reaper_engine::{Database, migration::Migrator};
use sea_orm::ConnectionTrait;
use sea_orm_migration::MigratorTrait;

use crate::queue::JobQueue;
use crate::settings::DEFAULT_CONFIG;
use crate::worker::{self, WorkerState};

/// Sample data: 2,000 users, 20,000 sessions (uuid keys), 100,000 events, spread over 120 days.
/// Timestamps are UTC text in SQLite's own `datetime()` format, as reaper expects on SQLite.
const SEED_SQL: &str = r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, plan TEXT NOT NULL,
    last_seen_at TEXT NOT NULL, deleted_at TEXT
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, created_at TEXT NOT NULL, user_agent TEXT NOT NULL
);
CREATE INDEX sessions_created_at ON sessions (created_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL,
    created_at TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX events_user_id ON events (user_id);
CREATE INDEX events_created_at ON events (created_at);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO users (id, email, plan, last_seen_at)
SELECT i, 'user' || i || '@example.com', CASE WHEN i % 10 = 0 THEN 'pro' ELSE 'free' END,
       datetime('now', '-' || (abs(random()) % 365) || ' days') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO sessions (id, user_id, created_at, user_agent)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
             || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
       1 + abs(random()) % 2000, datetime('now', '-' || (abs(random()) % (120 * 86400)) || ' seconds'),
       'Mozilla/5.0 (demo)' FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO events (id, user_id, kind, created_at, payload)
SELECT i, 1 + abs(random()) % 2000,
       CASE abs(random()) % 4 WHEN 0 THEN 'page_view' WHEN 1 THEN 'click' WHEN 2 THEN 'login' ELSE 'purchase' END,
       datetime('now', '-' || (abs(random()) % (120 * 86400)) || ' seconds'),
       '{"path":"/demo/' || i || '","ua":"Mozilla/5.0"}' FROM n;
"#;

struct DemoJob {
    title: &'static str,
    request: serde_json::Value,
}

fn demo_jobs() -> Vec<DemoJob> {
    vec![
        DemoJob {
            title: "hard: drop sessions older than 30 days",
            request: serde_json::json!({
                "target": "sessions", "mode": "hard", "batch_size": 1000,
                "filter": {"all": [{"column": "created_at", "op": "older_than", "value": "30d"}]},
                "requested_by": "reaper-demo", "reason": "session retention: 30 days",
                "idempotency_key": "demo-sessions-30d"
            }),
        },
        DemoJob {
            title: "hard: erase every event of user 42",
            request: serde_json::json!({
                "target": "events", "mode": "hard", "batch_size": 10,
                "filter": {"all": [{"column": "user_id", "op": "eq", "value": 42}]},
                "requested_by": "accounts-service", "reason": "erasure request #42",
                "idempotency_key": "demo-erase-user-42"
            }),
        },
        DemoJob {
            title: "soft: users of the free plan unseen for 180 days",
            request: serde_json::json!({
                "target": "users", "mode": "soft", "batch_size": 200,
                "filter": {"all": [
                    {"column": "plan", "op": "eq", "value": "free"},
                    {"column": "last_seen_at", "op": "older_than", "value": "180d"}
                ]},
                "requested_by": "reaper-demo", "reason": "inactive free accounts",
                "idempotency_key": "demo-inactive-users"
            }),
        },
        DemoJob {
            title: "dry run: events older than 90 days",
            request: serde_json::json!({
                "target": "events", "dry_run": true,
                "filter": {"all": [{"column": "created_at", "op": "older_than", "value": "90d"}]},
                "requested_by": "reaper-demo", "reason": "how much would a 90-day retention remove?",
                "idempotency_key": "demo-events-90d-dry-run"
            }),
        },
    ]
}

/// Runs the demo in `dir`.
pub(crate) async fn run(dir: &Path) -> anyhow::Result<()> {
    let config = fresh_config(dir)?;
    let catalog = config.catalog()?;

    outln!("reaper demo — files in {}\n", dir.display());
    let db = Database::connect(&config.database).await?;
    db.connection()
        .execute_unprepared(SEED_SQL)
        .await
        .context("seeding the sample tables")?;
    Migrator::up(db.connection(), None)
        .await
        .context("creating reaper's tables")?;
    outln!(
        "seeded: users 2,000 · sessions 20,000 (uuid keys) · events 100,000; reaper tables migrated\n"
    );

    let queue = JobQueue::open(&config.queue).await?;
    let mut ids = Vec::new();
    for job in demo_jobs() {
        let request: JobRequest = serde_json::from_value(job.request)?;
        let submitted = ledger::submit(
            &db,
            &catalog,
            &request,
            config.worker.max_attempts,
            Utc::now(),
            None,
            ledger::RunBy::Queue,
        )
        .await?;
        queue.push(&submitted.job.id, None).await?;
        outln!("enqueued {}  {}", submitted.job.id, job.title);
        ids.push((job.title, submitted.job.id));
    }

    let state = Arc::new(WorkerState::new(db.clone(), catalog, queue, &config.worker));
    outln!(
        "\nrunning one worker process ({} slots) on the embedded queue…",
        config.worker.concurrency
    );
    let watched: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    let watch_db = db.clone();
    let (all_finished, _watcher) = worker::stop_when(async move {
        tokio::select! {
            _ = crate::signals::shutdown_signal() => {}
            () = wait_finished(&watch_db, &watched) => {}
        }
    });
    worker::run_workers(
        state,
        config.worker.concurrency,
        config.queue.poll_interval.as_duration(),
        Duration::from_secs(10),
        all_finished,
    )
    .await?;

    print_jobs(&db, &ids).await?;
    print_audit(&db).await?;
    outln!(
        "\nInspect it yourself: sqlite3 {} 'SELECT * FROM reaper_jobs'",
        dir.join("demo.db").display()
    );
    Ok(())
}

/// Removes the previous run's files and points the embedded defaults at new ones in `dir`.
fn fresh_config(dir: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for file in [
        "demo.db",
        "demo.db-wal",
        "demo.db-shm",
        "queue.db",
        "queue.db-wal",
        "queue.db-shm",
    ] {
        let path = dir.join(file);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    let mut config: Config = Figment::from(Toml::string(DEFAULT_CONFIG)).extract()?;
    config.database.url = format!("sqlite://{}?mode=rwc", dir.join("demo.db").display());
    config.queue.url = format!("sqlite://{}?mode=rwc", dir.join("queue.db").display());
    Ok(config)
}

/// One line per job, then what each dry run reported.
async fn print_jobs(db: &Database, ids: &[(&str, String)]) -> anyhow::Result<()> {
    outln!(
        "\n{:<50} {:>6} {:>9} {:>8} {:>9}",
        "job",
        "state",
        "rows",
        "batches",
        "time"
    );
    for (title, id) in ids {
        let job = ledger::get(db, id)
            .await?
            .context("a demo job vanished from the ledger")?;
        print_job_line(title, &job)?;
    }
    for (title, id) in ids {
        let job = ledger::get(db, id)
            .await?
            .context("a demo job vanished from the ledger")?;
        if let Some(JobResult::DryRun(report)) = job.job_result() {
            outln!(
                "\n{title}: {} rows would be deleted in {} batches of {}",
                report.matching_rows,
                report.batches,
                report.batch_size
            );
            outln!(
                "  first keys: {}",
                serde_json::to_string(&report.sample_keys)?
            );
            outln!(
                "  one batch would run:\n    {}",
                report.sql.replace('\n', "\n    ")
            );
        }
    }
    Ok(())
}

/// The newest audit entries.
async fn print_audit(db: &Database) -> anyhow::Result<()> {
    outln!("\nlast audit entries (reaper_audit, newest first):");
    outln!(
        "{:>4} {:<36} {:>6} {:<9} {:<5} {:>5}  {:<40} {:<17} reason",
        "id",
        "job",
        "batch",
        "target",
        "mode",
        "rows",
        "keys (first … last)",
        "requested_by"
    );
    for entry in ledger::recent_audit(db, 8).await? {
        let keys = format!(
            "{} … {}",
            shorten(&entry.first_key),
            shorten(&entry.last_key)
        );
        outln!(
            "{:>4} {:<36} {:>6} {:<9} {:<5} {:>5}  {:<40} {:<17} {}",
            entry.id,
            // The whole id: it is what `reaper status` takes.
            entry.job_id,
            entry.batch_no,
            entry.target,
            entry.mode,
            entry.row_count,
            keys,
            entry.requested_by,
            entry.reason
        );
    }
    Ok(())
}

fn print_job_line(title: &str, job: &JobRecord) -> std::io::Result<()> {
    let time = match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => format!(
            "{:.0} ms",
            (end - start).num_microseconds().unwrap_or(0) as f64 / 1e3
        ),
        _ => "-".into(),
    };
    let rows = if matches!(job.job_result(), Some(JobResult::DryRun(_))) {
        "(dry)".to_owned()
    } else {
        job.rows_deleted.to_string()
    };
    outln!(
        "{title:<50} {:>6} {rows:>9} {:>8} {time:>9}",
        job.state,
        job.batches
    );
    if let Some(error) = &job.last_error {
        outln!("    last error: {error}");
    }
    Ok(())
}

fn shorten(key: &str) -> String {
    if key.len() > 13 {
        format!("{}…", &key[..12])
    } else {
        key.to_owned()
    }
}

async fn wait_finished(db: &Database, ids: &[String]) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut finished = 0;
        for id in ids {
            if let Ok(Some(job)) = ledger::get(db, id).await
                && job.is_finished()
            {
                finished += 1;
            }
        }
        if finished == ids.len() {
            return;
        }
    }
}
