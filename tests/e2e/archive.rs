//! Archive mode and restore (issue 14) through the real binary: archive jobs run by the daemon,
//! `reaper restore` of a hard job refused (exit status 2, nothing changed), a restore killed
//! with SIGKILL in the middle and finished by the next daemon — every row back exactly once,
//! every column as it was — and the daemon's built-in purge of archive rows older than
//! `[archive] keep`; and across an erasure graph, an archive of users with their sessions,
//! orders, items and nulled reviews, restored parents first by a daemon killed with SIGKILL
//! mid-restore and the next one, every row of every table back exactly once; and the archive
//! `enqueue` refuses on a target whose rows the database would cascade unseen.

use std::time::Duration;

use reaper_core::sql::Backend;

use crate::{Deployment, config_text, run, stderr, stdout};

reaper_testkit::on_every_backend!(
    kill_9_mid_restore_puts_every_row_back_once_and_old_archives_are_purged,
    kill_9_mid_graph_restore_puts_every_row_of_every_table_back_once,
);

/// Every `events` row outside tenants 5 and 7, every column as text, in key order.
async fn checksum(deployment: &Deployment) -> Vec<Vec<Option<String>>> {
    let test = &deployment.test;
    test.optional_strings(&format!(
        "SELECT {}, {}, kind, {}, payload, {} FROM events WHERE tenant_id NOT IN (5, 7) ORDER BY id",
        test.as_text("id"),
        test.as_text("tenant_id"),
        test.as_text("created_at"),
        test.as_text("deleted_at"),
    ))
    .await
}

async fn count(deployment: &Deployment, sql: &str) -> i64 {
    deployment.test.int(&format!("SELECT count(*) {sql}")).await
}

/// The audit rows of job `id` so far.
async fn audit_rows(deployment: &Deployment, id: &str) -> i64 {
    count(
        deployment,
        &format!("FROM reaper_audit WHERE job_id = '{id}'"),
    )
    .await
}

/// Starts a daemon (3 s lease, 1 s slices) and kills it with SIGKILL once job `restore` has
/// written `rows` audit rows.
async fn kill_daemon_after(deployment: &Deployment, restore: &str, rows: i64) {
    let (mut daemon, _) = deployment.short_lease_daemon();
    crate::poll_until(
        Duration::from_secs(60),
        "restore audit rows",
        async || match audit_rows(deployment, restore).await {
            n if n >= rows => Ok(()),
            n => Err(format!("{n} audit rows")),
        },
    )
    .await;
    daemon.signal("KILL");
    daemon.wait(Duration::from_secs(5));
}

async fn kill_9_mid_restore_puts_every_row_back_once_and_old_archives_are_purged(backend: Backend) {
    let deployment = Deployment::new(backend, 1000).await;
    deployment.write_config(config_text(
        &deployment.test.url,
        deployment.dir.path(),
        "pause = \"100ms\"",
    ));
    deployment.migrate();
    let before = checksum(&deployment).await;
    let archive = |tenant: i64, mode: &str| {
        deployment.enqueue(&reaper_testkit::engine::erase_tenant(
            tenant,
            serde_json::json!({"mode": mode, "batch_size": 50}),
        ))
    };
    let archived = archive(3, "archive");
    let expiring = archive(5, "archive");
    let hard = archive(7, "hard");
    deployment.run_until_idle(&[]);
    assert_eq!(
        count(&deployment, "FROM events WHERE tenant_id IN (3, 5, 7)").await,
        0
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 200);

    // A hard job: refused, exit status 2, nothing submitted.
    let jobs = count(&deployment, "FROM reaper_jobs").await;
    let refused = run(deployment.reaper().args(["restore", &hard]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("ran in hard mode"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(count(&deployment, "FROM reaper_jobs").await, jobs);

    // Tenant 5's copies are old: the next daemon purges them at start-up.
    let long_ago = match backend {
        Backend::Postgres => "TIMESTAMPTZ '2020-01-01 00:00:00+00'",
        Backend::MySql => "TIMESTAMP '2020-01-01 00:00:00'",
        Backend::Sqlite => "'2020-01-01 00:00:00'",
    };
    deployment
        .test
        .exec(&format!(
            "UPDATE reaper_archive SET archived_at = {long_ago} WHERE job_id = '{expiring}'"
        ))
        .await;

    let restored = run(deployment.reaper().args([
        "restore",
        &archived,
        "--batch-size",
        "5",
        "--reason",
        "undo the tenant 3 erasure",
    ]));
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restore = stdout(&restored).trim().to_owned();
    kill_daemon_after(&deployment, &restore, 3).await;
    let at_kill = audit_rows(&deployment, &restore).await;
    assert!(
        at_kill < 20,
        "the restore finished before the kill ({at_kill} batches)"
    );
    assert_eq!(
        count(
            &deployment,
            &format!("FROM reaper_archive WHERE job_id = '{expiring}'")
        )
        .await,
        0,
        "the daemon purged the expired copies at start-up"
    );

    let status = deployment.finish_after_kill(&restore);
    assert_eq!(status["result"]["restore"]["restored"], 100, "{status}");
    assert_eq!(status["result"]["restore"]["conflicts"], 0, "{status}");
    assert_eq!(
        checksum(&deployment).await,
        before,
        "every row back, as it was"
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 0);
    // Each row restored by exactly one committed batch, each batch audited once.
    let test = &deployment.test;
    let rows = test
        .int(&format!(
            "SELECT {} FROM reaper_audit WHERE job_id = '{restore}'",
            test.as_int("sum(row_count)")
        ))
        .await;
    assert_eq!(rows, 100);
    assert_eq!(audit_rows(&deployment, &restore).await, 20);
    let modes = test
        .strings(&format!(
            "SELECT DISTINCT mode FROM reaper_audit WHERE job_id = '{restore}'"
        ))
        .await;
    assert_eq!(modes, ["restore"]);
}

/// users ← sessions (ON DELETE CASCADE), users ← orders (RESTRICT) ← order_items, users ←
/// reviews (ON DELETE SET NULL), each referencing column indexed; users 1..=6, each with 2
/// sessions, 2 orders of 2 items and a review.
const GRAPH_DDL: [&str; 9] = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(40))",
    "CREATE TABLE sessions (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
     FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)",
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, total DECIMAL(10,2), \
     FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT)",
    "CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, \
     FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE RESTRICT)",
    "CREATE TABLE reviews (id BIGINT PRIMARY KEY, user_id BIGINT, body VARCHAR(40), \
     FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL)",
    "CREATE INDEX sessions_user_id ON sessions (user_id)",
    "CREATE INDEX orders_user_id ON orders (user_id)",
    "CREATE INDEX order_items_order_id ON order_items (order_id)",
    "CREATE INDEX reviews_user_id ON reviews (user_id)",
];

/// The graph's catalog: `users` (filterable by `id`, one user per window, a pause after each
/// batch so a kill lands mid-restore) with its relations; `extra` appended.
fn graph_targets(extra: &str) -> String {
    let target = |name: &str, batch: u32| {
        format!(
            "[targets.{name}]\ntable = \"{name}\"\nprimary_key = \"id\"\nkey_type = \"int\"\n\
             batch_size = {batch}\n"
        )
    };
    let child = |parent: &str, name: &str, column: &str, action: &str| {
        format!(
            "[[targets.{parent}.children]]\ntarget = \"{name}\"\ncolumn = \"{column}\"\n\
             action = \"{action}\"\n"
        )
    };
    [
        target("users", 1),
        "pause = \"150ms\"\n[targets.users.columns]\nid = \"int\"\n".to_owned(),
        child("users", "sessions", "user_id", "delete"),
        child("users", "orders", "user_id", "delete"),
        child("users", "reviews", "user_id", "set_null"),
        child("orders", "order_items", "order_id", "delete"),
        target("sessions", 3),
        target("orders", 3),
        target("order_items", 3),
        target("reviews", 3),
        extra.to_owned(),
    ]
    .join("\n")
}

async fn seed_graph(deployment: &Deployment) {
    let mut statements: Vec<String> = GRAPH_DDL.iter().map(|ddl| (*ddl).to_owned()).collect();
    for user in 1..=6_i64 {
        statements.push(format!(
            "INSERT INTO users (id, name) VALUES ({user}, 'user \"{user}\"')"
        ));
        for k in 1..=2 {
            let order = user * 10 + k;
            statements.push(format!(
                "INSERT INTO sessions (id, user_id) VALUES ({order}, {user})"
            ));
            statements.push(format!(
                "INSERT INTO orders (id, user_id, total) VALUES ({order}, {user}, {order}.25)"
            ));
            statements.push(format!(
                "INSERT INTO order_items (id, order_id) VALUES ({}, {order}), ({}, {order})",
                order * 10 + 1,
                order * 10 + 2
            ));
        }
        statements.push(format!(
            "INSERT INTO reviews (id, user_id, body) VALUES ({user}, {user}, 'review {user}')"
        ));
    }
    for statement in statements {
        deployment.test.exec(&statement).await;
    }
}

/// Every row of every table of the graph, every column as text, in key order.
async fn graph_checksum(deployment: &Deployment) -> Vec<Vec<Option<String>>> {
    let test = &deployment.test;
    let mut rows = Vec::new();
    for (table, columns) in [
        ("users", ["id", "name"].as_slice()),
        ("sessions", &["id", "user_id"]),
        ("orders", &["id", "user_id", "total"]),
        ("order_items", &["id", "order_id"]),
        ("reviews", &["id", "user_id", "body"]),
    ] {
        let columns: Vec<String> = columns.iter().map(|c| test.as_text(c)).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY id", columns.join(", "));
        for mut row in test.optional_strings(&sql).await {
            row.insert(0, Some(table.to_owned()));
            rows.push(row);
        }
    }
    rows
}

async fn kill_9_mid_graph_restore_puts_every_row_of_every_table_back_once(backend: Backend) {
    let deployment = Deployment::new(backend, 10).await;
    deployment.migrate();
    seed_graph(&deployment).await;
    let base = std::fs::read_to_string(&deployment.config).unwrap();
    std::fs::write(&deployment.config, format!("{base}\n{}", graph_targets(""))).unwrap();
    let before = graph_checksum(&deployment).await;
    let archived = deployment.enqueue(&serde_json::json!({
        "target": "users", "mode": "archive",
        "filter": {"all": [{"column": "id", "op": "in", "value": [2, 3, 4, 5]}]},
        "requested_by": "e2e", "reason": "erasure request"}));
    deployment.run_until_idle(&[]);
    // 4 users, 8 sessions, 8 orders, 16 items deleted and 4 reviews nulled, each copied once.
    assert_eq!(count(&deployment, "FROM users").await, 2);
    assert_eq!(
        count(&deployment, "FROM reviews WHERE user_id IS NULL").await,
        4
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 40);

    let restored = run(deployment
        .reaper()
        .args(["restore", &archived, "--batch-size", "2"]));
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restore = stdout(&restored).trim().to_owned();
    kill_daemon_after(&deployment, &restore, 4).await;
    let left = count(&deployment, "FROM reaper_archive").await;
    assert!(left > 0, "the restore finished before the kill");
    assert_ne!(graph_checksum(&deployment).await, before);

    let status = deployment.finish_after_kill(&restore);
    assert_eq!(status["result"]["restore"]["restored"], 40, "{status}");
    assert_eq!(status["result"]["restore"]["conflicts"], 0, "{status}");
    assert_eq!(
        graph_checksum(&deployment).await,
        before,
        "every row back, as it was"
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 0);
    // Each row restored by exactly one committed batch, under its own table.
    let test = &deployment.test;
    let per_table = test
        .optional_strings(&format!(
            "SELECT target, {} FROM reaper_audit WHERE job_id = '{restore}' GROUP BY target",
            test.as_text(&test.as_int("sum(row_count)"))
        ))
        .await;
    let mut per_table: Vec<(String, String)> = per_table
        .into_iter()
        .map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap()))
        .collect();
    per_table.sort();
    let expected = [
        ("order_items", "16"),
        ("orders", "8"),
        ("reviews", "4"),
        ("sessions", "8"),
        ("users", "4"),
    ]
    .map(|(table, rows)| (table.to_owned(), rows.to_owned()));
    assert_eq!(per_table, expected);

    // Rows the database would cascade unseen cannot be archived: refused, nothing submitted.
    let cascade = "[[targets.orders.cascades]]\ntable = \"order_items\"\ncolumn = \"order_id\"\n\
                   max_rows_per_batch = 10\n";
    let config = graph_targets(cascade).replace(
        "[[targets.orders.children]]\ntarget = \"order_items\"\ncolumn = \"order_id\"\naction = \"delete\"\n",
        "",
    );
    std::fs::write(&deployment.config, format!("{base}\n{config}")).unwrap();
    let jobs = count(&deployment, "FROM reaper_jobs").await;
    let job = serde_json::json!({"target": "users", "mode": "archive",
        "filter": {"all": [{"column": "id", "op": "eq", "value": 1}]},
        "requested_by": "e2e", "reason": "erasure request"});
    let refused = run(deployment
        .reaper()
        .args(["enqueue", "--json", &job.to_string()]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(
            "table `order_items` (column `order_id`) is emptied by the database through an \
             accepted ON DELETE CASCADE from `orders`"
        ),
        "{}",
        stderr(&refused)
    );
    assert_eq!(count(&deployment, "FROM reaper_jobs").await, jobs);
}
