//! The authority's metrics (`/metrics`), all named `licgate_authority_*`.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};

/// Buckets of the database and request histograms: 100 µs to 5 s.
const BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The authority's metric handles and their registry.
pub struct AuthorityMetrics {
    registry: Registry,
    /// `activations_total{result}`: `created`, `existing`, or the refusal's code.
    pub activations: IntCounterVec,
    /// `heartbeats_total{result}`: `ok` or the refusal's code.
    pub heartbeats: IntCounterVec,
    /// `refusals_total{code}`: every refusal of every endpoint.
    pub refusals: IntCounterVec,
    /// `request_duration_seconds{endpoint}`.
    pub request_duration: HistogramVec,
    /// `database_ping_seconds`: the round trip of `SELECT 1`, sampled by the
    /// background task and by `/readyz`.
    pub database_ping: Histogram,
    /// `culled_total`: floating activations culled.
    pub culled: prometheus::IntCounter,
    /// `usage_reports_total{result}`: `stored`, `duplicate` or the refusal's code.
    pub usage_reports: IntCounterVec,
    /// `database_up`: 1 when the last ping answered.
    pub database_up: IntGauge,
}

impl AuthorityMetrics {
    pub fn new() -> AuthorityMetrics {
        let registry = Registry::new();
        let name = |n: &str| format!("licgate_authority_{n}");
        let counter = |n: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name(n), help), &[label]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let activations = counter(
            "activations_total",
            "Activation requests by result (created, existing, or the refusal's error code).",
            "result",
        );
        let heartbeats = counter(
            "heartbeats_total",
            "Heartbeats by result (ok, or the refusal's error code).",
            "result",
        );
        let refusals = counter(
            "refusals_total",
            "Refused requests of every endpoint by error code.",
            "code",
        );
        let usage_reports = counter(
            "usage_reports_total",
            "Usage reports received by result (stored, duplicate, or the refusal's error code).",
            "result",
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                name("request_duration_seconds"),
                "Time to answer a request, by endpoint.",
            )
            .buckets(BUCKETS.to_vec()),
            &["endpoint"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let database_ping = Histogram::with_opts(
            HistogramOpts::new(
                name("database_ping_seconds"),
                "Round trip of a trivial query to the database.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(database_ping.clone()))
            .expect("unique metric");
        let culled = prometheus::IntCounter::new(
            name("culled_total"),
            "Floating activations culled for want of heartbeats.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(culled.clone()))
            .expect("unique metric");
        let database_up = IntGauge::new(
            name("database_up"),
            "1 when the database answered the last ping, else 0.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(database_up.clone()))
            .expect("unique metric");
        AuthorityMetrics {
            registry,
            activations,
            heartbeats,
            refusals,
            request_duration,
            database_ping,
            culled,
            usage_reports,
            database_up,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        out
    }
}

impl Default for AuthorityMetrics {
    fn default() -> Self {
        AuthorityMetrics::new()
    }
}
