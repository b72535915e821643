//! The in-process quota backend: one governor GCRA limiter per (tenant, rule) and per
//! (tenant, feature, rule), and an in-flight counter per tenant.
//!
//! State exists only for tenants with an installed license (callers pass a summary
//! from the license snapshot), is created on a tenant's first request, follows license
//! changes (different rules replace the limiters), and is dropped for tenants that
//! leave the snapshot ([`LocalQuotas::retain_licensed`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as _, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::{QuotaOutcome, RateRule, RuleUsage, Slots, TenantQuota};
use crate::license::LicenseSnapshot;

/// The limiters' clock: `std::time::Instant`, a zero-sized type. governor's default
/// (quanta) clock is faster to read but stored in every limiter: 40 bytes each, which
/// is 8 MB per rule for 100,000 tenants.
type QuotaClock = MonotonicClock;

type Gcra = RateLimiter<NotKeyed, InMemoryState, QuotaClock, StateInformationMiddleware>;

/// One GCRA limiter for one rule.
struct Limiter {
    rule: RateRule,
    /// Time to earn one request.
    period: Duration,
    gcra: Gcra,
    /// The remaining burst after the last allowed request (high 32 bits) and when
    /// (low 32 bits: milliseconds on [`since_start_ms`]'s clock), for [`RuleUsage`].
    last: AtomicU64,
}

/// Milliseconds since the first call (wraps after 49 days; only differences are used).
fn since_start_ms() -> u32 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    super::saturating_u32(START.elapsed().as_millis())
}

impl Limiter {
    /// Requests allowed right now: the remaining burst after the last allowed request
    /// plus what has been earned since (capped at the burst).
    fn remaining_now(&self) -> u32 {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return self.rule.burst;
        }
        let (remaining, at) = (
            super::saturating_u32(last >> 32),
            super::saturating_u32(last & u64::from(u32::MAX)),
        );
        let elapsed = Duration::from_millis(u64::from(since_start_ms().wrapping_sub(at)));
        let earned = super::saturating_u64(elapsed.as_nanos() / self.period.as_nanos().max(1));
        super::saturating_u32(
            u64::from(remaining)
                .saturating_add(earned)
                .min(u64::from(self.rule.burst)),
        )
    }
}

impl Limiter {
    fn new(rule: RateRule, clock: &QuotaClock) -> Limiter {
        let period = Duration::from_nanos(super::saturating_u64(
            (u128::from(rule.window.seconds()) * 1_000_000_000 / u128::from(rule.limit)).max(1),
        ));
        let quota = Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN));
        Limiter {
            rule,
            period,
            gcra: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            last: AtomicU64::new(0),
        }
    }
}

/// Limiters for one set of rules.
struct RuleSet {
    /// The rules as the license states them (shared with the tenant's summary).
    rules: Arc<[RateRule]>,
    limiters: Box<[Limiter]>,
}

impl RuleSet {
    /// Limiters for `rules`, each allowing `1/share` of its limit and burst (at least 1).
    fn new(rules: Arc<[RateRule]>, clock: &QuotaClock, share: u64) -> RuleSet {
        RuleSet {
            limiters: rules
                .iter()
                .map(|r| {
                    let scaled = RateRule {
                        limit: (r.limit / share).max(1),
                        burst: (r.burst / super::saturating_u32(share)).max(1),
                        ..*r
                    };
                    Limiter::new(scaled, clock)
                })
                .collect::<Vec<_>>()
                .into(),
            rules,
        }
    }

    /// Checks every rule in order (shortest window first), stopping at the first refusal.
    fn check(
        &self,
        clock: &QuotaClock,
        feature: bool,
        best: &mut Option<(u64, u32, u64)>,
    ) -> Option<QuotaOutcome> {
        for limiter in &self.limiters {
            match limiter.gcra.check() {
                Ok(state) => {
                    let remaining = state.remaining_burst_capacity();
                    limiter.last.store(
                        (u64::from(remaining) << 32) | u64::from(since_start_ms().max(1)),
                        Ordering::Relaxed,
                    );
                    let used = limiter.rule.burst.saturating_sub(remaining);
                    let reset = super::ceil_secs(limiter.period * used);
                    if best.is_none_or(|(_, r, _)| remaining < r) {
                        *best = Some((limiter.rule.limit, remaining, reset));
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    return Some(QuotaOutcome::Limited {
                        rule: limiter.rule,
                        retry_after_secs: super::ceil_secs(wait).max(1),
                        feature,
                    });
                }
            }
        }
        None
    }
}

/// A tenant's rate state.
struct TenantState {
    rates: RuleSet,
    /// Limiters per feature with a quota, made at the first request that needs one
    /// (most tenants have none): a plain lock (rarely written, briefly read) because a
    /// `DashMap` per tenant costs about a kilobyte even when empty.
    features: std::sync::OnceLock<Box<FeatureSets>>,
}

type FeatureSets = std::sync::RwLock<std::collections::HashMap<Box<str>, Arc<RuleSet>>>;

/// A tenant summary's link to its rate state in one [`LocalQuotas`], set at the
/// summary's first quota check, so that later checks of the same summary skip the
/// tenant map (a hash, a shard lock and a reference count, all shared between threads).
#[derive(Default, Clone)]
pub struct StateSlot(OnceLock<(u64, Arc<TenantState>)>);

impl std::fmt::Debug for StateSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "StateSlot(set)"
        } else {
            "StateSlot(empty)"
        })
    }
}

/// Tells [`LocalQuotas`] instances apart (a slot set by one is ignored by another).
static NEXT_QUOTAS_ID: AtomicU64 = AtomicU64::new(1);

/// The local backend.
pub struct LocalQuotas {
    /// Which instance this is, for [`StateSlot`]s.
    id: u64,
    clock: QuotaClock,
    /// This gateway's share of each limit is 1/share (1 unless a Redis fallback).
    share: u64,
    tenants: DashMap<Arc<str>, Arc<TenantState>>,
}

impl Default for LocalQuotas {
    fn default() -> Self {
        LocalQuotas::with_share(1)
    }
}

impl LocalQuotas {
    /// Local quotas allowing `1/share` of each limit (the fallback of one gateway in
    /// a fleet of `share` sharing a Redis quota).
    pub fn with_share(share: u32) -> LocalQuotas {
        LocalQuotas {
            id: NEXT_QUOTAS_ID.fetch_add(1, Ordering::Relaxed),
            clock: QuotaClock::default(),
            share: u64::from(share.max(1)),
            tenants: DashMap::new(),
        }
    }
}

/// Holds one of a tenant's concurrent-connection slots until dropped. The slots are
/// carried from snapshot to snapshot while the tenant stays licensed.
#[derive(Debug)]
pub struct Lease {
    slots: Arc<Slots>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.release();
    }
}

impl LocalQuotas {
    /// Counts one request of `tenant` (needing `feature`, if any) against its rate
    /// rules and the feature's quota.
    pub fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        let feature_rules = feature.and_then(|f| tenant.feature_rules.get(f).map(|r| (f, r)));
        if tenant.rate_rules.is_empty() && feature_rules.is_none() {
            return QuotaOutcome::Unlimited;
        }
        let found;
        let state = match tenant.state.0.get() {
            Some((id, state)) if *id == self.id => state,
            _ => {
                found = self.tenant_state(tenant);
                // A summary's rules never change, so the state found now stays its own;
                // only the first instance to set the slot uses it.
                let _ = tenant.state.0.set((self.id, Arc::clone(&found)));
                &found
            }
        };
        let mut best = None;
        if let Some(refused) = state.rates.check(&self.clock, false, &mut best) {
            return refused;
        }
        if let Some((name, rules)) = feature_rules {
            let features = state.features.get_or_init(Box::default);
            let known = features
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .filter(|set| set.rules[..] == rules[..])
                .map(Arc::clone);
            let set = match known {
                Some(set) => set,
                None => {
                    let set = Arc::new(RuleSet::new(rules[..].into(), &self.clock, self.share));
                    features
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.into(), Arc::clone(&set));
                    set
                }
            };
            if let Some(refused) = set.check(&self.clock, true, &mut best) {
                return refused;
            }
        }
        match best {
            Some((limit, remaining, reset_secs)) => QuotaOutcome::Allowed {
                limit,
                remaining,
                reset_secs,
            },
            None => QuotaOutcome::Unlimited,
        }
    }

    /// The tenant's state, created or replaced when its rules changed.
    fn tenant_state(&self, tenant: &TenantQuota) -> Arc<TenantState> {
        if let Some(state) = self.tenants.get(&**tenant.tenant()) {
            if state.rates.rules[..] == tenant.rate_rules[..] {
                return Arc::clone(&state);
            }
        }
        let state = Arc::new(TenantState {
            rates: RuleSet::new(Arc::clone(&tenant.rate_rules), &self.clock, self.share),
            features: Default::default(),
        });
        self.tenants
            .insert(Arc::clone(tenant.tenant()), Arc::clone(&state));
        state
    }

    /// Takes one of `tenant`'s concurrent slots; `Err(limit)` when all are taken.
    /// `Ok(None)` when the license sets no concurrency limit.
    pub fn acquire(&self, tenant: &TenantQuota) -> Result<Option<Lease>, u64> {
        let Some(limit) = tenant.max_concurrent() else {
            return Ok(None);
        };
        if !tenant.slots.take(limit) {
            return Err(limit);
        }
        Ok(Some(Lease {
            slots: Arc::clone(&tenant.slots),
        }))
    }

    /// The live figures of each of `tenant`'s rate rules (and its features' rules).
    pub fn usage(&self, tenant: &TenantQuota) -> Vec<RuleUsage> {
        let state = self.tenants.get(&**tenant.tenant()).map(|s| Arc::clone(&s));
        let mut out = Vec::new();
        let describe = |rule: &RateRule, remaining: u32, feature: Option<&str>| RuleUsage {
            window: rule.window.name(),
            feature: feature.map(str::to_string),
            limit: rule.limit,
            burst: rule.burst,
            remaining,
        };
        match state
            .as_ref()
            .filter(|s| s.rates.rules[..] == tenant.rate_rules[..])
        {
            Some(state) => out.extend(
                state
                    .rates
                    .limiters
                    .iter()
                    .map(|l| describe(&l.rule, l.remaining_now(), None)),
            ),
            None => out.extend(
                RuleSet::new(Arc::clone(&tenant.rate_rules), &self.clock, self.share)
                    .limiters
                    .iter()
                    .map(|l| describe(&l.rule, l.rule.burst, None)),
            ),
        }
        let mut features: Vec<_> = tenant.feature_rules.iter().collect();
        features.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, rules) in features {
            let set = state
                .as_ref()
                .and_then(|s| {
                    s.features
                        .get()?
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&**name)
                        .map(Arc::clone)
                })
                .filter(|set| set.rules[..] == rules[..])
                .unwrap_or_else(|| {
                    Arc::new(RuleSet::new(rules[..].into(), &self.clock, self.share))
                });
            out.extend(
                set.limiters
                    .iter()
                    .map(|l| describe(&l.rule, l.remaining_now(), Some(name))),
            );
        }
        out
    }

    /// Requests of `tenant` in flight under a concurrency limit.
    pub fn in_flight(&self, tenant: &TenantQuota) -> u64 {
        tenant.slots.taken()
    }

    /// Drops state of tenants that no longer have a license, and frees the memory.
    pub fn retain_licensed(&self, snapshot: &LicenseSnapshot) {
        self.tenants
            .retain(|name, _| snapshot.tenants.contains_key(name));
        self.tenants.shrink_to_fit();
    }

    /// Tenants with rate state (for tests and metrics).
    pub fn tenants_with_state(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests;
