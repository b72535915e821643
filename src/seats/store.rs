//! Seats on disk, in the store's database ([`crate::database`]): every seat (its
//! keyed hash, never the identity), so seats held survive a restart, and the seat
//! rows of the usage ledger (peak seats in use per hour, distinct identities per
//! day). [`SeatWriter`] writes them from a thread of its own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use super::book::{SavedSeat, SeatBook, SeatTimes, UnixTime};
use super::SeatId;
use crate::database::{Database, DatabaseError};
use crate::periodic::PeriodicThread;
use crate::throttle::LogThrottle;

/// A full save of every tenant's seats at least this often (last-seen times move
/// without a change count).
const FULL_SAVE_EVERY: i64 = 60;

/// The open seat tables.
#[derive(Debug)]
pub struct SeatStore {
    db: Database,
    /// The figures written are the fleet's (seats counted in Redis).
    fleet: bool,
}

impl SeatStore {
    /// Opens (creating and migrating) the database of the store at `store_dir`;
    /// `fleet`: seats are counted fleet-wide in Redis (the ledger's figures are the
    /// fleet's, the same on every replica).
    pub fn open(store_dir: &Path, fleet: bool) -> Result<SeatStore, DatabaseError> {
        Ok(SeatStore {
            db: Database::open(store_dir)?,
            fleet,
        })
    }

    /// Every saved seat seen within `keep` seconds of `now`, by tenant.
    pub fn load(
        &self,
        now: UnixTime,
        keep: i64,
    ) -> Result<Vec<(String, SavedSeat)>, DatabaseError> {
        let sqlite = |e| self.db.sqlite(e);
        let mut statement = self
            .db
            .connection
            .prepare(
                "SELECT tenant, id, first_seen, last_seen, client, overage FROM seats
                 WHERE last_seen > ?1",
            )
            .map_err(sqlite)?;
        let rows = statement
            .query_map(params![now - keep], |row| {
                let id: Vec<u8> = row.get(1)?;
                let client: Option<String> = row.get(4)?;
                Ok((
                    row.get::<_, String>(0)?,
                    id,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    client,
                    row.get::<_, i64>(5)?,
                ))
            })
            .map_err(sqlite)?;
        let mut out = Vec::new();
        for row in rows {
            let (tenant, id, first_seen, last_seen, client, over) = row.map_err(sqlite)?;
            // A row this build did not write is skipped, not trusted.
            let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) else {
                continue;
            };
            out.push((
                tenant,
                SavedSeat {
                    id: SeatId(id),
                    first_seen,
                    last_seen,
                    client: client.and_then(|c| c.parse().ok()),
                    over: over != 0,
                },
            ));
        }
        Ok(out)
    }

    /// Replaces the saved seats of each tenant in `tenants` with its seats (when
    /// given; `None` keeps the saved ones), and raises the ledger's seat rows of
    /// `now`'s hour and day; one transaction.
    pub fn save(&mut self, tenants: &[TenantSave], now: UnixTime) -> Result<(), DatabaseError> {
        let path = self.db.path().to_path_buf();
        let sqlite = |source| DatabaseError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.db.connection.transaction().map_err(sqlite)?;
        {
            let mut clear = tx
                .prepare_cached("DELETE FROM seats WHERE tenant = ?1")
                .map_err(sqlite)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO seats (tenant, id, first_seen, last_seen, client, overage)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sqlite)?;
            let mut hour = tx
                .prepare_cached(
                    "INSERT INTO usage_seat_hours (tenant, hour, peak_seats) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant, hour) DO UPDATE
                     SET peak_seats = max(peak_seats, excluded.peak_seats)",
                )
                .map_err(sqlite)?;
            let mut day = tx
                .prepare_cached(
                    "INSERT INTO usage_seat_days (tenant, day, distinct_users, fleet)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, day) DO UPDATE
                     SET distinct_users = max(distinct_users, excluded.distinct_users),
                         fleet = max(fleet, excluded.fleet)",
                )
                .map_err(sqlite)?;
            for TenantSave {
                tenant,
                seats,
                figures,
                ..
            } in tenants
            {
                let tenant: &str = tenant;
                if seats.is_some() {
                    clear.execute(params![tenant]).map_err(sqlite)?;
                }
                for seat in seats.iter().flatten() {
                    insert
                        .execute(params![
                            tenant,
                            &seat.id.0[..],
                            seat.first_seen,
                            seat.last_seen,
                            seat.client.map(|c| c.to_string()),
                            i64::from(seat.over),
                        ])
                        .map_err(sqlite)?;
                }
                hour.execute(params![tenant, now / 3600, figures.in_use as i64])
                    .map_err(sqlite)?;
                day.execute(params![
                    tenant,
                    now / 86_400,
                    figures.seen_today as i64,
                    i64::from(self.fleet)
                ])
                .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }
}

/// What one save writes of a tenant.
#[derive(Debug)]
pub struct TenantSave {
    pub tenant: Arc<str>,
    /// Its seats (`None`: the saved ones stay).
    pub seats: Option<Vec<SavedSeat>>,
    pub figures: SeatFigures,
    /// The book's change count these seats are of.
    pub changes: u64,
}

/// A tenant's seat figures at one save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatFigures {
    /// The most seats in use at once since the last save (this gateway's, or the
    /// fleet's with Redis).
    pub in_use: u64,
    /// Distinct identities seen since the day began (UTC).
    pub seen_today: u64,
}

/// The thread that saves a [`SeatBook`] every `interval` (tenants whose seats were
/// added or removed; all of them at least every minute), and once more when finished.
#[derive(Debug)]
pub struct SeatWriter {
    thread: PeriodicThread,
}

impl SeatWriter {
    /// Starts the writer of `book` into `store`; seats time out per `times()`.
    pub fn start(
        book: Arc<SeatBook>,
        mut store: SeatStore,
        times: impl Fn() -> SeatTimes + Send + 'static,
        interval: Duration,
    ) -> std::io::Result<SeatWriter> {
        let errors = LogThrottle::new(Duration::from_secs(60));
        let mut saved_changes: std::collections::HashMap<Arc<str>, u64> =
            std::collections::HashMap::new();
        let mut last_full = 0;
        let thread = PeriodicThread::start("licgate-seats", interval, move |last| {
            let now = crate::quota::clock::now();
            let full = last || now - last_full >= FULL_SAVE_EVERY;
            let times = times();
            let mut batch = Vec::new();
            for (tenant, seats) in book.all() {
                let changes = seats.changes();
                let (in_use, _) = seats.in_use(now, times);
                let moved = saved_changes.get(&tenant) != Some(&changes);
                if !(full || moved || in_use > 0) {
                    continue;
                }
                let figures = SeatFigures {
                    in_use: seats.take_peak(in_use),
                    seen_today: seats.seen_today(now),
                };
                let snapshot = (full || moved).then(|| seats.snapshot());
                batch.push(TenantSave {
                    tenant,
                    seats: snapshot,
                    figures,
                    changes,
                });
            }
            match store.save(&batch, now) {
                Ok(()) => {
                    for save in batch {
                        if save.seats.is_some() {
                            saved_changes.insert(save.tenant, save.changes);
                        }
                    }
                    if full {
                        last_full = now;
                    }
                }
                Err(e) => {
                    if last || errors.permit().is_some() {
                        tracing::error!(error = %e, "cannot save seats; retrying");
                    }
                }
            }
        })?;
        Ok(SeatWriter { thread })
    }

    /// Saves every seat and stops the thread.
    pub fn finish(&mut self) {
        self.thread.finish();
    }
}
