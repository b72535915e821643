//! Cost of the usage ledger: queuing one request's event on the allowed path (the
//! recorder thread draining and summing behind it, as in the gateway), and one write
//! of the sums of 10,000 active tenants (one transaction).
//!
//! `cargo bench --bench usage`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use licgate::license::Limits;
use licgate::tenants::Tenants;
use licgate::usage::ledger::{HourCounts, HourRow, LedgerWriter};
use licgate::usage::{RecorderSettings, UsageEvent, UsageRecorder};

#[path = "support/mod.rs"]
mod support;

fn record(c: &mut Criterion) {
    let store = tempfile::tempdir().unwrap();
    let usage = UsageRecorder::start(
        store.path(),
        RecorderSettings {
            interval: Duration::from_secs(1),
            retention_days: 400,
        },
    )
    .unwrap();
    let tenants = Tenants::of(support::snapshot(1_000, 20, Limits::default()));
    let table = tenants.load_full();
    let entry = Arc::clone(table.get("tenant-17").unwrap());
    let feature: Arc<str> = Arc::from("sales");
    let event = || UsageEvent {
        tenant: Some(Arc::clone(&entry)),
        feature: Some(Arc::clone(&feature)),
        refused: None,
        limited: false,
        concurrency: 1,
    };
    // The request path's cost: queuing while the recorder keeps up (pushes timed in
    // batches of 4,096, the queue drained between batches).
    c.bench_function("ledger: queue one allowed request's event", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(4_096);
                let started = Instant::now();
                for _ in 0..n {
                    usage.record(event());
                }
                timed += started.elapsed();
                left -= n;
                while usage.queued() > 0 {
                    std::thread::yield_now();
                }
            }
            timed
        })
    });
    // The recorder thread's cost: events summed per second when the queue never
    // empties (the producer waits for room).
    c.bench_function(
        "ledger: record with the queue full (recorder throughput)",
        |b| b.iter(|| usage.record(event())),
    );
    usage.finish();
}

fn flush(c: &mut Criterion) {
    let store = tempfile::tempdir().unwrap();
    let mut writer = LedgerWriter::open(store.path()).unwrap();
    let hour = 500_000;
    let rows: Vec<HourRow> = (0..10_000)
        .map(|i| HourRow {
            tenant: Arc::from(format!("tenant-{i}")),
            feature: Arc::from(if i % 2 == 0 { "sales" } else { "-" }),
            hour,
            counts: HourCounts {
                allowed: 12,
                limited: 0,
                peak: 2,
                refused: if i % 10 == 0 {
                    vec![("USAGE_LIMIT_EXCEEDED", 1)]
                } else {
                    Vec::new()
                },
            },
        })
        .collect();
    // The keys exist after the first write, as in a gateway that has run a while.
    writer.save(&rows, &[]).unwrap();
    let mut group = c.benchmark_group("ledger");
    group.sample_size(20);
    group.bench_function("write the sums of 10,000 active tenants", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| writer.save(&rows, &[]).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, record, flush);
criterion_main!(benches);
