//! `reaper enqueue` from flags: builds the same `JobRequest` a JSON file would hold, typing each
//! value by its column's type in the catalog (so `--where plan=007` stays the text `007`).
//! Validation proper (targets, columns, operators, limits) is the core's, as for every producer.

use clap::Args;
use reaper_core::catalog::{Catalog, ColumnType, Target};
use reaper_core::job::{Condition, Filter, JobRequest, Op};

/// The flags of `reaper enqueue` when no JSON is given.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct EnqueueFlags {
    /// The catalog target to delete from.
    #[arg(long)]
    target: Option<String>,
    /// `COLUMN=VALUE`: rows whose column equals the value (repeatable; all must hold).
    #[arg(long = "where", value_name = "COLUMN=VALUE")]
    equals: Vec<String>,
    /// `COLUMN=V1,V2,…`: rows whose column is one of the values.
    #[arg(long = "in", value_name = "COLUMN=V1,V2")]
    one_of: Vec<String>,
    /// `COLUMN=AGE` (e.g. `created_at=30d`): rows whose timestamp is older than the age; a
    /// bare `AGE` (as `reaper purge` takes it) ages rows by the target's only timestamp column.
    #[arg(long, value_name = "[COLUMN=]AGE")]
    older_than: Vec<String>,
    /// Rows whose column is NULL.
    #[arg(long, value_name = "COLUMN")]
    is_null: Vec<String>,
    /// Delete every row of the target (required when no condition is given).
    #[arg(long)]
    all_rows: bool,
    /// `hard`, `soft` or `archive` (each row copied to `reaper_archive`, `reaper restore` undoes
    /// it); the target's default when absent.
    #[arg(long)]
    mode: Option<String>,
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Refuse to delete more rows than this.
    #[arg(long)]
    max_rows: Option<u64>,
    /// Only count, sample and show the SQL; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Why (recorded in every audit entry).
    #[arg(long)]
    reason: Option<String>,
    /// Who asks; `$USER` (or `cli`) when absent.
    #[arg(long)]
    requested_by: Option<String>,
    /// Submitting the same key twice yields one job.
    #[arg(long)]
    idempotency_key: Option<String>,
}

impl EnqueueFlags {
    /// The request the flags describe, or a message naming every flag that is wrong, together
    /// with what validation finds in the rest of the job (`--batch-size 0`, an unknown target).
    pub(crate) fn into_request(self, catalog: &Catalog) -> Result<JobRequest, String> {
        let target_name = self
            .target
            .ok_or("give the job as --file FILE, --json '{…}', or with --target and conditions")?;
        let mut problems: Vec<String> = Vec::new();
        let reason = self.reason.unwrap_or_else(|| {
            problems.push("--reason is required: it is recorded in every audit entry".into());
            String::new()
        });
        let mut all = Vec::new();
        let value_flags = (self.equals.iter().map(|raw| ("--where", raw, Op::Eq)))
            .chain(self.one_of.iter().map(|raw| ("--in", raw, Op::In)))
            .chain(
                self.older_than
                    .iter()
                    .map(|raw| ("--older-than", raw, Op::OlderThan)),
            );
        for (flag, raw, op) in value_flags {
            match condition(catalog, &target_name, flag, raw, op) {
                Ok(condition) => all.push(condition),
                Err(problem) => problems.push(problem),
            }
        }
        for column in self.is_null {
            all.push(Condition {
                column,
                op: Op::IsNull,
                value: None,
            });
        }
        if all.is_empty() && !self.all_rows && problems.is_empty() {
            problems.push(format!(
                "no condition: give --where, --in, --older-than or --is-null, or --all-rows to \
                 delete every row of `{target_name}` on purpose"
            ));
        }
        let mode = crate::cli::parse_mode(self.mode.as_deref()).unwrap_or_else(|problem| {
            problems.push(problem);
            None
        });
        let request = JobRequest {
            target: target_name,
            filter: Filter { all },
            all_rows: self.all_rows,
            mode,
            batch_size: self.batch_size,
            max_rows: self.max_rows,
            stop_at_max_rows: false,
            dry_run: self.dry_run,
            requested_by: crate::cli::requested_by(self.requested_by),
            reason,
            idempotency_key: self.idempotency_key,
            strategy: None,
            restore: None,
        };
        if problems.is_empty() {
            // Validation runs where the job is accepted and reports everything at once.
            return Ok(request);
        }
        problems.extend(problems_beyond_the_flags(&request, catalog));
        Err(problems.join("; "))
    }
}

/// The condition one `--where`/`--in`/`--older-than` flag describes, or what is wrong with it.
fn condition(
    catalog: &Catalog,
    target_name: &str,
    flag: &str,
    raw: &str,
    op: Op,
) -> Result<Condition, String> {
    let (column, value) = match (op, raw.split_once('=')) {
        (_, Some(pair)) => pair,
        (Op::OlderThan, None) => {
            let target = catalog
                .get(target_name)
                .ok_or_else(|| format!("--target: unknown target `{target_name}`"))?;
            (age_column(target, "--older-than")?, raw)
        }
        (_, None) => return Err(format!("{flag} {raw}: expected COLUMN=VALUE")),
    };
    // An unknown target or column passes as text here; validation then names it.
    let column_type = catalog
        .get(target_name)
        .and_then(|target| target.columns.get(column).copied())
        .unwrap_or(ColumnType::Text);
    let value = match op {
        Op::In => value
            .split(',')
            .map(|item| typed(column_type, item, flag, raw))
            .collect::<Result<_, _>>()
            .map(serde_json::Value::Array)?,
        Op::OlderThan => serde_json::Value::String(value.to_owned()),
        _ => typed(column_type, value, flag, raw)?,
    };
    Ok(Condition {
        column: column.to_owned(),
        op,
        value: Some(value),
    })
}

/// The rest of the job's problems, except those the flags already explain (a refused
/// condition is left out, so the filter's are not meaningful).
fn problems_beyond_the_flags(request: &JobRequest, catalog: &Catalog) -> Vec<String> {
    let Err(invalid) = reaper_core::validate::validate(request, catalog, chrono::Utc::now()) else {
        return Vec::new();
    };
    invalid
        .errors
        .into_iter()
        .filter(|error| {
            let explained = error.field.starts_with("filter")
                || error.field == "all_rows"
                || (error.field == "reason" && request.reason.is_empty());
            !explained
        })
        .map(|error| error.to_string())
        .collect()
}

/// The timestamp column an age without a column refers to: the target's only one (its
/// soft-delete column aside), or an error for `flag` naming the choices.
pub(crate) fn age_column<'t>(target: &'t Target, flag: &str) -> Result<&'t str, String> {
    let timestamps: Vec<&str> = target
        .columns
        .iter()
        .filter(|(_, kind)| **kind == ColumnType::Timestamp)
        .map(|(name, _)| name.as_str())
        .filter(|name| Some(*name) != target.soft_delete_column.as_deref())
        .collect();
    match timestamps.as_slice() {
        [only] => Ok(only),
        [] => Err(format!(
            "{flag}: target `{}` declares no timestamp column to age rows by",
            target.name
        )),
        several => Err(format!(
            "{flag}: target `{}` has several timestamp columns ({}); say which, as COLUMN=AGE",
            target.name,
            several.join(", ")
        )),
    }
}

/// A flag's text as the JSON value its column type expects.
fn typed(kind: ColumnType, text: &str, flag: &str, raw: &str) -> Result<serde_json::Value, String> {
    match kind {
        ColumnType::Int => text
            .parse::<i64>()
            .map(Into::into)
            .map_err(|_| format!("{flag} {raw}: `{text}` is not an integer")),
        ColumnType::Bool => text
            .parse::<bool>()
            .map(Into::into)
            .map_err(|_| format!("{flag} {raw}: `{text}` is not true or false")),
        _ => Ok(serde_json::Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use reaper_testkit::engine::TargetFixture;

    use super::*;

    fn catalog() -> Catalog {
        let users = Target::fixture("users")
            .column("id", ColumnType::Int)
            .column("plan", ColumnType::Text)
            .column("last_seen_at", ColumnType::Timestamp);
        Catalog::new([Target {
            max_rows: 1000,
            ..users
        }])
    }

    #[test]
    fn values_take_their_column_type() {
        let flags = EnqueueFlags {
            target: Some("users".into()),
            equals: vec!["plan=007".into()],
            one_of: vec!["id=1,2,3".into()],
            older_than: vec!["last_seen_at=30d".into()],
            reason: Some("cleanup".into()),
            requested_by: Some("ops".into()),
            ..EnqueueFlags::default()
        };
        let request = flags.into_request(&catalog()).unwrap();
        assert_eq!(
            serde_json::to_value(&request.filter).unwrap(),
            serde_json::json!({"all": [
                {"column": "plan", "op": "eq", "value": "007"},
                {"column": "id", "op": "in", "value": [1, 2, 3]},
                {"column": "last_seen_at", "op": "older_than", "value": "30d"},
            ]})
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let flags = |equals: &str| EnqueueFlags {
            target: Some("users".into()),
            equals: vec![equals.into()],
            reason: Some("r".into()),
            ..EnqueueFlags::default()
        };
        assert_eq!(
            flags("id=abc").into_request(&catalog()).unwrap_err(),
            "--where id=abc: `abc` is not an integer"
        );
        assert_eq!(
            flags("id").into_request(&catalog()).unwrap_err(),
            "--where id: expected COLUMN=VALUE"
        );
        let no_reason = EnqueueFlags {
            target: Some("users".into()),
            ..EnqueueFlags::default()
        };
        assert!(
            no_reason
                .into_request(&catalog())
                .unwrap_err()
                .starts_with("--reason is required")
        );
    }

    #[test]
    fn every_bad_flag_is_named_with_the_rest_of_the_job_s_problems() {
        let flags = EnqueueFlags {
            target: Some("users".into()),
            equals: vec!["id=abc".into(), "plan".into()],
            mode: Some("purge".into()),
            batch_size: Some(0),
            ..EnqueueFlags::default()
        };
        let problems = flags.into_request(&catalog()).unwrap_err();
        for problem in [
            "--reason is required",
            "--where id=abc: `abc` is not an integer",
            "--where plan: expected COLUMN=VALUE",
            "--mode: ",
            "batch_size: 0 is not allowed for target `users`",
        ] {
            assert!(
                problems.contains(problem),
                "{problem} missing in {problems}"
            );
        }
        assert!(!problems.contains("filter"), "{problems}");
    }
}
