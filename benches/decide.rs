//! Cost of the decision path: path normalization and `decide()` with 10,000 licensed
//! tenants and 100 feature prefixes, and the local quota check and lease.
//! `cargo bench --bench decide`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use licgate::config::{FeatureRule, Mode};
use licgate::license::keys::Algorithm;
use licgate::license::manager::build_snapshot;
use licgate::license::{Claims, License, Limits, StatusPolicy};
use licgate::policy::decide::{decide, Policy, RequestFacts};
use licgate::policy::path::{normalize, PathOptions};

const NOW: i64 = 1_900_000_000;

fn license(i: usize) -> License {
    License {
        claims: Claims {
            iss: None,
            sub: None,
            aud: vec!["*".into()],
            jti: format!("L{i}"),
            iat: None,
            nbf: None,
            exp: NOW + 365 * 86_400,
            tenant: format!("tenant-{i}"),
            tier: Some("pro".into()),
            tier_name: None,
            features: (0..50).map(|f| format!("feature_{f}")).collect(),
            limits: Limits::default(),
            feature_limits: Default::default(),
            flags: vec![],
            grace_days: None,
            read_only_days: None,
        },
        alg: Algorithm::EdDSA,
        kid: None,
    }
}

fn bench(c: &mut Criterion) {
    let licenses: Vec<License> = (0..10_000).map(license).collect();
    let snapshot = build_snapshot(
        "x",
        &licenses,
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        NOW,
        &Default::default(),
    );
    let rules: Vec<FeatureRule> = (0..100)
        .map(|i| FeatureRule {
            prefix: format!("/api/module{i}/"),
            feature: format!("feature_{i}"),
            methods: None,
            shadow: false,
        })
        .collect();
    let policy = Policy::new(Mode::Enforce, &rules, &["/static/".to_string()], false);
    let get = http::Method::GET;

    let mut group = c.benchmark_group("decision");
    group.bench_function("normalize/already-normal", |b| {
        b.iter(|| {
            normalize(
                black_box(b"/api/module57/items/3?page=2"),
                &PathOptions::default(),
            )
        })
    });
    group.bench_function("normalize/dot-segments-and-escapes", |b| {
        b.iter(|| {
            normalize(
                black_box(b"/api/x/../module57//items/%2e/%33"),
                &PathOptions::default(),
            )
        })
    });
    group.bench_function("decide/allowed (10k tenants, 100 prefixes)", |b| {
        b.iter(|| {
            let facts = RequestFacts {
                method: &get,
                path: black_box("/api/module7/items/3"),
                tenant: Some(black_box("tenant-5000")),
            };
            decide(&facts, &policy, &snapshot)
        })
    });
    group.bench_function("decide/feature denied", |b| {
        b.iter(|| {
            let facts = RequestFacts {
                method: &get,
                path: black_box("/api/module77/items/3"),
                tenant: Some(black_box("tenant-5000")),
            };
            decide(&facts, &policy, &snapshot)
        })
    });
    group.bench_function("decide/unknown tenant", |b| {
        b.iter(|| {
            let facts = RequestFacts {
                method: &get,
                path: black_box("/api/module7/items/3"),
                tenant: Some(black_box("nobody")),
            };
            decide(&facts, &policy, &snapshot)
        })
    });
    let quotas = licgate::quota::local::LocalQuotas::default();
    let mut limited = license(1);
    limited.claims.tenant = "quota-tenant".into();
    limited.claims.limits.requests_per_hour = Some(1_000_000_000);
    let quota_snapshot = build_snapshot(
        "x",
        &[limited],
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        NOW,
        &Default::default(),
    );
    let summary = quota_snapshot.tenant("quota-tenant").unwrap();
    group.bench_function("quota/local check (1 rule)", |b| {
        b.iter(|| quotas.check(black_box(summary), None))
    });
    group.bench_function("quota/lease acquire+release", |b| {
        let mut with_cap = license(2);
        with_cap.claims.limits.max_concurrent_connections = Some(1_000_000);
        let snap = build_snapshot(
            "x",
            &[with_cap],
            &[],
            &Default::default(),
            &StatusPolicy::default(),
            NOW,
            &Default::default(),
        );
        let t = snap.tenant("tenant-2").unwrap().clone();
        b.iter(|| drop(quotas.acquire(black_box(&t))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
