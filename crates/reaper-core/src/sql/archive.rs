//! `reaper_archive`: the rows `archive` jobs copy before deleting them, the statements of a
//! restore job that puts them (or a soft-delete job's rows) back, and the built-in retention
//! that purges old copies.
//!
//! A copy is one row per deleted row: the job, the target, the key as text and the whole row
//! as JSON (every column, NULLs included), written in the batch transaction that deletes it.
//! PostgreSQL writes it in the batch statement itself (`to_jsonb` of the deleted row, see
//! [`write_archive_cte`]); MySQL and SQLite copy the batch's locked keys with [`copy_rows`]
//! just before deleting them by key. Binary columns are stored as hex on MySQL and SQLite
//! (JSON holds no bytes there); PostgreSQL's `to_jsonb` writes `bytea` as `\x…` text, which
//! `jsonb_populate_record` reads back.
//!
//! Column names come from the database's own catalog (`sql::schema::table_columns`), the
//! table from the reaper catalog; both are quoted identifiers. Every value is bound.

use chrono::{DateTime, Utc};

use crate::catalog::{KeyType, Target};
use crate::sql::postgres::BatchContext;
use crate::sql::rows::{Row, required};
use crate::sql::{Backend, SqlWriter, Statement, key_param, write_key_projection};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// One column of a target's table as the database describes it (`sql::schema::table_columns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The column's name.
    pub name: String,
    /// Its type as the database names it (`information_schema.columns.data_type`; SQLite: the
    /// declared type).
    pub data_type: String,
}

impl TableColumn {
    /// Bytes, which JSON cannot hold on MySQL and SQLite: archived as hex there.
    /// SQLite: whether the declared type gives the column INTEGER, REAL or NUMERIC affinity
    /// (SQLite's rules, in their order), which turns numeric text into a number on insert; a
    /// TEXT column holds no REAL, and one without a type (BLOB affinity) would keep text.
    fn sqlite_numeric_affinity(&self) -> bool {
        let declared = self.data_type.to_ascii_uppercase();
        let has = |part: &str| declared.contains(part);
        has("INT")
            || !(has("CHAR") || has("CLOB") || has("TEXT") || has("BLOB") || declared.is_empty())
    }

    fn is_binary(&self) -> bool {
        let name = self.data_type.to_ascii_lowercase();
        name.contains("blob") || name.contains("binary") || name == "bytea"
    }
}

/// The archive row a restore reads: its id (the restore's checkpoint), the table it was
/// removed from and the key it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedKey {
    /// `reaper_archive.id`.
    pub id: i64,
    /// The catalog target of the row's table.
    pub target: String,
    /// The archived row's key, as text.
    pub key: String,
}

/// Columns [`archived_keys`] and [`archived_before`] return ([`decode_archived_key`] reads
/// them by name).
pub const ARCHIVED_KEY_COLUMNS: &str = "id, target, row_key";

/// Reads a row of [`ARCHIVED_KEY_COLUMNS`].
pub fn decode_archived_key<R: Row>(row: &R) -> Result<ArchivedKey, R::Error> {
    Ok(ArchivedKey {
        id: required(row, "id", R::int)?,
        target: required(row, "target", R::text)?,
        key: required(row, "row_key", R::text)?,
    })
}

/// `SELECT id, target, row_key FROM reaper_archive WHERE job_id = $source AND id < $before
/// ORDER BY id DESC LIMIT $n`: the next archive rows a restore batch takes, newest first — the
/// reverse of the order the job removed them in, so across relations a parent comes back before
/// the rows that refer to it (a job deletes children before their parents). The checkpoint is
/// the last (smallest) id. Expected plan: the `(job_id, id)` index backwards, stopping at LIMIT.
pub fn archived_before(backend: Backend, source_job: &str, before: i64, limit: u32) -> Statement {
    let newest_first = (" AND id < ", before, " ORDER BY id DESC LIMIT ");
    archived_page(backend, source_job, newest_first, limit)
}

/// `SELECT id, target, row_key FROM reaper_archive WHERE job_id = $source <bound> $id ORDER BY
/// id [DESC] LIMIT $n`.
fn archived_page(
    backend: Backend,
    source_job: &str,
    (bound, id, order): (&'static str, i64, &'static str),
    limit: u32,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .push(ARCHIVED_KEY_COLUMNS)
        .push(" FROM reaper_archive WHERE job_id = ")
        .param(SqlValue::Text(source_job.to_owned()))
        .push(bound)
        .param(SqlValue::Int(id))
        .push(order)
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

/// `SELECT target, count(*) AS archived FROM reaper_archive WHERE job_id = $source GROUP BY
/// target`: per table, the rows of a job still in the archive (after its restore: the ones it
/// could not put back). Expected plan: the `(job_id, id)` index, the job's rows only.
pub fn count_archived_by_table(backend: Backend, source_job: &str) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT target, count(*) AS archived FROM reaper_archive WHERE job_id = ")
        .param(SqlValue::Text(source_job.to_owned()))
        .push(" GROUP BY target ORDER BY target");
    w.finish()
}

/// Reads a row of [`count_archived_by_table`]: the table and its rows.
pub fn decode_table_count<R: Row>(row: &R) -> Result<(String, i64), R::Error> {
    Ok((
        required(row, "target", R::text)?,
        required(row, "archived", R::int)?,
    ))
}

/// `column IN ($1, $2, …)` over key values of `key_type`.
fn write_in(w: &mut SqlWriter, key_type: KeyType, keys: &[KeyValue]) {
    w.push(" IN (");
    for (index, key) in keys.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(key_param(key_type, key));
    }
    w.push(")");
}

fn int_keys(ids: &[i64]) -> Vec<KeyValue> {
    ids.iter().map(|id| KeyValue::Int(*id)).collect()
}

/// `a.id IN ($1, …)` over archive row ids.
fn write_archive_ids(w: &mut SqlWriter, ids: &[i64]) {
    w.push("a.id");
    write_in(w, KeyType::Int, &int_keys(ids));
}

/// `$."name"`: the JSON path of a column's member (quotes and backslashes escaped), bound.
fn json_path(name: &str) -> SqlValue {
    SqlValue::Text(format!(
        "$.\"{}\"",
        name.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// PostgreSQL: `, archived AS (INSERT INTO reaper_archive … SELECT … FROM removed)`, the copy of
/// every row the batch's `removed` CTE deleted (its `RETURNING` carries `to_jsonb(t.*) AS
/// reaper_row`, see [`write_archive_returning`]). A data-modifying CTE always runs to
/// completion, so the copy commits with the delete or not at all.
pub(crate) fn write_archive_cte(w: &mut SqlWriter, job: &ValidatedJob, ctx: &BatchContext<'_>) {
    w.push(
        ", archived AS (INSERT INTO reaper_archive (job_id, target, row_key, row_json, \
         archived_at) SELECT ",
    )
    .param(SqlValue::Text(ctx.job_id.to_owned()))
    .push(", ")
    .param(SqlValue::Text(job.target.name.clone()))
    .push(", reaper_key::text, reaper_row, ")
    .param(SqlValue::Timestamp(ctx.now))
    .push(" FROM removed)");
}

/// PostgreSQL: `, to_jsonb(t.*) AS reaper_row`, the deleted row (every column) in the `removed`
/// CTE's `RETURNING` of an archive batch.
pub(crate) fn write_archive_returning(w: &mut SqlWriter) {
    w.push(", to_jsonb(t.*) AS reaper_row");
}

/// `INSERT INTO reaper_archive (…) SELECT $job, $target, <key as text>, <row as JSON>, $now
/// FROM t WHERE pk IN (keys)`: the copies of rows a batch is about to delete (or, across
/// relations, to set a column of to NULL) by key, in its transaction (the keys are locked:
/// PostgreSQL and MySQL `FOR UPDATE`, SQLite one writer). The row as JSON: PostgreSQL
/// `to_jsonb(t.*)` (as its one-statement batches write it), MySQL and SQLite
/// `JSON_OBJECT('c1', c1, …)` over `columns`. Expected plan: primary-key lookups.
pub fn copy_rows(
    backend: Backend,
    target: &Target,
    columns: &[TableColumn],
    keys: &[KeyValue],
    (job_id, now): (&str, DateTime<Utc>),
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO reaper_archive (job_id, target, row_key, row_json, archived_at) SELECT ")
        .param(SqlValue::Text(job_id.to_owned()))
        .push(", ")
        .param(SqlValue::Text(target.name.clone()))
        .push(", CAST(")
        .ident(&target.primary_key)
        .push(match backend {
            Backend::MySql => " AS CHAR), ",
            Backend::Postgres | Backend::Sqlite => " AS TEXT), ",
        })
        .push(match backend {
            Backend::MySql => "JSON_OBJECT(",
            Backend::Postgres => "to_jsonb(reaper_row.*",
            Backend::Sqlite => "json_object(",
        });
    if backend != Backend::Postgres {
        write_json_members(&mut w, columns);
    }
    w.push("), ")
        .param(SqlValue::Timestamp(now))
        .push(" FROM ")
        .table(target)
        .push(" AS reaper_row WHERE ")
        .ident(&target.primary_key);
    write_in(&mut w, target.key_type, keys);
    w.finish()
}

/// `'c1', c1, 'c2', HEX(c2), …`: the members of a row's JSON object (MySQL, SQLite).
fn write_json_members(w: &mut SqlWriter, columns: &[TableColumn]) {
    let backend = w.backend;
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(SqlValue::Text(column.name.clone())).push(", ");
        match (backend, column.is_binary()) {
            (Backend::MySql, true) => {
                w.push("HEX(").ident(&column.name).push(")");
            }
            // SQLite's hex(NULL) is '' — a NULL stays NULL.
            (_, true) => {
                w.push("CASE WHEN ")
                    .ident(&column.name)
                    .push(" IS NULL THEN NULL ELSE hex(")
                    .ident(&column.name)
                    .push(") END");
            }
            // SQLite's JSON writes a REAL with 15 significant digits, which loses the last
            // ones of most doubles: such a value is kept as text with 17 (exact), which the
            // column's numeric affinity turns back into the same REAL on restore.
            (Backend::Sqlite, false) if column.sqlite_numeric_affinity() => {
                w.push("CASE WHEN typeof(")
                    .ident(&column.name)
                    .push(") = 'real' THEN printf('%!.17g', ")
                    .ident(&column.name)
                    .push(") ELSE ")
                    .ident(&column.name)
                    .push(" END");
            }
            (_, false) => {
                w.ident(&column.name);
            }
        }
    }
}

/// `SELECT id, target, row_key FROM reaper_archive WHERE job_id = $source AND id > $after
/// ORDER BY id LIMIT $n`: a job's archive rows in the order it archived them (after its
/// restore: the first keys it could not put back, reported). Expected plan: the `(job_id, id)`
/// index, in order, stopping at LIMIT.
pub fn archived_keys(backend: Backend, source_job: &str, after: i64, limit: u32) -> Statement {
    let oldest_first = (" AND id > ", after, " ORDER BY id LIMIT ");
    archived_page(backend, source_job, oldest_first, limit)
}

/// `SELECT pk FROM t WHERE pk IN (keys)`: which of the keys exist in the target now (a restore's
/// conflicts: such a row was inserted again and is not overwritten). Under `FOR UPDATE` on
/// PostgreSQL and MySQL, so a row that exists stays until the batch commits. Expected plan:
/// primary-key lookups.
pub fn existing_keys(backend: Backend, target: &Target, keys: &[KeyValue]) -> Statement {
    keys_where(backend, target, keys, (Also::Exists, true))
}

/// What else a key [`keys_where`] selects must satisfy.
#[derive(Clone, Copy)]
enum Also<'a> {
    /// Nothing: the key exists.
    Exists,
    /// The soft-delete column holds the mark of the batch at this time.
    SoftMark(&'a str, DateTime<Utc>),
    /// The column is NULL.
    Null(&'a str),
}

/// `SELECT pk FROM t WHERE pk IN (keys) [AND <also>] [FOR UPDATE]` (`lock`; never on SQLite,
/// the one writer).
fn keys_where(
    backend: Backend,
    target: &Target,
    keys: &[KeyValue],
    (also, lock): (Also<'_>, bool),
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ");
    write_key_projection(&mut w, target);
    w.push(" FROM ")
        .table(target)
        .push(" WHERE ")
        .ident(&target.primary_key);
    write_in(&mut w, target.key_type, keys);
    match also {
        Also::Exists => {}
        Also::SoftMark(column, at) => write_soft_mark(&mut w, column, at),
        Also::Null(column) => {
            w.push(" AND ").ident(column).push(" IS NULL");
        }
    }
    if lock && backend != Backend::Sqlite {
        w.push(" FOR UPDATE");
    }
    w.finish()
}

/// Puts archived rows `ids` back into the target, every column with its type:
///
/// - PostgreSQL: `INSERT INTO t OVERRIDING SYSTEM VALUE SELECT r.* FROM reaper_archive AS a
///   CROSS JOIN LATERAL jsonb_populate_record(NULL::t, a.row_json) AS r WHERE a.id IN (…)`: the
///   row type of the table reads the JSON back (identity columns keep their archived values).
/// - MySQL: `INSERT INTO t (c…) SELECT <member of c>… FROM reaper_archive AS a WHERE a.id IN
///   (…)`, each member unquoted text (JSON `null` → NULL, hex → `UNHEX`) assigned to its column,
///   which converts it in strict mode (a value that does not fit fails the batch).
/// - SQLite: the same with `json_extract` (`unhex` for binary columns).
///
/// The caller excluded every key that exists again. Expected plan: archive primary-key lookups.
pub fn restore_rows(
    backend: Backend,
    target: &Target,
    columns: &[TableColumn],
    ids: &[i64],
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("INSERT INTO ").table(target);
    if backend == Backend::Postgres {
        w.push(" OVERRIDING SYSTEM VALUE SELECT r.* FROM reaper_archive AS a CROSS JOIN LATERAL jsonb_populate_record(NULL::")
            .table(target)
            .push(", a.row_json) AS r WHERE ");
        write_archive_ids(&mut w, ids);
        return w.finish();
    }
    w.push(" (");
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.ident(&column.name);
    }
    w.push(") SELECT ");
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        write_member(&mut w, column);
    }
    w.push(" FROM reaper_archive AS a WHERE ");
    write_archive_ids(&mut w, ids);
    w.finish()
}

/// MySQL and SQLite: the archived value of `column` in `a.row_json`, as text its column
/// converts (JSON `null` → NULL, hex → bytes for a binary column).
fn write_member(w: &mut SqlWriter, column: &TableColumn) {
    let binary = column.is_binary();
    match w.backend {
        Backend::MySql => {
            w.push(if binary { "UNHEX(" } else { "(" })
                .push("CASE WHEN JSON_TYPE(JSON_EXTRACT(a.row_json, ")
                .param(json_path(&column.name))
                .push(")) = 'NULL' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(a.row_json, ")
                .param(json_path(&column.name))
                .push(")) END)");
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push(if binary { "unhex(" } else { "(" })
                .push("json_extract(a.row_json, ")
                .param(json_path(&column.name))
                .push("))");
        }
    }
}

/// `SELECT pk FROM t WHERE pk IN (keys) AND column IS NULL [FOR UPDATE]`: the rows a
/// `set_null` step of an archive job nulled whose column is still NULL — the ones a restore may
/// give their old value back (a row whose column was set since, or that is gone, is a
/// conflict). Locked on PostgreSQL and MySQL until the batch commits (SQLite: one writer).
/// Expected plan: primary-key lookups.
pub fn still_null(backend: Backend, target: &Target, column: &str, keys: &[KeyValue]) -> Statement {
    keys_where(backend, target, keys, (Also::Null(column), true))
}

/// `SELECT pk FROM t WHERE pk IN (keys) AND column IS NULL`, unlocked: the rows of a soft job's
/// batch whose soft-delete column is clear now (the ones not listed are its restore's conflicts,
/// reported after it). Expected plan: primary-key lookups.
pub fn cleared(backend: Backend, target: &Target, column: &str, keys: &[KeyValue]) -> Statement {
    keys_where(backend, target, keys, (Also::Null(column), false))
}

/// `UPDATE t AS reaper_t SET column = (SELECT <archived value> FROM reaper_archive AS a WHERE
/// a.id IN (ids) AND a.row_key = CAST(reaper_t.pk AS TEXT)) WHERE pk IN (keys) AND column IS
/// NULL`: a `set_null` step undone — each row of `keys` (locked by [`still_null`]) gets the
/// value its archived copy (`ids`, the rows as they were before the step) holds, read typed as
/// [`restore_rows`] reads it. Expected plan: primary-key lookups, and per row archive
/// primary-key lookups filtered by key.
pub fn restore_column(
    backend: Backend,
    target: &Target,
    column: &TableColumn,
    (ids, keys): (&[i64], &[KeyValue]),
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE ")
        .table(target)
        .push(" AS reaper_t SET ")
        .ident(&column.name)
        .push(" = (SELECT ");
    if backend == Backend::Postgres {
        w.push("(jsonb_populate_record(NULL::")
            .table(target)
            .push(", a.row_json)).")
            .ident(&column.name);
    } else {
        write_member(&mut w, column);
    }
    w.push(" FROM reaper_archive AS a WHERE ");
    write_archive_ids(&mut w, ids);
    w.push(" AND a.row_key = CAST(reaper_t.")
        .ident(&target.primary_key)
        .push(match backend {
            Backend::MySql => " AS CHAR)) WHERE ",
            Backend::Postgres | Backend::Sqlite => " AS TEXT)) WHERE ",
        })
        .ident(&target.primary_key);
    write_in(&mut w, target.key_type, keys);
    w.push(" AND ").ident(&column.name).push(" IS NULL");
    w.finish()
}

/// `DELETE FROM reaper_archive WHERE id IN (ids)`: the copies of rows a restore batch put back
/// (the copies of rows it could not put back stay, for a later restore). Expected plan: primary
/// key lookups.
pub fn forget_restored(backend: Backend, ids: &[i64]) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("DELETE FROM reaper_archive WHERE id");
    write_in(&mut w, KeyType::Int, &int_keys(ids));
    w.finish()
}

/// ` AND <soft column> = $at` (MySQL: within the second after `at`): the rows a soft-delete
/// batch at `at` marked and that still carry its mark. MySQL's audit time is whole seconds and
/// a `DATETIME` column rounds to its own precision, so there the mark is matched to the second.
fn write_soft_mark(w: &mut SqlWriter, column: &str, at: DateTime<Utc>) {
    w.push(" AND ").ident(column);
    match w.backend {
        Backend::MySql => {
            w.push(" >= ")
                .param(SqlValue::Timestamp(at))
                .push(" AND ")
                .ident(column)
                .push(" <= ")
                .param(SqlValue::Timestamp(at + chrono::Duration::seconds(1)));
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push(" = ").param(SqlValue::Timestamp(at));
        }
    }
}

/// `SELECT pk FROM t WHERE pk IN (keys) AND <soft column still holds the mark of the batch at
/// `at`>`: the rows of one soft-delete batch a restore may clear (locked until it commits on
/// PostgreSQL and MySQL). Expected plan: primary-key lookups.
pub fn soft_marked(
    backend: Backend,
    target: &Target,
    column: &str,
    keys: &[KeyValue],
    at: DateTime<Utc>,
) -> Statement {
    keys_where(backend, target, keys, (Also::SoftMark(column, at), true))
}

/// `UPDATE t SET <soft column> = NULL WHERE pk IN (keys) AND <column still holds the mark of the
/// batch at `at`>`: a soft-delete undone only where nobody changed the mark since. Expected
/// plan: primary-key lookups.
pub fn clear_soft_mark(
    backend: Backend,
    target: &Target,
    column: &str,
    keys: &[KeyValue],
    at: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE ")
        .table(target)
        .push(" SET ")
        .ident(column)
        .push(" = NULL WHERE ")
        .ident(&target.primary_key);
    write_in(&mut w, target.key_type, keys);
    write_soft_mark(&mut w, column, at);
    w.finish()
}

/// `SELECT count(*) FROM (SELECT 1 FROM reaper_archive WHERE archived_at < $before LIMIT 1)`:
/// whether any archive row is due for the purge — a read, so a purge with nothing to do takes no
/// write lock (SQLite has one writer). Expected plan: the `archived_at` index, one entry.
pub fn any_expired(backend: Backend, before: DateTime<Utc>) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM (SELECT 1 FROM reaper_archive WHERE archived_at < ")
        .param(SqlValue::Timestamp(before))
        .push(" LIMIT 1) AS expired");
    w.finish()
}

/// Deletes at most `limit` archive rows archived before `before` (the built-in retention of
/// `[archive] keep`), oldest first. PostgreSQL and SQLite by id from a bounded selection; MySQL
/// with its own `DELETE … ORDER BY … LIMIT`. Expected plan: the `archived_at` index, stopping
/// at LIMIT.
pub fn purge_expired(backend: Backend, before: DateTime<Utc>, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::MySql => {
            w.push("DELETE FROM reaper_archive WHERE archived_at < ")
                .param(SqlValue::Timestamp(before))
                .push(" ORDER BY archived_at LIMIT ")
                .param(SqlValue::Int(i64::from(limit)));
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push("DELETE FROM reaper_archive WHERE id IN (SELECT id FROM reaper_archive WHERE archived_at < ")
                .param(SqlValue::Timestamp(before))
                .push(" ORDER BY archived_at LIMIT ")
                .param(SqlValue::Int(i64::from(limit)))
                .push(")");
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::{at, job};

    fn columns() -> Vec<TableColumn> {
        [("id", "bigint"), ("note", "text"), ("blob", "varbinary")]
            .into_iter()
            .map(|(name, data_type)| TableColumn {
                name: name.into(),
                data_type: data_type.into(),
            })
            .collect()
    }

    #[test]
    fn rows_are_copied_as_json_with_bytes_as_hex_before_their_delete() {
        let job = job(&serde_json::json!({"all_rows": true, "mode": "archive"}));
        let keys = [KeyValue::Int(3), KeyValue::Int(9)];
        expect![[r#"
            INSERT INTO reaper_archive (job_id, target, row_key, row_json, archived_at) SELECT ?, ?, CAST(`id` AS CHAR), JSON_OBJECT(?, `id`, ?, `note`, ?, HEX(`blob`)), ? FROM `app`.`events` AS reaper_row WHERE `id` IN (?, ?)
            -- parameters: 'j1', 'events', 'id', 'note', 'blob', '2026-11-25T08:30:00+00:00', 3, 9"#]]
        .assert_eq(&copy_rows(Backend::MySql, &job.target, &columns(), &keys, ("j1", at())).to_string());
        let lite = copy_rows(
            Backend::Sqlite,
            &job.target,
            &columns(),
            &keys,
            ("j1", at()),
        )
        .sql;
        assert!(
            lite.contains(r#"CASE WHEN "blob" IS NULL THEN NULL ELSE hex("blob") END"#),
            "{lite}"
        );
    }

    #[test]
    fn sqlite_keeps_a_real_as_text_of_17_digits_where_the_column_turns_it_back_into_a_number() {
        let job = job(&serde_json::json!({"all_rows": true, "mode": "archive"}));
        let columns: Vec<TableColumn> = [
            ("rate", "REAL"),
            ("amount", "NUMERIC(12,2)"),
            ("count", "BIGINT"),
            ("label", "VARCHAR(20)"),
            ("anything", ""),
        ]
        .into_iter()
        .map(|(name, data_type)| TableColumn {
            name: name.into(),
            data_type: data_type.into(),
        })
        .collect();
        let lite = copy_rows(
            Backend::Sqlite,
            &job.target,
            &columns,
            &[KeyValue::Int(1)],
            ("j1", at()),
        )
        .sql;
        for numeric in ["rate", "amount", "count"] {
            let kept = format!(
                r#"CASE WHEN typeof("{numeric}") = 'real' THEN printf('%!.17g', "{numeric}") ELSE "{numeric}" END"#
            );
            assert!(lite.contains(&kept), "{numeric}: {lite}");
        }
        for other in ["label", "anything"] {
            assert!(
                !lite.contains(&format!(r#"typeof("{other}")"#)),
                "{other}: {lite}"
            );
        }
    }

    #[test]
    fn a_restore_reads_every_column_back_typed() {
        let job = job(&serde_json::json!({"all_rows": true}));
        expect![[r#"INSERT INTO "app"."events" OVERRIDING SYSTEM VALUE SELECT r.* FROM reaper_archive AS a CROSS JOIN LATERAL jsonb_populate_record(NULL::"app"."events", a.row_json) AS r WHERE a.id IN ($1, $2)"#]]
            .assert_eq(&restore_rows(Backend::Postgres, &job.target, &columns(), &[4, 5]).sql);
        expect![[r#"
            INSERT INTO `app`.`events` (`id`, `note`, `blob`) SELECT (CASE WHEN JSON_TYPE(JSON_EXTRACT(a.row_json, ?)) = 'NULL' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(a.row_json, ?)) END), (CASE WHEN JSON_TYPE(JSON_EXTRACT(a.row_json, ?)) = 'NULL' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(a.row_json, ?)) END), UNHEX(CASE WHEN JSON_TYPE(JSON_EXTRACT(a.row_json, ?)) = 'NULL' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(a.row_json, ?)) END) FROM reaper_archive AS a WHERE a.id IN (?)
            -- parameters: '$."id"', '$."id"', '$."note"', '$."note"', '$."blob"', '$."blob"', 7"#]]
        .assert_eq(&restore_rows(Backend::MySql, &job.target, &columns(), &[7]).to_string());
        assert_eq!(
            json_path(r#"a"b\c"#),
            SqlValue::Text(r#"$."a\"b\\c""#.into())
        );
    }

    #[test]
    fn across_relations_rows_are_copied_by_key_and_a_nulled_column_gets_its_value_back() {
        let job = job(&serde_json::json!({"all_rows": true, "mode": "archive"}));
        let keys = [KeyValue::Int(3)];
        expect![[r#"INSERT INTO reaper_archive (job_id, target, row_key, row_json, archived_at) SELECT $1, $2, CAST("id" AS TEXT), to_jsonb(reaper_row.*), $3 FROM "app"."events" AS reaper_row WHERE "id" IN ($4)"#]].assert_eq(
            &copy_rows(Backend::Postgres, &job.target, &[], &keys, ("j1", at())).sql,
        );
        let column = TableColumn {
            name: "user_id".into(),
            data_type: "bigint".into(),
        };
        expect![[r#"UPDATE "app"."events" AS reaper_t SET "user_id" = (SELECT (jsonb_populate_record(NULL::"app"."events", a.row_json))."user_id" FROM reaper_archive AS a WHERE a.id IN ($1) AND a.row_key = CAST(reaper_t."id" AS TEXT)) WHERE "id" IN ($2) AND "user_id" IS NULL"#]].assert_eq(
            &restore_column(Backend::Postgres, &job.target, &column, (&[4], &keys)).sql,
        );
        expect!["UPDATE `app`.`events` AS reaper_t SET `user_id` = (SELECT (CASE WHEN JSON_TYPE(JSON_EXTRACT(a.row_json, ?)) = 'NULL' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(a.row_json, ?)) END) FROM reaper_archive AS a WHERE a.id IN (?) AND a.row_key = CAST(reaper_t.`id` AS CHAR)) WHERE `id` IN (?) AND `user_id` IS NULL"].assert_eq(
            &restore_column(Backend::MySql, &job.target, &column, (&[4], &keys)).sql,
        );
        expect!["SELECT id, target, row_key FROM reaper_archive WHERE job_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"].assert_eq(&archived_before(Backend::Postgres, "j1", 100, 10).sql);
        expect!["SELECT CAST(`id` AS SIGNED) FROM `app`.`events` WHERE `id` IN (?) AND `user_id` IS NULL FOR UPDATE"].assert_eq(&still_null(Backend::MySql, &job.target, "user_id", &keys).sql);
    }

    #[test]
    fn a_soft_restore_clears_only_the_jobs_own_mark() {
        let job = job(&serde_json::json!({"all_rows": true}));
        let keys = [KeyValue::Int(1)];
        expect![[r#"
            UPDATE "app"."events" SET "deleted_at" = NULL WHERE "id" IN (?) AND "deleted_at" = ?
            -- parameters: 1, '2026-11-25 08:30:00'"#]]
        .assert_eq(
            &clear_soft_mark(Backend::Sqlite, &job.target, "deleted_at", &keys, at()).to_string(),
        );
        let mysql = clear_soft_mark(Backend::MySql, &job.target, "deleted_at", &keys, at());
        assert!(
            mysql
                .to_string()
                .ends_with("'2026-11-25T08:30:00+00:00', '2026-11-25T08:30:01+00:00'"),
            "{mysql}"
        );
    }

    #[test]
    fn the_purge_is_bounded_and_oldest_first() {
        expect![[
            r#"DELETE FROM reaper_archive WHERE archived_at < ? ORDER BY archived_at LIMIT ?"#
        ]]
        .assert_eq(&purge_expired(Backend::MySql, at(), 500).sql);
        expect![[r#"DELETE FROM reaper_archive WHERE id IN (SELECT id FROM reaper_archive WHERE archived_at < $1 ORDER BY archived_at LIMIT $2)"#]]
            .assert_eq(&purge_expired(Backend::Postgres, at(), 500).sql);
    }
}
