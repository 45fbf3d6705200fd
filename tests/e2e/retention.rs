//! Retention through the real binary: policies on a schedule (one job per window across three
//! daemons, catch-up after downtime), `reaper purge` (soft → grace period → hard, dry run,
//! Ctrl-C and resume), `reaper policies`, and the policy errors a configuration can have.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reaper_core::sql::Backend;
use reaper_testkit::Removal;
use serde_json::Value;

use crate::daemon::{Daemon, RedisDeployment, free_port};
use crate::{Deployment, config_text, run, send_signal, stderr, stdout};

/// `[[retention]]` blocks appended to a deployment's config (TOML arrays of tables may follow
/// any table).
pub(crate) fn add_to_config(deployment: &Deployment, extra: &str) {
    let mut text = std::fs::read_to_string(&deployment.config).unwrap();
    text = text.replace(
        "created_at = \"timestamp\"\n",
        "created_at = \"timestamp\"\ndeleted_at = \"timestamp\"\n",
    );
    text.push_str(extra);
    std::fs::write(&deployment.config, text).unwrap();
}

/// A policy on `events` for one tenant's rows older than a day (every fixture row is).
fn policy(name: &str, tenant: i64, schedule: &str, extra: &str) -> String {
    format!(
        "\n[[retention]]\nname = \"{name}\"\ntarget = \"events\"\nage_column = \"created_at\"\nmax_age = \"1d\"\n\
         schedule = \"{schedule}\"\nfilter = [{{ column = \"tenant_id\", op = \"eq\", value = {tenant} }}]\n{extra}"
    )
}

/// Windows of a policy's jobs, parsed from their keys (`policy:NAME:WINDOW`), oldest first.
async fn windows(deployment: &Deployment, name: &str) -> Vec<DateTime<Utc>> {
    let keys = deployment
        .test
        .strings(&format!(
            "SELECT idempotency_key FROM reaper_jobs WHERE policy = '{name}' ORDER BY idempotency_key"
        ))
        .await;
    keys.iter()
        .map(|key| {
            let window = key
                .strip_prefix(&format!("policy:{name}:"))
                .unwrap_or_else(|| panic!("unexpected key {key}"));
            DateTime::parse_from_rfc3339(window).unwrap().to_utc()
        })
        .collect()
}

async fn wait_until(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis deployment with the policy `every-second` on `tenant`'s rows (`extra` keys added),
/// the tenant's keys and a snapshot of `events`.
async fn every_second_on_tenant(
    rows: u32,
    tenant: i64,
    extra: &str,
) -> (
    RedisDeployment,
    BTreeSet<String>,
    reaper_testkit::TableSnapshot,
) {
    let condition = format!("tenant_id = {tenant}");
    let (setup, matching, before) = RedisDeployment::prepared(rows, None, &condition).await;
    add_to_config(
        &setup.deployment,
        &policy("every-second", tenant, "* * * * * *", extra),
    );
    (setup, matching, before)
}

#[tokio::test]
async fn three_daemons_submit_exactly_one_job_per_window() {
    let (setup, tenant, before) = every_second_on_tenant(3_000, 7, "").await;
    let test = &setup.deployment.test;
    assert_eq!(tenant.len(), 300);

    let ports = [setup.port, free_port(), free_port()];
    let listen: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let mut daemons: Vec<Daemon> = ports
        .iter()
        .zip(&listen)
        .map(|(port, listen)| {
            Daemon::start(
                &setup.deployment.config,
                setup.deployment.dir.path(),
                *port,
                &[("REAPER_API__LISTEN", listen.as_str())],
            )
        })
        .collect();
    let all_started = Utc::now();
    wait_until(
        Duration::from_secs(20),
        "four windows with every daemon up",
        async || {
            windows(&setup.deployment, "every-second")
                .await
                .iter()
                .filter(|window| **window > all_started)
                .count()
                >= 4
        },
    )
    .await;
    for daemon in &daemons {
        daemon.signal("TERM");
    }
    for daemon in &mut daemons {
        let (status, _) = daemon.wait(Duration::from_secs(15));
        assert!(status.success(), "{}", daemon.log_text());
    }

    let windows = windows(&setup.deployment, "every-second").await;
    // … each window is one job, created once, and the other daemons saw it was taken.
    let logs: String = daemons.iter().map(Daemon::log_text).collect();
    // (A window whose previous run was still unfinished is skipped, and says so.)
    let skipped: BTreeSet<DateTime<Utc>> = logs
        .lines()
        .filter(|line| line.contains("Skipped a window"))
        .filter_map(|line| line.split("window=").nth(1))
        .filter_map(|rest| {
            let text: String = rest.split(" UTC").next()?.to_owned();
            chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|at| at.and_utc())
        })
        .collect();
    let mut covered: BTreeSet<DateTime<Utc>> = windows.iter().copied().collect();
    covered.extend(skipped.iter().copied());
    let covered: Vec<_> = covered.into_iter().collect();
    // No window is lost between the first and the last (three daemons ticked each one).
    for pair in covered.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "a window is missing: jobs {windows:?}, skipped {skipped:?}"
        );
    }
    let created = logs.matches("Submitted a retention window.").count()
        + logs.matches("Caught up on a window missed").count();
    assert_eq!(created, windows.len(), "jobs created vs windows:\n{logs}");
    // One job per window although every daemon ticked it: each window between the first and
    // the last was handled by all three daemons (one created its job, the others found it, or
    // skipped it behind an unfinished run).
    let last = *windows.last().unwrap();
    let ticked_by_all: Vec<&DateTime<Utc>> = windows
        .iter()
        .filter(|window| **window > all_started + chrono::Duration::seconds(1) && **window < last)
        .collect();
    assert!(ticked_by_all.len() >= 2, "{windows:?} after {all_started}");
    // Counted per daemon: under load a submission may meet a lock timeout and be retried, and
    // a daemon stopped before its retry has handled the window as far as it could.
    let daemon_logs: Vec<String> = daemons.iter().map(Daemon::log_text).collect();
    for window in ticked_by_all {
        let mention = format!("window={}", window.format("%Y-%m-%d %H:%M:%S UTC"));
        let handled = daemon_logs
            .iter()
            .filter(|log| {
                log.lines().any(|line| {
                    line.contains(&mention)
                        && (line.contains("Submitted a retention window.")
                            || line.contains("Another daemon submitted this window.")
                            || line.contains("Skipped a window")
                            || line.contains("Cannot submit a retention window yet; retrying."))
                })
            })
            .count();
        assert_eq!(
            handled, 3,
            "{mention} handled by {handled} daemons:\n{logs}"
        );
    }
    // Every tenant-7 row was removed once, and audited once, across all the windows' jobs.
    before
        .assert_removed_exactly(test, &tenant, Removal::Hard, 100)
        .await;
}

#[tokio::test]
async fn a_window_missed_while_every_daemon_was_down_runs_once_at_start_up() {
    let (setup, tenant, snapshot) = RedisDeployment::prepared(1_000, None, "tenant_id = 7").await;
    add_to_config(
        &setup.deployment,
        &policy("every-3s", 7, "*/3 * * * * *", ""),
    );
    let mut first = setup.start(&[]);
    // Two windows run to their end; stopping right after the second one's job finished stops
    // well before the next tick (an unfinished run would make the next window wait).
    wait_until(Duration::from_secs(15), "two windows done", async || {
        setup
            .deployment
            .test
            .int("SELECT count(*) FROM reaper_jobs WHERE policy = 'every-3s' AND state = 'done'")
            .await
            >= 2
    })
    .await;
    first.signal("TERM");
    let (status, _) = first.wait(Duration::from_secs(15));
    assert!(status.success(), "{}", first.log_text());
    let before = windows(&setup.deployment, "every-3s").await;
    let last_before = *before.last().unwrap();

    // Down for more than two windows.
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let restarted_at = Utc::now();
    let second = setup.start(&[]);
    let log = {
        let started = Instant::now();
        loop {
            let log = second.log_text();
            if log.contains("Caught up on a window missed") {
                break log;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no catch-up:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let caught_up = windows(&setup.deployment, "every-3s")
        .await
        .into_iter()
        .find(|window| *window > last_before)
        .unwrap_or_else(|| panic!("no job after {last_before}:\n{log}"));
    // The newest window at the restart (ticks fall on multiples of 3 s) …
    let newest_at_restart = DateTime::from_timestamp(restarted_at.timestamp() / 3 * 3, 0).unwrap();
    assert!(
        caught_up >= newest_at_restart,
        "the catch-up ran {caught_up}, not the newest missed window {newest_at_restart}"
    );
    // … after at least one older missed window.
    assert!(
        caught_up - last_before >= chrono::Duration::seconds(6),
        "nothing was missed: {last_before} then {caught_up}"
    );
    // Exactly one job for the missed stretch: none for the older missed windows.
    let all = windows(&setup.deployment, "every-3s").await;
    let missed: Vec<_> = all
        .iter()
        .filter(|window| **window > last_before && **window < caught_up)
        .collect();
    assert!(missed.is_empty(), "missed windows ran: {missed:?}");
    drop(second);
    snapshot
        .assert_removed_within(&setup.deployment.test, &tenant, Removal::Hard, 100)
        .await;
}

fn deployment_config_with(deployment: &Deployment, target_keys: &str, policies: &str) {
    let text = config_text(&deployment.test.url, deployment.dir.path(), target_keys);
    std::fs::write(&deployment.config, text).unwrap();
    add_to_config(deployment, policies);
}

/// The SQL that makes tenant `tenant`'s even rows look soft-deleted ten days ago.
fn backdate_soft_deletes(backend: Backend, tenant: i64) -> String {
    let ten_days_ago = match backend {
        Backend::Postgres => "now() - interval '10 days'",
        Backend::Sqlite => "datetime('now', '-10 days')",
        Backend::MySql => "UTC_TIMESTAMP(6) - INTERVAL 10 DAY",
    };
    format!(
        "UPDATE events SET deleted_at = {ten_days_ago} WHERE tenant_id = {tenant} AND id % 2 = 0"
    )
}

async fn soft_then_hard_after_a_grace_period(backend: Backend) {
    let deployment = Deployment::new(backend, 2_000).await;
    deployment_config_with(
        &deployment,
        "",
        &format!(
            "{}{}",
            policy("expire", 5, "0 3 * * *", "mode = \"soft\"\n"),
            "\n[[retention]]\nname = \"purge-expired\"\ntarget = \"events\"\nage_column = \"deleted_at\"\n\
             max_age = \"7d\"\nmode = \"hard\"\nschedule = \"0 4 * * *\"\n"
        ),
    );
    deployment.migrate();
    let test = &deployment.test;
    let tenant = test.ids("events", "tenant_id = 5").await;

    let before = test.snapshot_events().await;
    let output = run(deployment.reaper().args(["purge", "--policy", "expire"]));
    assert!(output.status.success(), "{}", stderr(&output));
    // The soft policy marks every row of the tenant, and changes nothing else.
    before
        .assert_removed_exactly(test, &tenant, Removal::Soft, 1_000)
        .await;
    // Within the grace period the hard policy removes nothing.
    let before = test.snapshot_events().await;
    let output = run(deployment
        .reaper()
        .args(["purge", "--policy", "purge-expired"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("done: 0 rows"),
        "{}",
        stdout(&output)
    );
    before.assert_untouched(test).await;

    // Ten days later (for half of them), the hard policy removes exactly those.
    test.exec(&backdate_soft_deletes(backend, 5)).await;
    let aged = test.ids("events", "tenant_id = 5 AND id % 2 = 0").await;
    let before = test.snapshot_events().await;
    let output = run(deployment
        .reaper()
        .args(["purge", "--policy", "purge-expired"]));
    assert!(output.status.success(), "{}", stderr(&output));
    before
        .assert_removed_exactly(test, &aged, Removal::Hard, 1_000)
        .await;

    // `reaper policies` shows both, with their last runs and what the next run would remove.
    let output = run(deployment.reaper().args(["policies", "--json"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[1]["name"], "purge-expired");
    assert_eq!(shown[1]["last_run"]["state"], "done");
    assert_eq!(shown[1]["last_run"]["rows_deleted"], aged.len());
    assert_eq!(shown[1]["next_run_rows"], 0);
    assert!(
        shown[0]["next_run_at"]
            .as_str()
            .unwrap()
            .ends_with("03:00:00Z"),
        "{}",
        shown[0]
    );
    let output = run(deployment.reaper().arg("policies"));
    assert!(
        stdout(&output).contains("purge-expired"),
        "{}",
        stdout(&output)
    );
}

async fn a_dry_run_purge_writes_nothing(backend: Backend) {
    let deployment = Deployment::new(backend, 1_000).await;
    deployment_config_with(&deployment, "", &policy("old-tenant-4", 4, "0 3 * * *", ""));
    deployment.migrate();
    let test = &deployment.test;
    let before = test.snapshot_events().await;
    let output = run(deployment
        .reaper()
        .args(["purge", "--policy", "old-tenant-4", "--dry-run"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("matching rows: 100"), "{text}");
    assert!(text.contains("sample keys:   4, 14, 24"), "{text}");
    assert!(text.contains("DELETE"), "{text}");
    // Ad hoc, the same.
    let ad_hoc = |extra: &[&str]| {
        let mut command = deployment.reaper();
        command
            .args(["purge", "--target", "events", "--older-than", "1d"])
            .args(["--age-column", "created_at"])
            .args(extra);
        run(&mut command)
    };
    let output = ad_hoc(&["--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("matching rows: 1000"),
        "{}",
        stdout(&output)
    );
    // A purge that would delete more than its max_rows is refused before anything is written.
    let output = ad_hoc(&["--max-rows", "50"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("more than max_rows (50) rows match; nothing was done"),
        "{}",
        stderr(&output)
    );
    before.assert_untouched(test).await;
    assert_eq!(test.int("SELECT count(*) FROM reaper_audit").await, 0);
    assert_eq!(test.int("SELECT count(*) FROM reaper_jobs").await, 0);
}

async fn ctrl_c_stops_a_purge_at_a_batch_boundary_and_resume_finishes_it(backend: Backend) {
    let deployment = Deployment::new(backend, 2_000).await;
    deployment_config_with(
        &deployment,
        "pause = \"150ms\"\n",
        &policy("slow", 6, "0 3 * * *", "batch_size = 10\n"),
    );
    deployment.migrate();
    let test = &deployment.test;
    let tenant = test.ids("events", "tenant_id = 6").await;
    assert_eq!(tenant.len(), 200);
    let before = test.snapshot_events().await;

    let log = deployment.dir.path().join("purge.out");
    let child = deployment
        .reaper()
        .args(["purge", "--policy", "slow"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "a first batch", async || {
        test.int("SELECT count(*) FROM reaper_audit").await >= 2
    })
    .await;
    send_signal("-INT", child.id());
    let output = child.wait_with_output().unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{printed}\n{}",
        stderr(&output)
    );
    assert!(printed.contains("stopped at a batch boundary"), "{printed}");
    let resume = printed
        .lines()
        .find_map(|line| line.split_once("purge --resume ").map(|(_, id)| id))
        .unwrap_or_else(|| panic!("no resume hint in {printed}"))
        .trim()
        .to_owned();
    // Stopped between batches: what is gone is exactly what the committed batches audited.
    let checked = before
        .assert_removed_within(test, &tenant, Removal::Hard, 10)
        .await;
    assert!(
        !checked.removed.is_empty() && checked.removed.len() < 200,
        "{} rows removed",
        checked.removed.len()
    );
    assert_eq!(
        test.strings(&format!(
            "SELECT state FROM reaper_jobs WHERE id = '{resume}'"
        ))
        .await,
        vec!["paused"]
    );

    let output = run(deployment.reaper().args(["purge", "--resume", &resume]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("done: 200 rows in 20 batches"),
        "{}",
        stdout(&output)
    );
    before
        .assert_removed_exactly(test, &tenant, Removal::Hard, 10)
        .await;
}

/// A policy's run removes at most `max_rows_per_run`, the lowest keys first, ends `done` marked
/// as stopped at its cap (`reaper policies`, and `reaper_policy_last_run_capped` = 1 on any
/// daemon's `/metrics`); the next run continues, and one that finishes the rows is not capped.
async fn a_policy_run_stops_at_max_rows_per_run_and_says_it_was_capped(backend: Backend) {
    let deployment = Deployment::new(backend, 1_000).await;
    let port = free_port();
    deployment_config_with(
        &deployment,
        "",
        &policy(
            "capped",
            3,
            "0 0 0 1 1 * 2099",
            "max_rows_per_run = 60\nbatch_size = 25\n",
        ),
    );
    let text = std::fs::read_to_string(&deployment.config)
        .unwrap()
        .replace(
            "[worker]",
            &format!(
                "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{}\"\n\n[worker]",
                crate::daemon::TOKEN
            ),
        );
    std::fs::write(&deployment.config, text).unwrap();
    deployment.migrate();
    let test = &deployment.test;
    let tenant = test.ids("events", "tenant_id = 3").await;
    assert_eq!(tenant.len(), 100);
    let mut keys: Vec<i64> = tenant.iter().map(|key| key.parse().unwrap()).collect();
    keys.sort_unstable();

    let before = test.snapshot_events().await;
    let output = run(deployment.reaper().args(["purge", "--policy", "capped"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let lowest: BTreeSet<String> = keys[..60].iter().map(ToString::to_string).collect();
    before
        .assert_removed_exactly(test, &lowest, Removal::Hard, 25)
        .await;
    let output = run(deployment.reaper().args(["policies", "--json"]));
    let shown: Vec<Value> = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(shown[0]["last_run"]["state"], "done", "{}", shown[0]);
    assert_eq!(shown[0]["last_run"]["rows_deleted"], 60, "{}", shown[0]);
    assert_eq!(
        shown[0]["last_run"]["stopped_at_max_rows"], true,
        "{}",
        shown[0]
    );
    let capped_gauge = async || -> f64 {
        let mut command = deployment.reaper();
        command.env("REAPER_API_TOKEN", crate::daemon::TOKEN);
        let _daemon = Daemon::spawn(command, deployment.dir.path(), port);
        let metrics = crate::daemon::Api::at(port).text("/metrics").await;
        metrics
            .lines()
            .find(|line| line.starts_with("reaper_policy_last_run_capped{policy=\"capped\"}"))
            .unwrap_or_else(|| panic!("no capped gauge:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(capped_gauge().await, 1.0);

    // The next run takes the remaining 40 and is not capped.
    let before = test.snapshot_events().await;
    let output = run(deployment.reaper().args(["purge", "--policy", "capped"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let rest: BTreeSet<String> = keys[60..].iter().map(ToString::to_string).collect();
    before
        .assert_removed_exactly(test, &rest, Removal::Hard, 25)
        .await;
    assert_eq!(capped_gauge().await, 0.0);
}

reaper_testkit::on_every_backend!(
    soft_then_hard_after_a_grace_period,
    a_dry_run_purge_writes_nothing,
    ctrl_c_stops_a_purge_at_a_batch_boundary_and_resume_finishes_it,
    a_policy_run_stops_at_max_rows_per_run_and_says_it_was_capped,
);

/// Scheduling, not the database, decides this (PostgreSQL only): a policy whose run outlasts
/// its windows skips them, saying so, and its runs never overlap.
#[tokio::test]
async fn a_policy_s_runs_never_overlap_and_windows_behind_an_unfinished_run_are_skipped() {
    let (setup, tenant, before) = every_second_on_tenant(1_000, 2, "batch_size = 20\n").await;
    let test = &setup.deployment.test;
    // Five batches of 300 ms: a run spans about two windows.
    let mut daemon = setup.start(&[("FAILPOINTS", "batch::before_commit=sleep(300)")]);
    daemon.wait_for_log(&["Skipped a window"], Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "a run done", async || {
        test.int(
            "SELECT count(*) FROM reaper_jobs WHERE policy = 'every-second' AND state = 'done'",
        )
        .await
            >= 1
    })
    .await;
    daemon.signal("TERM");
    let (status, _) = daemon.wait(Duration::from_secs(15));
    assert!(status.success(), "{}", daemon.log_text());
    // Each run started after the previous one finished.
    let runs = test
        .optional_strings(&format!(
            "SELECT {}, {} FROM reaper_jobs WHERE policy = 'every-second' ORDER BY created_at",
            test.as_text("created_at"),
            test.as_text("finished_at")
        ))
        .await;
    for pair in runs.windows(2) {
        let finished = reaper_testkit::parse_time(pair[0][1].as_deref().unwrap_or_else(|| {
            panic!("a run was submitted while the previous one was unfinished: {runs:?}")
        }));
        let next = reaper_testkit::parse_time(pair[1][0].as_deref().unwrap());
        assert!(next >= finished, "runs overlap: {runs:?}");
    }
    before
        .assert_removed_within(test, &tenant, Removal::Hard, 20)
        .await;
}

#[tokio::test]
async fn policy_errors_stop_start_up_and_name_their_key() {
    let deployment = Deployment::new(Backend::Sqlite, 10).await;
    for (policy, expected) in [
        (
            "\n[[retention]]\nname = \"p\"\ntarget = \"event\"\nage_column = \"created_at\"\nmax_age = \"1d\"\nschedule = \"0 3 * * *\"\n",
            "retention.p.target: unknown target `event`; the catalog has: events",
        ),
        (
            "\n[[retention]]\nname = \"p\"\ntarget = \"events\"\nage_column = \"kind\"\nmax_age = \"1d\"\nschedule = \"0 3 * * *\"\n",
            "retention.p.age_column: `kind` is declared `text`; it must be a timestamp column",
        ),
        (
            "\n[[retention]]\nname = \"p\"\ntarget = \"events\"\nage_column = \"created_at\"\nmax_age = \"1d\"\nschedule = \"at 3\"\n",
            "retention.p.schedule: `at 3` has 2 fields",
        ),
        (
            "\n[[retention]]\nname = \"p\"\ntarget = \"events\"\nage_column = \"created_at\"\nmax_age = \"1d\"\nschedule = \"0 3 * * *\"\nevery = \"1d\"\n",
            "unknown field: found `every`",
        ),
    ] {
        deployment_config_with(&deployment, "", policy);
        for command in [vec!["config", "check"], vec!["run"], vec!["policies"]] {
            let output = run(deployment.reaper().args(&command));
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(expected),
                "{command:?}: {}",
                stderr(&output)
            );
        }
    }
}

#[tokio::test]
async fn the_api_and_metrics_show_each_policy_s_last_run() {
    let (setup, tenant, before) = RedisDeployment::prepared(1_000, None, "tenant_id = 3").await;
    add_to_config(
        &setup.deployment,
        &format!(
            "{}{}",
            policy("every-2s", 3, "*/2 * * * * *", ""),
            policy("never", 4, "0 0 0 1 1 * 2099", "enabled = false\n")
        ),
    );
    let daemon = setup.start(&[]);
    let api = setup.api();
    let mut view = Value::Null;
    wait_until(Duration::from_secs(15), "a finished run", async || {
        let (status, body) = api.get("/v1/policies/every-2s").await;
        assert_eq!(status, 200, "{body}");
        view = body;
        view["last_run"]["state"] == "done"
    })
    .await;
    assert!(view["last_success_at"].is_string(), "{view}");
    before
        .assert_removed_exactly(&setup.deployment.test, &tenant, Removal::Hard, 100)
        .await;
    assert_eq!(
        setup
            .deployment
            .test
            .int(&format!(
                "SELECT {} FROM reaper_jobs WHERE policy = 'every-2s'",
                setup.deployment.test.as_int("SUM(rows_deleted)")
            ))
            .await,
        100
    );
    assert_eq!(view["interval_seconds"], 2.0);
    let (status, body) = api.get("/v1/policies").await;
    assert_eq!(status, 200);
    assert_eq!(body["policies"][1]["name"], "never");
    assert_eq!(body["policies"][1]["enabled"], false);
    assert!(body["policies"][1]["next_run_at"].is_null());
    let (status, _) = api.get("/v1/policies/nope").await;
    assert_eq!(status, 404);
    // Producers cannot take a window's key, in any case.
    let forged = serde_json::json!({
        "target": "events", "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 1}]},
        "requested_by": "t", "reason": "r", "idempotency_key": "POLICY:every-2s:2030-01-01T00:00:00Z"
    });
    let (status, body) = api
        .call(reqwest::Method::POST, "/v1/jobs", Some(&forged))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("reserved for retention policies"),
        "{body}"
    );
    let unauthorized = reqwest::get(format!("http://127.0.0.1:{}/v1/policies", setup.port))
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", setup.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(line_start))
            .unwrap_or_else(|| panic!("no `{line_start}` in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("reaper_policy_last_run_success{policy=\"every-2s\"}"),
        1.0
    );
    assert_eq!(
        value("reaper_policy_interval_seconds{policy=\"every-2s\"}"),
        2.0
    );
    assert!(value("reaper_policy_last_success_timestamp_seconds{policy=\"every-2s\"}") > 1.7e9);
    assert_eq!(
        value("reaper_policy_last_success_timestamp_seconds{policy=\"never\"}"),
        0.0
    );
    assert_eq!(
        value("reaper_policy_next_run_timestamp_seconds{policy=\"never\"}"),
        0.0
    );

    // Keeping up: rows that become due while the daemon runs are counted in the window they
    // became due in, and each later window's run removes exactly what became due in it.
    setup
        .deployment
        .test
        .exec(
            "INSERT INTO events (tenant_id, kind, created_at, payload) SELECT 3, 'view', \
             now() - INTERVAL '1 day' + i * INTERVAL '1 second', 'due-soon' FROM generate_series(2, 8) AS i",
        )
        .await;
    wait_until(Duration::from_secs(30), "the due rows removed", async || {
        let test = &setup.deployment.test;
        test.int("SELECT count(*) FROM events WHERE payload = 'due-soon'")
            .await
            == 0
            && test
                .int("SELECT count(*) FROM reaper_jobs WHERE policy = 'every-2s' AND state <> 'done' AND due_rows > 0")
                .await
                == 0
    })
    .await;
    let later =
        "FROM reaper_jobs WHERE policy = 'every-2s' AND state = 'done' AND due_rows IS NOT NULL";
    let per_window = setup
        .deployment
        .test
        .optional_strings(&format!(
            "SELECT CAST(due_rows AS text), CAST(rows_deleted AS text), idempotency_key {later} ORDER BY idempotency_key"
        ))
        .await;
    let sum = |column: usize| -> i64 {
        per_window
            .iter()
            .map(|row| row[column].as_deref().unwrap().parse::<i64>().unwrap())
            .sum()
    };
    // The fixture's 100 rows were due long before the first window: removed, never "became due".
    assert_eq!((sum(0), sum(1)), (7, 107), "{per_window:?}");
    for row in per_window.iter().skip(1) {
        assert_eq!(
            row[0], row[1],
            "a later window removes what became due in it: {per_window:?}"
        );
    }
    let (status, body) = api.get("/v1/policies/every-2s").await;
    assert_eq!(status, 200, "{body}");
    let keeping_up = &body["keeping_up"];
    assert_eq!(keeping_up["backlog"], 0, "{body}");
    assert_eq!(keeping_up["count_cap"], 10_000_000, "{body}");
    let windows = keeping_up["windows"].as_array().unwrap();
    assert!(!windows.is_empty() && windows.len() <= 3, "{body}");
    for window in windows {
        assert_eq!(window["still_due"], 0, "{body}");
    }
    let (_, listed) = api.get("/v1/policies").await;
    assert!(
        listed["policies"][0].get("keeping_up").is_none(),
        "{listed}"
    );
    drop(daemon);
}
