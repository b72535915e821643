//! The ledger's recorder, off the request path: a decided request queues one
//! [`UsageEvent`] (a few words moved into a bounded lock-free queue: no lock, no
//! allocation); the recorder's thread sums the events per tenant × feature × hour
//! and writes the sums at least every second in one transaction, and everything
//! queued when it is finished (an orderly shutdown loses nothing). A full queue makes
//! the request wait for room: the ledger is what customers are billed by.
//! A batch that cannot be written is kept and written with the next one. Rows older
//! than the retention are dropped once an hour.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use super::ledger::{HourCounts, HourRow, LedgerWriter, LicensesSeen, DAY, HOUR, NO_FEATURE};
use crate::database::DatabaseError;
use crate::metrics::UNKNOWN_TENANT;
use crate::tenants::TenantEntry;
use crate::throttle::LogThrottle;

/// Events queued at most (a few times what a busy gateway decides in 100 ms).
pub const QUEUE_EVENTS: usize = 16_384;
/// How long the thread lets events gather while they come.
const GATHER: Duration = Duration::from_millis(5);
/// The longest the thread sleeps while nothing comes.
const IDLE: Duration = Duration::from_millis(100);
/// How often old rows are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// One decided request, as the ledger counts it.
#[derive(Debug)]
pub struct UsageEvent {
    /// The tenant's entry (`None`: a tenant without a license, counted as `_unknown`).
    pub tenant: Option<Arc<TenantEntry>>,
    /// The feature the path needs (`None`: outside the feature map).
    pub feature: Option<Arc<str>>,
    /// The error code of an enforced refusal (`None`: forwarded).
    pub refused: Option<&'static str>,
    /// Whether a quota refused it (429).
    pub limited: bool,
    /// The tenant's requests in progress when it began (this one included).
    pub concurrency: u32,
}

/// The recorder's settings.
#[derive(Debug, Clone, Copy)]
pub struct RecorderSettings {
    /// Writes at least this often.
    pub interval: Duration,
    /// Rows are kept this many days.
    pub retention_days: u32,
}

struct Shared {
    queue: ArrayQueue<UsageEvent>,
    idle: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

/// The ledger's queue and recorder thread.
pub struct UsageRecorder {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder")
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

impl UsageRecorder {
    /// Opens the ledger of the store at `store_dir` and starts the recorder thread.
    pub fn start(
        store_dir: &Path,
        settings: RecorderSettings,
    ) -> Result<UsageRecorder, DatabaseError> {
        let writer = LedgerWriter::open(store_dir)?;
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(QUEUE_EVENTS),
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let running = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("licgate-usage".into())
            .spawn(move || {
                let _ = running.thread.set(std::thread::current());
                Recorder::new(writer, settings).run(&running);
            })
            .map_err(|source| DatabaseError::Io {
                path: store_dir.to_path_buf(),
                source,
            })?;
        Ok(UsageRecorder {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event` (waiting for room when the queue is full).
    #[inline]
    pub fn record(&self, mut event: UsageEvent) {
        let shared = &*self.shared;
        loop {
            match shared.queue.push(event) {
                Ok(()) => break,
                Err(back) => {
                    event = back;
                    self.wake();
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        if shared.idle.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// Events queued and not yet taken by the recorder thread.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    fn wake(&self) {
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }

    /// Writes everything queued and stops the thread (at shutdown, after the drain).
    pub fn finish(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for UsageRecorder {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The recorder thread's state: the sums not yet written.
struct Recorder {
    writer: LedgerWriter,
    settings: RecorderSettings,
    sums: HashMap<(Arc<str>, Arc<str>, i64), HourCounts, Hasher>,
    licenses_new: Vec<LicensesSeen>,
    unknown: Arc<str>,
    no_feature: Arc<str>,
    errors: LogThrottle,
    rows: Vec<HourRow>,
}

impl Recorder {
    fn new(writer: LedgerWriter, settings: RecorderSettings) -> Recorder {
        Recorder {
            writer,
            settings,
            sums: HashMap::default(),
            licenses_new: Vec::new(),
            unknown: Arc::from(UNKNOWN_TENANT),
            no_feature: Arc::from(NO_FEATURE),
            errors: LogThrottle::new(Duration::from_secs(60)),
            rows: Vec::new(),
        }
    }

    fn run(&mut self, shared: &Shared) {
        let mut last_write = Instant::now();
        let mut last_prune: Option<Instant> = None;
        loop {
            let stopping = shared.stop.load(Ordering::SeqCst);
            let mut taken = 0usize;
            let now = crate::quota::clock::now();
            while let Some(event) = shared.queue.pop() {
                self.add(event, now);
                taken += 1;
            }
            if stopping || last_write.elapsed() >= self.settings.interval {
                self.write(stopping);
                last_write = Instant::now();
            }
            if stopping {
                return;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune(now);
                last_prune = Some(Instant::now());
            }
            if taken > 0 {
                std::thread::sleep(GATHER);
                continue;
            }
            shared.idle.store(true, Ordering::SeqCst);
            if shared.queue.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                let until_write = self.settings.interval.saturating_sub(last_write.elapsed());
                std::thread::park_timeout(until_write.min(IDLE));
            }
            shared.idle.store(false, Ordering::SeqCst);
        }
    }

    /// Adds `event`, decided at `now`.
    fn add(&mut self, event: UsageEvent, now: i64) {
        let hour = now.div_euclid(HOUR);
        let tenant = match &event.tenant {
            Some(entry) => {
                let license = entry.license();
                let day = now.div_euclid(DAY);
                // Once a day per entry (a new license makes a new entry).
                let today = u32::try_from(day).unwrap_or(0);
                if entry.ledger_day.swap(today, Ordering::Relaxed) != today {
                    self.licenses_new.push(LicensesSeen {
                        tenant: Arc::clone(&license.tenant),
                        day,
                        license_ids: license.license_ids.join(","),
                    });
                }
                Arc::clone(&license.tenant)
            }
            None => Arc::clone(&self.unknown),
        };
        let feature = event
            .feature
            .unwrap_or_else(|| Arc::clone(&self.no_feature));
        let counts = self.sums.entry((tenant, feature, hour)).or_default();
        match event.refused {
            None => counts.allowed += 1,
            Some(code) => {
                counts.refuse(code, 1);
                if event.limited {
                    counts.limited += 1;
                }
            }
        }
        counts.peak = counts.peak.max(u64::from(event.concurrency));
    }

    /// Writes the sums; they are dropped once written, kept for the next try if not.
    fn write(&mut self, last: bool) {
        if self.sums.is_empty() && self.licenses_new.is_empty() {
            return;
        }
        self.rows.clear();
        self.rows.extend(
            self.sums
                .iter()
                .map(|((tenant, feature, hour), counts)| HourRow {
                    tenant: Arc::clone(tenant),
                    feature: Arc::clone(feature),
                    hour: *hour,
                    counts: counts.clone(),
                }),
        );
        match self.writer.save(&self.rows, &self.licenses_new) {
            Ok(()) => {
                self.sums.clear();
                self.licenses_new.clear();
                if self.sums.capacity() > 4 * ROWS_KEPT {
                    self.sums.shrink_to(ROWS_KEPT);
                }
                self.rows.clear();
                self.rows.shrink_to(ROWS_KEPT);
                self.licenses_new.shrink_to(ROWS_KEPT);
            }
            Err(e) => {
                if last || self.errors.permit().is_some() {
                    tracing::error!(
                        error = %e,
                        rows = self.rows.len(),
                        "cannot write the usage ledger; keeping the counts and retrying every second"
                    );
                }
            }
        }
    }

    /// Drops rows older than the retention.
    fn prune(&mut self, now: i64) {
        let keep_days = i64::from(self.settings.retention_days);
        let first_hour = (now.div_euclid(DAY) - keep_days) * (DAY / HOUR);
        match self.writer.prune(first_hour) {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(
                rows = dropped,
                retention_days = keep_days,
                "usage ledger rows past the retention dropped"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot drop old usage ledger rows"),
        }
    }
}

/// The sums' hasher (keys are tenant and feature names the gateway knows).
type Hasher = foldhash::fast::RandomState;

/// Rows the recorder's buffers keep room for between writes.
const ROWS_KEPT: usize = 4_096;
