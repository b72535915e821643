//! Operations through the real gateway: Prometheus metrics after known request
//! sequences, the admin API (auth, tenants, install, remove, revoke, reload), live
//! reload (SIGHUP, API, file watch; broken files; under load) and the access log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::setup::{Setup, DAY};
use crate::common::*;

const TOKEN: &str = "0123456789abcdef-admin-token";

/// `setup`'s configuration with an admin token file (and `extra` sections).
fn config_with_token(setup: &Setup, mode: &str, extra: &str) -> String {
    let token_file = setup.dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    setup.config(mode, extra).replace(
        "[admin]\n",
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    )
}

/// One request to `addr` with an optional bearer token and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    raw_request(addr, &bytes).await.unwrap()
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> RawResponse {
    request(
        gw.admin,
        method,
        path,
        Some(TOKEN),
        "application/json",
        body.as_bytes(),
    )
    .await
}

/// A parsed `/metrics` scrape: every sample line by name and labels.
struct Scrape {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    async fn of(gw: &Gateway) -> Scrape {
        let resp = http_get(gw.admin, "/metrics").await.unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        Scrape::parse(resp.text())
    }

    /// Parses the text exposition strictly: `# HELP` and `# TYPE` precede every
    /// family's samples, names and label names are valid, values are numbers, and the
    /// `prometheus-parse` crate reads the same number of samples.
    fn parse(text: String) -> Scrape {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut helped = std::collections::HashSet::new();
        let mut typed = std::collections::HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(valid_name(name) && !help.is_empty(), "{line}");
                helped.insert(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                typed.insert(name.to_string(), kind.to_string());
                continue;
            }
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels closed");
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").expect("label pair");
                        assert!(valid_name(k), "{line}");
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
            };
            assert!(valid_name(&name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|base| typed.get(*base).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                helped.contains(&family) && typed.contains_key(&family),
                "{family} has no HELP/TYPE"
            );
            samples.push((name, labels, value));
        }
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("prometheus-parse reads the exposition");
        assert!(!parsed.samples.is_empty());
        Scrape { text, samples }
    }

    /// The value of the sample `name` whose labels include `labels` exactly once.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(matching.len() <= 1, "{name} {labels:?} appears twice");
        matching.first().copied()
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{}", self.text))
    }
}

/// Waits up to 5 s for the sample to reach `value`.
async fn eventually(gw: &Gateway, name: &str, labels: &[(&str, &str)], value: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = Scrape::of(gw).await;
        if m.value(name, labels) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {labels:?} never {value}:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_exactly() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let now = licgate::license::clock::Clock::now(&licgate::license::clock::SystemClock);
    let mut claims = test_claims("default", &["sales"], now, now + 30 * DAY);
    claims.iss = Some("Vendor".into());
    claims.limits.requests_per_minute = Some(60);
    claims.limits.burst = Some(4);
    let token = licgate::license::sign(
        &claims,
        &licgate::license::keys::SigningKey::load(&setup.private).unwrap(),
        None,
    )
    .unwrap();
    setup.preinstall(&token, "default.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;

    for _ in 0..4 {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    }
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 429);
    for _ in 0..2 {
        let denied = http_get(gw.addr, "/api/manufacturing/a").await.unwrap();
        assert_eq!(denied.status, 403);
    }
    assert_eq!(
        http_get(gw.addr, "/static/a.css").await.unwrap().status,
        200
    );
    assert_eq!(
        http_get(gw.addr, "/_licgate/status").await.unwrap().status,
        200
    );
    assert_eq!(http_get(gw.addr, "/a%00b").await.unwrap().status, 400);
    let bad_key = request(
        gw.addr,
        "POST",
        "/_licgate/activate",
        None,
        "application/json",
        br#"{"license_key": "not-a-token"}"#,
    )
    .await;
    assert_eq!(bad_key.status, 400);

    let m = Scrape::of(&gw).await;
    let requests = |decision| {
        m.get(
            "licgate_requests_total",
            &[("tenant", "default"), ("decision", decision)],
        )
    };
    assert_eq!(requests("allowed"), 4.0);
    assert_eq!(requests("limited"), 1.0);
    assert_eq!(requests("denied"), 2.0);
    assert_eq!(requests("public"), 1.0);
    assert_eq!(requests("gateway"), 2.0);
    assert_eq!(
        m.value(
            "licgate_requests_total",
            &[("tenant", "default"), ("decision", "shadowed")]
        ),
        None
    );
    assert_eq!(
        m.get(
            "licgate_requests_total",
            &[("tenant", "_unknown"), ("decision", "rejected")]
        ),
        1.0
    );
    let denials = |reason| {
        m.get(
            "licgate_denials_total",
            &[("tenant", "default"), ("reason", reason)],
        )
    };
    assert_eq!(denials("FEATURE_NOT_LICENSED"), 2.0);
    assert_eq!(denials("USAGE_LIMIT_EXCEEDED"), 1.0);
    assert_eq!(
        m.get(
            "licgate_quota_rejections_total",
            &[("tenant", "default"), ("kind", "rate")]
        ),
        1.0
    );
    assert_eq!(
        m.get("licgate_activations_total", &[("result", "rejected")]),
        1.0
    );
    assert_eq!(
        m.get("licgate_activations_total", &[("result", "installed")]),
        0.0
    );
    assert_eq!(
        m.get(
            "licgate_license_status",
            &[("tenant", "default"), ("status", "VALID")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "licgate_license_expiry_timestamp_seconds",
            &[("tenant", "default")]
        ),
        (now + 30 * DAY) as f64
    );
    assert_eq!(
        m.get("licgate_tenants_by_status", &[("status", "VALID")]),
        1.0
    );
    assert_eq!(
        m.get("licgate_tenants_by_status", &[("status", "GRACE")]),
        0.0
    );
    eventually(
        &gw,
        "licgate_active_connections",
        &[("tenant", "default")],
        0.0,
    )
    .await;
    // Decisions timed: 4 allowed + 1 limited + 2 denied + 1 public + 1 rejected.
    assert_eq!(m.get("licgate_decision_duration_seconds_count", &[]), 9.0);
    // Upstream answers timed: 4 allowed + 1 public.
    assert_eq!(m.get("licgate_upstream_duration_seconds_count", &[]), 5.0);
    assert_eq!(
        m.get(
            "licgate_upstream_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(
        m.get("licgate_upstream_errors_total", &[("kind", "timeout")]),
        0.0
    );
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(
        m.get(
            "licgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(m.get("process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_and_active_connections_are_counted() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["sales"], 30), "default.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    // A slow request is active while it is under way.
    let slow = tokio::spawn({
        let addr = gw.addr;
        async move { http_get(addr, "/slow?delay_ms=800").await.unwrap().status }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = Scrape::of(&gw).await;
        if m.value("licgate_active_connections", &[("tenant", "default")]) == Some(1.0) {
            assert!(m.get("licgate_in_flight_requests", &[]) >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "never active:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.await.unwrap(), 200);
    // The request ends (and leaves the gauge) just after its response is sent.
    eventually(
        &gw,
        "licgate_active_connections",
        &[("tenant", "default")],
        0.0,
    )
    .await;

    // The upstream goes away: 502s are counted as unavailable.
    let dead = dead_addr();
    let gw2 = Gateway::start_with(&setup.config("enforce", ""), dead).await;
    for _ in 0..3 {
        assert_eq!(http_get(gw2.addr, "/x").await.unwrap().status, 502);
    }
    let m = Scrape::of(&gw2).await;
    assert_eq!(
        m.get("licgate_upstream_errors_total", &[("kind", "unavailable")]),
        3.0
    );
    eventually(
        &gw2,
        "licgate_active_connections",
        &[("tenant", "default")],
        0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_cardinality_stays_bounded_under_random_tenant_names() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("acme", &["sales"], 30), "acme.jwt");
    let config = setup.config(
        "enforce",
        "[tenants]\nmode = \"host\"\nhost_pattern = \"{tenant}.example.test\"\n",
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    for i in 0..300u32 {
        let host = format!("random-{}-{i}.example.test", i.wrapping_mul(2_654_435_761));
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(
            raw_request(gw.addr, req.as_bytes()).await.unwrap().status,
            403
        );
    }
    let req = "GET /x HTTP/1.1\r\nHost: acme.example.test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw_request(gw.addr, req.as_bytes()).await.unwrap().status,
        200
    );
    let m = Scrape::of(&gw).await;
    let tenants: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|(_, l, _)| l.get("tenant").map(String::as_str))
        .collect();
    assert_eq!(
        tenants.into_iter().collect::<Vec<_>>(),
        vec!["_unknown", "acme"]
    );
    assert_eq!(
        m.get(
            "licgate_requests_total",
            &[("tenant", "_unknown"), ("decision", "denied")]
        ),
        300.0
    );
    assert_eq!(
        m.get(
            "licgate_requests_total",
            &[("tenant", "acme"), ("decision", "allowed")]
        ),
        1.0
    );
    let series = m
        .samples
        .iter()
        .filter(|(_, l, _)| l.contains_key("tenant"))
        .count();
    assert!(series < 20, "{series} tenant series");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_is_off_without_one() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    // No token configured: /admin/ answers 404 whatever is sent; /metrics is open.
    let open = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let resp = request(
        open.admin,
        "GET",
        "/admin/v1/tenants",
        Some(TOKEN),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(resp.status, 404);
    let resp = request(
        open.admin,
        "POST",
        "/admin/v1/reload",
        None,
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(resp.status, 404);
    assert_eq!(http_get(open.admin, "/metrics").await.unwrap().status, 200);
    drop(open);

    let gw = Gateway::start_with(&config_with_token(&setup, "enforce", ""), upstream.addr).await;
    let missing = request(
        gw.admin,
        "GET",
        "/admin/v1/tenants",
        None,
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"licgate-admin\"")
    );
    assert_eq!(missing.json()["error_code"], "UNAUTHORIZED");
    let wrong = request(
        gw.admin,
        "GET",
        "/admin/v1/tenants",
        Some("0123456789abcdef-wrong"),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let prefix = request(
        gw.admin,
        "GET",
        "/admin/v1/tenants",
        Some(&TOKEN[..20]),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(prefix.status, 401);
    let basic = raw_request(
        gw.admin,
        format!("GET /admin/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(basic.status, 401);
    let right = request(
        gw.admin,
        "GET",
        "/admin/v1/tenants",
        Some(TOKEN),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(right.status, 200, "{}", right.text());
    assert_eq!(right.json()["total"], 0);
    // Wrong method and unknown endpoints, once authorized.
    assert_eq!(
        admin(&gw, "POST", "/admin/v1/tenants", "").await.status,
        405
    );
    assert_eq!(admin(&gw, "GET", "/admin/v1/nothing", "").await.status, 404);
    assert!(gw.logs().contains("admin API: wrong bearer token"));
    assert!(!gw.logs().contains(TOKEN), "the token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_remove_and_revoke_through_the_api_change_the_next_decision() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let gw = Gateway::start_with(&config_with_token(&setup, "enforce", ""), upstream.addr).await;
    let api = |path: &'static str| http_get(gw.addr, path);
    assert_eq!(
        api("/x").await.unwrap().json()["error_code"],
        "LICENSE_MISSING"
    );

    // Rejections: garbage, another tenant's license, an oversized body.
    let garbage = admin(
        &gw,
        "PUT",
        "/admin/v1/tenants/default/license",
        r#"{"license_key": "abc"}"#,
    )
    .await;
    assert_eq!(garbage.status, 422);
    assert_eq!(garbage.json()["error_code"], "LICENSE_INVALID");
    assert!(garbage.json()["details"]["reason"].as_str().unwrap().len() > 5);
    let other = setup.token("other", &["sales"], 30);
    let mismatch = request(
        gw.admin,
        "PUT",
        "/admin/v1/tenants/default/license",
        Some(TOKEN),
        "text/plain",
        other.as_bytes(),
    )
    .await;
    assert_eq!(mismatch.status, 422);
    assert_eq!(mismatch.json()["error_code"], "TENANT_MISMATCH");
    let huge = vec![b'a'; 200 * 1024];
    let too_large = request(
        gw.admin,
        "PUT",
        "/admin/v1/tenants/default/license",
        Some(TOKEN),
        "text/plain",
        &huge,
    )
    .await;
    assert_eq!(too_large.status, 413);
    let bad_name = admin(&gw, "PUT", "/admin/v1/tenants/a%20b/license", "{}").await;
    assert_eq!(bad_name.status, 400);
    assert_eq!(
        api("/x").await.unwrap().status,
        403,
        "nothing was installed"
    );

    // Install (raw token body), then the next request is allowed.
    let token = setup.token("default", &["sales"], 30);
    let installed = request(
        gw.admin,
        "PUT",
        "/admin/v1/tenants/default/license",
        Some(TOKEN),
        "application/jwt",
        token.as_bytes(),
    )
    .await;
    assert_eq!(installed.status, 200, "{}", installed.text());
    let jti = installed.json()["installed"].as_str().unwrap().to_string();
    assert_eq!(installed.json()["license"]["status"], "VALID");
    assert_eq!(api("/x").await.unwrap().status, 200);

    let list = admin(&gw, "GET", "/admin/v1/tenants", "").await.json();
    assert_eq!(list["total"], 1);
    assert_eq!(list["tenants"][0]["tenant"], "default");
    assert_eq!(list["tenants"][0]["license_ids"][0], jti);
    let filtered = admin(&gw, "GET", "/admin/v1/tenants?status=grace", "")
        .await
        .json();
    assert_eq!(filtered["total"], 0);
    let one = admin(&gw, "GET", "/admin/v1/tenants/default", "").await;
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["tenant"], "default");
    assert_eq!(one["usage"]["requests"]["allowed"], 1);
    // The request leaves `active_connections` just after its response is sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin(&gw, "GET", "/admin/v1/tenants/default", "")
        .await
        .json()["usage"]["active_connections"]
        != 0
    {
        assert!(Instant::now() < deadline, "active_connections never 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        admin(&gw, "GET", "/admin/v1/tenants/nobody", "")
            .await
            .status,
        404
    );

    // Revoke: persisted and applied at once.
    assert_eq!(
        admin(&gw, "POST", "/admin/v1/revocations", "{}")
            .await
            .status,
        400
    );
    let revoked = admin(
        &gw,
        "POST",
        "/admin/v1/revocations",
        &format!(r#"{{"jti": "{jti}"}}"#),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(
        api("/x").await.unwrap().json()["error_code"],
        "LICENSE_REVOKED"
    );
    let revocations = admin(&gw, "GET", "/admin/v1/revocations", "").await.json();
    assert_eq!(revocations["revocations"][0]["jti"], jti);

    // Remove the revoked license's file: the tenant is unlicensed again.
    let path = format!("/admin/v1/tenants/default/licenses/{jti}");
    assert_eq!(admin(&gw, "DELETE", &path, "").await.status, 200);
    assert_eq!(admin(&gw, "DELETE", &path, "").await.status, 404);
    assert_eq!(
        api("/x").await.unwrap().json()["error_code"],
        "LICENSE_MISSING"
    );

    // A fresh license with another id installs (JSON body) and works.
    let renewal = setup.token("default", &["sales", "reports"], 60);
    let body = serde_json::json!({ "license_key": renewal }).to_string();
    let reinstalled = admin(&gw, "PUT", "/admin/v1/tenants/default/license", &body).await;
    assert_eq!(reinstalled.status, 200, "{}", reinstalled.text());
    assert_eq!(api("/api/reports/q").await.unwrap().status, 200);

    let logs = gw.logs();
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "a license token was logged");
}

/// Rewrites the gateway's configuration file.
fn rewrite_config(gw: &Gateway, text: &str) {
    let path = gw.dir().join("licgate.toml");
    let tmp = gw.dir().join(".licgate.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// The gateway's current configuration file with its listen addresses filled in.
fn live_config(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.dir().join("licgate.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_files_and_keeps_serving_through_bad_ones() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["sales"], 30), "default.jwt");
    let gw = Gateway::start_with(
        &config_with_token(&setup, "enforce", "[reload]\nwatch = false\n"),
        upstream.addr,
    )
    .await;
    let manufacturing = || http_get(gw.addr, "/api/manufacturing/plan");
    assert_eq!(manufacturing().await.unwrap().status, 403);
    let original = live_config(&gw);

    // A broken file: the API reports every error with its location; nothing changes.
    let broken = original
        .replace("mode = \"enforce\"", "mode = \"enforce\"\nbogus = 1")
        .replace(
            "prefix = \"/api/manufacturing/\"",
            "prefix = \"api/manufacturing/\"",
        );
    rewrite_config(&gw, &broken);
    let failed = admin(&gw, "POST", "/admin/v1/reload", "").await;
    assert_eq!(failed.status, 422, "{}", failed.text());
    let errors = failed.json()["details"]["errors"].clone();
    let errors: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(errors.len() >= 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("licgate.toml:3:1") && e.contains("bogus")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("prefix")), "{errors:?}");
    assert_eq!(
        manufacturing().await.unwrap().status,
        403,
        "old config still in force"
    );
    let m = Scrape::of(&gw).await;
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(m.get("licgate_config_last_reload_successful", &[]), 0.0);
    assert!(gw.logs().contains("reload failed"));

    // SIGHUP with a good file: the feature rule is gone, the path is allowed.
    let without_rule = original.replace(
        "prefix = \"/api/manufacturing/\"\nfeature = \"manufacturing_module\"",
        "prefix = \"/api/other/\"\nfeature = \"manufacturing_module\"",
    );
    assert_ne!(without_rule, original);
    rewrite_config(&gw, &without_rule);
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while manufacturing().await.unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = Scrape::of(&gw).await;
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(m.get("licgate_config_last_reload_successful", &[]), 1.0);
    assert_eq!(m.get("licgate_config_restart_required", &[]), 0.0);

    // A listener change applies only after a restart, and says so.
    let moved = without_rule.replace(
        &format!("listen = \"{}\"", gw.admin),
        "listen = \"127.0.0.1:1\"",
    );
    assert_ne!(moved, without_rule);
    rewrite_config(&gw, &moved);
    let report = admin(&gw, "POST", "/admin/v1/reload", "").await;
    assert_eq!(report.status, 200, "{}", report.text());
    assert_eq!(
        report.json()["restart_required"],
        serde_json::json!(["admin.listen"])
    );
    assert_eq!(
        Scrape::of(&gw)
            .await
            .get("licgate_config_restart_required", &[]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_reload_the_config_and_rescan_the_store() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    // A long scan interval: only the watcher can notice changes in time.
    let config = setup
        .config("enforce", "")
        .replace("scan_interval = \"100ms\"", "scan_interval = \"1h\"");
    let gw = Gateway::start_with(&config, upstream.addr).await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 403);

    // A license file dropped into the store is picked up.
    let started = Instant::now();
    setup.preinstall(&setup.token("default", &["sales"], 30), "dropped.jwt");
    while http_get(gw.addr, "/x").await.unwrap().status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "store change not seen:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An edited configuration file is reloaded (shadow mode forwards the denial).
    assert_eq!(
        http_get(gw.addr, "/api/manufacturing/x")
            .await
            .unwrap()
            .status,
        403
    );
    let shadow = live_config(&gw).replace("mode = \"enforce\"", "mode = \"shadow\"");
    rewrite_config(&gw, &shadow);
    let started = Instant::now();
    while http_get(gw.addr, "/api/manufacturing/x")
        .await
        .unwrap()
        .status
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "config change not seen:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = Scrape::of(&gw).await;
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        m.get(
            "licgate_shadow_denials_total",
            &[("tenant", "default"), ("reason", "FEATURE_NOT_LICENSED")]
        ),
        1.0
    );
    // Touching the file without changing it does not reload.
    std::fs::write(gw.dir().join("licgate.toml"), &shadow).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = Scrape::of(&gw).await;
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "success")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["sales"], 30), "default.jwt");
    // 2,000 connections from one address: no per-client cap here.
    let config = config_with_token(&setup, "enforce", "[reload]\nwatch = false\n")
        .replace("threads = 1\n", "threads = 1\nmax_connections_per_ip = 0\n");
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let original = live_config(&gw);
    let variant = original.replace(
        "paths = [\"/static/\", \"/favicon.ico\"]",
        "paths = [\"/static/\", \"/favicon.ico\", \"/robots.txt\"]",
    );
    assert_ne!(variant, original);

    const REQUESTS: usize = 2000;
    let addr = gw.addr;
    let clients: Vec<_> = (0..REQUESTS)
        .map(|i| {
            tokio::spawn(async move {
                let path = format!("/load/{i}?delay_ms=400");
                http_get(addr, &path).await.map(|r| r.status)
            })
        })
        .collect();
    // Reload repeatedly while the requests are in flight, alternating two files.
    gw.until_in_flight(100).await;
    for round in 0..6 {
        rewrite_config(&gw, if round % 2 == 0 { &variant } else { &original });
        if round % 2 == 0 {
            gw.signal("HUP");
        } else {
            assert_eq!(admin(&gw, "POST", "/admin/v1/reload", "").await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for client in clients {
        let status = match client.await.unwrap() {
            Ok(s) => s.to_string(),
            Err(e) => format!("error: {e}"),
        };
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses.get("200"), Some(&REQUESTS), "{statuses:?}");
    let m = Scrape::of(&gw).await;
    assert_eq!(
        m.get("licgate_config_reloads_total", &[("result", "success")]),
        6.0
    );
    assert_eq!(
        m.get(
            "licgate_requests_total",
            &[("tenant", "default"), ("decision", "allowed")]
        ),
        REQUESTS as f64
    );
}

/// The access-log lines (JSON format) the gateway wrote so far.
fn access_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "licgate::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request_and_can_be_switched_off() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["sales"], 30), "default.jwt");
    let json = "[log]\nformat = \"json\"\n";
    let config = setup.config("enforce", "").replace("[log]\n", json);
    let gw = Gateway::start_with(&config, upstream.addr).await;
    assert_eq!(
        http_get(gw.addr, "/a/./b/../c?secret=1")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        http_get(gw.addr, "/api/manufacturing/x")
            .await
            .unwrap()
            .status,
        403
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = access_lines(&gw);
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "{}", gw.logs());
    let allowed = &lines[0];
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["path"], "/a/c", "normalized, without the query");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["tenant"], "default");
    assert_eq!(allowed["client"], "127.0.0.1");
    assert!(allowed["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(allowed["duration_ms"].as_f64().unwrap() >= allowed["upstream_ms"].as_f64().unwrap());
    let denied = &lines[1];
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["decision"], "denied");
    assert!(denied.get("upstream_ms").is_none_or(|v| v.is_null()));
    assert!(!gw.logs().contains("secret=1"));

    // Switched off: no access lines at all.
    let quiet = setup
        .config("enforce", "")
        .replace("[log]\n", &format!("{json}access = false\n"));
    let gw = Gateway::start_with(&quiet, upstream.addr).await;
    for _ in 0..3 {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(access_lines(&gw).is_empty(), "{}", gw.logs());
}

#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/licgate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let metrics = licgate::metrics::Metrics::new(
        None,
        None,
        std::sync::Arc::new(licgate::lifecycle::Inflight::default()),
    );
    let exported = metrics.family_names();
    let mut used = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("licgate_") || word.starts_with("process_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        exported.iter().any(|e| e == family),
                        "{family} is not exported"
                    );
                    used.insert(family.to_string());
                }
            }
        }
    }
    for needed in [
        "licgate_requests_total",
        "licgate_denials_total",
        "licgate_quota_rejections_total",
        "licgate_license_status",
        "licgate_license_expiry_timestamp_seconds",
        "licgate_decision_duration_seconds",
        "licgate_upstream_duration_seconds",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    let ids: std::collections::HashSet<u64> =
        panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_real_client_is_throttled_and_logged() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let config = setup
        .config("enforce", "")
        .replace("[log]\n", "[log]\nformat = \"json\"\n")
        .replace(
            "threads = 1\n",
            "threads = 1\ntrusted_proxies = [\"127.0.0.1\"]\n",
        );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let attempt = |forwarded_for: &str| {
        let body = "{\"license_key\": \"not-a-key\"}";
        format!(
            "POST /_licgate/activate HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded_for}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // One client behind the terminator uses up its attempts (10 per minute)...
    for _ in 0..10 {
        let r = raw_request(gw.addr, &attempt("203.0.113.1")).await.unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let r = raw_request(gw.addr, &attempt("203.0.113.1")).await.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error_code"], "ACTIVATION_RATE_LIMITED");
    // ...without locking out the others sharing the terminator's address, and a forged
    // left part of the chain does not pick the identity.
    let r = raw_request(gw.addr, &attempt("203.0.113.1, 203.0.113.2"))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "another client: {}", r.text());

    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = access_lines(&gw);
        if lines.len() >= 12 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 12, "{}", gw.logs());
    assert_eq!(lines[0]["client"], "203.0.113.1");
    assert_eq!(lines[11]["client"], "203.0.113.2");
}

/// Lines go to `log.access_file`; SIGUSR1 reopens it after a rotation; and an
/// orderly shutdown writes the line of every request served (none lost in the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_file_is_reopened_on_sigusr1_and_no_line_is_lost_on_sigterm() {
    const REQUESTS: usize = 400;
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let config = setup
        .config("enforce", "")
        .replace("[log]\n", "[log]\naccess_file = \"access.log\"\n");
    let mut gw = Gateway::start_with(&config, upstream.addr).await;
    let file = gw.dir().join("access.log");
    assert_eq!(http_get(gw.addr, "/first").await.unwrap().status, 403);
    crate::common::eventually(
        Duration::from_secs(10),
        "the first line in access.log",
        || std::fs::read_to_string(&file).is_ok_and(|t| t.contains("path=/first")),
    )
    .await;
    assert!(
        !gw.logs().contains("path=/first"),
        "access lines leave stderr alone"
    );

    // logrotate moves the file away and sends SIGUSR1: the next lines start a new file.
    let rotated = gw.dir().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    gw.signal("USR1");
    // The writer opens the new file as soon as it sees the request.
    crate::common::eventually(Duration::from_secs(10), "a new access.log", || {
        file.exists()
    })
    .await;
    for i in 0..REQUESTS {
        let status = http_get(gw.addr, &format!("/n/{i}")).await.unwrap().status;
        assert_eq!(status, 403);
    }
    gw.signal("TERM");
    let exit = gw.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert!(exit.success(), "{exit:?}: {}", gw.logs());
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&file).unwrap_or_default();
    let served = |text: &str| text.lines().filter(|l| l.contains("path=/n/")).count();
    assert_eq!(
        served(&new),
        REQUESTS,
        "every request's line, in the new file"
    );
    assert_eq!(served(&old), 0);
    assert_eq!(old.lines().count(), 1, "{old}");
}
