//! Enforcement end to end: the real gateway with licenses, in front of the real
//! upstream (which reports the exact path it received).

use crate::common::setup::Setup;
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::SigningKey;

fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

const BROWSER: &str = "Accept: text/html,application/xhtml+xml\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_for_api_clients_browsers_and_xhr() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["reports"], 100), "l.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;

    // Licensed paths are forwarded with the tenant's headers.
    let resp = raw_request(gw.addr, &get(gw.addr, "/api/reports/q1?x=1", ""))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.json();
    assert_eq!(echo["path"], "/api/reports/q1");
    assert_eq!(
        echoed_header(&echo, "x-licgate-tenant").as_deref(),
        Some("default")
    );
    assert_eq!(
        echoed_header(&echo, "x-licgate-status").as_deref(),
        Some("VALID")
    );
    assert_eq!(
        echoed_header(&echo, "x-licgate-tier").as_deref(),
        Some("professional")
    );
    assert_eq!(
        echoed_header(&echo, "x-licgate-features").as_deref(),
        Some("reports")
    );
    assert_eq!(
        echoed_header(&echo, "x-licgate-license-id").as_deref(),
        Some("default-reports-100")
    );

    // A feature the license lacks: JSON for APIs and XHR, a page for browsers.
    let api = raw_request(
        gw.addr,
        &get(
            gw.addr,
            "/api/manufacturing/plan",
            "Accept: application/json\r\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(api.status, 403);
    assert_eq!(api.header("content-type"), Some("application/problem+json"));
    let p = api.json();
    assert_eq!(p["error_code"], "FEATURE_NOT_LICENSED");
    assert_eq!(p["success"], false);
    assert_eq!(p["details"]["required_feature"], "manufacturing_module");
    assert_eq!(p["details"]["current_tier"], "professional");
    assert!(p["details"]["upgrade_hint"]
        .as_str()
        .unwrap()
        .contains("manufacturing_module"));
    let xhr = raw_request(
        gw.addr,
        &get(
            gw.addr,
            "/api/manufacturing/plan",
            &format!("{BROWSER}X-Requested-With: XMLHttpRequest\r\n"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(xhr.status, 403);
    assert_eq!(xhr.json()["error_code"], "FEATURE_NOT_LICENSED");
    let page = raw_request(gw.addr, &get(gw.addr, "/api/manufacturing/plan", BROWSER))
        .await
        .unwrap();
    assert_eq!(page.status, 403);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("manufacturing_module") && page.text().contains("Professional"));
    // Segment boundaries: /api/manufacturingx is not under /api/manufacturing/.
    let other = raw_request(gw.addr, &get(gw.addr, "/api/manufacturingx", ""))
        .await
        .unwrap();
    assert_eq!(other.status, 200);

    // Status endpoint: status and tier only (pages.public_status = false), no key material.
    let status = raw_request(gw.addr, &get(gw.addr, "/_licgate/status", ""))
        .await
        .unwrap();
    assert_eq!(status.status, 200);
    let s = status.json();
    assert_eq!(s["status"], "VALID");
    assert_eq!(s["tier"], "professional");
    assert_eq!(s.as_object().unwrap().len(), 2, "{s}");
    assert!(!status.text().contains("eyJ"), "no token in the status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlicensed_browsers_go_to_activation_and_apis_get_license_missing() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    for path in ["/", "/accounts/login/", "/api/reports/x?y=1", "/anything"] {
        let resp = raw_request(gw.addr, &get(gw.addr, path, BROWSER))
            .await
            .unwrap();
        assert_eq!(resp.status, 303, "{path}");
        let location = resp.header("location").unwrap();
        let expected_next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(location, format!("/_licgate/activate?next={expected_next}"));
        assert_eq!(
            resp.header("content-length"),
            Some(resp.body.len().to_string().as_str())
        );
    }
    let api = raw_request(gw.addr, &get(gw.addr, "/api/reports/x", ""))
        .await
        .unwrap();
    assert_eq!(api.status, 403);
    assert_eq!(api.json()["error_code"], "LICENSE_MISSING");
    // Public paths need no license.
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/static/app.css", BROWSER))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/favicon.ico", ""))
            .await
            .unwrap()
            .status,
        200
    );
}

/// Reads the CSRF cookie and hidden field of an activation page response.
fn csrf_of(page: &RawResponse) -> (String, String) {
    let cookie = page
        .header("set-cookie")
        .expect("csrf cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = page.text();
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    let end = start + html[start..].find('"').expect("end of the csrf field");
    let field = html[start..end].to_string();
    (cookie, field)
}

fn form_post(addr: std::net::SocketAddr, cookie: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    format!(
        "POST /_licgate/activate HTTP/1.1\r\nHost: {addr}\r\n{BROWSER}Content-Type: application/x-www-form-urlencoded\r\nCookie: {cookie}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_journey_unlicensed_to_app() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;

    let page = raw_request(
        gw.addr,
        &get(gw.addr, "/_licgate/activate?next=%2Forders", BROWSER),
    )
    .await
    .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("test-instance"),
        "the form shows the instance id"
    );
    assert!(page.text().contains("UNLICENSED"));
    assert!(page
        .header("set-cookie")
        .unwrap()
        .contains("HttpOnly; SameSite=Strict"));
    let (cookie, csrf) = csrf_of(&page);

    // Without the CSRF token, or with another one: refused.
    let token = setup.token("default", &["reports"], 100);
    let resp = raw_request(
        gw.addr,
        &form_post(gw.addr, &cookie, &[("license_key", &token)]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 403);
    assert!(resp.text().contains("CSRF check failed"));
    let resp = raw_request(
        gw.addr,
        &form_post(
            gw.addr,
            "licgate_csrf=00000000000000000000000000000000",
            &[("license_key", &token), ("csrf_token", &csrf)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/", ""))
            .await
            .unwrap()
            .status,
        403,
        "nothing installed"
    );

    // An invalid key: the form again, with the reason.
    let stranger = Setup::new();
    let bad = stranger.token("default", &["reports"], 100);
    let resp = raw_request(
        gw.addr,
        &form_post(
            gw.addr,
            &cookie,
            &[("license_key", &bad), ("csrf_token", &csrf)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("the signature does not verify"),
        "{}",
        resp.text()
    );
    let wrong_tenant = setup.token("globex", &[], 100);
    let resp = raw_request(
        gw.addr,
        &form_post(
            gw.addr,
            &cookie,
            &[("license_key", &wrong_tenant), ("csrf_token", &csrf)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400);
    assert!(
        resp.text().contains("it is for tenant &quot;globex&quot;"),
        "{}",
        resp.text()
    );

    // The right key: installed, and the browser lands on the login page.
    let resp = raw_request(
        gw.addr,
        &form_post(
            gw.addr,
            &cookie,
            &[
                ("license_key", &token),
                ("csrf_token", &csrf),
                ("next", "//evil.example"),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.header("location"), Some("/accounts/login/"));
    let app = raw_request(gw.addr, &get(gw.addr, "/accounts/login/", BROWSER))
        .await
        .unwrap();
    assert_eq!(app.status, 200);
    assert!(app.text().contains("Log in"));
    // Persisted through the store.
    let files: Vec<_> = std::fs::read_dir(setup.store_dir().join("licenses"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_journey_expired_to_renewed() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &[], -60), "old.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;

    let resp = raw_request(gw.addr, &get(gw.addr, "/orders/7", BROWSER))
        .await
        .unwrap();
    assert_eq!(resp.status, 303);
    assert_eq!(
        resp.header("location"),
        Some("/_licgate/activation-required?next=%2Forders%2F7")
    );
    let api = raw_request(gw.addr, &get(gw.addr, "/orders/7", ""))
        .await
        .unwrap();
    assert_eq!(api.json()["error_code"], "LICENSE_EXPIRED");

    let required = raw_request(
        gw.addr,
        &get(
            gw.addr,
            "/_licgate/activation-required?next=%2Forders%2F7",
            BROWSER,
        ),
    )
    .await
    .unwrap();
    assert_eq!(required.status, 200);
    let html = required.text();
    assert!(html.contains("The license expired on"), "{html}");
    assert!(
        html.contains("href=\"/_licgate/activate?next=%2Forders%2F7\""),
        "{html}"
    );
    assert!(html.contains(">Activate license<"));

    // Open-redirect attempts through `next` fall back to `/`.
    for evil in [
        "%2F%2Fevil",
        "%5C%5Cevil",
        "https%3A%2F%2Fevil",
        "%2F%5Cevil",
        "%2F_licgate%2Fstatus",
    ] {
        let r = raw_request(
            gw.addr,
            &get(
                gw.addr,
                &format!("/_licgate/activation-required?next={evil}"),
                BROWSER,
            ),
        )
        .await
        .unwrap();
        assert!(
            r.text().contains("href=\"/_licgate/activate?next=%2F\""),
            "{evil}: {}",
            r.text()
        );
        let r = raw_request(
            gw.addr,
            &get(gw.addr, &format!("/_licgate/activate?next={evil}"), BROWSER),
        )
        .await
        .unwrap();
        assert!(r.text().contains("name=\"next\" value=\"/\""), "{evil}");
    }

    let page = raw_request(
        gw.addr,
        &get(gw.addr, "/_licgate/activate?next=%2Forders%2F7", BROWSER),
    )
    .await
    .unwrap();
    let (cookie, csrf) = csrf_of(&page);
    let renewed = setup.token("default", &["reports"], 365);
    let resp = raw_request(
        gw.addr,
        &form_post(
            gw.addr,
            &cookie,
            &[("license_key", &renewed), ("csrf_token", &csrf)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 303);
    assert_eq!(resp.header("location"), Some("/accounts/login/"));
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/orders/7", ""))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_activation_limits_and_reasons() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let post_json = |body: String| {
        format!(
            "POST /_licgate/activate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let expired = setup.token("default", &[], -400);
    let resp = raw_request(
        gw.addr,
        &post_json(serde_json::json!({"license_key": expired}).to_string()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400);
    let p = resp.json();
    assert_eq!(p["error_code"], "LICENSE_INVALID");
    assert!(
        p["details"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired on "),
        "{p}"
    );
    let resp = raw_request(gw.addr, &post_json("{\"license_key\": \"abc\"}".into()))
        .await
        .unwrap();
    assert!(resp.json()["details"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not a license key"));
    let resp = raw_request(gw.addr, &post_json("[1,2]".into()))
        .await
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error_code"], "BAD_REQUEST");

    // Oversize body: 413 without reading it all.
    let big = format!(
        "POST /_licgate/activate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(1000)
    );
    let resp = raw_request(gw.addr, big.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 413);

    let good = setup.token("default", &["reports"], 30);
    let resp = raw_request(
        gw.addr,
        &post_json(serde_json::json!({"license_key": good}).to_string()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["success"], true);
    assert_eq!(resp.json()["license"]["status"], "VALID");

    // Rate limit per client IP: the attempts so far count; soon it says 429.
    let mut limited = false;
    for _ in 0..12 {
        let r = raw_request(gw.addr, &post_json("{\"license_key\": \"x\"}".into()))
            .await
            .unwrap();
        if r.status == 429 {
            assert_eq!(r.json()["error_code"], "ACTIVATION_RATE_LIMITED");
            assert_eq!(r.header("retry-after"), Some("60"));
            limited = true;
            break;
        }
    }
    assert!(limited, "activation attempts are rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_grace_warnings_and_shadow() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    // Expired 10 days ago: past 7 grace days, within 14 read-only days.
    setup.preinstall(&setup.token("default", &[], -10), "ro.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let get_resp = raw_request(gw.addr, &get(gw.addr, "/x", "")).await.unwrap();
    assert_eq!(get_resp.status, 200);
    assert!(get_resp
        .header("x-licgate-warning")
        .unwrap()
        .contains("read-only access until"));
    let post = raw_request(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(post.status, 403);
    assert_eq!(post.json()["error_code"], "LICENSE_READ_ONLY");

    // Expiring soon: forwarded with a warning.
    let soon = Setup::new();
    soon.preinstall(&soon.token("default", &[], 3), "soon.jwt");
    let gw = Gateway::start_with(&soon.config("enforce", ""), upstream.addr).await;
    let resp = raw_request(gw.addr, &get(gw.addr, "/x", "")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("x-licgate-warning")
        .unwrap()
        .starts_with("license expires on "));

    // Shadow mode: forwarded, logged.
    let shadow = Setup::new();
    let gw = Gateway::start_with(&shadow.config("shadow", ""), upstream.addr).await;
    let resp = raw_request(gw.addr, &get(gw.addr, "/api/manufacturing/x", ""))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    gw.until_logged("shadow mode: request forwarded").await;
    let logs = gw.logs();
    assert!(
        logs.contains("shadow mode: request forwarded")
            && logs.contains("would_deny=\"LICENSE_MISSING\""),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_gateway_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &["reports"], 100), "l.jwt");
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let spoof = "X-Licgate-Features: manufacturing_module\r\nx-licgate-tier: enterprise\r\nX_Licgate_Tenant: other\r\nX-Licgate-Features: all\r\nX-Licgate-Status: VALID\r\n";
    for (path, extra) in [
        ("/api/reports/1", ""),
        ("/static/x.css", ""),
        ("/x", "Connection: X-Licgate-Tier\r\n"),
    ] {
        let resp = raw_request(gw.addr, &get(gw.addr, path, &format!("{spoof}{extra}")))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{path}");
        let headers = echoed_headers(&resp.json());
        let licgate: Vec<_> = headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-licgate") || n.starts_with("x_licgate"))
            .collect();
        for (name, value) in &licgate {
            assert!(
                !value.contains("manufacturing") && value != "enterprise" && value != "other",
                "{path}: {name}: {value}"
            );
        }
        if path != "/static/x.css" {
            assert_eq!(
                headers
                    .iter()
                    .filter(|(n, _)| n == "x-licgate-features")
                    .count(),
                1
            );
            assert_eq!(
                echoed_header(&resp.json(), "x-licgate-tier").as_deref(),
                Some("professional")
            );
        }
        assert!(
            !headers
                .iter()
                .any(|(n, v)| n == "connection" && v.to_ascii_lowercase().contains("licgate")),
            "{path}: Connection still names a gateway header"
        );
    }
    // Nominating a header the gateway sets, for the next hop to drop, is refused.
    for nominated in ["X-Forwarded-For", "x-forwarded-host, keep-alive", "Host"] {
        let extra = format!("Connection: {nominated}\r\n");
        let resp = raw_request(gw.addr, &get(gw.addr, "/x", &extra))
            .await
            .unwrap();
        assert_eq!(resp.status, 400, "{nominated}");
        assert_eq!(resp.json()["error_code"], "BAD_REQUEST", "{nominated}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_header_tenant_modes() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("acme", &["reports"], 100), "acme.jwt");
    let gw = Gateway::start_with(
        &setup.config(
            "enforce",
            "[tenants]\nmode = \"host\"\nhost_pattern = \"{tenant}.example.test\"\n",
        ),
        upstream.addr,
    )
    .await;
    let req = |host: &str| {
        format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let acme = raw_request(gw.addr, &req("acme.example.test"))
        .await
        .unwrap();
    assert_eq!(acme.status, 200);
    assert_eq!(
        echoed_header(&acme.json(), "x-licgate-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        raw_request(gw.addr, &req("ACME.example.test:8080"))
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        raw_request(gw.addr, &req("globex.example.test"))
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        raw_request(gw.addr, &req("acme.example.test.evil"))
            .await
            .unwrap()
            .status,
        403
    );
    // Absolute-form: the target's authority decides, and is what the app sees.
    let absolute = b"GET http://acme.example.test/a/../y HTTP/1.1\r\nConnection: close\r\n\r\n";
    let resp = raw_request(gw.addr, absolute).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/y");
    assert_eq!(
        echoed_header(&resp.json(), "host").as_deref(),
        Some("acme.example.test")
    );
    // An absolute-form target whose authority disagrees with Host is refused.
    let confused = b"GET http://acme.example.test/y HTTP/1.1\r\nHost: globex.example.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_request(gw.addr, confused).await.unwrap().status, 400);

    // Header mode: only from a trusted proxy (127.0.0.1 here is trusted, then not).
    let trusted = setup
        .config(
            "enforce",
            "[tenants]\nmode = \"header\"\nheader = \"X-Tenant\"\n",
        )
        .replace(
            "threads = 1",
            "threads = 1\ntrusted_proxies = [\"127.0.0.1\"]",
        );
    let gw = Gateway::start_with(&trusted, upstream.addr).await;
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/x", "X-Tenant: acme\r\n"))
            .await
            .unwrap()
            .status,
        200
    );
    let untrusted = setup.config(
        "enforce",
        "[tenants]\nmode = \"header\"\nheader = \"X-Tenant\"\n",
    );
    let gw = Gateway::start_with(&untrusted, upstream.addr).await;
    let resp = raw_request(gw.addr, &get(gw.addr, "/x", "X-Tenant: acme\r\n"))
        .await
        .unwrap();
    assert_eq!(
        resp.status, 403,
        "an untrusted peer cannot choose the tenant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_claim_selects_the_tenant_only_when_verified() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("acme", &[], 100), "acme.jwt");
    let idp = Setup::new();
    let config = setup.config(
        "enforce",
        &format!(
            "[tenants]\nmode = \"jwt_claim\"\njwt_claim = \"org\"\njwt_keys = [{{ path = \"{}\" }}]\n",
            idp.public.display()
        ),
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let bearer = |signer: &Setup, org: &str, exp_offset: i64| {
        let claims =
            serde_json::json!({"org": org, "exp": SystemClock.now() + exp_offset, "sub": "user-1"});
        let key = SigningKey::load(&signer.private).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(key.alg.jwt()), &claims, &key.key).unwrap()
    };
    let with = |token: &str| get(gw.addr, "/x", &format!("Authorization: Bearer {token}\r\n"));
    let good = bearer(&idp, "acme", 600);
    for _ in 0..3 {
        // Verified once, then served from the cache.
        let resp = raw_request(gw.addr, &with(&good)).await.unwrap();
        assert_eq!(resp.status, 200);
    }
    let forged = bearer(&Setup::new(), "acme", 600);
    assert_eq!(
        raw_request(gw.addr, &with(&forged)).await.unwrap().status,
        403
    );
    let expired = bearer(&idp, "acme", -600);
    assert_eq!(
        raw_request(gw.addr, &with(&expired)).await.unwrap().status,
        403
    );
    let parts: Vec<&str> = good.split('.').collect();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        raw_request(gw.addr, &with(&unsigned)).await.unwrap().status,
        403
    );
    assert_eq!(
        raw_request(gw.addr, &get(gw.addr, "/x", ""))
            .await
            .unwrap()
            .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_can_be_replaced_from_the_templates_dir() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&setup.token("default", &[], 100), "l.jwt");
    let pages = setup.dir.path().join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(
        pages.join("denied.html"),
        "<html><body><h1>ACME: {{title}}</h1><p>{{message}}</p></body></html>",
    )
    .unwrap();
    let config = setup.config("enforce", "").replace(
        "after_activation = \"/accounts/login/\"",
        &format!(
            "after_activation = \"/accounts/login/\"\ntemplates_dir = \"{}\"",
            pages.display()
        ),
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let page = raw_request(gw.addr, &get(gw.addr, "/api/manufacturing/x", BROWSER))
        .await
        .unwrap();
    assert_eq!(page.status, 403);
    assert!(
        page.text()
            .starts_with("<html><body><h1>ACME: Feature not licensed</h1>"),
        "{}",
        page.text()
    );
    // Pages that were not replaced stay the embedded ones.
    let activate = raw_request(gw.addr, &get(gw.addr, "/_licgate/activate", BROWSER))
        .await
        .unwrap();
    assert!(activate.text().contains("Activate your license"));
}
