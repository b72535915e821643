//! The Redis quota backend: windowed counts shared by a fleet of gateways.
//!
//! Each window's count is one Redis key per (tenant[, feature], window, window
//! number), expiring a minute after the window ends, so Redis never grows without
//! bound. Two ways to count (`quota.redis.mode`):
//!
//! - `slice` (the default): a gateway reserves a slice of a window's remaining quota
//!   in one call (the slice is added to the count at once, so the fleet never admits
//!   more than N while Redis answers), spends it locally, and reserves again when it
//!   is spent. A slice is at most 1 % of the limit and at most 1/(2 × fleet_size) of
//!   what remains, so slices shrink to single requests as the window nears its limit
//!   and what other gateways hold unspent stays small; a slice unused for
//!   [`IDLE_SLICE`] is given back, and so is every slice at shutdown.
//! - `exact`: one atomic round trip per request (a Lua script checks every window of
//!   the request and counts it in all or none).
//!
//! Smoothing (`requests_per_second`, `burst`) is a GCRA rule in Redis in exact mode;
//! in slice mode each gateway smooths its own traffic at 1/fleet_size of the rate.
//!
//! Faults: every call has a timeout; after `breaker_failures` consecutive failures a
//! circuit breaker stops calling Redis for `breaker_cooldown`, then lets one probe
//! through. While Redis cannot be used, `on_error` decides: count locally with this
//! gateway's share of each limit (`local`), let requests through (`allow`), or refuse
//! them with 503 (`deny`). A Redis error never produces a 429. Counts made under the
//! local fallback are added to Redis when it answers again.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use redis::aio::ConnectionManager;

use super::local::{LocalQuotas, SavedCount};
use super::{
    Policy, QuotaOutcome, Rule, RuleUsage, Rules, TenantQuota, Tightest, Window, WindowRule,
};
use crate::config::{OnRedisError, RedisConfig, RedisMode};
use crate::throttle::LogThrottle;

/// Exact mode: KEYS = the request's window keys, then the smoothing key if any;
/// ARGV = n_windows, now_ms, (limit, expire_at) per window, then (period_ms, burst).
/// Returns {1, count_1 .. count_n, smoothing_remaining or -1} when counted,
/// {0, refusing_key, count or wait_ms} when not (nothing counted).
const COUNT_LUA: &str = r#"
local n = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if c >= tonumber(ARGV[1 + 2 * i]) then return {0, i, c} end
end
local smooth = -1
if #KEYS > n then
  local period = tonumber(ARGV[3 + 2 * n])
  local burst = tonumber(ARGV[4 + 2 * n])
  local tolerance = period * (burst - 1)
  local tat = tonumber(redis.call('GET', KEYS[n + 1]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then return {0, n + 1, math.ceil(tat - now - tolerance)} end
  local new_tat = tat + period
  redis.call('SET', KEYS[n + 1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
  smooth = math.floor((tolerance - (new_tat - now)) / period) + 1
  if smooth < 0 then smooth = 0 end
end
local out = {1}
for i = 1, n do
  out[i + 1] = redis.call('INCR', KEYS[i])
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[2 + 2 * i]))
end
out[n + 2] = smooth
return out
"#;

/// Slice mode: KEYS = a rule set's window keys; ARGV = fleet_size, then per key
/// (limit, expire_at, give_back, max_slice). First gives back `give_back` unspent
/// requests of the previous slice (windows that have not ended), then reserves the
/// largest slice every window allows: {slice, count_1 .. count_n} (counts after it),
/// or {0, refusing_key, count} when a window is used up.
const RESERVE_LUA: &str = r#"
local fleet = tonumber(ARGV[1])
local counts = {}
for i = 1, #KEYS do
  local back = tonumber(ARGV[4 * i])
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if back > 0 and c > 0 then
    local d = math.min(back, c)
    c = redis.call('DECRBY', KEYS[i], d)
  end
  counts[i] = c
end
local grant = -1
for i = 1, #KEYS do
  local left = tonumber(ARGV[4 * i - 2]) - counts[i]
  if left <= 0 then return {0, i, counts[i]} end
  local slice = math.floor(left / (2 * fleet))
  if slice < 1 then slice = 1 end
  local max_slice = tonumber(ARGV[4 * i + 1])
  if slice > max_slice then slice = max_slice end
  if slice > left then slice = left end
  if grant < 0 or slice < grant then grant = slice end
end
local out = {grant}
for i = 1, #KEYS do
  out[i + 1] = redis.call('INCRBY', KEYS[i], grant)
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[4 * i - 1]))
end
return out
"#;

/// Gives back ARGV[1] unspent requests to every key of KEYS that still exists;
/// returns {1}.
const GIVE_BACK_LUA: &str = r#"
local back = tonumber(ARGV[1])
for i = 1, #KEYS do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  if c > 0 then redis.call('DECRBY', KEYS[i], math.min(back, c)) end
end
return {1}
"#;

/// Adds a batch of counts made under the local fallback, once: KEYS = the batch's
/// marker, then the count keys; ARGV = the marker's lifetime (seconds), then
/// (count, expire_at) per count key. Returns 1 when added, 0 when the marker shows
/// the batch was added before (a retry of a call whose reply was lost).
const ADD_LUA: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
for i = 2, #KEYS do
  redis.call('INCRBY', KEYS[i], tonumber(ARGV[2 * i - 2]))
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[2 * i - 1]))
end
return 1
"#;

/// A slice unused this long is given back.
pub(crate) const IDLE_SLICE: Duration = Duration::from_secs(2);

/// How long after a window's end its key is kept (clocks of a fleet differ a little).
const KEY_SLACK_SECS: i64 = 60;

/// The key of one window's count.
fn window_key(
    prefix: &str,
    tenant: &str,
    feature: Option<&str>,
    window: Window,
    index: u64,
) -> String {
    match feature {
        None => format!("{prefix}{tenant}:{}:{index}", window.name()),
        Some(f) => format!("{prefix}{tenant}:feature:{f}:{}:{index}", window.name()),
    }
}

/// The largest slice of `limit` one reservation takes: 1 % (at least 1).
fn max_slice(limit: u64) -> u64 {
    (limit / 100).max(1)
}

/// Stops calling a failing Redis for a while, then probes it.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    start: Instant,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms: super::saturating_u64(cooldown.as_millis()),
            start: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        super::saturating_u64(self.start.elapsed().as_millis())
    }

    /// Whether a call may go to Redis now (closed, or the one probe of a cooled-down
    /// open breaker).
    pub(crate) fn allow(&self) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        self.now_ms() >= open_until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// Records a failure; returns true when it opened (or re-opened) the breaker.
    pub(crate) fn failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_probe = self.probing.swap(false, Ordering::AcqRel);
        if failures >= self.threshold || was_probe {
            self.open_until_ms
                .store(self.now_ms() + self.cooldown_ms.max(1), Ordering::Release);
            return true;
        }
        false
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

/// A gateway's reservation of one rule set's windows (a tenant's, or one of its
/// features'): requests it may admit without asking Redis.
struct Slice {
    tenant: Arc<str>,
    feature: Option<Box<str>>,
    rules: Arc<Rules>,
    /// Requests of the reservation not spent yet.
    left: AtomicU64,
    /// The reservation holds until this time (Unix seconds): the earliest end of its
    /// windows.
    valid_until: AtomicI64,
    /// Per window (in `rules` order): the window's number and Redis's count after
    /// the reservation.
    indexes: [AtomicU64; 4],
    counts: [AtomicU64; 4],
    /// A window was found used up: no reservation before this time (Unix seconds),
    /// and which window.
    exhausted_until: AtomicI64,
    exhausted_rule: AtomicUsize,
    /// When a request last spent from it (milliseconds on the quota clock).
    last_used_ms: AtomicI64,
    refill: tokio::sync::Mutex<()>,
}

/// What taking one request from a slice came to.
enum Taken {
    /// Spent; figures for the headers were added to the tightest.
    Spent,
    Limited(QuotaOutcome),
    /// Redis cannot be asked.
    Failed(String),
}

/// How long a call that timed out is still waited for, and its give-back with it.
const LATE_REPLY_WAIT: Duration = Duration::from_secs(30);

/// One script call with owned keys and arguments, so it can outlive its caller.
struct ScriptCall {
    script: Arc<redis::Script>,
    keys: Vec<String>,
    args: Vec<i64>,
}

impl ScriptCall {
    /// Runs the script on `connection`; gives the keys back with the reply.
    async fn run(self, mut connection: ConnectionManager) -> CallOutput {
        let mut invocation = self.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(*arg);
        }
        let reply = invocation.invoke_async(&mut connection).await;
        (self.keys, reply)
    }
}

/// What a script call gives back: its keys and Redis's reply.
type CallOutput = (Vec<String>, redis::RedisResult<Vec<i64>>);

/// A script call still running after the timeout.
struct LateCall {
    running: std::pin::Pin<Box<dyn std::future::Future<Output = CallOutput> + Send>>,
    connection: ConnectionManager,
}

/// Fallback counts on their way to Redis under one marker key, so that Redis adds
/// them once however often the call is retried.
struct AddBatch {
    marker: String,
    counts: Vec<SavedCount>,
}

/// A number no other gateway of the fleet picks: the system's generator, or (if it
/// fails) the process id and the start time in microseconds.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_micros() % (1 << 32)).unwrap_or(0));
    (u64::from(std::process::id()) << 32) | u64::from(micros)
}

/// What a script call came to within the timeout.
enum Reply {
    Done(Vec<i64>),
    Failed(String),
    Late(LateCall),
}

/// `value` as a script argument (limits beyond `i64::MAX` are unlimited anyway).
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Slice {
    fn new(tenant: Arc<str>, feature: Option<Box<str>>, rules: Arc<Rules>) -> Slice {
        Slice {
            tenant,
            feature,
            rules,
            left: AtomicU64::new(0),
            valid_until: AtomicI64::new(0),
            indexes: Default::default(),
            counts: Default::default(),
            exhausted_until: AtomicI64::new(0),
            exhausted_rule: AtomicUsize::new(0),
            last_used_ms: AtomicI64::new(0),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// Spends one request of the reservation if it holds at `now`.
    #[inline]
    fn spend(&self, now: i64, now_ms: i64, tightest: &mut Tightest) -> bool {
        let valid_until = self.valid_until.load(Ordering::Acquire);
        if now >= valid_until {
            return false;
        }
        let taken = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            });
        let Ok(before) = taken else { return false };
        // Written at most every 100 ms: a store per request would bounce the line.
        if now_ms - self.last_used_ms.load(Ordering::Relaxed) >= 100 {
            self.last_used_ms.store(now_ms, Ordering::Relaxed);
        }
        self.consider(before - 1, now, tightest);
        true
    }

    /// Adds the reservation's figures, with `left` unspent, to `tightest`.
    fn consider(&self, left: u64, now: i64, tightest: &mut Tightest) {
        for (i, rule) in self.rules.windows.iter().enumerate() {
            let used = self.counts[i].load(Ordering::Acquire).saturating_sub(left);
            let end = rule.window.end(rule.window.index(now));
            tightest.consider(
                rule.limit,
                rule.limit.saturating_sub(used),
                super::secs_until(end, now),
            );
        }
    }

    /// Gives back one request spent at `now` (the feature's quota refused it).
    fn unspend(&self, now: i64) {
        if now < self.valid_until.load(Ordering::Acquire) {
            self.left.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The refusal while a window is known to be used up at `now`.
    fn exhausted(&self, now: i64, feature: bool, policy: Policy) -> Option<QuotaOutcome> {
        if now >= self.exhausted_until.load(Ordering::Acquire) {
            return None;
        }
        let rule = *self
            .rules
            .windows
            .get(self.exhausted_rule.load(Ordering::Acquire))?;
        Some(limited(rule, now, feature, policy))
    }

    /// The keys of its windows at the numbers stored with the reservation.
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.rules
            .windows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let index = self.indexes[i].load(Ordering::Acquire);
                window_key(
                    prefix,
                    &self.tenant,
                    self.feature.as_deref(),
                    r.window,
                    index,
                )
            })
            .collect()
    }
}

/// The refusal by windowed `rule` at `now`.
fn limited(rule: WindowRule, now: i64, feature: bool, policy: Policy) -> QuotaOutcome {
    let end = rule.window.end(rule.window.index(now));
    QuotaOutcome::Limited {
        rule: Rule::Window(rule),
        retry_after_secs: super::secs_until(end, now),
        resets_at: end,
        feature,
        policy,
    }
}

/// The Redis backend.
pub(crate) struct RedisQuotas {
    config: RedisConfig,
    client: redis::Client,
    connection: ArcSwapOption<ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    count_script: Arc<redis::Script>,
    reserve_script: Arc<redis::Script>,
    give_back_script: Arc<redis::Script>,
    add_script: redis::Script,
    breaker: Breaker,
    /// The fallback for `on_error = "local"`, with this gateway's share of the limits.
    fallback: LocalQuotas,
    /// Counts were made by the fallback and not added to Redis yet.
    fallback_counted: AtomicBool,
    /// Fallback counts an upkeep could not be sure it added to Redis, retried as
    /// the same batch.
    unadded: Mutex<Option<AddBatch>>,
    /// Names this gateway's batches of fallback counts: `{key_prefix}added:{random}:`.
    batch_prefix: String,
    /// Batches named so far.
    batches: AtomicU64,
    /// Slice mode: this gateway's smoothing, at its share of the rate.
    smoothing: LocalQuotas,
    /// Slice mode: reservations by (tenant, feature) digest.
    slices: DashMap<u64, Arc<Slice>, foldhash::fast::FixedState>,
    /// Reservations replaced (their rules changed) whose unspent part is not given
    /// back yet.
    retired: Mutex<Vec<Arc<Slice>>>,
    hasher: foldhash::fast::FixedState,
    /// `licgate_quota_backend_errors_total{backend="redis"}`.
    errors: prometheus::IntCounter,
    error_log: LogThrottle,
}

impl RedisQuotas {
    /// A backend for `config` (connects lazily, on the first check) that counts its
    /// failures in `errors`.
    pub(crate) fn new(
        config: RedisConfig,
        errors: prometheus::IntCounter,
    ) -> Result<RedisQuotas, redis::RedisError> {
        Ok(RedisQuotas {
            client: redis::Client::open(config.url.as_str())?,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            count_script: Arc::new(redis::Script::new(COUNT_LUA)),
            reserve_script: Arc::new(redis::Script::new(RESERVE_LUA)),
            give_back_script: Arc::new(redis::Script::new(GIVE_BACK_LUA)),
            add_script: redis::Script::new(ADD_LUA),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            fallback: LocalQuotas::with_share(config.fleet_size),
            fallback_counted: AtomicBool::new(false),
            unadded: Mutex::default(),
            batch_prefix: format!("{}added:{:016x}:", config.key_prefix, random_u64()),
            batches: AtomicU64::new(0),
            smoothing: LocalQuotas::with_share(config.fleet_size),
            slices: DashMap::default(),
            retired: Mutex::default(),
            hasher: foldhash::fast::FixedState::with_seed(0x6c69_6367_6174_6532),
            errors,
            error_log: LogThrottle::new(Duration::from_secs(5)),
            config,
        })
    }

    /// Runs `script` on `keys` with `args` for another part of the gateway (the
    /// fleet's seats) under this backend's timeout and breaker; a failure or a late
    /// reply is an `Err` (counted in the backend's errors). The key prefix is
    /// `quota.redis.key_prefix`.
    pub(crate) async fn run(
        &self,
        script: &Arc<redis::Script>,
        keys: Vec<String>,
        args: Vec<i64>,
    ) -> Result<Vec<i64>, String> {
        if !self.breaker.allow() {
            return Err("the breaker is open".into());
        }
        let call = ScriptCall {
            script: Arc::clone(script),
            keys,
            args,
        };
        match self.call_script(call).await {
            Reply::Done(reply) => {
                self.breaker.success();
                Ok(reply)
            }
            Reply::Failed(reason) => Err(self.failed_call(reason)),
            Reply::Late(_) => Err(self.failed_call("timed out".into())),
        }
    }

    /// Counts a failed call of [`Self::run`]; gives its reason back.
    fn failed_call(&self, reason: String) -> String {
        self.record_failure(&reason);
        reason
    }

    /// Counts a failed Redis call: the error metric, a fresh connection next time,
    /// the breaker, and a throttled log line.
    fn record_failure(&self, reason: &str) {
        self.errors.inc();
        // Start afresh on the next probe rather than waiting on a broken connection.
        self.connection.store(None);
        let opened = self.breaker.failure();
        if opened || self.error_log.permit().is_some() {
            tracing::warn!(
                reason,
                on_error = ?self.config.on_error,
                breaker_open = self.breaker.is_open(),
                errors = self.errors(),
                "redis quota backend unavailable; falling back"
            );
        }
    }

    /// `quota.redis.key_prefix`.
    pub(crate) fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    /// `quota.redis.on_error`.
    pub(crate) fn on_error(&self) -> OnRedisError {
        self.config.on_error
    }

    /// Redis calls that failed or timed out so far.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.get()
    }

    /// Counts one request against the fleet-wide quota in Redis.
    pub(crate) async fn check(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        let feature_rules = feature.and_then(|f| tenant.feature_rules.get(f).map(|r| (f, r)));
        if tenant.rate_rules.is_empty() && feature_rules.is_none() {
            return QuotaOutcome::Unlimited;
        }
        match self.config.mode {
            RedisMode::Exact => self.check_exact(tenant, feature_rules).await,
            RedisMode::Slice => self.check_sliced(tenant, feature_rules).await,
        }
    }

    /// Exact mode: one script per request.
    async fn check_exact(
        &self,
        tenant: &TenantQuota,
        feature_rules: Option<(&str, &Arc<Rules>)>,
    ) -> QuotaOutcome {
        let feature = feature_rules.map(|(f, _)| f);
        if !self.breaker.allow() {
            return self.fallback(tenant, feature);
        }
        let now_ms = super::clock::now_ms();
        let now = now_ms.div_euclid(1_000);
        let prefix = &self.config.key_prefix;
        let mut windows: Vec<(WindowRule, bool)> = Vec::new();
        let mut policy = Policy::default();
        let mut keys = Vec::with_capacity(4);
        policy.extend(&tenant.rate_rules, now);
        for rule in tenant.rate_rules.windows.iter() {
            let index = rule.window.index(now);
            keys.push(window_key(
                prefix,
                tenant.tenant(),
                None,
                rule.window,
                index,
            ));
            windows.push((*rule, false));
        }
        if let Some((name, rules)) = feature_rules {
            policy.extend(rules, now);
            for rule in rules.windows.iter() {
                let index = rule.window.index(now);
                keys.push(window_key(
                    prefix,
                    tenant.tenant(),
                    Some(name),
                    rule.window,
                    index,
                ));
                windows.push((*rule, true));
            }
        }
        let smooth = tenant.rate_rules.smooth;
        if smooth.is_some() {
            keys.push(format!("{prefix}{}:burst", tenant.tenant()));
        }
        let mut args = Vec::with_capacity(2 + 2 * windows.len() + 2);
        args.push(saturating_i64(windows.len() as u64));
        args.push(now_ms);
        for (rule, _) in &windows {
            let end = rule.window.end(rule.window.index(now));
            args.push(saturating_i64(rule.limit));
            args.push(end + KEY_SLACK_SECS);
        }
        if let Some(s) = smooth {
            args.push(saturating_i64(
                super::saturating_u64(s.period.as_millis()).max(1),
            ));
            args.push(i64::from(s.burst));
        }
        let call = ScriptCall {
            script: Arc::clone(&self.count_script),
            keys,
            args,
        };
        let reply = match self.call_script(call).await {
            Reply::Done(reply) => reply,
            Reply::Failed(e) => return self.failed(&e, tenant, feature),
            Reply::Late(late) => {
                self.settle_late(late, windows.len(), |reply| match reply {
                    [1, ..] => 1,
                    _ => 0,
                });
                return self.failed("timed out", tenant, feature);
            }
        };
        self.breaker.success();
        match reply.as_slice() {
            [1, rest @ ..] if rest.len() == windows.len() + 1 => {
                let mut tightest = Tightest::default();
                for ((rule, _), count) in windows.iter().zip(rest) {
                    let end = rule.window.end(rule.window.index(now));
                    let used = super::saturating_u64(*count);
                    tightest.consider(
                        rule.limit,
                        rule.limit.saturating_sub(used),
                        super::secs_until(end, now),
                    );
                }
                if let (Some(s), Some(&remaining)) = (smooth, rest.last()) {
                    let remaining = super::saturating_u64(remaining);
                    let used = u64::from(s.burst).saturating_sub(remaining);
                    tightest.consider(
                        u64::from(s.burst),
                        remaining,
                        super::ceil_secs(s.period * super::saturating_u32(used)),
                    );
                }
                tightest.allowed(policy)
            }
            [0, index, value] => {
                let at = usize::try_from(index.saturating_sub(1)).unwrap_or(usize::MAX);
                match (windows.get(at), smooth) {
                    (Some((rule, by_feature)), _) => limited(*rule, now, *by_feature, policy),
                    (None, Some(s)) => {
                        let wait = super::saturating_u64(*value).div_ceil(1000).max(1);
                        QuotaOutcome::Limited {
                            rule: Rule::Smooth(s),
                            retry_after_secs: wait,
                            resets_at: now.saturating_add_unsigned(wait),
                            feature: false,
                            policy,
                        }
                    }
                    (None, None) => QuotaOutcome::Unlimited,
                }
            }
            _ => self.failed("unexpected reply from the quota script", tenant, feature),
        }
    }

    /// Slice mode: spend from this gateway's reservations, reserving when spent.
    async fn check_sliced(
        &self,
        tenant: &TenantQuota,
        feature_rules: Option<(&str, &Arc<Rules>)>,
    ) -> QuotaOutcome {
        let feature = feature_rules.map(|(f, _)| f);
        let now_ms = super::clock::now_ms();
        let now = now_ms.div_euclid(1_000);
        let mut policy = Policy::default();
        policy.extend(&tenant.rate_rules, now);
        if let Some((_, rules)) = feature_rules {
            policy.extend(rules, now);
        }
        let mut tightest = Tightest::default();
        let mut spent = None;
        if !tenant.rate_rules.windows.is_empty() {
            let slice = self.slice(tenant.tenant(), None, &tenant.rate_rules);
            match self
                .take(&slice, now, now_ms, false, policy, &mut tightest)
                .await
            {
                Taken::Spent => spent = Some(slice),
                Taken::Limited(outcome) => return outcome,
                Taken::Failed(reason) => return self.failed(&reason, tenant, feature),
            }
        }
        if let Some((name, rules)) = feature_rules.filter(|(_, r)| !r.windows.is_empty()) {
            let slice = self.slice(tenant.tenant(), Some(name), rules);
            let taken = self
                .take(&slice, now, now_ms, true, policy, &mut tightest)
                .await;
            if !matches!(taken, Taken::Spent) {
                if let Some(spent) = &spent {
                    spent.unspend(now);
                }
            }
            match taken {
                Taken::Spent => {}
                Taken::Limited(outcome) => return outcome,
                Taken::Failed(reason) => return self.failed(&reason, tenant, feature),
            }
        }
        if tenant.rate_rules.smooth.is_some() {
            match self.smoothing.check_smoothing(tenant) {
                Ok(Some((limit, remaining, reset))) => tightest.consider(limit, remaining, reset),
                Ok(None) => {}
                Err((rule, retry_after_secs)) => {
                    if let Some(spent) = &spent {
                        spent.unspend(now);
                    }
                    return QuotaOutcome::Limited {
                        rule: Rule::Smooth(rule),
                        retry_after_secs,
                        resets_at: now.saturating_add_unsigned(retry_after_secs),
                        feature: false,
                        policy,
                    };
                }
            }
        }
        tightest.allowed(policy)
    }

    /// The reservation of `tenant`'s `feature` (`None`: its own windows) under `rules`.
    fn slice(&self, tenant: &Arc<str>, feature: Option<&str>, rules: &Arc<Rules>) -> Arc<Slice> {
        let mut h = self.hasher.build_hasher();
        h.write(tenant.as_bytes());
        h.write_u8(0xff);
        if let Some(f) = feature {
            h.write(f.as_bytes());
        }
        let key = h.finish();
        if let Some(slice) = self.slices.get(&key) {
            if (Arc::ptr_eq(&slice.rules, rules) || slice.rules == *rules)
                && *slice.tenant == **tenant
                && slice.feature.as_deref() == feature
            {
                return Arc::clone(&slice);
            }
        }
        let slice = Arc::new(Slice::new(
            Arc::clone(tenant),
            feature.map(Into::into),
            Arc::clone(rules),
        ));
        if let Some(old) = self.slices.insert(key, Arc::clone(&slice)) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
        slice
    }

    /// Takes one request from `slice`, reserving a new slice from Redis when it is spent.
    async fn take(
        &self,
        slice: &Slice,
        now: i64,
        now_ms: i64,
        feature: bool,
        policy: Policy,
        tightest: &mut Tightest,
    ) -> Taken {
        if slice.spend(now, now_ms, tightest) {
            return Taken::Spent;
        }
        if let Some(refused) = slice.exhausted(now, feature, policy) {
            return Taken::Limited(refused);
        }
        let _refilling = slice.refill.lock().await;
        // Another request may have reserved while this one waited.
        if slice.spend(now, now_ms, tightest) {
            return Taken::Spent;
        }
        if let Some(refused) = slice.exhausted(now, feature, policy) {
            return Taken::Limited(refused);
        }
        if !self.breaker.allow() {
            return Taken::Failed("the circuit breaker is open".into());
        }
        let prefix = &self.config.key_prefix;
        // What is left of the previous reservation goes back to the windows it shares
        // with the new one.
        let unspent = slice.left.swap(0, Ordering::AcqRel);
        let mut keys = Vec::with_capacity(slice.rules.windows.len());
        let mut args = Vec::with_capacity(1 + 4 * slice.rules.windows.len());
        args.push(i64::from(self.config.fleet_size));
        let mut valid_until = i64::MAX;
        let mut indexes = [0u64; 4];
        for (i, rule) in slice.rules.windows.iter().enumerate() {
            let index = rule.window.index(now);
            let end = rule.window.end(index);
            valid_until = valid_until.min(end);
            indexes[i] = index;
            let give_back = if slice.indexes[i].load(Ordering::Acquire) == index {
                unspent
            } else {
                0
            };
            keys.push(window_key(
                prefix,
                &slice.tenant,
                slice.feature.as_deref(),
                rule.window,
                index,
            ));
            args.extend([
                saturating_i64(rule.limit),
                end + KEY_SLACK_SECS,
                saturating_i64(give_back),
                saturating_i64(max_slice(rule.limit)),
            ]);
        }
        let n_keys = keys.len();
        let call = ScriptCall {
            script: Arc::clone(&self.reserve_script),
            keys,
            args,
        };
        let reply = match self.call_script(call).await {
            Reply::Done(reply) => reply,
            Reply::Failed(e) => return Taken::Failed(e),
            Reply::Late(late) => {
                self.settle_late(late, n_keys, |reply| match reply {
                    [grant, ..] if *grant > 0 => super::saturating_u64(*grant),
                    _ => 0,
                });
                return Taken::Failed("timed out".into());
            }
        };
        self.breaker.success();
        let n = slice.rules.windows.len();
        match reply.as_slice() {
            [0, index, _] => {
                let at = usize::try_from(index.saturating_sub(1))
                    .unwrap_or(0)
                    .min(n.saturating_sub(1));
                let Some(rule) = slice.rules.windows.get(at) else {
                    return Taken::Failed("unexpected reply from the quota script".into());
                };
                let end = rule.window.end(rule.window.index(now));
                slice.exhausted_rule.store(at, Ordering::Release);
                // Checked again within a second: others may give slices back.
                slice
                    .exhausted_until
                    .store(end.min(now + 1), Ordering::Release);
                for (i, index) in indexes.iter().enumerate().take(n) {
                    slice.indexes[i].store(*index, Ordering::Release);
                }
                Taken::Limited(limited(*rule, now, feature, policy))
            }
            [grant, counts @ ..] if *grant > 0 && counts.len() == n => {
                for (i, count) in counts.iter().enumerate() {
                    slice.indexes[i].store(indexes[i], Ordering::Release);
                    slice.counts[i].store(super::saturating_u64(*count), Ordering::Release);
                }
                slice.valid_until.store(valid_until, Ordering::Release);
                let left = super::saturating_u64(*grant) - 1;
                slice.last_used_ms.store(now_ms, Ordering::Relaxed);
                slice.consider(left, now, tightest);
                slice.left.store(left, Ordering::Release);
                Taken::Spent
            }
            _ => Taken::Failed("unexpected reply from the quota script".into()),
        }
    }

    /// Retires the reservations of tenants that no longer have a license (their
    /// unspent part goes back at the next upkeep).
    pub(crate) fn retain_licensed(&self, snapshot: &crate::license::LicenseSnapshot) {
        let mut retired = Vec::new();
        self.slices.retain(|_, slice| {
            let keep = snapshot.tenants.contains_key(&slice.tenant);
            if !keep {
                retired.push(Arc::clone(slice));
            }
            keep
        });
        if !retired.is_empty() {
            self.slices.shrink_to_fit();
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(retired);
        }
    }

    /// Background upkeep, once a second: gives back reservations unused for
    /// [`IDLE_SLICE`] (all of them when `all`, at shutdown) and replaced ones, and adds
    /// counts made under the local fallback to Redis. Returns the requests given back.
    pub(crate) async fn upkeep(&self, all: bool) -> u64 {
        let now_ms = super::clock::now_ms();
        let now = now_ms.div_euclid(1_000);
        let idle_ms = super::saturating_u64(IDLE_SLICE.as_millis());
        let mut returns =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()));
        returns.extend(
            self.slices
                .iter()
                .filter(|s| {
                    all || now_ms
                        .saturating_sub(s.last_used_ms.load(Ordering::Relaxed))
                        .unsigned_abs()
                        >= idle_ms
                })
                .map(|s| Arc::clone(s.value())),
        );
        let mut given_back = 0;
        for slice in returns {
            if now >= slice.valid_until.load(Ordering::Acquire) {
                continue;
            }
            let Ok(_refilling) = slice.refill.try_lock() else {
                continue;
            };
            let unspent = slice.left.swap(0, Ordering::AcqRel);
            if unspent == 0 {
                continue;
            }
            let mut invocation = self.give_back_script.prepare_invoke();
            for key in slice.keys(&self.config.key_prefix) {
                invocation.key(key);
            }
            invocation.arg(unspent);
            if self.call_upkeep(&invocation).await.is_some() {
                given_back += unspent;
            }
        }
        if self.fallback_counted.load(Ordering::Acquire) && !self.breaker.is_open() {
            self.add_fallback_counts(now).await;
        }
        given_back
    }

    /// Adds what the local fallback counted to Redis (and forgets it locally), as a
    /// batch Redis takes once: a batch whose call failed or timed out is kept and
    /// sent again as it was (its counts of windows that ended dropped), since Redis
    /// may have run it; new fallback counts wait for the next upkeep.
    async fn add_fallback_counts(&self, now: i64) {
        let pending = self
            .unadded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let retried = pending.is_some();
        let mut batch = pending.unwrap_or_else(|| {
            self.fallback_counted.store(false, Ordering::Release);
            let number = self.batches.fetch_add(1, Ordering::Relaxed);
            AddBatch {
                marker: format!("{}{number}", self.batch_prefix),
                counts: self.fallback.take_counts(now),
            }
        });
        batch.counts.retain(|c| c.index == c.window.index(now));
        let Some(last_end) = batch.counts.iter().map(|c| c.window.end(c.index)).max() else {
            return;
        };
        let prefix = &self.config.key_prefix;
        let mut invocation = self.add_script.prepare_invoke();
        invocation
            .key(&batch.marker)
            .arg((last_end + KEY_SLACK_SECS - now).max(1));
        for SavedCount {
            tenant,
            feature,
            window,
            index,
            count,
        } in &batch.counts
        {
            invocation
                .key(window_key(
                    prefix,
                    tenant,
                    feature.as_deref(),
                    *window,
                    *index,
                ))
                .arg(*count)
                .arg(window.end(*index) + KEY_SLACK_SECS);
        }
        match self.call_upkeep(&invocation).await {
            Some(added) => tracing::info!(
                counts = batch.counts.len(),
                retried,
                already = added == redis::Value::Int(0),
                "counts made while Redis was unavailable were added to Redis"
            ),
            None => {
                *self.unadded.lock().unwrap_or_else(|e| e.into_inner()) = Some(batch);
                self.fallback_counted.store(true, Ordering::Release);
            }
        }
    }

    /// Runs an upkeep script within 4 × the timeout: its reply, or `None` when it
    /// failed or timed out (it may have run all the same).
    async fn call_upkeep(&self, invocation: &redis::ScriptInvocation<'_>) -> Option<redis::Value> {
        let call = async {
            let mut connection = self.connection().await?;
            invocation
                .invoke_async::<redis::Value>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.config.timeout * 4, call).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(e)) => {
                self.errors.inc();
                tracing::warn!(error = %e, "redis quota upkeep failed");
                None
            }
            Err(_) => {
                self.errors.inc();
                tracing::warn!("redis quota upkeep timed out");
                None
            }
        }
    }

    /// The live figures of each of `tenant`'s rate rules, read from Redis without
    /// counting anything; `Err` when Redis cannot be asked. In slice mode the counts
    /// include slices reserved and not spent yet.
    pub(crate) async fn usage(&self, tenant: &TenantQuota) -> Result<Vec<RuleUsage>, String> {
        let now = super::clock::now();
        let prefix = &self.config.key_prefix;
        let mut rules: Vec<(WindowRule, Option<&str>, String)> = tenant
            .rate_rules
            .windows
            .iter()
            .map(|r| {
                let key = window_key(prefix, tenant.tenant(), None, r.window, r.window.index(now));
                (*r, None, key)
            })
            .collect();
        let mut features: Vec<_> = tenant.feature_rules.iter().collect();
        features.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, feature_rules) in features {
            for r in feature_rules.windows.iter() {
                let key = window_key(
                    prefix,
                    tenant.tenant(),
                    Some(name),
                    r.window,
                    r.window.index(now),
                );
                rules.push((*r, Some(&**name), key));
            }
        }
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = rules.iter().map(|(_, _, k)| k.as_str()).collect();
        let call = async {
            let mut connection = self.connection().await?;
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<u64>>>(&mut connection)
                .await
        };
        let counts = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        Ok(rules
            .iter()
            .zip(counts)
            .map(|((rule, feature, _), count)| {
                let used = count.unwrap_or(0);
                let end = rule.window.end(rule.window.index(now));
                RuleUsage {
                    window: rule.window.name(),
                    feature: feature.map(str::to_string),
                    limit: rule.limit,
                    used,
                    remaining: rule.limit.saturating_sub(used),
                    reset_secs: super::secs_until(end, now),
                }
            })
            .collect())
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let manager = ConnectionManager::new(self.client.clone()).await?;
        self.connection.store(Some(Arc::new(manager.clone())));
        Ok(manager)
    }

    /// Runs `call` within the timeout (connecting included). A call still running
    /// then is not dropped: once sent, Redis runs it anyway, so its reply is awaited
    /// by [`Self::settle_late`] to undo what it did.
    async fn call_script(&self, call: ScriptCall) -> Reply {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let connection = match tokio::time::timeout_at(deadline, self.connection()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Reply::Failed(e.to_string()),
            Err(_) => return Reply::Failed("timed out".into()),
        };
        let mut running = Box::pin(call.run(connection.clone()));
        match tokio::time::timeout_at(deadline, &mut running).await {
            Ok((_, Ok(reply))) => Reply::Done(reply),
            Ok((_, Err(e))) => Reply::Failed(e.to_string()),
            Err(_) => Reply::Late(LateCall {
                running,
                connection,
            }),
        }
    }

    /// Waits (in a task of its own, [`LATE_REPLY_WAIT`] at most) for a call that
    /// timed out, then gives back the `counted(reply)` requests it counted or reserved
    /// to the first `n_keys` keys, so a reply that came too late counts nothing twice.
    /// The request itself was decided by `on_error`: under `allow` it was served
    /// uncounted, so one of them stays counted.
    fn settle_late(&self, late: LateCall, n_keys: usize, counted: fn(&[i64]) -> u64) {
        let served_uncounted = u64::from(self.config.on_error == OnRedisError::Allow);
        let give_back = Arc::clone(&self.give_back_script);
        let errors = self.errors.clone();
        tokio::spawn(async move {
            let LateCall {
                running,
                connection,
            } = late;
            let Ok((mut keys, Ok(reply))) = tokio::time::timeout(LATE_REPLY_WAIT, running).await
            else {
                return;
            };
            let amount = counted(&reply).saturating_sub(served_uncounted);
            if amount == 0 {
                return;
            }
            keys.truncate(n_keys);
            let call = ScriptCall {
                script: give_back,
                keys,
                args: vec![saturating_i64(amount)],
            };
            let failure = match tokio::time::timeout(LATE_REPLY_WAIT, call.run(connection)).await {
                Ok((_, Ok(_))) => return,
                Ok((_, Err(e))) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            errors.inc();
            tracing::warn!(amount, error = %failure, "a late quota reply could not be given back");
        });
    }

    fn failed(&self, reason: &str, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        self.record_failure(reason);
        self.fallback(tenant, feature)
    }

    fn fallback(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        match self.config.on_error {
            OnRedisError::Local => {
                self.fallback_counted.store(true, Ordering::Release);
                self.fallback.check(tenant, feature)
            }
            OnRedisError::Allow => QuotaOutcome::Unlimited,
            OnRedisError::Deny => QuotaOutcome::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_of_tenants_without_a_license_are_retired() {
        let config = RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            key_prefix: "t:".into(),
            timeout: Duration::from_millis(25),
            on_error: OnRedisError::Local,
            fleet_size: 1,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
            mode: RedisMode::Slice,
        };
        let redis =
            RedisQuotas::new(config, prometheus::IntCounter::new("e", "e").unwrap()).unwrap();
        let rules = Arc::new(super::super::tenant_rules(
            &crate::license::claims::Limits {
                requests_per_hour: Some(10),
                ..Default::default()
            },
        ));
        for name in ["a", "b", "c"] {
            let tenant: Arc<str> = name.into();
            let first = redis.slice(&tenant, None, &rules);
            assert!(Arc::ptr_eq(&first, &redis.slice(&tenant, None, &rules)));
        }
        let kept = crate::license::LicenseSnapshot {
            tenants: [(
                Arc::from("b"),
                Arc::new(crate::license::TenantSummary::with_limits(
                    "b",
                    Default::default(),
                    Default::default(),
                )),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        redis.retain_licensed(&kept);
        assert_eq!(redis.slices.len(), 1);
        assert_eq!(
            redis.retired.lock().unwrap().len(),
            2,
            "given back at the next upkeep"
        );
    }

    #[test]
    fn the_breaker_opens_cools_down_and_probes_once() {
        let breaker = Breaker::new(2, Duration::from_millis(30));
        assert!(breaker.allow());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the second failure opens it");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow(), "one probe after the cooldown");
        assert!(!breaker.allow(), "only one");
        assert!(breaker.failure(), "a failed probe re-opens it");
        assert!(!breaker.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.allow());
        breaker.success();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }
}
