//! `reaper purge`: a retention purge now, in the foreground, without a daemon — a policy's, or
//! an ad hoc one (`--target T --older-than 30d`).
//!
//! The purge is a job like any other (ledger row, batches with audit and checkpoint, the
//! target's throttle), run by this process instead of a worker. It is written `paused`, so no
//! daemon takes it while this process runs it. Ctrl-C (or SIGTERM, or SIGHUP when the terminal
//! goes away) stops it at a batch boundary and leaves it `paused`, and `--resume JOB` continues
//! from its checkpoint, so a stopped purge deletes every row once. If the process is killed
//! outright, the job is `running` until its lease expires; then a daemon, if one runs, takes it
//! over like any job whose worker died, or `--resume` continues it. `--dry-run` only selects:
//! it writes nothing, not even a ledger row.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use reaper_core::catalog::Catalog;
use reaper_core::job::{Condition, Filter, JobRequest, Op};
use reaper_core::plan_guard::Verdict;
use reaper_core::retention::Policy;
use reaper_core::span::Span;
use reaper_core::strategy::{ChoiceReason, StrategyChoice};
use reaper_core::validate::{ValidatedJob, validate};
use reaper_engine::Database;
use reaper_engine::ledger::{self, ClaimFrom, JobRecord};
use reaper_engine::runner::{self, RunOutcome, RunSettings, StopAs};
use serde_json::json;

use crate::settings::Settings;

/// What to purge.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Run this retention policy now.
    #[arg(long, conflicts_with_all = ["target", "resume"])]
    pub(crate) policy: Option<String>,
    /// Ad hoc: the catalog target to purge.
    #[arg(long, requires = "older_than", conflicts_with = "resume")]
    pub(crate) target: Option<String>,
    /// Ad hoc: remove rows older than this (`30d`, `12h`), or `COLUMN=AGE` as `reaper enqueue`
    /// takes it.
    #[arg(long, requires = "target")]
    pub(crate) older_than: Option<String>,
    /// Ad hoc: the timestamp column whose age decides (default: the target's only timestamp
    /// column).
    #[arg(long, requires = "target")]
    pub(crate) age_column: Option<String>,
    /// Ad hoc: `hard`, `soft` or `archive` (default: the target's default mode).
    #[arg(long, requires = "target")]
    pub(crate) mode: Option<String>,
    /// Ad hoc: rows per batch (default: the target's).
    #[arg(long, requires = "target")]
    pub(crate) batch_size: Option<u32>,
    /// Ad hoc: refuse rather than delete more than this (default: the target's max_rows).
    #[arg(long, requires = "target")]
    pub(crate) max_rows: Option<u64>,
    /// Ad hoc: when more rows match than max_rows, remove max_rows of them (oldest keys first)
    /// and stop, instead of refusing; run it again for the rest.
    #[arg(long, requires = "target")]
    pub(crate) stop_at_max_rows: bool,
    /// Continue a purge stopped by Ctrl-C (or one whose process died).
    #[arg(long, conflicts_with_all = ["policy", "target", "dry_run"])]
    pub(crate) resume: Option<String>,
    /// Print the count, sample keys and the SQL; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Recorded in the audit log (default: $USER).
    #[arg(long)]
    pub(crate) requested_by: Option<String>,
}

/// How a purge ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PurgeEnd {
    /// Finished (or the dry run printed).
    Done,
    /// Stopped by a signal; resumable.
    Stopped,
    /// The job ended dead, cancelled, or was taken over.
    Failed,
}

/// The job an ad hoc purge submits.
fn ad_hoc_request(args: &PurgeArgs, catalog: &Catalog) -> Result<JobRequest, String> {
    let (Some(target_name), Some(older_than)) = (&args.target, &args.older_than) else {
        return Err("give --policy NAME, --target T --older-than AGE, or --resume JOB".into());
    };
    let Some(target) = catalog.get(target_name) else {
        return Err(format!(
            "--target: unknown target `{target_name}`; the catalog has: {}",
            catalog.names().join(", ")
        ));
    };
    // `COLUMN=AGE` as `reaper enqueue` takes it, or a bare age and --age-column (or the
    // target's only timestamp column).
    let (column, older_than) = match (older_than.split_once('='), args.age_column.as_deref()) {
        (Some((column, _)), Some(other)) if column != other => {
            return Err(format!(
                "--older-than {older_than} names column `{column}` and --age-column names \
                 `{other}`; give one of them"
            ));
        }
        (Some((column, age)), _) => (Some(column), age),
        (None, age_column) => (age_column, older_than.as_str()),
    };
    let age = Span::parse(older_than).map_err(|error| format!("--older-than: {error}"))?;
    let age_column = match column {
        Some(column) => column.to_owned(),
        None => crate::enqueue_flags::age_column(target, "--older-than")?.to_owned(),
    };
    let mode = crate::cli::parse_mode(args.mode.as_deref())?;
    Ok(JobRequest {
        target: target_name.clone(),
        filter: Filter {
            all: vec![Condition {
                column: age_column.clone(),
                op: Op::OlderThan,
                value: Some(json!(age.to_string())),
            }],
        },
        all_rows: false,
        mode,
        batch_size: args.batch_size,
        max_rows: args.max_rows,
        stop_at_max_rows: args.stop_at_max_rows,
        dry_run: false,
        requested_by: crate::cli::requested_by(args.requested_by.clone()),
        reason: format!("reaper purge: {age_column} older than {age} (ad hoc)"),
        idempotency_key: None,
        strategy: None,
        restore: None,
    })
}

/// The request and the policy (if any) a purge runs, or why not.
pub(crate) fn request(
    args: &PurgeArgs,
    catalog: &Catalog,
    policies: &[Policy],
) -> Result<(JobRequest, Option<String>), String> {
    match &args.policy {
        Some(name) => {
            let Some(policy) = policies.iter().find(|policy| &policy.name == name) else {
                let known: Vec<&str> = policies.iter().map(|policy| policy.name.as_str()).collect();
                return Err(format!(
                    "--policy: no retention policy `{name}`; configured: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            let requested_by = crate::cli::requested_by(args.requested_by.clone());
            Ok((policy.job_request(None, &requested_by), Some(name.clone())))
        }
        None => Ok((ad_hoc_request(args, catalog)?, None)),
    }
}

/// Prints what a purge would do; writes nothing.
pub(crate) async fn dry_run(db: &Database, job: &ValidatedJob) -> anyhow::Result<()> {
    let report = runner::dry_run(db, job).await?;
    outln!("dry run: nothing was written");
    outln!("target:        {}", job.target.name);
    outln!("mode:          {}", job.mode);
    // Rows under legal holds stay: they count neither as removed nor against max_rows.
    let removable = report.matching_rows.saturating_sub(report.held_rows);
    outln!(
        "matching rows: {}{}{}",
        report.matching_rows,
        match report.held_rows {
            0 => String::new(),
            held => format!(" ({held} of them under legal holds, left in place)"),
        },
        match job.check_max_rows(removable) {
            Err(refusal) => format!(" (the purge would be refused: {refusal})"),
            Ok(()) if removable > job.max_rows => {
                format!(" (one run removes at most {})", job.max_rows)
            }
            Ok(()) => String::new(),
        }
    );
    outln!(
        "batches:       {} of up to {} rows",
        report.batches,
        report.batch_size
    );
    let sample: Vec<String> = report.sample_keys.iter().map(ToString::to_string).collect();
    outln!(
        "sample keys:   {}",
        if sample.is_empty() {
            "(none)".to_owned()
        } else {
            sample.join(", ")
        }
    );
    if let Some(choice) = &report.strategy {
        outln!("strategy:      {}", describe_strategy(choice));
    }
    if let Some(plan) = &report.plan {
        outln!(
            "plan guard:    {} — {}, ~{} rows read per row removed",
            match plan.verdict {
                Verdict::Pass => "pass",
                Verdict::Refuse => "refuse (the purge would be refused)",
                Verdict::Allowed => "allowed (slow, but the target allows it)",
            },
            plan.plan,
            plan.rows_read_per_row
        );
        if let Some(fix) = &plan.fix {
            outln!("               fix: {fix}");
        }
    }
    outln!("one batch runs:\n{}", report.sql);
    Ok(())
}

/// `physical (estimate: ~500000 of ~1000000 rows match)`: the walk and why.
fn describe_strategy(choice: &StrategyChoice) -> String {
    let why = match (choice.reason, choice.estimate) {
        (ChoiceReason::Estimate, Some(estimate)) => format!(
            "estimate: ~{} of ~{} rows match",
            estimate.matching_rows, estimate.table_rows
        ),
        (ChoiceReason::Estimate, None) => "no estimate".to_owned(),
        (ChoiceReason::Target, _) => "the target's strategy".to_owned(),
        (ChoiceReason::Job, _) => "the job's strategy".to_owned(),
        (ChoiceReason::Unavailable, _) => {
            "physical order needs PostgreSQL 14+ and a job on one table".to_owned()
        }
        (ChoiceReason::OneBatch, _) => "every matching row fits in one batch".to_owned(),
    };
    format!("{} ({why})", choice.strategy)
}

/// Validates the request now (for the dry run and the error message), against `catalog`.
pub(crate) fn validated(request: &JobRequest, catalog: &Catalog) -> Result<ValidatedJob, String> {
    validate(request, catalog, Utc::now()).map_err(|error| error.to_string())
}

/// Runs `job` (written `paused`, or left paused by an earlier stop) in the foreground until it
/// ends or a signal stops it. `matching` is the count of rows it matches, when known;
/// `settings` give the lease and the command line that resumes it.
pub(crate) async fn run_foreground(
    db: &Database,
    settings: &Settings,
    job: JobRecord,
    matching: Option<u64>,
) -> anyhow::Result<PurgeEnd> {
    let catalog = &settings.catalog;
    let lease = settings.config.worker.lease.as_duration();
    let resume = settings.command_line(&format!("purge --resume {}", job.id));
    let stop = Arc::new(AtomicBool::new(false));
    let shown = Arc::new(std::sync::OnceLock::new());
    let signals = stop_on_signal(stop.clone(), shown.clone())?;
    let mut run_settings = foreground_settings(lease);
    run_settings.health =
        Arc::new(reaper_engine::health::HealthGate::connect(&settings.config.database).await?);

    let validated = validate(
        &serde_json::from_str(&job.request)?,
        catalog,
        job.created_at,
    )?;
    let already = u64::try_from(job.rows_deleted).unwrap_or(0);
    let cap = validated.max_rows;
    let remaining = match matching {
        Some(matching) => matching,
        // Counted up to one past what this run may remove, so a huge table is not counted in
        // full.
        None => {
            reaper_engine::graph_run::count_removable(
                db,
                &validated,
                cap.saturating_sub(already).saturating_add(1),
            )
            .await?
        }
    };
    let total = already + remaining.min(cap.saturating_sub(already));
    let this_run = cap.saturating_sub(already);
    // Said before the bar is drawn, so no frame of it is left above the live one.
    if remaining > this_run {
        eprintln!(
            "purging `{}` (job {}): more than {this_run} matching rows; this run removes at most {this_run}",
            job.target, job.id
        );
    } else {
        eprintln!(
            "purging `{}` (job {}): {remaining} matching rows",
            job.target, job.id
        );
    }
    let bar = progress_bar(total, already)?;
    let _ = shown.set(bar.clone());
    let ticker = show_progress(bar.clone(), already, total, run_settings.progress.clone());

    let should_stop = || stop.load(Ordering::Relaxed);
    let end = run_to_end(db, catalog, &job.id, &run_settings, &should_stop, &bar).await?;
    ticker.abort();
    signals.abort();
    bar.set_position(already + run_settings.progress.rows.load(Ordering::Relaxed));
    bar.finish_and_clear();
    report_end(db, &job.id, end, &resume).await?;
    Ok(end)
}

/// Sets `stop` on the first stop signal (SIGHUP too: a closed terminal should pause a purge,
/// not kill it mid-batch).
/// The message goes above the bar once there is one (`shown`), so no frame of it stays behind.
fn stop_on_signal(
    stop: Arc<AtomicBool>,
    shown: Arc<std::sync::OnceLock<ProgressBar>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut listening = crate::signals::StopSignals::new(true)?;
    Ok(tokio::spawn(async move {
        listening.recv().await;
        stop.store(true, Ordering::Relaxed);
        let say = || {
            eprintln!(
                "stopping at the end of the batch in flight (a second Ctrl-C exits at once; the batch rolls back)"
            )
        };
        match shown.get() {
            Some(bar) => bar.suspend(say),
            None => say(),
        }
    }))
}

/// A worker's settings for this process: one run, resumed from `paused`, stopped as `paused`.
fn foreground_settings(lease: Duration) -> RunSettings {
    let mut settings = RunSettings::for_worker(
        format!("purge-{}", crate::worker::unique_worker_name()),
        lease,
        // One run, however long: the process is the worker, there is no queue to share.
        Duration::from_secs(365 * 24 * 3600),
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    settings.stop_as = StopAs::Paused;
    settings.claim_from = ClaimFrom::Resume;
    settings
}

/// The bar. Its rate and ETA are not indicatif's (which count the rows an earlier run removed
/// as if this run had removed them in its first instant, and print four decimals): they are
/// [`rate_and_eta`]'s, in the message.
fn progress_bar(total: u64, already: u64) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            // A fixed width, not the terminal's: a line that fills the terminal wraps when the
            // terminal echoes `^C` after it, and the wrapped frame would stay on the screen.
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} rows  {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.set_position(already);
    Ok(bar)
}

/// `N rows/s  ETA H:MM:SS`, from this run's rows and time only, in whole numbers (`ETA -`
/// until the first rows are removed).
fn rate_and_eta(rows: u64, elapsed: Duration, left: u64) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        rows as f64 / seconds
    } else {
        0.0
    };
    let eta = if rate >= 1.0 {
        let eta = (left as f64 / rate).round() as u64;
        format!("{}:{:02}:{:02}", eta / 3600, eta / 60 % 60, eta % 60)
    } else {
        "-".to_owned()
    };
    format!("{} rows/s  ETA {eta}", rate.round() as u64)
}

/// Moves the bar to the run's progress five times a second, until aborted.
fn show_progress(
    bar: ProgressBar,
    already: u64,
    total: u64,
    progress: Arc<runner::RunProgress>,
) -> tokio::task::JoinHandle<()> {
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        loop {
            let rows = progress.rows.load(Ordering::Relaxed);
            bar.set_position(already + rows);
            bar.set_message(format!(
                "{}  batch {} rows",
                rate_and_eta(
                    rows,
                    started.elapsed(),
                    total.saturating_sub(already + rows)
                ),
                progress.batch_size.load(Ordering::Relaxed)
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Says why the run stopped and when it goes on, then waits until `run_after`; false when
/// asked to stop meanwhile.
async fn wait_to_go_on(
    run_after: chrono::DateTime<Utc>,
    why: &str,
    bar: &ProgressBar,
    should_stop: &(dyn Fn() -> bool + Sync),
) -> bool {
    let wait = (run_after - Utc::now()).to_std().unwrap_or_default();
    bar.suspend(|| eprintln!("going on in {:.1}s; {why}", wait.as_secs_f64()));
    reaper_engine::pacing::sleep_unless_stopped(wait, should_stop).await
}

/// Runs the job (again after each slice, transient error or health stop) until it ends or
/// stops.
async fn run_to_end(
    db: &Database,
    catalog: &Catalog,
    job_id: &str,
    settings: &RunSettings,
    should_stop: &(dyn Fn() -> bool + Sync),
    bar: &ProgressBar,
) -> anyhow::Result<PurgeEnd> {
    Ok(loop {
        let report = runner::run_job(db, catalog, job_id, settings, should_stop).await?;
        match report.outcome {
            RunOutcome::Done => break PurgeEnd::Done,
            RunOutcome::Paused => break PurgeEnd::Stopped,
            RunOutcome::Continue => continue,
            RunOutcome::RetryLater { error, run_after } => {
                let why = format!("transient error: {error}");
                if !wait_to_go_on(run_after, &why, bar, should_stop).await {
                    break PurgeEnd::Stopped;
                }
            }
            RunOutcome::Throttled { reason, run_after } => {
                if !wait_to_go_on(run_after, &reason, bar, should_stop).await {
                    break PurgeEnd::Stopped;
                }
            }
            RunOutcome::Dead { error } => {
                bar.suspend(|| eprintln!("the purge failed: {error}"));
                break PurgeEnd::Failed;
            }
            RunOutcome::Cancelled => {
                bar.suspend(|| eprintln!("the purge was cancelled"));
                break PurgeEnd::Failed;
            }
            RunOutcome::NotClaimed | RunOutcome::LeaseLost => {
                bar.suspend(|| {
                    eprintln!(
                        "job {job_id} is held by another worker or finished; see `reaper status {job_id}`"
                    )
                });
                break PurgeEnd::Failed;
            }
        }
    })
}

/// Prints how the purge ended, from the ledger.
async fn report_end(
    db: &Database,
    job_id: &str,
    end: PurgeEnd,
    resume: &str,
) -> anyhow::Result<()> {
    let record = ledger::get(db, job_id).await?;
    let (rows, batches) = record
        .as_ref()
        .map_or((0, 0), |job| (job.rows_deleted, job.batches));
    match end {
        PurgeEnd::Done => {
            let stopped_at_cap = record
                .as_ref()
                .is_some_and(crate::policy_view::stopped_at_cap);
            outln!(
                "done: {rows} rows in {batches} batches (job {job_id}){}",
                if stopped_at_cap {
                    "; stopped at max_rows, matching rows remain for the next run"
                } else {
                    ""
                }
            );
        }
        PurgeEnd::Stopped => {
            outln!(
                "stopped at a batch boundary: {rows} rows in {batches} batches so far (job {job_id}, paused)"
            );
            outln!("resume with: {resume}");
        }
        PurgeEnd::Failed => {
            outln!("{rows} rows in {batches} batches (job {job_id}); see `reaper status {job_id}`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reaper_core::catalog::{ColumnType, Target};
    use reaper_testkit::engine::TargetFixture;

    fn catalog(columns: &[(&str, ColumnType)]) -> Catalog {
        let sessions = columns
            .iter()
            .fold(Target::fixture("sessions"), |target, (name, kind)| {
                target.column(name, *kind)
            });
        Catalog::new([Target {
            soft_delete_column: Some("deleted_at".into()),
            max_rows: 1000,
            ..sessions
        }])
    }

    fn args(target: &str, older_than: &str) -> PurgeArgs {
        PurgeArgs {
            policy: None,
            target: Some(target.into()),
            older_than: Some(older_than.into()),
            age_column: None,
            mode: None,
            batch_size: None,
            max_rows: None,
            stop_at_max_rows: false,
            resume: None,
            dry_run: false,
            requested_by: Some("alice".into()),
        }
    }

    #[test]
    fn rate_and_eta_are_whole_numbers_of_this_run() {
        assert_eq!(
            rate_and_eta(20_000, Duration::from_millis(1_500), 40_000),
            "13333 rows/s  ETA 0:00:03"
        );
        assert_eq!(rate_and_eta(0, Duration::ZERO, 100), "0 rows/s  ETA -");
        assert_eq!(
            rate_and_eta(100, Duration::from_secs(1), 400_000),
            "100 rows/s  ETA 1:06:40"
        );
    }

    #[test]
    fn an_ad_hoc_purge_ages_rows_by_the_only_timestamp_column() {
        let catalog = catalog(&[
            ("created_at", ColumnType::Timestamp),
            ("deleted_at", ColumnType::Timestamp),
            ("user_id", ColumnType::Int),
        ]);
        let (request, policy) = request(&args("sessions", "30d"), &catalog, &[]).unwrap();
        assert_eq!(policy, None);
        assert_eq!(request.filter.all[0].column, "created_at");
        assert_eq!(request.requested_by, "alice");
        assert!(validated(&request, &catalog).is_ok());
    }

    #[test]
    fn ambiguous_or_unknown_inputs_are_named() {
        let catalog = catalog(&[
            ("created_at", ColumnType::Timestamp),
            ("seen_at", ColumnType::Timestamp),
        ]);
        let error = request(&args("sessions", "30d"), &catalog, &[]).unwrap_err();
        assert!(
            error.contains("several timestamp columns (created_at, seen_at)"),
            "{error}"
        );
        let error = request(&args("session", "30d"), &catalog, &[]).unwrap_err();
        assert!(
            error.contains("--target: unknown target `session`"),
            "{error}"
        );
        let error = request(&args("sessions", "30"), &catalog, &[]).unwrap_err();
        assert!(error.contains("--older-than: `30` has no unit"), "{error}");
        let mut unknown_policy = args("sessions", "30d");
        unknown_policy.target = None;
        unknown_policy.policy = Some("nope".into());
        let error = request(&unknown_policy, &catalog, &[]).unwrap_err();
        assert!(
            error.contains("--policy: no retention policy `nope`; configured: none"),
            "{error}"
        );
    }
}
