//! The driver of `load/heartbeats`: what heartbeats cost a gateway with many tenants
//! activated at a license server, and how long a revocation takes to be refused.
//!
//! Usage:
//!   link_load seed AUTHORITY_URL TOKEN_FILE TENANTS KEYS_FILE
//!       one policy (heartbeat every HEARTBEAT s, env, default 60) and one license
//!       per tenant `t00000`…; writes "tenant license_id key" lines
//!   link_load activate GATEWAY_ADMIN TOKEN_FILE KEYS_FILE CLIENTS
//!       activates every key through the gateway's admin API; prints the rate
//!   link_load measure GATEWAY_PID GATEWAY_ADMIN SECONDS
//!       the gateway's CPU time and heartbeats over SECONDS: JSON
//!   link_load revoke AUTHORITY_URL TOKEN_FILE GATEWAY KEYS_FILE
//!       revokes the first license, times until the gateway refuses its tenant: JSON

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn token(file: &str) -> String {
    std::fs::read_to_string(file)
        .expect("read the admin token")
        .trim()
        .to_string()
}

async fn seed(url: &str, token_file: &str, tenants: usize, keys_file: &str) {
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token(token_file));
    let interval: u64 = std::env::var("HEARTBEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let created = http
        .post(format!("{url}/admin/v1/policies"))
        .header("authorization", &bearer)
        .json(
            &json!({"name": "load", "tier": "professional", "features": ["sales"],
            "max_activations": 1, "duration_days": 365, "token_ttl": 86_400,
            "heartbeat_interval": interval}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, bearer, next, lines, url) = (
            http.clone(),
            bearer.clone(),
            Arc::clone(&next),
            Arc::clone(&lines),
            url.to_string(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tenants {
                    return;
                }
                let tenant = format!("t{i:05}");
                let issued: Value = http
                    .post(format!("{url}/admin/v1/licenses"))
                    .header("authorization", &bearer)
                    .json(&json!({"policy": "load", "tenant": tenant}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let line = format!(
                    "{tenant} {} {}",
                    issued["id"].as_str().unwrap(),
                    issued["key"].as_str().unwrap()
                );
                lines.lock().unwrap().push(line);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let mut lines = lines.lock().unwrap().clone();
    lines.sort();
    std::fs::write(keys_file, lines.join("\n") + "\n").unwrap();
}

fn keys(file: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace().map(str::to_string);
            (w.next().unwrap(), w.next().unwrap(), w.next().unwrap())
        })
        .collect()
}

async fn activate(admin: &str, token_file: &str, keys_file: &str, clients: usize) {
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token(token_file));
    let all = Arc::new(keys(keys_file));
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (http, bearer, all, next, failed, admin) = (
            http.clone(),
            bearer.clone(),
            Arc::clone(&all),
            Arc::clone(&next),
            Arc::clone(&failed),
            admin.to_string(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((tenant, _, key)) = all.get(i) else {
                    return;
                };
                let answer = http
                    .put(format!("http://{admin}/admin/v1/tenants/{tenant}/license"))
                    .header("authorization", &bearer)
                    .json(&json!({ "license_key": key }))
                    .send()
                    .await;
                if !answer.is_ok_and(|a| a.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"activated": all.len() - failed.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed), "seconds": secs,
            "per_second": all.len() as f64 / secs})
    );
}

/// utime + stime of `pid` in seconds, and its RSS in bytes.
fn cpu_and_rss(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks = 100.0;
    let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks;
    let rss = fields[21].parse::<u64>().unwrap() * 4096;
    (cpu, rss)
}

async fn heartbeats(admin: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("licgate_authority_requests_total{")
                && l.contains("call=\"heartbeat\"")
                && l.contains("result=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn measure(pid: &str, admin: &str, seconds: u64) {
    let (cpu0, _) = cpu_and_rss(pid);
    let beats0 = heartbeats(admin).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu1, rss) = cpu_and_rss(pid);
    let beats1 = heartbeats(admin).await;
    let beats = beats1 - beats0;
    let cpu = cpu1 - cpu0;
    println!(
        "{}",
        json!({"seconds": seconds, "heartbeats": beats, "heartbeats_per_second": beats / seconds as f64,
            "cpu_seconds": cpu, "cpu_share_of_one_core": cpu / seconds as f64,
            "cpu_us_per_heartbeat": if beats > 0.0 { cpu / beats * 1e6 } else { 0.0 },
            "rss_bytes": rss})
    );
}

async fn revoke(url: &str, token_file: &str, gateway: &str, keys_file: &str) {
    let (tenant, license_id, _) = keys(keys_file).remove(0);
    let http = reqwest::Client::new();
    let get = || {
        http.get(format!("http://{gateway}/api/sales/orders"))
            .header("host", format!("{tenant}.example.test"))
            .header("accept", "application/json")
            .send()
    };
    // The upstream (a static file server) answers 404 for the path: anything but the
    // gateway's 403 means the request was forwarded.
    assert_ne!(
        get().await.unwrap().status(),
        403,
        "the tenant is served before"
    );
    let revoked = http
        .post(format!("{url}/admin/v1/licenses/{license_id}/revoke"))
        .header("authorization", format!("Bearer {}", token(token_file)))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let start = Instant::now();
    while get().await.unwrap().status() != 403 {
        assert!(start.elapsed() < Duration::from_secs(600), "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        json!({"tenant": tenant, "revocation_to_refusal_seconds": start.elapsed().as_secs_f64()})
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["seed", url, token, n, keys] => seed(url, token, n.parse().unwrap(), keys).await,
        ["activate", admin, token, keys, clients] => {
            activate(admin, token, keys, clients.parse().unwrap()).await
        }
        ["measure", pid, admin, seconds] => measure(pid, admin, seconds.parse().unwrap()).await,
        ["revoke", url, token, gateway, keys] => revoke(url, token, gateway, keys).await,
        _ => {
            eprintln!("usage: see the comment at the top of examples/link_load.rs");
            std::process::exit(2);
        }
    }
}
