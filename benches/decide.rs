//! Cost of the decision path: path normalization and `decide()` with 10,000 licensed
//! tenants and 100 feature prefixes, and the local quota check and lease.
//! `cargo bench --bench decide`.

mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use licgate::license::Limits;
use licgate::policy::decide::{decide, RequestFacts};
use licgate::policy::path::{normalize, PathOptions};
use licgate::quota::TenantQuota;
use support::{license, policy, snapshot, snapshot_of};

fn bench(c: &mut Criterion) {
    let snapshot = snapshot(10_000, 50, Limits::default());
    let policy = policy(100, 100);
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
    let mut limited = license(
        1,
        50,
        Limits {
            requests_per_hour: Some(1_000_000_000),
            ..Limits::default()
        },
    );
    limited.claims.tenant = "quota-tenant".into();
    let quota_snapshot = snapshot_of(&[limited]);
    let quota = TenantQuota::of(quota_snapshot.tenant("quota-tenant").unwrap());
    group.bench_function("quota/local check (1 rule)", |b| {
        b.iter(|| quotas.check(black_box(&quota), None))
    });
    group.bench_function("quota/lease acquire+release", |b| {
        let with_cap = license(
            2,
            50,
            Limits {
                max_concurrent_connections: Some(1_000_000),
                ..Limits::default()
            },
        );
        let snap = snapshot_of(&[with_cap]);
        let t = TenantQuota::of(snap.tenant("tenant-2").unwrap());
        b.iter(|| drop(quotas.acquire(black_box(&t))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
