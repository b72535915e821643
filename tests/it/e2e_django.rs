//! licgate in front of a real, unmodified Django project (`tests/e2e/django_shop`:
//! django.contrib.auth login, the admin, whitenoise static files, JSON APIs under
//! `/api/sales/`, `/api/manufacturing/`, `/api/hr/`) served by gunicorn on loopback.
//! The clients keep cookies and see every redirect, as a browser or a script would.

use std::time::Duration;

use crate::common::apps::{start_django, WebClient, DJANGO_PASSWORD, DJANGO_USER};
use crate::common::setup::Setup;
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};

/// The gateway's config for the shop: one tenant, the three API areas mapped to
/// features, `/static/` public, activation landing on Django's login page.
const SHOP: &str = r#"
[tenants]
mode = "single"
default = "shop"
[[features]]
prefix = "/api/sales/"
feature = "sales"
[[features]]
prefix = "/api/hr/"
feature = "hr"
"#;

async fn gateway(setup: &Setup, upstream: std::net::SocketAddr) -> Gateway {
    Gateway::start_with(&setup.config("enforce", SHOP), upstream).await
}

/// Signs in through Django's login form; returns the page the login redirects to.
async fn sign_in(browser: &WebClient) -> crate::common::apps::Page {
    let login = browser.get("/accounts/login/").await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(login.body.contains("Shop sign-in"));
    let csrf = login.input_value("csrfmiddlewaretoken");
    let done = browser
        .post_form(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &csrf),
                ("username", DJANGO_USER),
                ("password", DJANGO_PASSWORD),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(done.status, 302, "login refused: {}", done.body);
    assert_eq!(done.location(), "/");
    let home = browser.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Signed in as <strong>alice</strong>"));
    home
}

/// Activates `key` through the gateway's form, as a browser does; returns the answer.
async fn activate(browser: &WebClient, key: &str) -> crate::common::apps::Page {
    let form = browser.get("/_licgate/activate?next=%2F").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.input_value("csrf_token");
    browser
        .post_form(
            "/_licgate/activate",
            &[("csrf_token", &csrf), ("next", "/"), ("license_key", key)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_first_start_to_a_working_session_with_a_feature_withheld() {
    let setup = Setup::new();
    let django = start_django();
    let gw = gateway(&setup, django.addr).await;
    let browser = WebClient::browser("127.0.0.1", gw.addr);
    let api = WebClient::api("127.0.0.1", gw.addr);

    // First start, no license: every page leads to the activation form, APIs are refused.
    for path in ["/", "/accounts/login/", "/admin/", "/api/hr/employees/"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 303, "{path}: {}", page.body);
        assert!(
            page.location().starts_with("/_licgate/activate?next="),
            "{path} -> {}",
            page.location()
        );
    }
    let refused = api.get("/api/sales/orders/").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error_code"], "LICENSE_MISSING");
    let hops = browser.follow("/admin/").await;
    let form = hops.last().unwrap();
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"license_key\""), "{}", form.body);
    // Public paths stay reachable (Django's own static files, served by whitenoise).
    let css = browser.get("/static/admin/css/base.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert!(
        django.logs().lines().all(|l| !l.contains("GET /admin/ ")),
        "an unlicensed request reached Django:\n{}",
        django.logs()
    );

    // A key for another tenant is refused and installs nothing.
    let foreign = activate(&browser, &setup.token("other", &["sales"], 30)).await;
    assert_eq!(foreign.status, 400);
    assert!(
        foreign.body.contains("this site is tenant"),
        "{}",
        foreign.body
    );
    assert_eq!(browser.get("/").await.status, 303);

    // Activation lands on Django's login page.
    let key = setup.token("shop", &["sales", "hr"], 30);
    let activated = activate(&browser, &key).await;
    assert_eq!(activated.status, 303, "{}", activated.body);
    assert_eq!(activated.location(), "/accounts/login/");
    let login = browser.get(activated.location()).await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("Shop sign-in"));

    // Django's own redirects pass through untouched.
    let admin = browser.get("/admin/").await;
    assert_eq!(admin.status, 302);
    assert_eq!(admin.location(), "/admin/login/?next=/admin/");

    // A wrong password is Django's answer, not the gateway's.
    let csrf = browser
        .get("/accounts/login/")
        .await
        .input_value("csrfmiddlewaretoken");
    let wrong = browser
        .post_form(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &csrf),
                ("username", DJANGO_USER),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("didn't match"), "{}", wrong.body);

    // Signed in: the session cookie, CSRF and the forwarded license tier all work.
    let home = sign_in(&browser).await;
    assert!(
        home.body.contains("License tier: professional"),
        "{}",
        home.body
    );
    let admin = browser.get("/admin/").await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert!(admin.body.contains("Site administration"));
    let users = browser.get("/admin/auth/user/").await;
    assert_eq!(users.status, 200);
    assert!(users.body.contains(DJANGO_USER));
    let css = browser.get("/static/shop/app.css").await;
    assert_eq!(css.status, 200);
    assert!(css.body.contains("font-family"));

    // A CSRF-protected JSON POST with the session: Django's CSRF cookie and header.
    let orders = browser.get("/api/sales/orders/").await;
    assert_eq!(orders.status, 200);
    assert_eq!(orders.json()["user"], DJANGO_USER);
    let token = users.input_value("csrfmiddlewaretoken");
    let created = browser
        .post_json(
            "/api/sales/orders/",
            &serde_json::json!({"customer": "Globex", "total": 99}),
            &[("X-CSRFToken", &token)],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["customer"], "Globex");
    let without_token = browser
        .post_json("/api/sales/orders/", &serde_json::json!({}), &[])
        .await;
    assert_eq!(
        without_token.status, 403,
        "Django's CSRF check still applies"
    );
    assert!(without_token.body.contains("CSRF"));

    // The feature the license lacks is blocked; the rest of the app works.
    let blocked = api.get("/api/manufacturing/orders/").await;
    assert_eq!(blocked.status, 403);
    let problem = blocked.json();
    assert_eq!(problem["error_code"], "FEATURE_NOT_LICENSED");
    assert_eq!(
        problem["details"]["required_feature"],
        "manufacturing_module"
    );
    let page = browser.get("/api/manufacturing/orders/").await;
    assert_eq!(page.status, 403);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(api.get("/api/hr/employees/").await.status, 200);
    assert_eq!(browser.get("/").await.status, 200);

    // Sign out through Django's POST form: back to the login page.
    let csrf = browser.get("/").await.input_value("csrfmiddlewaretoken");
    let out = browser
        .post_form("/accounts/logout/", &[("csrfmiddlewaretoken", &csrf)])
        .await;
    assert_eq!(out.status, 302);
    assert_eq!(out.location(), "/accounts/login/");
    assert_eq!(browser.get("/").await.status, 302, "signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exhaustion_refuses_with_retry_after_and_the_app_recovers() {
    let setup = Setup::new();
    let now = SystemClock.now();
    let mut claims = test_claims("shop", &["sales", "hr"], now, now + 30 * setup::DAY);
    claims.iss = Some("Vendor".into());
    claims.limits.requests_per_minute = Some(600);
    claims.limits.burst = Some(8);
    setup.preinstall(&setup.sign(&claims), "shop.jwt");
    let django = start_django();
    let gw = gateway(&setup, django.addr).await;
    let browser = WebClient::browser("127.0.0.1", gw.addr);
    let api = WebClient::api("127.0.0.1", gw.addr);

    // 600/min with a burst of 8: a quick run of requests is cut off after the burst.
    let mut allowed = 0;
    let refused = loop {
        let page = api.get("/api/hr/employees/").await;
        if page.status != 200 {
            break page;
        }
        assert!(page.header("ratelimit-limit").is_some());
        allowed += 1;
        assert!(allowed <= 12, "the quota never ran out");
    };
    assert!(allowed >= 6, "only {allowed} requests before the limit");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error_code"], "USAGE_LIMIT_EXCEEDED");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(retry, 1, "one request is earned back every 100 ms");
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    let page = browser.get("/").await;
    assert_eq!(page.status, 429);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    // Public static files are not counted.
    assert_eq!(browser.get("/static/shop/app.css").await.status, 200);

    // After Retry-After, Django answers again (one request per 100 ms is earned back).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let page = browser.get("/accounts/login/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Shop sign-in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_leads_to_activation_required_and_renewal_back_to_login() {
    let setup = Setup::new();
    let django = start_django();
    let now = SystemClock.now();
    let mut claims = test_claims("shop", &["sales", "hr"], now, now + 5);
    claims.iss = Some("Vendor".into());
    claims.jti = "shop-short".into();
    claims.grace_days = Some(0);
    claims.read_only_days = Some(0);
    setup.preinstall(&setup.sign(&claims), "shop.jwt");
    let gw = gateway(&setup, django.addr).await;
    let browser = WebClient::browser("127.0.0.1", gw.addr);
    let api = WebClient::api("127.0.0.1", gw.addr);

    sign_in(&browser).await;
    assert_eq!(api.get("/api/sales/orders/").await.status, 200);

    // Wait past `exp` (no grace): the gateway turns the tenant away on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let expired = loop {
        let page = browser.get("/").await;
        if page.status != 200 {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "license never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(expired.status, 303);
    assert!(
        expired
            .location()
            .starts_with("/_licgate/activation-required?next="),
        "{}",
        expired.location()
    );
    let required = browser.get(expired.location()).await;
    assert!(
        required.body.contains("Activate license"),
        "{}",
        required.body
    );
    let api_refused = api.get("/api/sales/orders/").await;
    assert_eq!(api_refused.status, 403);
    assert_eq!(api_refused.json()["error_code"], "LICENSE_EXPIRED");

    // Renewal through the form: back on Django's login page, and the session is intact.
    let renewed = activate(&browser, &setup.token("shop", &["sales", "hr"], 365)).await;
    assert_eq!(renewed.status, 303, "{}", renewed.body);
    assert_eq!(renewed.location(), "/accounts/login/");
    assert_eq!(browser.get("/accounts/login/").await.status, 200);
    let home = browser.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Signed in as <strong>alice</strong>"));
    assert_eq!(api.get("/api/sales/orders/").await.status, 200);
}

/// Features for the hardening checks: a DRF router area, method-limited rules.
const HARDENED: &str = r#"
[tenants]
mode = "single"
default = "shop"
[[features]]
prefix = "/api/inventory/"
feature = "inventory"
[[features]]
prefix = "/api/sales/orders/"
feature = "sales_orders"
methods = ["GET", "POST"]
[[features]]
prefix = "/api/hr/"
feature = "hr"
"#;

/// `method target` over a raw socket (no client normalizes the method's case).
async fn raw(addr: std::net::SocketAddr, method: &str, target: &str, headers: &str) -> RawResponse {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw_request(addr, request.as_bytes()).await.unwrap()
}

/// Each request is first sent to Django directly, to show that Django serves it (a
/// route to a gated view, or the handler of another method); through the gateway it
/// is refused, and Django's access log shows that none of them arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_suffixes_method_case_head_and_overrides_do_not_reach_gated_views() {
    let setup = Setup::new();
    setup.preinstall(&setup.token("shop", &["hr"], 30), "shop.jwt");
    let django = start_django();
    let gw = Gateway::start_with(&setup.config("enforce", HARDENED), django.addr).await;
    let suffixed = [
        "/api/inventory.json",
        "/api/inventory.json/",
        "/api/inventory/1.json/",
        "/api/inventory/1.json",
    ];
    // DRF's format suffixes: every one is a route to the gated viewset.
    for target in suffixed {
        let direct = raw(django.addr, "GET", target, "").await;
        assert_eq!(
            direct.status,
            200,
            "Django routes {target}: {}",
            direct.text()
        );
        assert!(direct.text().contains("inventory-"), "{}", direct.text());
    }
    // Django upper-cases the method: `post` runs as POST.
    let direct = raw(django.addr, "post", "/api/whoami/", "").await;
    assert_eq!(direct.json()["method"], "POST", "{}", direct.text());
    // gunicorn writes its access log after answering: wait for that line, and for
    // a marker request's, sent last.
    raw(django.addr, "GET", "/marker-direct/", "").await;
    eventually(Duration::from_secs(10), "gunicorn's access lines", || {
        let log = django.logs();
        log.contains("/api/whoami/") && log.contains("/marker-direct/")
    })
    .await;
    let before = django.logs().len();

    for target in suffixed {
        let via = raw(gw.addr, "GET", target, "").await;
        assert_eq!(via.status, 403, "{target}: {}", via.text());
        assert_eq!(via.json()["error_code"], "FEATURE_NOT_LICENSED");
        assert_eq!(via.json()["details"]["required_feature"], "inventory");
    }
    // Trailing dots, spaces and tildes, and an encoded `;`: refused outright.
    for target in [
        "/api/inventory./",
        "/api/inventory%2e/",
        "/api/inventory%20/",
        "/api/inventory~/",
        "/api/inventory%3Bx/",
    ] {
        let via = raw(gw.addr, "GET", target, "").await;
        assert_eq!(via.status, 400, "{target}: {}", via.text());
        assert_eq!(via.json()["error_code"], "BAD_REQUEST_PATH");
    }
    for method in ["post", "Post", "POST", "get", "HEAD", "head"] {
        let via = raw(gw.addr, method, "/api/sales/orders/", "").await;
        assert_eq!(via.status, 403, "{method}: {}", via.text());
    }
    // Method overrides are refused while rules are limited to methods.
    for (target, header) in [
        ("/api/hr/employees/", "X-HTTP-Method-Override: POST\r\n"),
        ("/api/hr/employees/", "X_HTTP_Method_Override: POST\r\n"),
        ("/api/hr/employees/", "X-Method-Override: DELETE\r\n"),
        ("/api/hr/employees/?_method=POST", ""),
    ] {
        let via = raw(gw.addr, "GET", target, header).await;
        assert_eq!(via.status, 400, "{target} {header}: {}", via.text());
        assert!(via.json()["detail"].as_str().unwrap().contains("override"));
    }
    // The licensed area still works, HEAD included.
    assert_eq!(
        raw(gw.addr, "GET", "/api/hr/employees/", "").await.status,
        200
    );
    assert_eq!(
        raw(gw.addr, "HEAD", "/api/hr/employees/", "").await.status,
        200
    );

    // What Django saw through the gateway: the two licensed requests, nothing else
    // (up to a marker request sent to Django directly, last).
    raw(django.addr, "GET", "/marker-after/", "").await;
    eventually(Duration::from_secs(10), "gunicorn's access lines", || {
        let log = django.logs();
        log[before..].contains("/marker-after/")
            && log[before..].matches("/api/hr/employees/ HTTP").count() >= 2
    })
    .await;
    let log = django.logs();
    let seen: Vec<&str> = log[before..]
        .lines()
        .filter(|l| l.contains(" HTTP/1.1\"") && !l.contains("/marker-after/"))
        .collect();
    assert_eq!(seen.len(), 2, "Django served:\n{}", seen.join("\n"));
    assert!(
        seen.iter().all(|l| l.contains("/api/hr/employees/ HTTP")),
        "{seen:?}"
    );
}

/// Forwarding headers from an untrusted client never reach Django: it does not
/// believe the request was HTTPS, sees no other path, and reads a `Forwarded` that
/// says what `X-Forwarded-*` say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_do_not_reach_django() {
    let setup = Setup::new();
    setup.preinstall(&setup.token("shop", &["hr"], 30), "shop.jwt");
    let django = start_django();
    let gw = Gateway::start_with(&setup.config("enforce", SHOP), django.addr).await;
    let spoofed = "X-Forwarded-Proto: https\r\nX_Forwarded_Proto: https\r\n\
        Forwarded: for=6.6.6.6;proto=https;host=evil.example\r\n\
        X-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\n\
        X-Original-URL: /admin/\r\nX-Rewrite-URL: /admin/\r\nX-Forwarded-Port: 443\r\n\
        X-Forwarded-Ssl: on\r\nX-Forwarded-Protocol: ssl\r\n";
    let direct = raw(
        django.addr,
        "GET",
        "/api/whoami/",
        "X-Forwarded-Proto: https\r\n",
    )
    .await;
    assert_eq!(
        direct.json()["secure"],
        true,
        "Django believes the header directly"
    );
    let via = raw(gw.addr, "GET", "/api/whoami/", spoofed).await;
    assert_eq!(via.status, 200, "{}", via.text());
    let seen = via.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/api/whoami/");
    assert_eq!(seen["secure"], false, "{seen}");
    assert_eq!(seen["host"], gw.addr.to_string());
    assert_eq!(seen["forwarded_proto"], "http");
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addr)
    );
}
