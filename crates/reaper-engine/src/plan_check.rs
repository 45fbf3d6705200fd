//! The plan guard's look at the database: `EXPLAIN` of a fresh job's first batch and the size
//! estimates it is weighed against, per backend. The judgement is `reaper_core::plan_guard`'s;
//! this module only asks and reads.

use reaper_core::plan_guard::{self, Access, PlanReport};
use reaper_core::sql::{Backend, explain};
use reaper_core::strategy::{Strategy, StrategyChoice};
use reaper_core::validate::ValidatedJob;

use crate::batch;
use crate::database::Database;
use crate::error::EngineError;

/// Counts on SQLite and MySQL/MariaDB stop here: past it, every ratio the guard weighs is
/// already decided.
const COUNT_CAP: u64 = 10_000_000;

/// The guard's report on `job`'s first batch under `choice`.
pub async fn check(
    db: &Database,
    job: &ValidatedJob,
    choice: &StrategyChoice,
) -> Result<PlanReport, EngineError> {
    let backend = db.backend();
    let access = match choice.strategy {
        // Every heap block once, for the whole pass.
        Strategy::Physical => (
            Access::FilteredWalk,
            format!("physical order over {}", job.target.table),
        ),
        Strategy::Keyset => explain_access(db, job).await?,
    };
    // An index on the filter passes whatever the sizes, so they are asked for only when the
    // verdict needs them (on SQLite and MySQL/MariaDB they are counts; on PostgreSQL an
    // estimate already taken for the strategy is shown).
    if access.0 == Access::FilterIndex
        && (backend != Backend::Postgres || choice.estimate.is_none())
    {
        return Ok(plan_guard::judge_indexed(access.1));
    }
    let (matching_rows, table_rows) = match (backend, choice.estimate) {
        (Backend::Postgres, Some(estimate)) => (estimate.matching_rows, estimate.table_rows),
        (Backend::Postgres, None) => {
            let estimate = crate::physical::estimate(db, job).await?;
            (estimate.matching_rows, estimate.table_rows)
        }
        (Backend::Sqlite | Backend::MySql, _) => {
            let matching = batch::count_matching(db, job, Some(COUNT_CAP)).await?;
            (matching, table_rows(db, job).await?)
        }
    };
    Ok(plan_guard::judge(
        access,
        matching_rows,
        table_rows,
        job.batch_size,
        job.target.throttle.allow_slow_plan,
        explain::suggested_index(backend, job),
    ))
}

/// How the keyset batch's selection reads the table, from the backend's `EXPLAIN`.
async fn explain_access(
    db: &Database,
    job: &ValidatedJob,
) -> Result<(Access, String), EngineError> {
    let table = job.target.table.as_str();
    let rows = db
        .query_all(&explain::batch_selection(db.backend(), job))
        .await?;
    match db.backend() {
        Backend::Postgres => {
            let explained: serde_json::Value = match rows.first() {
                Some(row) => row.try_get_by_index(0)?,
                None => serde_json::Value::Null,
            };
            plan_guard::postgres_access(&explained, table).ok_or_else(|| {
                EngineError::Corrupt(format!("EXPLAIN shows no scan of {table}: {explained}"))
            })
        }
        Backend::Sqlite => {
            let details = rows
                .iter()
                .map(|row| row.try_get::<String>("", "detail"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(plan_guard::sqlite_access(&details, table))
        }
        Backend::MySql => {
            for row in &rows {
                if row.try_get::<Option<String>>("", "table")?.as_deref() == Some(table) {
                    let access_type: Option<String> = row.try_get("", "type")?;
                    let key: Option<String> = row.try_get("", "key")?;
                    return Ok(plan_guard::mysql_access(
                        access_type.as_deref().unwrap_or("ALL"),
                        key.as_deref(),
                        table,
                    ));
                }
            }
            Err(EngineError::Corrupt(format!(
                "EXPLAIN shows no access to {table}"
            )))
        }
    }
}

/// The table's rows as the guard weighs them (SQLite: counted up to [`COUNT_CAP`]).
async fn table_rows(db: &Database, job: &ValidatedJob) -> Result<u64, EngineError> {
    let rows = db
        .query_all(&explain::table_rows(db.backend(), &job.target, COUNT_CAP))
        .await?;
    let count: i64 = match rows.first() {
        Some(row) => row.try_get("", "table_rows")?,
        None => 0,
    };
    Ok(u64::try_from(count).unwrap_or(0))
}
