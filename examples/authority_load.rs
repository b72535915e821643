//! The load driver of `load/authority`: seeds an authority's database with LICENSES
//! licenses (one policy, `max_activations = 2`) and as many activations (one per
//! license, their instance keys from a pool of 1,000), then, against the running
//! authority at URL, drives CLIENTS concurrent clients for SECONDS each:
//!
//! - `heartbeats`: signed heartbeats of random seeded activations;
//! - `activations`: activations of new instances, each on a license with a free slot.
//!
//! Prints one JSON object per phase: requests, errors, rate, p50/p99/max (ms).
//!
//! Usage:
//!   authority_load seed DATABASE_URL LICENSES STATE_FILE
//!   authority_load drive URL STATE_FILE CLIENTS SECONDS heartbeats|activations

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use licgate::authority::config::DatabaseUrl;
use licgate::authority::db::Db;
use licgate::authority::key::LicenseKey;
use licgate::authority::protocol::{sign_request, DATE_HEADER, SIGNATURE_HEADER};
use licgate::license::instance_key::InstanceKey;
use serde::{Deserialize, Serialize};

/// Instance keys shared by the seeded activations.
const KEY_POOL: usize = 1_000;

/// What `seed` leaves for `drive`.
#[derive(Serialize, Deserialize)]
struct State {
    /// (activation id, index of its key in the pool).
    activations: Vec<(String, usize)>,
    /// License keys, each with one free slot.
    license_keys: Vec<String>,
    /// Directory of the key pool (`key-N.pem`).
    keys_dir: String,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_id(prefix: &str, i: usize) -> String {
    format!("{prefix}_load{i:08}")
}

async fn seed(url: &str, licenses: usize, state_file: &Path) {
    let database = DatabaseUrl::parse(url, Path::new(".")).expect("database URL");
    let db = Db::open(&database, 4).await.expect("open the database");
    let keys_dir = state_file.with_extension("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let pool: Vec<InstanceKey> = (0..KEY_POOL)
        .map(|i| InstanceKey::load_or_create(&keys_dir.join(format!("key-{i}.pem"))).unwrap())
        .collect();
    let pems: Vec<String> = pool.iter().map(InstanceKey::public_key_pem).collect();
    let t = now();
    sqlx::query(
        "INSERT INTO policies (id, name, tier, tier_name, features, limits, feature_limits, flags, \
         max_activations, duration_days, token_ttl, heartbeat_interval, floating, heartbeat_timeout, \
         grace_days, read_only_days, created_at, updated_at) VALUES ('pol_load', 'load', 'pro', NULL, \
         '[\"sales\"]', '{\"requests_per_hour\":5000}', '{}', '[]', 2, 365, 2592000, 3600, 0, 10800, \
         NULL, NULL, $1, $1)",
    )
    .bind(t)
    .execute(db.pool())
    .await
    .expect("seed the policy");
    let mut state = State {
        activations: Vec::with_capacity(licenses),
        license_keys: Vec::with_capacity(licenses),
        keys_dir: keys_dir.display().to_string(),
    };
    const BATCH: usize = 500;
    let started = Instant::now();
    for start in (0..licenses).step_by(BATCH) {
        let end = (start + BATCH).min(licenses);
        let mut tx = db.pool().begin().await.unwrap();
        let mut license_sql = String::from(
            "INSERT INTO licenses (id, key_hash, key_hint, policy_id, tenant, customer, email, \
             expires_at, overrides, status, created_at, updated_at) VALUES ",
        );
        let mut activation_sql = String::from(
            "INSERT INTO activations (id, license_id, instance_id, public_key, hostname, status, \
             offline, first_seen, last_seen) VALUES ",
        );
        for i in start..end {
            let key = LicenseKey::generate().unwrap();
            let sep = if i == start { "" } else { "," };
            license_sql.push_str(&format!(
                "{sep}('{}', '{}', '{}', 'pol_load', 'tenant{i}', NULL, NULL, {}, '{{}}', 'active', {t}, {t})",
                random_id("lic", i),
                key.hash(),
                key.redacted(),
                t + 365 * 86_400
            ));
            let key_index = i % KEY_POOL;
            activation_sql.push_str(&format!(
                "{sep}('{}', '{}', 'instance{i}', '{}', 'host{i}', 'active', 0, {t}, {t})",
                random_id("act", i),
                random_id("lic", i),
                pems[key_index]
            ));
            state.activations.push((random_id("act", i), key_index));
            state.license_keys.push(key.to_string());
        }
        sqlx::query(sqlx::AssertSqlSafe(license_sql))
            .execute(&mut *tx)
            .await
            .expect("seed licenses");
        sqlx::query(sqlx::AssertSqlSafe(activation_sql))
            .execute(&mut *tx)
            .await
            .expect("seed activations");
        tx.commit().await.unwrap();
    }
    if db.dialect() == licgate::authority::db::Dialect::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    }
    std::fs::write(state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    eprintln!(
        "seeded {licenses} licenses and {licenses} activations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[derive(Serialize)]
struct Figures {
    phase: String,
    clients: usize,
    seconds: f64,
    requests: usize,
    errors: usize,
    /// Error answers by HTTP status (`0`: no answer).
    error_statuses: std::collections::BTreeMap<String, usize>,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn drive(url: &str, state_file: &Path, clients: usize, seconds: u64, phase: &str) {
    let state: State = serde_json::from_slice(&std::fs::read(state_file).unwrap()).unwrap();
    let keys: Arc<Vec<InstanceKey>> = Arc::new(
        (0..KEY_POOL)
            .map(|i| {
                InstanceKey::load(&Path::new(&state.keys_dir).join(format!("key-{i}.pem"))).unwrap()
            })
            .collect(),
    );
    let state = Arc::new(state);
    let next_license = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, keys, state, next_license) = (
            http.clone(),
            keys.clone(),
            state.clone(),
            next_license.clone(),
        );
        let (url, phase) = (url.to_string(), phase.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut by_status = std::collections::BTreeMap::new();
            let mut n = client;
            let own_key = InstanceKey::load(
                &Path::new(&state.keys_dir).join(format!("key-{}.pem", client % KEY_POOL)),
            )
            .unwrap();
            while Instant::now() < deadline {
                let begun = Instant::now();
                let status = if phase == "heartbeats" {
                    n = (n * 7919 + 104_729) % state.activations.len();
                    let (id, key_index) = &state.activations[n];
                    let path = format!("/v1/activations/{id}/heartbeat");
                    let body =
                        format!("{{\"nonce\":\"load-{client:04}-{:012}\"}}", latencies.len());
                    let (date, signature) =
                        sign_request(&keys[*key_index], "POST", &path, now(), body.as_bytes());
                    http.post(format!("{url}{path}"))
                        .header(DATE_HEADER, date)
                        .header(SIGNATURE_HEADER, signature)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                } else {
                    let i = next_license.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = state.license_keys.get(i) else {
                        break;
                    };
                    let body = serde_json::json!({
                        "license_key": key,
                        "instance_id": format!("new-instance-{i}"),
                        "instance_public_key": own_key.public_key_pem(),
                        "hostname": "load",
                        "nonce": format!("load-activation-{i:010}"),
                    });
                    http.post(format!("{url}/v1/activations"))
                        .json(&body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                };
                latencies.push(begun.elapsed());
                if !(200..300).contains(&status) {
                    errors += 1;
                    *by_status.entry(status).or_insert(0usize) += 1;
                }
            }
            (latencies, errors, by_status)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut error_statuses = std::collections::BTreeMap::new();
    for task in tasks {
        let (latencies, e, by_status) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
        for (status, n) in by_status {
            *error_statuses.entry(status.to_string()).or_insert(0usize) += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let figures = Figures {
        phase: phase.to_string(),
        clients,
        seconds: elapsed,
        requests: all.len(),
        errors,
        error_statuses,
        per_second: (all.len() - errors) as f64 / elapsed,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    };
    println!("{}", serde_json::to_string(&figures).unwrap());
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, "seed", url, licenses, state] => {
            seed(url, licenses.parse().expect("LICENSES"), Path::new(state)).await
        }
        [_, "drive", url, state, clients, seconds, phase] => {
            drive(
                url,
                Path::new(state),
                clients.parse().expect("CLIENTS"),
                seconds.parse().expect("SECONDS"),
                phase,
            )
            .await
        }
        _ => {
            eprintln!("usage: authority_load seed DATABASE_URL LICENSES STATE_FILE\n       authority_load drive URL STATE_FILE CLIENTS SECONDS heartbeats|activations");
            std::process::exit(2);
        }
    }
}
