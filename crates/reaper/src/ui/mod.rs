//! The dashboard under `/ui`, served by the daemon beside the API: server-rendered pages
//! (askama templates in `crates/reaper/ui/templates`, compiled in), one stylesheet and one small
//! script (`crates/reaper/ui/assets`, compiled in) that polls for live progress and draws the
//! job page's chart. Nothing is loaded from another origin.
//!
//! It owns sign-in ([`session`]), the pages ([`pages`]) and the JSON the script polls
//! ([`live`]). It decides nothing about jobs: reads go through the ledger, actions through
//! [`crate::actions`], exactly as the API's. Every page answers with a strict
//! `Content-Security-Policy` (scripts and styles from this origin only, no framing) and
//! `Cache-Control: no-store`.

pub(crate) mod live;
pub(crate) mod pages;
pub(crate) mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::ApiState;

/// What the dashboard adds to the API's state.
#[derive(Debug, Default)]
pub(crate) struct UiState {
    /// `api.read_token`: signs in a viewer, who may look but not act.
    pub(crate) read_token: Option<String>,
    /// The signed-in sessions.
    pub(crate) sessions: session::Sessions,
}

/// The dashboard's routes (merged into the API's router).
pub(crate) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/confirm/{action}", get(pages::confirm))
        .route("/ui/jobs/{id}/{action}", post(pages::act))
        .route("/ui/jobs/{id}/series", get(live::series))
        .route("/ui/live", get(live::jobs))
        .route("/ui/dead", get(pages::dead))
        .route("/ui/policies", get(pages::policies))
        .route("/ui/policies/{name}/confirm", get(pages::confirm_run))
        .route("/ui/policies/{name}/run", post(pages::run_policy))
        .route("/ui/assets/app.css", get(stylesheet))
        .route("/ui/assets/app.js", get(script))
        .layer(axum::middleware::map_response(protect))
}

/// Headers on every dashboard answer: no script, style, frame or form target from elsewhere,
/// nothing cached (pages show live state and carry the session's anti-forgery token).
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it, browsers send `Origin: null` on the dashboard's own forms,
    // which the forgery check must refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../ui/assets/app.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../ui/assets/app.js"),
    )
        .into_response()
}
