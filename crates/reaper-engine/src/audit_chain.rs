//! The audit chain's hash (SHA-256, lowercase hex) for the audit rows the engine writes itself
//! (SQLite and MySQL batches, every graph transaction; PostgreSQL's single-statement batches
//! hash in SQL), and `reaper audit verify`'s read of a job's chain. What is hashed and what a
//! break means is [`reaper_core::audit_chain`]'s.

use chrono::{DateTime, Timelike, Utc};
use reaper_core::audit_chain::{ChainBreak, ChainFields, ChainVerified, StoredLink, verify};
use reaper_core::sql::Backend;
use reaper_core::sql::rows::AuditRecord;
use sha2::{Digest, Sha256};

use crate::database::Database;
use crate::error::EngineError;
use crate::ledger;

/// SHA-256 of `content`, lowercase hex.
pub fn hash(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The batch time an audit row written by the engine stores. MySQL's column holds whole seconds
/// and would round a fraction up (the chain hashes the time to the second, truncated), so it gets
/// whole seconds; the other backends keep the fraction.
pub fn audit_time(backend: Backend, now: DateTime<Utc>) -> DateTime<Utc> {
    match backend {
        Backend::MySql => now.with_nanosecond(0).unwrap_or(now),
        Backend::Postgres | Backend::Sqlite => now,
    }
}

/// A job's audit chain checked against its rows and its ledger row's head: `Ok(Err(_))` names
/// the first row changed, removed or reordered. `None`: no such job.
pub async fn verify_job(
    db: &Database,
    job_id: &str,
) -> Result<Option<Result<ChainVerified, ChainBreak>>, EngineError> {
    let Some(job) = ledger::get(db, job_id).await? else {
        return Ok(None);
    };
    let records = audit_rows(db, job_id).await?;
    let links: Vec<StoredLink<'_>> = records.iter().map(link).collect();
    Ok(Some(verify(&links, job.chain_head.as_deref(), hash)))
}

/// Every audit row of a job, in batch order (read a page at a time).
pub async fn audit_rows(db: &Database, job_id: &str) -> Result<Vec<AuditRecord>, EngineError> {
    let mut records: Vec<AuditRecord> = Vec::new();
    loop {
        let after = records.last().map_or(0, |record| record.batch_no);
        let page = ledger::audit_of_job(db, job_id, after, 500).await?;
        let full = page.len() == 500;
        records.extend(page);
        if !full {
            return Ok(records);
        }
    }
}

fn link(record: &AuditRecord) -> StoredLink<'_> {
    StoredLink {
        id: record.id,
        fields: ChainFields {
            job_id: &record.job_id,
            batch_no: record.batch_no,
            target: &record.target,
            mode: &record.mode,
            row_count: record.row_count,
            rows_held: record.rows_held,
            first_key: &record.first_key,
            last_key: &record.last_key,
            deleted_keys: &record.deleted_keys,
            requested_by: &record.requested_by,
            reason: &record.reason,
            created_at: record.created_at,
        },
        prev_hash: record.prev_hash.as_deref(),
        row_hash: record.row_hash.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            super::hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
