//! The Redis quota backend with a real `redis-server` started here on a free port:
//! a fleet-wide limit shared by two gateways, Redis killed (local fallback, gating
//! intact, no 429 from the error), Redis restarted (back to Redis), Redis paused
//! (latency bounded by the timeout). `make test` installs redis-server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::redis_server::RedisServer;
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use licgate::license::store::Store;

/// A gateway whose tenant `default` is limited to `per_minute`, counting in Redis at
/// `url` as one of `fleet_size` gateways, in `mode` (`slice` or `exact`).
async fn gateway(
    upstream: SocketAddr,
    dir: &std::path::Path,
    url: &str,
    per_minute: u64,
    fleet_size: u32,
    mode: &str,
) -> Gateway {
    let config = gateway_config(dir, url, per_minute, fleet_size, mode, "25ms");
    Gateway::start_with(&config, upstream).await
}

/// The configuration of a [`gateway`] with the Redis call `timeout` given (the
/// license installed in `dir` on first use).
fn gateway_config(
    dir: &std::path::Path,
    url: &str,
    per_minute: u64,
    fleet_size: u32,
    mode: &str,
    timeout: &str,
) -> String {
    let keys = dir.join("keys");
    if !keys.exists() {
        let (private, _) = write_key_pair(&keys, &generate_ed25519()).unwrap();
        let now = SystemClock.now();
        let mut claims = test_claims("default", &["sales"], now, now + 30 * 86_400);
        claims.limits.requests_per_minute = Some(per_minute);
        let token = sign(&claims, &SigningKey::load(&private).unwrap(), None).unwrap();
        Store::open(&dir.join("store"))
            .unwrap()
            .install("default", &claims.jti, &token)
            .unwrap();
    }
    BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &format!(
            r#"[license]
public_keys = [{{ path = "{}" }}]
store_dir = "{}"
[[features]]
prefix = "/api/manufacturing/"
feature = "manufacturing_module"
[quota]
backend = "redis"
[quota.redis]
url = "{url}"
timeout = "{timeout}"
fleet_size = {fleet_size}
breaker_failures = 2
breaker_cooldown = "200ms"
mode = "{mode}"
"#,
            keys.join("vendor.pub.pem").display(),
            dir.join("store").display()
        )
}

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

/// The Redis key of the current minute's count of tenant `default`.
fn minute_key() -> String {
    format!("licgate:default:minute:{}", unix_now() / 60)
}

async fn redis_count(redis: &RedisServer, key: &str) -> i64 {
    match redis.command(&["GET", key]).await.unwrap() {
        redis::Value::Nil => 0,
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap().parse().unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Drives `clients` concurrent clients per gateway, each sending requests until it
/// has seen `refusals` 429s in a row; returns the 200s.
async fn load_until_refused(gateways: &[&Gateway], clients: usize, refusals: usize) -> usize {
    let mut tasks = Vec::new();
    for gw in gateways {
        for _ in 0..clients {
            let addr = gw.addr;
            tasks.push(tokio::spawn(async move {
                let (mut allowed, mut refused_in_a_row) = (0, 0);
                while refused_in_a_row < refusals {
                    let resp = http_get(addr, "/x").await.unwrap();
                    match resp.status {
                        200 => {
                            allowed += 1;
                            refused_in_a_row = 0;
                        }
                        429 => {
                            assert_eq!(resp.json()["error_code"], "USAGE_LIMIT_EXCEEDED");
                            refused_in_a_row += 1;
                        }
                        other => panic!("status {other}: {}", resp.text()),
                    }
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += t.await.unwrap();
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_in_slices_and_exactly() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    for mode in ["slice", "exact"] {
        let dir = tempfile::tempdir().unwrap();
        let prefix_free = redis.command(&["FLUSHALL"]).await;
        assert!(prefix_free.is_ok());
        // Exactness with Redis answering: a generous timeout, so a loaded machine does
        // not turn a slow reply into the local fallback (which is exact per gateway only).
        let (url, t) = (redis.url(), "1s");
        let config = gateway_config(dir.path(), &url, 1_000, 2, mode, t);
        let a = Gateway::start_with(&config, upstream.addr).await;
        let b = Gateway::start_with(&config, upstream.addr).await;
        away_from_a_minute_edge(25).await;
        let key = minute_key();
        let allowed = load_until_refused(&[&a, &b], 4, 30).await;
        assert_eq!(
            allowed, 1_000,
            "{mode}: one fleet-wide limit of 1,000 per minute, counted exactly"
        );
        assert_eq!(redis_count(&redis, &key).await, 1_000, "{mode}");
        let ttl = redis.command(&["TTL", &key]).await.unwrap();
        assert!(
            matches!(ttl, redis::Value::Int(s) if s > 0 && s <= 120),
            "keys expire a minute after their window: {ttl:?}"
        );
        let keys = redis.command(&["KEYS", "licgate:*"]).await.unwrap();
        assert_eq!(
            keys,
            redis::Value::Array(vec![redis::Value::BulkString(key.into_bytes())])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspent_slices_go_back_to_redis_when_idle_and_at_shutdown() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let dir = tempfile::tempdir().unwrap();
    away_from_a_minute_edge(15).await;
    let key = minute_key();
    // 100,000 per minute: a slice is 1 % of it.
    let mut gw = gateway(upstream.addr, dir.path(), &redis.url(), 100_000, 1, "slice").await;
    let resp = http_get(gw.addr, "/x").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("ratelimit-remaining"), Some("99999"));
    assert_eq!(redis_count(&redis, &key).await, 1_000, "one slice reserved");
    for _ in 0..9 {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    }
    assert_eq!(redis_count(&redis, &key).await, 1_000, "spent locally");
    // Idle for two seconds: the unspent part goes back.
    let deadline = Instant::now() + Duration::from_secs(6);
    while redis_count(&redis, &key).await != 10 {
        assert!(
            Instant::now() < deadline,
            "the idle slice was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And at shutdown.
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    assert_eq!(redis_count(&redis, &key).await, 1_010);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some());
    assert_eq!(redis_count(&redis, &key).await, 11, "{}", gw.logs());
    assert!(gw
        .logs()
        .contains("unspent quota slices given back to Redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_locally_and_its_counts_are_added_back() {
    let upstream = Upstream::start().await;
    let port = free_addr().port();
    let mut redis = RedisServer::start_on(port).await;
    let dir = tempfile::tempdir().unwrap();
    away_from_a_minute_edge(20).await;
    let key = minute_key();
    let gw = gateway(upstream.addr, dir.path(), &redis.url(), 60, 2, "exact").await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);

    redis.kill();
    // The local fallback allows this gateway's share: 30 of the 60.
    let mut allowed = 0;
    for _ in 0..40 {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        match resp.status {
            200 => allowed += 1,
            429 => assert_eq!(resp.json()["details"]["limit"], 60),
            other => panic!("status {other}: {}", resp.text()),
        }
    }
    assert_eq!(allowed, 30, "the fallback counts this gateway's share");
    // License gating keeps working.
    let denied = http_get(gw.addr, "/api/manufacturing/plan").await.unwrap();
    assert_eq!(denied.json()["error_code"], "FEATURE_NOT_LICENSED");
    let logs = gw.logs();
    assert!(logs.contains("redis quota backend unavailable"), "{logs}");

    // Back up (empty): the fallback's 30 are added, then counting returns to Redis.
    let redis = RedisServer::start_on(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = http_get(gw.addr, "/x").await.unwrap();
        if redis_count(&redis, &key).await >= 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fallback's counts were not added: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw
        .logs()
        .contains("counts made while Redis was unavailable were added"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_costs_at_most_the_timeout() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(upstream.addr, dir.path(), &redis.url(), 60_000, 1, "exact").await;
    away_from_a_minute_edge(20).await;
    let key = minute_key();
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    redis.command(&["CLIENT", "PAUSE", "3000"]).await.unwrap();
    let paused = Instant::now();
    for _ in 0..5 {
        let started = Instant::now();
        let resp = http_get(gw.addr, "/x").await.unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status, 200);
        assert!(
            took < Duration::from_millis(500),
            "took {took:?} with Redis paused"
        );
    }
    // Redis runs the calls that timed out once the pause ends; what they counted is
    // given back, and the fallback's own counts are added: each request counted once.
    tokio::time::sleep(Duration::from_millis(3_600).saturating_sub(paused.elapsed())).await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    gw.until_logged("counts made while Redis was unavailable were added")
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(redis_count(&redis, &key).await, 7, "counted once each");
}

/// A TCP relay to Redis that passes commands at once and holds Redis's replies back
/// for `delay_ms` (set while running): Redis has run a command the gateway hears of late.
struct SlowReplies {
    addr: SocketAddr,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowReplies {
    async fn start(redis: SocketAddr) -> SlowReplies {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = std::sync::Arc::new(AtomicU64::new(0));
        let delay = std::sync::Arc::clone(&delay_ms);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(redis).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let delay = std::sync::Arc::clone(&delay);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let wait = delay.load(Ordering::Relaxed);
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowReplies { addr, delay_ms }
    }

    fn delay(&self, ms: u64) {
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_comes_too_late_counts_nothing_twice() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let relay = SlowReplies::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    for mode in ["exact", "slice"] {
        let dir = tempfile::tempdir().unwrap();
        redis.command(&["FLUSHALL"]).await.unwrap();
        let url = format!("redis://{}/", relay.addr);
        // 100 a minute: slices of one request, so each request asks Redis.
        let mut gw = gateway(upstream.addr, dir.path(), &url, 100, 1, mode).await;
        away_from_a_minute_edge(20).await;
        let key = minute_key();
        let mut served = 0;
        let send = |n: usize| {
            let addr = gw.addr;
            async move {
                for _ in 0..n {
                    assert_eq!(http_get(addr, "/x").await.unwrap().status, 200);
                }
                n
            }
        };
        served += send(3).await;
        // Redis counts (or reserves) at once; the gateway hears after its timeout and
        // serves these from the local fallback.
        relay.delay(400);
        served += send(4).await;
        relay.delay(0);
        tokio::time::sleep(Duration::from_millis(600)).await;
        served += send(3).await;
        gw.until_logged("counts made while Redis was unavailable were added")
            .await;
        // Slices unspent go back at shutdown: Redis then holds what was served.
        gw.signal("TERM");
        assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some());
        assert_eq!(
            redis_count(&redis, &key).await,
            served as i64,
            "{mode}: every request served counted once, none that was not"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_counts_whose_reply_is_late_are_added_once() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let dir = tempfile::tempdir().unwrap();
    // A breaker that stays closed: the upkeep keeps calling the paused Redis.
    let config = gateway_config(dir.path(), &redis.url(), 100, 1, "exact", "25ms")
        .replace("breaker_failures = 2", "breaker_failures = 1000");
    let mut gw = Gateway::start_with(&config, upstream.addr).await;
    away_from_a_minute_edge(25).await;
    let key = minute_key();
    let mut served = 0i64;
    let logged = |needle: &'static str, times: usize| {
        let gw = &gw;
        eventually(Duration::from_secs(10), needle, move || {
            gw.logs().matches(needle).count() >= times
        })
    };
    // Redis holds back writes for 2 s: these requests are served from the local
    // fallback, and the upkeep's call adding them to Redis times out (100 ms) though
    // Redis runs it when the pause ends; the upkeep then sends the batch again.
    for round in 1..=2 {
        for _ in 0..3 {
            assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
            served += 1;
        }
        redis
            .command(&["CLIENT", "PAUSE", "2000", "WRITE"])
            .await
            .unwrap();
        for _ in 0..4 {
            assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
            served += 1;
        }
        logged("redis quota upkeep timed out", round).await;
        logged("counts made while Redis was unavailable were added", round).await;
    }
    // Every late call has been settled (its reply heard, what it counted given back).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some());
    assert_eq!(
        redis_count(&redis, &key).await,
        served,
        "every request served counted once: {}",
        gw.logs()
    );
}
