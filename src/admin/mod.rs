//! The admin listener: a separate address for operators (`/healthz`, `/readyz`).
//!
//! Routing is a plain match on method and path in [`AdminApp::route`], so later
//! endpoints (metrics, the admin API) plug in as new arms.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::lifecycle::Readiness;
use crate::response::LocalResponse;

/// The admin HTTP application.
pub struct AdminApp {
    readiness: Arc<Readiness>,
}

impl AdminApp {
    pub fn new(readiness: Arc<Readiness>) -> AdminApp {
        AdminApp { readiness }
    }

    /// Answers one admin request given its method and path (query ignored).
    pub fn route(&self, method: &Method, path: &str) -> LocalResponse {
        let readable = method == Method::GET || method == Method::HEAD;
        match path {
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
            "/healthz" | "/readyz" => LocalResponse::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method Not Allowed",
                "Use GET or HEAD.",
                serde_json::json!({}),
            )
            .with_header("Allow", "GET, HEAD"),
            _ => LocalResponse::problem(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Not Found",
                "No such admin endpoint.",
                serde_json::json!({}),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let req = session.req_header();
        let response = self.route(&req.method, req.uri.path());
        let head_only = req.method == Method::HEAD;
        response.into_http(head_only)
    }
}
