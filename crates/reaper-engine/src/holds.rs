//! Legal holds in the target database: placing, listing and releasing them, and the read every
//! batch transaction makes first ([`read_active`]). What a hold means and when it takes effect
//! is [`reaper_core::holds`]'s; the statements are [`reaper_core::sql::holds`]'s.
//!
//! This module must not decide which rows a batch removes: the batch statements exclude what
//! [`read_active`] returns.

use chrono::{DateTime, Utc};
use reaper_core::catalog::{Catalog, Target};
use reaper_core::holds::{ActiveHolds, Hold, HoldRequest, compile, validate_hold};
use reaper_core::sql::{Backend, holds};
use sea_orm::ConnectionTrait;

use crate::database::{Database, query_all};
use crate::error::EngineError;
use crate::ledger::decode;

/// The holds active at `now` on `targets`, read inside the batch's transaction `conn` before
/// it selects any row. Any failure (the table unreadable, a hold that no longer applies) is an
/// error: the batch rolls back having removed nothing.
pub async fn read_active<C: ConnectionTrait>(
    conn: &C,
    backend: Backend,
    targets: &[&Target],
    now: DateTime<Utc>,
) -> Result<ActiveHolds, EngineError> {
    let names: Vec<&str> = targets.iter().map(|target| target.name.as_str()).collect();
    let rows = query_all(conn, backend, &holds::active_holds(backend, &names, now)).await?;
    let stored = rows
        .iter()
        .map(|row| decode(row, backend, holds::decode_hold))
        .collect::<Result<Vec<Hold>, _>>()?;
    Ok(compile(&stored, targets)?)
}

/// Places a hold (validated against `catalog`); it takes effect for every batch that begins
/// after this returns.
pub async fn place(
    db: &Database,
    catalog: &Catalog,
    request: &HoldRequest,
    now: DateTime<Utc>,
) -> Result<Hold, EngineError> {
    let hold = validate_hold(request, catalog, uuid::Uuid::new_v4().to_string(), now)?;
    db.execute(&holds::insert_hold(db.backend(), &hold)).await?;
    Ok(hold)
}

/// One hold by id.
pub async fn get(db: &Database, id: &str) -> Result<Option<Hold>, EngineError> {
    let rows = db.query_all(&holds::get_hold(db.backend(), id)).await?;
    rows.first()
        .map(|row| decode(row, db.backend(), holds::decode_hold))
        .transpose()
}

/// Holds, newest first: only the active ones when `active_at` is given.
pub async fn list(
    db: &Database,
    active_at: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<Hold>, EngineError> {
    let rows = db
        .query_all(&holds::list_holds(db.backend(), active_at, limit))
        .await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), holds::decode_hold))
        .collect()
}

/// Releases an active hold: `Some` with the released hold, `None` when no hold has that id.
/// Releasing a hold released already changes nothing and returns it as it is.
pub async fn release(
    db: &Database,
    id: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<Hold>, EngineError> {
    db.execute(&holds::release_hold(db.backend(), id, by, now))
        .await?;
    get(db, id).await
}
