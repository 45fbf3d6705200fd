//! The configuration schema and its validation.
//!
//! Loading (files, environment) happens at the binary's edge; this module only defines the
//! typed shape and checks it. Unknown keys are rejected everywhere. Validation reports every
//! problem with the dotted path of the offending key, e.g. `targets.events.batch_size`.
//! Checks that need the database (does the table exist?) live in the engine's schema check.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use crate::graph::{Action, Cascade, GraphProblem, Relation, describe_path};
use crate::job::Condition;
use crate::retention::Policy;
use crate::span::Span;
use crate::throttle::{Adaptive, Throttle};

/// The absolute ceiling for any target's `max_batch_size`: beyond it a batch transaction is no
/// longer short on any backend we support.
pub const BATCH_SIZE_CEILING: u32 = 50_000;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The target database, which also holds reaper's own tables (ledger and audit).
    pub database: DatabaseConfig,
    /// Where jobs are queued.
    pub queue: QueueConfig,
    /// How workers run jobs.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// The HTTP API (jobs, health, metrics); off unless `listen` is set.
    #[serde(default)]
    pub api: ApiConfig,
    /// The catalog: every table jobs may delete from, by target name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Retention policies the daemon runs on their schedules (`[[retention]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionConfig>,
    /// `[archive]`: how long the rows `archive` jobs copied are kept (reaper purges them).
    #[serde(default)]
    pub archive: ArchiveConfig,
}

/// `[archive]`: the built-in retention of `reaper_archive`. The daemon deletes archived rows
/// older than `keep`, in bounded batches, every `purge_every`; a restore after that finds them
/// gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// How long an archived row is kept (`30d` by default).
    #[serde(default = "default_archive_keep")]
    pub keep: Span,
    /// How often the daemon purges expired archive rows (`1h` by default).
    #[serde(default = "default_archive_purge_every")]
    pub purge_every: Span,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            keep: default_archive_keep(),
            purge_every: default_archive_purge_every(),
        }
    }
}

fn default_archive_keep() -> Span {
    Span::from_secs(30 * 24 * 3600)
}

fn default_archive_purge_every() -> Span {
    Span::from_secs(3600)
}

/// `[[retention]]`: remove rows of a target once they are older than `max_age`, on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Unique name (letters, digits, `_`, `-`); used in job keys, metrics and `purge --policy`.
    pub name: String,
    /// The catalog target to purge.
    pub target: String,
    /// A `timestamp` column of the target whose age decides.
    pub age_column: String,
    /// Rows whose `age_column` is older than this are removed (`30d`, `12h`).
    pub max_age: Span,
    /// `hard`, `soft` or `archive`; the target's `default_mode` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Cron expression, UTC: 5 fields (`min hour day month weekday`), or 6/7 with seconds first.
    pub schedule: String,
    /// Rows per batch; the target's `batch_size` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Extra conditions (same shape as a job's `filter.all`), ANDed with the age condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Condition>,
    /// The most rows one run removes; the rest waits for the next window. The target's
    /// `max_rows` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_run: Option<u64>,
    /// A disabled policy is checked and listed, never scheduled.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`, `mysql://…` (MySQL or MariaDB), `sqlite://path?mode=rwc`.
    pub url: String,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Statements running longer than this are cancelled (PostgreSQL), so no batch holds
    /// locks for long.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Span,
    /// How long a batch waits for a row another transaction holds before it passes over held
    /// rows instead (PostgreSQL `lock_timeout`, set on reaper's own sessions only).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Span,
    /// Throttling from the database's own health (`[database.health]`): batches pause while a
    /// signal is over its threshold, and jobs stop for now over its critical level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
}

fn default_max_connections() -> u32 {
    8
}

fn default_statement_timeout() -> Span {
    Span::from_secs(30)
}

fn default_lock_timeout() -> Span {
    Span::from_millis(50)
}

/// Queue backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// The embedded apalis-sqlite queue, in its own SQLite file.
    Sqlite,
    /// apalis-redis, for production: several daemons share it.
    Redis,
}

/// `[queue]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which queue implementation.
    pub backend: QueueBackend,
    /// Its connection URL (for `sqlite`: a separate file from the target database).
    pub url: String,
    /// The queue's explicit name (never derived from a Rust type name).
    #[serde(default = "default_queue_name")]
    pub name: String,
    /// How often an idle worker looks for work.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Span,
    /// Redis: how often each worker proves it is alive. A worker silent for three heartbeats is
    /// dead, and a live daemon hands its jobs to other workers.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Span,
    /// Redis: jobs one fetch moves to a worker (they wait there for a free slot).
    #[serde(default = "default_fetch_batch")]
    pub fetch_batch: u32,
    /// Redis: how often a daemon removes what apalis keeps of finished messages (their data,
    /// metadata and ids); the ledger keeps the job.
    #[serde(default = "default_vacuum_every")]
    pub vacuum_every: Span,
    /// Redis over TLS (`rediss://` URLs): the CA that verifies the server, and a client
    /// certificate for servers that ask for one. Without it a `rediss://` URL verifies the
    /// server against the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsConfig>,
    /// Redis through Sentinel: the sentinels name the master, and reaper follows a failover to
    /// the new one. `queue.url` then gives only the scheme (`rediss://` for TLS), the user,
    /// the password and the database; its host and port are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinelConfig>,
    /// Redis Cluster: the nodes to start from (the client learns the rest and follows
    /// `MOVED`/`ASK` redirections and failovers). `queue.url` then gives only the scheme, the
    /// user and the password. The queue's name must carry a hash tag in apalis' slot
    /// ([`APALIS_CLUSTER_TAG`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<RedisClusterConfig>,
}

fn default_vacuum_every() -> Span {
    Span::from_secs(60)
}

fn default_queue_name() -> String {
    "reaper-jobs".into()
}

fn default_heartbeat() -> Span {
    Span::from_secs(10)
}

fn default_fetch_batch() -> u32 {
    10
}

/// `[api]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to serve the HTTP API on; no API when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The bearer token every `/v1` request must carry. Required with `listen`; best given
    /// through the environment (`REAPER_API_TOKEN`) rather than a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A second token that signs in to the dashboard (`/ui`) to look, never to act; best given
    /// through the environment (`REAPER_API_READ_TOKEN`). No read-only sign-in when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// How long a `/v1` call waits for the database before it answers 503 with `Retry-After`
    /// (default [`DEFAULT_LEDGER_WAIT_SECS`] seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_wait: Option<Span>,
}

/// The default of `api.ledger_wait`, in seconds.
pub const DEFAULT_LEDGER_WAIT_SECS: u64 = 5;

fn default_poll_interval() -> Span {
    Span::from_millis(200)
}

/// `[worker]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs run at once by one process.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Runs (first + retries) before a job that keeps failing transiently is dead.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long a claim on a job lasts without progress; another worker may take the job
    /// over after it expires. Renewed by every batch.
    #[serde(default = "default_lease")]
    pub lease: Span,
    /// The longest one pull of a job runs before it re-enqueues its continuation.
    #[serde(default = "default_slice")]
    pub slice: Span,
    /// First retry delay; doubled per attempt, with jitter.
    #[serde(default = "default_retry_base")]
    pub retry_base: Span,
    /// Longest retry delay.
    #[serde(default = "default_retry_max")]
    pub retry_max: Span,
    /// After SIGTERM/SIGINT, how long the batch in flight may take to commit or roll back
    /// before the process exits anyway (the database rolls back what did not commit).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Span,
    /// How often the daemon compares the ledger with the queue and re-enqueues jobs the queue
    /// lost (a crash between the ledger and the queue, a queue that lost its data).
    #[serde(default = "default_reconcile_every")]
    pub reconcile_every: Span,
    /// How long a due `pending` job may go untouched before its queue message counts as lost.
    /// Longer than the queue ever takes to deliver; a duplicate delivery is harmless anyway.
    #[serde(default = "default_stranded_after")]
    pub stranded_after: Span,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            max_attempts: default_max_attempts(),
            lease: default_lease(),
            slice: default_slice(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            shutdown_grace: default_shutdown_grace(),
            reconcile_every: default_reconcile_every(),
            stranded_after: default_stranded_after(),
        }
    }
}

fn default_concurrency() -> u32 {
    2
}
fn default_max_attempts() -> u32 {
    5
}
fn default_lease() -> Span {
    Span::from_secs(15)
}
fn default_slice() -> Span {
    Span::from_secs(10)
}
fn default_retry_base() -> Span {
    Span::from_secs(1)
}
fn default_retry_max() -> Span {
    Span::from_secs(300)
}
fn default_reconcile_every() -> Span {
    Span::from_secs(10)
}
fn default_stranded_after() -> Span {
    Span::from_secs(120)
}
fn default_shutdown_grace() -> Span {
    Span::from_secs(30)
}

/// `[targets.NAME]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Schema (PostgreSQL) qualifying the table; the connection's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Table name.
    pub table: String,
    /// Primary-key column (the keyset).
    pub primary_key: String,
    /// Primary-key type: `int`, `text` or `uuid`.
    pub key_type: KeyType,
    /// Filterable columns: name = type (`int`, `text`, `bool`, `uuid`, `timestamp`).
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnType>,
    /// `hard`, `soft` or `archive`.
    #[serde(default = "default_mode")]
    pub default_mode: Mode,
    /// Rows per batch when a job does not say.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// The largest batch a job may ask for.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: u32,
    /// The column a soft delete sets to the current time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_column: Option<String>,
    /// The most rows one job may delete.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Overrides `worker.max_attempts` for jobs on this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Throttle: sleep this long after every batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Span>,
    /// Throttle: at most this many rows per second from this target, all jobs of every daemon
    /// (and `purge`) on the same ledger together (a budget shared through the database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_second: Option<u32>,
    /// Throttle: adapt the batch size so each batch takes about this long (between
    /// `min_batch_size` and `max_batch_size`, starting from the job's batch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_batch_duration: Option<Span>,
    /// The smallest adaptive batch (default: 100, or `batch_size` when smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_batch_size: Option<u32>,
    /// `auto` (default: physical order on PostgreSQL 14+ when the planner expects more than 5%
    /// of the table to match, else the keyset), `keyset` or `physical`. A job may override it.
    #[serde(default)]
    pub strategy: crate::strategy::StrategySetting,
    /// Run jobs whose plan would read more than 100 rows per row removed (a scan per batch, a
    /// walk past most rows) instead of refusing them with the index that would fix it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_slow_plan: bool,
    /// The tables that hang off this one (`[[targets.NAME.children]]`): a job on this target
    /// removes their rows first, deepest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildConfig>,
    /// Database `ON DELETE CASCADE`s of this target's rows that reaper accepts because they are
    /// small (`[[targets.NAME.cascades]]`); any other cascade is refused at start-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cascades: Vec<CascadeConfig>,
}

/// `[[targets.NAME.cascades]]`: a table the database empties by `ON DELETE CASCADE` when this
/// target's rows are deleted, accepted with a bound per batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// The referencing table.
    pub table: String,
    /// Its schema; this target's schema when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The referencing column.
    pub column: String,
    /// The column of this target it refers to; this target's `primary_key` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_column: Option<String>,
    /// The most rows of `table` one batch may make the database delete: a batch whose rows
    /// would cascade more deletes fewer of them; a single row that cascades more fails the job.
    pub max_rows_per_batch: u64,
}

/// `[[targets.NAME.children]]`: rows of another target that refer to this one's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    /// The child's catalog target.
    pub target: String,
    /// The child's column that refers to this target.
    pub column: String,
    /// The column of this target it refers to; this target's `primary_key` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_column: Option<String>,
    /// `delete`, `soft_delete` (needs the child's `soft_delete_column`) or `set_null`.
    pub action: Action,
    /// Accept a child column that leads no index (each parent batch then scans the child).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unindexed: bool,
}

fn default_mode() -> Mode {
    Mode::Hard
}
fn default_batch_size() -> u32 {
    1_000
}
fn default_max_batch_size() -> u32 {
    10_000
}
fn default_max_rows() -> u64 {
    10_000_000
}

/// One problem in the configuration, at a dotted key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// e.g. `targets.events.batch_size`
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in key order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&list_problems("invalid configuration:", &self.problems))
    }
}

/// `heading`, then each problem on its own line indented by two spaces; the further lines a
/// problem spans (the configuration to add, already indented by four) are kept as written. The
/// one format of every list of configuration problems (`run`, `config check`), so an operator
/// sees the same text wherever the check runs.
pub fn list_problems<P: fmt::Display>(
    heading: &str,
    problems: impl IntoIterator<Item = P>,
) -> String {
    let mut text = heading.to_owned();
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

impl Config {
    /// Checks everything that can be checked without the database and builds the catalog.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let mut problems = Vec::new();
        let mut fail = |key: String, message: String| problems.push(ConfigProblem { key, message });

        if self.database.max_connections == 0 {
            fail(
                "database.max_connections".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(health) = &self.database.health {
            check_health(&self.database.url, health, &mut fail);
        }
        if self.queue.name.trim().is_empty() {
            fail("queue.name".into(), "must not be empty".into());
        }
        let (backend, scheme) = match self.queue.backend {
            QueueBackend::Sqlite => ("sqlite", "sqlite:"),
            QueueBackend::Redis => ("redis", "redis"),
        };
        if !self.queue.url.starts_with(scheme) {
            fail(
                "queue.url".into(),
                format!("a `{backend}` queue needs a `{scheme}…` URL"),
            );
        }
        check_redis_tls(&self.queue, &mut fail);
        check_redis_sentinel(&self.queue, &mut fail);
        check_redis_cluster(&self.queue, &mut fail);
        if self.queue.fetch_batch == 0 {
            fail("queue.fetch_batch".into(), "must be at least 1".into());
        }
        if self.queue.heartbeat.as_duration().is_zero() {
            fail("queue.heartbeat".into(), "must be longer than zero".into());
        }
        if let Some(listen) = &self.api.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                fail(
                    "api.listen".into(),
                    format!("`{listen}` is not an address such as 127.0.0.1:8080"),
                );
            }
            match &self.api.token {
                None => fail(
                    "api.token".into(),
                    "required when api.listen is set (set REAPER_API_TOKEN)".into(),
                ),
                Some(token) if token.len() < 16 => {
                    fail("api.token".into(), "must be at least 16 characters".into())
                }
                Some(_) => {}
            }
        }
        match &self.api.read_token {
            Some(read) if read.len() < 16 => fail(
                "api.read_token".into(),
                "must be at least 16 characters".into(),
            ),
            Some(read) if Some(read) == self.api.token.as_ref() => fail(
                "api.read_token".into(),
                "must differ from api.token (it may only look)".into(),
            ),
            _ => {}
        }
        if self.worker.concurrency == 0 {
            fail("worker.concurrency".into(), "must be at least 1".into());
        }
        if self.worker.max_attempts == 0 {
            fail("worker.max_attempts".into(), "must be at least 1".into());
        }
        if self.worker.slice >= self.worker.lease {
            fail(
                "worker.slice".into(),
                format!(
                    "{} must be shorter than worker.lease ({}), or a healthy worker's lease expires mid-slice",
                    self.worker.slice, self.worker.lease
                ),
            );
        }
        if self.worker.retry_base > self.worker.retry_max {
            fail(
                "worker.retry_base".into(),
                "must not exceed worker.retry_max".into(),
            );
        }

        let mut targets = Vec::new();
        for (name, target) in &self.targets {
            let key = |field: &str| format!("targets.{name}.{field}");
            let mut ok = true;
            let mut check = |condition: bool, field: &str, message: String| {
                if !condition {
                    ok = false;
                    fail(key(field), message);
                }
            };
            check(
                valid_identifier(name),
                "",
                "a target name is 1 to 63 letters, digits, `_` or `-`".into(),
            );
            for (field, identifier) in [
                ("table", &target.table),
                ("primary_key", &target.primary_key),
            ] {
                check(
                    valid_identifier(identifier),
                    field,
                    format!("`{identifier}` is not a usable identifier"),
                );
            }
            if let Some(schema) = &target.schema {
                check(
                    valid_identifier(schema),
                    "schema",
                    format!("`{schema}` is not a usable identifier"),
                );
            }
            for column in target.columns.keys() {
                check(
                    valid_identifier(column),
                    &format!("columns.{column}"),
                    "not a usable identifier".into(),
                );
            }
            check(
                (1..=BATCH_SIZE_CEILING).contains(&target.max_batch_size),
                "max_batch_size",
                format!(
                    "{} is not allowed; allowed: 1 to {BATCH_SIZE_CEILING}",
                    target.max_batch_size
                ),
            );
            check(
                target.batch_size >= 1 && target.batch_size <= target.max_batch_size,
                "batch_size",
                format!(
                    "{} is not allowed; allowed: 1 to max_batch_size ({})",
                    target.batch_size, target.max_batch_size
                ),
            );
            check(
                target.max_rows >= 1,
                "max_rows",
                "must be at least 1".into(),
            );
            check(
                target.max_attempts != Some(0),
                "max_attempts",
                "must be at least 1".into(),
            );
            let lease = self.worker.lease.as_duration();
            if let Some(pause) = target.pause {
                check(
                    pause.as_duration() < lease / 2,
                    "pause",
                    format!(
                        "{pause} must be shorter than half of worker.lease ({}), or a paused job's lease expires",
                        self.worker.lease
                    ),
                );
            }
            if let Some(rate) = target.max_rows_per_second {
                // The longest wait the cap can impose is one largest batch's share of a second.
                let longest_wait = f64::from(target.max_batch_size) / f64::from(rate.max(1));
                check(
                    rate >= 1 && longest_wait * 2.0 < lease.as_secs_f64(),
                    "max_rows_per_second",
                    format!(
                        "{rate} is too low: one batch of max_batch_size ({}) would wait {longest_wait:.1}s, \
                         more than half of worker.lease ({})",
                        target.max_batch_size, self.worker.lease
                    ),
                );
            }
            let min_batch_size = target
                .min_batch_size
                .unwrap_or(100.min(target.batch_size).max(1));
            check(
                min_batch_size >= 1 && min_batch_size <= target.batch_size,
                "min_batch_size",
                format!(
                    "{min_batch_size} is not allowed; allowed: 1 to batch_size ({})",
                    target.batch_size
                ),
            );
            if target.min_batch_size.is_some() && target.target_batch_duration.is_none() {
                check(
                    false,
                    "min_batch_size",
                    "only applies with target_batch_duration (adaptive batch size)".into(),
                );
            }
            match &target.soft_delete_column {
                Some(column) => check(
                    valid_identifier(column),
                    "soft_delete_column",
                    format!("`{column}` is not a usable identifier"),
                ),
                None => check(
                    target.default_mode != Mode::Soft,
                    "default_mode",
                    "`soft` needs a soft_delete_column".into(),
                ),
            }
            check(
                target.default_mode != Mode::Restore,
                "default_mode",
                "`restore` is not a default; `reaper restore JOB` makes restore jobs".into(),
            );
            if ok {
                targets.push(Target {
                    name: name.clone(),
                    schema: target.schema.clone(),
                    table: target.table.clone(),
                    primary_key: target.primary_key.clone(),
                    key_type: target.key_type,
                    columns: target.columns.clone(),
                    default_mode: target.default_mode,
                    batch_size: target.batch_size,
                    max_batch_size: target.max_batch_size,
                    soft_delete_column: target.soft_delete_column.clone(),
                    max_rows: target.max_rows,
                    max_attempts: target.max_attempts,
                    throttle: Throttle {
                        pause: target.pause.map(Span::as_duration).unwrap_or_default(),
                        max_rows_per_second: target.max_rows_per_second,
                        adaptive: target.target_batch_duration.map(|duration| Adaptive {
                            target: duration.as_duration(),
                            min: min_batch_size,
                            max: target.max_batch_size,
                        }),
                        strategy: target.strategy,
                        strategy_set_by_job: false,
                        allow_slow_plan: target.allow_slow_plan,
                    },
                });
            }
        }
        let catalog = Catalog::new(targets);
        let cascades = self.cascades(&catalog, &mut problems);
        let catalog = catalog.with_cascades(cascades);
        let (relations, at) = self.relations(&catalog, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        catalog
            .with_relations(relations.clone())
            .map_err(|found| ConfigError {
                problems: found
                    .into_iter()
                    .map(|problem| graph_problem(&relations, &at, problem))
                    .collect(),
            })
    }

    /// The declared `children` of every target as relations, beside the key path of each
    /// (`targets.users.children[0]`); problems of single relations go to `problems`, and a
    /// relation with one is left out.
    fn relations(
        &self,
        catalog: &Catalog,
        problems: &mut Vec<ConfigProblem>,
    ) -> (Vec<Relation>, Vec<String>) {
        let mut relations = Vec::new();
        let mut keys = Vec::new();
        for (name, target) in &self.targets {
            for (index, child) in target.children.iter().enumerate() {
                let at = format!("targets.{name}.children[{index}]");
                let before = problems.len();
                let relation = relation(name, target, child, catalog, &at, problems);
                let duplicate = target.children[..index].iter().any(|earlier| {
                    earlier.target == child.target && earlier.column == child.column
                });
                if duplicate {
                    problems.push(ConfigProblem {
                        key: at.clone(),
                        message: format!(
                            "`{}.{}` is already declared as a child of `{name}`",
                            child.target, child.column
                        ),
                    });
                }
                if let Some(relation) = relation.filter(|_| problems.len() == before) {
                    relations.push(relation);
                    keys.push(at);
                }
            }
        }
        (relations, keys)
    }
}

impl Config {
    /// The accepted `cascades` of every valid target; problems go to `problems` and a cascade
    /// with one is left out.
    fn cascades(&self, catalog: &Catalog, problems: &mut Vec<ConfigProblem>) -> Vec<Cascade> {
        let mut cascades = Vec::new();
        for (name, target) in &self.targets {
            let Some(parent) = catalog.get(name) else {
                continue;
            };
            for (index, cascade) in target.cascades.iter().enumerate() {
                let at = format!("targets.{name}.cascades[{index}]");
                let before = problems.len();
                let parent_column = cascade
                    .parent_column
                    .clone()
                    .unwrap_or_else(|| parent.primary_key.clone());
                let schema = cascade.schema.clone().or_else(|| parent.schema.clone());
                let identifiers = [
                    ("table", Some(&cascade.table)),
                    ("schema", schema.as_ref()),
                    ("column", Some(&cascade.column)),
                    ("parent_column", Some(&parent_column)),
                ];
                for (field, identifier) in identifiers {
                    if let Some(identifier) = identifier.filter(|i| !valid_identifier(i)) {
                        problems.push(ConfigProblem {
                            key: format!("{at}.{field}"),
                            message: format!("`{identifier}` is not a usable identifier"),
                        });
                    }
                }
                if cascade.max_rows_per_batch == 0 {
                    problems.push(ConfigProblem {
                        key: format!("{at}.max_rows_per_batch"),
                        message: "must be at least 1 (a cascade that may remove nothing would stop every batch); declare the table as a child instead".into(),
                    });
                }
                if target.cascades[..index]
                    .iter()
                    .any(|e| e.table == cascade.table && e.column == cascade.column)
                {
                    problems.push(ConfigProblem {
                        key: at.clone(),
                        message: format!(
                            "`{}.{}` is already declared as a cascade of `{name}`",
                            cascade.table, cascade.column
                        ),
                    });
                }
                if problems.len() == before {
                    cascades.push(Cascade {
                        parent: name.clone(),
                        schema,
                        table: cascade.table.clone(),
                        column: cascade.column.clone(),
                        parent_column,
                        max_rows_per_batch: cascade.max_rows_per_batch,
                    });
                }
            }
        }
        cascades
    }
}

/// One `[[targets.PARENT.children]]` entry as a relation, its own problems reported at `at`.
/// `None` when the parent or child target itself is invalid (its problems are reported there).
fn relation(
    parent: &str,
    config: &TargetConfig,
    child: &ChildConfig,
    catalog: &Catalog,
    at: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Relation> {
    let mut fail = |field: &str, message: String| {
        problems.push(ConfigProblem {
            key: format!("{at}.{field}"),
            message,
        })
    };
    let target = catalog.get(&child.target);
    if target.is_none() {
        let known = catalog.names().join(", ");
        fail(
            "target",
            format!(
                "unknown target `{}`; the catalog has: {known}",
                child.target
            ),
        );
    }
    let parent_column = child
        .parent_column
        .clone()
        .unwrap_or_else(|| config.primary_key.clone());
    for (field, identifier) in [("column", &child.column), ("parent_column", &parent_column)] {
        if !valid_identifier(identifier) {
            fail(field, format!("`{identifier}` is not a usable identifier"));
        }
    }
    let target = target?;
    if child.action == Action::SoftDelete && target.soft_delete_column.is_none() {
        fail(
            "action",
            format!(
                "`soft_delete` needs a soft_delete_column on target `{}`",
                target.name
            ),
        );
    }
    if child.action == Action::SetNull && child.column == target.primary_key {
        fail(
            "column",
            format!(
                "`set_null` cannot null `{}`, the primary key of target `{}`",
                child.column, target.name
            ),
        );
    }
    catalog.get(parent)?;
    Some(Relation {
        parent: parent.to_owned(),
        child: child.target.clone(),
        column: child.column.clone(),
        parent_column,
        action: child.action,
        allow_unindexed: child.allow_unindexed,
    })
}

/// A graph problem in the words of the configuration: the key path of the relation that shows
/// it, and the path of targets.
fn graph_problem(relations: &[Relation], at: &[String], problem: GraphProblem) -> ConfigProblem {
    match problem {
        GraphProblem::Cycle { index, cycle } => ConfigProblem {
            key: at[index].clone(),
            message: format!(
                "forms a cycle: {}; a job would never reach a table with nothing below it",
                cycle.join(" → ")
            ),
        },
        GraphProblem::ConflictingActions { index, other } => {
            let (this, that) = (&relations[index], &relations[other]);
            ConfigProblem {
                key: format!("{}.action", at[index]),
                message: format!(
                    "`{}` is reached as {} with action `{}` but as {} ({}) with action `{}`; \
                     one table, one action",
                    this.child,
                    describe_path(std::slice::from_ref(this)),
                    this.action,
                    describe_path(std::slice::from_ref(that)),
                    at[other],
                    that.action
                ),
            }
        }
        GraphProblem::UnknownTarget { index } => ConfigProblem {
            key: at[index].clone(),
            message: "names a target the catalog does not declare".into(),
        },
        GraphProblem::SoftDeleteWithoutColumn { index } => ConfigProblem {
            key: format!("{}.action", at[index]),
            message: format!(
                "`soft_delete` needs a soft_delete_column on target `{}`",
                relations[index].child
            ),
        },
    }
}

impl Config {
    /// Checks `[[retention]]` against the catalog (built by [`Config::catalog`]): names, targets,
    /// age columns, schedules, and the job each policy submits, validated like any job so a
    /// policy that passes here can only submit valid jobs. `as_of` is any moment (the age cutoff
    /// does not change validity).
    pub fn retention_policies(
        &self,
        catalog: &Catalog,
        as_of: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Policy>, ConfigError> {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (index, policy) in self.retention.iter().enumerate() {
            let at = if valid_policy_name(&policy.name) {
                format!("retention.{}", policy.name)
            } else {
                problems.push(ConfigProblem {
                    key: format!("retention[{index}].name"),
                    message: format!(
                        "`{}` is not a policy name: 1 to 63 letters, digits, `_` or `-`",
                        policy.name
                    ),
                });
                format!("retention[{index}]")
            };
            let mut fail = |field: &str, message: String| {
                problems.push(ConfigProblem {
                    key: format!("{at}.{field}"),
                    message,
                })
            };
            if !seen.insert(policy.name.clone()) {
                fail(
                    "name",
                    "is used by an earlier policy; names must be unique".into(),
                );
            }
            let Some(target) = catalog.get(&policy.target) else {
                fail(
                    "target",
                    format!(
                        "unknown target `{}`; the catalog has: {}",
                        policy.target,
                        catalog.names().join(", ")
                    ),
                );
                continue;
            };
            let timestamps: Vec<&str> = target
                .columns
                .iter()
                .filter(|(_, kind)| **kind == ColumnType::Timestamp)
                .map(|(name, _)| name.as_str())
                .collect();
            let age_ok = timestamps.contains(&policy.age_column.as_str());
            if !age_ok {
                let what = match target.columns.get(&policy.age_column) {
                    Some(kind) => format!("is declared `{kind}`"),
                    None => "is not a column of the target's catalog entry".into(),
                };
                fail(
                    "age_column",
                    format!(
                        "`{}` {what}; it must be a timestamp column of target `{}` (declared: {})",
                        policy.age_column,
                        target.name,
                        if timestamps.is_empty() {
                            "none".into()
                        } else {
                            timestamps.join(", ")
                        }
                    ),
                );
            }
            let built = Policy::new(
                policy.name.clone(),
                policy.target.clone(),
                policy.age_column.clone(),
                policy.max_age,
                policy.mode,
                policy.schedule.clone(),
                policy.batch_size,
                policy.filter.clone(),
                policy.max_rows_per_run,
                policy.enabled,
            );
            let built = match built {
                Ok(built) => built,
                Err(message) => {
                    fail("schedule", message);
                    continue;
                }
            };
            if built.enabled && built.next_window(as_of).is_none() {
                fail(
                    "schedule",
                    format!(
                        "`{}` never fires again; remove the policy or set enabled = false",
                        policy.schedule
                    ),
                );
                continue;
            }
            if let Err(error) = crate::validate::validate(
                &built.job_request(Some(as_of), crate::retention::SCHEDULER),
                catalog,
                as_of,
            ) {
                for field_error in error.errors {
                    let field = policy_field(&field_error.field);
                    // The age condition's problems were reported above, in the policy's words.
                    if field != "age_column" || age_ok {
                        fail(&field, field_error.message);
                    }
                }
                continue;
            }
            policies.push(built);
        }
        if problems.is_empty() {
            Ok(policies)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Policy names appear in keys, metric labels and command lines: letters, digits, `_`, `-`.
fn valid_policy_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Maps a field of a policy's generated job back to the policy key an operator wrote.
fn policy_field(job_field: &str) -> String {
    if let Some(rest) = job_field.strip_prefix("filter.all[") {
        let (index, suffix) = rest.split_once(']').unwrap_or((rest, ""));
        return match index.parse::<usize>() {
            Ok(0) => "age_column".into(),
            Ok(index) => format!("filter[{}]{suffix}", index - 1),
            Err(_) => "filter".into(),
        };
    }
    match job_field {
        "max_rows" => "max_rows_per_run".into(),
        other => other.into(),
    }
}

/// Identifiers are quoted by the planner, so this only keeps out what no sane schema uses and
/// what would make quoting fragile: empty names, control characters and quotes.
fn valid_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$' || c == ' ')
        && !name.starts_with(' ')
        && !name.ends_with(' ')
}

/// `[queue.tls]`: how reaper verifies a Redis server over TLS, and proves who it is. Paths name
/// PEM files, read at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// The CA certificate(s) the server's certificate must chain to (a managed service's CA
    /// bundle); the system's trust store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A client certificate, for servers that require one (`tls-auth-clients yes`); with
    /// `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// The client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// `[queue.sentinel]`: where the sentinels are and which master they watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// The master's name, as the sentinels monitor it (`sentinel monitor NAME …`).
    pub master: String,
    /// The sentinels' URLs (`redis://10.0.0.5:26379`), asked in turn for the master.
    pub sentinels: Vec<String>,
}

/// `[queue.sentinel]` names a master and at least one sentinel, on a Redis queue.
fn check_redis_sentinel(queue: &QueueConfig, fail: &mut impl FnMut(String, String)) {
    let Some(sentinel) = &queue.sentinel else {
        return;
    };
    if queue.backend != QueueBackend::Redis {
        fail(
            "queue.sentinel".into(),
            "applies to a `redis` queue only".into(),
        );
    }
    if sentinel.master.trim().is_empty() {
        fail(
            "queue.sentinel.master".into(),
            "must name the master the sentinels monitor".into(),
        );
    }
    check_redis_urls("queue.sentinel.sentinels", &sentinel.sentinels, fail);
}

/// A list of Redis servers at `key`: at least one, each a `redis://` or `rediss://` URL.
fn check_redis_urls(key: &str, urls: &[String], fail: &mut impl FnMut(String, String)) {
    if urls.is_empty() {
        fail(
            key.into(),
            "must list at least one server (`redis://host:port`)".into(),
        );
    }
    for (index, url) in urls.iter().enumerate() {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            fail(
                format!("{key}[{index}]"),
                format!("`{url}` is not a `redis://` or `rediss://` URL"),
            );
        }
    }
}

/// `[queue.cluster]`: where a Redis Cluster starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisClusterConfig {
    /// Some of the cluster's nodes (`redis://10.0.0.7:6379`); one that answers is enough.
    pub nodes: Vec<String>,
}

/// The one key apalis-redis writes outside the queue's names: `register_worker.lua` adds
/// every queue to it. A Redis Cluster runs a script only on the node that holds its keys, so
/// every key of the queue must live in this key's hash slot.
pub const APALIS_QUEUE_LIST: &str = "core:apalis:queues:list";

/// A hash tag whose slot is [`APALIS_QUEUE_LIST`]'s (2813): a queue named `{reaper15823}:jobs`
/// has every key, and apalis' queue list, in one slot.
pub const APALIS_CLUSTER_TAG: &str = "{reaper15823}";

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn redis_cluster_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &bytes[open + 1..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `[queue.cluster]` lists nodes, excludes `[queue.sentinel]`, and the queue's keys share
/// apalis' slot.
fn check_redis_cluster(queue: &QueueConfig, fail: &mut impl FnMut(String, String)) {
    let Some(cluster) = &queue.cluster else {
        return;
    };
    if queue.sentinel.is_some() {
        fail(
            "queue.cluster".into(),
            "cannot be combined with queue.sentinel (a cluster fails over by itself)".into(),
        );
    }
    check_redis_urls("queue.cluster.nodes", &cluster.nodes, fail);
    let wanted = redis_cluster_slot(APALIS_QUEUE_LIST);
    if redis_cluster_slot(&queue.name) != wanted {
        fail(
            "queue.name".into(),
            format!(
                "on a Redis Cluster every key of the queue must be in the hash slot of apalis' \
                 `{APALIS_QUEUE_LIST}` ({wanted}), which its scripts write: name the queue with \
                 a hash tag in that slot, such as `{APALIS_CLUSTER_TAG}:{}`",
                queue.name
            ),
        );
    }
}

/// `[queue.tls]` belongs to a `rediss://` URL, and a client certificate comes with its key.
fn check_redis_tls(queue: &QueueConfig, fail: &mut impl FnMut(String, String)) {
    let Some(tls) = &queue.tls else {
        return;
    };
    if queue.backend != QueueBackend::Redis || !queue.url.starts_with("rediss://") {
        fail(
            "queue.tls".into(),
            "applies to Redis over TLS only: queue.url must start with `rediss://`".into(),
        );
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => fail(
            "queue.tls.client_key".into(),
            "is required with queue.tls.client_cert".into(),
        ),
        (None, Some(_)) => fail(
            "queue.tls.client_cert".into(),
            "is required with queue.tls.client_key".into(),
        ),
        _ => {}
    }
}

/// `[database.health]`: the signals of the target database reaper watches, each optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Read the signals at most this often (default 1s); every job of the process shares the
    /// readings, and a paused batch reads again after this long.
    #[serde(default = "default_sample_every")]
    pub sample_every: Span,
    /// A job stopped at a critical level goes back to the queue, to run again after this long
    /// (default 60s), with its checkpoint.
    #[serde(default = "default_stop_for")]
    pub stop_for: Span,
    /// Replica lag, read on each replica (`[database.health.replica_lag]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_lag: Option<ReplicaLagConfig>,
    /// Sessions doing work (PostgreSQL: active sessions of the database besides reaper's;
    /// MySQL/MariaDB: `Threads_running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<SessionLimits>,
    /// Sessions waiting for a lock a reaper session holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_waits: Option<SessionLimits>,
}

fn default_sample_every() -> Span {
    Span::from_secs(1)
}

fn default_stop_for() -> Span {
    Span::from_secs(60)
}

/// `[database.health.replica_lag]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaLagConfig {
    /// The replicas' URLs, of the same kind as `database.url`; the lag is the slowest one's,
    /// and one that cannot be read counts as over the threshold.
    pub replicas: Vec<String>,
    /// Batches pause while the lag is over this.
    pub pause_above: Span,
    /// Paused batches resume at this lag or less (default: 80% of `pause_above`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_below: Option<Span>,
    /// Over this lag the job stops for now (`stop_for`); no stop when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_above: Option<Span>,
}

/// `[database.health.load]`, `[database.health.lock_waits]`: limits in sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Batches pause while more sessions than this are counted (0: any).
    pub pause_above: u32,
    /// Paused batches resume at this many or fewer (default: 80% of `pause_above`, rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_below: Option<u32>,
    /// Over this many the job stops for now (`stop_for`); no stop when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_above: Option<u32>,
}

impl HealthConfig {
    /// The pure rules of a checked configuration ([`Config::catalog`] refuses a bad one).
    pub fn rules(&self) -> crate::health::Rules {
        use crate::health::{Limits, Signal};
        let seconds = |span: Span| span.as_duration().as_secs_f64();
        let mut limits = BTreeMap::new();
        if let Some(lag) = &self.replica_lag {
            let mut rule = Limits::new(seconds(lag.pause_above), lag.stop_above.map(seconds));
            if let Some(resume) = lag.resume_below {
                rule.resume_below = seconds(resume);
            }
            limits.insert(Signal::ReplicaLag, rule);
        }
        for (signal, sessions) in [
            (Signal::Load, &self.load),
            (Signal::LockWaits, &self.lock_waits),
        ] {
            if let Some(sessions) = sessions {
                let pause = f64::from(sessions.pause_above);
                let rule = Limits {
                    pause_above: pause,
                    resume_below: sessions.resume_below.map_or(
                        (pause * crate::health::DEFAULT_RESUME_SHARE).floor(),
                        f64::from,
                    ),
                    stop_above: sessions.stop_above.map(f64::from),
                };
                limits.insert(signal, rule);
            }
        }
        crate::health::Rules {
            limits,
            sample_every: self.sample_every.as_duration(),
            stop_for: self.stop_for.as_duration(),
        }
    }
}

/// The database kind a URL names, by its scheme: `postgres`, `mysql` or `sqlite`.
fn url_kind(url: &str) -> Option<&'static str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some("postgres")
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Some("mysql")
    } else if url.starts_with("sqlite:") {
        Some("sqlite")
    } else {
        None
    }
}

/// Checks `[database.health]` against the database it watches (`url`).
fn check_health(url: &str, health: &HealthConfig, fail: &mut impl FnMut(String, String)) {
    let key = |field: &str| format!("database.health.{field}");
    let kind = url_kind(url);
    if kind == Some("sqlite") {
        fail(
            key("").trim_end_matches('.').to_owned(),
            "SQLite has no replicas, sessions or lock waits to watch; remove it".into(),
        );
        return;
    }
    if health.replica_lag.is_none() && health.load.is_none() && health.lock_waits.is_none() {
        fail(
            key("").trim_end_matches('.').to_owned(),
            "names no signal: add replica_lag, load or lock_waits".into(),
        );
    }
    if health.sample_every.as_duration() < std::time::Duration::from_millis(100) {
        fail(
            key("sample_every"),
            format!("{} is too often; at least 100ms", health.sample_every),
        );
    }
    let mut limits = |field: &str, pause: f64, resume: Option<f64>, stop: Option<f64>| {
        if resume.is_some_and(|resume| resume > pause) {
            fail(
                key(&format!("{field}.resume_below")),
                "must not be over pause_above (batches would resume while still over it)".into(),
            );
        }
        if stop.is_some_and(|stop| stop <= pause) {
            fail(
                key(&format!("{field}.stop_above")),
                "must be over pause_above (the critical level is the worse one)".into(),
            );
        }
    };
    if let Some(lag) = &health.replica_lag {
        let seconds = |span: Span| span.as_duration().as_secs_f64();
        limits(
            "replica_lag",
            seconds(lag.pause_above),
            lag.resume_below.map(seconds),
            lag.stop_above.map(seconds),
        );
    }
    for (field, sessions) in [("load", &health.load), ("lock_waits", &health.lock_waits)] {
        if let Some(sessions) = sessions {
            limits(
                field,
                f64::from(sessions.pause_above),
                sessions.resume_below.map(f64::from),
                sessions.stop_above.map(f64::from),
            );
        }
    }
    if let Some(lag) = &health.replica_lag {
        if lag.replicas.is_empty() {
            fail(
                key("replica_lag.replicas"),
                "lists no replica; give each replica's URL".into(),
            );
        }
        for (index, replica) in lag.replicas.iter().enumerate() {
            let replica_kind = url_kind(replica);
            if replica_kind.is_none() || replica_kind != kind {
                fail(
                    key(&format!("replica_lag.replicas[{index}]")),
                    format!(
                        "must be a URL of the same kind as database.url (`{}://…`)",
                        kind.unwrap_or("postgres")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        serde_json::from_value(toml_like(text)).unwrap()
    }

    // Tests build configs as JSON (the core crate has no TOML parser); the shape is identical.
    fn toml_like(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    fn base(target: &str) -> String {
        format!(
            r#"{{"database": {{"url": "sqlite://x.db"}},
                 "queue": {{"backend": "sqlite", "url": "sqlite://q.db"}},
                 "targets": {{"events": {target}}}}}"#
        )
    }

    #[test]
    fn a_plain_target_builds_the_catalog_with_defaults() {
        let config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int", "columns": {"created_at": "timestamp"}}"#,
        ));
        let catalog = config.catalog().unwrap();
        let target = catalog.get("events").unwrap();
        assert_eq!((target.batch_size, target.max_batch_size), (1_000, 10_000));
        assert_eq!(
            target.columns.get("created_at"),
            Some(&ColumnType::Timestamp)
        );
    }

    #[test]
    fn problems_name_their_key() {
        let config = parse(&base(
            r#"{"table": "", "primary_key": "id", "key_type": "int", "batch_size": 20000, "default_mode": "soft"}"#,
        ));
        let error = config.catalog().unwrap_err().to_string();
        assert!(
            error.contains("targets.events.table: `` is not a usable identifier"),
            "{error}"
        );
        assert!(error.contains("targets.events.batch_size: 20000 is not allowed; allowed: 1 to max_batch_size (10000)"), "{error}");
        assert!(
            error.contains("targets.events.default_mode: `soft` needs a soft_delete_column"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_value::<Config>(toml_like(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int", "batchsize": 5}"#,
        )))
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `batchsize`"),
            "{error}"
        );
    }

    #[test]
    fn slice_must_be_shorter_than_the_lease() {
        let mut config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int"}"#,
        ));
        config.worker.slice = Span::from_secs(120);
        let error = config.catalog().unwrap_err().to_string();
        assert!(
            error.contains("worker.slice: 2m must be shorter than worker.lease (15s)"),
            "{error}"
        );
    }

    #[test]
    fn queue_urls_must_fit_the_backend_and_the_api_needs_a_token() {
        let mut config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int"}"#,
        ));
        config.queue.backend = QueueBackend::Redis;
        config.api.listen = Some("127.0.0.1:8080".into());
        let error = config.catalog().unwrap_err().to_string();
        assert!(
            error.contains("queue.url: a `redis` queue needs a `redis…` URL"),
            "{error}"
        );
        assert!(
            error.contains("api.token: required when api.listen is set (set REAPER_API_TOKEN)"),
            "{error}"
        );
        config.queue.url = "redis://127.0.0.1:6379/0".into();
        config.api.token = Some("short".into());
        config.api.listen = Some("localhost".into());
        let error = config.catalog().unwrap_err().to_string();
        assert!(
            error.contains("api.token: must be at least 16 characters"),
            "{error}"
        );
        assert!(
            error.contains("api.listen: `localhost` is not an address"),
            "{error}"
        );
        assert!(!error.contains("queue.url"), "{error}");
    }

    fn with_retention(policies: &str) -> Config {
        let text = format!(
            r#"{{"database": {{"url": "sqlite://x.db"}},
                 "queue": {{"backend": "sqlite", "url": "sqlite://q.db"}},
                 "targets": {{"sessions": {{"table": "sessions", "primary_key": "id", "key_type": "int",
                    "soft_delete_column": "deleted_at",
                    "columns": {{"created_at": "timestamp", "deleted_at": "timestamp", "user_id": "int"}}}}}},
                 "retention": {policies}}}"#
        );
        parse(&text)
    }

    fn retention_error(policies: &str) -> String {
        let config = with_retention(policies);
        let catalog = config.catalog().unwrap();
        config
            .retention_policies(&catalog, chrono::Utc::now())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn soft_then_hard_after_a_grace_period_is_two_policies() {
        let config = with_retention(
            r#"[{"name": "expire", "target": "sessions", "age_column": "created_at", "max_age": "30d",
                 "mode": "soft", "schedule": "0 * * * *"},
                {"name": "purge-expired", "target": "sessions", "age_column": "deleted_at", "max_age": "7d",
                 "mode": "hard", "schedule": "30 * * * *", "max_rows_per_run": 50000, "batch_size": 500,
                 "filter": [{"column": "user_id", "op": "gt", "value": 0}]}]"#,
        );
        let catalog = config.catalog().unwrap();
        let policies = config
            .retention_policies(&catalog, chrono::Utc::now())
            .unwrap();
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[1].filter.len(), 1);
        assert!(policies[0].enabled);
    }

    #[test]
    fn each_policy_problem_names_its_key() {
        let error = retention_error(
            r#"[{"name": "a", "target": "sesions", "age_column": "created_at", "max_age": "30d", "schedule": "0 * * * *"}]"#,
        );
        assert!(
            error.contains(
                "retention.a.target: unknown target `sesions`; the catalog has: sessions"
            ),
            "{error}"
        );
        let error = retention_error(
            r#"[{"name": "a", "target": "sessions", "age_column": "user_id", "max_age": "30d", "schedule": "0 * * * *"}]"#,
        );
        assert!(
            error.contains("retention.a.age_column: `user_id` is declared `int`; it must be a timestamp column of target `sessions` (declared: created_at, deleted_at)"),
            "{error}"
        );
        let error = retention_error(
            r#"[{"name": "a", "target": "sessions", "age_column": "created_at", "max_age": "30d", "schedule": "every day"}]"#,
        );
        assert!(
            error.contains("retention.a.schedule: `every day` has 2 fields"),
            "{error}"
        );
        let error = retention_error(
            r#"[{"name": "a", "target": "sessions", "age_column": "created_at", "max_age": "30d", "schedule": "0 25 * * *"}]"#,
        );
        assert!(
            error.contains("retention.a.schedule: `0 25 * * *` is not a cron expression"),
            "{error}"
        );
        let error = retention_error(
            r#"[{"name": "a", "target": "sessions", "age_column": "created_at", "max_age": "30d", "schedule": "0 * * * *",
                 "batch_size": 999999, "max_rows_per_run": 0, "filter": [{"column": "user_id", "op": "eq", "value": "x"}]},
                {"name": "a", "target": "sessions", "age_column": "created_at", "max_age": "1d", "schedule": "0 * * * *"},
                {"name": "b c", "target": "sessions", "age_column": "created_at", "max_age": "1d", "schedule": "0 * * * *"}]"#,
        );
        for expected in [
            "retention.a.batch_size: 999999 is not allowed",
            "retention.a.max_rows_per_run: 0 is not allowed",
            "retention.a.filter[0].value: column `user_id` is int",
            "retention.a.name: is used by an earlier policy",
            "retention[2].name: `b c` is not a policy name",
        ] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn unknown_policy_keys_and_bad_ages_are_rejected() {
        let error = serde_json::from_value::<Config>(toml_like(
            r#"{"database": {"url": "sqlite://x.db"}, "queue": {"backend": "sqlite", "url": "sqlite://q.db"},
                "retention": [{"name": "a", "target": "t", "age_column": "c", "max_age": "30d", "schedule": "0 * * * *", "cron": "x"}]}"#,
        ))
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `cron`"),
            "{error}"
        );
        let error = serde_json::from_value::<Config>(toml_like(
            r#"{"database": {"url": "sqlite://x.db"}, "queue": {"backend": "sqlite", "url": "sqlite://q.db"},
                "retention": [{"name": "a", "target": "t", "age_column": "c", "max_age": "30", "schedule": "0 * * * *"}]}"#,
        ))
        .unwrap_err();
        assert!(error.to_string().contains("`30` has no unit"), "{error}");
    }

    #[test]
    fn throttles_are_checked_against_the_lease() {
        let config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int", "pause": "10s",
                "max_rows_per_second": 100, "min_batch_size": 5000}"#,
        ));
        let error = config.catalog().unwrap_err().to_string();
        assert!(
            error.contains(
                "targets.events.pause: 10s must be shorter than half of worker.lease (15s)"
            ),
            "{error}"
        );
        assert!(error.contains("targets.events.max_rows_per_second: 100 is too low: one batch of max_batch_size (10000) would wait 100.0s"), "{error}");
        assert!(error.contains("targets.events.min_batch_size: 5000 is not allowed; allowed: 1 to batch_size (1000)"), "{error}");
        assert!(
            error
                .contains("targets.events.min_batch_size: only applies with target_batch_duration"),
            "{error}"
        );
        let config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int", "pause": "20ms",
                "max_rows_per_second": 50000, "target_batch_duration": "100ms"}"#,
        ));
        let catalog = config.catalog().unwrap();
        let throttle = &catalog.get("events").unwrap().throttle;
        assert_eq!(throttle.pause, std::time::Duration::from_millis(20));
        assert_eq!(throttle.max_rows_per_second, Some(50_000));
        let adaptive = throttle.adaptive.unwrap();
        assert_eq!((adaptive.min, adaptive.max), (100, 10_000));
    }

    fn with_health(url: &str, health: &str) -> Config {
        parse(&format!(
            r#"{{"database": {{"url": "{url}", "health": {health}}},
                 "queue": {{"backend": "sqlite", "url": "sqlite://q.db"}}}}"#
        ))
    }

    #[test]
    fn health_signals_become_rules_with_defaults() {
        let config = with_health(
            "postgres://db/app",
            r#"{"replica_lag": {"replicas": ["postgres://replica/app"], "pause_above": "5s", "stop_above": "1m"},
                "load": {"pause_above": 16}, "lock_waits": {"pause_above": 0, "stop_above": 20}}"#,
        );
        config.catalog().unwrap();
        let rules = config.database.health.as_ref().unwrap().rules();
        use crate::health::{Limits, Signal};
        assert_eq!(
            rules.limits.get(&Signal::ReplicaLag),
            Some(&Limits {
                pause_above: 5.0,
                resume_below: 4.0,
                stop_above: Some(60.0)
            })
        );
        assert_eq!(
            rules.limits.get(&Signal::Load),
            Some(&Limits {
                pause_above: 16.0,
                resume_below: 12.0,
                stop_above: None
            })
        );
        assert_eq!(
            rules.limits.get(&Signal::LockWaits).map(|l| l.resume_below),
            Some(0.0)
        );
        assert_eq!(rules.sample_every, std::time::Duration::from_secs(1));
        assert_eq!(rules.stop_for, std::time::Duration::from_secs(60));
    }

    #[test]
    fn health_problems_name_their_key() {
        let error = with_health(
            "mysql://db/app",
            r#"{"sample_every": "10ms",
                "replica_lag": {"replicas": ["postgres://replica/app"], "pause_above": "5s", "resume_below": "6s", "stop_above": "5s"},
                "load": {"pause_above": 16, "stop_above": 8}}"#,
        )
        .catalog()
        .unwrap_err()
        .to_string();
        for expected in [
            "database.health.sample_every: 10ms is too often; at least 100ms",
            "database.health.replica_lag.resume_below: must not be over pause_above",
            "database.health.replica_lag.stop_above: must be over pause_above",
            "database.health.load.stop_above: must be over pause_above",
            "database.health.replica_lag.replicas[0]: must be a URL of the same kind as database.url (`mysql://…`)",
        ] {
            assert!(error.contains(expected), "{expected} in {error}");
        }
        let error = with_health("sqlite://x.db", r#"{"load": {"pause_above": 1}}"#)
            .catalog()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("database.health: SQLite has no replicas"),
            "{error}"
        );
        let error = with_health("postgres://db/app", "{}")
            .catalog()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("database.health: names no signal"),
            "{error}"
        );
    }

    #[test]
    fn problems_are_listed_one_per_line_with_their_own_lines_kept() {
        let problems = [
            ConfigProblem {
                key: "targets.users.children".into(),
                message: "not declared. Add:\n    [[targets.users.children]]".into(),
            },
            ConfigProblem {
                key: "targets.users.batch_size".into(),
                message: "too large".into(),
            },
        ];
        assert_eq!(
            list_problems("invalid configuration:", &problems),
            "invalid configuration:\n  targets.users.children: not declared. Add:\n    \
             [[targets.users.children]]\n  targets.users.batch_size: too large"
        );
    }

    #[test]
    fn accepted_cascades_are_read_with_defaults_and_checked() {
        let config = parse(&base(
            r#"{"table": "events", "schema": "app", "primary_key": "id", "key_type": "int",
                "cascades": [{"table": "event_tags", "column": "event_id", "max_rows_per_batch": 500}]}"#,
        ));
        let catalog = config.catalog().unwrap();
        let cascades: Vec<&Cascade> = catalog.cascades("events").collect();
        assert_eq!(
            cascades,
            [&Cascade {
                parent: "events".into(),
                schema: Some("app".into()),
                table: "event_tags".into(),
                column: "event_id".into(),
                parent_column: "id".into(),
                max_rows_per_batch: 500,
            }]
        );
        let config = parse(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int",
                "cascades": [{"table": "event_tags", "column": "", "max_rows_per_batch": 0},
                             {"table": "event_tags", "column": "", "max_rows_per_batch": 5}]}"#,
        ));
        let error = config.catalog().unwrap_err().to_string();
        for expected in [
            "targets.events.cascades[0].column: `` is not a usable identifier",
            "targets.events.cascades[0].max_rows_per_batch: must be at least 1",
            "targets.events.cascades[1]: `event_tags.` is already declared as a cascade of `events`",
        ] {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    /// users → sessions, orders → order_items, events (no constraint), comments (soft), with
    /// `users`' children replaced by `children` when given.
    fn shop(users_children: Option<&str>, orders_children: &str) -> Config {
        let users_children = users_children.unwrap_or(
            r#"[{"target": "sessions", "column": "user_id", "action": "delete"},
                {"target": "orders", "column": "user_id", "action": "delete"},
                {"target": "events", "column": "user_id", "action": "set_null"},
                {"target": "comments", "column": "author_id", "action": "soft_delete"}]"#,
        );
        let plain = |table: &str| {
            format!(r#"{{"table": "{table}", "primary_key": "id", "key_type": "int"}}"#)
        };
        parse(&format!(
            r#"{{"database": {{"url": "sqlite://x.db"}},
                 "queue": {{"backend": "sqlite", "url": "sqlite://q.db"}},
                 "targets": {{
                   "users": {{"table": "users", "primary_key": "id", "key_type": "int",
                              "children": {users_children}}},
                   "orders": {{"table": "orders", "primary_key": "id", "key_type": "int",
                               "children": {orders_children}}},
                   "order_items": {}, "sessions": {}, "events": {},
                   "comments": {{"table": "comments", "primary_key": "id", "key_type": "int",
                                 "soft_delete_column": "deleted_at"}}}}}}"#,
            plain("order_items"),
            plain("sessions"),
            plain("events"),
        ))
    }

    const ITEMS: &str = r#"[{"target": "order_items", "column": "order_id", "action": "delete"}]"#;

    fn assert_refused(config: &Config, expected: &[&str]) {
        let error = config.catalog().unwrap_err().to_string();
        for expected in expected {
            assert!(error.contains(expected), "{expected} missing in {error}");
        }
    }

    #[test]
    fn children_become_relations_with_the_parent_key_as_default() {
        let catalog = shop(None, ITEMS).catalog().unwrap();
        let orders = catalog
            .children("users")
            .find(|r| r.child == "orders")
            .unwrap();
        assert_eq!(
            (orders.column.as_str(), orders.parent_column.as_str()),
            ("user_id", "id")
        );
        assert_eq!(orders.action, Action::Delete);
        assert!(!orders.allow_unindexed);
        let steps: Vec<String> = catalog
            .plan("users", Mode::Hard)
            .iter()
            .map(|step| step.describe())
            .collect();
        assert_eq!(
            steps,
            [
                "users → sessions",
                "users → orders → order_items",
                "users → orders",
                "users → events",
                "users → comments"
            ]
        );
    }

    #[test]
    fn a_declared_parent_column_is_kept() {
        let config = shop(
            Some(
                r#"[{"target": "sessions", "column": "user_ref", "parent_column": "external_id", "action": "delete", "allow_unindexed": true}]"#,
            ),
            "[]",
        );
        let catalog = config.catalog().unwrap();
        let relation = &catalog.relations()[0];
        assert_eq!(relation.parent_column, "external_id");
        assert!(relation.allow_unindexed);
    }

    #[test]
    fn a_cycle_is_refused_with_its_key_path() {
        let config = shop(
            None,
            r#"[{"target": "order_items", "column": "order_id", "action": "delete"},
                {"target": "users", "column": "last_order_id", "action": "set_null"}]"#,
        );
        assert_refused(
            &config,
            &["targets.orders.children[1]: forms a cycle: orders → users → orders"],
        );
        let own = shop(
            Some(r#"[{"target": "users", "column": "referrer_id", "action": "set_null"}]"#),
            "[]",
        );
        assert_refused(
            &own,
            &["targets.users.children[0]: forms a cycle: users → users"],
        );
    }

    #[test]
    fn two_paths_with_different_actions_are_refused() {
        let config = shop(
            None,
            r#"[{"target": "order_items", "column": "order_id", "action": "delete"},
                {"target": "events", "column": "order_id", "action": "delete"}]"#,
        );
        assert_refused(
            &config,
            &[
                "targets.users.children[2].action: `events` is reached as users → events with action `set_null` \
               but as orders → events (targets.orders.children[1]) with action `delete`; one table, one action",
            ],
        );
    }

    #[test]
    fn each_child_problem_names_its_key() {
        let config = shop(
            Some(
                r#"[{"target": "payments", "column": "user_id", "action": "delete"},
                    {"target": "sessions", "column": "", "action": "delete"},
                    {"target": "sessions", "column": "user_id", "action": "soft_delete"},
                    {"target": "events", "column": "id", "action": "set_null"},
                    {"target": "sessions", "column": "user_id", "action": "soft_delete"}]"#,
            ),
            "[]",
        );
        assert_refused(
            &config,
            &[
                "targets.users.children[0].target: unknown target `payments`; the catalog has: comments, events, order_items, orders, sessions, users",
                "targets.users.children[1].column: `` is not a usable identifier",
                "targets.users.children[2].action: `soft_delete` needs a soft_delete_column on target `sessions`",
                "targets.users.children[3].column: `set_null` cannot null `id`, the primary key of target `events`",
                "targets.users.children[4]: `sessions.user_id` is already declared as a child of `users`",
            ],
        );
        let unknown = serde_json::from_value::<Config>(toml_like(&base(
            r#"{"table": "events", "primary_key": "id", "key_type": "int",
                "children": [{"target": "x", "column": "y", "action": "cascade"}]}"#,
        )))
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown variant `cascade`"),
            "{unknown}"
        );
    }

    #[test]
    fn queue_tls_needs_a_rediss_url_and_a_client_certificate_its_key() {
        let config = |url: &str, tls: &str| {
            parse(&format!(
                r#"{{"database": {{"url": "sqlite://x.db"}},
                     "queue": {{"backend": "redis", "url": "{url}", "tls": {tls}}}}}"#
            ))
        };
        let problems = |config: Config| match config.catalog() {
            Ok(_) => Vec::new(),
            Err(error) => error.problems.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            problems(config(
                "rediss://cache:6380",
                r#"{"ca_file": "ca.pem", "client_cert": "c.pem", "client_key": "c.key"}"#
            )),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(config("redis://cache:6379", r#"{"ca_file": "ca.pem"}"#)),
            vec![
                "queue.tls: applies to Redis over TLS only: queue.url must start with `rediss://`"
            ]
        );
        assert_eq!(
            problems(config("rediss://cache:6380", r#"{"client_cert": "c.pem"}"#)),
            vec!["queue.tls.client_key: is required with queue.tls.client_cert"]
        );
    }

    #[test]
    fn cluster_slots_follow_redis_hash_tags() {
        // Redis' own examples: CRC16 of "123456789" is 0x31C3.
        assert_eq!(redis_cluster_slot("123456789"), 0x31C3);
        assert_eq!(redis_cluster_slot(APALIS_QUEUE_LIST), 2813);
        assert_eq!(redis_cluster_slot(APALIS_CLUSTER_TAG), 2813);
        assert_eq!(
            redis_cluster_slot("{reaper15823}:jobs:active"),
            redis_cluster_slot("{reaper15823}:jobs:intake:claimed:daemon-1")
        );
        // Redis' answers (`CLUSTER KEYSLOT`): an empty tag hashes the whole key.
        assert_eq!(redis_cluster_slot("{}x"), 10595);
        assert_eq!(redis_cluster_slot("a{b}c"), 3300);
    }

    #[test]
    fn a_cluster_queue_must_share_apalis_slot() {
        let problems = |name: &str| {
            let config = parse(&format!(
                r#"{{"database": {{"url": "sqlite://x.db"}},
                     "queue": {{"backend": "redis", "url": "redis://", "name": "{name}",
                                "cluster": {{"nodes": ["redis://127.0.0.1:7000"]}}}}}}"#
            ));
            match config.catalog() {
                Ok(_) => Vec::new(),
                Err(error) => error.problems.iter().map(ToString::to_string).collect(),
            }
        };
        assert_eq!(problems("{reaper15823}:jobs"), Vec::<String>::new());
        let refused = problems("reaper-jobs");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("queue.name: on a Redis Cluster")
                && refused[0].contains("`{reaper15823}:reaper-jobs`"),
            "{refused:?}"
        );
    }
}
