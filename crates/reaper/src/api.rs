//! The daemon's HTTP API (axum): jobs under `/v1` behind a bearer token, and the operational
//! endpoints `/healthz`, `/readyz` and `/metrics` without one (probes and scrapers carry no
//! secrets; keep the port off the public network).
//!
//! Documented in `docs/openapi.json`; [`ROUTES`] lists every route, and a test holds the
//! document, this list and the router to each other. Handlers translate; every decision about
//! jobs is the engine's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use chrono::Utc;
use metrics_exporter_prometheus::PrometheusHandle;
use reaper_core::lifecycle::JobState;
use reaper_core::views::{
    Acted, ActionPage, ActionView, AuditPage, AuditView, Cancelled, JobPage, JobView, PolicyPage,
    Problem, Readiness, Submitted,
};
use reaper_engine::ledger::{self, Action};
use reaper_engine::{EngineError, ErrorClass, holds, instruments};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::actions::{self, Outcome};
use crate::job_view::{audit_view, job_view, job_view_with_tables};
use crate::producer::{Producer, Unacceptable};
use crate::queue::JobQueue;

/// Every route, as `(method, path)`; `docs/openapi.json` documents exactly these (a test
/// checks the document against this list and this list against the router).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("get", "/v1/jobs/{id}/audit"),
    ("get", "/v1/jobs/{id}/receipt"),
    ("get", "/v1/policies"),
    ("get", "/v1/policies/{name}"),
    ("post", "/v1/jobs/{id}/pause"),
    ("post", "/v1/jobs/{id}/resume"),
    ("post", "/v1/jobs/{id}/retry"),
    ("post", "/v1/jobs/{id}/restore"),
    ("get", "/v1/jobs/{id}/actions"),
    ("post", "/v1/policies/{name}/run"),
    ("post", "/v1/holds"),
    ("get", "/v1/holds"),
    ("post", "/v1/holds/{id}/release"),
    ("get", "/v1/targets"),
    ("get", "/v1/targets/{name}"),
    ("post", "/v1/targets/{name}/pause"),
    ("post", "/v1/targets/{name}/resume"),
    ("patch", "/v1/targets/{name}/throttle"),
    ("delete", "/v1/targets/{name}/throttle"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The largest request body accepted (a job with 1,000 `in` values is far smaller); a larger
/// one is answered 413 with this limit.
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// Largest page of a listing.
const MAX_PAGE: u32 = 500;

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// The ledger, catalog and queue the handlers use, and what accepting a job needs.
    pub(crate) producer: Producer,
    pub(crate) token: String,
    pub(crate) metrics: PrometheusHandle,
    /// Set by the worker supervisor while workers poll the queue.
    pub(crate) workers_alive: Arc<AtomicBool>,
    /// The retention policies (`/v1/policies`, per-policy metrics).
    pub(crate) policies: Vec<reaper_core::retention::Policy>,
    /// How long a `/v1` call waits for the ledger before answering 503 (`api.ledger_wait`).
    pub(crate) ledger_wait: Duration,
    /// The dashboard's sessions and read-only token (`crate::ui`).
    pub(crate) ui: crate::ui::UiState,
    /// `worker.lease`: a live rows-per-second cap must let one batch wait less than half of it.
    pub(crate) worker_lease: Duration,
}

/// The whole API.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let jobs = Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/audit", get(job_audit))
        .route("/v1/jobs/{id}/receipt", get(job_receipt))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{name}", get(get_policy))
        .route("/v1/jobs/{id}/pause", post(pause_job))
        .route("/v1/jobs/{id}/resume", post(resume_job))
        .route("/v1/jobs/{id}/retry", post(retry_job))
        .route("/v1/jobs/{id}/restore", post(restore_job))
        .route("/v1/jobs/{id}/actions", get(job_actions))
        .route("/v1/policies/{name}/run", post(run_policy))
        .route("/v1/holds", post(place_hold).get(list_holds))
        .route("/v1/holds/{id}/release", post(release_hold))
        .route("/v1/targets", get(list_targets))
        .route("/v1/targets/{name}", get(get_target))
        .route("/v1/targets/{name}/pause", post(pause_target))
        .route("/v1/targets/{name}/resume", post(resume_target))
        .route("/v1/targets/{name}/throttle", patch(set_throttle))
        .route("/v1/targets/{name}/throttle", delete(clear_throttle))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(jobs)
        .merge(crate::ui::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such route".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the API until `stop` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        })
        .await
}

/// An error body: `{"error": "…"}` (`fields` only for an invalid job, see [`engine_problem`]).
fn problem(status: StatusCode, message: String) -> Response {
    (status, axum::Json(Problem::new(message))).into_response()
}

/// An engine error by intent: 400 an invalid job (with its fields), 409 an idempotency key
/// reused for a different request, 503 with `Retry-After` what is transient (the database
/// down or slow), 500 what is permanent on our side (a stored job that cannot be read).
fn engine_problem(error: &EngineError) -> Response {
    match error {
        EngineError::Invalid(invalid) => (
            StatusCode::BAD_REQUEST,
            axum::Json(Problem::invalid(invalid)),
        )
            .into_response(),
        EngineError::KeyReused { .. } => problem(StatusCode::CONFLICT, error.to_string()),
        other if other.class() == ErrorClass::Transient => {
            tracing::warn!(message = "API request failed; the caller may retry.", error = %other);
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the ledger is unavailable: {other}"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
            response
        }
        other => {
            tracing::error!(message = "API request failed.", error = %other);
            problem(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

/// Seconds a client is told to wait before retrying a 503.
const RETRY_AFTER: &str = "2";

/// Runs a ledger call within the API's bounded wait (`api.ledger_wait`): past it the call
/// fails as transient (503), however long the database would keep the caller waiting.
pub(crate) async fn bounded<T>(
    state: &ApiState,
    call: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(state.ledger_wait, call).await {
        Ok(result) => result,
        Err(_) => Err(EngineError::Unreachable {
            class: ErrorClass::Transient,
            cause: format!("the database did not answer within {:?}", state.ledger_wait),
        }),
    }
}

async fn require_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(presented, &state.token) {
        next.run(request).await
    } else {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "a valid `Authorization: Bearer <token>` header is required".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// Whether `presented` is the token. Both are hashed (SHA-256) and the two 32-byte digests
/// compared in constant time, so the response time reveals neither how much of a guess was
/// right nor whether its length was: a plain constant-time compare returns at once on a length
/// difference. Hashing takes time in proportion to each input's length, which says nothing
/// about the token's content.
pub(crate) fn token_matches(presented: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let presented = Sha256::digest(presented.as_bytes());
    let token = Sha256::digest(token.as_bytes());
    bool::from(presented[..].ct_eq(&token[..]))
}

async fn create_job(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            instruments::job_submitted("api", false);
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit of {MAX_BODY} bytes"),
            );
        }
        Err(rejection) => return problem(rejection.status(), rejection.body_text()),
    };
    let request = match crate::producer::parse(&body, &state.producer.catalog) {
        Ok(request) => request,
        Err(refused) => {
            instruments::job_submitted("api", false);
            return match refused {
                Unacceptable::Invalid(invalid) => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(Problem::invalid(&invalid)),
                )
                    .into_response(),
                unreadable => problem(StatusCode::BAD_REQUEST, unreadable.to_string()),
            };
        }
    };
    let accepted = bounded(&state, state.producer.accept(&request, "api", None)).await;
    match accepted {
        Ok(submitted) => {
            let status = if submitted.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let location = format!("/v1/jobs/{}", submitted.job.id);
            let id = submitted.job.id.clone();
            let job = match job_view(submitted.job) {
                Ok(job) => job,
                Err(error) => return engine_problem(&error),
            };
            let reply = Submitted {
                created: submitted.created,
                id,
                job,
            };
            let mut response = (status, axum::Json(reply)).into_response();
            if let Ok(value) = location.parse() {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        Err(error) => engine_problem(&error),
    }
}

async fn get_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    match bounded(&state, ledger::get(&state.producer.db, &id)).await {
        Ok(Some(job)) => match bounded(&state, job_view_with_tables(&state.producer.db, job)).await
        {
            Ok(job) => axum::Json(job).into_response(),
            Err(error) => engine_problem(&error),
        },
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => engine_problem(&error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    target: Option<String>,
    idempotency_key: Option<String>,
    /// Cursor: the `next` of the previous page.
    before: Option<String>,
    limit: Option<u32>,
}

async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let wanted_state = match query
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
    {
        Ok(wanted) => wanted,
        Err(error) => return problem(StatusCode::BAD_REQUEST, format!("state: {error}")),
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("limit: {limit} is not allowed; allowed: 1 to {MAX_PAGE}"),
        );
    }
    let jobs = match &query.idempotency_key {
        Some(key) => bounded(&state, ledger::get_by_key(&state.producer.db, key))
            .await
            .map(|job| job.into_iter().collect()),
        None => {
            bounded(
                &state,
                ledger::list(
                    &state.producer.db,
                    wanted_state,
                    query.target.as_deref(),
                    query.before.as_deref(),
                    limit,
                ),
            )
            .await
        }
    };
    match jobs {
        Ok(jobs) => {
            let next = (jobs.len() == limit as usize)
                .then(|| jobs.last().map(|job| job.id.clone()))
                .flatten();
            match jobs
                .into_iter()
                .map(job_view)
                .collect::<Result<Vec<JobView>, _>>()
            {
                Ok(jobs) => axum::Json(JobPage { jobs, next }).into_response(),
                Err(error) => engine_problem(&error),
            }
        }
        Err(error) => engine_problem(&error),
    }
}

async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let actor = actions::actor_from_body(&body);
    let (status, cancel, job) = match bounded(
        &state,
        actions::act(&state.producer, Action::Cancel, &id, &actor),
    )
    .await
    {
        Ok(Outcome::Done(word, job)) if job.state == JobState::Cancelled => {
            (StatusCode::OK, word, job)
        }
        Ok(Outcome::Done(word, job)) => (StatusCode::ACCEPTED, word, job),
        Ok(Outcome::Conflict(message)) => return problem(StatusCode::CONFLICT, message),
        Ok(Outcome::NotFound(message)) => return problem(StatusCode::NOT_FOUND, message),
        Err(error) => return engine_problem(&error),
    };
    match job_view(*job) {
        Ok(job) => (
            status,
            axum::Json(Cancelled {
                cancel: cancel.to_owned(),
                job,
            }),
        )
            .into_response(),
        Err(error) => engine_problem(&error),
    }
}

async fn pause_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    act_on_job(&state, Action::Pause, &id, &body).await
}

async fn resume_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    act_on_job(&state, Action::Resume, &id, &body).await
}

async fn retry_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    act_on_job(&state, Action::Retry, &id, &body).await
}

/// Submits the restore job of an archive or soft-delete job (201, the new job); 400 when the job
/// cannot be restored (a hard job, an unfinished one), the message says why.
async fn restore_job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let actor = actions::actor_from_body(&body);
    let ask = reaper_engine::archive::RestoreAsk {
        requested_by: &actor,
        ..Default::default()
    };
    let restored = actions::restore(&state.producer, &id, ask, "api");
    match bounded(&state, restored).await {
        Ok(outcome) => acted(outcome, StatusCode::CREATED),
        Err(error) => engine_problem(&error),
    }
}

/// Pause (200 paused, 202 stopping at the batch boundary), resume and retry (200): the job as
/// the action left it; 409 when its state does not take the action.
async fn act_on_job(state: &ApiState, action: Action, id: &str, body: &[u8]) -> Response {
    let actor = actions::actor_from_body(body);
    match bounded(state, actions::act(&state.producer, action, id, &actor)).await {
        Ok(outcome) => acted(outcome, StatusCode::OK),
        Err(error) => engine_problem(&error),
    }
}

/// An action's outcome as a reply: `done` (202 for a job that stops at its batch boundary),
/// 409 or 404.
fn acted(outcome: Outcome, done: StatusCode) -> Response {
    match outcome {
        Outcome::Done(word, job) => {
            let status = if word == "stopping" {
                StatusCode::ACCEPTED
            } else {
                done
            };
            match job_view(*job) {
                Ok(job) => (
                    status,
                    axum::Json(Acted {
                        outcome: word.to_owned(),
                        job,
                    }),
                )
                    .into_response(),
                Err(error) => engine_problem(&error),
            }
        }
        Outcome::Conflict(message) => problem(StatusCode::CONFLICT, message),
        Outcome::NotFound(message) => problem(StatusCode::NOT_FOUND, message),
    }
}

/// The recorded actions on a job, newest first (at most 100).
async fn job_actions(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    match bounded(&state, ledger::get(&state.producer.db, &id)).await {
        Ok(Some(_)) => {}
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return engine_problem(&error),
    }
    match bounded(&state, ledger::actions_of_job(&state.producer.db, &id, 100)).await {
        Ok(records) => axum::Json(ActionPage {
            actions: records
                .into_iter()
                .map(|record| ActionView {
                    action: record.action,
                    actor: record.actor,
                    outcome: record.outcome,
                    created_at: record.created_at,
                })
                .collect(),
        })
        .into_response(),
        Err(error) => engine_problem(&error),
    }
}

/// Submits a run of a policy now (201), unless its previous run is unfinished (409).
async fn run_policy(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(policy) = state.policies.iter().find(|policy| policy.name == name) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no retention policy `{name}`"),
        );
    };
    let actor = actions::actor_from_body(&body);
    match bounded(&state, actions::run_policy(&state.producer, policy, &actor)).await {
        Ok(outcome) => acted(outcome, StatusCode::CREATED),
        Err(error) => engine_problem(&error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Cursor: entries after this batch number.
    after_batch: Option<i64>,
    limit: Option<u32>,
}

async fn job_audit(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("limit: {limit} is not allowed; allowed: 1 to {MAX_PAGE}"),
        );
    }
    match bounded(&state, ledger::get(&state.producer.db, &id)).await {
        Ok(Some(_)) => {}
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return engine_problem(&error),
    }
    let entries = bounded(
        &state,
        ledger::audit_of_job(
            &state.producer.db,
            &id,
            query.after_batch.unwrap_or(0),
            limit,
        ),
    )
    .await;
    match entries {
        Ok(entries) => {
            let next = (entries.len() == limit as usize)
                .then(|| entries.last().map(|entry| entry.batch_no))
                .flatten();
            let entries: Vec<AuditView> = entries.into_iter().map(audit_view).collect();
            axum::Json(AuditPage {
                entries,
                next_after_batch: next,
            })
            .into_response()
        }
        Err(error) => engine_problem(&error),
    }
}

/// `GET /v1/jobs/{id}/receipt`: a finished job's receipt, signed with the key from the daemon's
/// environment ([`crate::signing`]); 409 for an unfinished job, 500 when no key is set.
async fn job_receipt(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let job = match bounded(&state, ledger::get(&state.producer.db, &id)).await {
        Ok(Some(job)) => job,
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return engine_problem(&error),
    };
    if !job.is_finished() {
        let message = format!(
            "job `{id}` is {}; a receipt is made for a finished job",
            job.state
        );
        return problem(StatusCode::CONFLICT, message);
    }
    let key = match crate::signing::signing_key() {
        Ok(key) => key,
        Err(message) => return problem(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    let built = reaper_engine::receipt::build(
        &state.producer.db,
        &state.producer.catalog,
        &job,
        Utc::now(),
    );
    match bounded(&state, built).await {
        Ok(body) => axum::Json(crate::signing::sign(&key, body)).into_response(),
        Err(error) => engine_problem(&error),
    }
}

/// `POST /v1/holds`: places a legal hold (201 with the hold); it takes effect for every batch
/// that begins after the reply.
async fn place_hold(
    State(state): State<Arc<ApiState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return problem(rejection.status(), rejection.body_text()),
    };
    let request: reaper_core::holds::HoldRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::BAD_REQUEST, format!("invalid hold: {error}")),
    };
    let db = &state.producer.db;
    let catalog = &state.producer.catalog;
    match bounded(&state, holds::place(db, catalog, &request, Utc::now())).await {
        Ok(hold) => (StatusCode::CREATED, axum::Json(hold)).into_response(),
        Err(error) => engine_problem(&error),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldsQuery {
    /// Also released and expired holds.
    all: Option<bool>,
}

/// `GET /v1/holds`: the active holds (with `all=true` every one), newest first.
async fn list_holds(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<HoldsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let active_at = (!query.all.unwrap_or(false)).then(Utc::now);
    match bounded(&state, holds::list(&state.producer.db, active_at, MAX_PAGE)).await {
        Ok(holds) => axum::Json(reaper_core::views::HoldPage { holds }).into_response(),
        Err(error) => engine_problem(&error),
    }
}

/// `POST /v1/holds/{id}/release`: ends a hold (200 with it); batches that begin after the reply
/// may remove its rows.
async fn release_hold(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let released = holds::release(&state.producer.db, &id, "api", Utc::now());
    match bounded(&state, released).await {
        Ok(Some(hold)) => axum::Json(hold).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no hold `{id}`")),
        Err(error) => engine_problem(&error),
    }
}

/// `GET /v1/targets`: every catalog target with its throttle (configured, override, in force)
/// and whether an operator paused it.
async fn list_targets(State(state): State<Arc<ApiState>>) -> Response {
    let listed = crate::target_view::all(&state.producer.db, &state.producer.catalog);
    match bounded(&state, listed).await {
        Ok(targets) => axum::Json(reaper_core::views::TargetPage { targets }).into_response(),
        Err(error) => engine_problem(&error),
    }
}

/// `GET /v1/targets/{name}`: one target, with who changed it when and its recorded changes.
async fn get_target(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    let shown = crate::target_view::one(&state.producer.db, &state.producer.catalog, &name);
    match bounded(&state, shown).await {
        Ok(Some(target)) => axum::Json(target).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            format!(
                "no target `{name}`; the catalog has: {}",
                state.producer.catalog.names().join(", ")
            ),
        ),
        Err(error) => engine_problem(&error),
    }
}

/// What a control change says about itself: who asks and why (`{"requested_by", "reason"}`,
/// both optional).
fn changer_from_body(body: &[u8]) -> (String, Option<String>) {
    (
        actions::actor_from_body(body),
        actions::text_from_body(body, "reason", 1_000),
    )
}

/// `POST /v1/targets/{name}/pause`: no batch of the target starts once the daemons see it
/// (within a second); running jobs wait at their batch boundary.
async fn pause_target(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    control_target(&state, &name, &body, ControlCall::Pause).await
}

/// `POST /v1/targets/{name}/resume`: its batches start again within a second.
async fn resume_target(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    control_target(&state, &name, &body, ControlCall::Resume).await
}

/// `PATCH /v1/targets/{name}/throttle`: lowers (or clears, with `null`) throttle values; 400
/// naming the field for a value above the configuration or not above zero.
async fn set_throttle(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let patch: reaper_core::controls::ThrottlePatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("invalid throttle change: {error}"),
            );
        }
    };
    control_target(&state, &name, &body, ControlCall::Set(Box::new(patch))).await
}

/// `DELETE /v1/targets/{name}/throttle`: the configured throttle applies again.
async fn clear_throttle(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    control_target(&state, &name, &body, ControlCall::Clear).await
}

/// A control change the API makes.
enum ControlCall {
    Pause,
    Resume,
    Set(Box<reaper_core::controls::ThrottlePatch>),
    Clear,
}

/// Makes the change for who the body names, then answers with the target as it is now.
async fn control_target(state: &ApiState, name: &str, body: &[u8], call: ControlCall) -> Response {
    use reaper_engine::controls;
    let (actor, reason) = changer_from_body(body);
    let by = controls::Changer {
        actor: &actor,
        reason: reason.as_deref(),
        now: Utc::now(),
    };
    let (db, catalog) = (&state.producer.db, &state.producer.catalog);
    let changed = async {
        match &call {
            ControlCall::Pause => controls::pause(db, catalog, name, by).await,
            ControlCall::Resume => controls::resume(db, catalog, name, by).await,
            ControlCall::Set(patch) => {
                controls::set(db, catalog, name, patch, state.worker_lease, by).await
            }
            ControlCall::Clear => controls::clear(db, catalog, name, by).await,
        }?;
        crate::target_view::one(db, catalog, name).await
    };
    match bounded(state, changed).await {
        Ok(Some(target)) => axum::Json(target).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no target `{name}`")),
        Err(error) => engine_problem(&error),
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// How long `/readyz` and `/metrics` wait for the database and the queue: they answer within
/// about this long whatever is down (probes time out at a few seconds).
const PROBE_WAIT: Duration = Duration::from_millis(1_500);

/// Ready when the database and the queue answer and the workers poll.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let (database, queue) = tokio::join!(
        tokio::time::timeout(PROBE_WAIT, ledger::unfinished_counts(&state.producer.db)),
        tokio::time::timeout(PROBE_WAIT, queue_pullable(&state.producer.queue)),
    );
    let database = match database {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(error)) => format!("unavailable: {error}"),
        Err(_) => format!("unavailable: no answer within {PROBE_WAIT:?}"),
    };
    let queue = match queue {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(error)) => format!("unavailable: {error}"),
        Err(_) => format!("unavailable: no answer within {PROBE_WAIT:?}"),
    };
    let workers = if state.workers_alive.load(Ordering::Relaxed) {
        "ok".to_owned()
    } else {
        "not polling (restarting or stopping)".to_owned()
    };
    let ready = [&database, &queue, &workers]
        .iter()
        .all(|status| status.as_str() == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        database,
        queue,
        workers,
    };
    (status, axum::Json(readiness)).into_response()
}

/// The queue answers, and lets this daemon run what a worker's poll runs. On Redis a poll is a
/// script over the queue's keys: a user whose ACL lets it read the queue (its depth answers)
/// but not run scripts leaves the workers restarting on every poll, so that is tried too.
async fn queue_pullable(queue: &JobQueue) -> anyhow::Result<()> {
    queue.depth().await?;
    if let JobQueue::Redis(storage) = queue {
        let active = storage.get_config().active_jobs_list();
        let mut storage = storage.clone();
        let _: i64 = redis::Script::new("return redis.call('LLEN', KEYS[1])")
            .key(active)
            .invoke_async(storage.get_connection())
            .await?;
    }
    Ok(())
}

async fn list_policies(State(state): State<Arc<ApiState>>) -> Response {
    let now = Utc::now();
    let mut views = Vec::with_capacity(state.policies.len());
    for policy in &state.policies {
        match bounded(
            &state,
            crate::policy_view::policy_view(&state.producer.db, policy, now),
        )
        .await
        {
            Ok(view) => views.push(view),
            Err(error) => return engine_problem(&error),
        }
    }
    axum::Json(PolicyPage { policies: views }).into_response()
}

async fn get_policy(State(state): State<Arc<ApiState>>, Path(name): Path<String>) -> Response {
    let Some(policy) = state.policies.iter().find(|policy| policy.name == name) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no retention policy `{name}`"),
        );
    };
    let now = Utc::now();
    let db = &state.producer.db;
    let read = async {
        let view = crate::policy_view::policy_view(db, policy, now).await?;
        let runs = ledger::policy_jobs(db, &policy.name, &[], POLICY_RUNS_COUNTED).await?;
        Ok::<_, EngineError>((view, runs))
    };
    let (mut view, runs) = match bounded(&state, read).await {
        Ok(read) => read,
        Err(error) => return engine_problem(&error),
    };
    // One policy also says whether it keeps up: counts on the target, under their own wait;
    // when they fail the view says why instead of failing.
    let counts = crate::policy_view::keeping_up(db, &state.producer.catalog, policy, &runs, now);
    match bounded(&state, counts).await {
        Ok(counts) => view.keeping_up = Some(counts),
        Err(error) => view.keeping_up_error = Some(format!("not counted: {error}")),
    }
    axum::Json(view).into_response()
}

/// The newest runs searched for the windows `GET /v1/policies/{name}` counts.
const POLICY_RUNS_COUNTED: u32 = 10;

/// Prometheus text format. The ledger and queue gauges are read at scrape time, each within
/// [`PROBE_WAIT`]; when the ledger cannot be read, `reaper_ledger_up` is 0 and the series read
/// from it are left out of the scrape (a stale or zero count would read as "nothing pending").
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let ledger_read = async {
        crate::policy_view::record_metrics(&state.producer.db, &state.policies, Utc::now()).await?;
        crate::target_view::record_metrics(&state.producer.db, &state.producer.catalog).await?;
        ledger::unfinished_counts(&state.producer.db).await
    };
    let (ledger_read, depth) = tokio::join!(
        tokio::time::timeout(PROBE_WAIT, ledger_read),
        tokio::time::timeout(PROBE_WAIT, state.producer.queue.depth()),
    );
    let ledger_up = match ledger_read {
        Ok(Ok(counts)) => {
            instruments::ledger_counts(&counts);
            true
        }
        Ok(Err(error)) => {
            tracing::warn!(message = "Cannot read the ledger for /metrics.", %error);
            false
        }
        Err(_) => {
            tracing::warn!(message = "The ledger did not answer in time for /metrics.");
            false
        }
    };
    instruments::ledger_up(ledger_up);
    match depth {
        Ok(Ok(depth)) => instruments::queue_depth(depth),
        Ok(Err(error)) => {
            tracing::warn!(message = "Cannot read the queue depth for /metrics.", %error)
        }
        Err(_) => tracing::warn!(message = "The queue did not answer in time for /metrics."),
    }
    let mut text = state.metrics.render();
    if !ledger_up {
        text = without_series(&text, &instruments::ledger_derived().collect::<Vec<_>>());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The exposition text without the samples and the `# HELP`/`# TYPE` lines of `names`.
fn without_series(text: &str, names: &[&str]) -> String {
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let name = match line.strip_prefix("# ") {
            Some(comment) => comment.split(' ').nth(1).unwrap_or(""),
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        if !names.contains(&name) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::body::Body;
    use reaper_core::catalog::Catalog;
    use reaper_core::config::{DatabaseConfig, QueueBackend, QueueConfig};
    use reaper_core::span::Span;
    use reaper_engine::Database;
    use sea_orm_migration::MigratorTrait;
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "unit-test-token-0123456789";

    async fn state(dir: &std::path::Path) -> Arc<ApiState> {
        state_with(dir, Catalog::default(), Vec::new()).await
    }

    async fn state_with(
        dir: &std::path::Path,
        catalog: Catalog,
        policies: Vec<reaper_core::retention::Policy>,
    ) -> Arc<ApiState> {
        let db = Database::connect(&DatabaseConfig {
            url: format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display()),
            max_connections: 1,
            statement_timeout: Span::from_secs(5),
            lock_timeout: Span::from_millis(50),
            health: None,
        })
        .await
        .unwrap();
        reaper_engine::migration::Migrator::up(db.connection(), None)
            .await
            .unwrap();
        let queue = JobQueue::open(&QueueConfig {
            backend: QueueBackend::Sqlite,
            url: format!("sqlite://{}?mode=rwc", dir.join("queue.sqlite").display()),
            name: "api-test".into(),
            poll_interval: Span::from_millis(100),
            heartbeat: Span::from_secs(10),
            fetch_batch: 10,
            vacuum_every: Span::from_secs(60),
            tls: None,
            sentinel: None,
            cluster: None,
        })
        .await
        .unwrap();
        Arc::new(ApiState {
            producer: Producer {
                db,
                catalog,
                queue,
                default_max_attempts: 3,
            },
            token: TOKEN.into(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            workers_alive: Arc::new(AtomicBool::new(true)),
            policies,
            ledger_wait: Duration::from_secs(5),
            ui: crate::ui::UiState::default(),
            worker_lease: Duration::from_secs(60),
        })
    }

    async fn call(router: &Router, method: &str, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `(method, path)` → documented status codes, from docs/openapi.json.
    fn documented() -> BTreeMap<(String, String), BTreeSet<u16>> {
        let document: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
        let mut documented = BTreeMap::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let codes = operation["responses"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} documents no responses"))
                    .keys()
                    .map(|code| code.parse().unwrap())
                    .collect();
                documented.insert((method.clone(), path.clone()), codes);
            }
        }
        documented
    }

    /// `(method, path)` of every `.route(…)` in [`router`]'s source: what the router serves,
    /// read from the code that builds it (axum cannot list its routes).
    fn served() -> BTreeSet<(String, String)> {
        let source = include_str!("api.rs");
        let start = source.find("pub(crate) fn router(").unwrap();
        let end = start + source[start..].find("\n}\n").unwrap();
        let mut served = BTreeSet::new();
        for line in source[start..end].lines() {
            let Some(rest) = line.trim().strip_prefix(".route(\"") else {
                continue;
            };
            let (path, handlers) = rest.split_once('"').unwrap();
            let methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|method| {
                    handlers.contains(&format!(" {method}("))
                        || handlers.contains(&format!(".{method}("))
                })
                .collect();
            assert!(!methods.is_empty(), "cannot read the methods of: {line}");
            for method in methods {
                served.insert((method.to_owned(), path.to_owned()));
            }
        }
        assert!(served.len() >= 5, "is the route scan broken? {served:?}");
        served
    }

    #[tokio::test]
    async fn the_openapi_document_describes_exactly_the_routes_the_router_serves() {
        let documented: BTreeSet<(String, String)> = documented().into_keys().collect();
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        assert_eq!(
            documented, listed,
            "docs/openapi.json and api::ROUTES differ"
        );
        // Both directions: a served route the document lacks, or a documented one not served.
        assert_eq!(
            served(),
            documented,
            "the router and docs/openapi.json differ"
        );

        let dir = tempfile::tempdir().unwrap();
        let router = router(state(dir.path()).await);
        for (method, path) in ROUTES {
            let (status, body) = call(&router, method, &path.replace("{id}", "some-job")).await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !body.contains("no such route"),
                "{method} {path} is documented but not served"
            );
        }
        let (status, body) = call(&router, "get", "/v1/undocumented").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no such route"), "{body}");
    }

    #[test]
    fn left_out_series_lose_their_samples_and_their_help_and_type_lines() {
        let text = "# HELP reaper_jobs_pending Jobs pending.\n# TYPE reaper_jobs_pending gauge\n\
                    reaper_jobs_pending 0\n# TYPE reaper_jobs_pending_other gauge\n\
                    reaper_jobs_pending_other 1\n\
                    reaper_policy_last_run_rows{policy=\"p\"} 5\nreaper_ledger_up 0\n";
        assert_eq!(
            without_series(text, &instruments::ledger_derived().collect::<Vec<_>>()),
            "# TYPE reaper_jobs_pending_other gauge\nreaper_jobs_pending_other 1\nreaper_ledger_up 0\n"
        );
    }

    /// Documented responses no in-process call can produce, and why.
    const NOT_EXERCISED: &[(&str, &str, u16, &str)] = &[(
        "get",
        "/v1/jobs/{id}/receipt",
        200,
        "signing needs REAPER_RECEIPT_KEY in the daemon's environment; tests/e2e/receipts.rs \
         gets a receipt from a running daemon",
    )];

    #[tokio::test]
    async fn every_status_the_api_answers_is_documented_and_every_documented_one_answered() {
        use reaper_testkit::engine::events_target;
        let dir = tempfile::tempdir().unwrap();
        let policy = reaper_core::retention::Policy::new(
            "old-events".into(),
            "events".into(),
            "created_at".into(),
            reaper_core::span::Span::from_secs(86_400),
            None,
            "0 3 * * *".into(),
            None,
            Vec::new(),
            None,
            true,
        )
        .unwrap();
        let state = state_with(dir.path(), Catalog::new([events_target()]), vec![policy]).await;
        let router = router(state.clone());
        let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
        let job = |tenant: i64| {
            format!(
                r#"{{"target": "events", "filter": {{"all": [{{"column": "tenant_id", "op": "eq", "value": {tenant}}}]}}, "requested_by": "t", "reason": "r", "idempotency_key": "k{tenant}"}}"#
            )
        };
        // (method, route, uri, token?, body) → status, recorded under the route.
        macro_rules! answer {
            ($method:expr, $route:expr, $uri:expr, $token:expr, $body:expr) => {{
                let mut request = Request::builder()
                    .method($method.to_uppercase().as_str())
                    .uri($uri.to_string())
                    .header(header::CONTENT_TYPE, "application/json");
                if $token {
                    request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
                }
                let response = router
                    .clone()
                    .oneshot(request.body(Body::from($body.to_string())).unwrap())
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                seen.entry(($method.to_owned(), $route.to_owned()))
                    .or_default()
                    .insert(status);
                (status, String::from_utf8_lossy(&body).into_owned())
            }};
        }
        let (status, body) = answer!("post", "/v1/jobs", "/v1/jobs", true, job(1));
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(answer!("post", "/v1/jobs", "/v1/jobs", true, job(1)).0, 200);
        answer!(
            "post",
            "/v1/jobs",
            "/v1/jobs",
            true,
            r#"{"target": "nope"}"#
        );
        // The holds' routes take a hold, not a job.
        let hold = r#"{"target": "events", "keys": [1], "reason": "case 1", "placed_by": "legal"}"#;
        let body_for = |route: &str, job: String| {
            if route.starts_with("/v1/holds") {
                hold.to_owned()
            } else if route.starts_with("/v1/targets") {
                r#"{"max_batch_size": 100, "requested_by": "t"}"#.to_owned()
            } else {
                job
            }
        };
        // The targets' routes name a catalog target.
        let uri_of = |route: &str, id: &str| {
            let name = if route.starts_with("/v1/targets") {
                "events"
            } else {
                "old-events"
            };
            route.replace("{id}", id).replace("{name}", name)
        };
        for (method, route) in ROUTES
            .iter()
            .filter(|(_, route)| route.starts_with("/v1/targets/"))
        {
            let (status, body) = answer!(
                *method,
                *route,
                route.replace("{name}", "nope"),
                true,
                body_for(route, job(9))
            );
            let expected = if *method == "get" { 404 } else { 400 };
            assert_eq!(status, expected, "{method} {route}: {body}");
            assert!(body.contains("`nope`"), "{body}");
        }
        for (method, route) in ROUTES.iter().filter(|(_, route)| route.starts_with("/v1/")) {
            let uri = uri_of(route, &id);
            answer!(*method, *route, uri, false, "{}");
            answer!(*method, *route, uri, true, body_for(route, job(9)));
        }
        let (status, body_text) = answer!("post", "/v1/holds", "/v1/holds", true, job(9));
        assert_eq!(status, 400, "{body_text}");
        answer!("get", "/v1/holds", "/v1/holds?all=maybe", true, "");
        let (_, placed) = answer!("post", "/v1/holds", "/v1/holds", true, hold);
        let hold_id = serde_json::from_str::<serde_json::Value>(&placed).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, released) = answer!(
            "post",
            "/v1/holds/{id}/release",
            format!("/v1/holds/{hold_id}/release"),
            true,
            ""
        );
        assert_eq!(status, 200, "{released}");
        answer!("get", "/v1/jobs", "/v1/jobs?state=bogus", true, "");
        for route in [
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/audit",
            "/v1/jobs/{id}/receipt",
        ] {
            answer!("get", route, route.replace("{id}", "no-such-job"), true, "");
        }
        answer!(
            "post",
            "/v1/jobs/{id}/cancel",
            "/v1/jobs/no-such-job/cancel",
            true,
            ""
        );
        answer!(
            "get",
            "/v1/jobs/{id}/audit",
            format!("/v1/jobs/{id}/audit?limit=many"),
            true,
            ""
        );
        answer!("get", "/v1/policies/{name}", "/v1/policies/nope", true, "");
        // Cancel: pending → 200 (the loop above), finished → 409, running → 202.
        answer!(
            "post",
            "/v1/jobs/{id}/cancel",
            format!("/v1/jobs/{id}/cancel"),
            true,
            ""
        );
        let (_, body) = answer!("post", "/v1/jobs", "/v1/jobs", true, job(2));
        let running = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        reaper_testkit::engine::claim(
            &state.producer.db,
            &running,
            "w",
            "t",
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
        let (status, body) = answer!(
            "post",
            "/v1/jobs/{id}/cancel",
            format!("/v1/jobs/{running}/cancel"),
            true,
            ""
        );
        assert_eq!(status, 202, "{body}");
        // Pause, resume, retry, actions and a policy run: unknown → 404; a pending job pauses
        // (200) and resumes (200); a running one is stopping (202); a dead one is retried (200);
        // a policy with an unfinished run refuses another (409; the loop above submitted one).
        for route in [
            "/v1/jobs/{id}/pause",
            "/v1/jobs/{id}/resume",
            "/v1/jobs/{id}/retry",
        ] {
            answer!(
                "post",
                route,
                route.replace("{id}", "no-such-job"),
                true,
                ""
            );
        }
        answer!(
            "get",
            "/v1/jobs/{id}/actions",
            "/v1/jobs/no-such-job/actions",
            true,
            ""
        );
        answer!(
            "post",
            "/v1/policies/{name}/run",
            "/v1/policies/nope/run",
            true,
            ""
        );
        let (status, body) = answer!(
            "post",
            "/v1/policies/{name}/run",
            "/v1/policies/old-events/run",
            true,
            ""
        );
        assert_eq!(status, 409, "{body}");
        let (_, body) = answer!("post", "/v1/jobs", "/v1/jobs", true, job(6));
        let pending = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for (action, expected) in [("pause", 200), ("resume", 200)] {
            let route = format!("/v1/jobs/{{id}}/{action}");
            let (status, body) = answer!(
                "post",
                route.as_str(),
                route.replace("{id}", &pending),
                true,
                r#"{"requested_by": "ann"}"#
            );
            assert_eq!(status, expected, "{action}: {body}");
        }
        let (status, body) = answer!(
            "post",
            "/v1/jobs/{id}/pause",
            format!("/v1/jobs/{running}/pause"),
            true,
            ""
        );
        assert_eq!(status, 409, "being cancelled: {body}");
        let (_, body) = answer!("post", "/v1/jobs", "/v1/jobs", true, job(7));
        let busy = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        reaper_testkit::engine::claim(
            &state.producer.db,
            &busy,
            "w",
            "t7",
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
        let (status, body) = answer!(
            "post",
            "/v1/jobs/{id}/pause",
            format!("/v1/jobs/{busy}/pause"),
            true,
            ""
        );
        assert_eq!(status, 202, "{body}");
        let dead = |error: &'static str| ledger::Transition::Dead { error };
        assert!(
            ledger::transition(&state.producer.db, &busy, "t7", Utc::now(), &dead("boom"))
                .await
                .unwrap()
        );
        let (status, body) = answer!(
            "post",
            "/v1/jobs/{id}/retry",
            format!("/v1/jobs/{busy}/retry"),
            true,
            ""
        );
        assert_eq!(status, 200, "{body}");
        // Restore: unknown → 404; a pending job → 400 (the loop above); a finished soft job →
        // 201, its restore job.
        answer!(
            "post",
            "/v1/jobs/{id}/restore",
            "/v1/jobs/no-such-job/restore",
            true,
            ""
        );
        let soft = job(8).replace(r#""reason": "r""#, r#""reason": "r", "mode": "soft""#);
        let (_, body) = answer!("post", "/v1/jobs", "/v1/jobs", true, soft);
        let soft = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        reaper_testkit::engine::claim(
            &state.producer.db,
            &soft,
            "w",
            "t8",
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
        let done = ledger::Transition::Done { result: "{}" };
        assert!(
            ledger::transition(&state.producer.db, &soft, "t8", Utc::now(), &done)
                .await
                .unwrap()
        );
        let (status, body) = answer!(
            "post",
            "/v1/jobs/{id}/restore",
            format!("/v1/jobs/{soft}/restore"),
            true,
            r#"{"requested_by": "ann"}"#
        );
        assert_eq!(status, 201, "{body}");
        assert!(body.contains(r#""outcome":"created""#), "{body}");
        let (status, body) = answer!(
            "get",
            "/v1/jobs/{id}/actions",
            format!("/v1/jobs/{pending}/actions"),
            true,
            ""
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(r#""action":"resume","actor":"ann","outcome":"pending""#),
            "{body}"
        );
        let (status, body) = answer!(
            "get",
            "/v1/jobs/{id}/receipt",
            format!("/v1/jobs/{running}/receipt"),
            true,
            ""
        );
        assert_eq!(status, 409, "a running job has no receipt yet: {body}");
        for (method, route) in ROUTES
            .iter()
            .filter(|(_, route)| !route.starts_with("/v1/"))
        {
            answer!(*method, *route, *route, false, "");
        }
        // A known key with another request: 409; a body over the limit: 413.
        let (status, body) = answer!(
            "post",
            "/v1/jobs",
            "/v1/jobs",
            true,
            job(5).replace("\"k5\"", "\"k1\"")
        );
        assert_eq!(status, 409, "{body}");
        let (status, body) = answer!(
            "post",
            "/v1/jobs",
            "/v1/jobs",
            true,
            " ".repeat(MAX_BODY + 1)
        );
        assert_eq!(status, 413, "{body}");
        // Workers not polling: 503 from /readyz.
        state.workers_alive.store(false, Ordering::Relaxed);
        answer!("get", "/readyz", "/readyz", false, "");
        state.workers_alive.store(true, Ordering::Relaxed);
        // The ledger table gone (permanent, our side): 500 wherever the document says so.
        use sea_orm::ConnectionTrait;
        state
            .producer
            .db
            .connection()
            .execute_unprepared("DROP TABLE reaper_jobs")
            .await
            .unwrap();
        for (method, route) in ROUTES.iter().filter(|(_, route)| route.starts_with("/v1/")) {
            let uri = uri_of(route, &id);
            answer!(*method, *route, uri, true, body_for(route, job(3)));
        }
        // No connection to be had (transient): 503 with Retry-After.
        state.producer.db.connection().close_by_ref().await.unwrap();
        for (method, route) in ROUTES.iter().filter(|(_, route)| route.starts_with("/v1/")) {
            let uri = uri_of(route, &id);
            let (status, body) = answer!(*method, *route, uri, true, body_for(route, job(4)));
            assert_eq!(status, 503, "{method} {route}: {body}");
        }

        let documented = documented();
        for (operation, statuses) in &seen {
            let allowed = &documented[operation];
            assert!(
                statuses.is_subset(allowed),
                "{operation:?} answered {statuses:?}; docs/openapi.json documents {allowed:?}"
            );
        }
        let mut unexercised = BTreeSet::new();
        for (operation, statuses) in &documented {
            for status in statuses.difference(seen.get(operation).unwrap_or(&BTreeSet::new())) {
                unexercised.insert((operation.0.clone(), operation.1.clone(), *status));
            }
        }
        let excused: BTreeSet<(String, String, u16)> = NOT_EXERCISED
            .iter()
            .map(|(method, path, status, _)| ((*method).to_owned(), (*path).to_owned(), *status))
            .collect();
        assert_eq!(
            unexercised, excused,
            "documented statuses no call produced (left) vs those excused (right)"
        );
    }

    #[tokio::test]
    async fn jobs_need_the_token_and_health_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(state(dir.path()).await);
        for (token, expected) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
            (Some("Basic dXNlcjpwYXNz"), StatusCode::UNAUTHORIZED),
            (Some(&*format!("Bearer {TOKEN}")), StatusCode::OK),
        ] {
            let mut request = Request::builder().uri("/v1/jobs");
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, token);
            }
            let response = router
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), expected, "{token:?}");
        }
        let response = router
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/healthz")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
