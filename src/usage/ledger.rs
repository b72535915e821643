//! The ledger's rows and how they are written: one row per tenant × feature × hour
//! (allowed, limited, peak concurrency) with its refusals by error code, added to in
//! one transaction per batch ([`LedgerWriter::save`]) and dropped after the retention
//! ([`LedgerWriter::prune`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::database::{Database, DatabaseError};

/// The feature of requests outside the feature map.
pub const NO_FEATURE: &str = "-";

/// Seconds of a ledger hour and day.
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// What a tenant did with a feature in an hour (or, summed, in a longer period).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Requests forwarded.
    pub allowed: u64,
    /// Requests a quota refused (429; also counted in `refused` by code).
    pub limited: u64,
    /// Refused requests by error code.
    pub refused: BTreeMap<String, u64>,
    /// The most requests of the tenant in progress at once (as each began).
    pub peak_concurrency: u64,
}

impl Tally {
    /// Adds `other` (counts summed, peaks maximized).
    pub fn add(&mut self, other: &Tally) {
        self.allowed += other.allowed;
        self.limited += other.limited;
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
        self.peak_concurrency = self.peak_concurrency.max(other.peak_concurrency);
    }

    /// Every request counted: allowed or refused.
    pub fn requests(&self) -> u64 {
        self.allowed + self.refused.values().sum::<u64>()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.allowed == 0 && self.refused.is_empty() && self.peak_concurrency == 0
    }
}

/// One hour's counts of a tenant and feature, as the recorder hands them over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourCounts {
    pub allowed: u64,
    pub limited: u64,
    pub peak: u64,
    /// By error code (few per row: a short list).
    pub refused: Vec<(&'static str, u64)>,
}

impl HourCounts {
    /// Adds `n` refusals with `code`.
    pub fn refuse(&mut self, code: &'static str, n: u64) {
        match self.refused.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += n,
            None => self.refused.push((code, n)),
        }
    }
}

/// One row of a batch: tenant, feature (`-` outside the feature map), hour number
/// (Unix time / 3600) and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourRow {
    pub tenant: Arc<str>,
    pub feature: Arc<str>,
    pub hour: i64,
    pub counts: HourCounts,
}

/// The licenses in force for a tenant on a day (Unix time / 86400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicensesSeen {
    pub tenant: Arc<str>,
    pub day: i64,
    /// License ids, comma-separated.
    pub license_ids: String,
}

/// The ledger's writing connection, with the ids of the tenant × feature keys it
/// has written.
#[derive(Debug)]
pub struct LedgerWriter {
    db: Database,
    keys: HashMap<(Arc<str>, Arc<str>), i64>,
}

/// Key ids remembered at most (then forgotten and looked up again): about 1 MB.
const KEYS_KEPT: usize = 16_384;

impl LedgerWriter {
    /// Opens the ledger of the store at `store_dir` for writing.
    pub fn open(store_dir: &Path) -> Result<LedgerWriter, DatabaseError> {
        Ok(LedgerWriter {
            db: Database::open(store_dir)?,
            keys: HashMap::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Adds `rows` and records `licenses`, in one transaction (all or nothing).
    pub fn save(
        &mut self,
        rows: &[HourRow],
        licenses: &[LicensesSeen],
    ) -> Result<(), DatabaseError> {
        if self.keys.len() >= KEYS_KEPT {
            self.keys.clear();
        }
        let path = self.db.path().to_path_buf();
        let sqlite = |source| DatabaseError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.db.connection.transaction().map_err(sqlite)?;
        let mut new_keys = Vec::new();
        {
            let mut insert_key = tx
                .prepare_cached(
                    "INSERT INTO usage_keys (tenant, feature) VALUES (?1, ?2)
                     ON CONFLICT (tenant, feature) DO UPDATE SET tenant = excluded.tenant
                     RETURNING id",
                )
                .map_err(sqlite)?;
            let mut add_hour = tx
                .prepare_cached(
                    "INSERT INTO usage_hours (key, hour, allowed, limited, peak)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (key, hour) DO UPDATE SET
                         allowed = allowed + excluded.allowed,
                         limited = limited + excluded.limited,
                         peak = max(peak, excluded.peak)",
                )
                .map_err(sqlite)?;
            let mut add_refusals = tx
                .prepare_cached(
                    "INSERT INTO usage_refusals (key, hour, code, count) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key, hour, code) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(sqlite)?;
            for row in rows {
                let pair = (Arc::clone(&row.tenant), Arc::clone(&row.feature));
                let key = match self.keys.get(&pair) {
                    Some(&key) => key,
                    None => {
                        let key: i64 = insert_key
                            .query_row(params![&*row.tenant, &*row.feature], |r| r.get(0))
                            .map_err(sqlite)?;
                        new_keys.push((pair, key));
                        key
                    }
                };
                let c = &row.counts;
                add_hour
                    .execute(params![
                        key,
                        row.hour,
                        db_int(c.allowed),
                        db_int(c.limited),
                        db_int(c.peak)
                    ])
                    .map_err(sqlite)?;
                for (code, n) in &c.refused {
                    add_refusals
                        .execute(params![key, row.hour, code, db_int(*n)])
                        .map_err(sqlite)?;
                }
            }
            let mut seen = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO usage_licenses (tenant, day, license_ids) VALUES (?1, ?2, ?3)",
                )
                .map_err(sqlite)?;
            for l in licenses {
                seen.execute(params![&*l.tenant, l.day, l.license_ids])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)?;
        // Only ids of a committed transaction are remembered, and no more than
        // KEYS_KEPT of them.
        let room = KEYS_KEPT.saturating_sub(self.keys.len());
        self.keys.extend(new_keys.into_iter().take(room));
        Ok(())
    }

    /// Drops the rows of hours before `hour` (and licenses of days before its day);
    /// returns the hour rows dropped.
    pub fn prune(&mut self, hour: i64) -> Result<usize, DatabaseError> {
        let day = hour.div_euclid(DAY / HOUR);
        let c = &self.db.connection;
        let dropped = c
            .execute("DELETE FROM usage_hours WHERE hour < ?1", params![hour])
            .map_err(|e| self.db.sqlite(e))?;
        c.execute("DELETE FROM usage_refusals WHERE hour < ?1", params![hour])
            .map_err(|e| self.db.sqlite(e))?;
        c.execute("DELETE FROM usage_licenses WHERE day < ?1", params![day])
            .map_err(|e| self.db.sqlite(e))?;
        Ok(dropped)
    }
}

/// `n` as SQLite stores it (saturating).
fn db_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::Database;
    use crate::usage::query::{read, Granularity, UsageQuery};

    fn row(
        tenant: &str,
        feature: &str,
        hour: i64,
        allowed: u64,
        refused: &[(&'static str, u64)],
    ) -> HourRow {
        HourRow {
            tenant: Arc::from(tenant),
            feature: Arc::from(feature),
            hour,
            counts: HourCounts {
                allowed,
                limited: refused.iter().map(|(_, n)| n).sum(),
                peak: allowed.min(5),
                refused: refused.to_vec(),
            },
        }
    }

    #[test]
    fn writes_add_up_and_old_hours_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LedgerWriter::open(dir.path()).unwrap();
        let today = 20_000 * (DAY / HOUR);
        w.save(
            &[
                row("acme", "reports", today, 3, &[("USAGE_LIMIT_EXCEEDED", 1)]),
                row("acme", "-", today - 500 * 24, 7, &[]),
            ],
            &[LicensesSeen {
                tenant: Arc::from("acme"),
                day: 20_000,
                license_ids: "lic-1".into(),
            }],
        )
        .unwrap();
        w.save(
            &[row(
                "acme",
                "reports",
                today,
                2,
                &[("USAGE_LIMIT_EXCEEDED", 2)],
            )],
            &[],
        )
        .unwrap();
        assert_eq!(w.prune(today - 400 * 24).unwrap(), 1);
        let db = Database::open_read_only(dir.path()).unwrap();
        let rows = read(
            &db,
            &UsageQuery {
                tenant: Some("acme"),
                feature: None,
                from_day: 19_000,
                to_day: 20_001,
                granularity: Granularity::Month,
            },
        )
        .unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let t = &rows[0].tally;
        assert_eq!((t.allowed, t.limited, t.peak_concurrency), (5, 3, 3));
        assert_eq!(t.refused["USAGE_LIMIT_EXCEEDED"], 3);
        let seen = crate::usage::query::licenses(&db, 20_000, 20_000).unwrap();
        assert!(seen["acme"].contains("lic-1"));
    }
}
