//! Hostile and broken input, through every door a producer uses (Redis intake, HTTP API, CLI):
//! nothing a producer sends may stall the service, and every refusal names its fields and says
//! by its status what to do about it.

use std::time::{Duration, Instant};

use reaper_core::sql::Backend;
use reaper_testkit::PrivateRedis;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::daemon::{Api, RedisDeployment};
use crate::{Deployment, run, stderr, stdout};

fn erase_tenant(tenant: i64, key: &str) -> Value {
    json!({
        "target": "events",
        "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": tenant}]},
        "requested_by": "hostile-test",
        "reason": "erasure",
        "idempotency_key": key,
    })
}

/// The fields of a 400 reply, sorted.
fn fields(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {body}"))
        .iter()
        .map(|field| field["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    fields
}

async fn job_by_key(api: &Api, key: &str) -> Option<Value> {
    let (status, listed) = api.get(&format!("/v1/jobs?idempotency_key={key}")).await;
    assert_eq!(status, 200, "{listed}");
    listed["jobs"].get(0).cloned()
}

#[tokio::test]
async fn hostile_intake_messages_are_rejected_and_the_job_behind_them_is_done_within_a_second() {
    let redis_server = PrivateRedis::start();
    let d = RedisDeployment::new(200, Some(&redis_server)).await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[]);
    let api = d.api();
    let first = api.submit(&erase_tenant(1, "reused-key")).await;
    api.wait_for(&first, "done", Duration::from_secs(10)).await;

    let mut redis = redis::Client::open(redis_server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let intake = "reaper-private:intake";
    let poison: Vec<Vec<u8>> = vec![
        // PostgreSQL cannot store a NUL: the ledger insert used to fail, forever.
        erase_tenant(3, "nul-\u{0}-key").to_string().into_bytes(),
        // Not UTF-8 at all.
        b"{\"target\": \"events\xff\xfe\"}".to_vec(),
        // A known key with a different request: refused for good, not retried.
        erase_tenant(4, "reused-key").to_string().into_bytes(),
    ];
    let valid = erase_tenant(2, "valid-after-poison")
        .to_string()
        .into_bytes();
    let expected = test.ids("events", "tenant_id = 2").await;
    let before = test.snapshot_events().await;
    let pushed = Instant::now();
    // One LPUSH: the poison is taken first, the valid job right behind it.
    let _: i64 = redis
        .lpush(
            intake,
            vec![
                poison[0].clone(),
                poison[1].clone(),
                poison[2].clone(),
                valid.clone(),
            ],
        )
        .await
        .unwrap();
    let id = loop {
        if let Some(job) = job_by_key(&api, "valid-after-poison").await
            && job["state"] == "done"
        {
            break job["id"].as_str().unwrap().to_owned();
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(10),
            "the valid job behind the poison was not done"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = pushed.elapsed();
    eprintln!("valid job done {} ms after the push", elapsed.as_millis());
    assert!(
        elapsed < Duration::from_secs(1),
        "the valid job took {elapsed:?}"
    );
    before
        .assert_removed_exactly(test, &expected, reaper_testkit::Removal::Hard, 100)
        .await;
    reaper_testkit::engine::assert_clean(test, &id, reaper_core::lifecycle::JobState::Done, 1)
        .await;

    // The intake records each refusal as it meets it; the last may land just after the job.
    let waiting = Instant::now();
    let rejected: Vec<String> = loop {
        let rejected: Vec<String> = redis
            .lrange("reaper-private:intake:rejected", 0, -1)
            .await
            .unwrap();
        if rejected.len() >= 3 || waiting.elapsed() > Duration::from_secs(5) {
            break rejected;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let errors = crate::rejection_errors(&rejected);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().any(
            |error| error.starts_with("invalid job: idempotency_key: contains a NUL character")
        ),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|error| error == "invalid job: not UTF-8 text: invalid byte at offset 18"),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|error| error.starts_with(&format!(
            "idempotency key `reused-key` belongs to job {first}"
        ))),
        "{errors:?}"
    );
    let left: i64 = redis.llen(intake).await.unwrap();
    assert_eq!(left, 0);
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 2);
}

#[tokio::test]
async fn the_api_answers_hostile_bodies_by_intent_with_every_field() {
    let d = RedisDeployment::new(100, None).await;
    let test = &d.deployment.test;
    let _daemon = d.start(&[]);
    let api = d.api();
    let post = |body: Value| {
        let api = &api;
        async move {
            api.call(reqwest::Method::POST, "/v1/jobs", Some(&body))
                .await
        }
    };

    let (status, body) = post(erase_tenant(1, "nul-\u{0}-key")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(fields(&body), ["idempotency_key"]);

    let mut nul_value = erase_tenant(1, "nul-value");
    nul_value["filter"]["all"][0] =
        json!({"column": "kind", "op": "in", "value": ["view", "a\u{0}"]});
    nul_value["requested_by"] = json!("svc\u{0}");
    nul_value["reason"] = json!("\u{0}");
    let (status, body) = post(nul_value).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        fields(&body),
        ["filter.all[0].value", "reason", "requested_by"]
    );

    // The issue's example: a wrong mode, a zero batch size and a missing reason.
    let mut three = erase_tenant(1, "three");
    three["mode"] = json!("purge");
    three["batch_size"] = json!(0);
    three.as_object_mut().unwrap().remove("reason");
    let (status, body) = post(three).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(fields(&body), ["batch_size", "mode", "reason"]);
    assert!(
        body["error"].as_str().unwrap().starts_with("invalid job: ")
            && !body["error"].as_str().unwrap().contains("line 1 column"),
        "{body}"
    );

    let (status, body) = post(json!({
        "target": "events", "requested_by": "svc", "reason": "r",
        "batch_size": "10", "filter": [], "max_rows": -5
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(fields(&body), ["batch_size", "filter", "max_rows"]);
    let (status, body) = post(json!({
        "target": "events", "requested_by": "svc", "reason": "r",
        "filter": {"all": [{"column": "tenant_id", "op": null, "value": 1}, {"column": "nope", "op": "eq", "value": 1}]}
    }))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(fields(&body), ["filter.all[0].op", "filter.all[1].column"]);

    // 409: the key belongs to another request; the same request again is a safe retry.
    let id = api.submit(&erase_tenant(5, "key-5")).await;
    let (status, body) = post(erase_tenant(5, "key-5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let mut reordered = erase_tenant(5, "key-5");
    reordered["filter"]["all"][0] = json!({"value": 5, "op": "eq", "column": "tenant_id"});
    let (status, _) = post(reordered).await;
    assert_eq!(status, 200);
    let (status, body) = post(erase_tenant(6, "key-5")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("belongs to job {id}")),
        "{body}"
    );

    // 413 as the documented JSON error, with the limit.
    let mut huge = erase_tenant(1, "huge");
    huge["reason"] = json!("x".repeat(300 * 1024));
    let (status, body) = post(huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"],
        "the request body is larger than the limit of 262144 bytes"
    );

    // 500: a stored job reaper cannot read is permanent on our side; the client does not retry.
    // (JSON of another shape: the requester index reads the column as JSON, so text that is not
    // JSON at all cannot be stored any more.)
    test.exec(&format!(
        "UPDATE reaper_jobs SET request = '[\"not\", \"a request\"]' WHERE id = '{id}'"
    ))
    .await;
    let (status, body) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 500, "{body}");
    let client =
        reaper_client::Client::new(format!("http://127.0.0.1:{}", d.port), crate::daemon::TOKEN)
            .unwrap();
    let error = client.status(&id).await.unwrap_err();
    assert!(!error.is_transient(), "{error:?}");

    // Nothing refused was recorded.
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 1);
}

/// The command exited 2 (refused input) and its message names every one of `problems`.
fn refused_naming(output: &std::process::Output, problems: &[&str]) {
    assert_eq!(output.status.code(), Some(2));
    for problem in problems {
        assert!(
            stderr(output).contains(problem),
            "{problem}: {}",
            stderr(output)
        );
    }
}

#[tokio::test]
async fn the_cli_refuses_hostile_jobs_with_every_field_and_exit_status_2() {
    let d = Deployment::new(Backend::Postgres, 20).await;
    d.migrate();

    let nul = erase_tenant(1, "nul-\u{0}-key").to_string();
    let output = run(d.reaper().args(["enqueue", "--json", &nul]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("idempotency_key: contains a NUL character"),
        "{}",
        stderr(&output)
    );

    let mut three = erase_tenant(1, "three");
    three["mode"] = json!("purge");
    three["batch_size"] = json!(0);
    three.as_object_mut().unwrap().remove("reason");
    let file = d.dir.path().join("three.json");
    std::fs::write(&file, three.to_string()).unwrap();
    let output = run(d.reaper().arg("enqueue").arg("--file").arg(&file));
    refused_naming(
        &output,
        &[
            "reason: is required",
            "mode: must be",
            "batch_size: 0 is not allowed",
        ],
    );

    // Text that is not UTF-8 cannot be written in JSON either: a lone surrogate is refused.
    let surrogate =
        r#"{"target": "events", "all_rows": true, "requested_by": "a", "reason": "\ud800"}"#;
    let output = run(d.reaper().args(["enqueue", "--json", surrogate]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("invalid job: unexpected end of hex escape"),
        "{}",
        stderr(&output)
    );

    let bytes = d.dir.path().join("latin1.json");
    std::fs::write(&bytes, b"{\"target\": \"caf\xe9\"}").unwrap();
    let output = run(d.reaper().arg("enqueue").arg("--file").arg(&bytes));
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        "invalid job: not UTF-8 text: invalid byte at offset 15"
    );

    let output = run(d.reaper().args([
        "enqueue",
        "--target",
        "events",
        "--where",
        "tenant_id=three",
        "--batch-size",
        "0",
        "--reason",
        "r",
    ]));
    refused_naming(
        &output,
        &[
            "--where tenant_id=three: `three` is not an integer",
            "batch_size: 0 is not allowed",
        ],
    );

    // A key reused for another request is a conflict (exit 1), the same request is not.
    let id = d.enqueue(&erase_tenant(2, "cli-key"));
    let output =
        run(d
            .reaper()
            .args(["enqueue", "--json", &erase_tenant(2, "cli-key").to_string()]));
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), id);
    let output =
        run(d
            .reaper()
            .args(["enqueue", "--json", &erase_tenant(3, "cli-key").to_string()]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("belongs to job {id}")),
        "{}",
        stderr(&output)
    );
    assert_eq!(d.test.int("SELECT count(*) FROM reaper_jobs").await, 1);
}
