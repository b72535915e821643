use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::license::Limits;

fn summary(tenant: &str, status: Status, features: &[&str]) -> TenantSummary {
    TenantSummary {
        tenant: tenant.into(),
        status,
        tier: Some("professional".into()),
        tier_name: None,
        features: {
            let mut sorted: Vec<Arc<str>> = features.iter().map(|f| Arc::from(*f)).collect();
            sorted.sort_unstable();
            sorted.into_boxed_slice()
        },
        limits: Limits::default(),
        feature_limits: BTreeMap::new(),
        restrictions: Default::default(),
        flags: vec![],
        expires_at: Some(2_000_000_000),
        license_ids: vec!["L1".into()],
        warnings: vec![],
        next_change: None,
    }
}

fn snapshot(tenants: Vec<TenantSummary>) -> LicenseSnapshot {
    LicenseSnapshot {
        tenants: tenants
            .into_iter()
            .map(|t| (t.tenant.clone(), std::sync::Arc::new(t)))
            .collect(),
        ..LicenseSnapshot::default()
    }
}

fn rule(prefix: &str, feature: &str) -> FeatureRule {
    FeatureRule {
        prefix: prefix.into(),
        feature: feature.into(),
        methods: None,
        shadow: false,
        format_suffixes: true,
    }
}

fn policy(mode: Mode) -> Policy {
    let mut write = rule("/api/reports", "reports_write");
    write.methods = Some(vec![Method::POST]);
    let mut beta = rule("/api/beta", "beta");
    beta.shadow = true;
    Policy::new(
        mode,
        &[
            rule("/api/manufacturing/", "manufacturing_module"),
            rule("/api/reports", "reports"),
            write,
            beta,
        ],
        &["/static/".to_string(), "/favicon.ico".to_string()],
        false,
    )
}

/// A compact view of a decision for assertions.
fn verdict(d: Decision<'_, '_>) -> String {
    match d {
        Decision::Reserved => "reserved".into(),
        Decision::Forward {
            shadowed: None,
            feature,
            ..
        } => format!("forward {}", feature.map_or("-", |f| &**f)),
        Decision::Forward {
            shadowed: Some(r), ..
        } => format!("shadow {}", r.error_code()),
        Decision::Deny { reason, .. } => reason.error_code().into(),
    }
}

fn check(
    policy: &Policy,
    licenses: &LicenseSnapshot,
    tenant: Option<&str>,
    method: Method,
    path: &str,
) -> String {
    verdict(decide(
        &RequestFacts {
            method: &method,
            path,
            tenant,
        },
        policy,
        licenses,
    ))
}

#[test]
fn the_decisions_table() {
    let p = policy(Mode::Enforce);
    let licenses = snapshot(vec![
        summary("valid", Status::Valid, &["reports"]),
        summary("soon", Status::ExpiringSoon, &[]),
        summary("grace", Status::Grace, &[]),
        summary("ro", Status::ReadOnly, &[]),
        summary("expired", Status::Expired, &[]),
        summary("revoked", Status::Revoked, &[]),
        summary("invalid", Status::Invalid, &[]),
        summary("future", Status::NotYetValid, &[]),
    ]);
    let cases: &[(Option<&str>, Method, &str, &str)] = &[
        (None, Method::GET, "/", "LICENSE_MISSING"),
        (Some("nobody"), Method::GET, "/", "LICENSE_MISSING"),
        (Some("valid"), Method::GET, "/", "forward -"),
        (Some("soon"), Method::POST, "/x", "forward -"),
        (Some("grace"), Method::DELETE, "/x", "forward -"),
        (Some("ro"), Method::GET, "/x", "forward -"),
        (Some("ro"), Method::HEAD, "/x", "forward -"),
        (Some("ro"), Method::OPTIONS, "/x", "forward -"),
        (Some("ro"), Method::POST, "/x", "LICENSE_READ_ONLY"),
        (Some("ro"), Method::PATCH, "/x", "LICENSE_READ_ONLY"),
        (Some("expired"), Method::GET, "/", "LICENSE_EXPIRED"),
        (Some("revoked"), Method::GET, "/", "LICENSE_REVOKED"),
        (Some("invalid"), Method::GET, "/", "LICENSE_INVALID"),
        (Some("future"), Method::GET, "/", "LICENSE_NOT_YET_VALID"),
        (
            Some("valid"),
            Method::GET,
            "/api/manufacturing/plan",
            "FEATURE_NOT_LICENSED",
        ),
        (
            Some("valid"),
            Method::GET,
            "/api/manufacturing",
            "FEATURE_NOT_LICENSED",
        ),
        (
            Some("valid"),
            Method::GET,
            "/api/manufacturingx",
            "forward -",
        ),
        (
            Some("valid"),
            Method::GET,
            "/api/reports/1",
            "forward reports",
        ),
        (
            Some("valid"),
            Method::POST,
            "/api/reports/1",
            "FEATURE_NOT_LICENSED",
        ),
        (
            Some("valid"),
            Method::GET,
            "/api/beta/x",
            "shadow FEATURE_NOT_LICENSED",
        ),
        // Public paths and the reserved prefix come before the license gate.
        (None, Method::GET, "/static/app.css", "forward -"),
        (Some("expired"), Method::GET, "/favicon.ico", "forward -"),
        (None, Method::GET, "/staticx", "LICENSE_MISSING"),
        (None, Method::GET, "/_licgate/activate", "reserved"),
        (None, Method::POST, "/_licgate", "reserved"),
        (None, Method::GET, "/_licgatex", "LICENSE_MISSING"),
    ];
    for (tenant, method, path, expected) in cases {
        assert_eq!(
            &check(&p, &licenses, *tenant, method.clone(), path),
            expected,
            "{tenant:?} {method} {path}"
        );
    }
}

#[test]
fn shadow_mode_forwards_what_it_would_deny() {
    let p = policy(Mode::Shadow);
    let licenses = snapshot(vec![summary("valid", Status::Valid, &[])]);
    assert_eq!(
        check(&p, &licenses, None, Method::GET, "/"),
        "shadow LICENSE_MISSING"
    );
    assert_eq!(
        check(
            &p,
            &licenses,
            Some("valid"),
            Method::GET,
            "/api/manufacturing/x"
        ),
        "shadow FEATURE_NOT_LICENSED"
    );
    assert_eq!(
        check(&p, &licenses, None, Method::GET, "/_licgate/status"),
        "reserved"
    );
}

#[test]
fn case_insensitive_matching_uses_lowercase_keys() {
    let p = Policy::new(Mode::Enforce, &[rule("/API/Manufacturing", "m")], &[], true);
    assert_eq!(
        p.feature_for(&Method::GET, "/api/manufacturing/x")
            .unwrap()
            .feature,
        Arc::<str>::from("m")
    );
}

#[test]
fn method_rules_ignore_case_and_get_covers_head() {
    let mut write = rule("/api/orders", "orders_write");
    write.methods = Some(vec![Method::POST, Method::DELETE]);
    let mut read = rule("/api/ledger", "ledger_read");
    read.methods = Some(vec![Method::GET]);
    let p = Policy::new(Mode::Enforce, &[write, read], &[], false);
    let licenses = snapshot(vec![summary("t", Status::Valid, &[])]);
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    for (method, path, expected) in [
        ("POST", "/api/orders/1", "FEATURE_NOT_LICENSED"),
        ("post", "/api/orders/1", "FEATURE_NOT_LICENSED"),
        ("Delete", "/api/orders/1", "FEATURE_NOT_LICENSED"),
        ("GET", "/api/orders/1", "forward -"),
        ("GET", "/api/ledger", "FEATURE_NOT_LICENSED"),
        ("get", "/api/ledger", "FEATURE_NOT_LICENSED"),
        ("HEAD", "/api/ledger", "FEATURE_NOT_LICENSED"),
        ("head", "/api/ledger", "FEATURE_NOT_LICENSED"),
        ("POST", "/api/ledger", "forward -"),
    ] {
        assert_eq!(
            check(&p, &licenses, Some("t"), m(method), path),
            expected,
            "{method} {path}"
        );
    }
}

#[test]
fn format_suffixes_are_covered_unless_the_rule_opts_out() {
    let mut plain = rule("/api/raw/", "raw");
    plain.format_suffixes = false;
    let p = Policy::new(
        Mode::Enforce,
        &[rule("/api/manufacturing/", "manufacturing_module"), plain],
        &[],
        false,
    );
    let licenses = snapshot(vec![summary("t", Status::Valid, &[])]);
    for (path, expected) in [
        ("/api/manufacturing.json", "FEATURE_NOT_LICENSED"),
        ("/api/manufacturing.json/", "FEATURE_NOT_LICENSED"),
        ("/api/manufacturing.csv/", "FEATURE_NOT_LICENSED"),
        ("/api/manufacturing/1.json", "FEATURE_NOT_LICENSED"),
        ("/api/manufacturingx.json", "forward -"),
        ("/api/raw.json", "forward -"),
        ("/api/raw/x.json", "FEATURE_NOT_LICENSED"),
    ] {
        assert_eq!(
            check(&p, &licenses, Some("t"), Method::GET, path),
            expected,
            "{path}"
        );
    }
}
