//! Path-bypass suite: request targets sent over raw sockets to the real gateway. For
//! each, either the request is refused with 400, or the gateway's decision is the
//! decision for the exact path the upstream received (a denial for a path the upstream
//! would have seen as licensed, or a forward of a path under an unlicensed feature,
//! is a failure). A property test mutates targets and checks the same invariant.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::*;
use licgate::config::{FeatureRule, Mode};
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, Algorithm, SigningKey};
use licgate::license::manager::build_snapshot;
use licgate::license::{Claims, License, LicenseSnapshot, StatusPolicy};
use licgate::policy::decide::{decide, Decision, Policy, RequestFacts};
use licgate::policy::path::{normalize, PathOptions, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const FEATURES: &str = r#"
[public]
paths = ["/static/"]
[[features]]
prefix = "/api/manufacturing/"
feature = "manufacturing_module"
[[features]]
prefix = "/api/hr"
feature = "hr"
[[features]]
prefix = "/admin"
feature = "admin_panel"
"#;

/// The gateway (licensed for `sales` only) and the same policy and snapshot in-process.
struct World {
    _upstream: Upstream,
    _dir: tempfile::TempDir,
    gw: Gateway,
    policy: Policy,
    snapshot: LicenseSnapshot,
}

fn claims(now: i64) -> Claims {
    let mut claims = test_claims("default", &["sales"], now, now + 100 * 86_400);
    claims.jti = "L1".into();
    claims.tier = Some("basic".into());
    claims
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_key_pair(&dir.path().join("keys"), &generate_ed25519()).unwrap();
    let now = SystemClock.now();
    let token =
        licgate::license::sign(&claims(now), &SigningKey::load(&private).unwrap(), None).unwrap();
    let store = licgate::license::store::Store::open(&dir.path().join("store")).unwrap();
    store.install("default", "L1", &token).unwrap();
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\n{FEATURES}",
            public.display(),
            dir.path().join("store").display()
        );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let rule = |prefix: &str, feature: &str| FeatureRule {
        prefix: prefix.into(),
        feature: feature.into(),
        methods: None,
        shadow: false,
        format_suffixes: true,
    };
    let policy = Policy::new(
        Mode::Enforce,
        &[
            rule("/api/manufacturing/", "manufacturing_module"),
            rule("/api/hr", "hr"),
            rule("/admin", "admin_panel"),
        ],
        &["/static/".to_string()],
        false,
    );
    let license = License {
        claims: claims(now),
        alg: Algorithm::EdDSA,
        kid: None,
    };
    let snapshot = build_snapshot(
        "x",
        &[license],
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        now,
    );
    World {
        _upstream: upstream,
        _dir: dir,
        gw,
        policy,
        snapshot,
    }
}

/// The decision for `path` as the library takes it: "forward" or an error code.
fn decision_for(world: &World, path: &str) -> String {
    let facts = RequestFacts {
        method: &http::Method::GET,
        path,
        tenant: Some("default"),
    };
    match decide(&facts, &world.policy, &world.snapshot) {
        Decision::Forward { .. } => "forward".into(),
        Decision::Deny { reason, .. } => reason.error_code().into(),
        Decision::Reserved => "reserved".into(),
    }
}

/// The target as the gateway sees it: pingora's parser drops a fragment (`#...`)
/// before any hook runs, for the decision and the forwarded request alike.
fn without_fragment(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'#') {
        Some(i) => &target[..i],
        None => target,
    }
}

/// Sends `target` and checks the invariant; returns a one-word outcome for counting.
async fn check(world: &World, target: &[u8]) -> Result<&'static str, String> {
    let addr: SocketAddr = world.gw.addr;
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let shown = String::from_utf8_lossy(target).into_owned();
    let resp = match raw_request(addr, &request).await {
        Ok(r) => r,
        // The connection closed without an answer: nothing reached the upstream.
        Err(_) => return Ok("closed"),
    };
    match resp.status {
        400 => Ok("400"),
        200 => {
            let received = resp.json()["path"].as_str().unwrap_or_default().to_string();
            let decided = decision_for(world, &received);
            if decided != "forward" {
                return Err(format!(
                    "{shown:?} was forwarded as {received:?}, which is {decided}"
                ));
            }
            // The gateway forwarded exactly its normalized path.
            match normalize(without_fragment(target), &PathOptions::default()) {
                Ok(Target::Path(p)) if p.path == received => Ok("forwarded"),
                other => Err(format!(
                    "{shown:?}: upstream got {received:?}, gateway normalized {other:?}"
                )),
            }
        }
        403 => {
            let code = resp.json()["error_code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let expected = match normalize(without_fragment(target), &PathOptions::default()) {
                Ok(Target::Path(p)) => decision_for(world, &p.path),
                other => {
                    return Err(format!(
                        "{shown:?}: 403 but the path does not normalize: {other:?}"
                    ))
                }
            };
            if code == expected {
                Ok("denied")
            } else {
                Err(format!(
                    "{shown:?}: gateway said {code}, the decision for its path is {expected}"
                ))
            }
        }
        other => Err(format!(
            "{shown:?}: unexpected status {other}: {}",
            resp.text()
        )),
    }
}

const TARGETS: &[&str] = &[
    "/api/manufacturing/plan",
    "/api/manufacturing",
    "/api/manufacturing/",
    "/api/manufacturingx",
    "/api/Manufacturing/plan",
    "/API/MANUFACTURING/plan",
    "/api/./manufacturing/plan",
    "/api/x/../manufacturing/plan",
    "/api//manufacturing/plan",
    "//api/manufacturing/plan",
    "/api/%2e/manufacturing/plan",
    "/api/x/%2e%2e/manufacturing/plan",
    "/api/x/.%2e/manufacturing/plan",
    "/api/x/%2e./manufacturing/plan",
    "/api/x/%2E%2E/manufacturing/plan",
    "/static/../api/manufacturing/plan",
    "/static/%2e%2e/api/manufacturing/plan",
    "/static/..%2fapi/manufacturing/plan",
    "/static/%2e%2e%2fapi/manufacturing/plan",
    "/api%2fmanufacturing/plan",
    "/api%2Fmanufacturing%2Fplan",
    "/api/manufacturing%2fplan",
    "/api%5cmanufacturing/plan",
    "/api\\manufacturing/plan",
    "/static\\..\\api/manufacturing/plan",
    "/api/%256danufacturing/plan",
    "/api/%252e%252e/manufacturing/plan",
    "/static/%252e%252e/api/manufacturing/plan",
    "/api/manufacturing;x=1/plan",
    "/api/manufacturing;/plan",
    "/..;/api/manufacturing/plan",
    "/static/..;/api/manufacturing/plan",
    "/api;/manufacturing/plan",
    "/api/manufacturing%3bx=1/plan",
    "/api/manufacturing%00/plan",
    "/api/manufacturing%0a",
    "/api/manufacturing%0d%0aX-Injected:%20y",
    "/api/manufacturing%09",
    "/api/%c0%ae%c0%ae/api/manufacturing/plan",
    "/%c0%afapi/manufacturing",
    "/api/manufacturing%c0%af",
    "/api/%e0%80%ae%e0%80%ae/manufacturing",
    "/api/manufacturing%zz",
    "/api/manufacturing%2",
    "/api/manufacturing%",
    "/api/manufacturing#frag",
    "/static/x#/../../api/manufacturing/plan",
    "/api/manufacturing%23/plan",
    "/api/x%23/../manufacturing/plan",
    "/api/manufacturing?x=/../../",
    "/api/manufacturing%3f/plan",
    "/static?/../api/manufacturing/plan",
    "/static/x?y=/../../api/manufacturing",
    "/api/manufacturing./plan",
    "/api/manufacturing../plan",
    "/api/manufacturing%2e/plan",
    "/api/manufacturing/.",
    "/api/manufacturing/..",
    "/api/manufacturing/../manufacturing/x",
    "/api/hr",
    "/api/hrx",
    "/api/hr/../sales",
    "/api/sales/../hr",
    "/api/sales/%2e%2e/hr",
    "/admin",
    "/admin/",
    "/adminx",
    "/static/app.css",
    "/staticx/../api/manufacturing",
    "/%61pi/manufacturing/plan",
    "/api/m%61nufacturing/plan",
    "/api/manufacturing/%2e%2e/%2e%2e/api/hr",
    "/a/b/c/../../../api/manufacturing",
    "/../api/manufacturing",
    "/./api/manufacturing",
    "/api/manufacturing/plan/",
    "/api/%7e/../manufacturing/x",
    "/api/sales/report",
    "http://127.0.0.1/api/manufacturing/plan",
    "*",
    "api/manufacturing",
    "/%2e%2e/api/manufacturing",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_cannot_bypass_the_feature_map() {
    let world = world().await;
    let mut failures = Vec::new();
    let mut outcomes = std::collections::BTreeMap::new();
    for target in TARGETS {
        match check(&world, target.as_bytes()).await {
            Ok(outcome) => *outcomes.entry(outcome).or_insert(0) += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(TARGETS.len() >= 80, "{} targets", TARGETS.len());
    assert!(
        failures.is_empty(),
        "{} bypasses:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The suite exercises every outcome.
    for outcome in ["400", "forwarded", "denied"] {
        assert!(
            outcomes.get(outcome).copied().unwrap_or(0) > 0,
            "{outcomes:?}"
        );
    }
    // Spot checks of what the upstream really received.
    let echo = |target: &'static str| {
        let addr = world.gw.addr;
        async move { http_get(addr, target).await.unwrap() }
    };
    assert_eq!(
        echo("/api/sales/%2e%2e/sales/x").await.json()["path"],
        "/api/sales/x"
    );
    assert_eq!(echo("/api/x/../sales").await.json()["path"], "/api/sales");
    assert_eq!(echo("/api/hr/../sales").await.json()["path"], "/api/sales");
    assert_eq!(
        echo("/api/%252e%252e/sales").await.json()["path"],
        "/api/%252e%252e/sales"
    );
}

/// Pieces a mutated target is made of.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2f",
    "%5c",
    "%25",
    "%252e",
    ";",
    ";x=1",
    "%3b",
    "%00",
    "%0a",
    "//",
    "api",
    "manufacturing",
    "hr",
    "sales",
    "static",
    "admin",
    "x",
    "%c0%ae",
    "%c3%a9",
    "?",
    "#",
    "%23",
    "\\",
    "%6d",
    "%61",
    "~",
    "-",
    "%7e",
];

fn target_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 1..12).prop_map(|pieces| {
        let mut t = String::from("/");
        for p in pieces {
            t.push_str(p);
        }
        t
    })
}

#[test]
fn mutated_targets_keep_gateway_and_app_in_agreement() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = Arc::new(runtime.block_on(world()));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let result = runner.run(&target_strategy(), |target| {
        let outcome = runtime
            .block_on(check(&world, target.as_bytes()))
            .map_err(TestCaseError::fail)?;
        *outcomes.lock().unwrap().entry(outcome).or_insert(0) += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.values().sum::<usize>(), 300, "{outcomes:?}");
    assert!(
        outcomes.contains_key("400") && outcomes.contains_key("forwarded"),
        "{outcomes:?}"
    );
    eprintln!("mutated targets: {outcomes:?}");
}
