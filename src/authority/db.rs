//! The authority's database: SQLite (one file, WAL) or PostgreSQL, through sqlx's Any
//! driver so that every query is written once (`$N` placeholders, which both accept).
//!
//! Where the two differ, [`Dialect`] says how: the statement that opens a write
//! transaction (SQLite takes its write lock at `BEGIN IMMEDIATE`, so a transaction
//! never fails upgrading a read lock; PostgreSQL locks rows with `FOR UPDATE`), and a
//! few words of DDL. The schema's migrations are embedded and applied at start, under
//! a lock, so several authority processes starting on one PostgreSQL apply each once.

use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _, Row as _};

use super::config::DatabaseUrl;

/// The two databases the authority runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement that begins a transaction that will write.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// What follows a `SELECT` whose rows the transaction will change (SQLite's
    /// `BEGIN IMMEDIATE` already excludes other writers).
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// What follows a `SELECT` joining `licenses l` that locks only the license row
    /// (PostgreSQL `FOR UPDATE OF l`; nothing on SQLite, as [`for_update`](Self::for_update)).
    pub(crate) fn for_update_of_license(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF l",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// A database the authority could not use.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database schema (step {version}): {source}")]
    Migrate {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database's schema is version {found}, newer than this build's {known}: upgrade licgate")]
    TooNew { found: i64, known: i64 },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// The schema, one entry per version. `{id}` is an auto-numbered primary key.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL,
    tier_name TEXT,
    features TEXT NOT NULL,
    limits TEXT NOT NULL,
    feature_limits TEXT NOT NULL,
    flags TEXT NOT NULL,
    max_activations BIGINT NOT NULL,
    duration_days BIGINT,
    token_ttl BIGINT NOT NULL,
    heartbeat_interval BIGINT NOT NULL,
    floating BIGINT NOT NULL,
    heartbeat_timeout BIGINT NOT NULL,
    grace_days BIGINT,
    read_only_days BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE licenses (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    key_hint TEXT NOT NULL,
    policy_id TEXT NOT NULL REFERENCES policies(id),
    tenant TEXT NOT NULL,
    customer TEXT,
    email TEXT,
    expires_at BIGINT,
    overrides TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX licenses_tenant ON licenses (tenant, status);
CREATE INDEX licenses_policy ON licenses (policy_id);
CREATE TABLE activations (
    id TEXT PRIMARY KEY,
    license_id TEXT NOT NULL REFERENCES licenses(id),
    instance_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    hostname TEXT NOT NULL,
    status TEXT NOT NULL,
    offline BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE UNIQUE INDEX activations_live ON activations (license_id, instance_id) WHERE status = 'active';
CREATE INDEX activations_license ON activations (license_id, status, last_seen);
CREATE INDEX activations_instance ON activations (instance_id);
CREATE TABLE nonces (
    scope TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (scope, nonce)
);
CREATE INDEX nonces_seen ON nonces (seen_at);
CREATE TABLE events (
    id {id},
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    license_id TEXT,
    activation_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX events_license ON events (license_id, id);
CREATE TABLE usage_reports (
    instance_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    period_from TEXT NOT NULL,
    period_to TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    file TEXT NOT NULL,
    PRIMARY KEY (instance_id, sequence)
);
CREATE TABLE usage_days (
    instance_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    feature TEXT NOT NULL,
    day TEXT NOT NULL,
    allowed BIGINT NOT NULL,
    limited BIGINT NOT NULL,
    refused BIGINT NOT NULL,
    peak_concurrency BIGINT NOT NULL
);
CREATE INDEX usage_days_tenant ON usage_days (tenant, day);
CREATE TABLE usage_licenses (
    instance_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    license_id TEXT NOT NULL
);
CREATE INDEX usage_licenses_license ON usage_licenses (license_id);
"#,
    r#"
CREATE TABLE usage_seat_days (
    instance_id TEXT NOT NULL,
    installation TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    day TEXT NOT NULL,
    peak_seats BIGINT NOT NULL,
    daily_users BIGINT NOT NULL,
    fleet BIGINT NOT NULL
);
CREATE INDEX usage_seat_days_tenant ON usage_seat_days (tenant, day);
"#,
];

/// The authority's connection pools and what kind of database it is.
///
/// On SQLite, write transactions go through a pool of one connection: they queue in
/// order inside the process instead of meeting at SQLite's lock, whose busy handler
/// sleeps and retries (long tails under load). Reads use the other connections (WAL
/// lets them run beside the writer). On PostgreSQL both are the same pool.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    writer: AnyPool,
    pub(crate) dialect: Dialect,
}

impl Db {
    /// Connects (creating a SQLite file when missing), sets SQLite to WAL, and applies
    /// the migrations this database has not had yet.
    pub async fn open(url: &DatabaseUrl, connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (text, dialect) = match url {
            DatabaseUrl::Sqlite(path) => (
                format!("sqlite://{}?mode=rwc", path.display()),
                Dialect::Sqlite,
            ),
            DatabaseUrl::Postgres(url) => (url.clone(), Dialect::Postgres),
        };
        let open_error = |source| DbError::Open {
            url: url.display(),
            source,
        };
        let options: AnyConnectOptions = text.parse().map_err(open_error)?;
        let pool_of = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                // No ping before each use: a broken connection fails its query, which
                // answers 503, and the pool replaces it.
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_of(connections)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        let writer = match dialect {
            Dialect::Sqlite => pool_of(1).connect_with(options).await.map_err(open_error)?,
            Dialect::Postgres => pool.clone(),
        };
        let db = Db {
            pool,
            writer,
            dialect,
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A transaction that will write: SQLite's write lock taken at its start
    /// (`BEGIN IMMEDIATE`, on the writer connection), PostgreSQL's plain `BEGIN`.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        self.writer.begin_with(self.dialect.begin_write()).await
    }

    /// The connection pool (the store's queries; bulk seeding in `load/authority`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the migrations not yet applied, each in its own transaction under a
    /// lock (PostgreSQL: an advisory lock; SQLite: the write lock).
    async fn migrate(&self) -> Result<(), DbError> {
        let known = MIGRATIONS.len() as i64;
        let mut tx = self.begin_write().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7700)")
                .execute(&mut *tx)
                .await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS licgate_schema (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let found: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM licgate_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if found > known {
            return Err(DbError::TooNew { found, known });
        }
        let id = match self.dialect {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        for (index, ddl) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as i64 + 1;
            let fail = |source| DbError::Migrate { version, source };
            let ddl = ddl.replace("{id}", id);
            for statement in ddl.split(';').filter(|s| !s.trim().is_empty()) {
                sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query("INSERT INTO licgate_schema (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(super::clock::now())
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A trivial query's round trip: what `/readyz` checks and `/metrics` times.
    pub async fn ping(&self) -> Result<Duration, DbError> {
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(started.elapsed())
    }
}
