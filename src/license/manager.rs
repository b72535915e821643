//! Keeps the license snapshot current: loads the store, verifies every token,
//! combines licenses per tenant, and rebuilds the snapshot when files change, when
//! something is installed or revoked, and exactly when some status threshold passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::claims::UnixTime;
use super::clock::{Clock, RollbackGuard};
use super::snapshot::{LicenseSnapshot, TenantSummary};
use super::status::{combine, StatusPolicy};
use super::store::{Fingerprint, Store, StoreError, StoreProblem};
use super::verify::{unverified_claims, License, Rejection, Verifier};
use crate::throttle::LogThrottle;

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
}

/// A verified license and the file it came from.
#[derive(Debug, Clone)]
struct Loaded {
    path: PathBuf,
    license: License,
}

#[derive(Debug, Default)]
struct State {
    fingerprint: Option<Fingerprint>,
    licenses: Vec<Loaded>,
    problems: Vec<StoreProblem>,
    revoked: HashSet<String>,
    persisted_high_water: UnixTime,
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
}

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

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<LicenseSnapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned handle.
    pub fn snapshot_arc(&self) -> Arc<LicenseSnapshot> {
        self.snapshot.load_full()
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
        self.reload(&mut state);
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
            self.reload(&mut state);
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
        let now = self.now();
        let settings = self.settings.load();
        let license = settings
            .verifier
            .verify_for_install(token, now, &settings.policy)?;
        let claims = &license.claims;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.revoked.contains(&claims.jti) {
            return Err(Rejection::Revoked(claims.jti.clone()).into());
        }
        if state
            .licenses
            .iter()
            .any(|l| l.license.claims.jti == claims.jti && l.license.claims.tenant != claims.tenant)
        {
            return Err(InstallError::DuplicateId(claims.jti.clone()));
        }
        self.store.install(&claims.tenant, &claims.jti, token)?;
        self.reload(&mut state);
        state.fingerprint = Some(self.store.fingerprint());
        let snapshot = self.publish(&state, now);
        tracing::info!(
            tenant = %claims.tenant,
            jti = %claims.jti,
            tier = claims.tier.as_deref().unwrap_or(""),
            "license installed"
        );
        snapshot
            .tenant(&claims.tenant)
            .cloned()
            .ok_or_else(|| InstallError::DuplicateId(claims.jti.clone()))
    }

    /// Revokes license `jti` (persisted) and publishes a snapshot without it.
    pub fn revoke(&self, jti: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.store.revoke(jti, now)?;
        self.reload(&mut state);
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
            .filter(|l| l.license.claims.tenant == tenant && l.license.claims.jti == jti)
            .map(|l| l.path.clone())
            .collect();
        for path in &doomed {
            self.store.remove(path)?;
        }
        self.reload(&mut state);
        state.fingerprint = Some(self.store.fingerprint());
        self.publish(&state, now);
        Ok(!doomed.is_empty())
    }

    /// Reads revocations and every license file, verifying each token. Problems are
    /// logged once per reload and kept for the snapshot; none is fatal.
    fn reload(&self, state: &mut State) {
        match self.store.revocations() {
            Ok(list) => state.revoked = list.into_iter().map(|r| r.jti).collect(),
            // Keep the revocations known so far: a damaged list must not un-revoke.
            Err(e) => {
                tracing::error!(error = %e, "cannot read revocations; keeping the previous list")
            }
        }
        let (tokens, mut problems) = self.store.scan();
        let verifier = &self.settings.load().verifier;
        // Exact capacity: with 100k licenses, doubling growth would leave ~30% unused.
        let mut licenses: Vec<Loaded> = Vec::with_capacity(tokens.len());
        let mut seen_jti: HashSet<String> = HashSet::new();
        for stored in tokens {
            match verifier.verify(&stored.token) {
                Ok(license) => {
                    if seen_jti.insert(license.claims.jti.clone()) {
                        licenses.push(Loaded {
                            path: stored.path,
                            license,
                        });
                    }
                }
                Err(rejection) => problems.push(StoreProblem {
                    claimed_tenant: unverified_claims(&stored.token)
                        .and_then(|(_, c)| c.get("tenant")?.as_str().map(str::to_string)),
                    path: stored.path,
                    reason: rejection.to_string(),
                }),
            }
        }
        for problem in &problems {
            tracing::warn!(
                file = %problem.path.display(),
                reason = %problem.reason,
                "license file skipped"
            );
        }
        tracing::info!(
            licenses = licenses.len(),
            skipped = problems.len(),
            revoked = state.revoked.len(),
            "license store loaded"
        );
        licenses.shrink_to_fit();
        state.licenses = licenses;
        state.problems = problems;
    }

    /// Builds and swaps in the snapshot for `state` at `now`.
    fn publish(&self, state: &State, now: UnixTime) -> Arc<LicenseSnapshot> {
        let settings = self.settings.load();
        let snapshot = Arc::new(build_snapshot(
            settings.verifier.instance_id(),
            &state.licenses,
            &state.problems,
            &state.revoked,
            &settings.policy,
            now,
            &self.snapshot.load(),
        ));
        self.snapshot.store(Arc::clone(&snapshot));
        crate::memory::release_unused();
        snapshot
    }

    /// Runs [`LicenseManager::refresh`] on a thread of its own: every `scan_interval`,
    /// and exactly when the next status threshold passes.
    pub fn spawn_refresher(self: &Arc<Self>, scan_interval: Duration) {
        let manager = Arc::clone(self);
        std::thread::Builder::new()
            .name("licgate-licenses".into())
            .spawn(move || loop {
                let wait = manager
                    .snapshot
                    .load()
                    .next_change
                    .map(until)
                    .map_or(scan_interval, |d| d.min(scan_interval));
                std::thread::sleep(wait);
                manager.refresh();
            })
            .expect("spawn license refresher thread");
    }
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
    licenses: &[impl AsLicense],
    problems: &[StoreProblem],
    revoked: &HashSet<String>,
    policy: &StatusPolicy,
    now: UnixTime,
    previous: &LicenseSnapshot,
) -> LicenseSnapshot {
    // References, not copies: with 100k licenses a deep copy is ~60 MB of transient
    // allocations interleaved with the snapshot's (fragmentation that stays in RSS).
    let mut by_tenant: BTreeMap<&str, Vec<&License>> = BTreeMap::new();
    for l in licenses {
        let license = l.license();
        by_tenant
            .entry(license.claims.tenant.as_str())
            .or_default()
            .push(license);
    }
    let mut invalid: HashMap<&str, usize> = HashMap::new();
    for p in problems {
        if let Some(t) = &p.claimed_tenant {
            *invalid.entry(t.as_str()).or_default() += 1;
            by_tenant.entry(t.as_str()).or_default();
        }
    }
    let mut tenants = HashMap::with_capacity(by_tenant.len());
    let mut names = super::snapshot::Names::default();
    let mut next_change: Option<UnixTime> = None;
    for (tenant, licenses) in by_tenant {
        let combined = combine(
            &licenses,
            invalid.get(tenant).copied().unwrap_or(0),
            revoked,
            policy,
            now,
        );
        if let Some(t) = combined.next_change {
            next_change = Some(next_change.map_or(t, |n: UnixTime| n.min(t)));
        }
        let name: Arc<str> = Arc::from(tenant);
        let summary = Arc::new(TenantSummary::build(
            Arc::clone(&name),
            combined,
            // Counters live as long as the tenant has a license: carried over from
            // the previous snapshot, new for a new tenant.
            previous
                .tenants
                .get(&name)
                .map(|t| Arc::clone(&t.counters))
                .unwrap_or_default(),
            &mut names,
        ));
        tenants.insert(Arc::clone(&summary.tenant), summary);
    }
    LicenseSnapshot {
        instance_id: instance_id.to_string(),
        tenants,
        built_at: now,
        next_change,
        problems: problems.to_vec(),
    }
}

/// Anything that holds a verified license (lets [`build_snapshot`] take either plain
/// licenses or licenses with their file paths).
pub trait AsLicense {
    fn license(&self) -> &License;
}

impl AsLicense for License {
    fn license(&self) -> &License {
        self
    }
}

impl AsLicense for Loaded {
    fn license(&self) -> &License {
        &self.license
    }
}

/// The instance id for `config`: the configured one, or the one persisted in the
/// store (generated on first use).
pub fn resolve_instance_id(
    config: &crate::config::LicenseConfig,
    store: &Store,
) -> Result<String, StoreError> {
    match &config.instance_id {
        crate::config::InstanceIdSetting::Fixed(id) => Ok(id.clone()),
        crate::config::InstanceIdSetting::Auto => store.instance_id(),
    }
}

/// The manager settings `config` asks for, with `store`'s instance id when it is
/// `auto`.
pub fn settings_for(
    config: &crate::config::LicenseConfig,
    store: &Store,
) -> Result<LicenseSettings, StoreError> {
    let instance_id = resolve_instance_id(config, store)?;
    Ok(LicenseSettings {
        verifier: Verifier::new(
            config.public_keys.clone(),
            config.issuer.clone(),
            instance_id,
            config.clock_leeway.as_secs() as i64,
        ),
        policy: config.policy,
        rollback_tolerance_secs: config.clock_rollback_tolerance.as_secs() as i64,
    })
}

/// Opens the store of `config`, loads it with the system clock, and starts the
/// refresher thread.
pub fn start(config: &crate::config::LicenseConfig) -> Result<Arc<LicenseManager>, StoreError> {
    let store = Store::open(&config.store_dir)?;
    let settings = settings_for(config, &store)?;
    let manager = Arc::new(LicenseManager::new(
        settings,
        store,
        Arc::new(super::clock::SystemClock),
    ));
    manager.spawn_refresher(config.scan_interval);
    Ok(manager)
}
