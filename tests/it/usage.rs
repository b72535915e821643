//! The usage ledger through the real gateway: what it counts (checked against what
//! the application executed), the admin API's series, `licgate usage report` on the
//! database while the gateway runs and after SIGTERM, and signed usage reports made
//! by `licgate usage export` and checked by `licgate usage verify`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::setup::{Setup, DAY};
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_TOKEN: &str = "usage-tests-admin-token-0123456789";

/// An upstream on a raw socket that records the request line of every request it
/// executes; `/slow` answers after 600 ms.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
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
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or("").to_string();
                        let slow = line.contains(" /slow ");
                        record.lock().unwrap().push(line);
                        if slow {
                            tokio::time::sleep(Duration::from_millis(600)).await;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A gateway config for tenant `default` (feature `reports`, at most `per_hour`
/// requests an hour) with the admin token set.
fn usage_config(setup: &Setup, per_hour: u64, extra: &str) -> String {
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 30 * DAY);
    claims.iss = Some("Vendor".into());
    claims.jti = "lic-usage-1".into();
    claims.limits.requests_per_hour = Some(per_hour);
    setup.preinstall(&setup.sign(&claims), "default.jwt");
    let token_file = setup.dir.path().join("admin.token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    setup.config("enforce", extra).replace(
        "[admin]\n",
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    )
}

async fn admin_json(gw: &Gateway, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", gw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// The gateway's own configuration file (written by the harness).
fn config_file(gw: &Gateway) -> String {
    let path = gw.dir().join("licgate.toml");
    assert!(path.exists(), "{}", path.display());
    path.to_string_lossy().into_owned()
}

fn report_json(config: &str, from: &str, to: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "usage", "report", "--config", config, "--from", from, "--to", to, "--format", "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The report's row of `tenant` and `feature` (summed over its periods).
fn row_total(report: &serde_json::Value, tenant: &str, feature: &str, field: &str) -> u64 {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tenant"] == tenant && r["feature"] == feature)
        .map(|r| r[field].as_u64().unwrap())
        .sum()
}

fn today() -> String {
    let now = SystemClock.now();
    time_date(now)
}

/// `YYYY-MM-DD` of Unix time `at`.
fn time_date(at: i64) -> String {
    licgate::license::time_text(at)[..10].to_string()
}

#[tokio::test]
async fn the_ledger_counts_what_was_decided_and_survives_sigterm() {
    let (upstream, seen) = recording_upstream().await;
    let setup = Setup::new();
    let mut gw = Gateway::start_with(&usage_config(&setup, 10, ""), upstream).await;
    for _ in 0..5 {
        assert_eq!(
            http_get(gw.addr, "/api/reports/daily")
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(http_get(gw.addr, "/other").await.unwrap().status, 200);
    }
    for _ in 0..2 {
        let resp = http_get(gw.addr, "/api/manufacturing/plan").await.unwrap();
        assert_eq!(resp.status, 403);
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            http_get(gw.addr, "/api/reports/daily")
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    // A target that cannot be normalized: no tenant decided, counted as `_unknown`.
    let bad = raw_request(
        gw.addr,
        b"GET /a/%2e%2e/%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    // What the application executed: 7 report requests and 3 others, nothing else.
    let executed = seen.lock().unwrap().clone();
    assert_eq!(
        executed
            .iter()
            .filter(|l| l.starts_with("GET /api/reports/daily "))
            .count(),
        7,
        "{executed:?}"
    );
    assert_eq!(
        executed
            .iter()
            .filter(|l| l.starts_with("GET /other "))
            .count(),
        3
    );
    assert_eq!(executed.len(), 10, "{executed:?}");

    // Written within a second or so; the admin API reads it back as a series.
    let day = today();
    let path = format!("/admin/v1/tenants/default/usage?from={day}&to={day}&granularity=hour");
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, json) = admin_json(&gw, &path).await;
        if status == 200 && json["totals"]["allowed"] == 10 && json["totals"]["limited"] == 2 {
            body = json;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["totals"]["allowed"], 10, "{body}");
    assert_eq!(
        body["totals"]["refused"]["FEATURE_NOT_LICENSED"], 2,
        "{body}"
    );
    assert_eq!(
        body["totals"]["refused"]["USAGE_LIMIT_EXCEEDED"], 2,
        "{body}"
    );
    assert_eq!(body["features"]["reports"]["allowed"], 7, "{body}");
    assert_eq!(body["features"]["-"]["allowed"], 3, "{body}");
    assert_eq!(
        body["features"]["manufacturing_module"]["refused"]["FEATURE_NOT_LICENSED"],
        2
    );
    assert_eq!(
        body["series"].as_array().unwrap().len(),
        24,
        "every hour of the day"
    );
    assert_eq!(body["granularity"], "hour");
    let (status, one) = admin_json(
        &gw,
        &format!("/admin/v1/tenants/default/usage?from={day}&to={day}&feature=reports"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["totals"]["allowed"], 7, "{one}");
    assert_eq!(one["series"].as_array().unwrap().len(), 1, "one day");
    let (status, err) = admin_json(&gw, "/admin/v1/tenants/default/usage?granularity=week").await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["detail"]
            .as_str()
            .unwrap()
            .contains("hour, day or month"),
        "{err}"
    );
    let (status, _) = admin_json(&gw, "/admin/v1/tenants/default/usage?from=2026-13-01").await;
    assert_eq!(status, 400);

    // The tenant view advises: the hourly limit was used up.
    let (status, view) = admin_json(&gw, "/admin/v1/tenants/default").await;
    assert_eq!(status, 200);
    let advice = view["advice"]
        .as_array()
        .unwrap_or_else(|| panic!("{view}"));
    let near = advice
        .iter()
        .find(|a| a["kind"] == "near_limit" && a["limit"] == "requests_per_hour")
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(
        (
            near["used"].as_u64(),
            near["of"].as_u64(),
            near["percent"].as_u64()
        ),
        (Some(10), Some(10), Some(100))
    );
    assert!(
        near["message"]
            .as_str()
            .unwrap()
            .contains("consider upgrading"),
        "{near}"
    );
    assert!(
        !advice.iter().any(|a| a["kind"] == "unused_feature"),
        "reports was used: {view}"
    );

    // The CLI reads the same database while the gateway runs.
    let config = config_file(&gw);
    let report = report_json(&config, &day, &day, &[]);
    assert_eq!(
        row_total(&report, "default", "reports", "allowed"),
        7,
        "{report}"
    );
    assert_eq!(
        row_total(&report, "default", "reports", "limited"),
        2,
        "{report}"
    );
    let unknown: Vec<_> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tenant"] == "_unknown")
        .collect();
    assert_eq!(unknown.len(), 1, "{report}");
    assert_eq!(unknown[0]["refused"]["BAD_REQUEST_PATH"], 1, "{report}");

    // A request just before SIGTERM is written on the way out.
    assert_eq!(
        http_get(gw.addr, "/api/reports/daily")
            .await
            .unwrap()
            .status,
        429
    );
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(15)).await.expect("exits");
    assert!(status.success(), "{status:?}");
    let after = report_json(&config, &day, &day, &["--tenant", "default"]);
    assert_eq!(
        row_total(&after, "default", "reports", "limited"),
        3,
        "{after}"
    );
    assert!(after["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["tenant"] == "default"));
    let (code, table, _) = run_cli(&[
        "usage", "report", "--config", &config, "--from", &day, "--to", &day,
    ]);
    assert_eq!(code, 0);
    assert!(table.starts_with("TENANT"), "{table}");
    assert!(table.contains("USAGE_LIMIT_EXCEEDED=3"), "{table}");
    let (code, csv, _) = run_cli(&[
        "usage",
        "report",
        "--config",
        &config,
        "--from",
        &day,
        "--to",
        &day,
        "--format",
        "csv",
        "--granularity",
        "month",
    ]);
    assert_eq!(code, 0);
    assert!(
        csv.starts_with("tenant,feature,period,allowed,limited,refused,peak_concurrency\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            "default,reports,{},7,3,USAGE_LIMIT_EXCEEDED=3,",
            &day[..7]
        )),
        "{csv}"
    );
}

#[tokio::test]
async fn peak_concurrency_is_the_most_requests_in_progress_at_once() {
    let (upstream, seen) = recording_upstream().await;
    let setup = Setup::new();
    let gw = Gateway::start_with(&usage_config(&setup, 1_000, ""), upstream).await;
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(http_get(gw.addr, "/slow")))
        .collect();
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(seen.lock().unwrap().len(), 3);
    let day = today();
    let mut peak = serde_json::Value::Null;
    for _ in 0..50 {
        let (_, json) = admin_json(
            &gw,
            &format!("/admin/v1/tenants/default/usage?from={day}&to={day}"),
        )
        .await;
        if json["totals"]["allowed"] == 3 {
            peak = json["totals"]["peak_concurrency"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peak, 3);
    // Nothing of the licensed feature `reports` was used.
    let (_, view) = admin_json(&gw, "/admin/v1/tenants/default").await;
    let unused: Vec<_> = view["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "unused_feature")
        .map(|a| a["feature"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unused, ["reports"], "{view}");
}

#[tokio::test]
async fn signed_usage_reports_chain_and_refuse_tampering_and_replays() {
    let (upstream, _seen) = recording_upstream().await;
    let setup = Setup::new();
    let mut gw = Gateway::start_with(&usage_config(&setup, 1_000, ""), upstream).await;
    let config = config_file(&gw);
    // Two days ago and yesterday, as the gateway's clock sees them.
    let now = SystemClock.now();
    let two_days_ago = now - 2 * DAY;
    gw.set_quota_clock(two_days_ago);
    for _ in 0..4 {
        assert_eq!(
            http_get(gw.addr, "/api/reports/x").await.unwrap().status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gw.set_quota_clock(now - DAY);
    for _ in 0..6 {
        assert_eq!(http_get(gw.addr, "/other").await.unwrap().status, 200);
    }
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(15)).await.expect("exits");

    let (first_day, second_day) = (time_date(two_days_ago), time_date(now - DAY));
    let out = |name: &str| setup.dir.path().join(name).to_string_lossy().into_owned();
    let export = |from: &str, to: &str, file: &str| {
        run_cli(&[
            "usage", "export", "--config", &config, "--from", from, "--to", to, "--out", file,
        ])
    };
    let (code, _, err) = export(&first_day, &first_day, &out("r1.json"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = export(&second_day, &second_day, &out("r2.json"));
    assert_eq!(code, 0, "{err}");
    // Today is not over; overlaps and gaps are refused.
    let (code, _, err) = export(&today(), &today(), &out("r3.json"));
    assert_eq!(code, 1);
    assert!(err.contains("must be over"), "{err}");
    // The instance's public key, as the customer sends it to the vendor.
    let (code, pem, _) = run_cli(&["instance-id", "--config", &config, "--public-key"]);
    assert_eq!(code, 0);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let key = out("instance.pub.pem");
    std::fs::write(&key, &pem).unwrap();
    let (_, id, fingerprint) = run_cli(&["instance-id", "--config", &config]);
    assert_eq!(id.trim(), "test-instance");
    assert!(fingerprint.contains("SHA256:"), "{fingerprint}");

    let verify = |file: &str, previous: Option<&str>| {
        let mut args = vec!["usage", "verify", file, "--instance-key", key.as_str()];
        if let Some(p) = previous {
            args.extend(["--previous", p]);
        }
        run_cli(&args)
    };
    let (code, text, err) = verify(&out("r1.json"), None);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("valid usage report number 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("default") && l.contains(" 4 ")),
        "{text}"
    );
    let r1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out("r1.json")).unwrap()).unwrap();
    assert_eq!(
        r1["report"]["licenses"]["default"][0], "lic-usage-1",
        "{r1}"
    );
    assert_eq!(r1["report"]["days"][0]["day"], first_day.as_str(), "{r1}");
    assert_eq!(r1["report"]["totals"]["default"]["allowed"], 4);
    let (code, text, err) = verify(&out("r2.json"), Some(&out("r1.json")));
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("follows the previous report (number 1)"),
        "{text}"
    );

    // A changed count.
    let tampered = std::fs::read_to_string(out("r2.json"))
        .unwrap()
        .replace("\"allowed\": 6", "\"allowed\": 1");
    std::fs::write(out("tampered.json"), tampered).unwrap();
    let (code, _, err) = verify(&out("tampered.json"), Some(&out("r1.json")));
    assert_eq!(code, 1);
    assert!(err.contains("signature does not verify"), "{err}");
    // Replayed, reordered.
    let (code, _, err) = verify(&out("r1.json"), Some(&out("r1.json")));
    assert_eq!(code, 1);
    assert!(err.contains("replayed"), "{err}");
    let (code, _, err) = verify(&out("r1.json"), Some(&out("r2.json")));
    assert_eq!(code, 1);
    assert!(err.contains("out of order"), "{err}");
    // Another installation's key.
    let other = Setup::new();
    let other_config = other.dir.path().join("other.toml");
    std::fs::write(
        &other_config,
        format!(
            "[upstream]\naddress = \"127.0.0.1:1\"\n{}",
            other.license_section()
        ),
    )
    .unwrap();
    let (_, other_pem, _) = run_cli(&[
        "instance-id",
        "--config",
        other_config.to_str().unwrap(),
        "--public-key",
    ]);
    let other_key = out("other.pub.pem");
    std::fs::write(&other_key, other_pem).unwrap();
    let (code, _, err) = run_cli(&[
        "usage",
        "verify",
        &out("r1.json"),
        "--instance-key",
        &other_key,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("another instance key"), "{err}");
    // Exporting the last period again gives the same report; skipping days is refused.
    let (code, again, _) = export(&second_day, &second_day, &out("r2-again.json"));
    assert_eq!(code, 0);
    assert!(again.contains("already exported"), "{again}");
    assert_eq!(
        std::fs::read(out("r2.json")).unwrap(),
        std::fs::read(out("r2-again.json")).unwrap()
    );
    let (code, _, err) = export(&first_day, &second_day, &out("r-overlap.json"));
    assert_eq!(code, 1);
    assert!(err.contains("the next one starts on"), "{err}");
}
