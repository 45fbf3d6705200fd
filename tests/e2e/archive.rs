//! Archive mode and restore (issue 14) through the real binary: archive jobs run by the daemon,
//! `reaper restore` of a hard job refused (exit status 2, nothing changed), a restore killed
//! with SIGKILL in the middle and finished by the next daemon — every row back exactly once,
//! every column as it was — and the daemon's built-in purge of archive rows older than
//! `[archive] keep`.

use std::time::Duration;

use reaper_core::sql::Backend;

use crate::daemon::{Daemon, free_port};
use crate::{Deployment, config_text, run, stderr, stdout};

reaper_testkit::on_every_backend!(
    kill_9_mid_restore_puts_every_row_back_once_and_old_archives_are_purged
);

/// Every `events` row outside tenants 5 and 7, every column as text, in key order.
async fn checksum(deployment: &Deployment) -> Vec<Vec<Option<String>>> {
    let test = &deployment.test;
    test.optional_strings(&format!(
        "SELECT {}, {}, kind, {}, payload, {} FROM events WHERE tenant_id NOT IN (5, 7) ORDER BY id",
        test.as_text("id"),
        test.as_text("tenant_id"),
        test.as_text("created_at"),
        test.as_text("deleted_at"),
    ))
    .await
}

async fn count(deployment: &Deployment, sql: &str) -> i64 {
    deployment.test.int(&format!("SELECT count(*) {sql}")).await
}

/// The audit rows of job `id` so far.
async fn audit_rows(deployment: &Deployment, id: &str) -> i64 {
    count(
        deployment,
        &format!("FROM reaper_audit WHERE job_id = '{id}'"),
    )
    .await
}

async fn kill_9_mid_restore_puts_every_row_back_once_and_old_archives_are_purged(backend: Backend) {
    let deployment = Deployment::new(backend, 1000).await;
    deployment.write_config(config_text(
        &deployment.test.url,
        deployment.dir.path(),
        "pause = \"100ms\"",
    ));
    deployment.migrate();
    let before = checksum(&deployment).await;
    let archive = |tenant: i64, mode: &str| {
        deployment.enqueue(&reaper_testkit::engine::erase_tenant(
            tenant,
            serde_json::json!({"mode": mode, "batch_size": 50}),
        ))
    };
    let archived = archive(3, "archive");
    let expiring = archive(5, "archive");
    let hard = archive(7, "hard");
    deployment.run_until_idle(&[]);
    assert_eq!(
        count(&deployment, "FROM events WHERE tenant_id IN (3, 5, 7)").await,
        0
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 200);

    // A hard job: refused, exit status 2, nothing submitted.
    let jobs = count(&deployment, "FROM reaper_jobs").await;
    let refused = run(deployment.reaper().args(["restore", &hard]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("ran in hard mode"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(count(&deployment, "FROM reaper_jobs").await, jobs);

    // Tenant 5's copies are old: the next daemon purges them at start-up.
    let long_ago = match backend {
        Backend::Postgres => "TIMESTAMPTZ '2020-01-01 00:00:00+00'",
        Backend::MySql => "TIMESTAMP '2020-01-01 00:00:00'",
        Backend::Sqlite => "'2020-01-01 00:00:00'",
    };
    deployment
        .test
        .exec(&format!(
            "UPDATE reaper_archive SET archived_at = {long_ago} WHERE job_id = '{expiring}'"
        ))
        .await;

    let restored = run(deployment.reaper().args([
        "restore",
        &archived,
        "--batch-size",
        "5",
        "--reason",
        "undo the tenant 3 erasure",
    ]));
    assert!(restored.status.success(), "{}", stderr(&restored));
    let restore = stdout(&restored).trim().to_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [
        ("REAPER_API__LISTEN", listen.as_str()),
        ("REAPER_WORKER__LEASE", "3s"),
        ("REAPER_WORKER__SLICE", "1s"),
    ];
    let mut daemon = Daemon::start(&deployment.config, deployment.dir.path(), port, &env);
    crate::poll_until(
        Duration::from_secs(60),
        "three restore batches",
        async || match audit_rows(&deployment, &restore).await {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} batches")),
        },
    )
    .await;
    daemon.signal("KILL");
    daemon.wait(Duration::from_secs(5));
    let at_kill = audit_rows(&deployment, &restore).await;
    assert!(
        at_kill < 20,
        "the restore finished before the kill ({at_kill} batches)"
    );
    assert_eq!(
        count(
            &deployment,
            &format!("FROM reaper_archive WHERE job_id = '{expiring}'")
        )
        .await,
        0,
        "the daemon purged the expired copies at start-up"
    );

    deployment.run_until_idle(&[
        ("REAPER_WORKER__LEASE", "3s"),
        ("REAPER_WORKER__SLICE", "1s"),
    ]);
    let status = run(deployment.reaper().args(["status", &restore]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["result"]["restore"]["restored"], 100, "{status}");
    assert_eq!(status["result"]["restore"]["conflicts"], 0, "{status}");
    assert_eq!(
        checksum(&deployment).await,
        before,
        "every row back, as it was"
    );
    assert_eq!(count(&deployment, "FROM reaper_archive").await, 0);
    // Each row restored by exactly one committed batch, each batch audited once.
    let test = &deployment.test;
    let rows = test
        .int(&format!(
            "SELECT {} FROM reaper_audit WHERE job_id = '{restore}'",
            test.as_int("sum(row_count)")
        ))
        .await;
    assert_eq!(rows, 100);
    assert_eq!(audit_rows(&deployment, &restore).await, 20);
    let modes = test
        .strings(&format!(
            "SELECT DISTINCT mode FROM reaper_audit WHERE job_id = '{restore}'"
        ))
        .await;
    assert_eq!(modes, ["restore"]);
}
