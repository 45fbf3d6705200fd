//! The job queue as transport: messages carry only a ledger job id (the ledger is the truth).
//!
//! Today the embedded apalis-sqlite queue, in its own SQLite file (it creates `Jobs`/`Workers`
//! tables and competes for SQLite's single writer lock, so it never shares the target database).
//! Queue names are explicit; apalis' default (the Rust type name) would change with a refactor.

use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_sqlite::{SqlitePool, SqliteStorage};
use chrono::{DateTime, Utc};
use reaper_core::config::{QueueBackend, QueueConfig};
use serde::{Deserialize, Serialize};

/// What travels on the queue: the id of a job in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobMessage {
    pub(crate) job_id: String,
}

/// The queue backend, as configured.
#[derive(Debug, Clone)]
pub(crate) enum JobQueue {
    Sqlite(SqliteStorage<JobMessage>),
}

impl JobQueue {
    /// Opens the queue, creating its tables when needed.
    pub(crate) async fn open(config: &QueueConfig) -> anyhow::Result<Self> {
        match config.backend {
            QueueBackend::Sqlite => {
                ensure_sqlite_parent_dir(&config.url)?;
                let cannot_open = |error: apalis_sqlite::SqlxError| {
                    anyhow::anyhow!(
                        "queue.url: cannot open the SQLite queue `{}`: {error}",
                        config.url
                    )
                };
                // apalis' setup turns `synchronous` off on the connection it runs on; a queue
                // that forgets work on power loss is not acceptable, so setup runs on a
                // throwaway pool and the real pool sets NORMAL on every connection.
                let setup_pool = SqlitePool::connect(&config.url)
                    .await
                    .map_err(cannot_open)?;
                SqliteStorage::<()>::setup(&setup_pool).await?;
                setup_pool.close().await;
                let options = apalis_sqlite::SqliteConnectOptions::from_str(&config.url)
                    .map_err(cannot_open)?
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10));
                let pool = apalis_sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(cannot_open)?;
                let storage = SqliteStorage::new(&pool)
                    .with_config(apalis_sqlite::Config::default().queue(&config.name));
                Ok(JobQueue::Sqlite(storage))
            }
        }
    }

    /// Enqueues a job id, to run now or not before `not_before`.
    pub(crate) async fn push(
        &self,
        job_id: &str,
        not_before: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        let message = JobMessage {
            job_id: job_id.to_owned(),
        };
        let mut builder = TaskBuilder::new(message);
        if let Some(at) = not_before {
            let delay = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            builder = builder.run_after(delay);
        }
        match self {
            JobQueue::Sqlite(storage) => {
                let mut storage = storage.clone();
                storage
                    .push_task(builder.build())
                    .await
                    .map_err(|error| anyhow::anyhow!("cannot enqueue job {job_id}: {error}"))
            }
        }
    }
}

/// `sqlite://.reaper/queue.db?mode=rwc` → creates `.reaper/` so a fresh clone just works.
pub(crate) fn ensure_sqlite_parent_dir(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}
