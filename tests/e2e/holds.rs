//! Legal holds through the real binary on every backend: `reaper hold` (by keys and by filter),
//! `reaper holds`, a foreground `reaper purge` that leaves the held rows and counts them,
//! `reaper release`, then a queued job run by the daemon that deletes them.

use std::collections::BTreeSet;

use reaper_core::sql::Backend;
use reaper_testkit::Removal;

use crate::{Deployment, run, stderr, stdout};

reaper_testkit::on_every_backend!(
    a_purge_leaves_held_rows_and_a_job_after_their_release_deletes_them,
);

/// `reaper hold …`: the placed hold's id.
fn hold(deployment: &Deployment, args: &[&str]) -> String {
    let output = run(deployment
        .reaper()
        .args(["hold", "--target", "events", "--reason", "case 9"])
        .args(args));
    assert!(output.status.success(), "{}", stderr(&output));
    let placed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(placed["reason"], "case 9");
    placed["id"].as_str().unwrap().to_owned()
}

async fn a_purge_leaves_held_rows_and_a_job_after_their_release_deletes_them(backend: Backend) {
    let deployment = Deployment::migrated(backend, 300).await;
    let test = &deployment.test;
    // A key that is not an integer is refused input (exit 2), and nothing is held.
    let output = run(deployment
        .reaper()
        .args(["hold", "--target", "events", "--key", "x", "--reason", "r"]));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("keys"), "{}", stderr(&output));

    let by_keys = hold(&deployment, &["--key", "14", "--key", "15"]);
    let filter = r#"{"all": [{"column": "kind", "op": "eq", "value": "view"}]}"#;
    let by_filter = hold(&deployment, &["--filter", filter]);
    let listed = run(deployment.reaper().arg("holds"));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed.len(), 2);

    // Every row is older than a day; the held ones (keys 14 and 15, every `view`: id % 4 = 0)
    // stay.
    let held: BTreeSet<String> = (1..=300)
        .filter(|id| *id == 14 || *id == 15 || id % 4 == 0)
        .map(|id: i64| id.to_string())
        .collect();
    let all: BTreeSet<String> = (1..=300).map(|id: i64| id.to_string()).collect();
    let before = test.snapshot_events().await;
    let output = run(deployment
        .reaper()
        .args(["purge", "--target", "events", "--older-than", "1d"])
        .args(["--age-column", "created_at"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let expected: BTreeSet<String> = all.difference(&held).cloned().collect();
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 100)
        .await;
    assert_eq!(
        test.int("SELECT max(rows_held) FROM reaper_jobs").await,
        i64::try_from(held.len()).unwrap()
    );

    for id in [&by_keys, &by_filter] {
        let output = run(deployment.reaper().args(["release", id]));
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            stdout(&output).contains("released_at"),
            "{}",
            stdout(&output)
        );
    }
    let output = run(deployment.reaper().args(["release", "no-such-hold"]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let listed = run(deployment.reaper().arg("holds"));
    assert_eq!(stdout(&listed).trim(), "[]");

    let before = test.snapshot_events().await;
    let id = deployment.enqueue(&serde_json::json!({
        "target": "events", "all_rows": true, "requested_by": "e2e", "reason": "after release"
    }));
    deployment.run_until_idle(&[]);
    deployment.assert_done_once(&id, &before, &held, 100).await;
}
