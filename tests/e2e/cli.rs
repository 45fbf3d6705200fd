//! The CLI against real databases: migrate, enqueue, run, status, config check.

use reaper_core::sql::Backend;
use reaper_testkit::Removal;
use reaper_testkit::engine::erase_tenant;

use crate::{Deployment, config_text, reaper, run, send_signal, stderr, stdout};

async fn enqueue_and_run_deletes_exactly_once(backend: Backend) {
    let deployment = Deployment::migrated(backend, 3_000).await;
    let id = deployment.erase_tenant_once(3, 70).await;

    let status = run(deployment.reaper().args(["status", &id, "--audit"]));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["rows_deleted"], 300);
    assert_eq!(shown["audit"].as_array().unwrap().len(), 5);
}

async fn a_failure_before_commit_is_retried_and_accounted_exactly_once(backend: Backend) {
    let deployment = Deployment::migrated(backend, 3_000).await;
    let expected = deployment.test.ids("events", "tenant_id = 7").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(7, serde_json::json!({"batch_size": 40})));
    // Batches 1 and 2 commit; batch 3 fails after its delete, before COMMIT; the retry resumes.
    deployment.run_until_idle(&[("FAILPOINTS", "batch::before_commit=2*off->1*return->off")]);
    before
        .assert_removed_exactly(&deployment.test, &expected, Removal::Hard, 40)
        .await;
    let attempts = deployment
        .test
        .int(&format!(
            "SELECT attempts FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(attempts, 2, "one failed attempt, one that finished");
    let error = deployment
        .test
        .strings(&format!(
            "SELECT last_error FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await;
    assert!(
        error[0].contains("injected fault at batch::before_commit"),
        "{error:?}"
    );
}

/// The ledger is the truth: a job whose queue message is gone (the queue lost its data, or the
/// process died between the ledger and the queue) is re-enqueued from the ledger and finishes
/// with exactly-once accounting.
async fn a_job_the_queue_lost_is_re_enqueued_from_the_ledger(backend: Backend) {
    let deployment = Deployment::migrated(backend, 1_000).await;
    let expected = deployment.test.ids("events", "tenant_id = 6").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(6, serde_json::json!({"batch_size": 30})));
    for file in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        let path = deployment.dir.path().join(file);
        if path.exists() {
            std::fs::remove_file(path).unwrap();
        }
    }
    // Past `stranded_after` (1 s in the test config), the pending job counts as lost.
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    deployment.run_until_idle(&[]);
    deployment
        .assert_done_once(&id, &before, &expected, 30)
        .await;
}

/// SIGTERM mid-job: the batch in flight commits, no new batch starts, the job goes back to
/// `pending` as a continuation, and the daemon exits 0 within its grace period; a new daemon
/// finishes the job with exactly-once accounting.
async fn sigterm_mid_job_exits_cleanly_and_a_new_daemon_finishes_the_job(backend: Backend) {
    let deployment = Deployment::migrated(backend, 2_000).await;
    let expected = deployment.test.ids("events", "tenant_id = 8").await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&erase_tenant(8, serde_json::json!({"batch_size": 10})));
    // 20 batches of 200 ms each: the signal lands mid-job.
    let mut daemon = deployment
        .reaper()
        .arg("run")
        .env("FAILPOINTS", "batch::before_commit=sleep(200)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let phase = std::time::Instant::now();
    let mut waited = 0;
    while deployment
        .test
        .int(&format!(
            "SELECT batches FROM reaper_jobs WHERE id = '{id}'"
        ))
        .await
        < 2
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
        assert!(waited < 400, "the daemon never committed two batches");
    }
    eprintln!("phase: two batches committed after {:?}", phase.elapsed());
    let signalled = std::time::Instant::now();
    send_signal("-TERM", daemon.id());
    let status = daemon.wait().unwrap();
    let took = signalled.elapsed();
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit status {status}: {log}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?} to stop (grace 5 s, one batch 200 ms): {log}"
    );
    let (state, batches) = (
        deployment
            .test
            .strings(&format!("SELECT state FROM reaper_jobs WHERE id = '{id}'"))
            .await,
        deployment
            .test
            .int(&format!(
                "SELECT batches FROM reaper_jobs WHERE id = '{id}'"
            ))
            .await,
    );
    assert_eq!(state, vec!["pending".to_owned()], "{log}");
    assert!(
        (2..20).contains(&batches),
        "stopped after {batches} batches"
    );
    deployment.run_until_idle(&[]);
    // A clean stop is not a failed attempt.
    deployment
        .assert_done_once(&id, &before, &expected, 10)
        .await;
}

async fn an_invalid_job_is_refused_with_its_field_and_nothing_is_deleted(backend: Backend) {
    let deployment = Deployment::migrated(backend, 500).await;
    let before = deployment.test.snapshot_events().await;
    let cases = [
        (
            serde_json::json!({"target": "events", "requested_by": "e2e", "reason": "x"}),
            "filter: is empty",
        ),
        (
            erase_tenant(1, serde_json::json!({"batch_size": 5000})),
            "batch_size: 5000 is not allowed for target `events`; allowed: 1 to 1000",
        ),
        (
            serde_json::json!({"target": "events", "filter": {"all": [{"column": "payload", "op": "eq", "value": "x"}]}, "requested_by": "e2e", "reason": "x"}),
            "filter.all[0].column: `payload` is not a filterable column",
        ),
        (
            serde_json::json!({"target": "events", "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": "1"}]}, "requested_by": "e2e", "reason": "x"}),
            "filter.all[0].value: column `tenant_id` is int",
        ),
        (
            serde_json::json!({"target": "orders", "all_rows": true, "requested_by": "e2e", "reason": "x"}),
            "target: unknown target `orders`",
        ),
        (
            serde_json::json!({"target": "events", "all_rows": true, "requested_by": "e2e", "reason": "x", "sql": "1=1"}),
            "unknown field `sql`",
        ),
    ];
    for (job, message) in cases {
        let output = run(deployment
            .reaper()
            .args(["enqueue", "--json", &job.to_string()]));
        assert_eq!(output.status.code(), Some(2), "{job}");
        assert!(
            stderr(&output).contains(message),
            "expected `{message}` in: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        deployment
            .test
            .int("SELECT count(*) FROM reaper_jobs")
            .await,
        0
    );
    deployment.run_until_idle(&[]);
    before.assert_untouched(&deployment.test).await;
}

async fn dry_run_and_repeated_keys_through_the_cli(backend: Backend) {
    let deployment = Deployment::migrated(backend, 1_000).await;
    let before = deployment.test.snapshot_events().await;
    let job = erase_tenant(
        2,
        serde_json::json!({"dry_run": true, "idempotency_key": "look-first"}),
    );
    let first = deployment.enqueue(&job);
    let second = deployment.enqueue(&job);
    assert_eq!(
        first, second,
        "a repeated idempotency key yields the same job"
    );
    deployment.run_until_idle(&[]);
    before.assert_untouched(&deployment.test).await;
    assert_eq!(
        deployment
            .test
            .int("SELECT count(*) FROM reaper_audit")
            .await,
        0
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&run(deployment.reaper().args(["status", &first])))).unwrap();
    let report = &status["result"];
    assert_eq!(report["matching_rows"], 100);
    let sql = report["sql"].as_str().unwrap();
    assert!(sql.contains("tenant_id") && sql.contains(" = "), "{sql}");
}

async fn start_up_names_a_target_missing_from_the_database(backend: Backend) {
    let deployment = Deployment::migrated(backend, 10).await;
    deployment.edit_config(|text| text.replace("table = \"events\"", "table = \"event\""));
    for args in [&["run", "--until-idle"][..], &["config", "check"][..]] {
        let output = run(deployment.reaper().args(args));
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output)
                .contains("targets.events.table: table `event` does not exist in the database"),
            "{}",
            stderr(&output)
        );
    }
}

reaper_testkit::on_every_backend!(
    multi_thread;
    enqueue_and_run_deletes_exactly_once,
    a_job_the_queue_lost_is_re_enqueued_from_the_ledger,
    sigterm_mid_job_exits_cleanly_and_a_new_daemon_finishes_the_job,
    a_failure_before_commit_is_retried_and_accounted_exactly_once,
    an_invalid_job_is_refused_with_its_field_and_nothing_is_deleted,
    dry_run_and_repeated_keys_through_the_cli,
    start_up_names_a_target_missing_from_the_database,
);

#[test]
fn config_errors_name_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = config_text("sqlite://x.db", dir.path(), "batchsize = 5\n")
        .replace("concurrency = 2", "concurrency = \"many\"");
    std::fs::write(&path, text).unwrap();
    let output = run(reaper(Some(&path)).args(["config", "check"]));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("targets.events.batchsize: unknown field: found `batchsize`, expected `one of `schema`, `table`"), "{message}");

    std::fs::write(
        &path,
        config_text("sqlite://x.db", dir.path(), "")
            .replace("concurrency = 2", "concurrency = \"many\""),
    )
    .unwrap();
    let output = run(reaper(Some(&path)).args(["config", "check"]));
    assert!(
        stderr(&output)
            .contains("worker.concurrency: invalid type: found string \"many\", expected u32"),
        "{}",
        stderr(&output)
    );

    std::fs::write(
        &path,
        config_text("sqlite://x.db", dir.path(), "")
            .replace("max_batch_size = 1000", "max_batch_size = 50"),
    )
    .unwrap();
    let output = run(reaper(Some(&path)).args(["config", "check"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "targets.events.batch_size: 100 is not allowed; allowed: 1 to max_batch_size (50)"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_check_redacts_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reaper.toml");
    std::fs::write(&path, config_text("sqlite://x.db", dir.path(), "")).unwrap();
    let output = run(reaper(Some(&path))
        .env(
            "REAPER_DATABASE_URL",
            format!("{}/reaper_no_such_database", pg_base()).replace("://", "://reaper:hunter2@"),
        )
        .args(["config", "check"]));
    assert!(
        !stdout(&output).contains("hunter2") && !stderr(&output).contains("hunter2"),
        "the password leaked"
    );
    assert!(!output.status.success(), "the database does not exist");
    assert!(
        stderr(&output).contains("permanent database error"),
        "a missing role is not worth retrying: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("reaper:***@"),
        "the redacted URL should name the user: {}",
        stderr(&output)
    );
}

/// The test PostgreSQL server's base URL (no credentials, no database).
fn pg_base() -> String {
    let admin = reaper_testkit::postgres_admin_url();
    let without_db = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base)
        .to_owned();
    match (without_db.find("://"), without_db.rfind('@')) {
        (Some(scheme), Some(at)) => {
            format!("{}{}", &without_db[..scheme + 3], &without_db[at + 1..])
        }
        _ => without_db,
    }
}
