//! The license status model: a pure function of (licenses, revocations, now).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::claims::{Claims, FeatureLimits, Limits, Restrictions, UnixTime};

const DAY: i64 = 86_400;

/// A tenant's license status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// No license installed.
    Unlicensed,
    Valid,
    /// Valid, within `expiry_warning_days` of expiry.
    ExpiringSoon,
    /// Expired, within `grace_days`: allowed, with a warning.
    Grace,
    /// After grace, within `read_only_days`: only GET/HEAD/OPTIONS.
    ReadOnly,
    Expired,
    Revoked,
    /// The license server suspended the license: refused until it is reinstated.
    Suspended,
    NotYetValid,
    /// Only licenses that fail verification are installed.
    Invalid,
}

impl Status {
    /// Every status, in documentation order.
    pub const ALL: [Status; 10] = [
        Status::Unlicensed,
        Status::Valid,
        Status::ExpiringSoon,
        Status::Grace,
        Status::ReadOnly,
        Status::Expired,
        Status::Revoked,
        Status::Suspended,
        Status::NotYetValid,
        Status::Invalid,
    ];

    /// The contract name (`VALID`, `EXPIRING_SOON`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unlicensed => "UNLICENSED",
            Status::Valid => "VALID",
            Status::ExpiringSoon => "EXPIRING_SOON",
            Status::Grace => "GRACE",
            Status::ReadOnly => "READ_ONLY",
            Status::Expired => "EXPIRED",
            Status::Revoked => "REVOKED",
            Status::Suspended => "SUSPENDED",
            Status::NotYetValid => "NOT_YET_VALID",
            Status::Invalid => "INVALID",
        }
    }

    /// Whether requests may use the license at all (GRACE and READ_ONLY included;
    /// READ_ONLY further restricts methods).
    pub fn grants_access(self) -> bool {
        matches!(
            self,
            Status::Valid | Status::ExpiringSoon | Status::Grace | Status::ReadOnly
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds of the status model (config defaults; a license may override
/// `grace_days` and `read_only_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusPolicy {
    pub expiry_warning_days: u32,
    pub grace_days: u32,
    pub read_only_days: u32,
}

impl Default for StatusPolicy {
    fn default() -> Self {
        StatusPolicy {
            expiry_warning_days: 14,
            grace_days: 7,
            read_only_days: 14,
        }
    }
}

impl StatusPolicy {
    fn grace_days(&self, claims: &Claims) -> i64 {
        i64::from(claims.grace_days.unwrap_or(self.grace_days))
    }

    fn read_only_days(&self, claims: &Claims) -> i64 {
        i64::from(claims.read_only_days.unwrap_or(self.read_only_days))
    }

    /// The first second at which `claims` no longer grants any access.
    pub fn usable_until(&self, claims: &Claims) -> UnixTime {
        claims
            .exp
            .saturating_add((self.grace_days(claims) + self.read_only_days(claims)) * DAY)
    }

    /// The status of one verified, unrevoked license at `now`, and the next instant
    /// at which it changes (None when it never changes again).
    pub fn status_of(&self, claims: &Claims, now: UnixTime) -> (Status, Option<UnixTime>) {
        if let Some(nbf) = claims.nbf {
            if now < nbf {
                return (Status::NotYetValid, Some(nbf));
            }
        }
        let exp = claims.exp;
        let warning = i64::from(self.expiry_warning_days) * DAY;
        // A renewed token warns of the license's end, never of its own.
        let warn_from = match claims.license_exp {
            None => exp.saturating_sub(warning),
            Some(end) => end.saturating_sub(warning).min(exp),
        };
        let grace_until = exp.saturating_add(self.grace_days(claims) * DAY);
        let read_only_until = self.usable_until(claims);
        if now < warn_from {
            (Status::Valid, Some(warn_from))
        } else if now < exp {
            (Status::ExpiringSoon, Some(exp))
        } else if now < grace_until {
            (Status::Grace, Some(grace_until))
        } else if now < read_only_until {
            (Status::ReadOnly, Some(read_only_until))
        } else {
            (Status::Expired, None)
        }
    }
}

/// What a tenant may do, combined from all its licenses at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Combined {
    pub status: Status,
    /// Tier of the license that expires last among those in force.
    pub tier: Option<String>,
    pub tier_name: Option<String>,
    /// Union of the features of the licenses in force.
    pub features: BTreeSet<String>,
    /// Sum of the limits of the licenses in force.
    pub limits: Limits,
    pub feature_limits: BTreeMap<String, FeatureLimits>,
    /// Where the licenses in force may be used from (see [`Restrictions::combine`]).
    pub restrictions: Restrictions,
    pub flags: BTreeSet<String>,
    /// Latest `exp` among the licenses in force (or among all, when none is).
    pub expires_at: Option<UnixTime>,
    /// End of the grace period and of read-only access of that latest license.
    pub grace_until: Option<UnixTime>,
    pub read_only_until: Option<UnixTime>,
    /// `jti` of the licenses in force.
    pub license_ids: Vec<String>,
    /// When this combination next changes (a threshold of some license is crossed).
    #[serde(skip)]
    pub next_change: Option<UnixTime>,
}

/// Combines a tenant's licenses at `now`.
///
/// Licenses in force are those verified, not revoked, past `nbf` and not yet fully
/// `EXPIRED`; they contribute the union of features, the sum of limits, and the
/// latest expiry, and the tenant's status follows that latest expiry. When none is in
/// force the status says why: `NOT_YET_VALID`, else `SUSPENDED`, else `REVOKED`, else `EXPIRED`, else
/// `INVALID` (only unverifiable licenses), else `UNLICENSED`.
pub(crate) fn combine<C: AsRef<Claims>>(
    licenses: &[C],
    invalid_count: usize,
    revoked: &HashSet<String>,
    suspended: &HashSet<String>,
    policy: &StatusPolicy,
    now: UnixTime,
) -> Combined {
    let mut next_change: Option<UnixTime> = None;
    let mut note_change = |t: Option<UnixTime>| {
        if let Some(t) = t {
            next_change = Some(next_change.map_or(t, |n| n.min(t)));
        }
    };
    let mut in_force: Vec<&Claims> = Vec::new();
    let (mut any_not_yet, mut any_revoked, mut any_expired) = (false, false, false);
    let mut any_suspended = false;
    let mut latest_exp_overall: Option<UnixTime> = None;
    for claims in licenses.iter().map(C::as_ref) {
        latest_exp_overall = Some(latest_exp_overall.map_or(claims.exp, |e| e.max(claims.exp)));
        if revoked.contains(&claims.jti) {
            any_revoked = true;
            continue;
        }
        if suspended.contains(&claims.jti) {
            any_suspended = true;
            continue;
        }
        let (status, change) = policy.status_of(claims, now);
        note_change(change);
        match status {
            Status::NotYetValid => any_not_yet = true,
            Status::Expired => any_expired = true,
            _ => in_force.push(claims),
        }
    }
    let Some(latest) = in_force.iter().copied().max_by_key(|c| (c.exp, c.iat)) else {
        let status = if any_not_yet {
            Status::NotYetValid
        } else if any_suspended {
            Status::Suspended
        } else if any_revoked {
            Status::Revoked
        } else if any_expired {
            Status::Expired
        } else if invalid_count > 0 {
            Status::Invalid
        } else {
            Status::Unlicensed
        };
        return Combined {
            status,
            tier: None,
            tier_name: None,
            features: BTreeSet::new(),
            limits: Limits::default(),
            feature_limits: BTreeMap::new(),
            restrictions: Restrictions::default(),
            flags: BTreeSet::new(),
            expires_at: latest_exp_overall,
            grace_until: None,
            read_only_until: None,
            license_ids: Vec::new(),
            next_change,
        };
    };
    let (status, _) = policy.status_of(latest, now);
    let mut limits: Option<Limits> = None;
    let mut restrictions: Option<Restrictions> = None;
    let mut feature_limits: BTreeMap<String, FeatureLimits> = BTreeMap::new();
    let mut features = BTreeSet::new();
    let mut flags = BTreeSet::new();
    for claims in &in_force {
        limits = Some(match limits {
            None => claims.limits.clone(),
            Some(sum) => sum.add(&claims.limits),
        });
        restrictions = Some(match restrictions {
            None => claims.restrictions.clone(),
            Some(both) => both.combine(&claims.restrictions),
        });
        features.extend(claims.features.iter().cloned());
        flags.extend(claims.flags.iter().cloned());
        for (feature, fl) in &claims.feature_limits {
            feature_limits
                .entry(feature.clone())
                .and_modify(|sum| *sum = sum.add(fl))
                .or_insert_with(|| fl.clone());
        }
    }
    // A feature granted by a license without a quota for it is unlimited.
    feature_limits.retain(|feature, _| {
        in_force
            .iter()
            .filter(|c| c.features.contains(feature))
            .all(|c| c.feature_limits.contains_key(feature))
    });
    Combined {
        status,
        tier: latest.tier.clone(),
        tier_name: latest.tier_name.clone(),
        features,
        limits: limits.unwrap_or_default(),
        feature_limits,
        restrictions: restrictions.unwrap_or_default(),
        flags,
        expires_at: Some(latest.exp),
        grace_until: Some(latest.exp.saturating_add(policy.grace_days(latest) * DAY)),
        read_only_until: Some(policy.usable_until(latest)),
        license_ids: in_force.iter().map(|c| c.jti.clone()).collect(),
        next_change,
    }
}

#[cfg(test)]
mod tests;
