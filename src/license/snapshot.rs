//! The immutable per-tenant license summaries the request path reads.
//!
//! A [`LicenseSnapshot`] is built whenever licenses, revocations or the status of some
//! tenant change, and swapped in whole (`ArcSwap`); readers never lock and never
//! allocate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pingora::http::{AppendedHeadersBuilder, PreparsedHeaderName};
use serde::Serialize;

use super::claims::{FeatureLimits, Limits, UnixTime};
use super::status::{Combined, Status};
use super::store::StoreProblem;
use super::time_text;

/// One tenant's license summary.
#[derive(Debug, Clone, Serialize)]
pub struct TenantSummary {
    /// The tenant's name (shared with the snapshot's index and the quota state).
    pub tenant: Arc<str>,
    pub status: Status,
    pub tier: Option<Arc<str>>,
    pub tier_name: Option<Arc<str>>,
    /// Granted features, sorted (binary search), names shared across tenants.
    pub features: Box<[Arc<str>]>,
    pub limits: Limits,
    pub feature_limits: std::collections::BTreeMap<String, FeatureLimits>,
    pub flags: Vec<String>,
    pub expires_at: Option<UnixTime>,
    /// `jti` of the licenses in force.
    pub license_ids: Vec<String>,
    /// Human-readable warnings (expiring soon, grace, read-only).
    pub warnings: Vec<String>,
    /// `X-Licgate-Tenant/-Status/-Tier/-Features/-License-Id` for the upstream,
    /// built once per snapshot so requests only clone them.
    #[serde(skip)]
    pub upstream_headers: UpstreamHeaders,
    /// `X-Licgate-Warning` for the client while `EXPIRING_SOON`, `GRACE`, `READ_ONLY`.
    #[serde(skip)]
    pub warning_header: Option<Box<http::HeaderValue>>,
    /// Rate rules from `limits`, shortest window first (empty: no rate limit).
    #[serde(skip)]
    pub rate_rules: Arc<[crate::quota::RateRule]>,
    /// Rate rules per feature from `feature_limits`.
    #[serde(skip)]
    pub feature_rules: crate::quota::FeatureRules,
    /// This tenant's request counters (shared by every snapshot while it is licensed).
    #[serde(skip)]
    pub counters: Arc<crate::metrics::TenantCounters>,
    /// This tenant's local rate state, remembered at its first quota check.
    #[serde(skip)]
    pub quota_state: crate::quota::local::StateSlot,
}

/// The names of the headers in [`UpstreamHeaders`], in order.
pub static UPSTREAM_HEADER_NAMES: [PreparsedHeaderName; 5] = [
    PreparsedHeaderName::from_static("x-licgate-tenant", "X-Licgate-Tenant"),
    PreparsedHeaderName::from_static("x-licgate-status", "X-Licgate-Status"),
    PreparsedHeaderName::from_static("x-licgate-tier", "X-Licgate-Tier"),
    PreparsedHeaderName::from_static("x-licgate-features", "X-Licgate-Features"),
    PreparsedHeaderName::from_static("x-licgate-license-id", "X-Licgate-License-Id"),
];

/// The values of the `X-Licgate-*` headers sent upstream (names in
/// [`UPSTREAM_HEADER_NAMES`]), compact: the four variable values one after another in
/// one buffer, and where they end (about 50 bytes per tenant). Each request writes
/// them as header lines after the request's own headers ([`Self::write_lines`]).
#[derive(Debug, Clone)]
pub struct UpstreamHeaders {
    /// Tenant, tier, features and license ids, each a valid header value.
    text: Box<[u8]>,
    /// Where the tenant, tier and features end in `text`.
    ends: [u32; 3],
    status: Status,
}

impl Default for UpstreamHeaders {
    fn default() -> UpstreamHeaders {
        UpstreamHeaders::new("", Status::Unlicensed, "", "", "")
    }
}

impl UpstreamHeaders {
    pub fn new(
        tenant: &str,
        status: Status,
        tier: &str,
        features: &str,
        license_ids: &str,
    ) -> UpstreamHeaders {
        let parts = [tenant, tier, features, license_ids].map(encoded_header_text);
        let mut ends = [0u32; 3];
        let mut end = 0;
        for (slot, part) in ends.iter_mut().zip(&parts) {
            end += part.len();
            *slot = u32::try_from(end).unwrap_or(u32::MAX);
        }
        let text = parts.concat().into_bytes().into_boxed_slice();
        UpstreamHeaders { text, ends, status }
    }

    /// Writes the headers, in order, as lines for the upstream request.
    pub fn write_lines(&self, lines: &mut AppendedHeadersBuilder) {
        let [tenant, tier, features] = self.ends.map(|e| e as usize);
        let bounds = [
            Some((0, tenant)),
            None,
            Some((tenant, tier)),
            Some((tier, features)),
            Some((features, self.text.len())),
        ];
        for (name, bounds) in UPSTREAM_HEADER_NAMES.iter().zip(bounds) {
            let value = match bounds {
                None => self.status.as_str().as_bytes(),
                Some((from, to)) => &self.text[from..to],
            };
            // Each part was checked (or percent-encoded) by `encoded_header_text`.
            let _ = lines.value_bytes(name, value);
        }
    }
}

/// `text` as a header value's text: as is when it is visible ASCII (or spaces
/// inside), percent-encoded otherwise.
fn encoded_header_text(text: &str) -> String {
    if http::HeaderValue::from_str(text).is_ok() {
        text.to_string()
    } else {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }
}

/// A header value for `text`: as is when it is visible ASCII, percent-encoded otherwise.
pub fn header_value(text: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&encoded_header_text(text))
        .unwrap_or(http::HeaderValue::from_static(""))
}

/// Shares equal strings (feature names, tiers) between the tenants of one snapshot:
/// 100,000 tenants with the same plan keep one copy of each name.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

impl TenantSummary {
    /// A `VALID` summary of `tenant` with only `limits` and `feature_limits` (tests).
    #[cfg(test)]
    pub fn with_limits(
        tenant: &str,
        limits: Limits,
        feature_limits: std::collections::BTreeMap<String, FeatureLimits>,
    ) -> TenantSummary {
        TenantSummary::new(
            tenant,
            Combined {
                status: Status::Valid,
                tier: None,
                tier_name: None,
                features: Default::default(),
                limits,
                feature_limits,
                flags: Default::default(),
                expires_at: None,
                grace_until: None,
                read_only_until: None,
                license_ids: vec![],
                next_change: None,
            },
        )
    }

    /// Builds the summary of `tenant` from its combined licenses, with fresh counters.
    pub fn new(tenant: &str, combined: Combined) -> TenantSummary {
        TenantSummary::with_counters(tenant, combined, Arc::default())
    }

    /// Builds the summary of `tenant` from its combined licenses, counting into
    /// `counters`.
    pub fn with_counters(
        tenant: &str,
        combined: Combined,
        counters: Arc<crate::metrics::TenantCounters>,
    ) -> TenantSummary {
        TenantSummary::build(Arc::from(tenant), combined, counters, &mut Names::default())
    }

    /// Builds the summary of `tenant`, sharing names through `names`.
    pub fn build(
        tenant: Arc<str>,
        combined: Combined,
        counters: Arc<crate::metrics::TenantCounters>,
        names: &mut Names,
    ) -> TenantSummary {
        let expires = combined.expires_at.map(time_text);
        let until = |t: Option<UnixTime>| t.map(time_text).unwrap_or_default();
        let warnings = match (combined.status, expires) {
            (Status::ExpiringSoon, Some(exp)) => vec![format!("license expires on {exp}")],
            (Status::Grace, Some(exp)) => vec![format!(
                "license expired on {exp}; grace period until {}",
                until(combined.grace_until)
            )],
            (Status::ReadOnly, Some(exp)) => vec![format!(
                "license expired on {exp}; read-only access until {}",
                until(combined.read_only_until)
            )],
            _ => Vec::new(),
        };
        let mut features: Vec<&str> = combined.features.iter().map(String::as_str).collect();
        features.sort_unstable();
        let upstream_headers = UpstreamHeaders::new(
            &tenant,
            combined.status,
            combined.tier.as_deref().unwrap_or(""),
            &features.join(","),
            &combined.license_ids.join(","),
        );
        let warning_header = warnings.first().map(|w| Box::new(header_value(w)));
        let rate_rules = crate::quota::tenant_rules(&combined.limits).into();
        let feature_rules = combined
            .feature_limits
            .iter()
            .map(|(f, l)| (f.as_str().into(), crate::quota::feature_rules(l)))
            .filter(|(_, rules): &(Box<str>, Vec<_>)| !rules.is_empty())
            .collect();
        TenantSummary {
            counters,
            quota_state: Default::default(),
            upstream_headers,
            warning_header,
            rate_rules,
            feature_rules,
            tenant,
            status: combined.status,
            tier: combined.tier.as_deref().map(|t| names.get(t)),
            tier_name: combined.tier_name.as_deref().map(|t| names.get(t)),
            features: features.iter().map(|f| names.get(f)).collect(),
            limits: combined.limits,
            feature_limits: combined.feature_limits,
            flags: combined.flags.into_iter().collect(),
            expires_at: combined.expires_at,
            license_ids: combined.license_ids,
            warnings,
        }
    }

    /// Whether `feature` is granted (allocation-free).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features
            .binary_search_by(|f| (**f).cmp(feature))
            .is_ok()
    }
}

/// Tenant name → summary. Hashed with foldhash, seeded per process: a lookup (one
/// per request) costs a fraction of SipHash, and the keys come from signed licenses.
pub type TenantMap = HashMap<Arc<str>, Arc<TenantSummary>, foldhash::fast::RandomState>;

/// All tenants' summaries at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LicenseSnapshot {
    /// This installation's id (what `aud` must name).
    pub instance_id: String,
    /// Tenants with at least one license file (valid or not).
    pub tenants: TenantMap,
    /// When this snapshot was judged.
    pub built_at: UnixTime,
    /// The next instant at which some tenant's status changes.
    pub next_change: Option<UnixTime>,
    /// License files that could not be used.
    pub problems: Vec<StoreProblem>,
}

impl LicenseSnapshot {
    /// The summary of `tenant`, if it has any license.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantSummary> {
        self.tenants.get(tenant).map(|t| &**t)
    }

    /// A shared handle on the summary of `tenant` (no allocation).
    pub fn tenant_arc(&self, tenant: &str) -> Option<Arc<TenantSummary>> {
        self.tenants.get(tenant).cloned()
    }

    /// The status of `tenant` (`UNLICENSED` when it has none).
    pub fn status(&self, tenant: &str) -> Status {
        self.tenant(tenant)
            .map(|t| t.status)
            .unwrap_or(Status::Unlicensed)
    }
}
