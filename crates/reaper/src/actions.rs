//! What an operator may do to a job, for the HTTP API, the dashboard and the CLI alike: cancel,
//! pause, resume, retry a dead job, restore an archive or soft-delete job, run a retention
//! policy now. Each is a ledger change recorded
//! with who asked (`reaper_job_actions`, in the change's transaction), then, for a job handed
//! back to the daemons, a push onto the queue.
//!
//! This module decides nothing about jobs (the ledger's statements do) and answers no request
//! (the API and the dashboard turn its outcomes into responses).

use chrono::Utc;
use reaper_core::lifecycle::JobState;
use reaper_core::retention::Policy;
use reaper_engine::EngineError;
use reaper_engine::ledger::{self, Acted, Action, JobRecord};

use crate::producer::Producer;

/// What an action did, for a reply.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It applied: the word for what it did (`paused`, `stopping`, `pending`, `cancelled`,
    /// `created`) and the job now.
    Done(&'static str, Box<JobRecord>),
    /// The job's state does not take it; the message says why.
    Conflict(String),
    /// No such job or policy.
    NotFound(String),
}

/// Runs `action` on job `id` for `actor`.
pub(crate) async fn act(
    producer: &Producer,
    action: Action,
    id: &str,
    actor: &str,
) -> Result<Outcome, EngineError> {
    let now = Utc::now();
    let db = &producer.db;
    if action == Action::Cancel {
        return Ok(match ledger::cancel(db, id, actor, now).await? {
            Some(ledger::CancelOutcome::Cancelled(job)) => {
                Outcome::Done("cancelled", Box::new(job))
            }
            Some(ledger::CancelOutcome::Stopping(job)) => Outcome::Done("stopping", Box::new(job)),
            Some(ledger::CancelOutcome::Finished(job)) => Outcome::Conflict(format!(
                "job `{id}` is {} already; nothing to cancel",
                job.state
            )),
            None => Outcome::NotFound(format!("no job `{id}`")),
        });
    }
    let acted = match action {
        Action::Pause => ledger::pause(db, id, actor, now).await?,
        Action::Resume => ledger::resume(db, id, actor, now).await?,
        Action::Retry => ledger::retry(db, id, actor, now).await?,
        Action::Cancel | Action::Run | Action::Restore => {
            return Ok(Outcome::Conflict(format!(
                "`{}` is not an action on a job",
                action.as_str()
            )));
        }
    };
    Ok(match acted {
        None => Outcome::NotFound(format!("no job `{id}`")),
        Some(Acted::Refused(job)) => Outcome::Conflict(refusal(action, &job)),
        Some(Acted::Changed(job)) => {
            if job.state == JobState::Pending {
                enqueue(producer, &job.id).await;
            }
            let word = match (action, job.state) {
                (Action::Pause, JobState::Running) => "stopping",
                (Action::Pause, _) => "paused",
                _ => "pending",
            };
            Outcome::Done(word, Box::new(job))
        }
    })
}

/// Why `action` does not apply to `job`.
fn refusal(action: Action, job: &JobRecord) -> String {
    let id = &job.id;
    match action {
        Action::Pause if job.cancel_requested_at.is_some() => {
            format!("job `{id}` is being cancelled; it cannot pause")
        }
        Action::Pause => format!(
            "job `{id}` is {}; only a pending or running job can pause",
            job.state
        ),
        Action::Resume => format!("job `{id}` is {}; only a paused job resumes", job.state),
        _ => format!("job `{id}` is {}; only a dead job is retried", job.state),
    }
}

/// Puts a job handed back to the daemons on the queue. A failed push is left to the
/// reconciler, which enqueues pending jobs nobody holds.
async fn enqueue(producer: &Producer, id: &str) {
    if let Err(error) = producer.queue.push(id, None).await {
        tracing::warn!(message = "Could not enqueue a resumed job; the reconciler will.", job_id = %id, %error);
    }
}

/// Submits a run of `policy` now, off its schedule (not tied to a window), unless its previous
/// run is unfinished (its runs never overlap), and records who asked.
pub(crate) async fn run_policy(
    producer: &Producer,
    policy: &Policy,
    actor: &str,
) -> Result<Outcome, EngineError> {
    let unfinished =
        ledger::policy_jobs(&producer.db, &policy.name, JobState::UNFINISHED, 1).await?;
    if let Some(previous) = unfinished.first() {
        return Ok(Outcome::Conflict(format!(
            "policy `{}` has an unfinished run (job `{}`, {}); its runs never overlap",
            policy.name, previous.id, previous.state
        )));
    }
    let request = policy.job_request(None, actor);
    let submitted = producer.accept(&request, "api", Some(&policy.name)).await?;
    ledger::record_action(
        &producer.db,
        &submitted.job.id,
        Action::Run,
        actor,
        "created",
        Utc::now(),
    )
    .await?;
    Ok(Outcome::Done("created", Box::new(submitted.job)))
}

/// Submits the restore job of job `id` (an archive or soft-delete job, finished) as `ask` says,
/// recorded as a `restore` action on that job by `ask.requested_by`; `source` labels the
/// metrics (`api`, `cli`).
/// A job that cannot be restored is invalid input (the error says why).
pub(crate) async fn restore(
    producer: &Producer,
    id: &str,
    ask: reaper_engine::archive::RestoreAsk<'_>,
    source: &'static str,
) -> Result<Outcome, EngineError> {
    let Some(request) =
        reaper_engine::archive::restore_request(&producer.db, &producer.catalog, id, ask).await?
    else {
        return Ok(Outcome::NotFound(format!("no job `{id}`")));
    };
    let submitted = producer.accept(&request, source, None).await?;
    ledger::record_action(
        &producer.db,
        id,
        Action::Restore,
        ask.requested_by,
        "created",
        Utc::now(),
    )
    .await?;
    Ok(Outcome::Done("created", Box::new(submitted.job)))
}

/// Who asked, from an action's optional JSON body `{"requested_by": "…"}`; `api` without one.
/// Anything else in the body is ignored (an action has no other input).
pub(crate) fn actor_from_body(body: &[u8]) -> String {
    text_from_body(body, "requested_by", 200).unwrap_or_else(|| "api".to_owned())
}

/// The trimmed, non-empty text of `field` in a JSON object body, at most `max_chars` long.
pub(crate) fn text_from_body(body: &[u8], field: &str, max_chars: usize) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get(field)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|text| !text.is_empty())
                .map(|text| text.chars().take(max_chars).collect())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_comes_from_the_body_or_is_the_api() {
        assert_eq!(actor_from_body(br#"{"requested_by": " ann "}"#), "ann");
        assert_eq!(actor_from_body(b""), "api");
        assert_eq!(actor_from_body(br#"{"requested_by": ""}"#), "api");
        assert_eq!(actor_from_body(br#"{"requested_by": 7}"#), "api");
        assert_eq!(actor_from_body(b"not json").len(), 3);
        assert_eq!(
            actor_from_body(format!(r#"{{"requested_by": "{}"}}"#, "x".repeat(300)).as_bytes())
                .len(),
            200
        );
    }
}
