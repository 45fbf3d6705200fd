//! Throttling decisions, so a purge spares the production traffic on the same tables: a pause
//! after every batch, a rows-per-second cap per target, and an adaptive batch size that aims at
//! a target batch duration.
//!
//! Pure arithmetic: the engine measures, sleeps and keeps the state; this module only decides.
//! Durations and times are inputs, never read from a clock.

use std::time::Duration;

/// A target's throttle, from its configuration: how fast its jobs may go, and by which walk
/// ([`crate::strategy`]) and plans they may read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    /// Sleep this long after every committed batch.
    pub pause: Duration,
    /// At most this many rows per second from this target, all jobs of all daemons together (see
    /// [`budget_cost`]).
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

/// A target's rows-per-second budget, shared by every job of every daemon (a GCRA): the
/// target's time line ends at `free_at`, one row per target in the ledger database
/// (`reaper_target_budgets`). Before it runs, a batch books the rows it asks for —
/// `free_at = max(free_at + correction, now) + cost` in one atomic statement, on the database's
/// clock, so the daemons' clocks do not matter — and starts when its slot begins, `cost` before
/// the line's new end. What it did not use (a short batch) is given back with its process's next
/// booking on the target, and how late it started after its slot (a slow wake-up) is added to
/// it (`correction`, [`budget_correction`]): within one process batches start at least their
/// rows' share apart, as if each had booked when it started. Idle time is not saved up into a
/// burst.
///
/// Times are microseconds. This module computes; the statement (`sql::controls::book_budget`)
/// applies [`advance`] atomically and returns `free_in`, the line's new end minus its `now`.
///
/// The microseconds of the line `rows` take at `rows_per_second` (at least 1).
pub fn budget_cost(rows: u64, rows_per_second: u32) -> i64 {
    let micros = rows as f64 * 1e6 / f64::from(rows_per_second.max(1));
    // `as` saturates.
    (micros.round() as i64).max(1)
}

/// What the booking statement computes: the line's new end after a booking of `cost` at `now`
/// with `correction` (the previous booking's lateness less its unused part).
pub fn advance(free_at: i64, now: i64, correction: i64, cost: i64) -> i64 {
    free_at
        .saturating_add(correction)
        .max(now)
        .saturating_add(cost)
}

/// How long a batch waits after its booking returned `free_in` (the line's new end minus the
/// database's `now`): until its slot, `cost` before that end, begins.
pub fn budget_wait(free_in: i64, cost: i64) -> Duration {
    Duration::from_micros(u64::try_from(free_in.saturating_sub(cost)).unwrap_or(0))
}

/// The correction a batch that booked `booked` rows, started `late` after its slot and removed
/// `rows` leaves for the next booking: its lateness, less the part of its slot it did not use
/// (a batch cannot remove more than it booked).
pub fn budget_correction(booked: u64, rows: u64, rows_per_second: u32, late: Duration) -> i64 {
    let unused = booked.saturating_sub(rows);
    let late = i64::try_from(late.as_micros()).unwrap_or(i64::MAX);
    if unused == 0 {
        late
    } else {
        late.saturating_sub(budget_cost(unused, rows_per_second))
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
    fn the_shared_budget_spaces_every_daemon_s_batches_to_the_cap() {
        // 1,000 rows at 2,000 rows/s book half a second.
        let cost = budget_cost(1_000, 2_000);
        assert_eq!(cost, 500_000);
        // Three daemons book at the same instant: their slots follow each other.
        let now = 10_000_000;
        let mut free_at = 0;
        let mut waits = Vec::new();
        for _ in 0..3 {
            free_at = advance(free_at, now, 0, cost);
            waits.push(budget_wait(free_at - now, cost));
        }
        assert_eq!(
            waits,
            [0, 500, 1_000].map(Duration::from_millis).to_vec(),
            "slots of half a second each"
        );
        // A batch that removed 200 of its 1,000 rows gives 400 ms back to the next booking.
        let correction = budget_correction(1_000, 200, 2_000, Duration::ZERO);
        assert_eq!(correction, -400_000);
        // One that started 30 ms late after its slot pushes the line by that much.
        assert_eq!(
            budget_correction(1_000, 1_000, 2_000, Duration::from_millis(30)),
            30_000
        );
        let before = free_at;
        free_at = advance(free_at, now, correction, cost);
        assert_eq!(free_at, before - 400_000 + cost);
        // Idle time is not saved up into a burst; a give-back does not reach into the past.
        let later = free_at + 60_000_000;
        assert_eq!(advance(free_at, later, correction, cost), later + cost);
        assert_eq!(
            budget_wait(advance(free_at, later, 0, cost) - later, cost),
            Duration::ZERO
        );
        // Degenerate inputs stay defined.
        assert_eq!(budget_cost(0, 0), 1);
        assert_eq!(budget_correction(10, 10, 5, Duration::ZERO), 0);
        assert_eq!(budget_wait(-5, 10), Duration::ZERO);
    }
}
