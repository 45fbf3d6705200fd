//! Start-up check of the catalog against the real database: every target's table, primary key,
//! filterable columns and soft-delete column must exist. Reported with the config key path.
//!
//! Read-only: it queries the catalog views (`information_schema` on PostgreSQL and MySQL,
//! `pragma_table_info` on SQLite) and changes nothing.

use std::collections::BTreeSet;

use reaper_core::catalog::{Catalog, Target};
use reaper_core::config::{ConfigError, ConfigProblem};
use reaper_core::sql::Backend;
use reaper_core::value::SqlValue;

use crate::database::Database;
use crate::error::EngineError;

/// Checks every target; all problems are reported together.
pub async fn check_catalog(db: &Database, catalog: &Catalog) -> Result<(), CheckError> {
    let mut problems = Vec::new();
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
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Config(ConfigError { problems }))
    }
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

async fn table_columns(db: &Database, target: &Target) -> Result<BTreeSet<String>, EngineError> {
    let statement = match db.backend() {
        // No schema configured: the connection's current schema.
        Backend::Postgres => reaper_core::sql::Statement {
            sql: "SELECT column_name::text FROM information_schema.columns \
                  WHERE table_schema = COALESCE(NULLIF($1, ''), current_schema()) AND table_name = $2"
                .into(),
            params: vec![
                SqlValue::Text(target.schema.clone().unwrap_or_default()),
                SqlValue::Text(target.table.clone()),
            ],
        },
        Backend::Sqlite => reaper_core::sql::Statement {
            sql: "SELECT name FROM pragma_table_info(?)".into(),
            params: vec![SqlValue::Text(target.table.clone())],
        },
        // `schema` is the MySQL database; the connection's when absent.
        Backend::MySql => reaper_core::sql::Statement {
            sql: "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                  WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ?"
                .into(),
            params: vec![SqlValue::Text(target.schema.clone().unwrap_or_default()), SqlValue::Text(target.table.clone())],
        },
    };
    let rows = db.query_all(&statement).await.map_err(EngineError::from)?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0).map_err(EngineError::from))
        .collect()
}
