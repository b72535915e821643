//! Quotas from the license: rate limits per tenant and per feature (GCRA), and
//! concurrency leases.
//!
//! Semantics of a rate limit "N per window" (minute, hour or day): requests are spaced
//! by window/N on average (the generic cell rate algorithm), with a burst allowance of
//! `limits.burst` requests, or by default one minute's worth of the limit (N for a
//! per-minute limit, N/60 for per-hour, N/1440 for per-day, at least 1). So a tenant
//! can make at most `burst` requests at once, and at most `burst + N` in any window of
//! that length; "5000 per hour" cannot be spent in one second. Several windows may
//! apply; all must hold. They are checked from the shortest to the longest window, so
//! a request refused by a short window consumes nothing.

// Counts, limits and windows: a cast that truncates or flips a sign is a quota bug.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod local;
pub(crate) mod redis;
pub(crate) mod share;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::license::claims::{FeatureLimits, Limits};
use crate::license::TenantSummary;

/// `n` as a `u32`, saturating (negative values are 0).
pub(crate) fn saturating_u32<N: TryInto<u32> + PartialOrd + Default>(n: N) -> u32 {
    if n < N::default() {
        return 0;
    }
    n.try_into().unwrap_or(u32::MAX)
}

/// `n` as a `u64`, saturating (negative values are 0).
pub(crate) fn saturating_u64<N: TryInto<u64> + PartialOrd + Default>(n: N) -> u64 {
    if n < N::default() {
        return 0;
    }
    n.try_into().unwrap_or(u64::MAX)
}

/// Whole seconds of `d`, rounded up.
pub(crate) fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What the quotas need of one licensed tenant, built from its license facts when a
/// snapshot is published: its rules, its link to its rate state, and its concurrency
/// slots (carried from snapshot to snapshot while the tenant stays licensed).
#[derive(Debug)]
pub struct TenantQuota {
    /// The tenant's license facts (its name and limits).
    pub license: Arc<TenantSummary>,
    /// Rate rules from `limits`, shortest window first (empty: no rate limit).
    pub rate_rules: Arc<[RateRule]>,
    /// Rate rules per feature from `feature_limits`.
    pub feature_rules: FeatureRules,
    /// The tenant's local rate state, remembered at its first quota check.
    pub state: local::StateSlot,
    /// Concurrency slots taken.
    pub slots: Arc<Slots>,
}

impl TenantQuota {
    /// The quota view of `license`, counting concurrency in `slots`.
    pub fn new(license: Arc<TenantSummary>, slots: Arc<Slots>) -> TenantQuota {
        TenantQuota {
            rate_rules: tenant_rules(&license.limits).into(),
            feature_rules: license
                .feature_limits
                .iter()
                .map(|(f, l)| (f.as_str().into(), feature_rules(l)))
                .filter(|(_, rules): &(Box<str>, Vec<_>)| !rules.is_empty())
                .collect(),
            state: local::StateSlot::default(),
            slots,
            license,
        }
    }

    /// The tenant's name.
    pub fn tenant(&self) -> &Arc<str> {
        &self.license.tenant
    }

    /// `limits.max_concurrent_connections`.
    pub fn max_concurrent(&self) -> Option<u64> {
        self.license.limits.max_concurrent_connections
    }

    /// The quota view of `license` alone (fresh slots; tests and tools).
    pub fn of(license: &TenantSummary) -> TenantQuota {
        TenantQuota::new(Arc::new(license.clone()), Arc::default())
    }
}

/// The quota view of a `VALID` tenant with only these limits (unit tests).
#[cfg(test)]
pub(crate) fn test_quota(
    tenant: &str,
    limits: Limits,
    feature_limits: std::collections::BTreeMap<String, FeatureLimits>,
) -> TenantQuota {
    TenantQuota::of(&TenantSummary::with_limits(tenant, limits, feature_limits))
}

/// A tenant's taken concurrency slots (requests in flight under
/// `max_concurrent_connections`).
#[derive(Debug, Default)]
pub struct Slots(AtomicU64);

impl Slots {
    /// Takes a slot if fewer than `limit` are taken; true when taken.
    #[inline]
    pub fn take(&self, limit: u64) -> bool {
        if self.0.fetch_add(1, Ordering::AcqRel) >= limit {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a slot taken by [`Slots::take`].
    #[inline]
    pub fn release(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// Slots taken now.
    pub fn taken(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A tenant's rate rules per feature. Boxed, and absent when there are none (most
/// tenants): an empty `HashMap` alone is 48 bytes, times 100,000 tenants.
#[derive(Debug, Clone, Default)]
#[allow(
    clippy::box_collection,
    reason = "the point is the size inline: 8 bytes instead of 48"
)]
pub struct FeatureRules(Option<Box<HashMap<Box<str>, Vec<RateRule>>>>);

impl FeatureRules {
    /// The rules of `feature`, if it has a quota.
    pub fn get(&self, feature: &str) -> Option<&Vec<RateRule>> {
        self.0.as_ref()?.get(feature)
    }

    /// Every feature with a quota and its rules, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<str>, &Vec<RateRule>)> {
        self.0.iter().flat_map(|map| map.iter())
    }
}

impl FromIterator<(Box<str>, Vec<RateRule>)> for FeatureRules {
    fn from_iter<I: IntoIterator<Item = (Box<str>, Vec<RateRule>)>>(iter: I) -> Self {
        let map: HashMap<_, _> = iter.into_iter().collect();
        FeatureRules((!map.is_empty()).then(|| Box::new(map)))
    }
}

/// The window of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn seconds(self) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3_600,
            Window::Day => 86_400,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// One rate limit: `limit` requests per `window`, with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateRule {
    pub window: Window,
    pub limit: u64,
    pub burst: u32,
}

impl RateRule {
    /// `limit` per `window`; `burst` when given, else one minute's worth (≥ 1).
    pub fn new(window: Window, limit: u64, burst: Option<u64>) -> Option<RateRule> {
        if limit == 0 {
            return None;
        }
        let per_minute = limit.saturating_mul(60).div_ceil(window.seconds());
        let burst = saturating_u32(burst.unwrap_or(per_minute).max(1));
        Some(RateRule {
            window,
            limit,
            burst,
        })
    }
}

/// The rate rules of a tenant's combined `limits`, shortest window first.
pub fn tenant_rules(limits: &Limits) -> Vec<RateRule> {
    [
        (Window::Minute, limits.requests_per_minute),
        (Window::Hour, limits.requests_per_hour),
        (Window::Day, limits.requests_per_day),
    ]
    .into_iter()
    .filter_map(|(w, n)| RateRule::new(w, n?, limits.burst))
    .collect()
}

/// The rate rules of one feature's quota, shortest window first.
pub fn feature_rules(limits: &FeatureLimits) -> Vec<RateRule> {
    [
        (Window::Hour, limits.requests_per_hour),
        (Window::Day, limits.requests_per_day),
    ]
    .into_iter()
    .filter_map(|(w, n)| RateRule::new(w, n?, None))
    .collect()
}

/// The result of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// No quota governs this request.
    Unlimited,
    /// Allowed; the tightest rule's figures for the `RateLimit-*` headers.
    Allowed {
        limit: u64,
        remaining: u32,
        reset_secs: u64,
    },
    /// The quota backend cannot be used and `on_error = "deny"`: 503, never 429.
    Unavailable,
    /// Refused by `rule`; retry after this many seconds (rounded up).
    Limited {
        rule: RateRule,
        retry_after_secs: u64,
        /// The refusal came from a feature quota.
        feature: bool,
    },
}

/// One rate rule's figures at this moment (admin API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleUsage {
    /// `minute`, `hour` or `day`.
    pub window: &'static str,
    /// The feature whose quota this is (`None`: the tenant's own rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    pub limit: u64,
    pub burst: u32,
    /// Requests that would be allowed right now in a burst.
    pub remaining: u32,
}

/// A place where rate quotas are counted.
#[allow(async_fn_in_trait)]
pub trait QuotaBackend {
    /// Counts one request of `tenant` (needing `feature`, if any).
    async fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome;
}

impl QuotaBackend for local::LocalQuotas {
    async fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        local::LocalQuotas::check(self, tenant, feature)
    }
}

impl QuotaBackend for redis::RedisQuotas {
    async fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        redis::RedisQuotas::check(self, tenant, feature).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_burst_is_one_minutes_worth() {
        assert_eq!(RateRule::new(Window::Hour, 5000, None).unwrap().burst, 84);
        assert_eq!(RateRule::new(Window::Minute, 100, None).unwrap().burst, 100);
        assert_eq!(RateRule::new(Window::Day, 100, None).unwrap().burst, 1);
        assert_eq!(
            RateRule::new(Window::Hour, 5000, Some(10)).unwrap().burst,
            10
        );
        assert_eq!(RateRule::new(Window::Hour, 0, None), None);
    }

    #[test]
    fn rules_come_shortest_window_first() {
        let limits = Limits {
            requests_per_day: Some(10_000),
            requests_per_minute: Some(100),
            ..Limits::default()
        };
        let windows: Vec<_> = tenant_rules(&limits).iter().map(|r| r.window).collect();
        assert_eq!(windows, vec![Window::Minute, Window::Day]);
    }
}
