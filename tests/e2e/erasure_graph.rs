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
            assert!(stderr(&output).contains(expected), "{expected} missing");
        }
    };
    refused(
        "targets.events.children: table `event_notes` refers to `events` through column `event_id` \
         (ON DELETE CASCADE) but is not declared as a child; the database would delete its rows inside each \
         batch, unbounded. Add:\n    [targets.event_notes]",
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

reaper_testkit::on_every_backend!(
    start_up_refuses_an_undeclared_referencing_table_then_an_unindexed_child,
);
