//! Physical order and the plan guard through the real binary, as an operator meets them:
//! `reaper purge --dry-run` names the strategy and the guard's verdict, the daemon runs a
//! retention-sized job in physical order and `reaper status` shows the choice, and a job the
//! guard refuses ends `dead` with the index that fixes it.

use std::collections::BTreeSet;

use reaper_core::sql::Backend;

use crate::{Deployment, run, stderr, stdout};

const CUTOFF_SQL: &str = "created_at < TIMESTAMPTZ '2025-11-05 00:00:00+00'";

#[tokio::test]
async fn a_retention_purge_walks_physically_and_a_slow_plan_is_refused_through_the_binary() {
    let deployment = Deployment::new(Backend::Postgres, 30_000).await;
    deployment.test.exec("ANALYZE events").await;
    deployment.migrate();

    let dry = run(deployment.reaper().args([
        "purge",
        "--target",
        "events",
        "--older-than",
        "created_at=300d",
        "--dry-run",
    ]));
    assert!(dry.status.success(), "{}", stderr(&dry));
    let shown = stdout(&dry);
    assert!(
        shown.contains("strategy:      physical (estimate: ~"),
        "{shown}"
    );
    assert!(shown.contains("plan guard:    pass"), "{shown}");

    let matching: BTreeSet<String> = deployment.test.ids("events", CUTOFF_SQL).await;
    let before = deployment.test.snapshot_events().await;
    let id = deployment.enqueue(&serde_json::json!({
        "target": "events", "requested_by": "e2e", "reason": "retention",
        "filter": {"all": [{"column": "created_at", "op": "lt", "value": "2025-11-05T00:00:00Z"}]}
    }));
    deployment.run_until_idle(&[]);
    deployment
        .assert_done_once(&id, &before, &matching, 100)
        .await;
    let status = run(deployment.reaper().args(["status", &id]));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(
        status["result"]["strategy"]["strategy"], "physical",
        "{status}"
    );
    assert_eq!(
        status["result"]["strategy"]["reason"], "estimate",
        "{status}"
    );
    assert_eq!(status["result"]["sweep_rows"], 0, "{status}");

    // 30 of 16,500 remaining rows, on columns without an index: a scan per batch.
    deployment
        .test
        .exec(
            "INSERT INTO events (tenant_id, kind, created_at, payload) \
             SELECT 1, 'rare', TIMESTAMPTZ '2025-12-24 00:00:00+00', 'x' FROM generate_series(1, 30); \
             ANALYZE events",
        )
        .await;
    let refused = deployment.enqueue(&serde_json::json!({
        "target": "events", "requested_by": "e2e", "reason": "erasure",
        "filter": {"all": [{"column": "kind", "op": "eq", "value": "rare"}]}
    }));
    // `run --until-idle` reports the dead job in its exit status; the ledger says why.
    run(deployment.reaper().args(["run", "--until-idle"]));
    let status = run(deployment.reaper().args(["status", &refused]));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(status["state"], "dead", "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plan guard")
            && error
                .contains(r#"CREATE INDEX CONCURRENTLY "reaper_events_kind" ON "events" ("kind")"#),
        "{error}"
    );
    assert_eq!(
        deployment
            .test
            .int("SELECT count(*) FROM events WHERE kind = 'rare'")
            .await,
        30
    );
}
