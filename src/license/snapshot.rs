//! The immutable per-tenant license facts: what each tenant's licenses grant, now.
//!
//! A [`LicenseSnapshot`] is built whenever licenses, revocations or the status of some
//! tenant change, and swapped in whole (`ArcSwap`); readers never lock and never
//! allocate. Its tenants are a [`ShardedMap`]: a snapshot with a few tenants changed
//! shares every other shard with the one before, so a change costs what changed. It holds license facts only: what the request path adds per tenant
//! (header lines, counters, quota state) is built from these facts elsewhere.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::claims::{FeatureLimits, Limits, Restrictions, UnixTime};
use super::status::{Combined, Status};
use super::store::StoreProblem;
use super::time_text;
use crate::sharded::{ShardedMap, SHARDS};

/// One tenant's license summary.
#[derive(Debug, Clone, Serialize)]
pub struct TenantSummary {
    /// The tenant's name (shared with the snapshot's index and the quota state).
    pub tenant: Arc<str>,
    pub status: Status,
    pub tier: Option<Arc<str>>,
    pub tier_name: Option<Arc<str>>,
    /// Granted features, sorted (binary search), names shared across tenants.
    pub features: Box<[Arc<str>]>,
    pub limits: Limits,
    pub feature_limits: std::collections::BTreeMap<String, FeatureLimits>,
    /// Where the tenant's licenses may be used from (`None`: anywhere).
    pub restrictions: Option<Arc<Restrictions>>,
    pub flags: Vec<String>,
    pub expires_at: Option<UnixTime>,
    /// `jti` of the licenses in force.
    pub license_ids: Vec<String>,
    /// Human-readable warnings (expiring soon, grace, read-only).
    pub warnings: Vec<String>,
    /// When this tenant's status next changes (the summary must be built again then).
    #[serde(skip)]
    pub next_change: Option<UnixTime>,
}

/// Shares equal strings (feature names, tiers) between the tenants of one snapshot:
/// 100,000 tenants with the same plan keep one copy of each name.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

impl TenantSummary {
    /// A `VALID` summary of `tenant` with only `limits` and `feature_limits` (tests).
    #[cfg(test)]
    pub fn with_limits(
        tenant: &str,
        limits: Limits,
        feature_limits: std::collections::BTreeMap<String, FeatureLimits>,
    ) -> TenantSummary {
        TenantSummary::new(
            tenant,
            Combined {
                status: Status::Valid,
                tier: None,
                tier_name: None,
                features: Default::default(),
                limits,
                feature_limits,
                restrictions: Default::default(),
                flags: Default::default(),
                expires_at: None,
                grace_until: None,
                read_only_until: None,
                license_ids: vec![],
                next_change: None,
            },
        )
    }

    /// Builds the summary of `tenant` from its combined licenses.
    pub fn new(tenant: &str, combined: Combined) -> TenantSummary {
        TenantSummary::build(Arc::from(tenant), combined, &mut Names::default())
    }

    /// Builds the summary of `tenant`, sharing names through `names`.
    pub fn build(tenant: Arc<str>, combined: Combined, names: &mut Names) -> TenantSummary {
        let expires = combined.expires_at.map(time_text);
        let until = |t: Option<UnixTime>| t.map(time_text).unwrap_or_default();
        let warnings = match (combined.status, expires) {
            (Status::ExpiringSoon, Some(exp)) => vec![format!("license expires on {exp}")],
            (Status::Grace, Some(exp)) => vec![format!(
                "license expired on {exp}; grace period until {}",
                until(combined.grace_until)
            )],
            (Status::ReadOnly, Some(exp)) => vec![format!(
                "license expired on {exp}; read-only access until {}",
                until(combined.read_only_until)
            )],
            _ => Vec::new(),
        };
        let mut features: Vec<&str> = combined.features.iter().map(String::as_str).collect();
        features.sort_unstable();
        TenantSummary {
            tenant,
            status: combined.status,
            tier: combined.tier.as_deref().map(|t| names.get(t)),
            tier_name: combined.tier_name.as_deref().map(|t| names.get(t)),
            features: features.iter().map(|f| names.get(f)).collect(),
            limits: combined.limits,
            feature_limits: combined.feature_limits,
            restrictions: (!combined.restrictions.is_empty())
                .then(|| Arc::new(combined.restrictions)),
            flags: combined.flags.into_iter().collect(),
            expires_at: combined.expires_at,
            license_ids: combined.license_ids,
            warnings,
            next_change: combined.next_change,
        }
    }

    /// The granted features, comma-separated in order (`X-Licgate-Features`).
    pub fn features_text(&self) -> String {
        self.features.join(",")
    }

    /// Whether `feature` is granted (allocation-free).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features
            .binary_search_by(|f| (**f).cmp(feature))
            .is_ok()
    }
}

/// Tenant name → summary (one hash and one shard probe per lookup).
pub type TenantMap = ShardedMap<Arc<TenantSummary>>;

/// All tenants' summaries at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LicenseSnapshot {
    /// This installation's id (what `aud` must name).
    pub instance_id: String,
    /// Tenants with at least one license file (valid or not).
    pub tenants: TenantMap,
    /// When this snapshot was judged (its last change).
    pub built_at: UnixTime,
    /// The next instant at which some tenant's status changes.
    pub next_change: Option<UnixTime>,
    /// The next change of the tenants of each shard of `tenants` (empty: none).
    #[serde(skip)]
    pub next_change_by_shard: Box<[Option<UnixTime>]>,
    /// License files that could not be used.
    pub problems: Vec<StoreProblem>,
}

impl LicenseSnapshot {
    /// The snapshot of `tenants`, judged at `built_at`.
    pub fn new(
        instance_id: String,
        tenants: TenantMap,
        built_at: UnixTime,
        problems: Vec<StoreProblem>,
    ) -> LicenseSnapshot {
        let by_shard: Box<[Option<UnixTime>]> = (0..SHARDS)
            .map(|i| shard_next_change(&tenants, i))
            .collect();
        LicenseSnapshot {
            instance_id,
            tenants,
            built_at,
            next_change: by_shard.iter().flatten().min().copied(),
            next_change_by_shard: by_shard,
            problems,
        }
    }

    /// This snapshot with the summaries of some tenants replaced (`None`: the tenant
    /// has no license file any more), judged at `now`. Costs the shards changed.
    pub fn with_changes(
        &self,
        changes: Vec<(Arc<str>, Option<Arc<TenantSummary>>)>,
        problems: Vec<StoreProblem>,
        now: UnixTime,
    ) -> LicenseSnapshot {
        let (tenants, changed) = self.tenants.with_changes(changes);
        let mut by_shard = if self.next_change_by_shard.len() == SHARDS {
            self.next_change_by_shard.clone()
        } else {
            (0..SHARDS)
                .map(|i| shard_next_change(&tenants, i))
                .collect()
        };
        for i in changed {
            by_shard[i] = shard_next_change(&tenants, i);
        }
        LicenseSnapshot {
            instance_id: self.instance_id.clone(),
            tenants,
            built_at: now,
            next_change: by_shard.iter().flatten().min().copied(),
            next_change_by_shard: by_shard,
            problems,
        }
    }

    /// The tenants whose status changes at or before `now`.
    pub fn due(&self, now: UnixTime) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        for (i, next) in self.next_change_by_shard.iter().enumerate() {
            if next.is_some_and(|t| t <= now) {
                due.extend(
                    self.tenants
                        .shard(i)
                        .filter(|(_, s)| s.next_change.is_some_and(|t| t <= now))
                        .map(|(name, _)| Arc::clone(name)),
                );
            }
        }
        due
    }

    /// The summary of `tenant`, if it has any license.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantSummary> {
        self.tenants.get(tenant).map(|t| &**t)
    }

    /// A shared handle on the summary of `tenant` (no allocation).
    pub fn tenant_arc(&self, tenant: &str) -> Option<Arc<TenantSummary>> {
        self.tenants.get(tenant).cloned()
    }

    /// The status of `tenant` (`UNLICENSED` when it has none).
    pub fn status(&self, tenant: &str) -> Status {
        self.tenant(tenant)
            .map(|t| t.status)
            .unwrap_or(Status::Unlicensed)
    }
}

/// The earliest next change of the tenants in shard `i` of `tenants`.
fn shard_next_change(tenants: &TenantMap, i: usize) -> Option<UnixTime> {
    tenants.shard(i).filter_map(|(_, s)| s.next_change).min()
}
