//! Usage flowing back to the license server: each heartbeat may carry the usage
//! report of the days since the last report (whole UTC days, up to yesterday),
//! signed and chained like `licgate usage export` makes them. A report is sent until
//! the authority acknowledges it; the acknowledged number is kept in the store, so a
//! retried heartbeat sends the same report and the authority stores it once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::database::Database;
use crate::license::instance_key::InstanceKey;
use crate::license::store::{write_atomically, Store};
use crate::usage::ledger::DAY;
use crate::usage::report::{export, last_export, Reporter};

/// The file with the last report the authority acknowledged.
const ACKNOWLEDGED_FILE: &str = "usage-acknowledged.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Acknowledged {
    sequence: u64,
}

/// A report to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReport {
    pub sequence: u64,
    /// The report file, exactly as signed.
    pub file: String,
}

/// The reports of one store.
#[derive(Debug, Clone)]
pub struct UsageReports {
    store_dir: PathBuf,
}

impl UsageReports {
    pub fn new(store_dir: &Path) -> UsageReports {
        UsageReports {
            store_dir: store_dir.to_path_buf(),
        }
    }

    fn acknowledged(&self) -> u64 {
        std::fs::read(self.store_dir.join(ACKNOWLEDGED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Acknowledged>(&b).ok())
            .map_or(0, |a| a.sequence)
    }

    /// Records that the authority has report `sequence`.
    pub fn acknowledge(&self, sequence: u64) -> Result<(), String> {
        if sequence <= self.acknowledged() {
            return Ok(());
        }
        let body = serde_json::to_vec(&Acknowledged { sequence }).expect("serializes");
        write_atomically(&self.store_dir.join(ACKNOWLEDGED_FILE), &body).map_err(|e| e.to_string())
    }

    /// The report the next heartbeat carries: the last one made when it is not
    /// acknowledged yet, else a new one for the whole days since (until yesterday,
    /// UTC, on the quota clock), else `None`. Blocking (SQLite).
    pub fn next(
        &self,
        key: &InstanceKey,
        instance_id: &str,
        now: i64,
    ) -> Result<Option<PendingReport>, String> {
        if !crate::database::path_in(&self.store_dir).exists() {
            return Ok(None);
        }
        let mut db = Database::open(&self.store_dir).map_err(|e| e.to_string())?;
        let last = last_export(&db).map_err(|e| e.to_string())?;
        if let Some(last) = &last {
            if last.sequence > self.acknowledged() {
                return Ok(Some(PendingReport {
                    sequence: last.sequence,
                    file: last.file.clone(),
                }));
            }
        }
        let today = now.div_euclid(DAY);
        let from = match &last {
            Some(last) => last.to_day + 1,
            None => match first_day(&db)? {
                Some(day) => day,
                None => return Ok(None),
            },
        };
        let to = today - 1;
        if from > to {
            return Ok(None);
        }
        let replica = Store::open(&self.store_dir)
            .and_then(|s| s.replica_id())
            .map_err(|e| e.to_string())?;
        let exported = export(
            &mut db,
            &Reporter {
                key,
                instance_id,
                replica_id: Some(&replica),
            },
            from,
            to,
            today,
            &crate::license::time_text(now),
        )
        .map_err(|e| e.to_string())?;
        Ok(Some(PendingReport {
            sequence: exported.sequence,
            file: exported.file,
        }))
    }
}

/// The first day (days since 1970-01-01) the ledger has a row for.
fn first_day(db: &Database) -> Result<Option<i64>, String> {
    db.connection
        .query_row("SELECT MIN(hour) FROM usage_hours", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map(|hour| hour.map(|h| h.div_euclid(24)))
        .map_err(|e| e.to_string())
}
