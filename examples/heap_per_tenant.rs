//! Live heap bytes per licensed tenant, by component: the license manager's state and
//! snapshot after loading N licenses, then the quota and concurrency state after every
//! tenant's first request. Counts the bytes the program asks for (a counting global
//! allocator), which is what the RSS of `load/memory` is made of, minus allocator
//! overhead.
//!
//! Usage: cargo run --release --example heap_per_tenant -- [N]   (default 20000)

#![allow(
    unsafe_code,
    reason = "a counting global allocator over the system one"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod support;

use licgate::license::claims::Claims;
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use licgate::quota::local::LocalQuotas;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed))
}

fn report(what: &str, before: (isize, isize), after: (isize, isize), n: usize) {
    let bytes = (after.0 - before.0) as f64 / n as f64;
    let blocks = (after.1 - before.1) as f64 / n as f64;
    println!("{what:<48} {bytes:>8.0} B/tenant {blocks:>6.1} allocations/tenant");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) =
        write_key_pair(&dir.path().join("keys"), &generate_ed25519()).expect("keys");
    let key = SigningKey::load(&private).expect("signing key");
    let store_dir = dir.path().join("store");
    let store = licgate::license::store::Store::open(&store_dir).expect("store");
    let now = licgate::license::clock::Clock::now(&licgate::license::clock::SystemClock);
    for i in 0..n {
        let claims = support::tenant_claims(i, now);
        let token = sign(&claims, &key, None).expect("sign");
        std::fs::write(store.licenses_dir().join(format!("t{i}.jwt")), token).expect("write");
    }
    let config_path = dir.path().join("licgate.toml");
    std::fs::write(
        &config_path,
        format!(
            "[upstream]\naddress = \"127.0.0.1:1\"\n[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\ninstance_id = \"heap\"\n",
            public.display(),
            store_dir.display()
        ),
    )
    .expect("config");
    let config = licgate::config::Config::load(&config_path).expect("config");
    let license_config = config.license.as_ref().expect("[license]");

    println!(
        "sizes: TenantSummary {} B, TenantEntry {} B, Claims {} B, License {} B, TenantCounters {} B",
        std::mem::size_of::<licgate::license::snapshot::TenantSummary>(),
        std::mem::size_of::<licgate::tenants::TenantEntry>(),
        std::mem::size_of::<Claims>(),
        std::mem::size_of::<licgate::license::License>(),
        std::mem::size_of::<licgate::metrics::TenantCounters>(),
    );
    let start = live();
    let started = Instant::now();
    let manager = license_config.open_manager().expect("manager");
    let load_time = started.elapsed();
    let loaded = live();
    report("manager: licenses + snapshot", start, loaded, n);
    assert_eq!(manager.snapshot().tenants.len(), n);
    let tenants = licgate::tenants::Tenants::follow(Some(&manager));
    let followed = live();
    report(
        "tenant table: header lines, quota views, counters",
        loaded,
        followed,
        n,
    );

    // What a store change costs: one more license file (verified alone), then a
    // configuration reload (every file verified again).
    let claims = support::tenant_claims(n, now);
    let token = sign(&claims, &key, None).expect("sign");
    std::fs::write(store.licenses_dir().join(format!("t{n}.jwt")), token).expect("write");
    let started = Instant::now();
    assert!(manager.refresh(), "the new file is picked up");
    let one_file_time = started.elapsed();
    let settings = license_config
        .manager_settings(manager.store())
        .expect("settings");
    let started = Instant::now();
    manager.reconfigure(settings);
    let reverify_time = started.elapsed();
    println!(
        "time: first load {load_time:.2?}, one file added {one_file_time:.2?}, every file verified again {reverify_time:.2?}"
    );
    let table = tenants.load_full();
    let n = n + 1;
    assert_eq!(table.entries().count(), n);

    let quotas = LocalQuotas::default();
    let mut leases = Vec::with_capacity(n);
    let before = live();
    for entry in table.entries() {
        let _ = quotas.check(&entry.quota, None);
    }
    let checked = live();
    report("local quota state (2 rules)", before, checked, n);
    for entry in table.entries() {
        leases.push(quotas.acquire(&entry.quota).expect("slot"));
    }
    let leased = live();
    report("concurrency counters", checked, leased, n);
    report("total (after the timed reloads)", start, leased, n);
    drop(leases);
    drop(Arc::clone(&manager));
}
