//! The plan guard: before a job's first batch, judge from the database's own plan whether its
//! batches would read far more rows than they remove — a sequential scan per batch, or a walk of
//! the primary key that filters out nearly every row — and refuse the job (unless its target
//! allows it) with the estimate and the index that would fix it.
//!
//! Pure: the engine runs `EXPLAIN` and the size estimates; this module reads their shape
//! (per backend) and decides.

use serde::{Deserialize, Serialize};

/// How a batch's selection reads the table, by the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Every batch reads the whole table (a sequential scan, then a sort for the key order).
    FullScan,
    /// Batches walk the table in key (or heap) order, filtering every row on the way: one pass
    /// over the table for the whole job.
    FilteredWalk,
    /// An index on the filter finds the rows.
    FilterIndex,
}

/// What the guard decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The plan reads about what it removes.
    Pass,
    /// The plan would read far more than it removes: the job is refused.
    Refuse,
    /// It would be refused, but the target allows slow plans (`allow_slow_plan`).
    Allowed,
}

/// The guard's report: shown by a dry run, and the substance of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    /// How the selection reads the table.
    pub access: Access,
    /// The plan line it was read from (for the operator).
    pub plan: String,
    /// Rows the database estimates the filter matches. `None` when an index on the filter finds
    /// the rows: the verdict does not depend on the sizes then, so they are not asked for (on
    /// SQLite and MySQL/MariaDB they are counts, which can read millions of rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_rows: Option<u64>,
    /// Rows the table holds, by the database's estimate (`None` as for `matching_rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_rows: Option<u64>,
    /// Rows read per row removed, by the estimates (rounded).
    pub rows_read_per_row: u64,
    /// The decision.
    pub verdict: Verdict,
    /// The index that would let the filter find its rows (DDL text, shown, never run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// More rows read per row removed than this is refused.
pub const MAX_ROWS_READ_PER_ROW: f64 = 100.0;

/// A plan reading fewer rows than this per batch is never refused: scanning a small table is
/// cheap whatever the ratio.
pub const MIN_ROWS_READ_PER_BATCH: f64 = 10_000.0;

/// Judges a plan. `batch_rows` is the job's batch size; `allowed` the target's
/// `allow_slow_plan`; `fix` the index to suggest.
pub fn judge(
    (access, plan): (Access, String),
    matching_rows: u64,
    table_rows: u64,
    batch_rows: u32,
    allowed: bool,
    fix: Option<String>,
) -> PlanReport {
    let matching = matching_rows.max(1) as f64;
    let table = table_rows as f64;
    let per_batch_removed = matching.min(f64::from(batch_rows.max(1)));
    let (rows_read_per_row, read_per_batch) = match access {
        Access::FullScan => (table / per_batch_removed, table),
        Access::FilteredWalk => (table / matching, table / matching * per_batch_removed),
        Access::FilterIndex => (1.0, per_batch_removed),
    };
    let slow =
        rows_read_per_row > MAX_ROWS_READ_PER_ROW && read_per_batch >= MIN_ROWS_READ_PER_BATCH;
    let verdict = match (slow, allowed) {
        (false, _) => Verdict::Pass,
        (true, false) => Verdict::Refuse,
        (true, true) => Verdict::Allowed,
    };
    PlanReport {
        access,
        plan,
        matching_rows: Some(matching_rows),
        table_rows: Some(table_rows),
        // `as` saturates; the ratio is finite and non-negative.
        rows_read_per_row: rows_read_per_row.round() as u64,
        verdict,
        fix: fix.filter(|_| access != Access::FilterIndex),
    }
}

/// The report on a plan where an index on the filter finds the rows: it reads about what it
/// removes whatever the sizes, so it passes without them.
pub fn judge_indexed(plan: String) -> PlanReport {
    PlanReport {
        access: Access::FilterIndex,
        plan,
        matching_rows: None,
        table_rows: None,
        rows_read_per_row: 1,
        verdict: Verdict::Pass,
        fix: None,
    }
}

/// Reads a PostgreSQL `EXPLAIN (FORMAT JSON)` of the batch selection: the first node that reads
/// `table`. A sequential scan is a full scan per batch; an index scan with no index condition
/// (the primary key walked from the start, the filter as a row filter) or a TID range scan is a
/// filtered walk; anything else found the rows through an index on the filter.
pub fn postgres_access(explained: &serde_json::Value, table: &str) -> Option<(Access, String)> {
    let node = find_scan(explained.get(0)?.get("Plan")?, table)?;
    let kind = node.get("Node Type")?.as_str()?;
    let index = node.get("Index Name").and_then(|name| name.as_str());
    let access = match kind {
        "Seq Scan" => Access::FullScan,
        "Tid Range Scan" => Access::FilteredWalk,
        "Index Scan" | "Index Only Scan" if node.get("Index Cond").is_none() => {
            Access::FilteredWalk
        }
        _ => Access::FilterIndex,
    };
    let plan = match index {
        Some(index) => format!("{kind} using {index} on {table}"),
        None => format!("{kind} on {table}"),
    };
    Some((access, plan))
}

fn find_scan<'v>(node: &'v serde_json::Value, table: &str) -> Option<&'v serde_json::Value> {
    if node.get("Relation Name").and_then(|name| name.as_str()) == Some(table) {
        return Some(node);
    }
    node.get("Plans")?
        .as_array()?
        .iter()
        .find_map(|child| find_scan(child, table))
}

/// Reads SQLite's `EXPLAIN QUERY PLAN` details of the batch selection. `SCAN t` in key order (a
/// rowid table walked by its key, or a covering walk of the key's index) filters every row: a
/// filtered walk, or a full scan per batch when a temporary B-tree sorts the result; `SEARCH t
/// USING … INDEX` on something other than the key found the rows through an index.
pub fn sqlite_access(details: &[String], table: &str) -> (Access, String) {
    let scan = details
        .iter()
        .find(|detail| {
            detail.contains(&format!("SCAN {table}")) || detail.contains(&format!("SEARCH {table}"))
        })
        .cloned()
        .unwrap_or_default();
    let sorted = details.iter().any(|detail| detail.contains("TEMP B-TREE"));
    let keyed_search = scan.starts_with("SEARCH")
        && !scan.contains("INTEGER PRIMARY KEY")
        && !scan.contains("(rowid")
        && !scan.contains("sqlite_autoindex");
    let access = match (keyed_search, sorted) {
        (true, _) => Access::FilterIndex,
        (false, true) => Access::FullScan,
        (false, false) => Access::FilteredWalk,
    };
    (access, scan)
}

/// Reads a MySQL/MariaDB `EXPLAIN` row of the batch selection (`type`, `key`): `ALL` reads the
/// whole table every batch; `index`, or a range on `PRIMARY` (the keyset's `pk > after`), walks
/// the key and filters; a `ref`/`range` on another index found the rows through it.
pub fn mysql_access(access_type: &str, key: Option<&str>, table: &str) -> (Access, String) {
    let access = match (access_type, key) {
        ("ALL", _) => Access::FullScan,
        ("index", _) | (_, Some("PRIMARY")) | (_, None) => Access::FilteredWalk,
        _ => Access::FilterIndex,
    };
    let plan = match key {
        Some(key) => format!("type {access_type} using {key} on {table}"),
        None => format!("type {access_type} on {table}"),
    };
    (access, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_per_batch_or_a_walk_past_most_rows_is_refused_on_large_tables_only() {
        let fix = || Some("CREATE INDEX …".to_owned());
        let scan = (Access::FullScan, "Seq Scan on events".to_owned());
        let refused = judge(scan.clone(), 50, 1_000_000, 1_000, false, fix());
        assert_eq!(refused.verdict, Verdict::Refuse);
        assert_eq!(refused.rows_read_per_row, 20_000);
        assert_eq!(refused.fix.as_deref(), Some("CREATE INDEX …"));
        assert_eq!(
            judge(scan.clone(), 50, 1_000_000, 1_000, true, fix()).verdict,
            Verdict::Allowed
        );
        // A small table: scanning it per batch is cheap.
        assert_eq!(
            judge(scan, 5, 2_000, 100, false, fix()).verdict,
            Verdict::Pass
        );
        let walk = (
            Access::FilteredWalk,
            "Index Scan using events_pkey on events".to_owned(),
        );
        assert_eq!(
            judge(walk.clone(), 50, 1_000_000, 1_000, false, fix()).verdict,
            Verdict::Refuse
        );
        // Retention: half the table matches; the walk reads two rows per row removed.
        let retention = judge(walk, 500_000, 1_000_000, 1_000, false, fix());
        assert_eq!(
            (retention.verdict, retention.rows_read_per_row),
            (Verdict::Pass, 2)
        );
        let indexed = judge(
            (Access::FilterIndex, "Bitmap Heap Scan on events".into()),
            50,
            1_000_000,
            1_000,
            false,
            fix(),
        );
        assert_eq!((indexed.verdict, indexed.fix), (Verdict::Pass, None));
        // Without sizes, the same verdict.
        let without_sizes = judge_indexed("Bitmap Heap Scan on events".into());
        assert_eq!(
            (without_sizes.verdict, without_sizes.rows_read_per_row),
            (indexed.verdict, indexed.rows_read_per_row)
        );
    }

    #[test]
    fn plans_are_read_per_backend() {
        let pg = serde_json::json!([{"Plan": {"Node Type": "Limit", "Plans": [
            {"Node Type": "Index Scan", "Relation Name": "events", "Index Name": "events_pkey", "Filter": "(kind = 'x')"}
        ]}}]);
        assert_eq!(
            postgres_access(&pg, "events"),
            Some((
                Access::FilteredWalk,
                "Index Scan using events_pkey on events".into()
            ))
        );
        let bitmap = serde_json::json!([{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Sort", "Plans": [
            {"Node Type": "Bitmap Heap Scan", "Relation Name": "events", "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "events_tenant"}]}
        ]}]}}]);
        assert_eq!(
            postgres_access(&bitmap, "events").unwrap().0,
            Access::FilterIndex
        );
        let seq =
            serde_json::json!([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "events"}}]);
        assert_eq!(postgres_access(&seq, "events").unwrap().0, Access::FullScan);
        assert_eq!(postgres_access(&seq, "other"), None);

        let lines = |lines: &[&str]| {
            lines
                .iter()
                .map(|line| (*line).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sqlite_access(&lines(&["SCAN events"]), "events").0,
            Access::FilteredWalk
        );
        assert_eq!(
            sqlite_access(
                &lines(&[
                    "SEARCH events USING INDEX events_tenant (tenant_id=?)",
                    "USE TEMP B-TREE FOR ORDER BY"
                ]),
                "events"
            )
            .0,
            Access::FilterIndex
        );
        assert_eq!(
            sqlite_access(
                &lines(&["SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"]),
                "events"
            )
            .0,
            Access::FilteredWalk
        );
        assert_eq!(
            sqlite_access(
                &lines(&["SCAN tokens", "USE TEMP B-TREE FOR ORDER BY"]),
                "tokens"
            )
            .0,
            Access::FullScan
        );

        assert_eq!(mysql_access("ALL", None, "events").0, Access::FullScan);
        assert_eq!(
            mysql_access("index", Some("PRIMARY"), "events").0,
            Access::FilteredWalk
        );
        assert_eq!(
            mysql_access("range", Some("PRIMARY"), "events").0,
            Access::FilteredWalk
        );
        assert_eq!(
            mysql_access("ref", Some("events_tenant"), "events").0,
            Access::FilterIndex
        );
    }
}
