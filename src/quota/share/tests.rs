use std::collections::BTreeMap;

use super::*;
use crate::license::claims::{FeatureLimits, Limits};
use crate::quota::test_quota as summary;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 2026-12-01 08:00:00 UTC: the start of an hour.
const HOUR_START: i64 = 1_796_112_000;

#[test]
fn a_client_gets_its_share_of_each_window_and_others_are_unaffected() {
    let shares = ClientShares::new(0.25, 1000);
    let tenant = summary(
        "acme",
        Limits {
            requests_per_hour: Some(100),
            ..Limits::default()
        },
        BTreeMap::new(),
    );
    let now = HOUR_START + 600;
    for _ in 0..25 {
        let _ = shares
            .check(&tenant, None, ip("198.51.100.7"), now)
            .unwrap();
    }
    match shares.check(&tenant, None, ip("198.51.100.7"), now) {
        Err(ShareRefusal::Rate {
            share_limit,
            retry_after_secs,
            rule,
        }) => {
            assert_eq!(share_limit, 25);
            assert_eq!(retry_after_secs, 3000, "until the hour ends");
            assert_eq!(rule.limit, 100);
        }
        other => panic!("{other:?}"),
    }
    // Another client, and another /64 of IPv6, are on their own shares.
    assert!(shares.check(&tenant, None, ip("198.51.100.8"), now).is_ok());
    for _ in 0..25 {
        let _ = shares.check(&tenant, None, ip("2001:db8::1"), now).unwrap();
    }
    assert!(shares
        .check(&tenant, None, ip("2001:db8::ffff"), now)
        .is_err());
    assert!(shares
        .check(&tenant, None, ip("2001:db8:0:1::1"), now)
        .is_ok());
    // The next hour resets the count.
    assert!(shares
        .check(&tenant, None, ip("198.51.100.7"), HOUR_START + 3600)
        .is_ok());
}

#[test]
fn a_refund_gives_the_count_back_and_feature_quotas_have_shares_too() {
    let shares = ClientShares::new(0.5, 1000);
    let mut features = BTreeMap::new();
    features.insert(
        "export".to_string(),
        FeatureLimits {
            requests_per_hour: Some(4),
            ..FeatureLimits::default()
        },
    );
    let tenant = summary(
        "acme",
        Limits {
            requests_per_hour: Some(1000),
            ..Limits::default()
        },
        features,
    );
    let client = ip("192.0.2.1");
    let now = HOUR_START;
    let t1 = shares.check(&tenant, Some("export"), client, now).unwrap();
    let _t2 = shares.check(&tenant, Some("export"), client, now).unwrap();
    assert!(matches!(
        shares.check(&tenant, Some("export"), client, now),
        Err(ShareRefusal::Rate { share_limit: 2, .. })
    ));
    shares.refund(t1, &tenant, Some("export"));
    assert!(shares.check(&tenant, Some("export"), client, now).is_ok());
    // Without the feature, only the tenant's own rule counts.
    assert!(shares.check(&tenant, None, client, now).is_ok());
}

#[test]
fn concurrent_slots_are_shared_and_given_back() {
    let shares = ClientShares::new(0.34, 1000);
    let tenant = summary("acme", Limits::default(), BTreeMap::new());
    let client = ip("192.0.2.1");
    // 34 % of 3 slots rounds down to 1.
    let held = shares.acquire(&tenant, client, 3).unwrap();
    assert!(held.is_some());
    assert_eq!(
        shares.acquire(&tenant, client, 3).unwrap_err(),
        ShareRefusal::Concurrency { share_limit: 1 }
    );
    assert!(shares
        .acquire(&tenant, ip("192.0.2.2"), 3)
        .unwrap()
        .is_some());
    drop(held);
    assert!(shares.acquire(&tenant, client, 3).unwrap().is_some());
}

#[test]
fn state_is_pruned_and_bounded() {
    let shares = ClientShares::new(0.1, 100);
    let tenant = summary(
        "acme",
        Limits {
            requests_per_minute: Some(1000),
            ..Limits::default()
        },
        BTreeMap::new(),
    );
    for i in 0..1000u32 {
        let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let _ = shares.check(&tenant, None, client, HOUR_START).unwrap();
    }
    assert_eq!(shares.len(), 100, "at most max_clients entries");
    shares.prune(HOUR_START + 30);
    assert_eq!(shares.len(), 100, "counts of the current minute are kept");
    shares.prune(HOUR_START + 60);
    assert_eq!(shares.len(), 0, "a new minute: nothing left to remember");
}
