//! The heartbeat schedule: each activation beats at its interval (±10 % jitter);
//! a failed beat is retried with exponential back-off (from 1/16 of the interval,
//! 1 s to 60 s, doubling up to the interval) while the installed token keeps being
//! enforced until its `exp`. Each beat runs as a task of its own: one that panics
//! is logged and retried like a failure, the others go on.
//!
//! Also the link's metrics: `licgate_authority_requests_total{call,result}`,
//! `licgate_authority_last_success_timestamp_seconds{tenant}`,
//! `licgate_license_grace_remaining_seconds{tenant}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService, GenBackgroundService};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};
use tokio::time::Instant;

use super::client::{Call, CallError};
use super::records::{ActivationRecord, Records};
use super::Link;

/// Beats running at once (10,000 tenants coming back from an outage do not open
/// 10,000 connections).
const MAX_CONCURRENT_BEATS: usize = 16;
/// How often a fleet replica asks the authority for the installation's activations.
const FLEET_SYNC: Duration = Duration::from_secs(300);
/// When that failed, the next try.
const FLEET_RETRY: Duration = Duration::from_secs(15);
/// How often the schedule is checked against the stored records.
const RECORDS_SYNC: Duration = Duration::from_secs(30);
/// The first beats after a start are spread over this much (at most the interval).
const START_SPREAD_SECS: u64 = 10;

/// How a beat ended.
#[derive(Debug)]
pub enum Beat {
    /// Answered and applied: the record as it now is.
    Done(ActivationRecord),
    /// No usable answer (the reason): retried with back-off.
    Failed(String),
    /// The activation is over (deactivated, revoked): no more beats.
    Stop,
}

/// One activation's place in the schedule.
#[derive(Debug)]
struct Slot {
    record: ActivationRecord,
    due: Instant,
    /// Failed beats in a row.
    failures: u32,
    running: bool,
}

/// The slots by license id, and their due times in order.
///
/// The queue may hold stale entries (a slot removed, rescheduled or running since):
/// an entry counts only while its slot exists, is not running and is due at that very
/// instant; others are dropped when they come up. Finding what is due costs what is
/// due, not the number of activations.
#[derive(Debug, Default)]
struct Slots {
    by_id: HashMap<String, Slot>,
    queue: std::collections::BTreeSet<(Instant, String)>,
}

impl Slots {
    fn insert(&mut self, id: String, slot: Slot) {
        self.queue.insert((slot.due, id.clone()));
        self.by_id.insert(id, slot);
    }

    /// Whether the queue entry (`due`, `id`) is the slot's current one.
    fn current(&self, due: Instant, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|s| !s.running && s.due == due)
    }
}

/// Every activation's next beat.
#[derive(Debug, Default)]
pub struct Schedule {
    slots: Mutex<Slots>,
    wake: tokio::sync::Notify,
}

impl Schedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a new activation: its first beat after one interval.
    pub fn insert(&self, record: ActivationRecord) {
        let due = Instant::now() + jittered(record.heartbeat_interval);
        self.put(record, due);
    }

    /// Adds an activation found at start: its first beat soon (spread).
    pub fn insert_at_start(&self, record: ActivationRecord) {
        let spread = record.heartbeat_interval.clamp(1, START_SPREAD_SECS);
        let due = Instant::now() + Duration::from_millis(random_below(spread * 1000));
        self.put(record, due);
    }

    fn put(&self, record: ActivationRecord, due: Instant) {
        self.lock().insert(
            record.license_id.clone(),
            Slot {
                record,
                due,
                failures: 0,
                running: false,
            },
        );
        self.wake.notify_one();
    }

    /// Brings the schedule in line with the stored records (the CLI or a replica on
    /// a shared store may have added or removed some): new ones beat soon, gone ones
    /// stop. Only the file names are listed; only new files are read.
    fn sync(&self, records: &Records) {
        let names: std::collections::BTreeSet<std::ffi::OsString> =
            records.file_names().into_iter().collect();
        let mut known = std::collections::BTreeSet::new();
        {
            let mut slots = self.lock();
            slots.by_id.retain(|id, slot| {
                let name = records.file_name(id);
                let keep = slot.running || names.contains(&name);
                if keep {
                    known.insert(name);
                }
                keep
            });
        }
        for name in names.difference(&known) {
            if let Some(record) = records.read(name) {
                self.insert_at_start(record);
            }
        }
    }

    /// Takes `license_id` out of the schedule.
    pub fn remove(&self, license_id: &str) {
        self.lock().by_id.remove(license_id);
    }

    /// The records due now (at most `room`, marked running), and when the next other
    /// one is due.
    fn take_due(&self, now: Instant, room: usize) -> (Vec<ActivationRecord>, Option<Instant>) {
        let mut slots = self.lock();
        let mut due = Vec::new();
        loop {
            let Some((at, id)) = slots.queue.first().cloned() else {
                return (due, None);
            };
            if !slots.current(at, &id) {
                slots.queue.pop_first();
                continue;
            }
            if at > now || due.len() >= room {
                return (due, Some(at));
            }
            slots.queue.pop_first();
            if let Some(slot) = slots.by_id.get_mut(&id) {
                slot.running = true;
                due.push(slot.record.clone());
            }
        }
    }

    /// Records how the beat of `license_id` ended; returns the slot's record and
    /// whether this is its first failure in a row.
    fn finish(&self, license_id: &str, beat: &Beat) -> Option<(ActivationRecord, bool)> {
        let mut slots = self.lock();
        let slot = slots.by_id.get_mut(license_id)?;
        slot.running = false;
        let now = Instant::now();
        let out = match beat {
            Beat::Done(record) => {
                slot.record = record.clone();
                slot.failures = 0;
                slot.due = now + jittered(record.heartbeat_interval);
                None
            }
            Beat::Failed(_) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.due = now + backoff(slot.record.heartbeat_interval, slot.failures);
                Some((slot.record.clone(), slot.failures == 1))
            }
            Beat::Stop => {
                slots.by_id.remove(license_id);
                None
            }
        };
        if let Some(slot) = slots.by_id.get(license_id) {
            let entry = (slot.due, license_id.to_string());
            slots.queue.insert(entry);
        }
        drop(slots);
        self.wake.notify_one();
        out
    }

    /// (tenant, last success, token expiry) of every activation, by tenant.
    fn states(&self) -> Vec<(String, i64, i64)> {
        let mut out: Vec<(String, i64, i64)> = self
            .lock()
            .by_id
            .values()
            .map(|s| {
                (
                    s.record.tenant.clone(),
                    s.record.last_success,
                    s.record.token_expires_at,
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// `secs` ± 10 %.
fn jittered(secs: u64) -> Duration {
    let millis = secs.saturating_mul(1000).max(1000);
    let spread = millis / 5;
    Duration::from_millis(millis - millis / 10 + random_below(spread.max(1)))
}

/// The wait before retry number `failures` of a beat every `interval` seconds.
fn backoff(interval: u64, failures: u32) -> Duration {
    let interval_ms = interval.saturating_mul(1000).max(1000);
    let base = (interval_ms / 16).clamp(1000, 60_000);
    let wait = base.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_millis(wait.min(interval_ms))
}

/// A random number below `n` (n ≥ 1).
fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes) % n.max(1)
}

/// The background service that runs the link's heartbeats until shutdown.
pub struct Heartbeats(Arc<Link>);

impl Link {
    /// The pingora background service of this link's heartbeats.
    pub fn heartbeats(self: &Arc<Self>) -> GenBackgroundService<Heartbeats> {
        background_service("authority heartbeats", Heartbeats(Arc::clone(self)))
    }

    /// Beats what is due until `stop` says so.
    async fn supervise(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let running = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BEATS));
        let mut synced = Instant::now();
        let mut fleet_synced: Option<Instant> = None;
        let mut fleet_wait = FLEET_SYNC;
        loop {
            if *stop.borrow() {
                return;
            }
            if self.fleet && fleet_synced.is_none_or(|at| at.elapsed() >= fleet_wait) {
                fleet_wait = match self.sync().await {
                    Ok(_) => FLEET_SYNC,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch this installation's activations from the license server; retrying");
                        FLEET_RETRY
                    }
                };
                fleet_synced = Some(Instant::now());
            }
            if synced.elapsed() >= RECORDS_SYNC {
                let link = Arc::clone(&self);
                let _ =
                    tokio::task::spawn_blocking(move || link.schedule.sync(&link.records)).await;
                synced = Instant::now();
            }
            let room = running.available_permits();
            let (due, next) = self.schedule.take_due(Instant::now(), room);
            for record in due {
                let Ok(permit) = Arc::clone(&running).try_acquire_owned() else {
                    break;
                };
                let link = Arc::clone(&self);
                tokio::spawn(async move {
                    let inner = Arc::clone(&link);
                    let beating = record.clone();
                    let beat = tokio::spawn(async move { inner.beat(&beating).await })
                        .await
                        .unwrap_or_else(|e| {
                            tracing::error!(license_id = %record.license_id, error = %e, "a heartbeat task failed; retried");
                            Beat::Failed(format!("the heartbeat failed unexpectedly: {e}"))
                        });
                    if let Beat::Failed(reason) = &beat {
                        tracing::debug!(tenant = %record.tenant, license_id = %record.license_id, reason, "heartbeat failed");
                    }
                    if let Some((record, first)) = link.schedule.finish(&record.license_id, &beat) {
                        if first {
                            if let Beat::Failed(reason) = &beat {
                                tracing::warn!(tenant = %record.tenant, license_id = %record.license_id, reason, "heartbeat failed; retrying with back-off, the installed license stays in force until it expires");
                            }
                        }
                        link.offline_notice(&record);
                    }
                    drop(permit);
                });
            }
            let wait = next
                .map_or(RECORDS_SYNC, |n| {
                    n.saturating_duration_since(Instant::now())
                })
                .min(RECORDS_SYNC);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.schedule.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Heartbeats {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let link = Arc::clone(&self.0);
        self.0.runtime.spawn(link.supervise(stopped));
        let _ = shutdown.changed().await;
        let _ = stop.send(true);
    }
}

/// `licgate_authority_requests_total{call,result}`.
#[derive(Clone)]
pub struct LinkMetrics {
    requests: IntCounterVec,
}

impl LinkMetrics {
    pub(super) fn new() -> LinkMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "licgate_authority_requests_total",
                "Calls to the license server, by call (activate, heartbeat, deactivate) and result (ok, refused, unreachable, invalid).",
            ),
            &["call", "result"],
        )
        .expect("valid metric");
        for call in Call::ALL {
            for result in ["ok", "refused", "unreachable", "invalid"] {
                requests.with_label_values(&[call.label(), result]);
            }
        }
        LinkMetrics { requests }
    }

    /// Counts a call's result.
    pub fn count<T>(&self, call: Call, result: &Result<T, CallError>) {
        let label = match result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.requests
            .with_label_values(&[call.label(), label])
            .inc();
    }
}

/// The link's families, built when `/metrics` is scraped.
pub struct LinkCollector {
    link: Arc<Link>,
    descs: Vec<Desc>,
}

/// A per-tenant gauge's value from (tenant, last success, token expiry) and now.
type TenantGauge = fn(&(String, i64, i64), i64) -> f64;

const LAST_SUCCESS: &str = "licgate_authority_last_success_timestamp_seconds";
const GRACE_REMAINING: &str = "licgate_license_grace_remaining_seconds";

impl LinkCollector {
    pub fn new(link: Arc<Link>) -> LinkCollector {
        let mut descs = link
            .metrics
            .requests
            .desc()
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        for (name, help) in [
            (LAST_SUCCESS, "When the license server last answered a heartbeat or activation of the tenant (Unix time)."),
            (GRACE_REMAINING, "Seconds until the tenant's token from the license server expires: how long it keeps working without reaching the server."),
        ] {
            descs.push(
                Desc::new(name.into(), help.into(), vec!["tenant".into()], HashMap::new())
                    .expect("valid descriptor"),
            );
        }
        LinkCollector { link, descs }
    }
}

impl Collector for LinkCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use prometheus::proto::{Gauge, LabelPair, Metric, MetricType};
        let mut families = self.link.metrics.requests.collect();
        let now = self.link.now();
        let states = self.link.schedule.states();
        // One series per tenant: its latest success and its longest-lived token.
        let mut per_tenant: Vec<(String, i64, i64)> = Vec::new();
        for (tenant, last, expires) in states {
            match per_tenant.last_mut() {
                Some(t) if t.0 == tenant => {
                    t.1 = t.1.max(last);
                    t.2 = t.2.max(expires);
                }
                _ => per_tenant.push((tenant, last, expires)),
            }
        }
        let gauges: [(&str, usize, TenantGauge); 2] = [
            (LAST_SUCCESS, 1, |t, _| t.1 as f64),
            (GRACE_REMAINING, 2, |t, now| (t.2 - now).max(0) as f64),
        ];
        for (name, desc, value) in gauges {
            let mut family = MetricFamily::new();
            family.set_name(name.into());
            family.set_help(self.descs[desc].help.clone());
            family.set_field_type(MetricType::GAUGE);
            for t in &per_tenant {
                let mut pair = LabelPair::new();
                pair.set_name("tenant".into());
                pair.set_value(t.0.clone());
                let mut gauge = Gauge::new();
                gauge.set_value(value(t, now));
                let mut metric = Metric::from_label(vec![pair]);
                metric.set_gauge(gauge);
                family.mut_metric().push(metric);
            }
            if !family.get_metric().is_empty() {
                families.push(family);
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_sixteenth_up_to_the_interval() {
        let secs = |d: Duration| d.as_secs_f64();
        assert_eq!(secs(backoff(3600, 1)), 60.0);
        assert_eq!(secs(backoff(3600, 2)), 120.0);
        assert_eq!(secs(backoff(3600, 6)), 1920.0);
        assert_eq!(secs(backoff(3600, 7)), 3600.0);
        assert_eq!(secs(backoff(3600, 500)), 3600.0);
        assert_eq!(secs(backoff(2, 1)), 1.0);
        assert_eq!(secs(backoff(2, 3)), 2.0);
    }

    fn record(id: &str) -> ActivationRecord {
        ActivationRecord {
            activation_id: format!("act_{id}"),
            license_id: id.into(),
            tenant: "t".into(),
            instance_id: "i".into(),
            heartbeat_interval: 60,
            activated_at: 0,
            last_success: 0,
            token_expires_at: 0,
            status: "active".into(),
            key_hint: String::new(),
            claims_digest: String::new(),
            saved_success: 0,
        }
    }

    #[test]
    fn the_schedule_hands_out_what_is_due_in_order_and_skips_what_is_gone() {
        let schedule = Schedule::default();
        let start = Instant::now();
        for (id, secs) in [("c", 30), ("a", 10), ("b", 20), ("gone", 5)] {
            schedule.put(record(id), start + Duration::from_secs(secs));
        }
        schedule.remove("gone");
        let ids = |due: Vec<ActivationRecord>| -> Vec<String> {
            due.into_iter().map(|r| r.license_id).collect()
        };
        let (due, next) = schedule.take_due(start + Duration::from_secs(1), 16);
        assert!(due.is_empty());
        assert_eq!(next, Some(start + Duration::from_secs(10)));
        // Two are due, room for one: the earlier, and the other is due now.
        let (due, next) = schedule.take_due(start + Duration::from_secs(25), 1);
        assert_eq!(ids(due), ["a"]);
        assert_eq!(next, Some(start + Duration::from_secs(20)));
        let (due, next) = schedule.take_due(start + Duration::from_secs(25), 16);
        assert_eq!(ids(due), ["b"]);
        assert_eq!(next, Some(start + Duration::from_secs(30)));
        // A running beat is not handed out twice; finished, it is due one interval on.
        assert!(schedule
            .take_due(start + Duration::from_secs(25), 16)
            .0
            .is_empty());
        schedule.finish("a", &Beat::Done(record("a")));
        schedule.finish("b", &Beat::Stop);
        let (due, _) = schedule.take_due(start + Duration::from_secs(40), 16);
        assert_eq!(ids(due), ["c"]);
        let (due, _) = schedule.take_due(Instant::now() + Duration::from_secs(67), 16);
        assert_eq!(ids(due), ["a"], "b stopped");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..200 {
            let d = jittered(100).as_millis();
            assert!((90_000..110_000).contains(&d), "{d}");
        }
        assert!(jittered(0) >= Duration::from_millis(900));
    }
}
