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
    /// `hard`, `soft` or `archive`; the target's default when absent (`restore` for a restore
    /// job, which `restore` makes).
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
    /// `keyset` or `physical` to force the walk, `auto` for the target's choice (absent: the
    /// target's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::strategy::StrategySetting>,
    /// A restore job: the id of the finished archive or soft-delete job whose rows it puts back
    /// (no filter, no `all_rows`; see [`crate::restore`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
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

/// A job read field by field from JSON: the request with every well-formed field, and one
/// problem per field whose type or shape is wrong (which is then left at its default, so the
/// catalog checks can still report everything else at once).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The request, with malformed fields at their defaults and malformed conditions left out.
    pub request: JobRequest,
    /// Shape and type problems, each with its field path.
    pub errors: Vec<crate::validate::FieldError>,
    /// For each condition kept in `request.filter.all`, its index in the submitted list.
    pub kept_conditions: Vec<usize>,
}

/// Every top-level field of the wire format.
const FIELDS: &[&str] = &[
    "target",
    "filter",
    "all_rows",
    "mode",
    "batch_size",
    "max_rows",
    "stop_at_max_rows",
    "dry_run",
    "requested_by",
    "reason",
    "idempotency_key",
    "strategy",
    "restore",
];

/// The operators' wire names.
const OPS: &[Op] = &[
    Op::Eq,
    Op::Ne,
    Op::Lt,
    Op::Le,
    Op::Gt,
    Op::Ge,
    Op::In,
    Op::IsNull,
    Op::NotNull,
    Op::OlderThan,
];

/// Reads a job from a JSON value field by field, so that every problem is reported with its
/// field (serde would stop at the first one, naming a line and column). `null` means absent
/// for optional fields, as with serde.
pub fn parse(value: &serde_json::Value) -> Parsed {
    use serde_json::Value as Json;

    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(crate::validate::FieldError::new(field, message))
    };
    let mut request = JobRequest {
        target: String::new(),
        filter: Filter::default(),
        all_rows: false,
        mode: None,
        batch_size: None,
        max_rows: None,
        stop_at_max_rows: false,
        dry_run: false,
        requested_by: String::new(),
        reason: String::new(),
        idempotency_key: None,
        strategy: None,
        restore: None,
    };
    let mut kept_conditions = Vec::new();
    let Some(object) = value.as_object() else {
        fail(
            "job",
            format!("must be a JSON object; got {}", json_kind(value)),
        );
        return Parsed {
            request,
            errors,
            kept_conditions,
        };
    };
    for key in object.keys() {
        if !FIELDS.contains(&key.as_str()) {
            fail(
                key,
                format!(
                    "unknown field `{key}`; the fields are: {}",
                    FIELDS.join(", ")
                ),
            );
        }
    }
    let present = |name: &str| object.get(name).filter(|value| !value.is_null());

    for (name, slot) in [
        ("target", &mut request.target),
        ("requested_by", &mut request.requested_by),
        ("reason", &mut request.reason),
    ] {
        match present(name) {
            Some(Json::String(text)) => *slot = text.clone(),
            Some(other) => fail(name, format!("must be a string; got {}", json_kind(other))),
            None => fail(name, "is required".into()),
        }
    }
    for (name, slot) in [
        ("idempotency_key", &mut request.idempotency_key),
        ("restore", &mut request.restore),
    ] {
        match present(name) {
            None => {}
            Some(Json::String(text)) => *slot = Some(text.clone()),
            Some(other) => fail(name, format!("must be a string; got {}", json_kind(other))),
        }
    }
    for (name, slot) in [
        ("all_rows", &mut request.all_rows),
        ("stop_at_max_rows", &mut request.stop_at_max_rows),
        ("dry_run", &mut request.dry_run),
    ] {
        match present(name) {
            None => {}
            Some(Json::Bool(flag)) => *slot = *flag,
            Some(other) => fail(
                name,
                format!("must be true or false; got {}", json_kind(other)),
            ),
        }
    }
    match present("mode") {
        None => {}
        Some(Json::String(text)) if text == "hard" => request.mode = Some(Mode::Hard),
        Some(Json::String(text)) if text == "soft" => request.mode = Some(Mode::Soft),
        Some(Json::String(text)) if text == "archive" => request.mode = Some(Mode::Archive),
        Some(other) => fail(
            "mode",
            format!("must be \"hard\", \"soft\" or \"archive\"; got {other}"),
        ),
    }
    match present("strategy") {
        None => {}
        Some(Json::String(text)) => match serde_json::from_value(Json::String(text.clone())) {
            Ok(setting) => request.strategy = Some(setting),
            Err(_) => fail(
                "strategy",
                format!("must be \"auto\", \"keyset\" or \"physical\"; got \"{text}\""),
            ),
        },
        Some(other) => fail(
            "strategy",
            format!("must be \"auto\", \"keyset\" or \"physical\"; got {other}"),
        ),
    }
    match present("batch_size") {
        None => {}
        Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(size) => request.batch_size = Some(size),
            None => fail(
                "batch_size",
                format!("must be a whole number of rows; got {value}"),
            ),
        },
    }
    match present("max_rows") {
        None => {}
        Some(value) => match value.as_u64() {
            Some(rows) => request.max_rows = Some(rows),
            None => fail(
                "max_rows",
                format!("must be a whole number of rows; got {value}"),
            ),
        },
    }
    match present("filter") {
        None => {}
        Some(Json::Object(filter)) => {
            for key in filter.keys() {
                if key != "all" {
                    fail(
                        &format!("filter.{key}"),
                        format!("unknown field `{key}`; a filter has only `all`"),
                    );
                }
            }
            match filter.get("all") {
                Some(Json::Array(conditions)) => {
                    for (index, condition) in conditions.iter().enumerate() {
                        let path = format!("filter.all[{index}]");
                        if let Some(condition) = parse_condition(condition, &path, &mut fail) {
                            request.filter.all.push(condition);
                            kept_conditions.push(index);
                        }
                    }
                }
                Some(other) => fail(
                    "filter.all",
                    format!("must be a list of conditions; got {}", json_kind(other)),
                ),
                None => fail("filter.all", "is required in a filter".into()),
            }
        }
        Some(other) => fail(
            "filter",
            format!(
                "must be an object like {{\"all\": [conditions]}}; got {}",
                json_kind(other)
            ),
        ),
    }
    Parsed {
        request,
        errors,
        kept_conditions,
    }
}

fn parse_condition(
    value: &serde_json::Value,
    path: &str,
    fail: &mut impl FnMut(&str, String),
) -> Option<Condition> {
    use serde_json::Value as Json;

    let Some(object) = value.as_object() else {
        fail(
            path,
            format!(
                "must be an object with column, op and value; got {}",
                json_kind(value)
            ),
        );
        return None;
    };
    let mut ok = true;
    for key in object.keys() {
        if !matches!(key.as_str(), "column" | "op" | "value") {
            fail(
                &format!("{path}.{key}"),
                format!("unknown field `{key}`; a condition has column, op and value"),
            );
            ok = false;
        }
    }
    let column = match object.get("column") {
        Some(Json::String(column)) => Some(column.clone()),
        Some(other) => {
            fail(
                &format!("{path}.column"),
                format!("must be a string; got {}", json_kind(other)),
            );
            None
        }
        None => {
            fail(&format!("{path}.column"), "is required".into());
            None
        }
    };
    let names: Vec<&str> = OPS.iter().map(|op| op.as_str()).collect();
    let op = match object.get("op") {
        Some(Json::String(text)) => {
            let op = OPS.iter().copied().find(|op| op.as_str() == text);
            if op.is_none() {
                fail(
                    &format!("{path}.op"),
                    format!(
                        "unknown operator {text:?}; the operators are: {}",
                        names.join(", ")
                    ),
                );
            }
            op
        }
        Some(other) => {
            fail(
                &format!("{path}.op"),
                format!("must be one of {}; got {other}", names.join(", ")),
            );
            None
        }
        None => {
            fail(&format!("{path}.op"), "is required".into());
            None
        }
    };
    let value = object
        .get("value")
        .filter(|value| !value.is_null())
        .cloned();
    match (ok, column, op) {
        (true, Some(column), Some(op)) => Some(Condition { column, op, value }),
        _ => None,
    }
}

/// What kind of JSON value this is, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
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
