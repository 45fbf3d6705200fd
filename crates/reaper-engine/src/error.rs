//! Engine errors and the one place that decides whether a database error is worth retrying.

use reaper_core::validate::{OverMaxRows, ValidationError};
use sea_orm::{DbErr, RuntimeErr};

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry with backoff: the same work may well succeed later.
    Transient,
    /// Do not retry: the job is dead until a human changes something.
    Permanent,
}

/// An engine failure, carrying its intent.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job does not pass validation against the catalog. Nothing was deleted.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A database error, with its class decided once by [`classify`].
    ///
    /// The driver's error is part of the message, deliberately not an error `source`: sea-orm's
    /// errors repeat their own causes, and a chain printer would print each one again.
    #[error("{class_name} database error: {error}", class_name = match .class { ErrorClass::Transient => "transient", ErrorClass::Permanent => "permanent" })]
    Database {
        /// Retry or not.
        class: ErrorClass,
        /// The driver's error.
        error: DbErr,
    },
    /// An idempotency key was submitted again with a different request; permanent. Returning
    /// the existing job would silently skip what the new request asked for.
    #[error(
        "idempotency key `{key}` belongs to job {job_id}, submitted with a different request; \
         use a new key for a new request"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The job that holds it.
        job_id: String,
    },
    /// The database could not be reached or refused the connection: the cause in words
    /// (refused, unknown host, timed out, authentication, unknown database).
    #[error("{class_name} database error: {cause}", class_name = match .class { ErrorClass::Transient => "transient", ErrorClass::Permanent => "permanent" })]
    Unreachable {
        /// Transient (refused, unknown host, timed out) or permanent (authentication, unknown
        /// database).
        class: ErrorClass,
        /// What happened, without the driver's noise.
        cause: String,
    },
    /// A safety rail stopped the job or the start-up; permanent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Something in the database is not as reaper wrote it (corrupt checkpoint, unreadable
    /// request); permanent.
    #[error("{0}")]
    Corrupt(String),
    /// A row was inserted into a batch's key window while the batch ran (MySQL, which takes no
    /// gap locks under READ COMMITTED); the batch is rolled back and rerun by key. Transient.
    #[error("a row was inserted into the batch's key window while it ran")]
    WindowChanged,
    /// Rows matching the filter stayed held by other transactions through every pass the job
    /// may make; transient: the job retries later and takes them then.
    #[error("matching rows stayed locked by other transactions through {passes} passes")]
    RowsHeld {
        /// Passes made.
        passes: i64,
    },
    /// Rows of a child table kept appearing for a window of parents while its batches removed
    /// them (a job across relations re-drains a few times first); transient: the job retries.
    #[error(
        "new rows kept being added to `{table}` for the parents being removed; gave up after \
         {rounds} rounds of removing them (transient: the job retries later)"
    )]
    ChildrenKeptComing {
        /// The child's target.
        table: String,
        /// Re-drains made.
        rounds: u32,
    },
    /// A stored legal hold the batch cannot apply; permanent, and nothing was deleted (holds
    /// fail closed).
    #[error(transparent)]
    HoldUnreadable(#[from] reaper_core::holds::UnreadableHold),
    /// A fault injected by a test (`failpoints` feature); transient, like the crash it stands for.
    #[error("injected fault at {0}")]
    Injected(&'static str),
}

/// What a safety rail refused, and why. Every refusal is permanent: retrying changes nothing
/// until a human does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A fresh job matches more rows than its `max_rows`; nothing was deleted.
    #[error(transparent)]
    OverMaxRows(#[from] OverMaxRows),
    /// A running job reached its `max_rows` while rows still match (they appeared after its
    /// pre-check) and it may not stop there.
    #[error(
        "stopped at max_rows ({max_rows}): {rows_deleted} rows deleted and more rows still match; \
         raise max_rows or narrow the filter to continue"
    )]
    MoreRowsAtMaxRows {
        /// The job's cap.
        max_rows: u64,
        /// What the job deleted.
        rows_deleted: u64,
    },
    /// The job was claimed more times than it may be (its workers kept dying).
    #[error(
        "gave up after {max_attempts} attempts; last error: {}",
        last_error.as_deref().unwrap_or("none recorded (the worker stopped without reporting)")
    )]
    AttemptsUsedUp {
        /// The job's limit.
        max_attempts: i64,
        /// The last error recorded, if any.
        last_error: Option<String>,
    },
    /// The plan guard: the job's batches would read far more rows than they remove.
    #[error(
        "refused by the plan guard: the first batch's plan ({}) would read ~{} rows per row removed \
         (~{} of ~{} rows match); {}, or set allow_slow_plan = true on the target to run it anyway",
        report.plan,
        report.rows_read_per_row,
        report.matching_rows.map_or_else(|| "?".to_owned(), |rows| rows.to_string()),
        report.table_rows.map_or_else(|| "?".to_owned(), |rows| rows.to_string()),
        report.fix.as_deref().map_or_else(|| "narrow the filter".to_owned(), |fix| format!("create the index that lets the filter find its rows: {fix}"))
    )]
    SlowPlan {
        /// The guard's report.
        report: Box<reaper_core::plan_guard::PlanReport>,
    },
    /// A row whose delete would make the database cascade more rows than the cascade's
    /// accepted bound per batch.
    #[error(
        "deleting row {key} of `{target}` would make the database cascade {rows} rows of `{table}`, \
         more than its accepted max_rows_per_batch ({bound}); nothing of that row was deleted. \
         Declare `{table}` as a child of `{target}` so reaper removes its rows in batches, or raise the bound"
    )]
    CascadeOverBound {
        /// The target whose row it is.
        target: String,
        /// The row's key.
        key: String,
        /// The cascaded table.
        table: String,
        /// Rows the delete would cascade.
        rows: u64,
        /// The accepted bound.
        bound: u64,
    },
    /// `database.url` names no backend reaper supports.
    #[error(
        "database.url: unsupported scheme in `{url}`; use postgres://, mysql:// (MySQL or MariaDB) or sqlite://"
    )]
    UnsupportedUrl {
        /// The URL, its password redacted.
        url: String,
    },
}

impl EngineError {
    /// Retry or not.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Database { class, .. } | EngineError::Unreachable { class, .. } => *class,
            EngineError::KeyReused { .. } => ErrorClass::Permanent,
            EngineError::Injected(_)
            | EngineError::WindowChanged
            | EngineError::ChildrenKeptComing { .. }
            | EngineError::RowsHeld { .. } => ErrorClass::Transient,
            EngineError::Invalid(_)
            | EngineError::Refused(_)
            | EngineError::Corrupt(_)
            | EngineError::HoldUnreadable(_) => ErrorClass::Permanent,
        }
    }
}

impl From<DbErr> for EngineError {
    fn from(error: DbErr) -> Self {
        EngineError::Database {
            class: classify(&error),
            error,
        }
    }
}

/// SQLSTATEs (PostgreSQL) that mean "try again": serialization failure, deadlock, lock not
/// available, statement timeout / cancel, admin shutdown or terminated backend, crash
/// recovery, too many connections, disk full (53100: see [`classify_sqlite_code`] for why),
/// read-only transaction (failover in progress), and the whole connection-exception class `08`.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53100", "25006",
];

/// Classifies a database error, connection errors included. Driver-level failures (I/O, pool,
/// TLS, protocol) are transient;
/// database errors are transient only for the codes above and SQLite's busy/locked family;
/// everything else (permission denied, missing table or column, constraint, type mismatch) is
/// permanent.
pub fn classify(error: &DbErr) -> ErrorClass {
    match error {
        // A connection error is judged by its cause like any other: a refused or dropped
        // connection is transient, a wrong password or unknown database is not.
        DbErr::Conn(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Exec(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx_error)) => classify_sqlx(sqlx_error),
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Classifies a driver error (see [`classify`]).
pub(crate) fn classify_sqlx_error(error: &sea_orm::sqlx::Error) -> ErrorClass {
    classify_sqlx(error)
}

fn classify_sqlx(error: &sea_orm::sqlx::Error) -> ErrorClass {
    use sea_orm::sqlx::Error;
    match error {
        Error::Database(database_error) => {
            if let Some(mysql) =
                database_error.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
            {
                return classify_mysql_error(mysql.number());
            }
            let code = database_error.code().unwrap_or_default();
            if database_error
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some()
            {
                classify_sqlite_code(&code)
            } else {
                classify_sqlstate(&code)
            }
        }
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The SQLSTATE (PostgreSQL), error number (MySQL, as decimal text) or result code (SQLite) of a
/// database error, if it is one.
pub fn database_code(error: &DbErr) -> Option<String> {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx_error))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx_error)) => match &**sqlx_error {
            sea_orm::sqlx::Error::Database(database_error) => {
                match database_error.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
                {
                    Some(mysql) => Some(mysql.number().to_string()),
                    None => database_error.code().map(|code| code.into_owned()),
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether a statement was refused by a foreign key (a row refers to a parent that is not there:
/// PostgreSQL 23503, MySQL 1452, SQLite 787) or a unique key (PostgreSQL 23505, MySQL 1062,
/// SQLite 1555 and 2067) — what a restore leaves a row archived for, instead of failing.
pub fn is_key_violation(error: &DbErr) -> bool {
    matches!(
        database_code(error).as_deref(),
        Some("23503" | "23505" | "1452" | "1062" | "787" | "1555" | "2067")
    )
}

/// MySQL/MariaDB error numbers that mean "try again": lock wait timeout (1205, also MariaDB's
/// answer to `NOWAIT`), deadlock (1213), `NOWAIT` conflict (3572, MySQL), too many connections
/// (1040), server shutting down (1053), read-only server (1290, 1836: failover), query
/// interrupted or killed (1317, 1927), statement time limits (3024 MySQL, 1969 MariaDB), and the
/// client-side lost-connection family (2002, 2006, 2013).
const TRANSIENT_MYSQL_ERRORS: &[u16] = &[
    1205, 1213, 3572, 1040, 1053, 1290, 1836, 1317, 1927, 3024, 1969, 2002, 2006, 2013,
];

/// A MySQL/MariaDB error number.
pub fn classify_mysql_error(number: u16) -> ErrorClass {
    if TRANSIENT_MYSQL_ERRORS.contains(&number) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// A PostgreSQL SQLSTATE.
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    if TRANSIENT_SQLSTATES.contains(&code) || code.starts_with("08") {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// A SQLite extended result code (decimal text): SQLITE_BUSY (5), SQLITE_LOCKED (6) and
/// SQLITE_FULL (13) with their extended codes (`code & 0xff`) are transient. A full disk is
/// transient because the batch that hit it rolled back whole (SQLite's rollback is atomic) and
/// the fix is outside the job: a DBA frees space and expects the job to carry on, not to be
/// resubmitted; the backoff spaces the retries, and `max_attempts` still ends a job whose disk
/// stays full, `dead` with the error naming it.
pub fn classify_sqlite_code(code: &str) -> ErrorClass {
    match code.parse::<u32>() {
        Ok(sqlite_code) if matches!(sqlite_code & 0xff, 5 | 6 | 13) => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_sqlite_codes_are_classified() {
        let sqlstates = [
            ("40001", ErrorClass::Transient), // serialization_failure
            ("40P01", ErrorClass::Transient), // deadlock_detected
            ("55P03", ErrorClass::Transient), // lock_not_available (lock_timeout)
            ("57014", ErrorClass::Transient), // query_canceled (statement_timeout)
            ("57P01", ErrorClass::Transient), // admin_shutdown (pg_terminate_backend)
            ("08006", ErrorClass::Transient), // connection_failure
            ("53100", ErrorClass::Transient), // disk_full
            ("42501", ErrorClass::Permanent), // insufficient_privilege (digits only, low byte 5)
            ("42P01", ErrorClass::Permanent), // undefined_table
            ("42703", ErrorClass::Permanent), // undefined_column
            ("23503", ErrorClass::Permanent), // foreign_key_violation
        ];
        for (code, expected) in sqlstates {
            assert_eq!(classify_sqlstate(code), expected, "{code}");
        }
        let sqlite_codes = [
            ("5", ErrorClass::Transient),   // SQLITE_BUSY
            ("517", ErrorClass::Transient), // SQLITE_BUSY_SNAPSHOT
            ("6", ErrorClass::Transient),   // SQLITE_LOCKED
            ("13", ErrorClass::Transient),  // SQLITE_FULL (space freed, the job carries on)
            ("1", ErrorClass::Permanent),   // SQLITE_ERROR (no such table, …)
            ("787", ErrorClass::Permanent), // SQLITE_CONSTRAINT_FOREIGNKEY
        ];
        for (code, expected) in sqlite_codes {
            assert_eq!(classify_sqlite_code(code), expected, "{code}");
        }
        let mysql_errors = [
            (1205, ErrorClass::Transient), // ER_LOCK_WAIT_TIMEOUT (and MariaDB NOWAIT)
            (1213, ErrorClass::Transient), // ER_LOCK_DEADLOCK
            (3572, ErrorClass::Transient), // ER_LOCK_NOWAIT
            (2013, ErrorClass::Transient), // CR_SERVER_LOST
            (1142, ErrorClass::Permanent), // ER_TABLEACCESS_DENIED_ERROR
            (1146, ErrorClass::Permanent), // ER_NO_SUCH_TABLE
            (1054, ErrorClass::Permanent), // ER_BAD_FIELD_ERROR
            (1451, ErrorClass::Permanent), // ER_ROW_IS_REFERENCED_2 (foreign key)
        ];
        for (number, expected) in mysql_errors {
            assert_eq!(classify_mysql_error(number), expected, "{number}");
        }
    }

    #[test]
    fn pool_and_connection_errors_are_transient() {
        assert_eq!(
            classify(&DbErr::ConnectionAcquire(
                sea_orm::error::ConnAcquireErr::Timeout
            )),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(&DbErr::RecordNotFound("x".into())),
            ErrorClass::Permanent
        );
    }
}
