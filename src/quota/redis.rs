//! The Redis quota backend: one fleet-wide quota shared by several gateways.
//!
//! Each check is one round trip: a Lua script (loaded once, then called by SHA) runs
//! GCRA for every rule of the request atomically — all rules must allow, or none is
//! consumed — and stores each rule's theoretical arrival time with a TTL that ends
//! when the state would be fresh anyway, so Redis never grows without bound.
//!
//! Faults: every call has a timeout; after `breaker_failures` consecutive failures a
//! circuit breaker stops calling Redis for `breaker_cooldown`, then lets one probe
//! through. While Redis cannot be used, `on_error` decides: count locally with this
//! gateway's share of each limit (`local`), let requests through (`allow`), or refuse
//! them with 503 (`deny`). A Redis error never produces a 429.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;

use super::local::LocalQuotas;
use super::TenantQuota;
use super::{QuotaOutcome, RateRule, RuleUsage};
use crate::config::{OnRedisError, RedisConfig};
use crate::throttle::LogThrottle;

/// GCRA over N rules: KEYS[i] holds rule i's TAT (ms); ARGV = now_ms, then
/// (period_ms, burst) per rule. Returns {1, tightest_rule, remaining, reset_ms} when
/// allowed, {0, refusing_rule, retry_after_ms, 0} when not.
const GCRA_LUA: &str = r#"
local now = tonumber(ARGV[1])
local tats = {}
local best_i, best_remaining, best_reset = 0, -1, 0
for i = 1, #KEYS do
  local period = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tolerance = period * (burst - 1)
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {0, i, tat - now - tolerance, 0}
  end
  local new_tat = tat + period
  tats[i] = new_tat
  local remaining = math.floor((tolerance - (new_tat - now)) / period) + 1
  if remaining < 0 then remaining = 0 end
  if best_remaining < 0 or remaining < best_remaining then
    best_i, best_remaining, best_reset = i, remaining, new_tat - now
  end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tats[i], 'PX', math.max(1, math.ceil(tats[i] - now)))
end
return {1, best_i, best_remaining, best_reset}
"#;

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

/// The Redis backend.
pub(crate) struct RedisQuotas {
    config: RedisConfig,
    client: redis::Client,
    connection: ArcSwapOption<ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    breaker: Breaker,
    /// The fallback for `on_error = "local"`, with this gateway's share of the limits.
    fallback: LocalQuotas,
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
            script: redis::Script::new(GCRA_LUA),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            fallback: LocalQuotas::with_share(config.fleet_size),
            errors,
            error_log: LogThrottle::new(Duration::from_secs(5)),
            config,
        })
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
        if !self.breaker.allow() {
            return self.fallback(tenant, feature);
        }
        let mut rules: Vec<(RateRule, bool)> =
            tenant.rate_rules.iter().map(|r| (*r, false)).collect();
        let prefix = &self.config.key_prefix;
        let mut invocation = self.script.prepare_invoke();
        for rule in tenant.rate_rules.iter() {
            invocation.key(format!(
                "{prefix}{}:{}",
                tenant.tenant(),
                rule.window.name()
            ));
        }
        if let Some((name, feature_rules)) = feature_rules {
            for rule in feature_rules {
                invocation.key(format!(
                    "{prefix}{}:feature:{name}:{}",
                    tenant.tenant(),
                    rule.window.name()
                ));
                rules.push((*rule, true));
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| super::saturating_u64(d.as_millis()))
            .unwrap_or(0);
        invocation.arg(now_ms);
        for (rule, _) in &rules {
            let period_ms = (rule.window.seconds() * 1000).div_ceil(rule.limit).max(1);
            invocation.arg(period_ms).arg(rule.burst);
        }
        let call = async {
            let mut connection = self.connection().await?;
            invocation
                .invoke_async::<(i64, i64, i64, i64)>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok((allowed, index, value, reset_ms))) => {
                self.breaker.success();
                let Some(&(rule, by_feature)) =
                    rules.get(usize::try_from(index.max(1) - 1).unwrap_or(usize::MAX))
                else {
                    return QuotaOutcome::Unlimited;
                };
                if allowed == 1 {
                    QuotaOutcome::Allowed {
                        limit: rule.limit,
                        remaining: super::saturating_u32(value),
                        reset_secs: super::saturating_u64(reset_ms).div_ceil(1000),
                    }
                } else {
                    QuotaOutcome::Limited {
                        rule,
                        retry_after_secs: super::saturating_u64(value.max(1)).div_ceil(1000),
                        feature: by_feature,
                    }
                }
            }
            Ok(Err(e)) => self.failed(&e.to_string(), tenant, feature),
            Err(_) => self.failed("timed out", tenant, feature),
        }
    }

    /// The live figures of each of `tenant`'s rate rules, read from Redis without
    /// counting anything; `Err` when Redis cannot be asked.
    pub(crate) async fn usage(&self, tenant: &TenantQuota) -> Result<Vec<RuleUsage>, String> {
        let prefix = &self.config.key_prefix;
        let mut rules: Vec<(RateRule, Option<&str>, String)> = tenant
            .rate_rules
            .iter()
            .map(|r| {
                let key = format!("{prefix}{}:{}", tenant.tenant(), r.window.name());
                (*r, None, key)
            })
            .collect();
        let mut features: Vec<_> = tenant.feature_rules.iter().collect();
        features.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, feature_rules) in features {
            for r in feature_rules {
                let key = format!(
                    "{prefix}{}:feature:{name}:{}",
                    tenant.tenant(),
                    r.window.name()
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
        let tats = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(tats)) => tats,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| super::saturating_u64(d.as_millis()))
            .unwrap_or(0);
        Ok(rules
            .iter()
            .zip(tats)
            .map(|((rule, feature, _), tat)| {
                let period = (rule.window.seconds() * 1000).div_ceil(rule.limit).max(1);
                let tolerance = period * u64::from(rule.burst.saturating_sub(1));
                let ahead = tat.unwrap_or(now_ms).saturating_sub(now_ms);
                let remaining = if ahead > tolerance + period {
                    0
                } else {
                    super::saturating_u32(
                        ((tolerance + period - ahead) / period).min(u64::from(rule.burst)),
                    )
                };
                RuleUsage {
                    window: rule.window.name(),
                    feature: feature.map(str::to_string),
                    limit: rule.limit,
                    burst: rule.burst,
                    remaining,
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

    fn failed(&self, reason: &str, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
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
        self.fallback(tenant, feature)
    }

    fn fallback(&self, tenant: &TenantQuota, feature: Option<&str>) -> QuotaOutcome {
        match self.config.on_error {
            OnRedisError::Local => self.fallback.check(tenant, feature),
            OnRedisError::Allow => QuotaOutcome::Unlimited,
            OnRedisError::Deny => QuotaOutcome::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
