//! End-to-end tests: the real `reaper` binary, as a user runs it (one fresh database per test;
//! see reaper-testkit). The CLI and `reaper purge` on SQLite, PostgreSQL and MariaDB; the
//! daemon, scheduled retention and the deploy files on PostgreSQL with Redis. Every test that
//! deletes proves the invariants with a snapshot of the table (`reaper_testkit::TableSnapshot`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod actions;
mod archive;
mod chaos;
mod cli;
mod cluster;
mod daemon;
mod dashboard;
mod demo;
mod deploy;
mod erasure_graph;
mod health;
mod holds;
mod hostile_input;
mod live_control;
mod operator;
mod outages;
mod physical_order;
mod receipts;
mod redis_acl;
mod redis_bounds;
mod retention;
mod sentinel;
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reaper_core::sql::Backend;
use reaper_testkit::TestDatabase;

/// Polls `attempt` every 100 ms until it returns `Ok`; after `limit`, fails with `what` and the
/// last `Err` (the state it saw).
pub(crate) async fn poll_until<T>(
    limit: std::time::Duration,
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let begun = std::time::Instant::now();
    loop {
        let last = match attempt().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        assert!(begun.elapsed() < limit, "{what}:\n{last}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `error` of each entry of the intake's rejected list (JSON objects).
pub(crate) fn rejection_errors(rejected: &[String]) -> Vec<String> {
    rejected
        .iter()
        .map(|entry| {
            serde_json::from_str::<serde_json::Value>(entry).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The binary under test, with no inherited `REAPER_*` configuration.
pub(crate) fn reaper(config: Option<&Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reaper"));
    for (key, _) in std::env::vars() {
        if key.starts_with("REAPER_") || key == "FAILPOINTS" {
            command.env_remove(key);
        }
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
}

pub(crate) fn run(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start the reaper binary");
    eprintln!(
        "--- {:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        command,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Sends `signal` (`-INT`, `-TERM`) to process `pid` with kill(1), as an operator would.
pub(crate) fn send_signal(signal: &str, pid: impl std::fmt::Display) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid} failed");
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A test database seeded with the `events` fixture, a temp dir for the queue, and a config
/// file whose catalog declares `events`.
pub(crate) struct Deployment {
    pub(crate) test: TestDatabase,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

impl Deployment {
    pub(crate) async fn new(backend: Backend, rows: u32) -> Self {
        Self::on(TestDatabase::new(backend).await, rows).await
    }

    /// The deployment on `test` (a database on a server or disk the test owns).
    pub(crate) async fn on(test: TestDatabase, rows: u32) -> Self {
        test.seed_events(rows).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("reaper.toml");
        std::fs::write(&config, config_text(&test.url, dir.path(), "")).unwrap();
        Self { test, dir, config }
    }

    /// [`Deployment::new`], migrated (`reaper migrate`).
    pub(crate) async fn migrated(backend: Backend, rows: u32) -> Self {
        let deployment = Self::new(backend, rows).await;
        deployment.migrate();
        deployment
    }

    /// [`Deployment::new`] on SQLite whose `events` target also has `extra_target_keys`
    /// (TOML lines), migrated.
    pub(crate) async fn with_target_keys(rows: u32, extra_target_keys: &str) -> Self {
        let deployment = Self::new(Backend::Sqlite, rows).await;
        deployment.write_config(config_text(
            &deployment.test.url,
            deployment.dir.path(),
            extra_target_keys,
        ));
        deployment.migrate();
        deployment
    }

    /// Rewrites the config file as `edit` changes the default text.
    pub(crate) fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        self.write_config(edit(config_text(&self.test.url, self.dir.path(), "")));
    }

    /// Replaces the config file's text.
    pub(crate) fn write_config(&self, text: String) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub(crate) fn reaper(&self) -> Command {
        reaper(Some(&self.config))
    }

    pub(crate) fn migrate(&self) {
        let output = run(self.reaper().arg("migrate"));
        assert!(output.status.success());
    }

    /// `reaper enqueue --json …`, returning the job id.
    pub(crate) fn enqueue(&self, job: &serde_json::Value) -> String {
        let output = run(self.reaper().args(["enqueue", "--json", &job.to_string()]));
        assert!(
            output.status.success(),
            "enqueue failed: {}",
            stderr(&output)
        );
        stdout(&output).trim().to_owned()
    }

    /// The job ended `done` after one attempt, with no error, having removed exactly
    /// `expected` since `before` (every invariant of [`reaper_testkit::TableSnapshot`]).
    pub(crate) async fn assert_done_once(
        &self,
        id: &str,
        before: &reaper_testkit::TableSnapshot,
        expected: &std::collections::BTreeSet<String>,
        max_batch: i64,
    ) {
        reaper_testkit::engine::assert_clean(
            &self.test,
            id,
            reaper_core::lifecycle::JobState::Done,
            1,
        )
        .await;
        before
            .assert_removed_exactly(
                &self.test,
                expected,
                reaper_testkit::Removal::Hard,
                max_batch,
            )
            .await;
    }

    /// Enqueues the erasure of `tenant` (batches of `batch_size`), runs the daemon until idle
    /// and checks the job removed exactly the tenant's rows, once; the job's id.
    pub(crate) async fn erase_tenant_once(&self, tenant: i64, batch_size: i64) -> String {
        let expected = self
            .test
            .ids("events", &format!("tenant_id = {tenant}"))
            .await;
        let before = self.test.snapshot_events().await;
        let id = self.enqueue(&reaper_testkit::engine::erase_tenant(
            tenant,
            serde_json::json!({ "batch_size": batch_size }),
        ));
        self.run_until_idle(&[]);
        self.assert_done_once(&id, &before, &expected, batch_size)
            .await;
        id
    }

    /// A daemon of this deployment with [`SHORT_LEASE`], its API on a free port: the daemon and
    /// the port.
    pub(crate) fn short_lease_daemon(&self) -> (daemon::Daemon, u16) {
        let port = daemon::free_port();
        let listen = format!("127.0.0.1:{port}");
        let env = [&SHORT_LEASE[..], &[("REAPER_API__LISTEN", listen.as_str())]].concat();
        let daemon = daemon::Daemon::start(&self.config, self.dir.path(), port, &env);
        (daemon, port)
    }

    /// `run --until-idle` with [`SHORT_LEASE`] (after a kill, the killed daemon's lease runs out
    /// soon), then job `id`'s status, which must be `done`.
    pub(crate) fn finish_after_kill(&self, id: &str) -> serde_json::Value {
        self.run_until_idle(&SHORT_LEASE);
        let status = run(self.reaper().args(["status", id]));
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(status["state"], "done", "{status}");
        status
    }

    pub(crate) fn run_until_idle(&self, extra_env: &[(&str, &str)]) {
        let mut command = self.reaper();
        command
            .args(["run", "--until-idle"])
            .envs(extra_env.iter().copied());
        let output = run(&mut command);
        assert!(output.status.success(), "run failed: {}", stderr(&output));
    }
}

/// Worker settings of the kill tests: a 3 s lease, so that the next daemon takes a killed one's
/// job over soon, and 1 s slices.
pub(crate) const SHORT_LEASE: [(&str, &str); 2] = [
    ("REAPER_WORKER__LEASE", "3s"),
    ("REAPER_WORKER__SLICE", "1s"),
];

pub(crate) fn config_text(database_url: &str, dir: &Path, extra_target_keys: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"
max_connections = 4

[queue]
backend = "sqlite"
url = "sqlite://{queue}?mode=rwc"
poll_interval = "50ms"

[worker]
concurrency = 2
lease = "10s"
slice = "5s"
retry_base = "100ms"
retry_max = "500ms"
reconcile_every = "300ms"
shutdown_grace = "5s"
stranded_after = "1s"

[targets.events]
table = "events"
primary_key = "id"
key_type = "int"
soft_delete_column = "deleted_at"
batch_size = 100
max_batch_size = 1000
{extra_target_keys}
[targets.events.columns]
tenant_id = "int"
kind = "text"
created_at = "timestamp"
"#,
        queue = dir.join("queue.db").display()
    )
}
