//! SQL planning: the text and bound parameters of every statement reaper runs.
//!
//! Statement families live in named places: one module per backend for the batch family
//! ([`postgres`], [`mysql`], [`sqlite`]), [`physical`] for PostgreSQL's batches over heap-block
//! ranges, [`controls`] for live target control and the shared rows-per-second budget, [`explain`] for the plan guard's look at a batch's plan, [`ledger`] for reaper's own tables and [`rows`] for
//! reading their rows back (each column list beside its decoder), [`schema`] for the start-up
//! look at the target's schema, [`session`] for per-connection and per-transaction settings,
//! [`migration`] for the DDL the migration builder cannot express, [`queue`] for the one
//! read of the embedded queue's own table, and [`health`] for the database's health signals. Each function's doc says the plan it expects.
//!
//! Text reaches a statement only through [`SqlWriter`]: fixed text as `&'static str`,
//! identifiers from the catalog quoted by [`SqlWriter::ident`], job states as the literals of
//! [`JobState`], and every value as a bound parameter — never spliced into SQL text. A test
//! (`tests/architecture.rs`) holds the product crates to it: no SQL text, formatted or not,
//! outside this directory.
//!
//! This module builds statements; it never runs them.

pub mod archive;
pub mod controls;
pub mod explain;
pub mod graph;
pub mod health;
pub mod holds;
pub mod ledger;
pub mod migration;
pub mod mysql;
pub mod physical;
pub mod postgres;
pub mod queue;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod session;
pub mod sqlite;

use std::fmt;

use crate::catalog::{KeyType, Mode, Target};
use crate::lifecycle::JobState;
use crate::validate::{Predicate, ValidatedJob};
use crate::value::{KeyValue, SqlValue};

/// The database dialects reaper plans for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL 13+.
    Postgres,
    /// SQLite 3.35+ (RETURNING).
    Sqlite,
    /// MySQL 8.0+ and MariaDB 10.6+ (InnoDB; `SKIP LOCKED`). The statements reaper sends are the
    /// syntax both accept: no `RETURNING` (MySQL lacks it), no `IN (SELECT … LIMIT)` (both reject
    /// it), no `DELETE … ORDER BY … LIMIT` (no keys for the audit without `RETURNING`).
    MySql,
}

/// How a batch deals with rows other transactions hold (PostgreSQL and MySQL; SQLite has one
/// writer at a time and ignores it).
///
/// Every pass starts `Direct`. On PostgreSQL that means no up-front row locks: the DELETE (or
/// soft-delete UPDATE) re-checks the filter — under READ COMMITTED a row another transaction
/// changed meanwhile is judged on its new version — and waits at most the session's
/// `lock_timeout` for a held row; `FOR UPDATE` in the selection would write a lock record per row
/// to the WAL (measured +10% WAL and +8–10% time per 5,000-row batch). On MySQL it means
/// `FOR UPDATE NOWAIT`: InnoDB row locks live in memory, so locking the window up front is cheap,
/// and NOWAIT fails at once instead of waiting. Either way a conflict fails the statement,
/// nothing is written, and the engine reruns the batch `SkipLocked`, marks the pass
/// (`locked_rows_skipped`) and keeps `SkipLocked` for the rest of it; only a marked pass ends with
/// a probe for rows it passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLocking {
    /// PostgreSQL: no up-front locks, wait at most `lock_timeout`. MySQL: `FOR UPDATE NOWAIT`.
    Direct,
    /// `FOR UPDATE SKIP LOCKED`; the pass is marked as having skipped rows.
    SkipLocked,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
        })
    }
}

/// SQL text with its parameters, in placeholder order. Only this module's [`SqlWriter`] makes
/// one, so its text is always planned here; the engine reads it to execute it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL, with `$n` (PostgreSQL) or `?` (SQLite, MySQL) placeholders.
    pub(crate) sql: String,
    /// The values bound to the placeholders, in order.
    pub(crate) params: Vec<SqlValue>,
}

impl Statement {
    /// The SQL text, with placeholders.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The values bound to the placeholders, in order.
    pub fn params(&self) -> &[SqlValue] {
        &self.params
    }
}

impl fmt::Display for Statement {
    /// The SQL followed by its parameters, for dry-run reports and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)?;
        if !self.params.is_empty() {
            f.write_str("\n-- parameters: ")?;
            for (index, param) in self.params.iter().enumerate() {
                if index > 0 {
                    f.write_str(", ")?;
                }
                match param {
                    SqlValue::Int(v) => write!(f, "{v}")?,
                    SqlValue::Text(v) => write!(f, "'{}'", v.replace('\'', "''"))?,
                    SqlValue::Bool(v) => write!(f, "{v}")?,
                    SqlValue::Uuid(v) => write!(f, "'{v}'")?,
                    SqlValue::Timestamp(v) => write!(f, "'{}'", v.to_rfc3339())?,
                }
            }
        }
        Ok(())
    }
}

/// Builds one statement: quotes identifiers, numbers placeholders, encodes values per backend.
#[derive(Debug)]
pub(crate) struct SqlWriter {
    backend: Backend,
    sql: String,
    params: Vec<SqlValue>,
}

impl SqlWriter {
    pub(crate) fn new(backend: Backend) -> Self {
        Self {
            backend,
            sql: String::with_capacity(512),
            params: Vec::new(),
        }
    }

    /// Fixed SQL text. `'static`: no runtime string (input, configuration) can be spliced in
    /// through it; those are identifiers ([`SqlWriter::ident`]) or values ([`SqlWriter::param`]).
    pub(crate) fn push(&mut self, text: &'static str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// A job state as a SQL string literal (`'running'`): one of [`JobState`]'s fixed words,
    /// written as text so the planner sees the constant the `(state, created_at)` index serves.
    pub(crate) fn state(&mut self, state: JobState) -> &mut Self {
        self.sql.push('\'');
        self.sql.push_str(state.as_str());
        self.sql.push('\'');
        self
    }

    /// ` WHERE id = $id AND lease_token = $token AND state = 'running'`: the condition of every
    /// write (and lease check) that only the job's lease holder may make.
    pub(crate) fn lease_guard(&mut self, job_id: &str, token: &str) -> &mut Self {
        self.push(" WHERE id = ")
            .param(SqlValue::Text(job_id.to_owned()))
            .push(" AND lease_token = ")
            .param(SqlValue::Text(token.to_owned()))
            .push(" AND state = ")
            .state(JobState::Running)
    }

    /// A parenthesized list of state literals: `('pending', 'paused')`.
    pub(crate) fn states(&mut self, states: &[JobState]) -> &mut Self {
        self.sql.push('(');
        for (index, state) in states.iter().enumerate() {
            if index > 0 {
                self.sql.push_str(", ");
            }
            self.state(*state);
        }
        self.sql.push(')');
        self
    }

    /// A quoted identifier: `"name"` (backticks on MySQL) with embedded quotes doubled.
    pub(crate) fn ident(&mut self, name: &str) -> &mut Self {
        let quote = match self.backend {
            Backend::MySql => '`',
            Backend::Postgres | Backend::Sqlite => '"',
        };
        self.sql.push(quote);
        self.sql
            .push_str(&name.replace(quote, &format!("{quote}{quote}")));
        self.sql.push(quote);
        self
    }

    /// The target's table, schema-qualified when configured.
    pub(crate) fn table(&mut self, target: &Target) -> &mut Self {
        self.qualified_table(target.schema.as_deref(), &target.table)
    }

    /// A table outside the catalog's targets (a cascade's), schema-qualified when given.
    pub(crate) fn qualified_table(&mut self, schema: Option<&str>, table: &str) -> &mut Self {
        if let Some(schema) = schema {
            self.ident(schema).push(".");
        }
        self.ident(table)
    }

    /// A bound parameter, encoded the way this backend stores the type.
    pub(crate) fn param(&mut self, value: SqlValue) -> &mut Self {
        let value = match (self.backend, value) {
            // SQLite has no uuid or timestamp type; reaper documents the text forms it compares.
            // MySQL has no uuid type either: uuids are CHAR(36) text there.
            (Backend::Sqlite | Backend::MySql, SqlValue::Uuid(id)) => {
                SqlValue::Text(id.hyphenated().to_string())
            }
            (Backend::Sqlite, SqlValue::Timestamp(at)) => {
                SqlValue::Text(at.format(SQLITE_TIMESTAMP_FORMAT).to_string())
            }
            (_, value) => value,
        };
        self.params.push(value);
        match self.backend {
            Backend::Postgres => {
                let index = self.params.len();
                self.sql.push('$');
                self.sql.push_str(&index.to_string());
            }
            Backend::Sqlite | Backend::MySql => self.sql.push('?'),
        }
        self
    }

    pub(crate) fn finish(self) -> Statement {
        Statement {
            sql: self.sql,
            params: self.params,
        }
    }
}

/// How timestamps are compared and written on SQLite: UTC text, the format of SQLite's own
/// `CURRENT_TIMESTAMP` (plus fractional seconds when present), so text order is time order.
pub const SQLITE_TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// The checkpoint as a parameter of the key's type (native uuid on PostgreSQL).
pub(crate) fn key_param(key_type: KeyType, key: &KeyValue) -> SqlValue {
    match (key_type, key) {
        (_, KeyValue::Int(value)) => SqlValue::Int(*value),
        (KeyType::Uuid, KeyValue::Text(text)) => match uuid::Uuid::parse_str(text) {
            Ok(id) => SqlValue::Uuid(id),
            Err(_) => SqlValue::Text(text.clone()),
        },
        (_, KeyValue::Text(text)) => SqlValue::Text(text.clone()),
    }
}

/// Writes the job's row condition: its predicates, plus `soft_delete_column IS NULL` in soft
/// mode so rows already soft-deleted are neither touched nor counted. `TRUE` when empty
/// (an explicit `all_rows` purge).
pub(crate) fn write_filter(w: &mut SqlWriter, job: &ValidatedJob) {
    let mut first = !write_predicates(w, &job.predicates);
    if let (Mode::Soft, Some(column)) = (job.mode, &job.target.soft_delete_column) {
        if !first {
            w.push(" AND ");
        }
        first = false;
        w.ident(column).push(" IS NULL");
    }
    if first {
        w.push("TRUE");
    }
}

/// Writes `predicates` joined by `AND` (a job's filter, a legal hold's); false when there is
/// none (nothing written).
pub(crate) fn write_predicates(w: &mut SqlWriter, predicates: &[Predicate]) -> bool {
    for (index, predicate) in predicates.iter().enumerate() {
        if index > 0 {
            w.push(" AND ");
        }
        match predicate {
            Predicate::Compare { column, op, value } => {
                w.ident(column)
                    .push(" ")
                    .push(op.sql())
                    .push(" ")
                    .param(value.clone());
            }
            Predicate::In { column, values } => {
                w.ident(column).push(" IN (");
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        w.push(", ");
                    }
                    w.param(value.clone());
                }
                w.push(")");
            }
            Predicate::IsNull { column } => {
                w.ident(column).push(" IS NULL");
            }
            Predicate::NotNull { column } => {
                w.ident(column).push(" IS NOT NULL");
            }
        }
    }
    !predicates.is_empty()
}

/// `SELECT pk FROM t WHERE <filter> [AND pk > $after] ORDER BY pk LIMIT $n`: the keys a batch
/// starting at `after` would take. Used by dry runs (sample keys), without locking.
///
/// Expected plan: an index scan on the primary key from `after`, filtering, stopping at LIMIT.
pub fn select_keys(
    backend: Backend,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    write_select_keys(&mut w, job, after, limit);
    w.finish()
}

/// The text of [`select_keys`], for statements that wrap it (`EXPLAIN`).
pub(crate) fn write_select_keys(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
) {
    let target = &job.target;
    w.push("SELECT ");
    write_key_projection(w, target);
    w.push(" FROM ").table(target).push(" WHERE ");
    write_keyset_and_filter(w, job, after);
    w.push(" ORDER BY ")
        .ident(&target.primary_key)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
}

/// `SELECT count(*) FROM (SELECT 1 FROM t WHERE <filter> LIMIT $cap) AS matching`: how many
/// rows match, counting no further than `cap` (so the `max_rows` pre-check never scans more
/// than it must). Without a cap, a plain count (dry runs).
///
/// Expected plan: whatever index serves the filter best; no ORDER BY, so the planner is free.
pub fn count_matching(backend: Backend, job: &ValidatedJob, cap: Option<u64>) -> Statement {
    let mut w = SqlWriter::new(backend);
    match cap {
        Some(cap) => {
            w.push("SELECT count(*) FROM (SELECT 1 FROM ")
                .table(&job.target)
                .push(" WHERE ");
            write_filter(&mut w, job);
            w.push(" LIMIT ")
                .param(SqlValue::Int(i64::try_from(cap).unwrap_or(i64::MAX)))
                .push(") AS matching");
        }
        None => {
            w.push("SELECT count(*) FROM ")
                .table(&job.target)
                .push(" WHERE ");
            write_filter(&mut w, job);
        }
    }
    w.finish()
}

/// The primary key as the engine reads it back: a 64-bit integer or text whatever the column's
/// width or type (`::int8`/`::text` on PostgreSQL, `CAST(… AS SIGNED)` on MySQL; SQLite integers
/// are 64-bit and its uuids text already).
pub(crate) fn write_key_projection(w: &mut SqlWriter, target: &Target) {
    match (w.backend, target.key_type) {
        (Backend::Postgres, KeyType::Int) => {
            w.ident(&target.primary_key).push("::int8");
        }
        (Backend::Postgres, KeyType::Text | KeyType::Uuid) => {
            w.ident(&target.primary_key).push("::text");
        }
        (Backend::MySql, KeyType::Int) => {
            w.push("CAST(")
                .ident(&target.primary_key)
                .push(" AS SIGNED)");
        }
        (Backend::MySql, KeyType::Text | KeyType::Uuid) | (Backend::Sqlite, _) => {
            w.ident(&target.primary_key);
        }
    }
}

/// `DELETE FROM t` (hard) or `UPDATE t SET soft_delete_column = $now` (soft): the head of every
/// removal statement that names the table once (SQLite, MySQL; PostgreSQL aliases its own).
pub(crate) fn write_removal_head(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    now: chrono::DateTime<chrono::Utc>,
) {
    let target = &job.target;
    match (job.mode, &target.soft_delete_column) {
        (Mode::Soft, Some(column)) => {
            w.push("UPDATE ")
                .table(target)
                .push(" SET ")
                .ident(column)
                .push(" = ")
                .param(SqlValue::Timestamp(now));
        }
        _ => {
            w.push("DELETE FROM ").table(target);
        }
    }
}

/// `[pk > $after AND] (<filter>)`
pub(crate) fn write_keyset_and_filter(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
) {
    if let Some(after) = after {
        w.ident(&job.target.primary_key)
            .push(" > ")
            .param(key_param(job.target.key_type, after))
            .push(" AND ");
    }
    w.push("(");
    write_filter(w, job);
    w.push(")");
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use crate::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
    use crate::job::JobRequest;
    use crate::sql::RowLocking;
    use crate::sql::postgres::BatchContext;
    use crate::validate::{ValidatedJob, validate};

    /// The fixed clock of the SQL snapshots.
    pub(crate) fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T08:30:00Z")
            .unwrap()
            .into()
    }

    pub(crate) fn job(json: &serde_json::Value) -> ValidatedJob {
        let catalog = Catalog::new([Target {
            name: "events".into(),
            schema: Some("app".into()),
            table: "events".into(),
            primary_key: "id".into(),
            key_type: KeyType::Int,
            columns: BTreeMap::from([
                ("tenant_id".into(), ColumnType::Int),
                ("created_at".into(), ColumnType::Timestamp),
                ("kind".into(), ColumnType::Text),
            ]),
            default_mode: Mode::Hard,
            batch_size: 500,
            max_batch_size: 5_000,
            soft_delete_column: Some("deleted_at".into()),
            max_rows: 1_000_000,
            max_attempts: None,
            throttle: Default::default(),
        }]);
        let mut base =
            serde_json::json!({"target": "events", "requested_by": "svc", "reason": "test"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        let request: JobRequest = serde_json::from_value(base).unwrap();
        let as_of: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .into();
        validate(&request, &catalog, as_of).unwrap()
    }

    /// The batch context of the PostgreSQL batch snapshots: job `j1`, lease `tok`, and the
    /// job's validation time as both the batch time and the lease's end.
    pub(crate) fn batch_context(locking: RowLocking) -> BatchContext<'static> {
        let at: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .into();
        BatchContext {
            job_id: "j1",
            lease_token: "tok",
            now: at,
            lease_until: at,
            locking,
            held: &[],
            count_held: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::test_support::job;
    use super::*;

    #[test]
    fn select_keys_quotes_identifiers_and_binds_values() {
        let job = job(&serde_json::json!({"filter": {"all": [
            {"column": "kind", "op": "in", "value": ["a", "b'; DROP TABLE x; --"]},
            {"column": "created_at", "op": "older_than", "value": "30d"}
        ]}}));
        let pg = select_keys(Backend::Postgres, &job, Some(&KeyValue::Int(41)), 10);
        expect![[r#"
            SELECT "id"::int8 FROM "app"."events" WHERE "id" > $1 AND ("kind" IN ($2, $3) AND "created_at" < $4) ORDER BY "id" LIMIT $5
            -- parameters: 41, 'a', 'b''; DROP TABLE x; --', '2026-10-26T00:00:00+00:00', 10"#]]
        .assert_eq(&pg.to_string());
        let lite = select_keys(Backend::Sqlite, &job, None, 10);
        expect![[r#"
            SELECT "id" FROM "app"."events" WHERE ("kind" IN (?, ?) AND "created_at" < ?) ORDER BY "id" LIMIT ?
            -- parameters: 'a', 'b''; DROP TABLE x; --', '2026-10-26 00:00:00', 10"#]]
        .assert_eq(&lite.to_string());
    }

    #[test]
    fn soft_mode_skips_rows_already_soft_deleted_and_all_rows_is_explicit() {
        let soft = job(&serde_json::json!({"mode": "soft", "all_rows": true}));
        expect![[r#"SELECT count(*) FROM (SELECT 1 FROM "app"."events" WHERE "deleted_at" IS NULL LIMIT $1) AS matching"#]]
            .assert_eq(&count_matching(Backend::Postgres, &soft, Some(100)).sql);
        let hard = job(&serde_json::json!({"all_rows": true}));
        expect![[r#"SELECT count(*) FROM "app"."events" WHERE TRUE"#]]
            .assert_eq(&count_matching(Backend::Sqlite, &hard, None).sql);
    }
}
