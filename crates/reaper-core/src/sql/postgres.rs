//! PostgreSQL statements of the batch family.
//!
//! PostgreSQL has no `DELETE … LIMIT`, but it has data-modifying CTEs and `SKIP LOCKED`, so a
//! whole batch — lease check, keyset selection, delete, audit entry and checkpoint — is one
//! statement and one round trip inside the batch transaction.

use chrono::{DateTime, Utc};

use crate::catalog::{KeyType, Mode};
use crate::holds::HeldRows;
use crate::sql::holds::write_held;
use crate::sql::rows::Row;
use crate::sql::{
    Backend, RowLocking, SqlWriter, Statement, write_filter, write_keyset_and_filter,
};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

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
    /// How rows held by other transactions are dealt with ([`RowLocking`]).
    pub locking: RowLocking,
    /// The legal holds active on the target, read first in the batch's transaction: their rows
    /// stay and are counted ([`crate::holds`]).
    pub held: &'a [HeldRows],
    /// Whether this pass counts the held rows it leaves: only the job's first pass over its
    /// rows does, so a later pass (a keyset sweep after a physical pass, a pass after rows were
    /// locked) does not count the same held rows again.
    pub count_held: bool,
}

/// The batch: one statement returning one row
/// `(lease_held, row_count, first_key, last_key, selected, window_end)`.
///
/// - `lease`: locks the job's ledger row if and only if this worker still holds the lease and
///   nobody asked to cancel the job; otherwise every later CTE sees no rows and nothing happens
///   (`lease_held = 0`).
/// - `batch`: the next `limit` keys after the checkpoint (the key window). Expected plan: Index
///   Scan on the primary key starting at `after`, the filter applied as a row filter, stopping
///   at LIMIT (no sort, no full scan). `MATERIALIZED` is the optimization fence that stops the
///   planner from re-evaluating the LIMIT subquery per removed row.
/// - `removed`: `DELETE … USING batch` (hard) or `UPDATE … SET soft_delete_column = now`
///   (soft), both re-checking the filter: no up-front row locks in `Direct` mode (see
///   [`RowLocking`]).
/// - `archived` (archive mode): the copy of every removed row, as JSON, in `reaper_archive`
///   ([`crate::sql::archive`]).
/// - `summary` → `progress`: the checkpoint moves to the end of the window (even when
///   concurrent changes left nothing to remove in it), counters and lease are renewed, the batch
///   number is returned → `audit`: one row per batch that removed rows, with every key.
///
/// A window with no keys (`selected = 0`) is the end of the pass and writes nothing.
pub fn delete_batch(
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    ctx: &BatchContext<'_>,
) -> Statement {
    let target = &job.target;
    let pk = &target.primary_key;
    let mut w = SqlWriter::new(Backend::Postgres);
    write_lease_cte(&mut w, ctx);
    w.push(", batch AS MATERIALIZED (SELECT ")
        .ident(pk)
        .push(" AS reaper_key");
    write_held_column(&mut w, job, ctx);
    w.push(" FROM ")
        .table(target)
        .push(" WHERE EXISTS (SELECT 1 FROM lease) AND ");
    write_keyset_and_filter(&mut w, job, after);
    w.push(" ORDER BY ")
        .ident(pk)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.push(match ctx.locking {
        RowLocking::Direct => "), removed AS (",
        RowLocking::SkipLocked => " FOR UPDATE SKIP LOCKED), removed AS (",
    });
    match (job.mode, &target.soft_delete_column) {
        (Mode::Soft, Some(column)) => {
            w.push("UPDATE ")
                .table(target)
                .push(" AS t SET ")
                .ident(column)
                .push(" = ")
                .param(SqlValue::Timestamp(ctx.now));
            w.push(" FROM batch WHERE t.")
                .ident(pk)
                .push(" = batch.reaper_key AND (");
        }
        _ => {
            w.push("DELETE FROM ")
                .table(target)
                .push(" AS t USING batch WHERE t.")
                .ident(pk)
                .push(" = batch.reaper_key AND (");
        }
    }
    write_filter(&mut w, job);
    w.push(")");
    write_not_held(&mut w, job, ctx);
    w.push(" RETURNING batch.reaper_key");
    if job.mode == Mode::Archive {
        crate::sql::archive::write_archive_returning(&mut w);
    }
    w.push(")");
    if job.mode == Mode::Archive {
        crate::sql::archive::write_archive_cte(&mut w, job, ctx);
    }
    let max = write_summary_head(&mut w, target.key_type, ctx);
    w.push("(SELECT ")
        .push(max)
        .push(" FROM batch) AS window_end FROM removed)");
    write_chained_cte(&mut w, job, ctx);
    w.push(
        ", progress AS (UPDATE reaper_jobs AS j SET checkpoint = s.window_end, \
         batches = j.batches + CASE WHEN s.n > 0 OR s.held > 0 THEN 1 ELSE 0 END, rows_deleted = j.rows_deleted + s.n, \
         rows_held = j.rows_held + s.held, locked_rows_skipped = ",
    )
    .push(match ctx.locking {
        RowLocking::Direct => "j.locked_rows_skipped",
        RowLocking::SkipLocked => "TRUE",
    })
    .push(", ");
    write_lease_renewal_for_job(&mut w, ctx);
    w.push(" AND s.selected > 0 RETURNING j.batches)");
    write_audit_cte_and_result(&mut w, job, ctx);
    w.finish()
}

/// `chain_head = …, lease_expires_at = $, updated_at = $ FROM summary AS s WHERE j.id = $`: the
/// end of a batch's `progress` CTE, moving the audit chain's head to the batch's audit row (when
/// it writes one) and renewing the lease of the job's ledger row.
pub(crate) fn write_lease_renewal_for_job(w: &mut SqlWriter, ctx: &BatchContext<'_>) {
    w.push(
        "chain_head = CASE WHEN s.n > 0 OR s.held > 0 THEN (SELECT hash FROM chained) \
         ELSE j.chain_head END, lease_expires_at = ",
    )
    .param(SqlValue::Timestamp(ctx.lease_until))
    .push(", updated_at = ")
    .param(SqlValue::Timestamp(ctx.now))
    .push(" FROM summary AS s WHERE j.id = ")
    .param(SqlValue::Text(ctx.job_id.to_owned()));
}

/// `WITH lease AS (…)`: locks the job's ledger row if and only if this worker still holds the
/// lease and nobody asked to cancel the job; every later CTE of a batch depends on it.
pub(crate) fn write_lease_cte(w: &mut SqlWriter, ctx: &BatchContext<'_>) {
    w.push("WITH lease AS (SELECT id, batches, chain_head FROM reaper_jobs")
        .lease_guard(ctx.job_id, ctx.lease_token)
        .push(" AND cancel_requested_at IS NULL FOR UPDATE)");
}

/// `, summary AS (SELECT count(*) AS n, first_key, last_key, deleted_keys, selected, ` over the
/// `removed` CTE's `reaper_key`s and the `batch` CTE; the caller writes the `window_end` column
/// and closes it. Returns the `max` expression for the key type.
pub(crate) fn write_summary_head(
    w: &mut SqlWriter,
    key_type: KeyType,
    ctx: &BatchContext<'_>,
) -> &'static str {
    write_summary_over(w, key_type, ctx, Selection::BatchCte)
}

/// Where a batch's selected rows are counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The `batch` CTE (selected first, then removed).
    BatchCte,
    /// The removed rows themselves (a statement that selects and removes in one scan; no hold
    /// is active, so no selected row was left).
    Removed,
}

/// [`write_summary_head`] with the selected rows counted from `selection`.
pub(crate) fn write_summary_over(
    w: &mut SqlWriter,
    key_type: KeyType,
    ctx: &BatchContext<'_>,
    selection: Selection,
) -> &'static str {
    // PostgreSQL (before 16) has no min/max for uuid; a uuid's order is its canonical text's.
    let (min, max) = match key_type {
        KeyType::Uuid => ("min(reaper_key::text)", "max(reaper_key::text)"),
        KeyType::Int | KeyType::Text => ("min(reaper_key)::text", "max(reaper_key)::text"),
    };
    w.push(", summary AS (SELECT count(*) AS n, ")
        .push(min)
        .push(" AS first_key, ")
        .push(max)
        .push(" AS last_key, COALESCE(json_agg(reaper_key ORDER BY reaper_key), '[]')::text AS deleted_keys, ");
    match selection {
        Selection::BatchCte => w.push("(SELECT count(*) FROM batch) AS selected, "),
        Selection::Removed => w.push("count(*) AS selected, "),
    };
    w.push(
        if ctx.held.is_empty() || !ctx.count_held || selection == Selection::Removed {
            "0::int8 AS held, "
        } else {
            "(SELECT count(*) FROM batch WHERE reaper_held) AS held, "
        },
    );
    max
}

/// `, <held> AS reaper_held`: the batch CTE's mark of each selected row an active hold covers
/// (nothing while no hold is active on the target).
pub(crate) fn write_held_column(w: &mut SqlWriter, job: &ValidatedJob, ctx: &BatchContext<'_>) {
    if !ctx.held.is_empty() {
        w.push(", ");
        write_held(w, &job.target, ctx.held);
        w.push(" AS reaper_held");
    }
}

/// ` AND NOT <held>`: the removal's own exclusion of held rows, judged on the row version it
/// removes (nothing while no hold is active on the target).
pub(crate) fn write_not_held(w: &mut SqlWriter, job: &ValidatedJob, ctx: &BatchContext<'_>) {
    if !ctx.held.is_empty() {
        w.push(" AND NOT ");
        write_held(w, &job.target, ctx.held);
    }
}

/// `, chained AS (SELECT <sha256 hex of the audit row's content> AS hash, <previous head> AS
/// prev FROM summary AS s, lease AS l)`: the audit chain's link for the row the batch may write,
/// the content [`crate::audit_chain::content`] describes (the same text the engine hashes for
/// the other backends), bound values for every constant. One row while the lease is held.
pub(crate) fn write_chained_cte(w: &mut SqlWriter, job: &ValidatedJob, ctx: &BatchContext<'_>) {
    let text = |value: &str| SqlValue::Text(value.to_owned());
    w.push(", chained AS (SELECT encode(sha256(convert_to(concat_ws(")
        .param(text(crate::audit_chain::SEPARATOR))
        .push(", COALESCE(l.chain_head, ")
        .param(text(""))
        .push("), ")
        .param(text(ctx.job_id))
        .push(", (l.batches + 1)::text, ")
        .param(text(&job.target.name))
        .push(", ")
        .param(text(job.mode.as_str()))
        .push(", s.n::text, s.held::text, COALESCE(s.first_key, ")
        .param(text(""))
        .push("), COALESCE(s.last_key, ")
        .param(text(""))
        .push("), s.deleted_keys, ")
        .param(text(&job.requested_by))
        .push(", ")
        .param(text(&job.reason))
        .push(", ")
        .param(text(&crate::audit_chain::chain_time(ctx.now)))
        .push("), ")
        .param(text("UTF8"))
        .push(")), ")
        .param(text("hex"))
        .push(") AS hash, COALESCE(l.chain_head, ")
        .param(text(""))
        .push(") AS prev FROM summary AS s, lease AS l)");
}

/// `, audit AS (…) SELECT <BATCH_SUMMARY_COLUMNS> FROM summary AS s`: the audit row of a batch
/// that removed rows, numbered by the `progress` CTE, and the statement's one result row.
pub(crate) fn write_audit_cte_and_result(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    ctx: &BatchContext<'_>,
) {
    let target = &job.target;
    w.push(
        ", audit AS (INSERT INTO reaper_audit (job_id, batch_no, target, \
         mode, row_count, rows_held, first_key, last_key, deleted_keys, requested_by, reason, created_at, \
         prev_hash, row_hash) SELECT ",
    )
    .param(SqlValue::Text(ctx.job_id.to_owned()))
    .push(", p.batches, ")
    .param(SqlValue::Text(target.name.clone()))
    .push(", ")
    .param(SqlValue::Text(job.mode.as_str().to_owned()))
    // A batch that only left held rows has no first or last key: empty text, as elsewhere.
    .push(", s.n, s.held, COALESCE(s.first_key, ")
    .param(SqlValue::Text(String::new()))
    .push("), COALESCE(s.last_key, ")
    .param(SqlValue::Text(String::new()))
    .push("), s.deleted_keys, ")
    .param(SqlValue::Text(job.requested_by.clone()))
    .push(", ")
    .param(SqlValue::Text(job.reason.clone()))
    .push(", ")
    .param(SqlValue::Timestamp(ctx.now))
    .push(", c.prev, c.hash FROM summary AS s, progress AS p, chained AS c WHERE s.n > 0 OR s.held > 0) SELECT ")
    .push(BATCH_SUMMARY_COLUMNS)
    .push(" FROM summary AS s");
}

/// The one row [`delete_batch`] returns ([`BatchSummary::decode`] reads it by name).
pub const BATCH_SUMMARY_COLUMNS: &str = "(SELECT count(*) FROM lease) AS lease_held, s.n AS row_count, \
     s.held AS rows_held, s.first_key, s.last_key, s.selected, s.window_end";

/// What one PostgreSQL batch statement reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// False: the lease is lost or a cancel was requested, and nothing was written.
    pub lease_held: bool,
    /// Rows removed.
    pub row_count: u64,
    /// Matching rows of the window left in place under a legal hold.
    pub rows_held: u64,
    /// Smallest removed key, as text.
    pub first_key: Option<String>,
    /// Largest removed key, as text.
    pub last_key: Option<String>,
    /// Keys in the batch's window (more than `row_count` when concurrent changes took some).
    pub selected: u64,
    /// The window's last key, as text: the new checkpoint (`None` for an empty window).
    pub window_end: Option<String>,
}

impl BatchSummary {
    /// Reads the row of [`BATCH_SUMMARY_COLUMNS`].
    pub fn decode<R: Row>(row: &R) -> Result<Self, R::Error> {
        let count = |column: &'static str| -> Result<u64, R::Error> {
            Ok(u64::try_from(row.int(column)?.unwrap_or(0)).unwrap_or(0))
        };
        Ok(Self {
            lease_held: count("lease_held")? > 0,
            row_count: count("row_count")?,
            rows_held: count("rows_held")?,
            first_key: row.text("first_key")?,
            last_key: row.text("last_key")?,
            selected: count("selected")?,
            window_end: row.text("window_end")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::rows::tests::{Recording, names};
    use crate::sql::test_support::{batch_context, job};

    #[test]
    fn the_summary_decoder_reads_exactly_its_columns() {
        let row = Recording::default();
        BatchSummary::decode(&row).unwrap();
        assert_eq!(row.read.into_inner(), names(BATCH_SUMMARY_COLUMNS));
    }

    fn ctx() -> BatchContext<'static> {
        batch_context(RowLocking::Direct)
    }

    #[test]
    fn hard_batch_is_one_statement_with_lease_keyset_delete_audit_and_checkpoint() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 7}]}}),
        );
        expect![[r#"WITH lease AS (SELECT id, batches, chain_head FROM reaper_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND cancel_requested_at IS NULL FOR UPDATE), batch AS MATERIALIZED (SELECT "id" AS reaper_key FROM "app"."events" WHERE EXISTS (SELECT 1 FROM lease) AND "id" > $3 AND ("tenant_id" = $4) ORDER BY "id" LIMIT $5), removed AS (DELETE FROM "app"."events" AS t USING batch WHERE t."id" = batch.reaper_key AND ("tenant_id" = $6) RETURNING batch.reaper_key), summary AS (SELECT count(*) AS n, min(reaper_key)::text AS first_key, max(reaper_key)::text AS last_key, COALESCE(json_agg(reaper_key ORDER BY reaper_key), '[]')::text AS deleted_keys, (SELECT count(*) FROM batch) AS selected, 0::int8 AS held, (SELECT max(reaper_key)::text FROM batch) AS window_end FROM removed), chained AS (SELECT encode(sha256(convert_to(concat_ws($7, COALESCE(l.chain_head, $8), $9, (l.batches + 1)::text, $10, $11, s.n::text, s.held::text, COALESCE(s.first_key, $12), COALESCE(s.last_key, $13), s.deleted_keys, $14, $15, $16), $17)), $18) AS hash, COALESCE(l.chain_head, $19) AS prev FROM summary AS s, lease AS l), progress AS (UPDATE reaper_jobs AS j SET checkpoint = s.window_end, batches = j.batches + CASE WHEN s.n > 0 OR s.held > 0 THEN 1 ELSE 0 END, rows_deleted = j.rows_deleted + s.n, rows_held = j.rows_held + s.held, locked_rows_skipped = j.locked_rows_skipped, chain_head = CASE WHEN s.n > 0 OR s.held > 0 THEN (SELECT hash FROM chained) ELSE j.chain_head END, lease_expires_at = $20, updated_at = $21 FROM summary AS s WHERE j.id = $22 AND s.selected > 0 RETURNING j.batches), audit AS (INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, rows_held, first_key, last_key, deleted_keys, requested_by, reason, created_at, prev_hash, row_hash) SELECT $23, p.batches, $24, $25, s.n, s.held, COALESCE(s.first_key, $26), COALESCE(s.last_key, $27), s.deleted_keys, $28, $29, $30, c.prev, c.hash FROM summary AS s, progress AS p, chained AS c WHERE s.n > 0 OR s.held > 0) SELECT (SELECT count(*) FROM lease) AS lease_held, s.n AS row_count, s.held AS rows_held, s.first_key, s.last_key, s.selected, s.window_end FROM summary AS s"#]]
            .assert_eq(&delete_batch(&job, Some(&KeyValue::Int(10)), 500, &ctx()).sql);
    }

    #[test]
    fn only_skip_locked_batches_lock_up_front_and_mark_the_pass() {
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
        let direct = delete_batch(&job, None, 100, &ctx()).sql;
        assert!(
            direct.contains("LIMIT $3), removed AS")
                && direct.contains("locked_rows_skipped = j.locked_rows_skipped"),
            "{direct}"
        );
    }

    #[test]
    fn soft_batch_sets_the_column_only_where_still_null() {
        let job = job(&serde_json::json!({"mode": "soft", "all_rows": true}));
        let sql = delete_batch(&job, None, 100, &ctx()).sql;
        assert!(sql.contains(r#"WHERE EXISTS (SELECT 1 FROM lease) AND ("deleted_at" IS NULL) ORDER BY "id" LIMIT $3"#), "{sql}");
        assert!(sql.contains(r#"removed AS (UPDATE "app"."events" AS t SET "deleted_at" = $4 FROM batch WHERE t."id" = batch.reaper_key AND ("deleted_at" IS NULL) RETURNING batch.reaper_key)"#), "{sql}");
        assert!(!sql.contains("DELETE FROM \"app\""), "{sql}");
    }
}
