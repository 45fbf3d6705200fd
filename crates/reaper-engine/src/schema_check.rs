//! Start-up check of the catalog against the real database: every target's table, primary key,
//! filterable columns and soft-delete column must exist, a declared type must fit the
//! database column's (a `bigint` declared `text` would make every job fail with
//! `operator does not exist: bigint = text`), and the relations must match the database's
//! foreign keys and indexes ([`crate::graph_check`]). Reported with the config key path.
//!
//! Read-only: it queries the catalog views (`information_schema` on PostgreSQL and MySQL,
//! `pragma_table_info` on SQLite) and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use reaper_core::catalog::{Catalog, ColumnType, KeyType, Target};
use reaper_core::config::{ConfigError, ConfigProblem};
use reaper_core::sql::{Backend, SQLITE_TIMESTAMP_FORMAT, schema};

use crate::database::Database;
use crate::error::EngineError;

/// Checks every target; all problems are reported together.
pub async fn check_catalog(db: &Database, catalog: &Catalog) -> Result<(), CheckError> {
    let mut problems = Vec::new();
    let mut present = BTreeSet::new();
    for target in catalog.targets() {
        let columns = table_columns(db, target).await?;
        if columns.is_empty() {
            let table = match &target.schema {
                Some(schema) => format!("{schema}.{}", target.table),
                None => target.table.clone(),
            };
            problems.push(ConfigProblem {
                key: config_key(target, "table"),
                message: format!("table `{table}` does not exist in the database"),
            });
            continue;
        }
        present.insert(target.name.clone());
        problems.extend(column_problems(db.backend(), target, &columns));
        if db.backend() == Backend::Sqlite {
            problems.extend(sqlite_timestamp_problems(db, target, &columns).await?);
        }
    }
    crate::graph_check::check_relations(db, catalog, &present, &mut problems).await?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Config(ConfigError { problems }))
    }
}

/// The config key path of one of `target`'s fields.
fn config_key(target: &Target, field: &str) -> String {
    format!("targets.{}.{field}", target.name)
}

/// Every column the target names (key, filterable, soft-delete) that the table lacks, or
/// whose database type does not fit the declared one.
fn column_problems(
    backend: Backend,
    target: &Target,
    columns: &BTreeMap<String, String>,
) -> Vec<ConfigProblem> {
    let key_type = match target.key_type {
        KeyType::Int => ColumnType::Int,
        KeyType::Text => ColumnType::Text,
        KeyType::Uuid => ColumnType::Uuid,
    };
    let named = std::iter::once(("primary_key".to_owned(), &target.primary_key, key_type))
        .chain(
            (target.columns.iter())
                .map(|(column, declared)| (format!("columns.{column}"), column, *declared)),
        )
        .chain((target.soft_delete_column.iter()).map(|column| {
            (
                "soft_delete_column".to_owned(),
                column,
                ColumnType::Timestamp,
            )
        }));
    let mut problems = Vec::new();
    for (field, column, declared) in named {
        let Some(found) = columns.get(column) else {
            problems.push(ConfigProblem {
                key: config_key(target, &field),
                message: format!(
                    "column `{column}` does not exist in table `{}`",
                    target.table
                ),
            });
            continue;
        };
        if let Some(actual) = family(backend, found)
            && !fits(declared, actual)
        {
            problems.push(ConfigProblem {
                key: config_key(target, &field),
                message: format!(
                    "declared `{declared}`, but column `{column}` of table `{}` is `{found}` ({}); \
                     declare it `{actual}`",
                    target.table, backend
                ),
            });
        }
    }
    problems
}

/// The SQLite timestamp columns of `target` whose stored values reaper could not compare.
async fn sqlite_timestamp_problems(
    db: &Database,
    target: &Target,
    columns: &BTreeMap<String, String>,
) -> Result<Vec<ConfigProblem>, EngineError> {
    let mut problems = Vec::new();
    for (column, _) in target
        .columns
        .iter()
        .filter(|(name, kind)| **kind == ColumnType::Timestamp && columns.contains_key(*name))
    {
        if let Some(found) = sqlite_timestamp_mismatch(db, target, column).await? {
            problems.push(ConfigProblem {
                key: config_key(target, &format!("columns.{column}")),
                message: format!(
                    "SQLite timestamps must be UTC text like `2026-01-31 08:00:00` (what CURRENT_TIMESTAMP writes) \
                     for reaper to compare them; found {found}"
                ),
            });
        }
    }
    Ok(problems)
}

/// Rows sampled per SQLite timestamp column at start-up.
const TIMESTAMP_SAMPLE: u32 = 1_000;

/// SQLite has no timestamp type, so reaper compares timestamps as text; a column holding another
/// format (ISO `T`, a zone suffix, unix seconds) would compare wrongly — `gt` filters would match
/// rows they should not. Looks at a sample of stored values; `Some(description)` of the first
/// value that is not in [`SQLITE_TIMESTAMP_FORMAT`].
async fn sqlite_timestamp_mismatch(
    db: &Database,
    target: &Target,
    column: &str,
) -> Result<Option<String>, EngineError> {
    let rows = db
        .query_all(&schema::sample_column(
            Backend::Sqlite,
            target,
            column,
            TIMESTAMP_SAMPLE,
        ))
        .await?;
    for row in &rows {
        match row.try_get_by_index::<String>(0) {
            Ok(text) if NaiveDateTime::parse_from_str(&text, SQLITE_TIMESTAMP_FORMAT).is_ok() => {}
            Ok(text) => return Ok(Some(format!("`{text}`"))),
            Err(_) => return Ok(Some("a value that is not text (unix seconds?)".into())),
        }
    }
    Ok(None)
}

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The catalog does not match the database.
    #[error(transparent)]
    Config(ConfigError),
    /// The database could not be asked.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The catalog type a database column's type belongs to, when it clearly belongs to one
/// (`None`: a type reaper does not judge, such as an enum or a domain, or SQLite's untyped
/// columns).
fn family(backend: Backend, found: &str) -> Option<ColumnType> {
    let found = found.to_ascii_lowercase();
    match backend {
        Backend::Postgres => match found.as_str() {
            "smallint" | "integer" | "bigint" => Some(ColumnType::Int),
            "text" | "character varying" | "character" => Some(ColumnType::Text),
            "boolean" => Some(ColumnType::Bool),
            "uuid" => Some(ColumnType::Uuid),
            "timestamp with time zone" | "timestamp without time zone" | "date" => {
                Some(ColumnType::Timestamp)
            }
            _ => None,
        },
        Backend::MySql => match found.as_str() {
            // tinyint is also MySQL's boolean: not judged.
            "smallint" | "mediumint" | "int" | "integer" | "bigint" => Some(ColumnType::Int),
            "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" => Some(ColumnType::Text),
            "datetime" | "timestamp" | "date" => Some(ColumnType::Timestamp),
            _ => None,
        },
        // Type affinity: only INTEGER and TEXT affinities are judged; timestamps and uuids are
        // text there, and their values are checked separately.
        Backend::Sqlite => {
            if found.contains("int") {
                Some(ColumnType::Int)
            } else if found.contains("char") || found.contains("clob") || found.contains("text") {
                Some(ColumnType::Text)
            } else {
                None
            }
        }
    }
}

/// Whether a column of `actual` type may be declared `declared`.
fn fits(declared: ColumnType, actual: ColumnType) -> bool {
    declared == actual
        // Text columns hold uuids and (SQLite) timestamps; char(36) holds uuids (MySQL).
        || (actual == ColumnType::Text
            && matches!(declared, ColumnType::Uuid | ColumnType::Timestamp))
        // Integer columns hold booleans (MySQL, SQLite).
        || (actual == ColumnType::Int && declared == ColumnType::Bool)
}

/// Each column of the target's table with its type as the database names it (empty when the
/// table does not exist).
pub(crate) async fn table_columns(
    db: &Database,
    target: &Target,
) -> Result<BTreeMap<String, String>, EngineError> {
    let columns = crate::archive::table_columns(db.connection(), db.backend(), target).await?;
    Ok(columns
        .into_iter()
        .map(|column| (column.name, column.data_type))
        .collect())
}
