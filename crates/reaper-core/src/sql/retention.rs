//! The reads that tell whether a retention policy keeps up: how many rows of the target fall in
//! a window's due range, and how many are still due now (the backlog). Both are counts on the
//! target table bounded by a cap — and the one ledger write that keeps a window's count on its
//! job. This module must not write to a target table, order or lock anything.

use chrono::{DateTime, Utc};

use crate::sql::{Backend, SqlWriter, Statement, write_filter};
use crate::validate::ValidatedJob;
use crate::value::SqlValue;

/// The most rows one keeping-up count reads; a count that reaches it is shown as "≥ cap".
pub const COUNT_CAP: u64 = 10_000_000;

fn cap_param(cap: u64) -> SqlValue {
    SqlValue::Int(i64::try_from(cap).unwrap_or(i64::MAX))
}

/// `SELECT count(*) FROM (SELECT 1 FROM t WHERE <policy filter> AND age >= $from LIMIT $cap)
/// AS due`: the rows of one window's due range still in the table. `job` is the policy's job
/// validated at the window's end (its `age < end − max_age`), `from` the window's start minus
/// the policy's `max_age`.
///
/// Expected plan: a range scan of an index leading with `age_column` over `[from, cutoff)` (the
/// index a policy needs anyway), stopping at the cap; without that index, a full scan.
pub fn due_in_range(
    backend: Backend,
    job: &ValidatedJob,
    age_column: &str,
    from: DateTime<Utc>,
    cap: u64,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM (SELECT 1 FROM ")
        .table(&job.target)
        .push(" WHERE ");
    write_filter(&mut w, job);
    w.push(" AND ")
        .ident(age_column)
        .push(" >= ")
        .param(SqlValue::Timestamp(from))
        .push(" LIMIT ")
        .param(cap_param(cap))
        .push(") AS due");
    w.finish()
}

/// `UPDATE reaper_jobs SET due_rows = $n WHERE id = $id AND policy IS NOT NULL AND due_rows IS
/// NULL`: records, on a window's job the scheduler just created, the rows that became due in
/// that window ([`due_in_range`] counted before the submission). Only the first count sticks.
/// Expected plan: the primary key.
pub fn record_due_rows(backend: Backend, id: &str, due_rows: u64) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("UPDATE reaper_jobs SET due_rows = ")
        .param(cap_param(due_rows))
        .push(" WHERE id = ")
        .param(SqlValue::Text(id.to_owned()))
        .push(" AND policy IS NOT NULL AND due_rows IS NULL");
    w.finish()
}

/// `SELECT count(*) FROM (SELECT 1 FROM t WHERE <policy filter> LIMIT $cap) AS backlog`: the
/// rows older than the current cutoff still present. `job` is the policy's job validated now.
///
/// Expected plan: a range scan of the index leading with the age column below the cutoff,
/// stopping at the cap.
pub fn backlog(backend: Backend, job: &ValidatedJob, cap: u64) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM (SELECT 1 FROM ")
        .table(&job.target)
        .push(" WHERE ");
    write_filter(&mut w, job);
    w.push(" LIMIT ").param(cap_param(cap)).push(") AS backlog");
    w.finish()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::sql::test_support::{at, job};

    fn policy_job() -> ValidatedJob {
        job(&serde_json::json!({"filter": {"all": [
            {"column": "created_at", "op": "older_than", "value": "30d"}
        ]}}))
    }

    #[test]
    fn a_window_counts_its_due_range_under_the_cap() {
        let statement = due_in_range(Backend::Postgres, &policy_job(), "created_at", at(), 10);
        expect![[r#"SELECT count(*) FROM (SELECT 1 FROM "app"."events" WHERE "created_at" < $1 AND "created_at" >= $2 LIMIT $3) AS due"#]]
            .assert_eq(statement.sql());
        expect![[r#"SELECT count(*) FROM (SELECT 1 FROM `app`.`events` WHERE `created_at` < ? AND `created_at` >= ? LIMIT ?) AS due"#]]
            .assert_eq(due_in_range(Backend::MySql, &policy_job(), "created_at", at(), 10).sql());
        assert_eq!(statement.params()[1], SqlValue::Timestamp(at()));
        assert_eq!(statement.params()[2], SqlValue::Int(10));
    }

    #[test]
    fn a_window_job_keeps_its_first_due_count() {
        let statement = record_due_rows(Backend::Postgres, "j1", 42);
        expect![[r#"UPDATE reaper_jobs SET due_rows = $1 WHERE id = $2 AND policy IS NOT NULL AND due_rows IS NULL"#]]
            .assert_eq(statement.sql());
        assert_eq!(statement.params()[0], SqlValue::Int(42));
    }

    #[test]
    fn the_backlog_counts_below_the_cutoff_under_the_cap() {
        expect![[r#"SELECT count(*) FROM (SELECT 1 FROM "app"."events" WHERE "created_at" < ? LIMIT ?) AS backlog"#]]
            .assert_eq(backlog(Backend::Sqlite, &policy_job(), COUNT_CAP).sql());
    }
}
