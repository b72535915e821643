//! Keeps the license snapshot current: loads the store, verifies every token,
//! combines licenses per tenant, and publishes a new snapshot when files change, when
//! something is installed or revoked, and exactly when some status threshold passes.
//!
//! A change costs what changed: a rescan verifies only new or changed files, an
//! install or a revocation touches only its license (no rescan), and a new snapshot
//! rebuilds only the tenants whose licenses, problems or status changed, sharing the
//! rest with the snapshot before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::claims::{Claims, UnixTime};
use super::clock::{Clock, RollbackGuard};
use super::kept::{Kept, LicenseSet};
use super::snapshot::{LicenseSnapshot, Names, TenantMap, TenantSummary};
use super::status::{combine, StatusPolicy};
use super::store::{Fingerprint, Listing, ScannedFile, Store, StoreError, StoreProblem};
use super::verify::{unverified_claims, Rejection, Verifier};
use crate::background::Periodic;
use crate::throttle::LogThrottle;
use pingora::services::background::GenBackgroundService;

/// From this many license files, a reload gives the memory it freed back at once.
const BULK: usize = 1024;

/// The high-water mark is persisted when it has moved this far.
const PERSIST_HIGH_WATER_EVERY: i64 = 60;

/// Everything the manager needs besides the store and the clock.
#[derive(Debug, Clone)]
pub struct LicenseSettings {
    pub verifier: Verifier,
    pub policy: StatusPolicy,
    /// How far back the clock may go before the rollback defence steps in.
    pub rollback_tolerance_secs: i64,
}

/// Why a license could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("another license file already uses the license id {0}; remove it first")]
    DuplicateId(String),
    /// The license is for another tenant than the one it is installed for.
    #[error("the license is for tenant \"{license}\", not \"{expected}\"")]
    TenantMismatch { license: String, expected: String },
}

/// A license just installed: its id and its tenant's new summary.
#[derive(Debug)]
pub struct Installed {
    pub jti: String,
    pub summary: TenantSummary,
}

#[derive(Debug, Default)]
struct State {
    /// The store as last read; `None` after an install, revocation or removal, so
    /// the next refresh reads it again (and finds that nothing else changed).
    fingerprint: Option<Fingerprint>,
    /// Verified licenses, one per license id.
    licenses: LicenseSet,
    problems: Vec<StoreProblem>,
    /// Feature and tier names shared by the summaries of every snapshot.
    names: Names,
    revoked: HashSet<String>,
    /// Licenses the license server suspended (refused until reinstated).
    suspended: HashSet<String>,
    /// Warnings set from outside the store (the license server unreachable), shown
    /// first among a tenant's warnings.
    notices: HashMap<Box<str>, String>,
    persisted_high_water: UnixTime,
    last_reload: ReloadCounts,
}

/// What the last reading of the store did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Tokens verified (new or changed files, or every file after a settings change).
    pub verified: usize,
    /// Files unchanged since they were verified, kept without verifying again.
    pub unchanged: usize,
    /// Files left out because an earlier file (by name) has the same license id.
    pub duplicates: usize,
    /// Files that could not be read or verified.
    pub skipped: usize,
}

/// What a reading of the store changed.
#[derive(Debug)]
enum Changes {
    /// Every tenant may have changed (the verification settings changed).
    All,
    /// These tenants' licenses or problems changed; `problems` says whether the list
    /// of problems did.
    Tenants {
        tenants: BTreeSet<Box<str>>,
        problems: bool,
    },
}

impl Changes {
    fn none() -> Changes {
        Changes::Tenants {
            tenants: BTreeSet::new(),
            problems: false,
        }
    }

    fn of<'a>(tenants: impl IntoIterator<Item = &'a str>) -> Changes {
        Changes::Tenants {
            tenants: tenants.into_iter().map(Box::from).collect(),
            problems: false,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Changes::Tenants { tenants, problems: false } if tenants.is_empty())
    }
}

/// Which stored files a reload verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Only files that are new or changed since they were last verified.
    Changed,
    /// Every file (the verification settings changed).
    All,
}

/// Owns the license store and publishes [`LicenseSnapshot`]s.
pub struct LicenseManager {
    /// Replaced by [`LicenseManager::reconfigure`] on a configuration reload.
    settings: ArcSwap<LicenseSettings>,
    store: Store,
    clock: Arc<dyn Clock>,
    guard: RollbackGuard,
    snapshot: ArcSwap<LicenseSnapshot>,
    state: Mutex<State>,
    rollback_log: LogThrottle,
    /// Called with every snapshot published (see [`LicenseManager::subscribe`]).
    subscribers: Mutex<Vec<Subscriber>>,
}

/// A function told about every snapshot the manager publishes.
pub type Subscriber = Box<dyn Fn(&Arc<LicenseSnapshot>) + Send + Sync>;

impl LicenseManager {
    /// Loads `store` and builds the first snapshot.
    pub fn new(settings: LicenseSettings, store: Store, clock: Arc<dyn Clock>) -> LicenseManager {
        let high_water = store.clock_high_water();
        let manager = LicenseManager {
            guard: RollbackGuard::new(high_water, settings.rollback_tolerance_secs),
            settings: ArcSwap::from_pointee(settings),
            store,
            clock,
            snapshot: ArcSwap::from_pointee(LicenseSnapshot::default()),
            state: Mutex::new(State {
                persisted_high_water: high_water,
                ..State::default()
            }),
            rollback_log: LogThrottle::new(Duration::from_secs(60)),
            subscribers: Mutex::new(Vec::new()),
        };
        manager.refresh();
        manager
    }

    /// The time licenses are judged at (the clock, unless it was turned back).
    pub fn now(&self) -> UnixTime {
        let judged = self.guard.judge(self.clock.now());
        if let Some(back) = judged.rolled_back_by {
            if self.rollback_log.permit().is_some() {
                tracing::warn!(
                    seconds_back = back,
                    judged_at = %super::time_text(judged.now),
                    "the system clock went back; licenses are judged at the latest time seen"
                );
            }
        }
        judged.now
    }

    /// Calls `subscriber` with the current snapshot now and with every snapshot
    /// published from now on, in order, before the publishing call returns (so what
    /// it builds from a snapshot is in place when an install or a refresh returns).
    pub fn subscribe(&self, subscriber: Subscriber) {
        let _state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        subscriber(&self.snapshot.load_full());
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(subscriber);
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<LicenseSnapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned handle.
    pub fn snapshot_arc(&self) -> Arc<LicenseSnapshot> {
        self.snapshot.load_full()
    }

    /// What the last reading of the store did.
    pub fn last_reload(&self) -> ReloadCounts {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_reload
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The verification settings in force.
    pub fn settings(&self) -> Arc<LicenseSettings> {
        self.settings.load_full()
    }

    /// Replaces the verification settings (keys, issuer, instance binding, status
    /// thresholds), verifies every stored license again and publishes the result.
    pub fn reconfigure(&self, settings: LicenseSettings) {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.settings.store(Arc::new(settings));
        let changes = self.reload(&mut state, Verify::All, self.store.listing());
        self.publish(&mut state, changes, now);
    }

    /// Re-reads the store if it changed, and publishes a snapshot if a tenant's
    /// licenses changed or a status threshold has passed. Returns whether one was.
    pub fn refresh(&self) -> bool {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::none();
        // One listing tells whether the store changed and, if so, is the scan's.
        let listing = self.store.listing();
        if state.fingerprint != Some(listing.fingerprint) {
            changes = self.reload(&mut state, Verify::Changed, listing);
        }
        if let Changes::Tenants { tenants, .. } = &mut changes {
            let snapshot = self.snapshot.load();
            if snapshot.next_change.is_some_and(|t| now >= t) {
                tenants.extend(snapshot.due(now).iter().map(|t| Box::from(&**t)));
            }
        }
        let published = self.publish(&mut state, changes, now).is_some();
        let high_water = self.guard.high_water();
        if high_water - state.persisted_high_water >= PERSIST_HIGH_WATER_EVERY {
            match self.store.save_clock_high_water(high_water) {
                Ok(()) => state.persisted_high_water = high_water,
                Err(e) => tracing::warn!(error = %e, "cannot persist the clock high-water mark"),
            }
        }
        published
    }

    /// Verifies `token` for installation now, persists it, and publishes a snapshot
    /// that includes it. Returns the tenant's new summary.
    pub fn install(&self, token: &str) -> Result<TenantSummary, InstallError> {
        self.install_checked(token, None)
            .map(|installed| installed.summary)
    }

    /// [`install`](Self::install), telling the license id as well.
    pub fn install_any(&self, token: &str) -> Result<Installed, InstallError> {
        self.install_checked(token, None)
    }

    /// [`install`](Self::install), for `tenant` only: a license for another tenant is
    /// refused with [`InstallError::TenantMismatch`] (verified once, nothing written).
    pub fn install_for(&self, token: &str, tenant: &str) -> Result<Installed, InstallError> {
        self.install_checked(token, Some(tenant))
    }

    /// Verifies and writes the license, then changes the kept licenses and the
    /// snapshot for its tenant only (the store is not read again).
    fn install_checked(
        &self,
        token: &str,
        tenant: Option<&str>,
    ) -> Result<Installed, InstallError> {
        let now = self.now();
        let settings = self.settings.load();
        let license = settings
            .verifier
            .verify_for_install(token, now, &settings.policy)?;
        let claims = &license.claims;
        if let Some(expected) = tenant.filter(|t| *t != claims.tenant) {
            return Err(InstallError::TenantMismatch {
                license: claims.tenant.clone(),
                expected: expected.to_string(),
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.revoked.contains(&claims.jti) {
            return Err(Rejection::Revoked(claims.jti.clone()).into());
        }
        let same_id = state
            .licenses
            .with_jti(&claims.jti)
            .map(|k| (k.tenant() == claims.tenant, k.file.clone()));
        if let Some((false, _)) = same_id {
            return Err(InstallError::DuplicateId(claims.jti.clone()));
        }
        let path = self.store.install(&claims.tenant, &claims.jti, token)?;
        state.fingerprint = None;
        let file: Box<OsStr> = path.file_name().unwrap_or_default().into();
        // As a rescan would: of two files with one license id, the first by name counts.
        let counts = match same_id {
            Some((_, ref other)) if *other != file => *file < **other,
            _ => true,
        };
        let mut touched = vec![claims.tenant.clone()];
        if counts {
            if let Some((_, other)) = same_id.filter(|(_, other)| *other != file) {
                state.licenses.remove(&other);
            }
            let stamp = self.store.stamp(&path)?;
            if let Some(old) = state
                .licenses
                .insert(Kept::new(file, stamp, license.claims.clone()))
            {
                touched.push(old.tenant().to_string());
            }
        }
        let snapshot = self
            .publish(
                &mut state,
                Changes::of(touched.iter().map(String::as_str)),
                now,
            )
            .unwrap_or_else(|| self.snapshot.load_full());
        tracing::info!(
            tenant = %claims.tenant,
            jti = %claims.jti,
            tier = claims.tier.as_deref().unwrap_or(""),
            "license installed"
        );
        let summary = snapshot
            .tenant(&claims.tenant)
            .cloned()
            .ok_or_else(|| InstallError::DuplicateId(claims.jti.clone()))?;
        Ok(Installed {
            jti: claims.jti.clone(),
            summary,
        })
    }

    /// Revokes license `jti` (persisted) and publishes a snapshot without it.
    pub fn revoke(&self, jti: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.store.revoke(jti, now)?;
        state.fingerprint = None;
        state.revoked.insert(jti.to_string());
        let tenant = state.licenses.with_jti(jti).map(|k| k.tenant().to_string());
        self.publish(&mut state, Changes::of(tenant.as_deref()), now);
        tracing::info!(jti, "license revoked");
        Ok(())
    }

    /// Suspends (`true`) or reinstates license `jti` (persisted) and publishes its
    /// tenant's new summary: a suspended license grants nothing (`SUSPENDED`).
    pub fn set_suspended(&self, jti: &str, suspended: bool) -> Result<(), StoreError> {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Most calls (every heartbeat of an active license) change nothing.
        if state.suspended.contains(jti) == suspended
            || !self.store.set_suspended(jti, suspended, now)?
        {
            return Ok(());
        }
        state.fingerprint = None;
        if suspended {
            state.suspended.insert(jti.to_string());
        } else {
            state.suspended.remove(jti);
        }
        let tenant = state.licenses.with_jti(jti).map(|k| k.tenant().to_string());
        self.publish(&mut state, Changes::of(tenant.as_deref()), now);
        tracing::info!(jti, suspended, "license suspension changed");
        Ok(())
    }

    /// Sets (or, `None`, clears) the notice shown first among `tenant`'s warnings
    /// (`X-Licgate-Warning`); publishes (and returns `true`) only when it changed.
    pub fn set_notice(&self, tenant: &str, notice: Option<String>) -> bool {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match notice {
            Some(text) => state.notices.insert(Box::from(tenant), text.clone()) != Some(text),
            None => state.notices.remove(tenant).is_some(),
        };
        if changed {
            self.publish(&mut state, Changes::of([tenant]), now);
        }
        changed
    }

    /// Takes `time` (a time the license server signed, in answer to a fresh nonce) as
    /// a trusted sample for the clock-rollback defence: licenses are never judged
    /// before it.
    pub fn observe_trusted_time(&self, time: UnixTime) {
        self.guard.observe(time);
    }

    /// Whether license `jti` is revoked here.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revoked
            .contains(jti)
    }

    /// Removes the files of license `jti` of `tenant`; `false` when there were none.
    pub fn remove(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<Box<OsStr>> = state
            .licenses
            .of_tenant(tenant)
            .filter(|l| l.jti() == jti)
            .map(|l| l.file.clone())
            .collect();
        for file in &doomed {
            self.store
                .remove(&self.store.licenses_dir().join(&**file))?;
            state.fingerprint = None;
            state.licenses.remove(file);
        }
        self.publish(&mut state, Changes::of([tenant]), now);
        Ok(!doomed.is_empty())
    }

    /// Reads revocations and the license files, verifying each token that is new or
    /// changed (every token with [`Verify::All`]), and tells which tenants changed.
    /// The store's fingerprint is taken as it is listed, before anything is read, so
    /// a change made while reading is seen by the next refresh.
    /// Problems are logged once per reload and kept for the snapshot; none is fatal.
    fn reload(&self, state: &mut State, verify: Verify, listing: Listing) -> Changes {
        let suspended_before = std::mem::take(&mut state.suspended);
        state.suspended = match self.store.suspensions() {
            Ok(list) => list.into_iter().map(|s| s.jti).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read suspensions; keeping the previous list");
                suspended_before.clone()
            }
        };
        let revoked_before = std::mem::take(&mut state.revoked);
        state.revoked = match self.store.revocations() {
            Ok(list) => list.into_iter().map(|r| r.jti).collect(),
            // Keep the revocations known so far: a damaged list must not un-revoke.
            Err(e) => {
                tracing::error!(error = %e, "cannot read revocations; keeping the previous list");
                revoked_before.clone()
            }
        };
        let previous = state.licenses.take();
        let known_at = |name: &OsStr| {
            previous
                .binary_search_by(|k| k.file.as_ref().cmp(name))
                .ok()
        };
        let (files, mut problems, fingerprint) = self.store.scan_listed(listing, |name, stamp| {
            verify == Verify::Changed && known_at(name).is_some_and(|i| previous[i].stamp == stamp)
        });
        state.fingerprint = Some(fingerprint);
        let settings = self.settings.load();
        let verified = verify_all(&settings.verifier, files);
        if verified.len() >= BULK {
            // What the verifying threads allocated and freed, given back now.
            crate::memory::release_unused();
        }
        let mut counts = ReloadCounts::default();
        let mut changed: BTreeSet<Box<str>> = BTreeSet::new();
        // Both lists are in file-name order: known files are moved over in one pass;
        // a previous file not moved over is gone or changed, and so is its tenant.
        let mut previous = previous.into_iter().peekable();
        // Exact capacity: with 100k licenses, doubling growth would leave ~30% unused.
        // Each with whether it was verified now (a file that is new or changed).
        let mut licenses: Vec<(Kept, bool)> = Vec::with_capacity(verified.len());
        for file in verified {
            match file {
                Checked::Known(name) => {
                    while let Some(kept) = previous.next_if(|k| *k.file < *name) {
                        changed.insert(kept.tenant().into());
                    }
                    if let Some(kept) = previous.next_if(|k| *k.file == *name) {
                        counts.unchanged += 1;
                        licenses.push((kept, false));
                    }
                }
                Checked::Verified(kept) => {
                    counts.verified += 1;
                    licenses.push((kept, true));
                }
                Checked::Rejected(problem) => problems.push(problem),
            }
        }
        for kept in previous {
            changed.insert(kept.tenant().into());
        }
        // A kept license dropped now changes its tenant; a new file dropped changes
        // nothing (a duplicate is never kept, so it is verified again each time).
        counts.duplicates = drop_duplicate_ids(&mut licenses, |(dropped, fresh)| {
            if !fresh {
                changed.insert(dropped.tenant().into());
            }
        });
        let licenses: Vec<Kept> = licenses
            .into_iter()
            .map(|(kept, fresh)| {
                if !fresh {
                    return kept;
                }
                changed.insert(kept.tenant().into());
                kept
            })
            .collect();
        counts.skipped = problems.len();
        for problem in &problems {
            tracing::warn!(
                file = %problem.path.display(),
                reason = %problem.reason,
                "license file skipped"
            );
        }
        tracing::info!(
            licenses = licenses.len(),
            verified = counts.verified,
            unchanged = counts.unchanged,
            duplicates = counts.duplicates,
            skipped = counts.skipped,
            revoked = state.revoked.len(),
            "license store loaded"
        );
        state.licenses = LicenseSet::new(licenses);
        for jti in state
            .revoked
            .symmetric_difference(&revoked_before)
            .chain(state.suspended.symmetric_difference(&suspended_before))
        {
            if let Some(kept) = state.licenses.with_jti(jti) {
                changed.insert(kept.tenant().into());
            }
        }
        let problems_changed = problems != state.problems;
        if problems_changed {
            let claimed = |list: &[StoreProblem]| -> BTreeMap<Box<str>, usize> {
                let mut counts = BTreeMap::new();
                for t in list.iter().filter_map(|p| p.claimed_tenant.as_deref()) {
                    *counts.entry(Box::from(t)).or_default() += 1;
                }
                counts
            };
            let (before, after) = (claimed(&state.problems), claimed(&problems));
            for (tenant, _) in before.iter().chain(&after) {
                if before.get(tenant) != after.get(tenant) {
                    changed.insert(tenant.clone());
                }
            }
        }
        state.problems = problems;
        state.last_reload = counts;
        match verify {
            Verify::All => Changes::All,
            Verify::Changed => Changes::Tenants {
                tenants: changed,
                problems: problems_changed,
            },
        }
    }

    /// Builds and swaps in the snapshot for `changes` at `now`, and tells the
    /// subscribers; `None` (and nothing published) when nothing changed.
    fn publish(
        &self,
        state: &mut State,
        changes: Changes,
        now: UnixTime,
    ) -> Option<Arc<LicenseSnapshot>> {
        if changes.is_empty() {
            return None;
        }
        let settings = self.settings.load();
        let full = matches!(changes, Changes::All);
        let snapshot = Arc::new(match changes {
            Changes::All => {
                state.names = Names::default();
                let State {
                    licenses,
                    problems,
                    revoked,
                    suspended,
                    notices,
                    names,
                    ..
                } = &mut *state;
                let tenants = tenant_map(
                    licenses
                        .tenants()
                        .map(|(tenant, kept)| (tenant, parsed(tenant, kept))),
                    problems,
                    &Overlay {
                        revoked,
                        suspended,
                        notices,
                    },
                    &settings.policy,
                    now,
                    names,
                );
                LicenseSnapshot::new(
                    settings.verifier.instance_id().to_string(),
                    tenants,
                    now,
                    problems.clone(),
                )
            }
            Changes::Tenants { tenants, .. } => {
                let summaries = tenants
                    .iter()
                    .map(|tenant| {
                        let summary =
                            summary_of(state, tenant, &settings.policy, now).map(Arc::new);
                        (Arc::from(&**tenant), summary)
                    })
                    .collect();
                self.snapshot
                    .load()
                    .with_changes(summaries, state.problems.clone(), now)
            }
        });
        self.snapshot.store(Arc::clone(&snapshot));
        for subscriber in self
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            subscriber(&snapshot);
        }
        // A full rebuild frees a whole snapshot's worth; a few tenants, next to nothing.
        if full {
            crate::memory::release_unused();
        }
        Some(snapshot)
    }

    /// The background job that runs [`LicenseManager::refresh`] every
    /// `scan_interval`, and exactly when the next status threshold passes.
    pub fn refresher(self: &Arc<Self>, scan_interval: Duration) -> GenBackgroundService<Periodic> {
        let (waits, works) = (Arc::clone(self), Arc::clone(self));
        Periodic::service(
            "license refresher",
            move || {
                waits
                    .snapshot
                    .load()
                    .next_change
                    .map(until)
                    .map_or(scan_interval, |d| d.min(scan_interval))
            },
            move || {
                works.refresh();
            },
        )
    }
}

/// A scanned file after verification.
enum Checked {
    /// Unchanged since it was verified: kept as it was.
    Known(std::ffi::OsString),
    Verified(Kept),
    Rejected(StoreProblem),
}

/// Reads and verifies the changed files, on every core (in chunks of consecutive
/// files, so the result keeps the files' order).
fn verify_all(verifier: &Verifier, files: Vec<ScannedFile>) -> Vec<Checked> {
    let to_verify = files
        .iter()
        .filter(|f| matches!(f, ScannedFile::Changed(_)))
        .count();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below a few hundred signatures, threads cost more than they save.
    if threads < 2 || to_verify < 256 {
        return check_files(verifier, files);
    }
    let chunk = files.len().div_ceil(threads);
    let mut chunks: Vec<Vec<ScannedFile>> = Vec::with_capacity(threads);
    let mut files = files.into_iter();
    loop {
        let part: Vec<ScannedFile> = files.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = chunks
            .into_iter()
            .map(|part| scope.spawn(move || check_files(verifier, part)))
            .collect();
        running
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Reads the changed files of `files` and verifies their tokens together
/// ([`Verifier::verify_many`]); the result is in the order of `files`.
fn check_files(verifier: &Verifier, files: Vec<ScannedFile>) -> Vec<Checked> {
    let mut checked: Vec<Checked> = Vec::with_capacity(files.len());
    let mut stored = Vec::new();
    for file in files {
        match file {
            ScannedFile::Known(name) => checked.push(Checked::Known(name)),
            ScannedFile::Changed(listed) => match listed.read() {
                Ok(token) => {
                    // A placeholder, replaced once the token is verified.
                    checked.push(Checked::Known(Default::default()));
                    stored.push((checked.len() - 1, token));
                }
                Err(problem) => checked.push(Checked::Rejected(problem)),
            },
        }
    }
    let tokens: Vec<&str> = stored.iter().map(|(_, s)| s.token.as_str()).collect();
    let results = verifier.verify_many(&tokens);
    for ((at, stored), result) in stored.into_iter().zip(results) {
        checked[at] = match result {
            Ok(license) => {
                let name = stored.path.file_name().unwrap_or_default();
                Checked::Verified(Kept::new(name.into(), stored.stamp, license.claims))
            }
            Err(rejection) => Checked::Rejected(StoreProblem {
                claimed_tenant: unverified_claims(&stored.token)
                    .and_then(|(_, c)| c.get("tenant")?.as_str().map(str::to_string)),
                path: stored.path,
                reason: rejection.to_string(),
            }),
        };
    }
    checked
}

/// Wall-clock time from now until the start of second `t` (plus a millisecond so the
/// second has begun when the sleeper wakes).
fn until(t: UnixTime) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(t.max(0) as u64)
        .saturating_sub(now)
        .saturating_add(Duration::from_millis(1))
}

/// The snapshot of `licenses` at `now`: one summary per tenant with a license file.
pub fn build_snapshot(
    instance_id: &str,
    licenses: &[impl AsRef<Claims>],
    problems: &[StoreProblem],
    revoked: &HashSet<String>,
    policy: &StatusPolicy,
    now: UnixTime,
) -> LicenseSnapshot {
    let mut by_tenant: BTreeMap<&str, Vec<&Claims>> = BTreeMap::new();
    for license in licenses {
        let claims = license.as_ref();
        by_tenant
            .entry(claims.tenant.as_str())
            .or_default()
            .push(claims);
    }
    let tenants = tenant_map(
        by_tenant.into_iter(),
        problems,
        &Overlay {
            revoked,
            suspended: &HashSet::new(),
            notices: &HashMap::new(),
        },
        policy,
        now,
        &mut Names::default(),
    );
    LicenseSnapshot::new(instance_id.to_string(), tenants, now, problems.to_vec())
}

/// What changes summaries besides the licenses: revocations, suspensions, notices.
struct Overlay<'a> {
    revoked: &'a HashSet<String>,
    suspended: &'a HashSet<String>,
    notices: &'a HashMap<Box<str>, String>,
}

impl Overlay<'_> {
    /// The summary of `tenant` from its licenses' `claims` (and `invalid` files).
    fn summary<C: AsRef<Claims>>(
        &self,
        tenant: Arc<str>,
        claims: &[C],
        invalid: usize,
        policy: &StatusPolicy,
        now: UnixTime,
        names: &mut Names,
    ) -> TenantSummary {
        let combined = combine(claims, invalid, self.revoked, self.suspended, policy, now);
        let notice = self.notices.get(&*tenant).cloned();
        let mut summary = TenantSummary::build(tenant, combined, names);
        if let Some(notice) = notice {
            summary.warnings.insert(0, notice);
        }
        summary
    }
}

/// The summaries of `groups` (each tenant once, with its licenses' claims) and of
/// the tenants that only have unverifiable files in `problems`.
fn tenant_map<'a, C: AsRef<Claims>>(
    groups: impl Iterator<Item = (&'a str, Vec<C>)>,
    problems: &'a [StoreProblem],
    overlay: &Overlay<'_>,
    policy: &StatusPolicy,
    now: UnixTime,
    names: &mut Names,
) -> TenantMap {
    let mut invalid: HashMap<&str, usize> = HashMap::new();
    for p in problems {
        if let Some(t) = &p.claimed_tenant {
            *invalid.entry(t.as_str()).or_default() += 1;
        }
    }
    let mut summaries: Vec<(Arc<str>, Arc<TenantSummary>)> = Vec::new();
    let mut add = |tenant: &str, claims: &[C], invalid_count: usize| {
        let name: Arc<str> = Arc::from(tenant);
        let summary = overlay.summary(Arc::clone(&name), claims, invalid_count, policy, now, names);
        summaries.push((name, Arc::new(summary)));
    };
    for (tenant, claims) in groups {
        let invalid_count = invalid.remove(tenant).unwrap_or(0);
        add(tenant, &claims, invalid_count);
    }
    // Tenants whose only files could not be verified.
    for (tenant, invalid_count) in invalid {
        add(tenant, &[], invalid_count);
    }
    TenantMap::build(summaries)
}

/// The claims of `kept`, the licenses of `tenant` (an unreadable one is logged and
/// left out).
fn parsed(
    tenant: &str,
    kept: impl IntoIterator<Item = impl std::ops::Deref<Target = Kept>>,
) -> Vec<Claims> {
    kept.into_iter()
        .filter_map(|k| match k.claims() {
            Ok(claims) => Some(claims),
            Err(e) => {
                tracing::error!(tenant, error = %e, "kept license claims unreadable");
                None
            }
        })
        .collect()
}

/// The summary of `tenant` from the kept licenses and problems of `state` at `now`;
/// `None` when it has no license file at all.
fn summary_of(
    state: &mut State,
    tenant: &str,
    policy: &StatusPolicy,
    now: UnixTime,
) -> Option<TenantSummary> {
    let claims = parsed(tenant, state.licenses.of_tenant(tenant));
    let invalid = state
        .problems
        .iter()
        .filter(|p| p.claimed_tenant.as_deref() == Some(tenant))
        .count();
    if claims.is_empty() && invalid == 0 && state.licenses.of_tenant(tenant).next().is_none() {
        return None;
    }
    let overlay = Overlay {
        revoked: &state.revoked,
        suspended: &state.suspended,
        notices: &state.notices,
    };
    Some(overlay.summary(
        Arc::from(tenant),
        &claims,
        invalid,
        policy,
        now,
        &mut state.names,
    ))
}

/// Keeps the first license (in file-name order) of each license id; returns how
/// many were dropped, each told to `dropped` first.
fn drop_duplicate_ids<T: AsRef<Kept>>(licenses: &mut Vec<T>, mut dropped: impl FnMut(&T)) -> usize {
    let jti = |i: u32| licenses[i as usize].as_ref().jti();
    let mut by_id: Vec<u32> = (0..licenses.len() as u32).collect();
    by_id.sort_by(|&a, &b| jti(a).cmp(jti(b)).then(a.cmp(&b)));
    let mut keep = vec![true; licenses.len()];
    for pair in by_id.windows(2) {
        if jti(pair[0]) == jti(pair[1]) {
            keep[pair[1] as usize] = false;
        }
    }
    let before = licenses.len();
    let mut keep = keep.into_iter();
    licenses.retain(|kept| {
        let keep = keep.next().unwrap_or(true);
        if !keep {
            dropped(kept);
        }
        keep
    });
    before - licenses.len()
}
