//! The allowed request path allocates nothing: normalization of an already-normal
//! path, the tenant table's load, `decide()` with 10,000 licensed tenants and 100
//! feature prefixes, the local quota check, the concurrency lease, the metric
//! counters and the usage ledger's event, counted by a global
//! allocator that records every allocation on this thread.

#![allow(
    unsafe_code,
    reason = "a counting global allocator over the system one"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[path = "../benches/support/mod.rs"]
mod support;

use licgate::license::Limits;
use licgate::policy::decide::{decide, Decision, RequestFacts};
use licgate::policy::outcome::Outcome;
use licgate::policy::path::{normalize, PathOptions, Target};
use licgate::quota::local::LocalQuotas;
use licgate::quota::QuotaOutcome;
use licgate::tenants::Tenants;
use licgate::usage::{RecorderSettings, UsageEvent, UsageRecorder};
use support::{policy, snapshot};

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

#[test]
fn the_allowed_path_does_not_allocate() {
    let limits = Limits {
        requests_per_minute: Some(1_000_000_000),
        requests_per_hour: Some(1_000_000_000),
        max_concurrent_connections: Some(1_000_000),
        ..Limits::default()
    };
    let tenants = Tenants::of(snapshot(10_000, 20, limits));
    let table = tenants.load_full();
    let policy = policy(100, 20);
    let quotas = LocalQuotas::default();
    let get = http::Method::GET;
    let options = PathOptions::default();
    let store = tempfile::tempdir().unwrap();
    let usage = UsageRecorder::start(
        store.path(),
        RecorderSettings {
            interval: std::time::Duration::from_secs(1),
            retention_days: 400,
        },
    )
    .unwrap();

    let request = |tenant: &str| {
        let Ok(Target::Path(target)) = normalize(b"/api/module7/items/3?page=2", &options) else {
            panic!("normal path refused");
        };
        let facts = RequestFacts {
            method: &get,
            path: &target.path,
            tenant: Some(tenant),
        };
        let table = tenants.load();
        let Decision::Forward {
            tenant: Some(entry),
            governed: true,
            feature,
            shadowed: None,
        } = decide(&facts, &policy, &**table)
        else {
            panic!("not allowed");
        };
        let lease = quotas.acquire(&entry.quota).expect("slot free");
        let outcome = quotas.check(&entry.quota, feature.map(|f| &**f));
        assert!(
            matches!(outcome, QuotaOutcome::Allowed { .. }),
            "{outcome:?}"
        );
        entry.counters.request(Outcome::Allowed);
        usage.record(UsageEvent {
            tenant: Some(std::sync::Arc::clone(entry)),
            feature: feature.cloned(),
            refused: None,
            limited: false,
            concurrency: 1,
        });
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
    let counted = table
        .get("tenant-17")
        .unwrap()
        .counters
        .requests(Outcome::Allowed);
    assert_eq!(counted, 1_001);
    // Every event reached the ledger.
    usage.finish();
    let db = licgate::database::Database::open_read_only(store.path()).unwrap();
    let day = licgate::quota::clock::now() / 86_400;
    let rows = licgate::usage::query::read(
        &db,
        &licgate::usage::UsageQuery {
            tenant: None,
            feature: None,
            from_day: day - 1,
            to_day: day,
            granularity: licgate::usage::Granularity::Month,
        },
    )
    .unwrap();
    let allowed: u64 = rows.iter().map(|r| r.tally.allowed).sum();
    assert_eq!(allowed, 2_002);
}
