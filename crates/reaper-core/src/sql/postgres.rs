//! PostgreSQL statements of the batch family.
//!
//! PostgreSQL has no `DELETE … LIMIT`, but it has data-modifying CTEs and `SKIP LOCKED`, so a
//! whole batch — lease check, keyset selection, delete, audit entry and checkpoint — is one
//! statement and one round trip inside the batch transaction.

use chrono::{DateTime, Utc};

use crate::catalog::{KeyType, Mode};
use crate::sql::{Backend, SqlWriter, Statement, write_keyset_and_filter};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// How the batch takes its row locks.
///
/// A pass starts with `NoWait`: if no matching row is locked by another transaction (the usual
/// case) the batch takes every row of its key window, so the pass provably skips nothing and
/// needs no end-of-pass sweep. A lock conflict fails the statement at once (SQLSTATE 55P03,
/// nothing waits, nothing is written); the engine then reruns the batch with `SkipLocked`,
/// marks the pass as having skipped rows (`locked_rows_skipped`), and keeps `SkipLocked` for
/// the rest of the pass, whose end then runs the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLocking {
    /// `FOR UPDATE NOWAIT`
    NoWait,
    /// `FOR UPDATE SKIP LOCKED`, and the pass is marked as having skipped rows.
    SkipLocked,
}

/// What a batch statement needs from the ledger side.
#[derive(Debug, Clone)]
pub struct BatchContext<'a> {
    /// The job (ledger id).
    pub job_id: &'a str,
    /// The lease token this worker claimed the job with; the batch is a no-op without it.
    pub lease_token: &'a str,
    /// The batch's timestamp (audit time, soft-delete time).
    pub now: DateTime<Utc>,
    /// The renewed lease expiry.
    pub lease_until: DateTime<Utc>,
    /// How row locks are taken.
    pub locking: RowLocking,
}

/// The batch: one statement returning one row `(lease_held, row_count, first_key, last_key)`.
///
/// - `lease`: locks the job's ledger row if and only if this worker still holds the lease;
///   otherwise every later CTE sees no rows and nothing happens (`lease_held = 0`).
/// - `batch`: the next `limit` keys after the checkpoint. Expected plan: Index Scan on the
///   primary key starting at `after`, the filter applied as a row filter, stopping at LIMIT
///   (no sort, no full scan); `FOR UPDATE` locks exactly those rows, `NOWAIT` or
///   `SKIP LOCKED` as [`RowLocking`] says. Locking (not only deleting) matters: under READ
///   COMMITTED a row updated concurrently is re-checked against the filter before it is taken.
///   `MATERIALIZED` is the optimization fence that stops the planner from re-evaluating the
///   LIMIT subquery per deleted row.
/// - `removed`: `DELETE … USING batch` (hard) or `UPDATE … SET soft_delete_column = now`
///   (soft; rows already soft-deleted were excluded by the filter and are re-checked here).
/// - `summary` → `progress` (checkpoint, counters, lease renewal; `RETURNING` the new batch
///   number) → `audit` (one row per batch with the deleted keys as a JSON array).
///
/// An empty batch writes nothing: `progress` and `audit` are conditioned on `n > 0`.
pub fn delete_batch(
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    ctx: &BatchContext<'_>,
) -> Statement {
    let target = &job.target;
    let pk = &target.primary_key;
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push("WITH lease AS (SELECT id FROM reaper_jobs WHERE id = ")
        .param(SqlValue::Text(ctx.job_id.to_owned()))
        .push(" AND lease_token = ")
        .param(SqlValue::Text(ctx.lease_token.to_owned()))
        .push(" AND state = 'running' FOR UPDATE), batch AS MATERIALIZED (SELECT ")
        .ident(pk)
        .push(" AS k FROM ")
        .table(target)
        .push(" WHERE EXISTS (SELECT 1 FROM lease) AND ");
    write_keyset_and_filter(&mut w, job, after);
    w.push(" ORDER BY ")
        .ident(pk)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)))
        .push(match ctx.locking {
            RowLocking::NoWait => " FOR UPDATE NOWAIT), removed AS (",
            RowLocking::SkipLocked => " FOR UPDATE SKIP LOCKED), removed AS (",
        });
    match (job.mode, &target.soft_delete_column) {
        (Mode::Soft, Some(column)) => {
            w.push("UPDATE ")
                .table(target)
                .push(" AS t SET ")
                .ident(column)
                .push(" = ")
                .param(SqlValue::Timestamp(ctx.now))
                .push(" FROM batch WHERE t.")
                .ident(pk)
                .push(" = batch.k AND t.")
                .ident(column)
                .push(" IS NULL RETURNING batch.k)");
        }
        _ => {
            w.push("DELETE FROM ")
                .table(target)
                .push(" AS t USING batch WHERE t.")
                .ident(pk)
                .push(" = batch.k RETURNING batch.k)");
        }
    }
    // PostgreSQL (before 16) has no min/max for uuid; a uuid's order is its canonical text's.
    let (first, last) = match target.key_type {
        KeyType::Uuid => ("min(k::text)", "max(k::text)"),
        KeyType::Int | KeyType::Text => ("min(k)::text", "max(k)::text"),
    };
    w.push(", summary AS (SELECT count(*) AS n, ")
        .push(first)
        .push(" AS first_key, ")
        .push(last)
        .push(" AS last_key, COALESCE(json_agg(k ORDER BY k), '[]')::text AS keys FROM removed)");
    w.push(
        ", progress AS (UPDATE reaper_jobs AS j SET checkpoint = s.last_key, batches = j.batches + 1, \
         rows_deleted = j.rows_deleted + s.n, locked_rows_skipped = ",
    )
    .push(match ctx.locking {
        RowLocking::NoWait => "j.locked_rows_skipped",
        RowLocking::SkipLocked => "TRUE",
    })
    .push(
        ", lease_expires_at = ",
    )
    .param(SqlValue::Timestamp(ctx.lease_until))
    .push(", updated_at = ")
    .param(SqlValue::Timestamp(ctx.now))
    .push(" FROM summary AS s WHERE j.id = ")
    .param(SqlValue::Text(ctx.job_id.to_owned()))
    .push(
        " AND s.n > 0 RETURNING j.batches), audit AS (INSERT INTO reaper_audit (job_id, batch_no, target, mode, \
         row_count, first_key, last_key, keys, requested_by, reason, created_at) SELECT ",
    )
    .param(SqlValue::Text(ctx.job_id.to_owned()))
    .push(", p.batches, ")
    .param(SqlValue::Text(target.name.clone()))
    .push(", ")
    .param(SqlValue::Text(job.mode.as_str().to_owned()))
    .push(", s.n, s.first_key, s.last_key, s.keys, ")
    .param(SqlValue::Text(job.requested_by.clone()))
    .push(", ")
    .param(SqlValue::Text(job.reason.clone()))
    .push(", ")
    .param(SqlValue::Timestamp(ctx.now))
    .push(
        " FROM summary AS s, progress AS p) \
         SELECT (SELECT count(*) FROM lease) AS lease_held, s.n AS row_count, s.first_key, s.last_key FROM summary AS s",
    );
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::job;

    fn ctx() -> BatchContext<'static> {
        let at: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .into();
        BatchContext {
            job_id: "j1",
            lease_token: "tok",
            now: at,
            lease_until: at,
            locking: RowLocking::NoWait,
        }
    }

    #[test]
    fn hard_batch_is_one_statement_with_lease_keyset_delete_audit_and_checkpoint() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 7}]}}),
        );
        expect![[r#"WITH lease AS (SELECT id FROM reaper_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' FOR UPDATE), batch AS MATERIALIZED (SELECT "id" AS k FROM "app"."events" WHERE EXISTS (SELECT 1 FROM lease) AND "id" > $3 AND ("tenant_id" = $4) ORDER BY "id" LIMIT $5 FOR UPDATE NOWAIT), removed AS (DELETE FROM "app"."events" AS t USING batch WHERE t."id" = batch.k RETURNING batch.k), summary AS (SELECT count(*) AS n, min(k)::text AS first_key, max(k)::text AS last_key, COALESCE(json_agg(k ORDER BY k), '[]')::text AS keys FROM removed), progress AS (UPDATE reaper_jobs AS j SET checkpoint = s.last_key, batches = j.batches + 1, rows_deleted = j.rows_deleted + s.n, locked_rows_skipped = j.locked_rows_skipped, lease_expires_at = $6, updated_at = $7 FROM summary AS s WHERE j.id = $8 AND s.n > 0 RETURNING j.batches), audit AS (INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, first_key, last_key, keys, requested_by, reason, created_at) SELECT $9, p.batches, $10, $11, s.n, s.first_key, s.last_key, s.keys, $12, $13, $14 FROM summary AS s, progress AS p) SELECT (SELECT count(*) FROM lease) AS lease_held, s.n AS row_count, s.first_key, s.last_key FROM summary AS s"#]]
            .assert_eq(&delete_batch(&job, Some(&KeyValue::Int(10)), 500, &ctx()).sql);
    }

    #[test]
    fn skip_locked_batches_mark_the_pass() {
        let job = job(&serde_json::json!({"all_rows": true}));
        let context = BatchContext {
            locking: RowLocking::SkipLocked,
            ..ctx()
        };
        let sql = delete_batch(&job, None, 100, &context).sql;
        assert!(
            sql.contains("LIMIT $3 FOR UPDATE SKIP LOCKED), removed AS"),
            "{sql}"
        );
        assert!(sql.contains("locked_rows_skipped = TRUE"), "{sql}");
        let nowait = delete_batch(&job, None, 100, &ctx()).sql;
        assert!(
            nowait.contains("FOR UPDATE NOWAIT")
                && nowait.contains("locked_rows_skipped = j.locked_rows_skipped"),
            "{nowait}"
        );
    }

    #[test]
    fn soft_batch_sets_the_column_only_where_still_null() {
        let job = job(&serde_json::json!({"mode": "soft", "all_rows": true}));
        let sql = delete_batch(&job, None, 100, &ctx()).sql;
        assert!(sql.contains(r#"WHERE EXISTS (SELECT 1 FROM lease) AND ("deleted_at" IS NULL) ORDER BY "id" LIMIT $3"#), "{sql}");
        assert!(sql.contains(r#"removed AS (UPDATE "app"."events" AS t SET "deleted_at" = $4 FROM batch WHERE t."id" = batch.k AND t."deleted_at" IS NULL RETURNING batch.k)"#), "{sql}");
        assert!(!sql.contains("DELETE FROM \"app\""), "{sql}");
    }
}
