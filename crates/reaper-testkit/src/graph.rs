//! The invariant checker across a graph of tables: one [`TableSnapshot`] per table, taken
//! together before a job on the graph's root, and after it the same proof for every table —
//! exactly the expected rows gone, every other row unchanged, every removed row audited once
//! under its own table, each audit row within its table's batch size, and the job's counters
//! equal to its audit's sums (every table's rows together).

use std::collections::{BTreeMap, BTreeSet};

use crate::{Removal, TableSnapshot, TestDatabase};

/// One table of the graph: its name (also its catalog target), key, and how many rows one of
/// its transactions may remove.
#[derive(Debug, Clone, Copy)]
pub struct GraphTable<'a> {
    /// Table and target name.
    pub name: &'a str,
    /// Its primary key column.
    pub key: &'a str,
    /// Its batch size (child batches) or the job's (the root).
    pub max_batch: i64,
}

/// Every table of a graph as it was before a run.
#[derive(Debug)]
pub struct GraphSnapshot {
    tables: Vec<(TableSnapshot, i64)>,
}

impl GraphSnapshot {
    /// Snapshots every table (hard removal: each table's rows are deleted, none soft).
    pub async fn take(db: &TestDatabase, tables: &[GraphTable<'_>]) -> Self {
        let mut snapshots = Vec::with_capacity(tables.len());
        for table in tables {
            let snapshot = db.snapshot(table.name, table.name, table.key, None).await;
            snapshots.push((snapshot, table.max_batch));
        }
        Self { tables: snapshots }
    }

    /// Proves the run removed exactly `expected[table]` from each table (a table missing from
    /// `expected` must be untouched), each row audited once under its table.
    pub async fn assert_removed_exactly(
        &self,
        db: &TestDatabase,
        expected: &BTreeMap<&str, BTreeSet<String>>,
    ) {
        for (snapshot, max_batch) in &self.tables {
            let rows = expected
                .get(snapshot.table.as_str())
                .cloned()
                .unwrap_or_default();
            snapshot
                .assert_removed_exactly(db, &rows, Removal::Hard, *max_batch)
                .await;
        }
    }
}
