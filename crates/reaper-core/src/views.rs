//! The shapes in which jobs and audit entries are shown: the JSON bodies of the HTTP API and of
//! `reaper status` / `reaper jobs`, and what the client crate reads. Public API: changes must be
//! additive. Stored JSON text (the request, the result, the audited keys) is JSON here, not
//! strings holding JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::JobRequest;
use crate::lifecycle::JobState;

/// A job as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Ledger id.
    pub id: String,
    /// The producer's idempotency key (the id when none was given).
    pub idempotency_key: String,
    /// Catalog target.
    pub target: String,
    /// Where the job is in its life (stored and shown in snake_case: `pending`, `running`, …).
    pub state: JobState,
    /// The retention policy that submitted the job, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Rows deleted (or soft-deleted) so far.
    pub rows_deleted: i64,
    /// Matching rows left in place under legal holds so far.
    #[serde(default)]
    pub rows_held: i64,
    /// The newest audit row's hash: the head of the job's tamper-evident audit chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<String>,
    /// Batches committed so far.
    pub batches: i64,
    /// Runs started (a clean slice hand-over does not count).
    pub attempts: i64,
    /// The job is dead when a run would exceed this.
    pub max_attempts: i64,
    /// The last error, kept after retries and for dead jobs.
    pub last_error: Option<String>,
    /// Where the job is in its keyset walk.
    pub progress: Progress,
    /// Summary of a finished job, or the report of a dry run.
    pub result: Option<serde_json::Value>,
    /// The request as accepted.
    pub request: JobRequest,
    /// Accepted at (the reference time of `older_than`).
    pub created_at: DateTime<Utc>,
    /// First claimed at.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached an end state ([`JobState::FINISHED`]) at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Not to run before (after a transient failure).
    pub run_after: Option<DateTime<Utc>>,
    /// When somebody asked the job to stop.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The worker holding the job, while it runs.
    pub lease_owner: Option<String>,
    /// When somebody asked the running job to pause (it stops at its next batch boundary and
    /// stays `paused` until resumed); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_requested_at: Option<DateTime<Utc>>,
}

impl JobView {
    /// True once the job reached an end state ([`JobState::FINISHED`]).
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}

/// Where a job is in its keyset walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Last key of the last committed batch (the job resumes after it).
    pub checkpoint: Option<String>,
    /// Keyset passes started.
    pub passes: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Rows removed so far per table, from the committed batches' audit rows: shown (by `GET
    /// /v1/jobs/{id}` and `reaper status`) for a job across relations while it runs and after;
    /// empty for a one-table job, whose `rows_deleted` says it all.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u64>,
}

/// One audit entry (one committed batch) as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditView {
    /// 1-based batch number within the job.
    pub batch_no: i64,
    /// Catalog target.
    pub target: String,
    /// `hard`, `soft`, `archive`, `restore`, or the effect on a related table (`set_null`, …).
    pub mode: String,
    /// Rows in the batch.
    pub row_count: i64,
    /// Matching rows the batch left in place under legal holds.
    #[serde(default)]
    pub rows_held: i64,
    /// Smallest key of the batch.
    pub first_key: String,
    /// Largest key of the batch.
    pub last_key: String,
    /// Every key the batch deleted.
    pub deleted_keys: serde_json::Value,
    /// Who asked.
    pub requested_by: String,
    /// Why.
    pub reason: String,
    /// Commit time of the batch.
    pub created_at: DateTime<Utc>,
}

/// A retention policy and how its runs went, as shown (`reaper policies`, `GET /v1/policies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Policy name.
    pub name: String,
    /// Catalog target.
    pub target: String,
    /// Cron expression (UTC).
    pub schedule: String,
    /// False: checked and listed, never scheduled.
    pub enabled: bool,
    /// The timestamp column whose age decides.
    pub age_column: String,
    /// Rows older than this go (`30days`).
    pub max_age: String,
    /// `hard`, `soft`, or the target's default when absent.
    pub mode: Option<String>,
    /// The most rows one run removes.
    pub max_rows_per_run: Option<u64>,
    /// When the next window opens (none for a disabled policy).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The schedule's period, in seconds (between its next two ticks).
    pub interval_seconds: Option<f64>,
    /// The newest run, in any state.
    pub last_run: Option<PolicyRunView>,
    /// When the newest successful run finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Whether the policy keeps up (`GET /v1/policies/{name}` only: it counts rows on the
    /// target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeping_up: Option<KeepingUp>,
    /// Why `keeping_up` is missing from `GET /v1/policies/{name}`: its counts on the target
    /// failed or took longer than the API waits (the rest of the view stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeping_up_error: Option<String>,
}

/// Whether a retention policy keeps up: per recent window, the rows its run removed against
/// the rows that became due in it, and what is due now. Counts on the target stop at
/// `count_cap`; a count equal to it means "at least".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepingUp {
    /// The newest windows, newest first.
    pub windows: Vec<PolicyWindow>,
    /// Rows that became due since the newest window's tick (the next run's share).
    pub due_since_last_window: u64,
    /// Rows past the policy's age now, in total.
    pub backlog: u64,
    /// The cap every count above stops at.
    pub count_cap: u64,
}

/// One past window of a retention policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyWindow {
    /// The window's tick (its job's cutoff is this minus the policy's age).
    pub window_end: DateTime<Utc>,
    /// The window's job, if one ran for it.
    pub job_id: Option<String>,
    /// Rows that job removed.
    pub rows_removed: Option<i64>,
    /// Rows that became due in the window, counted when its job was submitted (absent for
    /// jobs submitted before reaper counted them).
    pub became_due: Option<i64>,
    /// Rows of the window's due range still in the table now.
    pub still_due: u64,
}

/// One run of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRunView {
    /// The run's job id.
    pub job_id: String,
    /// The job's state.
    pub state: JobState,
    /// Rows removed.
    pub rows_deleted: i64,
    /// Submitted at.
    pub created_at: DateTime<Utc>,
    /// Finished at (for the end states, [`JobState::FINISHED`]).
    pub finished_at: Option<DateTime<Utc>>,
    /// Submission to finish, in seconds.
    pub duration_seconds: Option<f64>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The run stopped at `max_rows_per_run` with matching rows left for the next window.
    #[serde(default)]
    pub stopped_at_max_rows: bool,
    /// Rows that became due in the run's window, counted when it was submitted.
    #[serde(default)]
    pub due_rows: Option<i64>,
}

/// The reply to `POST /v1/jobs` (`Submitted` in `docs/openapi.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    /// False when the idempotency key was known and the existing job is returned.
    pub created: bool,
    /// The job's id.
    pub id: String,
    /// The job.
    pub job: JobView,
}

/// One page of `GET /v1/jobs`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Cursor for the next page (its `before`); null on the last page.
    pub next: Option<String>,
}

/// The reply to `POST /v1/jobs/{id}/cancel` (`CancelResult` in `docs/openapi.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    /// `cancelled` (it was pending or paused, or it was running and reached its batch boundary
    /// before this reply) or `stopping` (it stops at its next batch boundary).
    pub cancel: String,
    /// The job.
    pub job: JobView,
}

/// The reply to `POST /v1/jobs/{id}/pause`, `/resume` and `/retry` (`ActionResult` in
/// `docs/openapi.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acted {
    /// What the action did: `paused` (a pending job), `stopping` (a running job pauses at its
    /// next batch boundary), `pending` (resumed or retried: back on the queue).
    pub outcome: String,
    /// The job.
    pub job: JobView,
}

/// One recorded operator action on a job (`GET /v1/jobs/{id}/actions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionView {
    /// `cancel`, `pause`, `resume`, `retry` or `run` (a policy run now).
    pub action: String,
    /// Who asked.
    pub actor: String,
    /// What it did.
    pub outcome: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// The reply to `GET /v1/jobs/{id}/actions`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionPage {
    /// The actions.
    pub actions: Vec<ActionView>,
}

/// One page of `GET /v1/jobs/{id}/audit`, in batch order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditView>,
    /// Cursor for the next page (its `after_batch`); null on the last page.
    pub next_after_batch: Option<i64>,
}

/// The reply to `GET /v1/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyPage {
    /// Every configured policy.
    pub policies: Vec<PolicyView>,
}

/// The body of every error reply (`Problem` in `docs/openapi.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The whole message.
    pub error: String,
    /// Each problem with the field it concerns; present only when a job was refused as invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldProblem>>,
}

/// One field-level problem of a refused job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Path of the field, e.g. `filter.all[1].value`.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// The reply to `GET /readyz` (`Readiness` in `docs/openapi.json`): `ok`, or what is wrong,
/// for each dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// The ledger's database.
    pub database: String,
    /// The queue transport.
    pub queue: String,
    /// This daemon's workers.
    pub workers: String,
}

impl Problem {
    /// An error body with a message only.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            fields: None,
        }
    }

    /// The body of a refused job: the whole message and each field's problem.
    pub fn invalid(invalid: &crate::validate::ValidationError) -> Self {
        Self {
            error: invalid.to_string(),
            fields: Some(
                invalid
                    .errors
                    .iter()
                    .map(|problem| FieldProblem {
                        field: problem.field.clone(),
                        message: problem.message.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod envelope_tests {
    use serde_json::json;

    use super::*;

    fn shape(value: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn envelopes_keep_their_wire_shape() {
        assert_eq!(
            shape(&Problem::new("no job `x`")),
            json!({"error": "no job `x`"})
        );
        let invalid = crate::validate::ValidationError {
            errors: vec![crate::validate::FieldError {
                field: "target".into(),
                message: "unknown".into(),
            }],
        };
        assert_eq!(
            shape(&Problem::invalid(&invalid)),
            json!({"error": "invalid job: target: unknown",
                   "fields": [{"field": "target", "message": "unknown"}]})
        );
        assert_eq!(
            shape(&JobPage {
                jobs: vec![],
                next: None
            }),
            json!({"jobs": [], "next": null})
        );
        assert_eq!(
            shape(&AuditPage {
                entries: vec![],
                next_after_batch: Some(2)
            }),
            json!({"entries": [], "next_after_batch": 2})
        );
        assert_eq!(
            shape(&PolicyPage { policies: vec![] }),
            json!({"policies": []})
        );
        let problem: Problem = serde_json::from_str(r#"{"error": "down"}"#).unwrap();
        assert_eq!(problem.fields, None);
    }
}

/// `GET /v1/holds`: legal holds, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPage {
    /// The holds.
    pub holds: Vec<crate::holds::Hold>,
}

/// A target's throttle values: what the configuration says, or what is in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleValues {
    /// Rows per second from the target, all daemons together; none: no cap.
    pub max_rows_per_second: Option<u32>,
    /// The largest batch.
    pub max_batch_size: u32,
    /// The smallest adaptive batch (adaptive targets only).
    pub min_batch_size: Option<u32>,
    /// The duration an adaptive batch aims at, in milliseconds (adaptive targets only).
    pub target_batch_duration_ms: Option<u64>,
}

/// A target under live control (`GET /v1/targets/{name}`, `reaper target show`): paused or
/// not, its configured throttle, the operator's override, the throttle in force, the last
/// change and, for one target, its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    /// Catalog target.
    pub name: String,
    /// An operator paused it: no batch starts until it is resumed.
    pub paused: bool,
    /// The configuration's throttle.
    pub configured: ThrottleValues,
    /// What an operator set (null fields: the configured value applies).
    #[serde(rename = "override")]
    pub overrides: crate::controls::ThrottleOverride,
    /// The throttle batches run under now.
    pub effective: ThrottleValues,
    /// Who made the last change (none: never changed).
    pub changed_by: Option<String>,
    /// When.
    pub changed_at: Option<DateTime<Utc>>,
    /// Why, as they said.
    pub reason: Option<String>,
    /// The recorded changes, newest first (one target's view only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::controls::ControlChange>,
}

impl TargetView {
    /// The view of `target` under `control` (none: never changed), with `changes`.
    pub fn new(
        target: &crate::catalog::Target,
        control: Option<&crate::controls::TargetControl>,
        changes: Vec<crate::controls::ControlChange>,
    ) -> Self {
        let throttle = &target.throttle;
        let effective = crate::controls::Effective::of(throttle, control);
        let values = |rate: Option<u32>,
                      adaptive: Option<crate::throttle::Adaptive>,
                      cap: Option<u32>| ThrottleValues {
            max_rows_per_second: rate,
            max_batch_size: cap.map_or(target.max_batch_size, |cap| cap.min(target.max_batch_size)),
            min_batch_size: adaptive.map(|adaptive| adaptive.min),
            target_batch_duration_ms: adaptive
                .map(|adaptive| u64::try_from(adaptive.target.as_millis()).unwrap_or(u64::MAX)),
        };
        Self {
            name: target.name.clone(),
            paused: effective.paused,
            configured: values(throttle.max_rows_per_second, throttle.adaptive, None),
            overrides: control.map(|c| c.overrides.clone()).unwrap_or_default(),
            effective: values(
                effective.max_rows_per_second,
                effective.adaptive,
                effective.batch_cap,
            ),
            changed_by: control.map(|c| c.changed_by.clone()),
            changed_at: control.map(|c| c.changed_at),
            reason: control.and_then(|c| c.reason.clone()),
            changes,
        }
    }
}

/// `GET /v1/targets`: every catalog target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPage {
    /// By name.
    pub targets: Vec<TargetView>,
}
