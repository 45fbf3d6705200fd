//! A job's life in the ledger: the states it passes through and the result it ends with.
//!
//! The words here are stored in `reaper_jobs.state` and `reaper_jobs.result` and shown by the
//! API and the CLI, so their spelling is a public format: serde writes the states in
//! snake_case (`pending`, `running`, …) and the results as the JSON objects they always were.
//! Every other module names a state through [`JobState`], never as a string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::strategy::StrategyChoice;
use crate::value::KeyValue;

/// Where a job is in its life.
///
/// ```text
/// pending ──claim──▶ running ──▶ done | dead | cancelled
///    ▲                  │
///    └── slice end, ────┤
///        retry          └──▶ paused (a foreground purge stopped) ──resume──▶ running
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for a worker (or for `run_after`).
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// A foreground purge (`reaper purge`) stopped by a signal; only `reaper purge --resume`
    /// continues it: no queue worker claims it and the reconciler ignores it.
    Paused,
    /// Every matching row is gone (or the dry run is reported).
    Done,
    /// Failed permanently, or ran out of attempts.
    Dead,
    /// Stopped because somebody asked.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: &'static [JobState] = &[
        JobState::Pending,
        JobState::Running,
        JobState::Paused,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The end states: nothing changes a job in one of them any more.
    pub const FINISHED: &'static [JobState] =
        &[JobState::Done, JobState::Dead, JobState::Cancelled];

    /// Every state that is not finished: `pending`, `running` and `paused`.
    pub const UNFINISHED: &'static [JobState] =
        &[JobState::Pending, JobState::Running, JobState::Paused];

    /// The daemons' work: jobs waiting for a queue worker or held by one (`pending`,
    /// `running`). A `paused` job belongs to whoever resumes it, not to the daemons.
    pub const ACTIVE: &'static [JobState] = &[JobState::Pending, JobState::Running];

    /// Unfinished and held by no lease (`pending`, `paused`): a cancel ends such a job at once,
    /// and `reaper purge --resume` may claim it.
    pub const UNCLAIMED: &'static [JobState] = &[JobState::Pending, JobState::Paused];

    /// The stored and shown word.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for [`JobState::FINISHED`]: `done`, `dead` and `cancelled`.
    pub fn is_finished(self) -> bool {
        Self::FINISHED.contains(&self)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that table columns (`{:<10}`) line up.
        f.pad(self.as_str())
    }
}

/// A word that is not a job state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not one of {}", JobState::ALL.iter().map(|state| state.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownState {
    /// What was given.
    pub word: String,
}

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .iter()
            .copied()
            .find(|state| state.as_str() == word)
            .ok_or_else(|| UnknownState {
                word: word.to_owned(),
            })
    }
}

/// What a job stores as its result (`reaper_jobs.result`, shown as `result`): a finished job's
/// summary or dry-run report, or, while it runs, the strategy it runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobResult {
    /// A dry run's report (it has `"dry_run": true`).
    DryRun(DryRunReport),
    /// What a `done` or `cancelled` job deleted.
    Summary(JobSummary),
    /// An unfinished job's strategy (it has no `rows_deleted`), kept across its runs.
    Running(RunNote),
}

/// What an unfinished job records about how it runs, so that its later runs (and its final
/// summary) know it: the strategy chosen at its start and, once its physical pass is over, the
/// rows that pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunNote {
    /// The strategy, why, and the estimate it was chosen from.
    pub strategy: StrategyChoice,
    /// Rows the physical pass removed; set when it ended and the keyset sweep began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_rows: Option<u64>,
}

impl JobResult {
    /// Reads a stored result; `None` for text that is neither shape.
    pub fn parse(stored: &str) -> Option<JobResult> {
        serde_json::from_str(stored).ok()
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        // Plain structs of numbers, strings and booleans: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The summary, when this is one.
    pub fn summary(&self) -> Option<&JobSummary> {
        match self {
            JobResult::Summary(summary) => Some(summary),
            JobResult::DryRun(_) | JobResult::Running(_) => None,
        }
    }

    /// An unfinished job's note, when this is one.
    pub fn running(&self) -> Option<&RunNote> {
        match self {
            JobResult::Running(note) => Some(note),
            JobResult::DryRun(_) | JobResult::Summary(_) => None,
        }
    }
}

/// What a `done` or `cancelled` job deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Rows deleted (or soft-deleted), over every run.
    pub rows_deleted: u64,
    /// Batches committed, over every run.
    pub batches: i64,
    /// Keyset passes made.
    pub passes: i64,
    /// A `stop_at_max_rows` job reached its cap with matching rows left for a later job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped_at_max_rows: bool,
    /// A job across relations: rows removed (deleted, soft-deleted or nulled) per target, its
    /// own included, summed from its audit. Absent for a one-table job.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u64>,
    /// Matching rows left in place under legal holds, per target (absent when none was).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, u64>,
    /// The strategy the job ran with, why, and the estimate it was chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyChoice>,
    /// A physical job: the rows its keyset sweep removed after the physical pass (rows the
    /// physical order could not see: moved behind its position, or inserted into passed blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_rows: Option<u64>,
    /// A restore job: what it put back and what it could not (`rows_deleted` counts the rows
    /// it restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreReport>,
}

/// What a restore job did ([`crate::restore`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The archive or soft-delete job it undid.
    pub source_job: String,
    /// Rows put back (archive) or whose soft-delete mark was cleared (soft).
    pub restored: u64,
    /// Rows not restored: an archived row whose key exists again (not overwritten) or that a
    /// foreign key refuses (its parent is not there), a nulled column set since, a
    /// soft-deleted row whose mark was changed since (or that is gone).
    pub conflicts: u64,
    /// The keys of the source's own table not restored, at most [`RestoreReport::KEYS_SHOWN`]:
    /// archived rows stay in the archive, so a later restore can take them once the conflict
    /// is settled; a soft job's rows keep the mark they have now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_keys: Vec<String>,
    /// A restore of an archive job across relations: per table with rows not restored (its own
    /// included), how many and their keys (at most [`RestoreReport::KEYS_SHOWN`] in all).
    /// Absent for a job on one table.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, TableConflicts>,
}

/// The rows of one table a restore did not put back ([`RestoreReport::tables`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableConflicts {
    /// How many (still in the archive).
    pub conflicts: u64,
    /// Their keys, in the order the job archived them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict_keys: Vec<String>,
}

impl RestoreReport {
    /// The most conflicting keys a report lists.
    pub const KEYS_SHOWN: u32 = 1_000;
}

/// What a dry run reports (stored as the job's result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// Always true; tells readers of the result what it is.
    pub dry_run: bool,
    /// Rows of its own table the job's filter matches now, held ones included.
    pub matching_rows: u64,
    /// How many of `matching_rows` a legal hold keeps (held, or — across relations — referred
    /// to by a held row below); the job would remove the others.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_rows: u64,
    /// The first matching keys.
    pub sample_keys: Vec<KeyValue>,
    /// Rows per batch.
    pub batch_size: u32,
    /// Batch transactions the job would run.
    pub batches: u64,
    /// The statements of one batch.
    pub sql: String,
    /// A job across relations: the rows each table of its plan would lose now (deleted,
    /// soft-deleted or nulled) if no legal hold kept any, its own included. Absent for a
    /// one-table job.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u64>,
    /// A job across relations: how many of each table's rows in `tables` legal holds keep
    /// (tables with none left out).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, u64>,
    /// The strategy the job would run with, why, and the estimate it would be chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyChoice>,
    /// The plan guard's report on the first batch's plan, and its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::plan_guard::PlanReport>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_stored_words() {
        for state in JobState::ALL {
            let json = serde_json::to_string(state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.as_str().parse::<JobState>(), Ok(*state));
            // The words are written into SQL text as literals: plain lowercase letters only.
            assert!(state.as_str().chars().all(|c| c.is_ascii_lowercase()));
        }
        assert_eq!(
            "finished".parse::<JobState>().unwrap_err().to_string(),
            "`finished` is not one of pending, running, paused, done, dead, cancelled"
        );
        assert!(JobState::FINISHED.iter().all(|state| state.is_finished()));
        assert!(
            JobState::UNFINISHED
                .iter()
                .all(|state| !state.is_finished())
        );
        assert_eq!(
            JobState::FINISHED.len() + JobState::UNFINISHED.len(),
            JobState::ALL.len()
        );
    }

    #[test]
    fn results_read_back_as_they_were_written() {
        let old = r#"{"rows_deleted":3,"batches":1,"passes":1}"#;
        let summary = JobResult::parse(old).unwrap();
        assert_eq!(
            summary,
            JobResult::Summary(JobSummary {
                rows_deleted: 3,
                batches: 1,
                passes: 1,
                stopped_at_max_rows: false,
                tables: Default::default(),
                held: Default::default(),
                strategy: None,
                sweep_rows: None,
                restore: None,
            })
        );
        assert_eq!(summary.to_json(), old);
        let capped = r#"{"rows_deleted":3,"batches":1,"passes":1,"stopped_at_max_rows":true}"#;
        assert!(
            JobResult::parse(capped)
                .and_then(|result| result.summary().cloned())
                .is_some_and(|summary| summary.stopped_at_max_rows)
        );
        let graph = r#"{"rows_deleted":9,"batches":3,"passes":1,"tables":{"orders":4,"users":5}}"#;
        let tables = JobResult::parse(graph)
            .and_then(|result| result.summary().cloned())
            .map(|summary| summary.tables)
            .unwrap_or_default();
        assert_eq!(tables.get("orders"), Some(&4));
        let dry = r#"{"dry_run":true,"matching_rows":2,"sample_keys":[1,"a"],"batch_size":10,"batches":1,"sql":"one batch"}"#;
        let report = JobResult::parse(dry).unwrap();
        assert!(matches!(report, JobResult::DryRun(_)));
        assert_eq!(report.to_json(), dry);
        let running = r#"{"strategy":{"strategy":"physical","reason":"estimate","estimate":{"matching_rows":5,"table_rows":9}},"physical_rows":4}"#;
        let note = JobResult::parse(running).unwrap();
        assert_eq!(note.running().and_then(|note| note.physical_rows), Some(4));
        assert_eq!(note.to_json(), running);
        let physical = r#"{"rows_deleted":5,"batches":2,"passes":1,"strategy":{"strategy":"physical","reason":"job"},"sweep_rows":1}"#;
        let summary = JobResult::parse(physical).unwrap();
        assert_eq!(summary.summary().and_then(|s| s.sweep_rows), Some(1));
        assert_eq!(summary.to_json(), physical);
    }
}
