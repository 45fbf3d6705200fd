//! Throttling from the database's own health: which signals there are (replica lag, load, lock
//! waits reaper causes), their limits, and the verdict — go, pause the batches, or stop the job
//! for now — from one set of readings.
//!
//! Pure: the engine reads the signals, keeps the time and the state between readings, and
//! sleeps; this module only judges. A signal that could not be read (a replica unreachable, a
//! query that timed out) counts as exceeded: reaper never speeds up on what it cannot see.
//! Hysteresis keeps the verdict from flapping: a signal that went over its pause threshold holds
//! the batches until it falls to its resume level, which is lower.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// A health signal of the target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Seconds the slowest replica is behind (PostgreSQL: the replay timestamp against the
    /// clock, 0 when all received WAL is replayed; MySQL/MariaDB: `Seconds_Behind_Master`).
    ReplicaLag,
    /// Sessions doing work right now (PostgreSQL: active sessions of the database, reaper's own
    /// left out; MySQL/MariaDB: `Threads_running`).
    Load,
    /// Sessions waiting for a lock a reaper session holds.
    LockWaits,
}

impl Signal {
    /// Every signal, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::ReplicaLag, Signal::Load, Signal::LockWaits];

    /// The word in configuration keys, metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::ReplicaLag => "replica_lag",
            Signal::Load => "load",
            Signal::LockWaits => "lock_waits",
        }
    }

    /// A value of this signal as an operator reads it (`12.5s`, `8 sessions`).
    pub fn show(self, value: f64) -> String {
        match self {
            Signal::ReplicaLag => format!("{value:.1}s"),
            Signal::Load | Signal::LockWaits => format!("{value:.0} sessions"),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a target's batches are held: a signal over its threshold, or a signal that could not be
/// read. The words are the `reason` label of `reaper_throttle_paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The signal is over its pause threshold (or not yet back at its resume level).
    Over(Signal),
    /// A signal could not be read.
    Unknown,
}

impl Reason {
    /// Every reason a health verdict can give.
    pub const ALL: [Reason; 4] = [
        Reason::Over(Signal::ReplicaLag),
        Reason::Over(Signal::Load),
        Reason::Over(Signal::LockWaits),
        Reason::Unknown,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Over(signal) => signal.as_str(),
            Reason::Unknown => "unknown",
        }
    }
}

/// The limits of one signal, in its unit (seconds of lag, sessions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Above this, batches pause.
    pub pause_above: f64,
    /// Paused batches resume once the signal is at or below this (≤ `pause_above`).
    pub resume_below: f64,
    /// Above this, the job stops for now and goes back to the queue with its checkpoint.
    pub stop_above: Option<f64>,
}

impl Limits {
    /// Limits with the default resume level, [`DEFAULT_RESUME_SHARE`] of the pause threshold.
    pub fn new(pause_above: f64, stop_above: Option<f64>) -> Self {
        Self {
            pause_above,
            resume_below: pause_above * DEFAULT_RESUME_SHARE,
            stop_above,
        }
    }
}

/// A paused signal resumes at this share of its pause threshold unless `resume_below` says.
pub const DEFAULT_RESUME_SHARE: f64 = 0.8;

/// The configured signals of one database and how often to read them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    /// The limits of each configured signal; a signal not listed is not read.
    pub limits: BTreeMap<Signal, Limits>,
    /// Read the signals at most this often (readings are shared by every job of the process).
    pub sample_every: Duration,
    /// A job stopped at a critical level runs again after this long.
    pub stop_for: Duration,
}

impl Rules {
    /// No signal is configured: every verdict is go, and nothing is read.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// These rules under an operator's live `thresholds` ([`THRESHOLD_NAMES`], in the signal's
    /// unit): each may only make a configured signal stricter. A lower `pause_above` also lowers
    /// the resume level to its share of it; a `stop_above` lower than the configured one (or
    /// where none is configured) applies. A threshold for a signal the database's
    /// `[database.health]` does not read, or above the configured value, changes nothing.
    pub fn under(&self, thresholds: &BTreeMap<String, f64>) -> Rules {
        let mut rules = self.clone();
        for (name, &value) in thresholds {
            let Some((signal, level)) = name.split_once('.') else {
                continue;
            };
            let Some(limits) = Signal::ALL
                .iter()
                .find(|candidate| candidate.as_str() == signal)
                .and_then(|signal| rules.limits.get_mut(signal))
            else {
                continue;
            };
            match level {
                "pause_above" if value < limits.pause_above => {
                    limits.pause_above = value;
                    limits.resume_below = limits.resume_below.min(value * DEFAULT_RESUME_SHARE);
                }
                "stop_above" if limits.stop_above.is_none_or(|stop| value < stop) => {
                    limits.stop_above = Some(value);
                }
                _ => {}
            }
        }
        rules
    }
}

/// The live thresholds an operator may set on a target (`PATCH /v1/targets/{name}/throttle`,
/// `reaper target set --thresholds`): `<signal>.pause_above` and `<signal>.stop_above`, seconds
/// of lag or sessions ([`Rules::under`]).
pub const THRESHOLD_NAMES: &[&str] = &[
    "replica_lag.pause_above",
    "replica_lag.stop_above",
    "load.pause_above",
    "load.stop_above",
    "lock_waits.pause_above",
    "lock_waits.stop_above",
];

/// One signal's reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The value, in the signal's unit.
    Value(f64),
    /// It could not be read, and why (counts as exceeded).
    Unknown(String),
}

/// The verdict on the next batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Run it.
    Go,
    /// Wait and read again; the reasons (each at most once) and the words for the log.
    Pause {
        /// Why, for the metric.
        reasons: Vec<Reason>,
        /// Why, for people: `replica_lag 7.5s is over 5.0s`.
        why: String,
    },
    /// A signal is over its critical level: stop the job for now (resumably).
    Stop {
        /// What holds the batches (the critical signal among them), for the metric.
        reasons: Vec<Reason>,
        /// Why, for the job's last error and the log.
        why: String,
    },
}

/// The signals that paused and have not yet fallen to their resume level: the state between
/// two verdicts that makes them not flap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hysteresis {
    held: BTreeSet<Signal>,
}

impl Hysteresis {
    /// The verdict on `readings` under `rules`, remembering which signals hold the batches.
    /// A configured signal missing from `readings` counts as unknown. Stop wins over pause.
    pub fn judge(&mut self, rules: &Rules, readings: &BTreeMap<Signal, Reading>) -> Verdict {
        let mut reasons = BTreeSet::new();
        let mut words = Vec::new();
        let mut stops = Vec::new();
        for (&signal, limits) in &rules.limits {
            match readings.get(&signal) {
                Some(Reading::Value(value)) => {
                    let value = *value;
                    if let Some(stop) = limits.stop_above.filter(|stop| value > *stop) {
                        stops.push(format!(
                            "{signal} {} is over its critical level {}",
                            signal.show(value),
                            signal.show(stop)
                        ));
                    }
                    let over = value > limits.pause_above;
                    let still = self.held.contains(&signal) && value > limits.resume_below;
                    if over || still {
                        self.held.insert(signal);
                        reasons.insert(Reason::Over(signal));
                        words.push(if over {
                            format!(
                                "{signal} {} is over {}",
                                signal.show(value),
                                signal.show(limits.pause_above)
                            )
                        } else {
                            format!(
                                "{signal} {} is not yet back at {}",
                                signal.show(value),
                                signal.show(limits.resume_below)
                            )
                        });
                    } else {
                        self.held.remove(&signal);
                    }
                }
                unknown => {
                    let why = match unknown {
                        Some(Reading::Unknown(why)) => why.as_str(),
                        _ => "not read",
                    };
                    self.held.insert(signal);
                    reasons.insert(Reason::Unknown);
                    words.push(format!("{signal} is unknown ({why})"));
                }
            }
        }
        if !stops.is_empty() {
            Verdict::Stop {
                reasons: reasons.into_iter().collect(),
                why: format!("database health: {}", stops.join("; ")),
            }
        } else if reasons.is_empty() {
            Verdict::Go
        } else {
            Verdict::Pause {
                reasons: reasons.into_iter().collect(),
                why: format!("database health: {}", words.join("; ")),
            }
        }
    }
}

/// MySQL/MariaDB `SHOW REPLICA STATUS` as a lag reading: `Seconds_Behind_Master`, which the
/// server leaves NULL when a replication thread is not running (then the lag is unknown, and
/// the threads' states say why); no row at all means the server is no replica.
pub fn mysql_replica_lag(row: Option<(Option<i64>, Option<String>, Option<String>)>) -> Reading {
    match row {
        None => {
            Reading::Unknown("the server is not a replica (SHOW REPLICA STATUS is empty)".into())
        }
        Some((Some(seconds), _, _)) => Reading::Value(seconds.max(0) as f64),
        Some((None, io, sql)) => Reading::Unknown(format!(
            "replication is not running (Slave_IO_Running = {}, Slave_SQL_Running = {})",
            io.as_deref().unwrap_or("NULL"),
            sql.as_deref().unwrap_or("NULL")
        )),
    }
}

/// PostgreSQL's lag read on a replica (`sql::health::postgres_replica_lag`) as a reading:
/// NULL when the server is not in recovery, or when it has replayed no transaction since it
/// started while WAL waits for replay.
pub fn postgres_replica_lag(in_recovery: bool, lag_seconds: Option<f64>) -> Reading {
    match (in_recovery, lag_seconds) {
        (false, _) => Reading::Unknown("the server is not a replica (not in recovery)".into()),
        (true, Some(seconds)) => Reading::Value(seconds.max(0.0)),
        (true, None) => Reading::Unknown(
            "the replica has replayed no transaction since it started, and WAL waits for replay"
                .into(),
        ),
    }
}

/// The worst of several replicas' readings: any unknown makes the whole unknown (one replica
/// out of sight is one replica reaper cannot spare), else the largest lag.
pub fn worst_replica(readings: impl IntoIterator<Item = Reading>) -> Reading {
    let mut worst = Reading::Value(0.0);
    for reading in readings {
        worst = match (worst, reading) {
            (Reading::Unknown(why), _) | (_, Reading::Unknown(why)) => Reading::Unknown(why),
            (Reading::Value(a), Reading::Value(b)) => Reading::Value(a.max(b)),
        };
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_thresholds_only_make_configured_signals_stricter() {
        let rules = Rules {
            limits: BTreeMap::from([(Signal::Load, Limits::new(10.0, Some(40.0)))]),
            ..Rules::default()
        };
        let set = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), *value))
                .collect::<BTreeMap<_, _>>()
        };
        let stricter = rules.under(&set(&[("load.pause_above", 2.0), ("load.stop_above", 5.0)]));
        let load = stricter.limits[&Signal::Load];
        assert_eq!(
            (load.pause_above, load.resume_below, load.stop_above),
            (2.0, 1.6, Some(5.0))
        );
        // Looser values, and signals the database does not read, change nothing.
        let looser = rules.under(&set(&[
            ("load.pause_above", 20.0),
            ("load.stop_above", 90.0),
            ("replica_lag.pause_above", 1.0),
            ("load.resume_below", 0.5),
        ]));
        assert_eq!(looser, rules);
        // The stricter rules pause where the configured ones let the batch go.
        let readings = BTreeMap::from([(Signal::Load, Reading::Value(4.0))]);
        assert_eq!(Hysteresis::default().judge(&rules, &readings), Verdict::Go);
        assert!(matches!(
            Hysteresis::default().judge(&stricter, &readings),
            Verdict::Pause { .. }
        ));
    }

    fn rules() -> Rules {
        Rules {
            limits: BTreeMap::from([
                (Signal::ReplicaLag, Limits::new(5.0, Some(60.0))),
                (Signal::Load, Limits::new(10.0, None)),
            ]),
            sample_every: Duration::from_secs(1),
            stop_for: Duration::from_secs(30),
        }
    }

    fn readings(lag: Reading, load: f64) -> BTreeMap<Signal, Reading> {
        BTreeMap::from([
            (Signal::ReplicaLag, lag),
            (Signal::Load, Reading::Value(load)),
        ])
    }

    #[test]
    fn below_every_threshold_is_go_and_over_one_pauses_with_its_reason() {
        let mut state = Hysteresis::default();
        assert_eq!(
            state.judge(&rules(), &readings(Reading::Value(1.0), 3.0)),
            Verdict::Go
        );
        let verdict = state.judge(&rules(), &readings(Reading::Value(7.5), 3.0));
        assert_eq!(
            verdict,
            Verdict::Pause {
                reasons: vec![Reason::Over(Signal::ReplicaLag)],
                why: "database health: replica_lag 7.5s is over 5.0s".into()
            }
        );
    }

    #[test]
    fn a_paused_signal_resumes_only_at_its_resume_level() {
        let mut state = Hysteresis::default();
        let rules = rules();
        assert!(matches!(
            state.judge(&rules, &readings(Reading::Value(1.0), 11.0)),
            Verdict::Pause { .. }
        ));
        // 9 is under the threshold (10) but over the resume level (8): still paused.
        let verdict = state.judge(&rules, &readings(Reading::Value(1.0), 9.0));
        assert_eq!(
            verdict,
            Verdict::Pause {
                reasons: vec![Reason::Over(Signal::Load)],
                why: "database health: load 9 sessions is not yet back at 8 sessions".into()
            }
        );
        assert_eq!(
            state.judge(&rules, &readings(Reading::Value(1.0), 8.0)),
            Verdict::Go
        );
        // Back under: 9 alone no longer pauses.
        assert_eq!(
            state.judge(&rules, &readings(Reading::Value(1.0), 9.0)),
            Verdict::Go
        );
    }

    #[test]
    fn an_unknown_or_missing_signal_counts_as_exceeded() {
        let mut state = Hysteresis::default();
        let verdict = state.judge(
            &rules(),
            &readings(Reading::Unknown("connection refused".into()), 1.0),
        );
        assert_eq!(
            verdict,
            Verdict::Pause {
                reasons: vec![Reason::Unknown],
                why: "database health: replica_lag is unknown (connection refused)".into()
            }
        );
        let only_lag = BTreeMap::from([(Signal::ReplicaLag, Reading::Value(0.0))]);
        assert!(matches!(
            Hysteresis::default().judge(&rules(), &only_lag),
            Verdict::Pause { reasons, .. } if reasons == vec![Reason::Unknown]
        ));
        // Known again but over the resume level (4 of 5 × 0.8): still held.
        assert!(matches!(
            state.judge(&rules(), &readings(Reading::Value(4.5), 1.0)),
            Verdict::Pause { .. }
        ));
    }

    #[test]
    fn over_the_critical_level_stops_whatever_else_pauses() {
        let verdict = Hysteresis::default().judge(&rules(), &readings(Reading::Value(75.0), 20.0));
        assert_eq!(
            verdict,
            Verdict::Stop {
                reasons: vec![Reason::Over(Signal::ReplicaLag), Reason::Over(Signal::Load)],
                why: "database health: replica_lag 75.0s is over its critical level 60.0s".into()
            }
        );
    }

    #[test]
    fn no_rules_is_always_go() {
        assert_eq!(
            Hysteresis::default().judge(&Rules::default(), &BTreeMap::new()),
            Verdict::Go
        );
    }

    #[test]
    fn replica_readings_are_interpreted_per_backend_and_the_worst_counts() {
        assert_eq!(
            mysql_replica_lag(Some((Some(12), Some("Yes".into()), Some("Yes".into())))),
            Reading::Value(12.0)
        );
        assert_eq!(
            mysql_replica_lag(Some((None, Some("Yes".into()), Some("No".into())))),
            Reading::Unknown(
                "replication is not running (Slave_IO_Running = Yes, Slave_SQL_Running = No)"
                    .into()
            )
        );
        assert!(matches!(mysql_replica_lag(None), Reading::Unknown(_)));
        assert_eq!(postgres_replica_lag(true, Some(2.5)), Reading::Value(2.5));
        assert!(matches!(
            postgres_replica_lag(false, Some(0.0)),
            Reading::Unknown(_)
        ));
        assert!(matches!(
            postgres_replica_lag(true, None),
            Reading::Unknown(_)
        ));
        assert_eq!(
            worst_replica([Reading::Value(1.0), Reading::Value(3.0)]),
            Reading::Value(3.0)
        );
        assert!(matches!(
            worst_replica([Reading::Value(1.0), Reading::Unknown("down".into())]),
            Reading::Unknown(_)
        ));
    }
}
