//! Throttling decisions, so a purge spares the production traffic on the same tables: a pause
//! after every batch, a rows-per-second cap per target, and an adaptive batch size that aims at
//! a target batch duration.
//!
//! Pure arithmetic: the engine measures, sleeps and keeps the state; this module only decides.
//! Durations are inputs, never read from a clock.

use std::time::Duration;

/// A target's throttle, from its configuration: how fast its jobs may go, and by which walk
/// ([`crate::strategy`]) and plans they may read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    /// Sleep this long after every committed batch.
    pub pause: Duration,
    /// At most this many rows per second from this target, all jobs of one daemon together.
    pub max_rows_per_second: Option<u32>,
    /// Adapt the batch size toward a target duration.
    pub adaptive: Option<Adaptive>,
    /// Keyset, physical order, or chosen per job from the database's estimate.
    pub strategy: crate::strategy::StrategySetting,
    /// `strategy` is the job's own (`validate` sets both when a job overrides its target's).
    pub strategy_set_by_job: bool,
    /// Run jobs whose plan the guard ([`crate::plan_guard`]) would refuse.
    pub allow_slow_plan: bool,
}

/// Adaptive batch sizing: bounds and the duration one batch should take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    /// The duration a batch transaction should take.
    pub target: Duration,
    /// The smallest batch.
    pub min: u32,
    /// The largest batch.
    pub max: u32,
}

/// A batch faster than this share of the target grows the next one; slower than the inverse
/// share shrinks it. In between the size stays, so noise does not make it wander.
const DEAD_BAND: f64 = 0.8;
/// The most one step may grow a batch (slow start toward fast targets, no overshoot).
const MAX_GROWTH: f64 = 1.5;
/// The most one step may shrink it.
const MAX_SHRINK: f64 = 0.5;

impl Adaptive {
    /// The size of the next batch after one of `size` rows took `elapsed`. Batch time grows
    /// roughly in proportion to rows, so the step is `size × target / elapsed`, bounded per step
    /// and kept within `min..=max` — except that a batch already below `min` (a job that asked
    /// for small batches) never grows on a slow batch.
    pub fn next_size(&self, size: u32, elapsed: Duration) -> u32 {
        let target = self.target.as_secs_f64();
        let took = elapsed.as_secs_f64().max(1e-6);
        let ratio = target / took;
        let factor = if ratio > 1.0 / DEAD_BAND {
            ratio.min(MAX_GROWTH)
        } else if ratio < DEAD_BAND {
            ratio.max(MAX_SHRINK)
        } else {
            1.0
        };
        let next = (f64::from(size) * factor).round();
        // `as` saturates; the clamp keeps the bounds.
        (next as u32).clamp(self.min.min(size), self.max.max(self.min))
    }
}

/// A rows-per-second budget shared by every job on one target (a GCRA: each batch books
/// `rows / rate` seconds of the target's time line, and the next batch starts when the line is
/// free). Times are offsets from any fixed origin the caller picks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateBudget {
    free_at: Duration,
}

impl RateBudget {
    /// How long to wait before the next batch may start at `now`.
    pub fn wait(&self, now: Duration) -> Duration {
        self.free_at.saturating_sub(now)
    }

    /// Books a committed batch of `rows` rows that started at `started`.
    pub fn book(&mut self, started: Duration, rows: u64, rows_per_second: u32) {
        let cost = Duration::from_secs_f64(rows as f64 / f64::from(rows_per_second.max(1)));
        self.free_at = self.free_at.max(started) + cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adaptive() -> Adaptive {
        Adaptive {
            target: Duration::from_millis(100),
            min: 100,
            max: 20_000,
        }
    }

    /// A table where each row costs `per_row` and each batch a fixed overhead.
    fn simulate(start: u32, per_row: Duration, steps: usize) -> Vec<u32> {
        let adaptive = adaptive();
        let mut size = start;
        let mut sizes = vec![size];
        for _ in 0..steps {
            let elapsed = Duration::from_millis(2) + per_row * size;
            size = adaptive.next_size(size, elapsed);
            sizes.push(size);
        }
        sizes
    }

    #[test]
    fn the_batch_size_converges_toward_the_target_duration_from_both_sides() {
        // 20 µs per row: the target of 100 ms is reached at 4,900 rows.
        let per_row = Duration::from_micros(20);
        for start in [100, 1_000, 20_000] {
            let sizes = simulate(start, per_row, 15);
            let last = *sizes.last().unwrap();
            let took = Duration::from_millis(2) + per_row * last;
            assert!(
                took >= Duration::from_millis(80) && took <= Duration::from_millis(125),
                "from {start}: {sizes:?} ends at {took:?}"
            );
        }
    }

    #[test]
    fn steps_are_bounded_and_sizes_stay_within_min_and_max() {
        let adaptive = adaptive();
        assert_eq!(adaptive.next_size(1_000, Duration::from_millis(1)), 1_500);
        assert_eq!(adaptive.next_size(1_000, Duration::from_secs(10)), 500);
        assert_eq!(adaptive.next_size(150, Duration::from_secs(10)), 100);
        assert_eq!(adaptive.next_size(19_000, Duration::from_millis(1)), 20_000);
        // Below the minimum (the job asked for small batches): a slow batch does not grow it.
        assert_eq!(adaptive.next_size(10, Duration::from_secs(10)), 10);
        assert_eq!(adaptive.next_size(10, Duration::from_millis(1)), 15);
        // Inside the dead band nothing changes.
        assert_eq!(adaptive.next_size(1_000, Duration::from_millis(95)), 1_000);
        assert_eq!(adaptive.next_size(1_000, Duration::from_millis(120)), 1_000);
    }

    #[test]
    fn the_rate_budget_spaces_batches_to_the_cap() {
        let mut budget = RateBudget::default();
        assert_eq!(budget.wait(Duration::ZERO), Duration::ZERO);
        // 1,000 rows at 2,000 rows/s book half a second.
        budget.book(Duration::ZERO, 1_000, 2_000);
        assert_eq!(
            budget.wait(Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        // A second job on the same target queues behind the first.
        budget.book(Duration::from_millis(100), 1_000, 2_000);
        assert_eq!(
            budget.wait(Duration::from_millis(100)),
            Duration::from_millis(900)
        );
        // Idle time is not saved up into a burst.
        budget.book(Duration::from_secs(10), 1_000, 2_000);
        assert_eq!(
            budget.wait(Duration::from_secs(10)),
            Duration::from_millis(500)
        );
    }
}
