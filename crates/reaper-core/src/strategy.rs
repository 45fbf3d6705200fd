//! How a job walks the rows it removes: in key order (the keyset on the primary key, every
//! backend) or in physical order (ranges of heap blocks, PostgreSQL 14+), the choice between the
//! two from the database's own estimate, the physical checkpoint's stored form, and the block
//! span of the next physical batch.
//!
//! Pure decisions: the engine asks the database (server version, table size, `EXPLAIN`) and
//! measures batches; this module only decides from what it is given.
//!
//! Why two walks: a keyset batch visits heap pages in key order, one index probe per row, which
//! costs ~3× one unbounded `DELETE` when a large share of the table matches (retention). A batch
//! over a range of heap blocks reads them sequentially, like the unbounded `DELETE`, and still
//! commits every few tens of milliseconds (`notes/performance.md`: 0.80× the unbounded DELETE).
//! For a selective filter (one user's rows) the filter's index is the way, and a walk of the
//! heap would read the whole table to find them: that is the keyset statement's plan.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The walk a job's batches take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of the next keys after the checkpoint, in primary-key order.
    Keyset,
    /// Batches over ranges of heap blocks (`ctid` ranges), then one keyset sweep.
    Physical,
}

impl Strategy {
    /// The word used in configuration, job requests and results.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Keyset => "keyset",
            Strategy::Physical => "physical",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target's (configuration) or a job's (request) say in the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategySetting {
    /// Decide per job from the database's estimate.
    #[default]
    Auto,
    /// Always the keyset.
    Keyset,
    /// Physical order where the server has it (PostgreSQL 14+), else the keyset.
    Physical,
}

/// Why a job walks the way it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceReason {
    /// The database's estimate of matching rows against the table's size.
    Estimate,
    /// The target's `strategy` setting.
    Target,
    /// The job's `strategy` field.
    Job,
    /// Physical order is not available here (not PostgreSQL 14+, or a job across relations).
    Unavailable,
    /// The job's pre-check counted no more matching rows than one batch removes: one keyset
    /// batch takes them all, so no estimate was asked for.
    OneBatch,
}

/// What the database estimates about a job's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Estimate {
    /// Rows the planner expects the filter to match.
    pub matching_rows: u64,
    /// Rows the table holds, by its statistics.
    pub table_rows: u64,
}

/// The strategy a job runs with, why, and the estimate it was chosen from (stored in the job's
/// result and shown by `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyChoice {
    /// The walk.
    pub strategy: Strategy,
    /// Why.
    pub reason: ChoiceReason,
    /// The database's estimate, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

/// Physical order pays when more than this share of the table matches: below it, the rows are
/// few enough that an index (the filter's or the primary key's) finds them for less than reading
/// every heap block.
pub const PHYSICAL_MIN_SHARE: f64 = 0.05;

/// Chooses the walk. `physical_available` is false where physical order cannot run (not
/// PostgreSQL 14+, a job across relations); `estimate` is the database's, when it was asked.
/// A job's setting (other than `Auto`) overrides the target's; `Auto` decides by
/// [`PHYSICAL_MIN_SHARE`].
pub fn choose(
    target: StrategySetting,
    job: Option<StrategySetting>,
    physical_available: bool,
    estimate: Option<Estimate>,
) -> StrategyChoice {
    let (setting, forced_by) = match job {
        Some(setting) if setting != StrategySetting::Auto => (setting, ChoiceReason::Job),
        _ => (target, ChoiceReason::Target),
    };
    let wanted = match setting {
        StrategySetting::Keyset => (Strategy::Keyset, forced_by),
        StrategySetting::Physical => (Strategy::Physical, forced_by),
        StrategySetting::Auto => match estimate {
            Some(estimate) if matches_large_share(estimate) => {
                (Strategy::Physical, ChoiceReason::Estimate)
            }
            _ => (Strategy::Keyset, ChoiceReason::Estimate),
        },
    };
    let (strategy, reason) = match wanted {
        (Strategy::Physical, _) if !physical_available => {
            (Strategy::Keyset, ChoiceReason::Unavailable)
        }
        chosen => chosen,
    };
    StrategyChoice {
        strategy,
        reason,
        estimate,
    }
}

/// The choice for a job whose pre-check counted `matching` rows, when that settles it without
/// asking the database for an estimate: nothing forces a walk (both settings `Auto`) and one
/// batch of `batch_size` rows takes every matching row, which physical order cannot beat (it
/// would read at least one range of blocks and then sweep by keyset anyway). `None`: ask for
/// the estimate and [`choose`].
pub fn settled_by_count(
    target: StrategySetting,
    job: Option<StrategySetting>,
    matching: u64,
    batch_size: u32,
) -> Option<StrategyChoice> {
    let auto = target == StrategySetting::Auto
        && job.is_none_or(|setting| setting == StrategySetting::Auto);
    (auto && matching <= u64::from(batch_size)).then_some(StrategyChoice {
        strategy: Strategy::Keyset,
        reason: ChoiceReason::OneBatch,
        estimate: None,
    })
}

fn matches_large_share(estimate: Estimate) -> bool {
    estimate.table_rows > 0
        && estimate.matching_rows as f64 > estimate.table_rows as f64 * PHYSICAL_MIN_SHARE
}

/// The planner's row estimate in a PostgreSQL `EXPLAIN (FORMAT JSON)` result: the top plan
/// node's `Plan Rows`. `None` for any other shape.
pub fn postgres_plan_rows(explained: &serde_json::Value) -> Option<u64> {
    let rows = explained.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
    // `as` saturates; the planner's estimates are finite and non-negative.
    Some(rows.max(0.0).round() as u64)
}

/// A tuple position in a PostgreSQL heap: block number and line pointer (1-based; offset 0 is
/// before every tuple of its block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid {
    /// Heap block.
    pub block: u64,
    /// Line pointer within the block.
    pub offset: u16,
}

impl Tid {
    /// Before every tuple of the table: where a physical pass starts.
    pub const START: Tid = Tid {
        block: 0,
        offset: 0,
    };

    /// Before every tuple of `block`.
    pub fn block_start(block: u64) -> Tid {
        Tid { block, offset: 0 }
    }

    /// PostgreSQL's text form, `(block,offset)`, as bound to a `::tid` cast.
    pub fn to_sql_text(self) -> String {
        format!("({},{})", self.block, self.offset)
    }

    /// Reads PostgreSQL's text form `(block,offset)`.
    pub fn parse_sql_text(text: &str) -> Option<Tid> {
        let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
        let (block, offset) = inner.split_once(',')?;
        Some(Tid {
            block: block.trim().parse().ok()?,
            offset: offset.trim().parse().ok()?,
        })
    }
}

/// The prefix of a physical checkpoint in the ledger's `checkpoint` column. A physical
/// checkpoint is only ever read during a job's physical pass (pass 0; the keyset passes are
/// 1, 2, …), so it is never taken for a key even where a text key could spell the same; the
/// prefix makes it recognizable to a reader of the ledger and lets a decoder refuse a mix-up.
pub const PHYSICAL_CHECKPOINT_PREFIX: &str = "tid:";

/// The pass number of a job's physical pass. Keyset passes count from 1.
pub const PHYSICAL_PASS: i64 = 0;

/// A physical checkpoint as stored: `tid:(block,offset)`, the last tuple position the pass has
/// covered (exclusive lower bound of the next batch).
pub fn encode_checkpoint(after: Tid) -> String {
    format!("{PHYSICAL_CHECKPOINT_PREFIX}{}", after.to_sql_text())
}

/// Reads a stored physical checkpoint; `None` when the text is not one.
pub fn decode_checkpoint(text: &str) -> Option<Tid> {
    Tid::parse_sql_text(text.strip_prefix(PHYSICAL_CHECKPOINT_PREFIX)?)
}

/// How many heap blocks the next physical batch covers: stepped toward a target batch
/// duration, like the adaptive batch size, within `min..=max` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    /// The duration a batch transaction should take.
    pub target: Duration,
    /// The fewest blocks a batch covers.
    pub min: u64,
    /// The most blocks a batch covers.
    pub max: u64,
}

/// A target without a `target_batch_duration` aims its physical batches at this: the measured
/// 1,000-block batches took ~23 ms (`notes/performance.md`), well inside a 50 ms budget.
pub const DEFAULT_PHYSICAL_BATCH_DURATION: Duration = Duration::from_millis(25);

/// The first batch of a physical pass covers this many blocks (~1 MB of heap): small enough
/// to stay far below the target duration on any table, and the span grows from there.
pub const FIRST_BLOCK_SPAN: u64 = 128;

/// The blocks a batch of `limit` rows fills, judged from a batch over the blocks `first` to
/// `last` that selected `selected` matching tuples: those blocks when the limit cut it, else
/// the span at the density it saw with a tenth to spare (a range that holds more than a batch
/// takes is removed in two scans instead of one). `None` when it saw no matching tuple.
pub fn blocks_for_limit(
    first: u64,
    last: u64,
    span: u64,
    selected: u64,
    limit: u32,
) -> Option<u64> {
    let limit = u64::from(limit);
    if selected >= limit {
        return Some(last.saturating_sub(first) + 1);
    }
    if selected == 0 {
        return None;
    }
    let at_density = span as f64 * limit as f64 / selected as f64 * 0.9;
    Some((at_density.round() as u64).max(1))
}

impl BlockSpan {
    /// The span after a batch over `span` blocks took `elapsed`. `covered` is `Some(blocks)`
    /// when the batch reached its row limit after that many blocks: the rows, not the time,
    /// bounded it, so the next span is at most what held one batch's rows. Otherwise the span
    /// scales by `target / elapsed`, at most doubling and at least halving per step, with a
    /// dead band so noise does not make it wander.
    pub fn next_span(&self, span: u64, elapsed: Duration, covered: Option<u64>) -> u64 {
        let ratio = self.target.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
        let factor = if ratio > 1.25 {
            ratio.min(2.0)
        } else if ratio < 0.8 {
            ratio.max(0.5)
        } else {
            1.0
        };
        let timed = (span as f64 * factor).round() as u64;
        let next = match covered {
            // Grow no further than the blocks one batch's rows filled.
            Some(blocks) => timed.min(blocks.max(1)),
            None => timed,
        };
        next.clamp(self.min.max(1), self.max.max(self.min.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(matching_rows: u64, table_rows: u64) -> Option<Estimate> {
        Some(Estimate {
            matching_rows,
            table_rows,
        })
    }

    #[test]
    fn a_span_is_capped_by_the_blocks_one_batch_fills() {
        // Cut by the limit after blocks 10..=14: five blocks hold a batch.
        assert_eq!(blocks_for_limit(10, 14, 128, 100, 100), Some(5));
        // 50 rows in 100 blocks, limit 100: 200 blocks at that density, 180 with the margin.
        assert_eq!(blocks_for_limit(0, 99, 100, 50, 100), Some(180));
        // Dense: 90 rows in 2 blocks, limit 100 → 2; 46 rows in a block → 2 blocks (92 rows).
        assert_eq!(blocks_for_limit(0, 1, 2, 90, 100), Some(2));
        assert_eq!(blocks_for_limit(0, 0, 1, 46, 100), Some(2));
        assert_eq!(blocks_for_limit(0, 0, 1, 99, 100), Some(1));
        assert_eq!(blocks_for_limit(0, 9, 10, 0, 100), None);
    }

    #[test]
    fn auto_walks_physically_only_when_a_large_share_matches() {
        let auto = StrategySetting::Auto;
        let retention = choose(auto, None, true, estimate(500_000, 1_000_000));
        assert_eq!(
            (retention.strategy, retention.reason),
            (Strategy::Physical, ChoiceReason::Estimate)
        );
        let one_user = choose(auto, None, true, estimate(50, 10_000_000));
        assert_eq!(one_user.strategy, Strategy::Keyset);
        assert_eq!(one_user.estimate, estimate(50, 10_000_000));
        // An empty or never analyzed table: nothing to gain from reading it in order.
        assert_eq!(
            choose(auto, None, true, estimate(10, 0)).strategy,
            Strategy::Keyset
        );
        assert_eq!(choose(auto, None, true, None).strategy, Strategy::Keyset);
    }

    #[test]
    fn a_count_within_one_batch_settles_an_automatic_choice_only() {
        let auto = StrategySetting::Auto;
        let one_batch = settled_by_count(auto, None, 50, 1_000);
        assert_eq!(
            one_batch.map(|choice| (choice.strategy, choice.reason, choice.estimate)),
            Some((Strategy::Keyset, ChoiceReason::OneBatch, None))
        );
        assert!(settled_by_count(auto, Some(auto), 1_000, 1_000).is_some());
        // More than one batch: the estimate decides.
        assert_eq!(settled_by_count(auto, None, 1_001, 1_000), None);
        // A forced walk is the setting's, whatever the count.
        assert_eq!(
            settled_by_count(StrategySetting::Physical, None, 1, 1_000),
            None
        );
        assert_eq!(
            settled_by_count(auto, Some(StrategySetting::Physical), 1, 1_000),
            None
        );
    }

    #[test]
    fn a_job_overrides_its_target_and_physical_falls_back_where_unavailable() {
        let forced = choose(
            StrategySetting::Keyset,
            Some(StrategySetting::Physical),
            true,
            estimate(1, 1_000),
        );
        assert_eq!(
            (forced.strategy, forced.reason),
            (Strategy::Physical, ChoiceReason::Job)
        );
        let by_target = choose(
            StrategySetting::Keyset,
            Some(StrategySetting::Auto),
            true,
            estimate(900, 1_000),
        );
        assert_eq!(
            (by_target.strategy, by_target.reason),
            (Strategy::Keyset, ChoiceReason::Target)
        );
        let old_server = choose(StrategySetting::Physical, None, false, None);
        assert_eq!(
            (old_server.strategy, old_server.reason),
            (Strategy::Keyset, ChoiceReason::Unavailable)
        );
    }

    #[test]
    fn the_plan_estimate_is_the_top_nodes_rows() {
        let explained =
            serde_json::json!([{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 500091.0}}]);
        assert_eq!(postgres_plan_rows(&explained), Some(500_091));
        assert_eq!(postgres_plan_rows(&serde_json::json!({"Plan": {}})), None);
    }

    #[test]
    fn physical_checkpoints_round_trip_and_are_not_keys() {
        let at = Tid {
            block: 4_294_967_295,
            offset: 291,
        };
        assert_eq!(encode_checkpoint(at), "tid:(4294967295,291)");
        assert_eq!(decode_checkpoint(&encode_checkpoint(at)), Some(at));
        assert_eq!(decode_checkpoint("(1,2)"), None);
        assert_eq!(decode_checkpoint("12345"), None);
        assert_eq!(decode_checkpoint("tid:(1,)"), None);
        assert_eq!(Tid::parse_sql_text("(7,0)"), Some(Tid::block_start(7)));
        assert!(
            Tid::START
                < Tid::block_start(0).max(Tid {
                    block: 0,
                    offset: 1
                })
        );
    }

    #[test]
    fn the_block_span_steps_toward_the_target_and_never_past_one_batchs_rows() {
        let span = BlockSpan {
            target: Duration::from_millis(20),
            min: 1,
            max: 100_000,
        };
        assert_eq!(span.next_span(100, Duration::from_millis(5), None), 200);
        assert_eq!(span.next_span(100, Duration::from_millis(80), None), 50);
        assert_eq!(span.next_span(100, Duration::from_millis(21), None), 100);
        // The row limit cut the batch after 30 blocks: 30 blocks hold one batch.
        assert_eq!(span.next_span(100, Duration::from_millis(5), Some(30)), 30);
        assert_eq!(span.next_span(1, Duration::from_secs(1), None), 1);
        assert_eq!(span.next_span(90_000, Duration::ZERO, None), 100_000);
    }

    #[test]
    fn settings_and_choices_keep_their_words() {
        let choice = choose(StrategySetting::Auto, None, true, estimate(600, 1_000));
        assert_eq!(
            serde_json::to_string(&choice).unwrap(),
            r#"{"strategy":"physical","reason":"estimate","estimate":{"matching_rows":600,"table_rows":1000}}"#
        );
        let setting: StrategySetting = serde_json::from_str(r#""keyset""#).unwrap();
        assert_eq!(setting, StrategySetting::Keyset);
    }
}
