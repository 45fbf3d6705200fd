//! Archive mode and restore (statements in `reaper_core::sql::archive`): the copy of a batch's
//! rows before MySQL and SQLite delete them by key (PostgreSQL copies them in its batch
//! statement), one restore batch transaction, and the built-in purge of old copies.
//!
//! A restore batch holds to the batch invariants: lease check first, then the rows, the audit
//! row (mode `restore`) and the checkpoint, all in one transaction. It never overwrites a row:
//! an archived row whose key exists again stays in the archive and is counted as a conflict; a
//! soft-deleted row whose mark changed since keeps it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reaper_core::catalog::Target;
use reaper_core::job::JobRequest;
use reaper_core::restore::SourceKind;
use reaper_core::sql::archive::{self as sql_archive, ArchivedKey, TableColumn};
use reaper_core::sql::rows::{AuditRecord, JobRecord, LockedJob};
use reaper_core::sql::{Backend, ledger, schema};
use reaper_core::validate::{FieldError, ValidatedJob, ValidationError};
use reaper_core::value::KeyValue;
use sea_orm::{ConnectionTrait, DatabaseTransaction};

use crate::batch::{self, Audited, LeaseHolder};
use crate::database::{Database, execute, query_all};
use crate::error::EngineError;
use crate::ledger::decode;

/// The columns of `target`'s table as the database describes them (names and types), read on
/// `conn` (a batch's transaction, or the pool at start-up).
pub(crate) async fn table_columns<C: ConnectionTrait>(
    conn: &C,
    backend: Backend,
    target: &Target,
) -> Result<Vec<TableColumn>, EngineError> {
    let rows = query_all(conn, backend, &schema::table_columns(backend, target)).await?;
    rows.iter()
        .map(|row| {
            Ok(TableColumn {
                name: row.try_get::<String>("", schema::COLUMN_NAME)?,
                data_type: row.try_get::<String>("", schema::COLUMN_TYPE)?,
            })
        })
        .collect::<Result<_, sea_orm::DbErr>>()
        .map_err(EngineError::from)
}

/// MySQL and SQLite, archive mode: copies the rows of `keys` (locked by this transaction, about
/// to be deleted by key) into `reaper_archive`. Every key must be copied, or the batch fails.
pub(crate) async fn copy_before_delete(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    keys: &[KeyValue],
    (job_id, now): (&str, DateTime<Utc>),
) -> Result<(), EngineError> {
    if keys.is_empty() {
        return Ok(());
    }
    let columns = table_columns(txn, backend, &job.target).await?;
    let copy = sql_archive::copy_rows(backend, job, &columns, keys, (job_id, now));
    let copied = execute(txn, backend, &copy).await?;
    if copied != keys.len() as u64 {
        return Err(EngineError::WindowChanged);
    }
    Ok(())
}

/// Deletes the archive rows archived before `before`, `batch` rows per transaction, until none
/// is left; the number deleted.
pub async fn purge_expired(
    db: &Database,
    before: DateTime<Utc>,
    batch: u32,
) -> Result<u64, EngineError> {
    let backend = db.backend();
    let due = sql_archive::any_expired(backend, before);
    if crate::database::query_count(db.connection(), backend, &due).await? == 0 {
        return Ok(0);
    }
    let mut purged = 0;
    loop {
        let deleted = db
            .execute(&sql_archive::purge_expired(db.backend(), before, batch))
            .await?;
        purged += deleted;
        if deleted < u64::from(batch) {
            return Ok(purged);
        }
    }
}

/// The job a restore undoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    /// Its ledger id.
    pub job_id: String,
    /// Archive or soft.
    pub kind: SourceKind,
}

/// The source of a restore job on `target`, as its ledger row says: refused (invalid input)
/// when it cannot be restored.
pub fn restore_source(source: &JobRecord, target: &Target) -> Result<RestoreSource, EngineError> {
    let request: JobRequest = serde_json::from_str(&source.request).map_err(|error| {
        EngineError::Corrupt(format!(
            "the stored request of job {} is unreadable: {error}",
            source.id
        ))
    })?;
    let kind = reaper_core::restore::check_source(source, &request, target).map_err(|message| {
        ValidationError {
            errors: vec![FieldError {
                field: "restore".into(),
                message,
            }],
        }
    })?;
    Ok(RestoreSource {
        job_id: source.id.clone(),
        kind,
    })
}

/// What one restore batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreBatch {
    /// Committed. `last == None`: nothing was left to restore (the end of the walk).
    Committed {
        /// Rows put back (or whose soft-delete mark was cleared).
        restored: u64,
        /// Rows not restored (key exists again; mark changed).
        conflicts: u64,
        /// The new checkpoint: the last archive row id, or the source's audit batch number.
        last: Option<i64>,
        /// BEGIN to COMMIT.
        elapsed: Duration,
    },
    /// The lease check refused it (cancel or pause asked, or the lease is lost): nothing
    /// changed.
    Refused,
}

/// One restore batch of `job` (a validated restore job) after checkpoint `after`: up to `limit`
/// archived rows, or one batch of the soft-delete source.
pub async fn run_restore_batch(
    db: &Database,
    job: &ValidatedJob,
    source: &RestoreSource,
    (after, limit): (i64, u32),
    holder: LeaseHolder<'_>,
) -> Result<RestoreBatch, EngineError> {
    let started = Instant::now();
    let backend = db.backend();
    let txn = batch::begin(db).await?;
    let written = async {
        let Some(locked) = batch::lock_job(&txn, backend, holder).await? else {
            return Ok(None);
        };
        let now = Utc::now();
        let step = match source.kind {
            SourceKind::Archive => {
                restore_archived(&txn, backend, job, (&source.job_id, after, limit)).await?
            }
            SourceKind::Soft => {
                restore_soft_marks(&txn, backend, job, (&source.job_id, after)).await?
            }
        };
        let Some(step) = step else {
            return Ok(Some((0, 0, None)));
        };
        record(&txn, backend, job, (holder, &locked), &step, now).await?;
        Ok(Some((
            step.restored.len() as u64,
            step.conflicts,
            Some(step.last),
        )))
    }
    .await;
    Ok(
        match batch::end_transaction(txn, written, Option::is_some).await? {
            Some((restored, conflicts, last)) => RestoreBatch::Committed {
                restored,
                conflicts,
                last,
                elapsed: started.elapsed(),
            },
            None => RestoreBatch::Refused,
        },
    )
}

/// What a restore batch changed, to audit and checkpoint.
struct Restored {
    /// Keys put back, ascending.
    restored: Vec<KeyValue>,
    /// Rows left as they are.
    conflicts: u64,
    /// The new checkpoint.
    last: i64,
}

/// Archive: the next archived rows of the source, each put back unless its key exists again
/// (then it stays archived, a conflict); the ones put back leave the archive. `None`: no
/// archived row is left after `after`.
async fn restore_archived(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (source, after, limit): (&str, i64, u32),
) -> Result<Option<Restored>, EngineError> {
    let target = &job.target;
    let rows = query_all(
        txn,
        backend,
        &sql_archive::archived_keys(backend, source, after, limit),
    )
    .await?;
    let window: Vec<ArchivedKey> = rows
        .iter()
        .map(|row| decode(row, backend, sql_archive::decode_archived_key))
        .collect::<Result<_, _>>()?;
    let Some(last) = window.last().map(|archived| archived.id) else {
        return Ok(None);
    };
    let keys: Vec<KeyValue> = window
        .iter()
        .map(|archived| batch::parse_key(target.key_type, &archived.key))
        .collect::<Result<_, _>>()?;
    let existing: BTreeSet<KeyValue> = batch::read_keys(
        &query_all(
            txn,
            backend,
            &sql_archive::existing_keys(backend, target, &keys),
        )
        .await?,
        target.key_type,
    )?
    .into_iter()
    .collect();
    let (ids, mut restored): (Vec<i64>, Vec<KeyValue>) = window
        .iter()
        .zip(keys)
        .filter(|(_, key)| !existing.contains(key))
        .map(|(archived, key)| (archived.id, key))
        .unzip();
    if !ids.is_empty() {
        let columns = match backend {
            // PostgreSQL reads the row back through the table's row type.
            Backend::Postgres => Vec::new(),
            Backend::MySql | Backend::Sqlite => table_columns(txn, backend, target).await?,
        };
        let insert = sql_archive::restore_rows(backend, target, &columns, &ids);
        if execute(txn, backend, &insert).await? != ids.len() as u64 {
            return Err(EngineError::Corrupt(format!(
                "restoring {} archived rows of `{}` inserted a different number of rows",
                ids.len(),
                target.name
            )));
        }
        execute(txn, backend, &sql_archive::forget_restored(backend, &ids)).await?;
    }
    restored.sort();
    Ok(Some(Restored {
        conflicts: (window.len() - restored.len()) as u64,
        restored,
        last,
    }))
}

/// Soft: the source's next audit batch after batch `after`; its rows whose soft-delete column
/// still holds that batch's mark get NULL again, the others (changed since, or gone) are
/// conflicts. Audit rows of other tables or modes (a job across relations) are passed over.
async fn restore_soft_marks(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (source, after): (&str, i64),
) -> Result<Option<Restored>, EngineError> {
    let target = &job.target;
    let column = target.soft_delete_column.as_deref().ok_or_else(|| {
        EngineError::Corrupt(format!(
            "target `{}` has no soft_delete_column any more; its soft-deleted rows cannot be told \
             apart",
            target.name
        ))
    })?;
    let rows = query_all(
        txn,
        backend,
        &ledger::audit_of_job(backend, source, after, 1),
    )
    .await?;
    let Some(audit) = rows
        .first()
        .map(|row| decode(row, backend, AuditRecord::decode))
        .transpose()?
    else {
        return Ok(None);
    };
    let own =
        audit.target == target.name && audit.mode == reaper_core::catalog::Mode::Soft.as_str();
    let keys: Vec<KeyValue> = if own {
        serde_json::from_str(&audit.deleted_keys).map_err(|error| {
            EngineError::Corrupt(format!(
                "the key list of job {source}'s audit batch {} is unreadable: {error}",
                audit.batch_no
            ))
        })?
    } else {
        Vec::new()
    };
    if keys.is_empty() {
        return Ok(Some(Restored {
            restored: Vec::new(),
            conflicts: 0,
            last: audit.batch_no,
        }));
    }
    let at = audit.created_at;
    let mut marked = batch::read_keys(
        &query_all(
            txn,
            backend,
            &sql_archive::soft_marked(backend, target, column, &keys, at),
        )
        .await?,
        target.key_type,
    )?;
    if !marked.is_empty() {
        let clear = sql_archive::clear_soft_mark(backend, target, column, &marked, at);
        if execute(txn, backend, &clear).await? != marked.len() as u64 {
            return Err(EngineError::WindowChanged);
        }
    }
    marked.sort();
    Ok(Some(Restored {
        conflicts: (keys.len() - marked.len()) as u64,
        restored: marked,
        last: audit.batch_no,
    }))
}

/// The restore batch's audit row (mode `restore`: the keys put back, the conflicts as rows
/// left) when it changed or left anything, and its checkpoint.
async fn record(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (holder, locked): (LeaseHolder<'_>, &LockedJob),
    step: &Restored,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let audited = Audited {
        target: &job.target.name,
        mode: job.mode.as_str(),
        keys: &step.restored,
        held: step.conflicts,
    };
    let at = (&KeyValue::Int(step.last), false, now);
    batch::audit_and_advance(txn, backend, job, (holder, locked), &audited, at).await
}

/// The source's rows still archived (after its restore: the conflicts), counted, with the
/// first `limit` keys.
pub async fn still_archived(
    db: &Database,
    source: &str,
    limit: u32,
) -> Result<(u64, Vec<String>), EngineError> {
    let backend = db.backend();
    let count = crate::database::query_count(
        db.connection(),
        backend,
        &sql_archive::count_archived(backend, source),
    )
    .await?;
    let rows = db
        .query_all(&sql_archive::archived_keys(backend, source, 0, limit))
        .await?;
    let keys = rows
        .iter()
        .map(|row| decode(row, backend, sql_archive::decode_archived_key).map(|row| row.key))
        .collect::<Result<_, _>>()?;
    Ok((count, keys))
}

/// How a restore is asked for ([`reaper_core::restore::Ask`]).
pub use reaper_core::restore::Ask as RestoreAsk;

/// The restore job of job `source_id`, for the caller to submit. `None`: no such job. Invalid
/// input when the job cannot be restored (hard, unfinished, a dry run, itself a restore, or its
/// target is no longer in the catalog).
pub async fn restore_request(
    db: &Database,
    catalog: &reaper_core::catalog::Catalog,
    source_id: &str,
    ask: RestoreAsk<'_>,
) -> Result<Option<JobRequest>, EngineError> {
    let Some(source) = crate::ledger::get(db, source_id).await? else {
        return Ok(None);
    };
    let Some(target) = catalog.get(&source.target) else {
        return Err(ValidationError {
            errors: vec![FieldError {
                field: "restore".into(),
                message: format!(
                    "job `{source_id}`'s target `{}` is no longer in the catalog",
                    source.target
                ),
            }],
        }
        .into());
    };
    restore_source(&source, target)?;
    Ok(Some(reaper_core::restore::request(&source, ask)))
}

/// [`restore_request`], submitted to the ledger (`pending` for the queue, or `paused` for a
/// foreground run).
pub async fn submit_restore(
    db: &Database,
    catalog: &reaper_core::catalog::Catalog,
    source_id: &str,
    ask: RestoreAsk<'_>,
    (default_max_attempts, now, run_by): (u32, DateTime<Utc>, crate::ledger::RunBy),
) -> Result<Option<crate::ledger::Submitted>, EngineError> {
    let Some(request) = restore_request(db, catalog, source_id, ask).await? else {
        return Ok(None);
    };
    crate::ledger::submit(
        db,
        catalog,
        &request,
        default_max_attempts,
        now,
        None,
        run_by,
    )
    .await
    .map(Some)
}
