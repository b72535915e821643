//! The license authority as vendors and gateways use it: real `licgate authority
//! serve` processes over SQLite and a real PostgreSQL, driven through the vendor CLI
//! and the gateway-facing API with real instance keys. What the authority did is read
//! back from its admin API (activations, the audit), not only from its answers.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::common::authority::*;
use licgate::authority::offline::{self, OfflineKind, OfflineRequest, REQUEST_FORMAT};

/// Verifies `token` with the vendor key for `instance_id`; returns its claims.
fn verified_claims(authority: &Authority, token: &str, instance_id: &str) -> Value {
    let key = authority.vendor_key();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[instance_id]);
    validation.set_issuer(&["vendor.test"]);
    jsonwebtoken::decode::<Value>(token, &key.key, &validation)
        .unwrap_or_else(|e| panic!("token for {instance_id}: {e}"))
        .claims
}

/// The actions of the audit, in order.
async fn actions(authority: &Authority) -> Vec<String> {
    authority
        .events()
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

async fn lifecycle(backend: Backend) {
    let authority = Authority::start(backend, NO_EXTRA).await;
    authority.policy("pro", 2, &[]);
    let (license_id, key) = authority.license("pro", "acme");

    // Two installations take the two slots; a third is refused with the counts.
    let a = Installation::new("inst-a");
    let b = Installation::new("inst-b");
    let c = Installation::new("inst-c");
    let first = a.activate(&authority, &key).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(
        first.signed,
        "the activation answer is signed by the vendor key"
    );
    let activation_a = first.body["activation_id"].as_str().unwrap().to_string();
    let claims = verified_claims(&authority, first.body["token"].as_str().unwrap(), "inst-a");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["jti"], license_id.as_str());
    assert_eq!(claims["features"], json!(["sales"]));
    assert_eq!(claims["limits"]["requests_per_hour"], 5000);
    let now = authority.now();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(
        (exp - (now + 30 * 86_400)).abs() < 60,
        "exp = now + token_ttl (30 days)"
    );
    assert_eq!(first.body["heartbeat_interval"], 3600);
    let activation_b = {
        let second = b.activate(&authority, &key).await;
        assert_eq!(second.status, 201, "{:?}", second.body);
        second.body["activation_id"].as_str().unwrap().to_string()
    };
    let third = c.activate(&authority, &key).await;
    assert_eq!(third.status, 403);
    assert_eq!(third.code(), "ACTIVATION_LIMIT_REACHED");
    assert_eq!(
        third.body["details"],
        json!({"max_activations": 2, "active": 2})
    );

    // The same instance activating again gets its slot back, not a second one.
    let again = a.activate(&authority, &key).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["activation_id"], activation_a.as_str());

    // Deactivating one frees its slot for the third.
    let freed = b.deactivate(&authority, &activation_b).await;
    assert_eq!(freed.status, 200, "{:?}", freed.body);
    assert!(freed.signed);
    let third = c.activate(&authority, &key).await;
    assert_eq!(third.status, 201, "{:?}", third.body);
    let gone = b.heartbeat(&authority, &activation_b).await;
    assert_eq!((gone.status, gone.code()), (410, "ACTIVATION_GONE"));

    // The vendor sees exactly the two live activations.
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    let mut live: Vec<&str> = listed["activations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| a["instance_id"].as_str().unwrap())
        .collect();
    live.sort();
    assert_eq!(live, ["inst-a", "inst-c"]);
    let shown = authority.cli_json(&["license", "show", &license_id]);
    assert_eq!(shown["active_activations"], 2);

    // A heartbeat renews the token, signed, with the request's nonce echoed.
    let beat = a.heartbeat(&authority, &activation_a).await;
    assert_eq!(beat.status, 200, "{:?}", beat.body);
    assert!(beat.signed);
    assert_eq!(beat.body["status"], "active");
    assert_eq!(beat.body["next_heartbeat"], 3600);
    assert!(beat.body["nonce"].as_str().unwrap().starts_with("nonce-"));
    verified_claims(&authority, beat.body["token"].as_str().unwrap(), "inst-a");

    // Suspended: the heartbeat says so and renews nothing; reinstated: renewed again.
    let (code, _, err) = authority.cli(&["license", "suspend", &license_id]);
    assert_eq!(code, 0, "{err}");
    let beat = a.heartbeat(&authority, &activation_a).await;
    assert_eq!(beat.body["status"], "suspended");
    assert_eq!(beat.body["token"], Value::Null);
    let refused = Installation::new("inst-d").activate(&authority, &key).await;
    assert_eq!((refused.status, refused.code()), (403, "LICENSE_SUSPENDED"));
    authority.cli(&["license", "reinstate", &license_id]);
    let beat = a.heartbeat(&authority, &activation_a).await;
    assert_eq!(beat.body["status"], "active");
    assert!(beat.body["token"].is_string());

    // Renewed: the expiry moves by the days given.
    let before = authority.cli_json(&["license", "show", &license_id])["expires_at"]
        .as_i64()
        .unwrap();
    let renewed = authority.cli_json(&["license", "renew", &license_id, "--days", "30"]);
    assert_eq!(
        renewed["expires_at"].as_i64().unwrap(),
        before + 30 * 86_400
    );

    // Revoked: the heartbeat lists the license among the revoked ones.
    authority.cli(&["license", "revoke", &license_id]);
    let beat = a.heartbeat(&authority, &activation_a).await;
    assert_eq!(beat.body["status"], "revoked");
    assert_eq!(beat.body["revoked_license_ids"], json!([license_id]));
    assert_eq!(beat.body["token"], Value::Null);
    let refused = Installation::new("inst-e").activate(&authority, &key).await;
    assert_eq!((refused.status, refused.code()), (403, "LICENSE_REVOKED"));
    let (code, _, err) = authority.cli(&["license", "reinstate", &license_id]);
    assert_eq!(code, 1);
    assert!(err.contains("CONFLICT"), "{err}");

    // A new key replaces the old one at once.
    authority.policy("basic", 1, &[]);
    let (other_id, old_key) = authority.license("basic", "globex");
    let (code, out, _) = authority.cli(&["license", "rotate-key", &other_id]);
    assert_eq!(code, 0);
    let new_key = out.lines().last().unwrap().trim().to_string();
    assert_ne!(new_key, old_key);
    let old = Installation::new("inst-g")
        .activate(&authority, &old_key)
        .await;
    assert_eq!((old.status, old.code()), (404, "LICENSE_KEY_UNKNOWN"));

    // Offline: a request file answered through the vendor CLI, the response signed.
    let air = Installation::new("inst-air");
    let request = OfflineRequest {
        format: REQUEST_FORMAT.into(),
        kind: OfflineKind::Activate,
        license_key: Some(new_key.clone()),
        activation_id: None,
        instance_id: air.instance_id.clone(),
        instance_public_key: air.key.public_key_pem(),
        hostname: "air.test".into(),
        nonce: nonce(),
        created_at: authority.now(),
    };
    let request_path = authority.dir.join("request.json");
    let response_path = authority.dir.join("response.json");
    std::fs::write(&request_path, offline::write_request(&request, &air.key)).unwrap();
    let response = answer_offline(&authority, &request_path, &response_path);
    assert_eq!(response.nonce, request.nonce);
    verified_claims(&authority, response.token.as_deref().unwrap(), "inst-air");
    let listed = authority.cli_json(&["activation", "list", "--license", &other_id]);
    assert_eq!(listed["activations"][0]["offline"], true);
    // The slot is taken: an online activation of another instance is refused.
    let refused = Installation::new("inst-h")
        .activate(&authority, &new_key)
        .await;
    assert_eq!(refused.code(), "ACTIVATION_LIMIT_REACHED");
    // An offline deactivation frees it, with a signed receipt.
    let release = OfflineRequest {
        kind: OfflineKind::Deactivate,
        license_key: None,
        activation_id: Some(response.activation_id.clone()),
        nonce: nonce(),
        ..request.clone()
    };
    std::fs::write(&request_path, offline::write_request(&release, &air.key)).unwrap();
    let receipt = answer_offline(&authority, &request_path, &response_path);
    assert_eq!(receipt.kind, OfflineKind::Deactivate);
    let h = Installation::new("inst-h");
    let ok = h.activate(&authority, &new_key).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);

    // A usage report is stored once, however often it is sent.
    let report = usage_report(&a, &license_id, 1, None);
    let http = reqwest::Client::new();
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let r = http
            .post(format!("{}/v1/usage", authority.url))
            .body(report.clone())
            .send()
            .await
            .unwrap();
        outcomes.push((
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["stored"].clone(),
        ));
    }
    assert_eq!(outcomes, [(201, json!(true)), (200, json!(false))]);
    let usage = authority.cli_json(&["usage", "show", "--license", &license_id]);
    assert_eq!(usage["rows"][0]["allowed"], 42);
    assert_eq!(usage["rows"].as_array().unwrap().len(), 1);

    // Seats: two replicas of inst-h counting in Redis report the fleet's figures
    // (the larger is taken); inst-a's replicas count their own (added up).
    for file in [
        seat_report(&a, &license_id, Some("r1"), 3, 5, false),
        seat_report(&a, &license_id, Some("r2"), 2, 4, false),
        seat_report(&h, &license_id, Some("r1"), 6, 9, true),
        seat_report(&h, &license_id, Some("r2"), 5, 11, true),
    ] {
        let r = http
            .post(format!("{}/v1/usage", authority.url))
            .body(file)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let usage = authority.cli_json(&["usage", "show", "--tenant", "acme"]);
    assert_eq!(usage["seats"].as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage["seats"][0]["day"], "2026-11-01");
    assert_eq!(usage["seats"][0]["peak_seats"], 3 + 2 + 6, "{usage}");
    assert_eq!(usage["seats"][0]["daily_users"], 5 + 4 + 11, "{usage}");
    let (code, out, _) = authority.cli(&["usage", "show", "--tenant", "acme"]);
    assert_eq!(code, 0);
    assert!(out.contains("PEAK SEATS"), "{out}");

    // SREs see it in /metrics.
    let metrics = http
        .get(format!("{}/metrics", authority.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "licgate_authority_activations_total{result=\"created\"} 5",
        "licgate_authority_activations_total{result=\"ACTIVATION_LIMIT_REACHED\"} 2",
        "licgate_authority_refusals_total{code=\"ACTIVATION_GONE\"} 1",
        "licgate_authority_usage_reports_total{result=\"duplicate\"} 1",
        "licgate_authority_request_duration_seconds_count{endpoint=\"/v1/activations/{id}/heartbeat\"}",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }

    // The audit holds every change, in order, and nothing for the refusals.
    let all = actions(&authority).await;
    let count = |a: &str| all.iter().filter(|x| *x == a).count();
    assert_eq!(count("policy.created"), 2);
    assert_eq!(count("license.created"), 2);
    assert_eq!(count("activation.created"), 5, "{all:?}");
    assert_eq!(count("activation.deactivated"), 2);
    assert_eq!(count("license.suspended"), 1);
    assert_eq!(count("license.reinstated"), 1);
    assert_eq!(count("license.revoked"), 1);
    assert_eq!(count("license.renewed"), 1);
    assert_eq!(count("license.key_rotated"), 1);
    assert_eq!(count("usage.received"), 5);
    let (code, out, _) = authority.cli(&["events", "--license", &license_id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("license.revoked") && out.contains("instance:inst-a"),
        "{out}"
    );
}

/// Answers the offline request at `request` through the vendor CLI; the response,
/// its vendor signature checked.
fn answer_offline(
    authority: &Authority,
    request: &std::path::Path,
    response: &std::path::Path,
) -> offline::OfflineResponse {
    let file = authority.answer_offline(request, response);
    offline::read_response(&file, &authority.vendor_key()).unwrap()
}

/// A usage report of `installation` for day 2026-11-0N, signed by its key.
fn usage_report(
    installation: &Installation,
    license_id: &str,
    sequence: u64,
    previous: Option<&str>,
) -> String {
    let report = report_of(installation, license_id, sequence, previous);
    licgate::usage::report::signed_file(&report, &installation.key)
}

/// The first usage report (day 2026-11-01) of `replica` of `installation`, with
/// seat figures (`fleet`: counted fleet-wide), signed.
fn seat_report(
    installation: &Installation,
    license_id: &str,
    replica: Option<&str>,
    peak_seats: u64,
    daily_users: u64,
    fleet: bool,
) -> String {
    let mut report = report_of(installation, license_id, 1, None);
    report.replica_id = replica.map(str::to_string);
    report.seats = vec![licgate::usage::report::ReportSeats {
        tenant: "acme".into(),
        day: report.period.from.clone(),
        usage: licgate::usage::query::SeatUsage {
            peak_seats,
            daily_users,
            fleet,
        },
    }];
    licgate::usage::report::signed_file(&report, &installation.key)
}

/// The content of [`usage_report`].
fn report_of(
    installation: &Installation,
    license_id: &str,
    sequence: u64,
    previous: Option<&str>,
) -> licgate::usage::report::UsageReport {
    use licgate::usage::report::{ReportDay, ReportPeriod, UsageReport, FORMAT};
    let tally: licgate::usage::ledger::Tally = serde_json::from_value(json!({
        "allowed": 42, "limited": 1, "refused": {"QUOTA_EXCEEDED": 1}, "peak_concurrency": 3
    }))
    .unwrap();
    let day = format!("2026-11-{:02}", sequence);
    UsageReport {
        format: FORMAT.into(),
        instance_id: installation.instance_id.clone(),
        instance_public_key: installation.key.public_key_pem(),
        instance_key_fingerprint: installation.key.fingerprint(),
        replica_id: None,
        sequence,
        previous_sha256: previous.map(|p| licgate::usage::report::sha256_hex(p.as_bytes())),
        period: ReportPeriod {
            from: day.clone(),
            to: day.clone(),
        },
        created_at: "2026-11-30T00:00:00Z".into(),
        licenses: BTreeMap::from([("acme".to_string(), vec![license_id.to_string()])]),
        days: vec![ReportDay {
            tenant: "acme".into(),
            feature: "sales".into(),
            day,
            tally: tally.clone(),
        }],
        totals: BTreeMap::from([("acme".to_string(), tally)]),
        seats: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_through_the_cli_on_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_through_the_cli_on_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_floating_activation_is_culled_and_frees_its_slot() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy(
        "float",
        1,
        &[
            "--floating",
            "--heartbeat-interval",
            "10m",
            "--heartbeat-timeout",
            "1h",
        ],
    );
    let (license_id, key) = authority.license("float", "acme");
    let a = Installation::new("float-a");
    let b = Installation::new("float-b");
    let first = a.activate(&authority, &key).await;
    assert_eq!(first.status, 201);
    let id_a = first.body["activation_id"].as_str().unwrap().to_string();
    assert_eq!(
        b.activate(&authority, &key).await.code(),
        "ACTIVATION_LIMIT_REACHED"
    );
    // 59 minutes of silence: still held.
    authority.set_clock_offset(59 * 60);
    assert_eq!(
        b.activate(&authority, &key).await.code(),
        "ACTIVATION_LIMIT_REACHED"
    );
    assert_eq!(a.heartbeat(&authority, &id_a).await.status, 200);
    // Then 61 minutes after that heartbeat: culled, the slot is b's.
    authority.set_clock_offset(59 * 60 + 61 * 60);
    let second = b.activate(&authority, &key).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let late = a.heartbeat(&authority, &id_a).await;
    assert_eq!((late.status, late.code()), (410, "ACTIVATION_GONE"));
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    let statuses: BTreeMap<String, String> = listed["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["instance_id"].as_str().unwrap().into(),
                a["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(statuses["float-a"], "culled");
    assert_eq!(statuses["float-b"], "active");
    assert!(actions(&authority)
        .await
        .contains(&"activation.culled".to_string()));
}

/// 50 distinct instances activate at once against `max_activations = 5` spread over
/// `authorities`: exactly 5 succeed, the rest are refused with the limit.
async fn race(authorities: &[&Authority]) {
    let first = authorities[0];
    first.policy("five", 5, &[]);
    let (license_id, key) = first.license("five", "acme");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let authority_url = authorities[i % authorities.len()].url.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let installation = Installation::new(&format!("race-{i}"));
            let response = reqwest::Client::new()
                .post(format!("{authority_url}/v1/activations"))
                .json(&json!({
                    "license_key": key,
                    "instance_id": installation.instance_id,
                    "instance_public_key": installation.key.public_key_pem(),
                    "hostname": "race.test",
                    "nonce": nonce(),
                }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (
                status,
                body["error_code"].as_str().unwrap_or("").to_string(),
            )
        }));
    }
    let mut results = BTreeMap::new();
    for task in tasks {
        *results.entry(task.await.unwrap()).or_insert(0) += 1;
    }
    let expected = BTreeMap::from([
        ((201, String::new()), 5),
        ((403, "ACTIVATION_LIMIT_REACHED".to_string()), 45),
    ]);
    assert_eq!(results, expected);
    let shown = first.cli_json(&["license", "show", &license_id]);
    assert_eq!(shown["active_activations"], 5);
    let created = actions(first)
        .await
        .iter()
        .filter(|a| *a == "activation.created")
        .count();
    assert_eq!(created, 5);
}

const GENEROUS_ATTEMPTS: &str =
    "[attempts]\nper_address_per_minute = 100000\nper_key_per_minute = 100000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_activations_take_exactly_five_slots_on_sqlite() {
    let authority = Authority::start(Backend::Sqlite, GENEROUS_ATTEMPTS).await;
    race(&[&authority]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_activations_take_exactly_five_slots_on_postgres() {
    let authority = Authority::start(Backend::Postgres, GENEROUS_ATTEMPTS).await;
    race(&[&authority]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authority_processes_on_one_postgres_count_one_limit() {
    let one = Authority::start(Backend::Postgres, GENEROUS_ATTEMPTS).await;
    let two = one.replica().await;
    race(&[&one, &two]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing_on_sqlite() {
    bad_input(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing_on_postgres() {
    bad_input(Backend::Postgres).await;
}

async fn bad_input(backend: Backend) {
    let authority = Authority::start(backend, NO_EXTRA).await;
    authority.policy("pro", 2, &[]);
    let (_, key) = authority.license("pro", "acme");
    let a = Installation::new("bad-a");
    let activated = a.activate(&authority, &key).await;
    let id = activated.body["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let events_before = authority.events().await.len();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", authority.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = r.json().await.unwrap();
        assert_eq!(content_type, "application/problem+json");
        (status, body["error_code"].as_str().unwrap().to_string())
    };

    // Malformed JSON, unknown fields, an oversize body.
    let r = post("/v1/activations", b"{\"license_key\": ".to_vec())
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "BAD_REQUEST".into()));
    let mut body = json!({"license_key": key, "instance_id": "x", "instance_public_key": a.key.public_key_pem(), "hostname": "h", "nonce": nonce()});
    body["admin"] = json!(true);
    let r = post("/v1/activations", body.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "BAD_REQUEST".into()));
    let r = post("/v1/activations", vec![b' '; 70_000]).await.unwrap();
    assert_eq!(problem(r).await, (413, "PAYLOAD_TOO_LARGE".into()));

    // A typo in the key is caught by its check character; SQL in a key is no key.
    let mut typo: Vec<char> = key.chars().collect();
    let last = typo.len() - 3;
    typo[last] = if typo[last] == '7' { '8' } else { '7' };
    let typo: String = typo.into_iter().collect();
    let b = Installation::new("bad-b");
    assert_eq!(
        b.activate(&authority, &typo).await.code(),
        "KEY_CHECK_FAILED"
    );
    for sql in [
        "' OR 1=1 --",
        "LG-00000'; DROP TABLE licenses; --",
        "LG-%",
        "",
    ] {
        let answer = b.activate(&authority, sql).await;
        assert_eq!(
            (answer.status, answer.code()),
            (404, "LICENSE_KEY_UNKNOWN"),
            "{sql}"
        );
        assert_eq!(answer.body["details"], json!({}), "tells nothing else");
    }
    // A public key that is not an Ed25519 SPKI key.
    let mut body = json!({"license_key": key, "instance_id": "bad-c", "instance_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "hostname": "h", "nonce": nonce()});
    let r = post("/v1/activations", body.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "BAD_REQUEST".into()));
    body["instance_public_key"] = json!(a.key.public_key_pem());
    body["nonce"] = json!("short");
    let r = post("/v1/activations", body.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "BAD_REQUEST".into()));

    // Heartbeats: signed by another key, unsigned, stale, changed after signing, replayed.
    let path = format!("/v1/activations/{id}/heartbeat");
    let beat_body = json!({"nonce": nonce()}).to_string();
    let stranger = Installation::new("bad-a");
    let forged = stranger
        .signed(
            &authority,
            reqwest::Method::POST,
            &path,
            beat_body.as_bytes(),
        )
        .await;
    assert_eq!((forged.status, forged.code()), (401, "SIGNATURE_INVALID"));
    let r = post(&path, beat_body.clone().into_bytes()).await.unwrap();
    assert_eq!(problem(r).await, (401, "SIGNATURE_INVALID".into()));
    let (date, signature) = licgate::authority::protocol::sign_request(
        &a.key,
        "POST",
        &path,
        authority.now() - 600,
        beat_body.as_bytes(),
    );
    let stale = a
        .post_signed_as(&authority, &path, beat_body.as_bytes(), (&date, &signature))
        .await;
    assert_eq!(stale.code(), "SIGNATURE_INVALID");
    let (date, signature) = licgate::authority::protocol::sign_request(
        &a.key,
        "POST",
        &path,
        authority.now(),
        beat_body.as_bytes(),
    );
    let changed = json!({"nonce": nonce()}).to_string();
    let tampered = a
        .post_signed_as(&authority, &path, changed.as_bytes(), (&date, &signature))
        .await;
    assert_eq!(tampered.code(), "SIGNATURE_INVALID");
    let once = a
        .post_signed_as(&authority, &path, beat_body.as_bytes(), (&date, &signature))
        .await;
    assert_eq!(once.status, 200, "{:?}", once.body);
    let replayed = a
        .post_signed_as(&authority, &path, beat_body.as_bytes(), (&date, &signature))
        .await;
    assert_eq!((replayed.status, replayed.code()), (409, "REPLAYED"));

    // A usage report changed after signing, or from an unknown instance.
    let report = usage_report(&a, "lic_x", 1, None).replace("\"allowed\": 42", "\"allowed\": 4200");
    let r = post("/v1/usage", report.into_bytes()).await.unwrap();
    assert_eq!(problem(r).await, (401, "SIGNATURE_INVALID".into()));
    let r = post(
        "/v1/usage",
        usage_report(&Installation::new("nobody"), "lic_x", 1, None).into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(problem(r).await, (404, "NOT_FOUND".into()));

    // A wrong method and an unknown endpoint answer problem+json too.
    let r = http
        .get(format!("{}/v1/activations", authority.url))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await, (405, "METHOD_NOT_ALLOWED".into()));
    let r = http
        .get(format!("{}/v2/nothing", authority.url))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await, (404, "NOT_FOUND".into()));

    // The admin API without the token, or with another one.
    let r = http
        .get(format!("{}/admin/v1/licenses", authority.url))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await, (401, "UNAUTHORIZED".into()));
    let r = http
        .post(format!(
            "{}/admin/v1/licenses/{}/revoke",
            authority.url, "x"
        ))
        .bearer_auth("test-admin-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await, (401, "UNAUTHORIZED".into()));

    // None of it changed anything: the audit has no new entry, the slot count stands.
    assert_eq!(authority.events().await.len(), events_before);
    let listed = authority.cli_json(&["activation", "list"]);
    assert_eq!(listed["activations"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_attempts_on_a_key_are_limited() {
    let authority = Authority::start(
        Backend::Sqlite,
        "[attempts]\nper_address_per_minute = 1000\nper_key_per_minute = 3\n",
    )
    .await;
    authority.policy("pro", 100, &[]);
    let (_, key) = authority.license("pro", "acme");
    let mut codes = Vec::new();
    for i in 0..5 {
        let answer = Installation::new(&format!("try-{i}"))
            .activate(&authority, &key)
            .await;
        codes.push(answer.status);
        if answer.status == 429 {
            assert!(answer.body["details"]["retry_after"].as_u64().unwrap() >= 1);
        }
    }
    assert_eq!(codes, [201, 201, 201, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_activations_it_restarts_with_whole_activations_and_right_counts() {
    let mut authority = Authority::start(Backend::Sqlite, GENEROUS_ATTEMPTS).await;
    authority.policy("many", 40, &[]);
    let (license_id, key) = authority.license("many", "acme");
    let url = authority.url.clone();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (url, key) = (url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(i * 3)).await;
            let installation = Installation::new(&format!("kill-{i}"));
            reqwest::Client::new()
                .post(format!("{url}/v1/activations"))
                .json(&json!({
                    "license_key": key,
                    "instance_id": installation.instance_id,
                    "instance_public_key": installation.key.public_key_pem(),
                    "hostname": "kill.test",
                    "nonce": nonce(),
                }))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    authority.kill9();
    let mut acknowledged = 0;
    let mut cut_off = 0;
    for task in tasks {
        match task.await.unwrap() {
            201 => acknowledged += 1,
            0 => cut_off += 1,
            _ => {}
        }
    }
    assert!(cut_off > 0, "the kill came after every activation");
    let restarted = authority.replica().await;
    let listed = restarted.cli_json(&["activation", "list", "--license", &license_id]);
    let activations = listed["activations"].as_array().unwrap();
    let events = restarted.events().await;
    let created = events
        .iter()
        .filter(|e| e["action"] == "activation.created")
        .count();
    // Every activation is whole (its audit entry with it), none exceeds the limit,
    // and every one acknowledged with 201 survived.
    assert_eq!(activations.len(), created);
    assert!(
        activations.len() >= acknowledged,
        "{} < {acknowledged}",
        activations.len()
    );
    assert!(activations.len() <= 40);
    assert!(activations.iter().all(
        |a| a["status"] == "active" && a["public_key"].as_str().unwrap().contains("PUBLIC KEY")
    ));
    let shown = restarted.cli_json(&["license", "show", &license_id]);
    assert_eq!(
        shown["active_activations"].as_u64().unwrap() as usize,
        activations.len()
    );
    // And it goes on counting.
    let more = Installation::new("after").activate(&restarted, &key).await;
    assert_eq!(more.status, 201);
}

#[test]
fn authority_check_locates_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.toml");
    std::fs::write(
        &path,
        "listen = \"nowhere\"\ndatabase = \"mysql://db\"\n[signing]\nkey = \"missing.pem\"\n[admin]\ntoken_file = \"none\"\n",
    )
    .unwrap();
    let (code, _, err) =
        crate::common::run_cli(&["authority", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:1:10: listen: `nowhere` is not a valid address"),
        format!("{file}:2:12: database: `mysql://db` is not a database URL"),
        format!("{file}:4:7: signing.key:"),
        format!("{file}:6:14: admin.token_file:"),
    ] {
        assert!(err.contains(&expected), "{expected}\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_gateway_activates_from_files_and_enforces_the_license() {
    use crate::common::{http_get, run_cli, Gateway, Upstream, BASE_CONFIG};
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    let (code, _, err) = authority.cli(&[
        "policy",
        "create",
        "--name",
        "reports",
        "--tier",
        "professional",
        "--feature",
        "reports",
        "--max-activations",
        "1",
        "--days",
        "30",
    ]);
    assert_eq!(code, 0, "{err}");
    let (license_id, key) = authority.license("reports", "default");
    let upstream = Upstream::start().await;
    let site = tempfile::tempdir().unwrap();
    let store = site.path().join("store");
    let license_section = format!(
        "[license]\npublic_keys = [{{ path = \"{}\", kid = \"v1\" }}]\nissuer = \"vendor.test\"\nstore_dir = \"{}\"\nscan_interval = \"100ms\"\n[[features]]\nprefix = \"/api/reports\"\nfeature = \"reports\"\n[[features]]\nprefix = \"/api/manufacturing/\"\nfeature = \"manufacturing_module\"\n",
        authority.dir.join("vendor.pub.pem").display(),
        store.display()
    );
    let template = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"") + &license_section;
    let config_path = site.path().join("licgate.toml");
    std::fs::write(
        &config_path,
        template
            .replace("{listen}", "127.0.0.1:1")
            .replace("{admin}", "127.0.0.1:2")
            .replace("{upstream}", &upstream.addr.to_string()),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let request = site.path().join("request.json");
    let response = site.path().join("response.json");

    // A typo is caught on the installation, before any file goes to the vendor.
    let mut typo: Vec<char> = key.chars().collect();
    let at = typo.len() - 2;
    typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
    let (code, _, err) = run_cli(&[
        "activation",
        "request",
        "--config",
        config,
        "--key",
        &typo.iter().collect::<String>(),
        "--out",
        request.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("KEY_CHECK_FAILED"), "{err}");

    let (code, _, err) = run_cli(&[
        "activation",
        "request",
        "--config",
        config,
        "--key",
        &key,
        "--out",
        request.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    authority.answer_offline(&request, &response);

    // A response changed on the way is refused and installs nothing.
    let tampered = site.path().join("tampered.json");
    let text = std::fs::read_to_string(&response).unwrap();
    std::fs::write(
        &tampered,
        text.replace(
            "\"heartbeat_interval\": 3600",
            "\"heartbeat_interval\": 3601",
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&[
        "activation",
        "install",
        "--config",
        config,
        tampered.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not a response signed by the vendor"), "{err}");

    let (code, _, err) = run_cli(&[
        "activation",
        "install",
        "--config",
        config,
        response.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&license_id), "{err}");
    // The same response again answers no pending request.
    let (code, _, err) = run_cli(&[
        "activation",
        "install",
        "--config",
        config,
        response.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no offline request is pending"), "{err}");

    // The gateway started on that store enforces the license: the app executes the
    // licensed feature and never sees the other.
    let gateway = Gateway::start_with(&(template.clone()), upstream.addr).await;
    let allowed = http_get(gateway.addr, "/api/reports/monthly")
        .await
        .unwrap();
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.json()["path"], "/api/reports/monthly");
    let refused = http_get(gateway.addr, "/api/manufacturing/orders")
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error_code"], "FEATURE_NOT_LICENSED");
    // The vendor sees the offline activation of this installation.
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    assert_eq!(listed["activations"][0]["offline"], true);
}
