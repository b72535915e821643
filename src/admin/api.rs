//! `/admin/v1/`: tenants and their licenses, revocations, reload. JSON in and out;
//! errors are problem+json with a stable `error_code`. Reached only with the admin
//! token (checked by the caller).

use std::sync::Arc;

use http::{Method, StatusCode};
use pingora::protocols::http::ServerSession;

use super::{method_not_allowed, not_found, AdminApp};
use crate::app::App;
use crate::database::{Database, DatabaseError};
use crate::license::manager::InstallError;
use crate::license::TenantSummary;
use crate::license::{time_text, LicenseManager};
use crate::link::DeactivateError;
use crate::policy::outcome::Outcome;
use crate::policy::tenant::is_tenant_name;
use crate::proxy::activation::{activate_key, is_license_key, status_json, MAX_ACTIVATION_BODY};
use crate::reload::Trigger;
use crate::request_body::{media_type, read_body, BodyError};
use crate::request_parts::query_param;
use crate::response::LocalResponse;
use crate::seats::book::{SeatInfo, SeatTimes};
use crate::seats::SeatId;
use crate::tenants::{TenantEntry, Tenants};
use crate::usage::advice::{advise, UNUSED_DAYS};
use crate::usage::series::{tenant_series, DayRange, SeriesError};
use crate::usage::Granularity;

/// Largest body of a revocation request.
const MAX_SMALL_BODY: usize = 4 * 1024;
/// Longest license id accepted for revocation.
const MAX_JTI_LEN: usize = 256;

fn problem(status: StatusCode, code: &str, detail: &str) -> LocalResponse {
    LocalResponse::error(status, code, detail)
}

/// 500 `STORE_ERROR`: the license store could not be read or written.
fn store_error(e: impl std::fmt::Display) -> LocalResponse {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "STORE_ERROR",
        &e.to_string(),
    )
}

/// 500 `INTERNAL_ERROR`: a blocking task panicked while doing `what`.
fn unexpected(what: &str) -> LocalResponse {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        &format!("The {what} failed unexpectedly."),
    )
}

fn body_problem(e: BodyError, limit: usize) -> LocalResponse {
    match e {
        BodyError::TooLarge => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("The request body is larger than {limit} bytes."),
        ),
        BodyError::Read => problem(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "The request body could not be read.",
        ),
    }
}

/// Routes one authorized `/admin/` request.
pub(super) async fn handle(
    app: &AdminApp,
    session: &mut ServerSession,
    method: &Method,
    path: &str,
) -> LocalResponse {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let readable = *method == Method::GET || *method == Method::HEAD;
    match segments.as_slice() {
        ["admin", "v1", "reload"] if *method == Method::POST => reload(app).await,
        ["admin", "v1", "reload"] => method_not_allowed("POST"),
        _ if !path.starts_with("/admin/v1/") => not_found(),
        _ => {
            let Some(manager) = app.app.licenses.as_ref().map(Arc::clone) else {
                return problem(
                    StatusCode::CONFLICT,
                    "LICENSING_NOT_CONFIGURED",
                    "This gateway has no [license] section.",
                );
            };
            match segments.as_slice() {
                ["admin", "v1", "tenants"] if readable => list_tenants(&app.app.tenants, session),
                ["admin", "v1", "tenants"] => method_not_allowed("GET, HEAD"),
                ["admin", "v1", "tenants", tenant] if readable => show_tenant(app, tenant).await,
                ["admin", "v1", "tenants", _] => method_not_allowed("GET, HEAD"),
                ["admin", "v1", "tenants", tenant, "usage"] if readable => {
                    tenant_usage(&manager, session, tenant).await
                }
                ["admin", "v1", "tenants", _, "usage"] => method_not_allowed("GET, HEAD"),
                ["admin", "v1", "tenants", tenant, "license"] if *method == Method::PUT => {
                    install(session, &app.app, manager, tenant).await
                }
                ["admin", "v1", "tenants", _, "license"] => method_not_allowed("PUT"),
                ["admin", "v1", "tenants", tenant, "seats"] if readable => {
                    list_seats(&app.app, tenant).await
                }
                ["admin", "v1", "tenants", _, "seats"] => method_not_allowed("GET, HEAD"),
                ["admin", "v1", "tenants", tenant, "seats", id] if *method == Method::DELETE => {
                    release_seat(&app.app, tenant, id).await
                }
                ["admin", "v1", "tenants", _, "seats", _] => method_not_allowed("DELETE"),
                ["admin", "v1", "tenants", tenant, "activation"] if *method == Method::DELETE => {
                    deactivate(&app.app, tenant).await
                }
                ["admin", "v1", "tenants", _, "activation"] => method_not_allowed("DELETE"),
                ["admin", "v1", "tenants", tenant, "licenses", jti]
                    if *method == Method::DELETE =>
                {
                    remove(manager, tenant, jti).await
                }
                ["admin", "v1", "tenants", _, "licenses", _] => method_not_allowed("DELETE"),
                ["admin", "v1", "revocations"] if readable => list_revocations(&manager),
                ["admin", "v1", "revocations"] if *method == Method::POST => {
                    revoke(session, manager).await
                }
                ["admin", "v1", "revocations"] => method_not_allowed("GET, HEAD, POST"),
                _ => not_found(),
            }
        }
    }
}

/// A tenant as listed: identity, status, expiry, and what it is using now.
fn tenant_entry(entry: &TenantEntry) -> serde_json::Value {
    let summary = &entry.license();
    serde_json::json!({
        "tenant": summary.tenant,
        "status": summary.status,
        "tier": summary.tier,
        "expires_at": summary.expires_at.map(time_text),
        "license_ids": summary.license_ids,
        "active_connections": entry.counters.active(),
    })
}

/// `GET /admin/v1/tenants[?status=GRACE][&offset=N][&limit=N]`, sorted by name.
fn list_tenants(tenants: &Tenants, session: &ServerSession) -> LocalResponse {
    let table = tenants.load_full();
    let number = |name: &str| -> Result<Option<usize>, LocalResponse> {
        match query_param(session.req_header(), name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                problem(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    &format!("{name} must be a non-negative integer"),
                )
            }),
        }
    };
    let (offset, limit) = match (number("offset"), number("limit")) {
        (Ok(o), Ok(l)) => (o.unwrap_or(0), l.unwrap_or(usize::MAX)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let status = query_param(session.req_header(), "status").map(|s| s.to_ascii_uppercase());
    let mut tenants: Vec<&TenantEntry> = table
        .entries()
        .map(|t| &**t)
        .filter(|t| {
            status
                .as_deref()
                .is_none_or(|s| t.license().status.as_str() == s)
        })
        .collect();
    tenants.sort_unstable_by(|a, b| a.license().tenant.cmp(&b.license().tenant));
    let total = tenants.len();
    let page: Vec<serde_json::Value> = tenants
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(tenant_entry)
        .collect();
    LocalResponse::json(
        StatusCode::OK,
        &serde_json::json!({"total": total, "offset": offset, "tenants": page}),
    )
}

/// `GET /admin/v1/tenants/{tenant}`: the license summary and live usage.
async fn show_tenant(app: &AdminApp, tenant: &str) -> LocalResponse {
    let table = app.app.tenants.load_full();
    let Some(entry) = table.get(tenant) else {
        return problem(
            StatusCode::NOT_FOUND,
            "TENANT_NOT_FOUND",
            "No license file names this tenant.",
        );
    };
    let app = &app.app;
    let summary = &**entry.license();
    let (rate, source, rate_error) = match &app.redis {
        Some(redis) => match redis.usage(&entry.quota).await {
            Ok(rules) => (rules, "redis", None),
            Err(e) => (Vec::new(), "redis", Some(e)),
        },
        None => (app.quotas.usage(&entry.quota), "local", None),
    };
    let requests: serde_json::Map<String, serde_json::Value> = Outcome::ALL
        .iter()
        .map(|o| (o.label().to_string(), entry.counters.requests(*o).into()))
        .collect();
    let advice = advice_of(app, Arc::clone(entry.license())).await;
    let mut body = status_json(Some(summary));
    body["advice"] = advice;
    body["license_ids"] = summary.license_ids.clone().into();
    body["expires_at_unix"] = summary.expires_at.into();
    body["usage"] = serde_json::json!({
        "active_connections": entry.counters.active(),
        "concurrent_leases": app.quotas.in_flight(&entry.quota),
        "max_concurrent_connections": summary.limits.max_concurrent_connections,
        "rate_source": source,
        "rate": rate,
        "rate_error": rate_error,
        "requests": requests,
    });
    LocalResponse::json(StatusCode::OK, &body)
}

/// The advice from the last 30 days of `license`'s tenant ([`advise`]): a list, or
/// `null` when the ledger cannot be read.
async fn advice_of(app: &App, license: Arc<TenantSummary>) -> serde_json::Value {
    let Some(manager) = &app.licenses else {
        return serde_json::Value::Null;
    };
    let store_dir = manager.store().dir().to_path_buf();
    let today = crate::quota::clock::now().div_euclid(crate::usage::ledger::DAY);
    let advice = tokio::task::spawn_blocking(move || {
        let db = Database::open_read_only(&store_dir)?;
        let range = DayRange {
            from_day: today - (UNUSED_DAYS - 1),
            to_day: today,
        };
        advise(&db, &license, range, today)
    })
    .await;
    match advice {
        Ok(Ok(advice)) => serde_json::to_value(advice).unwrap_or_default(),
        Ok(Err(DatabaseError::Missing { .. })) => serde_json::json!([]),
        _ => serde_json::Value::Null,
    }
}

/// `GET /admin/v1/tenants/{t}/usage?from=&to=&granularity=&feature=`: the tenant's
/// usage series from the ledger (400 `BAD_REQUEST` for a bad range or granularity).
async fn tenant_usage(
    manager: &LicenseManager,
    session: &ServerSession,
    tenant: &str,
) -> LocalResponse {
    let bad = |detail: &str| problem(StatusCode::BAD_REQUEST, "BAD_REQUEST", detail);
    let tenant = match super::page::percent_decode(tenant) {
        Some(t) if !t.is_empty() && t.len() <= 256 => t,
        _ => return bad("The tenant name is not valid."),
    };
    let today = crate::quota::clock::now().div_euclid(crate::usage::ledger::DAY);
    let range = match DayRange::parse(
        query_param(session.req_header(), "from").as_deref(),
        query_param(session.req_header(), "to").as_deref(),
        today,
    ) {
        Ok(range) => range,
        Err(e) => return bad(&e),
    };
    let granularity =
        match query_param(session.req_header(), "granularity").map(|g| g.parse::<Granularity>()) {
            None => Granularity::Day,
            Some(Ok(g)) => g,
            Some(Err(e)) => return bad(&e),
        };
    let feature = query_param(session.req_header(), "feature").filter(|f| !f.is_empty());
    let store_dir = manager.store().dir().to_path_buf();
    let answer = tokio::task::spawn_blocking(move || {
        let db = Database::open_read_only(&store_dir)?;
        tenant_series(&db, &tenant, feature.as_deref(), range, granularity)
    })
    .await;
    match answer {
        Ok(Ok(series)) => LocalResponse::json(StatusCode::OK, &series),
        Ok(Err(SeriesError::BadRange(e))) => bad(&e),
        Ok(Err(SeriesError::Database(DatabaseError::Missing { .. }))) => problem(
            StatusCode::NOT_FOUND,
            "NO_USAGE_YET",
            "The usage ledger has no rows yet.",
        ),
        Ok(Err(e)) => store_error(e),
        Err(_) => unexpected("usage query"),
    }
}

/// The license token in an install request: the raw body, or `license_key`/`token`
/// of a JSON object.
fn token_of(session: &ServerSession, body: &[u8]) -> Result<String, LocalResponse> {
    let is_json = media_type(session.req_header()).as_deref() == Some("application/json");
    let bad = |detail: &str| problem(StatusCode::BAD_REQUEST, "BAD_REQUEST", detail);
    let token = if is_json {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| bad(&format!("the body is not valid JSON: {e}")))?;
        value
            .get("license_key")
            .or_else(|| value.get("token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("expected {\"license_key\": \"<token>\"}"))?
            .trim()
            .to_string()
    } else {
        std::str::from_utf8(body)
            .map_err(|_| bad("the license token must be text"))?
            .trim()
            .to_string()
    };
    if token.is_empty() {
        return Err(bad("the request carries no license token"));
    }
    Ok(token)
}

/// The seat book and times, or the answer saying seats are not counted here.
fn seat_state(app: &App) -> Result<(&crate::seats::Seats, SeatTimes), LocalResponse> {
    let rules = app.rules.load();
    match (&app.seats, &rules.seats) {
        (Some(seats), Some(seat_rules)) => Ok((seats, seat_rules.times)),
        _ => Err(problem(
            StatusCode::CONFLICT,
            "SEATS_NOT_CONFIGURED",
            "This gateway counts no seats (no [seats] section).",
        )),
    }
}

/// `GET /admin/v1/tenants/{tenant}/seats`: the tenant's seat limits, the seats and
/// active users counted now, and every seat (hash prefix, first and last seen,
/// client address), most recently seen first.
async fn list_seats(app: &App, tenant: &str) -> LocalResponse {
    let (seats, times) = match seat_state(app) {
        Ok(state) => state,
        Err(answer) => return answer,
    };
    let entry = app.tenants.load().get(tenant).cloned();
    let Some(entry) = entry else {
        return problem(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("No license is installed for tenant `{tenant}`."),
        );
    };
    let now = crate::quota::clock::now();
    let local = seats
        .book
        .get(tenant)
        .map(|b| b.list(now, times))
        .unwrap_or_default();
    let (listed, scope) = match (&seats.fleet, &app.redis) {
        (Some(fleet), Some(redis)) => match fleet.list(redis, tenant).await {
            Ok(all) => {
                // The fleet's seats, with what this gateway saw of each.
                let mut listed: Vec<SeatInfo> = all
                    .iter()
                    .map(|seat| {
                        let id = seat.id.hex()[..SeatId::SHOWN_HEX].to_string();
                        let mine = local.iter().find(|l| l.id == id);
                        SeatInfo {
                            first_seen: mine.map_or(seat.last_seen, |m| m.first_seen),
                            client_address: mine.and_then(|m| m.client_address.clone()),
                            overage: mine.is_some_and(|m| m.overage),
                            in_use: now - seat.last_seen < times.idle_timeout,
                            last_seen: seat.last_seen,
                            id,
                        }
                    })
                    .collect();
                listed.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
                (listed, "fleet")
            }
            Err(reason) => {
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "QUOTA_UNAVAILABLE",
                    &format!("The fleet's seats cannot be read from Redis: {reason}."),
                )
            }
        },
        _ => (local, "gateway"),
    };
    let in_use = listed.iter().filter(|s| s.in_use).count();
    let active = listed
        .iter()
        .filter(|s| now - s.last_seen < times.active_window)
        .count();
    let limits = entry.seat_limits;
    LocalResponse::json(
        StatusCode::OK,
        &serde_json::json!({
            "tenant": tenant,
            "counted_by": scope,
            "max_seats": limits.and_then(|l| l.max_seats),
            "max_active_users": limits.and_then(|l| l.max_active),
            "overage": limits.and_then(|l| l.overage).map(|o| o.factor()),
            "idle_timeout_seconds": times.idle_timeout,
            "active_window_seconds": times.active_window,
            "in_use": in_use,
            "active_users": active,
            "seats": listed,
        }),
    )
}

/// `DELETE /admin/v1/tenants/{tenant}/seats/{id}`: releases the seat whose id starts
/// with `id` (at least 8 hex digits, as listed), fleet-wide with Redis; its identity
/// takes a seat again on its next request, if one is free.
async fn release_seat(app: &App, tenant: &str, id: &str) -> LocalResponse {
    let (seats, _) = match seat_state(app) {
        Ok(state) => state,
        Err(answer) => return answer,
    };
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "A seat id is at least 8 hex digits of the id listed by GET …/seats.",
        );
    }
    let prefix = id.to_ascii_lowercase();
    let released = match (&seats.fleet, &app.redis) {
        (Some(fleet), Some(redis)) => {
            let all = match fleet.list(redis, tenant).await {
                Ok(all) => all,
                Err(reason) => {
                    return problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "QUOTA_UNAVAILABLE",
                        &format!("The fleet's seats cannot be read from Redis: {reason}."),
                    )
                }
            };
            let mut matching = all.iter().filter(|s| s.id.hex().starts_with(&prefix));
            match (matching.next(), matching.next()) {
                (Some(seat), None) => fleet
                    .remove(redis, &seats.book, tenant, seat.id)
                    .await
                    .unwrap_or(false),
                _ => false,
            }
        }
        _ => seats
            .book
            .get(tenant)
            .is_some_and(|book| book.release(&prefix)),
    };
    if released {
        LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({"success": true, "released": prefix}),
        )
    } else {
        problem(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Tenant `{tenant}` has no single seat whose id starts with `{id}`."),
        )
    }
}

/// `DELETE /admin/v1/tenants/{tenant}/activation`: frees the tenant's activations at
/// the license server and removes their licenses here (moving an installation).
async fn deactivate(app: &App, tenant: &str) -> LocalResponse {
    let Some(link) = &app.link else {
        return problem(
            StatusCode::CONFLICT,
            "AUTHORITY_NOT_CONFIGURED",
            "This gateway has no license server configured ([authority] url): write an offline deactivation request instead.",
        );
    };
    match link.deactivate(tenant).await {
        Ok(done) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({"success": true, "deactivated": done}),
        ),
        Err(e @ DeactivateError::NoActivation(_)) => {
            problem(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string())
        }
        Err(e @ DeactivateError::Call { .. }) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "AUTHORITY_UNAVAILABLE",
            &e.to_string(),
        ),
        Err(e @ DeactivateError::Store(_)) => store_error(e),
    }
}

/// `PUT /admin/v1/tenants/{tenant}/license`: verify and install a license token, or
/// activate a license key at the license server.
async fn install(
    session: &mut ServerSession,
    app: &App,
    manager: Arc<LicenseManager>,
    tenant: &str,
) -> LocalResponse {
    if !is_tenant_name(tenant) {
        return problem(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Tenant names are 1-63 letters, digits, '-', '_' or '.'.",
        );
    }
    let body = match read_body(session, MAX_ACTIVATION_BODY).await {
        Ok(body) => body,
        Err(e) => return body_problem(e, MAX_ACTIVATION_BODY),
    };
    let token = match token_of(session, &body) {
        Ok(t) => t,
        Err(response) => return response,
    };
    if is_license_key(&token) {
        return match activate_key(app, Some(tenant), &token).await {
            Ok(activated) => LocalResponse::json(
                StatusCode::OK,
                &serde_json::json!({
                    "success": true,
                    "installed": activated.record.license_id,
                    "activation_id": activated.record.activation_id,
                    "license": status_json(Some(&activated.summary)),
                }),
            ),
            Err(rejected) => rejected.problem(),
        };
    }
    let tenant = tenant.to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        manager.install_for(&token, &tenant).map_err(|e| match e {
            InstallError::Store(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "STORE_ERROR",
                e.to_string(),
            ),
            mismatch @ InstallError::TenantMismatch { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "TENANT_MISMATCH",
                mismatch.to_string(),
            ),
            other => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "LICENSE_INVALID",
                other.to_string(),
            ),
        })
    })
    .await;
    match outcome {
        Ok(Ok(installed)) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({
                "success": true,
                "installed": installed.jti,
                "license": status_json(Some(&installed.summary)),
            }),
        ),
        Ok(Err((status, code, reason))) => LocalResponse::problem(
            status,
            code,
            "License not installed",
            &reason,
            serde_json::json!({"reason": reason}),
        ),
        Err(_) => unexpected("installation"),
    }
}

/// `DELETE /admin/v1/tenants/{tenant}/licenses/{jti}`: remove that license's file.
async fn remove(manager: Arc<LicenseManager>, tenant: &str, jti: &str) -> LocalResponse {
    let (tenant, jti) = (tenant.to_string(), percent_decode(jti));
    let outcome = {
        let (tenant, jti) = (tenant.clone(), jti.clone());
        let manager = Arc::clone(&manager);
        tokio::task::spawn_blocking(move || manager.remove(&tenant, &jti)).await
    };
    match outcome {
        Ok(Ok(true)) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({
                "success": true,
                "removed": jti,
                "license": status_json(manager.snapshot_arc().tenant(&tenant)),
            }),
        ),
        Ok(Ok(false)) => problem(
            StatusCode::NOT_FOUND,
            "LICENSE_NOT_FOUND",
            "This tenant has no installed license with that id.",
        ),
        Ok(Err(e)) => store_error(e),
        Err(_) => unexpected("removal"),
    }
}

/// `GET /admin/v1/revocations`.
fn list_revocations(manager: &LicenseManager) -> LocalResponse {
    match manager.store().revocations() {
        Ok(list) => {
            let entries: Vec<serde_json::Value> = list
                .iter()
                .map(|r| serde_json::json!({"jti": r.jti, "revoked_at": time_text(r.revoked_at)}))
                .collect();
            LocalResponse::json(StatusCode::OK, &serde_json::json!({"revocations": entries}))
        }
        Err(e) => store_error(e),
    }
}

/// `POST /admin/v1/revocations` with `{"jti": "..."}`: revoke (persisted, applied now).
async fn revoke(session: &mut ServerSession, manager: Arc<LicenseManager>) -> LocalResponse {
    let body = match read_body(session, MAX_SMALL_BODY).await {
        Ok(body) => body,
        Err(e) => return body_problem(e, MAX_SMALL_BODY),
    };
    let jti = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("jti")?.as_str().map(str::to_string));
    let Some(jti) =
        jti.filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN && !j.chars().any(char::is_control))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("expected {{\"jti\": \"<license id>\"}} (1 to {MAX_JTI_LEN} characters)"),
        );
    };
    let outcome = {
        let jti = jti.clone();
        tokio::task::spawn_blocking(move || manager.revoke(&jti)).await
    };
    match outcome {
        Ok(Ok(())) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({"success": true, "revoked": jti}),
        ),
        Ok(Err(e)) => store_error(e),
        Err(_) => unexpected("revocation"),
    }
}

/// `POST /admin/v1/reload`: reload the configuration file and rescan the store.
async fn reload(app: &AdminApp) -> LocalResponse {
    let reloader = Arc::clone(&app.reloader);
    match tokio::task::spawn_blocking(move || reloader.reload(Trigger::AdminApi)).await {
        Ok(Ok(report)) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({
                "success": true,
                "config_changed": report.config_changed,
                "licenses_changed": report.licenses_changed,
                "restart_required": report.restart_required,
            }),
        ),
        Ok(Err(e)) => LocalResponse::problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RELOAD_FAILED",
            "Reload failed",
            "The configuration was not reloaded; the previous one stays in force.",
            serde_json::json!({"errors": e.messages()}),
        ),
        Err(_) => unexpected("reload"),
    }
}

/// `%XX` escapes of a path segment decoded (invalid escapes are kept as they are).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(percent_decode("lic%2D1"), "lic-1");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("%41%42"), "AB");
    }
}
