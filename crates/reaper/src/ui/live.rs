//! What the dashboard's script polls: the live figures of the jobs on a page, and a job's
//! newest batches for its chart. Read-only, for any signed-in session.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use reaper_engine::EngineError;
use reaper_engine::ledger;
use serde::{Deserialize, Serialize};

use super::pages::job_row;
use crate::api::{ApiState, bounded};

/// Jobs one poll may ask about (a page shows 50).
const MAX_IDS: usize = 100;

/// Batches the chart shows.
const SERIES: u32 = 500;

#[derive(Debug, Deserialize)]
pub(crate) struct Ids {
    #[serde(default)]
    ids: String,
}

/// One job's live figures.
#[derive(Debug, Serialize)]
struct Live {
    state: &'static str,
    /// Percent done; absent while the job has no estimate of its matching rows.
    progress: Option<u32>,
    rows: i64,
    batches: i64,
    rate: String,
    eta: String,
    live: bool,
}

fn refused() -> Response {
    (StatusCode::UNAUTHORIZED, "sign in first").into_response()
}

async fn read_live(state: &ApiState, ids: &[&str]) -> Result<BTreeMap<String, Live>, EngineError> {
    let now = Utc::now();
    let jobs = ledger::jobs_by_ids(&state.producer.db, ids).await?;
    Ok(jobs
        .iter()
        .map(|job| {
            let row = job_row(job, now);
            let live = Live {
                state: row.state,
                progress: row.known_total.then_some(row.percent),
                rows: row.rows,
                batches: row.batches,
                rate: row.rate,
                eta: row.eta,
                live: row.live,
            };
            (row.id, live)
        })
        .collect())
}

/// `GET /ui/live?ids=a,b`: the figures of those jobs, by id.
pub(crate) async fn jobs(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(ids): Query<Ids>,
) -> Response {
    if state.ui.sessions.of(&headers).is_none() {
        return refused();
    }
    let wanted: Vec<&str> = ids
        .ids
        .split(',')
        .filter(|id| !id.is_empty())
        .take(MAX_IDS)
        .collect();
    match bounded(&state, read_live(&state, &wanted)).await {
        Ok(found) => axum::Json(found).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// One batch on the chart.
#[derive(Debug, Serialize)]
struct Point {
    batch: i64,
    rows: i64,
    /// Since the previous batch committed (0 for the first shown).
    seconds: f64,
}

/// `GET /ui/jobs/{id}/series`: the job's newest batches, oldest first.
pub(crate) async fn series(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if state.ui.sessions.of(&headers).is_none() {
        return refused();
    }
    match bounded(
        &state,
        ledger::batch_series(&state.producer.db, &id, SERIES),
    )
    .await
    {
        Ok(points) => {
            let mut previous = None;
            let shown: Vec<Point> = points
                .iter()
                .map(|point| {
                    let seconds = previous.map_or(0.0, |before: chrono::DateTime<Utc>| {
                        (point.created_at - before).as_seconds_f64().max(0.0)
                    });
                    previous = Some(point.created_at);
                    Point {
                        batch: point.batch_no,
                        rows: point.row_count,
                        seconds,
                    }
                })
                .collect();
            axum::Json(shown).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}
