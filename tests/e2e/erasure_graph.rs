//! Relations between targets (issue 12) through the real binary: what `config check` refuses
//! in a graph of tables, each problem at its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reaper_core::sql::Backend;
use reaper_testkit::{GraphSnapshot, GraphTable};

use crate::daemon::Api;
use crate::{Deployment, config_text, reaper, run, stderr};

/// `[targets.TABLE]` keyed by an int `id`, with `batch_size` when given.
fn target_toml(table: &str, batch_size: Option<i64>) -> String {
    let batch = batch_size.map_or(String::new(), |size| format!("batch_size = {size}\n"));
    format!(
        "[targets.{table}]\ntable = \"{table}\"\nprimary_key = \"id\"\nkey_type = \"int\"\n{batch}"
    )
}

/// `[[targets.PARENT.children]]`.
fn child_toml(parent: &str, target: &str, column: &str, action: &str) -> String {
    format!(
        "[[targets.{parent}.children]]\ntarget = \"{target}\"\ncolumn = \"{column}\"\naction = \"{action}\"\n"
    )
}

/// users ← sessions (ON DELETE CASCADE), users ← orders (RESTRICT) ← order_items, each
/// foreign-key column indexed.
const SHOP_DDL: [&str; 7] = [
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
];

/// The shop's catalog (users → sessions, orders → order_items, events) after the fixture's own
/// `events` target, with `extra` appended (more children, or a cycle).
fn shop_config(dir: &std::path::Path, extra: &str) -> String {
    let base = config_text("sqlite://x.db", dir, "");
    let plain = |table: &str| target_toml(table, None);
    let child = child_toml;
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

/// The shop of three users (users 1–3; sessions 11, 21, 22, 31; orders 12, 23, 24; items 121,
/// 231, 232, 241) in the migrated `deployment`, its catalog (one row per batch, `users.id`
/// filterable) appended to the configuration with `extra`.
pub(crate) async fn small_shop(deployment: &Deployment, extra: &str) {
    deployment.migrate();
    for ddl in SHOP_DDL.into_iter().chain([
        "INSERT INTO users (id) VALUES (1), (2), (3)",
        "INSERT INTO sessions (id, user_id) VALUES (11, 1), (21, 2), (22, 2), (31, 3)",
        "INSERT INTO orders (id, user_id) VALUES (12, 1), (23, 2), (24, 2)",
        "INSERT INTO order_items (id, order_id) VALUES (121, 12), (231, 23), (232, 23), (241, 24)",
    ]) {
        deployment.test.exec(ddl).await;
    }
    let plain = |table: &str| target_toml(table, Some(1));
    let child =
        |parent: &str, target: &str, column: &str| child_toml(parent, target, column, "delete");
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
        extra.to_owned(),
    ]
    .join("\n");
    std::fs::write(&deployment.config, config).unwrap();
}

/// An erasure through the real binary: `enqueue` a job on `users` (the same shape as any job),
/// `run --until-idle`, and `status` shows the per-table counts; sessions (ON DELETE CASCADE),
/// orders and their items (RESTRICT) of the user are gone, every other row is still there.
async fn an_erasure_through_the_binary_removes_the_user_everywhere(backend: Backend) {
    let deployment = Deployment::new(backend, 10).await;
    small_shop(&deployment, "").await;
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
    a_retention_policy_on_a_parent_purges_its_old_rows_everywhere,
    kill_9_mid_children_and_mid_parents_resumes_exactly_once_in_every_table,
);

/// A retention policy on `users` (inactive for 30 days) through `reaper purge --policy`, the
/// scheduler's own path: the old users go with their sessions, orders and items, each row
/// audited once under its table; the recent user keeps everything.
async fn a_retention_policy_on_a_parent_purges_its_old_rows_everywhere(backend: Backend) {
    let deployment = Deployment::new(backend, 10).await;
    deployment.migrate();
    let timestamp = match backend {
        Backend::Postgres => "timestamptz",
        Backend::MySql => "DATETIME(6)",
        Backend::Sqlite => "TEXT",
    };
    let add_column = format!("ALTER TABLE users ADD COLUMN last_seen_at {timestamp}");
    for ddl in SHOP_DDL.into_iter().chain([
        add_column.as_str(),
        "INSERT INTO users (id, last_seen_at) VALUES (1, '2020-01-01 00:00:00'), \
         (2, '2999-01-01 00:00:00'), (3, '2020-06-01 00:00:00')",
        "INSERT INTO sessions (id, user_id) VALUES (11, 1), (21, 2), (22, 2), (31, 3)",
        "INSERT INTO orders (id, user_id) VALUES (12, 1), (23, 2)",
        "INSERT INTO order_items (id, order_id) VALUES (121, 12), (122, 12), (231, 23)",
    ]) {
        deployment.test.exec(ddl).await;
    }
    let child =
        |parent: &str, target: &str, column: &str| child_toml(parent, target, column, "delete");
    let config = [
        std::fs::read_to_string(&deployment.config).unwrap(),
        target_toml("users", Some(1)),
        "[targets.users.columns]\nlast_seen_at = \"timestamp\"\n".into(),
        child("users", "sessions", "user_id"),
        child("users", "orders", "user_id"),
        child("orders", "order_items", "order_id"),
        target_toml("sessions", Some(1)),
        target_toml("orders", Some(1)),
        target_toml("order_items", Some(1)),
        "[[retention]]\nname = \"expire-inactive-users\"\ntarget = \"users\"\nage_column = \"last_seen_at\"\n\
         max_age = \"30d\"\nschedule = \"0 3 * * *\"\n"
            .into(),
    ]
    .join("\n");
    std::fs::write(&deployment.config, config).unwrap();
    let tables: Vec<GraphTable<'_>> = KILL_GRAPH[..4]
        .iter()
        .map(|table| GraphTable {
            max_batch: 1,
            ..*table
        })
        .collect();
    let before = GraphSnapshot::take(&deployment.test, &tables).await;
    let output = run(deployment
        .reaper()
        .args(["purge", "--policy", "expire-inactive-users"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let ids = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<BTreeSet<_>>();
    let expected = BTreeMap::from([
        ("users", ids(&["1", "3"])),
        ("sessions", ids(&["11", "31"])),
        ("orders", ids(&["12"])),
        ("order_items", ids(&["121", "122"])),
    ]);
    before
        .assert_removed_exactly(&deployment.test, &expected)
        .await;
    let policy_jobs = deployment
        .test
        .int("SELECT count(*) FROM reaper_jobs WHERE policy = 'expire-inactive-users' AND state = 'done'")
        .await;
    assert_eq!(policy_jobs, 1, "one job, recorded as the policy's");
}

/// The graph of the kill test: users ← sessions (ON DELETE CASCADE), users ← orders
/// (RESTRICT) ← order_items, users ← analytics (no constraint). `users` goes one per window with
/// a pause after each; every child batch is 20 rows.
const KILL_GRAPH: [GraphTable<'static>; 5] = [
    GraphTable {
        name: "users",
        key: "id",
        max_batch: 1,
    },
    GraphTable {
        name: "sessions",
        key: "id",
        max_batch: 20,
    },
    GraphTable {
        name: "orders",
        key: "id",
        max_batch: 20,
    },
    GraphTable {
        name: "order_items",
        key: "id",
        max_batch: 20,
    },
    GraphTable {
        name: "analytics",
        key: "id",
        max_batch: 20,
    },
];

/// Users 1..=8, the odd ones erased. User 1 has 6,000 sessions (300 child transactions, so a
/// kill lands among them); every user has 20 sessions more, 2 orders of 3 items and 30 analytics rows.
async fn seed_kill_graph(deployment: &Deployment) -> BTreeMap<&'static str, BTreeSet<String>> {
    for ddl in SHOP_DDL.into_iter().chain([
        "CREATE TABLE analytics (id BIGINT PRIMARY KEY, user_id BIGINT)",
        "CREATE INDEX analytics_user_id ON analytics (user_id)",
    ]) {
        deployment.test.exec(ddl).await;
    }
    let mut rows: BTreeMap<&'static str, Vec<(i64, i64)>> = BTreeMap::new();
    for user in 1..=8_i64 {
        rows.entry("users").or_default().push((user, user));
        let sessions = if user == 1 { 6_020 } else { 20 };
        for k in 0..sessions {
            rows.entry("sessions")
                .or_default()
                .push((user * 10_000 + k, user));
        }
        for k in 0..2 {
            let order = user * 10 + k;
            rows.entry("orders").or_default().push((order, user));
            for i in 0..3 {
                rows.entry("order_items")
                    .or_default()
                    .push((order * 10 + i, order));
            }
        }
        for k in 0..30 {
            rows.entry("analytics")
                .or_default()
                .push((user * 100 + k, user));
        }
    }
    let mut erased: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    // Parents before children, for the foreign keys.
    for table in KILL_GRAPH.map(|t| t.name) {
        let rows = &rows[table];
        let parent = if table == "order_items" {
            "order_id"
        } else {
            "user_id"
        };
        for chunk in rows.chunks(1_000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, up)| format!("({id}, {up})"))
                .collect();
            let sql = match table {
                "users" => format!(
                    "INSERT INTO users (id) VALUES {}",
                    chunk
                        .iter()
                        .map(|(id, _)| format!("({id})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!(
                    "INSERT INTO {table} (id, {parent}) VALUES {}",
                    values.join(", ")
                ),
            };
            deployment.test.exec(&sql).await;
        }
        let user_of = |&(id, up): &(i64, i64)| {
            if table == "order_items" {
                (id, up / 10)
            } else {
                (id, up)
            }
        };
        erased.insert(
            table,
            rows.iter()
                .map(user_of)
                .filter(|(_, user)| user % 2 == 1)
                .map(|(id, _)| id.to_string())
                .collect(),
        );
    }
    let plain = |table: &str, batch: i64| target_toml(table, Some(batch));
    let child =
        |parent: &str, target: &str, column: &str| child_toml(parent, target, column, "delete");
    let mut config = vec![
        std::fs::read_to_string(&deployment.config).unwrap(),
        plain("users", 1),
        "pause = \"300ms\"\n[targets.users.columns]\nid = \"int\"\n".into(),
        child("users", "sessions", "user_id"),
        child("users", "orders", "user_id"),
        child("users", "analytics", "user_id"),
        child("orders", "order_items", "order_id"),
    ];
    config.extend(KILL_GRAPH[1..].iter().map(|t| plain(t.name, t.max_batch)));
    std::fs::write(&deployment.config, config.join("\n")).unwrap();
    erased
}

/// The audit's rows per table of job `id` so far.
async fn audited_per_table(deployment: &Deployment, id: &str) -> BTreeMap<String, i64> {
    let rows = deployment
        .test
        .optional_strings(&format!(
            "SELECT target, {} FROM reaper_audit WHERE job_id = '{id}' GROUP BY target",
            deployment.test.as_text("sum(row_count)")
        ))
        .await;
    rows.into_iter()
        .map(|row| {
            (
                row[0].clone().unwrap(),
                row[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Waits (up to 60 s) until the audit of `id` satisfies `reached`; the counts then.
async fn wait_for_audit(
    deployment: &Deployment,
    id: &str,
    what: &str,
    reached: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> BTreeMap<String, i64> {
    let started = std::time::Instant::now();
    loop {
        let counts = audited_per_table(deployment, id).await;
        if reached(&counts) {
            return counts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never {what}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// kill -9 of the real daemon in the middle of a user's children, then (a new daemon) in the
/// middle of the parents; a third daemon finishes. While the job runs, `reaper status` and
/// `GET /v1/jobs/{id}` show its per-table progress; at the end every table of the graph has
/// lost exactly the erased users' rows, each audited once under its table.
async fn kill_9_mid_children_and_mid_parents_resumes_exactly_once_in_every_table(backend: Backend) {
    let deployment = Deployment::new(backend, 10).await;
    deployment.migrate();
    let erased = seed_kill_graph(&deployment).await;
    let before = GraphSnapshot::take(&deployment.test, &KILL_GRAPH).await;
    let id = deployment.enqueue(&serde_json::json!({
        "target": "users", "filter": {"all": [{"column": "id", "op": "in", "value": [1, 3, 5, 7]}]},
        "batch_size": 1, "requested_by": "e2e", "reason": "erasure request"}));
    let start = || deployment.short_lease_daemon();

    let (mut daemon, port) = start();
    let counts = wait_for_audit(&deployment, &id, "mid-children", |c| {
        c.get("sessions").is_some_and(|n| *n >= 200)
    })
    .await;
    // Live progress, while user 1's sessions drain.
    let status = run(deployment.reaper().args(["status", &id]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    let sessions = status["progress"]["tables"]["sessions"]
        .as_i64()
        .unwrap_or(0);
    assert!(sessions >= counts["sessions"], "{status}");
    assert!(
        status["progress"]["tables"].get("users").is_none(),
        "{status}"
    );
    let (code, job) = Api::at(port)
        .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(code, 200, "{job}");
    assert!(
        job["progress"]["tables"]["sessions"].as_i64().unwrap_or(0) >= sessions,
        "{job}"
    );
    daemon.signal("KILL");
    daemon.wait(Duration::from_secs(5));
    let at_kill = audited_per_table(&deployment, &id).await;
    assert!(
        !at_kill.contains_key("users") && at_kill["sessions"] < 6_040,
        "mid-children: {at_kill:?}"
    );

    let (mut daemon, _) = start();
    wait_for_audit(&deployment, &id, "mid-parents", |c| {
        c.get("users").is_some_and(|n| *n >= 2)
    })
    .await;
    daemon.signal("KILL");
    daemon.wait(Duration::from_secs(5));
    let at_kill = audited_per_table(&deployment, &id).await;
    assert!(at_kill["users"] < 4, "mid-parents: {at_kill:?}");

    let status = deployment.finish_after_kill(&id);
    let expected_counts: serde_json::Value = erased
        .iter()
        .map(|(table, rows)| (table.to_string(), serde_json::json!(rows.len())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    assert_eq!(status["result"]["tables"], expected_counts, "{status}");
    assert_eq!(status["progress"]["tables"], expected_counts, "{status}");
    before
        .assert_removed_exactly(&deployment.test, &erased)
        .await;
}
