//! The Redis quota backend with a real `redis-server` started here on a free port:
//! a fleet-wide limit shared by two gateways, Redis killed (local fallback, gating
//! intact, no 429 from the error), Redis restarted (back to Redis), Redis paused
//! (latency bounded by the timeout). `make test` installs redis-server.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use licgate::license::store::Store;

struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: `make test` installs it");
        let server = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.command(&["PING"]).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut connection).await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway whose tenant `default` is limited to `per_minute` with `burst`, counting
/// in Redis at `url` as one of `fleet_size` gateways.
async fn gateway(
    upstream: SocketAddr,
    dir: &std::path::Path,
    url: &str,
    per_minute: u64,
    burst: u64,
    fleet_size: u32,
) -> Gateway {
    let keys = dir.join("keys");
    if !keys.exists() {
        let (private, _) = write_key_pair(&keys, &generate_ed25519()).unwrap();
        let now = SystemClock.now();
        let mut claims = test_claims("default", &["sales"], now, now + 30 * 86_400);
        claims.limits.requests_per_minute = Some(per_minute);
        claims.limits.burst = Some(burst);
        let token = sign(&claims, &SigningKey::load(&private).unwrap(), None).unwrap();
        Store::open(&dir.join("store"))
            .unwrap()
            .install("default", &claims.jti, &token)
            .unwrap();
    }
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
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
timeout = "25ms"
fleet_size = {fleet_size}
breaker_failures = 2
breaker_cooldown = "200ms"
"#,
            keys.join("vendor.pub.pem").display(),
            dir.join("store").display()
        );
    Gateway::start_with(&config, upstream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let dir = tempfile::tempdir().unwrap();
    let a = gateway(upstream.addr, dir.path(), &redis.url(), 60, 6, 2).await;
    let b = gateway(upstream.addr, dir.path(), &redis.url(), 60, 6, 2).await;
    let mut allowed = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = http_get(gw.addr, "/x").await.unwrap();
        match resp.status {
            200 => allowed += 1,
            429 => assert_eq!(resp.json()["error_code"], "USAGE_LIMIT_EXCEEDED"),
            other => panic!("status {other}"),
        }
    }
    // One limit of burst 6 across both gateways (a request may be earned back meanwhile).
    assert!((6..=7).contains(&allowed), "{allowed} allowed");
    let keys = redis.command(&["KEYS", "licgate:*"]).await.unwrap();
    assert_eq!(
        keys,
        redis::Value::Array(vec![redis::Value::BulkString(
            b"licgate:default:minute".to_vec()
        )])
    );
    let ttl = redis
        .command(&["PTTL", "licgate:default:minute"])
        .await
        .unwrap();
    assert!(
        matches!(ttl, redis::Value::Int(ms) if ms > 0 && ms <= 60_000),
        "keys expire: {ttl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_locally_and_recovers() {
    let upstream = Upstream::start().await;
    let port = free_addr().port();
    let mut redis = RedisServer::start_on(port).await;
    let dir = tempfile::tempdir().unwrap();
    // 60/minute with a burst of 200: each request keeps its key alive for a second.
    let gw = gateway(upstream.addr, dir.path(), &redis.url(), 60, 200, 2).await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);

    redis.kill();
    for _ in 0..20 {
        let resp = http_get(gw.addr, "/x").await.unwrap();
        assert_eq!(
            resp.status,
            200,
            "no 429 because Redis is down: {}",
            resp.text()
        );
    }
    // License gating keeps working.
    let denied = http_get(gw.addr, "/api/manufacturing/plan").await.unwrap();
    assert_eq!(denied.json()["error_code"], "FEATURE_NOT_LICENSED");
    let logs = gw.logs();
    assert!(logs.contains("redis quota backend unavailable"), "{logs}");

    // Back up (empty): after the breaker's cooldown, counting returns to Redis.
    let redis = RedisServer::start_on(port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
        let keys = redis.command(&["KEYS", "licgate:*"]).await.unwrap();
        if keys != redis::Value::Array(vec![]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not go back to Redis: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_costs_at_most_the_timeout() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start_on(free_addr().port()).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(upstream.addr, dir.path(), &redis.url(), 60_000, 200, 1).await;
    assert_eq!(http_get(gw.addr, "/x").await.unwrap().status, 200);
    redis.command(&["CLIENT", "PAUSE", "3000"]).await.unwrap();
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
}
