//! Start-up check of the relations between targets against the database's real foreign keys
//! and indexes (issue 12), part of [`crate::schema_check::check_catalog`]:
//!
//! - every table whose foreign key refers to a target's table must be declared as a child of
//!   that target: otherwise `RESTRICT`/`NO ACTION` would make a job die mid-way on a
//!   foreign-key violation, and `CASCADE`/`SET NULL` would make the database change child rows
//!   inside each batch, unbounded. The problem names the referencing table, its column and its
//!   `ON DELETE` action, and shows the configuration to add;
//! - every declared child column must exist (and a declared parent column) and lead an index, or each parent batch scans the child
//!   table; the problem shows the `CREATE INDEX` to run (`allow_unindexed` accepts it).
//!
//! Read-only: the statements are in `reaper_core::sql::schema`.

use std::collections::BTreeSet;

use reaper_core::catalog::{Catalog, Target};
use reaper_core::config::ConfigProblem;
use reaper_core::graph::{Action, Cascade, Relation};
use reaper_core::sql::schema::{self, OnDelete};

use crate::database::Database;
use crate::error::EngineError;

/// A foreign key in the database that refers to a target's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencingKey {
    /// The referencing table's schema (empty on SQLite).
    pub schema: String,
    /// The referencing table.
    pub table: String,
    /// Its first column.
    pub column: String,
    /// Its `ON DELETE` action.
    pub on_delete: OnDelete,
}

/// Adds to `problems` every undeclared referencing table and every unindexed child column of
/// the targets in `present` (those whose table exists; the others are reported already).
pub async fn check_relations(
    db: &Database,
    catalog: &Catalog,
    present: &BTreeSet<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Result<(), EngineError> {
    for target in catalog.targets().filter(|t| present.contains(&t.name)) {
        let keys = referencing_keys(db, target).await?;
        check_cascades(db, catalog, target, &keys, problems).await?;
        for key in keys {
            let accepted = is_accepted_cascade(catalog, target, &key);
            match declared(catalog, target, &key) {
                None if accepted && key.on_delete == OnDelete::Cascade => {}
                None => problems.push(undeclared(catalog, target, &key)),
                Some((index, relation)) if relation.action == Action::SoftDelete => {
                    problems.push(soft_child_with_a_key(target, relation, index, &key));
                }
                Some(_) => {}
            }
        }
        for (index, relation) in catalog.children(&target.name).enumerate() {
            let Some(child) = catalog.get(&relation.child) else {
                continue;
            };
            if present.contains(&child.name) {
                check_child(db, target, child, relation, index, problems).await?;
            }
        }
    }
    Ok(())
}

/// Every cascade `target` accepts matches an `ON DELETE CASCADE` foreign key among `keys` (the
/// keys referring to `target`), and its column leads an index (the database finds the
/// cascaded rows through it, inside reaper's batch).
async fn check_cascades(
    db: &Database,
    catalog: &Catalog,
    target: &Target,
    keys: &[ReferencingKey],
    problems: &mut Vec<ConfigProblem>,
) -> Result<(), EngineError> {
    for (index, cascade) in catalog.cascades(&target.name).enumerate() {
        let at = format!("targets.{}.cascades[{index}]", target.name);
        let key = keys.iter().find(|key| matches_cascade(cascade, key));
        match key.map(|key| key.on_delete) {
            Some(OnDelete::Cascade) => {}
            Some(other) => problems.push(ConfigProblem {
                key: at,
                message: format!(
                    "the foreign key of `{}.{}` on `{}` is ON DELETE {other}, not CASCADE: \
                     the database would not delete its rows; declare `{}` as a child instead",
                    cascade.table, cascade.column, target.table, cascade.table
                ),
            }),
            None => problems.push(ConfigProblem {
                key: at,
                message: format!(
                    "no foreign key of `{}.{}` refers to `{}` with ON DELETE CASCADE; \
                     remove the declaration or fix its table and column",
                    cascade.table, cascade.column, target.table
                ),
            }),
        }
        if key.is_none() {
            continue;
        }
        let table = cascaded_table(target, cascade);
        if leading_indexes(db, &table, &cascade.column).await? == 0 {
            problems.push(ConfigProblem {
                key: format!("targets.{}.cascades[{index}].column", target.name),
                message: format!(
                    "column `{}` of table `{}` leads no index, so the database's cascade from every batch of `{}` \
                     would scan `{}`; run `{};`",
                    cascade.column,
                    cascade.table,
                    target.name,
                    cascade.table,
                    schema::create_index_hint(db.backend(), &table, &cascade.column)
                ),
            });
        }
    }
    Ok(())
}

/// Whether `target` declares a cascade that covers the foreign key.
fn is_accepted_cascade(catalog: &Catalog, target: &Target, key: &ReferencingKey) -> bool {
    catalog
        .cascades(&target.name)
        .any(|cascade| matches_cascade(cascade, key))
}

/// Whether the foreign key is the cascade's: same table and column (and schema when the
/// cascade names one).
fn matches_cascade(cascade: &Cascade, key: &ReferencingKey) -> bool {
    cascade.table == key.table
        && cascade.column == key.column
        && cascade.schema.as_ref().is_none_or(|s| *s == key.schema)
}

/// The cascaded table in the shape the schema statements take: the parent target with the
/// cascade's schema and table (the statements read only those two).
fn cascaded_table(parent: &Target, cascade: &Cascade) -> Target {
    Target {
        schema: cascade.schema.clone(),
        table: cascade.table.clone(),
        ..parent.clone()
    }
}

/// The relation's columns exist (the child's column in the child's table, the parent column in
/// the parent's), and the child column leads an index unless the relation allows a scan.
async fn check_child(
    db: &Database,
    parent: &Target,
    child: &Target,
    relation: &Relation,
    index: usize,
    problems: &mut Vec<ConfigProblem>,
) -> Result<(), EngineError> {
    let at = format!("targets.{}.children[{index}]", relation.parent);
    let mut missing = |field: &str, column: &str, table: &str| {
        problems.push(ConfigProblem {
            key: format!("{at}.{field}"),
            message: format!("column `{column}` does not exist in table `{table}`"),
        })
    };
    if !crate::schema_check::table_columns(db, child)
        .await?
        .contains_key(&relation.column)
    {
        missing("column", &relation.column, &child.table);
        return Ok(());
    }
    if relation.parent_column != parent.primary_key
        && !crate::schema_check::table_columns(db, parent)
            .await?
            .contains_key(&relation.parent_column)
    {
        missing("parent_column", &relation.parent_column, &parent.table);
    }
    if !relation.allow_unindexed && leading_indexes(db, child, &relation.column).await? == 0 {
        problems.push(unindexed(db, child, relation, index));
    }
    Ok(())
}

/// The foreign keys that refer to `target`'s table.
pub async fn referencing_keys(
    db: &Database,
    target: &Target,
) -> Result<Vec<ReferencingKey>, EngineError> {
    let rows = db
        .query_all(&schema::referencing_keys(db.backend(), target))
        .await?;
    rows.iter()
        .map(|row| {
            let [schema, table, column, on_delete] = schema::REFERENCING_COLUMNS
                .map(|name| row.try_get::<String>("", name).map_err(EngineError::from));
            let on_delete = on_delete?;
            let on_delete = OnDelete::parse(&on_delete).ok_or_else(|| {
                EngineError::Corrupt(format!("unknown ON DELETE action `{on_delete}`"))
            })?;
            Ok(ReferencingKey {
                schema: schema?,
                table: table?,
                column: column?,
                on_delete,
            })
        })
        .collect()
}

async fn leading_indexes(db: &Database, target: &Target, column: &str) -> Result<i64, EngineError> {
    let rows = db
        .query_all(&schema::leading_indexes(db.backend(), target, column))
        .await?;
    match rows.first() {
        Some(row) => Ok(row.try_get::<i64>("", schema::INDEX_COUNT)?),
        None => Ok(0),
    }
}

/// The declared relation of `target` (and its index among `target`'s children) that covers the
/// foreign key: its child target is the referencing table (in the same schema when the child
/// names one) and its column is the key's.
fn declared<'c>(
    catalog: &'c Catalog,
    target: &'c Target,
    key: &ReferencingKey,
) -> Option<(usize, &'c Relation)> {
    catalog
        .children(&target.name)
        .enumerate()
        .find(|(_, relation)| {
            relation.column == key.column
                && catalog.get(&relation.child).is_some_and(|child| {
                    child.table == key.table
                        && child.schema.as_ref().is_none_or(|s| *s == key.schema)
                })
        })
}

/// A `soft_delete` child whose rows a foreign key ties to the parent: a hard delete of the
/// parent leaves the soft-deleted rows referring to it, which the database refuses (`RESTRICT`,
/// `NO ACTION`) or answers by changing them inside the parent's batch, unbounded.
fn soft_child_with_a_key(
    target: &Target,
    relation: &Relation,
    index: usize,
    key: &ReferencingKey,
) -> ConfigProblem {
    ConfigProblem {
        key: format!("targets.{}.children[{index}].action", target.name),
        message: format!(
            "`soft_delete` keeps rows of `{}` that refer to `{}` through a foreign key on `{}` (ON DELETE {}): \
             a hard delete of `{}` would leave them referring to a removed row; declare `delete` or `set_null`, \
             or drop the constraint",
            key.table, target.table, relation.column, key.on_delete, target.name
        ),
    }
}

fn undeclared(catalog: &Catalog, target: &Target, key: &ReferencingKey) -> ConfigProblem {
    let consequence = match key.on_delete {
        OnDelete::Cascade => "the database would delete its rows inside each batch, unbounded",
        OnDelete::SetNull | OnDelete::SetDefault => {
            "the database would rewrite its rows inside each batch, unbounded"
        }
        OnDelete::Restrict | OnDelete::NoAction => {
            "a job would die mid-way on a foreign-key violation"
        }
    };
    let action = match key.on_delete {
        OnDelete::SetNull => "set_null",
        _ => "delete",
    };
    // A cascade known to be small may stay the database's, bounded per batch.
    let small_cascade = if key.on_delete == OnDelete::Cascade {
        format!(
            "\n    or, when each row of `{0}` has few of them, accept the database's cascade:\n    \
             [[targets.{0}.cascades]]\n    table = \"{1}\"\n    column = \"{2}\"\n    max_rows_per_batch = 1000",
            target.name, key.table, key.column
        )
    } else {
        String::new()
    };
    let child = catalog.targets().find(|t| t.table == key.table);
    let (child_name, declare_target) = match child {
        Some(child) => (child.name.clone(), String::new()),
        None => (
            key.table.clone(),
            format!(
                "\n    [targets.{0}]\n    table = \"{0}\"\n    primary_key = \"…\"\n    key_type = \"…\"",
                key.table
            ),
        ),
    };
    ConfigProblem {
        key: format!("targets.{}.children", target.name),
        message: format!(
            "table `{}` refers to `{}` through column `{}` (ON DELETE {}) but is not declared as a child; \
             {consequence}. Add:{declare_target}\n    [[targets.{}.children]]\n    target = \"{child_name}\"\n    \
             column = \"{}\"\n    action = \"{action}\"{small_cascade}",
            key.table, target.table, key.column, key.on_delete, target.name, key.column
        ),
    }
}

fn unindexed(db: &Database, child: &Target, relation: &Relation, index: usize) -> ConfigProblem {
    ConfigProblem {
        key: format!("targets.{}.children[{index}].column", relation.parent),
        message: format!(
            "column `{}` of table `{}` leads no index, so every batch of `{}` would scan `{}` for its children; \
             run `{};` or set allow_unindexed = true",
            relation.column,
            child.table,
            relation.parent,
            child.table,
            schema::create_index_hint(db.backend(), child, &relation.column)
        ),
    }
}
