//! Keeps the license snapshot current: loads the store, verifies every token,
//! combines licenses per tenant, and rebuilds the snapshot when files change, when
//! something is installed or revoked, and exactly when some status threshold passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::claims::{Claims, UnixTime};
use super::clock::{Clock, RollbackGuard};
use super::snapshot::{LicenseSnapshot, TenantSummary};
use super::status::{combine, StatusPolicy};
use super::store::{FileStamp, Fingerprint, ScannedFile, Store, StoreError, StoreProblem};
use super::verify::{unverified_claims, Rejection, Verifier};
use crate::background::Periodic;
use crate::throttle::LogThrottle;
use pingora::services::background::GenBackgroundService;

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

/// A verified license as the manager keeps it between snapshot rebuilds: its file,
/// and the claims that decide status and grants as compact JSON, parsed again one
/// tenant at a time when a snapshot is built. About half the memory of parsed claims
/// (with 100,000 tenants that is some 35 MB).
#[derive(Debug)]
struct Kept {
    /// The file's name in `licenses/`.
    file: Box<OsStr>,
    /// The file version that was verified.
    stamp: FileStamp,
    /// The tenant, the license id, then the claims JSON.
    text: Box<str>,
    /// Where the tenant and the license id end in `text`.
    tenant_end: u32,
    jti_end: u32,
}

impl Kept {
    /// Keeps `claims`, verified from version `stamp` of file `file`. The claims that
    /// only verification reads (`iss`, `sub`, `aud`) are left out.
    fn new(file: Box<OsStr>, stamp: FileStamp, claims: &Claims) -> Kept {
        let json = serde_json::to_string(&Claims {
            iss: None,
            sub: None,
            aud: Vec::new(),
            ..claims.clone()
        })
        .expect("claims serialize");
        let text = [claims.tenant.as_str(), &claims.jti, &json].concat();
        let tenant_end = claims.tenant.len();
        let jti_end = tenant_end + claims.jti.len();
        Kept {
            file,
            stamp,
            text: text.into_boxed_str(),
            tenant_end: u32::try_from(tenant_end).unwrap_or(u32::MAX),
            jti_end: u32::try_from(jti_end).unwrap_or(u32::MAX),
        }
    }

    fn tenant(&self) -> &str {
        &self.text[..self.tenant_end as usize]
    }

    fn jti(&self) -> &str {
        &self.text[self.tenant_end as usize..self.jti_end as usize]
    }

    /// The kept claims, parsed.
    fn claims(&self) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(&self.text[self.jti_end as usize..])
    }
}

#[derive(Debug, Default)]
struct State {
    fingerprint: Option<Fingerprint>,
    /// Verified licenses in file-name order, one per license id.
    licenses: Vec<Kept>,
    /// Indexes into `licenses` in tenant order.
    by_tenant: Vec<u32>,
    problems: Vec<StoreProblem>,
    revoked: HashSet<String>,
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
        self.reload(&mut state, Verify::All);
        state.fingerprint = Some(self.store.fingerprint());
        self.publish(&state, now);
    }

    /// Re-reads the store if it changed, and rebuilds the snapshot if anything changed
    /// or a status threshold has passed. Returns whether a new snapshot was published.
    pub fn refresh(&self) -> bool {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fingerprint = self.store.fingerprint();
        let changed = state.fingerprint.as_ref() != Some(&fingerprint);
        if changed {
            self.reload(&mut state, Verify::Changed);
            state.fingerprint = Some(fingerprint);
        }
        let due = self.snapshot.load().next_change.is_some_and(|t| now >= t);
        if changed || due {
            self.publish(&state, now);
        }
        let high_water = self.guard.high_water();
        if high_water - state.persisted_high_water >= PERSIST_HIGH_WATER_EVERY {
            match self.store.save_clock_high_water(high_water) {
                Ok(()) => state.persisted_high_water = high_water,
                Err(e) => tracing::warn!(error = %e, "cannot persist the clock high-water mark"),
            }
        }
        changed || due
    }

    /// Verifies `token` for installation now, persists it, and publishes a snapshot
    /// that includes it. Returns the tenant's new summary.
    pub fn install(&self, token: &str) -> Result<TenantSummary, InstallError> {
        self.install_checked(token, None)
            .map(|installed| installed.summary)
    }

    /// [`install`](Self::install), for `tenant` only: a license for another tenant is
    /// refused with [`InstallError::TenantMismatch`] (verified once, nothing written).
    pub fn install_for(&self, token: &str, tenant: &str) -> Result<Installed, InstallError> {
        self.install_checked(token, Some(tenant))
    }

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
        if state
            .licenses
            .iter()
            .any(|l| l.jti() == claims.jti && l.tenant() != claims.tenant)
        {
            return Err(InstallError::DuplicateId(claims.jti.clone()));
        }
        self.store.install(&claims.tenant, &claims.jti, token)?;
        self.reload(&mut state, Verify::Changed);
        state.fingerprint = Some(self.store.fingerprint());
        let snapshot = self.publish(&state, now);
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
        self.reload(&mut state, Verify::Changed);
        state.fingerprint = Some(self.store.fingerprint());
        self.publish(&state, now);
        tracing::info!(jti, "license revoked");
        Ok(())
    }

    /// Removes the files of license `jti` of `tenant`; `false` when there were none.
    pub fn remove(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<PathBuf> = state
            .licenses
            .iter()
            .filter(|l| l.tenant() == tenant && l.jti() == jti)
            .map(|l| self.store.licenses_dir().join(&*l.file))
            .collect();
        for path in &doomed {
            self.store.remove(path)?;
        }
        self.reload(&mut state, Verify::Changed);
        state.fingerprint = Some(self.store.fingerprint());
        self.publish(&state, now);
        Ok(!doomed.is_empty())
    }

    /// Reads revocations and the license files, verifying each token that is new or
    /// changed (every token with [`Verify::All`]). Problems are logged once per reload
    /// and kept for the snapshot; none is fatal.
    fn reload(&self, state: &mut State, verify: Verify) {
        match self.store.revocations() {
            Ok(list) => state.revoked = list.into_iter().map(|r| r.jti).collect(),
            // Keep the revocations known so far: a damaged list must not un-revoke.
            Err(e) => {
                tracing::error!(error = %e, "cannot read revocations; keeping the previous list")
            }
        }
        let previous = std::mem::take(&mut state.licenses);
        let known_at = |name: &OsStr| {
            previous
                .binary_search_by(|k| k.file.as_ref().cmp(name))
                .ok()
        };
        let (files, mut problems) = self.store.scan_changed(|name, stamp| {
            verify == Verify::Changed && known_at(name).is_some_and(|i| previous[i].stamp == stamp)
        });
        let settings = self.settings.load();
        let verified = verify_all(&settings.verifier, files);
        let mut counts = ReloadCounts::default();
        // Both lists are in file-name order: known files are moved over in one pass.
        let mut previous = previous.into_iter().peekable();
        // Exact capacity: with 100k licenses, doubling growth would leave ~30% unused.
        let mut licenses: Vec<Kept> = Vec::with_capacity(verified.len());
        for file in verified {
            match file {
                Checked::Known(name) => {
                    while previous.next_if(|k| *k.file < *name).is_some() {}
                    if let Some(kept) = previous.next_if(|k| *k.file == *name) {
                        counts.unchanged += 1;
                        licenses.push(kept);
                    }
                }
                Checked::Verified(kept) => {
                    counts.verified += 1;
                    licenses.push(kept);
                }
                Checked::Rejected(problem) => problems.push(problem),
            }
        }
        drop(previous);
        counts.duplicates = drop_duplicate_ids(&mut licenses);
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
        let mut by_tenant: Vec<u32> = (0..licenses.len() as u32).collect();
        by_tenant.sort_by(|&a, &b| {
            licenses[a as usize]
                .tenant()
                .cmp(licenses[b as usize].tenant())
        });
        state.licenses = licenses;
        state.by_tenant = by_tenant;
        state.problems = problems;
        state.last_reload = counts;
    }

    /// Builds and swaps in the snapshot for `state` at `now`.
    fn publish(&self, state: &State, now: UnixTime) -> Arc<LicenseSnapshot> {
        let settings = self.settings.load();
        let licenses = &state.licenses;
        let groups = state
            .by_tenant
            .chunk_by(|&a, &b| licenses[a as usize].tenant() == licenses[b as usize].tenant())
            .map(|group| {
                let tenant = licenses[group[0] as usize].tenant();
                let claims: Vec<Claims> = group
                    .iter()
                    .filter_map(|&i| match licenses[i as usize].claims() {
                        Ok(claims) => Some(claims),
                        Err(e) => {
                            tracing::error!(tenant, error = %e, "kept license claims unreadable");
                            None
                        }
                    })
                    .collect();
                (tenant, claims)
            });
        let snapshot = Arc::new(assemble_snapshot(
            settings.verifier.instance_id(),
            groups,
            &state.problems,
            &state.revoked,
            &settings.policy,
            now,
        ));
        self.snapshot.store(Arc::clone(&snapshot));
        for subscriber in self
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            subscriber(&snapshot);
        }
        crate::memory::release_unused();
        snapshot
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

/// Verifies the files that were read, on every core (in chunks of consecutive files,
/// so the result keeps the files' order).
fn verify_all(verifier: &Verifier, files: Vec<ScannedFile>) -> Vec<Checked> {
    let check = |file: ScannedFile| match file {
        ScannedFile::Known(name) => Checked::Known(name),
        ScannedFile::Read(stored) => match verifier.verify(&stored.token) {
            Ok(license) => {
                let name = stored.path.file_name().unwrap_or_default();
                Checked::Verified(Kept::new(name.into(), stored.stamp, &license.claims))
            }
            Err(rejection) => Checked::Rejected(StoreProblem {
                claimed_tenant: unverified_claims(&stored.token)
                    .and_then(|(_, c)| c.get("tenant")?.as_str().map(str::to_string)),
                path: stored.path,
                reason: rejection.to_string(),
            }),
        },
    };
    let to_verify = files
        .iter()
        .filter(|f| matches!(f, ScannedFile::Read(_)))
        .count();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below a few hundred signatures, threads cost more than they save.
    if threads < 2 || to_verify < 256 {
        return files.into_iter().map(check).collect();
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
            .map(|part| scope.spawn(move || part.into_iter().map(check).collect::<Vec<_>>()))
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
    assemble_snapshot(
        instance_id,
        by_tenant.into_iter(),
        problems,
        revoked,
        policy,
        now,
    )
}

/// The snapshot of `groups` (each tenant once, with its licenses' claims) and of the
/// tenants that only have unverifiable files in `problems`.
fn assemble_snapshot<'a, C: AsRef<Claims>>(
    instance_id: &str,
    groups: impl Iterator<Item = (&'a str, Vec<C>)>,
    problems: &'a [StoreProblem],
    revoked: &HashSet<String>,
    policy: &StatusPolicy,
    now: UnixTime,
) -> LicenseSnapshot {
    let mut invalid: HashMap<&str, usize> = HashMap::new();
    for p in problems {
        if let Some(t) = &p.claimed_tenant {
            *invalid.entry(t.as_str()).or_default() += 1;
        }
    }
    let mut tenants = super::snapshot::TenantMap::with_capacity_and_hasher(
        groups.size_hint().1.unwrap_or(0) + invalid.len(),
        Default::default(),
    );
    let mut names = super::snapshot::Names::default();
    let mut next_change: Option<UnixTime> = None;
    let mut add = |tenant: &str, claims: &[C], invalid_count: usize| {
        let combined = combine(claims, invalid_count, revoked, policy, now);
        if let Some(t) = combined.next_change {
            next_change = Some(next_change.map_or(t, |n: UnixTime| n.min(t)));
        }
        let name: Arc<str> = Arc::from(tenant);
        let summary = Arc::new(TenantSummary::build(
            Arc::clone(&name),
            combined,
            &mut names,
        ));
        tenants.insert(name, summary);
    };
    for (tenant, claims) in groups {
        let invalid_count = invalid.remove(tenant).unwrap_or(0);
        add(tenant, &claims, invalid_count);
    }
    // Tenants whose only files could not be verified.
    for (tenant, invalid_count) in invalid {
        add(tenant, &[], invalid_count);
    }
    tenants.shrink_to_fit();
    LicenseSnapshot {
        instance_id: instance_id.to_string(),
        tenants,
        built_at: now,
        next_change,
        problems: problems.to_vec(),
    }
}

/// Keeps the first license (in file-name order) of each license id; returns how
/// many were dropped.
fn drop_duplicate_ids(licenses: &mut Vec<Kept>) -> usize {
    let mut by_id: Vec<u32> = (0..licenses.len() as u32).collect();
    by_id.sort_by(|&a, &b| {
        licenses[a as usize]
            .jti()
            .cmp(licenses[b as usize].jti())
            .then(a.cmp(&b))
    });
    let mut keep = vec![true; licenses.len()];
    for pair in by_id.windows(2) {
        if licenses[pair[0] as usize].jti() == licenses[pair[1] as usize].jti() {
            keep[pair[1] as usize] = false;
        }
    }
    let before = licenses.len();
    let mut keep = keep.into_iter();
    licenses.retain(|_| keep.next().unwrap_or(true));
    before - licenses.len()
}
