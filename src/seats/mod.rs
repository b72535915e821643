//! Seats at the HTTP layer: a person is recognized by a session cookie, a verified
//! bearer token's claim or a trusted proxy's header, and only a keyed hash of that
//! value is kept ([`SeatId`], HMAC-SHA256 with a per-installation secret, truncated to
//! 128 bits), never the value itself. The [`book`] counts each licensed tenant's seats
//! against [`limits`].

pub mod book;
pub(crate) mod fleet;
pub(crate) mod identity;
pub mod limits;
pub mod store;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use book::{SeatBook, SeatTimes, KEPT_AT_LEAST};
use store::{SeatStore, SeatWriter};

/// How often seats and the ledger's seat figures are saved.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// The gateway's seats: the book, the key of its hashes, and the writer keeping
/// them on disk.
pub struct Seats {
    pub book: Arc<SeatBook>,
    /// The fleet's seats, counted in Redis (`quota.backend = "redis"`).
    pub(crate) fleet: Option<fleet::FleetSeats>,
    secret: SeatSecret,
    writer: Mutex<Option<SeatWriter>>,
    /// The current idle timeout and active window (changed by a reload), for the
    /// writer's figures.
    times: Arc<CurrentTimes>,
}

/// [`SeatTimes`] that a reload can change while the writer reads them.
#[derive(Debug)]
struct CurrentTimes {
    idle_timeout: std::sync::atomic::AtomicI64,
    active_window: std::sync::atomic::AtomicI64,
}

impl CurrentTimes {
    fn new(times: SeatTimes) -> CurrentTimes {
        CurrentTimes {
            idle_timeout: times.idle_timeout.into(),
            active_window: times.active_window.into(),
        }
    }

    fn get(&self) -> SeatTimes {
        use std::sync::atomic::Ordering::Relaxed;
        SeatTimes {
            idle_timeout: self.idle_timeout.load(Relaxed),
            active_window: self.active_window.load(Relaxed),
        }
    }

    fn set(&self, times: SeatTimes) {
        use std::sync::atomic::Ordering::Relaxed;
        self.idle_timeout.store(times.idle_timeout, Relaxed);
        self.active_window.store(times.active_window, Relaxed);
    }
}

impl std::fmt::Debug for Seats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seats")
            .field("tenants", &self.book.tenants())
            .finish_non_exhaustive()
    }
}

impl Seats {
    /// The seats of the store at `store_dir` (restored from its database, and saved
    /// there from now on), hashing with `secret`; seats time out per `times`.
    pub fn open(
        store_dir: Option<&Path>,
        secret: SeatSecret,
        times: SeatTimes,
        fleet: bool,
    ) -> Result<Seats, crate::database::DatabaseError> {
        let book = Arc::new(SeatBook::default());
        let current = Arc::new(CurrentTimes::new(times));
        let writer = match store_dir {
            Some(dir) => {
                let store = SeatStore::open(dir, fleet)?;
                let now = crate::quota::clock::now();
                let saved = store.load(now, times.active_window.max(KEPT_AT_LEAST))?;
                let restored = saved.len();
                let mut by_tenant: std::collections::HashMap<String, Vec<_>> =
                    std::collections::HashMap::new();
                for (tenant, seat) in saved {
                    by_tenant.entry(tenant).or_default().push(seat);
                }
                for (tenant, seats) in by_tenant {
                    book.tenant(&Arc::from(tenant)).restore(seats);
                }
                if restored > 0 {
                    tracing::info!(seats = restored, "seats restored");
                }
                let writer_times = Arc::clone(&current);
                Some(
                    SeatWriter::start(
                        Arc::clone(&book),
                        store,
                        move || writer_times.get(),
                        SAVE_INTERVAL,
                    )
                    .map_err(|source| crate::database::DatabaseError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Seats {
            book,
            fleet: fleet.then(fleet::FleetSeats::default),
            secret,
            writer: Mutex::new(writer),
            times: current,
        })
    }

    /// Takes the idle timeout and active window of a reloaded configuration (the
    /// requests' checks take them from the rules; this is for the saved figures).
    pub fn set_times(&self, times: SeatTimes) {
        self.times.set(times);
    }

    /// Admits `id` of `tenant`: fleet-wide when seats are counted in Redis
    /// (`redis`), else by this gateway's book.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admit(
        &self,
        redis: Option<&crate::quota::redis::RedisQuotas>,
        tenant: &Arc<str>,
        id: SeatId,
        client: Option<std::net::IpAddr>,
        now: book::UnixTime,
        limits: &limits::SeatLimits,
        times: SeatTimes,
    ) -> fleet::FleetAdmission {
        match (&self.fleet, redis) {
            (Some(fleet), Some(redis)) => {
                fleet
                    .admit(redis, &self.book, tenant, id, client, now, limits, times)
                    .await
            }
            _ => fleet::FleetAdmission::Decided(
                self.book
                    .tenant(tenant)
                    .admit(id, client, now, limits, times),
            ),
        }
    }

    /// Releases the seat of `id` (a logout, a rotated session), fleet-wide too.
    pub(crate) async fn remove(
        &self,
        redis: Option<&crate::quota::redis::RedisQuotas>,
        tenant: &str,
        id: SeatId,
    ) {
        match (&self.fleet, redis) {
            (Some(fleet), Some(redis)) => {
                // Redis unreachable: the seat idles out there instead.
                let _ = fleet.remove(redis, &self.book, tenant, id).await;
            }
            _ => {
                if let Some(book) = self.book.get(tenant) {
                    book.remove(id);
                }
            }
        }
    }

    /// The seat id of `identity`.
    pub fn id(&self, identity: &[u8]) -> SeatId {
        SeatId::of(&self.secret, identity)
    }

    /// Saves every seat and stops saving (at shutdown, after the drain).
    pub fn finish(&self) {
        if let Some(mut writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            writer.finish();
        }
    }
}

/// The keyed hash of one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeatId(pub [u8; 16]);

impl SeatId {
    /// Hex digits of the id shown by the admin API.
    pub const SHOWN_HEX: usize = 12;

    /// The id of `identity` under `secret`.
    pub fn of(secret: &SeatSecret, identity: &[u8]) -> SeatId {
        let tag = ring::hmac::sign(&secret.0, identity);
        let mut id = [0u8; 16];
        id.copy_from_slice(&tag.as_ref()[..16]);
        SeatId(id)
    }

    /// The id in lower-case hex.
    pub fn hex(&self) -> String {
        let mut text = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(text, "{b:02x}");
        }
        text
    }
}

/// The per-installation key of the identity hashes.
pub struct SeatSecret(ring::hmac::Key);

impl std::fmt::Debug for SeatSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeatSecret(..)")
    }
}

impl SeatSecret {
    /// The key of `bytes` (32 random bytes kept by the installation).
    pub fn new(bytes: &[u8]) -> SeatSecret {
        SeatSecret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The installation's key, derived from its instance key: replicas of one
    /// installation (one instance key) hash an identity alike, and nothing else
    /// can. `sign` is the instance key's (deterministic, Ed25519) signature.
    pub fn of_instance(sign: impl FnOnce(&[u8]) -> [u8; 64]) -> SeatSecret {
        let signature = sign(b"licgate seat identities v1");
        let digest = ring::digest::digest(&ring::digest::SHA256, &signature);
        SeatSecret::new(digest.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_secret_and_never_show_the_value() {
        let a = SeatSecret::new(&[1; 32]);
        let b = SeatSecret::new(&[2; 32]);
        let value = b"sessionid-value-123";
        assert_eq!(SeatId::of(&a, value), SeatId::of(&a, value));
        assert_ne!(SeatId::of(&a, value), SeatId::of(&b, value));
        let hex = SeatId::of(&a, value).hex();
        assert_eq!(hex.len(), 32);
        assert!(!hex.contains("123"));
    }
}
