//! Redis ACL users, as managed Redis hands them out: a user limited to the queue's keys (the
//! exact ACL docs/operations.md gives) runs jobs from the API and the intake, and may touch
//! nothing else; a wrong password and a user limited to other keys are refused with messages
//! naming the user and what was denied.

use std::time::Duration;

use reaper_testkit::engine::erase_tenant;
use reaper_testkit::{PrivateRedis, Removal, TestDatabase};
use redis::AsyncCommands;

use crate::daemon::RedisDeployment;
use crate::tls::fails_quickly;
use crate::{run, stderr};

const NO_PERMISSION: redis::ErrorKind = redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm);

/// The queue's name in these tests.
const QUEUE: &str = "reaper-acl";

/// docs/operations.md's ACL for the queue `reaper-acl`: its keys, apalis' queue list, its
/// event channels; reading, writing, scripts and `PUBLISH` (apalis' scripts announce finished
/// tasks), nothing dangerous (`FLUSHALL`, `KEYS`, `CONFIG`).
fn queue_acl(user: &str, password: &str) -> Vec<String> {
    let mut rule: Vec<String> = ["SETUSER", user, "reset", "on"]
        .iter()
        .map(ToString::to_string)
        .collect();
    rule.push(format!(">{password}"));
    rule.extend(
        [
            "~reaper-acl:*",
            "~core:apalis:queues:list",
            "&tasks:reaper-acl:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@connection",
            "+publish",
            "-@dangerous",
        ]
        .map(String::from),
    );
    rule
}

async fn acl(redis: &PrivateRedis, rule: &[String]) {
    let mut admin = admin(redis).await;
    let _: () = redis::cmd("ACL")
        .arg(rule)
        .query_async(&mut admin)
        .await
        .unwrap();
}

async fn admin(redis: &PrivateRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn as_user(redis: &PrivateRedis, user: &str, password: &str) -> String {
    redis
        .url
        .replacen("redis://", &format!("redis://{user}:{password}@"), 1)
}

#[tokio::test]
async fn a_user_limited_to_the_queue_s_keys_runs_jobs_from_the_api_and_the_intake() {
    let redis = PrivateRedis::start();
    acl(&redis, &queue_acl("reaper-queue", "queue-pw")).await;
    let url = as_user(&redis, "reaper-queue", "queue-pw");
    let d = RedisDeployment::at(TestDatabase::postgres().await, 3_000, &url, QUEUE, "").await;
    let checked = run(d.deployment.reaper().args(["config", "check"]));
    assert!(checked.status.success(), "{}", stderr(&checked));

    let test = &d.deployment.test;
    let expected = test.ids("events", "tenant_id IN (3, 4)").await;
    let before = test.snapshot_events().await;
    let daemon = d.start(&[]);
    let api = d.api();
    let from_api = api
        .submit(&erase_tenant(3, serde_json::json!({"batch_size": 50})))
        .await;
    let mut producer = admin(&redis).await;
    let job = erase_tenant(
        4,
        serde_json::json!({"batch_size": 50, "idempotency_key": "acl-4"}),
    );
    let _: i64 = producer
        .lpush(format!("{QUEUE}:intake"), job.to_string())
        .await
        .unwrap();
    let from_intake = api.wait_for_key("acl-4", Duration::from_secs(15)).await;
    for id in [&from_api, &from_intake] {
        api.wait_done(id, 1, Duration::from_secs(30)).await;
    }
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 50)
        .await;
    crate::poll_until(Duration::from_secs(15), "never ready", async || {
        match api.get("/readyz").await {
            (200, _) => Ok(()),
            (_, readiness) => Err(readiness.to_string()),
        }
    })
    .await;
    let log = daemon.log_text();
    assert!(
        !log.contains("NOPERM") && !log.contains("denied"),
        "the ACL refused something the daemon does:\n{log}"
    );

    // The same user may not touch anything beside the queue, nor flush it.
    let mut limited = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let other: redis::RedisResult<()> = limited.set("some-other-app:key", "x").await;
    assert!(
        other
            .as_ref()
            .is_err_and(|error| error.kind() == NO_PERMISSION),
        "{other:?}"
    );
    let flushed: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut limited).await;
    assert!(
        flushed
            .as_ref()
            .is_err_and(|error| error.kind() == NO_PERMISSION),
        "{flushed:?}"
    );
}

#[tokio::test]
async fn a_refused_login_or_a_denied_key_names_the_user_and_what_was_denied() {
    let redis = PrivateRedis::start();
    acl(&redis, &queue_acl("reaper-queue", "queue-pw")).await;
    let d = RedisDeployment::at(
        TestDatabase::postgres().await,
        10,
        &as_user(&redis, "reaper-queue", "wrong-pw"),
        QUEUE,
        "",
    )
    .await;
    let error = fails_quickly(d.deployment.reaper().arg("run"));
    assert!(
        error.contains("Redis refused the login of user `reaper-queue`"),
        "{error}"
    );

    // A user whose keys are another application's.
    let mut narrow = queue_acl("narrow", "narrow-pw");
    narrow[5] = "~another-app:*".into();
    acl(&redis, &narrow).await;
    let config = std::fs::read_to_string(&d.deployment.config).unwrap();
    std::fs::write(
        &d.deployment.config,
        config.replace(
            &as_user(&redis, "reaper-queue", "wrong-pw"),
            &as_user(&redis, "narrow", "narrow-pw"),
        ),
    )
    .unwrap();
    let error = fails_quickly(d.deployment.reaper().args(["config", "check"]));
    assert!(
        error.contains("cannot run the scripts apalis polls with on `reaper-acl:active`")
            && error.contains("Redis denied it to user `narrow`"),
        "{error}"
    );
}
