//! Relations between targets: the tables that hang off a target, and the plan of steps a job
//! on that target walks, deepest table first.
//!
//! A [`Relation`] says that rows of a *child* target refer to rows of a *parent* target through
//! `child.column = parent.parent_column`, and what happens to those child rows when their parent
//! goes ([`Action`]). Relations nest (users → orders → order_items) and need no database
//! constraint (an analytics table with a `user_id` column). [`check`] refuses what no plan can
//! run: a cycle, and a table reached by two relations with different actions.
//!
//! What a child row undergoes depends on what happens to its parent row ([`Effect::of`]):
//!
//! | parent row is … | child `delete` | child `soft_delete` | child `set_null` |
//! |---|---|---|---|
//! | deleted         | deleted        | soft-deleted        | column set to NULL |
//! | soft-deleted    | left alone     | soft-deleted        | left alone |
//! | kept (soft-deleted child's hard children, nulled rows) | left alone | left alone | left alone |
//!
//! A row that stays (soft-deleted, or its column set to NULL) keeps its own children, except
//! that a soft delete carries on to the children declared `soft_delete`.
//!
//! A [`Cascade`] is the one exception to "reaper removes every row itself": a table the
//! database empties through its own `ON DELETE CASCADE`, accepted because it is known to be
//! small. Its rows are not audited by key (reaper never sees them); instead every transaction
//! that deletes rows of the cascade's parent first counts the rows the database will cascade
//! and deletes only as many parents as stay within the cascade's bound ([`within_bound`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::Mode;

/// What happens to a child row when its parent row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The child row is deleted before its parent.
    Delete,
    /// The child row is soft-deleted (the child target's `soft_delete_column`).
    SoftDelete,
    /// The child's column is set to NULL; the row stays.
    SetNull,
}

impl Action {
    /// The word used in config and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::SoftDelete => "soft_delete",
            Action::SetNull => "set_null",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared relation: rows of `child` whose `column` equals a parent row's `parent_column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The parent target's name.
    pub parent: String,
    /// The child target's name.
    pub child: String,
    /// The child's column that refers to the parent.
    pub column: String,
    /// The parent's column it refers to (the parent's primary key unless declared otherwise).
    pub parent_column: String,
    /// What happens to child rows when their parent goes.
    pub action: Action,
    /// Whether the start-up check accepts a child column that leads no index.
    pub allow_unindexed: bool,
}

impl Relation {
    /// `parent.parent_column` → `child.column` with `action`; the child column must lead an
    /// index (`allow_unindexed` off).
    pub fn new(
        parent: &str,
        child: &str,
        column: &str,
        parent_column: &str,
        action: Action,
    ) -> Self {
        Self {
            parent: parent.into(),
            child: child.into(),
            column: column.into(),
            parent_column: parent_column.into(),
            action,
            allow_unindexed: false,
        }
    }
}

/// A database `ON DELETE CASCADE` a target accepts (`[[targets.NAME.cascades]]`): deleting a
/// row of `parent` makes the database delete the rows of `table` whose `column` equals the
/// row's `parent_column` — at most `max_rows_per_batch` of them in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade {
    /// The target whose deleted rows cascade.
    pub parent: String,
    /// The cascaded table's schema (the parent's when absent).
    pub schema: Option<String>,
    /// The table the database deletes from.
    pub table: String,
    /// Its column that refers to the parent.
    pub column: String,
    /// The parent's column it refers to.
    pub parent_column: String,
    /// The most rows of `table` one batch may make the database delete.
    pub max_rows_per_batch: u64,
}

/// How many of a batch's rows (in order) may be deleted together: the longest prefix whose
/// cascaded rows, summed per cascade, stay within every cascade's bound. `cascaded[c][k]` is
/// what deleting row `k` cascades through `cascades[c]`. 0 means the first row alone
/// cascades more than a bound allows.
pub fn within_bound(cascades: &[Cascade], cascaded: &[Vec<u64>], rows: usize) -> usize {
    let mut totals = vec![0_u64; cascades.len()];
    for row in 0..rows {
        for (index, cascade) in cascades.iter().enumerate() {
            let adds = cascaded
                .get(index)
                .and_then(|counts| counts.get(row))
                .copied()
                .unwrap_or(0);
            totals[index] = totals[index].saturating_add(adds);
            if totals[index] > cascade.max_rows_per_batch {
                return row;
            }
        }
    }
    rows
}

/// What one step does to the rows it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `DELETE` them.
    Delete,
    /// Soft-delete them.
    SoftDelete,
    /// Set the relation's column to NULL.
    SetNull,
}

impl Effect {
    /// The effect a job in `mode` has on its own target's rows.
    pub fn of_mode(mode: Mode) -> Self {
        match mode {
            Mode::Hard | Mode::Archive => Effect::Delete,
            Mode::Soft => Effect::SoftDelete,
            // Never planned: [`plan`] gives a restore job no steps.
            Mode::Restore => Effect::SoftDelete,
        }
    }

    /// What a child row declared with `action` undergoes when its parent row undergoes `self`;
    /// `None` when the child row is left alone (see the module's table).
    pub fn of(self, action: Action) -> Option<Effect> {
        match (self, action) {
            (Effect::Delete, Action::Delete) => Some(Effect::Delete),
            (Effect::Delete | Effect::SoftDelete, Action::SoftDelete) => Some(Effect::SoftDelete),
            (Effect::Delete, Action::SetNull) => Some(Effect::SetNull),
            (Effect::SoftDelete, Action::Delete | Action::SetNull) => None,
            (Effect::SetNull, _) => None,
        }
    }

    /// The word used in audit rows and results: `hard`, `soft`, `set_null`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Delete => "hard",
            Effect::SoftDelete => "soft",
            Effect::SetNull => "set_null",
        }
    }
}

/// One step of a job's plan: the rows of a descendant table reached through `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The relations from the job's target down to this step's table, outermost first.
    pub path: Vec<Relation>,
    /// What the step does to its rows.
    pub effect: Effect,
}

impl Step {
    /// The relation this step's rows hang from (the last of the path).
    pub fn relation(&self) -> &Relation {
        // A step is only ever built with at least one relation (see `plan`).
        &self.path[self.path.len() - 1]
    }

    /// How deep the step's table lies below the job's target (children are 1).
    pub fn depth(&self) -> usize {
        self.path.len()
    }

    /// `users → orders → order_items`, for messages and results.
    pub fn describe(&self) -> String {
        describe_path(&self.path)
    }
}

/// One link of a step's path with its child target resolved in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The relation.
    pub relation: Relation,
    /// Its child target, as declared.
    pub child: crate::catalog::Target,
}

/// A [`Step`] with every target on its path resolved: what the engine and the SQL need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStep {
    /// From the job's target down; the last link's child is the step's table.
    pub links: Vec<Link>,
    /// What the step does to its rows.
    pub effect: Effect,
    /// The plan's indexes of the steps whose rows hang directly off this step's rows (their
    /// path is this one's plus one link): what a batch that deletes this step's rows re-checks.
    pub directly_below: Vec<usize>,
}

impl ResolvedStep {
    /// Whether `self`'s path is `step`'s plus one link (its rows hang off `step`'s rows).
    pub fn is_directly_below(&self, step: &ResolvedStep) -> bool {
        self.links.len() == step.links.len() + 1
            && self
                .links
                .iter()
                .zip(&step.links)
                .all(|(a, b)| a.relation == b.relation)
    }

    /// The step's table (the last link's child).
    pub fn target(&self) -> &crate::catalog::Target {
        // Built only from non-empty steps (see `Catalog::resolved_plan`).
        &self.links[self.links.len() - 1].child
    }

    /// The relation its rows hang from.
    pub fn relation(&self) -> &Relation {
        &self.links[self.links.len() - 1].relation
    }

    /// `users → orders → order_items`.
    pub fn describe(&self) -> String {
        let path: Vec<Relation> = self.links.iter().map(|l| l.relation.clone()).collect();
        describe_path(&path)
    }
}

/// `users → orders → order_items` for a chain of relations.
pub fn describe_path(path: &[Relation]) -> String {
    let mut text = path.first().map(|r| r.parent.clone()).unwrap_or_default();
    for relation in path {
        text.push_str(" → ");
        text.push_str(&relation.child);
    }
    text
}

/// The steps a job on `root` in `mode` takes before it touches `root`'s own rows, deepest
/// first: every descendant table reached through relations whose effect is not "left alone",
/// each after all of its own descendants (post-order), siblings in declaration order. A table
/// reached through two relations is two steps, one per path. `relations` must have passed
/// [`check`] (no cycle), or this would not end.
pub fn plan(relations: &[Relation], root: &str, mode: Mode) -> Vec<Step> {
    let mut steps = Vec::new();
    if mode == Mode::Restore {
        // A restore puts rows back; it removes nothing below them.
        return steps;
    }
    descend(
        relations,
        root,
        Effect::of_mode(mode),
        &mut Vec::new(),
        &mut steps,
    );
    steps
}

fn descend(
    relations: &[Relation],
    parent: &str,
    parent_effect: Effect,
    path: &mut Vec<Relation>,
    steps: &mut Vec<Step>,
) {
    for relation in relations.iter().filter(|r| r.parent == parent) {
        let Some(effect) = parent_effect.of(relation.action) else {
            continue;
        };
        path.push(relation.clone());
        descend(relations, &relation.child, effect, path, steps);
        steps.push(Step {
            path: path.clone(),
            effect,
        });
        path.pop();
    }
}

/// A relation no plan can run, with the index of the relation that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphProblem {
    /// Following relations from `relations[index]` comes back to where it started.
    Cycle {
        /// The relation that closes the cycle.
        index: usize,
        /// The targets around the cycle, first repeated last.
        cycle: Vec<String>,
    },
    /// The same child table is reached through two relations with different actions.
    ConflictingActions {
        /// The later of the two relations.
        index: usize,
        /// The earlier one, which declares the other action.
        other: usize,
    },
    /// `relations[index]` names a parent or child the catalog does not declare.
    UnknownTarget {
        /// The relation.
        index: usize,
    },
    /// `relations[index]` is `soft_delete` but its child target has no `soft_delete_column`.
    SoftDeleteWithoutColumn {
        /// The relation.
        index: usize,
    },
}

/// Refuses cycles and tables reached with two different actions. Each cycle is reported once,
/// at the relation that closes it when walking relations in order.
pub fn check(relations: &[Relation]) -> Vec<GraphProblem> {
    let mut problems = Vec::new();
    let mut first_action: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, relation) in relations.iter().enumerate() {
        match first_action.get(relation.child.as_str()) {
            Some(&other) if relations[other].action != relation.action => {
                problems.push(GraphProblem::ConflictingActions { index, other });
            }
            Some(_) => {}
            None => {
                first_action.insert(&relation.child, index);
            }
        }
    }
    let mut reported: Vec<Vec<String>> = Vec::new();
    for (index, relation) in relations.iter().enumerate() {
        if let Some(mut cycle) = path_back(relations, &relation.child, &relation.parent) {
            cycle.insert(0, relation.parent.clone());
            let mut members = cycle[..cycle.len() - 1].to_vec();
            members.sort();
            if !reported.contains(&members) {
                reported.push(members);
                problems.push(GraphProblem::Cycle { index, cycle });
            }
        }
    }
    problems
}

/// The targets from `from` to `to` following relations (both ends included), if `to` is
/// reachable. Breadth-first over target names, so it ends on any graph.
fn path_back(relations: &[Relation], from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![from];
    let mut seen = std::collections::BTreeSet::from([from]);
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for node in frontier {
            if node == to {
                let mut path = vec![to.to_owned()];
                let mut at = to;
                while let Some(&previous) = came_from.get(at) {
                    path.push(previous.to_owned());
                    at = previous;
                }
                path.reverse();
                return Some(path);
            }
            for relation in relations.iter().filter(|r| r.parent == node) {
                if seen.insert(&relation.child) {
                    came_from.insert(&relation.child, node);
                    next.push(relation.child.as_str());
                }
            }
        }
        frontier = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(parent: &str, child: &str, action: Action) -> Relation {
        Relation::new(parent, child, &format!("{parent}_id"), "id", action)
    }

    fn shop() -> Vec<Relation> {
        vec![
            relation("users", "sessions", Action::Delete),
            relation("users", "orders", Action::Delete),
            relation("orders", "order_items", Action::Delete),
            relation("users", "events", Action::SetNull),
            relation("users", "comments", Action::SoftDelete),
            relation("comments", "reactions", Action::Delete),
            relation("comments", "flags", Action::SoftDelete),
        ]
    }

    fn tables(steps: &[Step]) -> Vec<(String, &'static str)> {
        steps
            .iter()
            .map(|s| (s.describe(), s.effect.as_str()))
            .collect()
    }

    #[test]
    fn a_hard_job_plans_every_descendant_deepest_first() {
        let steps = plan(&shop(), "users", Mode::Hard);
        let expected = [
            ("users → sessions", "hard"),
            ("users → orders → order_items", "hard"),
            ("users → orders", "hard"),
            ("users → events", "set_null"),
            // A soft-deleted comment stays, so its hard children stay; soft ones follow it.
            ("users → comments → flags", "soft"),
            ("users → comments", "soft"),
        ];
        let expected: Vec<(String, &str)> =
            expected.iter().map(|(t, e)| (t.to_string(), *e)).collect();
        assert_eq!(tables(&steps), expected);
        for step in &steps {
            let deeper_later = steps
                .iter()
                .skip_while(|s| *s != step)
                .any(|s| s.depth() > step.depth() && s.path.starts_with(&step.path));
            assert!(
                !deeper_later,
                "{} runs before a descendant",
                step.describe()
            );
        }
    }

    #[test]
    fn a_soft_job_carries_only_to_soft_children() {
        let steps = plan(&shop(), "users", Mode::Soft);
        let expected: Vec<(String, &str)> = vec![
            ("users → comments → flags".into(), "soft"),
            ("users → comments".into(), "soft"),
        ];
        assert_eq!(tables(&steps), expected);
    }

    #[test]
    fn a_target_without_relations_plans_nothing() {
        assert!(plan(&shop(), "order_items", Mode::Hard).is_empty());
        assert!(plan(&[], "users", Mode::Hard).is_empty());
    }

    #[test]
    fn the_effect_table_is_the_documented_one() {
        use Action::*;
        let table = [
            (Effect::Delete, Delete, Some(Effect::Delete)),
            (Effect::Delete, SoftDelete, Some(Effect::SoftDelete)),
            (Effect::Delete, SetNull, Some(Effect::SetNull)),
            (Effect::SoftDelete, Delete, None),
            (Effect::SoftDelete, SoftDelete, Some(Effect::SoftDelete)),
            (Effect::SoftDelete, SetNull, None),
            (Effect::SetNull, Delete, None),
            (Effect::SetNull, SoftDelete, None),
            (Effect::SetNull, SetNull, None),
        ];
        for (parent, action, child) in table {
            assert_eq!(parent.of(action), child, "{parent:?} × {action}");
        }
    }

    #[test]
    fn cycles_are_found_once_with_their_path() {
        let mut relations = shop();
        relations.push(relation("order_items", "users", Action::Delete));
        let problems = check(&relations);
        assert_eq!(
            problems,
            vec![GraphProblem::Cycle {
                index: 1,
                cycle: vec![
                    "users".into(),
                    "orders".into(),
                    "order_items".into(),
                    "users".into()
                ],
            }]
        );
        let own = check(&[relation("users", "users", Action::SetNull)]);
        assert_eq!(
            own,
            vec![GraphProblem::Cycle {
                index: 0,
                cycle: vec!["users".into(), "users".into()],
            }]
        );
    }

    #[test]
    fn two_paths_must_agree_on_the_action() {
        let mut relations = shop();
        relations.push(relation("users", "order_items", Action::Delete));
        assert!(check(&relations).is_empty(), "same action: two steps, fine");
        assert_eq!(plan(&relations, "users", Mode::Hard).len(), 7);
        relations.push(relation("sessions", "order_items", Action::SetNull));
        assert_eq!(
            check(&relations),
            vec![GraphProblem::ConflictingActions { index: 8, other: 2 }]
        );
    }

    #[test]
    fn a_batch_keeps_the_longest_prefix_within_every_cascade_bound() {
        let cascade = |table: &str, bound| Cascade {
            parent: "users".into(),
            schema: None,
            table: table.into(),
            column: "user_id".into(),
            parent_column: "id".into(),
            max_rows_per_batch: bound,
        };
        let both = [cascade("logins", 10), cascade("tokens", 3)];
        assert_eq!(within_bound(&both, &[vec![4, 4, 2], vec![1, 1, 1]], 3), 3);
        assert_eq!(within_bound(&both, &[vec![4, 4, 3], vec![1, 1, 1]], 3), 2);
        assert_eq!(within_bound(&both, &[vec![1, 1, 1], vec![2, 2, 0]], 3), 1);
        assert_eq!(within_bound(&both, &[vec![11, 0], vec![0, 0]], 2), 0);
        assert_eq!(within_bound(&[], &[], 5), 5, "no cascade, no bound");
    }

    #[test]
    fn the_shop_has_no_problem() {
        assert!(check(&shop()).is_empty());
    }
}
