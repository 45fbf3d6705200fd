//! Relations between targets (issue 12) through the real binary: what `config check` refuses
//! in a graph of tables, each problem at its key path.

use crate::{config_text, reaper, run, stderr};

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
