//! The catalog: the only tables and columns a job can ever touch.
//!
//! A [`Catalog`] is built from configuration ([`crate::config`]) and is immutable afterwards.
//! Identifiers in SQL come exclusively from here; producers only name targets and columns,
//! which are looked up in the catalog and rejected when absent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::graph::{self, GraphProblem, Relation, ResolvedStep, Step};
use crate::value::KeyValue;

/// How a job removes rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `DELETE` the rows.
    Hard,
    /// Set the target's soft-delete column to the current time, leaving rows already
    /// soft-deleted alone.
    Soft,
    /// `DELETE` the rows, each copied first (every column, as JSON) into `reaper_archive` in
    /// the same batch transaction, so that a restore job can put them back.
    Archive,
    /// A restore job's mode: it puts back what an archive or soft-delete job removed. Never a
    /// target's default, never asked for by name (`reaper restore JOB` makes such jobs).
    Restore,
}

impl Mode {
    /// The lowercase name used on the wire, in config and in audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hard => "hard",
            Mode::Soft => "soft",
            Mode::Archive => "archive",
            Mode::Restore => "restore",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a [`Mode`] (flags such as `--mode` name themselves in front of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not `hard`, `soft` or `archive`")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;

    /// `hard`, `soft` or `archive`, as on the wire (a restore job is made, not named).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hard" => Ok(Mode::Hard),
            "soft" => Ok(Mode::Soft),
            "archive" => Ok(Mode::Archive),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// The type of a filterable column, which decides which values and operators a filter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Integer of any width.
    Int,
    /// Text / varchar.
    Text,
    /// Boolean.
    Bool,
    /// UUID (native on PostgreSQL; canonical text on SQLite).
    Uuid,
    /// Timestamp (timestamptz on PostgreSQL; UTC text `YYYY-MM-DD HH:MM:SS` on SQLite).
    Timestamp,
}

impl ColumnType {
    /// The lowercase name used in config and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Text => "text",
            ColumnType::Bool => "bool",
            ColumnType::Uuid => "uuid",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a primary key. Keyset pagination needs a total order, so only these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// Integer key (serial, bigserial, INTEGER PRIMARY KEY, …).
    Int,
    /// Text key.
    Text,
    /// UUID key.
    Uuid,
}

impl KeyType {
    /// The lowercase name used in config and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Int => "int",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    /// Parses a checkpoint stored as text back into a key of this type.
    pub fn parse_key(self, text: &str) -> Option<KeyValue> {
        match self {
            KeyType::Int => text.parse().ok().map(KeyValue::Int),
            KeyType::Text => Some(KeyValue::Text(text.to_owned())),
            KeyType::Uuid => uuid::Uuid::parse_str(text)
                .ok()
                .map(|id| KeyValue::Text(id.hyphenated().to_string())),
        }
    }
}

/// One table that reaper may delete from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name jobs use to refer to this target.
    pub name: String,
    /// Optional schema (PostgreSQL) or database (MySQL) qualifying the table.
    pub schema: Option<String>,
    /// The table name.
    pub table: String,
    /// The primary-key column, the keyset for batching.
    pub primary_key: String,
    /// The primary key's type.
    pub key_type: KeyType,
    /// Filterable columns and their types. Filters may use no other column.
    pub columns: BTreeMap<String, ColumnType>,
    /// Mode used when a job does not say.
    pub default_mode: Mode,
    /// Batch size used when a job does not say.
    pub batch_size: u32,
    /// The largest batch size a job may ask for.
    pub max_batch_size: u32,
    /// The column soft deletes set; soft mode is refused without one.
    pub soft_delete_column: Option<String>,
    /// The most rows one job may delete from this target.
    pub max_rows: u64,
    /// Runs before a job on this target that keeps failing transiently is dead; the worker's
    /// `max_attempts` when absent.
    pub max_attempts: Option<u32>,
    /// How batches on this target are paced.
    pub throttle: crate::throttle::Throttle,
}

/// All targets of one deployment, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    targets: BTreeMap<String, Target>,
    relations: Vec<Relation>,
    cascades: Vec<graph::Cascade>,
}

impl Catalog {
    /// A catalog of the given targets (keyed by their names).
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Self {
        Self {
            targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
            relations: Vec::new(),
            cascades: Vec::new(),
        }
    }

    /// This catalog with the database cascades its targets accept (their parents are targets
    /// of this catalog: the configuration only declares them under one).
    pub fn with_cascades(mut self, cascades: Vec<graph::Cascade>) -> Self {
        self.cascades = cascades;
        self
    }

    /// The database cascades accepted for deletes of `parent`'s rows.
    pub fn cascades<'a>(
        &'a self,
        parent: &'a str,
    ) -> impl Iterator<Item = &'a graph::Cascade> + 'a {
        self.cascades.iter().filter(move |c| c.parent == parent)
    }

    /// The cascades a job on `root` in `mode` with this `plan` sets off: those of every table
    /// whose rows it deletes (its own in hard mode, and each deleting step's).
    pub fn job_cascades(
        &self,
        root: &str,
        mode: Mode,
        plan: &[ResolvedStep],
    ) -> Vec<graph::Cascade> {
        let root_deletes = matches!(mode, Mode::Hard | Mode::Archive).then_some(root);
        let deleting = plan
            .iter()
            .filter(|step| step.effect == graph::Effect::Delete)
            .map(|step| step.target().name.as_str());
        let mut cascades: Vec<graph::Cascade> = Vec::new();
        for table in root_deletes.into_iter().chain(deleting) {
            for cascade in self.cascades(table) {
                if !cascades.contains(cascade) {
                    cascades.push(cascade.clone());
                }
            }
        }
        cascades
    }

    /// This catalog with `relations` between its targets, refused when [`graph::check`] finds a
    /// cycle or a table reached with two actions, or a relation names a target the catalog lacks.
    pub fn with_relations(mut self, relations: Vec<Relation>) -> Result<Self, Vec<GraphProblem>> {
        let unknown = relations.iter().enumerate().find(|(_, r)| {
            !self.targets.contains_key(&r.parent) || !self.targets.contains_key(&r.child)
        });
        if let Some((index, _)) = unknown {
            return Err(vec![GraphProblem::UnknownTarget { index }]);
        }
        // Refused here, not only in the configuration, so no plan ever holds a soft step
        // without the column it sets.
        let soft_without_column = relations.iter().position(|r| {
            r.action == graph::Action::SoftDelete
                && self
                    .targets
                    .get(&r.child)
                    .is_some_and(|child| child.soft_delete_column.is_none())
        });
        if let Some(index) = soft_without_column {
            return Err(vec![GraphProblem::SoftDeleteWithoutColumn { index }]);
        }
        let problems = graph::check(&relations);
        if !problems.is_empty() {
            return Err(problems);
        }
        self.relations = relations;
        Ok(self)
    }

    /// Every declared relation, in declaration order.
    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    /// The relations whose parent is `parent`.
    pub fn children<'a>(&'a self, parent: &'a str) -> impl Iterator<Item = &'a Relation> + 'a {
        self.relations.iter().filter(move |r| r.parent == parent)
    }

    /// The steps a job on `root` in `mode` takes before its own rows, deepest first
    /// ([`graph::plan`]); empty for a target nothing hangs off.
    pub fn plan(&self, root: &str, mode: Mode) -> Vec<Step> {
        graph::plan(&self.relations, root, mode)
    }

    /// [`Catalog::plan`] with every target on each path resolved (a relation's targets always
    /// exist: [`Catalog::with_relations`] refuses others).
    pub fn resolved_plan(&self, root: &str, mode: Mode) -> Vec<ResolvedStep> {
        let mut steps: Vec<ResolvedStep> = self
            .plan(root, mode)
            .into_iter()
            .filter_map(|step| {
                let links = step
                    .path
                    .into_iter()
                    .map(|relation| {
                        let child = self.get(&relation.child)?.clone();
                        Some(graph::Link { relation, child })
                    })
                    .collect::<Option<Vec<_>>>()?;
                (!links.is_empty()).then_some(ResolvedStep {
                    links,
                    effect: step.effect,
                    directly_below: Vec::new(),
                })
            })
            .collect();
        // Computed once here, so a job never searches its plan per batch.
        for index in 0..steps.len() {
            let below = (0..steps.len())
                .filter(|&other| steps[other].is_directly_below(&steps[index]))
                .collect();
            steps[index].directly_below = below;
        }
        steps
    }

    /// The target with this name, if the catalog declares it.
    pub fn get(&self, name: &str) -> Option<&Target> {
        self.targets.get(name)
    }

    /// All targets, ordered by name.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    /// Names of all targets, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.targets.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_wire_words() {
        for mode in [Mode::Hard, Mode::Soft, Mode::Archive] {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        }
        let error = "Hard".parse::<Mode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`Hard` is not `hard`, `soft` or `archive`"
        );
        // A restore job is made by `reaper restore`, never named.
        assert!("restore".parse::<Mode>().is_err());
    }
}
