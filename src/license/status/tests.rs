use super::*;
use crate::license::keys::Algorithm;
use crate::license::License;

const NOW: UnixTime = 1_900_000_000;

fn license(jti: &str, exp: UnixTime) -> License {
    License {
        claims: Claims {
            iss: None,
            sub: None,
            aud: vec!["*".into()],
            jti: jti.into(),
            iat: None,
            nbf: None,
            exp,
            tenant: "acme".into(),
            tier: Some("pro".into()),
            tier_name: None,
            features: vec![],
            limits: Limits::default(),
            feature_limits: BTreeMap::new(),
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

fn status(licenses: &[License], now: UnixTime) -> Status {
    combine(
        licenses,
        0,
        &HashSet::new(),
        &HashSet::new(),
        &StatusPolicy::default(),
        now,
    )
    .status
}

#[test]
fn each_threshold_is_crossed_exactly_on_time() {
    let exp = NOW;
    let l = [license("a", exp)];
    let warn = exp - 14 * DAY;
    let grace_end = exp + 7 * DAY;
    let read_only_end = grace_end + 14 * DAY;
    assert_eq!(status(&l, warn - 1), Status::Valid);
    assert_eq!(status(&l, warn), Status::ExpiringSoon);
    assert_eq!(status(&l, exp - 1), Status::ExpiringSoon);
    assert_eq!(status(&l, exp), Status::Grace);
    assert_eq!(status(&l, grace_end - 1), Status::Grace);
    assert_eq!(status(&l, grace_end), Status::ReadOnly);
    assert_eq!(status(&l, read_only_end - 1), Status::ReadOnly);
    assert_eq!(status(&l, read_only_end), Status::Expired);
}

#[test]
fn next_change_points_at_the_next_threshold() {
    let l = [license("a", NOW)];
    let policy = StatusPolicy::default();
    let at = |now| combine(&l, 0, &HashSet::new(), &HashSet::new(), &policy, now).next_change;
    assert_eq!(at(NOW - 20 * DAY), Some(NOW - 14 * DAY));
    assert_eq!(at(NOW - DAY), Some(NOW));
    assert_eq!(at(NOW), Some(NOW + 7 * DAY));
    assert_eq!(at(NOW + 8 * DAY), Some(NOW + 21 * DAY));
    assert_eq!(at(NOW + 22 * DAY), None);
}

#[test]
fn per_license_overrides_of_grace_and_read_only() {
    let mut l = license("a", NOW);
    l.claims.grace_days = Some(0);
    l.claims.read_only_days = Some(1);
    let l = [l];
    assert_eq!(status(&l, NOW), Status::ReadOnly);
    assert_eq!(status(&l, NOW + DAY), Status::Expired);
}

#[test]
fn configured_thresholds_apply() {
    let policy = StatusPolicy {
        expiry_warning_days: 1,
        grace_days: 2,
        read_only_days: 3,
    };
    let l = [license("a", NOW)];
    let s = |now| combine(&l, 0, &HashSet::new(), &HashSet::new(), &policy, now).status;
    assert_eq!(s(NOW - DAY - 1), Status::Valid);
    assert_eq!(s(NOW - DAY), Status::ExpiringSoon);
    assert_eq!(s(NOW + 2 * DAY), Status::ReadOnly);
    assert_eq!(s(NOW + 5 * DAY), Status::Expired);
}

#[test]
fn nothing_installed_is_unlicensed_and_only_invalid_is_invalid() {
    let policy = StatusPolicy::default();
    assert_eq!(
        combine::<License>(&[], 0, &HashSet::new(), &HashSet::new(), &policy, NOW).status,
        Status::Unlicensed
    );
    assert_eq!(
        combine::<License>(&[], 2, &HashSet::new(), &HashSet::new(), &policy, NOW).status,
        Status::Invalid
    );
}

#[test]
fn revoked_and_not_yet_valid() {
    let policy = StatusPolicy::default();
    let revoked: HashSet<String> = ["a".to_string()].into();
    let l = [license("a", NOW + 100 * DAY)];
    assert_eq!(
        combine(&l, 0, &revoked, &HashSet::new(), &policy, NOW).status,
        Status::Revoked
    );
    let mut future = license("b", NOW + 100 * DAY);
    future.claims.nbf = Some(NOW + 10);
    let f = [future];
    let c = combine(&f, 0, &HashSet::new(), &HashSet::new(), &policy, NOW);
    assert_eq!(c.status, Status::NotYetValid);
    assert_eq!(c.next_change, Some(NOW + 10));
    assert_eq!(status(&f, NOW + 10), Status::Valid);
}

#[test]
fn licenses_combine_features_limits_and_latest_expiry() {
    let mut a = license("a", NOW + 30 * DAY);
    a.claims.features = vec!["sales".into(), "hr".into()];
    a.claims.limits.requests_per_hour = Some(1000);
    a.claims.limits.max_concurrent_connections = Some(10);
    a.claims.feature_limits.insert(
        "reports".into(),
        FeatureLimits {
            requests_per_day: Some(100),
            requests_per_hour: None,
            ..FeatureLimits::default()
        },
    );
    a.claims.features.push("reports".into());
    let mut b = license("b", NOW + 300 * DAY);
    b.claims.tier = Some("enterprise".into());
    b.claims.features = vec!["manufacturing".into(), "reports".into()];
    b.claims.limits.requests_per_hour = Some(500);
    b.claims.limits.max_concurrent_connections = Some(5);
    b.claims.feature_limits.insert(
        "reports".into(),
        FeatureLimits {
            requests_per_day: Some(50),
            requests_per_hour: None,
            ..FeatureLimits::default()
        },
    );
    let c = combine(
        &[a, b],
        0,
        &HashSet::new(),
        &HashSet::new(),
        &StatusPolicy::default(),
        NOW,
    );
    assert_eq!(c.status, Status::Valid);
    assert_eq!(
        c.tier.as_deref(),
        Some("enterprise"),
        "tier of the latest-expiring license"
    );
    assert_eq!(
        c.features.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["hr", "manufacturing", "reports", "sales"]
    );
    assert_eq!(c.limits.requests_per_hour, Some(1500));
    assert_eq!(c.limits.max_concurrent_connections, Some(15));
    assert_eq!(c.feature_limits["reports"].requests_per_day, Some(150));
    assert_eq!(c.expires_at, Some(NOW + 300 * DAY));
    assert_eq!(c.license_ids.len(), 2);
}

#[test]
fn an_expired_license_stops_contributing_and_a_live_one_carries_on() {
    let mut old = license("old", NOW - 100 * DAY);
    old.claims.features = vec!["legacy".into()];
    let mut new = license("new", NOW + 100 * DAY);
    new.claims.features = vec!["sales".into()];
    let c = combine(
        &[old, new],
        0,
        &HashSet::new(),
        &HashSet::new(),
        &StatusPolicy::default(),
        NOW,
    );
    assert_eq!(c.status, Status::Valid);
    assert!(c.features.contains("sales") && !c.features.contains("legacy"));
    assert_eq!(c.license_ids, vec!["new"]);
}

#[test]
fn a_grant_without_quota_makes_the_feature_unlimited() {
    let mut a = license("a", NOW + DAY * 30);
    a.claims.features = vec!["reports".into()];
    a.claims.feature_limits.insert(
        "reports".into(),
        FeatureLimits {
            requests_per_day: Some(10),
            requests_per_hour: None,
            ..FeatureLimits::default()
        },
    );
    let mut b = license("b", NOW + DAY * 30);
    b.claims.features = vec!["reports".into()];
    let c = combine(
        &[a, b],
        0,
        &HashSet::new(),
        &HashSet::new(),
        &StatusPolicy::default(),
        NOW,
    );
    assert!(!c.feature_limits.contains_key("reports"));
}
