//! The daemon's HTTP API (axum): jobs under `/v1` behind a bearer token, and the operational
//! endpoints `/healthz`, `/readyz` and `/metrics` without one (probes and scrapers carry no
//! secrets; keep the port off the public network).
//!
//! Documented in `docs/openapi.json`; [`ROUTES`] lists every route, and a test holds the
//! document, this list and the router to each other. Handlers translate; every decision about
//! jobs is the engine's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use metrics_exporter_prometheus::PrometheusHandle;
use reaper_core::catalog::Catalog;
use reaper_core::job::JobRequest;
use reaper_core::views::{
    AuditPage, AuditView, Cancelled, JobPage, JobView, PolicyPage, Problem, Readiness, Submitted,
};
use reaper_engine::ledger::{self, CancelOutcome};
use reaper_engine::{Database, EngineError, instruments};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::job_view::{STATES, audit_view, job_view};
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
    ("get", "/v1/policies"),
    ("get", "/v1/policies/{name}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Largest page of a listing.
const MAX_PAGE: u32 = 500;

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct ApiState {
    pub(crate) db: Database,
    pub(crate) catalog: Catalog,
    pub(crate) queue: JobQueue,
    pub(crate) token: String,
    pub(crate) default_max_attempts: u32,
    pub(crate) metrics: PrometheusHandle,
    /// Set by the worker supervisor while workers poll the queue.
    pub(crate) workers_alive: Arc<AtomicBool>,
    /// The retention policies (`/v1/policies`, per-policy metrics).
    pub(crate) policies: Vec<reaper_core::retention::Policy>,
}

/// The whole API.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let jobs = Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/audit", get(job_audit))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{name}", get(get_policy))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(jobs)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such route".into()) })
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

fn engine_problem(error: &EngineError) -> Response {
    match error {
        EngineError::Invalid(invalid) => (
            StatusCode::BAD_REQUEST,
            axum::Json(Problem::invalid(invalid)),
        )
            .into_response(),
        other => {
            tracing::error!(message = "API request failed.", error = %other);
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the ledger is unavailable: {other}"),
            )
        }
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
    // Constant time, so response timing does not reveal how much of a guess was right.
    if bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())) {
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

async fn create_job(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: JobRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            instruments::job_submitted("api", false);
            return problem(StatusCode::BAD_REQUEST, format!("invalid job: {error}"));
        }
    };
    match crate::producer::accept(
        &state.db,
        &state.catalog,
        &state.queue,
        &request,
        state.default_max_attempts,
        "api",
    )
    .await
    {
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
    match ledger::get(&state.db, &id).await {
        Ok(Some(job)) => match job_view(job) {
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
    if let Some(wanted) = &query.state
        && !STATES.contains(&wanted.as_str())
    {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("state: `{wanted}` is not one of {}", STATES.join(", ")),
        );
    }
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("limit: {limit} is not allowed; allowed: 1 to {MAX_PAGE}"),
        );
    }
    let jobs = match &query.idempotency_key {
        Some(key) => ledger::get_by_key(&state.db, key)
            .await
            .map(|job| job.into_iter().collect()),
        None => {
            ledger::list(
                &state.db,
                query.state.as_deref(),
                query.target.as_deref(),
                query.before.as_deref(),
                limit,
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

async fn cancel_job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let (status, cancel, job) = match ledger::request_cancel(&state.db, &id, Utc::now()).await {
        Ok(Some(CancelOutcome::Cancelled(job))) => (StatusCode::OK, "cancelled", job),
        Ok(Some(CancelOutcome::Stopping(job))) => (StatusCode::ACCEPTED, "stopping", job),
        Ok(Some(CancelOutcome::Finished(job))) => {
            return problem(
                StatusCode::CONFLICT,
                format!("job `{id}` is {} already; nothing to cancel", job.state),
            );
        }
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return engine_problem(&error),
    };
    match job_view(job) {
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
    match ledger::get(&state.db, &id).await {
        Ok(Some(_)) => {}
        Ok(None) => return problem(StatusCode::NOT_FOUND, format!("no job `{id}`")),
        Err(error) => return engine_problem(&error),
    }
    match ledger::audit_of_job(&state.db, &id, query.after_batch.unwrap_or(0), limit).await {
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

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when the database and the queue answer and the workers poll.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let database = match ledger::unfinished_counts(&state.db).await {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("unavailable: {error}"),
    };
    let queue = match state.queue.depth().await {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("unavailable: {error}"),
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

async fn list_policies(State(state): State<Arc<ApiState>>) -> Response {
    let now = Utc::now();
    let mut views = Vec::with_capacity(state.policies.len());
    for policy in &state.policies {
        match crate::policy_view::policy_view(&state.db, policy, now).await {
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
    match crate::policy_view::policy_view(&state.db, policy, Utc::now()).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(error) => engine_problem(&error),
    }
}

/// Prometheus text format. The ledger and queue gauges are read at scrape time.
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    if let Err(error) =
        crate::policy_view::record_metrics(&state.db, &state.policies, Utc::now()).await
    {
        tracing::warn!(message = "Cannot read the policies' runs for /metrics.", %error);
    }
    match ledger::unfinished_counts(&state.db).await {
        Ok(counts) => instruments::jobs_in_ledger(&counts),
        Err(error) => tracing::warn!(message = "Cannot count jobs for /metrics.", %error),
    }
    match state.queue.depth().await {
        Ok(depth) => instruments::queue_depth(depth),
        Err(error) => tracing::warn!(message = "Cannot read the queue depth for /metrics.", %error),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use reaper_core::config::{DatabaseConfig, QueueBackend, QueueConfig};
    use reaper_core::span::Span;
    use sea_orm_migration::MigratorTrait;
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "unit-test-token-0123456789";

    async fn state(dir: &std::path::Path) -> Arc<ApiState> {
        let db = Database::connect(&DatabaseConfig {
            url: format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display()),
            max_connections: 1,
            statement_timeout: Span::from_secs(5),
            lock_timeout: Span::from_millis(50),
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
        })
        .await
        .unwrap();
        Arc::new(ApiState {
            db,
            catalog: Catalog::default(),
            queue,
            token: TOKEN.into(),
            default_max_attempts: 3,
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            workers_alive: Arc::new(AtomicBool::new(true)),
            policies: Vec::new(),
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

    #[tokio::test]
    async fn the_openapi_document_describes_exactly_the_routes_the_router_serves() {
        let document: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        assert_eq!(
            documented, listed,
            "docs/openapi.json and api::ROUTES differ"
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
