//! Every metric licgate exports, defined and registered in this one module.
//!
//! Two kinds of metric live here:
//! - plain `prometheus` metrics (histograms, counters without a tenant label), whose
//!   handles are resolved once, at start, so recording never looks a label up;
//! - per-tenant counters ([`TenantCounters`]: plain atomics, one block per tenant
//!   with an installed license, held by the request path's per-tenant entry and
//!   listed by a [`TenantCounterSource`]) and snapshot-derived gauges, turned into metric families only when
//!   `/metrics` is scraped ([`StateCollector`]). Requests of every other tenant name
//!   count under `_unknown`, so clients cannot create series.
//!
//! Recording a request is a few relaxed atomic additions: no lock, no allocation.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::license::{LicenseManager, Status};
use crate::lifecycle::Inflight;
use crate::policy::outcome::{Outcome, QuotaKind, Refusal, REFUSALS};

/// Every metric name starts with this.
pub const PREFIX: &str = "licgate_";

/// The tenant label of requests that match no installed license.
pub const UNKNOWN_TENANT: &str = "_unknown";

/// Buckets of `decision_duration_seconds`: 1 µs to 250 ms (a Redis round trip included).
const DECISION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25,
];

/// Buckets of `upstream_duration_seconds`: 100 µs to 60 s.
const UPSTREAM_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Where `/metrics` finds the counters of the licensed tenants.
pub trait TenantCounterSource: Send + Sync {
    /// Every licensed tenant's name and counters, in name order.
    fn tenant_counters(&self) -> Vec<(Arc<str>, Arc<TenantCounters>)>;
}

/// Where `/metrics` finds how much of each tenant's windowed quotas is used.
pub trait QuotaUseSource: Send + Sync {
    /// (tenant, window name, used / limit) of each tenant's own windowed rules.
    fn quota_use(&self) -> Vec<(Arc<str>, &'static str, f64)>;
}

/// One tenant's request counters (plain atomics; read when `/metrics` is scraped).
#[derive(Debug, Default)]
pub struct TenantCounters {
    requests: [AtomicU64; Outcome::ALL.len()],
    active: AtomicI64,
    /// Allocated at the tenant's first refusal: most tenants never have one, and with
    /// 100,000 tenants the 184 bytes per tenant add up.
    refusals: OnceLock<Box<RefusalCounters>>,
}

/// A tenant's refusal counters.
#[derive(Debug, Default)]
struct RefusalCounters {
    denials: [AtomicU64; REFUSALS.len()],
    shadow_denials: [AtomicU64; REFUSALS.len()],
    quota_rejections: [AtomicU64; QuotaKind::ALL.len()],
}

impl TenantCounters {
    /// Counts one request with its outcome.
    #[inline]
    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn refusals(&self) -> &RefusalCounters {
        self.refusals.get_or_init(Box::default)
    }

    /// Counts one refusal (enforced, or only logged in shadow mode).
    #[inline]
    pub fn refusal(&self, refusal: Refusal, enforced: bool) {
        let refusals = self.refusals();
        let table = if enforced {
            &refusals.denials
        } else {
            &refusals.shadow_denials
        };
        table[refusal.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by a quota.
    #[inline]
    pub fn quota_rejection(&self, kind: QuotaKind) {
        self.refusals().quota_rejections[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome as usize].load(Ordering::Relaxed)
    }

    /// Forwarded requests of this tenant in progress (WebSockets included).
    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// Counts one forwarded request as active until dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<TenantCounters>);

impl ActiveGuard {
    /// Counts a request of `counters`' tenant as active; also returns how many are
    /// active now (this one included).
    pub fn enter(counters: Arc<TenantCounters>) -> (ActiveGuard, i64) {
        let active = counters.active.fetch_add(1, Ordering::Relaxed) + 1;
        (ActiveGuard(counters), active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an activation attempt ended (`activations_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationResult {
    /// A license was verified and installed.
    Installed,
    /// The key was refused (its reason is shown to the user).
    Rejected,
    /// Too many attempts from the client's address.
    Throttled,
    /// Not an activation at all: wrong media type, body too large, CSRF failure.
    BadRequest,
}

impl ActivationResult {
    const ALL: [ActivationResult; 4] = [
        ActivationResult::Installed,
        ActivationResult::Rejected,
        ActivationResult::Throttled,
        ActivationResult::BadRequest,
    ];

    fn label(self) -> &'static str {
        match self {
            ActivationResult::Installed => "installed",
            ActivationResult::Rejected => "rejected",
            ActivationResult::Throttled => "throttled",
            ActivationResult::BadRequest => "bad_request",
        }
    }
}

/// How an upstream request failed (`upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Connect, read or write timed out (504).
    Timeout,
    /// Refused, reset, TLS failure, bad response (502).
    Unavailable,
}

/// The process's metrics and the registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    /// Counters of requests whose tenant has no installed license.
    pub unknown: Arc<TenantCounters>,
    /// Supplies `quota_usage_ratio` once the quotas exist ([`Metrics::set_quota_source`]).
    quota_source: Arc<OnceLock<Arc<dyn QuotaUseSource>>>,
    pub decision_duration: Histogram,
    pub upstream_duration: Histogram,
    upstream_errors: [IntCounter; 2],
    activations: [IntCounter; ActivationResult::ALL.len()],
    pub quota_backend_errors: IntCounter,
    /// Access-log lines dropped because the writer's queue was full.
    pub access_log_dropped: IntCounter,
    config_reloads_success: IntCounter,
    config_reloads_error: IntCounter,
    config_last_reload_success: prometheus::IntGauge,
    config_last_reload_timestamp: prometheus::Gauge,
    config_restart_required: prometheus::IntGauge,
    /// By [`ConnectionRefusal`]: max_connections, max_connections_per_ip,
    /// header_timeout, header_too_large.
    connections_refused: [IntCounter; 4],
}

/// Why a client connection was closed before a request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    MaxConnections = 0,
    MaxConnectionsPerIp = 1,
    HeaderTimeout = 2,
    HeaderTooLarge = 3,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 4] = [
        ConnectionRefusal::MaxConnections,
        ConnectionRefusal::MaxConnectionsPerIp,
        ConnectionRefusal::HeaderTimeout,
        ConnectionRefusal::HeaderTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::MaxConnectionsPerIp => "max_connections_per_ip",
            ConnectionRefusal::HeaderTimeout => "header_timeout",
            ConnectionRefusal::HeaderTooLarge => "header_too_large",
        }
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn name(short: &str) -> String {
    format!("{PREFIX}{short}")
}

impl Metrics {
    /// Creates and registers every metric. `licenses` (when licensing is on) supplies
    /// the license gauges, `tenants` the licensed tenants' counters, `inflight` the
    /// in-flight count.
    pub fn new(
        licenses: Option<Arc<LicenseManager>>,
        tenants: Option<Arc<dyn TenantCounterSource>>,
        inflight: Arc<Inflight>,
    ) -> Arc<Metrics> {
        let registry = Registry::new();
        let counter_vec = |short: &str, help: &str, label: &str| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name(short), help), &[label]).expect("valid metric"),
            )
        };
        let upstream_errors = counter_vec(
            "upstream_errors_total",
            "Requests the upstream failed to answer, by kind (timeout = 504, unavailable = 502).",
            "kind",
        );
        let activations = counter_vec(
            "activations_total",
            "License activation attempts through /_licgate/activate, by result.",
            "result",
        );
        let backend_errors = counter_vec(
            "quota_backend_errors_total",
            "Failed calls to the shared quota backend (each fell back per quota.redis.on_error).",
            "backend",
        );
        let reloads = counter_vec(
            "config_reloads_total",
            "Configuration reloads (SIGHUP, POST /admin/v1/reload, file change), by result.",
            "result",
        );
        let refused = counter_vec(
            "connections_refused_total",
            "Client connections closed before a request: connection limits reached (answered 503/429), request head too slow (closed) or too large (answered 431).",
            "reason",
        );
        let histogram = |short: &str, help: &str, buckets: &[f64]| {
            register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(name(short), help).buckets(buckets.to_vec()),
                )
                .expect("valid histogram"),
            )
        };
        let counter = |short: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name(short), help).expect("valid counter"),
            )
        };
        let gauge_int = |short: &str, help: &str| {
            register(
                &registry,
                prometheus::IntGauge::new(name(short), help).expect("valid gauge"),
            )
        };
        let metrics = Metrics {
            unknown: Arc::new(TenantCounters::default()),
            quota_source: Arc::default(),
            decision_duration: histogram(
                "decision_duration_seconds",
                "Time to decide about a request: normalization, tenant, license, feature map and quota check.",
                DECISION_BUCKETS,
            ),
            upstream_duration: histogram(
                "upstream_duration_seconds",
                "Time from sending a request upstream to receiving the response header.",
                UPSTREAM_BUCKETS,
            ),
            upstream_errors: [
                upstream_errors.with_label_values(&["timeout"]),
                upstream_errors.with_label_values(&["unavailable"]),
            ],
            activations: ActivationResult::ALL.map(|r| activations.with_label_values(&[r.label()])),
            quota_backend_errors: backend_errors.with_label_values(&["redis"]),
            access_log_dropped: counter(
                "access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind (log.access_overflow = \"drop\").",
            ),
            connections_refused: ConnectionRefusal::ALL
                .map(|r| refused.with_label_values(&[r.label()])),
            config_reloads_success: reloads.with_label_values(&["success"]),
            config_reloads_error: reloads.with_label_values(&["error"]),
            config_last_reload_success: gauge_int(
                "config_last_reload_successful",
                "1 when the last configuration reload succeeded (or none was tried), 0 when it failed.",
            ),
            config_last_reload_timestamp: register(
                &registry,
                prometheus::Gauge::new(
                    name("config_last_reload_success_timestamp_seconds"),
                    "When the configuration in force was loaded (Unix time).",
                )
                .expect("valid gauge"),
            ),
            config_restart_required: gauge_int(
                "config_restart_required",
                "1 when the configuration file changes settings that only a restart applies.",
            ),
            registry,
        };
        let info = prometheus::IntGaugeVec::new(
            Opts::new(name("build_info"), "licgate's version (value always 1)."),
            &["version"],
        )
        .expect("valid metric");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics
            .registry
            .register(Box::new(info))
            .expect("metric names are unique");
        metrics.config_last_reload_success.set(1);
        metrics.config_last_reload_timestamp.set(unix_now());
        metrics
            .registry
            .register(Box::new(StateCollector::new(
                licenses,
                tenants,
                inflight,
                Arc::clone(&metrics.unknown),
                Arc::clone(&metrics.quota_source),
            )))
            .expect("metric names are unique");
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        for kind in [UpstreamErrorKind::Timeout, UpstreamErrorKind::Unavailable] {
            metrics.upstream_errors[kind as usize].reset();
        }
        Arc::new(metrics)
    }

    /// Counts a client connection closed before a request was decided.
    pub fn connection_refused(&self, why: ConnectionRefusal) {
        self.connections_refused[why as usize].inc();
    }

    /// Counts one failed upstream request.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Counts one activation attempt.
    pub fn activation(&self, result: ActivationResult) {
        self.activations[result as usize].inc();
    }

    /// Records a configuration reload: `ok`, and whether it left settings that only
    /// a restart applies.
    pub fn config_reload(&self, ok: bool, restart_required: bool) {
        if ok {
            self.config_reloads_success.inc();
            self.config_last_reload_success.set(1);
            self.config_last_reload_timestamp.set(unix_now());
            self.config_restart_required
                .set(i64::from(restart_required));
        } else {
            self.config_reloads_error.inc();
            self.config_last_reload_success.set(0);
        }
    }

    /// The name of every metric family this process can export (families without
    /// samples yet included).
    pub fn family_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .chain(STATE_FAMILIES.iter().map(|(short, ..)| name(short)))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Registers `collector`'s families (another module's metrics, e.g. the
    /// authority link's).
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::error!(error = %e, "cannot register metrics");
        }
    }

    /// Has `quota_usage_ratio` read from `source` (once; later calls do nothing).
    pub fn set_quota_source(&self, source: Arc<dyn QuotaUseSource>) {
        let _ = self.quota_source.set(source);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory cannot fail");
        out
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Builds, at scrape time, the families whose series follow the license snapshot:
/// per-tenant request counters, license status and expiry, active connections.
struct StateCollector {
    descs: Vec<Desc>,
    licenses: Option<Arc<LicenseManager>>,
    tenants: Option<Arc<dyn TenantCounterSource>>,
    inflight: Arc<Inflight>,
    unknown: Arc<TenantCounters>,
    quota_source: Arc<OnceLock<Arc<dyn QuotaUseSource>>>,
}

/// (name, help, type, labels) of each family [`StateCollector`] produces.
const STATE_FAMILIES: &[(&str, &str, MetricType, &[&str])] = &[
    (
        "requests_total",
        "Requests by tenant and decision (allowed, public, shadowed, denied, limited, unavailable, gateway, rejected, unchecked).",
        MetricType::COUNTER,
        &["tenant", "decision"],
    ),
    (
        "denials_total",
        "Refused requests by tenant and reason (the response's error_code).",
        MetricType::COUNTER,
        &["tenant", "reason"],
    ),
    (
        "shadow_denials_total",
        "Requests shadow mode forwarded although a check would have refused them, by tenant and reason.",
        MetricType::COUNTER,
        &["tenant", "reason"],
    ),
    (
        "quota_rejections_total",
        "Requests refused with 429 by a quota, by tenant and kind (rate, feature, concurrency).",
        MetricType::COUNTER,
        &["tenant", "kind"],
    ),
    (
        "active_connections",
        "Forwarded requests in progress (WebSockets included), by tenant.",
        MetricType::GAUGE,
        &["tenant"],
    ),
    (
        "license_status",
        "The license status of each tenant with a license file (the series of its current status is 1).",
        MetricType::GAUGE,
        &["tenant", "status"],
    ),
    (
        "license_expiry_timestamp_seconds",
        "When each tenant's license in force expires (Unix time).",
        MetricType::GAUGE,
        &["tenant"],
    ),
    (
        "tenants_by_status",
        "Tenants with a license file, by license status.",
        MetricType::GAUGE,
        &["status"],
    ),
    (
        "license_file_problems",
        "License files in the store that could not be used (bad signature, wrong instance...).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "in_flight_requests",
        "Requests being served, all tenants.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "quota_usage_ratio",
        "Share of each tenant's request quota used in the current window (0 to 1), by window (local quota backend; feature quotas not included).",
        MetricType::GAUGE,
        &["tenant", "window"],
    ),
];

impl StateCollector {
    fn new(
        licenses: Option<Arc<LicenseManager>>,
        tenants: Option<Arc<dyn TenantCounterSource>>,
        inflight: Arc<Inflight>,
        unknown: Arc<TenantCounters>,
        quota_source: Arc<OnceLock<Arc<dyn QuotaUseSource>>>,
    ) -> StateCollector {
        let descs = STATE_FAMILIES
            .iter()
            .map(|(short, help, _, labels)| {
                Desc::new(
                    name(short),
                    help.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
                .expect("valid descriptor")
            })
            .collect();
        StateCollector {
            descs,
            licenses,
            tenants,
            inflight,
            unknown,
            quota_source,
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::new();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

/// Collects samples of one family.
struct Family {
    family: MetricFamily,
    kind: MetricType,
}

impl Family {
    fn new(index: usize) -> Family {
        let (short, help, kind, _) = STATE_FAMILIES[index];
        let mut family = MetricFamily::new();
        family.set_name(name(short));
        family.set_help(help.to_string());
        family.set_field_type(kind);
        Family { family, kind }
    }

    fn push(&mut self, labels: Vec<LabelPair>, value: f64) {
        let mut metric = Metric::from_label(labels);
        match self.kind {
            MetricType::COUNTER => {
                let mut c = prometheus::proto::Counter::new();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = prometheus::proto::Gauge::new();
                g.set_value(value);
                metric.set_gauge(g);
            }
        }
        self.family.mut_metric().push(metric);
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<Family> = (0..STATE_FAMILIES.len()).map(Family::new).collect();
        let snapshot = self.licenses.as_ref().map(|m| m.snapshot_arc());
        let licensed = self
            .tenants
            .as_ref()
            .map(|t| t.tenant_counters())
            .unwrap_or_default();
        let mut tenants: Vec<(&str, &TenantCounters)> = vec![(UNKNOWN_TENANT, &self.unknown)];
        tenants.extend(
            licensed
                .iter()
                .map(|(name, counters)| (&**name, &**counters)),
        );
        for (tenant, counters) in &tenants {
            for outcome in Outcome::ALL {
                let n = counters.requests(outcome);
                if n > 0 {
                    families[0].push(
                        vec![label("tenant", tenant), label("decision", outcome.label())],
                        n as f64,
                    );
                }
            }
            families[4].push(vec![label("tenant", tenant)], counters.active() as f64);
            let Some(refusals) = counters.refusals.get() else {
                continue;
            };
            for (table, family) in [(&refusals.denials, 1), (&refusals.shadow_denials, 2)] {
                for refusal in REFUSALS {
                    let n = table[refusal.index()].load(Ordering::Relaxed);
                    if n > 0 {
                        families[family].push(
                            vec![
                                label("tenant", tenant),
                                label("reason", refusal.error_code()),
                            ],
                            n as f64,
                        );
                    }
                }
            }
            for kind in QuotaKind::ALL {
                let n = refusals.quota_rejections[kind as usize].load(Ordering::Relaxed);
                if n > 0 {
                    families[3].push(
                        vec![label("tenant", tenant), label("kind", kind.label())],
                        n as f64,
                    );
                }
            }
        }
        let mut by_status = [0u64; Status::ALL.len()];
        if let Some(snapshot) = &snapshot {
            for (tenant, _) in tenants.iter().skip(1) {
                let Some(summary) = snapshot.tenant(tenant) else {
                    continue;
                };
                by_status[summary.status as usize] += 1;
                families[5].push(
                    vec![
                        label("tenant", tenant),
                        label("status", summary.status.as_str()),
                    ],
                    1.0,
                );
                if let Some(exp) = summary.expires_at {
                    families[6].push(vec![label("tenant", tenant)], exp as f64);
                }
            }
            families[8].push(Vec::new(), snapshot.problems.len() as f64);
        } else {
            families[8].push(Vec::new(), 0.0);
        }
        for status in Status::ALL {
            families[7].push(
                vec![label("status", status.as_str())],
                by_status[status as usize] as f64,
            );
        }
        families[9].push(Vec::new(), self.inflight.current() as f64);
        if let Some(source) = self.quota_source.get() {
            for (tenant, window, ratio) in source.quota_use() {
                families[10].push(
                    vec![label("tenant", &tenant), label("window", window)],
                    ratio,
                );
            }
        }
        families
            .into_iter()
            .map(|f| f.family)
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decide::DenyReason;

    #[test]
    fn refusal_indexes_are_a_bijection() {
        for (i, r) in REFUSALS.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn unknown_tenant_counts_appear_and_zero_series_do_not() {
        let metrics = Metrics::new(None, None, Arc::new(Inflight::default()));
        metrics.unknown.request(Outcome::Denied);
        metrics.unknown.request(Outcome::Denied);
        metrics
            .unknown
            .refusal(Refusal::License(DenyReason::LicenseMissing), true);
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(
            text.contains(r#"licgate_requests_total{tenant="_unknown",decision="denied"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"licgate_denials_total{tenant="_unknown",reason="LICENSE_MISSING"} 1"#)
        );
        assert!(!text.contains(r#"decision="allowed""#));
        assert!(text.contains("# HELP licgate_decision_duration_seconds"));
        assert!(text.contains(r#"licgate_upstream_errors_total{kind="timeout"} 0"#));
    }

    #[test]
    fn active_guard_counts_while_alive() {
        let counters = Arc::new(TenantCounters::default());
        let (a, _) = ActiveGuard::enter(Arc::clone(&counters));
        let (b, two) = ActiveGuard::enter(Arc::clone(&counters));
        assert_eq!(two, 2);
        assert_eq!(counters.active(), 2);
        drop(a);
        drop(b);
        assert_eq!(counters.active(), 0);
    }
}
