//! Statements of a job across relations (issue 12), every backend. For each window of parent
//! keys (selected as a one-table job selects them), each step of the job's plan drains the
//! step's rows that hang off those parents in bounded child batches — one transaction each:
//! lease check, [`select_step`], [`remove_step`], audit row, counters — deepest step first; then
//! the parents' own transaction re-checks that no row of a direct child is left
//! ([`select_step`] with a limit of 1), locks the parents still matching ([`lock_parents`]) and
//! removes them ([`remove_parents`]) with their audit row and the checkpoint.
//!
//! A child batch needs no checkpoint: the rows it removes (or soft-deletes, or whose column it
//! sets to NULL) no longer match its selection, so a resumed drain selects exactly the rows
//! left.
//!
//! **Legal holds** ([`crate::holds`]): every selection that removes rows leaves out the rows a
//! hold keeps, inside its own statement. A row is *kept* when it is held, when it hangs (through
//! the step's path) off a held row — a hold on a user keeps its orders and their items —, or when
//! a held row hangs off it through the plan's steps below — a held order item keeps its order
//! and its user, whatever the relations' actions (a held row is left exactly as it is, so it
//! still refers to its parent, which therefore stays). Every other row is removed as if no hold
//! existed: a kept user's other orders go. [`count_kept`] and [`count_kept_roots`] count the
//! kept rows for the audit and the dry run.

use chrono::{DateTime, Utc};

use crate::catalog::Target;
use crate::graph::{Cascade, Effect, ResolvedStep};
use crate::holds::{ActiveHolds, HeldRows};
use crate::sql::holds::write_held;
use crate::sql::{
    Backend, SqlWriter, Statement, key_param, write_filter, write_key_projection,
    write_removal_head,
};
use crate::validate::ValidatedJob;
use crate::value::{KeyValue, SqlValue};

/// The step's next rows: `SELECT pk FROM child WHERE column IN (<parent values>) [AND
/// soft_delete_column IS NULL] [AND NOT (<kept> IS TRUE)] ORDER BY pk LIMIT $n [FOR UPDATE]`,
/// where the parent values follow the step's path up to the window's `parents` keys (one nested
/// `IN` per level, each leaving out the level's held rows) and `<kept>` is true for a held row
/// or one a held row below refers to. Rows are locked on PostgreSQL and MySQL (SQLite has one
/// writer), so every selected row is removed.
///
/// Expected plan: at each level an index lookup on the relation's column (the start-up check
/// requires an index it leads), the root level by primary key; a sort of at most the rows
/// hanging off the window. Under holds, the held rows by key or the holds' filters, and per
/// level below an index lookup on the relation's column.
pub fn select_step(
    backend: Backend,
    job: &ValidatedJob,
    step: &ResolvedStep,
    (parents, limit): (&[KeyValue], u32),
    holds: &ActiveHolds,
) -> Statement {
    let child = step.target();
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ");
    write_key_projection(&mut w, child);
    w.push(" FROM ").table(child).push(" WHERE ");
    write_step_rows(&mut w, job, step, Root::Keys(parents), Some(holds));
    w.push(" ORDER BY ")
        .ident(&child.primary_key)
        .push(" LIMIT ")
        .param(SqlValue::Int(i64::from(limit)));
    if backend != Backend::Sqlite {
        w.push(" FOR UPDATE");
    }
    w.finish()
}

/// `column IN (<values of the path>) [AND soft_delete_column IS NULL]`: the rows of the step's
/// table that hang off the window's parents and still need its effect; with `holds`, only those
/// it may remove (no kept row on the path, not kept itself).
fn write_step_rows(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    step: &ResolvedStep,
    parents: Root<'_>,
    holds: Option<&ActiveHolds>,
) {
    let depth = step.links.len();
    w.ident(&step.relation().column).push(" IN (");
    write_parent_values(w, job, step, (depth - 1, parents), holds);
    w.push(")");
    if let (Effect::SoftDelete, Some(column)) = (step.effect, &step.target().soft_delete_column) {
        w.push(" AND ").ident(column).push(" IS NULL");
    }
    if let Some(holds) = holds
        && can_keep(job, holds, step.target(), &step.directly_below)
    {
        w.push(" AND NOT (");
        write_kept(w, job, holds, step.target(), &step.directly_below);
        w.push(" IS TRUE)");
    }
}

/// Which rows of the job's own table a step's rows hang off.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    /// A window's parent keys.
    Keys(&'a [KeyValue]),
    /// Every row the job's filter matches (dry runs).
    Filter,
}

/// `SELECT parent_column FROM <level> WHERE …`: the values the link at `level` refers to. Level
/// 0 is the job's own table, restricted to the window's keys that still match the job's filter
/// (or to the filter alone); level `k`
/// is the child of link `k - 1`, restricted to the rows hanging off level `k - 1`. With
/// `holds`, each level leaves out its held rows, so nothing below a held row is selected.
fn write_parent_values(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    step: &ResolvedStep,
    (level, parents): (usize, Root<'_>),
    holds: Option<&ActiveHolds>,
) {
    let link = &step.links[level];
    w.push("SELECT ")
        .ident(&link.relation.parent_column)
        .push(" FROM ");
    if level == 0 {
        w.table(&job.target).push(" WHERE ");
        match parents {
            // The window's keys were read without a lock: a parent that stopped matching
            // since keeps its children (the parents' own transaction keeps it too).
            Root::Keys(keys) => {
                write_key_list(w, &job.target, keys);
                w.push(" AND (");
                write_filter(w, job);
                w.push(")");
            }
            Root::Filter => {
                w.push("(");
                write_filter(w, job);
                w.push(")");
            }
        }
        write_not_held(w, &job.target, holds);
    } else {
        let above = &step.links[level - 1];
        w.table(&above.child)
            .push(" WHERE ")
            .ident(&above.relation.column)
            .push(" IN (");
        write_parent_values(w, job, step, (level - 1, parents), holds);
        w.push(")");
        write_not_held(w, &above.child, holds);
    }
}

/// ` AND NOT <held>` when a hold is active on `target`.
fn write_not_held(w: &mut SqlWriter, target: &Target, holds: Option<&ActiveHolds>) {
    let held = holds.map_or(&[][..], |holds| holds.on(&target.name));
    if !held.is_empty() {
        w.push(" AND NOT ");
        write_held(w, target, held);
    }
}

/// `SELECT count(*) FROM (SELECT 1 FROM child WHERE column IN (<values of the path from every
/// row the job's filter matches>) LIMIT $cap) AS matching`: the rows the step would remove now
/// (kept rows left out, as [`select_step`] leaves them; empty `holds`: every row hanging off),
/// for a dry run (no cap), the `max_rows` pre-check (counting no further than the cap) and a
/// receipt's verification. Expected plan: as [`select_step`]'s, the root level by the job's
/// filter.
pub fn count_step(
    backend: Backend,
    job: &ValidatedJob,
    step: &ResolvedStep,
    cap: Option<u64>,
    holds: &ActiveHolds,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM (SELECT 1 FROM ")
        .table(step.target())
        .push(" WHERE ");
    write_step_rows(&mut w, job, step, Root::Filter, Some(holds));
    if let Some(cap) = cap {
        w.push(" LIMIT ")
            .param(SqlValue::Int(i64::try_from(cap).unwrap_or(i64::MAX)));
    }
    w.push(") AS matching");
    w.finish()
}

/// `pk IN ($1, $2, …)`, typed like the key.
pub(crate) fn write_key_list(w: &mut SqlWriter, target: &Target, keys: &[KeyValue]) {
    w.ident(&target.primary_key).push(" IN (");
    for (index, key) in keys.iter().enumerate() {
        if index > 0 {
            w.push(", ");
        }
        w.param(key_param(target.key_type, key));
    }
    w.push(")");
}

/// The step's effect on the rows [`select_step`] locked: `DELETE FROM child WHERE pk IN (…)`,
/// `UPDATE child SET soft_delete_column = $now WHERE pk IN (…) AND soft_delete_column IS NULL`,
/// or `UPDATE child SET column = NULL WHERE pk IN (…)`. Expected plan: primary-key lookups.
/// `None` for a soft step on a table without a `soft_delete_column`, which
/// [`crate::catalog::Catalog::with_relations`] refuses: never a `DELETE` in its place.
pub fn remove_step(
    backend: Backend,
    step: &ResolvedStep,
    keys: &[KeyValue],
    now: DateTime<Utc>,
) -> Option<Statement> {
    let child = step.target();
    let mut w = SqlWriter::new(backend);
    match (step.effect, &child.soft_delete_column) {
        (Effect::SoftDelete, Some(column)) => {
            w.push("UPDATE ")
                .table(child)
                .push(" SET ")
                .ident(column)
                .push(" = ")
                .param(SqlValue::Timestamp(now))
                .push(" WHERE ");
            write_key_list(&mut w, child, keys);
            w.push(" AND ").ident(column).push(" IS NULL");
        }
        (Effect::SetNull, _) => {
            w.push("UPDATE ")
                .table(child)
                .push(" SET ")
                .ident(&step.relation().column)
                .push(" = NULL WHERE ");
            write_key_list(&mut w, child, keys);
        }
        (Effect::Delete, _) => {
            w.push("DELETE FROM ").table(child).push(" WHERE ");
            write_key_list(&mut w, child, keys);
        }
        (Effect::SoftDelete, None) => return None,
    }
    Some(w.finish())
}

/// `SELECT (SELECT count(*) FROM cascade_table WHERE column = parent.parent_column) FROM parent
/// WHERE pk IN (…) ORDER BY pk`: per row about to be deleted (in key order), how many rows the
/// database's `ON DELETE CASCADE` will delete with it. Expected plan: primary-key lookups on
/// the parent, and per parent an index lookup on the cascade's column (the start-up check
/// requires an index it leads).
pub fn count_cascade(
    backend: Backend,
    parent: &Target,
    cascade: &Cascade,
    keys: &[KeyValue],
) -> Statement {
    const PARENT: &str = "reaper_parent";
    const CASCADED: &str = "reaper_cascaded";
    let mut w = SqlWriter::new(backend);
    w.push("SELECT (SELECT count(*) FROM ")
        .qualified_table(cascade.schema.as_deref(), &cascade.table)
        .push(" AS ")
        .ident(CASCADED)
        .push(" WHERE ")
        .ident(CASCADED)
        .push(".")
        .ident(&cascade.column)
        .push(" = ")
        .ident(PARENT)
        .push(".")
        .ident(&cascade.parent_column)
        .push(") FROM ")
        .table(parent)
        .push(" AS ")
        .ident(PARENT)
        .push(" WHERE ");
    write_key_list(&mut w, parent, keys);
    w.push(" ORDER BY ").ident(&parent.primary_key);
    w.finish()
}

/// The window's parents that still match the job's filter and that no legal hold keeps, locked
/// (PostgreSQL, MySQL) before the re-check of their children, so a child inserted for them
/// meanwhile either committed before (and is seen) or waits for this transaction (a foreign
/// key's share lock). Expected plan: primary-key lookups (under holds, per parent an index
/// lookup per level below that has a hold).
pub fn lock_parents(
    backend: Backend,
    job: &ValidatedJob,
    parents: &[KeyValue],
    holds: &ActiveHolds,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    w.push("SELECT ");
    write_key_projection(&mut w, &job.target);
    w.push(" FROM ").table(&job.target).push(" WHERE ");
    write_key_list(&mut w, &job.target, parents);
    w.push(" AND (");
    write_filter(&mut w, job);
    w.push(")");
    let below = root_below(job);
    if can_keep(job, holds, &job.target, &below) {
        w.push(" AND NOT (");
        write_kept(&mut w, job, holds, &job.target, &below);
        w.push(" IS TRUE)");
    }
    w.push(" ORDER BY ").ident(&job.target.primary_key);
    if backend != Backend::Sqlite {
        w.push(" FOR UPDATE");
    }
    w.finish()
}

/// Removes the locked parents (`DELETE`, or the soft `UPDATE` of rows still not soft-deleted).
/// Expected plan: primary-key lookups.
pub fn remove_parents(
    backend: Backend,
    job: &ValidatedJob,
    keys: &[KeyValue],
    now: DateTime<Utc>,
) -> Statement {
    let mut w = SqlWriter::new(backend);
    write_removal_head(&mut w, job, now);
    w.push(" WHERE ");
    write_key_list(&mut w, &job.target, keys);
    if let (crate::catalog::Mode::Soft, Some(column)) = (job.mode, &job.target.soft_delete_column) {
        w.push(" AND ").ident(column).push(" IS NULL");
    }
    w.finish()
}

/// The plan's indexes of the steps directly below the job's own table.
fn root_below(job: &ValidatedJob) -> Vec<usize> {
    job.graph
        .iter()
        .enumerate()
        .filter(|(_, step)| step.links.len() == 1)
        .map(|(index, _)| index)
        .collect()
}

/// Whether a hold is active on the table of a step of `below` or of a step under one of them.
fn held_under(job: &ValidatedJob, holds: &ActiveHolds, below: &[usize]) -> bool {
    below.iter().filter_map(|&i| job.graph.get(i)).any(|step| {
        !holds.on(&step.target().name).is_empty() || held_under(job, holds, &step.directly_below)
    })
}

/// Whether a row of `target` (with the steps `below` it) can be kept by a hold on itself or a
/// hold on a row under it.
fn can_keep(job: &ValidatedJob, holds: &ActiveHolds, target: &Target, below: &[usize]) -> bool {
    !holds.on(&target.name).is_empty() || held_under(job, holds, below)
}

/// `(<held> OR <held under>)`: true exactly for the rows of `target` a hold keeps — held
/// themselves, or referred to by a held row below; never NULL. Write only when [`can_keep`].
fn write_kept(
    w: &mut SqlWriter,
    job: &ValidatedJob,
    holds: &ActiveHolds,
    target: &Target,
    below: &[usize],
) {
    let held: &[HeldRows] = holds.on(&target.name);
    w.push("(");
    if !held.is_empty() {
        write_held(w, target, held);
    }
    if held_under(job, holds, below) {
        if !held.is_empty() {
            w.push(" OR ");
        }
        w.push("(");
        write_held_under(w, job, holds, below);
        w.push(") IS TRUE");
    }
    w.push(")");
}

/// `parent_column IN (SELECT column FROM child WHERE <held> OR <held under child>) OR …` over
/// the steps of `below` with a hold in or under them: the rows of the table above that a held
/// row refers to through any chain of the plan's steps. Columns unqualified: each subquery's
/// own table, the outer ones the statement's current table.
fn write_held_under(w: &mut SqlWriter, job: &ValidatedJob, holds: &ActiveHolds, below: &[usize]) {
    let mut first = true;
    for step in below.iter().filter_map(|&i| job.graph.get(i)) {
        let child = step.target();
        if !can_keep(job, holds, child, &step.directly_below) {
            continue;
        }
        if !first {
            w.push(" OR ");
        }
        first = false;
        let relation = step.relation();
        w.ident(&relation.parent_column)
            .push(" IN (SELECT ")
            .ident(&relation.column)
            .push(" FROM ")
            .table(child)
            .push(" WHERE ");
        write_kept(w, job, holds, child, &step.directly_below);
        w.push(")");
    }
}

/// `SELECT count(*) FROM parent WHERE [pk IN (<window>) AND] (<filter>) AND <kept> IS TRUE`:
/// the rows of the job's own table that match and that a hold keeps (held, or referred to by a
/// held row below), for the audit of a window (`Root::Keys`) and a dry run. `None` when no hold
/// can keep any (nothing to count). Expected plan: primary-key lookups (a window) or the
/// filter's index, then per row an index lookup per level below that has a hold.
pub fn count_kept_roots(
    backend: Backend,
    job: &ValidatedJob,
    parents: Root<'_>,
    holds: &ActiveHolds,
) -> Option<Statement> {
    let below = root_below(job);
    if !can_keep(job, holds, &job.target, &below) {
        return None;
    }
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM ")
        .table(&job.target)
        .push(" WHERE ");
    if let Root::Keys(keys) = parents {
        write_key_list(&mut w, &job.target, keys);
        w.push(" AND ");
    }
    w.push("(");
    write_filter(&mut w, job);
    w.push(") AND ");
    write_kept(&mut w, job, holds, &job.target, &below);
    w.push(" IS TRUE");
    Some(w.finish())
}

/// `SELECT count(*) FROM (SELECT 1 FROM parent WHERE (<filter>) AND NOT (<kept> IS TRUE) LIMIT
/// $cap) AS matching`: the rows of the job's own table it would remove now, counting no further
/// than `cap` — the `max_rows` pre-check, the end-of-pass probe and a receipt's verification.
/// Without a hold that can keep a row, exactly [`crate::sql::count_matching`]. Expected plan:
/// the filter's index, then the held rows as [`count_kept_roots`].
pub fn count_removable_roots(
    backend: Backend,
    job: &ValidatedJob,
    holds: &ActiveHolds,
    cap: Option<u64>,
) -> Statement {
    let below = root_below(job);
    if !can_keep(job, holds, &job.target, &below) {
        return crate::sql::count_matching(backend, job, cap);
    }
    let mut w = SqlWriter::new(backend);
    w.push(match cap {
        Some(_) => "SELECT count(*) FROM (SELECT 1 FROM ",
        None => "SELECT count(*) FROM ",
    })
    .table(&job.target)
    .push(" WHERE (");
    write_filter(&mut w, job);
    w.push(") AND NOT (");
    write_kept(&mut w, job, holds, &job.target, &below);
    w.push(" IS TRUE)");
    if let Some(cap) = cap {
        w.push(" LIMIT ")
            .param(SqlValue::Int(i64::try_from(cap).unwrap_or(i64::MAX)))
            .push(") AS matching");
    }
    w.finish()
}

/// `SELECT count(*) FROM child WHERE <hanging off the parents> AND NOT (<removable> IS TRUE)`:
/// the rows of the step's table hanging off `parents` (every one, held rows on the path
/// included) that a hold keeps — held, below a held row, or above one. For the audit of a
/// window (`Root::Keys`, after its drain) and a dry run (`Root::Filter`). `None` when no hold
/// is active on the path, the step's table or under it. Expected plan: as [`select_step`]'s,
/// twice.
pub fn count_kept(
    backend: Backend,
    job: &ValidatedJob,
    step: &ResolvedStep,
    parents: Root<'_>,
    holds: &ActiveHolds,
) -> Option<Statement> {
    let on_path = std::iter::once(&job.target)
        .chain(step.links.iter().map(|link| &link.child))
        .any(|target| !holds.on(&target.name).is_empty());
    if !on_path && !held_under(job, holds, &step.directly_below) {
        return None;
    }
    let mut w = SqlWriter::new(backend);
    w.push("SELECT count(*) FROM ")
        .table(step.target())
        .push(" WHERE ");
    write_step_rows(&mut w, job, step, parents, None);
    w.push(" AND NOT ((");
    write_step_rows(&mut w, job, step, parents, Some(holds));
    w.push(") IS TRUE)");
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::catalog::{Catalog, KeyType, Mode};
    use crate::graph::{Action, Relation};

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            schema: None,
            table: name.into(),
            primary_key: "id".into(),
            key_type: KeyType::Int,
            columns: Default::default(),
            default_mode: Mode::Hard,
            batch_size: 10,
            max_batch_size: 100,
            soft_delete_column: Some("deleted_at".into()),
            max_rows: 1_000,
            max_attempts: None,
            throttle: Default::default(),
        }
    }

    fn relation(parent: &str, child: &str, column: &str, action: Action) -> Relation {
        Relation::new(parent, child, column, "id", action)
    }

    fn shop() -> Catalog {
        Catalog::new(["users", "orders", "order_items", "comments"].map(target))
            .with_relations(vec![
                relation("users", "orders", "user_id", Action::Delete),
                relation("orders", "order_items", "order_id", Action::SetNull),
                relation("users", "comments", "author_id", Action::SoftDelete),
            ])
            .unwrap()
    }

    fn job(mode: Mode) -> ValidatedJob {
        let catalog = shop();
        ValidatedJob {
            target: target("users"),
            predicates: Vec::new(),
            mode,
            batch_size: 10,
            max_rows: 100,
            stop_at_max_rows: false,
            dry_run: false,
            requested_by: "t".into(),
            reason: "r".into(),
            graph: catalog.resolved_plan("users", mode),
            cascades: Vec::new(),
        }
    }

    fn none() -> ActiveHolds {
        ActiveHolds::default()
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T08:30:00Z")
            .unwrap()
            .into()
    }

    #[test]
    fn a_step_selects_through_every_level_of_its_path() {
        let job = job(Mode::Hard);
        let steps: Vec<String> = job.graph.iter().map(|s| s.describe()).collect();
        assert_eq!(
            steps,
            [
                "users → orders → order_items",
                "users → orders",
                "users → comments"
            ]
        );
        let parents = [KeyValue::Int(7), KeyValue::Int(9)];
        expect![[r#"
            SELECT "id"::int8 FROM "order_items" WHERE "order_id" IN (SELECT "id" FROM "orders" WHERE "user_id" IN (SELECT "id" FROM "users" WHERE "id" IN ($1, $2) AND (TRUE))) ORDER BY "id" LIMIT $3 FOR UPDATE
            -- parameters: 7, 9, 50"#]]
        .assert_eq(&select_step(Backend::Postgres, &job, &job.graph[0], (&parents, 50), &none()).to_string());
        expect![[r#"
            SELECT "id" FROM "comments" WHERE "author_id" IN (SELECT "id" FROM "users" WHERE "id" IN (?, ?) AND (TRUE)) AND "deleted_at" IS NULL ORDER BY "id" LIMIT ?
            -- parameters: 7, 9, 50"#]]
        .assert_eq(&select_step(Backend::Sqlite, &job, &job.graph[2], (&parents, 50), &none()).to_string());
    }

    #[test]
    fn a_soft_step_without_its_column_is_refused_never_deleted() {
        let mut step = job(Mode::Hard).graph[2].clone();
        assert_eq!(step.effect, Effect::SoftDelete);
        step.links[0].child.soft_delete_column = None;
        assert_eq!(
            remove_step(Backend::Postgres, &step, &[KeyValue::Int(1)], at()),
            None
        );
        let bare = Target {
            soft_delete_column: None,
            ..target("comments")
        };
        let refused = Catalog::new([target("users"), bare])
            .with_relations(vec![relation(
                "users",
                "comments",
                "author_id",
                Action::SoftDelete,
            )])
            .unwrap_err();
        assert_eq!(
            refused,
            [crate::graph::GraphProblem::SoftDeleteWithoutColumn { index: 0 }]
        );
    }

    #[test]
    fn a_cascade_is_counted_per_parent_in_key_order() {
        let cascade = Cascade {
            parent: "users".into(),
            schema: Some("app".into()),
            table: "logins".into(),
            column: "user_id".into(),
            parent_column: "id".into(),
            max_rows_per_batch: 100,
        };
        let keys = [KeyValue::Int(3), KeyValue::Int(4)];
        expect![[r#"
            SELECT (SELECT count(*) FROM "app"."logins" AS "reaper_cascaded" WHERE "reaper_cascaded"."user_id" = "reaper_parent"."id") FROM "users" AS "reaper_parent" WHERE "id" IN ($1, $2) ORDER BY "id"
            -- parameters: 3, 4"#]]
        .assert_eq(&count_cascade(Backend::Postgres, &target("users"), &cascade, &keys).to_string());
    }

    #[test]
    fn a_dry_run_counts_a_step_from_the_filter() {
        let job = job(Mode::Hard);
        expect![[r#"SELECT count(*) FROM (SELECT 1 FROM "order_items" WHERE "order_id" IN (SELECT "id" FROM "orders" WHERE "user_id" IN (SELECT "id" FROM "users" WHERE (TRUE)))) AS matching"#]]
        .assert_eq(&count_step(Backend::Postgres, &job, &job.graph[0], None, &none()).to_string());
        expect![[r#"
            SELECT count(*) FROM (SELECT 1 FROM `orders` WHERE `user_id` IN (SELECT `id` FROM `users` WHERE (TRUE)) LIMIT ?) AS matching
            -- parameters: 11"#]]
        .assert_eq(&count_step(Backend::MySql, &job, &job.graph[1], Some(11), &none()).to_string());
    }

    #[test]
    fn each_effect_removes_by_key() {
        let job = job(Mode::Hard);
        let keys = [KeyValue::Int(1), KeyValue::Int(2)];
        let sql = |index: usize| {
            remove_step(Backend::MySql, &job.graph[index], &keys, at())
                .unwrap()
                .to_string()
        };
        expect![[r#"
            UPDATE `order_items` SET `order_id` = NULL WHERE `id` IN (?, ?)
            -- parameters: 1, 2"#]]
        .assert_eq(&sql(0));
        expect![[r#"
            DELETE FROM `orders` WHERE `id` IN (?, ?)
            -- parameters: 1, 2"#]]
        .assert_eq(&sql(1));
        assert!(sql(2).starts_with("UPDATE `comments` SET `deleted_at` = ? WHERE `id` IN (?, ?) AND `deleted_at` IS NULL"), "{}", sql(2));
        expect![[r#"
            SELECT "id"::int8 FROM "users" WHERE "id" IN ($1, $2) AND (TRUE) ORDER BY "id" FOR UPDATE
            -- parameters: 1, 2"#]]
        .assert_eq(&lock_parents(Backend::Postgres, &job, &keys, &none()).to_string());
        let soft = self::job(Mode::Soft);
        assert_eq!(
            soft.graph.len(),
            1,
            "only the soft child follows a soft delete"
        );
        assert!(remove_parents(Backend::Sqlite, &soft, &keys, at())
            .to_string()
            .starts_with(r#"UPDATE "users" SET "deleted_at" = ? WHERE "id" IN (?, ?) AND "deleted_at" IS NULL"#));
    }

    /// Holds on user 3 (a parent) and on order item 5 (under orders, `set_null` here).
    fn held_user_and_item(catalog: &Catalog) -> ActiveHolds {
        let hold = |target: &str, key: i64| crate::holds::Hold {
            id: format!("h-{target}"),
            target: target.into(),
            keys: Some(vec![KeyValue::Int(key)]),
            filter: None,
            reason: "case".into(),
            placed_by: "legal".into(),
            placed_at: at(),
            expires_at: None,
            released_at: None,
            released_by: None,
        };
        let targets: Vec<&Target> = ["users", "orders", "order_items", "comments"]
            .iter()
            .map(|name| catalog.get(name).unwrap())
            .collect();
        crate::holds::compile(&[hold("users", 3), hold("order_items", 5)], &targets).unwrap()
    }

    #[test]
    fn held_rows_keep_what_hangs_off_them_and_what_they_hang_off() {
        let job = job(Mode::Hard);
        let holds = held_user_and_item(&shop());
        let parents = [KeyValue::Int(3), KeyValue::Int(7)];
        // Orders: not below a held user, not above a held item.
        expect![[r#"
            SELECT "id"::int8 FROM "orders" WHERE "user_id" IN (SELECT "id" FROM "users" WHERE "id" IN ($1, $2) AND (TRUE) AND NOT ("id" IN ($3))) AND NOT ((("id" IN (SELECT "order_id" FROM "order_items" WHERE (("id" IN ($4))))) IS TRUE) IS TRUE) ORDER BY "id" LIMIT $5 FOR UPDATE
            -- parameters: 3, 7, 3, 5, 10"#]]
        .assert_eq(&select_step(Backend::Postgres, &job, &job.graph[1], (&parents, 10), &holds).to_string());
        // Users: neither held nor above a held row through any step.
        expect![[r#"
            SELECT "id"::int8 FROM "users" WHERE "id" IN ($1, $2) AND (TRUE) AND NOT ((("id" IN ($3)) OR ("id" IN (SELECT "user_id" FROM "orders" WHERE (("id" IN (SELECT "order_id" FROM "order_items" WHERE (("id" IN ($4))))) IS TRUE))) IS TRUE) IS TRUE) ORDER BY "id" FOR UPDATE
            -- parameters: 3, 7, 3, 5"#]]
        .assert_eq(&lock_parents(Backend::Postgres, &job, &parents, &holds).to_string());
        // Kept items: hanging off the window, not removable.
        expect![[r#"
            SELECT count(*) FROM `order_items` WHERE `order_id` IN (SELECT `id` FROM `orders` WHERE `user_id` IN (SELECT `id` FROM `users` WHERE `id` IN (?, ?) AND (TRUE))) AND NOT ((`order_id` IN (SELECT `id` FROM `orders` WHERE `user_id` IN (SELECT `id` FROM `users` WHERE `id` IN (?, ?) AND (TRUE) AND NOT (`id` IN (?)))) AND NOT (((`id` IN (?))) IS TRUE)) IS TRUE)
            -- parameters: 3, 7, 3, 7, 3, 5"#]]
        .assert_eq(&count_kept(Backend::MySql, &job, &job.graph[0], Root::Keys(&parents), &holds).unwrap().to_string());
        // Comments: the held user is on their path; without a hold nothing is counted.
        assert!(count_kept(Backend::Sqlite, &job, &job.graph[2], Root::Filter, &holds).is_some());
        assert!(count_kept(Backend::Sqlite, &job, &job.graph[2], Root::Filter, &none()).is_none());
        assert_eq!(
            count_removable_roots(Backend::Sqlite, &job, &none(), Some(5)),
            crate::sql::count_matching(Backend::Sqlite, &job, Some(5)),
            "without holds, the plain count"
        );
        expect![[r#"SELECT count(*) FROM "users" WHERE (TRUE) AND (("id" IN (?)) OR ("id" IN (SELECT "user_id" FROM "orders" WHERE (("id" IN (SELECT "order_id" FROM "order_items" WHERE (("id" IN (?))))) IS TRUE))) IS TRUE) IS TRUE"#]]
        .assert_eq(&count_kept_roots(Backend::Sqlite, &job, Root::Filter, &holds).unwrap().sql);
    }
}
