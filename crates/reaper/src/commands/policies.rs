//! `reaper policies`: the retention policies, their schedules and runs, and how many rows the
//! next run would remove.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use reaper_core::views::PolicyView;

use super::{CommandResult, connect};
use crate::policy_view;
use crate::settings::Settings;

/// Prints the policies as a table or JSON.
pub(crate) async fn run(settings: &Settings, as_json: bool) -> CommandResult {
    let rows = policies(settings).await?;
    if as_json {
        print_json(rows)?;
    } else if rows.is_empty() {
        outln!("no retention policies are configured ([[retention]] in the config file)");
    } else {
        print_table(rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each policy as shown, with the rows its next run would remove (`None`: not countable now).
async fn policies(settings: &Settings) -> anyhow::Result<Vec<(PolicyView, Option<u64>)>> {
    let db = connect(settings).await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for policy in &settings.policies {
        let view = policy_view::policy_view(&db, policy, now).await?;
        let job = reaper_core::validate::validate(
            &policy.job_request(None, reaper_core::retention::SCHEDULER),
            &settings.catalog,
            now,
        )?;
        // One slow or failing count must not hide the other policies.
        let next_rows =
            match reaper_engine::batch::count_matching(&db, &job, Some(job.max_rows)).await {
                Ok(count) => Some(count),
                Err(error) => {
                    eprintln!(
                        "{}: cannot count the rows of its next run: {error}",
                        policy.name
                    );
                    None
                }
            };
        rows.push((view, next_rows));
    }
    Ok(rows)
}

fn print_json(rows: Vec<(PolicyView, Option<u64>)>) -> anyhow::Result<()> {
    let shown: Vec<_> = rows
        .into_iter()
        .map(|(view, next_rows)| {
            let mut value = serde_json::to_value(view).unwrap_or_default();
            value["next_run_rows"] = next_rows.map_or(serde_json::Value::Null, Into::into);
            value
        })
        .collect();
    outln!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

fn print_table(rows: Vec<(PolicyView, Option<u64>)>) -> std::io::Result<()> {
    let when = |at: Option<DateTime<Utc>>| {
        at.map_or("-".to_owned(), |at| {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        })
    };
    outln!(
        "{:<24} {:<14} {:<16} {:<19}  {:<19}  {:<9} {:>10}  {:>10}",
        "policy",
        "target",
        "schedule",
        "next run (UTC)",
        "last run (UTC)",
        "result",
        "rows",
        "next rows"
    );
    for (view, next_rows) in rows {
        let (last_at, result, last_rows) = match &view.last_run {
            Some(run) => (
                when(run.finished_at.or(Some(run.created_at))),
                run.state.to_string(),
                run.rows_deleted.to_string(),
            ),
            None => ("never".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        outln!(
            "{:<24} {:<14} {:<16} {:<19}  {:<19}  {:<9} {:>10}  {:>10}",
            view.name,
            view.target,
            view.schedule,
            if view.enabled {
                when(view.next_run_at)
            } else {
                "disabled".to_owned()
            },
            last_at,
            result,
            last_rows,
            next_rows.map_or("?".to_owned(), |rows| rows.to_string())
        );
        if let Some(error) = view
            .last_run
            .as_ref()
            .and_then(|run| run.last_error.as_ref())
        {
            outln!("    last error: {error}");
        }
    }
    Ok(())
}
