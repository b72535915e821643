use std::collections::BTreeMap;

use super::*;
use crate::license::claims::{FeatureLimits, Limits};
use crate::license::TenantSummary;
use crate::quota::test_quota as summary;
use crate::quota::TenantQuota;

fn per_minute(n: u64, burst: Option<u64>) -> Limits {
    Limits {
        requests_per_minute: Some(n),
        burst,
        ..Limits::default()
    }
}

#[test]
fn exactly_at_the_burst_then_one_over() {
    let quotas = LocalQuotas::default();
    let t = summary("acme", per_minute(60, Some(5)), BTreeMap::new());
    for i in 0..5 {
        match quotas.check(&t, None) {
            QuotaOutcome::Allowed {
                limit, remaining, ..
            } => {
                assert_eq!(limit, 60);
                assert_eq!(remaining, 4 - i);
            }
            other => panic!("request {i}: {other:?}"),
        }
    }
    match quotas.check(&t, None) {
        QuotaOutcome::Limited {
            rule,
            retry_after_secs,
            feature,
        } => {
            assert_eq!(rule.limit, 60);
            assert_eq!(retry_after_secs, 1, "one request per second is earned back");
            assert!(!feature);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tenant_without_limits_is_unlimited_and_creates_no_state() {
    let quotas = LocalQuotas::default();
    let t = summary("free", Limits::default(), BTreeMap::new());
    for _ in 0..1000 {
        assert_eq!(quotas.check(&t, None), QuotaOutcome::Unlimited);
    }
    assert_eq!(quotas.tenants_with_state(), 0);
}

#[test]
fn feature_quotas_apply_to_their_feature_only() {
    let quotas = LocalQuotas::default();
    let mut fl = BTreeMap::new();
    fl.insert(
        "reports".to_string(),
        FeatureLimits {
            requests_per_day: Some(1440),
            requests_per_hour: None,
        },
    );
    let t = summary("acme", Limits::default(), fl);
    // 1440/day: a burst of one minute's worth = 1.
    assert!(matches!(
        quotas.check(&t, Some("reports")),
        QuotaOutcome::Allowed { .. }
    ));
    assert!(matches!(
        quotas.check(&t, Some("reports")),
        QuotaOutcome::Limited { feature: true, .. }
    ));
    assert_eq!(quotas.check(&t, Some("sales")), QuotaOutcome::Unlimited);
    assert_eq!(quotas.check(&t, None), QuotaOutcome::Unlimited);
}

#[test]
fn a_summary_remembers_its_state_per_backend_and_new_snapshots_share_it() {
    let allowed =
        |q: &LocalQuotas, t: &TenantQuota| matches!(q.check(t, None), QuotaOutcome::Allowed { .. });
    let (a, b) = (LocalQuotas::default(), LocalQuotas::default());
    let t = summary("acme", per_minute(60, Some(2)), BTreeMap::new());
    assert!(allowed(&a, &t) && allowed(&a, &t));
    assert!(!allowed(&a, &t));
    // Another backend (say, after a reconfiguration) counts on its own state, although
    // the summary already remembers the first one's.
    assert!(allowed(&b, &t) && allowed(&b, &t));
    assert!(!allowed(&b, &t));
    assert!(!allowed(&a, &t));
    // The same tenant in a new snapshot (same rules) finds the state already used.
    let rebuilt = summary("acme", per_minute(60, Some(2)), BTreeMap::new());
    assert!(!allowed(&a, &rebuilt));
    assert_eq!(a.tenants_with_state(), 1);
}

#[test]
fn a_license_change_resizes_live() {
    let quotas = LocalQuotas::default();
    let small = summary("acme", per_minute(60, Some(1)), BTreeMap::new());
    assert!(matches!(
        quotas.check(&small, None),
        QuotaOutcome::Allowed { .. }
    ));
    assert!(matches!(
        quotas.check(&small, None),
        QuotaOutcome::Limited { .. }
    ));
    let bigger = summary("acme", per_minute(600, Some(3)), BTreeMap::new());
    for _ in 0..3 {
        assert!(matches!(
            quotas.check(&bigger, None),
            QuotaOutcome::Allowed { .. }
        ));
    }
    assert!(matches!(
        quotas.check(&bigger, None),
        QuotaOutcome::Limited { .. }
    ));
}

#[test]
fn leases_cap_concurrency_and_release_on_drop() {
    let quotas = LocalQuotas::default();
    let t = summary(
        "acme",
        Limits {
            max_concurrent_connections: Some(2),
            ..Limits::default()
        },
        BTreeMap::new(),
    );
    let a = quotas.acquire(&t).unwrap().unwrap();
    let b = quotas.acquire(&t).unwrap().unwrap();
    assert_eq!(quotas.acquire(&t).unwrap_err(), 2);
    assert_eq!(quotas.in_flight(&t), 2);
    drop(a);
    let c = quotas.acquire(&t).unwrap().unwrap();
    drop((b, c));
    assert_eq!(quotas.in_flight(&t), 0);
    let unlimited = summary("free", Limits::default(), BTreeMap::new());
    assert!(quotas.acquire(&unlimited).unwrap().is_none());
}

#[test]
fn state_of_tenants_without_a_license_is_dropped() {
    let quotas = LocalQuotas::default();
    for i in 0..100 {
        let t = summary(&format!("t{i}"), per_minute(60, None), BTreeMap::new());
        quotas.check(&t, None);
    }
    assert_eq!(quotas.tenants_with_state(), 100);
    let snapshot = LicenseSnapshot {
        tenants: [(
            Arc::from("t7"),
            Arc::new(TenantSummary::with_limits(
                "t7",
                per_minute(60, None),
                BTreeMap::new(),
            )),
        )]
        .into_iter()
        .collect(),
        ..LicenseSnapshot::default()
    };
    quotas.retain_licensed(&snapshot);
    assert_eq!(quotas.tenants_with_state(), 1);
}

#[test]
fn several_windows_all_hold_and_a_short_window_refusal_consumes_nothing() {
    let quotas = LocalQuotas::default();
    // 600/minute (burst 10) and 180/hour (burst 3): the hour is the tighter one.
    let limits = Limits {
        requests_per_minute: Some(600),
        requests_per_hour: Some(180),
        ..Limits::default()
    };
    let t = summary("acme", limits, BTreeMap::new());
    for _ in 0..3 {
        assert!(matches!(
            quotas.check(&t, None),
            QuotaOutcome::Allowed { .. }
        ));
    }
    match quotas.check(&t, None) {
        QuotaOutcome::Limited {
            rule,
            retry_after_secs,
            ..
        } => {
            assert_eq!(rule.window, crate::quota::Window::Hour);
            assert_eq!(
                retry_after_secs, 20,
                "3600 s / 180 = one request every 20 s"
            );
        }
        other => panic!("{other:?}"),
    }
    // The minute window (burst 10) refuses first when it is the tighter one.
    let limits = Limits {
        requests_per_minute: Some(60),
        burst: Some(2),
        requests_per_day: Some(100_000),
        ..Limits::default()
    };
    let t = summary("globex", limits, BTreeMap::new());
    for _ in 0..2 {
        assert!(matches!(
            quotas.check(&t, None),
            QuotaOutcome::Allowed { .. }
        ));
    }
    match quotas.check(&t, None) {
        QuotaOutcome::Limited { rule, .. } => assert_eq!(rule.window, crate::quota::Window::Minute),
        other => panic!("{other:?}"),
    }
}
