//! Quotas through the real gateway: rate limits from the license, feature quotas,
//! concurrency leases, 429 responses and `RateLimit-*` headers.

use std::time::{Duration, Instant};

use crate::common::*;
use licgate::license::claims::FeatureLimits;
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use licgate::license::store::Store;
use licgate::license::Claims;
use tokio::io::AsyncWriteExt;

/// A gateway whose tenant `default` holds a license shaped by `shape`.
async fn gateway(
    upstream: &Upstream,
    shape: impl FnOnce(&mut Claims),
) -> (Gateway, tempfile::TempDir) {
    gateway_at(upstream.addr, shape).await
}

/// [`gateway`] in front of the upstream at `upstream`.
async fn gateway_at(
    upstream: std::net::SocketAddr,
    shape: impl FnOnce(&mut Claims),
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_key_pair(&dir.path().join("keys"), &generate_ed25519()).unwrap();
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 30 * 86_400);
    shape(&mut claims);
    let token = sign(&claims, &SigningKey::load(&private).unwrap(), None).unwrap();
    Store::open(&dir.path().join("store"))
        .unwrap()
        .install("default", &claims.jti, &token)
        .unwrap();
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\n[public]\npaths = [\"/static/\"]\n[[features]]\nprefix = \"/api/reports\"\nfeature = \"reports\"\n",
            public.display(),
            dir.path().join("store").display()
        );
    (Gateway::start_with(&config, upstream).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_429_and_retry_after() {
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(&upstream, |c| {
        c.limits.requests_per_minute = Some(60);
        c.limits.burst = Some(3);
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-limit"), Some("60"));
        assert_eq!(resp.header("ratelimit-remaining"), Some(remaining));
        assert!(resp.header("ratelimit-reset").is_some());
    }
    let limited = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    let p = limited.json();
    assert_eq!(p["error_code"], "USAGE_LIMIT_EXCEEDED");
    assert_eq!(p["details"]["limit"], 60);
    assert_eq!(p["details"]["window"], "minute");
    assert_eq!(p["details"]["retry_after"], 1);
    // Browsers get a page.
    let page = raw_request(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(page.status, 429);
    assert!(page.text().contains("Usage limit reached"));
    // Retry-After is honest: after it, a request succeeds.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    // Public paths are not governed.
    for _ in 0..5 {
        let resp = http_get(gw.addr, "/static/a.css").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-limit"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_quota_applies_to_its_paths() {
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(&upstream, |c| {
        c.feature_limits.insert(
            "reports".into(),
            FeatureLimits {
                requests_per_day: Some(2880),
                requests_per_hour: None,
            },
        );
    })
    .await;
    // 2880/day: a burst of 2.
    assert_eq!(
        http_get(gw.addr, "/api/reports/1").await.unwrap().status,
        200
    );
    assert_eq!(
        http_get(gw.addr, "/api/reports/2").await.unwrap().status,
        200
    );
    let limited = http_get(gw.addr, "/api/reports/3").await.unwrap();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["details"]["feature"], "reports");
    assert_eq!(limited.json()["details"]["window"], "day");
    // Other paths are not under the feature quota.
    assert_eq!(http_get(gw.addr, "/api/sales/1").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_leases_are_released_however_requests_end() {
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(&upstream, |c| c.limits.max_concurrent_connections = Some(1)).await;
    let addr = gw.addr;

    // One slow request holds the only slot.
    let slow = tokio::spawn(async move { http_get(addr, "/slow?delay_ms=800").await });
    gw.until_in_flight(1).await;
    let refused = http_get(addr, "/x").await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error_code"], "CONCURRENCY_LIMIT_EXCEEDED");
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    assert_eq!(
        http_get(addr, "/x").await.unwrap().status,
        200,
        "released on completion"
    );

    // A client that disconnects mid-request releases its slot.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow?delay_ms=400 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    gw.until_in_flight(1).await;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = http_get(addr, "/x").await.unwrap().status;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot never released after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_releases_the_slot() {
    let (gw, _dir) = {
        let upstream = Upstream::start().await;
        let made = gateway(&upstream, |c| c.limits.max_concurrent_connections = Some(1)).await;
        drop(upstream);
        made
    };
    for _ in 0..3 {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(
            resp.status, 502,
            "the slot of the failed request is free again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_holds_a_slot_until_it_closes() {
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(&upstream, |c| c.limits.max_concurrent_connections = Some(1)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("websocket through the gateway");
    let refused = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error_code"], "CONCURRENCY_LIMIT_EXCEEDED");
    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(gw.addr, "/x").await.unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "the slot was not released when the WebSocket closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unknown tenants never create quota state; licensed ones create at most one entry
/// each, dropped when their license goes away.
#[test]
fn quota_state_is_bounded_by_licensed_tenants() {
    use licgate::config::Mode;
    use licgate::license::keys::Algorithm;
    use licgate::license::manager::build_snapshot;
    use licgate::license::{License, StatusPolicy};
    use licgate::policy::decide::{decide, Decision, Policy, RequestFacts};
    use licgate::quota::local::LocalQuotas;

    let now = SystemClock.now();
    let licenses: Vec<License> = (0..10_000)
        .map(|i| {
            let mut claims = test_claims(&format!("t{i}"), &[], now, now + 86_400);
            claims.limits.requests_per_minute = Some(600);
            License {
                claims,
                alg: Algorithm::EdDSA,
                kid: None,
            }
        })
        .collect();
    let snapshot = build_snapshot(
        "x",
        &licenses,
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        now,
    );
    let tenants = licgate::tenants::Tenants::of(snapshot);
    let table = tenants.load_full();
    let policy = Policy::new(Mode::Enforce, &[], &[], false);
    let quotas = LocalQuotas::default();
    let get = http::Method::GET;
    // What the glue does: only a forwarded request of a licensed tenant is counted.
    let count = |tenant: &str| {
        let facts = RequestFacts {
            method: &get,
            path: "/x",
            tenant: Some(tenant),
        };
        if let Decision::Forward {
            tenant: Some(entry),
            governed: true,
            feature,
            ..
        } = decide(&facts, &policy, &*table)
        {
            quotas.check(&entry.quota, feature);
        }
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..100_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        count(&format!("unknown-{seed:x}"));
    }
    assert_eq!(
        quotas.tenants_with_state(),
        0,
        "unknown tenants create no state"
    );
    for i in 0..10_000 {
        count(&format!("t{i}"));
    }
    assert_eq!(quotas.tenants_with_state(), 10_000);
    // The licenses go away: so does the state.
    let empty = build_snapshot(
        "x",
        &licenses[..10],
        &[],
        &Default::default(),
        &StatusPolicy::default(),
        now,
    );
    quotas.retain_licensed(&empty);
    assert_eq!(quotas.tenants_with_state(), 10);
}

/// An upstream on a raw socket that answers every request with its own
/// `RateLimit-Limit` and `X-Licgate-Warning` (which the gateway must replace, not add to).
async fn upstream_with_its_own_rate_headers() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
{
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 999\r\nratelimit-reset: 1\r\nX-Licgate-Warning: from the app\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rate_headers_replace_the_upstreams_own() {
    let (raw_upstream, task) = upstream_with_its_own_rate_headers().await;
    let (gw, _dir) = gateway_at(raw_upstream, |c| {
        c.limits.requests_per_minute = Some(60);
        c.limits.burst = Some(5);
    })
    .await;
    let resp = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    let values = |name: &str| -> Vec<&str> {
        resp.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("ratelimit-limit"), ["60"], "{}", resp.head);
    assert_eq!(values("ratelimit-remaining"), ["4"], "{}", resp.head);
    assert_eq!(values("ratelimit-reset").len(), 1, "{}", resp.head);
    // No warning applies to a valid license; the upstream's own passes through.
    assert_eq!(values("x-licgate-warning"), ["from the app"]);
    assert_eq!(resp.body, b"ok");
    task.abort();
}
