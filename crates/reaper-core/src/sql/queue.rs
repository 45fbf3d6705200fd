//! The one statement reaper runs on a queue's own tables: apalis-sqlite keeps its messages in a
//! `Jobs` table of its own SQLite file (not the target database), which is private to apalis —
//! if an apalis upgrade changes it, this is the statement to change.

use crate::sql::{Backend, SqlWriter, Statement};
use crate::value::SqlValue;

/// Column read back by [`sqlite_depth`].
pub const DEPTH: &str = "depth";

/// Messages of queue `queue_name` waiting in apalis-sqlite (status `Pending`, ready or
/// scheduled), in column [`DEPTH`]. Expected plan: apalis' index `idx_jobs_job_type_status_run_at` (`job_type, status, run_at`).
pub fn sqlite_depth(queue_name: &str) -> Statement {
    let mut w = SqlWriter::new(Backend::Sqlite);
    w.push("SELECT COUNT(*) AS depth FROM Jobs WHERE job_type = ")
        .param(SqlValue::Text(queue_name.to_owned()))
        .push(" AND status = 'Pending'");
    w.finish()
}
