//! The tamper-evident audit log: each audit row of a job carries `row_hash`, the SHA-256 of its
//! own content and the previous row's hash (`prev_hash`, empty for the first), computed in the
//! batch transaction that writes the row; the job's ledger row holds the newest hash
//! (`chain_head`), updated in the same transaction under the job's lease, so the chain needs no
//! lock of its own.
//!
//! What is hashed is [`content`]: the fields joined by `|` in a fixed order, the batch time to
//! the second (the resolution every backend stores). A row changed by hand no longer matches
//! its hash; a row removed breaks the next row's `prev_hash` (or, for the newest, the job's
//! head); rows swapped break both. [`verify`] reports the first such row.
//!
//! This module owns the content and the check; the hash function is the engine's (SHA-256, so
//! this crate keeps its dependency list), and PostgreSQL's single-statement batch writes the
//! same content in SQL ([`crate::sql::postgres`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What separates the fields of [`content`].
pub const SEPARATOR: &str = "|";

/// The batch time as the chain hashes it: to the second, UTC.
pub fn chain_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The fields of one audit row the chain covers.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    /// Ledger id of the job.
    pub job_id: &'a str,
    /// Batch number.
    pub batch_no: i64,
    /// Target name.
    pub target: &'a str,
    /// Mode or effect.
    pub mode: &'a str,
    /// Rows removed.
    pub row_count: i64,
    /// Rows left under legal holds.
    pub rows_held: i64,
    /// First removed key (empty when none).
    pub first_key: &'a str,
    /// Last removed key (empty when none).
    pub last_key: &'a str,
    /// The removed keys as stored (JSON text).
    pub deleted_keys: &'a str,
    /// Who asked.
    pub requested_by: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Batch time.
    pub created_at: DateTime<Utc>,
}

/// `prev|job_id|batch_no|target|mode|row_count|rows_held|first|last|keys|requested_by|reason|time`
pub fn content(prev_hash: &str, fields: &ChainFields<'_>) -> String {
    [
        prev_hash.to_owned(),
        fields.job_id.to_owned(),
        fields.batch_no.to_string(),
        fields.target.to_owned(),
        fields.mode.to_owned(),
        fields.row_count.to_string(),
        fields.rows_held.to_string(),
        fields.first_key.to_owned(),
        fields.last_key.to_owned(),
        fields.deleted_keys.to_owned(),
        fields.requested_by.to_owned(),
        fields.reason.to_owned(),
        chain_time(fields.created_at),
    ]
    .join(SEPARATOR)
}

/// One stored audit row as the check reads it: its fields, its stored hashes, its insertion
/// order (`id`).
#[derive(Debug, Clone)]
pub struct StoredLink<'a> {
    /// Insertion order.
    pub id: i64,
    /// The hashed fields.
    pub fields: ChainFields<'a>,
    /// Stored `prev_hash` (NULL for a row written before the chain existed).
    pub prev_hash: Option<&'a str>,
    /// Stored `row_hash`.
    pub row_hash: Option<&'a str>,
}

/// The first row the chain finds changed, removed or reordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The row's content no longer matches its hash (or its hash was removed).
    Changed {
        /// Its batch number.
        batch_no: i64,
    },
    /// A row before this one is missing: the batch numbers skip, or its `prev_hash` is not the
    /// hash of the row before it.
    Removed {
        /// The batch number expected here.
        expected_batch: i64,
        /// The batch number found.
        found_batch: i64,
    },
    /// Rows are numbered out of their insertion order.
    Reordered {
        /// The first batch number whose row was inserted after the next one's.
        batch_no: i64,
    },
    /// The newest row is not the job's chain head: rows after it were removed (or the head
    /// was changed).
    HeadMismatch {
        /// The newest row's batch number (0: no row).
        last_batch: i64,
    },
}

/// A verified chain: how many rows and its head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerified {
    /// Rows checked.
    pub rows: usize,
    /// The newest row's hash (the job's chain head).
    pub head: String,
}

/// Checks a job's audit rows (in batch-number order) against their hashes and the job's
/// `head`; `hash` is SHA-256 as lowercase hex.
pub fn verify(
    links: &[StoredLink<'_>],
    head: Option<&str>,
    hash: impl Fn(&str) -> String,
) -> Result<ChainVerified, ChainBreak> {
    // Rows renumbered into another order: the first row inserted after the row numbered next.
    if let Some(pair) = links.windows(2).find(|pair| pair[0].id > pair[1].id) {
        return Err(ChainBreak::Reordered {
            batch_no: pair[0].fields.batch_no,
        });
    }
    let mut prev = String::new();
    for (index, link) in links.iter().enumerate() {
        let expected_batch = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        let batch_no = link.fields.batch_no;
        if batch_no != expected_batch {
            return Err(ChainBreak::Removed {
                expected_batch,
                found_batch: batch_no,
            });
        }
        if link.prev_hash != Some(prev.as_str()) {
            // The row itself is intact but does not follow the row before it.
            return Err(
                if link.row_hash.map(str::to_owned)
                    == link.prev_hash.map(|p| hash(&content(p, &link.fields)))
                {
                    ChainBreak::Removed {
                        expected_batch,
                        found_batch: batch_no,
                    }
                } else {
                    ChainBreak::Changed { batch_no }
                },
            );
        }
        let computed = hash(&content(&prev, &link.fields));
        if link.row_hash != Some(computed.as_str()) {
            return Err(ChainBreak::Changed { batch_no });
        }
        prev = computed;
    }
    if head.unwrap_or("") != prev {
        return Err(ChainBreak::HeadMismatch {
            last_batch: i64::try_from(links.len()).unwrap_or(i64::MAX),
        });
    }
    Ok(ChainVerified {
        rows: links.len(),
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not SHA-256, but a function of its input: enough to test the chain's logic.
    fn fake_hash(text: &str) -> String {
        format!(
            "{:x}",
            text.bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        )
    }

    fn fields(batch_no: i64, reason: &'static str) -> ChainFields<'static> {
        ChainFields {
            job_id: "j",
            batch_no,
            target: "events",
            mode: "hard",
            row_count: 2,
            rows_held: 0,
            first_key: "1",
            last_key: "2",
            deleted_keys: "[1,2]",
            requested_by: "svc",
            reason,
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    fn chain(n: i64) -> (Vec<(ChainFields<'static>, String, String)>, String) {
        let mut prev = String::new();
        let mut rows = Vec::new();
        for batch in 1..=n {
            let f = fields(batch, "r");
            let hash = fake_hash(&content(&prev, &f));
            rows.push((f, prev.clone(), hash.clone()));
            prev = hash;
        }
        (rows, prev)
    }

    fn links<'a>(rows: &'a [(ChainFields<'static>, String, String)]) -> Vec<StoredLink<'a>> {
        rows.iter()
            .enumerate()
            .map(|(i, (f, p, h))| StoredLink {
                id: i as i64,
                fields: *f,
                prev_hash: Some(p),
                row_hash: Some(h),
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let (rows, head) = chain(4);
        let ok = verify(&links(&rows), Some(&head), fake_hash).unwrap();
        assert_eq!((ok.rows, ok.head.as_str()), (4, head.as_str()));

        let mut changed = rows.clone();
        changed[2].0.reason = "edited";
        assert_eq!(
            verify(&links(&changed), Some(&head), fake_hash),
            Err(ChainBreak::Changed { batch_no: 3 })
        );

        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(
            verify(&links(&removed), Some(&head), fake_hash),
            Err(ChainBreak::Removed {
                expected_batch: 2,
                found_batch: 3
            })
        );
        // Renumbered after the removal: the next row's prev_hash still gives it away.
        for (index, row) in removed.iter_mut().enumerate() {
            row.0.batch_no = index as i64 + 1;
        }
        assert!(matches!(
            verify(&links(&removed), Some(&head), fake_hash),
            Err(ChainBreak::Changed { batch_no: 2 })
        ));

        let newest_removed = &rows[..3];
        assert_eq!(
            verify(&links(newest_removed), Some(&head), fake_hash),
            Err(ChainBreak::HeadMismatch { last_batch: 3 })
        );

        let mut reordered = links(&rows);
        reordered[1].id = 10;
        assert_eq!(
            verify(&reordered, Some(&head), fake_hash),
            Err(ChainBreak::Reordered { batch_no: 2 })
        );
    }
}
