//! The plan guard on SQLite, PostgreSQL and MariaDB: a fresh job whose first batch's plan would
//! read far more rows than it removes is refused (permanently, nothing deleted) with the index
//! that fixes it; with that index each backend's plan uses it and the job runs; a target that
//! allows slow plans runs it anyway; a dry run shows the plan and the verdict.
// The tests' futures (the engine's run nested in the testkit's helpers) are deeper than rustc's
// default layout query depth.
#![recursion_limit = "256"]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use reaper_core::catalog::{Catalog, Target};
use reaper_core::lifecycle::{JobResult, JobState};
use reaper_core::plan_guard::{Access, PlanReport, Verdict};
use reaper_core::sql::Backend;
use reaper_core::throttle::Throttle;
use reaper_engine::runner::RunOutcome;
use reaper_testkit::Removal;
use reaper_testkit::engine::{EngineTest as Setup, events_target, job, tokens_target};

reaper_testkit::on_every_backend!(
    a_selective_filter_without_its_index_is_refused_and_runs_once_the_index_exists,
    a_target_that_allows_slow_plans_runs_them,
);

/// One day's `click` events: 200 rows, 0.5% of the table [`setup`] makes, on columns the fixture
/// does not index.
fn one_day_of_clicks(extra: serde_json::Value) -> serde_json::Value {
    job(
        "events",
        serde_json::json!([
            {"column": "created_at", "op": "eq", "value": "2025-12-01T00:00:00Z"},
            {"column": "kind", "op": "eq", "value": "click"}
        ]),
        extra,
    )
}

/// The rows of [`one_day_of_clicks`], in the test's own SQL.
async fn one_day_of_clicks_ids(s: &Setup) -> std::collections::BTreeSet<String> {
    s.test
        .ids(
            "events",
            &format!(
                "created_at = {} AND kind = 'click'",
                s.ts("2025-12-01 00:00:00")
            ),
        )
        .await
}

/// 40,000 events: the fixture's 20,000 (each of 100 days holds 200 rows of one kind) and a copy
/// of them on another day, so that one day is 0.5% of the table; with fresh statistics.
async fn setup(backend: Backend) -> Setup {
    let s = Setup::new(backend, 20_000).await;
    s.test
        .exec(&format!(
            "INSERT INTO events (tenant_id, kind, created_at, payload) \
             SELECT tenant_id, kind, {}, payload FROM events",
            s.ts("2024-01-01 00:00:00")
        ))
        .await;
    analyze(&s).await;
    s
}

/// The plan guard's report in a dry run of [`one_day_of_clicks`].
async fn dry_run_plan(s: &Setup) -> PlanReport {
    let dry = s
        .submit(one_day_of_clicks(serde_json::json!({"dry_run": true})), 3)
        .await;
    assert_eq!(s.run_to_end(&dry).await, RunOutcome::Done);
    let result = s.job(&dry).await.result.unwrap();
    let Some(JobResult::DryRun(report)) = JobResult::parse(&result) else {
        panic!("not a dry-run report: {result}");
    };
    report.plan.expect("a dry run shows the plan")
}

/// Fresh statistics, as a production table has them.
async fn analyze(s: &Setup) {
    s.test
        .exec(match s.test.backend {
            Backend::Postgres => "ANALYZE events",
            Backend::MySql => "ANALYZE TABLE events",
            Backend::Sqlite => "ANALYZE",
        })
        .await;
}

async fn a_selective_filter_without_its_index_is_refused_and_runs_once_the_index_exists(
    backend: Backend,
) {
    let s = setup(backend).await;
    let matching = one_day_of_clicks_ids(&s).await;
    assert_eq!(matching.len(), 200);
    let before = s.snapshot().await;

    // A dry run shows the plan and the verdict, and writes nothing.
    let plan = dry_run_plan(&s).await;
    assert_eq!(plan.verdict, Verdict::Refuse, "{plan:?}");
    assert_ne!(plan.access, Access::FilterIndex, "{plan:?}");
    assert!(plan.rows_read_per_row > 100, "{plan:?}");

    let id = s.submit(one_day_of_clicks(serde_json::json!({})), 3).await;
    let outcome = s.run_once(&id).await;
    let RunOutcome::Dead { error } = outcome else {
        panic!("the guard should refuse the job: {outcome:?}");
    };
    assert!(error.contains("refused by the plan guard"), "{error}");
    assert!(error.contains("CREATE INDEX"), "{error}");
    assert!(error.contains("reaper_events_created_at_kind"), "{error}");
    let (state, attempts, _) = s.state(&id).await;
    assert_eq!((state.as_str(), attempts), (JobState::Dead.as_str(), 1));
    before.assert_untouched(&s.test).await;

    // The index the refusal names: every backend's planner then finds the rows through it.
    s.test
        .exec("CREATE INDEX reaper_events_created_at_kind ON events (created_at, kind)")
        .await;
    analyze(&s).await;
    let before = s.snapshot().await;
    let id = s.submit(one_day_of_clicks(serde_json::json!({})), 3).await;
    s.run_and_check(&id, &before, &matching, Removal::Hard, 100)
        .await;
    let plan = dry_run_plan(&s).await;
    assert_eq!(
        (plan.access, plan.verdict),
        (Access::FilterIndex, Verdict::Pass),
        "{plan:?}"
    );
}

async fn a_target_that_allows_slow_plans_runs_them(backend: Backend) {
    let mut s = setup(backend).await;
    s.catalog = Catalog::new([
        Target {
            throttle: Throttle {
                allow_slow_plan: true,
                ..Throttle::default()
            },
            ..events_target()
        },
        tokens_target(),
    ]);
    let matching = one_day_of_clicks_ids(&s).await;
    let before = s.snapshot().await;
    let id = s.submit(one_day_of_clicks(serde_json::json!({})), 3).await;
    s.run_and_check(&id, &before, &matching, Removal::Hard, 100)
        .await;
}
