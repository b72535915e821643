//! One gateway's seat book: per tenant, the identities (keyed hashes only) that hold a
//! seat, when each was first and last seen, and from where. A known identity is
//! admitted with one map read and one atomic store; only a new identity (or one
//! back after its seat freed) counts the others, under the tenant's admission lock,
//! so two new identities can never both take the last seat.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::limits::SeatLimits;
use super::SeatId;

/// Seconds since 1970.
pub type UnixTime = i64;

/// One identity's seat.
#[derive(Debug)]
struct Seat {
    first_seen: UnixTime,
    last_seen: AtomicI64,
    /// Where it was last admitted from.
    client: Mutex<Option<IpAddr>>,
    /// Admitted beyond the nominal limit (within the overage allowance).
    over: AtomicBool,
}

/// A seat as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeatInfo {
    /// The keyed hash's first bytes, in hex (the id `DELETE` takes).
    pub id: String,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    pub client_address: Option<String>,
    /// Whether it holds a concurrent seat now (seen within the idle timeout).
    pub in_use: bool,
    /// Admitted within the overage allowance.
    pub overage: bool,
}

/// What the book says about one request's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The identity holds (or now took) a seat; `over`: beyond the nominal limit,
    /// within the overage allowance (served with a warning).
    Seated { over: bool },
    /// A new identity beyond the limit.
    Full(SeatsFull),
}

/// Why a new identity gets no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatsFull {
    /// `Seats`: concurrent seats; `ActiveUsers`: distinct users in the window.
    pub kind: SeatKind,
    /// The license's limit (without the overage allowance).
    pub limit: u64,
    /// Identities counted against it now.
    pub in_use: u64,
    /// When the oldest of them stops counting (Unix seconds).
    pub frees_at: UnixTime,
}

/// Which seat limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatKind {
    Seats,
    ActiveUsers,
}

/// How long seats last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatTimes {
    /// A seat is in use while its identity was seen this recently (seconds).
    pub idle_timeout: i64,
    /// An identity counts as an active user while seen this recently (seconds).
    pub active_window: i64,
}

/// How long an idle identity is remembered at least: two days, so the distinct
/// identities of a day can be counted for the ledger.
pub const KEPT_AT_LEAST: i64 = 2 * 86_400;

impl SeatTimes {
    /// The times of `[seats]`, in whole seconds (at least 1).
    pub fn of(config: &crate::config::SeatsConfig) -> SeatTimes {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
        SeatTimes {
            idle_timeout: secs(config.idle_timeout),
            active_window: secs(config.active_window),
        }
    }
}

/// Stale seats are forgotten at most this often (seconds), at an admission.
const FORGET_EVERY: i64 = 60;

/// One tenant's seats.
#[derive(Debug, Default)]
pub struct TenantSeats {
    seats: DashMap<SeatId, Seat>,
    /// Held while a new identity is counted and added.
    admission: Mutex<()>,
    /// Counts seats added and removed (what a save must write beyond last-seen times).
    changes: AtomicU64,
    /// The most seats in use at once since [`TenantSeats::take_peak`] last ran.
    peak: AtomicU64,
    /// The fleet's distinct identities of one day, as Redis last told: the day
    /// (days since 1970) in the high 32 bits, the count in the low 32.
    fleet_today: AtomicU64,
    /// When seats kept for nothing any more were last forgotten (Unix seconds).
    forgotten_at: AtomicI64,
    /// Seats released (logouts, rotations, administrators) last seen on the latest
    /// such day: that day's people include them, once even if they come back.
    released: Mutex<Released>,
}

/// The ids of seats released that were last seen on one day.
#[derive(Debug, Default)]
struct Released {
    /// Days since 1970.
    day: i64,
    ids: std::collections::HashSet<SeatId>,
    /// Released beyond [`RELEASED_IDS_KEPT`] that day: counted, not told apart.
    beyond: u64,
}

/// At most this many released ids are kept per tenant and day (16 bytes each and
/// the set's share); more releases in a day are counted as people without their ids.
const RELEASED_IDS_KEPT: usize = 200_000;

/// `(day, count)` packed into one word (day high, count low).
fn packed(day: i64, count: u64) -> u64 {
    ((day as u64 & 0xffff_ffff) << 32) | count.min(0xffff_ffff)
}

/// The count of `word` when it is of `day`.
fn count_of(word: u64, day: i64) -> u64 {
    if word >> 32 == day as u64 & 0xffff_ffff {
        word & 0xffff_ffff
    } else {
        0
    }
}

/// A seat as saved to disk and restored at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSeat {
    pub id: SeatId,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    pub client: Option<IpAddr>,
    pub over: bool,
}

impl TenantSeats {
    /// Admits `id` (from `client`) at `now` under `limits`.
    pub fn admit(
        &self,
        id: SeatId,
        client: Option<IpAddr>,
        now: UnixTime,
        limits: &SeatLimits,
        times: SeatTimes,
    ) -> Admission {
        if let Some(seat) = self.seats.get(&id) {
            if holds(&seat, now, limits, times) {
                seat.last_seen.fetch_max(now, Ordering::Relaxed);
                return Admission::Seated {
                    over: seat.over.load(Ordering::Relaxed),
                };
            }
        }
        let _admitting = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what no longer counts for anything, at most once a minute (a pass
        // over every seat; the counts below skip stale seats anyway).
        let forgotten_at = self.forgotten_at.load(Ordering::Relaxed);
        if !(forgotten_at..forgotten_at + FORGET_EVERY).contains(&now) {
            self.forgotten_at.store(now, Ordering::Relaxed);
            let keep = if limits.max_active.is_some() {
                times.active_window
            } else {
                times.idle_timeout
            }
            .max(KEPT_AT_LEAST);
            self.seats
                .retain(|_, s| now - s.last_seen.load(Ordering::Relaxed) < keep);
        }
        let mut over = false;
        let checks = [
            (SeatKind::Seats, limits.max_seats, times.idle_timeout),
            (
                SeatKind::ActiveUsers,
                limits.max_active,
                times.active_window,
            ),
        ];
        let mut seats_with_it = None;
        for (kind, limit, span) in checks {
            let Some(limit) = limit else { continue };
            let (in_use, oldest) = self.counted(id, now, span);
            if kind == SeatKind::Seats {
                seats_with_it = Some(in_use + 1);
            }
            if in_use >= limits.allowed(limit) {
                return Admission::Full(SeatsFull {
                    kind,
                    limit,
                    in_use,
                    frees_at: oldest.map_or(now, |t| t + span),
                });
            }
            over |= in_use >= limit;
        }
        match self.seats.get(&id) {
            Some(seat) => {
                seat.last_seen.store(now, Ordering::Relaxed);
                seat.over.store(over, Ordering::Relaxed);
                *seat.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
            }
            None => {
                self.changes.fetch_add(1, Ordering::Relaxed);
                self.seats.insert(
                    id,
                    Seat {
                        first_seen: now,
                        last_seen: AtomicI64::new(now),
                        client: Mutex::new(client),
                        over: AtomicBool::new(over),
                    },
                );
            }
        }
        let in_use =
            seats_with_it.unwrap_or_else(|| self.counted(id, now, times.idle_timeout).0 + 1);
        self.peak.fetch_max(in_use, Ordering::Relaxed);
        Admission::Seated { over }
    }

    /// Identities other than `id` seen within `span` of `now`, and the oldest
    /// last-seen among them.
    fn counted(&self, id: SeatId, now: UnixTime, span: i64) -> (u64, Option<UnixTime>) {
        let mut count = 0;
        let mut oldest: Option<UnixTime> = None;
        for entry in self.seats.iter() {
            let last = entry.last_seen.load(Ordering::Relaxed);
            if *entry.key() != id && now - last < span {
                count += 1;
                oldest = Some(oldest.map_or(last, |o| o.min(last)));
            }
        }
        (count, oldest)
    }

    /// Seats in use (seen within the idle timeout) and distinct identities in the
    /// active window, at `now`.
    pub fn in_use(&self, now: UnixTime, times: SeatTimes) -> (u64, u64) {
        let mut seats = 0;
        let mut active = 0;
        for entry in self.seats.iter() {
            let age = now - entry.last_seen.load(Ordering::Relaxed);
            seats += u64::from(age < times.idle_timeout);
            active += u64::from(age < times.active_window);
        }
        (seats, active)
    }

    /// Releases the seat whose id starts with `prefix` (hex, at least 8 digits);
    /// `false` when none or more than one does.
    pub fn release(&self, prefix: &str) -> bool {
        if prefix.len() < 8 {
            return false;
        }
        let prefix = prefix.to_ascii_lowercase();
        let _admitting = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        // Collected first: an iterator holds a shard's read lock (even the last
        // one's once exhausted), and removing under it would deadlock.
        let matching: Vec<SeatId> = self
            .seats
            .iter()
            .filter(|e| e.key().hex().starts_with(&prefix))
            .map(|e| *e.key())
            .take(2)
            .collect();
        match matching[..] {
            [id] => self.forget(id),
            _ => false,
        }
    }

    /// Notes `id` as seated at `now` (by the fleet's count), without counting it
    /// against the limits here; seats idle for `idle_timeout` are not in use.
    pub fn note(
        &self,
        id: SeatId,
        client: Option<IpAddr>,
        now: UnixTime,
        over: bool,
        idle_timeout: i64,
    ) {
        if let Some(seat) = self.seats.get(&id) {
            seat.last_seen.fetch_max(now, Ordering::Relaxed);
            seat.over.store(over, Ordering::Relaxed);
            return;
        }
        let _admitting = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.seats.entry(id).or_insert_with(|| Seat {
            first_seen: now,
            last_seen: AtomicI64::new(now),
            client: Mutex::new(client),
            over: AtomicBool::new(over),
        });
        let in_use = self.counted(id, now, idle_timeout).0 + 1;
        self.peak.fetch_max(in_use, Ordering::Relaxed);
    }

    /// Notes the fleet's figures at `now` (from Redis): `in_use` seats and `today`
    /// distinct identities since the day began (UTC).
    pub fn note_fleet(&self, in_use: u64, today: u64, now: UnixTime) {
        self.peak.fetch_max(in_use, Ordering::Relaxed);
        let new = packed(now.div_euclid(86_400), today);
        // Packed day-first, so a later day or a larger count of the day is larger.
        self.fleet_today.fetch_max(new, Ordering::Relaxed);
    }

    /// Distinct identities seen on `now`'s day (UTC): this gateway's own (seats
    /// held, and released ones that did not come back), or the fleet's when Redis
    /// told a larger count.
    pub fn seen_today(&self, now: UnixTime) -> u64 {
        let day = now.div_euclid(86_400);
        let released = {
            let released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            if released.day == day {
                // One that came back holds a seat again, seen today: counted below.
                let gone = released
                    .ids
                    .iter()
                    .filter(|id| !self.seats.contains_key(id))
                    .count() as u64;
                gone + released.beyond
            } else {
                0
            }
        };
        let local = self.seen_since(day * 86_400) + released;
        local.max(count_of(self.fleet_today.load(Ordering::Relaxed), day))
    }

    /// Forgets the seat of `id` (released: a logout, a rotation, an administrator),
    /// keeping it among the people of the day it was last seen; whether it held one.
    /// The caller holds the admission lock.
    fn forget(&self, id: SeatId) -> bool {
        let Some((_, seat)) = self.seats.remove(&id) else {
            return false;
        };
        self.changes.fetch_add(1, Ordering::Relaxed);
        let day = seat.last_seen.load(Ordering::Relaxed).div_euclid(86_400);
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        if day > released.day {
            released.day = day;
            released.ids.clear();
            released.ids.shrink_to(64);
            released.beyond = 0;
        }
        // A seat last seen before the day kept is not among its people.
        if day == released.day {
            if released.ids.len() < RELEASED_IDS_KEPT || released.ids.contains(&id) {
                released.ids.insert(id);
            } else {
                released.beyond += 1;
            }
        }
        true
    }

    /// The most seats in use at once since the last call, `in_use_now` included;
    /// the next period starts from `in_use_now`.
    pub fn take_peak(&self, in_use_now: u64) -> u64 {
        self.peak
            .swap(in_use_now, Ordering::Relaxed)
            .max(in_use_now)
    }

    /// Releases the seat of `id` (a logout, or the old id of a rotated session).
    pub fn remove(&self, id: SeatId) -> bool {
        let _admitting = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        self.forget(id)
    }

    /// Seats added or removed so far (a save is due when this moved).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Every seat, to be saved.
    pub fn snapshot(&self) -> Vec<SavedSeat> {
        self.seats
            .iter()
            .map(|e| SavedSeat {
                id: *e.key(),
                first_seen: e.first_seen,
                last_seen: e.last_seen.load(Ordering::Relaxed),
                client: *e.client.lock().unwrap_or_else(|p| p.into_inner()),
                over: e.over.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Puts saved seats back (at start, before requests).
    pub fn restore(&self, saved: impl IntoIterator<Item = SavedSeat>) {
        for seat in saved {
            self.seats.insert(
                seat.id,
                Seat {
                    first_seen: seat.first_seen,
                    last_seen: AtomicI64::new(seat.last_seen),
                    client: Mutex::new(seat.client),
                    over: AtomicBool::new(seat.over),
                },
            );
        }
    }

    /// Identities seen at or after `since` (the distinct users of a day).
    pub fn seen_since(&self, since: UnixTime) -> u64 {
        self.seats
            .iter()
            .filter(|e| e.last_seen.load(Ordering::Relaxed) >= since)
            .count() as u64
    }

    /// Every seat, most recently seen first.
    pub fn list(&self, now: UnixTime, times: SeatTimes) -> Vec<SeatInfo> {
        let mut all: Vec<SeatInfo> = self
            .seats
            .iter()
            .map(|e| {
                let last_seen = e.last_seen.load(Ordering::Relaxed);
                SeatInfo {
                    id: e.key().hex()[..SeatId::SHOWN_HEX].to_string(),
                    first_seen: e.first_seen,
                    last_seen,
                    client_address: e
                        .client
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .map(|ip| ip.to_string()),
                    in_use: now - last_seen < times.idle_timeout,
                    overage: e.over.load(Ordering::Relaxed),
                }
            })
            .collect();
        all.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// Seats kept.
    pub fn len(&self) -> usize {
        self.seats.len()
    }

    /// Whether no seat is kept.
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }
}

/// Whether `seat` still counts for every limit in `limits` at `now`.
fn holds(seat: &Seat, now: UnixTime, limits: &SeatLimits, times: SeatTimes) -> bool {
    let age = now - seat.last_seen.load(Ordering::Relaxed);
    (limits.max_seats.is_none() || age < times.idle_timeout)
        && (limits.max_active.is_none() || age < times.active_window)
}

/// Every tenant's seats on this gateway.
#[derive(Debug, Default)]
pub struct SeatBook {
    tenants: DashMap<Arc<str>, Arc<TenantSeats>>,
}

impl SeatBook {
    /// The seats of `tenant`, created empty on first use.
    pub fn tenant(&self, tenant: &Arc<str>) -> Arc<TenantSeats> {
        if let Some(seats) = self.tenants.get(&**tenant) {
            return Arc::clone(&seats);
        }
        Arc::clone(self.tenants.entry(Arc::clone(tenant)).or_default().value())
    }

    /// The seats of `tenant`, if it has any state.
    pub fn get(&self, tenant: &str) -> Option<Arc<TenantSeats>> {
        self.tenants.get(tenant).map(|s| Arc::clone(&s))
    }

    /// Tenants with seat state.
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }

    /// Every tenant's seats, by name (for saving and the ledger).
    pub fn all(&self) -> HashMap<Arc<str>, Arc<TenantSeats>> {
        self.tenants
            .iter()
            .map(|e| (Arc::clone(e.key()), Arc::clone(e.value())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::claims::Overage;

    const TIMES: SeatTimes = SeatTimes {
        idle_timeout: 1_800,
        active_window: 30 * 86_400,
    };

    fn id(n: u8) -> SeatId {
        SeatId([n; 16])
    }

    fn seats(max_seats: u64, overage: Option<f64>) -> SeatLimits {
        SeatLimits {
            max_seats: Some(max_seats),
            max_active: None,
            overage: overage.and_then(Overage::new),
        }
    }

    #[test]
    fn the_peak_counts_seats_held_at_once_between_samples() {
        let book = TenantSeats::default();
        let limits = seats(10, None);
        let now = 1_000_000;
        for n in 1..=3 {
            book.admit(id(n), None, now, &limits, TIMES);
        }
        book.remove(id(1));
        book.remove(id(2));
        // Sampled now, one seat is in use; three were at once, three people today.
        assert_eq!(book.take_peak(book.in_use(now, TIMES).0), 3);
        assert_eq!(book.take_peak(1), 1);
        assert_eq!(book.seen_today(now), 3);
        // The fleet's figures raise it, and the day's people.
        book.note_fleet(7, 12, now);
        assert_eq!(book.take_peak(1), 7);
        assert_eq!(book.seen_today(now), 12);
        assert_eq!(book.seen_today(now + 86_400), 0);
        book.note_fleet(2, 5, now);
        assert_eq!(book.seen_today(now), 12, "a smaller count of the same day");
    }

    #[test]
    fn releases_beyond_the_ids_kept_are_still_counted() {
        let book = TenantSeats::default();
        let now = 86_400 * 20_000 + 60;
        let n = RELEASED_IDS_KEPT as u32 + 5;
        let ids = (0..n).map(|i| {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            SeatId(bytes)
        });
        book.restore(ids.clone().map(|id| SavedSeat {
            id,
            first_seen: now,
            last_seen: now,
            client: None,
            over: false,
        }));
        for id in ids {
            assert!(book.remove(id));
        }
        assert_eq!(book.seen_today(now), u64::from(n));
    }

    #[test]
    fn a_person_released_and_back_the_same_day_is_one_of_its_people() {
        let book = TenantSeats::default();
        let limits = seats(10, None);
        let day_start = 86_400 * 20_000;
        let now = day_start + 3_600;
        book.admit(id(1), None, now, &limits, TIMES);
        book.admit(id(2), None, now, &limits, TIMES);
        assert!(book.release(&id(1).hex()[..8]));
        assert_eq!(
            book.seen_today(now + 1),
            2,
            "released, still one of the day's"
        );
        book.admit(id(1), None, now + 2, &limits, TIMES);
        assert_eq!(book.seen_today(now + 2), 2, "back: counted once");
        assert!(book.remove(id(1)));
        assert!(!book.remove(id(1)), "released once");
        assert_eq!(book.seen_today(now + 3), 2);
        // A seat last seen yesterday and released today is not one of today's.
        let yesterday = day_start - 60;
        book.admit(id(3), None, yesterday, &limits, TIMES);
        assert!(book.remove(id(3)));
        assert_eq!(book.seen_today(now + 4), 2);
        // The next day starts afresh.
        book.admit(id(4), None, day_start + 86_400, &limits, TIMES);
        assert!(book.remove(id(4)));
        assert_eq!(book.seen_today(day_start + 86_400 + 1), 1);
    }

    #[test]
    fn seats_fill_then_refuse_new_identities_and_keep_the_seated() {
        let book = TenantSeats::default();
        let limits = seats(2, None);
        let now = 1_000_000;
        for n in 1..=2 {
            assert_eq!(
                book.admit(id(n), None, now + i64::from(n), &limits, TIMES),
                Admission::Seated { over: false }
            );
        }
        match book.admit(id(3), None, now + 10, &limits, TIMES) {
            Admission::Full(full) => {
                assert_eq!((full.limit, full.in_use), (2, 2));
                assert_eq!(full.frees_at, now + 1 + TIMES.idle_timeout);
                assert_eq!(full.kind, SeatKind::Seats);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            book.admit(id(1), None, now + 20, &limits, TIMES),
            Admission::Seated { over: false },
            "a seated identity keeps working"
        );
        // Identity 2 idles past the timeout; 3 takes its seat.
        let later = now + 2 + TIMES.idle_timeout;
        assert!(matches!(
            book.admit(id(3), None, later, &limits, TIMES),
            Admission::Seated { .. }
        ));
        assert_eq!(book.in_use(later, TIMES).0, 2);
    }

    #[test]
    fn overage_serves_with_a_warning_then_refuses() {
        let book = TenantSeats::default();
        let limits = seats(2, Some(1.5));
        let now = 5_000;
        let admitted: Vec<_> = (1..=4)
            .map(|n| book.admit(id(n), None, now, &limits, TIMES))
            .collect();
        assert_eq!(admitted[0], Admission::Seated { over: false });
        assert_eq!(admitted[1], Admission::Seated { over: false });
        assert_eq!(admitted[2], Admission::Seated { over: true });
        assert!(matches!(admitted[3], Admission::Full(f) if f.limit == 2 && f.in_use == 3));
        assert_eq!(
            book.admit(id(3), None, now + 1, &limits, TIMES),
            Admission::Seated { over: true },
            "the warned identity stays warned"
        );
    }

    #[test]
    fn active_users_count_distinct_identities_in_the_window() {
        let book = TenantSeats::default();
        let limits = SeatLimits {
            max_seats: None,
            max_active: Some(2),
            overage: None,
        };
        let day = 86_400;
        assert!(matches!(
            book.admit(id(1), None, 0, &limits, TIMES),
            Admission::Seated { .. }
        ));
        assert!(matches!(
            book.admit(id(2), None, day, &limits, TIMES),
            Admission::Seated { .. }
        ));
        // Idle for days, still active users within the window: a third is refused.
        match book.admit(id(3), None, 10 * day, &limits, TIMES) {
            Admission::Full(full) => {
                assert_eq!(full.kind, SeatKind::ActiveUsers);
                assert_eq!(full.frees_at, TIMES.active_window);
            }
            other => panic!("{other:?}"),
        }
        // After the first user's window ends, the third gets in.
        assert!(matches!(
            book.admit(id(3), None, TIMES.active_window + 1, &limits, TIMES),
            Admission::Seated { .. }
        ));
        assert_eq!(book.len(), 2, "the first user is forgotten");
    }

    #[test]
    fn release_by_prefix_and_list() {
        let book = TenantSeats::default();
        let limits = seats(1, None);
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        book.admit(id(0xab), Some(client), 100, &limits, TIMES);
        assert!(matches!(
            book.admit(id(0xcd), None, 101, &limits, TIMES),
            Admission::Full(_)
        ));
        let listed = book.list(101, TIMES);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "abababababab");
        assert_eq!(listed[0].client_address.as_deref(), Some("10.1.2.3"));
        assert!(!book.release("abab"), "too short a prefix");
        assert!(!book.release("cdcdcdcd"), "no such seat");
        assert!(book.release("ABABABAB"));
        assert!(matches!(
            book.admit(id(0xcd), None, 102, &limits, TIMES),
            Admission::Seated { .. }
        ));
        // Seats in every shard are released (the last shard's too: releasing while
        // iterating held its lock).
        let many = seats(1_000, None);
        for n in 0..=255u8 {
            book.admit(
                SeatId([n, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, n]),
                None,
                103,
                &many,
                TIMES,
            );
        }
        for n in 0..=255u8 {
            let hex = SeatId([n, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, n]).hex();
            assert!(book.release(&hex[..SeatId::SHOWN_HEX]), "{hex}");
        }
    }

    #[test]
    fn racing_new_identities_never_exceed_the_limit() {
        let book = Arc::new(TenantSeats::default());
        let limits = seats(10, None);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let book = Arc::clone(&book);
                std::thread::spawn(move || {
                    (0..50u8)
                        .filter(|n| {
                            let mut raw = [t; 16];
                            raw[1] = *n;
                            matches!(
                                book.admit(SeatId(raw), None, 7, &limits, TIMES),
                                Admission::Seated { .. }
                            )
                        })
                        .count()
                })
            })
            .collect();
        let seated: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(seated, 10);
        assert_eq!(book.len(), 10);
    }
}
