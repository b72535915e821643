//! What the examples that fill a license store share.

use licgate::license::claims::{Claims, Limits};

/// The claims of memory-test tenant `i` (`t{i}`, license `lic-{i}`): three features,
/// per-minute and per-hour limits and a concurrency limit, valid for a year from `now`.
pub(crate) fn tenant_claims(i: usize, now: i64) -> Claims {
    Claims {
        iss: None,
        sub: Some(format!("customer-{i}")),
        aud: vec!["*".into()],
        jti: format!("lic-{i}"),
        iat: Some(now),
        nbf: None,
        exp: now + 365 * 86_400,
        tenant: format!("t{i}"),
        tier: Some("professional".into()),
        tier_name: Some("Professional".into()),
        features: ["sales", "hr", "reports"].map(String::from).to_vec(),
        limits: Limits {
            requests_per_minute: Some(600),
            requests_per_hour: Some(20_000),
            max_concurrent_connections: Some(50),
            ..Limits::default()
        },
        feature_limits: Default::default(),
        restrictions: Default::default(),
        flags: vec![],
        grace_days: None,
        read_only_days: None,
        license_exp: None,
    }
}
