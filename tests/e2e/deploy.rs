//! The deployment files under `deploy/`, held to the real daemon:
//! - every metric name the Grafana dashboard and the Prometheus rules use is one `/metrics`
//!   exports (the retention-policy metrics with a `[[retention]]` policy configured);
//! - the compose stack's configuration and init SQL run a job end to end on PostgreSQL and Redis,
//!   and the daemon, stopped mid-job by SIGTERM, exits within the grace the deploy files give it;
//! - the Kubernetes ConfigMap's configuration passes `reaper config check` and `migrate`.
//!
//! Containers are not started (no engine on the test machines): the pieces they run are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reaper_core::sql::Backend;
use reaper_testkit::{Removal, TestDatabase, TestQueue};
use serde_json::json;

use crate::daemon::{Api, Daemon, TOKEN, free_port};
use crate::{Deployment, config_text, reaper, run, stderr, stdout};

/// The retention policy the metrics test configures (the `[[retention]]` syntax).
const RETENTION_POLICY: &str = r#"
[[retention]]
name = "old-events"
target = "events"
age_column = "created_at"
max_age = "30d"
schedule = "0 0 * * * *"
"#;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn repository_file(path: &str) -> String {
    let path = repository().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The files under `deploy/DIR` whose names end in `extension`, with their text.
fn deploy_files(dir: &str, extension: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repository().join("deploy").join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(extension))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                format!(
                    "deploy/{dir}/{}",
                    path.file_name().unwrap().to_string_lossy()
                ),
                text,
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no deploy/{dir}/*{extension}");
    files
}

/// Every `reaper_[a-z_]+` word in `text` (not preceded by an identifier character).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("reaper_") {
        let preceded = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let name = name.trim_end_matches('_');
        if name.len() > "reaper_".len() {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The metric names a Prometheus text exposition defines (its `# TYPE` lines). A histogram's
/// series are its name with `_bucket`, `_sum` and `_count`; those suffixes count as the
/// histogram's name only for a name exported as a histogram (or summary).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// Every metric name the dashboards and the rule files use, with the file using it.
fn names_used_by_deploy_files() -> Vec<(String, String)> {
    let mut used = Vec::new();
    for (file, text) in deploy_files("grafana", ".json")
        .into_iter()
        .chain(deploy_files("prometheus", ".yaml"))
    {
        let names = metric_names_in(&text);
        assert!(
            names.len() >= 4,
            "{file}: only {names:?}; is the name scan broken?"
        );
        used.extend(names.into_iter().map(|name| (name, file.clone())));
    }
    used
}

/// Starts a daemon on PostgreSQL (the `events` fixture) with the API on a free loopback port
/// and `extra_config` appended to its configuration, runs one job so that every series has
/// been recorded, and returns `/metrics`.
async fn scrape_metrics(extra_config: &str) -> String {
    let deployment = Deployment::new(Backend::Postgres, 500).await;
    let port = free_port();
    let text = config_text(&deployment.test.url, deployment.dir.path(), "").replace(
        "[worker]",
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\n[worker]"),
    ) + extra_config;
    std::fs::write(&deployment.config, text).unwrap();
    deployment.migrate();
    let matching = deployment.test.ids("events", "tenant_id = 1").await;
    let before = deployment.test.snapshot_events().await;
    let mut command = deployment.reaper();
    command.env("REAPER_API_TOKEN", TOKEN);
    let _daemon = Daemon::spawn(command, deployment.dir.path(), port);
    let api = Api::at(port);
    let id = api
        .submit(&json!({
            "target": "events",
            "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 1}]},
            "requested_by": "deploy-test",
            "reason": "metrics",
        }))
        .await;
    api.wait_done(&id, 1, Duration::from_secs(30)).await;
    before
        .assert_removed_exactly(&deployment.test, &matching, Removal::Hard, 100)
        .await;
    api.text("/metrics").await
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_metrics_the_daemon_exports() {
    let metrics = scrape_metrics("").await;
    let exported = exported_names(&metrics);
    // The retention-policy metrics have series only for configured policies: the next test.
    for name in reaper_engine::instruments::always() {
        assert!(exported.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    let missing: Vec<String> = names_used_by_deploy_files()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("reaper_policy_") && !exported.contains(name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy files use metrics the daemon does not export: {missing:?}\nexported: {exported:?}"
    );
}

/// Fails until the daemon accepts `[[retention]]` and exports the `reaper_policy_*` gauges.
#[tokio::test]
async fn retention_policy_metrics_used_by_dashboards_and_alerts_are_exported() {
    let metrics = scrape_metrics(RETENTION_POLICY).await;
    let exported = exported_names(&metrics);
    let used = names_used_by_deploy_files();
    let policy_names: BTreeSet<&str> = used
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("reaper_policy_"))
        .collect();
    assert!(
        policy_names.len() >= 7,
        "the deploy files should use every policy gauge: {policy_names:?}"
    );
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy files use metrics the daemon does not export: {missing:?}\nexported: {exported:?}"
    );
    // Dashboards and alerts aggregate `by (policy)`: every policy gauge carries the label.
    for name in policy_names {
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with(name) && line.contains("policy=\"old-events\"")),
            "{name} has no series with policy=\"old-events\":\n{metrics}"
        );
    }
}

/// The environment the compose stack gives both reaper containers, pointed at the test's
/// database and Redis queue, with the API on loopback instead of 0.0.0.0.
fn compose_command(test: &TestDatabase, queue: &TestQueue, port: u16) -> Command {
    let mut command = reaper(None);
    command
        .env(
            "REAPER_CONFIG",
            repository().join("deploy/compose/reaper.toml"),
        )
        .env("REAPER_DATABASE_URL", &test.url)
        .env("REAPER_QUEUE_URL", &queue.url)
        .env("REAPER_API_TOKEN", TOKEN)
        .env("REAPER_QUEUE__NAME", &queue.name)
        .env("REAPER_API__LISTEN", format!("127.0.0.1:{port}"))
        .args(["--log-format", "json"]);
    command
}

/// A fresh PostgreSQL database holding what deploy/compose/initdb creates.
async fn database_initialized_like_compose() -> TestDatabase {
    let test = TestDatabase::postgres().await;
    for (file, sql) in deploy_files("compose/initdb", ".sql") {
        eprintln!("running {file}");
        test.exec(&sql).await;
    }
    test
}

/// `worker.shutdown_grace` of deploy/compose/reaper.toml, in whole seconds.
fn compose_shutdown_grace() -> Duration {
    let text = repository_file("deploy/compose/reaper.toml");
    let value = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("shutdown_grace = \""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|value| value.strip_suffix('s'))
        .expect("deploy/compose/reaper.toml has no shutdown_grace in seconds");
    Duration::from_secs(value.parse().unwrap())
}

#[tokio::test]
async fn the_compose_configuration_runs_a_job_and_stops_mid_job_within_its_grace() {
    let test = database_initialized_like_compose().await;
    assert_eq!(test.int("SELECT count(*) FROM sessions").await, 100_000);
    let queue = TestQueue::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // The `migrate` service, then what start-up checks.
    let output = run(compose_command(&test, &queue, port).arg("migrate"));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(compose_command(&test, &queue, port).args(["config", "check"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("backend = \"redis\""));

    // The `reaper` service (its batches slowed, so that a stop lands mid-job): erase one
    // user's sessions through the API.
    let mut command = compose_command(&test, &queue, port);
    command.env("FAILPOINTS", "batch::before_commit=sleep(200)");
    let mut daemon = Daemon::spawn(command, dir.path(), port);
    let api = Api::at(port);
    let expected = test.ids("sessions", "user_id = 42").await;
    assert_eq!(expected.len(), 100);
    let before = test.snapshot("sessions", "sessions", "id", None).await;
    let id = api
        .submit(&json!({
            "target": "sessions",
            "filter": {"all": [{"column": "user_id", "op": "eq", "value": 42}]},
            "requested_by": "deploy-test",
            "reason": "erasure through the compose configuration",
        }))
        .await;
    let job = api.wait_done(&id, 1, Duration::from_secs(30)).await;
    assert_eq!(job["rows_deleted"], 100, "{job}");
    before
        .assert_removed_exactly(&test, &expected, Removal::Hard, 1000)
        .await;
    let metrics = api.text("/metrics").await;
    assert!(
        metrics.contains("reaper_rows_deleted_total{target=\"sessions\",mode=\"hard\"} 100"),
        "{metrics}"
    );

    // A long job in flight: SIGTERM stops it within the configured grace, which stays under
    // the 45 s compose's stop_grace_period and Kubernetes' terminationGracePeriodSeconds give.
    let grace = compose_shutdown_grace();
    assert!(grace < Duration::from_secs(45), "{grace:?}");
    let matching = test.ids("sessions", "user_id = 43").await;
    let before = test.snapshot("sessions", "sessions", "id", None).await;
    let id = api
        .submit(&json!({
            "target": "sessions",
            "filter": {"all": [{"column": "user_id", "op": "eq", "value": 43}]},
            "batch_size": 5,
            "requested_by": "deploy-test",
            "reason": "a job to stop",
        }))
        .await;
    api.wait_mid_run(&id, 2).await;
    daemon.signal("TERM");
    let (status, took) = daemon.wait(grace + Duration::from_secs(5));
    assert!(status.success(), "exit status {status} after SIGTERM");
    assert!(
        took < grace,
        "stopped {took:?} after SIGTERM, grace {grace:?}"
    );
    eprintln!("stopped {took:?} after SIGTERM, mid-job");
    let checked = before
        .assert_removed_within(&test, &matching, Removal::Hard, 5)
        .await;
    assert!(
        checked.removed.len() < matching.len(),
        "the job finished before the signal"
    );
    reaper_testkit::engine::assert_clean(&test, &id, reaper_core::lifecycle::JobState::Pending, 0)
        .await;
}

/// The `reaper.toml` block of deploy/kubernetes/configmap.yaml.
fn config_map_toml() -> String {
    let text = repository_file("deploy/kubernetes/configmap.yaml");
    let mut lines = text
        .lines()
        .skip_while(|line| line.trim() != "reaper.toml: |");
    assert!(
        lines.next().is_some(),
        "configmap.yaml has no `reaper.toml: |` key"
    );
    let block: Vec<&str> = lines
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .collect();
    assert!(block.len() > 10, "reaper.toml block too short: {block:?}");
    block
        .iter()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_kubernetes_configuration_passes_config_check_and_migrate() {
    let test = database_initialized_like_compose().await;
    let queue = TestQueue::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reaper.toml");
    std::fs::write(&config, config_map_toml()).unwrap();
    // What deployment.yaml and migrate-job.yaml set: the config path and the Secret's keys.
    let command = || {
        let mut command = reaper(None);
        command
            .env("REAPER_CONFIG", &config)
            .env("REAPER_DATABASE_URL", &test.url)
            .env("REAPER_QUEUE_URL", &queue.url)
            .env("REAPER_API_TOKEN", TOKEN)
            .args(["--log-format", "json"]);
        command
    };
    let output = run(command()
        .env("REAPER_DATABASE__LOCK_TIMEOUT", "5s")
        .env("REAPER_DATABASE__STATEMENT_TIMEOUT", "10m")
        .arg("migrate"));
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run(command().args(["config", "check"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("configuration is valid"),
        "{}",
        stderr(&output)
    );
}
