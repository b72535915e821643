//! Quota counts on disk: one SQLite database in the store directory
//! (`store_dir/usage/usage.sqlite3`, WAL), written behind the request path.
//!
//! ```text
//! quota_counts(tenant, feature, window, window_start, window_end, count, updated_at)
//!   primary key (tenant, feature, window); feature '' = the tenant's own quota
//! ```
//!
//! [`CountWriter`] saves the counts changed in the last second from a thread of its
//! own; [`CountStore::save`] writes such a batch in one transaction; with `synchronous =
//! NORMAL` a commit survives the process being killed (the WAL is in the page cache),
//! and a power loss loses at most the last commits. Rows of windows that ended are
//! pruned. The file can be read with the `sqlite3` shell, also while the gateway runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension as _};

use super::local::{LocalQuotas, SavedCount};
use super::Window;
use crate::throttle::LogThrottle;

/// The database's directory inside the store, and its file name.
pub const DIR: &str = "usage";
pub const FILE: &str = "usage.sqlite3";

/// The schema version this build writes ([`CountStore::open`] migrates older ones).
const SCHEMA_VERSION: i64 = 1;

/// Why the count database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CountStoreError {
    #[error("quota counts {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("quota counts {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("quota counts {path}: schema version {found} is newer than this build's ({SCHEMA_VERSION}); upgrade licgate")]
    TooNew { path: PathBuf, found: i64 },
}

/// The open count database.
#[derive(Debug)]
pub struct CountStore {
    path: PathBuf,
    connection: Connection,
}

impl CountStore {
    /// Opens (creating it and its directory if needed) the count database of the
    /// store at `store_dir`, applying migrations.
    pub fn open(store_dir: &Path) -> Result<CountStore, CountStoreError> {
        let dir = store_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|source| CountStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(FILE);
        let sqlite = |source| CountStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let connection = Connection::open(&path).map_err(sqlite)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(sqlite)?;
        // A small page cache: the writer touches each row once a second at most.
        connection
            .pragma_update(None, "cache_size", -1024)
            .map_err(sqlite)?;
        let store = CountStore { path, connection };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> CountStoreError {
        CountStoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&self) -> Result<(), CountStoreError> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sqlite(e))?;
        if version > SCHEMA_VERSION {
            return Err(CountStoreError::TooNew {
                path: self.path.clone(),
                found: version,
            });
        }
        if version < 1 {
            self.connection
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS quota_counts (
                         tenant TEXT NOT NULL,
                         feature TEXT NOT NULL DEFAULT '',
                         window TEXT NOT NULL,
                         window_start INTEGER NOT NULL,
                         window_end INTEGER NOT NULL,
                         count INTEGER NOT NULL,
                         updated_at INTEGER NOT NULL,
                         PRIMARY KEY (tenant, feature, window)
                     ) WITHOUT ROWID;
                     PRAGMA user_version = 1;
                     COMMIT;",
                )
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }

    /// The counts of windows that have not ended at `now`.
    pub fn load(&self, now: i64) -> Result<Vec<SavedCount>, CountStoreError> {
        let mut statement = self
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
        let path = self.path.clone();
        let sqlite = |source| CountStoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.connection.transaction().map_err(sqlite)?;
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
        self.connection
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
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountWriter {
    /// Starts the writer (a thread of its own: its buffers are reused from save to
    /// save, and a slow disk never holds up anything else).
    pub fn start(
        quotas: Arc<LocalQuotas>,
        mut store: CountStore,
        interval: Duration,
    ) -> std::io::Result<CountWriter> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("licgate-counts".into())
            .spawn(move || {
                let errors = LogThrottle::new(Duration::from_secs(60));
                let mut rows = Vec::new();
                loop {
                    let (flag, wake) = &*stopping;
                    let stopped = {
                        let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
                        let (guard, _) = wake
                            .wait_timeout_while(guard, interval, |stopped| !*stopped)
                            .unwrap_or_else(|e| e.into_inner());
                        *guard
                    };
                    let now = super::clock::now();
                    if let Err(e) = quotas.save(now, &mut rows, |rows| store.save(rows, now)) {
                        if stopped || errors.permit().is_some() {
                            tracing::error!(error = %e, "cannot save quota counts; retrying every second");
                        }
                    }
                    if stopped {
                        return;
                    }
                    // After a burst of changes (every tenant at once), the buffer
                    // does not keep its peak size.
                    rows.clear();
                    rows.shrink_to(ROWS_KEPT);
                }
            })?;
        Ok(CountWriter {
            stop,
            thread: Some(thread),
        })
    }

    /// Saves what changed since the last save and stops the thread.
    pub fn finish(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CountWriter {
    fn drop(&mut self) {
        self.finish();
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

    #[test]
    fn a_newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        drop(CountStore::open(dir.path()).unwrap());
        let path = dir.path().join(DIR).join(FILE);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = CountStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
    }
}
