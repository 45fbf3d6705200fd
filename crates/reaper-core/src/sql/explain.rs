//! The plan guard's statements ([`crate::plan_guard`]): the database's plan for a batch's
//! selection, the table's size, and the index that would serve the filter (shown, never run).

use crate::catalog::Target;
use crate::sql::{Backend, SqlWriter, Statement, write_select_keys};
use crate::validate::{Predicate, ValidatedJob};
use crate::value::SqlValue;

/// The plan of the first batch's key selection ([`crate::sql::select_keys`] from the start):
/// PostgreSQL `EXPLAIN (FORMAT JSON)` (one row, one json column), SQLite `EXPLAIN QUERY PLAN`
/// (rows with a `detail` column), MySQL/MariaDB `EXPLAIN` (rows with `type` and `key`). Plans
/// only; reads no row.
pub fn batch_selection(backend: Backend, job: &ValidatedJob) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push(match backend {
        Backend::Postgres => "EXPLAIN (FORMAT JSON) ",
        Backend::Sqlite => "EXPLAIN QUERY PLAN ",
        Backend::MySql => "EXPLAIN ",
    });
    write_select_keys(&mut w, job, None, job.batch_size);
    w.finish()
}

/// The table's row count as the guard weighs it (one row, column `table_rows`): MySQL/MariaDB
/// the statistics' estimate (`information_schema.TABLES`, no table read); SQLite an exact count
/// stopping at `cap` (it keeps no estimate). PostgreSQL's comes with the physical walk's
/// `table_size`. Expected plan (SQLite): the smallest index, stopping at the cap.
pub fn table_rows(backend: Backend, target: &Target, cap: u64) -> Statement {
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::MySql => {
            w.push(
                "SELECT CAST(COALESCE(TABLE_ROWS, 0) AS SIGNED) AS table_rows FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ",
            );
            match &target.schema {
                Some(schema) => w.param(SqlValue::Text(schema.clone())),
                None => w.push("DATABASE()"),
            };
            w.push(" AND TABLE_NAME = ")
                .param(SqlValue::Text(target.table.clone()));
        }
        Backend::Sqlite | Backend::Postgres => {
            w.push("SELECT count(*) AS table_rows FROM (SELECT 1 FROM ")
                .table(target)
                .push(" LIMIT ")
                .param(SqlValue::Int(i64::try_from(cap).unwrap_or(i64::MAX)))
                .push(") AS counted");
        }
    }
    w.finish()
}

/// `CREATE INDEX reaper_<table>_<columns> ON t (<the filter's columns>)`: the index that lets the
/// filter find its rows, for a refusal's message. Text to show, never run (building an index is
/// the operator's decision: `CONCURRENTLY` on PostgreSQL, online DDL on MariaDB). `None` when
/// the job has no filter column.
pub fn suggested_index(backend: Backend, job: &ValidatedJob) -> Option<String> {
    let mut columns: Vec<&str> = Vec::new();
    for predicate in &job.predicates {
        let column = match predicate {
            Predicate::Compare { column, .. }
            | Predicate::In { column, .. }
            | Predicate::IsNull { column }
            | Predicate::NotNull { column } => column.as_str(),
        };
        if !columns.contains(&column) {
            columns.push(column);
        }
    }
    if columns.is_empty() {
        return None;
    }
    let target = &job.target;
    let name = format!("reaper_{}_{}", target.table, columns.join("_"));
    let mut w = SqlWriter::new(backend);
    w.push(match backend {
        Backend::Postgres => "CREATE INDEX CONCURRENTLY ",
        Backend::Sqlite | Backend::MySql => "CREATE INDEX ",
    });
    w.ident(&name).push(" ON ").table(target).push(" (");
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.ident(column);
    }
    w.push(")");
    Some(w.finish().sql)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::job;

    #[test]
    fn the_guard_explains_the_first_batch_and_names_the_fixing_index() {
        let job = job(&serde_json::json!({"filter": {"all": [
            {"column": "kind", "op": "eq", "value": "x"},
            {"column": "created_at", "op": "older_than", "value": "30d"},
            {"column": "kind", "op": "ne", "value": "y"}
        ]}}));
        expect![[r#"EXPLAIN (FORMAT JSON) SELECT "id"::int8 FROM "app"."events" WHERE ("kind" = $1 AND "created_at" < $2 AND "kind" <> $3) ORDER BY "id" LIMIT $4"#]]
            .assert_eq(batch_selection(Backend::Postgres, &job).sql());
        assert!(
            batch_selection(Backend::Sqlite, &job)
                .sql()
                .starts_with("EXPLAIN QUERY PLAN SELECT")
        );
        expect![[r#"CREATE INDEX CONCURRENTLY "reaper_events_kind_created_at" ON "app"."events" ("kind", "created_at")"#]]
            .assert_eq(&suggested_index(Backend::Postgres, &job).unwrap());
        expect![
            "CREATE INDEX `reaper_events_kind_created_at` ON `app`.`events` (`kind`, `created_at`)"
        ]
        .assert_eq(&suggested_index(Backend::MySql, &job).unwrap());
        let everything = crate::sql::test_support::job(&serde_json::json!({"all_rows": true}));
        assert_eq!(suggested_index(Backend::Sqlite, &everything), None);
        expect![[r#"SELECT CAST(COALESCE(TABLE_ROWS, 0) AS SIGNED) AS table_rows FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"#]]
            .assert_eq(table_rows(Backend::MySql, &job.target, 10).sql());
    }
}
