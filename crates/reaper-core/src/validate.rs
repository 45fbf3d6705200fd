//! Validation of a [`JobRequest`] against the [`Catalog`].
//!
//! Runs when a job is accepted and again when a worker runs it (the catalog may have changed in
//! between). It reports every problem at once, each naming the offending field and what is
//! allowed, and produces a [`ValidatedJob`] whose predicates carry typed values. Nothing can be
//! deleted by a job that did not pass here.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::catalog::{Catalog, ColumnType, Mode, Target};
use crate::job::{Condition, JobRequest, Op};
use crate::span::Span;
use crate::value::SqlValue;

/// The most values one `in` condition may list.
pub const MAX_IN_VALUES: usize = 1_000;

/// One problem with one field of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `filter.all[1].value`.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl FieldError {
    /// The problem `message` with the field at path `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A rejected job: every field error found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The problems, in field order.
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// A rejection for one problem with one field.
    pub fn of(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError::new(field, message)],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid job: ")?;
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Comparison operators with one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
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
}

impl Comparison {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "<>",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// A condition with its operand typed for the column.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `column <op> value`
    Compare {
        /// Catalog column.
        column: String,
        /// Operator.
        op: Comparison,
        /// Typed operand.
        value: SqlValue,
    },
    /// `column IN (values…)`
    In {
        /// Catalog column.
        column: String,
        /// Typed operands (non-empty).
        values: Vec<SqlValue>,
    },
    /// `column IS NULL`
    IsNull {
        /// Catalog column.
        column: String,
    },
    /// `column IS NOT NULL`
    NotNull {
        /// Catalog column.
        column: String,
    },
}

/// A job that passed validation: every name resolved in the catalog, every value typed,
/// every limit inside the target's caps.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJob {
    /// The target, as declared in the catalog.
    pub target: Target,
    /// Conditions combined with AND (empty only for an explicit `all_rows` purge).
    pub predicates: Vec<Predicate>,
    /// Hard or soft.
    pub mode: Mode,
    /// Rows per batch.
    pub batch_size: u32,
    /// The most rows this job may delete.
    pub max_rows: u64,
    /// Stop (done) at `max_rows` instead of refusing a job that matches more.
    pub stop_at_max_rows: bool,
    /// Select only.
    pub dry_run: bool,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// The tables the job reaches through relations before its own rows, deepest first
    /// ([`Catalog::resolved_plan`]); empty for a one-table job.
    pub graph: Vec<crate::graph::ResolvedStep>,
    /// The database cascades the job sets off ([`Catalog::job_cascades`]): each of its
    /// transactions deletes only as many rows as keep every cascade within its bound.
    pub cascades: Vec<crate::graph::Cascade>,
}

/// The error for a target name the catalog does not declare, naming the ones it does (jobs and
/// legal holds name their target alike).
pub(crate) fn unknown_target(catalog: &Catalog, name: &str) -> String {
    format!(
        "unknown target `{name}`; the catalog has: {}",
        catalog.names().join(", ")
    )
}

impl ValidatedJob {
    /// Whether the job runs as a graph (steps before its own rows, or cascades to bound) rather
    /// than as one table's batches.
    pub fn is_graph(&self) -> bool {
        !self.graph.is_empty() || !self.cascades.is_empty()
    }

    /// The `max_rows` safety rail, checked before anything is deleted: a job that may not stop
    /// at its cap (`stop_at_max_rows` unset) is refused when more rows match than it may
    /// delete. `matching` need not be counted past `max_rows + 1`.
    pub fn check_max_rows(&self, matching: u64) -> Result<(), OverMaxRows> {
        if self.stop_at_max_rows || matching <= self.max_rows {
            return Ok(());
        }
        Err(OverMaxRows {
            max_rows: self.max_rows,
            target: self.target.name.clone(),
            target_max_rows: self.target.max_rows,
        })
    }
}

/// More rows match than the job may delete; nothing was deleted. Its message gives advice
/// that works: raising `max_rows` only while the target allows more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverMaxRows {
    /// The job's cap.
    pub max_rows: u64,
    /// The target's name.
    pub target: String,
    /// The most the target allows a job to ask for.
    pub target_max_rows: u64,
}

impl std::fmt::Display for OverMaxRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than max_rows ({}) rows match; nothing was done: the job is refused before its \
             first batch and nothing was deleted. Narrow the filter",
            self.max_rows
        )?;
        if self.max_rows < self.target_max_rows {
            write!(
                f,
                ", raise max_rows (--max-rows for `reaper purge`; target `{}` allows up to {})",
                self.target, self.target_max_rows
            )?;
        }
        write!(
            f,
            ", or let it stop at its cap (stop_at_max_rows; --stop-at-max-rows for `reaper purge`) \
             to remove {} rows now and the rest in later runs",
            self.max_rows
        )
    }
}

impl std::error::Error for OverMaxRows {}

/// Checks `request` against `catalog`. `as_of` is the job's reference time: `older_than`
/// conditions become `column < as_of - age`, so a retried job keeps the same cutoff.
pub fn validate(
    request: &JobRequest,
    catalog: &Catalog,
    as_of: DateTime<Utc>,
) -> Result<ValidatedJob, ValidationError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));

    // Every string a job carries ends up in the ledger, an audit row or a bound parameter.
    // PostgreSQL cannot store a NUL character in text at all, and SQLite's text functions stop
    // at one, so a NUL is refused on every backend (MariaDB would store it).
    for (field, text) in [
        ("target", Some(request.target.as_str())),
        ("requested_by", Some(request.requested_by.as_str())),
        ("reason", Some(request.reason.as_str())),
        ("idempotency_key", request.idempotency_key.as_deref()),
    ] {
        if text.is_some_and(has_nul) {
            fail(field, NUL_MESSAGE.into());
        }
    }
    if has_nul(&request.target) {
        return Err(ValidationError { errors });
    }
    if request.requested_by.trim().is_empty() {
        fail(
            "requested_by",
            "must name who asked for this deletion".into(),
        );
    }
    if request.reason.trim().is_empty() {
        fail("reason", "must say why these rows are deleted".into());
    }
    if let Some(key) = &request.idempotency_key
        && (key.trim().is_empty() || key.len() > 200)
    {
        fail("idempotency_key", "must be 1 to 200 characters".into());
    }

    let Some(target) = catalog.get(&request.target) else {
        fail("target", unknown_target(catalog, &request.target));
        return Err(ValidationError { errors });
    };

    let mode = match (&request.restore, request.mode) {
        (Some(_), None) => Mode::Restore,
        (Some(_), Some(_)) => {
            fail(
                "mode",
                "a restore job has no mode of its own; it undoes its source job's".into(),
            );
            Mode::Restore
        }
        (None, Some(Mode::Restore)) => {
            fail(
                "mode",
                "`restore` is not asked for by name; `reaper restore JOB` (or \
                 POST /v1/jobs/{id}/restore) makes a restore job"
                    .into(),
            );
            Mode::Restore
        }
        (None, mode) => mode.unwrap_or(target.default_mode),
    };
    if mode == Mode::Soft && target.soft_delete_column.is_none() {
        fail(
            "mode",
            format!(
                "target `{}` has no soft_delete_column, so only `hard` is allowed",
                target.name
            ),
        );
    }

    let batch_size = request.batch_size.unwrap_or(target.batch_size);
    if batch_size == 0 || batch_size > target.max_batch_size {
        fail(
            "batch_size",
            format!(
                "{batch_size} is not allowed for target `{}`; allowed: 1 to {}",
                target.name, target.max_batch_size
            ),
        );
    }

    let max_rows = request.max_rows.unwrap_or(target.max_rows);
    if max_rows == 0 || max_rows > target.max_rows {
        fail(
            "max_rows",
            format!(
                "{max_rows} is not allowed for target `{}`; allowed: 1 to {}",
                target.name, target.max_rows
            ),
        );
    }

    if mode == Mode::Restore {
        // The source job chose the rows: a restore has no filter of its own.
        if !request.filter.is_empty() || request.all_rows {
            fail(
                "filter",
                "a restore job puts back exactly what its source job removed; it takes no \
                 filter and no all_rows"
                    .into(),
            );
        }
    } else if request.filter.is_empty() && !request.all_rows {
        fail(
            "filter",
            format!(
                "is empty, which would delete every row of `{}`; add conditions, or set \
                 \"all_rows\": true to purge the whole table on purpose",
                target.name
            ),
        );
    }
    if !request.filter.is_empty() && request.all_rows {
        fail(
            "all_rows",
            "is true but the filter has conditions; use one or the other".into(),
        );
    }

    let mut predicates = Vec::with_capacity(request.filter.all.len());
    for (index, condition) in request.filter.all.iter().enumerate() {
        match predicate(condition, target, as_of) {
            Ok(predicate) => predicates.push(predicate),
            Err((suffix, message)) => fail(&format!("filter.all[{index}]{suffix}"), message),
        }
    }

    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    // A batch size the job asks for is a ceiling: adaptive sizing may shrink its batches (down
    // to the target's min_batch_size, or the job's size when smaller) but never grows them past it.
    let mut target = target.clone();
    if request.batch_size.is_some()
        && let Some(adaptive) = &mut target.throttle.adaptive
    {
        adaptive.max = adaptive.max.min(batch_size);
        adaptive.min = adaptive.min.min(batch_size);
    }
    // A job's `strategy` (other than `auto`) overrides its target's, as its batch size does.
    if let Some(setting) = request.strategy
        && setting != crate::strategy::StrategySetting::Auto
    {
        target.throttle.strategy = setting;
        target.throttle.strategy_set_by_job = true;
    }
    let graph = catalog.resolved_plan(&target.name, mode);
    let cascades = catalog.job_cascades(&target.name, mode, &graph);
    if mode == Mode::Archive
        && let Some(message) = archive_refusal(&target.name, &graph, &cascades)
    {
        return Err(ValidationError::of("mode", message));
    }
    Ok(ValidatedJob {
        target,
        predicates,
        mode,
        batch_size,
        max_rows,
        stop_at_max_rows: request.stop_at_max_rows,
        dry_run: request.dry_run,
        requested_by: request.requested_by.clone(),
        reason: request.reason.clone(),
        graph,
        cascades,
    })
}

/// Why an `archive` job on `root` cannot copy every row it would remove, if it cannot: a row
/// the database deletes through an accepted `ON DELETE CASCADE` never passes through reaper,
/// and a `soft_delete` child keeps its row (nothing to copy, and a restore could not tell its
/// mark from a later one). Deleted and nulled rows of declared relations are copied.
fn archive_refusal(
    root: &str,
    graph: &[crate::graph::ResolvedStep],
    cascades: &[crate::graph::Cascade],
) -> Option<String> {
    if let Some(cascade) = cascades.first() {
        return Some(format!(
            "target `{root}`: table `{}` (column `{}`) is emptied by the database through an \
             accepted ON DELETE CASCADE from `{}`, so `archive` cannot copy its rows; declare \
             it as a relation instead (a target for table `{}`, related by a \
             [[targets.{}.children]] entry with column = \"{}\" and action = \"delete\", in \
             place of the [[targets.{}.cascades]] entry), or use `hard`",
            cascade.table,
            cascade.column,
            cascade.parent,
            cascade.table,
            cascade.parent,
            cascade.column,
            cascade.parent
        ));
    }
    // A restore puts a nulled value back by the table's one `set_null` column; two steps that
    // null two columns of one table could not be told apart.
    let nulling = |step: &&crate::graph::ResolvedStep| step.effect == crate::graph::Effect::SetNull;
    for (index, step) in graph.iter().enumerate().filter(|(_, step)| nulling(step)) {
        if let Some(other) = graph[index + 1..]
            .iter()
            .filter(nulling)
            .find(|other| other.target().name == step.target().name)
        {
            return Some(format!(
                "target `{root}`: {} and {} both null columns of `{}`, and `archive` restores one \
                 nulled column per table; use `hard`, or archive from one of the parents",
                step.describe(),
                other.describe(),
                step.target().name
            ));
        }
    }
    let soft = graph
        .iter()
        .find(|step| step.effect == crate::graph::Effect::SoftDelete)?;
    Some(format!(
        "target `{root}`: {} is a `soft_delete` relation, which `archive` does not copy (its \
         rows stay, soft-deleted); declare it `delete` or `set_null`, or use `soft`",
        soft.describe()
    ))
}

/// Why a string with a NUL character is refused.
const NUL_MESSAGE: &str =
    "contains a NUL character (\\u0000), which the databases reaper writes to cannot store";

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// The predicates of a filter on `target` (a legal hold's, [`crate::holds`]), each problem
/// named `filter.all[i]…` as a job's are. `as_of` is the reference time of `older_than`.
pub fn filter_predicates(
    filter: &crate::job::Filter,
    target: &Target,
    as_of: DateTime<Utc>,
) -> Result<Vec<Predicate>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut predicates = Vec::with_capacity(filter.all.len());
    for (index, condition) in filter.all.iter().enumerate() {
        match predicate(condition, target, as_of) {
            Ok(predicate) => predicates.push(predicate),
            Err((suffix, message)) => errors.push(FieldError::new(
                format!("filter.all[{index}]{suffix}"),
                message,
            )),
        }
    }
    if errors.is_empty() {
        Ok(predicates)
    } else {
        Err(errors)
    }
}

/// Reads a job from JSON and checks it against `catalog`, reporting every problem at once:
/// type and shape errors ([`crate::job::parse`]) together with what [`validate`] finds in the
/// fields that were well formed. The request is returned only when there is no problem.
pub fn check_json(
    value: &Json,
    catalog: &Catalog,
    as_of: DateTime<Utc>,
) -> Result<JobRequest, ValidationError> {
    let parsed = crate::job::parse(value);
    let mut errors = parsed.errors;
    if !value.is_object() {
        return Err(ValidationError { errors });
    }
    if let Err(invalid) = validate(&parsed.request, catalog, as_of) {
        for mut error in invalid.errors {
            // Conditions left out by the parser shift the indices validation saw.
            if let Some((index, tail)) = error
                .field
                .strip_prefix("filter.all[")
                .and_then(|rest| rest.split_once(']'))
                && let Some(original) = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| parsed.kept_conditions.get(index))
            {
                error.field = format!("filter.all[{original}]{tail}");
            }
            let reported = errors.iter().any(|seen| {
                seen.field == error.field
                    || (error.field == "filter" && seen.field.starts_with("filter"))
            });
            if !reported {
                errors.push(error);
            }
        }
    }
    if errors.is_empty() {
        Ok(parsed.request)
    } else {
        Err(ValidationError { errors })
    }
}

/// A field suffix (`.column`, `.op`, `.value`) and the message.
type ConditionError = (&'static str, String);

fn predicate(
    condition: &Condition,
    target: &Target,
    as_of: DateTime<Utc>,
) -> Result<Predicate, ConditionError> {
    let column = condition.column.clone();
    let Some(&column_type) = target.columns.get(&condition.column) else {
        let filterable: Vec<&str> = target.columns.keys().map(String::as_str).collect();
        return Err((
            ".column",
            format!(
                "`{}` is not a filterable column of target `{}`; filterable: {}",
                condition.column,
                target.name,
                filterable.join(", ")
            ),
        ));
    };
    let value = condition.value.as_ref();
    let comparison = match condition.op {
        Op::Eq => Comparison::Eq,
        Op::Ne => Comparison::Ne,
        Op::Lt => Comparison::Lt,
        Op::Le => Comparison::Le,
        Op::Gt => Comparison::Gt,
        Op::Ge => Comparison::Ge,
        Op::IsNull | Op::NotNull => {
            if value.is_some() {
                return Err((
                    ".value",
                    format!("`{}` takes no value", condition.op.as_str()),
                ));
            }
            return Ok(if condition.op == Op::IsNull {
                Predicate::IsNull { column }
            } else {
                Predicate::NotNull { column }
            });
        }
        Op::In => {
            let Some(Json::Array(items)) = value else {
                return Err((".value", "`in` takes a non-empty JSON array".into()));
            };
            if items.is_empty() || items.len() > MAX_IN_VALUES {
                return Err((
                    ".value",
                    format!(
                        "`in` takes 1 to {MAX_IN_VALUES} values, got {}",
                        items.len()
                    ),
                ));
            }
            let values = items
                .iter()
                .map(|item| typed(item, column_type, &column))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| (".value", message))?;
            return Ok(Predicate::In { column, values });
        }
        Op::OlderThan => {
            if column_type != ColumnType::Timestamp {
                return Err((
                    ".op",
                    format!("`older_than` needs a timestamp column; `{column}` is {column_type}"),
                ));
            }
            let Some(Json::String(text)) = value else {
                return Err((
                    ".value",
                    "`older_than` takes a duration such as \"30d\"".into(),
                ));
            };
            let age = Span::parse(text).map_err(|message| (".value", message))?;
            let cutoff = chrono::Duration::from_std(age.as_duration())
                .ok()
                .and_then(|age| as_of.checked_sub_signed(age))
                .ok_or((".value", format!("`{text}` reaches before the year 0")))?;
            return Ok(Predicate::Compare {
                column,
                op: Comparison::Lt,
                value: SqlValue::Timestamp(cutoff),
            });
        }
    };
    let ordered = matches!(
        comparison,
        Comparison::Lt | Comparison::Le | Comparison::Gt | Comparison::Ge
    );
    if ordered && matches!(column_type, ColumnType::Bool | ColumnType::Uuid) {
        return Err((
            ".op",
            format!(
                "`{}` is not defined on {column_type} column `{column}`; use eq, ne or in",
                condition.op.as_str()
            ),
        ));
    }
    let Some(value) = value else {
        return Err((
            ".value",
            format!("`{}` needs a {column_type} value", condition.op.as_str()),
        ));
    };
    let value = typed(value, column_type, &column).map_err(|message| (".value", message))?;
    Ok(Predicate::Compare {
        column,
        op: comparison,
        value,
    })
}

/// Converts a JSON operand to the column's type, strictly (no string-to-number coercion).
fn typed(value: &Json, column_type: ColumnType, column: &str) -> Result<SqlValue, String> {
    let converted = match (column_type, value) {
        (ColumnType::Int, Json::Number(number)) => number.as_i64().map(SqlValue::Int),
        (ColumnType::Text, Json::String(text)) if has_nul(text) => {
            return Err(format!("column `{column}`: the value {NUL_MESSAGE}"));
        }
        (ColumnType::Text, Json::String(text)) => Some(SqlValue::Text(text.clone())),
        (ColumnType::Bool, Json::Bool(flag)) => Some(SqlValue::Bool(*flag)),
        (ColumnType::Uuid, Json::String(text)) => {
            uuid::Uuid::parse_str(text).ok().map(SqlValue::Uuid)
        }
        (ColumnType::Timestamp, Json::String(text)) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|instant| SqlValue::Timestamp(instant.with_timezone(&Utc))),
        _ => None,
    };
    converted.ok_or_else(|| {
        let expected = match column_type {
            ColumnType::Int => "an integer",
            ColumnType::Text => "a string",
            ColumnType::Bool => "true or false",
            ColumnType::Uuid => "a uuid string",
            ColumnType::Timestamp => "an RFC 3339 timestamp string like \"2026-01-31T00:00:00Z\"",
        };
        format!("column `{column}` is {column_type}, so the value must be {expected}; got {value}")
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::KeyType;

    fn catalog() -> Catalog {
        Catalog::new([Target {
            name: "sessions".into(),
            schema: None,
            table: "sessions".into(),
            primary_key: "id".into(),
            key_type: KeyType::Int,
            columns: BTreeMap::from([
                ("user_id".into(), ColumnType::Int),
                ("created_at".into(), ColumnType::Timestamp),
                ("active".into(), ColumnType::Bool),
                ("token".into(), ColumnType::Uuid),
            ]),
            default_mode: Mode::Hard,
            batch_size: 500,
            max_batch_size: 5_000,
            soft_delete_column: None,
            max_rows: 1_000_000,
            max_attempts: None,
            throttle: Default::default(),
        }])
    }

    #[test]
    fn a_job_carries_the_plan_of_its_mode() {
        let mut orders = catalog().get("sessions").unwrap().clone();
        orders.name = "orders".into();
        let relation = crate::graph::Relation {
            parent: "sessions".into(),
            child: "orders".into(),
            column: "session_id".into(),
            parent_column: "id".into(),
            action: crate::graph::Action::Delete,
            allow_unindexed: false,
        };
        let mut sessions = catalog().get("sessions").unwrap().clone();
        sessions.soft_delete_column = Some("deleted_at".into());
        let related = Catalog::new([sessions, orders])
            .with_relations(vec![relation])
            .unwrap();
        let job = |mode: &str| -> JobRequest {
            serde_json::from_value(serde_json::json!({"target": "sessions", "mode": mode,
                "filter": {"all": [{"column": "user_id", "op": "eq", "value": 1}]},
                "requested_by": "t", "reason": "r"}))
            .unwrap()
        };
        let hard = validate(&job("hard"), &related, as_of()).unwrap();
        let steps: Vec<String> = hard.graph.iter().map(|step| step.describe()).collect();
        assert_eq!(steps, ["sessions → orders"]);
        assert_eq!(hard.graph[0].target().name, "orders");
        // A soft job leaves hard children alone.
        assert!(
            validate(&job("soft"), &related, as_of())
                .unwrap()
                .graph
                .is_empty()
        );
    }

    #[test]
    fn archive_crosses_delete_and_set_null_relations_but_not_cascades_or_soft_children() {
        let mut child = catalog().get("sessions").unwrap().clone();
        child.name = "orders".into();
        child.soft_delete_column = Some("deleted_at".into());
        let sessions = catalog().get("sessions").unwrap().clone();
        let relation = |action| crate::graph::Relation {
            parent: "sessions".into(),
            child: "orders".into(),
            column: "session_id".into(),
            parent_column: "id".into(),
            action,
            allow_unindexed: false,
        };
        let job: JobRequest = serde_json::from_value(serde_json::json!({"target": "sessions",
            "mode": "archive", "all_rows": true, "requested_by": "t", "reason": "r"}))
        .unwrap();
        let with = |action| {
            Catalog::new([sessions.clone(), child.clone()])
                .with_relations(vec![relation(action)])
                .unwrap()
        };
        for action in [crate::graph::Action::Delete, crate::graph::Action::SetNull] {
            let archive = validate(&job, &with(action), as_of()).unwrap();
            assert_eq!(archive.graph.len(), 1);
        }
        let soft = validate(&job, &with(crate::graph::Action::SoftDelete), as_of())
            .unwrap_err()
            .to_string();
        assert!(
            soft.contains("sessions → orders is a `soft_delete` relation"),
            "{soft}"
        );
        let cascade = crate::graph::Cascade {
            parent: "sessions".into(),
            schema: None,
            table: "devices".into(),
            column: "session_id".into(),
            parent_column: "id".into(),
            max_rows_per_batch: 10,
        };
        let cascading = Catalog::new([sessions.clone()]).with_cascades(vec![cascade]);
        let refused = validate(&job, &cascading, as_of()).unwrap_err().to_string();
        assert!(
            refused.contains("table `devices` (column `session_id`) is emptied by the database")
                && refused.contains("declare it as a relation instead"),
            "{refused}"
        );
    }

    #[test]
    fn archive_refuses_two_set_null_relations_into_one_table() {
        let sessions = catalog().get("sessions").unwrap().clone();
        let mut messages = sessions.clone();
        messages.name = "messages".into();
        let nulling = |column: &str| {
            crate::graph::Relation::new(
                "sessions",
                "messages",
                column,
                "id",
                crate::graph::Action::SetNull,
            )
        };
        let job: JobRequest = serde_json::from_value(serde_json::json!({"target": "sessions",
            "mode": "archive", "all_rows": true, "requested_by": "t", "reason": "r"}))
        .unwrap();
        let one = Catalog::new([sessions.clone(), messages.clone()])
            .with_relations(vec![nulling("sender_id")])
            .unwrap();
        assert!(validate(&job, &one, as_of()).is_ok());
        let two = Catalog::new([sessions, messages])
            .with_relations(vec![nulling("sender_id"), nulling("recipient_id")])
            .unwrap();
        let refused = validate(&job, &two, as_of()).unwrap_err().to_string();
        assert!(
            refused.contains("both null columns of `messages`"),
            "{refused}"
        );
    }

    fn as_of() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(job: serde_json::Value) -> Result<ValidatedJob, String> {
        let request: JobRequest = serde_json::from_value(job).unwrap();
        validate(&request, &catalog(), as_of()).map_err(|error| error.to_string())
    }

    fn job(extra: &serde_json::Value) -> serde_json::Value {
        let mut base =
            serde_json::json!({"target": "sessions", "requested_by": "svc", "reason": "test"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        base
    }

    fn filter(conditions: &serde_json::Value) -> serde_json::Value {
        job(&serde_json::json!({ "filter": { "all": conditions } }))
    }

    #[test]
    fn accepts_a_typed_filter_and_fills_defaults() {
        let valid = check(filter(&serde_json::json!([
            {"column": "user_id", "op": "in", "value": [1, 2]},
            {"column": "created_at", "op": "older_than", "value": "30d"},
            {"column": "active", "op": "eq", "value": false},
            {"column": "token", "op": "not_null"}
        ])))
        .unwrap();
        assert_eq!(valid.batch_size, 500);
        assert_eq!(valid.max_rows, 1_000_000);
        assert_eq!(valid.mode, Mode::Hard);
        let cutoff = as_of() - chrono::Duration::days(30);
        assert_eq!(
            valid.predicates[1],
            Predicate::Compare {
                column: "created_at".into(),
                op: Comparison::Lt,
                value: SqlValue::Timestamp(cutoff)
            }
        );
    }

    #[test]
    fn unknown_target_lists_the_catalog() {
        let error = check(serde_json::json!({"target": "users", "requested_by": "a", "reason": "b", "all_rows": true})).unwrap_err();
        assert_eq!(
            error,
            "invalid job: target: unknown target `users`; the catalog has: sessions"
        );
    }

    #[test]
    fn empty_filter_needs_all_rows_by_name() {
        let error = check(job(&serde_json::json!({}))).unwrap_err();
        assert!(
            error.contains("filter: is empty") && error.contains("\"all_rows\": true"),
            "{error}"
        );
        assert!(check(job(&serde_json::json!({"all_rows": true}))).is_ok());
        let both = check(job(
            &serde_json::json!({"all_rows": true, "filter": {"all": [{"column": "user_id", "op": "eq", "value": 1}]}}),
        ));
        assert!(
            both.unwrap_err()
                .contains("all_rows: is true but the filter has conditions")
        );
    }

    #[test]
    fn batch_size_over_the_cap_names_the_allowed_range() {
        let error = check(job(
            &serde_json::json!({"all_rows": true, "batch_size": 5_001}),
        ))
        .unwrap_err();
        assert_eq!(
            error,
            "invalid job: batch_size: 5001 is not allowed for target `sessions`; allowed: 1 to 5000"
        );
        assert!(
            check(job(
                &serde_json::json!({"all_rows": true, "batch_size": 5_000})
            ))
            .is_ok()
        );
        assert!(check(job(&serde_json::json!({"all_rows": true, "batch_size": 0}))).is_err());
    }

    #[test]
    fn max_rows_over_the_target_cap_is_refused() {
        let error = check(job(
            &serde_json::json!({"all_rows": true, "max_rows": 1_000_001}),
        ))
        .unwrap_err();
        assert!(
            error.contains("max_rows: 1000001 is not allowed"),
            "{error}"
        );
    }

    #[test]
    fn more_matching_rows_than_max_rows_are_refused_unless_the_job_may_stop_there() {
        let capped = check(job(&serde_json::json!({"all_rows": true, "max_rows": 10}))).unwrap();
        assert_eq!(capped.check_max_rows(10), Ok(()));
        assert_eq!(
            capped.check_max_rows(11).unwrap_err().to_string(),
            "more than max_rows (10) rows match; nothing was done: the job is refused before its \
             first batch and nothing was deleted. Narrow the filter, raise max_rows (--max-rows \
             for `reaper purge`; target `sessions` allows up to 1000000), or let it stop at its \
             cap (stop_at_max_rows; --stop-at-max-rows for `reaper purge`) to remove 10 rows now \
             and the rest in later runs"
        );
        let stopping = ValidatedJob {
            stop_at_max_rows: true,
            ..capped
        };
        assert_eq!(stopping.check_max_rows(11), Ok(()));
    }

    #[test]
    fn column_errors_name_the_condition() {
        let unknown = check(filter(
            &serde_json::json!([{"column": "email", "op": "eq", "value": "x"}]),
        ))
        .unwrap_err();
        assert_eq!(
            unknown,
            "invalid job: filter.all[0].column: `email` is not a filterable column of target `sessions`; filterable: active, created_at, token, user_id"
        );
        let wrong_type = check(filter(
            &serde_json::json!([{"column": "user_id", "op": "eq", "value": "42"}]),
        ))
        .unwrap_err();
        assert_eq!(
            wrong_type,
            "invalid job: filter.all[0].value: column `user_id` is int, so the value must be an integer; got \"42\""
        );
        let bad_time = check(filter(
            &serde_json::json!([{"column": "created_at", "op": "lt", "value": "yesterday"}]),
        ))
        .unwrap_err();
        assert!(bad_time.contains("RFC 3339"), "{bad_time}");
        let older_on_int = check(filter(
            &serde_json::json!([{"column": "user_id", "op": "older_than", "value": "30d"}]),
        ))
        .unwrap_err();
        assert!(
            older_on_int.contains("filter.all[0].op: `older_than` needs a timestamp column"),
            "{older_on_int}"
        );
        let ordered_bool = check(filter(
            &serde_json::json!([{"column": "active", "op": "lt", "value": true}]),
        ))
        .unwrap_err();
        assert!(
            ordered_bool.contains("not defined on bool"),
            "{ordered_bool}"
        );
        let null_with_value = check(filter(
            &serde_json::json!([{"column": "token", "op": "is_null", "value": 1}]),
        ))
        .unwrap_err();
        assert!(
            null_with_value.contains("takes no value"),
            "{null_with_value}"
        );
        let empty_in = check(filter(
            &serde_json::json!([{"column": "user_id", "op": "in", "value": []}]),
        ))
        .unwrap_err();
        assert!(empty_in.contains("1 to 1000 values"), "{empty_in}");
        let bad_age = check(filter(
            &serde_json::json!([{"column": "created_at", "op": "older_than", "value": "30"}]),
        ))
        .unwrap_err();
        assert!(bad_age.contains("no unit"), "{bad_age}");
    }

    #[test]
    fn soft_mode_needs_a_soft_delete_column() {
        let error = check(job(&serde_json::json!({"all_rows": true, "mode": "soft"}))).unwrap_err();
        assert!(
            error.contains("mode: target `sessions` has no soft_delete_column"),
            "{error}"
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let error = check(serde_json::json!({
            "target": "sessions", "requested_by": " ", "reason": "", "batch_size": 9999,
            "filter": {"all": [{"column": "nope", "op": "eq", "value": 1}]}
        }))
        .unwrap_err();
        for field in [
            "requested_by:",
            "reason:",
            "batch_size:",
            "filter.all[0].column:",
        ] {
            assert!(error.contains(field), "{field} missing in {error}");
        }
    }

    #[test]
    fn a_restore_job_names_its_source_and_nothing_else_asks_for_mode_restore() {
        let restore = check(job(&serde_json::json!({"restore": "j1"}))).unwrap();
        assert_eq!(restore.mode, Mode::Restore);
        assert!(restore.predicates.is_empty() && restore.graph.is_empty());
        let filtered = check(job(&serde_json::json!({"restore": "j1", "all_rows": true})));
        assert!(filtered.unwrap_err().contains("takes no filter"));
        let moded = check(job(&serde_json::json!({"restore": "j1", "mode": "soft"})));
        assert!(moded.unwrap_err().contains("no mode of its own"));
        let named = check(job(
            &serde_json::json!({"all_rows": true, "mode": "restore"}),
        ));
        assert!(named.unwrap_err().contains("not asked for by name"));
        let archive = check(job(
            &serde_json::json!({"all_rows": true, "mode": "archive"}),
        ));
        assert_eq!(archive.unwrap().mode, Mode::Archive);
    }

    fn fields_of(job: &serde_json::Value) -> Vec<String> {
        match check_json(job, &catalog(), as_of()) {
            Ok(_) => Vec::new(),
            Err(error) => error.errors.into_iter().map(|error| error.field).collect(),
        }
    }

    #[test]
    fn a_nul_character_is_refused_in_every_string_field_by_name() {
        let nul = "a\u{0}b";
        for (job, field) in [
            (
                job(&serde_json::json!({"all_rows": true, "requested_by": nul})),
                "requested_by",
            ),
            (
                job(&serde_json::json!({"all_rows": true, "reason": nul})),
                "reason",
            ),
            (
                job(&serde_json::json!({"all_rows": true, "idempotency_key": nul})),
                "idempotency_key",
            ),
            (
                job(&serde_json::json!({"all_rows": true, "target": nul})),
                "target",
            ),
        ] {
            let error = check(job).unwrap_err();
            assert_eq!(
                error,
                format!(
                    "invalid job: {field}: contains a NUL character (\\u0000), which the databases reaper writes to cannot store"
                )
            );
        }
        let mut with_text = catalog();
        let mut target = with_text.get("sessions").unwrap().clone();
        target.columns.insert("kind".into(), ColumnType::Text);
        with_text = Catalog::new([target]);
        for value in [serde_json::json!(nul), serde_json::json!(["ok", nul])] {
            let op = if value.is_array() { "in" } else { "eq" };
            let request: JobRequest = serde_json::from_value(filter(
                &serde_json::json!([{"column": "kind", "op": op, "value": value}]),
            ))
            .unwrap();
            let error = validate(&request, &with_text, as_of())
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(
                    "invalid job: filter.all[0].value: column `kind`: the value contains a NUL"
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn type_and_shape_errors_are_reported_together_with_the_rest_each_by_field() {
        assert_eq!(
            fields_of(&serde_json::json!({
                "target": "sessions", "requested_by": "svc", "all_rows": true,
                "mode": "purge", "batch_size": 0
            })),
            ["reason", "mode", "batch_size"]
        );
        assert_eq!(
            fields_of(&serde_json::json!({
                "target": "sessions", "requested_by": 7, "reason": "r",
                "batch_size": "10", "max_rows": -1, "dry_run": "yes", "where": "1=1",
                "filter": {"all": [
                    {"column": "user_id", "op": null, "value": 1},
                    {"column": "user_id", "op": "eq", "value": "x"},
                    "user_id = 1",
                    {"column": "user_id", "op": "like", "value": 1}
                ]}
            })),
            [
                "where",
                "requested_by",
                "dry_run",
                "batch_size",
                "max_rows",
                "filter.all[0].op",
                "filter.all[2]",
                "filter.all[3].op",
                "filter.all[1].value"
            ]
        );
        assert_eq!(
            fields_of(
                &serde_json::json!({"target": "sessions", "requested_by": "a", "reason": "b", "filter": []})
            ),
            ["filter"]
        );
        assert_eq!(fields_of(&serde_json::json!([1])), ["job"]);
        let valid = serde_json::json!({
            "target": "sessions", "requested_by": "a", "reason": "b", "mode": null,
            "filter": {"all": [{"column": "token", "op": "is_null"}]}
        });
        let request = check_json(&valid, &catalog(), as_of()).unwrap();
        assert_eq!(
            request,
            serde_json::from_value::<JobRequest>(valid).unwrap()
        );
    }
}
