//! The ledger's size on disk after `TENANTS` tenants (default 100,000) each used one
//! feature in each of 24 hours: the rows written as the recorder writes them (one
//! transaction per second's sums; here one per hour of all tenants).
//!
//! `cargo run --release --example ledger_size -- 100000`

use std::sync::Arc;
use std::time::Instant;

use licgate::usage::ledger::{HourCounts, HourRow, LedgerWriter};

fn main() {
    let tenants: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let store = tempfile::tempdir().unwrap();
    let mut writer = LedgerWriter::open(store.path()).unwrap();
    let names: Vec<Arc<str>> = (0..tenants)
        .map(|i| Arc::from(format!("tenant-{i:06}")))
        .collect();
    let features: [Arc<str>; 3] = [Arc::from("sales"), Arc::from("reports"), Arc::from("-")];
    let first_hour = 491_000;
    let started = Instant::now();
    for h in 0..24 {
        let rows: Vec<HourRow> = names
            .iter()
            .enumerate()
            .map(|(i, tenant)| HourRow {
                tenant: Arc::clone(tenant),
                feature: Arc::clone(&features[i % 3]),
                hour: first_hour + h,
                counts: HourCounts {
                    allowed: 100 + (i as u64 % 900),
                    limited: u64::from(i % 50 == 0),
                    peak: 1 + (i as u64 % 8),
                    refused: if i % 50 == 0 {
                        vec![("USAGE_LIMIT_EXCEEDED", 1)]
                    } else {
                        Vec::new()
                    },
                },
            })
            .collect();
        writer.save(&rows, &[]).unwrap();
    }
    let elapsed = started.elapsed();
    drop(writer);
    // Checkpoint the WAL into the database file, as a closed database is.
    let db = rusqlite::Connection::open(licgate::database::path_in(store.path())).unwrap();
    db.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    drop(db);
    let dir = store.path().join(licgate::database::DIR);
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let rows = tenants * 24;
    println!(
        "{tenants} tenants x 24 h = {rows} hour rows: {:.1} MB on disk ({:.0} bytes per row), written in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / rows as f64,
        elapsed.as_secs_f64()
    );
}
