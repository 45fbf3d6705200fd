//! Start-up check of the catalog against the real database: every target's table, primary key,
//! filterable columns and soft-delete column must exist, and the relations must match the
//! database's foreign keys and indexes ([`crate::graph_check`]). Reported with the config key path.
//!
//! Read-only: it queries the catalog views (`information_schema` on PostgreSQL and MySQL,
//! `pragma_table_info` on SQLite) and changes nothing.

use std::collections::BTreeSet;

use chrono::NaiveDateTime;
use reaper_core::catalog::{Catalog, ColumnType, Target};
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
        let key = |field: &str| format!("targets.{}.{field}", target.name);
        if columns.is_empty() {
            let table = match &target.schema {
                Some(schema) => format!("{schema}.{}", target.table),
                None => target.table.clone(),
            };
            problems.push(ConfigProblem {
                key: key("table"),
                message: format!("table `{table}` does not exist in the database"),
            });
            continue;
        }
        present.insert(target.name.clone());
        let mut expect = |field: String, column: &str| {
            if !columns.contains(column) {
                problems.push(ConfigProblem {
                    key: key(&field),
                    message: format!(
                        "column `{column}` does not exist in table `{}`",
                        target.table
                    ),
                });
            }
        };
        expect("primary_key".into(), &target.primary_key);
        for column in target.columns.keys() {
            expect(format!("columns.{column}"), column);
        }
        if let Some(column) = &target.soft_delete_column {
            expect("soft_delete_column".into(), column);
        }
        if db.backend() == Backend::Sqlite {
            for (column, _) in target
                .columns
                .iter()
                .filter(|(name, kind)| **kind == ColumnType::Timestamp && columns.contains(*name))
            {
                if let Some(found) = sqlite_timestamp_mismatch(db, target, column).await? {
                    problems.push(ConfigProblem {
                        key: key(&format!("columns.{column}")),
                        message: format!(
                            "SQLite timestamps must be UTC text like `2026-01-31 08:00:00` (what CURRENT_TIMESTAMP writes) \
                             for reaper to compare them; found {found}"
                        ),
                    });
                }
            }
        }
    }
    crate::graph_check::check_relations(db, catalog, &present, &mut problems).await?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Config(ConfigError { problems }))
    }
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

/// The names of the target table's columns (empty when the table does not exist).
pub(crate) async fn table_columns(
    db: &Database,
    target: &Target,
) -> Result<BTreeSet<String>, EngineError> {
    let rows = db
        .query_all(&schema::table_columns(db.backend(), target))
        .await?;
    rows.iter()
        .map(|row| {
            row.try_get::<String>("", schema::COLUMN_NAME)
                .map_err(EngineError::from)
        })
        .collect()
}
