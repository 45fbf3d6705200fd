//! The job queue as transport: messages carry only a ledger job id (the ledger is the truth).
//!
//! Two backends, chosen by `queue.backend`:
//! - `sqlite`: the embedded apalis-sqlite queue, in its own SQLite file (it creates `Jobs`/
//!   `Workers` tables and competes for SQLite's single writer lock, so it never shares the target
//!   database).
//! - `redis`: apalis-redis, for production. Its keys start with the queue name; heartbeats every
//!   `queue.heartbeat`, a worker silent for three of them is dead and a live one re-enqueues its
//!   messages. apalis' idempotency keys are not used: the ledger deduplicates.
//!
//! Queue names are explicit; apalis' default (the Rust type name) would change with a refactor.
//! This module must not decide anything about jobs: it moves ids.

use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqlitePool, SqliteStorage};
use chrono::{DateTime, Utc};
use reaper_core::config::{QueueBackend, QueueConfig};
use reaper_core::sql::{self, Backend};
use serde::{Deserialize, Serialize};

use crate::redis_connection::{RedisConnection, RedisTarget};

/// A worker silent for this many heartbeats is dead; its messages go to live workers.
pub(crate) const MISSED_HEARTBEATS: usize = 3;

/// What travels on the queue: the id of a job in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobMessage {
    pub(crate) job_id: String,
}

/// The queue backend, as configured.
#[derive(Debug, Clone)]
pub(crate) enum JobQueue {
    Sqlite {
        storage: SqliteStorage<JobMessage>,
        /// apalis-sqlite's `job_type` column holds the queue name.
        queue_name: String,
    },
    Redis(RedisStorage<JobMessage, RedisConnection>),
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
                Ok(JobQueue::Sqlite {
                    storage,
                    queue_name: config.name.clone(),
                })
            }
            QueueBackend::Redis => {
                let connection = RedisTarget::from_config(config)?.connect().await?;
                let heartbeat = config.heartbeat.as_duration();
                let redis_config = apalis_redis::Config::default()
                    .queue(&config.name)
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(MISSED_HEARTBEATS)
                    .batch_size(usize::try_from(config.fetch_batch).unwrap_or(10));
                Ok(JobQueue::Redis(
                    RedisStorage::new(connection).with_config(redis_config),
                ))
            }
        }
    }

    /// Pushing while apalis shuts down is quick on Redis; on SQLite it can wait for the
    /// queue's write lock, which apalis holds while it stops (measured: the full 10 s busy
    /// timeout), so a stopping SQLite worker leaves the job to the reconciler instead.
    pub(crate) fn push_during_shutdown_is_safe(&self) -> bool {
        matches!(self, JobQueue::Redis(_))
    }

    /// The worker registrations apalis keeps for this queue, every daemon's: name and last
    /// heartbeat (seconds). On SQLite through apalis' listing of its `Workers` table; on Redis
    /// straight from the `<queue>:workers` sorted set (name → heartbeat), because apalis-redis
    /// 1.0's listing looks for each worker's metadata under another key than it writes it to
    /// and fails on every registered worker. Registrations of stopped workers stay listed; the
    /// reader judges them by their last heartbeat.
    pub(crate) async fn workers(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        let listed: Vec<(String, u64)> = match self {
            JobQueue::Sqlite { storage, .. } => {
                use apalis::prelude::ListWorkers;
                storage
                    .list_workers()
                    .await?
                    .into_iter()
                    .map(|worker| (worker.id, worker.last_heartbeat))
                    .collect()
            }
            JobQueue::Redis(storage) => {
                let set = storage.get_config().workers_set();
                let mut connection = storage.clone();
                redis::cmd("ZRANGE")
                    .arg(set)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(connection.get_connection())
                    .await?
            }
        };
        Ok(listed
            .into_iter()
            .map(|(name, seconds)| {
                let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
                (
                    name,
                    DateTime::from_timestamp(seconds, 0).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Messages waiting in the transport, ready or scheduled (not the ones a worker holds).
    pub(crate) async fn depth(&self) -> anyhow::Result<u64> {
        match self {
            JobQueue::Sqlite {
                storage,
                queue_name,
            } => {
                // apalis' own pool, run through the engine like every planned statement.
                let connection =
                    sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(storage.pool().clone());
                let rows = reaper_engine::database::query_all(
                    &connection,
                    Backend::Sqlite,
                    &sql::queue::sqlite_depth(queue_name),
                )
                .await?;
                let count = match rows.first() {
                    Some(row) => row.try_get::<i64>("", sql::queue::DEPTH)?,
                    None => 0,
                };
                Ok(u64::try_from(count).unwrap_or(0))
            }
            JobQueue::Redis(storage) => {
                let config = storage.get_config().clone();
                let mut connection = storage.clone();
                let (active, scheduled): (u64, u64) = redis::pipe()
                    .llen(config.active_jobs_list())
                    .zcard(config.scheduled_jobs_set())
                    .query_async(connection.get_connection())
                    .await?;
                Ok(active + scheduled)
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
        let cannot =
            |error: &dyn std::fmt::Display| anyhow::anyhow!("cannot enqueue job {job_id}: {error}");
        match self {
            JobQueue::Sqlite { storage, .. } => storage
                .clone()
                .push_task(builder.build())
                .await
                .map_err(|error| cannot(&error)),
            JobQueue::Redis(storage) => storage
                .clone()
                .push_task(builder.build())
                .await
                .map_err(|error| cannot(&error)),
        }
    }
}

/// Tries, without changing anything, what the daemon will do on Redis — run scripts on the
/// queue's keys, write the intake list, register in apalis' queue list — so that a user the
/// ACL limits too far is named with what it was denied before any worker fails on it.
pub(crate) async fn check_redis_access(
    target: &RedisTarget,
    connection: &mut RedisConnection,
    queue: &QueueConfig,
) -> anyhow::Result<()> {
    let active = apalis_redis::Config::default()
        .queue(&queue.name)
        .active_jobs_list();
    let intake = crate::intake::IntakeKeys::new(&queue.name).intake;
    // Each probe touches one key (a cluster refuses a script across hash slots); removing a
    // member that no message or queue has changes nothing.
    let probes = [
        (
            "run the scripts apalis polls with on",
            "return redis.call('LLEN', KEYS[1])",
            active.as_str(),
        ),
        (
            "write the intake list",
            "return redis.call('LREM', KEYS[1], 0, ARGV[1])",
            intake.as_str(),
        ),
        (
            "register the queue in apalis' queue list",
            "return redis.call('ZREM', KEYS[1], ARGV[1])",
            reaper_core::config::APALIS_QUEUE_LIST,
        ),
    ];
    for (what, script, key) in probes {
        redis::Script::new(script)
            .key(key)
            .arg("reaper:access-check")
            .invoke_async::<i64>(connection)
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "queue.url: cannot {what} `{key}`: {}",
                    target.describe(&error)
                )
            })?;
    }
    Ok(())
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
