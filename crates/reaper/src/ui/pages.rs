//! The dashboard's pages: sign-in, overview, jobs (filtered, paged, live progress), one job
//! (request, attempts, error, per-table counts, chart, actions, audit paged with keys
//! collapsed), policies, dead jobs, and the confirmation page every action goes through.
//!
//! Each handler signs the request in, reads the ledger within the API's bounded wait and
//! renders one template; a viewer's pages show no action, and the action handlers refuse a
//! viewer (403) and any request without the session's anti-forgery token (403).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use reaper_core::lifecycle::JobState;
use reaper_core::sql::retention as sql_retention;
use reaper_core::views::KeepingUp;
use reaper_engine::EngineError;
use reaper_engine::ledger::{self, Action, ActionRecord, AuditRecord, JobRecord};
use serde::Deserialize;

use super::session::{self, Role, Session};
use crate::actions::{self, Outcome};
use crate::api::{ApiState, bounded};
use crate::policy_view;

/// Jobs per page.
const PAGE: u32 = 50;

/// Audit entries per page of a job.
const AUDIT_PAGE: u32 = 50;

/// What every page's header shows.
pub(crate) struct Head {
    active: &'static str,
    actor: String,
    can_act: bool,
    csrf: String,
}

fn head(session: &Session, active: &'static str) -> Head {
    Head {
        active,
        actor: session.actor.clone(),
        can_act: session.role == Role::Operator,
        csrf: session.csrf.clone(),
    }
}

/// The request's session, as an extractor: a page handler that takes it runs only for a
/// signed-in request; any other is sent to the sign-in page.
pub(crate) struct SignedIn(Session);

impl FromRequestParts<Arc<ApiState>> for SignedIn {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        state
            .ui
            .sessions
            .of(&parts.headers)
            .map(SignedIn)
            .ok_or_else(|| Redirect::to("/ui/login"))
    }
}

/// A rendered template, or a 500 naming the template problem.
fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(message = "A dashboard page could not be rendered.", %error);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A plain answer for what went wrong (the ledger unavailable, a refused action).
fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn unavailable(error: &EngineError) -> Response {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the ledger is unavailable: {error}"),
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    name: String,
}

pub(crate) async fn login_form() -> Response {
    page(&LoginPage {
        error: None,
        name: String::new(),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    name: String,
    token: String,
}

/// Exchanges a token for a session cookie: the API token for an operator, the read-only token
/// for a viewer. A wrong token gets the form again (401), saying only that it was wrong.
pub(crate) async fn login(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers) {
        return plain(
            StatusCode::FORBIDDEN,
            format!(
                "cross-site sign-in refused (Origin: {:?}, Sec-Fetch-Site: {:?})",
                headers.get(header::ORIGIN),
                headers.get("sec-fetch-site")
            ),
        );
    }
    let name: String = form.name.trim().chars().take(100).collect();
    let role = if crate::api::token_matches(&form.token, &state.token) {
        Some(Role::Operator)
    } else {
        state
            .ui
            .read_token
            .as_deref()
            .filter(|read| crate::api::token_matches(&form.token, read))
            .map(|_| Role::Viewer)
    };
    match (role, name.is_empty()) {
        (Some(role), false) => {
            let id = state.ui.sessions.start(role, name);
            (
                [(header::SET_COOKIE, session::set_cookie(&id))],
                Redirect::to("/ui"),
            )
                .into_response()
        }
        (role, _) => {
            let error = if role.is_none() {
                "That token is not valid here."
            } else {
                "Give your name: it is recorded with your actions."
            };
            let mut response = page(&LoginPage {
                error: Some(error.into()),
                name,
            });
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(session) = state.ui.sessions.of(&headers) {
        if !session::may_change(&session, &headers, &form.csrf) {
            return plain(StatusCode::FORBIDDEN, "forged request refused".into());
        }
        state.ui.sessions.end(&headers);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// One target's line on the overview.
struct TargetLine {
    name: String,
    hour: u64,
    day: u64,
    throttle: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    head: Head,
    states: Vec<(&'static str, u64)>,
    retrying: u64,
    targets: Vec<TargetLine>,
    workers: &'static str,
    daemons: Result<Vec<DaemonLine>, String>,
    queue_depth: String,
    owners: Vec<(String, u64)>,
}

/// One daemon on the overview: its worker registrations that heartbeat recently.
struct DaemonLine {
    name: String,
    alive: usize,
    last_seen: String,
}

/// A registration whose last heartbeat is older than this is not counted alive: three of
/// apalis-sqlite's 30 s heartbeats (three of reaper's default 10 s Redis heartbeats fit too).
const WORKER_SILENCE: chrono::Duration = chrono::Duration::seconds(90);

/// Daemons no registration of which was seen for this long are left off the overview.
const DAEMON_FORGOTTEN: chrono::Duration = chrono::Duration::hours(1);

/// Worker registrations grouped per daemon: a daemon registers under its owner name, and under
/// `NAME-rN` after its Nth rebuild of the workers (`worker::run_workers`). Newest seen first.
fn daemons(workers: &[(String, DateTime<Utc>)], now: DateTime<Utc>) -> Vec<DaemonLine> {
    let mut by_daemon: BTreeMap<&str, (usize, DateTime<Utc>)> = BTreeMap::new();
    for (name, seen) in workers {
        if now - *seen > DAEMON_FORGOTTEN {
            continue;
        }
        let daemon = match name.rsplit_once("-r") {
            Some((daemon, restarts))
                if !restarts.is_empty() && restarts.bytes().all(|b| b.is_ascii_digit()) =>
            {
                daemon
            }
            _ => name.as_str(),
        };
        let entry = by_daemon.entry(daemon).or_insert((0, *seen));
        if now - *seen <= WORKER_SILENCE {
            entry.0 += 1;
        }
        entry.1 = entry.1.max(*seen);
    }
    let mut lines: Vec<(DateTime<Utc>, DaemonLine)> = by_daemon
        .into_iter()
        .map(|(name, (alive, seen))| {
            let line = DaemonLine {
                name: name.to_owned(),
                alive,
                last_seen: seen.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            };
            (seen, line)
        })
        .collect();
    lines.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
    lines.into_iter().map(|(_, line)| line).collect()
}

/// What the overview reads from the ledger.
struct OverviewFacts {
    states: BTreeMap<&'static str, u64>,
    retrying: u64,
    hour: BTreeMap<String, u64>,
    day: BTreeMap<String, u64>,
    owners: BTreeMap<String, u64>,
}

async fn overview_facts(state: &ApiState) -> Result<OverviewFacts, EngineError> {
    let db = &state.producer.db;
    let now = Utc::now();
    Ok(OverviewFacts {
        states: ledger::count_by_state(db).await?,
        retrying: ledger::count_retrying(db).await?,
        hour: ledger::rows_since(db, now - chrono::Duration::hours(1)).await?,
        day: ledger::rows_since(db, now - chrono::Duration::days(1)).await?,
        owners: ledger::running_by_owner(db).await?,
    })
}

/// A target's pacing in words.
fn throttle_text(throttle: &reaper_core::throttle::Throttle) -> String {
    let mut parts = Vec::new();
    if !throttle.pause.is_zero() {
        parts.push(format!("pause {:?} per batch", throttle.pause));
    }
    if let Some(rate) = throttle.max_rows_per_second {
        parts.push(format!("at most {rate} rows/s"));
    }
    if let Some(adaptive) = &throttle.adaptive {
        parts.push(format!(
            "adaptive {}–{} rows toward {:?}",
            adaptive.min, adaptive.max, adaptive.target
        ));
    }
    if parts.is_empty() {
        "unthrottled".into()
    } else {
        parts.join(", ")
    }
}

pub(crate) async fn overview(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
) -> Response {
    let facts = match bounded(&state, overview_facts(&state)).await {
        Ok(facts) => facts,
        Err(error) => return unavailable(&error),
    };
    let depth = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        state.producer.queue.depth(),
    )
    .await;
    let queue_depth = match depth {
        Ok(Ok(depth)) => depth.to_string(),
        _ => "unavailable".into(),
    };
    let listed = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        state.producer.queue.workers(),
    )
    .await;
    let daemons = match listed {
        Ok(Ok(workers)) => Ok(daemons(&workers, Utc::now())),
        Ok(Err(error)) => Err(format!("The queue did not list its workers: {error}")),
        Err(_) => Err("The queue did not list its workers within 1 s.".into()),
    };
    let targets = state
        .producer
        .catalog
        .targets()
        .map(|target| TargetLine {
            hour: facts.hour.get(&target.name).copied().unwrap_or(0),
            day: facts.day.get(&target.name).copied().unwrap_or(0),
            throttle: throttle_text(&target.throttle),
            name: target.name.clone(),
        })
        .collect();
    let workers = if state
        .workers_alive
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        "polling the queue"
    } else {
        "not polling (restarting or stopping)"
    };
    page(&OverviewPage {
        head: head(&session, "overview"),
        states: JobState::ALL
            .iter()
            .map(|job_state| {
                let word = job_state.as_str();
                (word, facts.states.get(word).copied().unwrap_or(0))
            })
            .collect(),
        retrying: facts.retrying,
        targets,
        workers,
        daemons,
        queue_depth,
        owners: facts.owners.into_iter().collect(),
    })
}

/// One job as a line of a listing (and the figures the live poll sends).
pub(crate) struct JobRow {
    pub(crate) id: String,
    pub(crate) short_id: String,
    pub(crate) state: &'static str,
    pub(crate) target: String,
    pub(crate) requested_by: String,
    pub(crate) rows: i64,
    pub(crate) batches: i64,
    pub(crate) percent: u32,
    pub(crate) known_total: bool,
    pub(crate) rate: String,
    pub(crate) eta: String,
    pub(crate) created: String,
    pub(crate) created_iso: String,
    pub(crate) error: String,
    /// Still changing: the page keeps polling it.
    pub(crate) live: bool,
}

/// A job id's last 8 characters: ids are UUIDv7, whose first characters are the time, the
/// same for jobs submitted together.
fn short_id(id: &str) -> String {
    let skip = id.chars().count().saturating_sub(8);
    id.chars().skip(skip).collect()
}

/// `1h 02m`, `3m 20s`, `12s`.
fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A job's line: its progress against the matching rows the planner estimated at its start
/// (when it has that estimate), its rate since its first claim and the time left at that rate.
pub(crate) fn job_row(job: &JobRecord, now: DateTime<Utc>) -> JobRow {
    let request: serde_json::Value = serde_json::from_str(&job.request).unwrap_or_default();
    let total = job
        .job_result()
        .as_ref()
        .and_then(|result| result.running().copied())
        .and_then(|note| note.strategy.estimate)
        .map(|estimate| estimate.matching_rows)
        .filter(|total| *total > 0);
    let rows = u64::try_from(job.rows_deleted).unwrap_or(0);
    let running = job.state == JobState::Running;
    let seconds = job
        .started_at
        .map(|started| (now - started).as_seconds_f64())
        .filter(|seconds| *seconds > 0.0);
    let rate = match (running, seconds) {
        (true, Some(seconds)) => Some(rows as f64 / seconds),
        _ => None,
    };
    let percent = match (job.state, total) {
        (JobState::Done, _) => 100,
        (_, Some(total)) => (rows.saturating_mul(100) / total).min(99) as u32,
        _ => 0,
    };
    let eta = match (rate, total) {
        (Some(rate), Some(total)) if rate > 0.0 && total > rows => {
            duration_text(total.saturating_sub(rows) as f64 / rate)
        }
        _ => "—".into(),
    };
    JobRow {
        short_id: short_id(&job.id),
        id: job.id.clone(),
        state: job.state.as_str(),
        target: job.target.clone(),
        requested_by: request["requested_by"].as_str().unwrap_or("").to_owned(),
        rows: job.rows_deleted,
        batches: job.batches,
        percent,
        known_total: total.is_some() || job.state == JobState::Done,
        rate: rate.map_or_else(|| "—".into(), |rate| format!("{rate:.0}")),
        eta,
        created: job.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        created_iso: job.created_at.to_rfc3339(),
        error: job.last_error.clone().unwrap_or_default(),
        live: !job.is_finished(),
    }
}

/// The jobs page's filters, as given.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct JobFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    requested_by: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    before: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    head: Head,
    heading: &'static str,
    dead_only: bool,
    all_states: Vec<&'static str>,
    filter: JobFilter,
    jobs: Vec<JobRow>,
    next: Option<String>,
}

/// One page of jobs matching `filter`, newest first, and the cursor of the next page. A
/// requester filter walks that requester's jobs through its index.
async fn find_jobs(
    state: &ApiState,
    filter: &JobFilter,
    wanted: Option<JobState>,
) -> Result<(Vec<JobRecord>, Option<String>), EngineError> {
    let db = &state.producer.db;
    if !filter.key.is_empty() {
        let job = ledger::get_by_key(db, filter.key.trim()).await?;
        return Ok((job.into_iter().collect(), None));
    }
    let target = Some(filter.target.trim()).filter(|target| !target.is_empty());
    let before = Some(filter.before.as_str()).filter(|before| !before.is_empty());
    let page = match filter.requested_by.trim() {
        "" => ledger::list(db, wanted, target, before, PAGE).await?,
        requester => ledger::list_of(db, requester, wanted, target, before, PAGE).await?,
    };
    let cursor = (page.len() == PAGE as usize)
        .then(|| page.last().map(|job| job.id.clone()))
        .flatten();
    Ok((page, cursor))
}

/// RFC 3986's unreserved characters stay; every other byte is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The next page's address: the filters kept, the cursor moved.
fn next_page(base: &str, filter: &JobFilter, cursor: &str) -> String {
    let encode = |text: &str| utf8_percent_encode(text, ESCAPED).to_string();
    format!(
        "{base}?state={}&target={}&requested_by={}&before={}",
        encode(&filter.state),
        encode(&filter.target),
        encode(&filter.requested_by),
        encode(cursor)
    )
}

pub(crate) async fn jobs(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
    Query(filter): Query<JobFilter>,
) -> Response {
    let wanted = match filter.state.as_str() {
        "" => None,
        word => match word.parse::<JobState>() {
            Ok(wanted) => Some(wanted),
            Err(error) => return plain(StatusCode::BAD_REQUEST, format!("state: {error}")),
        },
    };
    listing(&state, &session, filter, wanted, false).await
}

pub(crate) async fn dead(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
    Query(filter): Query<JobFilter>,
) -> Response {
    listing(&state, &session, filter, Some(JobState::Dead), true).await
}

async fn listing(
    state: &ApiState,
    session: &Session,
    filter: JobFilter,
    wanted: Option<JobState>,
    dead_only: bool,
) -> Response {
    let (found, cursor) = match bounded(state, find_jobs(state, &filter, wanted)).await {
        Ok(found) => found,
        Err(error) => return unavailable(&error),
    };
    let now = Utc::now();
    let base = if dead_only { "/ui/dead" } else { "/ui/jobs" };
    page(&JobsPage {
        head: head(session, if dead_only { "dead" } else { "jobs" }),
        heading: if dead_only { "Dead jobs" } else { "Jobs" },
        dead_only,
        all_states: JobState::ALL.iter().map(|state| state.as_str()).collect(),
        jobs: found.iter().map(|job| job_row(job, now)).collect(),
        next: cursor.map(|cursor| next_page(base, &filter, &cursor)),
        filter,
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    head: Head,
    job: JobRow,
    actions: Vec<&'static str>,
    mode: String,
    filter: String,
    reason: String,
    key: String,
    attempts: String,
    batches: i64,
    tables: BTreeMap<String, u64>,
    history: Vec<ActionRecord>,
    audit: Vec<AuditRecord>,
    audit_next: Option<i64>,
}

/// The actions a job in `state` takes.
fn actions_for(job: &JobRecord) -> Vec<&'static str> {
    match job.state {
        JobState::Running if job.cancel_requested_at.is_some() => vec![],
        JobState::Pending | JobState::Running => vec!["pause", "cancel"],
        JobState::Paused => vec!["resume", "cancel"],
        JobState::Dead => vec!["retry"],
        JobState::Done | JobState::Cancelled => vec![],
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditCursor {
    #[serde(default)]
    audit_after: i64,
}

/// What the job page reads besides the job.
struct JobFacts {
    tables: BTreeMap<String, u64>,
    history: Vec<ActionRecord>,
    audit: Vec<AuditRecord>,
}

async fn job_facts(state: &ApiState, id: &str, after: i64) -> Result<JobFacts, EngineError> {
    let db = &state.producer.db;
    Ok(JobFacts {
        tables: ledger::rows_by_table(db, id).await?,
        history: ledger::actions_of_job(db, id, 50).await?,
        audit: ledger::audit_of_job(db, id, after, AUDIT_PAGE).await?,
    })
}

pub(crate) async fn job(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Query(cursor): Query<AuditCursor>,
) -> Response {
    let job = match bounded(&state, ledger::get(&state.producer.db, &id)).await {
        Ok(Some(job)) => job,
        Ok(None) => return plain(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return unavailable(&error),
    };
    let facts = match bounded(&state, job_facts(&state, &id, cursor.audit_after)).await {
        Ok(facts) => facts,
        Err(error) => return unavailable(&error),
    };
    let request: serde_json::Value = serde_json::from_str(&job.request).unwrap_or_default();
    let text = |field: &str| match &request[field] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    };
    let tables = if facts.tables.keys().any(|table| *table != job.target) {
        facts.tables
    } else {
        BTreeMap::new()
    };
    page(&JobPage {
        head: head(&session, "jobs"),
        actions: actions_for(&job),
        mode: text("mode"),
        filter: text("filter"),
        reason: text("reason"),
        key: job.idempotency_key.clone(),
        attempts: format!("{} of {}", job.attempts, job.max_attempts),
        batches: job.batches,
        tables,
        history: facts.history,
        audit_next: (facts.audit.len() == AUDIT_PAGE as usize)
            .then(|| facts.audit.last().map(|entry| entry.batch_no))
            .flatten(),
        audit: facts.audit,
        job: job_row(&job, Utc::now()),
    })
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    head: Head,
    question: String,
    detail: String,
    verb: String,
    action_url: String,
    back: String,
}

/// The word of an action on a job in a URL, and what it is.
fn job_action(word: &str) -> Option<(Action, &'static str)> {
    match word {
        "cancel" => Some((
            Action::Cancel,
            "It stops for good at its next batch boundary; what it deleted stays deleted.",
        )),
        "pause" => Some((
            Action::Pause,
            "It stops at its next batch boundary and keeps its checkpoint until resumed.",
        )),
        "resume" => Some((
            Action::Resume,
            "It goes back on the queue and continues from its checkpoint.",
        )),
        "retry" => Some((
            Action::Retry,
            "It gets one more attempt, from its checkpoint.",
        )),
        _ => None,
    }
}

/// A viewer's answer to a page or a request that acts.
fn read_only() -> Response {
    plain(
        StatusCode::FORBIDDEN,
        "this session is read-only; sign in with the API token to act".into(),
    )
}

pub(crate) async fn confirm(
    SignedIn(session): SignedIn,
    Path((id, word)): Path<(String, String)>,
) -> Response {
    if session.role != Role::Operator {
        return read_only();
    }
    let Some((action, detail)) = job_action(&word) else {
        return plain(StatusCode::NOT_FOUND, format!("no action `{word}`"));
    };
    let verb = action.as_str();
    page(&ConfirmPage {
        head: head(&session, "jobs"),
        question: format!("{}{} job {id}?", verb[..1].to_uppercase(), &verb[1..]),
        detail: detail.into(),
        verb: format!("Yes, {verb} it"),
        action_url: format!("/ui/jobs/{id}/{verb}"),
        back: format!("/ui/jobs/{id}"),
    })
}

/// Checks a state-changing request: signed in, an operator, the session's anti-forgery token
/// and no foreign origin.
fn may_act(state: &ApiState, headers: &HeaderMap, csrf: &str) -> Result<Session, Box<Response>> {
    let session = state
        .ui
        .sessions
        .of(headers)
        .ok_or_else(|| Box::new(plain(StatusCode::FORBIDDEN, "not signed in".into())))?;
    if !session::may_change(&session, headers, csrf) {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "forged request refused: the form's token is missing or wrong, or it came from another site".into(),
        )));
    }
    if session.role != Role::Operator {
        return Err(Box::new(read_only()));
    }
    Ok(session)
}

/// An action's outcome as an answer: back to the job's page, or what refused it.
fn after_action(outcome: Outcome, back: &str) -> Response {
    match outcome {
        Outcome::Done(..) => Redirect::to(back).into_response(),
        Outcome::Conflict(message) => plain(StatusCode::CONFLICT, message),
        Outcome::NotFound(message) => plain(StatusCode::NOT_FOUND, message),
    }
}

pub(crate) async fn act(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, word)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match may_act(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(answer) => return *answer,
    };
    let Some((action, _)) = job_action(&word) else {
        return plain(StatusCode::NOT_FOUND, format!("no action `{word}`"));
    };
    match bounded(
        &state,
        actions::act(&state.producer, action, &id, &session.actor),
    )
    .await
    {
        Ok(outcome) => after_action(outcome, &format!("/ui/jobs/{id}")),
        Err(error) => unavailable(&error),
    }
}

/// One run of a policy as the policies page lists it.
struct RunLine {
    id: String,
    short_id: String,
    state: &'static str,
    rows: i64,
    duration: String,
    capped: bool,
    created: String,
}

/// One policy as the policies page shows it.
struct PolicyLine {
    name: String,
    target: String,
    rule: String,
    schedule: String,
    enabled: bool,
    next: String,
    keeping_up: String,
    windows: Vec<WindowLine>,
    since_last: String,
    backlog: String,
    runs: Vec<RunLine>,
}

/// One past window of a policy: what its run removed against what became due in it.
struct WindowLine {
    window: String,
    removed: String,
    became_due: String,
    left: String,
}

/// A capped count in words: "≥ cap" when the count stopped there.
fn capped_count(count: u64) -> String {
    if count >= sql_retention::COUNT_CAP {
        format!("≥ {count}")
    } else {
        count.to_string()
    }
}

/// The policies page's lines of [`policy_view::keeping_up`].
fn keeping_up_lines(counts: &KeepingUp) -> (Vec<WindowLine>, String, String) {
    let windows = counts
        .windows
        .iter()
        .map(|window| WindowLine {
            window: window.window_end.format("%Y-%m-%d %H:%M:%S").to_string(),
            removed: window
                .rows_removed
                .map_or_else(|| "no run listed".into(), |rows| rows.to_string()),
            became_due: window.became_due.map_or_else(
                || "not counted".into(),
                |rows| capped_count(u64::try_from(rows).unwrap_or(0)),
            ),
            left: capped_count(window.still_due),
        })
        .collect();
    (
        windows,
        capped_count(counts.due_since_last_window),
        capped_count(counts.backlog),
    )
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    head: Head,
    policies: Vec<PolicyLine>,
}

/// Runs shown per policy.
const POLICY_RUNS: u32 = 10;

/// Whether retention keeps up, from the newest finished runs: a run that stopped at its cap
/// left due rows for the next window (a backlog); a dead run removed nothing it should have.
fn keeping_up(runs: &[JobRecord]) -> String {
    let finished: Vec<&JobRecord> = runs.iter().filter(|run| run.is_finished()).collect();
    let Some(last) = finished.first() else {
        return "no finished run yet".into();
    };
    let capped = finished
        .iter()
        .take_while(|run| run.stopped_at_max_rows())
        .count();
    match (last.state, capped) {
        (JobState::Dead, _) => "no: the last run is dead".into(),
        (_, 0) => format!(
            "yes: the last run removed every due row ({} rows)",
            last.rows_deleted
        ),
        (_, capped) => format!(
            "behind: the last {capped} run(s) stopped at the cap; at least {} rows were left each time",
            last.rows_deleted.max(1)
        ),
    }
}

async fn policy_line(
    state: &ApiState,
    policy: &reaper_core::retention::Policy,
) -> Result<PolicyLine, EngineError> {
    let runs = ledger::policy_jobs(&state.producer.db, &policy.name, &[], POLICY_RUNS).await?;
    // Counts on the target may be slow on a large table: they get their own wait, and the
    // page shows why they are missing rather than failing.
    let counted = bounded(
        state,
        policy_view::keeping_up(
            &state.producer.db,
            &state.producer.catalog,
            policy,
            &runs,
            Utc::now(),
        ),
    )
    .await;
    let (windows, since_last, backlog) =
        counted
            .as_ref()
            .map(keeping_up_lines)
            .unwrap_or_else(|error| {
                let missing = format!("not counted: {error}");
                (Vec::new(), missing.clone(), missing)
            });
    Ok(PolicyLine {
        name: policy.name.clone(),
        target: policy.target.clone(),
        rule: format!(
            "rows whose {} is older than {}",
            policy.age_column, policy.max_age
        ),
        schedule: policy.schedule_text.clone(),
        enabled: policy.enabled,
        next: policy
            .next_window(Utc::now())
            .filter(|_| policy.enabled)
            .map_or_else(
                || "—".into(),
                |next| next.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ),
        keeping_up: keeping_up(&runs),
        windows,
        since_last,
        backlog,
        runs: runs
            .iter()
            .map(|run| RunLine {
                id: run.id.clone(),
                short_id: short_id(&run.id),
                state: run.state.as_str(),
                rows: run.rows_deleted,
                duration: run.finished_at.map_or_else(
                    || "—".into(),
                    |finished| duration_text((finished - run.created_at).as_seconds_f64()),
                ),
                capped: run.stopped_at_max_rows(),
                created: run.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            })
            .collect(),
    })
}

pub(crate) async fn policies(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
) -> Response {
    let mut lines = Vec::with_capacity(state.policies.len());
    for policy in &state.policies {
        match bounded(&state, policy_line(&state, policy)).await {
            Ok(line) => lines.push(line),
            Err(error) => return unavailable(&error),
        }
    }
    page(&PoliciesPage {
        head: head(&session, "policies"),
        policies: lines,
    })
}

pub(crate) async fn confirm_run(
    State(state): State<Arc<ApiState>>,
    SignedIn(session): SignedIn,
    Path(name): Path<String>,
) -> Response {
    if session.role != Role::Operator {
        return read_only();
    }
    if !state.policies.iter().any(|policy| policy.name == name) {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no retention policy `{name}`"),
        );
    }
    page(&ConfirmPage {
        head: head(&session, "policies"),
        question: format!("Run policy {name} now?"),
        detail: "One run is submitted now, off the schedule, unless the policy's previous run is unfinished.".into(),
        verb: "Yes, run it".into(),
        action_url: format!("/ui/policies/{name}/run"),
        back: "/ui/policies".into(),
    })
}

pub(crate) async fn run_policy(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let session = match may_act(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(answer) => return *answer,
    };
    let Some(policy) = state.policies.iter().find(|policy| policy.name == name) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no retention policy `{name}`"),
        );
    };
    match bounded(
        &state,
        actions::run_policy(&state.producer, policy, &session.actor),
    )
    .await
    {
        Ok(Outcome::Done(_, job)) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Ok(outcome) => after_action(outcome, "/ui/policies"),
        Err(error) => unavailable(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_registrations_are_counted_per_daemon_by_their_heartbeat() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |seconds| now - chrono::Duration::seconds(seconds);
        let workers = [
            ("a-1-x".to_owned(), ago(200)),
            ("a-1-x-r1".to_owned(), ago(5)),
            ("b-2-y".to_owned(), ago(30)),
            ("b-2-y-r2".to_owned(), ago(60)),
            ("c-3-z".to_owned(), ago(100)),
            ("old-4-w".to_owned(), ago(7_200)),
            ("d-rx".to_owned(), ago(1)),
        ];
        let lines = daemons(&workers, now);
        let shown: Vec<(&str, usize)> = lines
            .iter()
            .map(|line| (line.name.as_str(), line.alive))
            .collect();
        assert_eq!(
            shown,
            [("d-rx", 1), ("a-1-x", 1), ("b-2-y", 2), ("c-3-z", 0)]
        );
        assert_eq!(
            lines[1].last_seen,
            ago(5).format("%Y-%m-%d %H:%M:%S UTC").to_string()
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(0.4), "0s");
        assert_eq!(duration_text(59.0), "59s");
        assert_eq!(duration_text(200.0), "3m 20s");
        assert_eq!(duration_text(3_720.0), "1h 02m");
        assert_eq!(duration_text(-5.0), "0s");
    }

    #[test]
    fn a_short_id_is_the_random_end_of_a_uuid_v7() {
        assert_eq!(short_id("01a233ab-8115-74f3-81a9-b6100efc1b74"), "0efc1b74");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn next_page_keeps_the_filters_and_encodes_them() {
        let filter = JobFilter {
            state: "dead".into(),
            requested_by: "a&b c".into(),
            ..JobFilter::default()
        };
        assert_eq!(
            next_page("/ui/jobs", &filter, "id-1"),
            "/ui/jobs?state=dead&target=&requested_by=a%26b%20c&before=id-1"
        );
    }
}
