//! Archive mode and restore (statements in `reaper_core::sql::archive`): the copy of a batch's
//! rows before MySQL and SQLite delete them by key (PostgreSQL's one-table batches copy them in
//! their batch statement) and before every transaction of a job across relations deletes or
//! nulls its locked rows, one restore batch transaction, and the built-in purge of old copies.
//!
//! A restore batch holds to the batch invariants: lease check first, then the rows, the audit
//! rows (mode `restore`, one per table) and the checkpoint, all in one transaction. It walks the
//! archive newest first, so across relations a parent is back before what refers to it. It never
//! overwrites a row: an archived row whose key exists again, a nulled column set since, or a row
//! a foreign key refuses stays in the archive and is counted as a conflict; a soft-deleted row
//! whose mark changed since keeps it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reaper_core::catalog::{Catalog, Mode, Target};
use reaper_core::graph::Effect;
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::TableConflicts;
use reaper_core::restore::SourceKind;
use reaper_core::sql::archive::{self as sql_archive, ArchivedKey, TableColumn};
use reaper_core::sql::rows::{AuditRecord, JobRecord, LockedJob};
use reaper_core::sql::{Backend, Statement, ledger, schema};
use reaper_core::validate::{FieldError, ValidatedJob, ValidationError};
use reaper_core::value::KeyValue;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, TransactionTrait};

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

/// Archive mode: copies the rows of `keys` of `target` (locked by this transaction, about to be
/// deleted by key — or, across relations, nulled) into `reaper_archive`. Every key must be
/// copied, or the batch fails. MySQL and SQLite name the table's columns (read first);
/// PostgreSQL copies the whole row.
pub(crate) async fn copy_before_delete(
    txn: &DatabaseTransaction,
    backend: Backend,
    target: &Target,
    keys: &[KeyValue],
    (job_id, now): (&str, DateTime<Utc>),
) -> Result<(), EngineError> {
    if keys.is_empty() {
        return Ok(());
    }
    let columns = columns_unless_postgres(txn, backend, target).await?;
    let copy = sql_archive::copy_rows(backend, target, &columns, keys, (job_id, now));
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
        /// Rows put back (or whose soft-delete mark or nulled column was given back).
        restored: u64,
        /// Rows not restored (key exists again; mark or column changed; a parent missing).
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

/// The tables an archive job removed rows from, as its restore puts them back: each by its
/// catalog target, and the column each `set_null` step of the job's plan nulled (those rows were
/// kept, so the restore gives the column its old value instead of inserting the row).
#[derive(Debug)]
pub struct RestoreTables<'c> {
    catalog: &'c Catalog,
    nulled: BTreeMap<String, String>,
}

impl<'c> RestoreTables<'c> {
    /// The tables of an archive job on `root`, by the plan `catalog` gives it.
    pub fn of(catalog: &'c Catalog, root: &str) -> Self {
        let nulled = catalog
            .resolved_plan(root, Mode::Archive)
            .iter()
            .filter(|step| step.effect == Effect::SetNull)
            .map(|step| (step.target().name.clone(), step.relation().column.clone()))
            .collect();
        RestoreTables { catalog, nulled }
    }

    /// The target of archived rows of `table`, and the column its step nulled if it did.
    fn get(&self, table: &str) -> Result<(&'c Target, Option<&str>), EngineError> {
        let target = self.catalog.get(table).ok_or_else(|| {
            EngineError::Corrupt(format!(
                "archived rows of `{table}` cannot be restored: it is no longer a target in the \
                 catalog; add it back to restore them"
            ))
        })?;
        Ok((target, self.nulled.get(table).map(String::as_str)))
    }
}

/// One restore batch of `job` (a validated restore job) after checkpoint `after` (`None`: from
/// the start): up to `limit` archived rows, newest first, or one batch of the soft-delete source.
pub async fn run_restore_batch(
    db: &Database,
    job: &ValidatedJob,
    (source, tables): (&RestoreSource, &RestoreTables<'_>),
    (after, limit): (Option<i64>, u32),
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
                let before = archive_walk_start(after);
                restore_archived(&txn, backend, tables, (&source.job_id, before, limit)).await?
            }
            SourceKind::Soft => {
                let after = after.unwrap_or(0);
                restore_soft_marks(&txn, backend, job, (&source.job_id, after)).await?
            }
        };
        let Some(step) = step else {
            return Ok(Some((0, 0, None)));
        };
        let (restored, conflicts) =
            record(&txn, backend, job, (holder, &locked), &step, now).await?;
        Ok(Some((restored, conflicts, Some(step.last))))
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

/// What a restore batch changed in one table, to audit.
struct TableRestored {
    /// The table's target.
    table: String,
    /// Keys put back, ascending.
    restored: Vec<KeyValue>,
    /// Rows left as they are.
    conflicts: u64,
}

/// What a restore batch changed, per table in the order it changed them, and its checkpoint.
struct Restored {
    tables: Vec<TableRestored>,
    /// The new checkpoint: for an archive, the last (smallest) archive id taken, negated (see
    /// [`archive_walk_start`]); for a soft restore, the source's audit batch number.
    last: i64,
}

/// Archive: the next archived rows of the source before archive id `before`, newest first, in
/// runs of one table each taken in turn (so a parent is back before the rows that refer to it).
/// `None`: no archived row is left before `before`.
async fn restore_archived(
    txn: &DatabaseTransaction,
    backend: Backend,
    tables: &RestoreTables<'_>,
    (source, before, limit): (&str, i64, u32),
) -> Result<Option<Restored>, EngineError> {
    let select = sql_archive::archived_before(backend, source, before, limit);
    let window: Vec<ArchivedKey> = query_all(txn, backend, &select)
        .await?
        .iter()
        .map(|row| decode(row, backend, sql_archive::decode_archived_key))
        .collect::<Result<_, _>>()?;
    let Some(last) = window.last().map(|archived| archived.id) else {
        return Ok(None);
    };
    let mut restored = Vec::new();
    for run in window.chunk_by(|a, b| a.target == b.target) {
        let (target, nulled) = tables.get(&run[0].target)?;
        let keys: Vec<(i64, KeyValue)> = run
            .iter()
            .map(|archived| {
                Ok((
                    archived.id,
                    batch::parse_key(target.key_type, &archived.key)?,
                ))
            })
            .collect::<Result<_, EngineError>>()?;
        // A row the job archived twice (nulled, set again by the application, nulled again) is
        // put back from its newest copy; one statement cannot write a key twice, and once the
        // newest copy is back the older ones conflict with it: they stay archived, reported.
        let mut seen = BTreeSet::new();
        let newest: Vec<(i64, KeyValue)> = keys
            .iter()
            .filter(|(_, key)| seen.insert(key.clone()))
            .cloned()
            .collect();
        let mut put_back = match nulled {
            None => restore_rows(txn, backend, target, &newest).await?,
            Some(column) => restore_nulled(txn, backend, target, column, &newest).await?,
        };
        if !put_back.is_empty() {
            let ids: Vec<i64> = put_back.iter().map(|(id, _)| *id).collect();
            execute(txn, backend, &sql_archive::forget_restored(backend, &ids)).await?;
        }
        put_back.sort_by(|a, b| a.1.cmp(&b.1));
        restored.push(TableRestored {
            table: target.name.clone(),
            conflicts: (keys.len() - put_back.len()) as u64,
            restored: put_back.into_iter().map(|(_, key)| key).collect(),
        });
    }
    Ok(Some(Restored {
        tables: restored,
        last: last.saturating_neg(),
    }))
}

/// Where an archive restore's newest-first walk goes on from: below the archive id its checkpoint
/// names, negated (`-id`, so that it cannot be read as the checkpoint of the oldest-first walk
/// of reaper versions before 2026-12-02, a plain id). Such an older checkpoint, or none, starts
/// from the newest archived row: every row the older walk put back has left the archive, so
/// nothing is restored twice; rows it could not put back are tried, and reported, again.
fn archive_walk_start(checkpoint: Option<i64>) -> i64 {
    match checkpoint {
        Some(negated) if negated < 0 => negated.saturating_neg(),
        _ => i64::MAX,
    }
}

/// Inserts the archived rows `keys` (archive id, key) of `target` whose key does not exist
/// (checked under lock); the ones put back.
async fn restore_rows(
    txn: &DatabaseTransaction,
    backend: Backend,
    target: &Target,
    keys: &[(i64, KeyValue)],
) -> Result<Vec<(i64, KeyValue)>, EngineError> {
    let existing = |all: &[KeyValue]| sql_archive::existing_keys(backend, target, all);
    let existing = selected(txn, backend, target, keys, existing).await?;
    let absent: Vec<(i64, KeyValue)> = keys
        .iter()
        .filter(|(_, key)| !existing.contains(key))
        .cloned()
        .collect();
    if absent.is_empty() {
        return Ok(absent);
    }
    // PostgreSQL reads the row back through the table's row type.
    let columns = columns_unless_postgres(txn, backend, target).await?;
    let insert =
        |ids: &[i64], _: &[KeyValue]| sql_archive::restore_rows(backend, target, &columns, ids);
    write_all_or_each(txn, backend, &target.name, &absent, insert).await
}

/// Gives the column a `set_null` step nulled its archived value back, in the rows of `keys`
/// (archive id, key) of `target` whose column is still NULL (checked under lock); the ones
/// given back. A row set since, or gone, is left as it is.
async fn restore_nulled(
    txn: &DatabaseTransaction,
    backend: Backend,
    target: &Target,
    column: &str,
    keys: &[(i64, KeyValue)],
) -> Result<Vec<(i64, KeyValue)>, EngineError> {
    let null = |all: &[KeyValue]| sql_archive::still_null(backend, target, column, all);
    let null = selected(txn, backend, target, keys, null).await?;
    let pending: Vec<(i64, KeyValue)> = keys
        .iter()
        .filter(|(_, key)| null.contains(key))
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(pending);
    }
    let column = columns_unless_postgres(txn, backend, target)
        .await?
        .into_iter()
        .find(|described| described.name == column)
        .unwrap_or_else(|| TableColumn {
            name: column.to_owned(),
            data_type: String::new(),
        });
    let update = |ids: &[i64], keys: &[KeyValue]| {
        sql_archive::restore_column(backend, target, &column, (ids, keys))
    };
    write_all_or_each(txn, backend, &target.name, &pending, update).await
}

/// The keys of `target` among `keys` (archive id, key) that `statement` (over all of them)
/// selects.
async fn selected(
    txn: &DatabaseTransaction,
    backend: Backend,
    target: &Target,
    keys: &[(i64, KeyValue)],
    statement: impl Fn(&[KeyValue]) -> Statement,
) -> Result<BTreeSet<KeyValue>, EngineError> {
    let all: Vec<KeyValue> = keys.iter().map(|(_, key)| key.clone()).collect();
    let rows = query_all(txn, backend, &statement(&all)).await?;
    Ok(batch::read_keys(&rows, target.key_type)?
        .into_iter()
        .collect())
}

/// The columns of `target`'s table on MySQL and SQLite, whose statements name them; none on
/// PostgreSQL, whose statements go through the table's row type.
async fn columns_unless_postgres(
    txn: &DatabaseTransaction,
    backend: Backend,
    target: &Target,
) -> Result<Vec<TableColumn>, EngineError> {
    match backend {
        Backend::Postgres => Ok(Vec::new()),
        Backend::MySql | Backend::Sqlite => table_columns(txn, backend, target).await,
    }
}

/// Runs `statement` over all `rows` (archive id, key) in a savepoint; when a foreign key or a
/// unique key refuses it (a parent that is not there, a key inserted meanwhile), over each row
/// alone, each in its own savepoint, so only the refused rows are left out (and stay archived)
/// and the restore goes on. The rows written.
async fn write_all_or_each(
    txn: &DatabaseTransaction,
    backend: Backend,
    table: &str,
    rows: &[(i64, KeyValue)],
    statement: impl Fn(&[i64], &[KeyValue]) -> Statement,
) -> Result<Vec<(i64, KeyValue)>, EngineError> {
    let split =
        |rows: &[(i64, KeyValue)]| -> (Vec<i64>, Vec<KeyValue>) { rows.iter().cloned().unzip() };
    let (ids, keys) = split(rows);
    let refused = match in_savepoint(txn, backend, &statement(&ids, &keys)).await? {
        Ok(written) if written == rows.len() as u64 => return Ok(rows.to_vec()),
        Ok(written) => return Err(miscount(table, rows.len(), written)),
        Err(refused) => refused,
    };
    tracing::info!(
        message = "a restore batch writes row by row: the database refused a row",
        table,
        error = %refused
    );
    let mut written = Vec::with_capacity(rows.len());
    for row in rows {
        let (ids, keys) = split(std::slice::from_ref(row));
        match in_savepoint(txn, backend, &statement(&ids, &keys)).await? {
            Ok(1) => written.push(row.clone()),
            Ok(other) => return Err(miscount(table, 1, other)),
            Err(_) => {}
        }
    }
    Ok(written)
}

fn miscount(table: &str, rows: usize, written: u64) -> EngineError {
    EngineError::Corrupt(format!(
        "restoring {rows} archived rows of `{table}` wrote {written} rows"
    ))
}

/// Runs `statement` in a savepoint of `txn`: the rows it affected, or — rolled back to the
/// savepoint — the error when a foreign key or a unique key refused it. Any other error fails
/// the batch.
async fn in_savepoint(
    txn: &DatabaseTransaction,
    backend: Backend,
    statement: &Statement,
) -> Result<Result<u64, DbErr>, EngineError> {
    let savepoint = txn.begin().await?;
    match execute(&savepoint, backend, statement).await {
        Ok(written) => {
            savepoint.commit().await?;
            Ok(Ok(written))
        }
        Err(error) => {
            savepoint.rollback().await?;
            if crate::error::is_key_violation(&error) {
                Ok(Err(error))
            } else {
                Err(error.into())
            }
        }
    }
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
    let column = soft_column(target)?;
    let Some((batch_no, keys, at)) = soft_batch(txn, backend, target, (source, after)).await?
    else {
        return Ok(None);
    };
    let mut marked = Vec::new();
    if !keys.is_empty() {
        let select = sql_archive::soft_marked(backend, target, column, &keys, at);
        marked = batch::read_keys(&query_all(txn, backend, &select).await?, target.key_type)?;
    }
    if !marked.is_empty() {
        let clear = sql_archive::clear_soft_mark(backend, target, column, &marked, at);
        if execute(txn, backend, &clear).await? != marked.len() as u64 {
            return Err(EngineError::WindowChanged);
        }
    }
    marked.sort();
    Ok(Some(Restored {
        tables: vec![TableRestored {
            table: target.name.clone(),
            conflicts: (keys.len() - marked.len()) as u64,
            restored: marked,
        }],
        last: batch_no,
    }))
}

/// The soft-delete column of a soft job's target.
fn soft_column(target: &Target) -> Result<&str, EngineError> {
    target.soft_delete_column.as_deref().ok_or_else(|| {
        EngineError::Corrupt(format!(
            "target `{}` has no soft_delete_column any more; its soft-deleted rows cannot be told \
             apart",
            target.name
        ))
    })
}

/// The soft job `source`'s next audit batch after batch `after`: its number, the keys it
/// soft-deleted in `target` (none for an audit row of another table or mode) and its time.
/// `None`: no audit row is left.
async fn soft_batch<C: sea_orm::ConnectionTrait>(
    conn: &C,
    backend: Backend,
    target: &Target,
    (source, after): (&str, i64),
) -> Result<Option<(i64, Vec<KeyValue>, DateTime<Utc>)>, EngineError> {
    let rows = query_all(
        conn,
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
    let own = audit.target == target.name && audit.mode == Mode::Soft.as_str();
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
    Ok(Some((audit.batch_no, keys, audit.created_at)))
}

/// The restore batch's audit rows (mode `restore`), one per table it put rows back in or left
/// rows of (the conflicts, as rows left), chained in the order it changed the tables, then its
/// counters and checkpoint; what it restored and left, in all.
async fn record(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (holder, locked): (LeaseHolder<'_>, &LockedJob),
    step: &Restored,
    now: DateTime<Utc>,
) -> Result<(u64, u64), EngineError> {
    let mut chain = locked.clone();
    let (mut audit_rows, mut restored, mut conflicts) = (0, 0, 0);
    for table in &step.tables {
        restored += table.restored.len() as u64;
        conflicts += table.conflicts;
        if table.restored.is_empty() && table.conflicts == 0 {
            continue;
        }
        let audited = Audited {
            target: &table.table,
            mode: job.mode.as_str(),
            keys: &table.restored,
            held: table.conflicts,
        };
        let head =
            batch::insert_chained_audit(txn, backend, job, (holder, &chain), &audited, now).await?;
        chain = LockedJob {
            batches: chain.batches + 1,
            chain_head: head,
        };
        audit_rows += 1;
    }
    let count = ledger::count_graph_batch(
        backend,
        (holder.job_id, holder.token),
        Some(&KeyValue::Int(step.last)),
        (restored, conflicts, audit_rows),
        (audit_rows > 0).then_some(chain.chain_head.as_str()),
        (now, batch::lease_until(now, holder.lease)),
    );
    batch::update_own_job(txn, backend, &count, holder.job_id).await?;
    Ok((restored, conflicts))
}

/// The source's rows still archived (after its restore: the conflicts), per table: how many,
/// with the first keys (at most `limit` in all, in archive order).
pub async fn still_archived(
    db: &Database,
    source: &str,
    limit: u32,
) -> Result<BTreeMap<String, TableConflicts>, EngineError> {
    let backend = db.backend();
    let mut tables = BTreeMap::new();
    let counts = db
        .query_all(&sql_archive::count_archived_by_table(backend, source))
        .await?;
    for row in &counts {
        let (table, rows) = decode(row, backend, sql_archive::decode_table_count)?;
        let entry: &mut TableConflicts = tables.entry(table).or_default();
        entry.conflicts = u64::try_from(rows).unwrap_or(0);
    }
    let rows = db
        .query_all(&sql_archive::archived_keys(backend, source, 0, limit))
        .await?;
    for row in &rows {
        let archived = decode(row, backend, sql_archive::decode_archived_key)?;
        let entry = tables.entry(archived.target).or_default();
        entry.conflict_keys.push(archived.key);
    }
    Ok(tables)
}

/// The keys of a soft job's rows on `target` a restore did not clear — gone, or soft-deleted
/// still (by the job, or since) —, at most `limit`, walking the source's audit batches in order
/// and stopping once `conflicts` keys are found.
pub async fn soft_not_restored(
    db: &Database,
    target: &Target,
    source: &str,
    (conflicts, limit): (u64, u32),
) -> Result<Vec<String>, EngineError> {
    let backend = db.backend();
    let column = soft_column(target)?;
    let wanted = conflicts.min(u64::from(limit));
    let (mut found, mut after) = (Vec::new(), 0);
    while (found.len() as u64) < wanted {
        let Some((batch_no, keys, _)) =
            soft_batch(db.connection(), backend, target, (source, after)).await?
        else {
            break;
        };
        after = batch_no;
        if keys.is_empty() {
            continue;
        }
        let cleared = sql_archive::cleared(backend, target, column, &keys);
        let cleared: BTreeSet<KeyValue> =
            batch::read_keys(&db.query_all(&cleared).await?, target.key_type)?
                .into_iter()
                .collect();
        let left = keys.into_iter().filter(|key| !cleared.contains(key));
        found.extend(left.map(|key| key.to_string()));
    }
    found.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
    Ok(found)
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
