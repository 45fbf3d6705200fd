//! SQLite statements of the batch family.
//!
//! SQLite has `RETURNING` but no data-modifying CTEs and no row locks (a write transaction
//! locks the database; the engine opens it `IMMEDIATE`), and the bundled library is built
//! without `DELETE … LIMIT`. So a batch is three statements in one transaction: delete (or
//! soft-delete) returning the keys, advance the checkpoint under the lease, insert the audit
//! entry.

use chrono::{DateTime, Utc};

use crate::catalog::Mode;
use crate::sql::{Backend, SqlWriter, Statement, write_keyset_and_filter};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// `DELETE FROM t WHERE pk IN (SELECT pk … WHERE pk > $after AND <filter> ORDER BY pk LIMIT $n)
/// RETURNING pk`, or the soft `UPDATE … SET soft_delete_column = $now` of the same rows.
///
/// Expected plan: `SEARCH t USING INTEGER PRIMARY KEY (rowid>?)` (or the pk index) for the
/// subquery, then `SEARCH t USING INTEGER PRIMARY KEY (rowid=?)` per key. RETURNING order is
/// unspecified; the engine sorts the keys.
pub fn delete_batch(
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    now: DateTime<Utc>,
) -> Statement {
    let target = &job.target;
    let pk = &target.primary_key;
    let mut w = SqlWriter::new(Backend::Sqlite);
    match (job.mode, &target.soft_delete_column) {
        (Mode::Soft, Some(column)) => {
            w.push("UPDATE ")
                .table(target)
                .push(" SET ")
                .ident(column)
                .push(" = ")
                .param(SqlValue::Timestamp(now));
        }
        _ => {
            w.push("DELETE FROM ").table(target);
        }
    }
    w.push(" WHERE ")
        .ident(pk)
        .push(" IN (SELECT ")
        .ident(pk)
        .push(" FROM ")
        .table(target)
        .push(" WHERE ");
    write_keyset_and_filter(&mut w, job, after);
    w.push(" ORDER BY ")
        .ident(pk)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)))
        .push(") RETURNING ")
        .ident(pk);
    w.finish()
}

/// Advances the checkpoint and counters, renewing the lease, only while this worker holds it.
/// `RETURNING batches` gives the batch number; no row means the lease is lost and the engine
/// rolls the batch back. Expected plan: primary-key lookup on `reaper_jobs`.
pub fn advance_checkpoint(
    job_id: &str,
    lease_token: &str,
    last_key: &KeyValue,
    rows: u64,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(Backend::Sqlite);
    w.push("UPDATE reaper_jobs SET checkpoint = ")
        .param(SqlValue::Text(last_key.to_text()))
        .push(", batches = batches + 1, rows_deleted = rows_deleted + ")
        .param(SqlValue::Int(i64::try_from(rows).unwrap_or(i64::MAX)))
        .push(", lease_expires_at = ")
        .param(SqlValue::Timestamp(lease_until))
        .push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .push(" WHERE id = ")
        .param(SqlValue::Text(job_id.to_owned()))
        .push(" AND lease_token = ")
        .param(SqlValue::Text(lease_token.to_owned()))
        .push(" AND state = 'running' RETURNING batches");
    w.finish()
}

/// One audit row for one committed batch.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Ledger id of the job.
    pub job_id: &'a str,
    /// 1-based batch number.
    pub batch_no: i64,
    /// The keys the batch deleted, ascending.
    pub keys: &'a [KeyValue],
    /// Batch time.
    pub at: DateTime<Utc>,
}

/// `INSERT INTO reaper_audit …` for one batch. Expected plan: a single-row insert plus the
/// unique `(job_id, batch_no)` index check.
pub fn insert_audit(job: &ValidatedJob, entry: &AuditEntry<'_>) -> Statement {
    let keys_json = serde_json::to_string(entry.keys).unwrap_or_else(|_| "[]".into());
    let first = entry
        .keys
        .first()
        .map(KeyValue::to_text)
        .unwrap_or_default();
    let last = entry.keys.last().map(KeyValue::to_text).unwrap_or_default();
    let mut w = SqlWriter::new(Backend::Sqlite);
    w.push(
        "INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, first_key, last_key, keys, \
         requested_by, reason, created_at) VALUES (",
    );
    let values = [
        SqlValue::Text(entry.job_id.to_owned()),
        SqlValue::Int(entry.batch_no),
        SqlValue::Text(job.target.name.clone()),
        SqlValue::Text(job.mode.as_str().to_owned()),
        SqlValue::Int(i64::try_from(entry.keys.len()).unwrap_or(i64::MAX)),
        SqlValue::Text(first),
        SqlValue::Text(last),
        SqlValue::Text(keys_json),
        SqlValue::Text(job.requested_by.clone()),
        SqlValue::Text(job.reason.clone()),
        SqlValue::Timestamp(entry.at),
    ];
    for (index, value) in values.into_iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(value);
    }
    w.push(")");
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::job;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T08:30:00Z")
            .unwrap()
            .into()
    }

    #[test]
    fn hard_batch_deletes_a_keyset_window_returning_keys() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "created_at", "op": "older_than", "value": "1d"}]}}),
        );
        expect![[r#"
            DELETE FROM "app"."events" WHERE "id" IN (SELECT "id" FROM "app"."events" WHERE "id" > ? AND ("created_at" < ?) ORDER BY "id" LIMIT ?) RETURNING "id"
            -- parameters: 99, '2026-11-24 00:00:00', 250"#]]
        .assert_eq(&delete_batch(&job, Some(&KeyValue::Int(99)), 250, at()).to_string());
    }

    #[test]
    fn soft_batch_sets_the_soft_delete_column_in_sqlite_text_form() {
        let job = job(
            &serde_json::json!({"mode": "soft", "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 3}]}}),
        );
        expect![[r#"
            UPDATE "app"."events" SET "deleted_at" = ? WHERE "id" IN (SELECT "id" FROM "app"."events" WHERE ("tenant_id" = ? AND "deleted_at" IS NULL) ORDER BY "id" LIMIT ?) RETURNING "id"
            -- parameters: '2026-11-25 08:30:00', 3, 10"#]]
        .assert_eq(&delete_batch(&job, None, 10, at()).to_string());
    }

    #[test]
    fn checkpoint_is_guarded_by_the_lease_and_audit_lists_keys() {
        let checkpoint = advance_checkpoint("j1", "tok", &KeyValue::Int(42), 3, at(), at());
        expect![[r#"UPDATE reaper_jobs SET checkpoint = ?, batches = batches + 1, rows_deleted = rows_deleted + ?, lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING batches"#]]
            .assert_eq(&checkpoint.sql);
        let job = job(&serde_json::json!({"all_rows": true}));
        let keys = [KeyValue::Int(40), KeyValue::Int(41), KeyValue::Int(42)];
        let audit = insert_audit(
            &job,
            &AuditEntry {
                job_id: "j1",
                batch_no: 2,
                keys: &keys,
                at: at(),
            },
        );
        expect![[r#"
            INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, first_key, last_key, keys, requested_by, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            -- parameters: 'j1', 2, 'events', 'hard', 3, '40', '42', '[40,41,42]', 'svc', 'test', '2026-11-25 08:30:00'"#]]
        .assert_eq(&audit.to_string());
    }
}
