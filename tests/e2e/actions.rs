//! Operator actions on daemon jobs, through the API and the CLI, against a real `reaper run` on
//! PostgreSQL with Redis: pause a running job at a batch boundary (it keeps its checkpoint and
//! no worker takes it), resume it to the end; retry a dead job from its checkpoint; run a
//! policy now. Every action is recorded with who asked; every test that deletes proves the
//! invariants with a snapshot of the table.

use std::time::Duration;

use reaper_core::lifecycle::JobState;
use reaper_testkit::Removal;
use reaper_testkit::engine::assert_clean;
use serde_json::{Value, json};

use crate::daemon::{RedisDeployment, erase_two_tenants};

fn by(name: &str) -> Value {
    json!({ "requested_by": name })
}

#[tokio::test]
async fn a_paused_job_keeps_its_checkpoint_until_resumed_then_finishes_exactly_once() {
    let (d, matching, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    let (_daemon, api, id) = d.mid_run().await;
    let (status, body) = api.act(&id, "pause", Some(&by("ann"))).await;
    // Usually `stopping` (202); the worker may reach its boundary before the read-back.
    assert!(
        (status == 202 && body["outcome"] == "stopping")
            || (status == 200 && body["outcome"] == "paused"),
        "{status} {body}"
    );
    let paused = api.wait_for(&id, "paused", Duration::from_secs(10)).await;
    assert_eq!(paused["pause_requested_at"], Value::Null, "{paused}");
    assert_eq!(paused["cancel_requested_at"], Value::Null, "{paused}");
    // Nobody takes it: a second later it is where it stopped, rows and checkpoint alike.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let still = api.job(&id).await;
    assert_eq!(still["state"], "paused", "{still}");
    assert_eq!(still["rows_deleted"], paused["rows_deleted"]);
    assert_eq!(
        still["progress"]["checkpoint"],
        paused["progress"]["checkpoint"]
    );
    let deleted = paused["rows_deleted"].as_u64().unwrap();
    assert!(
        deleted > 0 && (deleted as usize) < matching.len(),
        "{paused}"
    );
    let checked = before
        .assert_removed_within(test, &matching, Removal::Hard, 20)
        .await;
    assert_eq!(checked.removed.len() as u64, deleted);

    let (status, body) = api.act(&id, "pause", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api.act(&id, "retry", None).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api.act(&id, "resume", Some(&by("bob"))).await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("pending")),
        "{body}"
    );
    api.wait_done(&id, 1, Duration::from_secs(30)).await;
    // The pause gave its attempt back: one claim counted in all.
    assert_clean(test, &id, JobState::Done, 1).await;
    before
        .assert_removed_within(test, &matching, Removal::Hard, 20)
        .await;

    let recorded = api.actions(&id).await;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0], ["resume", "bob", "pending"]);
    assert!(
        recorded[1] == ["pause", "ann", "stopping"] || recorded[1] == ["pause", "ann", "paused"],
        "{recorded:?}"
    );
}

#[tokio::test]
async fn a_dead_job_is_retried_from_its_checkpoint_and_the_retry_is_recorded() {
    let (d, matching, before) = RedisDeployment::prepared(2_000, None, "tenant_id IN (1, 2)").await;
    let test = &d.deployment.test;
    // Three batches commit, then every batch fails until the job is dead (5 attempts); the
    // fault point is spent after that many failures, so the retry runs clean.
    let _daemon = d.start(&[(
        "FAILPOINTS",
        "batch::before_commit=3*off->5*return(transient)->off",
    )]);
    let api = d.api();
    let id = api.submit(&erase_two_tenants()).await;
    let dead = api.wait_for(&id, "dead", Duration::from_secs(60)).await;
    let rows_before = dead["rows_deleted"].as_u64().unwrap();
    assert_eq!(rows_before, 60, "{dead}");
    let (status, body) = api.act(&id, "retry", Some(&by("carol"))).await;
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("pending")),
        "{body}"
    );
    assert_eq!(
        body["job"]["max_attempts"],
        dead["attempts"].as_i64().unwrap() + 1
    );
    let done = api.wait_for(&id, "done", Duration::from_secs(30)).await;
    assert_eq!(
        done["attempts"],
        dead["attempts"].as_i64().unwrap() + 1,
        "{done}"
    );
    assert_eq!(
        done["rows_deleted"].as_u64().unwrap() as usize,
        matching.len()
    );
    // From its checkpoint: the batches kept their numbers, no key was deleted twice.
    before
        .assert_removed_within(test, &matching, Removal::Hard, 20)
        .await;
    let (_, actions) = api.get(&format!("/v1/jobs/{id}/actions")).await;
    assert_eq!(actions["actions"][0]["action"], "retry", "{actions}");
    assert_eq!(actions["actions"][0]["actor"], "carol", "{actions}");
}

#[tokio::test]
async fn the_cli_pauses_resumes_and_refuses_to_retry_a_live_job() {
    let d = RedisDeployment::new(500, None).await;
    let test = &d.deployment.test;
    let before = test.snapshot_events().await;
    // No daemon: the job stays pending until paused.
    let id = d.enqueue_tenant_3(&[]);
    let paused = crate::run(
        d.deployment
            .reaper()
            .args(["pause", &id])
            .env("USER", "dora"),
    );
    assert!(paused.status.success(), "{}", crate::stderr(&paused));
    assert!(
        crate::stdout(&paused).contains("paused"),
        "{}",
        crate::stdout(&paused)
    );
    let retried = crate::run(d.deployment.reaper().args(["retry", &id]));
    assert_eq!(retried.status.code(), Some(1));
    assert!(
        crate::stderr(&retried).contains("only a dead job is retried"),
        "{}",
        crate::stderr(&retried)
    );
    let resumed = crate::run(
        d.deployment
            .reaper()
            .args(["resume", &id])
            .env("USER", "dora"),
    );
    assert!(resumed.status.success(), "{}", crate::stderr(&resumed));
    let unknown = crate::run(d.deployment.reaper().args(["resume", "no-such-job"]));
    assert_eq!(unknown.status.code(), Some(1));
    before.assert_untouched(test).await;
    let status = crate::run(d.deployment.reaper().args(["status", &id]));
    let job: Value = serde_json::from_str(&crate::stdout(&status)).unwrap();
    assert_eq!(job["state"], "pending", "{job}");
    // The daemon takes the resumed job from the queue and finishes it.
    let _daemon = d.start(&[]);
    d.api().wait_done(&id, 1, Duration::from_secs(30)).await;
    let (_, actions) = d.api().get(&format!("/v1/jobs/{id}/actions")).await;
    assert_eq!(actions["actions"][0]["actor"], "dora", "{actions}");
    assert_eq!(actions["actions"][1]["action"], "pause", "{actions}");
}
