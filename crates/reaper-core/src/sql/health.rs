//! The reads of the database's health signals ([`crate::health`]): replica lag on a replica,
//! load and lock waits caused by reaper on the primary. Each is one small read of the server's
//! own views, no table of the application's, run on a connection of its own at most once per
//! `database.health.sample_every`. PostgreSQL and MySQL/MariaDB only (SQLite has neither
//! replicas nor sessions).

use crate::sql::session::APPLICATION_NAME;
use crate::sql::{Backend, SqlWriter, Statement};
use crate::value::SqlValue;

/// PostgreSQL, run on a replica: one row, `in_recovery` (false: the server is no replica) and
/// `lag_seconds` — 0 when every byte of WAL the replica received is replayed (so an idle
/// primary, which sends nothing, shows no lag), else the time since the last transaction it
/// replayed committed on the primary. That is the real delay of what waits for replay; after a
/// long idle spell it reads high for the moment the first new transaction is in flight (the next
/// sample, once it is replayed, reads 0). NULL when nothing was replayed since the replica
/// started. Plan: function calls, no relation.
pub fn postgres_replica_lag() -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push(
        "SELECT pg_is_in_recovery() AS in_recovery, CASE WHEN NOT pg_is_in_recovery() THEN NULL \
         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
         ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) \
         END::float8 AS lag_seconds",
    );
    w.finish()
}

/// MySQL/MariaDB, run on a replica: `SHOW REPLICA STATUS` (MariaDB 10.5.1+, MySQL 8.0.22+),
/// whose `Seconds_Behind_Master`, `Slave_IO_Running` and `Slave_SQL_Running` columns the
/// engine reads (no row: no replica). Plan: none (server state).
pub fn mysql_replica_status() -> Statement {
    let mut w = SqlWriter::new(Backend::MySql);
    w.push("SHOW REPLICA STATUS");
    w.finish()
}

/// Load: one row, `sessions`. PostgreSQL: client sessions of this database running a statement
/// now, reaper's own (its `application_name`) and this one left out. MySQL/MariaDB:
/// `SHOW GLOBAL STATUS LIKE 'Threads_running'` (server-wide, reaper's own statements
/// included; columns `Variable_name`, `Value`, this read being one of them). Plan: the
/// `pg_stat_activity` view scans the backends' shared status array (max_connections entries).
pub fn load(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::MySql => {
            w.push("SHOW GLOBAL STATUS LIKE 'Threads_running'");
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push(
                "SELECT count(*) AS sessions FROM pg_stat_activity WHERE state = 'active' \
                 AND backend_type = 'client backend' AND datname = current_database() \
                 AND pid <> pg_backend_pid() AND application_name <> ",
            )
            .param(SqlValue::Text(APPLICATION_NAME.into()));
        }
    }
    w.finish()
}

/// Lock waits caused by reaper: one row, `sessions`, the sessions of other clients waiting for
/// a lock a reaper session holds. PostgreSQL: sessions of this database waiting on a lock
/// (`wait_event_type = 'Lock'`) whose blockers (`pg_blocking_pids`, asked only for those) include
/// a session with reaper's `application_name`. MariaDB: InnoDB's lock waits
/// (`information_schema.INNODB_LOCK_WAITS`) whose blocking transaction belongs to a connection
/// of reaper's own database user and whose waiting one to another user's — so reaper needs a
/// user of its own, and `PROCESS` to see the waits (MySQL 8 keeps them in `performance_schema`
/// instead: not supported). Plan: the lock views are built from the lock table at read time;
/// they are small unless many sessions wait.
pub fn lock_waits(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    match backend {
        Backend::MySql => {
            w.push(
                "SELECT count(DISTINCT w.requesting_trx_id) AS sessions \
                 FROM information_schema.INNODB_LOCK_WAITS w \
                 JOIN information_schema.INNODB_TRX blocking ON blocking.trx_id = w.blocking_trx_id \
                 JOIN information_schema.PROCESSLIST holder ON holder.ID = blocking.trx_mysql_thread_id \
                 JOIN information_schema.INNODB_TRX waiting ON waiting.trx_id = w.requesting_trx_id \
                 JOIN information_schema.PROCESSLIST waiter ON waiter.ID = waiting.trx_mysql_thread_id \
                 WHERE holder.USER = SUBSTRING_INDEX(USER(), '@', 1) AND waiter.USER <> holder.USER",
            );
        }
        Backend::Postgres | Backend::Sqlite => {
            w.push(
                "SELECT count(*) AS sessions FROM pg_stat_activity waiting \
                 WHERE waiting.wait_event_type = 'Lock' AND waiting.datname = current_database() \
                 AND waiting.application_name <> ",
            )
            .param(SqlValue::Text(APPLICATION_NAME.into()))
            .push(
                " AND EXISTS (SELECT 1 FROM pg_stat_activity holder \
                 WHERE holder.pid = ANY (pg_blocking_pids(waiting.pid)) AND holder.application_name = ",
            )
            .param(SqlValue::Text(APPLICATION_NAME.into()))
            .push(")");
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn health_reads_per_backend() {
        expect!["SELECT pg_is_in_recovery() AS in_recovery, CASE WHEN NOT pg_is_in_recovery() THEN NULL WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END::float8 AS lag_seconds"]
            .assert_eq(&postgres_replica_lag().to_string());
        expect!["SHOW REPLICA STATUS"].assert_eq(&mysql_replica_status().to_string());
        expect![[r#"
            SELECT count(*) AS sessions FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid() AND application_name <> $1
            -- parameters: 'reaper'"#]]
        .assert_eq(&load(Backend::Postgres).to_string());
        expect!["SHOW GLOBAL STATUS LIKE 'Threads_running'"]
            .assert_eq(&load(Backend::MySql).to_string());
        expect![[r#"
            SELECT count(*) AS sessions FROM pg_stat_activity waiting WHERE waiting.wait_event_type = 'Lock' AND waiting.datname = current_database() AND waiting.application_name <> $1 AND EXISTS (SELECT 1 FROM pg_stat_activity holder WHERE holder.pid = ANY (pg_blocking_pids(waiting.pid)) AND holder.application_name = $2)
            -- parameters: 'reaper', 'reaper'"#]]
        .assert_eq(&lock_waits(Backend::Postgres).to_string());
        expect!["SELECT count(DISTINCT w.requesting_trx_id) AS sessions FROM information_schema.INNODB_LOCK_WAITS w JOIN information_schema.INNODB_TRX blocking ON blocking.trx_id = w.blocking_trx_id JOIN information_schema.PROCESSLIST holder ON holder.ID = blocking.trx_mysql_thread_id JOIN information_schema.INNODB_TRX waiting ON waiting.trx_id = w.requesting_trx_id JOIN information_schema.PROCESSLIST waiter ON waiter.ID = waiting.trx_mysql_thread_id WHERE holder.USER = SUBSTRING_INDEX(USER(), '@', 1) AND waiter.USER <> holder.USER"]
            .assert_eq(&lock_waits(Backend::MySql).to_string());
    }
}
