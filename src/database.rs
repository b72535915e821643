//! The store's embedded database: one SQLite file (`store_dir/usage/usage.sqlite3`,
//! WAL) holding the quota counts and the usage ledger, opened here with its pragmas
//! and migrated to this build's schema.
//!
//! ```text
//! v1  quota_counts(tenant, feature, window, window_start, window_end, count, updated_at)
//! v2  usage_keys(id, tenant, feature)                 one id per tenant × feature
//!     usage_hours(key, hour, allowed, limited, peak)  hour = Unix time / 3600
//!     usage_refusals(key, hour, code, count)
//!     usage_licenses(tenant, day, license_ids)        day = Unix time / 86400
//!     usage_exports(sequence, from_day, to_day, sha256, created_at, report)
//! v3  seats(tenant, id, first_seen, last_seen, client, overage)  id = keyed hash
//!     usage_seat_hours(tenant, hour, peak_seats)
//!     usage_seat_days(tenant, day, distinct_users)
//! v4  usage_seat_days.fleet (1: the figures are the fleet's, counted in Redis)
//! ```
//!
//! Each writer (the quota counts', the ledger's) has a connection of its own; readers
//! (`licgate usage report`, the admin API) open read-only ones, also while the gateway
//! runs. With `synchronous = NORMAL` a commit survives the process being killed (the
//! WAL is in the page cache); a power loss loses at most the last commits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The database's directory inside the store, and its file name.
pub const DIR: &str = "usage";
pub const FILE: &str = "usage.sqlite3";

/// The schema version this build writes ([`Database::open`] migrates older ones).
pub const SCHEMA_VERSION: i64 = 4;

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: schema version {found} is newer than this build's ({SCHEMA_VERSION}); upgrade licgate")]
    TooNew { path: PathBuf, found: i64 },
    #[error("{path}: no usage database yet (the gateway creates it when it first runs)")]
    Missing { path: PathBuf },
}

/// An open connection to the database.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    pub(crate) connection: Connection,
}

/// The database file of the store at `store_dir`.
pub fn path_in(store_dir: &Path) -> PathBuf {
    store_dir.join(DIR).join(FILE)
}

impl Database {
    /// Opens for writing (creating it and its directory if needed) the database of the
    /// store at `store_dir`, applying migrations.
    pub fn open(store_dir: &Path) -> Result<Database, DatabaseError> {
        let dir = store_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|source| DatabaseError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(FILE);
        let connection = Connection::open(&path).map_err(|source| DatabaseError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let db = Database { path, connection };
        db.connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db.sqlite(e))?;
        db.connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| db.sqlite(e))?;
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    /// Opens the existing database of the store at `store_dir` for reading only
    /// (never creating or migrating anything).
    pub fn open_read_only(store_dir: &Path) -> Result<Database, DatabaseError> {
        let path = path_in(store_dir);
        if !path.exists() {
            return Err(DatabaseError::Missing { path });
        }
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| DatabaseError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let db = Database { path, connection };
        db.configure()?;
        let version = db.version()?;
        if version > SCHEMA_VERSION {
            return Err(DatabaseError::TooNew {
                path: db.path,
                found: version,
            });
        }
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error of `source` on this database.
    pub(crate) fn sqlite(&self, source: rusqlite::Error) -> DatabaseError {
        DatabaseError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn configure(&self) -> Result<(), DatabaseError> {
        self.connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.sqlite(e))?;
        // A small page cache (1 MiB): writers touch each row once a second at most.
        self.connection
            .pragma_update(None, "cache_size", -1024)
            .map_err(|e| self.sqlite(e))
    }

    fn version(&self) -> Result<i64, DatabaseError> {
        self.connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sqlite(e))
    }

    fn migrate(&self) -> Result<(), DatabaseError> {
        let version = self.version()?;
        if version > SCHEMA_VERSION {
            return Err(DatabaseError::TooNew {
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
        if version < 2 {
            self.connection
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS usage_keys (
                         id INTEGER PRIMARY KEY,
                         tenant TEXT NOT NULL,
                         feature TEXT NOT NULL,
                         UNIQUE (tenant, feature)
                     );
                     CREATE TABLE IF NOT EXISTS usage_hours (
                         key INTEGER NOT NULL,
                         hour INTEGER NOT NULL,
                         allowed INTEGER NOT NULL DEFAULT 0,
                         limited INTEGER NOT NULL DEFAULT 0,
                         peak INTEGER NOT NULL DEFAULT 0,
                         PRIMARY KEY (key, hour)
                     ) WITHOUT ROWID;
                     CREATE INDEX IF NOT EXISTS usage_hours_by_hour ON usage_hours (hour);
                     CREATE TABLE IF NOT EXISTS usage_refusals (
                         key INTEGER NOT NULL,
                         hour INTEGER NOT NULL,
                         code TEXT NOT NULL,
                         count INTEGER NOT NULL,
                         PRIMARY KEY (key, hour, code)
                     ) WITHOUT ROWID;
                     CREATE INDEX IF NOT EXISTS usage_refusals_by_hour ON usage_refusals (hour);
                     CREATE TABLE IF NOT EXISTS usage_licenses (
                         tenant TEXT NOT NULL,
                         day INTEGER NOT NULL,
                         license_ids TEXT NOT NULL,
                         PRIMARY KEY (tenant, day, license_ids)
                     ) WITHOUT ROWID;
                     CREATE TABLE IF NOT EXISTS usage_exports (
                         sequence INTEGER PRIMARY KEY,
                         from_day TEXT NOT NULL,
                         to_day TEXT NOT NULL,
                         sha256 TEXT NOT NULL,
                         created_at INTEGER NOT NULL,
                         report TEXT NOT NULL
                     );
                     PRAGMA user_version = 2;
                     COMMIT;",
                )
                .map_err(|e| self.sqlite(e))?;
        }
        if version < 3 {
            self.connection
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS seats (
                         tenant TEXT NOT NULL,
                         id BLOB NOT NULL,
                         first_seen INTEGER NOT NULL,
                         last_seen INTEGER NOT NULL,
                         client TEXT,
                         overage INTEGER NOT NULL DEFAULT 0,
                         PRIMARY KEY (tenant, id)
                     ) WITHOUT ROWID;
                     CREATE TABLE IF NOT EXISTS usage_seat_hours (
                         tenant TEXT NOT NULL,
                         hour INTEGER NOT NULL,
                         peak_seats INTEGER NOT NULL DEFAULT 0,
                         PRIMARY KEY (tenant, hour)
                     ) WITHOUT ROWID;
                     CREATE TABLE IF NOT EXISTS usage_seat_days (
                         tenant TEXT NOT NULL,
                         day INTEGER NOT NULL,
                         distinct_users INTEGER NOT NULL DEFAULT 0,
                         PRIMARY KEY (tenant, day)
                     ) WITHOUT ROWID;
                     PRAGMA user_version = 3;
                     COMMIT;",
                )
                .map_err(|e| self.sqlite(e))?;
        }
        if version < 4 {
            self.connection
                .execute_batch(
                    "BEGIN;
                     ALTER TABLE usage_seat_days ADD COLUMN fleet INTEGER NOT NULL DEFAULT 0;
                     PRAGMA user_version = 4;
                     COMMIT;",
                )
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path()).unwrap());
        let path = path_in(dir.path());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = Database::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
        let err = Database::open_read_only(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 7"), "{err}");
    }

    #[test]
    fn a_version_1_database_gains_the_ledger_and_keeps_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        let old = Connection::open(path_in(dir.path())).unwrap();
        old.execute_batch(
            "CREATE TABLE quota_counts (tenant TEXT NOT NULL, feature TEXT NOT NULL DEFAULT '',
                 window TEXT NOT NULL, window_start INTEGER NOT NULL, window_end INTEGER NOT NULL,
                 count INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                 PRIMARY KEY (tenant, feature, window)) WITHOUT ROWID;
             INSERT INTO quota_counts VALUES ('acme', '', 'day', 0, 86400, 5, 0);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(old);
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.version().unwrap(), SCHEMA_VERSION);
        let kept: i64 = db
            .connection
            .query_row("SELECT count FROM quota_counts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 5);
        let hours: i64 = db
            .connection
            .query_row("SELECT count(*) FROM usage_hours", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hours, 0);
    }

    #[test]
    fn reading_a_store_without_a_database_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Database::open_read_only(dir.path()).unwrap_err();
        assert!(matches!(err, DatabaseError::Missing { .. }), "{err}");
    }
}
