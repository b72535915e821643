//! The demo upstream application: a tiny web app that stands in for a Django/Odoo app.
//!
//! - `GET /` — a home page listing what to try (for clients accepting HTML);
//! - `GET /accounts/login/` — a login page (for clients accepting HTML; `POST`
//!   redirects home);
//! - `GET /ws` with a WebSocket upgrade — echoes every message back;
//! - anything else — a JSON echo of the request as received (method, path, query,
//!   headers, body), so the headers the gateway adds or strips are visible.
//!   `?delay_ms=N` (at most 30000) delays the answer, to watch in-flight behaviour.
//!   The echo also carries `connection`: the sequence number of the TCP connection
//!   it arrived on (1 for the first accepted), which shows keep-alive reuse.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::pages::escape;

/// Largest request body the demo app reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest `delay_ms` honoured.
const MAX_DELAY_MS: u64 = 30_000;

/// Serves the demo app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let mut connections: u64 = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections += 1;
        let connection = connections;
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| handle(req, connection)),
                )
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

type DemoResponse = Response<Full<Bytes>>;

/// Answers one request that arrived on the `connection`-th accepted connection.
pub async fn handle(req: Request<Incoming>, connection: u64) -> Result<DemoResponse, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (_, "/ws") if is_websocket_upgrade(&req) => websocket(req),
        (&Method::GET | &Method::HEAD, "/") if accepts_html(&req) => {
            html(StatusCode::OK, home_page())
        }
        (&Method::GET | &Method::HEAD, "/accounts/login/") if accepts_html(&req) => {
            html(StatusCode::OK, login_page())
        }
        (&Method::POST, "/accounts/login/") => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/")
            .header(header::CONTENT_LENGTH, 0)
            .body(Full::new(Bytes::new()))
            .expect("static response"),
        _ => echo(req, connection).await,
    };
    Ok(response)
}

/// Pages go to clients that accept HTML; everyone else gets the JSON echo.
fn accepts_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Accepts the upgrade and echoes every text/binary message until the peer closes.
fn websocket(mut req: Request<Incoming>) -> DemoResponse {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, key)
        .body(Full::new(Bytes::new()))
        .expect("static response")
}

/// JSON description of the request exactly as it arrived.
async fn echo(req: Request<Incoming>, connection: u64) -> DemoResponse {
    let (parts, body) = req.into_parts();
    let delay_ms = parts
        .uri
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("delay_ms="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        .min(MAX_DELAY_MS);
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": "body too large"}),
            )
        }
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
            "connection": connection,
        }),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> DemoResponse {
    let body = serde_json::to_vec_pretty(value).expect("json value serializes");
    respond(status, "application/json", body)
}

fn html(status: StatusCode, body: String) -> DemoResponse {
    respond(status, "text/html; charset=utf-8", body.into_bytes())
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> DemoResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

fn home_page() -> String {
    let links = [
        ("/accounts/login/", "the login page"),
        ("/api/sales/orders", "a sales API endpoint (JSON echo)"),
        (
            "/api/manufacturing/plan",
            "a manufacturing API endpoint (JSON echo)",
        ),
        ("/api/hr/employees", "an HR API endpoint (JSON echo)"),
    ];
    let items: String = links
        .iter()
        .map(|(href, what)| {
            format!(
                "<li><a href=\"{h}\">{h}</a> — {w}</li>",
                h = escape(href),
                w = escape(what)
            )
        })
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo app</title></head>\
<body><h1>Demo app</h1><p>This page comes from the demo upstream application, served through licgate.</p>\
<ul>{items}</ul><p>A WebSocket echo listens on <code>/ws</code>.</p></body></html>\n"
    )
}

fn login_page() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in — Demo app</title></head>\
<body><h1>Log in</h1><form method=\"post\" action=\"/accounts/login/\">\
<label>User <input name=\"username\"></label> <label>Password <input type=\"password\" name=\"password\"></label>\
<button type=\"submit\">Log in</button></form></body></html>\n"
        .to_string()
}
