//! The gateway as a reverse proxy: real upstream, real gateway process, real HTTP.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_preserves_method_path_query_and_headers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(gw.url("/api/sales/orders?page=2&q=a%20b&q=c"))
        .header("X-Custom", "one")
        .header("Accept-Language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/sales/orders");
    assert_eq!(echo["query"], "page=2&q=a%20b&q=c");
    assert_eq!(echoed_header(&echo, "x-custom").as_deref(), Some("one"));
    assert_eq!(
        echoed_header(&echo, "accept-language").as_deref(),
        Some("fr")
    );
    assert_eq!(
        echoed_header(&echo, "host").as_deref(),
        Some(gw.addr.to_string().as_str()),
        "Host is preserved"
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host").as_deref(),
        Some(gw.addr.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_arrive_intact() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let client = reqwest::Client::new();
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let resp = client
        .post(gw.url("/api/sales/orders"))
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 200_000);
    assert_eq!(echo["body"].as_str().unwrap(), body);

    // Chunked request body, exact bytes.
    let request = format!(
        "POST /api/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        gw.addr
    );
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body"], "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_gateway_headers_are_stripped() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let request = format!(
        "GET /api/hr HTTP/1.1\r\nHost: {}\r\nX-Licgate-Tenant: evil\r\nx-licgate-status: VALID\r\nX_Licgate_Features: all\r\nX-LICGATE-TIER: gold\r\nX-Licgated: kept\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    let names: Vec<String> = echoed_headers(&resp.json())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("x-licgate-") || n.starts_with("x_licgate_")),
        "gateway headers leaked: {names:?}"
    );
    assert!(
        names.contains(&"x-licgated".to_string()),
        "unrelated header kept"
    );
    assert_eq!(
        echoed_header(&resp.json(), "x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "an untrusted client cannot forge X-Forwarded-For"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_and_host_override() {
    let upstream = Upstream::start().await;
    let config = BASE_CONFIG
        .replace(
            "threads = 1",
            "threads = 1\ntrusted_proxies = [\"127.0.0.0/8\"]",
        )
        .replace(
            "address = \"{upstream}\"",
            "address = \"{upstream}\"\nhost_header = \"internal.app:8000\"",
        );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let request = "GET /x HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    let echo = resp.json();
    assert_eq!(
        echoed_header(&echo, "host").as_deref(),
        Some("internal.app:8000")
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host").as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        echoed_header(&echo, "x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_connection_serves_many_requests() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..5 {
        let request = format!("GET /n/{i} HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        let resp = read_response(&mut stream, false).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["path"], format!("/n/{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_clear_502_and_gateway_stays_up() {
    let gw = Gateway::start(dead_addr()).await;

    // API client: problem+json with exact Content-Length.
    let request = format!(
        "GET /api/sales HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    let problem = resp.json();
    assert_eq!(problem["error_code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(problem["status"], 502);
    assert_eq!(problem["success"], false);

    // Browser: a small HTML page.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nAccept: text/html,application/xhtml+xml\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.text().contains("<html"));
    assert!(resp.text().contains("UPSTREAM_UNAVAILABLE"));

    // HEAD: the length of the body that would have been sent, no body.
    let request = format!(
        "HEAD /x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let resp = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 502);
    assert!(
        resp.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );

    // Still up, and still answering.
    for _ in 0..30 {
        assert_eq!(http_get(gw.addr, "/again").await.unwrap().status, 502);
    }
    assert_eq!(http_get(gw.admin, "/healthz").await.unwrap().status, 200);

    // The failures are logged, but not one line per request.
    let logs = gw.logs();
    let lines = logs.matches("upstream request failed").count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} failure lines for 33 failures:\n{logs}"
    );
    assert!(
        !logs.contains("Fail to proxy"),
        "pingora's per-request line is replaced:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504() {
    let upstream = Upstream::start().await;
    let config = BASE_CONFIG.replace(
        "address = \"{upstream}\"",
        "address = \"{upstream}\"\nread_timeout = \"300ms\"",
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let resp = http_get(gw.addr, "/slow?delay_ms=3000").await.unwrap();
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error_code"], "UPSTREAM_TIMEOUT");
    // A fast request still goes through.
    assert_eq!(http_get(gw.addr, "/fast").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("reply in time")
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_every_configured_address() {
    let upstream = Upstream::start().await;
    let second = free_addr();
    let config = BASE_CONFIG.replace(
        "listen = \"{listen}\"",
        &format!("listen = [\"{{listen}}\", \"{second}\"]"),
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    assert_eq!(http_get(gw.addr, "/a").await.unwrap().status, 200);
    assert_eq!(http_get(second, "/b").await.unwrap().json()["path"], "/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_is_a_plain_proxy_and_enforce_is_not() {
    let upstream = Upstream::start().await;
    // No [license] section: with enforcement nothing is licensed.
    let enforce = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"");
    let gw = Gateway::start_with(&enforce, upstream.addr).await;
    let resp = http_get(gw.addr, "/api/manufacturing/plan?x=1")
        .await
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error_code"], "LICENSE_MISSING");
    let gw = Gateway::start(upstream.addr).await;
    let resp = http_get(gw.addr, "/api/manufacturing/plan?x=1")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["query"], "x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_clients() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let mut seen = Vec::new();
    for i in 0..4 {
        // A new client connection each time (Connection: close).
        let resp = http_get(gw.addr, &format!("/r/{i}")).await.unwrap();
        assert_eq!(resp.status, 200);
        seen.push(resp.json()["connection"].as_u64().unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "one pooled upstream connection serves sequential requests: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_the_gateway_stays_up() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(upstream.addr).await;
    let malformed: [&[u8]; 4] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ];
    for request in malformed {
        let resp = raw_request(gw.addr, request)
            .await
            .unwrap_or_else(|e| panic!("{:?}: no answer: {e}", String::from_utf8_lossy(request)));
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(resp.header("content-length"), Some("0"));
    }
    assert_eq!(http_get(gw.addr, "/still-up").await.unwrap().status, 200);
}
