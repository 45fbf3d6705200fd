//! The shop schema the tests of jobs across relations share, on every backend: users ←
//! sessions (ON DELETE CASCADE), users ← orders (RESTRICT) ← order_items (RESTRICT), users ←
//! events (no constraint), users ← reviews (ON DELETE SET NULL, declared `set_null`); its
//! catalog, every table's rows, and the rows erasing some users must remove.

use std::collections::{BTreeMap, BTreeSet};

use reaper_core::catalog::{Catalog, ColumnType, Target};
use reaper_core::graph::Action;
use reaper_core::span::Span;
use reaper_core::sql::Backend;

use crate::TestDatabase;
use crate::engine::{EngineTest, TargetFixture, migrated, relation};

/// The child tables of the shop, in plan order.
pub const TABLES: [&str; 5] = ["sessions", "orders", "order_items", "events", "reviews"];

/// The shop with `users` users, each child table's batches `child_batch` rows. Per user `u`
/// (ids 1..=users, tenant `u % 3`): sessions `u*10+1..2`, orders `u*10+1..2` with items
/// `order*10+1..3`, events `u*10+1..2` and review `u*10+1`.
pub async fn shop_with(backend: Backend, users: i64, child_batch: u32) -> EngineTest {
    let test = TestDatabase::new(backend).await;
    for ddl in [
        "CREATE TABLE users (id BIGINT PRIMARY KEY, tenant_id BIGINT NOT NULL)",
        "CREATE TABLE sessions (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE)",
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT)",
        "CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, \
         FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE RESTRICT)",
        "CREATE TABLE events (id BIGINT PRIMARY KEY, user_id BIGINT)",
        "CREATE TABLE reviews (id BIGINT PRIMARY KEY, user_id BIGINT, \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL)",
        "CREATE INDEX sessions_user_id ON sessions (user_id)",
        "CREATE INDEX orders_user_id ON orders (user_id)",
        "CREATE INDEX order_items_order_id ON order_items (order_id)",
        "CREATE INDEX events_user_id ON events (user_id)",
        "CREATE INDEX reviews_user_id ON reviews (user_id)",
    ] {
        test.exec(ddl).await;
    }
    if backend == Backend::Sqlite {
        test.exec("PRAGMA foreign_keys = ON").await;
    }
    let rows = |per_user: &dyn Fn(i64) -> Vec<String>| -> Vec<String> {
        (1..=users).flat_map(per_user).collect()
    };
    let inserts = [
        (
            "users (id, tenant_id)",
            rows(&|u| vec![format!("({u}, {})", u % 3)]),
        ),
        (
            "sessions (id, user_id)",
            rows(&|u| (1..=2).map(|k| format!("({}, {u})", u * 10 + k)).collect()),
        ),
        (
            "orders (id, user_id)",
            rows(&|u| (1..=2).map(|k| format!("({}, {u})", u * 10 + k)).collect()),
        ),
        (
            "order_items (id, order_id)",
            rows(&|u| {
                (1..=2)
                    .flat_map(|k| {
                        (1..=3).map(move |i| format!("({}, {})", (u * 10 + k) * 10 + i, u * 10 + k))
                    })
                    .collect()
            }),
        ),
        (
            "events (id, user_id)",
            rows(&|u| (1..=2).map(|k| format!("({}, {u})", u * 10 + k)).collect()),
        ),
        (
            "reviews (id, user_id)",
            rows(&|u| vec![format!("({}, {u})", u * 10 + 1)]),
        ),
    ];
    for (table, values) in inserts {
        for chunk in values.chunks(500) {
            test.exec(&format!("INSERT INTO {table} VALUES {}", chunk.join(", ")))
                .await;
        }
    }
    let db = migrated(&test, Span::from_millis(50)).await;
    EngineTest {
        test,
        db,
        catalog: catalog(child_batch),
    }
}

/// The shop's catalog: every child target with `child_batch` rows per batch and its `id`
/// filterable (holds by filter), `users` filterable on `id` and `tenant_id`.
pub fn catalog(child_batch: u32) -> Catalog {
    let child = |name: &str| Target {
        batch_size: child_batch,
        ..Target::fixture(name).column("id", ColumnType::Int)
    };
    let users = Target::fixture("users")
        .column("id", ColumnType::Int)
        .column("tenant_id", ColumnType::Int);
    Catalog::new([users].into_iter().chain(TABLES.map(child)))
        .with_relations(vec![
            relation("users", "sessions", "user_id", Action::Delete),
            relation("users", "orders", "user_id", Action::Delete),
            relation("orders", "order_items", "order_id", Action::Delete),
            relation("users", "events", "user_id", Action::Delete),
            relation("users", "reviews", "user_id", Action::SetNull),
        ])
        .unwrap()
}

/// Every table's ids (reviews: the ids whose user_id is still set), keyed by table.
pub async fn state(s: &EngineTest) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut tables = BTreeMap::new();
    tables.insert("users", s.test.ids("users", "1 = 1").await);
    for table in TABLES {
        let condition = if table == "reviews" {
            "user_id IS NOT NULL"
        } else {
            "1 = 1"
        };
        tables.insert(table, s.test.ids(table, condition).await);
    }
    tables
}

/// What erasing `erased` users must remove from each table (reviews: nulled).
pub fn hanging_off(erased: &BTreeSet<i64>) -> BTreeMap<&'static str, BTreeSet<String>> {
    let ids = |f: &dyn Fn(i64) -> Vec<i64>| -> BTreeSet<String> {
        erased
            .iter()
            .flat_map(|u| f(*u))
            .map(|id| id.to_string())
            .collect()
    };
    BTreeMap::from([
        ("users", ids(&|u| vec![u])),
        ("sessions", ids(&|u| vec![u * 10 + 1, u * 10 + 2])),
        ("orders", ids(&|u| vec![u * 10 + 1, u * 10 + 2])),
        (
            "order_items",
            ids(&|u| {
                (1..=2)
                    .flat_map(|k| (1..=3).map(move |i| (u * 10 + k) * 10 + i))
                    .collect()
            }),
        ),
        ("events", ids(&|u| vec![u * 10 + 1, u * 10 + 2])),
        ("reviews", ids(&|u| vec![u * 10 + 1])),
    ])
}
