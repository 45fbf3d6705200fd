//! Reading the database's health signals (`[database.health]`) and holding batches while they
//! are bad: the [`HealthGate`] every run asks before each batch, next to the pacer's wait.
//!
//! It owns the connections the reads go through (one lazy connection to the target database,
//! one per replica, apart from the batches' pool so a read never waits for a batch's
//! connection), the shared readings (one sample per `sample_every` for every job of the
//! process) and the state between verdicts. The verdict itself is `reaper_core::health`'s. A
//! read that fails or takes longer than [`READ_TIMEOUT`] is an unknown reading, which holds the
//! batches like an exceeded threshold. It records the throttle and signal gauges
//! ([`crate::instruments`]) per target as each run asks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reaper_core::config::DatabaseConfig;
use reaper_core::health::{self, Hysteresis, Reading, Reason, Rules, Signal, Verdict};
use reaper_core::sql::{self, Backend, Statement};
use sea_orm::QueryResult;

use crate::database::{Database, redact_url};
use crate::error::EngineError;

/// A signal not read within this long is unknown (a replica that does not answer).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The health signals of one target database, read at most once per `sample_every` and judged
/// with hysteresis. The default gate watches nothing and always says go.
#[derive(Debug, Default)]
pub struct HealthGate {
    rules: Rules,
    /// The target database (load, lock waits); `None` when neither is configured.
    primary: Option<Database>,
    /// Each replica, with its URL as logs may show it.
    replicas: Vec<(String, Database)>,
    sampled: tokio::sync::Mutex<Sampled>,
}

/// The last sample and the verdict on it.
#[derive(Debug, Default)]
struct Sampled {
    at: Option<Instant>,
    readings: BTreeMap<Signal, Reading>,
    hysteresis: Hysteresis,
    verdict: Option<Verdict>,
    /// The hysteresis of each target an operator gave live thresholds (judged on the shared
    /// readings under its own rules).
    stricter: BTreeMap<String, Hysteresis>,
}

impl HealthGate {
    /// The gate `config.health` describes, its connections opened lazily (an unreachable
    /// replica is an unknown reading, not a start-up failure); the default gate without it.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, EngineError> {
        let Some(health) = &config.health else {
            return Ok(Self::default());
        };
        let rules = health.rules();
        let primary = if rules.limits.contains_key(&Signal::Load)
            || rules.limits.contains_key(&Signal::LockWaits)
        {
            Some(Database::connect_lazily(&config.url, READ_TIMEOUT).await?)
        } else {
            None
        };
        let mut replicas = Vec::new();
        for url in health.replica_lag.iter().flat_map(|lag| &lag.replicas) {
            let replica = Database::connect_lazily(url, READ_TIMEOUT).await?;
            replicas.push((redact_url(url), replica));
        }
        Ok(Self {
            rules,
            primary,
            replicas,
            sampled: Default::default(),
        })
    }

    /// No signal is watched: every batch goes.
    pub fn is_off(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules it judges by.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The verdict on `target`'s next batch: from the shared sample, read again first when it
    /// is older than `sample_every`. Sets `target`'s throttle and signal gauges.
    pub async fn check(&self, target: &str) -> Verdict {
        self.check_under(target, &BTreeMap::new()).await
    }

    /// [`check`](Self::check) under an operator's live `thresholds` for `target`
    /// ([`Rules::under`]: only stricter than the configuration), judged on the same sample.
    pub async fn check_under(&self, target: &str, thresholds: &BTreeMap<String, f64>) -> Verdict {
        if self.is_off() {
            return Verdict::Go;
        }
        let mut sampled = self.sampled.lock().await;
        let stale = sampled
            .at
            .is_none_or(|at| at.elapsed() >= self.rules.sample_every);
        if stale {
            let readings = self.sample().await;
            let verdict = sampled.hysteresis.judge(&self.rules, &readings);
            *sampled = Sampled {
                at: Some(Instant::now()),
                readings,
                hysteresis: std::mem::take(&mut sampled.hysteresis),
                verdict: Some(verdict),
                stricter: std::mem::take(&mut sampled.stricter),
            };
        }
        let verdict = if thresholds.is_empty() {
            sampled.verdict.clone().unwrap_or(Verdict::Go)
        } else {
            let rules = self.rules.under(thresholds);
            let Sampled {
                readings, stricter, ..
            } = &mut *sampled;
            stricter
                .entry(target.to_owned())
                .or_default()
                .judge(&rules, readings)
        };
        record(target, &verdict, &sampled.readings);
        verdict
    }

    /// The readings of the last sample (none before the first).
    pub async fn last_readings(&self) -> BTreeMap<Signal, Reading> {
        self.sampled.lock().await.readings.clone()
    }

    /// The verdict on the last sample (none before the first).
    pub async fn last_verdict(&self) -> Option<Verdict> {
        self.sampled.lock().await.verdict.clone()
    }

    /// Reads every configured signal once.
    async fn sample(&self) -> BTreeMap<Signal, Reading> {
        let mut readings = BTreeMap::new();
        for &signal in self.rules.limits.keys() {
            let reading = match (signal, &self.primary) {
                (Signal::ReplicaLag, _) => {
                    let mut each = Vec::new();
                    for (url, replica) in &self.replicas {
                        each.push(match read_replica_lag(replica).await {
                            Reading::Unknown(why) => Reading::Unknown(format!("{url}: {why}")),
                            known => known,
                        });
                    }
                    health::worst_replica(each)
                }
                (Signal::Load, Some(primary)) => {
                    read_sessions(primary, sql::health::load(primary.backend())).await
                }
                (Signal::LockWaits, Some(primary)) => {
                    read_sessions(primary, sql::health::lock_waits(primary.backend())).await
                }
                (_, None) => Reading::Unknown("no connection to read it on".into()),
            };
            readings.insert(signal, reading);
        }
        readings
    }
}

/// Sets `target`'s gauges: paused per reason, and each signal's last value (NaN: unknown).
fn record(target: &str, verdict: &Verdict, readings: &BTreeMap<Signal, Reading>) {
    let held: &[Reason] = match verdict {
        Verdict::Go => &[],
        Verdict::Pause { reasons, .. } | Verdict::Stop { reasons, .. } => reasons,
    };
    for reason in Reason::ALL {
        crate::instruments::throttle_paused(target, reason.as_str(), held.contains(&reason));
    }
    for (signal, reading) in readings {
        let value = match reading {
            Reading::Value(value) => Some(*value),
            Reading::Unknown(_) => None,
        };
        crate::instruments::health_signal(target, signal.as_str(), value);
    }
}

/// Runs `statement` on `db` within [`READ_TIMEOUT`]; the error in words otherwise.
async fn read(db: &Database, statement: &Statement) -> Result<Vec<QueryResult>, String> {
    match tokio::time::timeout(READ_TIMEOUT, db.query_all(statement)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", READ_TIMEOUT.as_secs_f64())),
    }
}

/// One replica's lag, as its backend reports it.
async fn read_replica_lag(replica: &Database) -> Reading {
    let statement = match replica.backend() {
        Backend::MySql => sql::health::mysql_replica_status(),
        Backend::Postgres | Backend::Sqlite => sql::health::postgres_replica_lag(),
    };
    let rows = match read(replica, &statement).await {
        Ok(rows) => rows,
        Err(why) => return Reading::Unknown(why),
    };
    let row = rows.first();
    let decoded = match replica.backend() {
        Backend::MySql => row
            .map(|row| {
                Ok::<_, sea_orm::DbErr>((
                    integer(row, "Seconds_Behind_Master")?,
                    row.try_get::<Option<String>>("", "Slave_IO_Running")?,
                    row.try_get::<Option<String>>("", "Slave_SQL_Running")?,
                ))
            })
            .transpose()
            .map(health::mysql_replica_lag),
        Backend::Postgres | Backend::Sqlite => row
            .map(|row| {
                Ok::<_, sea_orm::DbErr>(health::postgres_replica_lag(
                    row.try_get("", "in_recovery")?,
                    row.try_get("", "lag_seconds")?,
                ))
            })
            .unwrap_or_else(|| Ok(Reading::Unknown("no row".into()))),
    };
    decoded.unwrap_or_else(|error| Reading::Unknown(format!("unreadable answer: {error}")))
}

/// A count of sessions: the `sessions` column, or MySQL's `SHOW GLOBAL STATUS` `Value` (less
/// the read itself, which is one of the running threads).
async fn read_sessions(db: &Database, statement: Statement) -> Reading {
    let rows = match read(db, &statement).await {
        Ok(rows) => rows,
        Err(why) => return Reading::Unknown(why),
    };
    let Some(row) = rows.first() else {
        return Reading::Unknown("no row".into());
    };
    let count = match row.try_get::<Option<String>>("", "Value") {
        Ok(Some(text)) => text
            .trim()
            .parse::<i64>()
            .map(|running| Some(running - 1))
            .map_err(|error| format!("`{text}`: {error}")),
        _ => integer(row, "sessions").map_err(|error| error.to_string()),
    };
    match count {
        Ok(Some(count)) => Reading::Value(count.max(0) as f64),
        Ok(None) => Reading::Unknown("NULL".into()),
        Err(why) => Reading::Unknown(format!("unreadable answer: {why}")),
    }
}

/// An integer column whatever its width or sign (server status columns differ by version).
fn integer(row: &QueryResult, column: &str) -> Result<Option<i64>, sea_orm::DbErr> {
    if let Ok(value) = row.try_get::<Option<i64>>("", column) {
        return Ok(value);
    }
    if let Ok(value) = row.try_get::<Option<u64>>("", column) {
        return Ok(value.map(|value| i64::try_from(value).unwrap_or(i64::MAX)));
    }
    let text: Option<String> = row.try_get("", column)?;
    text.map(|text| {
        text.trim()
            .parse::<i64>()
            .map_err(|error| sea_orm::DbErr::Custom(format!("{column} `{text}`: {error}")))
    })
    .transpose()
}
