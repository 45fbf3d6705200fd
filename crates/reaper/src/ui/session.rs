//! Dashboard sessions: the sign-in form exchanges a token for a random session id in an
//! `HttpOnly`, `SameSite=Strict` cookie that expires; each session carries its own
//! cross-site-request-forgery token, which every state-changing form must send back.
//!
//! The API token signs in an operator (may act); the read-only token (`api.read_token`) signs in
//! a viewer (may look). Sessions live in this process's memory: a restarted daemon forgets them
//! and people sign in again. No token is ever stored in a session or shown on a page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use rand::Rng;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "reaper_session";

/// How long a session lasts after sign-in.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// At most this many live sessions; signing in past it drops the oldest.
const MAX_SESSIONS: usize = 10_000;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Signed in with the API token: may look and act.
    Operator,
    /// Signed in with the read-only token: may look only.
    Viewer,
}

/// One signed-in person.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) role: Role,
    /// The name given at sign-in, recorded with each action.
    pub(crate) actor: String,
    /// The anti-forgery token the session's forms carry.
    pub(crate) csrf: String,
    expires: Instant,
}

/// The live sessions, by id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Sessions {
    /// Starts a session; its id (the cookie's value).
    pub(crate) fn start(&self, role: Role, actor: String) -> String {
        let id = random_token();
        let session = Session {
            role,
            actor,
            csrf: random_token(),
            expires: Instant::now() + LIFETIME,
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session);
        id
    }

    /// The live session the request's cookie names, if any.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match live.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the request's session.
    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut live = self
                .live
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            live.remove(id);
        }
    }
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value of a new session: only this site's `/ui` requests carry it, never a
/// cross-site one, no script can read it, and it ends with the session.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether the request may change something for `session`: the form's anti-forgery token is the
/// session's, and the browser does not say the request comes from another origin (`Origin`,
/// and `Sec-Fetch-Site`, which browsers set and pages cannot). Either alone refuses a forged
/// request; both together also cover a browser that sends one of the headers only.
pub(crate) fn may_change(session: &Session, headers: &HeaderMap, form_token: &str) -> bool {
    let token_matches = bool::from(form_token.as_bytes().ct_eq(session.csrf.as_bytes()));
    token_matches && same_origin(headers)
}

/// False when the browser says the request comes from another origin.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let header_text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = header_text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (header_text("origin"), header_text("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let sessions = Sessions::default();
        let id = sessions.start(Role::Viewer, "ann".into());
        let request = headers(&[("cookie", &format!("other=1; {COOKIE}={id}"))]);
        let session = sessions.of(&request).unwrap();
        assert_eq!(
            (session.role, session.actor.as_str()),
            (Role::Viewer, "ann")
        );
        assert_ne!(session.csrf, id);
        assert!(
            sessions
                .of(&headers(&[("cookie", "reaper_session=forged")]))
                .is_none()
        );
        sessions.end(&request);
        assert!(sessions.of(&request).is_none());
        assert!(set_cookie(&id).contains("HttpOnly; SameSite=Strict; Max-Age=28800"));
    }

    #[test]
    fn a_change_needs_the_session_token_and_no_foreign_origin() {
        let sessions = Sessions::default();
        let id = sessions.start(Role::Operator, "ann".into());
        let session = sessions
            .of(&headers(&[("cookie", &format!("{COOKIE}={id}"))]))
            .unwrap();
        let same = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(may_change(&session, &same, &session.csrf));
        assert!(!may_change(&session, &same, "guess"));
        assert!(!may_change(&session, &same, ""));
        let other_port = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9999"),
        ]);
        assert!(!may_change(&session, &other_port, &session.csrf));
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(!may_change(&session, &cross, &session.csrf));
        assert!(may_change(
            &session,
            &headers(&[("host", "h:1")]),
            &session.csrf
        ));
    }
}
