//! Cluster-wide limits and live control of targets (issue 16), through real `reaper run`
//! daemons on PostgreSQL with Redis: three daemons together hold one target's rows-per-second
//! cap; an operator lowers the cap, pauses the target (every daemon stops starting batches
//! within a second, and a restarted daemon stays paused), resumes and clears it through the API
//! and the CLI while jobs run; refused input changes nothing; every change is recorded (who,
//! when, what). Rates are measured from the audit rows' timestamps and row counts; every test
//! proves the invariants with a snapshot of the table.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reaper_testkit::engine::assert_clean;
use reaper_testkit::{Removal, TestDatabase};
use serde_json::{Value, json};

use crate::daemon::{Api, Daemon, RedisDeployment, free_port};
use crate::{run, stderr, stdout};

/// Seconds since the epoch, now (the daemons run on this machine: the audit's clock).
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `(commit time in epoch seconds, rows)` of every audit row of `events`, in commit order.
async fn audit_times(test: &TestDatabase) -> Vec<(f64, f64)> {
    test.strings(
        "SELECT CAST(EXTRACT(EPOCH FROM created_at) AS TEXT) || ' ' || CAST(row_count AS TEXT) \
         FROM reaper_audit WHERE target = 'events' ORDER BY created_at, id",
    )
    .await
    .iter()
    .map(|line| {
        let (at, rows) = line.split_once(' ').unwrap();
        (at.parse().unwrap(), rows.parse().unwrap())
    })
    .collect()
}

/// Rows per second committed in `(from, to]`.
fn rate_between(entries: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let rows: f64 = entries
        .iter()
        .filter(|(at, _)| *at > from && *at <= to)
        .map(|(_, rows)| rows)
        .sum();
    rows / (to - from)
}

/// The deployment's `events` target capped at `rate` rows per second (all daemons together).
fn cap_events(d: &RedisDeployment, rate: u32) {
    let text = std::fs::read_to_string(&d.deployment.config).unwrap();
    let capped = text.replace(
        "max_batch_size = 1000\n",
        &format!("max_batch_size = 1000\nmax_rows_per_second = {rate}\n"),
    );
    assert_ne!(text, capped);
    d.deployment.write_config(capped);
}

/// Another daemon of the deployment, with its API on its own port.
fn start_on(d: &RedisDeployment, port: u16, env: &[(&str, &str)]) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.push(("REAPER_API__LISTEN", &listen));
    Daemon::start(&d.deployment.config, d.deployment.dir.path(), port, &env)
}

fn erase_tenant(tenant: i64) -> Value {
    json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": tenant}]},
           "batch_size": 100, "requested_by": "t", "reason": "r"})
}

#[tokio::test]
async fn three_daemons_hold_one_target_s_rate_cap_together() {
    const CAP: f64 = 1_000.0;
    let d = RedisDeployment::new(12_000, None).await;
    cap_events(&d, 1_000);
    let test = &d.deployment.test;
    let matching = test.ids("events", "tenant_id >= 0").await;
    let before = test.snapshot_events().await;
    let ports = [free_port(), free_port(), free_port()];
    let daemons: Vec<Daemon> = ports.iter().map(|port| start_on(&d, *port, &[])).collect();
    let api = Api::at(ports[0]);
    let mut ids = Vec::new();
    for tenant in 0..10 {
        ids.push(api.submit(&erase_tenant(tenant)).await);
    }
    for id in &ids {
        api.wait_done(id, 1, Duration::from_secs(60)).await;
        assert_clean(test, id, reaper_core::lifecycle::JobState::Done, 1).await;
    }
    before
        .assert_removed_exactly(test, &matching, Removal::Hard, 100)
        .await;
    // Every daemon ran batches: the cap held across three processes, not within one.
    for (index, daemon) in daemons.iter().enumerate() {
        let batches = daemon.log_text().matches("Committed batch.").count();
        assert!(batches >= 5, "daemon {index} committed {batches} batches");
    }
    let entries = audit_times(test).await;
    let (first, last) = (entries[0].0, entries[entries.len() - 1].0);
    let rows: f64 = entries[1..].iter().map(|(_, rows)| rows).sum();
    let rate = rows / (last - first);
    eprintln!(
        "three daemons: {rows} rows in {:.2}s = {rate:.0} rows/s (cap {CAP})",
        last - first
    );
    assert!(
        (CAP * 0.85..=CAP * 1.15).contains(&rate),
        "{rate:.0} rows/s over the run; the cap is {CAP} for all daemons together"
    );
}

/// `reaper target ARGS…` on the deployment's configuration: status, stdout, stderr.
fn target_cli(d: &RedisDeployment, args: &[&str]) -> (i32, String, String) {
    let output = run(d.deployment.reaper().arg("target").args(args));
    (
        output.status.code().unwrap_or(-1),
        stdout(&output),
        stderr(&output),
    )
}

/// The `reaper_throttle_*` samples of `/metrics` for `events`.
async fn throttle_samples(api: &Api) -> Vec<String> {
    api.text("/metrics")
        .await
        .lines()
        .filter(|line| line.starts_with("reaper_throttle_") && line.contains("target=\"events\""))
        .map(str::to_owned)
        .collect()
}

/// Waits until `api`'s target `events` satisfies `until`.
async fn wait_for_target(api: &Api, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    crate::poll_until(Duration::from_secs(10), what, async || {
        let (status, body) = api.get("/v1/targets/events").await;
        if status == 200 && until(&body) {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await
}

#[tokio::test]
async fn operators_lower_pause_resume_and_clear_a_target_live_on_every_daemon() {
    let d = RedisDeployment::new(30_000, None).await;
    cap_events(&d, 2_000);
    let test = &d.deployment.test;
    let matching = test.ids("events", "tenant_id >= 0").await;
    let before = test.snapshot_events().await;
    let ports = [free_port(), free_port()];
    let read_only = [("REAPER_API_READ_TOKEN", "read-only-token-0123456789")];
    let mut daemons: Vec<Daemon> = ports
        .iter()
        .map(|port| start_on(&d, *port, &read_only))
        .collect();
    let api = Api::at(ports[0]);
    let other = Api::at(ports[1]);
    let (status, shown) = api.get("/v1/targets").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["targets"][0]["effective"]["max_rows_per_second"],
        2_000
    );
    let mut ids = Vec::new();
    for tenant in 0..10 {
        ids.push(api.submit(&erase_tenant(tenant)).await);
    }

    // Lower the cap (and the largest batch, so one batch's wait stays short) while jobs run.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let changed_at = now_secs();
    let (status, body) = api
        .call(
            reqwest::Method::PATCH,
            "/v1/targets/events/throttle",
            Some(&json!({"max_rows_per_second": 400, "max_batch_size": 100,
                         "requested_by": "ops", "reason": "replica behind"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective"]["max_rows_per_second"], 400, "{body}");
    assert_eq!(body["configured"]["max_rows_per_second"], 2_000, "{body}");
    assert_eq!(body["changed_by"], "ops", "{body}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let entries = audit_times(test).await;
    let fast = rate_between(&entries, changed_at - 1.0, changed_at);
    let slow = rate_between(&entries, changed_at + 1.0, changed_at + 4.0);
    eprintln!("before the change: {fast:.0} rows/s; from 1 s after it: {slow:.0} rows/s");
    assert!(fast > 1_000.0, "{fast:.0} rows/s before the change");
    assert!(
        (300.0..=500.0).contains(&slow),
        "{slow:.0} rows/s from 1 s after lowering the cap to 400"
    );
    let samples = throttle_samples(&other).await;
    assert!(
        samples.iter().any(
            |line| line.starts_with("reaper_throttle_max_rows_per_second")
                && line.ends_with(" 400")
        ),
        "{samples:?}"
    );

    // Refused input changes nothing: through the API, the CLI, and with the read-only token.
    for bad in [
        json!({"max_rows_per_second": 5_000}),
        json!({"max_rows_per_second": -5}),
        json!({"max_batch_size": 0}),
        json!({"speed": 3}),
    ] {
        let (status, body) = api
            .call(
                reqwest::Method::PATCH,
                "/v1/targets/events/throttle",
                Some(&bad),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = api
        .call(
            reqwest::Method::PATCH,
            "/v1/targets/events/throttle",
            Some(&json!({"max_rows_per_second": 5_000})),
        )
        .await;
    assert!(
        body.to_string()
            .contains("above target `events`'s configured cap (2000)"),
        "{status} {body}"
    );
    let (status, body) = api
        .call(reqwest::Method::POST, "/v1/targets/nope/pause", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("unknown target `nope`"), "{body}");
    let refused = reqwest::Client::new()
        .patch(format!(
            "http://127.0.0.1:{}/v1/targets/events/throttle",
            ports[0]
        ))
        .bearer_auth(read_only[0].1)
        .json(&json!({"max_rows_per_second": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    for (args, needle) in [
        (
            vec!["set", "events", "--max-rows-per-second", "5000"],
            "max_rows_per_second: 5000 is above target `events`'s configured cap (2000)",
        ),
        (
            vec!["set", "events", "--max-rows-per-second", "-5"],
            "max_rows_per_second: -5 is not allowed",
        ),
        (
            vec!["set", "events", "--max-batch-size", "lots"],
            "--max-batch-size: `lots` is not a whole number",
        ),
        (vec!["pause", "nope"], "unknown target `nope`"),
        (vec!["show", "nope"], "unknown target `nope`"),
    ] {
        let (status, _, err) = target_cli(&d, &args);
        assert_eq!(status, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let unchanged = wait_for_target(&api, "unchanged", |_| true).await;
    assert_eq!(
        unchanged["override"]["max_rows_per_second"], 400,
        "{unchanged}"
    );
    assert_eq!(
        unchanged["changes"].as_array().unwrap().len(),
        1,
        "{unchanged}"
    );

    // Pause through the CLI: no batch starts on either daemon from a second after it.
    let (status, out, err) = target_cli(
        &d,
        &["pause", "events", "--by", "ann", "--reason", "incident 42"],
    );
    assert_eq!(status, 0, "{err}");
    let paused_at = now_secs();
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["paused"], true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let entries = audit_times(test).await;
    let late: Vec<_> = entries
        .iter()
        .filter(|(at, _)| *at > paused_at + 1.0)
        .collect();
    assert!(late.is_empty(), "batches after the pause: {late:?}");
    let deleted_while_paused = entries.len();
    assert!(
        test.int("SELECT count(*) FROM events").await > 0,
        "the jobs finished before the pause; nothing was tested"
    );
    let samples = throttle_samples(&other).await;
    assert!(
        samples
            .iter()
            .any(|line| line.starts_with("reaper_throttle_paused")
                && line.contains("reason=\"operator\"")
                && line.ends_with(" 1")),
        "{samples:?}"
    );

    // A daemon restarted while the target is paused stays paused.
    daemons[0].signal("TERM");
    daemons[0].wait(Duration::from_secs(20));
    daemons[0] = start_on(&d, ports[0], &read_only);
    let shown = wait_for_target(&api, "paused after the restart", |target| {
        target["paused"] == true
    })
    .await;
    assert_eq!(shown["changed_by"], "ann", "{shown}");
    assert_eq!(shown["reason"], "incident 42", "{shown}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(audit_times(test).await.len(), deleted_while_paused);

    // Resume through the API: batches start again within a second.
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/v1/targets/events/resume",
            Some(&json!({"requested_by": "bob"})),
        )
        .await;
    assert_eq!((status, &body["paused"]), (200, &json!(false)), "{body}");
    let resumed = Instant::now();
    crate::poll_until(
        Duration::from_secs(3),
        "a batch after the resume",
        async || {
            let count = audit_times(test).await.len();
            if count > deleted_while_paused {
                Ok(count)
            } else {
                Err(format!("{count} audit rows"))
            }
        },
    )
    .await;
    eprintln!("first batch {:?} after the resume", resumed.elapsed());

    // Clear through the CLI: the configured throttle returns.
    let (status, out, err) = target_cli(&d, &["clear", "events", "--by", "cat"]);
    assert_eq!(status, 0, "{err}");
    let cleared: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        cleared["effective"]["max_rows_per_second"], 2_000,
        "{cleared}"
    );
    assert_eq!(cleared["effective"]["max_batch_size"], 1_000, "{cleared}");
    assert_eq!(cleared["override"]["max_rows_per_second"], Value::Null);
    let (status, out, _) = target_cli(&d, &["list"]);
    assert_eq!(status, 0);
    assert!(out.contains("events") && out.contains("active"), "{out}");

    for id in &ids {
        api.wait_done(id, 1, Duration::from_secs(60)).await;
        assert_clean(test, id, reaper_core::lifecycle::JobState::Done, 1).await;
    }
    before
        .assert_removed_exactly(test, &matching, Removal::Hard, 1_000)
        .await;

    // Every change, newest first, with who and what it left; refused ones are not there.
    let (_, shown) = other.get("/v1/targets/events").await;
    let history: Vec<(String, String)> = shown["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["action"].as_str().unwrap().to_owned(),
                change["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("clear", "cat"),
        ("resume", "bob"),
        ("pause", "ann"),
        ("set", "ops"),
    ]
    .map(|(action, actor)| (action.to_owned(), actor.to_owned()));
    assert_eq!(history, expected, "{shown}");
    assert_eq!(
        shown["changes"][3]["after"]["override"]["max_rows_per_second"],
        400
    );
    assert_eq!(shown["changes"][3]["reason"], "replica behind");
    assert!(shown["changes"][2]["at"].is_string());
}
