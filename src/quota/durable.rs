//! Quota counts on disk, in the store's database ([`crate::database`]), written behind
//! the request path.
//!
//! ```text
//! quota_counts(tenant, feature, window, window_start, window_end, count, updated_at)
//!   primary key (tenant, feature, window); feature '' = the tenant's own quota
//! ```
//!
//! [`CountWriter`] saves the counts changed in the last second from a thread of its
//! own; [`CountStore::save`] writes such a batch in one transaction; with `synchronous =
//! NORMAL` a commit survives the process being killed, and a power loss loses at most
//! the last commits. Rows of windows that ended are pruned.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, OptionalExtension as _};

use super::local::{LocalQuotas, SavedCount};
use super::Window;
use crate::database::{Database, DatabaseError};
use crate::periodic::PeriodicThread;
use crate::throttle::LogThrottle;

pub use crate::database::DIR;

/// Why the count database cannot be used.
pub type CountStoreError = DatabaseError;

/// The open count database.
#[derive(Debug)]
pub struct CountStore {
    db: Database,
}

impl CountStore {
    /// Opens (creating it and its directory if needed) the count database of the
    /// store at `store_dir`, applying migrations.
    pub fn open(store_dir: &Path) -> Result<CountStore, CountStoreError> {
        Ok(CountStore {
            db: Database::open(store_dir)?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn sqlite(&self, source: rusqlite::Error) -> CountStoreError {
        self.db.sqlite(source)
    }

    /// The counts of windows that have not ended at `now`.
    pub fn load(&self, now: i64) -> Result<Vec<SavedCount>, CountStoreError> {
        let mut statement = self
            .db
            .connection
            .prepare(
                "SELECT tenant, feature, window, window_start, count FROM quota_counts
                 WHERE window_end > ?1 AND window_start <= ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![now], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (tenant, feature, window, start, count) = row.map_err(|e| self.sqlite(e))?;
            let Some(window) = Window::from_name(&window) else {
                continue;
            };
            let index = window.index(start);
            if window.start(index) != start || count <= 0 {
                continue;
            }
            out.push(SavedCount {
                tenant: Arc::from(tenant),
                feature: (!feature.is_empty()).then(|| feature.into_boxed_str()),
                window,
                index,
                count: count.unsigned_abs(),
            });
        }
        Ok(out)
    }

    /// Writes `counts` (each the count of its window so far) in one transaction, at
    /// `now`, and drops rows of windows that ended.
    pub fn save(&mut self, counts: &[SavedCount], now: i64) -> Result<(), CountStoreError> {
        let path = self.db.path().to_path_buf();
        let sqlite = |source| CountStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.db.connection.transaction().map_err(sqlite)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO quota_counts
                         (tenant, feature, window, window_start, window_end, count, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, feature, window) DO UPDATE SET
                         window_start = excluded.window_start,
                         window_end = excluded.window_end,
                         count = excluded.count,
                         updated_at = excluded.updated_at",
                )
                .map_err(sqlite)?;
            for c in counts {
                upsert
                    .execute(params![
                        &*c.tenant,
                        c.feature.as_deref().unwrap_or(""),
                        c.window.name(),
                        c.window.start(c.index),
                        c.window.end(c.index),
                        i64::try_from(c.count).unwrap_or(i64::MAX),
                        now,
                    ])
                    .map_err(sqlite)?;
            }
            tx.execute(
                "DELETE FROM quota_counts WHERE window_end <= ?1",
                params![now],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)
    }

    /// The saved count of one window (tests and tools).
    pub fn count(
        &self,
        tenant: &str,
        feature: Option<&str>,
        window: Window,
    ) -> Result<Option<(i64, u64)>, CountStoreError> {
        self.db
            .connection
            .query_row(
                "SELECT window_start, count FROM quota_counts
                 WHERE tenant = ?1 AND feature = ?2 AND window = ?3",
                params![tenant, feature.unwrap_or(""), window.name()],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?.unsigned_abs())),
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }
}

/// Rows the writer's buffer keeps room for between saves.
const ROWS_KEPT: usize = 4_096;

/// The thread that saves a [`LocalQuotas`]' counts to its [`CountStore`] every
/// `interval`, and once more when finished.
#[derive(Debug)]
pub struct CountWriter {
    thread: PeriodicThread,
}

impl CountWriter {
    /// Starts the writer (a thread of its own: its buffers are reused from save to
    /// save, and a slow disk never holds up anything else).
    pub fn start(
        quotas: Arc<LocalQuotas>,
        mut store: CountStore,
        interval: Duration,
    ) -> std::io::Result<CountWriter> {
        let errors = LogThrottle::new(Duration::from_secs(60));
        let mut rows = Vec::new();
        let thread = PeriodicThread::start("licgate-counts", interval, move |last| {
            let now = super::clock::now();
            if let Err(e) = quotas.save(now, &mut rows, |rows| store.save(rows, now)) {
                if last || errors.permit().is_some() {
                    tracing::error!(error = %e, "cannot save quota counts; retrying every second");
                }
            }
            // After a burst of changes (every tenant at once), the buffer does not
            // keep its peak size.
            rows.clear();
            rows.shrink_to(ROWS_KEPT);
        })?;
        Ok(CountWriter { thread })
    }

    /// Saves what changed since the last save and stops the thread.
    pub fn finish(&mut self) {
        self.thread.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(tenant: &str, feature: Option<&str>, window: Window, now: i64, n: u64) -> SavedCount {
        SavedCount {
            tenant: tenant.into(),
            feature: feature.map(Into::into),
            window,
            index: window.index(now),
            count: n,
        }
    }

    #[test]
    fn counts_survive_reopening_and_ended_windows_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_796_110_632;
        let mut store = CountStore::open(dir.path()).unwrap();
        store
            .save(
                &[
                    count("acme", None, Window::Day, now, 80),
                    count("acme", Some("reports"), Window::Hour, now, 3),
                    count("old", None, Window::Minute, now - 120, 9),
                ],
                now - 120,
            )
            .unwrap();
        store
            .save(&[count("acme", None, Window::Day, now, 81)], now)
            .unwrap();
        drop(store);
        let store = CountStore::open(dir.path()).unwrap();
        let mut loaded = store.load(now).unwrap();
        loaded.sort_by_key(|c| c.window);
        assert_eq!(
            loaded,
            vec![
                count("acme", Some("reports"), Window::Hour, now, 3),
                count("acme", None, Window::Day, now, 81),
            ]
        );
        assert_eq!(
            store.count("old", None, Window::Minute).unwrap(),
            None,
            "pruned"
        );
        // The next day nothing is current.
        assert!(store.load(now + 86_400).unwrap().is_empty());
        assert!(store.path().ends_with("usage/usage.sqlite3"));
    }
}
