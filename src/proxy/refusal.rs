//! Refusals and their answers: every reason the gateway answers a request itself
//! instead of forwarding it, with the facts its answer needs, mapped to a response
//! in one place ([`Refused::respond`]): a page for browsers, problem+json for API
//! clients, each with the refusal's own error code.

use http::StatusCode;

use crate::license::TenantSummary;
use crate::pages::{Page, Templates};
use crate::policy::decide::DenyReason;
use crate::policy::outcome::{Outcome, QuotaKind, Refusal};
use crate::policy::rpc::RpcRefusal;
use crate::quota::share::ShareRefusal;
use crate::quota::window::{clock_text, duration_text};
use crate::quota::{Policy, Rule};
use crate::response::{ClientKind, LocalResponse};
use crate::restrictions::NetworkRefusal;
use crate::seats::book::{SeatKind, SeatsFull};

/// Why the gateway answers a request itself, with what the answer says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refused<'r> {
    /// The request target cannot be normalized safely (400 `BAD_REQUEST_PATH`).
    BadPath(String),
    /// The request asks for a method override (400 `BAD_REQUEST`).
    MethodOverride(String),
    /// The license or the feature map refuses it (403, or a redirect for browsers).
    License {
        reason: DenyReason,
        /// The feature the path needs, when the feature map names one.
        feature: Option<&'r str>,
        /// The normalized target, for the way back after an activation.
        target: String,
    },
    /// Every concurrent slot of the tenant is taken (429).
    Concurrency { limit: u64 },
    /// The client is over its share of the tenant's quota (429).
    ClientShare(ShareRefusal),
    /// A rate quota refuses it (429); `feature` when it is a feature's quota.
    Usage {
        rule: Rule,
        retry_after_secs: u64,
        /// When the refusing rule allows again (Unix seconds).
        resets_at: i64,
        feature: Option<&'r str>,
        policy: Policy,
    },
    /// The quota backend cannot count and `on_error = "deny"` (503).
    QuotaUnavailable,
    /// An Odoo endpoint's request cannot be read with certainty (400, 413, 415).
    Rpc(RpcRefusal),
    /// The client is outside the networks or countries the license allows (403).
    Network(NetworkRefusal),
    /// A new identity beyond the license's seats (403).
    Seats(SeatsFull),
    /// The request names its person twice, differently (400 `BAD_REQUEST`).
    AmbiguousIdentity(&'static str),
}

/// Who reads the gateway's answer, and so its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Audience<'a> {
    /// A browser (pages, redirects to the activation page) or an API client
    /// (problem+json).
    Client(ClientKind),
    /// An Odoo JSON-RPC caller: an error object answering `id`.
    JsonRpc(Option<&'a serde_json::Value>),
    /// An Odoo XML-RPC caller: a fault.
    XmlRpc,
}

impl Refused<'_> {
    /// The refusal as `denials_total` counts it (`None`: a malformed request).
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            Refused::BadPath(_)
            | Refused::MethodOverride(_)
            | Refused::Rpc(_)
            | Refused::AmbiguousIdentity(_) => None,
            Refused::Seats(_) => Some(Refusal::Seats),
            Refused::License { reason, .. } => Some(Refusal::License(*reason)),
            Refused::Concurrency { .. } => Some(Refusal::ConcurrencyLimit),
            Refused::ClientShare(_) => Some(Refusal::ClientShare),
            Refused::Usage { .. } => Some(Refusal::UsageLimit),
            Refused::QuotaUnavailable => Some(Refusal::QuotaUnavailable),
            Refused::Network(_) => Some(Refusal::Network),
        }
    }

    /// The quota that refused, as `quota_rejections_total` counts it.
    pub(crate) fn quota_kind(&self) -> Option<QuotaKind> {
        match self {
            Refused::Concurrency { .. } => Some(QuotaKind::Concurrency),
            Refused::ClientShare(_) => Some(QuotaKind::ClientShare),
            Refused::Usage {
                feature: Some(_), ..
            } => Some(QuotaKind::Feature),
            Refused::Usage { feature: None, .. } => Some(QuotaKind::Rate),
            _ => None,
        }
    }

    /// What the gateway did when it enforced this refusal.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Refused::BadPath(_)
            | Refused::MethodOverride(_)
            | Refused::Rpc(_)
            | Refused::AmbiguousIdentity(_) => Outcome::Rejected,
            Refused::License { .. } | Refused::Network(_) | Refused::Seats(_) => Outcome::Denied,
            Refused::Concurrency { .. } | Refused::ClientShare(_) | Refused::Usage { .. } => {
                Outcome::Limited
            }
            Refused::QuotaUnavailable => Outcome::Unavailable,
        }
    }

    /// The contract's `error_code` of the answer.
    pub(crate) fn error_code(&self) -> &'static str {
        match self {
            Refused::BadPath(_) => "BAD_REQUEST_PATH",
            Refused::MethodOverride(_) | Refused::Rpc(_) | Refused::AmbiguousIdentity(_) => {
                "BAD_REQUEST"
            }
            _ => self.refusal().map_or("BAD_REQUEST", Refusal::error_code),
        }
    }

    /// The answer for `audience`; `tenant` is the refused request's license, if any.
    pub(crate) fn respond(
        &self,
        audience: Audience<'_>,
        tenant: Option<&TenantSummary>,
        templates: &Templates,
    ) -> LocalResponse {
        let client = audience;
        let answer = |status, title: &str, message: &str, details| {
            answer(
                status,
                self.error_code(),
                title,
                message,
                details,
                client,
                templates,
            )
        };
        match self {
            Refused::BadPath(reason) => answer(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                reason,
                serde_json::json!({}),
            ),
            Refused::Rpc(refusal) => answer(
                match refusal {
                    RpcRefusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    RpcRefusal::Encoded | RpcRefusal::MediaType(_) => {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    }
                    _ => StatusCode::BAD_REQUEST,
                },
                "Request not accepted",
                &format!("{refusal}."),
                serde_json::json!({}),
            ),
            Refused::MethodOverride(name) => answer(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!(
                    "Method overrides ({name}) are refused here: send the request with the method it means."
                ),
                serde_json::json!({}),
            ),
            Refused::License {
                reason,
                feature,
                target,
            } => license_answer(*reason, tenant, *feature, client, target, templates),
            Refused::Concurrency { limit } => answer(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many connections",
                &format!(
                    "This site already has {limit} requests or connections open, the most its license allows. Try again shortly."
                ),
                serde_json::json!({"limit": limit, "retry_after": 1}),
            )
            .with_header("Retry-After", "1"),
            Refused::ClientShare(refusal) => {
                let (message, retry_after, details) = share_text(*refusal);
                answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests from this client",
                    &message,
                    details,
                )
                .with_header("Retry-After", retry_after.to_string())
            }
            Refused::Usage {
                rule,
                retry_after_secs,
                resets_at,
                feature,
                policy,
            } => {
                let (message, limit, window) = usage_text(*rule, *retry_after_secs, *resets_at, *feature);
                let mut details = serde_json::json!({
                    "limit": limit,
                    "window": window,
                    "retry_after": retry_after_secs,
                    "resets_at": resets_at,
                });
                if let Some(f) = feature {
                    details["feature"] = (*f).into();
                }
                let mut policy_text = [0u8; 256];
                let n = policy.write(&mut policy_text);
                let response = answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Usage limit reached",
                    &message,
                    details,
                )
                .with_header("Retry-After", retry_after_secs.to_string())
                .with_header("RateLimit-Limit", limit.to_string())
                .with_header("RateLimit-Remaining", "0")
                .with_header("RateLimit-Reset", retry_after_secs.to_string());
                match n {
                    0 => response,
                    n => response.with_header(
                        "RateLimit-Policy",
                        String::from_utf8_lossy(&policy_text[..n]).into_owned(),
                    ),
                }
            }
            Refused::Network(refusal) => {
                let (message, details) = network_text(*refusal);
                answer(
                    StatusCode::FORBIDDEN,
                    "Not licensed for this network",
                    &message,
                    details,
                )
            }
            Refused::Seats(full) => {
                let (title, message) = seats_text(full);
                answer(
                    StatusCode::FORBIDDEN,
                    &title,
                    &message,
                    serde_json::json!({
                        "limit": full.limit,
                        "in_use": full.in_use,
                        "kind": match full.kind {
                            SeatKind::Seats => "seats",
                            SeatKind::ActiveUsers => "active_users",
                        },
                        "frees_at": full.frees_at,
                    }),
                )
            }
            Refused::AmbiguousIdentity(what) => answer(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!(
                    "The request carries {what} twice with different values; send it once."
                ),
                serde_json::json!({}),
            ),
            Refused::QuotaUnavailable => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Usage cannot be counted right now. Try again shortly.",
                serde_json::json!({}),
            )
            .with_header("Retry-After", "1"),
        }
    }
}

/// The title and message of a seat refusal.
fn seats_text(full: &SeatsFull) -> (String, String) {
    let frees = clock_text(full.frees_at, crate::quota::clock::now());
    match full.kind {
        SeatKind::Seats => (
            format!("All {} seats of this license are in use", full.limit),
            format!(
                "All {} seats of this license are in use. A seat frees when someone stops using the application for a while (the next at {frees}), or when an administrator releases one.",
                full.limit
            ),
        ),
        SeatKind::ActiveUsers => (
            format!("All {} users of this license are taken", full.limit),
            format!(
                "This license allows {} active users, and all are taken. The next place frees at {frees}; an administrator can release one sooner.",
                full.limit
            ),
        ),
    }
}

/// The message and details of a network refusal (the client's own address, which
/// it knows anyway, and the country when one was looked up).
fn network_text(refusal: NetworkRefusal) -> (String, serde_json::Value) {
    match refusal {
        NetworkRefusal::NoAddress => (
            "This license may only be used from certain networks, and this connection's address is unknown.".to_string(),
            serde_json::json!({}),
        ),
        NetworkRefusal::Denied(ip) => (
            format!("This license may not be used from {ip}. Ask your administrator or vendor."),
            serde_json::json!({"client_address": ip.to_string()}),
        ),
        NetworkRefusal::NotAllowed(ip, country) => {
            let mut details = serde_json::json!({"client_address": ip.to_string()});
            if let Some(c) = country {
                details["country"] = c.as_str().into();
            }
            (
                format!(
                    "This license may only be used from the networks or countries it names, and {ip} is not among them. Ask your administrator or vendor."
                ),
                details,
            )
        }
    }
}

/// The one switch between audiences: the `denied` page for browsers, problem+json
/// with `details` for API clients, an error object or a fault for Odoo's RPC callers.
fn answer(
    status: StatusCode,
    error_code: &str,
    title: &str,
    message: &str,
    details: serde_json::Value,
    audience: Audience<'_>,
    templates: &Templates,
) -> LocalResponse {
    let client = match audience {
        Audience::Client(client) => client,
        Audience::JsonRpc(id) => {
            return LocalResponse::jsonrpc_error(status, error_code, title, message, details, id)
        }
        Audience::XmlRpc => return LocalResponse::xmlrpc_fault(status, error_code, message),
    };
    match client {
        ClientKind::Browser => LocalResponse::html(
            status,
            templates.render(
                Page::Denied,
                minijinja::context! { title, message, error_code },
            ),
        ),
        ClientKind::Api => LocalResponse::problem(status, error_code, title, message, details),
    }
}

/// The answer to a license or feature denial: browsers without a usable license go
/// to the activation pages (and back to `target` afterwards).
fn license_answer(
    reason: DenyReason,
    tenant: Option<&TenantSummary>,
    feature: Option<&str>,
    client: Audience<'_>,
    target: &str,
    templates: &Templates,
) -> LocalResponse {
    if let Audience::Client(ClientKind::Browser) = client {
        match reason {
            DenyReason::LicenseMissing => {
                return LocalResponse::redirect(&format!(
                    "/_licgate/activate?{}",
                    next_query(target)
                ))
            }
            DenyReason::LicenseExpired
            | DenyReason::LicenseRevoked
            | DenyReason::LicenseSuspended
            | DenyReason::LicenseInvalid
            | DenyReason::LicenseNotYetValid => {
                return LocalResponse::redirect(&format!(
                    "/_licgate/activation-required?{}",
                    next_query(target)
                ))
            }
            DenyReason::LicenseReadOnly | DenyReason::FeatureNotLicensed => {}
        }
    }
    let tier = tenant.and_then(|t| t.tier_name.as_deref().or(t.tier.as_deref()));
    let (title, message) = human(reason, feature, tier);
    let mut details = serde_json::json!({
        "status": tenant.map_or("UNLICENSED", |t| t.status.as_str())
    });
    if let Some(tier) = tenant.and_then(|t| t.tier.as_deref()) {
        details["current_tier"] = tier.into();
    }
    if let Some(feature) = feature.filter(|_| reason == DenyReason::FeatureNotLicensed) {
        details["required_feature"] = feature.into();
        details["upgrade_hint"] =
            format!("Ask your vendor for a license that includes the feature \"{feature}\".")
                .into();
    }
    if reason == DenyReason::LicenseMissing {
        details["activate_url"] = "/_licgate/activate".into();
    }
    answer(
        StatusCode::FORBIDDEN,
        reason.error_code(),
        title,
        &message,
        details,
        client,
        templates,
    )
}

/// Message, `Retry-After` and details of a client-share refusal.
/// What a usage refusal says, with the refusing rule's limit and window name:
/// "100 of 100 requests this hour are used; the quota resets at 08:00 UTC (in 23 min)."
fn usage_text(
    rule: Rule,
    retry_after_secs: u64,
    resets_at: i64,
    feature: Option<&str>,
) -> (String, u64, &'static str) {
    match rule {
        Rule::Window(rule) => {
            let now = resets_at.saturating_sub_unsigned(retry_after_secs);
            let of_feature = match feature {
                Some(f) => format!(" of the feature \"{f}\""),
                None => String::new(),
            };
            (
                format!(
                    "{limit} of {limit} requests{of_feature} {this} are used; the quota resets at {at} (in {wait}).",
                    limit = rule.limit,
                    this = rule.window.this(),
                    at = clock_text(resets_at, now),
                    wait = duration_text(retry_after_secs),
                ),
                rule.limit,
                rule.window.name(),
            )
        }
        Rule::Smooth(rule) => (
            format!(
                "Requests are coming too fast: this license allows {burst} at once, then one every {period}. Try again in {retry_after_secs} s.",
                burst = rule.burst,
                period = humantime::format_duration(rule.period),
            ),
            u64::from(rule.burst),
            "burst",
        ),
    }
}

fn share_text(refusal: ShareRefusal) -> (String, u64, serde_json::Value) {
    match refusal {
        ShareRefusal::Rate {
            rule,
            share_limit,
            retry_after_secs,
        } => (
            format!(
                "This client has used its share of this site's request quota ({share_limit} of {} requests per {}). Try again in {retry_after_secs} s.",
                rule.limit,
                rule.window.name()
            ),
            retry_after_secs,
            serde_json::json!({
                "share_limit": share_limit,
                "limit": rule.limit,
                "window": rule.window.name(),
                "retry_after": retry_after_secs,
            }),
        ),
        ShareRefusal::Concurrency { share_limit } => (
            format!(
                "This client already has {share_limit} requests open, its share of this site's concurrent connections. Try again shortly."
            ),
            1,
            serde_json::json!({"share_limit": share_limit, "retry_after": 1}),
        ),
    }
}

/// `?next=<target>` for a redirect back to `target` (a normalized local path).
pub(crate) fn next_query(target: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("next={encoded}")
}

/// Title and explanation of a denial, for people.
pub(crate) fn human(
    reason: DenyReason,
    feature: Option<&str>,
    tier: Option<&str>,
) -> (&'static str, String) {
    match reason {
        DenyReason::LicenseMissing => (
            "License required",
            "No license is installed for this site. Activate a license to continue.".into(),
        ),
        DenyReason::LicenseExpired => (
            "License expired",
            "The license for this site has expired. Activate a renewed license to continue.".into(),
        ),
        DenyReason::LicenseRevoked => (
            "License revoked",
            "The license for this site was revoked. Activate a new license to continue.".into(),
        ),
        DenyReason::LicenseSuspended => (
            "License suspended",
            "The vendor suspended the license for this site. It is served again as soon as the vendor reinstates it.".into(),
        ),
        DenyReason::LicenseInvalid => (
            "License invalid",
            "The installed license could not be verified. Activate a valid license to continue.".into(),
        ),
        DenyReason::LicenseNotYetValid => (
            "License not yet valid",
            "The installed license only starts later. Activate a license that is valid now.".into(),
        ),
        DenyReason::LicenseReadOnly => (
            "Read-only access",
            "The license has expired: only viewing is allowed until it is renewed.".into(),
        ),
        DenyReason::FeatureNotLicensed => (
            "Feature not licensed",
            format!(
                "This part of the application needs the feature \"{}\", which the current plan{} does not include.",
                feature.unwrap_or("?"),
                tier.map(|t| format!(" ({t})")).unwrap_or_default()
            ),
        ),
    }
}
