//! Pacing batches by each target's throttle: the shared rows-per-second budgets, and sleeps that
//! end early when the run is asked to stop. The decisions are `reaper_core::throttle`'s; this
//! module owns the clock and the state shared by every job of one process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reaper_core::throttle::RateBudget;

/// Rate budgets and adapted batch sizes per target, shared by all jobs one process runs.
#[derive(Debug)]
pub struct Pacer {
    origin: Instant,
    budgets: Mutex<HashMap<String, RateBudget>>,
    sizes: Mutex<HashMap<String, u32>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            budgets: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
        }
    }
}

/// The state behind a lock, even if a thread panicked while holding it (the maps hold plain
/// numbers; a half-written entry is still a number).
fn unpoisoned<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pacer {
    /// How long a batch on `target` must wait for the target's budget.
    pub fn wait(&self, target: &str) -> Duration {
        let now = self.origin.elapsed();
        unpoisoned(&self.budgets)
            .get(target)
            .map_or(Duration::ZERO, |budget| budget.wait(now))
    }

    /// Books `rows` deleted by a batch on `target` that started at `started`.
    pub fn book(&self, target: &str, started: Instant, rows: u64, rows_per_second: u32) {
        let started = started.saturating_duration_since(self.origin);
        unpoisoned(&self.budgets)
            .entry(target.to_owned())
            .or_default()
            .book(started, rows, rows_per_second);
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
