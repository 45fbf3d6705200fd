//! Settings of a connection or a transaction that reaper sets with SQL (PostgreSQL's
//! session settings travel as connection options instead, not as statements).

use std::time::Duration;

use crate::sql::{Backend, SqlWriter, Statement};
use crate::value::SqlValue;

/// The `application_name` of reaper's PostgreSQL sessions: how the health reads
/// ([`crate::sql::health`]) tell reaper's sessions from the application's.
pub const APPLICATION_NAME: &str = "reaper";

/// How long a cancel request waits for the batch holding the job's ledger row (PostgreSQL),
/// instead of the batches' short `lock_timeout`: a batch takes milliseconds to seconds.
pub const CANCEL_LOCK_WAIT: Duration = Duration::from_secs(10);

/// `SET LOCAL lock_timeout = '10s'` ([`CANCEL_LOCK_WAIT`]), PostgreSQL only, the first
/// statement of a cancel request's transaction. A constant: `SET` takes no parameters.
pub fn cancel_lock_timeout() -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push("SET LOCAL lock_timeout = '10s'");
    w.finish()
}

/// What every MySQL/MariaDB connection runs once, after connecting:
///
/// - READ COMMITTED: a locking scan keeps locks only on rows that match, not on every row the
///   primary-key range passes (REPEATABLE READ would, gaps included);
/// - `innodb_lock_wait_timeout`, bound: how long a statement waits for a row lock, in whole
///   seconds (InnoDB has no finer unit; at least 1).
pub fn mysql_connection_setup(lock_wait: Duration) -> [Statement; 2] {
    let mut isolation = SqlWriter::new(Backend::MySql);
    isolation.push("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    let seconds = i64::try_from(lock_wait.as_secs().max(1)).unwrap_or(i64::MAX);
    let mut lock_wait = SqlWriter::new(Backend::MySql);
    lock_wait
        .push("SET SESSION innodb_lock_wait_timeout = ")
        .param(SqlValue::Int(seconds));
    [isolation.finish(), lock_wait.finish()]
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn session_values_are_bound() {
        let [isolation, lock_wait] = mysql_connection_setup(Duration::from_millis(50));
        expect!["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
            .assert_eq(&isolation.to_string());
        expect![[r#"
            SET SESSION innodb_lock_wait_timeout = ?
            -- parameters: 1"#]]
        .assert_eq(&lock_wait.to_string());
        assert_eq!(CANCEL_LOCK_WAIT, Duration::from_secs(10));
        expect!["SET LOCAL lock_timeout = '10s'"].assert_eq(&cancel_lock_timeout().to_string());
    }
}
