//! Relations between targets (issue 12) through the real binary: what `config check` refuses
//! in a graph of tables, each problem at its key path.

use reaper_core::sql::Backend;

use crate::{Deployment, config_text, reaper, run, stderr};

/// The shop's catalog (users → sessions, orders → order_items, events) after the fixture's own
/// `events` target, with `extra` appended (more children, or a cycle).
fn shop_config(dir: &std::path::Path, extra: &str) -> String {
    let base = config_text("sqlite://x.db", dir, "");
    let plain = |table: &str| {
        format!("[targets.{table}]\ntable = \"{table}\"\nprimary_key = \"id\"\nkey_type = \"int\"")
    };
    let child = |parent: &str, target: &str, column: &str, action: &str| {
        format!(
            "[[targets.{parent}.children]]\ntarget = \"{target}\"\ncolumn = \"{column}\"\naction = \"{action}\""
        )
    };
    [
        base,
        plain("users"),
        child("users", "sessions", "user_id", "delete"),
        child("users", "orders", "user_id", "delete"),
        child("users", "events", "tenant_id", "set_null"),
        plain("sessions"),
        plain("order_items"),
        plain("orders"),
        child("orders", "order_items", "order_id", "delete"),
        extra.to_owned(),
    ]
    .join("\n\n")
}

fn config_check_refuses(extra: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reaper.toml");
    std::fs::write(&path, shop_config(dir.path(), extra)).unwrap();
    let output = run(reaper(Some(&path)).args(["config", "check"]));
    assert_eq!(output.status.code(), Some(2), "a refused configuration");
    let message = stderr(&output);
    for expected in expected {
        assert!(
            message.contains(expected),
            "{expected} missing in {message}"
        );
    }
}

#[test]
fn config_check_refuses_a_cycle_with_its_key_path() {
    config_check_refuses(
        r#"
[[targets.order_items.children]]
target = "users"
column = "last_item_id"
action = "set_null"
"#,
        &[
            "targets.order_items.children[0]: forms a cycle: order_items → users → orders → order_items",
        ],
    );
}

#[test]
fn config_check_refuses_two_paths_with_different_actions() {
    config_check_refuses(
        r#"
[[targets.orders.children]]
target = "events"
column = "tenant_id"
action = "delete"
"#,
        &[
            "targets.users.children[2].action: `events` is reached as users → events with action `set_null` \
           but as orders → events (targets.orders.children[1]) with action `delete`; one table, one action",
        ],
    );
}

#[test]
fn config_check_refuses_a_soft_child_without_a_soft_delete_column_and_an_unknown_child() {
    config_check_refuses(
        r#"
[[targets.users.children]]
target = "order_items"
column = "buyer_id"
action = "soft_delete"

[[targets.users.children]]
target = "payments"
column = "user_id"
action = "delete"
"#,
        &[
            "targets.users.children[3].action: `soft_delete` needs a soft_delete_column on target `order_items`",
            "targets.users.children[4].target: unknown target `payments`",
        ],
    );
}

/// `event_notes` refers to the fixture's `events` with `ON DELETE CASCADE`: `config check` and
/// `run` refuse the catalog until it is declared as a child, then until its column is indexed.
async fn start_up_refuses_an_undeclared_referencing_table_then_an_unindexed_child(
    backend: Backend,
) {
    let deployment = Deployment::new(backend, 10).await;
    deployment.migrate();
    deployment
        .test
        .exec(
            "CREATE TABLE event_notes (id BIGINT PRIMARY KEY, event_id BIGINT NOT NULL, \
             FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE)",
        )
        .await;
    let refused = |expected: &str| {
        for args in [&["config", "check"][..], &["run", "--until-idle"][..]] {
            let output = run(deployment.reaper().args(args));
            assert_eq!(output.status.code(), Some(2), "{args:?} must refuse");
            assert!(
                stderr(&output).contains(expected),
                "{args:?}: {expected} missing from:\n{}",
                stderr(&output)
            );
        }
    };
    refused(
        "targets.events.children: table `event_notes` refers to `events` through column `event_id` \
         (ON DELETE CASCADE) but is not declared as a child; the database would delete its rows inside each \
         batch, unbounded. Add:",
    );
    // … followed by the configuration to add, indented under the problem the same way by both
    // commands (one formatter), then the cascade alternative.
    refused(
        "Add:\n    [targets.event_notes]\n    table = \"event_notes\"\n    primary_key = \"…\"\n    \
         key_type = \"…\"\n    [[targets.events.children]]\n    target = \"event_notes\"\n    \
         column = \"event_id\"\n    action = \"delete\"\n    or, when each row of `events` has few of them, \
         accept the database's cascade:\n    [[targets.events.cascades]]\n",
    );

    let declared = format!(
        "{}\n[targets.event_notes]\ntable = \"event_notes\"\nprimary_key = \"id\"\nkey_type = \"int\"\n\n\
         [[targets.events.children]]\ntarget = \"event_notes\"\ncolumn = \"event_id\"\naction = \"delete\"\n",
        std::fs::read_to_string(&deployment.config).unwrap()
    );
    std::fs::write(&deployment.config, declared).unwrap();
    if backend != Backend::MySql {
        // InnoDB indexes every foreign-key column itself; PostgreSQL and SQLite do not.
        refused(
            "targets.events.children[0].column: column `event_id` of table `event_notes` leads no index",
        );
        deployment
            .test
            .exec("CREATE INDEX event_notes_event_id_idx ON event_notes (event_id)")
            .await;
    }
    let output = run(deployment.reaper().args(["config", "check"]));
    assert!(output.status.success(), "{}", stderr(&output));
}

/// An erasure through the real binary: `enqueue` a job on `users` (the same shape as any job),
/// `run --until-idle`, and `status` shows the per-table counts; sessions (ON DELETE CASCADE),
/// orders and their items (RESTRICT) of the user are gone, every other row is still there.
async fn an_erasure_through_the_binary_removes_the_user_everywhere(backend: Backend) {
    let deployment = Deployment::new(backend, 10).await;
    deployment.migrate();
    for ddl in [
        "CREATE TABLE users (id BIGINT PRIMARY KEY)",
        "CREATE TABLE sessions (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT)",
        "CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, \
         FOREIGN KEY (order_id) REFERENCES orders (id))",
        "CREATE INDEX sessions_user_id ON sessions (user_id)",
        "CREATE INDEX orders_user_id ON orders (user_id)",
        "CREATE INDEX order_items_order_id ON order_items (order_id)",
        "INSERT INTO users (id) VALUES (1), (2), (3)",
        "INSERT INTO sessions (id, user_id) VALUES (11, 1), (21, 2), (22, 2), (31, 3)",
        "INSERT INTO orders (id, user_id) VALUES (12, 1), (23, 2), (24, 2)",
        "INSERT INTO order_items (id, order_id) VALUES (121, 12), (231, 23), (232, 23), (241, 24)",
    ] {
        deployment.test.exec(ddl).await;
    }
    let plain = |table: &str| {
        format!(
            "[targets.{table}]\ntable = \"{table}\"\nprimary_key = \"id\"\nkey_type = \"int\"\nbatch_size = 1\n"
        )
    };
    let child = |parent: &str, target: &str, column: &str| {
        format!(
            "[[targets.{parent}.children]]\ntarget = \"{target}\"\ncolumn = \"{column}\"\naction = \"delete\"\n"
        )
    };
    let config = [
        std::fs::read_to_string(&deployment.config).unwrap(),
        plain("users"),
        "[targets.users.columns]\nid = \"int\"\n".into(),
        child("users", "sessions", "user_id"),
        child("users", "orders", "user_id"),
        plain("sessions"),
        plain("orders"),
        child("orders", "order_items", "order_id"),
        plain("order_items"),
    ]
    .join("\n");
    std::fs::write(&deployment.config, config).unwrap();
    let id = deployment.enqueue(&serde_json::json!({
        "target": "users", "filter": {"all": [{"column": "id", "op": "eq", "value": 2}]},
        "requested_by": "e2e", "reason": "erasure request"}));
    deployment.run_until_idle(&[]);
    let status = run(deployment.reaper().args(["status", &id]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(
        status["result"]["tables"],
        serde_json::json!({"order_items": 3, "orders": 2, "sessions": 2, "users": 1}),
        "{status}"
    );
    for (table, left) in [
        ("users", "1,3"),
        ("sessions", "11,31"),
        ("orders", "12"),
        ("order_items", "121"),
    ] {
        let ids: Vec<String> = deployment
            .test
            .ids(table, "1 = 1")
            .await
            .into_iter()
            .collect();
        assert_eq!(ids.join(","), left, "{table}");
    }
}

reaper_testkit::on_every_backend!(
    start_up_refuses_an_undeclared_referencing_table_then_an_unindexed_child,
    an_erasure_through_the_binary_removes_the_user_everywhere,
);
