//! The allowed request path allocates nothing: normalization of an already-normal
//! path, `decide()` with 10,000 licensed tenants and 100 feature prefixes, the local
//! quota check, the concurrency lease and the metric counters, counted by a global
//! allocator that records every allocation on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use licgate::config::{FeatureRule, Mode};
use licgate::license::keys::Algorithm;
use licgate::license::manager::build_snapshot;
use licgate::license::{Claims, License, Limits, StatusPolicy};
use licgate::metrics::Outcome;
use licgate::policy::decide::{decide, Decision, Policy, RequestFacts};
use licgate::policy::path::{normalize, PathOptions, Target};
use licgate::quota::local::LocalQuotas;
use licgate::quota::QuotaOutcome;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

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
            features: (0..20).map(|f| format!("feature_{f}")).collect(),
            limits: Limits {
                requests_per_minute: Some(1_000_000_000),
                requests_per_hour: Some(1_000_000_000),
                max_concurrent_connections: Some(1_000_000),
                ..Limits::default()
            },
            feature_limits: Default::default(),
            flags: vec![],
            grace_days: None,
            read_only_days: None,
        },
        alg: Algorithm::EdDSA,
        kid: None,
    }
}

#[test]
fn the_allowed_path_does_not_allocate() {
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
            feature: format!("feature_{}", i % 20),
            methods: None,
            shadow: false,
        })
        .collect();
    let policy = Policy::new(Mode::Enforce, &rules, &["/static/".to_string()], false);
    let quotas = LocalQuotas::default();
    let get = http::Method::GET;
    let options = PathOptions::default();

    let request = |tenant: &str| {
        let Ok(Target::Path(target)) = normalize(b"/api/module7/items/3?page=2", &options) else {
            panic!("normal path refused");
        };
        let facts = RequestFacts {
            method: &get,
            path: &target.path,
            tenant: Some(tenant),
        };
        let Decision::Forward {
            tenant: Some(summary),
            governed: true,
            feature,
            shadowed: None,
        } = decide(&facts, &policy, &snapshot)
        else {
            panic!("not allowed");
        };
        let lease = quotas.acquire(summary).expect("slot free");
        let outcome = quotas.check(summary, feature);
        assert!(
            matches!(outcome, QuotaOutcome::Allowed { .. }),
            "{outcome:?}"
        );
        summary.counters.request(Outcome::Allowed);
        drop(lease);
    };
    // The first request of a tenant creates its quota state (allocating: this also
    // shows the counter counts); later ones reuse it.
    let start = allocations();
    for t in ["tenant-17", "tenant-9999"] {
        request(t);
    }
    assert!(allocations() > start, "the counting allocator saw nothing");
    let before = allocations();
    for _ in 0..1_000 {
        request("tenant-17");
        request("tenant-9999");
    }
    assert_eq!(allocations() - before, 0, "allocations on the allowed path");
    let counted = snapshot
        .tenant("tenant-17")
        .unwrap()
        .counters
        .requests(Outcome::Allowed);
    assert_eq!(counted, 1_001);
}
