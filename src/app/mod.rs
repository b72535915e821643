//! The gateway's shared state: the configuration-derived [`Rules`] (swapped on
//! reload) and what outlives reloads (licenses and the tenant table, quotas,
//! limiters, metrics, the in-flight count). The proxy, the admin API, the reloader
//! and the server all take one [`App`].

pub(crate) mod rules;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

pub(crate) use rules::Rules;

use crate::access_log::{AccessLog, LineFormat, Sink};
use crate::config::{Config, LogFormat, QuotaConfig};
use crate::license::instance_key::InstanceKey;
use crate::license::LicenseManager;
use crate::lifecycle::Inflight;
use crate::link::Link;
use crate::metrics::{Metrics, QuotaUseSource, UNKNOWN_TENANT};
use crate::quota::durable::{CountStore, CountWriter};
use crate::quota::local::LocalQuotas;
use crate::quota::redis::RedisQuotas;
use crate::quota::share::ClientShares;
use crate::tenants::Tenants;
use crate::throttle::{AttemptThrottle, LogThrottle};
use crate::usage::{RecorderSettings, UsageRecorder};

/// How often changed quota counts are written to the count database.
const COUNT_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the usage ledger's sums are written.
const USAGE_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Activation attempts allowed per client (IPv4 address or IPv6 /64) per minute.
pub(crate) const ACTIVATIONS_PER_MINUTE: u32 = 10;
/// Clients whose activation attempts are remembered at once (about 100 B each).
pub(crate) const ACTIVATION_CLIENTS: usize = 50_000;

/// The gateway's shared state.
pub(crate) struct App {
    pub rules: ArcSwap<Rules>,
    pub licenses: Option<Arc<LicenseManager>>,
    /// The per-tenant entries of the request path, following `licenses`.
    pub tenants: Arc<Tenants>,
    /// Requests in flight (the drain waits for them).
    pub inflight: Arc<Inflight>,
    /// The access log's queue and writer (lines are written off the request path).
    pub access_log: AccessLog,
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
    /// Saves the local quota counts to the store's count database (with a license
    /// store and the local backend); taken at shutdown for the last save.
    pub count_writer: Mutex<Option<CountWriter>>,
    /// The usage ledger's recorder (with a license store).
    pub usage: Option<UsageRecorder>,
    /// The installation's key pair (with licensing): signs its usage reports.
    pub instance_key: Option<Arc<InstanceKey>>,
    /// The link to the license authority (`[authority]`, with licensing).
    pub link: Option<Arc<Link>>,
    /// The seats counted per `[seats]` (with licensing).
    pub seats: Option<crate::seats::Seats>,
    /// Signs the activation form's CSRF tokens (the store's secret; without a store, one
    /// made at start).
    pub csrf_key: ring::hmac::Key,
}

/// `quota_usage_ratio` from the local quota counts.
struct LocalQuotaUse {
    tenants: Arc<Tenants>,
    quotas: Arc<LocalQuotas>,
}

impl QuotaUseSource for LocalQuotaUse {
    fn quota_use(&self) -> Vec<(Arc<str>, &'static str, f64)> {
        let table = self.tenants.load_full();
        let mut out = Vec::new();
        for entry in table.entries() {
            if entry.quota.rate_rules.windows.is_empty() {
                continue;
            }
            for rule in self.quotas.usage(&entry.quota) {
                if rule.feature.is_none() && rule.window != "burst" && rule.limit > 0 {
                    let tenant = Arc::clone(&entry.license().tenant);
                    out.push((tenant, rule.window, rule.used as f64 / rule.limit as f64));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl App {
    /// The state for `config` with its first `rules`, following `licenses` in
    /// `tenants`, counting in `metrics` and `inflight`.
    pub(crate) fn new(
        config: &Config,
        rules: Rules,
        licenses: Option<Arc<LicenseManager>>,
        tenants: Arc<Tenants>,
        metrics: Arc<Metrics>,
        inflight: Arc<Inflight>,
    ) -> std::io::Result<App> {
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
        let access_log = AccessLog::start(
            match &config.log.access_file {
                Some(path) => Sink::File(path.clone()),
                None => Sink::Stderr,
            },
            match config.log.format {
                LogFormat::Text => LineFormat::Text,
                LogFormat::Json => LineFormat::Json,
            },
            config.log.access_overflow,
            metrics.access_log_dropped.clone(),
            UNKNOWN_TENANT,
        )
        .map_err(|e| std::io::Error::other(format!("log.access_file: {e}")))?;
        let quotas = Arc::new(LocalQuotas::default());
        let counts = match (&licenses, &config.quota) {
            (Some(manager), QuotaConfig::Local) => {
                let store = CountStore::open(manager.store().dir())
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let now = crate::quota::clock::now();
                let saved = store
                    .load(now)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                if !saved.is_empty() {
                    tracing::info!(
                        counts = saved.len(),
                        database = %store.path().display(),
                        "quota counts of the current windows restored"
                    );
                }
                quotas.restore(saved, now);
                Some(CountWriter::start(
                    Arc::clone(&quotas),
                    store,
                    COUNT_SAVE_INTERVAL,
                )?)
            }
            _ => None,
        };
        let usage = match &licenses {
            Some(manager) if config.usage.enabled => Some(
                UsageRecorder::start(
                    manager.store().dir(),
                    RecorderSettings {
                        interval: USAGE_WRITE_INTERVAL,
                        retention_days: config.usage.retention_days,
                    },
                )
                .map_err(|e| std::io::Error::other(format!("usage ledger: {e}")))?,
            ),
            _ => None,
        };
        let instance_key = match &config.license {
            Some(license) => Some(Arc::new(
                InstanceKey::load_or_create(&license.instance_key_file)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            )),
            None => None,
        };
        let link = match (&config.authority, &config.license, &licenses, &instance_key) {
            (Some(authority), Some(license), Some(manager), Some(key)) => {
                let link = Link::new(authority, license, Arc::clone(manager), Arc::clone(key))
                    .map_err(std::io::Error::other)?;
                metrics.register(link.collector());
                Some(link)
            }
            _ => None,
        };
        let seats = match (&config.seats, &instance_key) {
            (Some(seats), Some(key)) => Some(
                crate::seats::Seats::open(
                    licenses.as_ref().map(|m| m.store().dir()),
                    crate::seats::SeatSecret::of_instance(|m| key.sign(m)),
                    crate::seats::book::SeatTimes::of(seats),
                    matches!(config.quota, QuotaConfig::Redis(_)),
                )
                .map_err(|e| std::io::Error::other(format!("seats: {e}")))?,
            ),
            _ => None,
        };
        if matches!(config.quota, QuotaConfig::Local) {
            metrics.set_quota_source(Arc::new(LocalQuotaUse {
                tenants: Arc::clone(&tenants),
                quotas: Arc::clone(&quotas),
            }));
        }
        Ok(App {
            count_writer: Mutex::new(counts),
            usage,
            instance_key,
            link,
            seats,
            tenants,
            inflight,
            access_log,
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
            quotas,
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

    /// Saves the quota counts changed since the last save and the usage not yet
    /// written, and stops saving (at shutdown, after the drain).
    pub(crate) fn finish_counts(&self) {
        if let Some(usage) = &self.usage {
            usage.finish();
        }
        if let Some(seats) = &self.seats {
            seats.finish();
        }
        if let Some(mut writer) = self
            .count_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            writer.finish();
        }
    }

    /// This installation's instance id ("" without licensing).
    pub(crate) fn instance_id(&self) -> String {
        self.licenses
            .as_ref()
            .map(|m| m.settings().verifier.instance_id().to_string())
            .unwrap_or_default()
    }
}
