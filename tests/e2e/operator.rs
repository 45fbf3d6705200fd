//! The command line as an operator meets it (issue 11): pipes, logs, flags that must be refused
//! or understood, ids that must be accepted, and exit statuses that must tell the truth.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reaper_core::sql::Backend;

use crate::{Deployment, config_text, poll_until, reaper, run, send_signal, stderr, stdout};

fn erase_tenant(tenant: i64, batch_size: u32) -> serde_json::Value {
    serde_json::json!({
        "target": "events",
        "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": tenant}]},
        "batch_size": batch_size,
        "requested_by": "e2e", "reason": "erase tenant"
    })
}

/// A job of five batches, run to its end (and proven: exactly tenant 3's rows, each once).
async fn finished_job() -> (Deployment, String) {
    let deployment = Deployment::migrated(Backend::Sqlite, 1_000).await;
    let expected = deployment.test.ids("events", "tenant_id = 3").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(3, 20));
    deployment.run_until_idle(&[]);
    deployment
        .assert_done_once(&id, &before, &expected, 20)
        .await;
    (deployment, id)
}

#[tokio::test]
async fn operator_status_audit_pages_and_a_closed_pipe_exits_quietly() {
    let (deployment, id) = finished_job().await;

    // The reader is gone before reaper writes: the write fails with EPIPE.
    let mut child = deployment
        .reaper()
        .args(["status", &id, "--audit"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut errors = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success() && errors.is_empty(), "{status}: {errors}");

    let first = run(deployment
        .reaper()
        .args(["status", &id, "--audit", "--limit", "2"]));
    assert!(first.status.success());
    let shown: serde_json::Value = serde_json::from_str(&stdout(&first)).unwrap();
    let batches: Vec<_> = shown["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["batch_no"].as_i64().unwrap())
        .collect();
    assert_eq!(batches, [1, 2]);
    assert!(
        stderr(&first).contains(&format!(
            "more audit entries follow: reaper status {id} --audit --after 2 --limit 2"
        )),
        "{}",
        stderr(&first)
    );
    let last = run(deployment
        .reaper()
        .args(["status", &id, "--audit", "--after", "4", "--limit", "2"]));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&last)).unwrap();
    assert_eq!(shown["audit"].as_array().unwrap().len(), 1);
    assert_eq!(shown["audit"][0]["batch_no"], 5);
    assert!(!stderr(&last).contains("more audit entries"));
}

#[tokio::test]
async fn operator_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let deployment = Deployment::migrated(Backend::Sqlite, 100).await;
    let expected = deployment.test.ids("events", "tenant_id = 1").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(1, 50));
    let output = run(deployment
        .reaper()
        .env("REAPER_LOG", "info")
        .args(["run", "--until-idle"]));
    assert!(output.status.success());
    deployment
        .assert_done_once(&id, &before, &expected, 50)
        .await;
    let log = stderr(&output);
    assert!(log.contains("Starting workers."), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a redirected log: {log:?}"
    );
}

#[tokio::test]
async fn operator_enqueue_flags_are_refused_or_understood() {
    let deployment = Deployment::migrated(Backend::Sqlite, 100).await;

    // --reason beside --json would be silently ignored: refused.
    let both = run(deployment.reaper().args([
        "enqueue",
        "--json",
        &erase_tenant(1, 50).to_string(),
        "--reason",
        "ignored",
    ]));
    assert_eq!(both.status.code(), Some(2));
    assert!(stderr(&both).contains("--reason"), "{}", stderr(&both));

    // No condition: the CLI's own flag is named.
    let empty = run(deployment
        .reaper()
        .args(["enqueue", "--target", "events", "--reason", "r"]));
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("--all-rows"), "{}", stderr(&empty));
    assert!(!stderr(&empty).contains("all_rows"), "{}", stderr(&empty));

    // One --older-than syntax: a bare age, as purge takes it, on enqueue…
    let bare = run(deployment.reaper().args([
        "enqueue",
        "--target",
        "events",
        "--older-than",
        "30d",
        "--dry-run",
        "--reason",
        "r",
    ]));
    assert!(bare.status.success(), "{}", stderr(&bare));
    let id = stdout(&bare).trim().to_owned();
    let shown = run(deployment.reaper().args(["status", &id]));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(
        shown["request"]["filter"]["all"][0],
        serde_json::json!({"column": "created_at", "op": "older_than", "value": "30d"})
    );
    // …and COLUMN=AGE, as enqueue takes it, on purge.
    let purge = run(deployment.reaper().args([
        "purge",
        "--target",
        "events",
        "--older-than",
        "created_at=30d",
        "--dry-run",
    ]));
    assert!(purge.status.success(), "{}", stderr(&purge));
    assert!(
        stdout(&purge).contains("matching rows:"),
        "{}",
        stdout(&purge)
    );
    let wrong = run(deployment.reaper().args([
        "purge",
        "--target",
        "events",
        "--older-than",
        "30",
        "--dry-run",
    ]));
    assert_eq!(wrong.status.code(), Some(2));
}

#[tokio::test]
async fn operator_migrate_says_what_it_created() {
    let deployment = Deployment::new(Backend::Sqlite, 10).await;
    let first = run(deployment.reaper().arg("migrate"));
    assert!(first.status.success());
    assert!(
        stdout(&first).starts_with("created reaper tables reaper_jobs and reaper_audit"),
        "{}",
        stdout(&first)
    );
    let again = run(deployment.reaper().arg("migrate"));
    assert!(
        stdout(&again).contains("up to date") && !stdout(&again).contains("created"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test]
async fn operator_run_until_idle_fails_naming_a_job_that_ended_dead() {
    let deployment = Deployment::migrated(Backend::Sqlite, 100).await;
    // One attempt: the injected fault makes the job dead at once.
    let output = run(deployment
        .reaper()
        .env("REAPER_WORKER__MAX_ATTEMPTS", "1")
        .args(["enqueue", "--json", &erase_tenant(2, 50).to_string()]));
    let id = stdout(&output).trim().to_owned();
    let output = run(deployment
        .reaper()
        .env("FAILPOINTS", "batch::before_commit=return")
        .args(["run", "--until-idle"]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("1 job(s) ended dead"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("injected fault"), "{text}");
}

/// Whether process `pid` has a handler for SIGTERM (`SigCgt` in `/proc/PID/status`, bit 15).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

#[tokio::test]
async fn operator_run_signalled_at_start_up_exits_zero() {
    let deployment = Deployment::migrated(Backend::Sqlite, 10).await;
    let mut child = deployment
        .reaper()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Early in start-up: as soon as the process catches SIGTERM (the first thing its main
    // does), before the runtime, the config, the catalog check, the ledger check and the queue.
    let pid = child.id();
    let started = Instant::now();
    while !catches_sigterm(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "run never installed its SIGTERM handler"
        );
        std::thread::yield_now();
    }
    send_signal("-TERM", child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn operator_jobs_state_help_lists_paused() {
    let output = run(reaper(None).args(["jobs", "--help"]));
    assert!(stdout(&output).contains("paused"), "{}", stdout(&output));
}

#[tokio::test]
async fn operator_an_unknown_policy_key_is_named_by_the_policy() {
    let deployment = Deployment::new(Backend::Sqlite, 10).await;
    let mut text = std::fs::read_to_string(&deployment.config).unwrap();
    text.push_str(
        "\n[[retention]]\nname = \"old-events\"\ntarget = \"events\"\nage_colum = \"created_at\"\nmax_age = \"90d\"\nschedule = \"0 3 * * *\"\n",
    );
    std::fs::write(&deployment.config, text).unwrap();
    let output = run(deployment.reaper().args(["config", "check"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("retention.old-events.age_colum"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn operator_ids_the_demo_prints_are_accepted_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(reaper(None).arg("demo").current_dir(dir.path()));
    assert!(output.status.success());
    let text = stdout(&output);
    let audit_ids: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("last audit entries"))
        .skip(2)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert!(!audit_ids.is_empty(), "{text}");
    for id in audit_ids {
        let status = run(reaper(None).args(["status", id]).current_dir(dir.path()));
        assert!(status.status.success(), "status {id}: {}", stderr(&status));
    }
}

/// A deployment whose config adds the policy `old-events` (events older than `max_age`).
async fn with_policy(rows: u32, max_age: &str) -> Deployment {
    let deployment = Deployment::new(Backend::Sqlite, rows).await;
    let mut text = std::fs::read_to_string(&deployment.config).unwrap();
    text.push_str(&format!(
        "\n[[retention]]\nname = \"old-events\"\ntarget = \"events\"\nage_column = \"created_at\"\nmax_age = \"{max_age}\"\nschedule = \"0 3 * * *\"\nbatch_size = 100\n"
    ));
    std::fs::write(&deployment.config, text).unwrap();
    deployment
}

#[tokio::test]
async fn operator_durations_are_shown_and_stored_as_written() {
    let deployment = with_policy(300, "90d").await;
    deployment.migrate();
    let check = run(deployment.reaper().args(["config", "check"]));
    assert!(check.status.success(), "{}", stderr(&check));
    let policies = run(deployment.reaper().args(["policies", "--json"]));
    let purge = run(deployment
        .reaper()
        .args(["purge", "--policy", "old-events"]));
    assert!(purge.status.success(), "{}", stderr(&purge));
    let id = stdout(&purge)
        .split("(job ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_owned();
    let status = run(deployment.reaper().args(["status", &id, "--audit"]));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(shown["request"]["filter"]["all"][0]["value"], "90d");
    assert!(
        shown["audit"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("created_at older than 90d"),
        "{shown}"
    );
    for text in [stdout(&check), stdout(&policies), stdout(&status)] {
        assert!(!text.contains("month"), "{text}");
    }
    assert!(
        stdout(&check).contains("max_age = \"90d\""),
        "{}",
        stdout(&check)
    );
    assert!(
        stdout(&check).contains("lease = \"10s\""),
        "{}",
        stdout(&check)
    );
    let policies: serde_json::Value = serde_json::from_str(&stdout(&policies)).unwrap();
    assert_eq!(policies[0]["max_age"], "90d");

    // The same through the API.
    let port = crate::daemon::free_port();
    let mut text = std::fs::read_to_string(&deployment.config).unwrap();
    text = text.replace(
        "[worker]",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{}\"\n\n[worker]",
            crate::daemon::TOKEN
        ),
    );
    std::fs::write(&deployment.config, text).unwrap();
    let _daemon =
        crate::daemon::Daemon::start(&deployment.config, deployment.dir.path(), port, &[]);
    let (status, page) = crate::daemon::Api::at(port).get("/v1/policies").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["policies"][0]["max_age"], "90d", "{page}");
}

/// A deployment whose policy `old-events` purges every seeded row in batches of 10 with a
/// pause after each, so a purge runs long enough to be stopped.
async fn slow_policy(rows: u32, pause: &str) -> Deployment {
    let deployment = Deployment::new(Backend::Sqlite, rows).await;
    let mut text = config_text(
        &deployment.test.url,
        deployment.dir.path(),
        &format!("pause = \"{pause}\"\n"),
    );
    text.push_str(
        "\n[[retention]]\nname = \"old-events\"\ntarget = \"events\"\nage_column = \"created_at\"\nmax_age = \"30d\"\nschedule = \"0 3 * * *\"\nbatch_size = 10\n",
    );
    std::fs::write(&deployment.config, text).unwrap();
    deployment.migrate();
    deployment
}

/// Polls the deployment's audit count until it reaches `batches`.
async fn wait_for_batches(deployment: &Deployment, batches: i64) {
    let started = Instant::now();
    while deployment
        .test
        .int("SELECT count(*) FROM reaper_audit")
        .await
        < batches
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {batches} batches"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `command`, waits for `batches` batches, interrupts it; what it printed on stdout.
async fn interrupt_after(
    deployment: &Deployment,
    command: &mut std::process::Command,
    batches: i64,
) -> String {
    let out = deployment
        .dir
        .path()
        .join(format!("out-{}", uuid::Uuid::new_v4().simple()));
    let child = command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_batches(deployment, batches).await;
    send_signal("-INT", child.id());
    let output = child.wait_with_output().unwrap();
    let printed = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{printed}{}",
        stderr(&output)
    );
    printed
}

/// `reaper purge --policy old-events`, interrupted (SIGINT) after `batches` batches: what it printed.
async fn interrupt_policy_purge(deployment: &Deployment, batches: i64) -> String {
    let mut command = deployment.reaper();
    command.args(["purge", "--policy", "old-events"]);
    interrupt_after(deployment, &mut command, batches).await
}

/// The command an interrupted purge printed to resume it.
fn resume_command(printed: &str) -> &str {
    printed
        .lines()
        .find_map(|line| line.strip_prefix("resume with: "))
        .unwrap_or_else(|| panic!("no resume command in {printed}"))
}

#[tokio::test]
async fn operator_purge_prints_a_resume_command_that_works_anywhere() {
    let deployment = slow_policy(300, "100ms").await;
    // The policy matches every seeded row.
    let expected = deployment.test.ids("events", "1 = 1").await;
    let before = deployment.test.snapshot_events().await;
    // The configuration from REAPER_CONFIG, not --config.
    let mut command = reaper(None);
    command
        .env("REAPER_CONFIG", &deployment.config)
        .args(["purge", "--policy", "old-events"]);
    let printed = interrupt_after(&deployment, &mut command, 2).await;
    let resume = resume_command(&printed);
    assert!(
        resume.starts_with(&format!(
            "reaper --config {} purge --resume ",
            deployment.config.display()
        )),
        "{resume}"
    );
    // Pasted into a shell elsewhere, with nothing in the environment.
    let elsewhere = tempfile::tempdir().unwrap();
    let pasted = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(resume.replacen("reaper", env!("CARGO_BIN_EXE_reaper"), 1))
        .env_remove("REAPER_CONFIG")
        .current_dir(elsewhere.path()));
    assert!(pasted.status.success(), "{}", stderr(&pasted));
    assert!(
        stdout(&pasted).contains("done: 300 rows"),
        "{}",
        stdout(&pasted)
    );
    // Stopped and resumed: every row removed and audited once, in batches of at most 10.
    before
        .assert_removed_exactly(
            &deployment.test,
            &expected,
            reaper_testkit::Removal::Hard,
            10,
        )
        .await;
}

#[test]
fn operator_the_embedded_defaults_are_named_when_they_fail() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["config", "check"][..],
        &["status", "0190d1f0-0000-7000-8000-000000000000"],
    ] {
        let output = run(reaper(None).args(args).current_dir(empty.path()));
        assert!(!output.status.success());
        let text = stderr(&output);
        assert!(
            text.contains("the embedded demo defaults were used")
                && text.contains("run `reaper demo`")
                && text.contains("--config FILE"),
            "{args:?}: {text}"
        );
    }
}

#[tokio::test]
async fn operator_config_check_prints_the_config_alone_on_stdout() {
    let deployment = Deployment::migrated(Backend::Sqlite, 10).await;
    let check = run(deployment.reaper().args(["config", "check"]));
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("configuration is valid"),
        "{}",
        stderr(&check)
    );
    // Standard output is a configuration file: read back, it is the same configuration.
    let again = deployment.dir.path().join("printed.toml");
    std::fs::write(&again, stdout(&check)).unwrap();
    let json = run(deployment.reaper().args(["config", "check", "--json"]));
    let reread = run(reaper(Some(&again)).args(["config", "check", "--json"]));
    assert!(reread.status.success(), "{}", stderr(&reread));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(shown["targets"]["events"]["table"], "events");
    assert_eq!(stdout(&json), stdout(&reread));
}

#[tokio::test]
async fn operator_config_check_reports_missing_tables_and_an_unreachable_queue() {
    let deployment = Deployment::new(Backend::Sqlite, 10).await;
    // Not migrated; the queue on a port nothing listens on.
    let output = run(deployment
        .reaper()
        .env("REAPER_QUEUE__BACKEND", "redis")
        .env("REAPER_QUEUE_URL", "redis://127.0.0.1:9/0")
        .args(["config", "check"]));
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("2 problems"), "{text}");
    assert!(text.contains("run `reaper migrate`"), "{text}");
    assert!(text.contains("queue.url: cannot reach Redis"), "{text}");
    assert!(
        stdout(&output).contains("backend = \"redis\""),
        "{}",
        stdout(&output)
    );
}

async fn config_check_refuses_a_declared_type_that_does_not_fit(backend: Backend) {
    let deployment = Deployment::migrated(backend, 10).await;
    deployment.edit_config(|text| text.replace("tenant_id = \"int\"", "tenant_id = \"text\""));
    for args in [&["config", "check"][..], &["run", "--until-idle"]] {
        let output = run(deployment.reaper().args(args));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains("targets.events.columns.tenant_id: declared `text`, but column `tenant_id` of table `events` is"),
            "{}",
            stderr(&output)
        );
    }
}

reaper_testkit::on_every_backend!(config_check_refuses_a_declared_type_that_does_not_fit);

#[test]
fn operator_config_check_before_the_demo_says_what_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    let output = run(reaper(None)
        .args(["config", "check"])
        .current_dir(empty.path()));
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("database.url: the SQLite file `.reaper/demo/demo.db` does not exist")
            && text.contains("run `reaper demo`"),
        "{text}"
    );
    assert!(!text.contains("unable to open database file"), "{text}");
    assert!(
        stdout(&output).contains("[database]"),
        "{}",
        stdout(&output)
    );
    // A check writes nothing.
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn operator_an_ad_hoc_purge_over_its_cap_gets_advice_that_works() {
    let deployment = Deployment::with_target_keys(300, "max_rows = 100\n").await;
    // Every seeded row is older than 30 days.
    let matching = deployment.test.ids("events", "1 = 1").await;
    let before = deployment.test.snapshot_events().await;
    let purge = |extra: &[&str]| {
        let mut command = deployment.reaper();
        command
            .args(["purge", "--target", "events", "--older-than", "30d"])
            .args(extra);
        run(&mut command)
    };
    // At the target's own cap already: raising --max-rows cannot help, so it is not advised.
    let refused = purge(&[]);
    assert_eq!(refused.status.code(), Some(2));
    let text = stderr(&refused);
    assert!(
        text.contains("more than max_rows (100) rows match"),
        "{text}"
    );
    assert!(text.contains("--stop-at-max-rows"), "{text}");
    assert!(!text.contains("raise max_rows"), "{text}");
    // Below it, raising is advice that works.
    let lower = purge(&["--max-rows", "50"]);
    assert!(
        stderr(&lower).contains(
            "raise max_rows (--max-rows for `reaper purge`; target `events` allows up to 100)"
        ),
        "{}",
        stderr(&lower)
    );
    let capped = purge(&["--stop-at-max-rows"]);
    assert!(capped.status.success(), "{}", stderr(&capped));
    assert!(
        stdout(&capped).contains("done: 100 rows")
            && stdout(&capped).contains("stopped at max_rows"),
        "{}",
        stdout(&capped)
    );
    // The refused purges removed nothing; the capped one exactly 100 of the matching rows,
    // each audited once.
    let checked = before
        .assert_removed_within(
            &deployment.test,
            &matching,
            reaper_testkit::Removal::Hard,
            100,
        )
        .await;
    assert_eq!(checked.removed.len(), 100);
}

#[tokio::test]
async fn operator_a_new_purge_warns_of_a_paused_one_on_its_target() {
    let deployment = slow_policy(300, "100ms").await;
    let printed = interrupt_policy_purge(&deployment, 2).await;
    let resume = resume_command(&printed);
    let id = resume.rsplit(' ').next().unwrap();
    let again = run(deployment.reaper().args([
        "purge",
        "--target",
        "events",
        "--older-than",
        "30d",
        "--dry-run",
    ]));
    assert!(again.status.success());
    assert!(
        stderr(&again).contains(&format!(
            "warning: purge job {id} of target `events` is paused"
        )) && stderr(&again).contains(&format!("resume it with: {resume}")),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn operator_an_explicit_batch_size_is_a_ceiling_for_adaptive_sizing() {
    // Batches of a few rows take far less than a second: adaptive sizing would grow them.
    let deployment = Deployment::with_target_keys(
        2_000,
        "target_batch_duration = \"1s\"\nmin_batch_size = 10\n",
    )
    .await;
    let expected = deployment.test.ids("events", "tenant_id = 4").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(4, 20));
    deployment.run_until_idle(&[]);
    // Every batch at most 20 rows (the invariant checker's size bound), and all of them.
    before
        .assert_removed_exactly(
            &deployment.test,
            &expected,
            reaper_testkit::Removal::Hard,
            20,
        )
        .await;
    reaper_testkit::engine::assert_clean(
        &deployment.test,
        &id,
        reaper_core::lifecycle::JobState::Done,
        1,
    )
    .await;
    assert_eq!(
        deployment
            .test
            .int(&format!(
                "SELECT count(*) FROM reaper_audit WHERE job_id = '{id}'"
            ))
            .await,
        10
    );
}

/// tmux, for the tests that need a real terminal; missing, it fails loudly with how to install it.
fn tmux(socket: &str) -> std::process::Command {
    let found = std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "tmux is needed for the terminal tests: apt-get install -y tmux (.ci/run installs it)"
    );
    let mut command = std::process::Command::new("tmux");
    command.args(["-L", socket, "-f", "/dev/null"]);
    command
}

/// Kills the private tmux server on drop.
/// What the `purge` session's pane shows now.
fn capture_pane(socket: &str) -> String {
    let capture = tmux(socket)
        .args(["capture-pane", "-p", "-t", "purge"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&capture.stdout).into_owned()
}

struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0).arg("kill-server").status();
    }
}

#[tokio::test]
async fn operator_the_purge_bar_shows_this_runs_rate_in_a_real_terminal() {
    let deployment = slow_policy(300, "100ms").await;
    let printed = interrupt_policy_purge(&deployment, 8).await;
    let resume = resume_command(&printed).replacen("reaper", env!("CARGO_BIN_EXE_reaper"), 1);
    let already = deployment
        .test
        .int("SELECT rows_deleted FROM reaper_jobs")
        .await;

    // The resumed purge in a terminal of its own; the pane stays after it exits.
    let socket = format!("reaper-e2e-{}", uuid::Uuid::new_v4().simple());
    let _server = TmuxServer(socket.clone());
    let started = tmux(&socket)
        .args(["new-session", "-d", "-s", "purge", "-x", "160", "-y", "20"])
        .arg(format!(
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color {resume}; sleep 60"
        ))
        .status()
        .unwrap();
    assert!(started.success());
    // Sampled once this run has removed a few batches, so its rate has settled.
    let screen = poll_until(
        Duration::from_secs(20),
        "no progress bar after 20 s",
        async || {
            let screen = capture_pane(&socket);
            let removed = deployment
                .test
                .int("SELECT rows_deleted FROM reaper_jobs")
                .await;
            if removed >= already + 60 && screen.contains("/300 rows") {
                Ok(screen)
            } else {
                Err(screen)
            }
        },
    )
    .await;
    let bars: Vec<&str> = screen
        .lines()
        .filter(|line| line.contains("/300 rows"))
        .collect();
    assert_eq!(bars.len(), 1, "one live bar, no stale frame:\n{screen}");
    let rate = bars[0]
        .split("rows/s")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .unwrap_or_else(|| panic!("no rate in {}", bars[0]));
    let rate: u64 = rate
        .parse()
        .unwrap_or_else(|_| panic!("the rate `{rate}` is not a whole number: {}", bars[0]));
    // Batches of 10 rows, 100 ms apart: this run removes at most 100 rows a second. Counting
    // the rows removed before the resume would show far more.
    assert!((1..=110).contains(&rate), "rate {rate}: {}", bars[0]);
    assert!(bars[0].contains("ETA 0:00:"), "{}", bars[0]);

    // SIGINT (as `kill -INT` sends it; a Ctrl-C key is also echoed by the terminal itself): the
    // stop is said above the bar, and no frame of the bar stays.
    let pane = tmux(&socket)
        .args(["list-panes", "-t", "purge", "-F", "#{pane_pid}"])
        .output()
        .unwrap();
    let shell = String::from_utf8_lossy(&pane.stdout).trim().to_owned();
    let child = std::process::Command::new("pgrep")
        .args(["-P", &shell])
        .output()
        .unwrap();
    let purge = String::from_utf8_lossy(&child.stdout).trim().to_owned();
    assert!(
        !purge.is_empty(),
        "no purge process under the pane's shell {shell}"
    );
    send_signal("-INT", &purge);
    let screen = poll_until(
        Duration::from_secs(20),
        "the purge did not stop",
        async || {
            let screen = capture_pane(&socket);
            if screen.contains("resume with:") {
                Ok(screen)
            } else {
                Err(screen)
            }
        },
    )
    .await;
    assert!(
        screen.contains("stopping at the end of the batch in flight"),
        "{screen}"
    );
    assert!(
        !screen.contains("/300 rows"),
        "a frame of the bar stayed on the screen:\n{screen}"
    );
}
