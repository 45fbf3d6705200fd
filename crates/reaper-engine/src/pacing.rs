//! Pacing batches by each target's throttle under the operators' live control: the controls
//! each process re-reads at most every [`CONTROLS_REFRESH`], the bookings of the shared
//! rows-per-second budgets (in the ledger database, see `reaper_core::throttle`), and sleeps
//! that end early when the run is asked to stop. The decisions are `reaper_core`'s; this module
//! owns the clock and the state shared by every job of one process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reaper_core::controls::TargetControl;
use reaper_core::throttle::{budget_correction, budget_cost, budget_wait};

use crate::database::Database;
use crate::error::EngineError;

/// How stale a process's copy of the controls may be when a batch starts: a pause or a new cap
/// reaches every daemon's next batch within this (plus the batch in flight).
pub const CONTROLS_REFRESH: Duration = Duration::from_millis(500);

/// The controls as last read, and when.
#[derive(Debug, Default)]
struct ControlCache {
    read_at: Option<Instant>,
    by_target: HashMap<String, TargetControl>,
}

/// Controls, budget give-backs and adapted batch sizes per target, shared by all jobs one
/// process runs.
#[derive(Debug, Default)]
pub struct Pacer {
    controls: tokio::sync::Mutex<ControlCache>,
    /// This process's last booking per target: how late it started less what it did not use
    /// (µs), sent with its next booking.
    corrections: Mutex<HashMap<String, i64>>,
    sizes: Mutex<HashMap<String, u32>>,
}

/// The state behind a lock, even if a thread panicked while holding it (the maps hold plain
/// numbers; a half-written entry is still a number).
fn unpoisoned<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pacer {
    /// `target`'s live control, re-read from the database when this process's copy is older
    /// than [`CONTROLS_REFRESH`] (one small query for all targets; concurrent callers wait for
    /// the one read). A failed read fails the caller: no batch starts without knowing whether
    /// its target is paused.
    pub async fn control(
        &self,
        db: &Database,
        target: &str,
    ) -> Result<Option<TargetControl>, EngineError> {
        let mut cache = self.controls.lock().await;
        if cache
            .read_at
            .is_none_or(|read_at| read_at.elapsed() >= CONTROLS_REFRESH)
        {
            let controls = crate::controls::list(db).await?;
            cache.by_target = controls
                .into_iter()
                .map(|control| (control.target.clone(), control))
                .collect();
            cache.read_at = Some(Instant::now());
        }
        Ok(cache.by_target.get(target).cloned())
    }

    /// Books a batch of `rows` rows on `target`'s shared budget at `rows_per_second`, giving
    /// back what this process's previous booking on it did not use; how long the batch must
    /// wait for its slot.
    pub async fn book(
        &self,
        db: &Database,
        target: &str,
        rows: u64,
        rows_per_second: u32,
    ) -> Result<Duration, EngineError> {
        let correction = unpoisoned(&self.corrections).remove(target).unwrap_or(0);
        let cost = budget_cost(rows, rows_per_second);
        let free_in = crate::controls::book_budget(db, target, cost, correction).await?;
        Ok(budget_wait(free_in, cost))
    }

    /// A batch that booked `booked` rows, started `late` after its slot and removed `rows`: its
    /// lateness less its unused time goes with the next booking on `target`.
    pub fn settle(
        &self,
        target: &str,
        booked: u64,
        rows: u64,
        rows_per_second: u32,
        late: Duration,
    ) {
        let correction = budget_correction(booked, rows, rows_per_second, late);
        if correction != 0 {
            *unpoisoned(&self.corrections)
                .entry(target.to_owned())
                .or_default() += correction;
        }
    }

    /// The batch size adaptive sizing last settled on for `target`.
    pub fn adapted_size(&self, target: &str) -> Option<u32> {
        unpoisoned(&self.sizes).get(target).copied()
    }

    /// Remembers the adapted batch size for `target`.
    pub fn remember_size(&self, target: &str, size: u32) {
        unpoisoned(&self.sizes).insert(target.to_owned(), size);
    }
}

/// Sleeps `duration`, in short steps so that a stop request ends the sleep within ~50 ms.
/// Returns false when it stopped early.
pub async fn sleep_unless_stopped(
    duration: Duration,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> bool {
    const STEP: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + duration;
    loop {
        if should_stop() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        tokio::time::sleep(left.min(STEP)).await;
    }
}
