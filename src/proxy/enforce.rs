//! Enforcement state shared by all requests, and the local responses for denials.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use arc_swap::ArcSwap;

use super::rules::Rules;
use crate::config::Config;
use crate::config::QuotaConfig;
use crate::license::{LicenseManager, TenantSummary};
use crate::metrics::Metrics;
use crate::pages::{render, Templates};
use crate::policy::decide::DenyReason;
use crate::quota::local::LocalQuotas;
use crate::quota::redis::RedisQuotas;
use crate::quota::share::{ClientShares, ShareRefusal};
use crate::quota::RateRule;
use crate::response::{ClientKind, LocalResponse};
use crate::throttle::{AttemptThrottle, LogThrottle};

/// Activation attempts allowed per client (IPv4 address or IPv6 /64) per minute.
pub const ACTIVATIONS_PER_MINUTE: u32 = 10;
/// Clients whose activation attempts are remembered at once (about 100 B each).
pub const ACTIVATION_CLIENTS: usize = 50_000;

/// Everything enforcement needs: the configuration-derived [`Rules`] (swapped on
/// reload) and the state that outlives reloads (licenses, quotas, limiters, metrics).
pub struct Enforcement {
    pub rules: ArcSwap<Rules>,
    pub licenses: Option<Arc<LicenseManager>>,
    pub metrics: Arc<Metrics>,
    pub activation_limiter: AttemptThrottle,
    /// Shadow-mode denials are logged at most once a second (with a count).
    pub shadow_log: LogThrottle,
    /// Concurrency leases, and rate quotas unless Redis counts them.
    pub quotas: Arc<LocalQuotas>,
    /// The fleet-wide rate quota backend, when `quota.backend = "redis"`.
    pub redis: Option<RedisQuotas>,
    /// Per-client shares of tenant quotas (`quota.per_client_share`), when set.
    pub shares: Option<ClientShares>,
    /// Signs the activation form's CSRF tokens (the store's secret; without a store, one
    /// made at start).
    pub csrf_key: ring::hmac::Key,
}

impl Enforcement {
    /// Builds enforcement for `config` with its first `rules`.
    pub fn new(
        config: &Config,
        rules: Rules,
        licenses: Option<Arc<LicenseManager>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Enforcement> {
        let csrf_secret = match &licenses {
            Some(manager) => manager
                .store()
                .csrf_secret()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => {
                let mut secret = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                    .map_err(|_| std::io::Error::other("no system randomness"))?;
                secret
            }
        };
        Ok(Enforcement {
            shares: config
                .per_client_share
                .map(|share| ClientShares::new(share, crate::quota::share::MAX_CLIENTS)),
            csrf_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &csrf_secret),
            rules: ArcSwap::from_pointee(rules),
            licenses,
            activation_limiter: AttemptThrottle::new(
                NonZeroU32::new(ACTIVATIONS_PER_MINUTE).expect("non-zero"),
                ACTIVATION_CLIENTS,
            ),
            shadow_log: LogThrottle::new(Duration::from_secs(1)),
            quotas: Arc::new(LocalQuotas::default()),
            redis: match &config.quota {
                QuotaConfig::Local => None,
                QuotaConfig::Redis(redis) => Some(
                    RedisQuotas::new(redis.clone(), metrics.quota_backend_errors.clone())
                        .map_err(|e| std::io::Error::other(format!("quota.redis.url: {e}")))?,
                ),
            },
            metrics,
        })
    }

    /// This installation's instance id ("" without licensing).
    pub fn instance_id(&self) -> String {
        self.licenses
            .as_ref()
            .map(|m| m.settings().verifier.instance_id().to_string())
            .unwrap_or_default()
    }
}

/// `?next=<target>` for a redirect back to `target` (a normalized local path).
pub fn next_query(target: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("next={encoded}")
}

/// The local response for a denial of the request for `target`.
pub fn deny_response(
    reason: DenyReason,
    tenant: Option<&TenantSummary>,
    feature: Option<&str>,
    client: ClientKind,
    target: &str,
    templates: &Templates,
) -> LocalResponse {
    let tier = tenant.and_then(|t| t.tier_name.as_deref().or(t.tier.as_deref()));
    let status_text = tenant.map_or("UNLICENSED", |t| t.status.as_str());
    match (client, reason) {
        (ClientKind::Browser, DenyReason::LicenseMissing) => {
            LocalResponse::redirect(&format!("/_licgate/activate?{}", next_query(target)))
        }
        (
            ClientKind::Browser,
            DenyReason::LicenseExpired
            | DenyReason::LicenseRevoked
            | DenyReason::LicenseInvalid
            | DenyReason::LicenseNotYetValid,
        ) => LocalResponse::redirect(&format!(
            "/_licgate/activation-required?{}",
            next_query(target)
        )),
        (ClientKind::Browser, _) => {
            let (title, message) = human(reason, feature, tier);
            LocalResponse::html(
                StatusCode::FORBIDDEN,
                render(
                    &templates.denied,
                    &[
                        ("title", title),
                        ("message", &message),
                        ("error_code", reason.error_code()),
                    ],
                    &[],
                ),
            )
        }
        (ClientKind::Api, _) => {
            let (title, message) = human(reason, feature, tier);
            let mut details = serde_json::json!({ "status": status_text });
            if let Some(tier) = tenant.and_then(|t| t.tier.as_deref()) {
                details["current_tier"] = tier.into();
            }
            if let Some(feature) = feature.filter(|_| reason == DenyReason::FeatureNotLicensed) {
                details["required_feature"] = feature.into();
                details["upgrade_hint"] = format!(
                    "Ask your vendor for a license that includes the feature \"{feature}\"."
                )
                .into();
            }
            if reason == DenyReason::LicenseMissing {
                details["activate_url"] = "/_licgate/activate".into();
            }
            LocalResponse::problem(
                StatusCode::FORBIDDEN,
                reason.error_code(),
                title,
                &message,
                details,
            )
        }
    }
}

/// Title and explanation of a denial, for people.
pub fn human(
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

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` values.
pub type RateLimitHeaders = (u64, u32, u64);

/// The 429 for a request refused by `rule` (a feature quota when `feature` is set).
pub fn usage_limited_response(
    rule: RateRule,
    retry_after_secs: u64,
    feature: Option<&str>,
    client: ClientKind,
    templates: &Templates,
) -> LocalResponse {
    let what = match feature {
        Some(f) => format!("the quota of the feature \"{f}\""),
        None => "the request quota".to_string(),
    };
    let message = format!(
        "This site has used {what} of its license ({} requests per {}). Try again in {retry_after_secs} s.",
        rule.limit,
        rule.window.name()
    );
    let response = match client {
        ClientKind::Browser => LocalResponse::html(
            StatusCode::TOO_MANY_REQUESTS,
            render(
                &templates.denied,
                &[
                    ("title", "Usage limit reached"),
                    ("message", &message),
                    ("error_code", "USAGE_LIMIT_EXCEEDED"),
                ],
                &[],
            ),
        ),
        ClientKind::Api => {
            let mut details = serde_json::json!({
                "limit": rule.limit,
                "window": rule.window.name(),
                "retry_after": retry_after_secs,
            });
            if let Some(f) = feature {
                details["feature"] = f.into();
            }
            LocalResponse::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "USAGE_LIMIT_EXCEEDED",
                "Usage limit reached",
                &message,
                details,
            )
        }
    };
    response
        .with_header("Retry-After", retry_after_secs.to_string())
        .with_header("RateLimit-Limit", rule.limit.to_string())
        .with_header("RateLimit-Remaining", "0")
        .with_header("RateLimit-Reset", retry_after_secs.to_string())
}

/// The 503 when the quota backend cannot be used and `on_error = "deny"`.
pub fn quota_unavailable_response(client: ClientKind, templates: &Templates) -> LocalResponse {
    let message = "Usage cannot be counted right now. Try again shortly.";
    match client {
        ClientKind::Browser => LocalResponse::html(
            StatusCode::SERVICE_UNAVAILABLE,
            render(
                &templates.denied,
                &[
                    ("title", "Temporarily unavailable"),
                    ("message", message),
                    ("error_code", "QUOTA_UNAVAILABLE"),
                ],
                &[],
            ),
        ),
        ClientKind::Api => LocalResponse::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "QUOTA_UNAVAILABLE",
            "Temporarily unavailable",
            message,
            serde_json::json!({}),
        ),
    }
    .with_header("Retry-After", "1")
}

/// The 429 for a tenant whose concurrent connections are all in use.
pub fn concurrency_limited_response(
    limit: u64,
    client: ClientKind,
    templates: &Templates,
) -> LocalResponse {
    let message = format!(
        "This site already has {limit} requests or connections open, the most its license allows. Try again shortly."
    );
    let response = match client {
        ClientKind::Browser => LocalResponse::html(
            StatusCode::TOO_MANY_REQUESTS,
            render(
                &templates.denied,
                &[
                    ("title", "Too many connections"),
                    ("message", &message),
                    ("error_code", "CONCURRENCY_LIMIT_EXCEEDED"),
                ],
                &[],
            ),
        ),
        ClientKind::Api => LocalResponse::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "CONCURRENCY_LIMIT_EXCEEDED",
            "Too many connections",
            &message,
            serde_json::json!({"limit": limit, "retry_after": 1}),
        ),
    };
    response.with_header("Retry-After", "1")
}

/// The 429 for a client over its share of the tenant's quota (the tenant's other
/// clients are not refused).
pub fn client_share_response(
    refusal: ShareRefusal,
    client: ClientKind,
    templates: &Templates,
) -> LocalResponse {
    let (message, retry_after, details) = match refusal {
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
    };
    let response = match client {
        ClientKind::Browser => LocalResponse::html(
            StatusCode::TOO_MANY_REQUESTS,
            render(
                &templates.denied,
                &[
                    ("title", "Too many requests from this client"),
                    ("message", &message),
                    ("error_code", "CLIENT_SHARE_EXCEEDED"),
                ],
                &[],
            ),
        ),
        ClientKind::Api => LocalResponse::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "CLIENT_SHARE_EXCEEDED",
            "Too many requests from this client",
            &message,
            details,
        ),
    };
    response.with_header("Retry-After", retry_after.to_string())
}

/// The 400 for a target that cannot be normalized safely.
pub fn bad_path_response(reason: &str, client: ClientKind, templates: &Templates) -> LocalResponse {
    bad_request_response("BAD_REQUEST_PATH", reason, client, templates)
}

/// A 400 with `error_code`: a page for browsers, problem+json for API clients.
pub fn bad_request_response(
    error_code: &'static str,
    reason: &str,
    client: ClientKind,
    templates: &Templates,
) -> LocalResponse {
    match client {
        ClientKind::Browser => LocalResponse::html(
            StatusCode::BAD_REQUEST,
            render(
                &templates.denied,
                &[
                    ("title", "Bad request"),
                    ("message", reason),
                    ("error_code", error_code),
                ],
                &[],
            ),
        ),
        ClientKind::Api => LocalResponse::problem(
            StatusCode::BAD_REQUEST,
            error_code,
            "Bad Request",
            reason,
            serde_json::json!({}),
        ),
    }
}
