//! Live control of targets in the target database: an operator's pause, resume, lowered
//! throttle and clear, each written with its history entry in one transaction; the reads every
//! daemon makes of them ([`list`]); and the booking of a capped target's shared rows-per-second
//! budget ([`book_budget`]). What a control means and whether a change is allowed is
//! [`reaper_core::controls`]'s; the statements are [`reaper_core::sql::controls`]'s.
//!
//! This module must not pace batches (that is [`crate::pacing`] and the runner); it stores and
//! reads.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reaper_core::catalog::Catalog;
use reaper_core::controls::{
    ControlAction, ControlChange, TargetControl, ThrottleOverride, ThrottlePatch, apply_patch,
    check_target,
};
use reaper_core::sql::{Backend, controls};
use reaper_core::validate::ValidationError;
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::database::{Database, execute, query_all, to_sea};
use crate::error::EngineError;
use crate::ledger::decode;

/// Every stored control (targets never changed have none).
pub async fn list(db: &Database) -> Result<Vec<TargetControl>, EngineError> {
    let rows = db.query_all(&controls::list_controls(db.backend())).await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), controls::decode_control))
        .collect()
}

/// One target's stored control, if it was ever changed.
pub async fn get(db: &Database, target: &str) -> Result<Option<TargetControl>, EngineError> {
    let rows = db
        .query_all(&controls::get_control(db.backend(), target, false))
        .await?;
    rows.first()
        .map(|row| decode(row, db.backend(), controls::decode_control))
        .transpose()
}

/// A target's recorded changes, newest first.
pub async fn changes(
    db: &Database,
    target: &str,
    limit: u32,
) -> Result<Vec<ControlChange>, EngineError> {
    let rows = db
        .query_all(&controls::changes_of_target(db.backend(), target, limit))
        .await?;
    rows.iter()
        .map(|row| decode(row, db.backend(), controls::decode_change))
        .collect()
}

/// Who changes a control, when and why.
#[derive(Debug, Clone, Copy)]
pub struct Changer<'a> {
    /// Recorded as `changed_by` and in the history.
    pub actor: &'a str,
    /// Recorded with the change.
    pub reason: Option<&'a str>,
    /// When.
    pub now: DateTime<Utc>,
}

/// Pauses `target`: every batch that starts after the daemons re-read the controls (within half
/// a second) waits until it is resumed.
pub async fn pause(
    db: &Database,
    catalog: &Catalog,
    target: &str,
    by: Changer<'_>,
) -> Result<TargetControl, EngineError> {
    change(db, catalog, target, ControlAction::Pause, by, |current| {
        Ok((true, current.overrides.clone()))
    })
    .await
}

/// Resumes `target`: its waiting batches start within half a second.
pub async fn resume(
    db: &Database,
    catalog: &Catalog,
    target: &str,
    by: Changer<'_>,
) -> Result<TargetControl, EngineError> {
    change(db, catalog, target, ControlAction::Resume, by, |current| {
        Ok((false, current.overrides.clone()))
    })
    .await
}

/// Applies `patch` to `target`'s override, validated against the catalog and the worker
/// `lease` (see [`apply_patch`]); refused input changes nothing.
pub async fn set(
    db: &Database,
    catalog: &Catalog,
    target: &str,
    patch: &ThrottlePatch,
    lease: Duration,
    by: Changer<'_>,
) -> Result<TargetControl, EngineError> {
    change(db, catalog, target, ControlAction::Set, by, |current| {
        let next = apply_patch(catalog, target, &current.overrides, patch, lease)?;
        Ok((current.paused, next))
    })
    .await
}

/// Clears `target`'s override: its configured throttle applies again (a pause stays).
pub async fn clear(
    db: &Database,
    catalog: &Catalog,
    target: &str,
    by: Changer<'_>,
) -> Result<TargetControl, EngineError> {
    change(db, catalog, target, ControlAction::Clear, by, |current| {
        Ok((current.paused, ThrottleOverride::default()))
    })
    .await
}

/// The read-modify-write of one change: the target's row created if need be and locked, `edit`
/// given the current control, the new one written with its history entry, in one transaction
/// (two operators changing one target at once take turns; neither change is lost).
async fn change(
    db: &Database,
    catalog: &Catalog,
    target: &str,
    action: ControlAction,
    by: Changer<'_>,
    edit: impl FnOnce(&TargetControl) -> Result<(bool, ThrottleOverride), ValidationError>,
) -> Result<TargetControl, EngineError> {
    check_target(catalog, target)?;
    let backend = db.backend();
    let txn = db.connection().begin().await?;
    execute(
        &txn,
        backend,
        &controls::ensure_control(backend, target, by.actor, by.now),
    )
    .await?;
    let rows = query_all(&txn, backend, &controls::get_control(backend, target, true)).await?;
    let current = rows
        .first()
        .map(|row| decode(row, backend, controls::decode_control))
        .transpose()?
        .ok_or_else(|| {
            EngineError::Corrupt(format!("the control row of target `{target}` vanished"))
        })?;
    let (paused, overrides) = match edit(&current) {
        Ok(next) => next,
        Err(invalid) => {
            txn.rollback().await?;
            return Err(invalid.into());
        }
    };
    let next = TargetControl {
        target: target.to_owned(),
        paused,
        overrides,
        changed_by: by.actor.to_owned(),
        changed_at: by.now,
        reason: by.reason.map(str::to_owned),
    };
    execute(&txn, backend, &controls::update_control(backend, &next)).await?;
    let after = serde_json::json!({ "paused": next.paused, "override": next.overrides });
    let entry = ControlChange {
        target: target.to_owned(),
        action: action.as_str().to_owned(),
        after,
        actor: by.actor.to_owned(),
        reason: next.reason.clone(),
        at: by.now,
    };
    execute(&txn, backend, &controls::insert_change(backend, &entry)).await?;
    txn.commit().await?;
    Ok(next)
}

/// Books `cost` µs of `target`'s shared budget after giving back `correction` (see
/// [`controls::book_budget`]); returns `free_in`, the line's new end minus the database's now.
/// One round trip, outside any transaction.
pub async fn book_budget(
    db: &Database,
    target: &str,
    cost: i64,
    correction: i64,
) -> Result<i64, EngineError> {
    let backend = db.backend();
    let statement = controls::book_budget(backend, target, cost, correction);
    match backend {
        Backend::MySql => {
            let result = db
                .connection()
                .execute_raw(to_sea(backend, &statement))
                .await?;
            Ok(i64::try_from(result.last_insert_id()).unwrap_or(i64::MAX))
        }
        Backend::Postgres | Backend::Sqlite => {
            let rows = db.query_all(&statement).await?;
            let row = rows
                .first()
                .ok_or_else(|| EngineError::Corrupt("the budget booking returned no row".into()))?;
            Ok(row.try_get::<i64>("", "free_in")?)
        }
    }
}
