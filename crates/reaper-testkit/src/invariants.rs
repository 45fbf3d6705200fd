//! The invariant checker every deletion test runs: a snapshot of one table before the run
//! (every key with its row), and after it the proof that
//! - every key the test expects removed is gone (hard) or carries its soft-delete mark, the rest
//!   of its row unchanged (soft);
//! - every other row is unchanged, column by column, and no row appeared;
//! - every removed key is audited exactly once, across all the jobs that wrote audit entries
//!   for the target since the snapshot, and no audit entry names a key that was not removed;
//! - each audit entry is consistent in itself (`row_count` = its key list's length, first and
//!   last key = the list's ends, keys ascending, no more than the batch size, the expected mode);
//! - each of those jobs' batch numbers run 1, 2, … without a gap, and its ledger counters
//!   (`rows_deleted`, `batches`) equal the sums of its audit entries.
//!
//! Per table: a graph of tables takes one snapshot per table.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use reaper_core::sql::Backend;

use crate::TestDatabase;

/// How the job removes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The rows are deleted.
    Hard,
    /// The rows stay, with this snapshot's soft-delete column set.
    Soft,
}

impl Removal {
    fn audit_mode(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
        }
    }
}

/// One row: each column's value as text (NULL as `None`), in column order.
type Row = Vec<Option<String>>;

/// A table as it was before a run.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// The catalog target whose audit entries describe this table.
    pub target: String,
    pub table: String,
    pub key: String,
    /// The column a soft delete sets, when the target has one.
    pub soft_delete_column: Option<String>,
    columns: Vec<String>,
    /// Every key, with its row.
    pub rows: BTreeMap<String, Row>,
    /// The largest audit id when the snapshot was taken: later entries are the run's.
    audit_mark: i64,
    /// Keys a test inserts during the run (they may appear, and be removed).
    inserted_later: BTreeSet<String>,
    /// Keys another transaction changes during the run (their contents are not compared; they
    /// must not be removed).
    changed_by_others: BTreeSet<String>,
}

/// One audit entry, as the checker reads it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub job_id: String,
    pub batch_no: i64,
    pub mode: String,
    pub row_count: i64,
    /// Matching rows the batch left in place under legal holds.
    pub rows_held: i64,
    pub first_key: String,
    pub last_key: String,
    pub keys: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What the checker found, for assertions it cannot make alone.
#[derive(Debug)]
pub struct Checked {
    /// The keys removed since the snapshot (all audited exactly once).
    pub removed: BTreeSet<String>,
    /// The audit entries written since the snapshot, by job and batch.
    pub entries: Vec<AuditEntry>,
}

impl TestDatabase {
    /// Column names of `table`, in table order.
    pub async fn columns(&self, table: &str) -> Vec<String> {
        let sql = match self.backend {
            Backend::Postgres => format!(
                "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
            ),
            Backend::MySql => format!(
                "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
            ),
            Backend::Sqlite => {
                format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")
            }
        };
        let columns = self.strings(&sql).await;
        assert!(!columns.is_empty(), "table `{table}` has no columns");
        columns
    }

    /// Every row of `table`, each column as text, by key.
    async fn rows(&self, table: &str, key: &str, columns: &[String]) -> BTreeMap<String, Row> {
        let select: Vec<String> = std::iter::once(key)
            .chain(columns.iter().map(String::as_str))
            .map(|column| self.as_text(column))
            .collect();
        let rows = self
            .optional_strings(&format!("SELECT {} FROM {table}", select.join(", ")))
            .await;
        rows.into_iter()
            .map(|mut row| {
                let key = row.remove(0).expect("a NULL primary key");
                (key, row)
            })
            .collect()
    }

    /// The largest audit id so far (0 before the ledger exists or holds anything).
    async fn audit_mark(&self) -> i64 {
        let sql = format!(
            "SELECT {} FROM reaper_audit",
            self.as_text("COALESCE(max(id), 0)")
        );
        match self.try_optional_strings(&sql).await {
            Ok(rows) => rows[0][0].as_deref().unwrap_or("0").parse().unwrap(),
            Err(_) => 0,
        }
    }

    /// `table` (the catalog target `target`, keyed by `key`) as it is now, before a run.
    pub async fn snapshot(
        &self,
        target: &str,
        table: &str,
        key: &str,
        soft_delete_column: Option<&str>,
    ) -> TableSnapshot {
        let columns = self.columns(table).await;
        let rows = self.rows(table, key, &columns).await;
        TableSnapshot {
            target: target.into(),
            table: table.into(),
            key: key.into(),
            soft_delete_column: soft_delete_column.map(Into::into),
            columns,
            rows,
            audit_mark: self.audit_mark().await,
            inserted_later: BTreeSet::new(),
            changed_by_others: BTreeSet::new(),
        }
    }

    /// The `events` fixture (target `events`, soft-delete column `deleted_at`).
    pub async fn snapshot_events(&self) -> TableSnapshot {
        self.snapshot("events", "events", "id", Some("deleted_at"))
            .await
    }

    /// The `tokens` fixture (target `tokens`, no soft-delete column).
    pub async fn snapshot_tokens(&self) -> TableSnapshot {
        self.snapshot("tokens", "tokens", "id", None).await
    }

    /// Audit entries of `target` after audit id `mark`, by job and batch.
    pub async fn audit_entries_after(&self, target: &str, mark: i64) -> Vec<AuditEntry> {
        self.audit_entries(&format!("target = '{target}' AND id > {mark}"))
            .await
    }

    /// Audit entries matching `condition`, by job and batch.
    async fn audit_entries(&self, condition: &str) -> Vec<AuditEntry> {
        let columns = [
            "job_id",
            "batch_no",
            "mode",
            "row_count",
            "first_key",
            "last_key",
            "deleted_keys",
            "created_at",
            "rows_held",
        ]
        .map(|column| self.as_text(column))
        .join(", ");
        // Ordered here: the casts to text would order batch numbers as text.
        let rows = self
            .optional_strings(&format!(
                "SELECT {columns} FROM reaper_audit WHERE {condition}"
            ))
            .await;
        let mut entries: Vec<AuditEntry> = rows
            .into_iter()
            .map(|row| {
                let text = |index: usize| row[index].clone().unwrap_or_default();
                let list: Vec<serde_json::Value> = serde_json::from_str(&text(6))
                    .unwrap_or_else(|error| panic!("deleted_keys {}: {error}", text(6)));
                AuditEntry {
                    job_id: text(0),
                    batch_no: text(1).parse().unwrap(),
                    mode: text(2),
                    row_count: text(3).parse().unwrap(),
                    first_key: text(4),
                    last_key: text(5),
                    keys: list.into_iter().map(key_text).collect(),
                    created_at: parse_time(&text(7)),
                    rows_held: text(8).parse().unwrap(),
                }
            })
            .collect();
        entries.sort_by(|a, b| (&a.job_id, a.batch_no).cmp(&(&b.job_id, b.batch_no)));
        entries
    }

    /// Every audit entry of one job, by batch (every table's, for a job across relations).
    pub async fn audit_of(&self, job_id: &str) -> Vec<AuditEntry> {
        self.audit_entries(&format!("job_id = '{job_id}'")).await
    }
}

/// An audited key as text (JSON numbers as digits, strings without quotes).
fn key_text(key: serde_json::Value) -> String {
    match key {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    }
}

/// A timestamp as a backend writes it as text (`2026-12-01 15:20:00.123456+00`, `…+00:00`,
/// without a zone, or RFC 3339).
pub fn parse_time(text: &str) -> DateTime<Utc> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return at.to_utc();
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return at.to_utc();
        }
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|error| panic!("cannot read the time `{text}`: {error}"))
        .and_utc()
}

/// Keys compare as numbers when both are integers, else as text (uuid and text keys).
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

impl TableSnapshot {
    /// The test itself inserts rows with these keys during the run.
    pub fn with_rows_inserted_later(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.inserted_later.extend(keys);
        self
    }

    /// Another transaction of the test changes these rows during the run: they must survive,
    /// but their contents are not compared.
    pub fn with_rows_changed_by_others(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.changed_by_others.extend(keys);
        self
    }

    /// Proves the run removed exactly `expected` (see the module's list) in batches of at most
    /// `max_batch` rows.
    pub async fn assert_removed_exactly(
        &self,
        db: &TestDatabase,
        expected: &BTreeSet<String>,
        removal: Removal,
        max_batch: i64,
    ) -> Checked {
        let checked = self.check(db, removal, max_batch).await;
        assert_eq!(
            &checked.removed,
            expected,
            "{}: the removed keys differ from the expected ones (missing: {:?}; extra: {:?})",
            self.table,
            expected.difference(&checked.removed).collect::<Vec<_>>(),
            checked.removed.difference(expected).collect::<Vec<_>>()
        );
        checked
    }

    /// Like [`Self::assert_removed_exactly`] for a run that may stop early (a cancel, a cap):
    /// what it removed must lie within `matching`; returns what it removed.
    pub async fn assert_removed_within(
        &self,
        db: &TestDatabase,
        matching: &BTreeSet<String>,
        removal: Removal,
        max_batch: i64,
    ) -> Checked {
        let checked = self.check(db, removal, max_batch).await;
        let outside: Vec<_> = checked.removed.difference(matching).collect();
        assert!(
            outside.is_empty(),
            "{}: rows outside the filter were removed: {outside:?}",
            self.table
        );
        checked
    }

    /// Proves nothing was removed or changed, and no audit entry written for the target.
    pub async fn assert_untouched(&self, db: &TestDatabase) {
        self.assert_removed_exactly(db, &BTreeSet::new(), Removal::Hard, 0)
            .await;
    }

    async fn check(&self, db: &TestDatabase, removal: Removal, max_batch: i64) -> Checked {
        let now = db.rows(&self.table, &self.key, &self.columns).await;
        let removed = self.compare_rows(&now, removal);
        let entries = db.audit_entries_after(&self.target, self.audit_mark).await;
        // Each entry in itself.
        for entry in &entries {
            check_entry(entry, removal, max_batch);
        }
        // Every removed key audited once, and only those.
        let mut audited = BTreeMap::<&str, &str>::new();
        for entry in &entries {
            for key in &entry.keys {
                if let Some(first) = audited.insert(key, &entry.job_id) {
                    panic!(
                        "{}: key {key} audited twice (job {first}, then job {} batch {})",
                        self.table, entry.job_id, entry.batch_no
                    );
                }
            }
        }
        let audited: BTreeSet<String> = audited.keys().map(|key| (*key).to_owned()).collect();
        assert_eq!(
            audited,
            removed,
            "{}: audited keys vs removed rows (removed unaudited: {:?}; audited but not removed: {:?})",
            self.table,
            removed.difference(&audited).collect::<Vec<_>>(),
            audited.difference(&removed).collect::<Vec<_>>()
        );
        // Each job's batches and its ledger counters.
        let jobs: BTreeSet<&str> = entries.iter().map(|entry| entry.job_id.as_str()).collect();
        for job in jobs {
            check_job(db, job).await;
        }
        Checked { removed, entries }
    }

    /// The keys removed (hard: gone; soft: newly marked) since the snapshot; panics on any
    /// other change.
    fn compare_rows(&self, now: &BTreeMap<String, Row>, removal: Removal) -> BTreeSet<String> {
        let appeared: Vec<&String> = now
            .keys()
            .filter(|key| !self.rows.contains_key(*key) && !self.inserted_later.contains(*key))
            .collect();
        assert!(
            appeared.is_empty(),
            "{}: rows appeared during the run: {appeared:?}",
            self.table
        );
        let soft = match removal {
            Removal::Soft => Some(
                self.columns
                    .iter()
                    .position(|column| Some(column) == self.soft_delete_column.as_ref())
                    .unwrap_or_else(|| panic!("{}: no soft-delete column", self.table)),
            ),
            Removal::Hard => None,
        };
        let mut removed: BTreeSet<String> = self
            .inserted_later
            .iter()
            .filter(|key| !now.contains_key(*key))
            .cloned()
            .collect();
        let mut changed = Vec::new();
        for (key, before) in &self.rows {
            if self.changed_by_others.contains(key) {
                assert!(
                    now.contains_key(key),
                    "{}: row {key}, changed by another transaction, was removed",
                    self.table
                );
                continue;
            }
            let Some(after) = now.get(key) else {
                assert!(
                    soft.is_none(),
                    "{}: row {key} was deleted by a soft delete",
                    self.table
                );
                removed.insert(key.clone());
                continue;
            };
            if before == after {
                continue;
            }
            // Soft: only the mark may change, from NULL to a value.
            let marked = soft.is_some_and(|column| {
                before[column].is_none()
                    && after[column].is_some()
                    && before
                        .iter()
                        .zip(after)
                        .enumerate()
                        .all(|(index, (b, a))| index == column || b == a)
            });
            if marked {
                removed.insert(key.clone());
            } else {
                changed.push(format!("{key}: {before:?} -> {after:?}"));
            }
        }
        assert!(
            changed.is_empty(),
            "{}: rows changed that no job may change ({}): {:?}",
            self.table,
            changed.len(),
            &changed[..changed.len().min(5)]
        );
        removed
    }
}

fn check_entry(entry: &AuditEntry, removal: Removal, max_batch: i64) {
    let at = format!("audit of job {} batch {}", entry.job_id, entry.batch_no);
    assert_eq!(entry.mode, removal.audit_mode(), "{at}: mode");
    assert_eq!(
        entry.row_count,
        i64::try_from(entry.keys.len()).unwrap(),
        "{at}: row_count vs its key list {:?}",
        entry.keys
    );
    // A batch that only left held rows in place is audited (with its count), nothing else is.
    assert!(
        entry.row_count > 0 || entry.rows_held > 0,
        "{at}: an empty batch was audited"
    );
    if entry.row_count == 0 {
        return;
    }
    assert!(
        entry.row_count <= max_batch,
        "{at}: {} rows exceed the batch size {max_batch}",
        entry.row_count
    );
    assert_eq!(
        Some(&entry.first_key),
        entry.keys.first(),
        "{at}: first_key"
    );
    assert_eq!(Some(&entry.last_key), entry.keys.last(), "{at}: last_key");
    assert!(
        entry
            .keys
            .windows(2)
            .all(|pair| key_order(&pair[0], &pair[1]).is_lt()),
        "{at}: keys not ascending: {:?}",
        entry.keys
    );
}

/// A job's batch numbers run 1..=n, and its ledger counters are its audit's sums.
async fn check_job(db: &TestDatabase, job: &str) {
    let entries = db.audit_of(job).await;
    let numbers: Vec<i64> = entries.iter().map(|entry| entry.batch_no).collect();
    let contiguous: Vec<i64> = (1..=i64::try_from(entries.len()).unwrap()).collect();
    assert_eq!(numbers, contiguous, "job {job}: batch numbers");
    let rows: i64 = entries.iter().map(|entry| entry.row_count).sum();
    let held: i64 = entries.iter().map(|entry| entry.rows_held).sum();
    let ledger = db
        .optional_strings(&format!(
            "SELECT {}, {}, {} FROM reaper_jobs WHERE id = '{job}'",
            db.as_text("rows_deleted"),
            db.as_text("batches"),
            db.as_text("rows_held")
        ))
        .await;
    assert_eq!(ledger.len(), 1, "job {job} is not in the ledger");
    let counter = |index: usize| -> i64 { ledger[0][index].as_deref().unwrap().parse().unwrap() };
    assert_eq!(
        counter(0),
        rows,
        "job {job}: ledger rows_deleted vs audited rows"
    );
    assert_eq!(
        counter(1),
        i64::try_from(entries.len()).unwrap(),
        "job {job}: ledger batches vs audit entries"
    );
    assert_eq!(counter(2), held, "job {job}: ledger rows_held vs audited");
}
