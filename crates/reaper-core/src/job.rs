//! The public wire format of a deletion job.
//!
//! API boundary: other services write this JSON (HTTP, CLI files, queue messages). Changes must
//! be additive. Unknown fields are rejected so that a typo never silently widens a deletion.
//!
//! ```json
//! {
//!   "target": "sessions",
//!   "filter": { "all": [
//!     { "column": "user_id", "op": "eq", "value": 42 },
//!     { "column": "created_at", "op": "older_than", "value": "30d" }
//!   ] },
//!   "mode": "hard",
//!   "batch_size": 1000,
//!   "max_rows": 100000,
//!   "dry_run": false,
//!   "requested_by": "accounts-service",
//!   "reason": "erasure request #4521",
//!   "idempotency_key": "erase-user-42"
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::catalog::Mode;

/// A deletion job as a producer submits it. Validated against the catalog by
/// [`crate::validate::validate`] before anything runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The catalog target to delete from.
    pub target: String,
    /// Which rows. An empty filter requires `all_rows: true`.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub filter: Filter,
    /// Explicit consent to delete every row of the target (a filter-less purge).
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_rows: bool,
    /// `hard` or `soft`; the target's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Rows per batch transaction; the target's default when absent, never above its cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Fail instead of deleting more than this many rows; the target's cap when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// With `max_rows`: delete up to the cap and finish (`done`, the rest left for a later
    /// job) instead of refusing a job that matches more. Retention runs use this.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stop_at_max_rows: bool,
    /// Only select: report the count, a sample of keys and the SQL; write nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Who asked (a service or a person); recorded in every audit entry.
    pub requested_by: String,
    /// Why; recorded in every audit entry.
    pub reason: String,
    /// Submitting the same key twice yields one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Conditions that all have to hold for a row to be deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The conditions, combined with AND.
    pub all: Vec<Condition>,
}

impl Filter {
    /// True when there is no condition at all.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// One typed condition on a filterable column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A filterable column of the target.
    pub column: String,
    /// The comparison.
    pub op: Op,
    /// The operand: a single value, a list for `in`, a duration such as `"30d"` for
    /// `older_than`, nothing for `is_null` / `not_null`. Typed against the column by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// Filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IN (…)`
    In,
    /// `IS NULL`
    IsNull,
    /// `IS NOT NULL`
    NotNull,
    /// Timestamp older than a duration before the job's reference time.
    OlderThan,
}

impl Op {
    /// The wire name of the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Lt => "lt",
            Op::Le => "le",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::In => "in",
            Op::IsNull => "is_null",
            Op::NotNull => "not_null",
            Op::OlderThan => "older_than",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_example_round_trips() {
        let text = r#"{
          "target": "sessions",
          "filter": { "all": [
            { "column": "user_id", "op": "eq", "value": 42 },
            { "column": "created_at", "op": "older_than", "value": "30d" }
          ] },
          "mode": "hard", "batch_size": 1000, "max_rows": 100000,
          "requested_by": "accounts-service", "reason": "erasure request #4521",
          "idempotency_key": "erase-user-42"
        }"#;
        let job: JobRequest = serde_json::from_str(text).unwrap();
        assert_eq!(job.filter.all.len(), 2);
        assert_eq!(job.filter.all[1].op, Op::OlderThan);
        let again: JobRequest =
            serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        assert_eq!(again, job);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<JobRequest>(
            r#"{"target":"t","requested_by":"a","reason":"b","where":"1=1"}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `where`"),
            "{error}"
        );
    }
}
