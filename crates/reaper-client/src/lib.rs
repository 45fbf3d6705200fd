//! A client for reaper's HTTP API, for services that submit deletion jobs and follow them.
//!
//! ```no_run
//! # async fn example() -> Result<(), reaper_client::ClientError> {
//! use reaper_client::{Client, JobRequest};
//!
//! let client = Client::new("http://reaper.internal:8080", std::env::var("REAPER_TOKEN").unwrap_or_default())?;
//! let job: JobRequest = serde_json::from_value(serde_json::json!({
//!     "target": "sessions",
//!     "filter": {"all": [{"column": "user_id", "op": "eq", "value": 42}]},
//!     "requested_by": "accounts-service",
//!     "reason": "erasure request #4521",
//!     "idempotency_key": "erase-user-42",
//! })).expect("a valid request");
//! let submitted = client.enqueue(&job).await?;
//! let status = client.status(&submitted.id).await?;
//! println!("{} is {}", status.id, status.state);
//! # Ok(()) }
//! ```
//!
//! Dependencies stay light on purpose (reqwest, serde, and reaper's pure core for the wire
//! types): no database driver or ORM enters a producer's build. Plain HTTP; put TLS in front
//! (a mesh or a proxy) when the API leaves the host.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::Duration;

pub use reaper_core::controls::ThrottlePatch;
pub use reaper_core::holds::{Hold, HoldRequest};
pub use reaper_core::job::{Condition, Filter, JobRequest, Op};
pub use reaper_core::views::{
    Acted, ActionView, AuditView, Cancelled, FieldProblem, JobView, Progress, Submitted,
    TargetView, ThrottleValues,
};
use reaper_core::views::{ActionPage, AuditPage, Problem};

/// What went wrong, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The job was refused (invalid, or a body over the size limit); nothing was recorded or
    /// deleted. Fix the request.
    #[error("{message}")]
    Invalid {
        /// The whole message.
        message: String,
        /// Each problem with the field it concerns (`filter.all[0].value`).
        fields: Vec<FieldProblem>,
    },
    /// The token is missing or wrong.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// No such job.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the job's state (cancelling a finished job), or its
    /// idempotency key belongs to a job submitted with a different request.
    #[error("conflict: {0}")]
    Conflict(String),
    /// reaper or its database is unavailable, or the network failed: retry later (with the
    /// same idempotency key, so a retry cannot create a second job).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// reaper failed for a reason on its side that retrying will not change (a stored job it
    /// cannot read): report it, do not retry.
    #[error("server error: {0}")]
    Server(String),
    /// A response this client does not understand.
    #[error("unexpected response {status}: {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The base URL or token cannot be used.
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable(_))
    }
}

/// A reaper API client. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base_url` like `http://reaper.internal:8080`; `token` is the daemon's `api.token`.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Result<Self, ClientError> {
        let base = base_url.into().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "base URL `{base}` must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| ClientError::Config(error.to_string()))?;
        Ok(Self {
            base,
            token: token.into(),
            http,
        })
    }

    /// Submits a job. Set `idempotency_key` so that retrying after a timeout cannot create a
    /// second job; a repeated key returns the existing job with `created: false`.
    pub async fn enqueue(&self, job: &JobRequest) -> Result<Submitted, ClientError> {
        self.send(self.http.post(self.url("/v1/jobs")).json(job))
            .await
    }

    /// A job's state, counters, progress and result.
    pub async fn status(&self, id: &str) -> Result<JobView, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/jobs/{}", segment(id)))),
        )
        .await
    }

    /// Asks a job to stop at its next batch boundary.
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/jobs/{}/cancel", segment(id)))),
        )
        .await
    }

    /// Pauses a job: a pending one at once (`outcome` `paused`), a running one at its next
    /// batch boundary (`stopping`); it keeps its checkpoint until [`Client::resume`].
    pub async fn pause(&self, id: &str) -> Result<Acted, ClientError> {
        self.act(id, "pause").await
    }

    /// Hands a paused job back to the daemons (`outcome` `pending`).
    pub async fn resume(&self, id: &str) -> Result<Acted, ClientError> {
        self.act(id, "resume").await
    }

    /// Gives a dead job one more attempt from its checkpoint (`outcome` `pending`).
    pub async fn retry(&self, id: &str) -> Result<Acted, ClientError> {
        self.act(id, "retry").await
    }

    /// Undoes a finished archive or soft-delete job: submits its restore job (`outcome`
    /// `created`; `job` is the restore job, whose summary lists the keys it did not overwrite).
    /// A hard or unfinished job is refused ([`ClientError::Invalid`], the message says why).
    pub async fn restore(&self, id: &str) -> Result<Acted, ClientError> {
        self.act(id, "restore").await
    }

    /// Who acted on a job, and when, newest first.
    pub async fn actions(&self, id: &str) -> Result<Vec<ActionView>, ClientError> {
        let page: ActionPage = self
            .send(
                self.http
                    .get(self.url(&format!("/v1/jobs/{}/actions", segment(id)))),
            )
            .await?;
        Ok(page.actions)
    }

    async fn act(&self, id: &str, action: &str) -> Result<Acted, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/jobs/{}/{action}", segment(id)))),
        )
        .await
    }

    /// Every audit entry of a job, in batch order (fetched page by page).
    pub async fn audit(&self, id: &str) -> Result<Vec<AuditView>, ClientError> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page: AuditPage = self
                .send(self.http.get(self.url(&format!(
                    "/v1/jobs/{}/audit?after_batch={after}&limit=500",
                    segment(id)
                ))))
                .await?;
            entries.extend(page.entries);
            match page.next_after_batch {
                Some(next) => after = next,
                None => return Ok(entries),
            }
        }
    }

    /// Places a legal hold: rows no batch removes while it is active. It takes effect for every
    /// batch that begins after this returns.
    pub async fn place_hold(&self, hold: &HoldRequest) -> Result<Hold, ClientError> {
        self.send(self.http.post(self.url("/v1/holds")).json(hold))
            .await
    }

    /// The active legal holds (with `all`, every one ever placed), newest first.
    pub async fn holds(&self, all: bool) -> Result<Vec<Hold>, ClientError> {
        let page: reaper_core::views::HoldPage = self
            .send(self.http.get(self.url(&format!("/v1/holds?all={all}"))))
            .await?;
        Ok(page.holds)
    }

    /// Releases a legal hold; batches that begin after this returns may remove its rows.
    pub async fn release_hold(&self, id: &str) -> Result<Hold, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/holds/{}/release", segment(id)))),
        )
        .await
    }

    /// Every catalog target with its throttle (configured, override, in force) and whether an
    /// operator paused it.
    pub async fn targets(&self) -> Result<Vec<TargetView>, ClientError> {
        let page: reaper_core::views::TargetPage =
            self.send(self.http.get(self.url("/v1/targets"))).await?;
        Ok(page.targets)
    }

    /// One target, with its recorded changes (who, when, what), newest first.
    pub async fn target(&self, name: &str) -> Result<TargetView, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/targets/{}", segment(name)))),
        )
        .await
    }

    /// Pauses a target on every daemon (within a second), recorded as `by`.
    pub async fn pause_target(&self, name: &str, by: &str) -> Result<TargetView, ClientError> {
        self.control_target(name, "pause", by).await
    }

    /// Resumes a paused target, recorded as `by`.
    pub async fn resume_target(&self, name: &str, by: &str) -> Result<TargetView, ClientError> {
        self.control_target(name, "resume", by).await
    }

    /// Lowers (or with `null` fields clears) a target's throttle live; refused input changes
    /// nothing ([`ClientError::Invalid`]).
    pub async fn set_target_throttle(
        &self,
        name: &str,
        patch: &ThrottlePatch,
    ) -> Result<TargetView, ClientError> {
        self.send(
            self.http
                .patch(self.url(&format!("/v1/targets/{}/throttle", segment(name))))
                .json(patch),
        )
        .await
    }

    /// Clears a target's override: its configured throttle applies again.
    pub async fn clear_target_throttle(
        &self,
        name: &str,
        by: &str,
    ) -> Result<TargetView, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/targets/{}/throttle", segment(name))))
                .json(&serde_json::json!({ "requested_by": by })),
        )
        .await
    }

    async fn control_target(
        &self,
        name: &str,
        action: &str,
        by: &str,
    ) -> Result<TargetView, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/targets/{}/{action}", segment(name))))
                .json(&serde_json::json!({ "requested_by": by })),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|error| ClientError::Unavailable(error.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|error| ClientError::Unavailable(error.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|error| ClientError::Unexpected {
                status,
                body: format!("{error}: {body}"),
            });
        }
        Err(error_for(status, body))
    }
}

/// The error a non-2xx reply stands for, by the status's intent: only 429, 502, 503 and 504
/// (and network failures) are worth retrying; a 500 is reaper's own permanent failure.
fn error_for(status: u16, body: String) -> ClientError {
    let problem = serde_json::from_str::<Problem>(&body).ok();
    let message = problem
        .as_ref()
        .map(|problem| problem.error.clone())
        .unwrap_or_else(|| body.clone());
    match status {
        400 | 413 => ClientError::Invalid {
            message,
            fields: problem
                .and_then(|problem| problem.fields)
                .unwrap_or_default(),
        },
        401 => ClientError::Unauthorized(message),
        404 => ClientError::NotFound(message),
        409 => ClientError::Conflict(message),
        429 | 502..=504 => ClientError::Unavailable(message),
        500..=599 => ClientError::Server(message),
        _ => ClientError::Unexpected { status, body },
    }
}

/// RFC 3986's unreserved characters stay; every other byte is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A job id as one path segment (ids are uuids; anything else is escaped, never a new path).
fn segment(id: &str) -> String {
    utf8_percent_encode(id, ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(segment("01a2-b3"), "01a2-b3");
        assert_eq!(segment("../admin?x"), "..%2Fadmin%3Fx");
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(matches!(
            Client::new("reaper:8080", "t"),
            Err(ClientError::Config(_))
        ));
        assert!(Client::new("http://127.0.0.1:8080/", "t").is_ok());
    }

    #[test]
    fn only_what_may_pass_is_transient() {
        let invalid = r#"{"error":"invalid job: reason: is required","fields":[{"field":"reason","message":"is required"}]}"#;
        match error_for(400, invalid.into()) {
            ClientError::Invalid { fields, .. } => assert_eq!(fields[0].field, "reason"),
            other => panic!("{other:?}"),
        }
        for (status, transient) in [
            (400, false),
            (401, false),
            (404, false),
            (409, false),
            (413, false),
            (429, true),
            (500, false),
            (502, true),
            (503, true),
            (504, true),
        ] {
            let error = error_for(status, r#"{"error":"x"}"#.into());
            assert_eq!(error.is_transient(), transient, "{status}: {error:?}");
        }
    }
}
