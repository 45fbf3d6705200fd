//! The physical walk on PostgreSQL 14+: one batch over a range of heap blocks, and what the walk
//! asks the database first (server version, table size, the planner's estimate).
//!
//! The batch is the keyset batch's transaction with a `ctid` range for a selection
//! (`reaper_core::sql::physical::delete_range`): lease check, removal, audit row with every key,
//! checkpoint (a tuple position) and counters commit together or not at all. The pass around it
//! (spans, slices, the keyset sweep that ends it) is the runner's; the choice of walk is
//! `reaper_core::strategy`'s. This module must not decide either.

use std::time::{Duration, Instant};

use chrono::Utc;
use reaper_core::catalog::Target;
use reaper_core::holds::HeldRows;
use reaper_core::sql::physical::RowBound;
use reaper_core::sql::{Backend, RowLocking, Statement, physical, postgres};
use reaper_core::strategy::{self, Estimate, Tid};
use reaper_core::validate::ValidatedJob;
use sea_orm::DatabaseTransaction;

use crate::batch::{LeaseHolder, begin, end_transaction, report_context};
use crate::database::{Database, query_all};
use crate::error::{EngineError, database_code};
use crate::ledger::decode;

/// What one physical batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeResult {
    /// Committed.
    Committed {
        /// Rows deleted or soft-deleted.
        rows: u64,
        /// Matching tuples the range's selection held (at most the limit).
        selected: u64,
        /// The new checkpoint: the last tuple position covered.
        next: Tid,
        /// BEGIN to COMMIT.
        elapsed: Duration,
    },
    /// The lease check refused it (cancel requested, or the lease is lost); nothing changed.
    Refused,
}

/// True when the server plans TID range scans (PostgreSQL 14+).
pub async fn available(db: &Database) -> Result<bool, EngineError> {
    if db.backend() != Backend::Postgres {
        return Ok(false);
    }
    if let Some(known) = db.physical_order().get() {
        return Ok(*known);
    }
    let rows = db.query_all(&physical::server_version()).await?;
    let version: i64 = match rows.first() {
        Some(row) => row.try_get("", "version")?,
        None => 0,
    };
    let available = version >= physical::MIN_SERVER_VERSION;
    // Two jobs asking at once store the same answer.
    let _ = db.physical_order().set(available);
    Ok(available)
}

/// The table's heap blocks and its statistics' row count, now.
pub async fn table_size(db: &Database, target: &Target) -> Result<(u64, u64), EngineError> {
    let rows = db.query_all(&physical::table_size(target)).await?;
    let row = rows.first().ok_or_else(|| {
        EngineError::Corrupt(format!(
            "table {} of target {} is not visible to reaper's connection",
            target.table, target.name
        ))
    })?;
    let blocks: i64 = row.try_get("", "blocks")?;
    let estimated_rows: i64 = row.try_get("", "estimated_rows")?;
    Ok((
        u64::try_from(blocks).unwrap_or(0),
        u64::try_from(estimated_rows).unwrap_or(0),
    ))
}

/// The planner's estimate of the rows the job's filter matches, against the table's size.
pub async fn estimate(db: &Database, job: &ValidatedJob) -> Result<Estimate, EngineError> {
    let rows = db.query_all(&physical::estimate_matching(job)).await?;
    let explained: serde_json::Value = match rows.first() {
        Some(row) => row.try_get_by_index(0)?,
        None => serde_json::Value::Null,
    };
    let matching_rows = strategy::postgres_plan_rows(&explained).ok_or_else(|| {
        EngineError::Corrupt(format!(
            "choosing the walk for `{}`: PostgreSQL's EXPLAIN gave no row estimate for the job's \
             filter; set strategy = \"keyset\" on the target (or the job) to skip the estimate. \
             The plan: {explained}",
            job.target.name
        ))
    })?;
    let (_, table_rows) = table_size(db, &job.target).await?;
    Ok(Estimate {
        matching_rows,
        table_rows,
    })
}

/// Runs one physical batch over the tuples after `after` and before `end`, at most `limit` rows.
/// It first removes the range in one scan ([`RowBound::Guarded`]); a range that held more
/// than `limit` matching tuples fails that statement (nothing removed) and reruns selecting the
/// first `limit` ([`RowBound::Selected`]). With [`RowLocking::Direct`], a tuple held by another
/// transaction past `lock_timeout` rolls the attempt back and the batch reruns with `SKIP
/// LOCKED`; the second value says which ran. A skipped tuple is the keyset sweep's.
pub async fn run_range_batch(
    db: &Database,
    job: &ValidatedJob,
    range: (Tid, Tid),
    limit: u32,
    holder: LeaseHolder<'_>,
    locking: RowLocking,
) -> Result<(RangeResult, RowLocking), EngineError> {
    let attempt = |locking, bound| {
        let now = Utc::now();
        run_range_transaction(db, job, now, move |held: &[HeldRows]| {
            // The physical pass is the job's first over its rows: it counts the held ones.
            let context = holder.batch_context(now, locking, (held, true));
            physical::delete_range(job, range, limit, bound, &context)
        })
    };
    let mut result = attempt(locking, RowBound::Guarded).await;
    if matches!(&result, Err(error) if over_limit(error)) {
        tracing::debug!(
            message = "A block range held more matching rows than a batch takes; selecting them.",
            limit
        );
        result = attempt(locking, RowBound::Selected).await;
    }
    match result {
        Err(EngineError::Database { error, .. })
            if locking == RowLocking::Direct
                && database_code(&error).as_deref() == Some("55P03") =>
        {
            tracing::debug!(
                message = "Rows are locked by other transactions; the sweep will take them."
            );
            Ok((
                attempt(RowLocking::SkipLocked, RowBound::Selected).await?,
                RowLocking::SkipLocked,
            ))
        }
        other => Ok((other?, locking)),
    }
}

/// The failure a [`RowBound::Guarded`] batch raises over its limit (rolled back, nothing
/// removed): SQLSTATE 22P02 with [`physical::OVER_LIMIT_MARK`] in its message.
fn over_limit(error: &EngineError) -> bool {
    match error {
        EngineError::Database { error, .. } => {
            database_code(error).as_deref() == Some("22P02")
                && error.to_string().contains(physical::OVER_LIMIT_MARK)
        }
        _ => false,
    }
}

/// One attempt at a physical batch (`statement`, from [`physical::delete_range`] given the
/// legal holds active on the target, read first in the transaction), in its own transaction:
/// committed, refused (rolled back) or failed (rolled back, also when the holds are unreadable).
async fn run_range_transaction(
    db: &Database,
    job: &ValidatedJob,
    now: chrono::DateTime<Utc>,
    statement: impl FnOnce(&[HeldRows]) -> Statement,
) -> Result<RangeResult, EngineError> {
    let started = Instant::now();
    let txn = begin(db).await?;
    let written =
        match crate::holds::read_active(&txn, Backend::Postgres, &[&job.target], now).await {
            Ok(active) => write_range(&txn, &statement(active.on(&job.target.name))).await,
            Err(error) => Err(error),
        };
    Ok(
        match end_transaction(txn, written, Option::is_some).await? {
            Some((rows, selected, next)) => RangeResult::Committed {
                rows,
                selected,
                next,
                elapsed: started.elapsed(),
            },
            None => RangeResult::Refused,
        },
    )
}

/// `(rows, selected, next)`, or `None` when the lease check refused the batch.
async fn write_range(
    txn: &DatabaseTransaction,
    statement: &Statement,
) -> Result<Option<(u64, u64, Tid)>, EngineError> {
    let rows = query_all(txn, Backend::Postgres, statement).await?;
    let row = rows.first().ok_or_else(|| {
        EngineError::Corrupt("the physical batch statement returned no summary row".into())
    })?;
    let summary = decode(row, Backend::Postgres, postgres::BatchSummary::decode)?;
    // Tests crash here, after the statement and before COMMIT.
    fail::fail_point!("physical::before_commit", |_| Err(EngineError::Injected(
        "physical::before_commit"
    )));
    if !summary.lease_held {
        return Ok(None);
    }
    let next = summary
        .window_end
        .as_deref()
        .and_then(Tid::parse_sql_text)
        .ok_or_else(|| {
            EngineError::Corrupt(format!(
                "a physical-order batch reported no block position to resume from ({:?}); \
                 nothing of it was committed. Set strategy = \"keyset\" on the target to walk \
                 by key instead",
                summary.window_end
            ))
        })?;
    Ok(Some((summary.row_count, summary.selected, next)))
}

/// The statements of a physical job, rendered for a dry-run report: one physical batch (lease
/// values are placeholders, bound per batch when the job runs), then the keyset sweep's batch
/// (`keyset`, as the keyset report renders it).
pub fn describe(job: &ValidatedJob, keyset: &str, now: chrono::DateTime<Utc>) -> String {
    let context = report_context(now);
    let first = physical::delete_range(
        job,
        (Tid::START, Tid::block_start(strategy::FIRST_BLOCK_SPAN)),
        job.batch_size,
        RowBound::Guarded,
        &context,
    );
    format!(
        "-- physical pass: batches over heap-block ranges, from the first block to the last\n\
         {first};\n-- then the keyset sweep over the filter:\n{keyset}"
    )
}
