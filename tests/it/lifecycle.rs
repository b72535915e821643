//! Admin listener, readiness, and graceful shutdown of the real process.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_and_readiness() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;

    let health = http_get(gw.admin, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.json()["status"], "ok");

    let ready = http_get(gw.admin, "/readyz").await.unwrap();
    assert_eq!(ready.status, 200);
    let ready = ready.json();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["config_loaded"], true);
    assert_eq!(ready["checks"]["listening"], true);

    let missing = http_get(gw.admin, "/nope").await.unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(missing.json()["error_code"], "NOT_FOUND");

    let post = raw_request(
        gw.admin,
        format!(
            "POST /healthz HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            gw.admin
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // The admin listener does not proxy, and the proxy listener does not serve admin routes.
    let through_proxy = http_get(gw.addr, "/healthz").await.unwrap();
    assert_eq!(
        through_proxy.json()["path"],
        "/healthz",
        "the app answered, not the admin"
    );
}

/// Starts a slow request, sends `signal`, and checks that the request completes,
/// new connections are refused, and the process exits 0 soon after.
async fn drains_on(signal: &str) {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(upstream.addr).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { http_get(addr, "/slow?delay_ms=1500").await });
    gw.until_in_flight(1).await;
    let signalled = Instant::now();
    gw.signal(signal);

    let resp = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/slow");

    let status = gw
        .wait_exit(Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("did not exit after SIG{signal}: {}", gw.logs()));
    assert!(status.success(), "exit status {status}: {}", gw.logs());
    // It exited once drained, not after the whole 10s shutdown_timeout.
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
    assert!(
        gw.logs().contains("all in-flight requests finished"),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    drains_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_in_flight_requests() {
    drains_on("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_are_refused_while_draining() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(upstream.addr).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { http_get(addr, "/slow?delay_ms=2000").await });
    gw.until_in_flight(1).await;
    gw.signal("TERM");
    gw.until_logged("draining in-flight requests").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(addr, "/late").await.is_ok() {
        assert!(Instant::now() < deadline, "listeners still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !slow.is_finished(),
        "no new request is accepted once shutdown started, while the slow one runs"
    );
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    assert!(gw.wait_exit(Duration::from_secs(8)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_demo_app_with_a_demo_license() {
    let listen = free_addr();
    let admin = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let err = std::fs::File::create(dir.path().join("err")).unwrap();
    let mut child = std::process::Command::new(licgate_bin())
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !licgate_ready(admin).await {
        assert!(Instant::now() < deadline, "demo not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let home = raw_request(
        listen,
        format!(
            "GET / HTTP/1.1\r\nHost: {listen}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(home.status, 200);
    assert!(home.text().contains("Demo app"));
    // The demo license's "100 requests per hour" counts down from 99 (the home page
    // was the first request).
    let sales = http_get(listen, "/api/sales/orders").await.unwrap();
    assert_eq!(sales.json()["path"], "/api/sales/orders");
    assert_eq!(
        sales.header("ratelimit-limit"),
        Some("100"),
        "{}",
        sales.head
    );
    assert_eq!(sales.header("ratelimit-remaining"), Some("98"));
    let policy = sales.header("ratelimit-policy").unwrap_or_default();
    assert_eq!(policy, "100;w=3600");
    let again = http_get(listen, "/api/sales/orders").await.unwrap();
    assert_eq!(again.header("ratelimit-remaining"), Some("97"));

    // The embedded license server: the printed key activates, its revocation arrives
    // within one heartbeat (10 s in the demo).
    let stdout = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with("LG-") && w.len() == 32)
        .unwrap_or_else(|| panic!("no key printed: {stdout}"));
    let plan = http_get(listen, "/api/manufacturing/plan").await.unwrap();
    assert_eq!(plan.json()["error_code"], "FEATURE_NOT_LICENSED");
    let body = format!("{{\"license_key\": \"{key}\"}}");
    let activated = raw_request(
        listen,
        format!(
            "POST /_licgate/activate HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(activated.status, 200, "{}", activated.text());
    let plan = http_get(listen, "/api/manufacturing/plan").await.unwrap();
    assert_eq!(plan.status, 200);
    assert_eq!(plan.json()["path"], "/api/manufacturing/plan");
    assert_eq!(
        plan.header("ratelimit-limit"),
        Some("200"),
        "the add-on's 100/hour added"
    );
    let revoke = stdout
        .lines()
        .find(|l| l.contains("/revoke"))
        .unwrap()
        .trim();
    let words: Vec<&str> = revoke.split('\'').collect();
    let (auth, url) = (words[1], revoke.rsplit(' ').next().unwrap());
    let revoked = reqwest::Client::new()
        .post(url)
        .header("authorization", auth.trim_start_matches("Authorization: "))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let plan = http_get(listen, "/api/manufacturing/plan").await.unwrap();
        if plan.status == 403 {
            assert_eq!(plan.json()["error_code"], "FEATURE_NOT_LICENSED");
            break;
        }
        assert!(Instant::now() < deadline, "the revocation did not arrive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert!(
        stdout.contains("Demo license (tenant default, tier professional"),
        "{stdout}"
    );
    assert!(stderr.contains("tenant=default status=VALID"), "{stderr}");
    // The throwaway directory named in the output holds the key pair and the license.
    let inspect = stdout
        .lines()
        .find(|l| l.contains("licgate license inspect"))
        .unwrap();
    let words: Vec<&str> = inspect.split_whitespace().collect();
    let (token_file, public_key) = (words[3], words[5]);
    let (code, report, _) = run_cli(&[
        "license",
        "inspect",
        token_file,
        "--public-key",
        public_key,
        "--instance-id",
        "demo-instance",
    ]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("signature: valid (EdDSA, bound to this instance)"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(
        std::path::Path::new(public_key)
            .parent()
            .unwrap()
            .parent()
            .unwrap(),
    );
}
