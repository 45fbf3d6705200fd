//! The erasure receipt: what a finished job did, per table, and a verification taken when the
//! receipt is made, as one JSON document that the binary signs (Ed25519) over
//! [`ReceiptBody::signed_bytes`].
//!
//! This module owns the document's shape and the bytes that are signed; it neither reads the
//! database (the engine builds the body) nor holds keys (the binary signs and checks).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The receipt format's version.
pub const RECEIPT_VERSION: u32 = 1;

/// What a receipt states about one finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// [`RECEIPT_VERSION`].
    pub version: u32,
    /// Ledger id of the job.
    pub job_id: String,
    /// The request as accepted (who, why, filter, mode, …).
    pub request: serde_json::Value,
    /// The job's final state (`done`, `cancelled`, `dead`).
    pub state: String,
    /// When its first run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Per table the job touched (its own first among equals, by name).
    pub tables: BTreeMap<String, TableReceipt>,
    /// The legal holds that were active on the job's tables while it ran.
    pub holds: Vec<HoldNote>,
    /// The head of the job's audit chain (`reaper audit verify`).
    pub audit_chain_head: String,
    /// Audit rows in the chain.
    pub audit_rows: usize,
    /// When the verification below was taken and the receipt made.
    pub made_at: DateTime<Utc>,
}

/// One table of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReceipt {
    /// How its rows were removed: `hard` (deleted), `soft` (soft-deleted), `set_null`,
    /// `archive` (deleted, each copied to `reaper_archive` first).
    pub mode: String,
    /// Rows removed.
    pub removed: u64,
    /// Of the rows removed, those copied to `reaper_archive` in their batch (archive mode; absent
    /// otherwise): a restore can put them back until the archive's `keep` time purges them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub archived: u64,
    /// Matching rows left in place under legal holds.
    pub held: u64,
    /// SHA-256 (hex) of the removed keys: every audit row's key list of this table, in batch
    /// order, one per line.
    pub key_digest: String,
    /// Rows of the table that still match the job's filter now, held rows excluded (0 for a
    /// complete erasure). For a table the job reached through relations: the rows still hanging
    /// off the rows the job's filter matches.
    pub still_matching: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// A legal hold as a receipt names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldNote {
    /// Hold id.
    pub id: String,
    /// Target.
    pub target: String,
    /// Why.
    pub reason: String,
}

impl ReceiptBody {
    /// The bytes the signature covers: the body as compact JSON (fields in declaration order,
    /// tables by name), so a verifier re-serializing the parsed body gets the same bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A signed receipt, as `reaper receipt` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// What is stated.
    pub receipt: ReceiptBody,
    /// `ed25519`.
    pub algorithm: String,
    /// The public key that checks the signature (hex, 32 bytes).
    pub public_key: String,
    /// The signature over [`ReceiptBody::signed_bytes`] (hex, 64 bytes).
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_bytes_survive_a_round_trip_through_json() {
        let body = ReceiptBody {
            version: RECEIPT_VERSION,
            job_id: "j".into(),
            request: serde_json::json!({"target": "users", "reason": "gdpr"}),
            state: "done".into(),
            started_at: Some(DateTime::UNIX_EPOCH),
            finished_at: None,
            tables: BTreeMap::from([(
                "users".into(),
                TableReceipt {
                    mode: "hard".into(),
                    removed: 3,
                    archived: 0,
                    held: 1,
                    key_digest: "ab".into(),
                    still_matching: 0,
                },
            )]),
            holds: vec![],
            audit_chain_head: "cd".into(),
            audit_rows: 1,
            made_at: DateTime::UNIX_EPOCH,
        };
        let printed = serde_json::to_string_pretty(&body).unwrap();
        let parsed: ReceiptBody = serde_json::from_str(&printed).unwrap();
        assert_eq!(parsed.signed_bytes(), body.signed_bytes());
    }
}
