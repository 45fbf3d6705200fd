//! The tamper-evident audit log (issue 14) on real SQLite, PostgreSQL and MariaDB: every audit
//! row a job writes (keyset batches, PostgreSQL's physical batches, rows left under a legal
//! hold) chains to the one before it and the job's head, and a row edited, removed or
//! reordered by hand is found.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use reaper_core::audit_chain::ChainBreak;
use reaper_core::sql::Backend;
use reaper_engine::audit_chain::verify_job;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::engine::{EngineTest, erase_tenant};

reaper_testkit::on_every_backend!(a_job_s_audit_chain_verifies_and_finds_rows_changed_by_hand);

async fn a_job_s_audit_chain_verifies_and_finds_rows_changed_by_hand(backend: Backend) {
    let s = EngineTest::new(backend, 400).await;
    // A hold makes some batches audit held rows too (and on PostgreSQL, a physical walk).
    let hold = serde_json::from_value(serde_json::json!({
        "target": "events", "keys": [13, 33], "reason": "case 2", "placed_by": "legal"
    }))
    .unwrap();
    reaper_engine::holds::place(&s.db, &s.catalog, &hold, chrono::Utc::now())
        .await
        .unwrap();
    let strategy = if backend == Backend::Postgres {
        "physical"
    } else {
        "keyset"
    };
    let extra = serde_json::json!({"batch_size": 7, "strategy": strategy});
    let id = s.submit(erase_tenant(3, extra), 1).await;
    assert_eq!(s.run_to_end(&id).await, RunOutcome::Done);
    let verified = verify_job(&s.db, &id).await.unwrap().unwrap().unwrap();
    let batches = s.job(&id).await.batches;
    assert_eq!(verified.rows as i64, batches);
    assert!(batches >= 5, "{batches}");
    assert_eq!(
        s.job(&id).await.chain_head.as_deref(),
        Some(verified.head.as_str())
    );

    let verdict = || async { verify_job(&s.db, &id).await.unwrap().unwrap() };
    let audit = |rest: &str| {
        format!("UPDATE reaper_audit SET {rest} WHERE job_id = '{id}' AND batch_no = 3")
    };
    // Changed: a reason edited, then put back (the chain holds again).
    s.test.exec(&audit("reason = 'edited'")).await;
    assert_eq!(verdict().await, Err(ChainBreak::Changed { batch_no: 3 }));
    s.test.exec(&audit("reason = 'invariants'")).await;
    assert!(verdict().await.is_ok());
    // Reordered: two rows' numbers swapped (and swapped back).
    let swap_2_and_3 = || async {
        for step in [
            "batch_no = 1000 + batch_no WHERE batch_no IN (2, 3)",
            "batch_no = 5 - (batch_no - 1000) WHERE batch_no > 1000",
        ] {
            let (set, condition) = step.split_once(" WHERE ").unwrap();
            s.test
                .exec(&format!(
                    "UPDATE reaper_audit SET {set} WHERE job_id = '{id}' AND {condition}"
                ))
                .await;
        }
    };
    swap_2_and_3().await;
    assert!(
        matches!(verdict().await, Err(ChainBreak::Reordered { batch_no: 2 })),
        "{:?}",
        verdict().await
    );
    swap_2_and_3().await;
    assert!(verdict().await.is_ok());
    // Removed: the newest row, then a row in the middle.
    s.test
        .exec(&format!(
            "DELETE FROM reaper_audit WHERE job_id = '{id}' AND batch_no = {batches}"
        ))
        .await;
    assert_eq!(
        verdict().await,
        Err(ChainBreak::HeadMismatch {
            last_batch: batches - 1
        })
    );
    s.test
        .exec(&format!(
            "DELETE FROM reaper_audit WHERE job_id = '{id}' AND batch_no = 2"
        ))
        .await;
    assert_eq!(
        verdict().await,
        Err(ChainBreak::Removed {
            expected_batch: 2,
            found_batch: 3
        })
    );
}
