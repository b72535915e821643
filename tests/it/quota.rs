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

const ADMIN_TOKEN: &str = "quota-tests-admin-token-0123456789";

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
    let config = licensed_config(dir.path(), shape);
    (Gateway::start_with(&config, upstream).await, dir)
}

/// A configuration template whose store in `dir` holds a license shaped by `shape`.
fn licensed_config(dir: &std::path::Path, shape: impl FnOnce(&mut Claims)) -> String {
    let (private, public) = write_key_pair(&dir.join("keys"), &generate_ed25519()).unwrap();
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 30 * 86_400);
    shape(&mut claims);
    let token = sign(&claims, &SigningKey::load(&private).unwrap(), None).unwrap();
    Store::open(&dir.join("store"))
        .unwrap()
        .install("default", &claims.jti, &token)
        .unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    BASE_CONFIG
        .replace("mode = \"off\"", "mode = \"enforce\"")
        .replace(
            "[admin]\n",
            &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
        )
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\n[public]\npaths = [\"/static/\"]\n[[features]]\nprefix = \"/api/reports\"\nfeature = \"reports\"\n",
            public.display(),
            dir.join("store").display()
        )
}

/// An upstream on a raw socket that counts the requests it executes and answers each
/// with `answer`.
async fn counting_upstream(
    answer: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let executed = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executed);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = std::sync::Arc::clone(&counter);
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
                        counter.fetch_add(1, Ordering::SeqCst);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, executed, task)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemClock.now()
}

/// Waits until at least `margin` seconds are left in the current UTC minute.
async fn away_from_a_minute_edge(margin: i64) {
    while 60 - unix_now() % 60 < margin {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn number(resp: &RawResponse, name: &str) -> i64 {
    resp.header(name)
        .unwrap_or_else(|| panic!("no {name}: {}", resp.head))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_quota_admits_exactly_n_then_429_until_the_minute_ends() {
    let (upstream, executed, task) = counting_upstream(OK).await;
    let (gw, _dir) = gateway_at(upstream, |c| c.limits.requests_per_minute = Some(5)).await;
    away_from_a_minute_edge(8).await;
    let minute_end = (unix_now() / 60 + 1) * 60;
    for remaining in ["4", "3", "2", "1", "0"] {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-limit"), Some("5"));
        assert_eq!(resp.header("ratelimit-remaining"), Some(remaining));
        assert_eq!(resp.header("ratelimit-policy"), Some("5;w=60"));
        let reset = number(&resp, "ratelimit-reset");
        assert!((reset - (minute_end - unix_now())).abs() <= 1, "{reset}");
    }
    let limited = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(limited.status, 429);
    let retry_after = number(&limited, "retry-after");
    assert!(
        (retry_after - (minute_end - unix_now())).abs() <= 1,
        "{retry_after}"
    );
    assert_eq!(number(&limited, "ratelimit-reset"), retry_after);
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("ratelimit-policy"), Some("5;w=60"));
    let p = limited.json();
    assert_eq!(p["error_code"], "USAGE_LIMIT_EXCEEDED");
    assert_eq!(p["details"]["limit"], 5);
    assert_eq!(p["details"]["window"], "minute");
    assert_eq!(p["details"]["resets_at"], minute_end);
    let text = p["error"].as_str().unwrap();
    assert!(
        text.starts_with("5 of 5 requests this minute are used; the quota resets at "),
        "{text}"
    );
    // Browsers get a page saying the same.
    let page = raw_request(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(page.status, 429);
    assert!(page.text().contains("5 of 5 requests this minute are used"));
    // The app executed exactly the five.
    assert_eq!(executed.load(std::sync::atomic::Ordering::SeqCst), 5);
    // Public paths are not governed.
    for _ in 0..3 {
        let resp = http_get(gw.addr, "/static/a.css").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-limit"), None);
    }
    // Retry-After is honest: once it has passed, the next minute counts from 0.
    tokio::time::sleep(
        Duration::from_secs(retry_after.unsigned_abs()) + Duration::from_millis(300),
    )
    .await;
    let next = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(next.header("ratelimit-remaining"), Some("4"));
    task.abort();
}

/// A gateway whose quota clock reads `at` (Unix seconds).
async fn at_time(
    upstream: std::net::SocketAddr,
    at: i64,
    shape: impl FnOnce(&mut Claims),
) -> (Gateway, tempfile::TempDir) {
    let (gw, dir) = gateway_at(upstream, shape).await;
    gw.set_quota_clock(at);
    (gw, dir)
}

/// Uses up a quota of `n` at the gateway's clock, then checks the refusal: its
/// Retry-After is `until_end` seconds (± 1) and its text says `this` and `resets_at`.
async fn use_up(gw: &Gateway, n: u64, until_end: i64, this: &str, resets_at: &str) {
    for used in 1..=n {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(number(&resp, "ratelimit-remaining"), (n - used) as i64);
        assert!((number(&resp, "ratelimit-reset") - until_end).abs() <= 1);
    }
    let limited = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(limited.status, 429);
    assert!((number(&limited, "retry-after") - until_end).abs() <= 1);
    let text = limited.json()["error"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(&format!(
            "{n} of {n} requests {this} are used; the quota resets at {resets_at} (in "
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_day_and_month_quotas_reset_at_their_calendar_ends() {
    let (upstream, executed, task) = counting_upstream(OK).await;
    // 2027-03-31 23:59:40 UTC: the hour, the day and the month end in 20 s.
    let edge = 1_806_537_600;
    let before = edge - 20;
    let (hour, _d1) = at_time(upstream, before, |c| c.limits.requests_per_hour = Some(3)).await;
    use_up(&hour, 3, 20, "this hour", "2027-04-01 00:00 UTC").await;
    let (day, _d2) = at_time(upstream, before, |c| c.limits.requests_per_day = Some(2)).await;
    use_up(&day, 2, 20, "today", "2027-04-01 00:00 UTC").await;
    let (month, _d3) = at_time(upstream, before, |c| c.limits.requests_per_month = Some(2)).await;
    use_up(&month, 2, 20, "this month", "2027-04-01 00:00 UTC").await;
    let policy = http_get(month.addr, "/x").await.unwrap();
    assert_eq!(
        policy.header("ratelimit-policy"),
        Some("2;w=2678400"),
        "March has 31 days"
    );
    assert_eq!(executed.load(std::sync::atomic::Ordering::SeqCst), 7);
    // Past the edge every window counts from 0 again.
    for gw in [&hour, &day, &month] {
        gw.set_quota_clock(edge + 1);
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(resp.status, 200);
        assert!(number(&resp, "ratelimit-remaining") >= 1);
    }
    // An hour that ends before the day does: 1 min before 08:00.
    let (hour, _d4) = at_time(upstream, 1_796_112_000 - 60, |c| {
        c.limits.requests_per_hour = Some(1);
        c.limits.requests_per_day = Some(100);
    })
    .await;
    use_up(&hour, 1, 60, "this hour", "08:00 UTC").await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoothing_applies_only_when_the_license_asks_for_it() {
    let (upstream, _executed, task) = counting_upstream(OK).await;
    let (plain, _d1) = gateway_at(upstream, |c| c.limits.requests_per_hour = Some(100)).await;
    for expected in (90..100).rev() {
        let resp = http_get(plain.addr, "/x").await.unwrap();
        assert_eq!(resp.status, 200, "no per-second smoothing without burst");
        assert_eq!(number(&resp, "ratelimit-remaining"), expected);
    }
    let (smooth, _d2) = gateway_at(upstream, |c| {
        c.limits.requests_per_hour = Some(100);
        c.limits.burst = Some(3);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(http_get(smooth.addr, "/x").await.unwrap().status, 200);
    }
    let limited = http_get(smooth.addr, "/x").await.unwrap();
    assert_eq!(limited.status, 429);
    let p = limited.json();
    assert_eq!(p["details"]["window"], "burst");
    assert_eq!(p["details"]["limit"], 3);
    let retry_after = number(&limited, "retry-after");
    assert!(
        (35..=36).contains(&retry_after),
        "one request per 36 s: {retry_after}"
    );
    assert!(p["error"]
        .as_str()
        .unwrap()
        .contains("3 at once, then one every 36s"));
    // The smoothing's refusal counted nowhere: the hour has 97 left.
    let usage = admin_usage(&smooth).await;
    assert_eq!(usage[0]["window"], "hour");
    assert_eq!(usage[0]["used"], 3);
    assert_eq!(usage[1]["window"], "burst");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_sigterm_and_kill_9() {
    let (upstream, executed, task) = counting_upstream(OK).await;
    let dir = tempfile::tempdir().unwrap();
    let config = licensed_config(dir.path(), |c| c.limits.requests_per_day = Some(100));
    // Mid-day, so that the test never straddles midnight.
    let noon = (unix_now() / 86_400) * 86_400 + 43_200;
    let mut gw = Gateway::start_with(&config, upstream).await;
    gw.set_quota_clock(noon);
    let requests: Vec<_> = (0..80).map(|_| http_get(gw.addr, "/x")).collect();
    for resp in futures_util::future::join_all(requests).await {
        assert_eq!(resp.unwrap().status, 200);
    }
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some());
    let logs = gw.logs();
    drop(gw);

    let mut gw = Gateway::start_with(&config, upstream).await;
    gw.set_quota_clock(noon + 10);
    let resp = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("ratelimit-remaining"),
        Some("19"),
        "80 used before the restart: {logs}"
    );
    assert!(gw
        .logs()
        .contains("quota counts of the current windows restored"));
    // Ten more, a second for them to be saved, then kill -9.
    for _ in 0..10 {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(5)).await.is_some());
    drop(gw);

    let gw = Gateway::start_with(&config, upstream).await;
    gw.set_quota_clock(noon + 20);
    let resp = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(
        resp.header("ratelimit-remaining"),
        Some("8"),
        "91 used before"
    );
    for _ in 0..8 {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    }
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 429);
    assert_eq!(
        executed.load(std::sync::atomic::Ordering::SeqCst),
        100,
        "the app executed exactly the day's 100"
    );
    // The database is a plain SQLite file in the store.
    let db = licgate::quota::durable::CountStore::open(&dir.path().join("store")).unwrap();
    let (start, count) = db
        .count("default", None, licgate::quota::Window::Day)
        .unwrap()
        .unwrap();
    assert_eq!(start, (noon / 86_400) * 86_400);
    assert!(count >= 91, "{count}");
    task.abort();
}

/// The tenant's `usage.rate` from the admin API.
async fn admin_usage(gw: &Gateway) -> Vec<serde_json::Value> {
    let request = format!(
        "GET /admin/v1/tenants/default HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let resp = raw_request(gw.admin, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["usage"]["rate"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_quota_applies_to_its_paths() {
    let upstream = Upstream::start().await;
    let (gw, _dir) = gateway(&upstream, |c| {
        c.feature_limits.insert(
            "reports".into(),
            FeatureLimits {
                requests_per_day: Some(2),
                ..FeatureLimits::default()
            },
        );
    })
    .await;
    for remaining in ["1", "0"] {
        let resp = http_get(gw.addr, "/api/reports/1").await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("ratelimit-remaining"), Some(remaining));
        assert_eq!(resp.header("ratelimit-policy"), Some("2;w=86400"));
    }
    let limited = http_get(gw.addr, "/api/reports/3").await.unwrap();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["details"]["feature"], "reports");
    assert_eq!(limited.json()["details"]["window"], "day");
    let text = limited.json()["error"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("2 of 2 requests of the feature \"reports\" today are used"),
        "{text}"
    );
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
            quotas.check(&entry.quota, feature.map(|f| &**f));
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
    let answer = b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 999\r\nratelimit-reset: 1\r\nX-Licgate-Warning: from the app\r\nContent-Length: 2\r\n\r\nok";
    let (addr, _executed, task) = counting_upstream(answer).await;
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rate_headers_replace_the_upstreams_own() {
    let (raw_upstream, task) = upstream_with_its_own_rate_headers().await;
    let (gw, _dir) = gateway_at(raw_upstream, |c| {
        c.limits.requests_per_hour = Some(60);
        c.limits.requests_per_day = Some(1_000);
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
    assert_eq!(values("ratelimit-remaining"), ["59"], "{}", resp.head);
    assert_eq!(values("ratelimit-policy"), ["60;w=3600, 1000;w=86400"]);
    assert_eq!(values("ratelimit-reset").len(), 1, "{}", resp.head);
    // No warning applies to a valid license; the upstream's own passes through.
    assert_eq!(values("x-licgate-warning"), ["from the app"]);
    assert_eq!(resp.body, b"ok");
    task.abort();
}
