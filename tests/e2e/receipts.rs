//! Signed receipts through the real binary on every backend: `reaper receipt JOB` after a job
//! (key from the environment only), `reaper receipt verify` with the public key and the
//! database; a row inserted after the job shows in a new receipt's verification; a receipt
//! edited by hand and an audit row edited by hand are both found.

use std::path::Path;

use reaper_core::sql::Backend;

use crate::daemon::RedisDeployment;
use crate::{Deployment, run, stderr, stdout};

reaper_testkit::on_every_backend!(a_receipt_is_signed_verified_and_finds_what_changed_after_it,);

/// RFC 8032's first Ed25519 test vector: the seed and its public key.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

pub(crate) fn receipt(deployment: &Deployment, id: &str) -> serde_json::Value {
    let output = run(deployment
        .reaper()
        .env("REAPER_RECEIPT_KEY", SEED)
        .args(["receipt", id]));
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

fn verify(deployment: &Deployment, file: &Path) -> std::process::Output {
    run(deployment
        .reaper()
        .args(["receipt", "verify"])
        .arg(file)
        .args(["--public-key", PUBLIC_KEY, "--database"]))
}

async fn a_receipt_is_signed_verified_and_finds_what_changed_after_it(backend: Backend) {
    let deployment = Deployment::migrated(backend, 200).await;
    let test = &deployment.test;
    let id = deployment.enqueue(&serde_json::json!({
        "target": "events", "requested_by": "dpo", "reason": "erasure #7",
        "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 3}]}
    }));
    deployment.run_until_idle(&[]);

    // No key in the environment: refused, nothing printed.
    let output = run(deployment.reaper().args(["receipt", &id]));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("REAPER_RECEIPT_KEY"),
        "{}",
        stderr(&output)
    );

    let signed = receipt(&deployment, &id);
    assert_eq!(signed["public_key"], PUBLIC_KEY);
    let body = &signed["receipt"];
    assert_eq!(body["request"]["reason"], "erasure #7");
    assert_eq!(body["tables"]["events"]["removed"], 20);
    assert_eq!(body["tables"]["events"]["still_matching"], 0);
    assert_eq!(body["audit_chain_head"].as_str().unwrap().len(), 64);
    let file = deployment.dir.path().join("receipt.json");
    std::fs::write(&file, signed.to_string()).unwrap();
    let output = verify(&deployment, &file);
    assert!(output.status.success(), "{}", stderr(&output));

    // A row inserted after the job: the next receipt's verification finds it.
    test.exec(
        "INSERT INTO events (id, tenant_id, kind, created_at, payload) \
         SELECT 100000, 3, kind, created_at, payload FROM events WHERE id = 1",
    )
    .await;
    assert_eq!(
        receipt(&deployment, &id)["receipt"]["tables"]["events"]["still_matching"],
        1
    );

    // The receipt edited by hand: the signature no longer holds.
    let mut edited = signed.clone();
    edited["receipt"]["tables"]["events"]["removed"] = 19.into();
    let forged = deployment.dir.path().join("forged.json");
    std::fs::write(&forged, edited.to_string()).unwrap();
    let output = verify(&deployment, &forged);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("signature"), "{}", stderr(&output));

    // An audit row edited by hand: the receipt's re-check against the database fails.
    test.exec(&format!(
        "UPDATE reaper_audit SET reason = 'something else' WHERE job_id = '{id}' AND batch_no = 1"
    ))
    .await;
    let output = verify(&deployment, &file);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("audit chain"),
        "{}",
        stderr(&output)
    );
    let output = run(deployment.reaper().args(["audit", "verify", &id]));
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("\"changed\""),
        "{}",
        stdout(&output)
    );
}

/// The daemon (PostgreSQL, Redis) over HTTP: a hold placed through the API leaves its row, and
/// the finished job's receipt (signed with the key in the daemon's environment) names the hold's
/// reason and the held row.
#[tokio::test]
async fn the_daemon_serves_a_signed_receipt_naming_the_holds() {
    let d = RedisDeployment::new(200, None).await;
    let _daemon = d.start(&[("REAPER_RECEIPT_KEY", SEED)]);
    let api = d.api();
    let hold = serde_json::json!({
        "target": "events", "keys": [13], "reason": "litigation 4", "placed_by": "legal"
    });
    let (status, placed) = api
        .call(reqwest::Method::POST, "/v1/holds", Some(&hold))
        .await;
    assert_eq!(status, 201, "{placed}");
    let id = api
        .submit(&serde_json::json!({
            "target": "events", "requested_by": "dpo", "reason": "erasure #8",
            "filter": {"all": [{"column": "tenant_id", "op": "eq", "value": 3}]}
        }))
        .await;
    api.wait_done(&id, 1, std::time::Duration::from_secs(30))
        .await;
    let (status, signed) = api.get(&format!("/v1/jobs/{id}/receipt")).await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["public_key"], PUBLIC_KEY);
    let events = &signed["receipt"]["tables"]["events"];
    assert_eq!(
        (&events["removed"], &events["held"]),
        (&19.into(), &1.into())
    );
    assert_eq!(signed["receipt"]["holds"][0]["reason"], "litigation 4");
    let file = d.deployment.dir.path().join("receipt.json");
    std::fs::write(&file, signed.to_string()).unwrap();
    let output = verify(&d.deployment, &file);
    assert!(output.status.success(), "{}", stderr(&output));
}
