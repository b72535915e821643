//! `/admin/v1/`: the vendor's API (what `licgate authority …` calls), behind
//! `Authorization: Bearer <admin token>`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{body_bytes, header, json_answer, parse_json, ApiError, ApiResult, AppState};
use crate::authority::clock;
use crate::authority::error::Refusal;
use crate::authority::model::{LicenseSpec, LicenseStatus, PolicySpec};
use crate::authority::store::licenses::LicenseFilter;
use crate::authority::store::usage::UsageQuery;

type Shared = State<Arc<AppState>>;

/// Who the audit names for admin changes.
const ACTOR: &str = "admin";

pub(super) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/policies", get(list_policies).post(create_policy))
        .route("/policies/{name}", get(show_policy).patch(update_policy))
        .route("/licenses", get(list_licenses).post(create_license))
        .route("/licenses/{id}", get(show_license))
        .route("/licenses/{id}/{action}", post(license_action))
        .route("/activations", get(list_activations))
        .route("/activations/{id}", get(show_activation).delete(deactivate))
        .route("/offline", post(offline))
        .route("/usage", get(usage))
        .route("/events", get(events))
        .layer(middleware::from_fn_with_state(state, bearer))
}

/// Refuses a request without the admin bearer token.
async fn bearer(State(state): Shared, request: Request, next: Next) -> Response {
    let presented = header(request.headers(), "authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(token) if state.admin_token.matches(token.as_bytes()) => next.run(request).await,
        _ => ApiError(Refusal::Unauthorized).into_response(),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, Refusal> {
    let bytes = body_bytes(state, body).await?;
    parse_json(&bytes)
}

async fn list_policies(State(state): Shared) -> ApiResult {
    let policies = state.store.policies().await?;
    Ok(json_answer(
        StatusCode::OK,
        &serde_json::json!({"policies": policies}),
    ))
}

async fn create_policy(State(state): Shared, request: Request) -> ApiResult {
    let spec: PolicySpec = json_body(&state, request.into_body()).await?;
    let policy = state.store.create_policy(spec, ACTOR, clock::now()).await?;
    Ok(json_answer(StatusCode::CREATED, &policy))
}

async fn show_policy(State(state): Shared, Path(name): Path<String>) -> ApiResult {
    Ok(json_answer(
        StatusCode::OK,
        &state.store.policy(&name).await?,
    ))
}

async fn update_policy(
    State(state): Shared,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult {
    let spec: PolicySpec = json_body(&state, request.into_body()).await?;
    let policy = state
        .store
        .update_policy(&name, spec, ACTOR, clock::now())
        .await?;
    Ok(json_answer(StatusCode::OK, &policy))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    policy: Option<String>,
    license: Option<String>,
    limit: Option<u32>,
}

fn list_query(
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ListQuery, Refusal> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Refusal::BadRequest(format!("query: {}", e.body_text())))
}

async fn list_licenses(
    State(state): Shared,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let filter = LicenseFilter {
        tenant: query.tenant,
        policy: query.policy,
    };
    let licenses = state
        .store
        .licenses(
            &filter,
            query.limit.unwrap_or(1000).min(10_000),
            clock::now(),
        )
        .await?;
    Ok(json_answer(
        StatusCode::OK,
        &serde_json::json!({"licenses": licenses}),
    ))
}

async fn create_license(State(state): Shared, request: Request) -> ApiResult {
    let spec: LicenseSpec = json_body(&state, request.into_body()).await?;
    let issued = state
        .store
        .create_license(spec, ACTOR, clock::now())
        .await?;
    Ok(json_answer(StatusCode::CREATED, &issued))
}

async fn show_license(State(state): Shared, Path(id): Path<String>) -> ApiResult {
    let license = state.store.license(&id, clock::now()).await?;
    let activations = state.store.activations(Some(&id), 1000).await?;
    let mut value = serde_json::to_value(&license).unwrap_or_default();
    value["activations"] = serde_json::to_value(activations).unwrap_or_default();
    Ok(json_answer(StatusCode::OK, &value))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    days: u32,
}

/// `POST /admin/v1/licenses/{id}/{suspend|reinstate|revoke|renew|rotate-key}`.
async fn license_action(
    State(state): Shared,
    Path((id, action)): Path<(String, String)>,
    request: Request,
) -> ApiResult {
    let now = clock::now();
    let status = match action.as_str() {
        "suspend" => LicenseStatus::Suspended,
        "reinstate" => LicenseStatus::Active,
        "revoke" => LicenseStatus::Revoked,
        "renew" => {
            let body: RenewBody = json_body(&state, request.into_body()).await?;
            let license = state
                .store
                .renew_license(&id, body.days, ACTOR, now)
                .await?;
            return Ok(json_answer(StatusCode::OK, &license));
        }
        "rotate-key" => {
            let issued = state.store.rotate_license_key(&id, ACTOR, now).await?;
            return Ok(json_answer(StatusCode::OK, &issued));
        }
        _ => {
            return Err(Refusal::NotFound {
                what: "action",
                id: action,
            }
            .into())
        }
    };
    let license = state
        .store
        .set_license_status(&id, status, ACTOR, now)
        .await?;
    Ok(json_answer(StatusCode::OK, &license))
}

async fn list_activations(
    State(state): Shared,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let activations = state
        .store
        .activations(
            query.license.as_deref(),
            query.limit.unwrap_or(1000).min(10_000),
        )
        .await?;
    Ok(json_answer(
        StatusCode::OK,
        &serde_json::json!({"activations": activations}),
    ))
}

async fn show_activation(State(state): Shared, Path(id): Path<String>) -> ApiResult {
    Ok(json_answer(
        StatusCode::OK,
        &state.store.activation(&id).await?,
    ))
}

async fn deactivate(State(state): Shared, Path(id): Path<String>) -> ApiResult {
    let activation = state
        .store
        .deactivate(&id, None, ACTOR, clock::now())
        .await?;
    Ok(json_answer(StatusCode::OK, &activation))
}

/// `POST /admin/v1/offline`: what `licgate authority offline activate` sends.
async fn offline(State(state): Shared, request: Request) -> ApiResult {
    let body = body_bytes(&state, request.into_body()).await?;
    let response = super::gateway::answer_offline(&state, &body, clock::now()).await?;
    let file = crate::authority::offline::write_response(&response, &state.signer)
        .map_err(|_| Refusal::Unavailable)?;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::from(file))
        .expect("a valid response"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    license: Option<String>,
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn usage(
    State(state): Shared,
    query: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(params) =
        query.map_err(|e| Refusal::BadRequest(format!("query: {}", e.body_text())))?;
    for date in [&params.from, &params.to].into_iter().flatten() {
        if crate::calendar::parse_date(date).is_none() {
            return Err(Refusal::BadRequest(format!("`{date}` is not a date YYYY-MM-DD")).into());
        }
    }
    if params.license.is_none() && params.tenant.is_none() {
        return Err(Refusal::BadRequest("give license= or tenant=".into()).into());
    }
    let query = UsageQuery {
        license_id: params.license,
        tenant: params.tenant,
        from: params.from,
        to: params.to,
    };
    let rows = state.store.usage(&query).await?;
    let seats = state.store.seat_usage(&query).await?;
    Ok(json_answer(
        StatusCode::OK,
        &serde_json::json!({"rows": rows, "seats": seats}),
    ))
}

async fn events(
    State(state): Shared,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let query = list_query(query)?;
    let events = state
        .store
        .events(
            query.license.as_deref(),
            query.limit.unwrap_or(1000).min(10_000),
        )
        .await?;
    Ok(json_answer(
        StatusCode::OK,
        &serde_json::json!({"events": events}),
    ))
}
