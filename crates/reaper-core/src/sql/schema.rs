//! Read-only statements on the target's schema, for the start-up check of the catalog
//! against the real database (`reaper_engine::schema_check`). Nothing here writes.

use crate::catalog::Target;
use crate::sql::{Backend, SqlWriter, Statement};
use crate::value::SqlValue;

/// Column read back by [`table_columns`]: one row per column of the table.
pub const COLUMN_NAME: &str = "column_name";
/// Column read back by [`table_columns`]: the column's type as the database names it
/// (`information_schema.columns.data_type`; SQLite: the declared type).
pub const COLUMN_TYPE: &str = "column_type";

/// The names and types of the target table's columns, one row each, in columns
/// [`COLUMN_NAME`] and [`COLUMN_TYPE`]; no rows when the table does not exist. PostgreSQL and MySQL ask `information_schema.columns` (the
/// target's schema, or the connection's current schema / database when none is configured);
/// SQLite asks `pragma_table_info`. Expected plan: a catalog lookup by schema and table name.
pub fn table_columns(backend: Backend, target: &Target) -> Statement {
    let schema = SqlValue::Text(target.schema.clone().unwrap_or_default());
    let table = SqlValue::Text(target.table.clone());
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::Postgres => {
            w.push("SELECT column_name::text AS column_name, data_type::text AS column_type FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF(")
                .param(schema)
                .push(", ''), current_schema()) AND table_name = ")
                .param(table);
        }
        Backend::MySql => {
            w.push("SELECT CAST(column_name AS CHAR) AS column_name, CAST(data_type AS CHAR) AS column_type FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF(")
                .param(schema)
                .push(", ''), DATABASE()) AND table_name = ")
                .param(table);
        }
        Backend::Sqlite => {
            w.push("SELECT name AS column_name, type AS column_type FROM pragma_table_info(")
                .param(table)
                .push(")");
        }
    }
    w.finish()
}

/// `SELECT column FROM t WHERE column IS NOT NULL LIMIT $n`: a sample of stored values, for the
/// start-up check that SQLite timestamps are in the text form reaper compares (see
/// [`SQLITE_TIMESTAMP_FORMAT`](crate::sql::SQLITE_TIMESTAMP_FORMAT)). Read-only. Expected plan: a
/// scan (or the column's index) that stops at LIMIT: the first rows the table yields.
pub fn sample_column(backend: Backend, target: &Target, column: &str, limit: u32) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ")
        .ident(column)
        .push(" FROM ")
        .table(target)
        .push(" WHERE ")
        .ident(column)
        .push(" IS NOT NULL LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn schema_lookups_bind_the_names() {
        let job = crate::sql::test_support::job(&serde_json::json!({"all_rows": true}));
        expect![[r#"
            SELECT column_name::text AS column_name, data_type::text AS column_type FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF($1, ''), current_schema()) AND table_name = $2
            -- parameters: 'app', 'events'"#]]
        .assert_eq(&table_columns(Backend::Postgres, &job.target).to_string());
        expect![[r#"
            SELECT CAST(column_name AS CHAR) AS column_name, CAST(data_type AS CHAR) AS column_type FROM information_schema.columns WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ?
            -- parameters: 'app', 'events'"#]]
        .assert_eq(&table_columns(Backend::MySql, &job.target).to_string());
        expect![[r#"
            SELECT name AS column_name, type AS column_type FROM pragma_table_info(?)
            -- parameters: 'events'"#]]
        .assert_eq(&table_columns(Backend::Sqlite, &job.target).to_string());
    }
}
