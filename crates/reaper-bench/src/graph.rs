//! `graph`: erasure across a graph of tables (issue 12) on PostgreSQL.
//!
//! 1. `--users` erasures through the real daemon (Redis intake): each user has 100 rows over
//!    four tables — 25 sessions (`ON DELETE CASCADE`), 10 orders (`RESTRICT`) with 40 items,
//!    25 events (no constraint) — all declared as children. Erasures/s from the first enqueue
//!    to the last job done, and the p50/p99 of each erasure's enqueue→done latency.
//! 2. One user with `--children` events, erased by the engine (child batches of 1,000): rows/s
//!    and the longest transaction, against one hand-written transaction that deletes the
//!    children and then the user (the ceiling: what the database does without any bound).
//!    The longest transaction is bounded from above by the longest interval between two
//!    consecutive batches' starts (their audit rows' `created_at`).

use std::time::{Duration, Instant};

use reaper_core::catalog::{Catalog, ColumnType, Target};
use reaper_core::graph::{Action, Relation};
use reaper_engine::runner::{self, RunOutcome};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::daemon::{Finished, RunningDaemon, erasure, wait_finished};

/// The shop's tables, their foreign keys and indexes.
const SCHEMA: &str = "
    DROP TABLE IF EXISTS order_items, orders, sessions, events, users;
    CREATE TABLE users (id bigint PRIMARY KEY);
    CREATE TABLE sessions (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE, token text);
    CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id) ON DELETE RESTRICT, total int);
    CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders (id), sku text);
    CREATE TABLE events (id bigserial PRIMARY KEY, user_id bigint, payload text);
    CREATE INDEX ON sessions (user_id); CREATE INDEX ON orders (user_id);
    CREATE INDEX ON order_items (order_id); CREATE INDEX ON events (user_id);";

/// The catalog the daemon runs with (child batches of 1,000 rows, one user per window).
const TARGETS: &str = r#"
[targets.users]
table = "users"
primary_key = "id"
key_type = "int"
batch_size = 1
[targets.users.columns]
id = "int"
[[targets.users.children]]
target = "sessions"
column = "user_id"
action = "delete"
[[targets.users.children]]
target = "orders"
column = "user_id"
action = "delete"
[[targets.users.children]]
target = "events"
column = "user_id"
action = "delete"
[[targets.orders.children]]
target = "order_items"
column = "order_id"
action = "delete"
[targets.sessions]
table = "sessions"
primary_key = "id"
key_type = "int"
[targets.orders]
table = "orders"
primary_key = "id"
key_type = "int"
[targets.order_items]
table = "order_items"
primary_key = "id"
key_type = "int"
[targets.events]
table = "events"
primary_key = "id"
key_type = "int"
"#;

/// Runs both measurements.
pub(crate) async fn run(
    users: u64,
    children: u64,
    concurrency: u32,
    postgres_admin_url: &str,
    redis_url: &str,
) -> anyhow::Result<()> {
    let reaper = crate::daemon::build_reaper()?;
    let url = crate::create_database(postgres_admin_url).await?;
    let conn = sea_orm::Database::connect(&url).await?;
    let version: String = crate::query_one(&conn, "SHOW server_version").await?;
    println!("graph erasure benchmark — PostgreSQL {version}\n");

    load_shop(&conn, users).await?;
    let mut daemon = RunningDaemon::start(&reaper, &url, redis_url, concurrency, TARGETS).await?;
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let enqueued = daemon
        .enqueue(
            &mut redis,
            (1..=users).map(|user| erasure("users", "id", user)),
        )
        .await?;
    wait_finished(&conn, users).await?;
    let finished = Finished::read(&conn, &enqueued).await?;
    daemon.stop(&mut redis).await?;
    let left: i64 = crate::query_one(
        &conn,
        "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM sessions) + (SELECT count(*) FROM orders) \
         + (SELECT count(*) FROM order_items) + (SELECT count(*) FROM events)",
    )
    .await?;
    println!(
        "{users} erasures through the daemon (Redis intake, concurrency {concurrency}), 101 rows each over five tables"
    );
    println!(
        "  first enqueue → last done       {:>9.3} s   ({:.0} erasures/s, {:.0} rows/s)",
        finished.elapsed.as_secs_f64(),
        users as f64 / finished.elapsed.as_secs_f64(),
        (users * 101) as f64 / finished.elapsed.as_secs_f64()
    );
    finished.print_latencies();
    println!("  rows left in the five tables    {left:>9}\n");

    let engine = one_big_user(&conn, &url, children).await?;
    let ceiling = hand_written(&conn, children).await?;
    println!("one user with {children} events (child batches of 1,000)");
    println!(
        "  reaper engine                   {:>9.3} s   ({:.0} rows/s), {} transactions, longest ≤ {:.1} ms",
        engine.total.as_secs_f64(),
        engine.rate(),
        engine.batches,
        engine.longest.as_secs_f64() * 1e3
    );
    println!(
        "  one hand-written transaction    {:>9.3} s   ({:.0} rows/s), 1 transaction of {:.1} ms",
        ceiling.total.as_secs_f64(),
        ceiling.rate(),
        ceiling.longest.as_secs_f64() * 1e3
    );
    println!(
        "  reaper / ceiling                {:>9.2}×",
        engine.rate() / ceiling.rate()
    );
    conn.close().await.ok();
    crate::drop_database(postgres_admin_url).await
}

/// `users` users with 25 sessions, 10 orders × 4 items and 25 events each; vacuumed, analyzed.
async fn load_shop(conn: &DatabaseConnection, users: u64) -> anyhow::Result<()> {
    conn.execute_unprepared(SCHEMA).await?;
    conn.execute_unprepared(&format!(
        "INSERT INTO users SELECT g FROM generate_series(1, {users}) g;
         INSERT INTO sessions (user_id, token) SELECT u, md5(k::text) FROM generate_series(1, {users}) u, generate_series(1, 25) k;
         INSERT INTO orders (user_id, total) SELECT u, k FROM generate_series(1, {users}) u, generate_series(1, 10) k;
         INSERT INTO order_items (order_id, sku) SELECT o.id, 'sku' || k FROM orders o, generate_series(1, 4) k;
         INSERT INTO events (user_id, payload) SELECT u, repeat('x', 100) FROM generate_series(1, {users}) u, generate_series(1, 25) k;"
    ))
    .await?;
    conn.execute_unprepared("VACUUM ANALYZE").await?;
    Ok(())
}

/// User 1 with `children` events (and users 2, 3 with a few, kept).
async fn load_big_user(conn: &DatabaseConnection, children: u64) -> anyhow::Result<()> {
    conn.execute_unprepared(SCHEMA).await?;
    conn.execute_unprepared(&format!(
        "INSERT INTO users VALUES (1), (2), (3);
         INSERT INTO events (user_id, payload) SELECT 1, repeat('x', 100) FROM generate_series(1, {children});
         INSERT INTO events (user_id, payload) SELECT 2 + g % 2, 'kept' FROM generate_series(1, 1000) g;"
    ))
    .await?;
    conn.execute_unprepared("VACUUM ANALYZE").await?;
    Ok(())
}

fn target(name: &str, batch_size: u32) -> Target {
    crate::bench_target(name, &[("id", ColumnType::Int)], batch_size)
}

/// The engine erases user 1 (its events in child batches of 1,000).
async fn one_big_user(
    conn: &DatabaseConnection,
    url: &str,
    children: u64,
) -> anyhow::Result<crate::Figures> {
    load_big_user(conn, children).await?;
    let catalog = Catalog::new([target("users", 1), target("events", 1_000)])
        .with_relations(vec![Relation {
            parent: "users".into(),
            child: "events".into(),
            column: "user_id".into(),
            parent_column: "id".into(),
            action: Action::Delete,
            allow_unindexed: false,
        }])
        .map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
    let request = serde_json::json!({
        "target": "users", "requested_by": "reaper-bench", "reason": "benchmark",
        "filter": {"all": [{"column": "id", "op": "eq", "value": 1}]}
    });
    let (db, id) = crate::submit(url, &catalog, request).await?;
    let settings = crate::bench_run_settings();
    let started = Instant::now();
    let report = runner::run_job(&db, &catalog, &id, &settings, &|| false).await?;
    let total = started.elapsed();
    anyhow::ensure!(
        report.outcome == RunOutcome::Done,
        "the engine did not finish: {:?}",
        report.outcome
    );
    let longest_ms: f64 = crate::query_one(
        conn,
        &format!(
            "SELECT COALESCE(max(extract(epoch FROM d)) * 1000, 0)::float8 FROM (SELECT created_at - lag(created_at) \
             OVER (ORDER BY batch_no) AS d FROM reaper_audit WHERE job_id = '{id}') AS intervals"
        ),
    )
    .await?;
    // The runner counts the window as one batch; every transaction wrote one audit row.
    let transactions: i64 = crate::query_one(
        conn,
        &format!("SELECT count(*) FROM reaper_audit WHERE job_id = '{id}'"),
    )
    .await?;
    Ok(crate::Figures {
        rows: report.rows,
        total,
        longest: Duration::from_secs_f64(longest_ms / 1e3),
        batches: u64::try_from(transactions).unwrap_or(0),
    })
}

/// The ceiling: `BEGIN; DELETE FROM events WHERE user_id = 1; DELETE FROM users WHERE id = 1;
/// COMMIT` on the same data.
async fn hand_written(conn: &DatabaseConnection, children: u64) -> anyhow::Result<crate::Figures> {
    load_big_user(conn, children).await?;
    let started = Instant::now();
    conn.execute_unprepared(
        "BEGIN; DELETE FROM events WHERE user_id = 1; DELETE FROM users WHERE id = 1; COMMIT;",
    )
    .await?;
    let total = started.elapsed();
    Ok(crate::Figures {
        rows: children + 1,
        total,
        longest: total,
        batches: 1,
    })
}
