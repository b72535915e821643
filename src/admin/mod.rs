//! The admin listener: a separate address for operators. `/healthz`, `/readyz` and
//! `/metrics` are open; the `/admin/v1/` API needs `Authorization: Bearer <token>`
//! (the token of `admin.token_file`) and answers 404 when no token is configured;
//! the usage page (`/admin/`, [`page`]) takes the same token, or a session cookie
//! from its sign-in form.

mod api;
mod charts;
pub(crate) mod page;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::app::App;
use crate::config::AdminToken;
use crate::lifecycle::Readiness;
use crate::reload::Reloader;
use crate::response::LocalResponse;
use crate::throttle::LogThrottle;

/// Media type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin HTTP application.
pub(crate) struct AdminApp {
    readiness: Arc<Readiness>,
    app: Arc<App>,
    reloader: Arc<Reloader>,
    token: Arc<ArcSwapOption<AdminToken>>,
    /// Refused credentials are logged at most once every 10 s.
    auth_failure_log: LogThrottle,
}

impl AdminApp {
    pub(crate) fn new(
        readiness: Arc<Readiness>,
        app: Arc<App>,
        reloader: Arc<Reloader>,
    ) -> AdminApp {
        AdminApp {
            readiness,
            token: reloader.admin_token(),
            app,
            reloader,
            auth_failure_log: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    /// Answers the open endpoints (`None` for any other path).
    fn open_route(&self, method: &Method, path: &str) -> Option<LocalResponse> {
        let readable = method == Method::GET || method == Method::HEAD;
        let response = match path {
            "/healthz" if readable => {
                LocalResponse::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            "/readyz" if readable => {
                let report = self.readiness.report();
                let (status, word) = if report.ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
                };
                LocalResponse::json(
                    status,
                    &serde_json::json!({"status": word, "checks": report}),
                )
            }
            "/metrics" if readable => LocalResponse {
                status: StatusCode::OK,
                content_type: PROMETHEUS_TEXT,
                headers: Vec::new(),
                body: self.app.metrics.encode().into(),
            },
            "/healthz" | "/readyz" | "/metrics" => method_not_allowed("GET, HEAD"),
            _ => return None,
        };
        Some(response)
    }

    /// Checks the credentials of an `/admin/` request: the bearer token, or for
    /// reading, the usage page's session cookie. `Err` holds the answer when the
    /// request may not proceed (404 without a configured token, 401 otherwise).
    fn authorize(&self, session: &ServerSession) -> Result<(), LocalResponse> {
        let Some(token) = self.token.load_full() else {
            return Err(not_found());
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        let method = &session.req_header().method;
        if presented.is_none()
            && (*method == Method::GET || *method == Method::HEAD)
            && page::signed_in(session, &token)
        {
            return Ok(());
        }
        let (ok, challenge) = match presented {
            None => (false, "Bearer realm=\"licgate-admin\""),
            Some(p) => (
                token.matches(p),
                "Bearer realm=\"licgate-admin\", error=\"invalid_token\"",
            ),
        };
        if ok {
            return Ok(());
        }
        if presented.is_some() {
            if let Some(left_out) = self.auth_failure_log.permit() {
                tracing::warn!(
                    client = ?session.client_addr(),
                    similar_not_logged = left_out,
                    "admin API: wrong bearer token"
                );
            }
        }
        Err(LocalResponse::problem(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Unauthorized",
            if presented.is_some() {
                "The bearer token is not valid."
            } else {
                "Send the admin token: Authorization: Bearer <token>."
            },
            serde_json::json!({}),
        )
        .with_header("WWW-Authenticate", challenge))
    }

    /// Answers one admin request.
    async fn respond(&self, session: &mut ServerSession) -> LocalResponse {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if let Some(response) = self.open_route(&method, &path) {
            return response;
        }
        if path != "/admin" && !path.starts_with("/admin/") {
            return not_found();
        }
        if let Some(route) = page::route(&path) {
            let Some(token) = self.token.load_full() else {
                return not_found();
            };
            let bearer_ok = session
                .req_header()
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| bearer(v.as_bytes()))
                .is_some_and(|p| token.matches(p));
            return page::handle(self, session, &method, route, &token, bearer_ok).await;
        }
        if let Err(refusal) = self.authorize(session) {
            return refusal;
        }
        api::handle(self, session, &method, &path).await
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn not_found() -> LocalResponse {
    LocalResponse::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "No such admin endpoint.",
    )
}

fn method_not_allowed(allow: &'static str) -> LocalResponse {
    LocalResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("Use {allow}."),
    )
    .with_header("Allow", allow)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let response = self.respond(session).await;
        let head_only = session.req_header().method == Method::HEAD;
        response.into_http(head_only)
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_tokens_are_extracted_case_insensitively() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
