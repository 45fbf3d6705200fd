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

/// Columns read back by [`referencing_keys`]: one row per foreign key that refers to the table.
pub const REFERENCING_COLUMNS: [&str; 4] = [
    "referencing_schema",
    "referencing_table",
    "referencing_column",
    "on_delete",
];

/// Every foreign key that refers to the target's table, one row each: the referencing table's
/// schema (empty on SQLite), its name, its first column, and the `ON DELETE` action as written
/// in SQL (`CASCADE`, `SET NULL`, `SET DEFAULT`, `RESTRICT`, `NO ACTION`). Read-only.
///
/// - PostgreSQL: `pg_constraint` (`contype = 'f'`, `confrelid` = the target's table found in
///   `pg_class` by name and schema). Expected plan: catalog index lookups.
/// - MySQL/MariaDB: `information_schema.KEY_COLUMN_USAGE` joined to
///   `REFERENTIAL_CONSTRAINTS` by constraint, filtered on the referenced table. Expected plan:
///   information_schema's own lookup by schema and table.
/// - SQLite: `pragma_foreign_key_list` of every table in `sqlite_schema` (foreign keys are only
///   known from the referencing side). Expected plan: a scan of the schema table; one pragma per
///   table.
pub fn referencing_keys(backend: Backend, target: &Target) -> Statement {
    let schema = SqlValue::Text(target.schema.clone().unwrap_or_default());
    let table = SqlValue::Text(target.table.clone());
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::Postgres => {
            w.push(
                "SELECT n.nspname::text AS referencing_schema, c.relname::text AS referencing_table, \
                 a.attname::text AS referencing_column, CASE k.confdeltype WHEN 'c' THEN 'CASCADE' \
                 WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' WHEN 'r' THEN 'RESTRICT' \
                 ELSE 'NO ACTION' END AS on_delete FROM pg_constraint AS k \
                 JOIN pg_class AS c ON c.oid = k.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] \
                 WHERE k.contype = 'f' AND k.confrelid = (SELECT p.oid FROM pg_class AS p \
                 JOIN pg_namespace AS pn ON pn.oid = p.relnamespace WHERE p.relname = ",
            )
            .param(table)
            .push(" AND pn.nspname = COALESCE(NULLIF(")
            .param(schema)
            .push(", ''), current_schema())) ORDER BY 2, 3");
        }
        Backend::MySql => {
            w.push(
                "SELECT CAST(u.table_schema AS CHAR) AS referencing_schema, CAST(u.table_name AS CHAR) AS referencing_table, \
                 CAST(u.column_name AS CHAR) AS referencing_column, CAST(r.delete_rule AS CHAR) AS on_delete \
                 FROM information_schema.KEY_COLUMN_USAGE AS u JOIN information_schema.REFERENTIAL_CONSTRAINTS AS r \
                 ON r.constraint_schema = u.constraint_schema AND r.constraint_name = u.constraint_name \
                 AND r.table_name = u.table_name WHERE u.ordinal_position = 1 \
                 AND u.referenced_table_schema = COALESCE(NULLIF(",
            )
            .param(schema)
            .push(", ''), DATABASE()) AND u.referenced_table_name = ")
            .param(table)
            .push(" ORDER BY 2, 3");
        }
        Backend::Sqlite => {
            w.push(
                "SELECT '' AS referencing_schema, m.name AS referencing_table, f.\"from\" AS referencing_column, \
                 f.on_delete AS on_delete FROM sqlite_schema AS m, pragma_foreign_key_list(m.name) AS f \
                 WHERE m.type = 'table' AND f.seq = 0 AND f.\"table\" = ",
            )
            .param(table)
            .push(" COLLATE NOCASE ORDER BY 2, 3");
        }
    }
    w.finish()
}

/// A foreign key's `ON DELETE` action, as [`referencing_keys`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// `CASCADE`: the database deletes the referencing rows.
    Cascade,
    /// `SET NULL`: the database nulls the referencing column.
    SetNull,
    /// `SET DEFAULT`: the database sets the referencing column to its default.
    SetDefault,
    /// `RESTRICT`: the delete fails while referencing rows exist.
    Restrict,
    /// `NO ACTION` (the default): the delete fails at the statement's end while they exist.
    NoAction,
}

impl OnDelete {
    /// Reads the action as the catalogs spell it (any case); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "CASCADE" => Some(OnDelete::Cascade),
            "SET NULL" => Some(OnDelete::SetNull),
            "SET DEFAULT" => Some(OnDelete::SetDefault),
            "RESTRICT" => Some(OnDelete::Restrict),
            "NO ACTION" => Some(OnDelete::NoAction),
            _ => None,
        }
    }

    /// The SQL words.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
            OnDelete::SetDefault => "SET DEFAULT",
            OnDelete::Restrict => "RESTRICT",
            OnDelete::NoAction => "NO ACTION",
        }
    }
}

impl std::fmt::Display for OnDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Column read back by [`leading_indexes`].
pub const INDEX_COUNT: &str = "index_count";

/// How many indexes of the target's table have `column` as their first column, in one row's
/// [`INDEX_COUNT`]. Read-only. PostgreSQL: `pg_index` by `indkey[0]`; MySQL/MariaDB:
/// `information_schema.STATISTICS` at `seq_in_index = 1`; SQLite: `pragma_index_list` ×
/// `pragma_index_info` at `seqno = 0`. Expected plan: catalog lookups by table.
pub fn leading_indexes(backend: Backend, target: &Target, column: &str) -> Statement {
    let schema = SqlValue::Text(target.schema.clone().unwrap_or_default());
    let table = SqlValue::Text(target.table.clone());
    let column = SqlValue::Text(column.to_owned());
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::Postgres => {
            w.push(
                "SELECT count(*) AS index_count FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid \
                 JOIN pg_namespace AS n ON n.oid = c.relnamespace \
                 JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE c.relname = ",
            )
            .param(table)
            .push(" AND n.nspname = COALESCE(NULLIF(")
            .param(schema)
            .push(", ''), current_schema()) AND a.attname = ")
            .param(column);
        }
        Backend::MySql => {
            w.push(
                "SELECT count(*) AS index_count FROM information_schema.STATISTICS WHERE seq_in_index = 1 \
                 AND table_schema = COALESCE(NULLIF(",
            )
            .param(schema)
            .push(", ''), DATABASE()) AND table_name = ")
            .param(table)
            .push(" AND column_name = ")
            .param(column);
        }
        Backend::Sqlite => {
            w.push("SELECT count(*) AS index_count FROM pragma_index_list(")
                .param(table)
                .push(") AS l, pragma_index_info(l.name) AS i WHERE i.seqno = 0 AND i.name = ")
                .param(column);
        }
    }
    w.finish()
}

/// The `CREATE INDEX` an operator runs so that `column` of the target leads an index, as shown
/// by the start-up check (never run by reaper). Identifiers quoted; the index is named
/// `TABLE_COLUMN_idx`.
pub fn create_index_hint(backend: Backend, target: &Target, column: &str) -> String {
    let name = format!("{}_{column}_idx", target.table);
    let mut w = SqlWriter::new(backend);
    w.push("CREATE INDEX ")
        .ident(&name)
        .push(" ON ")
        .table(target)
        .push(" (")
        .ident(column)
        .push(")");
    w.finish().sql
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

    #[test]
    fn foreign_key_and_index_lookups_bind_the_names() {
        let job = crate::sql::test_support::job(&serde_json::json!({"all_rows": true}));
        for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
            let keys = referencing_keys(backend, &job.target);
            assert!(
                keys.params().contains(&SqlValue::Text("events".into())),
                "{keys}"
            );
            for column in REFERENCING_COLUMNS {
                assert!(keys.sql().contains(&format!("AS {column}")), "{keys}");
            }
            let indexes = leading_indexes(backend, &job.target, "user_id");
            assert!(
                indexes.params().contains(&SqlValue::Text("user_id".into())),
                "{indexes}"
            );
            assert!(indexes.sql().contains(INDEX_COUNT), "{indexes}");
        }
        expect![[r#"
            SELECT '' AS referencing_schema, m.name AS referencing_table, f."from" AS referencing_column, f.on_delete AS on_delete FROM sqlite_schema AS m, pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table' AND f.seq = 0 AND f."table" = ? COLLATE NOCASE ORDER BY 2, 3
            -- parameters: 'events'"#]]
        .assert_eq(&referencing_keys(Backend::Sqlite, &job.target).to_string());
        assert_eq!(
            create_index_hint(Backend::Postgres, &job.target, "user_id"),
            r#"CREATE INDEX "events_user_id_idx" ON "app"."events" ("user_id")"#
        );
        for action in [
            OnDelete::Cascade,
            OnDelete::SetNull,
            OnDelete::SetDefault,
            OnDelete::Restrict,
            OnDelete::NoAction,
        ] {
            assert_eq!(
                OnDelete::parse(&action.as_str().to_lowercase()),
                Some(action)
            );
        }
        assert_eq!(OnDelete::parse("CASCADE "), None);
        assert_eq!(
            create_index_hint(Backend::MySql, &job.target, "user_id"),
            "CREATE INDEX `events_user_id_idx` ON `app`.`events` (`user_id`)"
        );
    }
}
