//! Relations between targets (issue 12) against real SQLite, PostgreSQL and MariaDB: the
//! start-up check reads the database's foreign keys and indexes and holds the declared
//! relations to them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use reaper_core::catalog::{Catalog, Target};
use reaper_core::graph::{Action, Cascade, Relation};
use reaper_core::span::Span;
use reaper_core::sql::Backend;
use reaper_engine::Database;
use reaper_engine::graph_check;
use reaper_engine::schema_check;
use reaper_testkit::TestDatabase;
use reaper_testkit::engine::{TargetFixture, connect, relation};

reaper_testkit::on_every_backend!(
    foreign_keys_are_read_with_their_on_delete_action,
    a_soft_delete_child_tied_by_a_foreign_key_is_refused,
    an_undeclared_referencing_table_is_refused_with_the_config_to_add,
    a_declared_graph_passes_and_an_unindexed_child_column_is_refused_with_its_create_index,
    a_database_cascade_passes_only_when_accepted_as_a_real_indexed_cascade,
);

/// users ← sessions (CASCADE), users ← orders (RESTRICT) ← order_items (SET NULL), and
/// analytics (a `user_id` without a constraint or an index). Foreign-key columns are indexed.
async fn shop(backend: Backend) -> (TestDatabase, Database) {
    let test = TestDatabase::new(backend).await;
    for ddl in [
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(100))",
        "CREATE TABLE sessions (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, deleted_at TIMESTAMP NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT)",
        "CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT, \
         FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE SET NULL)",
        "CREATE TABLE analytics (id BIGINT PRIMARY KEY, user_id BIGINT, deleted_at TIMESTAMP NULL)",
        "CREATE INDEX sessions_user_id ON sessions (user_id)",
        "CREATE INDEX orders_user_id ON orders (user_id)",
        "CREATE INDEX order_items_order_id ON order_items (order_id)",
    ] {
        test.exec(ddl).await;
    }
    let db = connect(&test, Span::from_millis(50)).await;
    (test, db)
}

fn targets() -> Vec<Target> {
    ["users", "sessions", "orders", "order_items", "analytics"]
        .map(Target::fixture)
        .into()
}

fn graph() -> Vec<Relation> {
    vec![
        relation("users", "sessions", "user_id", Action::Delete),
        relation("users", "orders", "user_id", Action::Delete),
        relation("orders", "order_items", "order_id", Action::SetNull),
        relation("users", "analytics", "user_id", Action::Delete),
    ]
}

async fn check_error(db: &Database, catalog: &Catalog) -> String {
    schema_check::check_catalog(db, catalog)
        .await
        .expect_err("the check must refuse")
        .to_string()
}

async fn foreign_keys_are_read_with_their_on_delete_action(backend: Backend) {
    let (_test, db) = shop(backend).await;
    let users = Target::fixture("users");
    let found: Vec<(String, String, String)> = graph_check::referencing_keys(&db, &users)
        .await
        .unwrap()
        .into_iter()
        .map(|key| (key.table, key.column, key.on_delete.to_string()))
        .collect();
    let expected = [
        ("orders", "user_id", "RESTRICT"),
        ("sessions", "user_id", "CASCADE"),
    ]
    .map(|(t, c, a)| (t.to_owned(), c.to_owned(), a.to_owned()));
    assert_eq!(found, expected);
    let orders = graph_check::referencing_keys(&db, &Target::fixture("orders"))
        .await
        .unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (orders[0].table.as_str(), orders[0].on_delete.as_str()),
        ("order_items", "SET NULL")
    );
    let none = graph_check::referencing_keys(&db, &Target::fixture("analytics"))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

async fn an_undeclared_referencing_table_is_refused_with_the_config_to_add(backend: Backend) {
    let (_test, db) = shop(backend).await;
    let only_users = Catalog::new([Target::fixture("users")]);
    let error = check_error(&db, &only_users).await;
    for expected in [
        "targets.users.children: table `sessions` refers to `users` through column `user_id` (ON DELETE CASCADE) \
         but is not declared as a child; the database would delete its rows inside each batch, unbounded. Add:\n    \
         [targets.sessions]\n    table = \"sessions\"",
        "[[targets.users.children]]\n    target = \"sessions\"\n    column = \"user_id\"\n    action = \"delete\"",
        "table `orders` refers to `users` through column `user_id` (ON DELETE RESTRICT) but is not declared as a \
         child; a job would die mid-way on a foreign-key violation",
    ] {
        assert!(error.contains(expected), "{expected} missing in {error}");
    }
    // Declared in the catalog but not as a child: the suggestion names the existing target.
    let catalog = Catalog::new(targets())
        .with_relations(graph()[..2].to_vec())
        .unwrap();
    let error = check_error(&db, &catalog).await;
    assert!(
        error.contains(
            "targets.orders.children: table `order_items` refers to `orders` through column `order_id` \
             (ON DELETE SET NULL) but is not declared as a child; the database would rewrite its rows inside \
             each batch, unbounded. Add:\n    [[targets.orders.children]]\n    target = \"order_items\"\n    \
             column = \"order_id\"\n    action = \"set_null\""
        ),
        "{error}"
    );
    assert!(!error.contains("`sessions` refers"), "declared: {error}");
}

async fn a_declared_graph_passes_and_an_unindexed_child_column_is_refused_with_its_create_index(
    backend: Backend,
) {
    let (test, db) = shop(backend).await;
    let catalog = Catalog::new(targets()).with_relations(graph()).unwrap();
    let error = check_error(&db, &catalog).await;
    let create = match backend {
        Backend::MySql => "CREATE INDEX `analytics_user_id_idx` ON `analytics` (`user_id`)",
        _ => r#"CREATE INDEX "analytics_user_id_idx" ON "analytics" ("user_id")"#,
    };
    let expected = format!(
        "targets.users.children[2].column: column `user_id` of table `analytics` leads no index, so every batch \
         of `users` would scan `analytics` for its children; run `{create};` or set allow_unindexed = true"
    );
    assert!(error.contains(&expected), "{expected} missing in {error}");
    assert_eq!(error.matches("targets.").count(), 1, "only that: {error}");

    let mut allowed = graph();
    allowed[3].allow_unindexed = true;
    let catalog = Catalog::new(targets()).with_relations(allowed).unwrap();
    schema_check::check_catalog(&db, &catalog).await.unwrap();

    // The statement the check shows is the one that satisfies it.
    test.exec(create).await;
    let catalog = Catalog::new(targets()).with_relations(graph()).unwrap();
    schema_check::check_catalog(&db, &catalog).await.unwrap();

    // A relation's columns must exist: the child's, and a parent column other than the key.
    let mut misspelt = graph();
    misspelt[0].column = "userid".into();
    misspelt[1].parent_column = "uuid".into();
    let catalog = Catalog::new(targets()).with_relations(misspelt).unwrap();
    let error = check_error(&db, &catalog).await;
    for expected in [
        "targets.users.children[0].column: column `userid` does not exist in table `sessions`",
        "targets.users.children[1].parent_column: column `uuid` does not exist in table `users`",
        // The foreign key the misspelt relation no longer covers.
        "table `sessions` refers to `users` through column `user_id`",
    ] {
        assert!(error.contains(expected), "{expected} missing in {error}");
    }
}

/// `sessions` has a foreign key to `users`: soft-deleted sessions would refer to a deleted
/// user, so `soft_delete` is refused there; `events`-like tables without one may be soft.
async fn a_soft_delete_child_tied_by_a_foreign_key_is_refused(backend: Backend) {
    let (_test, db) = shop(backend).await;
    let mut relations = graph();
    relations[0].action = Action::SoftDelete;
    relations[3].action = Action::SoftDelete;
    relations[3].allow_unindexed = true;
    let soft = targets()
        .into_iter()
        .map(|target| match target.name.as_str() {
            "sessions" | "analytics" => Target {
                soft_delete_column: Some("deleted_at".into()),
                ..target
            },
            _ => target,
        });
    let catalog = Catalog::new(soft).with_relations(relations).unwrap();
    let error = check_error(&db, &catalog).await;
    let expected = "targets.users.children[0].action: `soft_delete` keeps rows of `sessions` that refer to \
                    `users` through a foreign key on `user_id` (ON DELETE CASCADE): a hard delete of `users` \
                    would leave them referring to a removed row; declare `delete` or `set_null`, or drop the constraint";
    assert!(error.contains(expected), "{expected} missing in {error}");
    assert_eq!(
        error.matches("targets.").count(),
        1,
        "analytics has no key: {error}"
    );
}

fn cascade(table: &str, column: &str) -> Cascade {
    Cascade {
        parent: "users".into(),
        schema: None,
        table: table.into(),
        column: column.into(),
        parent_column: "id".into(),
        max_rows_per_batch: 10,
    }
}

async fn a_database_cascade_passes_only_when_accepted_as_a_real_indexed_cascade(backend: Backend) {
    let (test, db) = shop(backend).await;
    // `sessions` is not a child: its ON DELETE CASCADE is accepted as small instead.
    let with_cascades = |cascades: Vec<Cascade>| {
        let mut relations = graph()[1..].to_vec();
        relations[2].allow_unindexed = true;
        Catalog::new(targets())
            .with_relations(relations)
            .unwrap()
            .with_cascades(cascades)
    };
    let undeclared = check_error(&db, &with_cascades(Vec::new())).await;
    assert!(
        undeclared.contains("table `sessions` refers to `users` through column `user_id` (ON DELETE CASCADE) but is not declared"),
        "{undeclared}"
    );
    assert!(
        undeclared.contains(
            "accept the database's cascade:\n    [[targets.users.cascades]]\n    table = \"sessions\"\n    \
             column = \"user_id\"\n    max_rows_per_batch = 1000"
        ),
        "{undeclared}"
    );
    schema_check::check_catalog(&db, &with_cascades(vec![cascade("sessions", "user_id")]))
        .await
        .unwrap();
    let wrong = with_cascades(vec![
        cascade("sessions", "user_id"),
        cascade("orders", "user_id"),
        cascade("analytics", "user_id"),
    ]);
    let error = check_error(&db, &wrong).await;
    for expected in [
        "targets.users.cascades[1]: the foreign key of `orders.user_id` on `users` is ON DELETE RESTRICT, not CASCADE: \
         the database would not delete its rows; declare `orders` as a child instead",
        "targets.users.cascades[2]: no foreign key of `analytics.user_id` refers to `users` with ON DELETE CASCADE; \
         remove the declaration or fix its table and column",
    ] {
        assert!(error.contains(expected), "{expected} missing in {error}");
    }
    assert!(!error.contains("cascades[0]"), "{error}");
    if backend == Backend::MySql {
        // MariaDB keeps a foreign key's column indexed (it refuses to drop that index).
        return;
    }
    test.exec("DROP INDEX sessions_user_id").await;
    let error = check_error(&db, &with_cascades(vec![cascade("sessions", "user_id")])).await;
    assert!(
        error.contains(
            "targets.users.cascades[0].column: column `user_id` of table `sessions` leads no index, so the \
             database's cascade from every batch of `users` would scan `sessions`; run `CREATE INDEX"
        ),
        "{error}"
    );
}
