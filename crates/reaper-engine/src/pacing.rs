//! Pacing batches by each target's throttle: the shared rows-per-second budgets, and sleeps that
//! end early when the run is asked to stop. The decisions are `reaper_core::throttle`'s; this
//! module owns the clock and the state shared by every job of one process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reaper_core::throttle::RateBudget;

/// Rate budgets per target, shared by all jobs one process runs.
#[derive(Debug)]
pub struct Pacer {
    origin: Instant,
    budgets: Mutex<HashMap<String, RateBudget>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            budgets: Mutex::new(HashMap::new()),
        }
    }
}

impl Pacer {
    /// How long a batch on `target` must wait for the target's budget.
    pub fn wait(&self, target: &str) -> Duration {
        let now = self.origin.elapsed();
        self.budgets
            .lock()
            .map(|budgets| budgets.get(target).map_or(Duration::ZERO, |b| b.wait(now)))
            .unwrap_or(Duration::ZERO)
    }

    /// Books `rows` deleted by a batch on `target` that started at `started`.
    pub fn book(&self, target: &str, started: Instant, rows: u64, rows_per_second: u32) {
        let started = started.saturating_duration_since(self.origin);
        if let Ok(mut budgets) = self.budgets.lock() {
            budgets
                .entry(target.to_owned())
                .or_default()
                .book(started, rows, rows_per_second);
        }
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
