//! Statements of legal holds ([`crate::holds`]): placing, listing and releasing them in
//! `reaper_holds`, the read every batch makes first inside its transaction
//! ([`active_holds`]), and the held-row condition ([`write_held`]) the batch statements of
//! every backend and path write to leave held rows in place and count them.
//!
//! This module must not decide what a hold means (that is [`crate::holds`]); it only writes it.

use chrono::{DateTime, Utc};

use crate::catalog::Target;
use crate::holds::{HeldRows, Hold};
use crate::sql::rows::{Row, required};
use crate::sql::{Backend, SqlWriter, Statement, select_keys, write_predicates};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// Columns every hold read returns ([`decode_hold`] reads them by name).
pub const HOLD_COLUMNS: &str = "id, target, held_keys, held_filter, reason, placed_by, placed_at, expires_at, released_at, released_by";

/// `INSERT INTO reaper_holds …`: the hold takes effect for every batch transaction that begins
/// after this statement's transaction commits. Expected plan: a single-row insert.
pub fn insert_hold(backend: Backend, hold: &Hold) -> Statement {
    let keys = hold
        .keys
        .as_ref()
        .and_then(|keys| serde_json::to_string(keys).ok());
    let filter = hold
        .filter
        .as_ref()
        .and_then(|filter| serde_json::to_string(filter).ok());
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_holds (id, target, held_keys, held_filter, reason, placed_by, placed_at, expires_at) VALUES (")
        .param(SqlValue::Text(hold.id.clone()))
        .push(", ")
        .param(SqlValue::Text(hold.target.clone()))
        .push(", ");
    optional_text(&mut w, keys);
    w.push(", ");
    optional_text(&mut w, filter);
    w.push(", ")
        .param(SqlValue::Text(hold.reason.clone()))
        .push(", ")
        .param(SqlValue::Text(hold.placed_by.clone()))
        .push(", ")
        .param(SqlValue::Timestamp(hold.placed_at))
        .push(", ");
    match hold.expires_at {
        Some(at) => w.param(SqlValue::Timestamp(at)),
        None => w.push("NULL"),
    };
    w.push(")");
    w.finish()
}

fn optional_text(w: &mut SqlWriter, text: Option<String>) {
    match text {
        Some(text) => w.param(SqlValue::Text(text)),
        None => w.push("NULL"),
    };
}

/// One hold by id. Expected plan: the primary key.
pub fn get_hold(backend: Backend, id: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(HOLD_COLUMNS)
        .push(" FROM reaper_holds WHERE id = ")
        .param(SqlValue::Text(id.to_owned()));
    w.finish()
}

/// Every hold, newest first; only those active at `now` when `active_at` is given. Expected
/// plan: a scan of `reaper_holds` (a handful of rows; holds are placed by people).
pub fn list_holds(backend: Backend, active_at: Option<DateTime<Utc>>, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(HOLD_COLUMNS)
        .push(" FROM reaper_holds");
    if let Some(now) = active_at {
        w.push(" WHERE ");
        write_active(&mut w, now);
    }
    w.push(" ORDER BY placed_at DESC, id LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// `released_at IS NULL AND (expires_at IS NULL OR expires_at > $now)`
fn write_active(w: &mut SqlWriter, now: DateTime<Utc>) {
    w.push("released_at IS NULL AND (expires_at IS NULL OR expires_at > ")
        .param(SqlValue::Timestamp(now))
        .push(")");
}

/// Releases an active hold: `UPDATE reaper_holds SET released_at, released_by WHERE id = $ AND
/// released_at IS NULL` (0 rows: unknown or released already). Takes effect for every batch
/// transaction that begins after it commits. Expected plan: the primary key.
pub fn release_hold(backend: Backend, id: &str, by: &str, now: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_holds SET released_at = ")
        .param(SqlValue::Timestamp(now))
        .push(", released_by = ")
        .param(SqlValue::Text(by.to_owned()))
        .push(" WHERE id = ")
        .param(SqlValue::Text(id.to_owned()))
        .push(" AND released_at IS NULL");
    w.finish()
}

/// The holds active at `now` on any of `targets`: the first statement of every batch
/// transaction. Expected plan: the `(target, released_at)` index.
pub fn active_holds(backend: Backend, targets: &[&str], now: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(HOLD_COLUMNS)
        .push(" FROM reaper_holds WHERE target IN (");
    for (index, target) in targets.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(SqlValue::Text((*target).to_owned()));
    }
    w.push(") AND ");
    write_active(&mut w, now);
    w.finish()
}

/// Reads one row of [`HOLD_COLUMNS`].
pub fn decode_hold<R: Row>(row: &R) -> Result<Hold, R::Error> {
    let id = required(row, "id", R::text)?;
    let target = required(row, "target", R::text)?;
    let keys = row.text("held_keys")?;
    let filter = row.text("held_filter")?;
    let reason = required(row, "reason", R::text)?;
    let placed_by = required(row, "placed_by", R::text)?;
    let placed_at = required(row, "placed_at", R::time)?;
    let expires_at = row.time("expires_at")?;
    let released_at = row.time("released_at")?;
    let released_by = row.text("released_by")?;
    Ok(Hold {
        id,
        target,
        keys: json_column::<R, _>("held_keys", keys)?,
        filter: json_column::<R, _>("held_filter", filter)?,
        reason,
        placed_by,
        placed_at,
        expires_at,
        released_at,
        released_by,
    })
}

fn json_column<R: Row, T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: Option<String>,
) -> Result<Option<T>, R::Error> {
    text.map(|text| {
        serde_json::from_str(&text).map_err(|error| R::corrupt(column, error.to_string()))
    })
    .transpose()
}

/// `((<hold 1's predicates>) IS TRUE OR pk IN (<hold 2's keys>) …)`: true exactly for the rows
/// of `target` an active hold covers, never NULL (a predicate on a NULL column holds nothing).
/// `FALSE` when `held` is empty. Columns are unqualified: the statement's table.
pub(crate) fn write_held(w: &mut SqlWriter, target: &Target, held: &[HeldRows]) {
    if held.is_empty() {
        w.push("FALSE");
        return;
    }
    w.push("(");
    for (index, rows) in held.iter().enumerate() {
        if index > 0 {
            w.push(" OR ");
        }
        match rows {
            HeldRows::Keys(keys) => super::graph::write_key_list(w, target, keys),
            HeldRows::Filter(predicates) => {
                w.push("(");
                write_predicates(w, predicates);
                w.push(") IS TRUE");
            }
        }
    }
    w.push(")");
}

/// `SELECT pk, CASE WHEN <held> THEN 1 ELSE 0 END AS reaper_held FROM t WHERE pk > $after AND
/// (<filter>) ORDER BY pk LIMIT $n`: a batch's key window with each key's hold, for the
/// SQLite and MySQL batches while a hold is active on the target (MySQL appends its lock
/// clause). Expected plan: as [`select_keys`]'s, an index scan on the primary key from
/// `after`.
pub fn select_window(
    backend: Backend,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    held: &[HeldRows],
) -> Statement {
    if held.is_empty() {
        return select_keys(backend, job, after, limit);
    }
    let target = &job.target;
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ");
    crate::sql::write_key_projection(&mut w, target);
    w.push(", CASE WHEN ");
    write_held(&mut w, target, held);
    w.push(" THEN 1 ELSE 0 END AS reaper_held FROM ")
        .table(target)
        .push(" WHERE ");
    crate::sql::write_keyset_and_filter(&mut w, job, after);
    w.push(" ORDER BY ")
        .ident(&target.primary_key)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::rows::tests::{Recording, names};
    use crate::sql::test_support::job;
    use crate::validate::{Comparison, Predicate};

    #[test]
    fn the_hold_decoder_reads_exactly_its_columns() {
        let row = Recording::default();
        // The recorded row's text is not JSON: the decoder reads every column, then refuses.
        assert!(decode_hold(&row).is_err());
        assert_eq!(row.read.into_inner(), names(HOLD_COLUMNS));
    }

    fn held() -> Vec<HeldRows> {
        vec![
            HeldRows::Keys(vec![KeyValue::Int(3), KeyValue::Int(5)]),
            HeldRows::Filter(vec![Predicate::Compare {
                column: "tenant_id".into(),
                op: Comparison::Eq,
                value: SqlValue::Int(7),
            }]),
        ]
    }

    #[test]
    fn a_window_with_holds_marks_each_held_key_on_every_backend() {
        let job = job(&serde_json::json!({"all_rows": true}));
        expect![[r#"
            SELECT "id", CASE WHEN ("id" IN (?, ?) OR ("tenant_id" = ?) IS TRUE) THEN 1 ELSE 0 END AS reaper_held FROM "app"."events" WHERE "id" > ? AND (TRUE) ORDER BY "id" LIMIT ?
            -- parameters: 3, 5, 7, 1, 10"#]]
        .assert_eq(
            &select_window(Backend::Sqlite, &job, Some(&KeyValue::Int(1)), 10, &held()).to_string(),
        );
        expect![[r#"SELECT CAST(`id` AS SIGNED), CASE WHEN (`id` IN (?, ?) OR (`tenant_id` = ?) IS TRUE) THEN 1 ELSE 0 END AS reaper_held FROM `app`.`events` WHERE (TRUE) ORDER BY `id` LIMIT ?"#]]
        .assert_eq(&select_window(Backend::MySql, &job, None, 10, &held()).sql);
        assert_eq!(
            select_window(Backend::MySql, &job, None, 10, &[]).sql,
            select_keys(Backend::MySql, &job, None, 10).sql
        );
    }

    #[test]
    fn batches_read_only_the_holds_active_now_on_their_tables() {
        let at = crate::sql::test_support::at();
        expect![[r#"
            SELECT id, target, held_keys, held_filter, reason, placed_by, placed_at, expires_at, released_at, released_by FROM reaper_holds WHERE target IN ($1, $2) AND released_at IS NULL AND (expires_at IS NULL OR expires_at > $3)
            -- parameters: 'users', 'orders', '2026-11-25T08:30:00+00:00'"#]]
        .assert_eq(&active_holds(Backend::Postgres, &["users", "orders"], at).to_string());
    }
}
