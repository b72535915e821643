//! Quotas from the license: windowed request counts per tenant and per feature,
//! optional smoothing, and concurrency leases.
//!
//! A rate limit "N per window" (`requests_per_minute`, `_hour`, `_day`, `_month`) is a
//! count: at most N requests in each calendar window, aligned on UTC (a month is the
//! calendar month), counted exactly; the count starts again at 0 when the window
//! ends. Every window that is set must hold, and a refused request counts in none.
//! Across a window's edge a tenant can make up to 2N requests in a short time (N at
//! the end of one window, N at the start of the next): that is how GitHub, Kong and
//! Envoy count "N per hour", and what a customer can reason about ("100 this hour").
//! Smoothing is opt-in: `limits.requests_per_second` (with `burst`, default one
//! second's worth) or `limits.burst` alone (the shortest window's average rate with
//! that burst) add a GCRA rule.

// Counts, limits and windows: a cast that truncates or flips a sign is a quota bug.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod clock;
pub mod durable;
pub mod local;
pub(crate) mod redis;
pub(crate) mod share;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use window::Window;

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

/// Seconds from `now` until `end` (Unix seconds), at least 1: a `Reset` or
/// `Retry-After` never says 0.
#[inline]
pub(crate) fn secs_until(end: i64, now: i64) -> u64 {
    end.saturating_sub(now).max(1).unsigned_abs()
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
    /// Rate rules from `limits` (empty: no rate limit).
    pub rate_rules: Arc<Rules>,
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
        TenantQuota::with_cache(license, slots, &mut RuleCache::default())
    }

    /// [`TenantQuota::new`], sharing rules equal to ones in `cache` (tenants on one
    /// plan share one copy).
    pub fn with_cache(
        license: Arc<TenantSummary>,
        slots: Arc<Slots>,
        cache: &mut RuleCache,
    ) -> TenantQuota {
        TenantQuota {
            rate_rules: cache.intern(tenant_rules(&license.limits)),
            feature_rules: license
                .feature_limits
                .iter()
                .map(|(f, l)| (f.as_str().into(), cache.intern(feature_rules(l))))
                .filter(|(_, rules): &(Box<str>, Arc<Rules>)| !rules.is_empty())
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

/// Rules already made, by value, so that tenants with the same limits share one copy
/// (at 100,000 tenants on a few plans, 8 MB less).
#[derive(Debug, Default)]
pub struct RuleCache(HashMap<Rules, Arc<Rules>>);

impl RuleCache {
    /// The shared copy of `rules`.
    pub fn intern(&mut self, rules: Rules) -> Arc<Rules> {
        if let Some(known) = self.0.get(&rules) {
            return Arc::clone(known);
        }
        let shared = Arc::new(rules.clone());
        self.0.insert(rules, Arc::clone(&shared));
        shared
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
pub struct FeatureRules(Option<Box<HashMap<Box<str>, Arc<Rules>>>>);

impl FeatureRules {
    /// The rules of `feature`, if it has a quota.
    pub fn get(&self, feature: &str) -> Option<&Arc<Rules>> {
        self.0.as_ref()?.get(feature)
    }

    /// Every feature with a quota and its rules, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<str>, &Arc<Rules>)> {
        self.0.iter().flat_map(|map| map.iter())
    }
}

impl FromIterator<(Box<str>, Arc<Rules>)> for FeatureRules {
    fn from_iter<I: IntoIterator<Item = (Box<str>, Arc<Rules>)>>(iter: I) -> Self {
        let map: HashMap<_, _> = iter.into_iter().collect();
        FeatureRules((!map.is_empty()).then(|| Box::new(map)))
    }
}

/// The largest count a window holds (2^36 − 1, about 68.7 billion): a limit above it
/// counts as this.
pub const MAX_WINDOW_LIMIT: u64 = (1 << 36) - 1;

/// "At most `limit` requests in each calendar `window`", counted exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowRule {
    pub window: Window,
    pub limit: u64,
}

/// GCRA smoothing (`limits.burst`, `limits.requests_per_second`): at most `burst`
/// requests at once, then one per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmoothRule {
    pub period: Duration,
    pub burst: u32,
}

impl SmoothRule {
    /// The window the rule's burst refills in: `burst` periods (at least 1 s).
    pub fn refill_secs(&self) -> u64 {
        ceil_secs(self.period * self.burst).max(1)
    }
}

/// One rule of a quota: a windowed count or the smoothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Window(WindowRule),
    Smooth(SmoothRule),
}

/// The rate rules of a tenant (or of one of its features): windowed counts, shortest
/// window first, each of which must hold, and an optional smoothing rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rules {
    pub windows: Box<[WindowRule]>,
    pub smooth: Option<SmoothRule>,
}

impl Rules {
    /// Whether no rule limits anything.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.smooth.is_none()
    }

    /// Windowed rules of `(window, limit)` pairs (absent or 0: no rule), shortest first.
    fn windows(limits: [(Window, Option<u64>); 4]) -> Box<[WindowRule]> {
        limits
            .into_iter()
            .filter_map(|(window, limit)| {
                let limit = limit.filter(|n| *n > 0)?.min(MAX_WINDOW_LIMIT);
                Some(WindowRule { window, limit })
            })
            .collect()
    }
}

/// The rate rules of a tenant's combined `limits`: a count per calendar window, and
/// smoothing only when `requests_per_second` or `burst` asks for it — `R` per second
/// with a burst of `burst` (default `R`), or, with `burst` alone, the shortest
/// window's average rate with that burst.
pub fn tenant_rules(limits: &Limits) -> Rules {
    let windows = Rules::windows([
        (Window::Minute, limits.requests_per_minute),
        (Window::Hour, limits.requests_per_hour),
        (Window::Day, limits.requests_per_day),
        (Window::Month, limits.requests_per_month),
    ]);
    let burst = limits.burst.filter(|b| *b > 0);
    let smooth = match (limits.requests_per_second.filter(|r| *r > 0), burst) {
        (Some(rate), burst) => Some(SmoothRule {
            period: Duration::from_nanos((1_000_000_000 / rate).max(1)),
            burst: saturating_u32(burst.unwrap_or(rate)),
        }),
        (None, Some(burst)) => windows.first().map(|shortest| {
            let secs = shortest.window.seconds(shortest.window.index(0));
            let nanos = u128::from(secs) * 1_000_000_000 / u128::from(shortest.limit);
            SmoothRule {
                period: Duration::from_nanos(saturating_u64(nanos.max(1))),
                burst: saturating_u32(burst),
            }
        }),
        (None, None) => None,
    };
    Rules { windows, smooth }
}

/// The rate rules of one feature's quota (windowed counts only), shortest first.
pub fn feature_rules(limits: &FeatureLimits) -> Rules {
    Rules {
        windows: Rules::windows([
            (Window::Minute, limits.requests_per_minute),
            (Window::Hour, limits.requests_per_hour),
            (Window::Day, limits.requests_per_day),
            (Window::Month, limits.requests_per_month),
        ]),
        smooth: None,
    }
}

/// The rules of a request as `RateLimit-Policy` states them (`100;w=3600, …`), kept
/// inline (no allocation on the request path): up to [`Policy::CAPACITY`] entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    entries: [(u64, u64); Policy::CAPACITY],
    len: u8,
}

impl Policy {
    /// A tenant's windows, a feature's windows and the smoothing.
    pub const CAPACITY: usize = 9;

    /// Adds `limit` per `window_secs` (beyond the capacity, nothing).
    pub fn push(&mut self, limit: u64, window_secs: u64) {
        if let Some(slot) = self.entries.get_mut(usize::from(self.len)) {
            *slot = (limit, window_secs);
            self.len += 1;
        }
    }

    /// The policy of `rules` at `now`, appended.
    pub fn extend(&mut self, rules: &Rules, now: i64) {
        for rule in rules.windows.iter() {
            self.push(rule.limit, rule.window.seconds(rule.window.index(now)));
        }
        if let Some(smooth) = rules.smooth {
            self.push(u64::from(smooth.burst), smooth.refill_secs());
        }
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries[..usize::from(self.len)]
    }

    /// Writes the header value (`100;w=3600, 2000;w=86400`) into `out`, returning the
    /// bytes written (entries that do not fit are left out).
    pub fn write(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for (i, (limit, w)) in self.entries().iter().enumerate() {
            let mut entry = [0u8; 48];
            let mut n = 0;
            if i > 0 {
                entry[..2].copy_from_slice(b", ");
                n = 2;
            }
            let mut digits = itoa::Buffer::new();
            for (part, number) in [(&b""[..], *limit), (&b";w="[..], *w)] {
                let text = digits.format(number).as_bytes();
                entry[n..n + part.len()].copy_from_slice(part);
                n += part.len();
                entry[n..n + text.len()].copy_from_slice(text);
                n += text.len();
            }
            let Some(slot) = out.get_mut(at..at + n) else {
                break;
            };
            slot.copy_from_slice(&entry[..n]);
            at += n;
        }
        at
    }
}

/// The result of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// No quota governs this request.
    Unlimited,
    /// Allowed and counted; the figures of the rule closest to exhaustion for the
    /// `RateLimit-*` headers, and every rule for `RateLimit-Policy`.
    Allowed {
        limit: u64,
        remaining: u64,
        reset_secs: u64,
        policy: Policy,
    },
    /// The quota backend cannot be used and `on_error = "deny"`: 503, never 429.
    Unavailable,
    /// Refused by `rule`, counted nowhere; it allows again in `retry_after_secs`
    /// (at least 1), at Unix time `resets_at`.
    Limited {
        rule: Rule,
        retry_after_secs: u64,
        resets_at: i64,
        /// The refusal came from a feature quota.
        feature: bool,
        policy: Policy,
    },
}

/// Figures for `RateLimit-*`: the rule with the fewest requests left wins (on a tie,
/// the one that resets last).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tightest(Option<(u64, u64, u64)>);

impl Tightest {
    /// Considers a rule of `limit` with `remaining` left, resetting in `reset_secs`.
    #[inline]
    pub(crate) fn consider(&mut self, limit: u64, remaining: u64, reset_secs: u64) {
        let tighter = match self.0 {
            None => true,
            Some((_, r, reset)) => remaining < r || (remaining == r && reset_secs > reset),
        };
        if tighter {
            self.0 = Some((limit, remaining, reset_secs));
        }
    }

    /// The outcome of an allowed request with these figures.
    pub(crate) fn allowed(self, policy: Policy) -> QuotaOutcome {
        match self.0 {
            Some((limit, remaining, reset_secs)) => QuotaOutcome::Allowed {
                limit,
                remaining,
                reset_secs,
                policy,
            },
            None => QuotaOutcome::Unlimited,
        }
    }
}

/// One rate rule's figures at this moment (admin API).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleUsage {
    /// `minute`, `hour`, `day`, `month`, or `burst` for the smoothing rule.
    pub window: &'static str,
    /// The feature whose quota this is (`None`: the tenant's own rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// N of "N per window"; for `burst`, the burst.
    pub limit: u64,
    /// Requests counted in the current window (for `burst`: taken from the burst).
    pub used: u64,
    /// Requests still allowed in the current window (for `burst`: right now).
    pub remaining: u64,
    /// Seconds until the current window ends (for `burst`: until it is full again).
    pub reset_secs: u64,
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
    fn windows_are_counts_and_smoothing_is_opt_in() {
        let limits = Limits {
            requests_per_day: Some(10_000),
            requests_per_minute: Some(100),
            requests_per_month: Some(0),
            ..Limits::default()
        };
        let rules = tenant_rules(&limits);
        let windows: Vec<_> = rules.windows.iter().map(|r| r.window).collect();
        assert_eq!(windows, vec![Window::Minute, Window::Day], "0 is no rule");
        assert_eq!(rules.smooth, None);
        let burst = tenant_rules(&Limits {
            requests_per_hour: Some(3_600),
            burst: Some(10),
            ..Limits::default()
        });
        assert_eq!(
            burst.smooth,
            Some(SmoothRule {
                period: Duration::from_secs(1),
                burst: 10
            })
        );
        let per_second = tenant_rules(&Limits {
            requests_per_second: Some(50),
            ..Limits::default()
        });
        assert_eq!(per_second.smooth.unwrap().burst, 50);
        assert_eq!(per_second.smooth.unwrap().period, Duration::from_millis(20));
        assert!(per_second.windows.is_empty());
        assert!(tenant_rules(&Limits::default()).is_empty());
        let huge = tenant_rules(&Limits {
            requests_per_month: Some(u64::MAX),
            ..Limits::default()
        });
        assert_eq!(huge.windows[0].limit, MAX_WINDOW_LIMIT);
    }

    #[test]
    fn the_policy_header_lists_every_rule() {
        let rules = tenant_rules(&Limits {
            requests_per_hour: Some(100),
            requests_per_day: Some(2_000),
            ..Limits::default()
        });
        let mut policy = Policy::default();
        policy.extend(&rules, 1_796_110_632);
        let mut out = [0u8; 256];
        let n = policy.write(&mut out);
        assert_eq!(&out[..n], b"100;w=3600, 2000;w=86400");
        assert_eq!(
            policy.write(&mut out[..12]),
            10,
            "entries that do not fit are left out"
        );
        let mut full = Policy::default();
        for i in 0..20 {
            full.push(i, 1);
        }
        assert_eq!(full.entries().len(), Policy::CAPACITY);
    }

    #[test]
    fn the_tightest_rule_has_the_fewest_left() {
        let mut t = Tightest::default();
        t.consider(100, 99, 3_600);
        t.consider(20, 19, 86_400);
        t.consider(1_000, 19, 60);
        assert!(matches!(
            t.allowed(Policy::default()),
            QuotaOutcome::Allowed {
                limit: 20,
                remaining: 19,
                reset_secs: 86_400,
                ..
            }
        ));
    }
}
