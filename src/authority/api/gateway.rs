//! `/v1/`: what gateways call — activate, heartbeat, deactivate, send usage, and
//! offline activation files.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;

use super::{
    body_bytes, header, json_answer, parse_json, peer, signed_answer, ApiResult, AppState,
};
use crate::authority::clock;
use crate::authority::error::Refusal;
use crate::authority::key::{KeyError, LicenseKey};
use crate::authority::offline::{self, OfflineKind, OfflineResponse, RESPONSE_FORMAT};
use crate::authority::protocol::{
    verify_request, ActivationAnswer, ActivationRequest, DeactivationAnswer, DeactivationRequest,
    HeartbeatAnswer, HeartbeatRequest, InstanceActivation, InstanceAnswer, InstanceRequest,
    DATE_HEADER, SIGNATURE_HEADER,
};
use crate::authority::store::activations::{check_nonce, ActivationInput, Granted};
use crate::authority::token::mint;
use crate::license::instance_key::InstancePublicKey;
use crate::license::UnixTime;

type Shared = State<Arc<AppState>>;

/// A license key as typed: a wrong check character is named (`KEY_CHECK_FAILED`),
/// anything else not a key is `LICENSE_KEY_UNKNOWN` like a key no license has.
fn license_key(text: &str) -> Result<LicenseKey, Refusal> {
    LicenseKey::parse(text).map_err(|e| match e {
        KeyError::Check => Refusal::KeyCheckFailed,
        KeyError::Format => Refusal::KeyUnknown,
    })
}

/// Checks the per-address limit of the request's client.
fn count_address(state: &AppState, request: &Request) -> Result<(), Refusal> {
    match peer(request) {
        Some(addr) => state.attempts.from_address(addr.ip()),
        None => Ok(()),
    }
}

/// Activates with `key` after the per-key limit, recording the result.
async fn activate_with(
    state: &AppState,
    key: &LicenseKey,
    instance_id: &str,
    public_key: &str,
    hostname: &str,
    offline: bool,
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let result = async {
        state.attempts.on_key(key.hash())?;
        InstancePublicKey::from_pem(public_key)
            .map_err(|e| Refusal::BadRequest(format!("instance_public_key: {e}")))?;
        let actor = if offline {
            format!("offline:{instance_id}")
        } else {
            format!("instance:{instance_id}")
        };
        state
            .store
            .activate(
                ActivationInput {
                    key,
                    instance_id,
                    public_key,
                    hostname,
                    offline,
                },
                &actor,
                now,
            )
            .await
            .map_err(|e| super::ApiError::from(e).0)
    }
    .await;
    let label = match &result {
        Ok(granted) if granted.created => "created",
        Ok(_) => "existing",
        Err(refusal) => refusal.code(),
    };
    state.metrics.activations.with_label_values(&[label]).inc();
    result
}

/// `POST /v1/activations`.
pub(super) async fn activate(State(state): Shared, request: Request) -> ApiResult {
    count_address(&state, &request)?;
    let body = body_bytes(&state, request.into_body()).await?;
    let input: ActivationRequest = parse_json(&body)?;
    let refused = |r: Refusal| {
        state
            .metrics
            .activations
            .with_label_values(&[r.code()])
            .inc();
        r
    };
    let key = license_key(&input.license_key).map_err(refused)?;
    check_nonce(&input.nonce).map_err(refused)?;
    let now = clock::now();
    let granted = activate_with(
        &state,
        &key,
        &input.instance_id,
        &input.instance_public_key,
        &input.hostname,
        false,
        now,
    )
    .await?;
    let minted = mint(&granted, &state.signer, now).map_err(|_| Refusal::Unavailable)?;
    let status = if granted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    signed_answer(
        &state,
        status,
        &ActivationAnswer {
            activation_id: granted.activation.id,
            license_id: granted.license.id,
            instance_id: granted.activation.instance_id,
            token: minted.token,
            heartbeat_interval: granted.policy.heartbeat_interval,
            refresh_before: minted.refresh_before,
            token_expires_at: minted.expires_at,
            nonce: input.nonce,
            server_time: now,
        },
    )
}

/// The body of a request signed by the instance key of activation `id`, with the
/// activation, its license and policy as read before anything is written.
async fn signed_body(
    state: &AppState,
    id: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: UnixTime,
) -> Result<Granted, Refusal> {
    let context = state
        .store
        .activation_context(id, now)
        .await
        .map_err(|e| super::ApiError::from(e).0)?
        .ok_or(Refusal::ActivationGone)?;
    check_signature(&context.activation.public_key, parts, body, now)?;
    Ok(context)
}

/// Checks that the instance key `pem` (SPKI) signed the request of `parts` and `body`
/// within the allowed clock skew of `now`.
fn check_signature(
    pem: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: UnixTime,
) -> Result<(), Refusal> {
    let key = InstancePublicKey::from_pem(pem)
        .map_err(|e| Refusal::SignatureInvalid(format!("the registered key: {e}")))?;
    verify_request(
        &key,
        parts.method.as_str(),
        parts.uri.path(),
        header(&parts.headers, DATE_HEADER),
        header(&parts.headers, SIGNATURE_HEADER),
        body,
        now,
    )
    .map_err(Refusal::SignatureInvalid)
}

/// A signed request's body and parts (read whole, within the size limit).
async fn read_signed(
    state: &AppState,
    request: Request,
) -> Result<(axum::http::request::Parts, Bytes), Refusal> {
    let (parts, body) = request.into_parts();
    let body = body_bytes(state, body).await?;
    Ok((parts, body))
}

/// `result`, with `ACTIVATION_GONE` signed by the vendor key and carrying the
/// request's nonce (taken from `body`): the installation removes its license on
/// that answer only, never on an unsigned one.
fn sign_gone(
    state: &AppState,
    id: &str,
    result: ApiResult,
    body: &[u8],
    now: UnixTime,
) -> ApiResult {
    match result {
        Err(super::ApiError(Refusal::ActivationGone)) => {
            #[derive(serde::Deserialize)]
            struct Nonce {
                nonce: String,
            }
            match serde_json::from_slice::<Nonce>(body) {
                Ok(n) if check_nonce(&n.nonce).is_ok() => {
                    super::signed_refusal(state, Refusal::ActivationGone, id, &n.nonce, now)
                }
                _ => Err(super::ApiError(Refusal::ActivationGone)),
            }
        }
        other => other,
    }
}

/// `POST /v1/activations/{id}/heartbeat` (signed by the instance key).
pub(super) async fn heartbeat(
    State(state): Shared,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult {
    let now = clock::now();
    let (parts, body) = read_signed(&state, request).await?;
    let result = beat(&state, &id, &parts, &body, now).await;
    let result = sign_gone(&state, &id, result, &body, now);
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.0.code(),
    };
    state.metrics.heartbeats.with_label_values(&[label]).inc();
    result
}

async fn beat(
    state: &AppState,
    id: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: UnixTime,
) -> ApiResult {
    let context = signed_body(state, id, parts, body, now).await?;
    let input: HeartbeatRequest<'_> = parse_json(body)?;
    check_nonce(&input.nonce)?;
    let received = match input.usage_report {
        Some(report) => Some(receive(state, report.get().as_bytes(), now).await?),
        None => None,
    };
    let granted = state.store.heartbeat(context, &input.nonce, now).await?;
    let status = granted.license.status;
    let (token, expires, refresh) = if status == crate::authority::model::LicenseStatus::Active {
        let minted = mint(&granted, &state.signer, now).map_err(|_| Refusal::Unavailable)?;
        (
            Some(minted.token),
            Some(minted.expires_at),
            Some(minted.refresh_before),
        )
    } else {
        (None, None, None)
    };
    let revoked = if granted.tenant_has_revoked {
        state
            .store
            .revoked_license_ids(&granted.license.tenant)
            .await?
    } else {
        Vec::new()
    };
    signed_answer(
        state,
        StatusCode::OK,
        &HeartbeatAnswer {
            activation_id: granted.activation.id,
            status: status.as_str().to_string(),
            token,
            token_expires_at: expires,
            refresh_before: refresh,
            revoked_license_ids: revoked,
            next_heartbeat: granted.policy.heartbeat_interval,
            usage_report: received,
            nonce: input.nonce,
            server_time: now,
        },
    )
}

/// `POST /v1/instances/{instance_id}/activations` (signed by the instance key of
/// the instance's newest activation): the instance's active activations with fresh
/// tokens, for a replica that starts without the installation's store.
pub(super) async fn instance(
    State(state): Shared,
    Path(instance_id): Path<String>,
    request: Request,
) -> ApiResult {
    let now = clock::now();
    let (parts, body) = read_signed(&state, request).await?;
    let input: InstanceRequest = parse_json(&body)?;
    check_nonce(&input.nonce)?;
    let Some(pem) = state.store.instance_public_key(&instance_id).await? else {
        return Err(Refusal::NotFound {
            what: "instance",
            id: instance_id,
        }
        .into());
    };
    check_signature(&pem, &parts, &body, now)?;
    let granted = state
        .store
        .instance_activations(&instance_id, &input.nonce, now)
        .await?;
    let mut activations = Vec::new();
    for g in granted.iter().filter(|g| g.activation.public_key == pem) {
        let status = g.license.status;
        let minted = if status == crate::authority::model::LicenseStatus::Active {
            Some(mint(g, &state.signer, now).map_err(|_| Refusal::Unavailable)?)
        } else {
            None
        };
        activations.push(InstanceActivation {
            activation_id: g.activation.id.clone(),
            license_id: g.license.id.clone(),
            tenant: g.license.tenant.clone(),
            status: status.as_str().to_string(),
            token_expires_at: minted.as_ref().map(|m| m.expires_at),
            token: minted.map(|m| m.token),
            heartbeat_interval: g.policy.heartbeat_interval,
        });
    }
    signed_answer(
        &state,
        StatusCode::OK,
        &InstanceAnswer {
            instance_id,
            activations,
            nonce: input.nonce,
            server_time: now,
        },
    )
}

/// `DELETE /v1/activations/{id}` (signed by the instance key).
pub(super) async fn deactivate(
    State(state): Shared,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult {
    let now = clock::now();
    let (parts, body) = read_signed(&state, request).await?;
    let result = release(&state, &id, &parts, &body, now).await;
    sign_gone(&state, &id, result, &body, now)
}

async fn release(
    state: &AppState,
    id: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
    now: UnixTime,
) -> ApiResult {
    signed_body(state, id, parts, body, now).await?;
    let input: DeactivationRequest = parse_json(body)?;
    check_nonce(&input.nonce)?;
    let activation = state
        .store
        .deactivate(id, Some(&input.nonce), "instance", now)
        .await?;
    signed_answer(
        state,
        StatusCode::OK,
        &DeactivationAnswer {
            activation_id: activation.id,
            status: activation.status.as_str().to_string(),
            nonce: input.nonce,
            server_time: now,
        },
    )
}

/// Stores a usage report, counting the result.
async fn receive(
    state: &AppState,
    file: &[u8],
    now: UnixTime,
) -> Result<crate::authority::store::usage::Received, Refusal> {
    let result = state
        .store
        .receive_usage(file, now)
        .await
        .map_err(|e| super::ApiError::from(e).0);
    let label = match &result {
        Ok(r) if r.stored => "stored",
        Ok(_) => "duplicate",
        Err(refusal) => refusal.code(),
    };
    state
        .metrics
        .usage_reports
        .with_label_values(&[label])
        .inc();
    result
}

/// `POST /v1/usage`: a usage report file, verbatim. Stored once; sending it again
/// answers the same with `stored: false`.
pub(super) async fn usage(State(state): Shared, request: Request) -> ApiResult {
    let body = body_bytes(&state, request.into_body()).await?;
    let received = receive(&state, &body, clock::now()).await?;
    let status = if received.stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_answer(status, &received))
}

/// `POST /v1/offline/activations`: an offline request file in, a signed response
/// file out (activation: with the token; deactivation: a receipt).
pub(super) async fn offline(State(state): Shared, request: Request) -> ApiResult {
    count_address(&state, &request)?;
    let body = body_bytes(&state, request.into_body()).await?;
    let response = answer_offline(&state, &body, clock::now()).await?;
    let file =
        offline::write_response(&response, &state.signer).map_err(|_| Refusal::Unavailable)?;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(axum::body::Body::from(file))
        .expect("a valid response"))
}

/// The response to the offline request `file`, checked like its online counterpart.
pub(crate) async fn answer_offline(
    state: &AppState,
    file: &[u8],
    now: UnixTime,
) -> Result<OfflineResponse, Refusal> {
    let request = offline::read_request(file, now).map_err(|e| match e {
        offline::OfflineError::BadSignature => Refusal::SignatureInvalid(e.to_string()),
        other => Refusal::BadRequest(other.to_string()),
    })?;
    check_nonce(&request.nonce)?;
    match request.kind {
        OfflineKind::Activate => {
            let key = license_key(request.license_key.as_deref().unwrap_or_default())?;
            let granted = activate_with(
                state,
                &key,
                &request.instance_id,
                &request.instance_public_key,
                &request.hostname,
                true,
                now,
            )
            .await?;
            let minted = mint(&granted, &state.signer, now).map_err(|_| Refusal::Unavailable)?;
            Ok(OfflineResponse {
                format: RESPONSE_FORMAT.into(),
                kind: OfflineKind::Activate,
                activation_id: granted.activation.id,
                license_id: granted.license.id,
                instance_id: request.instance_id,
                token: Some(minted.token),
                token_expires_at: Some(minted.expires_at),
                heartbeat_interval: granted.policy.heartbeat_interval,
                nonce: request.nonce,
                server_time: now,
            })
        }
        OfflineKind::Deactivate => {
            let id = request.activation_id.unwrap_or_default();
            let activation = state
                .store
                .activation(&id)
                .await
                .map_err(|e| super::ApiError::from(e).0)?;
            let registered = InstancePublicKey::from_pem(&activation.public_key).ok();
            let presented = InstancePublicKey::from_pem(&request.instance_public_key).ok();
            if registered.is_none() || registered != presented {
                return Err(Refusal::SignatureInvalid(
                    "not signed by the instance key of this activation".into(),
                ));
            }
            let actor = format!("offline:{}", request.instance_id);
            let ended = state
                .store
                .deactivate(&id, Some(&request.nonce), &actor, now)
                .await
                .map_err(|e| super::ApiError::from(e).0)?;
            Ok(OfflineResponse {
                format: RESPONSE_FORMAT.into(),
                kind: OfflineKind::Deactivate,
                activation_id: ended.id,
                license_id: ended.license_id,
                instance_id: ended.instance_id,
                token: None,
                token_expires_at: None,
                heartbeat_interval: 0,
                nonce: request.nonce,
                server_time: now,
            })
        }
    }
}
