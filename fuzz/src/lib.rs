//! What the fuzz targets share: the catalog jobs are checked against, and the planner's
//! statement checker.

use std::collections::{BTreeMap, BTreeSet};

use reaper_core::catalog::{Catalog, ColumnType, KeyType, Mode, Target};
use reaper_core::lifecycle::JobState;
use reaper_core::sql::{Backend, Statement};

#[path = "../../crates/reaper-core/src/sql_tokens.rs"]
mod sql_tokens;

/// The demo's kind of catalog: `events` (int key, every column type, a soft-delete column, a
/// schema) and `tokens` (uuid key), with names that need quoting.
pub fn catalog() -> Catalog {
    let target = |name: &str, key_type: KeyType, columns: &[(&str, ColumnType)]| Target {
        name: name.into(),
        schema: Some("app".into()),
        table: format!("{name} \"tbl`"),
        primary_key: "id".into(),
        key_type,
        columns: columns
            .iter()
            .map(|(column, column_type)| ((*column).to_owned(), *column_type))
            .collect::<BTreeMap<_, _>>(),
        default_mode: Mode::Hard,
        batch_size: 100,
        max_batch_size: 1_000,
        soft_delete_column: Some("deleted_at".into()),
        max_rows: 1_000_000,
        max_attempts: None,
        throttle: Default::default(),
    };
    Catalog::new([
        target(
            "events",
            KeyType::Int,
            &[
                ("tenant_id", ColumnType::Int),
                ("kind", ColumnType::Text),
                ("created_at", ColumnType::Timestamp),
                ("flag", ColumnType::Bool),
                ("owner", ColumnType::Uuid),
                ("we\"ird`name", ColumnType::Text),
            ],
        ),
        target("tokens", KeyType::Uuid, &[("user_id", ColumnType::Int)]),
    ])
}

/// Panics unless `statement` binds every value: its placeholders are exactly its parameters,
/// every quoted identifier is one of `names`, and every string literal one of reaper's fixed
/// words.
pub fn check_statement(backend: Backend, statement: &Statement, names: &BTreeSet<String>) {
    let sql = statement.sql();
    let (idents, literals, placeholders) = match backend {
        Backend::Postgres => sql_tokens::tokens(sql, '"', '$'),
        Backend::Sqlite => sql_tokens::tokens(sql, '"', '?'),
        Backend::MySql => sql_tokens::tokens(sql, '`', '?'),
    };
    for ident in &idents {
        assert!(names.contains(ident), "identifier {ident:?} in {sql}");
    }
    for literal in &literals {
        assert!(
            literal == "[]" || JobState::ALL.iter().any(|state| state.as_str() == literal),
            "literal {literal:?} in {sql}"
        );
    }
    assert_eq!(placeholders, statement.params().len(), "{sql}");
}
