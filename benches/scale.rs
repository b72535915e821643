//! How the decision path scales: feature-map matching with 10 / 100 / 1,000
//! prefixes, snapshot lookup with 10 / 10,000 / 100,000 tenants, and `decide()` plus
//! the local quota check together (10,000 tenants, 100 prefixes).
//! `cargo bench --bench scale`.

mod support;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use licgate::license::Limits;
use licgate::policy::decide::{decide, Decision, RequestFacts};
use licgate::quota::local::LocalQuotas;
use licgate::tenants::Tenants;
use support::{policy, snapshot};

fn bench(c: &mut Criterion) {
    let get = http::Method::GET;
    let one = snapshot(1, 10, Limits::default());
    let mut group = c.benchmark_group("feature map");
    for prefixes in [10, 100, 1_000] {
        let policy = policy(prefixes, 10);
        let path = format!("/api/module{}/items/3", prefixes / 2);
        group.bench_with_input(BenchmarkId::from_parameter(prefixes), &path, |b, path| {
            b.iter(|| {
                let facts = RequestFacts {
                    method: &get,
                    path: black_box(path),
                    tenant: Some("tenant-0"),
                };
                decide(&facts, &policy, &one)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("snapshot lookup");
    for tenants in [10, 10_000, 100_000] {
        let snap = snapshot(tenants, 3, Limits::default());
        let name = format!("tenant-{}", tenants / 2);
        group.bench_with_input(BenchmarkId::from_parameter(tenants), &name, |b, name| {
            b.iter(|| snap.tenant(black_box(name)).is_some())
        });
    }
    group.finish();

    let limits = Limits {
        requests_per_minute: Some(1_000_000_000),
        requests_per_hour: Some(1_000_000_000),
        ..Limits::default()
    };
    let tenants = Tenants::of(snapshot(10_000, 10, limits));
    let table = tenants.load_full();
    let policy = policy(100, 10);
    let quotas = LocalQuotas::default();
    c.bench_function(
        "decide + local quota check (10k tenants, 100 prefixes, 2 rules)",
        |b| {
            b.iter(|| {
                let facts = RequestFacts {
                    method: &get,
                    path: black_box("/api/module7/items/3"),
                    tenant: Some(black_box("tenant-4242")),
                };
                match decide(&facts, &policy, &*table) {
                    Decision::Forward {
                        tenant: Some(entry),
                        feature,
                        ..
                    } => Some(quotas.check(&entry.quota, feature.map(|f| &**f))),
                    _ => None,
                }
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
