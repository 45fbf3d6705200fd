//! Running one job: claim it under a lease, re-validate it, then run batches until it is done,
//! its slice is used up, it is asked to stop, or it fails — and record which in the ledger.
//!
//! Lifecycle of a run:
//! 1. **Claim** (`pending` → `running`, attempt counted). Nothing to do if someone else holds
//!    a live lease or the job is finished.
//! 2. **Re-validate** against the current catalog with the job's own reference time (an
//!    `older_than` cutoff never moves between retries). Invalid → `dead`, nothing deleted.
//! 3. **Dry run**: count, sample keys, the SQL; writes nothing to the target → `done`.
//! 4. **`max_rows` pre-check** on a fresh job: more matching rows than the cap → `dead`,
//!    nothing deleted. Rows a legal hold keeps are not counted (the job leaves them).
//! 5. **Batches** from the committed checkpoint. Each batch is capped so the job can never
//!    pass `max_rows`. On PostgreSQL a batch waits at most `lock_timeout` for a row another
//!    transaction holds; past that it reruns with `SKIP LOCKED` and the pass is marked. A batch
//!    whose key window holds fewer keys than it asked for ends the pass (no empty batch
//!    transaction to find out); only a marked pass can have left rows behind, so
//!    only then one probe looks for them, and if there are any a new pass starts (at most
//!    [`MAX_PASSES`], then the job retries later).
//! 6. **Slices**: after `slice` of wall time, or when asked to stop (shutdown), the job goes
//!    back to `pending` and the caller re-enqueues its continuation. The batch in flight always
//!    commits or rolls back first.
//! 7. **Failures**: transient → `pending` with `run_after` (exponential backoff with jitter)
//!    while attempts remain, else `dead`; permanent → `dead` at once. The error is kept.
//! 8. **Throttle**: each batch runs under its target's effective throttle — the configured one
//!    with the operators' live control applied (`reaper_core::controls`, re-read at most every
//!    [`CONTROLS_REFRESH`]). While an operator has the target paused the run waits at its batch
//!    boundary, keeping its lease and checkpoint, until resumed (or its slice ends: it goes back
//!    to the queue as usual). A capped target's batch books its rows on the target's budget
//!    shared by every daemon and waits for its slot; it sleeps the target's pause after it
//!    commits, and with an adaptive batch size the next batch grows or shrinks toward the
//!    target duration. Sleeps end when the run is asked to stop.
//!    With `[database.health]`, each batch then waits while the database's health holds it
//!    (replica lag, load, lock waits reaper causes; [`crate::health`]), and a signal over its
//!    critical level ends the run for now: the job goes back `pending` with its checkpoint,
//!    not before `stop_for`, its attempt given back.
//! 9. **Cancel**: once somebody asked, the next batch transaction refuses to run (its lease
//!    check sees the request), and the job ends `cancelled` with what it had deleted.
//! 10. **Pause**: a pause request sets the same stop mark, so it stops the same way; the job
//!     is then left `paused` with its checkpoint (no worker claims it) until resumed.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use reaper_core::catalog::{Catalog, Mode};
use reaper_core::controls::Effective;
use reaper_core::job::JobRequest;
use reaper_core::lifecycle::{JobResult, JobState, JobSummary, RunNote};
use reaper_core::plan_guard::Verdict;
use reaper_core::sql;
use reaper_core::sql::{Backend, RowLocking};
use reaper_core::strategy::{
    self, ChoiceReason, PHYSICAL_PASS, Strategy, StrategyChoice, StrategySetting, Tid,
};
use reaper_core::validate::{ValidatedJob, validate};
use reaper_core::value::KeyValue;
use tracing::Instrument;

use crate::batch::{self, BatchResult, LeaseHolder};
use crate::database::Database;
use crate::error::{EngineError, ErrorClass, Refusal};
use crate::health::HealthGate;
use crate::ledger::{self, ClaimFrom, JobRecord, Transition};
use crate::pacing::{CONTROLS_REFRESH, Pacer, sleep_unless_stopped};

/// Keyset passes one job may make before rows still locked by others count as a transient
/// failure (and the job is retried later).
pub const MAX_PASSES: i64 = 3;

/// Sample keys in a dry-run report.
pub const DRY_RUN_SAMPLE: u32 = 10;

/// How a worker runs jobs.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// This worker's unique name (recorded as the lease owner).
    pub owner: String,
    /// Lease length; renewed by every batch.
    pub lease: Duration,
    /// Wall time one run may take before it hands the job back as a continuation.
    pub slice: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// What a stop request leaves: `pending` for the queue (a daemon), or `paused` for
    /// `reaper purge --resume` (a foreground run).
    pub stop_as: StopAs,
    /// Which states a run may claim a job from.
    pub claim_from: ClaimFrom,
    /// Live controls, budget bookings and adapted sizes per target, shared by every run of this
    /// process.
    pub pacer: Arc<Pacer>,
    /// Live figures of the current run, for progress displays.
    pub progress: Arc<RunProgress>,
    /// The database's health signals, shared by every run of this process (none by default).
    pub health: Arc<HealthGate>,
}

impl RunSettings {
    /// Settings for a daemon's worker: slices end as continuations, stops leave jobs `pending`.
    pub fn for_worker(
        owner: String,
        lease: Duration,
        slice: Duration,
        retry_base: Duration,
        retry_max: Duration,
    ) -> Self {
        Self {
            owner,
            lease,
            slice,
            retry_base,
            retry_max,
            stop_as: StopAs::Pending,
            claim_from: ClaimFrom::Queue,
            pacer: Arc::default(),
            progress: Arc::default(),
            health: Arc::default(),
        }
    }
}

/// What a run asked to stop leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAs {
    /// `pending`: the queue (or the reconciler) hands it to a worker again.
    Pending,
    /// `paused`: only an explicit resume continues it.
    Paused,
}

/// Figures of the run in progress, updated after every batch.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Rows deleted by this run so far.
    pub rows: AtomicU64,
    /// Batches committed by this run so far.
    pub batches: AtomicU64,
    /// The size the next batch asks for (changes with an adaptive batch size).
    pub batch_size: AtomicU32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Finished: every matching row is gone (or the dry run is reported).
    Done,
    /// Slice used up or stop requested; the job is `pending` again and must be re-enqueued.
    Continue,
    /// Stopped on request under [`StopAs::Paused`]: the job is `paused` until resumed.
    Paused,
    /// Transient failure; `pending` again, to be re-enqueued not before `run_after`.
    RetryLater {
        /// The error.
        error: String,
        /// Earliest next run.
        run_after: DateTime<Utc>,
    },
    /// Stopped for now by the database's health (a signal over its critical level); `pending`
    /// again with its checkpoint (`paused` under [`StopAs::Paused`]), to be re-enqueued not
    /// before `run_after`. Not a failure: the attempt is given back.
    Throttled {
        /// Why, as kept in the job's last error.
        reason: String,
        /// Earliest next run.
        run_after: DateTime<Utc>,
    },
    /// Permanent failure or attempts exhausted.
    Dead {
        /// The error.
        error: String,
    },
    /// Stopped at a batch boundary because somebody asked.
    Cancelled,
    /// Finished already, unknown, or held by another worker's live lease: nothing done.
    NotClaimed,
    /// The lease was lost mid-run (another worker took over); nothing more was written.
    LeaseLost,
}

/// What one run did, for logs, metrics and benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// Batches committed in this run.
    pub batches: u64,
    /// Rows deleted in this run.
    pub rows: u64,
    /// The longest batch transaction of this run.
    pub longest_batch: Duration,
    /// Time spent inside batch transactions (BEGIN to COMMIT) in this run.
    pub batch_time: Duration,
    /// The ledger row as claimed (None when not claimed).
    pub job: Option<JobRecord>,
}

/// A batch's booking on its target's shared budget.
#[derive(Debug, Clone, Copy)]
struct Booking {
    /// The rows booked.
    rows: u64,
    /// At this many rows per second.
    rate: u32,
    /// When its slot begins (this process's clock).
    slot: Instant,
    /// How late after its slot the batch started.
    late: Duration,
}

/// What [`Run::pace`] decided.
enum Paced {
    /// The batch may start.
    Go,
    /// Asked to stop meanwhile.
    Stop,
    /// The slice ended while the target was paused.
    SliceOver,
}

/// What a dry run reports (stored as the job's result).
pub use reaper_core::lifecycle::DryRunReport;

/// Runs job `id` once, as described in the module docs. `should_stop` is polled between
/// batches. Errors are returned only when the ledger itself cannot be written; the job then
/// stays claimed until its lease expires and is retried from its checkpoint.
pub async fn run_job(
    db: &Database,
    catalog: &Catalog,
    id: &str,
    settings: &RunSettings,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<RunReport, EngineError> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now();
    let lease = ledger::Lease {
        id,
        owner: &settings.owner,
        token: &token,
        now,
        lease_until: batch::lease_until(now, settings.lease),
    };
    // A job out of attempts is not claimed (its attempts never exceed the limit); its lease is
    // taken without counting, only to record it dead with the reason.
    let claimed = match ledger::claim(db, &lease, settings.claim_from).await? {
        Some(job) => Some((job, Attempt::Counted)),
        None => ledger::claim_used_up(db, &lease, settings.claim_from)
            .await?
            .map(|job| (job, Attempt::UsedUp)),
    };
    let Some((job, attempt)) = claimed else {
        return Ok(RunReport {
            outcome: RunOutcome::NotClaimed,
            batches: 0,
            rows: 0,
            longest_batch: Duration::ZERO,
            batch_time: Duration::ZERO,
            job: None,
        });
    };
    let span =
        tracing::info_span!("job", job_id = %job.id, target = %job.target, attempt = job.attempts);
    run_claimed(db, catalog, &job, attempt, &token, settings, should_stop)
        .instrument(span)
        .await
}

/// How the claim counted: an attempt of the job, or none because its attempts are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Counted,
    UsedUp,
}

async fn run_claimed(
    db: &Database,
    catalog: &Catalog,
    job: &JobRecord,
    attempt: Attempt,
    token: &str,
    settings: &RunSettings,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Result<RunReport, EngineError> {
    let mut run = Run {
        db,
        catalog,
        settings,
        job,
        token,
        batches: 0,
        rows: 0,
        longest_batch: Duration::ZERO,
        batch_time: Duration::ZERO,
        note: job
            .result
            .as_deref()
            .and_then(JobResult::parse)
            .and_then(|result| result.running().copied()),
    };

    let outcome = if job.cancel_requested_at.is_some() {
        let rows_deleted = u64::try_from(job.rows_deleted).unwrap_or(0);
        Ok(run.cancelled(rows_deleted, job.passes).await?)
    } else if attempt == Attempt::UsedUp {
        Err(Refusal::AttemptsUsedUp {
            max_attempts: job.max_attempts,
            last_error: job.last_error.clone(),
        }
        .into())
    } else {
        match prepare(job, catalog) {
            Ok(validated) => run.execute(&validated, should_stop).await,
            Err(error) => Err(error),
        }
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => run.fail(&error).await?,
    };
    run.report_end(&outcome);
    Ok(RunReport {
        outcome,
        batches: run.batches,
        rows: run.rows,
        longest_batch: run.longest_batch,
        batch_time: run.batch_time,
        job: Some(job.clone()),
    })
}

/// Parses and validates the stored request with the job's reference time.
pub fn prepare(job: &JobRecord, catalog: &Catalog) -> Result<ValidatedJob, EngineError> {
    let request: JobRequest = serde_json::from_str(&job.request).map_err(|error| {
        EngineError::Corrupt(format!("the stored job request is unreadable: {error}"))
    })?;
    Ok(validate(&request, catalog, job.created_at)?)
}

/// One run of a claimed job: what it holds (the lease token) and what it has done so far.
struct Run<'a> {
    db: &'a Database,
    /// The catalog the job was validated against (a restore's tables).
    catalog: &'a Catalog,
    settings: &'a RunSettings,
    /// The ledger row as claimed.
    job: &'a JobRecord,
    token: &'a str,
    batches: u64,
    rows: u64,
    longest_batch: Duration,
    batch_time: Duration,
    /// The strategy the job runs with (chosen at its start, kept in the ledger's result).
    note: Option<RunNote>,
}

/// Where a run is in its walk over the job's keys: the checkpoint, the pass, what the job has
/// deleted over all its runs, and the size the next batch asks for.
struct Walk<'j> {
    job: &'j ValidatedJob,
    checkpoint: Option<KeyValue>,
    /// In the physical pass ([`PHYSICAL_PASS`]): the last tuple position it covered.
    physical_after: Option<Tid>,
    rows_deleted: u64,
    passes: i64,
    /// This pass used `SKIP LOCKED`, so it may have passed over matching rows.
    pass_skipped_rows: bool,
    batch_size: u32,
    /// Start of the run's slice.
    started: Instant,
    /// The throttle the next batch runs under (set before each batch).
    effective: Effective,
    /// What the next batch booked on its target's shared budget.
    booked: Option<Booking>,
}

impl<'j> Walk<'j> {
    /// Picks the walk up where the ledger row says the job left it.
    fn resume(
        record: &JobRecord,
        job: &'j ValidatedJob,
        pacer: &Pacer,
    ) -> Result<Self, EngineError> {
        // The pass number says the checkpoint's format: a tuple position in the physical pass,
        // a key in keyset passes.
        let (checkpoint, physical_after) = match (&record.checkpoint, record.passes) {
            (None, PHYSICAL_PASS) => (None, Some(Tid::START)),
            (Some(text), PHYSICAL_PASS) => {
                let after = strategy::decode_checkpoint(text).ok_or_else(|| {
                    EngineError::Corrupt(format!(
                        "job {}: its checkpoint `{text}` should be a block position \
                         `tid:(BLOCK,OFFSET)` (the job is in its physical-order pass) and cannot \
                         be read; the ledger row was changed by hand or by another version",
                        record.id
                    ))
                })?;
                (None, Some(after))
            }
            (Some(text), _) => (Some(batch::parse_key(job.target.key_type, text)?), None),
            (None, _) => (None, None),
        };
        // An adaptive size starts where the target's last batches left it (in this process),
        // so a new slice or job does not pay for a bad starting size again.
        let batch_size = match job.target.throttle.adaptive {
            Some(adaptive) => pacer
                .adapted_size(&job.target.name)
                .map_or(job.batch_size, |size| {
                    size.clamp(adaptive.min.min(job.batch_size), adaptive.max)
                }),
            None => job.batch_size,
        };
        Ok(Self {
            job,
            checkpoint,
            physical_after,
            rows_deleted: u64::try_from(record.rows_deleted).unwrap_or(0),
            passes: record.passes,
            pass_skipped_rows: record.locked_rows_skipped,
            batch_size,
            started: Instant::now(),
            effective: Effective::of(&job.target.throttle, None),
            booked: None,
        })
    }

    /// Nothing done yet: the `max_rows` pre-check applies.
    fn is_fresh(&self) -> bool {
        self.checkpoint.is_none() && self.rows_deleted == 0 && self.passes == 1
    }

    /// Rows the job may still delete.
    fn remaining(&self) -> u64 {
        self.job.max_rows.saturating_sub(self.rows_deleted)
    }

    /// The size the next batch asks for, within an operator's largest batch.
    fn asked(&self) -> u32 {
        self.effective
            .batch_cap
            .map_or(self.batch_size, |cap| self.batch_size.min(cap))
    }

    /// What the next batch asks for: its size, never past `max_rows`.
    fn limit(&self) -> u32 {
        let asked = self.asked();
        u32::try_from(self.remaining().min(u64::from(asked))).unwrap_or(asked)
    }

    /// The ledger's `locking` for the next batch: once a pass skipped rows, it keeps skipping.
    fn locking(&self) -> RowLocking {
        if self.pass_skipped_rows {
            RowLocking::SkipLocked
        } else {
            RowLocking::Direct
        }
    }
}

impl Run<'_> {
    /// Runs the job's batches (or its dry run) until it ends, its slice is over or it is asked
    /// to stop.
    async fn execute(
        &mut self,
        job: &ValidatedJob,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RunOutcome, EngineError> {
        if job.dry_run {
            let result = JobResult::DryRun(dry_run(self.db, job).await?).to_json();
            return self
                .finish(&Transition::Done { result: &result }, RunOutcome::Done)
                .await;
        }
        if job.mode == Mode::Restore {
            return self.restore(job, should_stop).await;
        }
        let mut walk = Walk::resume(self.job, job, &self.settings.pacer)?;
        let mut counted = None;
        if walk.is_fresh() && !job.stop_at_max_rows {
            // Rows a legal hold keeps are not counted: the job leaves them.
            let cap = job.max_rows + 1;
            let matching = crate::graph_run::count_removable(self.db, job, cap).await?;
            job.check_max_rows(matching).map_err(Refusal::from)?;
            counted = Some(matching);
            // The slice is for batches: it starts after the pre-check.
            walk.started = Instant::now();
        }
        let progress = &self.settings.progress;
        progress
            .batch_size
            .store(walk.batch_size, Ordering::Relaxed);
        if walk.is_fresh()
            && self.note.is_none()
            && !self.choose_strategy(&mut walk, counted).await?
        {
            return Ok(RunOutcome::LeaseLost);
        }
        if walk.physical_after.is_some()
            && let ControlFlow::Break(outcome) = self.physical_pass(&mut walk, should_stop).await?
        {
            return Ok(outcome);
        }
        loop {
            if let ControlFlow::Break(outcome) = self.before_batch(&mut walk, should_stop).await? {
                return Ok(outcome);
            }
            let Some(window_exhausted) = self.batch(&mut walk).await? else {
                // Refused: a cancel request, unless the lease is lost (then `cancelled` finds
                // out, and writes nothing).
                return self.cancelled(walk.rows_deleted, walk.passes).await;
            };
            if !window_exhausted {
                let pause = job.target.throttle.pause;
                if !pause.is_zero() && !sleep_unless_stopped(pause, should_stop).await {
                    return self.stop().await;
                }
                continue;
            }
            if let ControlFlow::Break(outcome) = self.end_of_pass(&mut walk).await? {
                return Ok(outcome);
            }
        }
    }

    /// A restore job ([`reaper_core::restore`]): batches over its source job's archived rows
    /// (or soft-delete batches) from its checkpoint until none is left, the end of its slice, or
    /// a stop, cancel or pause — like any job's.
    async fn restore(
        &mut self,
        job: &ValidatedJob,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RunOutcome, EngineError> {
        let source = self.restore_source(job).await?;
        let tables = crate::archive::RestoreTables::of(self.catalog, &job.target.name);
        let mut after = match self.job.checkpoint.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                EngineError::Corrupt(format!(
                    "job {}: its checkpoint `{text}` should be a restore position (a number)",
                    self.job.id
                ))
            })?),
        };
        let mut restored = u64::try_from(self.job.rows_deleted).unwrap_or(0);
        let started = Instant::now();
        loop {
            if should_stop() {
                return self.stop().await;
            }
            if self.settings.stop_as == StopAs::Pending && started.elapsed() >= self.settings.slice
            {
                return self
                    .finish(&Transition::Continue, RunOutcome::Continue)
                    .await;
            }
            let result = crate::archive::run_restore_batch(
                self.db,
                job,
                (&source, &tables),
                (after, job.batch_size),
                self.holder(),
            )
            .instrument(self.batch_span())
            .await?;
            let crate::archive::RestoreBatch::Committed {
                restored: rows,
                last,
                elapsed,
                ..
            } = result
            else {
                return self.cancelled(restored, self.job.passes).await;
            };
            let Some(last) = last else {
                return self.restored(job, &source, restored).await;
            };
            crate::instruments::batch_committed(&job.target.name, job.mode.as_str(), rows, elapsed);
            self.book(rows, elapsed);
            restored += rows;
            after = Some(last);
            // At the target's pace, as its deletes go.
            let pause = job.target.throttle.pause;
            if !pause.is_zero() && !sleep_unless_stopped(pause, should_stop).await {
                return self.stop().await;
            }
        }
    }

    /// The job a restore job undoes, read from its request and the ledger.
    async fn restore_source(
        &self,
        job: &ValidatedJob,
    ) -> Result<crate::archive::RestoreSource, EngineError> {
        let request: JobRequest = serde_json::from_str(&self.job.request).map_err(|error| {
            EngineError::Corrupt(format!("the stored job request is unreadable: {error}"))
        })?;
        let source_id = request.restore.ok_or_else(|| {
            EngineError::Corrupt(format!("restore job {} names no source job", self.job.id))
        })?;
        let source = ledger::get(self.db, &source_id).await?.ok_or_else(|| {
            EngineError::Corrupt(format!("the source job {source_id} is not in the ledger"))
        })?;
        crate::archive::restore_source(&source, &job.target)
    }

    /// Records a restore job `done`: its summary with what it restored and the conflicts left
    /// (their keys: the source's own table's, and per table across relations).
    async fn restored(
        &self,
        job: &ValidatedJob,
        source: &crate::archive::RestoreSource,
        restored: u64,
    ) -> Result<RunOutcome, EngineError> {
        use reaper_core::lifecycle::RestoreReport;
        let conflicts = u64::try_from(
            ledger::get(self.db, &self.job.id)
                .await?
                .map_or(0, |job| job.rows_held),
        )
        .unwrap_or(0);
        let shown = RestoreReport::KEYS_SHOWN;
        let (conflict_keys, tables) = match source.kind {
            reaper_core::restore::SourceKind::Archive => {
                let mut tables =
                    crate::archive::still_archived(self.db, &source.job_id, shown).await?;
                let own = tables
                    .get(&job.target.name)
                    .map(|table| table.conflict_keys.clone())
                    .unwrap_or_default();
                let root = &job.target.name;
                if self.catalog.resolved_plan(root, Mode::Archive).is_empty() {
                    tables.clear();
                }
                (own, tables)
            }
            reaper_core::restore::SourceKind::Soft => {
                let limits = (conflicts, shown);
                let keys =
                    crate::archive::soft_not_restored(self.db, &job.target, &source.job_id, limits)
                        .await?;
                (keys, Default::default())
            }
        };
        let mut result = self
            .summary(restored, self.job.passes, false, false)
            .await?;
        if let JobResult::Summary(summary) = &mut result {
            summary.restore = Some(RestoreReport {
                source_job: source.job_id.clone(),
                restored,
                conflicts,
                conflict_keys,
                tables,
            });
        }
        let result = result.to_json();
        self.finish(&Transition::Done { result: &result }, RunOutcome::Done)
            .await
    }

    /// Everything that may end the run before its next batch: a stop request, the end of the
    /// slice, the `max_rows` cap, a stop or the slice's end while the target is paused or the
    /// batch waits for its rows-per-second slot.
    async fn before_batch(
        &self,
        walk: &mut Walk<'_>,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<ControlFlow<RunOutcome>, EngineError> {
        if should_stop() {
            return Ok(ControlFlow::Break(self.stop().await?));
        }
        if self.slice_over(walk) {
            let outcome = self
                .finish(&Transition::Continue, RunOutcome::Continue)
                .await?;
            return Ok(ControlFlow::Break(outcome));
        }
        if walk.remaining() == 0 {
            return Ok(ControlFlow::Break(self.at_max_rows(walk).await?));
        }
        let outcome = match self.pace(walk, should_stop).await? {
            Paced::Go => return self.wait_for_health(walk, should_stop).await,
            Paced::Stop => self.stop().await?,
            Paced::SliceOver => {
                self.finish(&Transition::Continue, RunOutcome::Continue)
                    .await?
            }
        };
        Ok(ControlFlow::Break(outcome))
    }

    /// The run's slice is used up (a foreground run has no queue to share: its slice never
    /// ends).
    fn slice_over(&self, walk: &Walk<'_>) -> bool {
        self.settings.stop_as == StopAs::Pending && walk.started.elapsed() >= self.settings.slice
    }

    /// Waits while the database's health holds the batches, reading it again every
    /// `sample_every` and keeping the lease alive. Breaks when the run ends meanwhile: a stop
    /// request, the end of the slice, or a signal over its critical level (the job then waits
    /// `stop_for` in the queue).
    async fn wait_for_health(
        &self,
        walk: &Walk<'_>,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<ControlFlow<RunOutcome>, EngineError> {
        let gate = &self.settings.health;
        let mut paused_at: Option<Instant> = None;
        let mut renewed_at = Instant::now();
        let mut thresholds = walk.effective.thresholds.clone();
        loop {
            match gate.check_under(&walk.job.target.name, &thresholds).await {
                reaper_core::health::Verdict::Go => {
                    if let Some(at) = paused_at {
                        tracing::info!(
                            message = "Database health allows batches again.",
                            paused_ms = at.elapsed().as_millis()
                        );
                    }
                    return Ok(ControlFlow::Continue(()));
                }
                reaper_core::health::Verdict::Stop { why, .. } => {
                    let run_after = batch::lease_until(Utc::now(), gate.rules().stop_for);
                    let outcome = RunOutcome::Throttled {
                        reason: why.clone(),
                        run_after,
                    };
                    let paused = self.settings.stop_as == StopAs::Paused;
                    let transition = Transition::Throttled {
                        reason: &why,
                        run_after,
                        paused,
                    };
                    return Ok(ControlFlow::Break(self.finish(&transition, outcome).await?));
                }
                reaper_core::health::Verdict::Pause { why, .. } => {
                    if paused_at.is_none() {
                        tracing::info!(message = "Pausing batches for the database's health.", %why);
                        paused_at = Some(Instant::now());
                    }
                }
            }
            if self.slice_over(walk) {
                let outcome = self
                    .finish(&Transition::Continue, RunOutcome::Continue)
                    .await?;
                return Ok(ControlFlow::Break(outcome));
            }
            if renewed_at.elapsed() >= self.settings.lease / 3 {
                let now = Utc::now();
                let until = batch::lease_until(now, self.settings.lease);
                ledger::renew_lease(self.db, &self.job.id, self.token, now, until).await?;
                renewed_at = Instant::now();
            }
            if !sleep_unless_stopped(gate.rules().sample_every, should_stop).await {
                return Ok(ControlFlow::Break(self.stop().await?));
            }
            // An operator's change to the target's thresholds applies while the batch waits.
            let control = self
                .settings
                .pacer
                .control(self.db, &walk.job.target.name)
                .await?;
            thresholds = Effective::of(&walk.job.target.throttle, control.as_ref()).thresholds;
        }
    }

    /// The job deleted `max_rows`: done if nothing matches any more or it may stop at its cap;
    /// refused if rows still match and it may not.
    async fn at_max_rows(&self, walk: &Walk<'_>) -> Result<RunOutcome, EngineError> {
        let job = walk.job;
        let more = crate::graph_run::count_removable(self.db, job, 1).await? > 0;
        if more && job.stop_at_max_rows {
            tracing::info!(
                message = "Stopped at max_rows; the matching rows left wait for a later job.",
                max_rows = job.max_rows
            );
            return self.done(walk, true).await;
        }
        if more {
            return Err(Refusal::MoreRowsAtMaxRows {
                max_rows: job.max_rows,
                rows_deleted: walk.rows_deleted,
            }
            .into());
        }
        self.done(walk, false).await
    }

    /// Waits until the next batch may start, and leaves the throttle it runs under in
    /// `walk.effective`: while an operator has the target paused (the lease renewed, the
    /// checkpoint kept), then, on a capped target, for the batch's slot in the budget every
    /// daemon shares (booked before the batch runs, so daemons cannot all start at once; what it
    /// does not use is given back after it). A pause that comes while it waits for its slot
    /// holds it too: the pause reaches every batch that starts a refresh after it.
    async fn pace(
        &self,
        walk: &mut Walk<'_>,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Paced, EngineError> {
        let target = &walk.job.target.name;
        let mut told = false;
        loop {
            let control = self.settings.pacer.control(self.db, target).await?;
            walk.effective = Effective::of(&walk.job.target.throttle, control.as_ref());
            if let Some(booking) = &mut walk.booked {
                // Back from the wait for its slot: the batch goes unless a pause came meanwhile
                // (then its slot is given back and it waits with the others).
                if !walk.effective.paused {
                    booking.late = booking.slot.elapsed();
                    return Ok(Paced::Go);
                }
                self.settle_booking(walk, 0);
            }
            if walk.effective.paused {
                if !told {
                    tracing::info!(
                        message =
                            "Target paused by an operator; the job waits at its batch boundary.",
                        paused_by = control.as_ref().map(|c| c.changed_by.as_str())
                    );
                    told = true;
                }
                if self.slice_over(walk) {
                    return Ok(Paced::SliceOver);
                }
                // A refused renewal (lease lost, or a cancel or pause of the job asked): the
                // next batch's lease check says which.
                if !self.renew_lease(CONTROLS_REFRESH).await? {
                    return Ok(Paced::Go);
                }
                if !sleep_unless_stopped(CONTROLS_REFRESH, should_stop).await {
                    return Ok(Paced::Stop);
                }
                continue;
            }
            let Some(rate) = walk.effective.max_rows_per_second else {
                return Ok(Paced::Go);
            };
            let rows = u64::from(walk.limit());
            let wait = self
                .settings
                .pacer
                .book(self.db, target, rows, rate)
                .await?;
            walk.booked = Some(Booking {
                rows,
                rate,
                // On this process's clock, from the reply (timing it from the request would
                // count the round trip as lateness and slow every daemon's share of the line).
                slot: Instant::now() + wait,
                late: Duration::ZERO,
            });
            if wait.is_zero() {
                return Ok(Paced::Go);
            }
            // Jobs sharing the target's budget can wait longer than one batch's share: keep the
            // lease alive across the wait (a lost renewal shows in the next batch).
            if wait >= self.settings.lease / 3 {
                self.renew_lease(wait).await?;
            }
            if !sleep_unless_stopped(wait, should_stop).await {
                self.settle_booking(walk, 0);
                return Ok(Paced::Stop);
            }
        }
    }

    /// Extends the lease to `extra` past a full lease from now. False: the lease is lost or the
    /// job is being stopped.
    async fn renew_lease(&self, extra: Duration) -> Result<bool, EngineError> {
        let now = Utc::now();
        ledger::renew_lease(
            self.db,
            &self.job.id,
            self.token,
            now,
            batch::lease_until(now, self.settings.lease + extra),
        )
        .await
    }

    /// Settles the booking of the batch that removed `rows`: what it did not use goes back,
    /// how late it started after its slot goes forward.
    fn settle_booking(&self, walk: &mut Walk<'_>, rows: u64) {
        if let Some(booking) = walk.booked.take() {
            self.settings.pacer.settle(
                &walk.job.target.name,
                booking.rows,
                rows,
                booking.rate,
                booking.late,
            );
        }
    }

    /// Runs the next batch and books what it did. `None`: its lease check refused it.
    /// `Some(true)`: its window held fewer keys than asked for, so the pass reached the end of
    /// the keyset (without another, empty, batch transaction to find out).
    async fn batch(&mut self, walk: &mut Walk<'_>) -> Result<Option<bool>, EngineError> {
        let job = walk.job;
        let limit = walk.limit();
        let holder = self.holder();
        let batch_span = self.batch_span();
        let after = walk.checkpoint.as_ref();
        let result = if !job.is_graph() {
            let count_held = walk.passes == self.first_pass();
            let at = (after, limit);
            batch::run_batch_in_pass(self.db, job, at, holder, walk.locking(), count_held)
                .instrument(batch_span)
                .await?
        } else {
            crate::graph_run::run_graph_batch(self.db, job, after, limit, holder)
                .instrument(batch_span)
                .await?
        };
        let BatchResult::Committed {
            rows,
            selected,
            last_key,
            elapsed,
            skipped_locked,
            ..
        } = result
        else {
            return Ok(None);
        };
        self.settle_booking(walk, rows);
        walk.pass_skipped_rows |= skipped_locked;
        if selected > 0 {
            tracing::debug!(
                message = "Committed batch.",
                rows,
                elapsed_ms = elapsed.as_secs_f64() * 1e3
            );
            crate::instruments::batch_committed(&job.target.name, job.mode.as_str(), rows, elapsed);
            self.book(rows, elapsed);
            walk.rows_deleted += rows;
            walk.checkpoint = last_key;
            // Only a full window measures the size: a short one ends the pass.
            if selected == u64::from(limit) && limit == walk.asked() {
                self.adapt_batch_size(walk, elapsed);
            }
        }
        Ok(Some(selected < u64::from(limit)))
    }

    /// The job's first pass over its rows, the one that counts the rows it leaves under legal
    /// holds: the physical pass when the job walks the heap first, else the first keyset pass.
    fn first_pass(&self) -> i64 {
        match self.note {
            Some(note) if note.strategy.strategy == Strategy::Physical => PHYSICAL_PASS,
            _ => 1,
        }
    }

    /// Chooses the fresh job's strategy and records it: a physical job starts its physical pass
    /// (pass 0) with the note as its result; a keyset job on PostgreSQL keeps the note (and
    /// its estimate) as its result; elsewhere the keyset is the only walk and nothing is written.
    /// A job the pre-check counted (`counted`) within one batch is settled by the count: no
    /// estimate, and its note is written only with its summary (its one batch ends it; should
    /// it run again, its summary has no strategy). False: the lease is lost.
    async fn choose_strategy(
        &mut self,
        walk: &mut Walk<'_>,
        counted: Option<u64>,
    ) -> Result<bool, EngineError> {
        let choice = strategy_for(self.db, walk.job, counted).await?;
        guard_plan(self.db, walk.job, &choice).await?;
        tracing::info!(
            message = "Chose the job's strategy.",
            strategy = %choice.strategy,
            reason = ?choice.reason,
            estimate = ?choice.estimate
        );
        let note = RunNote {
            strategy: choice,
            physical_rows: None,
        };
        self.note = Some(note);
        let text = JobResult::Running(note).to_json();
        let now = Utc::now();
        let statement = match choice.strategy {
            Strategy::Physical => {
                walk.passes = PHYSICAL_PASS;
                walk.physical_after = Some(Tid::START);
                sql::physical::start_physical_pass(&self.job.id, self.token, &text, now)
            }
            Strategy::Keyset
                if self.db.backend() == Backend::Postgres
                    && choice.reason != ChoiceReason::OneBatch =>
            {
                sql::physical::record_note(&self.job.id, self.token, &text, now)
            }
            Strategy::Keyset => return Ok(true),
        };
        Ok(self.db.execute(&statement).await? == 1)
    }

    /// The physical pass: batches over heap-block ranges from the checkpoint to the table's end
    /// (as it was when this run started), each range sized toward the target duration and
    /// bounded to the job's batch size in rows; then the keyset sweep starts (pass 1), which
    /// takes what physical order could not see. Breaks when the run ends inside the pass.
    async fn physical_pass(
        &mut self,
        walk: &mut Walk<'_>,
        should_stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<ControlFlow<RunOutcome>, EngineError> {
        let job = walk.job;
        let (end_block, _) = crate::physical::table_size(self.db, &job.target).await?;
        let span_rule = strategy::BlockSpan {
            target: job
                .target
                .throttle
                .adaptive
                .map_or(strategy::DEFAULT_PHYSICAL_BATCH_DURATION, |a| a.target),
            min: 1,
            max: u64::from(u32::MAX),
        };
        let mut span = strategy::FIRST_BLOCK_SPAN;
        let mut locking = RowLocking::Direct;
        while let Some(after) = walk.physical_after.filter(|after| after.block < end_block) {
            if let ControlFlow::Break(outcome) = self.before_batch(walk, should_stop).await? {
                return Ok(ControlFlow::Break(outcome));
            }
            let end = Tid::block_start(after.block.saturating_add(span).min(end_block));
            let limit = walk.limit();
            let holder = self.holder();
            let (result, used) = crate::physical::run_range_batch(
                self.db,
                job,
                (after, end),
                limit,
                holder,
                locking,
            )
            .instrument(self.batch_span())
            .await?;
            locking = used;
            let crate::physical::RangeResult::Committed {
                rows,
                selected,
                next,
                elapsed,
            } = result
            else {
                let outcome = self.cancelled(walk.rows_deleted, walk.passes).await?;
                return Ok(ControlFlow::Break(outcome));
            };
            self.settle_booking(walk, rows);
            crate::instruments::batch_committed(&job.target.name, job.mode.as_str(), rows, elapsed);
            self.book(rows, elapsed);
            walk.rows_deleted += rows;
            walk.physical_after = Some(next);
            let scanned = end.block.saturating_sub(after.block).max(1);
            let covered =
                strategy::blocks_for_limit(after.block, next.block, scanned, selected, limit);
            span = span_rule.next_span(span, elapsed, covered);
            let pause = job.target.throttle.pause;
            if !pause.is_zero() && !sleep_unless_stopped(pause, should_stop).await {
                return Ok(ControlFlow::Break(self.stop().await?));
            }
        }
        self.start_sweep(walk).await
    }

    /// Ends the physical pass: the note records the rows it removed, and the keyset sweep
    /// starts from the first key (pass 1) — unless one probe over the filter finds no matching
    /// row left, which proves what the sweep would (without walking the whole key index to find
    /// nothing), and the job is done.
    async fn start_sweep(
        &mut self,
        walk: &mut Walk<'_>,
    ) -> Result<ControlFlow<RunOutcome>, EngineError> {
        let note = self.note.map(|note| RunNote {
            physical_rows: Some(walk.rows_deleted),
            ..note
        });
        self.note = note;
        walk.passes = 1;
        if batch::count_matching(self.db, walk.job, Some(1)).await? == 0 {
            return Ok(ControlFlow::Break(self.done(walk, false).await?));
        }
        let text = note
            .map(|note| JobResult::Running(note).to_json())
            .unwrap_or_default();
        let statement = sql::physical::start_sweep(&self.job.id, self.token, &text, Utc::now());
        if self.db.execute(&statement).await? != 1 {
            return Ok(ControlFlow::Break(RunOutcome::LeaseLost));
        }
        tracing::info!(
            message = "Physical pass over; sweeping by key for what it could not see.",
            rows = walk.rows_deleted
        );
        walk.physical_after = None;
        walk.checkpoint = None;
        walk.pass_skipped_rows = false;
        Ok(ControlFlow::Continue(()))
    }

    /// Who may write this run's batches.
    fn holder(&self) -> LeaseHolder<'_> {
        LeaseHolder {
            job_id: &self.job.id,
            token: self.token,
            lease: self.settings.lease,
        }
    }

    /// The span of the next batch.
    fn batch_span(&self) -> tracing::Span {
        tracing::debug_span!(
            "batch",
            batch_no = self.job.batches + i64::try_from(self.batches).unwrap_or(0) + 1
        )
    }

    /// Counts a committed batch in this run's figures.
    fn book(&mut self, rows: u64, elapsed: Duration) {
        self.batches += 1;
        self.rows += rows;
        self.longest_batch = self.longest_batch.max(elapsed);
        self.batch_time += elapsed;
        let progress = &self.settings.progress;
        progress.rows.fetch_add(rows, Ordering::Relaxed);
        progress.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// With an adaptive batch size, steps the next size toward the target duration (and
    /// remembers it for the target's next run in this process).
    fn adapt_batch_size(&self, walk: &mut Walk<'_>, elapsed: Duration) {
        let Some(adaptive) = walk.effective.adaptive else {
            return;
        };
        walk.batch_size = adaptive.next_size(walk.asked(), elapsed);
        self.settings
            .progress
            .batch_size
            .store(walk.batch_size, Ordering::Relaxed);
        self.settings
            .pacer
            .remember_size(&walk.job.target.name, walk.batch_size);
    }

    /// The pass reached the end of the keyset. Only a pass that used `SKIP LOCKED` can have
    /// left matching rows behind; one probe tells whether it did, and if so another pass starts
    /// (up to [`MAX_PASSES`]). Otherwise the job is done.
    async fn end_of_pass(
        &self,
        walk: &mut Walk<'_>,
    ) -> Result<ControlFlow<RunOutcome>, EngineError> {
        // Rows a legal hold keeps still match: they are not rows the pass passed over.
        if !walk.pass_skipped_rows
            || crate::graph_run::count_removable(self.db, walk.job, 1).await? == 0
        {
            return Ok(ControlFlow::Break(self.done(walk, false).await?));
        }
        if walk.passes >= MAX_PASSES {
            return Err(EngineError::RowsHeld { passes: MAX_PASSES });
        }
        if !ledger::restart_pass(self.db, &self.job.id, self.token, Utc::now()).await? {
            return Ok(ControlFlow::Break(RunOutcome::LeaseLost));
        }
        walk.passes += 1;
        walk.checkpoint = None;
        walk.pass_skipped_rows = false;
        tracing::info!(
            message = "Starting another pass for rows that were locked.",
            pass = walk.passes
        );
        Ok(ControlFlow::Continue(()))
    }

    /// What the job has deleted, over all its runs. A job that removed rows of other tables
    /// (across relations) counts from its audit, per table: its run may have ended inside a
    /// window, between child batches. `across_tables` false: the job is known to remove rows of
    /// its own table only, and its audit is not read.
    async fn summary(
        &self,
        rows_deleted: u64,
        passes: i64,
        stopped_at_max_rows: bool,
        across_tables: bool,
    ) -> Result<JobResult, EngineError> {
        let tables = if across_tables {
            ledger::rows_by_table(self.db, &self.job.id).await?
        } else {
            Default::default()
        };
        let (rows_deleted, tables) = if tables.keys().any(|table| *table != self.job.target) {
            (tables.values().sum(), tables)
        } else {
            (rows_deleted, Default::default())
        };
        let sweep_rows = self
            .note
            .and_then(|note| note.physical_rows)
            .map(|physical| rows_deleted.saturating_sub(physical));
        Ok(JobResult::Summary(JobSummary {
            rows_deleted,
            batches: self.job.batches + i64::try_from(self.batches).unwrap_or(0),
            passes,
            stopped_at_max_rows,
            tables,
            held: ledger::held_by_table(self.db, &self.job.id).await?,
            strategy: self.note.map(|note| note.strategy),
            sweep_rows,
            restore: None,
        }))
    }

    /// Records `done` with the job's summary.
    async fn done(
        &self,
        walk: &Walk<'_>,
        stopped_at_max_rows: bool,
    ) -> Result<RunOutcome, EngineError> {
        let result = self
            .summary(
                walk.rows_deleted,
                walk.passes,
                stopped_at_max_rows,
                walk.job.is_graph(),
            )
            .await?
            .to_json();
        self.finish(&Transition::Done { result: &result }, RunOutcome::Done)
            .await
    }

    /// Ends a run a stop request refused: `paused` with its checkpoint when the request is a
    /// pause (still asked for: a cancel withdraws it), else `cancelled` with what was deleted;
    /// `LeaseLost` if the lease is gone instead. The one extra read happens once, at the stop.
    async fn cancelled(&self, rows_deleted: u64, passes: i64) -> Result<RunOutcome, EngineError> {
        let pause_asked = ledger::get(self.db, &self.job.id)
            .await?
            .is_some_and(|job| job.pause_requested_at.is_some());
        if pause_asked
            && ledger::transition(
                self.db,
                &self.job.id,
                self.token,
                Utc::now(),
                &Transition::PausedOnRequest,
            )
            .await?
        {
            return Ok(RunOutcome::Paused);
        }
        // Not validated here (a cancel may end a job before it is): read its audit.
        let result = self
            .summary(rows_deleted, passes, false, true)
            .await?
            .to_json();
        self.finish(
            &Transition::Cancelled { result: &result },
            RunOutcome::Cancelled,
        )
        .await
    }

    /// Stop requested: hand the job back as the settings say.
    async fn stop(&self) -> Result<RunOutcome, EngineError> {
        match self.settings.stop_as {
            StopAs::Pending => {
                self.finish(&Transition::Continue, RunOutcome::Continue)
                    .await
            }
            StopAs::Paused => self.finish(&Transition::Pause, RunOutcome::Paused).await,
        }
    }

    async fn finish(
        &self,
        transition: &Transition<'_>,
        outcome: RunOutcome,
    ) -> Result<RunOutcome, EngineError> {
        if ledger::transition(self.db, &self.job.id, self.token, Utc::now(), transition).await? {
            Ok(outcome)
        } else {
            Ok(RunOutcome::LeaseLost)
        }
    }

    /// Records a failure: retry later while attempts remain for transient errors, else dead.
    async fn fail(&self, error: &EngineError) -> Result<RunOutcome, EngineError> {
        let message = error.to_string();
        if error.class() == ErrorClass::Transient && self.job.attempts < self.job.max_attempts {
            let delay = retry_delay(
                u32::try_from(self.job.attempts).unwrap_or(u32::MAX),
                self.settings.retry_base,
                self.settings.retry_max,
                rand::rng().random_range(0.5..=1.0),
            );
            let run_after = batch::lease_until(Utc::now(), delay);
            return self
                .finish(
                    &Transition::RetryLater {
                        error: &message,
                        run_after,
                        paused: self.settings.stop_as == StopAs::Paused,
                    },
                    RunOutcome::RetryLater {
                        error: message.clone(),
                        run_after,
                    },
                )
                .await;
        }
        let message = if error.class() == ErrorClass::Transient {
            format!(
                "gave up after {} attempts; last error: {message}",
                self.job.attempts
            )
        } else {
            message
        };
        self.finish(
            &Transition::Dead { error: &message },
            RunOutcome::Dead {
                error: message.clone(),
            },
        )
        .await
    }

    /// Counts and logs how the run ended.
    fn report_end(&self, outcome: &RunOutcome) {
        let target = &self.job.target;
        match outcome {
            RunOutcome::Done => crate::instruments::job_finished(target, JobState::Done),
            RunOutcome::Cancelled => crate::instruments::job_finished(target, JobState::Cancelled),
            RunOutcome::Dead { .. } => crate::instruments::job_finished(target, JobState::Dead),
            RunOutcome::RetryLater { .. } => crate::instruments::job_retried(target),
            RunOutcome::Continue
            | RunOutcome::Paused
            | RunOutcome::Throttled { .. }
            | RunOutcome::NotClaimed
            | RunOutcome::LeaseLost => {}
        }
        match outcome {
            RunOutcome::Throttled { reason, run_after } => {
                tracing::warn!(message = "Stopped the job for now for the database's health; it runs again later.", %reason, %run_after)
            }
            RunOutcome::Dead { error } => tracing::error!(message = "Job is dead.", %error),
            RunOutcome::RetryLater { error, run_after } => {
                tracing::warn!(message = "Job will be retried.", %error, %run_after)
            }
            RunOutcome::LeaseLost => {
                tracing::warn!(message = "Lost the job's lease; another worker has it.")
            }
            other => {
                tracing::info!(message = "Job run ended.", outcome = ?other, rows = self.rows, batches = self.batches)
            }
        }
    }
}

/// Builds the dry-run report: selects only, in a read-only transaction where the backend has one.
pub async fn dry_run(db: &Database, job: &ValidatedJob) -> Result<DryRunReport, EngineError> {
    let matching_rows = batch::count_matching(db, job, None).await?;
    let sample_keys = batch::sample_keys(db, job, None, DRY_RUN_SAMPLE).await?;
    let (tables, sql) = crate::graph_run::describe(db, job, matching_rows, Utc::now()).await?;
    let (held_rows, held) = crate::graph_run::count_held(db, job).await?;
    let strategy = strategy_for(db, job, None).await?;
    let plan = match job.graph.is_empty() {
        true => Some(crate::plan_check::check(db, job, &strategy).await?),
        false => None,
    };
    let sql = match strategy.strategy {
        Strategy::Physical => crate::physical::describe(job, &sql, Utc::now()),
        Strategy::Keyset => sql,
    };
    Ok(DryRunReport {
        dry_run: true,
        matching_rows,
        held_rows,
        sample_keys,
        batch_size: job.batch_size,
        batches: matching_rows.div_ceil(u64::from(job.batch_size)),
        sql,
        tables,
        held,
        strategy: Some(strategy),
        plan,
    })
}

/// The plan guard before a fresh job's first batch: refuses (permanently) a job on one table
/// whose plan would read far more rows than it removes, unless its target allows slow plans.
async fn guard_plan(
    db: &Database,
    job: &ValidatedJob,
    choice: &StrategyChoice,
) -> Result<(), EngineError> {
    if !job.graph.is_empty() {
        return Ok(());
    }
    let report = crate::plan_check::check(db, job, choice).await?;
    match report.verdict {
        Verdict::Pass => Ok(()),
        Verdict::Allowed => {
            tracing::warn!(
                message = "The plan reads far more rows than it removes; the target allows it.",
                plan = %report.plan,
                rows_read_per_row = report.rows_read_per_row
            );
            Ok(())
        }
        Verdict::Refuse => Err(Refusal::SlowPlan {
            report: Box::new(report),
        }
        .into()),
    }
}

/// The strategy `job` gets now: the target's and the job's settings, and on PostgreSQL the
/// planner's estimate (physical order only on 14+ and for a job on one table) unless the rows
/// the pre-check `counted` settle it.
pub async fn strategy_for(
    db: &Database,
    job: &ValidatedJob,
    counted: Option<u64>,
) -> Result<StrategyChoice, EngineError> {
    let throttle = &job.target.throttle;
    let (target_setting, job_setting) = if throttle.strategy_set_by_job {
        (StrategySetting::Auto, Some(throttle.strategy))
    } else {
        (throttle.strategy, None)
    };
    if let Some(choice) = counted.and_then(|matching| {
        strategy::settled_by_count(target_setting, job_setting, matching, job.batch_size)
    }) {
        return Ok(choice);
    }
    let (available, estimate) = if db.backend() == Backend::Postgres {
        // Archive mode copies rows in the keyset batch only.
        let available = job.graph.is_empty()
            && job.mode != Mode::Archive
            && crate::physical::available(db).await?;
        (available, Some(crate::physical::estimate(db, job).await?))
    } else {
        (false, None)
    };
    Ok(strategy::choose(
        target_setting,
        job_setting,
        available,
        estimate,
    ))
}

/// Exponential backoff: `base × 2^(attempt−1)`, capped at `max`, scaled by `jitter` (drawn
/// from 0.5..=1.0 by the caller, so retries of many jobs spread out instead of stampeding).
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exponent).min(max);
    raw.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(retry_delay(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(4, base, max, 1.0), Duration::from_secs(8));
        assert_eq!(retry_delay(7, base, max, 1.0), Duration::from_secs(60));
        assert_eq!(retry_delay(40, base, max, 1.0), Duration::from_secs(60));
        assert_eq!(retry_delay(4, base, max, 0.5), Duration::from_secs(4));
    }
}
