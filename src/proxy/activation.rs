//! The gateway's own pages under `/_licgate/`: activation form and submission,
//! activation-required page, license status, page assets.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::proxy::Session;
use ring::rand::SecureRandom as _;

use super::refusal::next_query;
use crate::app::App;
use crate::app::Rules;
use crate::license::manager::InstallError;
use crate::license::{time_text, TenantSummary};
use crate::metrics::ActivationResult;
use crate::pages::{escape, Page};
use crate::policy::is_local_path;
use crate::request_body::{media_type, read_body, BodyError};
use crate::request_parts::query_param;
use crate::response::LocalResponse;

/// Largest activation request body read (a license is at most 64 KiB).
pub(crate) const MAX_ACTIVATION_BODY: usize = 80 * 1024;
const CSRF_COOKIE: &str = "licgate_csrf";

/// Answers a request for a reserved path. `tenant` is the request's resolved tenant.
pub(crate) async fn handle(
    session: &mut Session,
    app: &App,
    rules: &Rules,
    path: &str,
    tenant: Option<&str>,
    peer: Option<IpAddr>,
) -> LocalResponse {
    let method = session.req_header().method.clone();
    let readable = method == Method::GET || method == Method::HEAD;
    let licenses = app.licenses.as_ref().map(|m| m.snapshot_arc());
    let summary = licenses
        .as_ref()
        .zip(tenant)
        .and_then(|(snapshot, t)| snapshot.tenant(t));
    let next = query_param(session.req_header(), "next")
        .filter(|n| is_local_path(n) && !n.starts_with("/_licgate"))
        .unwrap_or_else(|| "/".to_string());
    match path.trim_end_matches('/') {
        "/_licgate/activate" if readable => {
            let token = csrf_cookie(session).unwrap_or_else(new_csrf_nonce);
            activation_page(app, rules, summary, &next, &token, None, StatusCode::OK)
        }
        "/_licgate/activate" if method == Method::POST => {
            activate(session, app, rules, tenant, summary, peer).await
        }
        "/_licgate/activate/offline-request" | "/_licgate/activate/offline-response"
            if method == Method::POST =>
        {
            let offline = super::offline::Offline {
                app,
                rules,
                tenant,
                page: PageState {
                    summary,
                    next: &next,
                    csrf_nonce: csrf_cookie(session),
                },
                peer,
            };
            if path.ends_with("request") {
                super::offline::request_file(session, offline).await
            } else {
                super::offline::install_file(session, offline).await
            }
        }
        "/_licgate/activation-required" if readable => {
            let reason = summary.map_or(
                "No license is installed for this site.".to_string(),
                |s| match s.status {
                    crate::license::Status::Expired => format!(
                        "The license expired on {}.",
                        s.expires_at.map(time_text).unwrap_or_default()
                    ),
                    crate::license::Status::Revoked => "The license was revoked.".into(),
                    crate::license::Status::Suspended => {
                        "The vendor suspended the license: the site is served again as soon as it is reinstated.".into()
                    }
                    crate::license::Status::Invalid => {
                        "The installed license could not be verified.".into()
                    }
                    crate::license::Status::NotYetValid => "The license is not valid yet.".into(),
                    _ => "The license does not allow access.".into(),
                },
            );
            let activate_url = format!("/_licgate/activate?{}", next_query(&next));
            LocalResponse::html(
                StatusCode::OK,
                rules.templates.render(
                    Page::ActivationRequired,
                    minijinja::context! {
                        reason,
                        activate_url,
                        instance_id => app.instance_id(),
                        status => summary.map_or("UNLICENSED", |s| s.status.as_str()),
                    },
                ),
            )
        }
        "/_licgate/status" if readable => {
            let body = if rules.public_status {
                status_json(summary)
            } else {
                public_status_json(summary)
            };
            LocalResponse::json(StatusCode::OK, &body)
        }
        "/_licgate/assets/licgate.css" if readable => LocalResponse {
            status: StatusCode::OK,
            content_type: "text/css; charset=utf-8",
            headers: Vec::new(),
            body: Bytes::copy_from_slice(rules.templates.stylesheet().as_bytes()),
        },
        "/_licgate/activate"
        | "/_licgate/activate/offline-request"
        | "/_licgate/activate/offline-response"
        | "/_licgate/activation-required"
        | "/_licgate/status"
        | "/_licgate/assets/licgate.css" => LocalResponse::problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "Method Not Allowed",
            "This method is not allowed here.",
            serde_json::json!({}),
        ),
        _ => LocalResponse::problem(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Not Found",
            "No such gateway page.",
            serde_json::json!({}),
        ),
    }
}

/// What `/_licgate/status` tells anyone by default: the status and the tier, nothing
/// that helps map tenants, plans, limits or expiry dates.
pub(crate) fn public_status_json(summary: Option<&TenantSummary>) -> serde_json::Value {
    match summary {
        None => serde_json::json!({"status": "UNLICENSED"}),
        Some(s) => serde_json::json!({"status": s.status, "tier": s.tier}),
    }
}

/// The tenant's full license summary (`pages.public_status`, the admin API; never key
/// material).
pub(crate) fn status_json(summary: Option<&TenantSummary>) -> serde_json::Value {
    match summary {
        None => serde_json::json!({"status": "UNLICENSED", "tenant": null}),
        Some(s) => {
            let mut features: Vec<&str> = s.features.iter().map(|f| &**f).collect();
            features.sort_unstable();
            serde_json::json!({
                "tenant": s.tenant,
                "status": s.status,
                "tier": s.tier,
                "tier_name": s.tier_name,
                "features": features,
                "limits": s.limits,
                "feature_limits": s.feature_limits,
                "flags": s.flags,
                "expires_at": s.expires_at.map(time_text),
                "warnings": s.warnings,
            })
        }
    }
}

/// What the activation page shows again after a failed submission.
pub(crate) struct PageState<'a> {
    pub summary: Option<&'a TenantSummary>,
    /// Where to go after activation.
    pub next: &'a str,
    /// The CSRF cookie's nonce, when the browser sent one.
    pub csrf_nonce: Option<String>,
}

/// The activation page (with `error`, when a submission failed).
pub(crate) fn activation_page(
    app: &App,
    rules: &Rules,
    summary: Option<&TenantSummary>,
    next: &str,
    csrf_nonce: &str,
    error: Option<&str>,
    status: StatusCode,
) -> LocalResponse {
    let error_html = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let message = match summary.map(|s| s.status) {
        None => "No license is installed for this site yet. Paste the license key you received from your vendor.".to_string(),
        Some(s) if s.grants_access() => format!("A license is active ({s}). You may install another one, e.g. a renewal."),
        Some(s) => format!("The current license does not allow access ({s}). Paste a new license key."),
    };
    LocalResponse::html(
        status,
        rules.templates.render(
            Page::Activate,
            minijinja::context! {
                message,
                // Built from escaped parts (operators' templates place it as is).
                error => minijinja::Value::from_safe_string(error_html),
                csrf_token => csrf_form_token(app, csrf_nonce),
                next,
                instance_id => app.instance_id(),
                status => summary.map_or("UNLICENSED", |s| s.status.as_str()),
                offline => app.licenses.is_some() && app.instance_key.is_some(),
                license_server => app.link.is_some(),
            },
        ),
    )
    .with_header(
        "Set-Cookie",
        format!("{CSRF_COOKIE}={csrf_nonce}; Path=/_licgate/; HttpOnly; SameSite=Strict"),
    )
}

/// `POST /_licgate/activate`: a form (with CSRF token) or JSON `{"license_key": ...}`.
async fn activate(
    session: &mut Session,
    app: &App,
    rules: &Rules,
    tenant: Option<&str>,
    summary: Option<&TenantSummary>,
    peer: Option<IpAddr>,
) -> LocalResponse {
    let json = media_type(session.req_header());
    let is_json = json.as_deref() == Some("application/json");
    let is_form = json.as_deref() == Some("application/x-www-form-urlencoded");
    let problem = LocalResponse::error;
    let count = |result| app.metrics.activation(result);
    if let Some(ip) = peer {
        if !app.activation_limiter.permit(ip) {
            count(ActivationResult::Throttled);
            return problem(
                StatusCode::TOO_MANY_REQUESTS,
                "ACTIVATION_RATE_LIMITED",
                "Too many activation attempts from this address; wait a minute and try again.",
            )
            .with_header("Retry-After", "60");
        }
    }
    if !is_json && !is_form {
        count(ActivationResult::BadRequest);
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send application/json {\"license_key\": ...} or the activation form.",
        );
    }
    let body = match read_body(session, MAX_ACTIVATION_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            count(ActivationResult::BadRequest);
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "The request body is too large for a license key.",
            );
        }
        Err(BodyError::Read) => {
            count(ActivationResult::BadRequest);
            return problem(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "The request body could not be read.",
            );
        }
    };
    let Some(submission) = parse_submission(&body, is_json) else {
        count(ActivationResult::BadRequest);
        return problem(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Expected a JSON object {\"license_key\": \"...\"}.",
        );
    };
    let (key, next) = if is_json {
        (submission.license_key, None)
    } else {
        let next = submission.next.unwrap_or_else(|| "/".to_string());
        // The form's token is the HMAC of the cookie's nonce under this installation's
        // secret: a cookie tossed in from a sibling site cannot come with a valid token.
        if !csrf_valid(session, app, submission.csrf_token.as_deref()) {
            count(ActivationResult::BadRequest);
            return activation_page(
                app,
                rules,
                summary,
                &next,
                &new_csrf_nonce(),
                Some("The form expired or was not sent from this page (CSRF check failed). Please paste the key again."),
                StatusCode::FORBIDDEN,
            );
        }
        (submission.license_key, Some(next))
    };
    let outcome = if is_license_key(&key) {
        activate_key(app, tenant, &key).await.map(|a| a.summary)
    } else {
        install(app, tenant, key).await.map_err(Rejected::token)
    };
    count(match outcome {
        Ok(_) => ActivationResult::Installed,
        Err(_) => ActivationResult::Rejected,
    });
    match (outcome, is_json) {
        (Ok(installed), true) => LocalResponse::json(
            StatusCode::OK,
            &serde_json::json!({"success": true, "license": status_json(Some(&installed))}),
        ),
        (Ok(_), false) => LocalResponse::redirect(&rules.after_activation),
        (Err(rejected), true) => rejected.problem(),
        (Err(rejected), false) => activation_page(
            app,
            rules,
            summary,
            next.as_deref().unwrap_or("/"),
            &csrf_cookie(session).unwrap_or_else(new_csrf_nonce),
            Some(&rejected.page_text()),
            rejected.status,
        ),
    }
}

/// Why a submission was not installed.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub status: StatusCode,
    pub code: String,
    /// What the person activating reads.
    pub reason: String,
    pub details: serde_json::Value,
    /// Whether a signed token was refused (rather than a key at the license server).
    pub token: bool,
}

impl Rejected {
    /// A signed token refused here for `reason`.
    fn token(reason: String) -> Rejected {
        Rejected {
            status: StatusCode::BAD_REQUEST,
            code: "LICENSE_INVALID".into(),
            reason,
            details: serde_json::json!({}),
            token: true,
        }
    }

    /// The JSON answer.
    pub(crate) fn problem(&self) -> LocalResponse {
        let mut details = self.details.clone();
        if let Some(map) = details.as_object_mut() {
            map.insert("reason".into(), self.reason.clone().into());
        }
        LocalResponse::problem(
            self.status,
            &self.code,
            "License not activated",
            &self.reason,
            details,
        )
    }

    /// The page's line.
    fn page_text(&self) -> String {
        if self.token {
            format!("This license key was not accepted: {}.", self.reason)
        } else {
            self.reason.clone()
        }
    }
}

/// Whether `text` is a license key (`LG-…`) rather than a signed license token.
pub(crate) fn is_license_key(text: &str) -> bool {
    let text = text.trim();
    text.len() < 64 && text.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("LG-"))
}

/// Activates the license key `key` for `tenant` at the license server.
pub(crate) async fn activate_key(
    app: &App,
    tenant: Option<&str>,
    key: &str,
) -> Result<crate::link::Activated, Rejected> {
    let refuse = |status, code: &str, reason: &str| Rejected {
        status,
        code: code.into(),
        reason: reason.into(),
        details: serde_json::json!({}),
        token: false,
    };
    let Some(link) = &app.link else {
        return Err(refuse(
            StatusCode::CONFLICT,
            "AUTHORITY_NOT_CONFIGURED",
            "This gateway has no license server configured ([authority] url), so it cannot activate license keys: paste the signed license your vendor sent, or activate offline (licgate activation request).",
        ));
    };
    let Some(tenant) = tenant else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "LICENSE_INVALID",
            "This site's tenant cannot be determined.",
        ));
    };
    link.activate_key(key, tenant).await.map_err(|e| Rejected {
        status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY),
        code: e.code(),
        reason: e.explanation(),
        details: e.details(),
        token: false,
    })
}

/// What an activation request submits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Submission {
    pub license_key: String,
    /// The form's CSRF token (forms only).
    pub csrf_token: Option<String>,
    /// Where to go afterwards: only a local path outside `/_licgate/` (forms only).
    pub next: Option<String>,
}

/// Reads an activation body: JSON `{"license_key": "..."}` (`None` when it is not
/// such an object) or an urlencoded form (first value of each field; a missing key
/// is empty). Never fails on a form.
pub(crate) fn parse_submission(body: &[u8], json: bool) -> Option<Submission> {
    if json {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let key = value.get("license_key")?.as_str()?;
        return Some(Submission {
            license_key: key.to_string(),
            ..Submission::default()
        });
    }
    let mut submission = Submission::default();
    let (mut key, mut token, mut next) = (None, None, None);
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match &*name {
            "license_key" => &mut key,
            "csrf_token" => &mut token,
            "next" => &mut next,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    submission.license_key = key.unwrap_or_default();
    submission.csrf_token = token;
    submission.next = next.filter(|n| is_local_path(n) && !n.starts_with("/_licgate"));
    Some(submission)
}

/// Verifies `key` for `tenant` and installs it through the license store.
async fn install(app: &App, tenant: Option<&str>, key: String) -> Result<TenantSummary, String> {
    let Some(manager) = app.licenses.as_ref().map(Arc::clone) else {
        return Err("licensing is not configured on this gateway".into());
    };
    let Some(tenant) = tenant.map(str::to_string) else {
        return Err("this site's tenant cannot be determined".into());
    };
    let outcome = tokio::task::spawn_blocking(move || {
        manager
            .install_for(&key, &tenant)
            .map(|installed| installed.summary)
            .map_err(|e| match e {
                InstallError::TenantMismatch { license, expected } => {
                    format!("it is for tenant \"{license}\", this site is tenant \"{expected}\"")
                }
                other => other.to_string(),
            })
    })
    .await;
    outcome.unwrap_or_else(|_| Err("the installation failed unexpectedly".into()))
}

/// Whether `submitted` is the form token of the session's CSRF cookie.
pub(crate) fn csrf_valid(session: &Session, app: &App, submitted: Option<&str>) -> bool {
    let submitted = submitted.unwrap_or_default();
    csrf_cookie(session).is_some_and(|nonce| {
        constant_time_eq(
            csrf_form_token(app, &nonce).as_bytes(),
            submitted.as_bytes(),
        )
    })
}

/// The CSRF cookie's value, when present and well-formed.
fn csrf_cookie(session: &Session) -> Option<String> {
    crate::request_parts::cookie(session.req_header(), CSRF_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The form token that goes with the cookie's `nonce`: hex HMAC-SHA256 of it under
/// the installation's CSRF secret.
fn csrf_form_token(app: &App, nonce: &str) -> String {
    let tag = ring::hmac::sign(&app.csrf_key, nonce.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh cookie nonce: 16 random bytes as hex.
pub(crate) fn new_csrf_nonce() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
