//! PostgreSQL statements of the physical walk ([`crate::strategy`]): a batch over a range of
//! heap blocks, and the look at the server and the table the walk needs first.
//!
//! A physical batch is the keyset batch's transaction with another selection: the tuples of a
//! `ctid` range (PostgreSQL 14+ plans `ctid > a AND ctid < b` as a *Tid Range Scan*, which reads
//! exactly those blocks in order) instead of the next keys after a checkpoint. Lease check,
//! removal, audit row with every key, checkpoint and counters stay in the one statement.

use crate::catalog::Target;
use crate::sql::postgres::{
    BatchContext, Selection, write_audit_cte_and_result, write_chained_cte, write_held_column,
    write_lease_cte, write_lease_renewal_for_job, write_not_held, write_summary_head,
    write_summary_over,
};
use crate::sql::{Backend, RowLocking, SqlWriter, Statement, write_filter, write_removal_head};
use crate::strategy::{PHYSICAL_CHECKPOINT_PREFIX, Tid};
use crate::validate::ValidatedJob;
use crate::value::SqlValue;

/// The oldest server with TID range scans (`server_version_num`).
pub const MIN_SERVER_VERSION: i64 = 140_000;

/// `SELECT current_setting('server_version_num')::int8 AS version`: one row, no table read.
pub fn server_version() -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push("SELECT current_setting('server_version_num')::int8 AS version");
    w.finish()
}

/// The table's size now: `blocks` (heap blocks, from the relation's file size) and
/// `estimated_rows` (`pg_class.reltuples`, 0 when never analyzed). Expected plan: one lookup
/// of `pg_class` by oid; the name is resolved by `to_regclass` against the search path as the
/// batch statements resolve it.
pub fn table_size(target: &Target) -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push(
        "SELECT (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8 AS blocks, \
         greatest(c.reltuples, 0)::int8 AS estimated_rows FROM pg_class AS c WHERE c.oid = to_regclass(",
    )
    .param(SqlValue::Text(quoted_table_name(target)))
    .push(")");
    w.finish()
}

/// The target's table as `to_regclass` reads it: the text [`SqlWriter::table`] writes into
/// every statement, bound here as a value (never spliced into this statement).
fn quoted_table_name(target: &Target) -> String {
    let mut name = SqlWriter::new(Backend::Postgres);
    name.table(target);
    name.finish().sql
}

/// How a physical batch keeps within its row limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowBound {
    /// One scan of the range: remove every matching tuple in it, and fail the whole statement
    /// (rolled back, nothing removed) when that is more than the limit, with an error whose
    /// message carries [`OVER_LIMIT_MARK`]. The runner then reruns the range [`Selected`]
    /// (`RowBound::Selected`). The span is sized from the blocks earlier batches' rows filled,
    /// so a rerun is the exception; one scan instead of two is ~25% of the statement's time.
    /// Used only with [`RowLocking::Direct`] and no hold on the target; otherwise it is
    /// `Selected`.
    Guarded,
    /// Two scans: select the first `limit` matching tuples in `ctid` order, then remove those.
    Selected,
}

/// Text in the error a [`RowBound::Guarded`] batch raises when its range held more matching
/// tuples than its limit: `invalid input syntax for type bigint: "<n> rows: reaper physical
/// batch over its limit"` (SQLSTATE 22P02). Plain SQL has no `RAISE`; a cast of text that
/// depends on the batch's own count is evaluated only when that count is over the limit.
pub const OVER_LIMIT_MARK: &str = " rows: reaper physical batch over its limit";

/// One physical batch ([`RowBound::Selected`]): one statement returning the row of
/// [`crate::sql::postgres::BATCH_SUMMARY_COLUMNS`], where `window_end` is the next checkpoint
/// as a tid (`(block,offset)`).
///
/// - `lease`: as the keyset batch.
/// - `batch`: the tuples after `after` and before `end` that match the filter, in `ctid`
///   order, at most `limit` of them. Expected plan: *Tid Range Scan* over exactly those blocks
///   with the filter as a row filter, a top-N sort of the matching tuples, LIMIT. The LIMIT is
///   what bounds the batch's rows whatever the blocks hold; `MATERIALIZED` evaluates it once.
///   `SkipLocked` adds `FOR UPDATE SKIP LOCKED` (tuples another transaction holds are left to
///   the keyset sweep that ends the pass).
/// - `removed`: `DELETE` (hard) or `UPDATE … SET soft_delete_column` (soft) of those tuples.
///   Expected plan: *Tid Scan* on `ctid = ANY (…)`, re-checking the filter: under READ
///   COMMITTED a tuple another transaction changed meanwhile is judged on its new version.
/// - `summary`: the removed keys; `window_end` is the last selected tuple when the LIMIT cut
///   the range (the rest of the range follows in the next batch), else `end`.
/// - `progress`: the checkpoint `tid:(block,offset)` ([`crate::strategy::encode_checkpoint`]),
///   counters and lease, written even when the range held no matching row (the pass moves on).
/// - `audit`: as the keyset batch, for a batch that removed rows.
///
/// With [`RowBound::Guarded`] (and direct locking, no hold), [`delete_whole_range`] instead.
pub fn delete_range(
    job: &ValidatedJob,
    (after, end): (Tid, Tid),
    limit: u32,
    bound: RowBound,
    ctx: &BatchContext<'_>,
) -> Statement {
    if bound == RowBound::Guarded && ctx.locking == RowLocking::Direct && ctx.held.is_empty() {
        return delete_whole_range(job, (after, end), limit, ctx);
    }
    let target = &job.target;
    let mut w = SqlWriter::new(Backend::Postgres);
    write_lease_cte(&mut w, ctx);
    w.push(", batch AS MATERIALIZED (SELECT ctid AS reaper_tid");
    write_held_column(&mut w, job, ctx);
    w.push(" FROM ")
        .table(target)
        .push(" WHERE EXISTS (SELECT 1 FROM lease) AND ctid > ")
        .param(SqlValue::Text(after.to_sql_text()))
        .push("::tid AND ctid < ")
        .param(SqlValue::Text(end.to_sql_text()))
        .push("::tid AND (");
    write_filter(&mut w, job);
    w.push(") ORDER BY ctid LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    w.push(match ctx.locking {
        RowLocking::Direct => "), removed AS (",
        RowLocking::SkipLocked => " FOR UPDATE SKIP LOCKED), removed AS (",
    });
    write_removal_head(&mut w, job, ctx.now);
    w.push(" WHERE ctid = ANY (ARRAY(SELECT reaper_tid FROM batch)) AND (");
    write_filter(&mut w, job);
    w.push(")");
    write_not_held(&mut w, job, ctx);
    w.push(" RETURNING ")
        .ident(&target.primary_key)
        .push(" AS reaper_key)");
    write_summary_head(&mut w, target.key_type, ctx);
    w.push("(SELECT CASE WHEN count(*) >= ")
        .param(SqlValue::Int(i64::from(limit)))
        .push(" THEN max(reaper_tid) ELSE ")
        .param(SqlValue::Text(end.to_sql_text()))
        .push("::tid END FROM batch)::text AS window_end FROM removed)");
    write_progress_and_audit(&mut w, job, ctx);
    w.finish()
}

/// One physical batch ([`RowBound::Guarded`]): the same transaction's statement with one scan.
///
/// - `removed`: `DELETE` (hard) or `UPDATE … SET soft_delete_column` (soft) of every tuple
///   after `after` and before `end` that matches the filter, under the lease. Expected plan:
///   *Tid Range Scan* over exactly those blocks with the filter as a row filter (the lease is
///   a one-time filter).
/// - `summary`: the removed keys; `window_end` is `end` — or, when more than `limit` tuples
///   matched, the cast that fails the statement ([`OVER_LIMIT_MARK`]), so nothing is removed.
/// - `progress`, `audit`: as [`delete_range`].
fn delete_whole_range(
    job: &ValidatedJob,
    (after, end): (Tid, Tid),
    limit: u32,
    ctx: &BatchContext<'_>,
) -> Statement {
    let target = &job.target;
    let mut w = SqlWriter::new(Backend::Postgres);
    write_lease_cte(&mut w, ctx);
    w.push(", removed AS (");
    write_removal_head(&mut w, job, ctx.now);
    w.push(" WHERE EXISTS (SELECT 1 FROM lease) AND ctid > ")
        .param(SqlValue::Text(after.to_sql_text()))
        .push("::tid AND ctid < ")
        .param(SqlValue::Text(end.to_sql_text()))
        .push("::tid AND (");
    write_filter(&mut w, job);
    w.push(") RETURNING ")
        .ident(&target.primary_key)
        .push(" AS reaper_key)");
    write_summary_over(&mut w, target.key_type, ctx, Selection::Removed);
    w.push("CASE WHEN count(*) > ")
        .param(SqlValue::Int(i64::from(limit)))
        .push(" THEN (count(*)::text || ")
        .param(SqlValue::Text(OVER_LIMIT_MARK.to_owned()))
        .push(")::int8::text ELSE ")
        .param(SqlValue::Text(end.to_sql_text()))
        .push("::tid::text END AS window_end FROM removed)");
    write_progress_and_audit(&mut w, job, ctx);
    w.finish()
}

/// `, chained …, progress …, audit … SELECT …`: the end both physical shapes share — the audit
/// chain's link, the checkpoint `tid:(block,offset)`, counters and lease, the audit row.
fn write_progress_and_audit(w: &mut SqlWriter, job: &ValidatedJob, ctx: &BatchContext<'_>) {
    write_chained_cte(w, job, ctx);
    w.push(", progress AS (UPDATE reaper_jobs AS j SET checkpoint = ")
        .param(SqlValue::Text(PHYSICAL_CHECKPOINT_PREFIX.to_owned()))
        .push(
            " || s.window_end, batches = j.batches + CASE WHEN s.n > 0 OR s.held > 0 THEN 1 ELSE 0 END, \
             rows_deleted = j.rows_deleted + s.n, rows_held = j.rows_held + s.held, ",
        );
    write_lease_renewal_for_job(w, ctx);
    w.push(" AND EXISTS (SELECT 1 FROM lease) RETURNING j.batches)");
    write_audit_cte_and_result(w, job, ctx);
}

/// `EXPLAIN (FORMAT JSON) SELECT 1 FROM t WHERE <filter>`: the planner's estimate of the rows
/// the job's filter matches (the top node's `Plan Rows`). Plans only; reads no row.
pub fn estimate_matching(job: &ValidatedJob) -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push("EXPLAIN (FORMAT JSON) SELECT 1 FROM ")
        .table(&job.target)
        .push(" WHERE ");
    write_filter(&mut w, job);
    w.finish()
}

/// Starts a job's physical pass: pass [`crate::strategy::PHYSICAL_PASS`], no checkpoint yet,
/// and the strategy note as its result until it ends. Lease-guarded.
pub fn start_physical_pass(
    id: &str,
    token: &str,
    note: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Statement {
    note_update(Some(crate::strategy::PHYSICAL_PASS), id, token, note, now)
}

/// Ends a job's physical pass and starts its keyset sweep (pass 1 from the first key), with
/// the updated note (the rows the physical pass removed). Lease-guarded.
pub fn start_sweep(
    id: &str,
    token: &str,
    note: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Statement {
    note_update(Some(1), id, token, note, now)
}

/// Records an unfinished job's strategy note as its result (a job walking by keyset on
/// PostgreSQL, so that its later runs and its summary keep the choice). Lease-guarded.
pub fn record_note(
    id: &str,
    token: &str,
    note: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Statement {
    note_update(None, id, token, note, now)
}

/// `UPDATE reaper_jobs SET [checkpoint = NULL, passes = $pass, locked_rows_skipped = FALSE,]
/// result = $note …` under the lease: a new pass from its start, or the note alone.
fn note_update(
    pass: Option<i64>,
    id: &str,
    token: &str,
    note: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Statement {
    let mut w = SqlWriter::new(Backend::Postgres);
    w.push("UPDATE reaper_jobs SET ");
    if let Some(pass) = pass {
        w.push("checkpoint = NULL, passes = ")
            .param(SqlValue::Int(pass))
            .push(", locked_rows_skipped = FALSE, ");
    }
    w.push("result = ")
        .param(SqlValue::Text(note.to_owned()))
        .push(", updated_at = ")
        .param(SqlValue::Timestamp(now))
        .lease_guard(id, token);
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::{batch_context as ctx, job};

    #[test]
    fn a_physical_batch_is_one_statement_over_a_bounded_tid_range() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 7}]}}),
        );
        let statement = delete_range(
            &job,
            (Tid::block_start(10), Tid::block_start(138)),
            500,
            RowBound::Selected,
            &ctx(RowLocking::Direct),
        );
        expect![[r#"WITH lease AS (SELECT id, batches, chain_head FROM reaper_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND cancel_requested_at IS NULL FOR UPDATE), batch AS MATERIALIZED (SELECT ctid AS reaper_tid FROM "app"."events" WHERE EXISTS (SELECT 1 FROM lease) AND ctid > $3::tid AND ctid < $4::tid AND ("tenant_id" = $5) ORDER BY ctid LIMIT $6), removed AS (DELETE FROM "app"."events" WHERE ctid = ANY (ARRAY(SELECT reaper_tid FROM batch)) AND ("tenant_id" = $7) RETURNING "id" AS reaper_key), summary AS (SELECT count(*) AS n, min(reaper_key)::text AS first_key, max(reaper_key)::text AS last_key, COALESCE(json_agg(reaper_key ORDER BY reaper_key), '[]')::text AS deleted_keys, (SELECT count(*) FROM batch) AS selected, 0::int8 AS held, (SELECT CASE WHEN count(*) >= $8 THEN max(reaper_tid) ELSE $9::tid END FROM batch)::text AS window_end FROM removed), chained AS (SELECT encode(sha256(convert_to(concat_ws($10, COALESCE(l.chain_head, $11), $12, (l.batches + 1)::text, $13, $14, s.n::text, s.held::text, COALESCE(s.first_key, $15), COALESCE(s.last_key, $16), s.deleted_keys, $17, $18, $19), $20)), $21) AS hash, COALESCE(l.chain_head, $22) AS prev FROM summary AS s, lease AS l), progress AS (UPDATE reaper_jobs AS j SET checkpoint = $23 || s.window_end, batches = j.batches + CASE WHEN s.n > 0 OR s.held > 0 THEN 1 ELSE 0 END, rows_deleted = j.rows_deleted + s.n, rows_held = j.rows_held + s.held, chain_head = CASE WHEN s.n > 0 OR s.held > 0 THEN (SELECT hash FROM chained) ELSE j.chain_head END, lease_expires_at = $24, updated_at = $25 FROM summary AS s WHERE j.id = $26 AND EXISTS (SELECT 1 FROM lease) RETURNING j.batches), audit AS (INSERT INTO reaper_audit (job_id, batch_no, target, mode, row_count, rows_held, first_key, last_key, deleted_keys, requested_by, reason, created_at, prev_hash, row_hash) SELECT $27, p.batches, $28, $29, s.n, s.held, COALESCE(s.first_key, $30), COALESCE(s.last_key, $31), s.deleted_keys, $32, $33, $34, c.prev, c.hash FROM summary AS s, progress AS p, chained AS c WHERE s.n > 0 OR s.held > 0) SELECT (SELECT count(*) FROM lease) AS lease_held, s.n AS row_count, s.held AS rows_held, s.first_key, s.last_key, s.selected, s.window_end FROM summary AS s"#]]
            .assert_eq(statement.sql());
        let params = statement.params();
        assert_eq!(params[2], SqlValue::Text("(10,0)".into()));
        assert_eq!(params[3], SqlValue::Text("(138,0)".into()));
        assert_eq!(params[5], SqlValue::Int(500));
        assert_eq!(params[22], SqlValue::Text("tid:".into()));
    }

    #[test]
    fn a_guarded_batch_removes_its_range_in_one_scan_and_fails_over_its_limit() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 7}]}}),
        );
        let range = (Tid::block_start(10), Tid::block_start(138));
        let statement = delete_range(
            &job,
            range,
            500,
            RowBound::Guarded,
            &ctx(RowLocking::Direct),
        );
        let sql = statement.sql();
        assert!(
            sql.starts_with(r#"WITH lease AS (SELECT id, batches, chain_head FROM reaper_jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND cancel_requested_at IS NULL FOR UPDATE), removed AS (DELETE FROM "app"."events" WHERE EXISTS (SELECT 1 FROM lease) AND ctid > $3::tid AND ctid < $4::tid AND ("tenant_id" = $5) RETURNING "id" AS reaper_key), summary AS (SELECT count(*) AS n, min(reaper_key)::text AS first_key, max(reaper_key)::text AS last_key, COALESCE(json_agg(reaper_key ORDER BY reaper_key), '[]')::text AS deleted_keys, count(*) AS selected, 0::int8 AS held, CASE WHEN count(*) > $6 THEN (count(*)::text || $7)::int8::text ELSE $8::tid::text END AS window_end FROM removed), chained AS"#),
            "{sql}"
        );
        assert!(
            !sql.contains("batch AS"),
            "one scan, no selection first: {sql}"
        );
        let params = statement.params();
        assert_eq!(params[5], SqlValue::Int(500));
        assert_eq!(params[6], SqlValue::Text(OVER_LIMIT_MARK.into()));
        assert_eq!(params[7], SqlValue::Text("(138,0)".into()));
        // The same end as the selecting shape: checkpoint, counters, lease, audit.
        let selected = delete_range(
            &job,
            range,
            500,
            RowBound::Selected,
            &ctx(RowLocking::Direct),
        );
        let tail = |sql: &str| sql[sql.find(", chained AS").unwrap()..].to_owned();
        let renumbered = |sql: &str| {
            let mut text = tail(sql);
            for n in (1..=40).rev() {
                text = text.replace(&format!("${n}"), "$");
            }
            text
        };
        assert_eq!(renumbered(sql), renumbered(selected.sql()));
    }

    #[test]
    fn soft_and_skip_locked_physical_batches() {
        let soft = job(&serde_json::json!({"mode": "soft", "all_rows": true}));
        // Skip-locked batches select first whatever bound was asked for.
        let sql = delete_range(
            &soft,
            (Tid::START, Tid::block_start(1)),
            10,
            RowBound::Guarded,
            &ctx(RowLocking::SkipLocked),
        )
        .sql;
        assert!(sql.contains(r#"("deleted_at" IS NULL) ORDER BY ctid LIMIT $5 FOR UPDATE SKIP LOCKED), removed AS (UPDATE "app"."events" SET "deleted_at" = $6 WHERE ctid = ANY (ARRAY(SELECT reaper_tid FROM batch)) AND ("deleted_at" IS NULL) RETURNING "id" AS reaper_key)"#), "{sql}");
    }

    #[test]
    fn the_table_is_named_as_a_bound_quoted_identifier() {
        let job = job(&serde_json::json!({"all_rows": true}));
        let statement = table_size(&job.target);
        assert!(statement.sql().ends_with("WHERE c.oid = to_regclass($1)"));
        assert_eq!(
            statement.params(),
            &[SqlValue::Text(r#""app"."events""#.into())]
        );
        expect![[r#"EXPLAIN (FORMAT JSON) SELECT 1 FROM "app"."events" WHERE TRUE"#]]
            .assert_eq(estimate_matching(&job).sql());
    }
}
