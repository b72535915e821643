//! Fixtures shared by the benchmarks and `tests/no_alloc.rs`: verified licenses and
//! snapshots of many tenants, built without keys or files.

#![allow(dead_code)]

use licgate::config::{FeatureRule, Mode};
use licgate::license::keys::Algorithm;
use licgate::license::manager::build_snapshot;
use licgate::license::{Claims, License, LicenseSnapshot, Limits, StatusPolicy};
use licgate::policy::decide::Policy;

/// The instant licenses are judged at.
pub(crate) const NOW: i64 = 1_900_000_000;

/// A license for tenant `tenant-{i}` valid for a year, granting `feature_0` …
/// `feature_{features-1}` with `limits`.
pub(crate) fn license(i: usize, features: usize, limits: Limits) -> License {
    License {
        claims: Claims {
            iss: None,
            sub: None,
            aud: vec!["*".into()],
            jti: format!("L{i}"),
            iat: None,
            nbf: None,
            exp: NOW + 365 * 86_400,
            tenant: format!("tenant-{i}"),
            tier: Some("pro".into()),
            tier_name: None,
            features: (0..features).map(|f| format!("feature_{f}")).collect(),
            limits,
            feature_limits: Default::default(),
            restrictions: Default::default(),
            flags: vec![],
            grace_days: None,
            read_only_days: None,
            license_exp: None,
        },
        alg: Algorithm::EdDSA,
        kid: None,
    }
}

/// The snapshot of `licenses` at [`NOW`].
pub(crate) fn snapshot_of(licenses: &[License]) -> LicenseSnapshot {
    build_snapshot(
        "x",
        licenses,
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        NOW,
    )
}

/// A snapshot of `tenants` tenants made by [`license`].
pub(crate) fn snapshot(tenants: usize, features: usize, limits: Limits) -> LicenseSnapshot {
    let licenses: Vec<License> = (0..tenants)
        .map(|i| license(i, features, limits.clone()))
        .collect();
    snapshot_of(&licenses)
}

/// A policy whose feature map has `prefixes` entries `/api/module{i}/` →
/// `feature_{i % modulo}`, and `/static/` public.
pub(crate) fn policy(prefixes: usize, modulo: usize) -> Policy {
    let rules: Vec<FeatureRule> = (0..prefixes)
        .map(|i| FeatureRule {
            prefix: format!("/api/module{i}/"),
            feature: format!("feature_{}", i % modulo).into(),
            methods: None,
            shadow: false,
            format_suffixes: true,
        })
        .collect();
    Policy::new(Mode::Enforce, &rules, &["/static/".to_string()], false)
}
