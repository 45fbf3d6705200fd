//! One batch of a job across relations (issue 12): a window of parent keys, selected as a
//! one-table job selects them; every step of the job's plan drained for those parents in
//! bounded child batches, deepest first; then the parents' own transaction. Each transaction
//! is a batch like any other — lease check, rows, one audit row naming its table, counters — so
//! no transaction touches more than one table's batch size of rows, and each committed one
//! leaves every declared child row hanging off a parent that still exists.
//!
//! A crash or a cancel between two transactions leaves the checkpoint before the window: the
//! next run selects the same window (less what is gone) and drains what is left of it. A batch
//! that deletes rows first re-checks, under lock, that no row of the tables directly below is
//! left for the window (one inserted meanwhile); if one is, it rolls back and the window is
//! drained again, up to [`REDRAINS`] times.
//!
//! **Legal holds.** Every transaction reads the holds active on the job's tables as its first
//! statement (unreadable: it fails, nothing removed) and its selections leave the kept rows out
//! ([`reaper_core::sql::graph`] says which: held rows, what hangs off them, what they hang off).
//! The kept rows are counted once per window, in the parents' transaction — the one that moves
//! the checkpoint past the window, so a window drained again after a crash or a re-check is not
//! counted twice —, one audit row per table with kept rows (no keys, `rows_held`) before the
//! parents' own.

use std::time::Instant;

use chrono::{DateTime, Utc};
use reaper_core::catalog::{Mode, Target};
use reaper_core::graph::{Cascade, Effect, ResolvedStep};
use reaper_core::holds::ActiveHolds;
use reaper_core::sql::graph::Root;
use reaper_core::sql::rows::LockedJob;
use reaper_core::sql::{Backend, graph, ledger};
use reaper_core::validate::ValidatedJob;
use reaper_core::value::KeyValue;
use sea_orm::DatabaseTransaction;

use crate::batch::{
    Audited, BatchResult, LeaseHolder, begin, end_transaction, insert_chained_audit, lease_until,
    lock_job, read_keys, update_own_job,
};
use crate::database::{Database, count_of, execute, query_all, query_count};
use crate::error::{EngineError, Refusal};

/// How many times a window is drained again when child rows appeared meanwhile.
pub const REDRAINS: u32 = 5;

/// What one transaction of the graph did.
enum Outcome {
    /// Wrote `rows` (with its audit row when more than 0, and its counters) and counted `held`
    /// rows kept under legal holds: commit. `cut_at`: the parents' transaction removed its
    /// window only up to this key, to keep a database cascade within its bound; the next batch
    /// starts after it.
    Done {
        rows: u64,
        held: u64,
        cut_at: Option<KeyValue>,
    },
    /// Nothing was left to remove: nothing written, roll back.
    Nothing,
    /// Rows directly below appeared since they were drained (in this child's target): roll
    /// back and drain the window again.
    ChildrenLeft(String),
    /// The lease check refused (cancel requested or lease lost): roll back.
    Refused,
}

/// Runs the graph batch for the window of up to `limit` parent keys after `after`. The
/// result's `rows` counts every table's rows; `selected` and `last_key` are the parents'.
pub async fn run_graph_batch(
    db: &Database,
    job: &ValidatedJob,
    after: Option<&KeyValue>,
    limit: u32,
    holder: LeaseHolder<'_>,
) -> Result<BatchResult, EngineError> {
    let started = Instant::now();
    let parents = crate::batch::sample_keys(db, job, after, limit).await?;
    let Some(window_end) = parents.last().cloned() else {
        return Ok(committed((0, 0, 0), None, started));
    };
    let mut rows = 0;
    let mut appeared = String::new();
    for _ in 0..=REDRAINS {
        let drained = drain_all(db, job, &parents, holder, &mut rows).await?;
        let outcome = match drained {
            Outcome::Nothing => {
                let txn = begin(db).await?;
                let written =
                    parent_batch(&txn, db.backend(), job, &parents, &window_end, holder).await;
                settle(txn, written).await?
            }
            other => other,
        };
        let (removed, held, cut_at) = match outcome {
            Outcome::Done { rows, held, cut_at } => (rows, held, cut_at),
            Outcome::Nothing => (0, 0, None),
            Outcome::Refused => return Ok(BatchResult::Refused),
            Outcome::ChildrenLeft(table) => {
                appeared = table;
                continue;
            }
        };
        // A cut window reports a full one, so the pass goes on after the cut.
        let (selected, last_key) = match cut_at {
            Some(key) => (u64::from(limit), key),
            None => (parents.len() as u64, window_end),
        };
        let counts = (rows + removed, held, selected);
        return Ok(committed(counts, Some(last_key), started));
    }
    Err(EngineError::ChildrenKeptComing {
        table: appeared,
        rounds: REDRAINS + 1,
    })
}

fn committed(
    (rows, held, selected): (u64, u64, u64),
    last_key: Option<KeyValue>,
    started: Instant,
) -> BatchResult {
    BatchResult::Committed {
        rows,
        held,
        selected,
        last_key,
        elapsed: started.elapsed(),
        skipped_locked: false,
    }
}

/// Every step, deepest first, each drained to the end; adds what was removed to `rows`.
/// `Nothing` when every step is drained; `ChildrenLeft` or `Refused` stop the walk.
async fn drain_all(
    db: &Database,
    job: &ValidatedJob,
    parents: &[KeyValue],
    holder: LeaseHolder<'_>,
    rows: &mut u64,
) -> Result<Outcome, EngineError> {
    for step in &job.graph {
        loop {
            let txn = begin(db).await?;
            let written = child_batch(&txn, db.backend(), job, step, parents, holder).await;
            match settle(txn, written).await? {
                Outcome::Done { rows: removed, .. } => *rows += removed,
                Outcome::Nothing => break,
                stop => return Ok(stop),
            }
        }
    }
    Ok(Outcome::Nothing)
}

/// Commits a transaction that wrote (`Done`), rolls back any other.
async fn settle(
    txn: DatabaseTransaction,
    written: Result<Outcome, EngineError>,
) -> Result<Outcome, EngineError> {
    // Without the `failpoints` feature the fault point compiles to nothing.
    #[allow(clippy::bind_instead_of_map)]
    let written = written.and_then(|outcome| {
        if matches!(outcome, Outcome::Done { .. }) {
            fail::fail_point!("graph::before_commit", |_| Err(EngineError::Injected(
                "graph::before_commit"
            )));
        }
        Ok(outcome)
    });
    end_transaction(txn, written, |outcome| {
        matches!(outcome, Outcome::Done { .. })
    })
    .await
}

/// The start of every transaction of a graph job: the legal holds active now (read in it, so that
/// a hold committed before it began applies to it; unreadable holds fail it), then the lease
/// check. `None` when the lease check refuses.
async fn holds_then_lease(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    holder: LeaseHolder<'_>,
) -> Result<Option<(DateTime<Utc>, ActiveHolds, LockedJob)>, EngineError> {
    let now = Utc::now();
    let holds = read_holds(txn, backend, job, now).await?;
    Ok(lock_job(txn, backend, holder)
        .await?
        .map(|locked| (now, holds, locked)))
}

/// One child batch of `step`: its next rows hanging off the window, locked, checked for rows
/// directly below when they are deleted, removed, audited and counted.
async fn child_batch(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    step: &ResolvedStep,
    parents: &[KeyValue],
    holder: LeaseHolder<'_>,
) -> Result<Outcome, EngineError> {
    let Some((now, holds, locked)) = holds_then_lease(txn, backend, job, holder).await? else {
        return Ok(Outcome::Refused);
    };
    let child = step.target();
    let select = graph::select_step(backend, job, step, (parents, child.batch_size), &holds);
    let mut keys = read_keys(&query_all(txn, backend, &select).await?, child.key_type)?;
    if keys.is_empty() {
        return Ok(Outcome::Nothing);
    }
    if step.effect == Effect::Delete {
        let below = step.directly_below.iter().filter_map(|&i| job.graph.get(i));
        if let Some(table) = first_with_rows(txn, backend, job, below, (parents, &holds)).await? {
            return Ok(Outcome::ChildrenLeft(table));
        }
        // The rest of the selection is the next child batch's.
        keys.truncate(within_cascade_bounds(txn, backend, job, child, &keys).await?);
    }
    if job.mode == Mode::Archive {
        // The rows as they are before the step (deleted, or their column nulled).
        let at = (holder.job_id, now);
        crate::archive::copy_before_delete(txn, backend, child, &keys, at).await?;
    }
    execute(txn, backend, &removal(backend, step, &keys, now)?).await?;
    let what = Written {
        target: &child.name,
        mode: step_mode(job, step.effect),
        keys: &keys,
        checkpoint: None,
        held: Vec::new(),
    };
    record(txn, backend, job, (holder, &locked), &what, now).await
}

/// The mode a step's audit rows name: its effect, `archive` for the rows an archive job
/// deletes (copied first).
fn step_mode(job: &ValidatedJob, effect: Effect) -> &'static str {
    match effect {
        Effect::Delete if job.mode == Mode::Archive => Mode::Archive.as_str(),
        effect => effect.as_str(),
    }
}

/// The step's removal statement; a soft step without a `soft_delete_column` (which the
/// catalog refuses) is refused, never run as a delete.
fn removal(
    backend: Backend,
    step: &ResolvedStep,
    keys: &[KeyValue],
    now: DateTime<Utc>,
) -> Result<reaper_core::sql::Statement, EngineError> {
    graph::remove_step(backend, step, keys, now).ok_or_else(|| {
        EngineError::Corrupt(format!(
            "{}: soft_delete on target `{}`, which has no soft_delete_column",
            step.describe(),
            step.target().name
        ))
    })
}

/// The parents' transaction: the window's parents still matching and not kept by a hold,
/// locked; no row of a table directly below left for them (when they are deleted); removed,
/// audited with the window's kept rows per table, checkpoint moved to the end of the window.
async fn parent_batch(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    parents: &[KeyValue],
    window_end: &KeyValue,
    holder: LeaseHolder<'_>,
) -> Result<Outcome, EngineError> {
    let Some((now, holds, locked)) = holds_then_lease(txn, backend, job, holder).await? else {
        return Ok(Outcome::Refused);
    };
    let lock = graph::lock_parents(backend, job, parents, &holds);
    let mut keys = read_keys(&query_all(txn, backend, &lock).await?, job.target.key_type)?;
    let mut checkpoint = window_end.clone();
    let mut cut = false;
    if !keys.is_empty() {
        if matches!(job.mode, Mode::Hard | Mode::Archive) {
            let below = job.graph.iter().filter(|s| s.links.len() == 1);
            if let Some(table) = first_with_rows(txn, backend, job, below, (&keys, &holds)).await? {
                return Ok(Outcome::ChildrenLeft(table));
            }
            let within = within_cascade_bounds(txn, backend, job, &job.target, &keys).await?;
            if within < keys.len() {
                keys.truncate(within);
                cut = true;
                if let Some(last) = keys.last() {
                    checkpoint = last.clone();
                }
            }
        }
        if job.mode == Mode::Archive {
            let at = (holder.job_id, now);
            crate::archive::copy_before_delete(txn, backend, &job.target, &keys, at).await?;
        }
        execute(
            txn,
            backend,
            &graph::remove_parents(backend, job, &keys, now),
        )
        .await?;
    }
    // The window's rows kept under holds, counted once: up to the checkpoint (a cut window's
    // rest is the next window's).
    let through = parents
        .iter()
        .position(|key| *key == checkpoint)
        .map_or(parents, |end| &parents[..=end]);
    let held = count_kept(txn, backend, job, Root::Keys(through), &holds).await?;
    let what = Written {
        target: &job.target.name,
        mode: job.mode.as_str(),
        keys: &keys,
        checkpoint: Some(&checkpoint),
        held,
    };
    let outcome = record(txn, backend, job, (holder, &locked), &what, now).await?;
    Ok(match outcome {
        Outcome::Done { rows, held, .. } if cut => Outcome::Done {
            rows,
            held,
            cut_at: Some(checkpoint),
        },
        other => other,
    })
}

/// Rows kept under `holds` that hang off `parents` (or match the job's filter), per table in
/// plan order, the job's own table last: `(table, its mode or the step's effect, rows)`, tables
/// with none left out. A table reached by two paths is counted on each.
async fn count_kept<C: sea_orm::ConnectionTrait>(
    conn: &C,
    backend: Backend,
    job: &ValidatedJob,
    parents: Root<'_>,
    holds: &ActiveHolds,
) -> Result<Vec<(String, &'static str, u64)>, EngineError> {
    let mut kept = Vec::new();
    if holds.is_empty() {
        return Ok(kept);
    }
    let statements = job
        .graph
        .iter()
        .map(|step| {
            let statement = graph::count_kept(backend, job, step, parents, holds);
            (&step.target().name, step_mode(job, step.effect), statement)
        })
        .chain(std::iter::once((
            &job.target.name,
            job.mode.as_str(),
            graph::count_kept_roots(backend, job, parents, holds),
        )));
    for (table, mode, statement) in statements {
        let Some(statement) = statement else {
            continue;
        };
        let rows = query_count(conn, backend, &statement).await?;
        if rows > 0 {
            kept.push((table.clone(), mode, rows));
        }
    }
    Ok(kept)
}

/// The first statement of every graph transaction (and the read of the counts that leave kept
/// rows out): the legal holds active on any table of the job. A failure to read or apply them fails the transaction before it removes anything (fail
/// closed).
pub(crate) async fn read_holds<C: sea_orm::ConnectionTrait>(
    conn: &C,
    backend: Backend,
    job: &ValidatedJob,
    now: DateTime<Utc>,
) -> Result<ActiveHolds, EngineError> {
    let mut tables: Vec<&Target> = vec![&job.target];
    for step in &job.graph {
        if tables.iter().all(|table| table.name != step.target().name) {
            tables.push(step.target());
        }
    }
    crate::holds::read_active(conn, backend, &tables, now).await
}

/// How many of `keys` (rows of `table` about to be deleted, in key order) one transaction may
/// delete: the longest prefix whose database cascades stay within their accepted bounds. A
/// first row that alone cascades more is refused (permanent: the bound or the declaration has
/// to change).
async fn within_cascade_bounds(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    table: &Target,
    keys: &[KeyValue],
) -> Result<usize, EngineError> {
    let cascades: Vec<Cascade> = job
        .cascades
        .iter()
        .filter(|c| c.parent == table.name)
        .cloned()
        .collect();
    if cascades.is_empty() {
        return Ok(keys.len());
    }
    let mut cascaded = Vec::with_capacity(cascades.len());
    for cascade in &cascades {
        let statement = graph::count_cascade(backend, table, cascade, keys);
        let rows = query_all(txn, backend, &statement).await?;
        if rows.len() != keys.len() {
            return Err(EngineError::Corrupt(format!(
                "counting the rows the database would cascade to `{}`: {} counts came back for \
                 {} locked rows of `{}`; the batch was rolled back, nothing deleted",
                cascade.table,
                rows.len(),
                keys.len(),
                table.name
            )));
        }
        cascaded.push(rows.iter().map(count_of).collect::<Result<Vec<u64>, _>>()?);
    }
    let within = reaper_core::graph::within_bound(&cascades, &cascaded, keys.len());
    if within > 0 {
        return Ok(within);
    }
    let (cascade, rows) = cascades
        .iter()
        .zip(&cascaded)
        .map(|(cascade, counts)| (cascade, counts.first().copied().unwrap_or(0)))
        .find(|(cascade, rows)| *rows > cascade.max_rows_per_batch)
        .ok_or_else(|| {
            EngineError::Corrupt(format!(
                "the cascade bounds of `{}` allowed no row of the batch, yet no single row's \
                 cascade is over its bound; the batch was rolled back, nothing deleted",
                table.name
            ))
        })?;
    Err(Refusal::CascadeOverBound {
        target: table.name.clone(),
        key: keys[0].to_string(),
        table: cascade.table.clone(),
        rows,
        bound: cascade.max_rows_per_batch,
    }
    .into())
}

/// The first of `steps` with a row left for the window that no hold keeps (locked, so none is
/// added under this transaction on PostgreSQL and MySQL), by target name.
async fn first_with_rows<'s>(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    steps: impl Iterator<Item = &'s ResolvedStep>,
    (parents, holds): (&[KeyValue], &ActiveHolds),
) -> Result<Option<String>, EngineError> {
    for step in steps {
        let probe = graph::select_step(backend, job, step, (parents, 1), holds);
        if !query_all(txn, backend, &probe).await?.is_empty() {
            return Ok(Some(step.target().name.clone()));
        }
    }
    Ok(None)
}

/// What one graph transaction removed, for its audit rows and counters.
struct Written<'a> {
    target: &'a str,
    mode: &'a str,
    keys: &'a [KeyValue],
    checkpoint: Option<&'a KeyValue>,
    /// Rows kept under legal holds per table (the parents' transaction): `(table, mode, rows)`.
    held: Vec<(String, &'static str, u64)>,
}

/// The audit rows — one per table with kept rows (no keys), then the removed rows' (with the
/// kept rows of the job's own table) when there are any — chained in that order, and the
/// counters, in the batch's transaction.
async fn record(
    txn: &DatabaseTransaction,
    backend: Backend,
    job: &ValidatedJob,
    (holder, locked): (LeaseHolder<'_>, &LockedJob),
    what: &Written<'_>,
    now: DateTime<Utc>,
) -> Result<Outcome, EngineError> {
    let rows = what.keys.len() as u64;
    // The job's own table is counted last (see `count_kept`).
    let kept_own = match what.held.last() {
        Some((table, _, rows)) if table == what.target => *rows,
        _ => 0,
    };
    let others = &what.held[..what.held.len() - usize::from(kept_own > 0)];
    let audits = others
        .iter()
        .map(|(table, mode, held)| Audited {
            target: table,
            mode,
            keys: &[],
            held: *held,
        })
        .chain(std::iter::once(Audited {
            target: what.target,
            mode: what.mode,
            keys: what.keys,
            held: kept_own,
        }))
        .filter(|audited| !audited.keys.is_empty() || audited.held > 0);
    let mut chain = locked.clone();
    let (mut audit_rows, mut held) = (0, 0);
    for audited in audits {
        let head = insert_chained_audit(txn, backend, job, (holder, &chain), &audited, now).await?;
        chain = LockedJob {
            batches: chain.batches + 1,
            chain_head: head,
        };
        audit_rows += 1;
        held += audited.held;
    }
    let count = ledger::count_graph_batch(
        backend,
        (holder.job_id, holder.token),
        what.checkpoint,
        (rows, held, audit_rows),
        (audit_rows > 0).then_some(chain.chain_head.as_str()),
        (now, lease_until(now, holder.lease)),
    );
    update_own_job(txn, backend, &count, holder.job_id).await?;
    Ok(Outcome::Done {
        rows,
        held,
        cut_at: None,
    })
}

/// What the job would remove now, counting no further than `cap`: its own table's matching
/// rows and, across relations, every step's rows (a table reached by two paths counted on
/// each) — rows a legal hold keeps left out, so held rows never count against `max_rows`. The
/// `max_rows` pre-check (a graph job's `rows_deleted` counts every table's rows), the check at
/// the cap and the end-of-pass probe. Rows the database cascades are not counted (reaper never
/// counts them as its own).
pub async fn count_removable(
    db: &Database,
    job: &ValidatedJob,
    cap: u64,
) -> Result<u64, EngineError> {
    // Holds only lower the count: while every matching row, held or not, stays under `cap`,
    // that count answers every caller (under the cap, nothing / something left), and the
    // holds read — one more round trip on every small job — is not needed.
    let unheld = count_under(db, job, cap, &ActiveHolds::default()).await?;
    if unheld < cap {
        return Ok(unheld);
    }
    let holds = read_holds(db.connection(), db.backend(), job, Utc::now()).await?;
    if holds.is_empty() {
        return Ok(unheld);
    }
    count_under(db, job, cap, &holds).await
}

/// The rows the job's filter matches across its relations, less those `holds` keep, up to
/// `cap`.
async fn count_under(
    db: &Database,
    job: &ValidatedJob,
    cap: u64,
    holds: &ActiveHolds,
) -> Result<u64, EngineError> {
    let backend = db.backend();
    let roots = graph::count_removable_roots(backend, job, holds, Some(cap));
    let mut total = query_count(db.connection(), backend, &roots).await?;
    for step in &job.graph {
        if total >= cap {
            break;
        }
        let statement = graph::count_step(backend, job, step, Some(cap - total), holds);
        total += query_count(db.connection(), backend, &statement).await?;
    }
    Ok(total)
}

/// The rows of the job's own table its filter matches now that legal holds keep, and — across
/// relations — per table (its own included, tables with none left out), for a dry run.
pub async fn count_held(
    db: &Database,
    job: &ValidatedJob,
) -> Result<(u64, std::collections::BTreeMap<String, u64>), EngineError> {
    let backend = db.backend();
    let holds = read_holds(db.connection(), backend, job, Utc::now()).await?;
    let mut tables = std::collections::BTreeMap::new();
    for (table, _, rows) in count_kept(db.connection(), backend, job, Root::Filter, &holds).await? {
        *tables.entry(table).or_default() += rows;
    }
    let own = tables.get(&job.target.name).copied().unwrap_or(0);
    if !job.is_graph() {
        tables.clear();
    }
    Ok((own, tables))
}

/// A dry run's per-table counts (empty for a one-table job; held rows included, see
/// [`count_held`]) and the statements of one batch (as they run when no hold is active):
/// a one-table job's batch, or a graph batch's window selection, each step's child batch and
/// the parents' transaction.
pub async fn describe(
    db: &Database,
    job: &ValidatedJob,
    matching: u64,
    now: DateTime<Utc>,
) -> Result<(std::collections::BTreeMap<String, u64>, String), EngineError> {
    let backend = db.backend();
    if !job.is_graph() {
        let sql = crate::batch::describe_batch(backend, job, now);
        return Ok((Default::default(), sql));
    }
    let mut tables = std::collections::BTreeMap::from([(job.target.name.clone(), matching)]);
    let window = [KeyValue::Text("<window keys>".into())];
    let mut sql = vec![format!(
        "-- the window of parent keys\n{};",
        reaper_core::sql::select_keys(backend, job, None, job.batch_size)
    )];
    for step in &job.graph {
        let count = query_count(
            db.connection(),
            backend,
            &graph::count_step(backend, job, step, None, &ActiveHolds::default()),
        )
        .await?;
        *tables.entry(step.target().name.clone()).or_default() += count;
        let at = (&window[..], step.target().batch_size);
        let select = graph::select_step(backend, job, step, at, &ActiveHolds::default());
        let remove = removal(
            backend,
            step,
            &[KeyValue::Text("<locked keys>".into())],
            now,
        )?;
        sql.push(format!("-- {}: one child batch (lease check, audit row and counters as a batch's)\n{select};\n{remove};", step.describe()));
    }
    let lock = graph::lock_parents(backend, job, &window, &ActiveHolds::default());
    let remove =
        graph::remove_parents(backend, job, &[KeyValue::Text("<locked keys>".into())], now);
    sql.push(format!(
        "-- the parents (after a re-check of their direct children)\n{lock};\n{remove};"
    ));
    Ok((tables, sql.join("\n")))
}
