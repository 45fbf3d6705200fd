//! The daemon throttled by the database's health (`[database.health]`), through the binary: a
//! job's batches wait while the database is busier than the configured load, `/metrics` shows
//! the throttle and the signal per target, and the job finishes once the load is gone.

use std::time::Duration;

use reaper_testkit::Removal;
use serde_json::json;

use crate::daemon::RedisDeployment;
use crate::poll_until;

/// The value of the series `series` (name and labels, as exported) in a scrape.
fn value_of(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_busy_database_holds_the_batches_and_metrics_say_why() {
    let (d, expected, before) = RedisDeployment::prepared(2_000, None, "tenant_id = 4").await;
    let test = &d.deployment.test;
    let config = std::fs::read_to_string(&d.deployment.config).unwrap();
    let config = config.replacen(
        "[queue]",
        "[database.health]\nsample_every = \"100ms\"\nload = { pause_above = 1 }\n\n[queue]",
        1,
    );
    std::fs::write(&d.deployment.config, config).unwrap();
    let _daemon = d.start(&[]);
    let api = d.api();
    let paused = "reaper_throttle_paused{target=\"events\",reason=\"load\"}";
    let signal = "reaper_health_signal{target=\"events\",signal=\"load\"}";
    let metrics = api.text("/metrics").await;
    assert_eq!(value_of(&metrics, paused), Some(0.0), "{metrics}");

    // Three sessions of the application busy for 6 s: over the threshold of one.
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let url = test.url.clone();
            tokio::spawn(async move {
                use sea_orm::ConnectionTrait;
                let conn = sea_orm::Database::connect(&url).await.unwrap();
                conn.execute_unprepared("SELECT pg_sleep(6)").await.unwrap();
            })
        })
        .collect();
    poll_until(Duration::from_secs(5), "three busy sessions", async || {
        match test
            .int("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(6)' AND state = 'active'")
            .await
        {
            3 => Ok(()),
            seen => Err(format!("{seen} busy")),
        }
    })
    .await;
    let id = api
        .submit(&json!({"target": "events", "requested_by": "e2e", "reason": "health",
            "batch_size": 50, "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 4}]}}))
        .await;
    let metrics = poll_until(Duration::from_secs(5), "the throttle shows", async || {
        let metrics = api.text("/metrics").await;
        match (value_of(&metrics, paused), value_of(&metrics, signal)) {
            (Some(1.0), Some(load)) if load >= 3.0 => Ok(metrics),
            _ => Err(metrics),
        }
    })
    .await;
    assert!(
        metrics.contains("reaper_throttle_paused{target=\"events\",reason=\"replica_lag\"} 0"),
        "{metrics}"
    );
    let job = api.job(&id).await;
    assert_eq!(
        (job["batches"].as_i64(), &job["rows_deleted"]),
        (Some(0), &json!(0)),
        "{job}"
    );

    for task in busy {
        task.await.unwrap();
    }
    let done = api.wait_done(&id, 1, Duration::from_secs(30)).await;
    assert_eq!(done["rows_deleted"], expected.len());
    before
        .assert_removed_exactly(test, &expected, Removal::Hard, 50)
        .await;
    let metrics = api.text("/metrics").await;
    assert_eq!(value_of(&metrics, paused), Some(0.0), "{metrics}");
}
