use std::collections::BTreeMap;

use super::*;
use crate::license::claims::{FeatureLimits, Limits};
use crate::license::TenantSummary;
use crate::quota::test_quota as summary;
use crate::quota::TenantQuota;

/// 2026-12-01 07:37:12 UTC: 1,368 s before the hour ends.
const NOW: i64 = 1_796_110_632;
const HOUR_END: i64 = 1_796_112_000;

fn per_hour(n: u64) -> Limits {
    Limits {
        requests_per_hour: Some(n),
        ..Limits::default()
    }
}

fn allowed(outcome: QuotaOutcome) -> (u64, u64, u64) {
    match outcome {
        QuotaOutcome::Allowed {
            limit,
            remaining,
            reset_secs,
            ..
        } => (limit, remaining, reset_secs),
        other => panic!("not allowed: {other:?}"),
    }
}

fn refused(outcome: QuotaOutcome) -> (Rule, u64, i64, bool) {
    match outcome {
        QuotaOutcome::Limited {
            rule,
            retry_after_secs,
            resets_at,
            feature,
            ..
        } => (rule, retry_after_secs, resets_at, feature),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn exactly_n_per_window_counting_down_then_refused_until_the_window_ends() {
    let quotas = LocalQuotas::default();
    let t = summary("acme", per_hour(100), BTreeMap::new());
    for i in 0..100 {
        let (limit, remaining, reset) = allowed(quotas.check_at(&t, None, NOW));
        assert_eq!((limit, remaining), (100, 99 - i));
        assert_eq!(reset, (HOUR_END - NOW).unsigned_abs());
    }
    let (rule, retry_after, resets_at, feature) = refused(quotas.check_at(&t, None, NOW + 5));
    assert_eq!(
        rule,
        Rule::Window(WindowRule {
            window: Window::Hour,
            limit: 100
        })
    );
    assert_eq!(retry_after, (HOUR_END - NOW - 5).unsigned_abs());
    assert_eq!(resets_at, HOUR_END);
    assert!(!feature);
    // Still refused at the last second, counted again from 0 at the next hour.
    refused(quotas.check_at(&t, None, HOUR_END - 1));
    assert_eq!(allowed(quotas.check_at(&t, None, HOUR_END)).1, 99);
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
fn feature_quotas_apply_to_their_feature_only_and_a_refusal_counts_nowhere() {
    let quotas = LocalQuotas::default();
    let mut fl = BTreeMap::new();
    fl.insert(
        "reports".to_string(),
        FeatureLimits {
            requests_per_day: Some(2),
            ..FeatureLimits::default()
        },
    );
    let t = summary("acme", per_hour(10), fl);
    allowed(quotas.check_at(&t, Some("reports"), NOW));
    let (limit, remaining, _) = allowed(quotas.check_at(&t, Some("reports"), NOW));
    assert_eq!(
        (limit, remaining),
        (2, 0),
        "the feature's day is the tightest"
    );
    let (rule, _, _, feature) = refused(quotas.check_at(&t, Some("reports"), NOW));
    assert!(feature);
    assert!(matches!(
        rule,
        Rule::Window(WindowRule {
            window: Window::Day,
            limit: 2
        })
    ));
    // The refused request gave its hour back: 2 used, 8 left.
    assert_eq!(allowed(quotas.check_at(&t, Some("sales"), NOW)).1, 7);
    assert_eq!(allowed(quotas.check_at(&t, None, NOW)).1, 6);
}

#[test]
fn all_windows_hold_and_the_tightest_speaks_in_the_headers() {
    let quotas = LocalQuotas::default();
    let limits = Limits {
        requests_per_minute: Some(5),
        requests_per_day: Some(7),
        ..Limits::default()
    };
    let t = summary("acme", limits, BTreeMap::new());
    for _ in 0..5 {
        allowed(quotas.check_at(&t, None, NOW));
    }
    let (rule, retry, _, _) = refused(quotas.check_at(&t, None, NOW));
    assert!(matches!(
        rule,
        Rule::Window(WindowRule {
            window: Window::Minute,
            ..
        })
    ));
    assert_eq!(retry, 48, "07:37:12 → 07:38:00");
    // The next minute: the day has 2 left, and says so.
    let (limit, remaining, _) = allowed(quotas.check_at(&t, None, NOW + 60));
    assert_eq!((limit, remaining), (7, 1));
    allowed(quotas.check_at(&t, None, NOW + 60));
    let (rule, _, resets_at, _) = refused(quotas.check_at(&t, None, NOW + 61));
    assert!(matches!(
        rule,
        Rule::Window(WindowRule {
            window: Window::Day,
            ..
        })
    ));
    assert_eq!(resets_at, 1_796_169_600, "midnight UTC");
}

#[test]
fn a_month_is_the_calendar_month() {
    let quotas = LocalQuotas::default();
    let t = summary(
        "acme",
        Limits {
            requests_per_month: Some(1),
            ..Limits::default()
        },
        BTreeMap::new(),
    );
    allowed(quotas.check_at(&t, None, NOW));
    let (_, retry, resets_at, _) = refused(quotas.check_at(&t, None, NOW));
    // 2027-01-01T00:00:00Z.
    assert_eq!(resets_at, 1_798_761_600);
    assert_eq!(retry, (1_798_761_600 - NOW).unsigned_abs());
    allowed(quotas.check_at(&t, None, 1_798_761_600));
}

#[test]
fn smoothing_is_opt_in_and_a_smoothing_refusal_counts_nowhere() {
    let quotas = LocalQuotas::default();
    // 100 per hour and nothing else: 100 at once are fine.
    let plain = summary("plain", per_hour(100), BTreeMap::new());
    for _ in 0..100 {
        allowed(quotas.check_at(&plain, None, NOW));
    }
    // With a burst of 3: the fourth at once is refused by the smoothing, and the hour
    // keeps only the three.
    let smooth = summary(
        "smooth",
        Limits {
            requests_per_hour: Some(100),
            burst: Some(3),
            ..Limits::default()
        },
        BTreeMap::new(),
    );
    for _ in 0..3 {
        allowed(quotas.check_at(&smooth, None, NOW));
    }
    let (rule, retry, _, _) = refused(quotas.check_at(&smooth, None, NOW));
    match rule {
        Rule::Smooth(s) => {
            assert_eq!(s.burst, 3);
            assert_eq!(s.period, Duration::from_secs(36), "3600 s / 100");
        }
        other => panic!("{other:?}"),
    }
    assert!((35..=36).contains(&retry), "{retry}");
    let usage = quotas.usage_at(&smooth, NOW);
    assert_eq!(usage[0].window, "hour");
    assert_eq!(usage[0].used, 3, "the smoothing's refusal counted nowhere");
    assert_eq!(usage[1].window, "burst");
    assert_eq!(usage[1].remaining, 0, "{usage:?}");
}

#[test]
fn a_summary_remembers_its_state_per_backend_and_new_snapshots_share_it() {
    let ok = |q: &LocalQuotas, t: &TenantQuota| {
        matches!(q.check_at(t, None, NOW), QuotaOutcome::Allowed { .. })
    };
    let (a, b) = (LocalQuotas::default(), LocalQuotas::default());
    let t = summary("acme", per_hour(2), BTreeMap::new());
    assert!(ok(&a, &t) && ok(&a, &t));
    assert!(!ok(&a, &t));
    // Another backend (say, after a reconfiguration) counts on its own state, although
    // the summary already remembers the first one's.
    assert!(ok(&b, &t) && ok(&b, &t));
    assert!(!ok(&b, &t));
    assert!(!ok(&a, &t));
    // The same tenant in a new snapshot (same rules) finds the state already used.
    let rebuilt = summary("acme", per_hour(2), BTreeMap::new());
    assert!(!ok(&a, &rebuilt));
    assert_eq!(a.tenants_with_state(), 1);
}

#[test]
fn a_license_change_keeps_the_count_of_the_window() {
    let quotas = LocalQuotas::default();
    let mut fl = BTreeMap::new();
    fl.insert(
        "reports".to_string(),
        FeatureLimits {
            requests_per_hour: Some(5),
            ..FeatureLimits::default()
        },
    );
    let small = summary("acme", per_hour(3), fl.clone());
    for _ in 0..3 {
        allowed(quotas.check_at(&small, Some("reports"), NOW));
    }
    refused(quotas.check_at(&small, None, NOW));
    // A second license adds 10 per hour: 13 in all, 3 used already.
    let bigger = summary(
        "acme",
        Limits {
            requests_per_hour: Some(13),
            requests_per_day: Some(1_000),
            ..Limits::default()
        },
        fl,
    );
    assert_eq!(allowed(quotas.check_at(&bigger, None, NOW)).1, 9);
    // The feature's count moved along too: 3 of 5 used.
    let (limit, remaining, _) = allowed(quotas.check_at(&bigger, Some("reports"), NOW));
    assert_eq!((limit, remaining), (5, 1));
}

#[test]
fn concurrent_requests_are_counted_exactly() {
    let quotas = Arc::new(LocalQuotas::default());
    let t = Arc::new(summary("acme", per_hour(1_000), BTreeMap::new()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (quotas, t) = (Arc::clone(&quotas), Arc::clone(&t));
            std::thread::spawn(move || {
                (0..500)
                    .filter(|_| {
                        matches!(quotas.check_at(&t, None, NOW), QuotaOutcome::Allowed { .. })
                    })
                    .count()
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(admitted, 1_000);
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

fn snapshot_of(names: &[&str], limits: Limits) -> LicenseSnapshot {
    LicenseSnapshot {
        tenants: names
            .iter()
            .map(|n| {
                (
                    Arc::from(*n),
                    Arc::new(TenantSummary::with_limits(
                        n,
                        limits.clone(),
                        BTreeMap::new(),
                    )),
                )
            })
            .collect(),
        ..LicenseSnapshot::default()
    }
}

#[test]
fn state_of_tenants_without_a_license_is_dropped_but_its_counts_are_kept() {
    let quotas = LocalQuotas::default();
    for i in 0..100 {
        let t = summary(&format!("t{i}"), per_hour(60), BTreeMap::new());
        quotas.check(&t, None);
    }
    assert_eq!(quotas.tenants_with_state(), 100);
    quotas.retain_licensed(&snapshot_of(&["t7"], per_hour(60)));
    assert_eq!(quotas.tenants_with_state(), 1);
    // t8's license comes back within the hour: its one request still counts.
    let t8 = summary("t8", per_hour(60), BTreeMap::new());
    assert_eq!(allowed(quotas.check(&t8, None)).1, 58);
}

#[test]
fn saved_counts_restore_and_only_changes_are_saved_again() {
    let quotas = LocalQuotas::default();
    let mut fl = BTreeMap::new();
    fl.insert(
        "reports".to_string(),
        FeatureLimits {
            requests_per_day: Some(50),
            ..FeatureLimits::default()
        },
    );
    let t = summary(
        "acme",
        Limits {
            requests_per_day: Some(100),
            ..Limits::default()
        },
        fl,
    );
    for _ in 0..80 {
        allowed(quotas.check_at(&t, None, NOW));
    }
    allowed(quotas.check_at(&t, Some("reports"), NOW));
    let mut rows = Vec::new();
    let n = quotas.save(NOW, &mut rows, |_| Ok::<_, ()>(())).unwrap();
    assert_eq!(n, 2);
    let saved = rows.clone();
    assert_eq!(
        quotas.save(NOW, &mut rows, |_| Err(())),
        Ok(0),
        "nothing changed"
    );
    // A failed write: the next save writes every current count again.
    allowed(quotas.check_at(&t, None, NOW));
    assert_eq!(
        quotas.save(NOW, &mut rows, |_| Err("disk full")),
        Err("disk full")
    );
    quotas.save(NOW, &mut rows, |_| Ok::<_, ()>(())).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let again: Vec<_> = rows
        .iter()
        .filter(|r| r.feature.is_none())
        .cloned()
        .collect();
    assert_eq!(again[0].count, 82, "80 + 1 on the feature path + 1");

    // A new process restores them.
    let restarted = LocalQuotas::default();
    restarted.restore(saved.into_iter().chain(again), NOW + 10);
    let t = summary(
        "acme",
        Limits {
            requests_per_day: Some(100),
            ..Limits::default()
        },
        {
            let mut fl = BTreeMap::new();
            fl.insert(
                "reports".to_string(),
                FeatureLimits {
                    requests_per_day: Some(50),
                    ..FeatureLimits::default()
                },
            );
            fl
        },
    );
    assert_eq!(allowed(restarted.check_at(&t, None, NOW + 10)).1, 17);
    let (limit, remaining, _) = allowed(restarted.check_at(&t, Some("reports"), NOW + 10));
    assert_eq!(
        (limit, remaining),
        (100, 16),
        "the day's 16 are tighter than the feature's 48"
    );
    // Counts of a window that ended are not restored.
    let later = LocalQuotas::default();
    later.restore(
        [SavedCount {
            tenant: "acme".into(),
            feature: None,
            window: Window::Day,
            index: Window::Day.index(NOW),
            count: 99,
        }],
        NOW + 86_400,
    );
    assert_eq!(allowed(later.check_at(&t, None, NOW + 86_400)).1, 99);
}
