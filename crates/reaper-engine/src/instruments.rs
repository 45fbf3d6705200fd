//! Every metric reaper exports: its name, labels and meaning, and the functions that record it.
//!
//! Recording goes through the `metrics` facade and costs nothing without an installed recorder
//! (the binary installs a Prometheus one). Dashboards and alert rules may use only the names
//! listed by [`all`]; a test scrapes a running daemon to hold them to it. Label values are
//! catalog target names and fixed words, never job input, so cardinality stays bounded.
//!
//! The list is whole, so it also names what only the binary measures — the queue's depth,
//! its live workers, and jobs accepted or refused per producer ([`SOURCES`]) — and holds the
//! functions the binary records them with. The engine itself records none of those: that is
//! all it knows of queues and producers.

use std::time::Duration;

use reaper_core::lifecycle::JobState;

/// Counter, labels `target`, `mode`: rows deleted (hard) or marked (soft).
pub const ROWS_DELETED: &str = "reaper_rows_deleted_total";
/// Counter, label `target`: committed batch transactions.
pub const BATCHES: &str = "reaper_batches_total";
/// Histogram (seconds), label `target`: batch transaction time, BEGIN to COMMIT.
pub const BATCH_DURATION: &str = "reaper_batch_duration_seconds";
/// Counter, labels `target`, `outcome` (`done`, `dead`, `cancelled`): jobs that finished.
pub const JOBS_FINISHED: &str = "reaper_jobs_finished_total";
/// Counter, label `target`: runs that failed transiently and were scheduled to retry.
pub const JOB_RETRIES: &str = "reaper_job_retries_total";
/// Gauge: jobs `pending` in the ledger (accepted, waiting for a worker).
pub const JOBS_PENDING: &str = "reaper_jobs_pending";
/// Gauge: jobs `running` in the ledger (claimed under a lease).
pub const JOBS_RUNNING: &str = "reaper_jobs_running";
/// Gauge: jobs `paused` in the ledger (foreground purges stopped by Ctrl-C, waiting for
/// `reaper purge --resume`; no daemon runs them).
pub const JOBS_PAUSED: &str = "reaper_jobs_paused";
/// Gauge: messages waiting in the queue transport (ready or scheduled).
pub const QUEUE_DEPTH: &str = "reaper_queue_depth";
/// Gauge: this daemon's workers that are polling the queue (0 while they restart).
pub const WORKERS_ALIVE: &str = "reaper_workers_alive";
/// Counter, label `source` (`api`, `cli`, `redis`, `scheduler`): jobs accepted into the ledger.
pub const JOBS_ACCEPTED: &str = "reaper_jobs_accepted_total";
/// Counter, label `source`: job requests refused as invalid (nothing deleted).
pub const JOBS_REJECTED: &str = "reaper_jobs_rejected_total";

/// Gauge, label `policy`: when the policy's newest finished run finished (unix seconds; 0: none).
pub const POLICY_LAST_RUN: &str = "reaper_policy_last_run_timestamp_seconds";
/// Gauge, label `policy`: rows its newest finished run removed.
pub const POLICY_LAST_RUN_ROWS: &str = "reaper_policy_last_run_rows";
/// Gauge, label `policy`: submission to finish of its newest finished run, in seconds.
pub const POLICY_LAST_RUN_DURATION: &str = "reaper_policy_last_run_duration_seconds";
/// Gauge, label `policy`: 1 if its newest finished run is `done`, else 0.
pub const POLICY_LAST_RUN_SUCCESS: &str = "reaper_policy_last_run_success";
/// Gauge, label `policy`: 1 if its newest finished run stopped at `max_rows_per_run` with
/// matching rows left (repeatedly 1: the policy falls behind), else 0.
pub const POLICY_LAST_RUN_CAPPED: &str = "reaper_policy_last_run_capped";
/// Gauge, label `policy`: when its newest successful run finished (unix seconds; 0: never).
pub const POLICY_LAST_SUCCESS: &str = "reaper_policy_last_success_timestamp_seconds";
/// Gauge, label `policy`: the schedule's period in seconds (alert: no success for 2 periods).
pub const POLICY_INTERVAL: &str = "reaper_policy_interval_seconds";
/// Gauge, label `policy`: when its next window opens (unix seconds; 0: disabled).
pub const POLICY_NEXT_RUN: &str = "reaper_policy_next_run_timestamp_seconds";

/// 1 when the last scrape could read the ledger, 0 when it could not (the ledger-derived
/// series, [`ledger_derived`], are then left out of that scrape rather than shown stale or as 0).
pub const LEDGER_UP: &str = "reaper_ledger_up";

/// Times a daemon found its Redis connection lost and reconnected: once per outage of a
/// connection (through Sentinel, each time it asked the sentinels again).
pub const REDIS_RECONNECTS: &str = "reaper_redis_reconnects_total";
/// 1 for the Redis master this daemon last connected to, by `address` (Redis through
/// Sentinel); the previous master's series drops to 0.
pub const REDIS_MASTER: &str = "reaper_redis_master";

/// Gauge, labels `target`, `reason`: 1 while the target's batches are held for that reason,
/// else 0. Reasons: [`OPERATOR`], an operator paused the target (API or CLI), read from the
/// ledger's controls at scrape time; and [`THROTTLE_REASONS`], a health signal over its
/// threshold or unreadable, as of the last check a job of the target made.
pub const THROTTLE_PAUSED: &str = "reaper_throttle_paused";
/// Gauge, label `target`: the rows-per-second cap in force on the target for all daemons
/// together (the configured one, or an operator's lower override); 0 when it has none. Read at
/// scrape time.
pub const THROTTLE_RATE: &str = "reaper_throttle_max_rows_per_second";
/// The `reason` of [`THROTTLE_PAUSED`] for a pause an operator asked for.
pub const OPERATOR: &str = "operator";
/// Gauge, labels `target`, `signal` (`replica_lag` in seconds, `load`, `lock_waits` in
/// sessions): the database health signal's last reading for the target's jobs (NaN: unknown).
pub const HEALTH_SIGNAL: &str = "reaper_health_signal";

/// Why the database's health holds a target's batches, the `reason` label of
/// [`THROTTLE_PAUSED`]: a signal over its threshold, or one that could not be read
/// (`reaper_core::health::Reason`).
pub const THROTTLE_REASONS: &[&str] = &["replica_lag", "load", "lock_waits", "unknown"];

/// The gauges of jobs by state, counted in the ledger at scrape time.
const JOB_STATE_GAUGES: &[&str] = &[JOBS_PENDING, JOBS_RUNNING, JOBS_PAUSED];

/// The per-target throttle gauges read from the ledger's controls at scrape time only
/// ([`THROTTLE_PAUSED`] is also set by the jobs' health checks, so it stays in every scrape).
const THROTTLE_GAUGES: &[&str] = &[THROTTLE_RATE];

/// The per-policy gauges read from the ledger's runs at scrape time.
const POLICY_RUN_GAUGES: &[&str] = &[
    POLICY_LAST_RUN,
    POLICY_LAST_RUN_ROWS,
    POLICY_LAST_RUN_DURATION,
    POLICY_LAST_RUN_SUCCESS,
    POLICY_LAST_RUN_CAPPED,
    POLICY_LAST_SUCCESS,
];

/// The per-policy gauges of its schedule (from the configuration, not the ledger).
const POLICY_SCHEDULE_GAUGES: &[&str] = &[POLICY_INTERVAL, POLICY_NEXT_RUN];

/// The series read from the ledger at scrape time: left out of a scrape that cannot read it.
pub fn ledger_derived() -> impl Iterator<Item = &'static str> {
    JOB_STATE_GAUGES
        .iter()
        .chain(POLICY_RUN_GAUGES)
        .chain(THROTTLE_GAUGES)
        .copied()
}

/// The producers of jobs, the `source` label of [`JOBS_ACCEPTED`] and [`JOBS_REJECTED`]: the
/// HTTP API, the CLI, the Redis intake list, and the retention scheduler.
pub const SOURCES: &[&str] = &["api", "cli", "redis", "scheduler"];

/// The metrics that exist from start-up besides the gauges of jobs by state.
const ALWAYS_BESIDES_JOB_STATES: &[&str] = &[
    ROWS_DELETED,
    BATCHES,
    BATCH_DURATION,
    JOBS_FINISHED,
    JOB_RETRIES,
    QUEUE_DEPTH,
    WORKERS_ALIVE,
    JOBS_ACCEPTED,
    JOBS_REJECTED,
    LEDGER_UP,
    REDIS_RECONNECTS,
    THROTTLE_PAUSED,
];

/// Every metric that exists from start-up, whatever the configuration.
pub fn always() -> impl Iterator<Item = &'static str> {
    ALWAYS_BESIDES_JOB_STATES
        .iter()
        .chain(JOB_STATE_GAUGES)
        .chain(THROTTLE_GAUGES)
        .copied()
}

/// Gauges of the per-policy series (they exist once a policy is configured).
pub fn policy_gauges() -> impl Iterator<Item = &'static str> {
    POLICY_RUN_GAUGES
        .iter()
        .chain(POLICY_SCHEDULE_GAUGES)
        .copied()
}

/// Every exported metric name (the Redis master's gauge exists once a daemon reached one
/// through Sentinel, the health signals' once `[database.health]` names one).
pub fn all() -> impl Iterator<Item = &'static str> {
    always()
        .chain(policy_gauges())
        .chain([REDIS_MASTER, HEALTH_SIGNAL])
}

/// Bucket bounds of [`BATCH_DURATION`], in seconds: batches should take milliseconds; the
/// upper buckets show the ones that did not.
pub const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Help texts (shown by `/metrics`) of the counters, gauges and histograms: name, unit, help.
type Help = (&'static str, Option<metrics::Unit>, &'static str);

/// The counters' help texts.
const COUNTER_HELP: &[Help] = &[
    (
        ROWS_DELETED,
        None,
        "Rows deleted (hard) or marked deleted (soft).",
    ),
    (BATCHES, None, "Committed batch transactions."),
    (JOBS_FINISHED, None, "Jobs that finished, by outcome."),
    (
        JOB_RETRIES,
        None,
        "Job runs that failed transiently and will retry.",
    ),
    (
        JOBS_ACCEPTED,
        None,
        "Jobs accepted into the ledger, by source.",
    ),
    (
        JOBS_REJECTED,
        None,
        "Job requests refused as invalid, by source.",
    ),
    (
        REDIS_RECONNECTS,
        None,
        "Times a Redis connection was found lost and reconnected (through Sentinel: the sentinels asked again).",
    ),
];

/// The gauges' help texts.
const GAUGE_HELP: &[Help] = &[
    (
        HEALTH_SIGNAL,
        None,
        "The database health signal's last reading for the target (seconds of lag; sessions); NaN when unknown.",
    ),
    (
        REDIS_MASTER,
        None,
        "1 for the Redis master (by address) the sentinels last named to this daemon.",
    ),
    (JOBS_PENDING, None, "Jobs pending in the ledger."),
    (
        THROTTLE_PAUSED,
        None,
        "1 while the target's batches are held for the reason (operator: paused through the API or CLI; replica_lag, load, lock_waits, unknown: the database's health), else 0.",
    ),
    (
        THROTTLE_RATE,
        None,
        "The rows-per-second cap in force on the target, all daemons together (0: none).",
    ),
    (
        JOBS_RUNNING,
        None,
        "Jobs running under a lease, per the ledger.",
    ),
    (
        JOBS_PAUSED,
        None,
        "Foreground purges paused by Ctrl-C, waiting for reaper purge --resume.",
    ),
    (
        LEDGER_UP,
        None,
        "1 when this scrape read the ledger; 0 when it could not (ledger series left out).",
    ),
    (
        QUEUE_DEPTH,
        None,
        "Messages waiting in the queue transport.",
    ),
    (
        WORKERS_ALIVE,
        None,
        "Workers of this daemon polling the queue.",
    ),
    (
        POLICY_LAST_RUN,
        None,
        "When the policy's newest finished run finished (unix seconds; 0 if none).",
    ),
    (
        POLICY_LAST_RUN_ROWS,
        None,
        "Rows the policy's newest finished run removed.",
    ),
    (
        POLICY_LAST_RUN_DURATION,
        Some(metrics::Unit::Seconds),
        "Submission to finish of the policy's newest finished run.",
    ),
    (
        POLICY_LAST_RUN_SUCCESS,
        None,
        "1 if the policy's newest finished run is done, else 0.",
    ),
    (
        POLICY_LAST_RUN_CAPPED,
        None,
        "1 if the policy's newest finished run stopped at max_rows_per_run with rows left, else 0.",
    ),
    (
        POLICY_LAST_SUCCESS,
        None,
        "When the policy's newest successful run finished (unix seconds; 0 if never).",
    ),
    (
        POLICY_INTERVAL,
        Some(metrics::Unit::Seconds),
        "The period of the policy's schedule.",
    ),
    (
        POLICY_NEXT_RUN,
        None,
        "When the policy's next window opens (unix seconds; 0 if disabled).",
    ),
];

/// The histograms' help texts.
const HISTOGRAM_HELP: &[Help] = &[(
    BATCH_DURATION,
    Some(metrics::Unit::Seconds),
    "Batch transaction time, BEGIN to COMMIT.",
)];

/// Registers help texts (shown by `/metrics`).
pub fn describe() {
    // The describe macros take the unit as a separate argument, hence one arm per presence.
    for &(name, unit, help) in COUNTER_HELP {
        match unit {
            Some(unit) => metrics::describe_counter!(name, unit, help),
            None => metrics::describe_counter!(name, help),
        }
    }
    for &(name, unit, help) in GAUGE_HELP {
        match unit {
            Some(unit) => metrics::describe_gauge!(name, unit, help),
            None => metrics::describe_gauge!(name, help),
        }
    }
    for &(name, unit, help) in HISTOGRAM_HELP {
        match unit {
            Some(unit) => metrics::describe_histogram!(name, unit, help),
            None => metrics::describe_histogram!(name, help),
        }
    }
}

/// Creates the per-policy series at zero (the scrape fills them from the ledger).
pub fn register_policies<'a>(policies: impl IntoIterator<Item = &'a str>) {
    for policy in policies {
        for gauge in policy_gauges() {
            metrics::gauge!(gauge, "policy" => policy.to_owned()).set(0.0);
        }
    }
}

/// A policy's runs as the ledger shows them, for its gauges.
#[derive(Debug, Clone, Default)]
pub struct PolicyStatus {
    /// When the newest finished run finished.
    pub last_run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows it removed.
    pub last_run_rows: i64,
    /// How long it took, in seconds.
    pub last_run_duration: Option<f64>,
    /// Whether it ended `done`.
    pub last_run_succeeded: bool,
    /// Whether it stopped at its cap with matching rows left.
    pub last_run_capped: bool,
    /// When the newest successful run finished.
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The schedule's period.
    pub interval: Option<Duration>,
    /// When the next window opens.
    pub next_run_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Sets one policy's gauges.
pub fn policy_status(policy: &str, status: &PolicyStatus) {
    let seconds = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or(0.0, |at| at.timestamp_millis() as f64 / 1e3)
    };
    let set = |name: &'static str, value: f64| {
        metrics::gauge!(name, "policy" => policy.to_owned()).set(value);
    };
    set(POLICY_LAST_RUN, seconds(status.last_run_at));
    set(POLICY_LAST_RUN_ROWS, status.last_run_rows as f64);
    set(
        POLICY_LAST_RUN_DURATION,
        status.last_run_duration.unwrap_or(0.0),
    );
    set(
        POLICY_LAST_RUN_SUCCESS,
        if status.last_run_succeeded { 1.0 } else { 0.0 },
    );
    set(
        POLICY_LAST_RUN_CAPPED,
        if status.last_run_capped { 1.0 } else { 0.0 },
    );
    set(POLICY_LAST_SUCCESS, seconds(status.last_success_at));
    set(
        POLICY_INTERVAL,
        status
            .interval
            .map_or(0.0, |interval| interval.as_secs_f64()),
    );
    set(POLICY_NEXT_RUN, seconds(status.next_run_at));
}

/// Creates every series at zero for the catalog's targets, so dashboards and alerts see a
/// metric before its first event (a counter that appears only on its first increment hides the
/// first increase from `rate()`).
pub fn register_targets<'a>(targets: impl IntoIterator<Item = &'a str>) {
    for target in targets {
        for mode in ["hard", "soft"] {
            metrics::counter!(ROWS_DELETED, "target" => target.to_owned(), "mode" => mode)
                .increment(0);
        }
        metrics::counter!(BATCHES, "target" => target.to_owned()).increment(0);
        let _ = metrics::histogram!(BATCH_DURATION, "target" => target.to_owned());
        for outcome in JobState::FINISHED {
            metrics::counter!(JOBS_FINISHED, "target" => target.to_owned(), "outcome" => outcome.as_str())
                .increment(0);
        }
        metrics::counter!(JOB_RETRIES, "target" => target.to_owned()).increment(0);
        metrics::gauge!(THROTTLE_PAUSED, "target" => target.to_owned(), "reason" => OPERATOR)
            .increment(0.0);
        metrics::gauge!(THROTTLE_RATE, "target" => target.to_owned()).increment(0.0);
        for reason in THROTTLE_REASONS {
            throttle_paused(target, reason, false);
        }
    }
    metrics::counter!(REDIS_RECONNECTS).increment(0);
    for source in SOURCES.iter().copied() {
        metrics::counter!(JOBS_ACCEPTED, "source" => source).increment(0);
        metrics::counter!(JOBS_REJECTED, "source" => source).increment(0);
    }
    for gauge in [
        JOBS_PENDING,
        JOBS_RUNNING,
        JOBS_PAUSED,
        QUEUE_DEPTH,
        WORKERS_ALIVE,
    ] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

/// One committed batch.
pub fn batch_committed(target: &str, mode: &'static str, rows: u64, elapsed: Duration) {
    metrics::counter!(ROWS_DELETED, "target" => target.to_owned(), "mode" => mode).increment(rows);
    metrics::counter!(BATCHES, "target" => target.to_owned()).increment(1);
    metrics::histogram!(BATCH_DURATION, "target" => target.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Creates the health signal gauges of `signals` (the configured ones) for every target, at
/// NaN until the first reading.
pub fn register_health_signals<'a>(
    targets: impl IntoIterator<Item = &'a str>,
    signals: &[&'static str],
) {
    for target in targets {
        for signal in signals {
            health_signal(target, signal, None);
        }
    }
}

/// Whether `target`'s batches are held for `reason` (any word: the health reasons of
/// [`THROTTLE_REASONS`], or another throttle's).
pub fn throttle_paused(target: &str, reason: &str, paused: bool) {
    metrics::gauge!(THROTTLE_PAUSED, "target" => target.to_owned(), "reason" => reason.to_owned())
        .set(if paused { 1.0 } else { 0.0 });
}

/// A health signal's reading for `target`'s jobs; `None`: unknown (NaN).
pub fn health_signal(target: &str, signal: &'static str, value: Option<f64>) {
    metrics::gauge!(HEALTH_SIGNAL, "target" => target.to_owned(), "signal" => signal)
        .set(value.unwrap_or(f64::NAN));
}

/// A job reached an end state ([`JobState::FINISHED`]).
pub fn job_finished(target: &str, outcome: JobState) {
    metrics::counter!(JOBS_FINISHED, "target" => target.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// A run failed transiently and the job will run again.
pub fn job_retried(target: &str) {
    metrics::counter!(JOB_RETRIES, "target" => target.to_owned()).increment(1);
}

/// The ledger's unfinished jobs by state (set at scrape time).
pub fn ledger_counts(counts: &crate::ledger::UnfinishedCounts) {
    metrics::gauge!(JOBS_PENDING).set(counts.pending as f64);
    metrics::gauge!(JOBS_RUNNING).set(counts.running as f64);
    metrics::gauge!(JOBS_PAUSED).set(counts.paused as f64);
}

/// A target's throttle state as the ledger's controls say (set at scrape time): paused by an
/// operator or not, and the rows-per-second cap in force.
pub fn throttle_state(target: &str, operator_paused: bool, max_rows_per_second: Option<u32>) {
    metrics::gauge!(THROTTLE_PAUSED, "target" => target.to_owned(), "reason" => OPERATOR)
        .set(if operator_paused { 1.0 } else { 0.0 });
    metrics::gauge!(THROTTLE_RATE, "target" => target.to_owned())
        .set(max_rows_per_second.map_or(0.0, f64::from));
}

/// Whether this scrape could read the ledger.
pub fn ledger_up(up: bool) {
    metrics::gauge!(LEDGER_UP).set(if up { 1.0 } else { 0.0 });
}

/// The sentinels named `address` as the Redis master, and this daemon connected to it.
pub fn redis_master(address: &str) {
    static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    if let Ok(mut last) = LAST.lock() {
        if let Some(previous) = last.replace(address.to_owned())
            && previous != address
        {
            metrics::gauge!(REDIS_MASTER, "address" => previous).set(0.0);
        }
        metrics::gauge!(REDIS_MASTER, "address" => address.to_owned()).set(1.0);
    }
}

/// A Redis connection was found lost; it reconnects (through Sentinel: the next command asks
/// the sentinels).
pub fn redis_reconnect() {
    metrics::counter!(REDIS_RECONNECTS).increment(1);
}

/// Messages waiting in the queue transport (set at scrape time).
pub fn queue_depth(depth: u64) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

/// This daemon's workers polling the queue: all of them, or none while they restart.
pub fn workers_alive(workers: u32) {
    metrics::gauge!(WORKERS_ALIVE).set(f64::from(workers));
}

/// A job request was accepted into the ledger (`created`) or refused as invalid.
pub fn job_submitted(source: &'static str, accepted: bool) {
    let name = if accepted {
        JOBS_ACCEPTED
    } else {
        JOBS_REJECTED
    };
    metrics::counter!(name, "source" => source).increment(1);
}
