//! Builds a finished job's receipt body ([`reaper_core::receipt`]) from the ledger, its audit
//! and a fresh count of the rows its filter still matches, and re-checks a receipt against the
//! database (audit chain and key digests). Signing is the binary's: this crate holds no key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reaper_core::catalog::Catalog;
use reaper_core::receipt::{HoldNote, RECEIPT_VERSION, ReceiptBody, TableReceipt};
use reaper_core::sql::graph;
use reaper_core::sql::rows::{AuditRecord, JobRecord};
use reaper_core::validate::ValidatedJob;

use crate::audit_chain::{audit_rows, hash, verify_job};
use crate::database::{Database, query_count};
use crate::error::EngineError;

/// The receipt body of `job` (finished), made at `now`.
pub async fn build(
    db: &Database,
    catalog: &Catalog,
    job: &JobRecord,
    now: DateTime<Utc>,
) -> Result<ReceiptBody, EngineError> {
    let validated = crate::runner::prepare(job, catalog)?;
    let audit = audit_rows(db, &job.id).await?;
    let mut tables = tables_of(&audit);
    let still = still_matching(db, &validated, now).await?;
    for (name, count) in still {
        tables
            .entry(name)
            .or_insert_with(|| empty_table(&validated))
            .still_matching = count;
    }
    let request = serde_json::from_str(&job.request)
        .map_err(|error| EngineError::Corrupt(format!("the stored job request: {error}")))?;
    Ok(ReceiptBody {
        version: RECEIPT_VERSION,
        job_id: job.id.clone(),
        request,
        state: job.state.as_str().to_owned(),
        started_at: job.started_at,
        finished_at: job.finished_at,
        holds: holds_during(db, job, &tables).await?,
        tables,
        audit_chain_head: job.chain_head.clone().unwrap_or_default(),
        audit_rows: audit.len(),
        made_at: now,
    })
}

fn empty_table(job: &ValidatedJob) -> TableReceipt {
    TableReceipt {
        mode: job.mode.as_str().to_owned(),
        removed: 0,
        archived: 0,
        held: 0,
        key_digest: hash(""),
        still_matching: 0,
    }
}

/// Per table: removed and held rows, mode and key digest, from the audit in batch order.
fn tables_of(audit: &[AuditRecord]) -> BTreeMap<String, TableReceipt> {
    let mut lists: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut tables: BTreeMap<String, TableReceipt> = BTreeMap::new();
    for row in audit {
        let table = tables
            .entry(row.target.clone())
            .or_insert_with(|| TableReceipt {
                mode: row.mode.clone(),
                removed: 0,
                archived: 0,
                held: 0,
                key_digest: String::new(),
                still_matching: 0,
            });
        let rows = u64::try_from(row.row_count).unwrap_or(0);
        table.removed += rows;
        if row.mode == reaper_core::catalog::Mode::Archive.as_str() {
            table.archived += rows;
        }
        table.held += u64::try_from(row.rows_held).unwrap_or(0);
        lists
            .entry(&row.target)
            .or_default()
            .push(&row.deleted_keys);
    }
    for (name, table) in &mut tables {
        table.key_digest = hash(
            &lists
                .get(name.as_str())
                .map_or(String::new(), |l| l.join("\n")),
        );
    }
    tables
}

/// Rows still matching now, per table: the job's own and, for a job across relations, each
/// step's rows still hanging off the rows its filter matches — rows legal holds keep excluded
/// (held, below a held row, or, across relations, above one), as the job's batches leave them.
async fn still_matching(
    db: &Database,
    job: &ValidatedJob,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, u64>, EngineError> {
    let backend = db.backend();
    let active = crate::graph_run::read_holds(db.connection(), backend, job, now).await?;
    let own = graph::count_removable_roots(backend, job, &active, None);
    let mut counts = BTreeMap::from([(
        job.target.name.clone(),
        query_count(db.connection(), backend, &own).await?,
    )]);
    for step in &job.graph {
        let statement = graph::count_step(backend, job, step, None, &active);
        *counts.entry(step.target().name.clone()).or_default() +=
            query_count(db.connection(), backend, &statement).await?;
    }
    Ok(counts)
}

/// The holds on the job's tables that were active at some time while it ran.
async fn holds_during(
    db: &Database,
    job: &JobRecord,
    tables: &BTreeMap<String, TableReceipt>,
) -> Result<Vec<HoldNote>, EngineError> {
    let start = job.started_at.unwrap_or(job.created_at);
    let end = job.finished_at.unwrap_or_else(Utc::now);
    let all = crate::holds::list(db, None, 10_000).await?;
    Ok(all
        .into_iter()
        .filter(|hold| tables.contains_key(&hold.target) || hold.target == job.target)
        .filter(|hold| hold.placed_at <= end)
        .filter(|hold| hold.released_at.is_none_or(|released| released >= start))
        .filter(|hold| hold.expires_at.is_none_or(|expiry| expiry >= start))
        .map(|hold| HoldNote {
            id: hold.id,
            target: hold.target,
            reason: hold.reason,
        })
        .collect())
}

/// What a re-check of a receipt against the database found wrong (empty: it holds).
pub async fn recheck(db: &Database, body: &ReceiptBody) -> Result<Vec<String>, EngineError> {
    let mut problems = Vec::new();
    match verify_job(db, &body.job_id).await? {
        None => problems.push(format!("no job `{}` in this database", body.job_id)),
        Some(Err(first_break)) => {
            problems.push(format!("the audit chain is broken: {first_break:?}"))
        }
        Some(Ok(verified)) if verified.head != body.audit_chain_head => problems.push(format!(
            "the audit chain's head is {}, the receipt says {}",
            verified.head, body.audit_chain_head
        )),
        Some(Ok(_)) => {}
    }
    let audit = audit_rows(db, &body.job_id).await?;
    let now = tables_of(&audit);
    for (name, stated) in &body.tables {
        let (removed, digest) = now.get(name).map_or((0, hash("")), |table| {
            (table.removed, table.key_digest.clone())
        });
        if stated.removed > 0 && (removed != stated.removed || digest != stated.key_digest) {
            problems.push(format!(
                "`{name}`: the audit lists {removed} removed rows with key digest {digest}, the \
                 receipt {} with {}",
                stated.removed, stated.key_digest
            ));
        }
    }
    Ok(problems)
}
