//! MySQL and MariaDB statements of the batch family.
//!
//! Neither has data-modifying CTEs; MySQL has no `RETURNING` and rejects `IN (SELECT … LIMIT)`.
//! So a batch is, in one transaction: the lease check ([`crate::sql::ledger::lock_job`]),
//! [`lock_batch`] (the key window, locked `NOWAIT` or `SKIP LOCKED`, keys returned to the
//! engine), [`delete_window`] (one primary-key range) or [`delete_keys`] (by key), the audit
//! entry and the checkpoint ([`crate::sql::ledger::insert_audit`],
//! [`crate::sql::ledger::advance_checkpoint`]). Sessions run READ COMMITTED, so InnoDB locks only
//! the rows that match, not every row the primary-key scan passes.

use chrono::{DateTime, Utc};

use crate::holds::HeldRows;
use crate::sql::holds::{select_window, write_held};
use crate::sql::{
    Backend, RowLocking, SqlWriter, Statement, key_param, write_keyset_and_filter,
    write_removal_head,
};
use crate::validate::ValidatedJob;
use crate::value::KeyValue;

/// `SELECT pk FROM t WHERE pk > ? AND (<filter>) ORDER BY pk LIMIT ? FOR UPDATE NOWAIT` (or
/// `SKIP LOCKED`): the batch's key window, locked; held rows are locked too (and left), so the
/// range delete can be checked against the keys not held. Expected plan: a range scan on `PRIMARY` from
/// the checkpoint, the filter applied per row, stopping at LIMIT (`type: range`, `key: PRIMARY`,
/// no filesort).
pub fn lock_batch(
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    locking: RowLocking,
    held: &[HeldRows],
) -> Statement {
    // The keys `select_window` returns (each key's hold while one is active), locked: the
    // clause adds no parameter.
    let mut statement = select_window(Backend::MySql, job, after, limit, held);
    statement.sql.push_str(match locking {
        RowLocking::Direct => " FOR UPDATE NOWAIT",
        RowLocking::SkipLocked => " FOR UPDATE SKIP LOCKED",
    });
    statement
}

/// `DELETE FROM t WHERE pk > ? AND pk <= ? AND (<filter>)` (or the soft `UPDATE`): the whole key
/// window in one primary-key range pass, as pt-archiver's `--bulk-delete` does. Exact only when
/// this transaction locked every matching row of the window (`NOWAIT`): the engine compares the
/// affected rows with the locked keys and, if a row was inserted into the window meanwhile
/// (READ COMMITTED takes no gap locks), rolls back and uses [`delete_keys`] instead. Expected
/// plan: `type: range`, `key: PRIMARY`.
pub fn delete_window(
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    last: &KeyValue,
    now: DateTime<Utc>,
    held: &[HeldRows],
) -> Statement {
    let target = &job.target;
    let mut w = SqlWriter::new(Backend::MySql);
    write_removal_head(&mut w, job, now);
    w.push(" WHERE ")
        .ident(&target.primary_key)
        .push(" <= ")
        .param(key_param(target.key_type, last))
        .push(" AND ");
    write_keyset_and_filter(&mut w, job, after);
    if !held.is_empty() {
        w.push(" AND NOT ");
        write_held(&mut w, target, held);
    }
    w.finish()
}

/// `DELETE FROM t WHERE pk IN (?, …)` or the soft `UPDATE t SET soft_delete_column = ? WHERE pk
/// IN (…) AND soft_delete_column IS NULL`, for keys this transaction holds locked: after
/// `SKIP LOCKED` (the window has holes) or when [`delete_window`] found the window changed.
/// Expected plan: `PRIMARY` lookups (`type: range` on the IN list).
pub fn delete_keys(job: &ValidatedJob, keys: &[KeyValue], now: DateTime<Utc>) -> Statement {
    // The same statement as a graph job's parents: one builder for both.
    super::graph::remove_parents(Backend::MySql, job, keys, now)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::{at, job};

    #[test]
    fn the_window_is_locked_nowait_first_then_skip_locked() {
        let job = job(
            &serde_json::json!({"filter": {"all": [{"column": "kind", "op": "eq", "value": "a`b"}]}}),
        );
        expect![[r#"
            SELECT CAST(`id` AS SIGNED) FROM `app`.`events` WHERE `id` > ? AND (`kind` = ?) ORDER BY `id` LIMIT ? FOR UPDATE NOWAIT
            -- parameters: 7, 'a`b', 500"#]]
        .assert_eq(&lock_batch(&job, Some(&KeyValue::Int(7)), 500, RowLocking::Direct, &[]).to_string());
        assert!(
            lock_batch(&job, None, 5, RowLocking::SkipLocked, &[])
                .sql
                .ends_with("LIMIT ? FOR UPDATE SKIP LOCKED")
        );
    }

    #[test]
    fn a_fully_locked_window_is_deleted_as_one_range() {
        let hard = job(
            &serde_json::json!({"filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 3}]}}),
        );
        expect![[r#"
            DELETE FROM `app`.`events` WHERE `id` <= ? AND `id` > ? AND (`tenant_id` = ?)
            -- parameters: 90, 10, 3"#]]
        .assert_eq(
            &delete_window(
                &hard,
                Some(&KeyValue::Int(10)),
                &KeyValue::Int(90),
                at(),
                &[],
            )
            .to_string(),
        );
        let soft = job(&serde_json::json!({"all_rows": true, "mode": "soft"}));
        let sql = delete_window(&soft, None, &KeyValue::Int(90), at(), &[]).sql;
        assert_eq!(
            sql,
            "UPDATE `app`.`events` SET `deleted_at` = ? WHERE `id` <= ? AND (`deleted_at` IS NULL)"
        );
    }

    #[test]
    fn keys_are_deleted_by_primary_key_and_soft_deletes_skip_rows_already_deleted() {
        let hard = job(&serde_json::json!({"all_rows": true}));
        let keys = [KeyValue::Int(3), KeyValue::Int(9)];
        expect![[r#"DELETE FROM `app`.`events` WHERE `id` IN (?, ?)"#]]
            .assert_eq(&delete_keys(&hard, &keys, at()).sql);
        let soft = job(&serde_json::json!({"all_rows": true, "mode": "soft"}));
        expect![[r#"
            UPDATE `app`.`events` SET `deleted_at` = ? WHERE `id` IN (?, ?) AND `deleted_at` IS NULL
            -- parameters: '2026-11-25T08:30:00+00:00', 3, 9"#]]
        .assert_eq(&delete_keys(&soft, &keys, at()).to_string());
    }
}
