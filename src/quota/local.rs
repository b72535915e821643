//! The in-process quota backend: an exact count per (tenant, window) and per
//! (tenant, feature, window), a GCRA limiter for the optional smoothing, and an
//! in-flight counter per tenant.
//!
//! A count is one atomic word (the window's number and the requests counted in it),
//! taken with a compare-and-swap that never passes the limit, so concurrent requests
//! are counted exactly. A request needing several windows takes each in turn and
//! gives back what it took when one refuses.
//!
//! State exists only for tenants with an installed license (callers pass a summary
//! from the license snapshot), is created on a tenant's first request, follows license
//! changes (a new license keeps the counts of the windows it shares with the old
//! one), and is dropped for tenants that leave the snapshot
//! ([`LocalQuotas::retain_licensed`]); their counts are kept aside until their
//! windows end, so a license re-installed in the same window resumes them. Counts are
//! made durable by [`LocalQuotas::save`] (behind the request path) and
//! [`LocalQuotas::restore`] (at start).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as _, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::{
    Policy, QuotaOutcome, Rule, RuleUsage, Rules, Slots, SmoothRule, TenantQuota, Tightest, Window,
    WindowRule,
};
use crate::license::LicenseSnapshot;

/// The smoothing limiters' clock: `std::time::Instant`, a zero-sized type. governor's
/// default (quanta) clock is faster to read but stored in every limiter: 40 bytes
/// each, which is 4 MB for 100,000 tenants.
type QuotaClock = MonotonicClock;

type Gcra = RateLimiter<NotKeyed, InMemoryState, QuotaClock, StateInformationMiddleware>;

/// Bits of a count word holding the count (the rest hold the window's number).
const COUNT_BITS: u32 = 36;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The window's number modulo 2^28: 510 years of minutes before two windows share one.
const INDEX_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// The count word of `count` requests in window `index`.
#[inline]
fn pack(index: u64, count: u64) -> u64 {
    ((index & INDEX_MASK) << COUNT_BITS) | count.min(COUNT_MASK)
}

/// The count in window `index` held by `word` (0 when the word is of another window).
#[inline]
fn count_in(word: u64, index: u64) -> u64 {
    if word >> COUNT_BITS == index & INDEX_MASK {
        word & COUNT_MASK
    } else {
        0
    }
}

/// One windowed count (its rule is the one at the same place in its set's rules).
struct Counter {
    /// This gateway's limit (the rule's, or its share of a fleet's).
    limit: u64,
    word: AtomicU64,
    /// The word last written to the database ([`LocalQuotas::save`]).
    saved: AtomicU64,
}

impl Counter {
    fn new(limit: u64, word: u64) -> Counter {
        Counter {
            limit,
            word: AtomicU64::new(word),
            saved: AtomicU64::new(word),
        }
    }

    /// Counts one request in window `index` unless the limit is reached; the count
    /// after it when counted.
    #[inline]
    fn take(&self, index: u64) -> Option<u64> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let count = count_in(current, index);
            if count >= self.limit {
                return None;
            }
            match self.word.compare_exchange_weak(
                current,
                pack(index, count + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(count + 1),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back one request taken in window `index` (nothing once it has ended).
    fn give_back(&self, index: u64) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let count = count_in(word, index);
                (count > 0).then(|| pack(index, count - 1))
            });
    }

    /// Requests counted in window `index`.
    fn count(&self, index: u64) -> u64 {
        count_in(self.word.load(Ordering::Acquire), index)
    }
}

/// The GCRA limiter of a smoothing rule.
struct Smoother {
    rule: SmoothRule,
    gcra: Gcra,
    /// The remaining burst after the last allowed request (high 32 bits) and when
    /// (low 32 bits: milliseconds on [`since_start_ms`]'s clock), for [`RuleUsage`].
    last: AtomicU64,
}

/// Milliseconds since the first call, plus 1 so that it is never 0 (wraps after 49
/// days; only differences are used).
fn since_start_ms() -> u32 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    super::saturating_u32(START.elapsed().as_millis()).wrapping_add(1)
}

impl Smoother {
    fn new(rule: SmoothRule, clock: &QuotaClock) -> Smoother {
        let quota = Quota::with_period(rule.period.max(Duration::from_nanos(1)))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN));
        Smoother {
            rule,
            gcra: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            last: AtomicU64::new(0),
        }
    }

    /// Takes one request from the burst; `Err(wait)` when none is left.
    fn take(&self, clock: &QuotaClock) -> Result<u32, Duration> {
        match self.gcra.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                self.last.store(
                    (u64::from(remaining) << 32) | u64::from(since_start_ms()),
                    Ordering::Relaxed,
                );
                Ok(remaining)
            }
            Err(not_until) => Err(not_until.wait_time_from(clock.now())),
        }
    }

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
        let earned = super::saturating_u64(elapsed.as_nanos() / self.rule.period.as_nanos().max(1));
        super::saturating_u32(
            u64::from(remaining)
                .saturating_add(earned)
                .min(u64::from(self.rule.burst)),
        )
    }
}

/// Why a rule set refused: the rule, the wait, and when it allows again.
struct Refusal {
    rule: Rule,
    retry_after_secs: u64,
    resets_at: i64,
}

/// The counts (and smoothing) of one set of rules.
struct CounterSet {
    /// The rules as the license states them (shared with the tenant's summary).
    rules: Arc<Rules>,
    counters: Box<[Counter]>,
    /// Boxed: most tenants have no smoothing.
    smoother: Option<Box<Smoother>>,
}

impl CounterSet {
    /// Counts for `rules` allowing `1/share` of each limit (at least 1), starting from
    /// the words `start` gives per window (0: nothing counted).
    fn new(
        rules: Arc<Rules>,
        clock: &QuotaClock,
        share: u64,
        mut start: impl FnMut(Window) -> u64,
    ) -> CounterSet {
        CounterSet {
            counters: rules
                .windows
                .iter()
                .map(|r| Counter::new((r.limit / share).max(1), start(r.window)))
                .collect(),
            smoother: rules.smooth.map(|s| {
                let scaled = SmoothRule {
                    burst: (s.burst / super::saturating_u32(share)).max(1),
                    period: s.period * super::saturating_u32(share),
                };
                Box::new(Smoother::new(scaled, clock))
            }),
            rules,
        }
    }

    /// Each rule with its count.
    #[inline]
    fn pairs(&self) -> impl Iterator<Item = (&WindowRule, &Counter)> {
        self.rules.windows.iter().zip(self.counters.iter())
    }

    /// The word of `window`'s count, if this set counts it.
    fn word(&self, window: Window) -> Option<u64> {
        self.pairs()
            .find(|(rule, _)| rule.window == window)
            .map(|(_, c)| c.word.load(Ordering::Acquire))
    }

    /// Counts one request at `now` in every window, or in none when one refuses.
    #[inline]
    fn take(&self, now: i64, tightest: &mut Tightest) -> Result<(), Refusal> {
        let mut indexes = [0u64; Window::ALL.len()];
        for (i, (rule, counter)) in self.pairs().enumerate() {
            let index = rule.window.index(now);
            let end = rule.window.end(index);
            match counter.take(index) {
                Some(count) => {
                    indexes[i] = index;
                    tightest.consider(
                        counter.limit,
                        counter.limit - count,
                        super::secs_until(end, now),
                    );
                }
                None => {
                    self.give_back(&indexes[..i]);
                    return Err(Refusal {
                        rule: Rule::Window(*rule),
                        retry_after_secs: super::secs_until(end, now),
                        resets_at: end,
                    });
                }
            }
        }
        Ok(())
    }

    /// Gives back the request counted in the first `indexes.len()` windows.
    fn give_back(&self, indexes: &[u64]) {
        for (counter, index) in self.counters.iter().zip(indexes) {
            counter.give_back(*index);
        }
    }

    /// Gives back a request [`CounterSet::take`] counted at `now`.
    fn give_back_at(&self, now: i64) {
        for (rule, counter) in self.pairs() {
            counter.give_back(rule.window.index(now));
        }
    }

    /// The live figures of every rule.
    fn usage(&self, now: i64, feature: Option<&str>, out: &mut Vec<RuleUsage>) {
        for (rule, c) in self.pairs() {
            let index = rule.window.index(now);
            let used = c.count(index);
            out.push(RuleUsage {
                window: rule.window.name(),
                feature: feature.map(str::to_string),
                limit: c.limit,
                used,
                remaining: c.limit.saturating_sub(used),
                reset_secs: super::secs_until(rule.window.end(index), now),
            });
        }
        if let Some(s) = &self.smoother {
            let remaining = s.remaining_now();
            let used = s.rule.burst.saturating_sub(remaining);
            out.push(RuleUsage {
                window: "burst",
                feature: feature.map(str::to_string),
                limit: s.rule.burst.into(),
                used: used.into(),
                remaining: remaining.into(),
                reset_secs: super::ceil_secs(s.rule.period * used),
            });
        }
    }
}

/// A tenant's rate state.
struct TenantState {
    rates: CounterSet,
    /// Counts per feature with a quota, made at the first request that needs one
    /// (most tenants have none): a plain lock (rarely written, briefly read) because a
    /// `DashMap` per tenant costs about a kilobyte even when empty.
    features: OnceLock<Box<FeatureSets>>,
}

type FeatureSets = RwLock<HashMap<Box<str>, Arc<CounterSet>>>;

impl TenantState {
    /// The counts of `feature` under `rules`, made (from `make`) when missing or when
    /// its rules changed.
    fn feature(
        &self,
        feature: &str,
        rules: &Arc<Rules>,
        make: impl FnOnce(Option<&CounterSet>) -> CounterSet,
    ) -> Arc<CounterSet> {
        let features = self.features.get_or_init(Box::default);
        let known = features
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(feature)
            .map(Arc::clone);
        if let Some(set) = known.as_ref().filter(|set| set.rules == *rules) {
            return Arc::clone(set);
        }
        let set = Arc::new(make(known.as_deref()));
        features
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(feature.into(), Arc::clone(&set));
        set
    }

    /// The feature count sets made so far, by feature.
    fn feature_sets(&self) -> Vec<(Box<str>, Arc<CounterSet>)> {
        self.features.get().map_or_else(Vec::new, |f| {
            f.read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        })
    }
}

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

/// One window's count of a tenant (or of one of its features), as the database keeps
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCount {
    pub tenant: Arc<str>,
    /// The feature whose quota this is (`None`: the tenant's own).
    pub feature: Option<Box<str>>,
    pub window: Window,
    /// The window's number ([`Window::index`]).
    pub index: u64,
    pub count: u64,
}

/// The figures of an allowed smoothing check (limit, remaining, reset seconds), or
/// its rule and wait when refused.
pub(crate) type SmoothCheck = Result<Option<(u64, u64, u64)>, (SmoothRule, u64)>;

/// Where a saved count belongs: tenant, feature ("" for the tenant's own), window.
type CountKey = (Box<str>, Box<str>, Window);

/// The local backend.
pub struct LocalQuotas {
    /// Which instance this is, for [`StateSlot`]s.
    id: u64,
    clock: QuotaClock,
    /// This gateway's share of each limit is 1/share (1 unless a Redis fallback).
    share: u64,
    tenants: DashMap<Arc<str>, Arc<TenantState>>,
    /// Counts without state (restored at start, or of tenants that left the
    /// snapshot), taken when the tenant's state is made: word by key.
    kept: Mutex<HashMap<CountKey, u64>>,
    /// Counts of dropped states not saved yet.
    unsaved: Mutex<Vec<SavedCount>>,
    /// The last save failed: the next one writes every current count.
    resave: AtomicBool,
}

impl Default for LocalQuotas {
    fn default() -> Self {
        LocalQuotas::with_share(1)
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
    /// Local quotas allowing `1/share` of each limit (the fallback of one gateway in
    /// a fleet of `share` sharing a Redis quota).
    pub fn with_share(share: u32) -> LocalQuotas {
        LocalQuotas {
            id: NEXT_QUOTAS_ID.fetch_add(1, Ordering::Relaxed),
            clock: QuotaClock::default(),
            share: u64::from(share.max(1)),
            tenants: DashMap::new(),
            kept: Mutex::default(),
            unsaved: Mutex::default(),
            resave: AtomicBool::new(false),
        }
    }

    /// Counts one request of `tenant` (needing `feature`, if any) at the quota clock's
    /// time.
    pub fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        self.check_at(tenant, feature, super::clock::now())
    }

    /// Counts one request of `tenant` (needing `feature`, if any) at `now` (Unix
    /// seconds) against its windows, the feature's windows and its smoothing: in all
    /// of them, or, refused, in none.
    pub fn check_at(&self, tenant: &TenantQuota, feature: Option<&str>, now: i64) -> QuotaOutcome {
        let feature_rules = feature.and_then(|f| tenant.feature_rules.get(f).map(|r| (f, r)));
        if tenant.rate_rules.is_empty() && feature_rules.is_none() {
            return QuotaOutcome::Unlimited;
        }
        self.with_state(tenant, |state| {
            self.count(tenant, state, feature_rules, now)
        })
    }

    /// Runs `f` on `tenant`'s state: the one its summary remembers for this instance,
    /// or the one found (or made) in the tenant map, which the summary then remembers.
    #[inline]
    fn with_state<R>(&self, tenant: &TenantQuota, f: impl FnOnce(&TenantState) -> R) -> R {
        match tenant.state.0.get() {
            Some((id, state)) if *id == self.id => f(state),
            _ => {
                let found = self.tenant_state(tenant);
                // A summary's rules never change, so the state found now stays its own;
                // only the first instance to set the slot uses it.
                let _ = tenant.state.0.set((self.id, Arc::clone(&found)));
                f(&found)
            }
        }
    }

    /// [`LocalQuotas::check_at`] on the tenant's `state`.
    #[inline]
    fn count(
        &self,
        tenant: &TenantQuota,
        state: &TenantState,
        feature_rules: Option<(&str, &Arc<Rules>)>,
        now: i64,
    ) -> QuotaOutcome {
        let mut policy = Policy::default();
        policy.extend(&tenant.rate_rules, now);
        let mut tightest = Tightest::default();
        let refused = |refusal: Refusal, feature: bool, policy: Policy| QuotaOutcome::Limited {
            rule: refusal.rule,
            retry_after_secs: refusal.retry_after_secs,
            resets_at: refusal.resets_at,
            feature,
            policy,
        };
        if let Err(refusal) = state.rates.take(now, &mut tightest) {
            return refused(refusal, false, policy);
        }
        let mut feature_set = None;
        if let Some((name, rules)) = feature_rules {
            policy.extend(rules, now);
            let set = state.feature(name, rules, |previous| {
                self.counter_set(tenant.tenant(), name, rules, previous)
            });
            if let Err(refusal) = set.take(now, &mut tightest) {
                state.rates.give_back_at(now);
                return refused(refusal, true, policy);
            }
            feature_set = Some(set);
        }
        if let Some(smoother) = &state.rates.smoother {
            match smoother.take(&self.clock) {
                Ok(remaining) => tightest.consider(
                    u64::from(smoother.rule.burst),
                    u64::from(remaining),
                    super::ceil_secs(
                        smoother.rule.period * smoother.rule.burst.saturating_sub(remaining),
                    ),
                ),
                Err(wait) => {
                    state.rates.give_back_at(now);
                    if let Some(set) = feature_set {
                        set.give_back_at(now);
                    }
                    let retry_after_secs = super::ceil_secs(wait).max(1);
                    return refused(
                        Refusal {
                            rule: Rule::Smooth(smoother.rule),
                            retry_after_secs,
                            resets_at: now.saturating_add_unsigned(retry_after_secs),
                        },
                        false,
                        policy,
                    );
                }
            }
        }
        tightest.allowed(policy)
    }

    /// The counts of `tenant`'s `feature` (`""`: its own) under `rules`, carrying the
    /// counts of `previous` (the same under older rules) or the kept ones.
    fn counter_set(
        &self,
        tenant: &str,
        feature: &str,
        rules: &Arc<Rules>,
        previous: Option<&CounterSet>,
    ) -> CounterSet {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        CounterSet::new(Arc::clone(rules), &self.clock, self.share, |window| {
            let from_kept = if kept.is_empty() {
                None
            } else {
                kept.remove(&(tenant.into(), feature.into(), window))
            };
            previous
                .and_then(|p| p.word(window))
                .or(from_kept)
                .unwrap_or(0)
        })
    }

    /// The tenant's state, made or replaced (keeping its counts) when its rules changed.
    fn tenant_state(&self, tenant: &TenantQuota) -> Arc<TenantState> {
        let previous = self
            .tenants
            .get(&**tenant.tenant())
            .map(|state| Arc::clone(&state));
        if let Some(state) = previous
            .as_ref()
            .filter(|s| s.rates.rules == tenant.rate_rules)
        {
            return Arc::clone(state);
        }
        let rates = self.counter_set(
            tenant.tenant(),
            "",
            &tenant.rate_rules,
            previous.as_ref().map(|p| &p.rates),
        );
        let features = OnceLock::new();
        if let Some(previous) = &previous {
            // Feature counts move along; each is remade if its own rules changed.
            let sets = previous.feature_sets();
            if !sets.is_empty() {
                let _ = features.set(Box::new(RwLock::new(sets.into_iter().collect())));
            }
        }
        let state = Arc::new(TenantState { rates, features });
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

    /// The live figures of each of `tenant`'s rate rules (and its features' rules),
    /// counting nothing.
    pub fn usage(&self, tenant: &TenantQuota) -> Vec<RuleUsage> {
        self.usage_at(tenant, super::clock::now())
    }

    /// [`LocalQuotas::usage`] at `now` (Unix seconds).
    pub fn usage_at(&self, tenant: &TenantQuota, now: i64) -> Vec<RuleUsage> {
        let state = self.tenants.get(&**tenant.tenant()).map(|s| Arc::clone(&s));
        let mut out = Vec::new();
        match state
            .as_ref()
            .filter(|s| s.rates.rules == tenant.rate_rules)
        {
            Some(state) => state.rates.usage(now, None, &mut out),
            None => self
                .counter_set_view(tenant.tenant(), "", &tenant.rate_rules)
                .usage(now, None, &mut out),
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
                .filter(|set| set.rules == *rules)
                .unwrap_or_else(|| Arc::new(self.counter_set_view(tenant.tenant(), name, rules)));
            set.usage(now, Some(name), &mut out);
        }
        out
    }

    /// A feature's counts made from the kept ones without taking them (for [`usage`]).
    ///
    /// [`usage`]: LocalQuotas::usage
    fn counter_set_view(&self, tenant: &str, feature: &str, rules: &Arc<Rules>) -> CounterSet {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        CounterSet::new(Arc::clone(rules), &self.clock, self.share, |window| {
            kept.get(&(tenant.into(), feature.into(), window))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Requests of `tenant` in flight under a concurrency limit.
    pub fn in_flight(&self, tenant: &TenantQuota) -> u64 {
        tenant.slots.taken()
    }

    /// Drops state of tenants that no longer have a license (keeping their counts
    /// aside until their windows end), forgets kept counts of windows that ended, and
    /// frees the memory.
    pub fn retain_licensed(&self, snapshot: &LicenseSnapshot) {
        let now = super::clock::now();
        let mut dropped = Vec::new();
        self.tenants.retain(|name, state| {
            let keep = snapshot.tenants.contains_key(name);
            if !keep {
                dropped.push((Arc::clone(name), Arc::clone(state)));
            }
            keep
        });
        self.tenants.shrink_to_fit();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        for (tenant, state) in dropped {
            let sets = std::iter::once(("".into(), &state.rates as &CounterSet));
            let features = state.feature_sets();
            let sets = sets.chain(features.iter().map(|(f, s)| (f.clone(), &**s)));
            for (feature, set) in sets {
                for (rule, c) in set.pairs() {
                    let word = c.word.load(Ordering::Acquire);
                    let index = rule.window.index(now);
                    let count = count_in(word, index);
                    if count == 0 {
                        continue;
                    }
                    kept.insert((tenant[..].into(), feature.clone(), rule.window), word);
                    if word != c.saved.load(Ordering::Acquire) {
                        unsaved.push(SavedCount {
                            tenant: Arc::clone(&tenant),
                            feature: (!feature.is_empty()).then(|| feature.clone()),
                            window: rule.window,
                            index,
                            count,
                        });
                    }
                }
            }
        }
        kept.retain(|(_, _, window), word| count_in(*word, window.index(now)) > 0);
        kept.shrink_to_fit();
    }

    /// Sets the counts of windows that have not ended from `counts` (read back from
    /// the database at start), before any request is counted.
    pub fn restore(&self, counts: impl IntoIterator<Item = SavedCount>, now: i64) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for c in counts {
            if c.index != c.window.index(now) || c.count == 0 {
                continue;
            }
            let feature = c.feature.unwrap_or_default();
            kept.insert(
                (c.tenant[..].into(), feature, c.window),
                pack(c.index, c.count),
            );
        }
    }

    /// Puts every count changed since the last save (of windows that have not ended
    /// at `now`) into `rows` (cleared first: a buffer the caller reuses) and hands them
    /// to `write`; they count as saved unless it fails, in which case the next save
    /// hands over every current count again. Returns how many were written.
    pub fn save<E>(
        &self,
        now: i64,
        rows: &mut Vec<SavedCount>,
        write: impl FnOnce(&[SavedCount]) -> Result<(), E>,
    ) -> Result<usize, E> {
        rows.clear();
        rows.append(&mut self.unsaved.lock().unwrap_or_else(|e| e.into_inner()));
        let from_dropped = rows.len();
        let everything = self.resave.swap(false, Ordering::AcqRel);
        let mut changed = false;
        for entry in self.tenants.iter() {
            let (tenant, state) = (entry.key(), entry.value());
            let mut visit = |set: &CounterSet, feature: Option<&Box<str>>| {
                for (rule, c) in set.pairs() {
                    let word = c.word.load(Ordering::Acquire);
                    if c.saved.swap(word, Ordering::AcqRel) == word && !everything {
                        continue;
                    }
                    changed = true;
                    let index = rule.window.index(now);
                    if word >> COUNT_BITS == index & INDEX_MASK {
                        rows.push(SavedCount {
                            tenant: Arc::clone(tenant),
                            feature: feature.cloned(),
                            window: rule.window,
                            index,
                            count: word & COUNT_MASK,
                        });
                    }
                }
            };
            visit(&state.rates, None);
            if let Some(features) = state.features.get() {
                for (feature, set) in features.read().unwrap_or_else(|e| e.into_inner()).iter() {
                    visit(set, Some(feature));
                }
            }
        }
        if rows.is_empty() && !changed {
            return Ok(0);
        }
        if let Err(e) = write(rows) {
            self.resave.store(true, Ordering::Release);
            self.unsaved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(rows.drain(..from_dropped));
            return Err(e);
        }
        Ok(rows.len())
    }

    /// Checks only `tenant`'s smoothing rule (the slice mode of the Redis backend
    /// counts the windows): `Ok(None)` without one, `Ok((limit, remaining, reset))`
    /// for the headers when allowed, `Err((rule, retry_after_secs))` when not.
    pub(crate) fn check_smoothing(&self, tenant: &TenantQuota) -> SmoothCheck {
        if tenant.rate_rules.smooth.is_none() {
            return Ok(None);
        }
        self.with_state(tenant, |state| {
            let Some(smoother) = &state.rates.smoother else {
                return Ok(None);
            };
            match smoother.take(&self.clock) {
                Ok(remaining) => Ok(Some((
                    u64::from(smoother.rule.burst),
                    u64::from(remaining),
                    super::ceil_secs(
                        smoother.rule.period * smoother.rule.burst.saturating_sub(remaining),
                    ),
                ))),
                Err(wait) => Err((smoother.rule, super::ceil_secs(wait).max(1))),
            }
        })
    }

    /// Every count of a window that has not ended at `now`, each set back to 0 (the
    /// Redis backend adds what its fallback counted to Redis).
    pub(crate) fn take_counts(&self, now: i64) -> Vec<SavedCount> {
        let mut out = Vec::new();
        let states: Vec<(Arc<str>, Arc<TenantState>)> = self
            .tenants
            .iter()
            .map(|e| (Arc::clone(e.key()), Arc::clone(e.value())))
            .collect();
        for (tenant, state) in states {
            let mut visit = |set: &CounterSet, feature: Option<&Box<str>>| {
                for (rule, c) in set.pairs() {
                    let index = rule.window.index(now);
                    let count = count_in(c.word.swap(pack(index, 0), Ordering::AcqRel), index);
                    if count > 0 {
                        out.push(SavedCount {
                            tenant: Arc::clone(&tenant),
                            feature: feature.cloned(),
                            window: rule.window,
                            index,
                            count,
                        });
                    }
                }
            };
            visit(&state.rates, None);
            for (feature, set) in state.feature_sets() {
                visit(&set, Some(&feature));
            }
        }
        out
    }

    /// Tenants with rate state (for tests and metrics).
    pub fn tenants_with_state(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests;
