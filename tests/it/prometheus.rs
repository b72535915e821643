//! A real Prometheus (Debian's package, installed by `make test`): `/metrics` passes
//! `promtool check metrics`, a Prometheus server scraping a gateway on loopback
//! answers every PromQL expression of the Grafana dashboard with a series, and it
//! loads the alert rules (their logic is `promtool test rules`' job, see deploy.rs).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::setup::{Setup, DAY};
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} is not installed: `make test` installs Debian's prometheus package");
}

impl Prometheus {
    /// Starts Prometheus scraping the admin listener `target` every second, with the
    /// alert rules of deploy/prometheus loaded.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo_root().join("deploy/prometheus/alerts.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: licgate\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            addr,
            child,
            _dir: dir,
        }
    }

    /// The result vector of the instant query `expr` (via `promtool query instant`).
    fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let out = Command::new(tool("promtool"))
            .args([
                "query",
                "instant",
                "-o",
                "json",
                &format!("http://{}", self.addr),
                expr,
            ])
            .output()
            .expect("run promtool");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
        Ok(value.as_array().cloned().unwrap_or_default())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Every PromQL expression of the Grafana dashboard, with its variables set to match
/// everything.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/licgate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$instance", ".*")
                    .replace("$tenant", ".*")
                    .replace("$__rate_interval", "30s");
                out.push((panel["title"].as_str().unwrap_or("").to_string(), expr));
            }
        }
    }
    assert!(out.len() > 10, "{out:?}");
    out
}

#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_answers_every_dashboard_query() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 10 * DAY);
    claims.iss = Some("Vendor".into());
    claims.limits.requests_per_hour = Some(3);
    setup.preinstall(&setup.sign(&claims), "default.jwt");
    let config = setup.config(
        "enforce",
        "[[features]]\nprefix = \"/api/beta\"\nfeature = \"beta\"\nmode = \"shadow\"\n",
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let mut statuses = Vec::new();
    for path in [
        "/api/reports/x",
        "/api/manufacturing/plan",
        "/api/beta/x",
        "/static/app.css",
    ] {
        for _ in 0..4 {
            statuses.push(http_get(gw.addr, path).await.unwrap().status);
        }
    }
    assert!(
        statuses.contains(&403) && statuses.contains(&429),
        "{statuses:?}"
    );

    // The exposition passes promtool's lint.
    let metrics = http_get(gw.admin, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    let mut lint = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(lint.stdin.as_mut().unwrap(), metrics.body.as_slice()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(
        lint.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
    assert!(
        metrics
            .text()
            .contains("licgate_quota_usage_ratio{tenant=\"default\",window=\"hour\"} 1"),
        "{}",
        metrics.text()
    );

    let prometheus = Prometheus::start(gw.admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = prometheus.query("up{job=\"licgate\"} == 1");
        if matches!(&up, Ok(v) if !v.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "target not up: {up:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more scrapes, so that every rate has two samples.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut empty = Vec::new();
    for (title, expr) in dashboard_expressions() {
        match prometheus.query(&expr) {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: {expr}: no series")),
            Err(e) => empty.push(format!("{title}: {expr}: {e}")),
        }
    }
    assert!(empty.is_empty(), "{empty:#?}");
    // The alert rules loaded and are evaluated against the real series: the quota of
    // `default` is used up (its alert waits out its `for`).
    let alerts = prometheus
        .query("ALERTS{alertname=\"LicgateQuotaNearExhaustion\"}")
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}\n{}", prometheus.log());
    let expiring = prometheus
        .query("ALERTS{alertname=\"LicgateLicenseExpiringSoon\", tenant=\"default\"}")
        .unwrap();
    assert_eq!(expiring.len(), 1, "{expiring:?}");
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
