//! The authority's HTTP API (axum): the gateway-facing `/v1/`, the vendor's
//! `/admin/v1/` behind a bearer token, and `/healthz`, `/readyz`, `/metrics`.
//!
//! Every error is the gateway's problem+json shape with a stable `error_code`
//! ([`Refusal`]); answers that change what a gateway enforces are signed
//! ([`super::protocol`]).

mod admin;
mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;

use super::attempts::Attempts;
use super::error::{AuthorityError, Refusal};
use super::metrics::AuthorityMetrics;
use super::protocol::{Signer, SIGNATURE_HEADER};
use super::store::Store;
use crate::config::AdminToken;
use crate::response::LocalResponse;

/// What every handler shares.
pub struct AppState {
    pub store: Store,
    pub signer: Signer,
    pub admin_token: AdminToken,
    pub attempts: Attempts,
    pub metrics: AuthorityMetrics,
    pub max_body_bytes: usize,
}

type Shared = State<Arc<AppState>>;

/// The router of every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/activations", post(gateway::activate))
        .route("/v1/activations/{id}/heartbeat", post(gateway::heartbeat))
        .route(
            "/v1/activations/{id}",
            axum::routing::delete(gateway::deactivate),
        )
        .route("/v1/usage", post(gateway::usage))
        .route(
            "/v1/instances/{instance_id}/activations",
            post(gateway::instance),
        )
        .route("/v1/offline/activations", post(gateway::offline))
        .nest("/admin/v1", admin::router(state.clone()))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A refusal as a problem+json response.
pub(crate) struct ApiError(pub Refusal);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError(r)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> ApiError {
        if let AuthorityError::Database(db) = &e {
            tracing::error!(target: "licgate::authority", error = %db, "database error");
        }
        ApiError(e.refusal())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::from(AuthorityError::Database(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let refusal = self.0;
        let mut response = LocalResponse::problem(
            refusal.status(),
            refusal.code(),
            refusal.status().canonical_reason().unwrap_or(""),
            &refusal.to_string(),
            refusal.details(),
        );
        if let Refusal::RateLimited { retry_after } = refusal {
            response = response.with_header("retry-after", retry_after.to_string());
        }
        if refusal == Refusal::Unauthorized {
            response = response.with_header("www-authenticate", "Bearer".to_string());
        }
        let mut http = response.into_http(false).map(Body::from);
        http.extensions_mut().insert(RefusedWith(refusal.code()));
        http
    }
}

/// Marks a response as a refusal with this code (read by the metrics layer).
#[derive(Clone, Copy)]
pub(crate) struct RefusedWith(pub &'static str);

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Reads the whole body, refusing more than the configured limit.
pub(crate) async fn body_bytes(state: &AppState, body: Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| Refusal::TooLarge(state.max_body_bytes))
}

/// Parses `bytes` as JSON `T`, the parser's message in a `BAD_REQUEST`.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes)
        .map_err(|e| Refusal::BadRequest(format!("invalid JSON body: {e}")))
}

/// A JSON answer.
pub(crate) fn json_answer(status: StatusCode, value: &impl Serialize) -> Response {
    LocalResponse::json(status, value)
        .into_http(false)
        .map(Body::from)
}

/// A JSON answer signed by the vendor key (`Licgate-Signature` over the body).
pub(crate) fn signed_answer(
    state: &AppState,
    status: StatusCode,
    value: &impl Serialize,
) -> ApiResult {
    let body = serde_json::to_vec(value).expect("answers serialize");
    let signature = state.signer.sign_answer(&body).map_err(|e| {
        tracing::error!(target: "licgate::authority", error = %e, "cannot sign an answer");
        Refusal::Unavailable
    })?;
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from(body))
        .expect("a valid response"))
}

/// `refusal` as a problem+json answer signed like [`signed_answer`], its details
/// carrying the activation, the request's `nonce` and the server time (the installation acts on a
/// refusal that takes something away only when it is signed and fresh).
pub(crate) fn signed_refusal(
    state: &AppState,
    refusal: Refusal,
    activation_id: &str,
    nonce: &str,
    now: crate::license::UnixTime,
) -> ApiResult {
    let mut details = refusal.details();
    if let Some(map) = details.as_object_mut() {
        map.insert("activation_id".into(), activation_id.into());
        map.insert("nonce".into(), nonce.into());
        map.insert("server_time".into(), now.into());
    }
    let problem = LocalResponse::problem(
        refusal.status(),
        refusal.code(),
        refusal.status().canonical_reason().unwrap_or(""),
        &refusal.to_string(),
        details,
    );
    let signature = state.signer.sign_answer(&problem.body).map_err(|e| {
        tracing::error!(target: "licgate::authority", error = %e, "cannot sign an answer");
        Refusal::Unavailable
    })?;
    let mut response = Response::builder()
        .status(refusal.status())
        .header("content-type", problem.content_type)
        .header("cache-control", "no-store")
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from(problem.body))
        .expect("a valid response");
    response
        .extensions_mut()
        .insert(RefusedWith(refusal.code()));
    Ok(response)
}

/// The client's address (from the connection).
pub(crate) fn peer(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// A header's value as text.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Times every request under its route (`request_duration_seconds{endpoint}`) and
/// counts its refusal, if any, by code (`refusals_total{code}`).
async fn observe(
    State(state): Shared,
    matched: Option<axum::extract::MatchedPath>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let endpoint = matched
        .as_ref()
        .map_or("unmatched", axum::extract::MatchedPath::as_str);
    state
        .metrics
        .request_duration
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    if let Some(RefusedWith(code)) = response.extensions().get::<RefusedWith>() {
        state.metrics.refusals.with_label_values(&[code]).inc();
    }
    response
}

async fn healthz() -> Response {
    json_answer(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): Shared) -> Response {
    match state.store.db().ping().await {
        Ok(took) => {
            state.metrics.database_ping.observe(took.as_secs_f64());
            state.metrics.database_up.set(1);
            json_answer(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "database": state.store.db().dialect().name()}),
            )
        }
        Err(e) => {
            state.metrics.database_up.set(0);
            tracing::warn!(target: "licgate::authority", error = %e, "not ready");
            ApiError(Refusal::Unavailable).into_response()
        }
    }
}

async fn metrics(State(state): Shared) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Body::from(state.metrics.encode()))
        .expect("a valid response")
}

async fn method_not_allowed() -> Response {
    let mut response = LocalResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint does not take this method",
    )
    .into_http(false)
    .map(Body::from);
    response
        .extensions_mut()
        .insert(RefusedWith("METHOD_NOT_ALLOWED"));
    response
}

async fn not_found() -> Response {
    ApiError(Refusal::NotFound {
        what: "endpoint",
        id: "this".into(),
    })
    .into_response()
}
