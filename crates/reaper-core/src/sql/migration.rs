//! DDL that sea-orm-migration's builder cannot express, run by `reaper_engine::migration`.
//! Constant text: no identifier or value comes from outside.

use crate::sql::{Backend, SqlWriter, Statement};

/// PostgreSQL: compress `reaper_audit.deleted_keys` with lz4 (PostgreSQL 14+, when built in),
/// or store it uncompressed where lz4 is missing. pglz cost ~1.7 ms per 5,000-key batch
/// (about 15% of the batch); lz4 nothing measurable. A `DO` block, so it runs unprepared.
pub fn audit_keys_compression() -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push(
        "DO $$ BEGIN
                       EXECUTE 'ALTER TABLE reaper_audit ALTER COLUMN deleted_keys SET COMPRESSION lz4';
                     EXCEPTION WHEN OTHERS THEN
                       ALTER TABLE reaper_audit ALTER COLUMN deleted_keys SET STORAGE EXTERNAL;
                     END $$",
    );
    w.finish()
}

/// MySQL/MariaDB: the idempotency key in a binary collation, so that keys compare
/// case-sensitively as on the other backends (`Erase-1` and `erase-1` are two keys).
pub fn case_sensitive_idempotency_key() -> Statement {
    let mut w = SqlWriter::new(Backend::MySql);
    w.push(
        "ALTER TABLE reaper_jobs MODIFY idempotency_key VARCHAR(200) \
         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
    );
    w.finish()
}

/// The index the dashboard's requester filter walks (`sql::ledger::list_jobs_of`): PostgreSQL
/// and SQLite index the request's `requested_by` as an expression, with `id` for the order.
/// (MySQL/MariaDB index a virtual column instead: [`requester_column`].) Reads every job once
/// to build; submits pay one index entry each.
pub fn requester_index(backend: Backend) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push(match backend {
        Backend::Postgres => {
            "CREATE INDEX IF NOT EXISTS reaper_jobs_requested_by ON reaper_jobs \
             ((request::jsonb ->> 'requested_by'), id)"
        }
        Backend::Sqlite => {
            "CREATE INDEX IF NOT EXISTS reaper_jobs_requested_by ON reaper_jobs \
             (json_extract(request, '$.requested_by'), id)"
        }
        Backend::MySql => "CREATE INDEX reaper_jobs_requested_by ON reaper_jobs (requested_by, id)",
    });
    w.finish()
}

/// MySQL/MariaDB: `requested_by`, a virtual column of the request's first 190 characters of
/// `requested_by` (MariaDB has no expression index; a prefix keeps the key within InnoDB's
/// limit and can never be too long for the column).
pub fn requester_column() -> Statement {
    let mut w = SqlWriter::new(Backend::MySql);
    w.push(
        "ALTER TABLE reaper_jobs ADD COLUMN requested_by VARCHAR(190) \
         AS (LEFT(JSON_UNQUOTE(JSON_EXTRACT(request, '$.requested_by')), 190)) VIRTUAL",
    );
    w.finish()
}
