//! Connecting to the target database and executing planned statements.
//!
//! The only place that turns `reaper_core::sql::Statement`s into sea-orm (or, for the MySQL
//! connection set-up, sqlx) statements and reads result rows by column name for the decoders
//! of `reaper_core::sql::rows` ([`DbRow`], which also decodes each backend's timestamps).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use reaper_core::config::DatabaseConfig;
use reaper_core::sql::rows::Row;
use reaper_core::sql::{Backend, SQLITE_TIMESTAMP_FORMAT, Statement, session};
use reaper_core::value::SqlValue;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Value,
};

use crate::error::{EngineError, ErrorClass, Refusal};

/// A connection pool to the target database, with its dialect.
#[derive(Debug, Clone)]
pub struct Database {
    connection: DatabaseConnection,
    backend: Backend,
    /// Whether the server plans TID range scans (PostgreSQL 14+), once asked: the server's
    /// version does not change under a pool, and every fresh job would ask again.
    physical_order: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl Database {
    /// Connects with pool and timeout settings suited to short batch transactions.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, EngineError> {
        let backend = backend_of_url(&config.url).ok_or_else(|| Refusal::UnsupportedUrl {
            url: redact_url(&config.url),
        })?;
        let mut options = ConnectOptions::new(config.url.clone());
        options
            .max_connections(config.max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            // Every batch takes a connection from the pool; a health ping on each take would be
            // one more round trip per batch. A dead connection fails its first statement with a
            // transient error instead, and the batch is retried.
            .test_before_acquire(false)
            .sqlx_logging(false);
        match backend {
            Backend::Postgres => {
                options.statement_timeout(config.statement_timeout.as_duration());
                let lock_timeout = config.lock_timeout.as_duration().as_millis().to_string();
                // A session of ours idle inside a transaction this long is a bug (a batch never
                // waits between its statements): the server ends it and releases its locks
                // rather than let it hold a job's ledger row forever.
                let idle_in_transaction = config
                    .statement_timeout
                    .as_duration()
                    .max(Duration::from_secs(10))
                    .as_millis()
                    .to_string();
                options.map_sqlx_postgres_opts(move |pg| {
                    pg.application_name(session::APPLICATION_NAME).options([
                        ("lock_timeout", lock_timeout.clone()),
                        (
                            "idle_in_transaction_session_timeout",
                            idle_in_transaction.clone(),
                        ),
                    ])
                });
            }
            Backend::MySql => {
                let setup = session::mysql_connection_setup(config.lock_timeout.as_duration());
                options.map_sqlx_mysql_opts(|my| my.timezone(Some("+00:00".to_owned())));
                options.map_sqlx_mysql_pool_opts(move |pool| {
                    let setup = setup.clone();
                    pool.after_connect(move |conn, _meta| {
                        let setup = setup.clone();
                        Box::pin(async move {
                            use sea_orm::sqlx::Executor;
                            for statement in &setup {
                                conn.execute(sqlx_mysql(statement)).await?;
                            }
                            Ok(())
                        })
                    })
                });
            }
            Backend::Sqlite => {
                // SQLite has one writer. A second connection of ours would only wait in SQLite's
                // busy handler, which polls with growing sleeps and keeps losing to a job that
                // commits a batch and begins the next at once (measured: a cancel request
                // starved through a whole 300-batch job). One connection lets the pool's fair
                // queue take turns instead.
                options.max_connections(1);
                options.map_sqlx_sqlite_opts(|lite| {
                    lite.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                });
            }
        }
        probe(&config.url, backend).await?;
        let connection = sea_orm::Database::connect(options).await?;
        Ok(Self {
            connection,
            backend,
            physical_order: Default::default(),
        })
    }

    /// A pool of one connection to `url`, opened on first use and tested before each, every
    /// connect, acquire and statement bounded by `timeout`: for the health reads
    /// ([`crate::health`]), which must neither wait for the batches' pool nor fail start-up
    /// when a replica is down. PostgreSQL sessions carry reaper's `application_name`.
    pub async fn connect_lazily(url: &str, timeout: Duration) -> Result<Self, EngineError> {
        let backend = backend_of_url(url).ok_or_else(|| Refusal::UnsupportedUrl {
            url: redact_url(url),
        })?;
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(1)
            .min_connections(0)
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            .connect_lazy(true)
            .sqlx_logging(false);
        if backend == Backend::Postgres {
            options.statement_timeout(timeout);
            options.map_sqlx_postgres_opts(|pg| pg.application_name(session::APPLICATION_NAME));
        }
        let connection = sea_orm::Database::connect(options).await?;
        Ok(Self {
            connection,
            backend,
            physical_order: Default::default(),
        })
    }

    /// What [`crate::physical::available`] found, once it asked.
    pub(crate) fn physical_order(&self) -> &std::sync::OnceLock<bool> {
        &self.physical_order
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The sea-orm connection (for migrations and transactions).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    /// Runs a statement returning rows.
    pub async fn query_all(&self, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        query_all(&self.connection, self.backend, statement).await
    }

    /// Runs a statement, returning the rows it affected.
    pub async fn execute(&self, statement: &Statement) -> Result<u64, DbErr> {
        execute(&self.connection, self.backend, statement).await
    }
}

/// The first connection's attempt (see [`probe`]).
type FirstConnection =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sea_orm::sqlx::Error>> + Send>>;

/// How long the first connection may take before start-up gives up on the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one connection before the pool is built, so that a database that cannot be reached
/// fails start-up within [`PROBE_TIMEOUT`] naming the cause (the pool would retry until its
/// acquire timeout and then say only that it timed out).
async fn probe(url: &str, backend: Backend) -> Result<(), EngineError> {
    // A file: the pool's own error names it.
    let Some((attempt, server)) = first_connection(url, backend)? else {
        return Ok(());
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(server.refusal(&error)),
        Err(_) => Err(EngineError::Unreachable {
            class: ErrorClass::Transient,
            cause: format!(
                "timed out after {}s connecting to {}",
                PROBE_TIMEOUT.as_secs(),
                server.place
            ),
        }),
    }
}

/// The server a URL names, as a connection error should name it.
struct ProbedServer {
    /// `host:port`.
    place: String,
    user: String,
    database: String,
}

/// The first connection's attempt and the server it goes to; `None` for SQLite (a file).
fn first_connection(
    url: &str,
    backend: Backend,
) -> Result<Option<(FirstConnection, ProbedServer)>, EngineError> {
    use std::str::FromStr;

    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};

    let malformed = |error: sea_orm::sqlx::Error| EngineError::Unreachable {
        class: ErrorClass::Permanent,
        cause: error.to_string(),
    };
    Ok(Some(match backend {
        Backend::Postgres => {
            let options =
                sea_orm::sqlx::postgres::PgConnectOptions::from_str(url).map_err(malformed)?;
            let user = options.get_username().to_owned();
            let server = ProbedServer {
                place: format!("{}:{}", options.get_host(), options.get_port()),
                database: options.get_database().unwrap_or(&user).to_owned(),
                user,
            };
            let attempt: FirstConnection =
                Box::pin(async move { options.connect().await?.close().await });
            (attempt, server)
        }
        Backend::MySql => {
            let options =
                sea_orm::sqlx::mysql::MySqlConnectOptions::from_str(url).map_err(malformed)?;
            let server = ProbedServer {
                place: format!("{}:{}", options.get_host(), options.get_port()),
                user: options.get_username().to_owned(),
                database: options.get_database().unwrap_or_default().to_owned(),
            };
            let attempt: FirstConnection =
                Box::pin(async move { options.connect().await?.close().await });
            (attempt, server)
        }
        Backend::Sqlite => return Ok(None),
    }))
}

impl ProbedServer {
    /// Why the server refused the first connection, in words naming the user, database or
    /// place at fault, classified for start-up's retry.
    fn refusal(&self, error: &sea_orm::sqlx::Error) -> EngineError {
        let Self {
            place,
            user,
            database,
        } = self;
        let unreachable = |class, cause: String| EngineError::Unreachable { class, cause };
        match error {
            sea_orm::sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                unreachable(
                    ErrorClass::Transient,
                    format!(
                        "connection refused by {place} (is the database running, on this port?)"
                    ),
                )
            }
            sea_orm::sqlx::Error::Io(io)
                if io.to_string().contains("lookup address")
                    || io.to_string().contains("Name or service not known") =>
            {
                unreachable(
                    ErrorClass::Transient,
                    format!("unknown host in {place}: {io}"),
                )
            }
            sea_orm::sqlx::Error::Database(database_error) => {
                let code = database_error.code().unwrap_or_default().into_owned();
                let number = database_error
                    .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                    .map(|mysql| mysql.number());
                let message = database_error.message();
                match (code.as_str(), number) {
                    ("28P01" | "28000", _) | (_, Some(1045)) => unreachable(
                        ErrorClass::Permanent,
                        format!("authentication failed for user `{user}` at {place}: {message}"),
                    ),
                    ("3D000", _) | (_, Some(1049)) => unreachable(
                        ErrorClass::Permanent,
                        format!("database `{database}` does not exist at {place}: {message}"),
                    ),
                    (_, Some(1044)) => unreachable(
                        ErrorClass::Permanent,
                        format!(
                            "user `{user}` may not use database `{database}` at {place}: {message}"
                        ),
                    ),
                    _ => unreachable(
                        crate::error::classify_sqlx_error(error),
                        format!("{place} refused the connection: {message}"),
                    ),
                }
            }
            other => match tls_refusal(&other.to_string()) {
                Some(why) => unreachable(
                    ErrorClass::Permanent,
                    format!("TLS to {place} failed: {why} ({other})"),
                ),
                None => unreachable(
                    crate::error::classify_sqlx_error(other),
                    format!("cannot connect to {place}: {other}"),
                ),
            },
        }
    }
}

/// Why a TLS handshake was refused, in the URL's terms (`sslrootcert` is PostgreSQL's CA
/// parameter, `ssl-ca` MySQL's); `None` when `text` is no TLS refusal. Permanent: the same
/// certificate is refused again on a retry.
fn tls_refusal(text: &str) -> Option<&'static str> {
    if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        Some(
            "the server's certificate is not trusted: it is not signed by the CA the URL names \
             (`sslrootcert=` for PostgreSQL, `ssl-ca=` for MySQL/MariaDB)",
        )
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        Some(
            "the server's certificate is not valid for the host in the URL (connect with a \
             name or address the certificate lists)",
        )
    } else if text.contains("does not support TLS") || text.contains("not support SSL") {
        Some("the server does not offer TLS, and the URL requires it")
    } else {
        None
    }
}

/// The backend a URL points at.
pub fn backend_of_url(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Some(Backend::MySql)
    } else {
        None
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn db_backend(backend: Backend) -> DbBackend {
    match backend {
        Backend::Postgres => DbBackend::Postgres,
        Backend::Sqlite => DbBackend::Sqlite,
        Backend::MySql => DbBackend::MySql,
    }
}

fn to_value(value: &SqlValue) -> Value {
    match value {
        SqlValue::Int(v) => Value::BigInt(Some(*v)),
        SqlValue::Text(v) => Value::String(Some(v.clone())),
        SqlValue::Bool(v) => Value::Bool(Some(*v)),
        SqlValue::Uuid(v) => Value::Uuid(Some(*v)),
        SqlValue::Timestamp(v) => Value::ChronoDateTimeUtc(Some(*v)),
    }
}

/// The sea-orm form of a planned statement.
pub fn to_sea(backend: Backend, statement: &Statement) -> sea_orm::Statement {
    sea_orm::Statement::from_sql_and_values(
        db_backend(backend),
        statement.sql(),
        statement.params().iter().map(to_value),
    )
}

/// The sqlx form of a planned MySQL statement, for a bare connection (the pool's set-up hook
/// runs before sea-orm has a connection to run it on).
fn sqlx_mysql(
    statement: &Statement,
) -> sea_orm::sqlx::query::Query<'static, sea_orm::sqlx::MySql, sea_orm::sqlx::mysql::MySqlArguments>
{
    let mut query = sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(statement.sql().to_owned()));
    for param in statement.params() {
        query = match param.clone() {
            SqlValue::Int(v) => query.bind(v),
            SqlValue::Text(v) => query.bind(v),
            SqlValue::Bool(v) => query.bind(v),
            SqlValue::Uuid(v) => query.bind(v.hyphenated().to_string()),
            SqlValue::Timestamp(v) => query.bind(v),
        };
    }
    query
}

/// Runs a statement returning rows on any connection or transaction.
pub async fn query_all<C: ConnectionTrait>(
    conn: &C,
    backend: Backend,
    statement: &Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    conn.query_all_raw(to_sea(backend, statement)).await
}

/// Runs a `SELECT count(*)`-shaped statement: its first row's first column (0 without a row).
pub async fn query_count<C: ConnectionTrait>(
    conn: &C,
    backend: Backend,
    statement: &Statement,
) -> Result<u64, DbErr> {
    let rows = query_all(conn, backend, statement).await?;
    rows.first().map_or(Ok(0), count_of)
}

/// A row's first column read as a count (databases return counts as signed integers).
pub fn count_of(row: &QueryResult) -> Result<u64, DbErr> {
    let count: i64 = row.try_get_by_index(0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Runs a statement on any connection or transaction, returning the rows it affected.
pub async fn execute<C: ConnectionTrait>(
    conn: &C,
    backend: Backend,
    statement: &Statement,
) -> Result<u64, DbErr> {
    Ok(conn
        .execute_raw(to_sea(backend, statement))
        .await?
        .rows_affected())
}

/// A result row read by column name, for the decoders of `reaper_core::sql::rows`.
#[derive(Debug, Clone, Copy)]
pub struct DbRow<'a> {
    /// The row.
    pub row: &'a QueryResult,
    /// Its backend (timestamps differ).
    pub backend: Backend,
}

impl Row for DbRow<'_> {
    type Error = DbErr;

    fn text(&self, column: &'static str) -> Result<Option<String>, DbErr> {
        self.row.try_get("", column)
    }

    fn int(&self, column: &'static str) -> Result<Option<i64>, DbErr> {
        self.row.try_get("", column)
    }

    fn flag(&self, column: &'static str) -> Result<Option<bool>, DbErr> {
        self.row.try_get("", column)
    }

    /// A timestamp column written by reaper: native on PostgreSQL and MySQL (sessions run in
    /// UTC), text on SQLite.
    fn time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, DbErr> {
        match self.backend {
            Backend::Postgres | Backend::MySql => self.row.try_get("", column),
            Backend::Sqlite => {
                let Some(text) = self.row.try_get::<Option<String>>("", column)? else {
                    return Ok(None);
                };
                NaiveDateTime::parse_from_str(&text, SQLITE_TIMESTAMP_FORMAT)
                    .map(|naive| Some(naive.and_utc()))
                    .or_else(|_| {
                        DateTime::parse_from_rfc3339(&text).map(|at| Some(at.with_timezone(&Utc)))
                    })
                    .map_err(|error| {
                        DbErr::Custom(format!("{column}: unreadable timestamp `{text}`: {error}"))
                    })
            }
        }
    }

    fn corrupt(column: &'static str, problem: String) -> DbErr {
        DbErr::Custom(format!("column {column}: {problem}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://reaper:s3cret@db:5432/app"),
            "postgres://reaper:***@db:5432/app"
        );
        assert_eq!(
            redact_url("postgres://reaper@db/app"),
            "postgres://reaper@db/app"
        );
        assert_eq!(
            redact_url("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}
