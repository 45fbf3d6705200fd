//! Statements of live target control ([`crate::controls`]): the operator's control per target
//! (`reaper_target_controls`), its history (`reaper_target_control_changes`), and the shared
//! rows-per-second budget every batch of a capped target books (`reaper_target_budgets`).
//!
//! This module must not decide what a control means (that is [`crate::controls`]) nor compute a
//! wait (that is [`crate::throttle`]); it only writes the statements. Per-backend differences:
//! MySQL has no `ON CONFLICT` (it has `ON DUPLICATE KEY`) and no `RETURNING` (the budget's
//! booking reports its result through `LAST_INSERT_ID(expr)`, which the server sends back in the
//! statement's OK packet); SQLite has no `FOR UPDATE` (its writer lock serialises instead) and
//! no `GREATEST` (its two-argument `max` is the same).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::controls::{ControlChange, TargetControl, ThrottleOverride};
use crate::sql::rows::{Row, required};
use crate::sql::{Backend, SqlWriter, Statement};
use crate::value::SqlValue;

/// Columns every control read returns ([`decode_control`] reads them by name).
pub const CONTROL_COLUMNS: &str = "target, paused, max_rows_per_second, max_batch_size, \
     min_batch_size, target_batch_duration_ms, thresholds, reason, changed_by, changed_at";

/// Columns every history read returns ([`decode_change`] reads them by name).
pub const CHANGE_COLUMNS: &str = "target, action, detail, actor, reason, created_at";

fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.to_owned())
}

/// Creates the target's control row (not paused, nothing overridden) unless it exists, so the
/// change that follows in the same transaction has a row to lock. On SQLite this first write
/// takes the database's write lock, so the read-modify-write after it is serialised too.
/// Expected plan: a single-row insert plus the primary-key check.
pub fn ensure_control(
    backend: Backend,
    target: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_target_controls (target, paused, changed_by, changed_at) VALUES (")
        .param(text(target))
        .push(", ")
        .param(SqlValue::Bool(false))
        .push(", ")
        .param(text(actor))
        .push(", ")
        .param(SqlValue::Timestamp(now))
        .push(")");
    match backend {
        Backend::MySql => w.push(" ON DUPLICATE KEY UPDATE target = target"),
        Backend::Postgres | Backend::Sqlite => w.push(" ON CONFLICT (target) DO NOTHING"),
    };
    w.finish()
}

/// One target's control; with `for_update` locked until the transaction ends (PostgreSQL and
/// MySQL; SQLite's writer lock, taken by [`ensure_control`], serialises instead). Expected plan:
/// the primary key.
pub fn get_control(backend: Backend, target: &str, for_update: bool) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(CONTROL_COLUMNS)
        .push(" FROM reaper_target_controls WHERE target = ")
        .param(text(target));
    if for_update && backend != Backend::Sqlite {
        w.push(" FOR UPDATE");
    }
    w.finish()
}

/// Every target's control: what each daemon re-reads at most every half second. Expected plan:
/// a scan of a table of one row per catalog target (a handful).
pub fn list_controls(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(CONTROL_COLUMNS)
        .push(" FROM reaper_target_controls ORDER BY target");
    w.finish()
}

/// Writes the whole control of `control.target` (its row exists: [`ensure_control`]). Expected
/// plan: the primary key.
pub fn update_control(backend: Backend, control: &TargetControl) -> Statement {
    let o = &control.overrides;
    let number = |value: Option<u32>| value.map(|value| SqlValue::Int(i64::from(value)));
    let thresholds = o
        .thresholds
        .as_ref()
        .and_then(|map| serde_json::to_string(map).ok())
        .map(SqlValue::Text);
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_target_controls SET paused = ")
        .param(SqlValue::Bool(control.paused));
    for (column, value) in [
        (", max_rows_per_second = ", number(o.max_rows_per_second)),
        (", max_batch_size = ", number(o.max_batch_size)),
        (", min_batch_size = ", number(o.min_batch_size)),
        (
            ", target_batch_duration_ms = ",
            number(o.target_batch_duration_ms),
        ),
        (", thresholds = ", thresholds),
        (", reason = ", control.reason.as_deref().map(text)),
    ] {
        w.push(column);
        match value {
            Some(value) => w.param(value),
            None => w.push("NULL"),
        };
    }
    w.push(", changed_by = ")
        .param(text(&control.changed_by))
        .push(", changed_at = ")
        .param(SqlValue::Timestamp(control.changed_at))
        .push(" WHERE target = ")
        .param(text(&control.target));
    w.finish()
}

/// Records one change in the target's history, in the transaction that made it. Expected plan:
/// a single-row insert.
pub fn insert_change(backend: Backend, change: &ControlChange) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_target_control_changes (target, action, detail, actor, reason, created_at) VALUES (")
        .param(text(&change.target))
        .push(", ")
        .param(text(&change.action))
        .push(", ")
        .param(SqlValue::Text(change.after.to_string()))
        .push(", ")
        .param(text(&change.actor))
        .push(", ");
    match &change.reason {
        Some(reason) => w.param(text(reason)),
        None => w.push("NULL"),
    };
    w.push(", ").param(SqlValue::Timestamp(change.at)).push(")");
    w.finish()
}

/// A target's recorded changes, newest first. Expected plan: the `(target, id)` index backwards,
/// stopping at LIMIT.
pub fn changes_of_target(backend: Backend, target: &str, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(CHANGE_COLUMNS)
        .push(" FROM reaper_target_control_changes WHERE target = ")
        .param(text(target))
        .push(" ORDER BY id DESC LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// The database's clock, in microseconds since the epoch, constant within the statement
/// (PostgreSQL's statement timestamp, MySQL's `NOW(6)`, SQLite's `'now'` within one step).
fn write_now_micros(w: &mut SqlWriter) {
    w.push(match w.backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000 AS BIGINT)",
        Backend::MySql => "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    });
}

/// Books `cost` microseconds of target `target`'s shared rows-per-second budget, giving back
/// `correction` (zero or negative: the unused part of this process's previous booking) first:
/// `free_at = max(free_at + correction, now) + cost` ([`crate::throttle::advance`]) on the
/// database's clock, creating the target's row on its first booking. One statement, outside any
/// batch transaction: its row lock lasts the statement, so daemons booking at once queue on it
/// for microseconds, never for a batch.
///
/// Returns `free_in`, the line's new end minus the database's `now` (µs): PostgreSQL and SQLite
/// as the column `free_in` (`RETURNING`); MySQL/MariaDB as the statement's last insert id (the
/// update sets `free_at` to `LAST_INSERT_ID(free_in) + now`, and the server reports that
/// argument in the OK packet; the insert of a first booking reports `cost`). Expected plan: a
/// primary-key probe and a single-row write.
pub fn book_budget(backend: Backend, target: &str, cost: i64, correction: i64) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_target_budgets (target, free_at) VALUES (")
        .param(text(target))
        .push(", ");
    match backend {
        Backend::MySql => {
            w.push("LAST_INSERT_ID(")
                .param(SqlValue::Int(cost))
                .push(") + ");
            write_now_micros(&mut w);
            w.push(") ON DUPLICATE KEY UPDATE free_at = LAST_INSERT_ID(GREATEST(free_at + ")
                .param(SqlValue::Int(correction))
                .push(", ");
            write_now_micros(&mut w);
            w.push(") + ").param(SqlValue::Int(cost)).push(" - ");
            write_now_micros(&mut w);
            w.push(") + ");
            write_now_micros(&mut w);
        }
        Backend::Postgres | Backend::Sqlite => {
            write_now_micros(&mut w);
            w.push(" + ")
                .param(SqlValue::Int(cost))
                .push(") ON CONFLICT (target) DO UPDATE SET free_at = ")
                .push(if backend == Backend::Postgres {
                    "GREATEST("
                } else {
                    "max("
                })
                .push("reaper_target_budgets.free_at + ")
                .param(SqlValue::Int(correction))
                .push(", ");
            write_now_micros(&mut w);
            w.push(") + ")
                .param(SqlValue::Int(cost))
                .push(" RETURNING free_at - ");
            write_now_micros(&mut w);
            w.push(" AS free_in");
        }
    }
    w.finish()
}

/// Reads one row of [`CONTROL_COLUMNS`].
pub fn decode_control<R: Row>(row: &R) -> Result<TargetControl, R::Error> {
    let number = |column: &'static str| -> Result<Option<u32>, R::Error> {
        row.int(column)?
            .map(|value| {
                u32::try_from(value)
                    .map_err(|_| R::corrupt(column, format!("{value} is out of range")))
            })
            .transpose()
    };
    let thresholds = row
        .text("thresholds")?
        .map(|text| {
            serde_json::from_str::<BTreeMap<String, f64>>(&text)
                .map_err(|error| R::corrupt("thresholds", error.to_string()))
        })
        .transpose()?;
    Ok(TargetControl {
        target: required(row, "target", R::text)?,
        paused: required(row, "paused", R::flag)?,
        overrides: ThrottleOverride {
            max_rows_per_second: number("max_rows_per_second")?,
            max_batch_size: number("max_batch_size")?,
            min_batch_size: number("min_batch_size")?,
            target_batch_duration_ms: number("target_batch_duration_ms")?,
            thresholds,
        },
        changed_by: required(row, "changed_by", R::text)?,
        changed_at: required(row, "changed_at", R::time)?,
        reason: row.text("reason")?,
    })
}

/// Reads one row of [`CHANGE_COLUMNS`].
pub fn decode_change<R: Row>(row: &R) -> Result<ControlChange, R::Error> {
    let detail = required(row, "detail", R::text)?;
    Ok(ControlChange {
        target: required(row, "target", R::text)?,
        action: required(row, "action", R::text)?,
        after: serde_json::from_str(&detail)
            .map_err(|error| R::corrupt("detail", error.to_string()))?,
        actor: required(row, "actor", R::text)?,
        reason: row.text("reason")?,
        at: required(row, "created_at", R::time)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_booking_is_one_statement_per_backend() {
        let pg = book_budget(Backend::Postgres, "events", 500, -100);
        assert!(pg.sql().contains("ON CONFLICT (target) DO UPDATE SET free_at = GREATEST(reaper_target_budgets.free_at + $3"), "{pg}");
        assert!(pg.sql().ends_with("AS free_in"), "{pg}");
        let lite = book_budget(Backend::Sqlite, "events", 500, -100);
        assert!(
            lite.sql().contains("max(reaper_target_budgets.free_at + ?"),
            "{lite}"
        );
        let my = book_budget(Backend::MySql, "events", 500, -100);
        assert!(
            my.sql()
                .contains("ON DUPLICATE KEY UPDATE free_at = LAST_INSERT_ID(GREATEST(free_at + ?"),
            "{my}"
        );
        assert!(!my.sql().contains("RETURNING"), "{my}");
        assert_eq!(my.params().len(), 4);
    }

    #[test]
    fn only_servers_with_row_locks_lock_the_control() {
        assert!(
            get_control(Backend::Postgres, "t", true)
                .sql()
                .ends_with("FOR UPDATE")
        );
        assert!(
            get_control(Backend::MySql, "t", true)
                .sql()
                .ends_with("FOR UPDATE")
        );
        assert!(
            !get_control(Backend::Sqlite, "t", true)
                .sql()
                .contains("FOR UPDATE")
        );
        assert!(
            !get_control(Backend::Postgres, "t", false)
                .sql()
                .contains("FOR UPDATE")
        );
    }
}
