//! SQLite statements of the batch family.
//!
//! SQLite has `RETURNING` but no data-modifying CTEs and no row locks (a write transaction
//! locks the database; the engine opens it `IMMEDIATE`), and the bundled library is built
//! without `DELETE … LIMIT`. So a batch is four statements in one transaction: the lease check
//! ([`crate::sql::ledger::lock_job`]), this delete (or soft-delete) returning the keys, the audit
//! entry and the checkpoint ([`crate::sql::ledger::insert_audit`],
//! [`crate::sql::ledger::advance_checkpoint`]).

use chrono::{DateTime, Utc};

use crate::sql::{Backend, SqlWriter, Statement, write_keyset_and_filter, write_removal_head};
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
    write_removal_head(&mut w, job, now);
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

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::{at, job};

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
}
