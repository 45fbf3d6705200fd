//! Test harness: isolated real databases, fixture tables, the engine as tests drive it
//! ([`engine`]), and the invariant checker every deletion test runs ([`TableSnapshot`]).
//!
//! PostgreSQL and MariaDB: one fresh database per test, on `REAPER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `REAPER_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/mysql`), dropped when the handle drops. A missing server fails
//! the test loudly; nothing is skipped. SQLite: a file in a fresh temp directory. Loopback only.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod engine;
mod graph;
mod invariants;
mod private_servers;
mod redis_queue;
pub mod shop;
mod tls_servers;
pub use graph::{GraphSnapshot, GraphTable};
pub use invariants::{AuditEntry, Checked, Removal, TableSnapshot, parse_time};
pub use private_servers::{PrivateMariaDb, PrivatePostgres, SmallDisk, free_port};
pub use redis_queue::{PrivateRedis, TestQueue, redis_url};
pub use tls_servers::{
    ClientCertificates, RedisCluster, RedisSentinels, SENTINEL_MASTER, TestCertificates, TlsRedis,
    tls_mariadb, tls_postgres,
};

use std::collections::BTreeSet;

use reaper_core::sql::Backend;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

/// Where the test PostgreSQL server is (an admin connection, used to create databases).
pub fn postgres_admin_url() -> String {
    std::env::var("REAPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Where the test MariaDB/MySQL server is (an admin connection, used to create databases).
pub fn mysql_admin_url() -> String {
    std::env::var("REAPER_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
}

/// Creates a uniquely named database through `admin_url`; returns the admin URL, the name and
/// the new database's URL. A missing server fails the test loudly, naming the variable to set.
async fn create_database(
    admin_url: String,
    server: &str,
    variable: &str,
) -> (String, String, String) {
    let admin = Database::connect(&admin_url).await.unwrap_or_else(|error| {
        panic!("{server} is required at {admin_url} ({variable}): {error}")
    });
    let name = format!(
        "reaper_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await.ok();
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    let url = format!("{base}/{name}");
    (admin_url, name, url)
}

/// An isolated database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    /// URL for reaper (`database.url`).
    pub url: String,
    /// A connection for the test's own setup and checks.
    pub conn: DatabaseConnection,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Postgres { admin_url: String, name: String },
    MySql { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
    SqliteInPlace,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::postgres().await,
            Backend::Sqlite => Self::sqlite().await,
            Backend::MySql => Self::mysql().await,
        }
    }

    pub async fn mysql() -> Self {
        Self::mysql_on(mysql_admin_url()).await
    }

    /// A database on the MariaDB server `admin_url` names (a [`PrivateMariaDb`]).
    pub async fn mysql_on(admin_url: String) -> Self {
        let (admin_url, name, url) =
            create_database(admin_url, "MariaDB/MySQL", "REAPER_TEST_MYSQL_URL").await;
        let conn = Database::connect(&url).await.unwrap();
        conn.execute_unprepared("SET SESSION time_zone = '+00:00'")
            .await
            .unwrap();
        Self {
            backend: Backend::MySql,
            url,
            conn,
            cleanup: Cleanup::MySql { admin_url, name },
        }
    }

    pub async fn postgres() -> Self {
        Self::postgres_on(postgres_admin_url()).await
    }

    /// A database on the PostgreSQL server `admin_url` names (a [`PrivatePostgres`]).
    pub async fn postgres_on(admin_url: String) -> Self {
        let (admin_url, name, url) =
            create_database(admin_url, "PostgreSQL", "REAPER_TEST_POSTGRES_URL").await;
        let conn = Database::connect(&url).await.unwrap();
        Self {
            backend: Backend::Postgres,
            url,
            conn,
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::sqlite_file(&dir.path().join("target.db"), Cleanup::Sqlite { _dir: dir }).await
    }

    /// A SQLite database in `dir` (a [`SmallDisk`]), left there: its owner removes it.
    pub async fn sqlite_in(dir: &std::path::Path) -> Self {
        Self::sqlite_file(&dir.join("target.db"), Cleanup::SqliteInPlace).await
    }

    async fn sqlite_file(file: &std::path::Path, cleanup: Cleanup) -> Self {
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let conn = Database::connect(&url).await.unwrap();
        Self {
            backend: Backend::Sqlite,
            url,
            conn,
            cleanup,
        }
    }

    fn db_backend(&self) -> DbBackend {
        match self.backend {
            Backend::Postgres => DbBackend::Postgres,
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::MySql => DbBackend::MySql,
        }
    }

    pub async fn exec(&self, sql: &str) {
        self.conn
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Runs `statements` on a new connection to this database from a thread of their own, and
    /// waits for them: what another client does while the calling thread is inside a batch
    /// transaction (a fault point's callback, which cannot await).
    pub fn exec_from_another_client(&self, statements: &[String]) {
        exec_from_another_client(&self.url, statements);
    }

    /// First column of every row, as text.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(self.db_backend(), sql.to_owned()))
            .await
            .unwrap();
        rows.iter()
            .map(|row| row.try_get_by_index::<String>(0).unwrap())
            .collect()
    }

    /// Every row, every column as text (NULL as `None`).
    pub async fn optional_strings(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_optional_strings(sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Every row, every column as text, or the database's error.
    pub async fn try_optional_strings(
        &self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, sea_orm::DbErr> {
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(self.db_backend(), sql.to_owned()))
            .await?;
        rows.iter()
            .map(|row| {
                (0..row.column_names().len())
                    .map(|index| row.try_get_by_index::<Option<String>>(index))
                    .collect()
            })
            .collect()
    }

    /// A single integer.
    pub async fn int(&self, sql: &str) -> i64 {
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(self.db_backend(), sql.to_owned()))
            .await
            .unwrap();
        rows[0]
            .try_get_by_index::<Option<i64>>(0)
            .unwrap()
            .unwrap_or(0)
    }

    /// Creates `events` with `rows` rows, deterministic: `tenant_id = id % 10`, `created_at`
    /// spread over 100 days before 2026-01-01 in an order unrelated to `id` (so a date filter
    /// matches rows across the whole key range), `kind` one of four, `deleted_at` NULL.
    pub async fn seed_events(&self, rows: u32) {
        let sql = match self.backend {
            Backend::Postgres => format!(
                "CREATE TABLE events (id bigserial PRIMARY KEY, tenant_id int NOT NULL, kind text NOT NULL, \
                 created_at timestamptz NOT NULL, payload text NOT NULL, deleted_at timestamptz);
                 CREATE INDEX events_tenant ON events (tenant_id);
                 INSERT INTO events (tenant_id, kind, created_at, payload)
                 SELECT i % 10, (ARRAY['view','click','login','buy'])[1 + i % 4],
                        TIMESTAMPTZ '2026-01-01 00:00:00+00' - ((i * 7919) % 100) * INTERVAL '1 day',
                        'payload-' || i FROM generate_series(1, {rows}) AS i;"
            ),
            Backend::Sqlite => format!(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, kind TEXT NOT NULL, \
                 created_at TEXT NOT NULL, payload TEXT NOT NULL, deleted_at TEXT);
                 CREATE INDEX events_tenant ON events (tenant_id);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO events (id, tenant_id, kind, created_at, payload)
                 SELECT i, i % 10, CASE i % 4 WHEN 0 THEN 'view' WHEN 1 THEN 'click' WHEN 2 THEN 'login' ELSE 'buy' END,
                        datetime('2026-01-01 00:00:00', '-' || ((i * 7919) % 100) || ' days'),
                        'payload-' || i FROM n;"
            ),
            // MariaDB's Sequence engine (`seq_1_to_N`) generates the rows.
            Backend::MySql => format!(
                "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, tenant_id INT NOT NULL, kind VARCHAR(16) NOT NULL, \
                 created_at DATETIME(6) NOT NULL, payload TEXT NOT NULL, deleted_at DATETIME(6) NULL, KEY events_tenant (tenant_id));
                 INSERT INTO events (id, tenant_id, kind, created_at, payload)
                 SELECT seq, seq % 10, ELT(1 + seq % 4, 'view', 'click', 'login', 'buy'),
                        TIMESTAMP '2026-01-01 00:00:00' - INTERVAL ((seq * 7919) % 100) DAY, CONCAT('payload-', seq)
                   FROM seq_1_to_{rows};"
            ),
        };
        self.exec(&sql).await;
    }

    /// `CAST(expr AS <text>)` in this backend's spelling (PostgreSQL's `CHAR` is one character).
    pub fn as_text(&self, expr: &str) -> String {
        match self.backend {
            Backend::MySql => format!("CAST({expr} AS CHAR)"),
            Backend::Postgres | Backend::Sqlite => format!("CAST({expr} AS TEXT)"),
        }
    }

    /// `CAST(expr AS <64-bit integer>)` in this backend's spelling.
    pub fn as_int(&self, expr: &str) -> String {
        match self.backend {
            Backend::MySql => format!("CAST({expr} AS SIGNED)"),
            Backend::Postgres | Backend::Sqlite => format!("CAST({expr} AS BIGINT)"),
        }
    }

    /// Creates `tokens` (uuid primary key) with `rows` rows, `user_id = n % 5`.
    pub async fn seed_tokens(&self, rows: u32) {
        let sql = match self.backend {
            Backend::Postgres => format!(
                "CREATE TABLE tokens (id uuid PRIMARY KEY, user_id int NOT NULL);
                 INSERT INTO tokens SELECT md5(i::text)::uuid, i % 5 FROM generate_series(1, {rows}) AS i;"
            ),
            Backend::Sqlite => format!(
                "CREATE TABLE tokens (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO tokens SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)
                   || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), i % 5 FROM n;"
            ),
            Backend::MySql => format!(
                "CREATE TABLE tokens (id CHAR(36) PRIMARY KEY, user_id INT NOT NULL);
                 INSERT INTO tokens SELECT UUID(), seq % 5 FROM seq_1_to_{rows};"
            ),
        };
        self.exec(&sql).await;
    }

    /// Ids (as text) matching `condition` in `table`.
    pub async fn ids(&self, table: &str, condition: &str) -> BTreeSet<String> {
        self.strings(&format!(
            "SELECT {} FROM {table} WHERE {condition}",
            self.as_text("id")
        ))
        .await
        .into_iter()
        .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, drop) = match &self.cleanup {
            Cleanup::Postgres { admin_url, name } => (
                admin_url.clone(),
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ),
            // A failed test may leave a transaction open on the database; wait for its metadata
            // lock 10 s at most (default: a year) and leave the database behind instead.
            Cleanup::MySql { admin_url, name } => (
                admin_url.clone(),
                format!("SET SESSION lock_wait_timeout = 10; DROP DATABASE IF EXISTS {name}"),
            ),
            Cleanup::Sqlite { .. } | Cleanup::SqliteInPlace => return,
        };
        {
            // Drop runs inside the test's runtime; the cleanup gets a runtime of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin.execute_unprepared(&drop).await;
                    }
                });
            })
            .join();
        }
    }
}

/// Declares each named `async fn(Backend)` once per backend, as tests in the modules `sqlite`,
/// `postgres` and `mariadb`. Begin the list with `multi_thread;` for tests that need the
/// multi-threaded runtime (a blocked worker thread must not stall the rest).
#[macro_export]
macro_rules! on_every_backend {
    (multi_thread; $($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@modules (flavor = "multi_thread") $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!(@modules () $($name),*);
    };
    (@modules $args:tt $($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test $args] async fn $name() { super::$name(reaper_core::sql::Backend::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test $args] async fn $name() { super::$name(reaper_core::sql::Backend::Postgres).await; })*
        }
        mod mariadb {
            $(#[tokio::test $args] async fn $name() { super::$name(reaper_core::sql::Backend::MySql).await; })*
        }
    };
}

/// [`TestDatabase::exec_from_another_client`] by URL, for callbacks that cannot borrow the
/// database.
pub fn exec_from_another_client(url: &str, statements: &[String]) {
    let (url, statements) = (url.to_owned(), statements.to_vec());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the other client");
        runtime.block_on(async move {
            let other = sea_orm::Database::connect(&url)
                .await
                .expect("the other client's connection");
            for sql in &statements {
                other
                    .execute_unprepared(sql)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
        });
    })
    .join()
    .expect("the other client's thread");
}
