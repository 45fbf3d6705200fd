//! Legal holds through the real binary on every backend: `reaper hold` (by keys and by filter),
//! `reaper holds`, a foreground `reaper purge` that leaves the held rows and counts them,
//! `reaper release`, then a queued job run by the daemon that deletes them; the same across
//! relations, with the receipt of the job that left held rows.

use std::collections::BTreeSet;

use reaper_core::sql::Backend;
use reaper_testkit::Removal;

use crate::{Deployment, run, stderr, stdout};

reaper_testkit::on_every_backend!(
    a_purge_leaves_held_rows_and_a_job_after_their_release_deletes_them,
    an_erasure_across_relations_keeps_held_rows_with_their_subtree_and_ancestors,
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

/// users ← sessions, users ← orders ← order_items (one row per batch): a hold on user 3 (its
/// session stays) and one by filter on item 231 (its order 23 and user 2 stay); the erasure of
/// users 1–3 through the daemon ends `done` with the kept rows per table in `reaper status`,
/// its receipt lists them with the holds' reasons and finds nothing left to remove; released,
/// a new job removes the rest.
async fn an_erasure_across_relations_keeps_held_rows_with_their_subtree_and_ancestors(
    backend: Backend,
) {
    let deployment = Deployment::new(backend, 10).await;
    crate::erasure_graph::small_shop(&deployment, "[targets.order_items.columns]\nid = \"int\"\n")
        .await;
    let place = |args: &[&str]| {
        let output = run(deployment.reaper().arg("hold").args(args));
        assert!(output.status.success(), "{}", stderr(&output));
        let placed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        placed["id"].as_str().unwrap().to_owned()
    };
    let by_key = place(&["--target", "users", "--key", "3", "--reason", "case 3"]);
    let filter = r#"{"all": [{"column": "id", "op": "eq", "value": 231}]}"#;
    let by_filter = place(&[
        "--target",
        "order_items",
        "--filter",
        filter,
        "--reason",
        "case 231",
    ]);
    let erase = |key: &str| {
        deployment.enqueue(&serde_json::json!({
            "target": "users", "filter": {"all": [{"column": "id", "op": "le", "value": 3}]},
            "requested_by": "e2e", "reason": "erasure request", "idempotency_key": key}))
    };
    let id = erase("first");
    deployment.run_until_idle(&[]);
    let status = run(deployment.reaper().args(["status", &id]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    let held = serde_json::json!({"order_items": 1, "orders": 1, "sessions": 1, "users": 2});
    assert_eq!(status["result"]["held"], held, "{status}");
    assert_eq!(
        status["result"]["tables"],
        serde_json::json!({"order_items": 3, "orders": 2, "sessions": 3, "users": 1}),
        "{status}"
    );
    let left = |expected: [(&'static str, &'static str); 4]| {
        let test = &deployment.test;
        async move {
            for (table, ids) in expected {
                let now: Vec<String> = test.ids(table, "1 = 1").await.into_iter().collect();
                assert_eq!(now.join(","), ids, "{table}");
            }
        }
    };
    left([
        ("users", "2,3"),
        ("sessions", "31"),
        ("orders", "23"),
        ("order_items", "231"),
    ])
    .await;

    let signed = crate::receipts::receipt(&deployment, &id);
    let tables = &signed["receipt"]["tables"];
    for (table, kept) in [
        ("users", 2),
        ("sessions", 1),
        ("orders", 1),
        ("order_items", 1),
    ] {
        assert_eq!(tables[table]["held"], kept, "{table}: {tables}");
        assert_eq!(tables[table]["still_matching"], 0, "{table}: {tables}");
    }
    let reasons: BTreeSet<&str> = signed["receipt"]["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hold| hold["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, BTreeSet::from(["case 3", "case 231"]));

    for hold in [&by_key, &by_filter] {
        let output = run(deployment.reaper().args(["release", hold]));
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let again = erase("after-release");
    deployment.run_until_idle(&[]);
    let status = run(deployment.reaper().args(["status", &again]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    assert!(status["result"].get("held").is_none(), "{status}");
    left([
        ("users", ""),
        ("sessions", ""),
        ("orders", ""),
        ("order_items", ""),
    ])
    .await;
}
