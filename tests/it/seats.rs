//! Seats at the HTTP layer: people recognized by their session cookie (Django's
//! `sessionid` behind the real gateway), counted against the license's
//! `max_seats` / `max_active_users` with its overage allowance, released by idling,
//! logging out or an administrator, and kept across a restart. Assertions check
//! which user Django saw, not only what the gateway answered.

use std::time::Duration;

use crate::common::apps::{start_django_with_users, WebClient, DJANGO_PASSWORD};
use crate::common::setup::{Setup, DAY};
use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};

const ADMIN_TOKEN: &str = "seats-admin-token";

/// A license for `tenant` with `limits` (`max_seats = 2`, ...).
fn seat_license(setup: &Setup, tenant: &str, limits: licgate::license::Limits) -> String {
    let now = SystemClock.now();
    let mut claims = test_claims(tenant, &["reports"], now, now + 30 * DAY);
    claims.iss = Some("Vendor".into());
    claims.limits = limits;
    setup.sign(&claims)
}

/// A test setup with a seat license for `tenant` installed.
fn licensed(tenant: &str, limits: licgate::license::Limits) -> Setup {
    let setup = Setup::new();
    setup.preinstall(&seat_license(&setup, tenant, limits), "seats.jwt");
    setup
}

/// The test config with `[seats]` (`seats` is its body) and an admin token.
fn config(setup: &Setup, seats: &str) -> String {
    let token_file = setup.dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    setup
        .config("enforce", &format!("[seats]\n{seats}\n"))
        .replace(
            "[admin]\n",
            &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
        )
}

async fn admin(gw: &Gateway, method: &str, path: &str) -> RawResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        gw.admin
    );
    raw_request(gw.admin, request.as_bytes()).await.unwrap()
}

/// Django's login form submitted by `user`; the answer to the POST.
async fn log_in(browser: &WebClient, user: &str) -> crate::common::apps::Page {
    let login = browser.get("/accounts/login/").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let csrf = login.input_value("csrfmiddlewaretoken");
    browser
        .post_form(
            "/accounts/login/",
            &[
                ("csrfmiddlewaretoken", &csrf),
                ("username", user),
                ("password", DJANGO_PASSWORD),
                ("next", "/"),
            ],
        )
        .await
}

/// Who Django thinks `browser` is (`None`: anonymous), or the gateway's refusal.
async fn whoami(browser: &WebClient) -> Result<Option<String>, crate::common::apps::Page> {
    let page = browser.get("/api/whoami/").await;
    if page.status != 200 {
        return Err(page);
    }
    Ok(page.json()["user"].as_str().map(str::to_string))
}

fn session_cookie_set(page: &crate::common::apps::Page) -> bool {
    page.headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").starts_with("sessionid="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_logins_beyond_the_seats_get_the_seats_page_and_no_session() {
    let setup = licensed(
        "default",
        licgate::license::Limits {
            max_seats: Some(2),
            ..Default::default()
        },
    );
    let django = start_django_with_users(&["bob", "carol", "dave"]);
    let gw = Gateway::start_with(
        &config(
            &setup,
            "identity = \"cookie:sessionid\"\nidle_timeout = \"10m\"",
        ),
        django.addr,
    )
    .await;
    let start = SystemClock.now();
    gw.set_quota_clock(start);
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(|_| WebClient::browser("127.0.0.1", gw.addr));

    // Two people sign in and work.
    for (browser, user) in [(&alice, "alice"), (&bob, "bob")] {
        let done = log_in(browser, user).await;
        assert_eq!(done.status, 302, "{user}: {}", done.body);
        assert!(session_cookie_set(&done));
        assert_eq!(whoami(browser).await.unwrap().as_deref(), Some(user));
    }

    // The third login: Django accepted the password, but the browser gets the seats
    // page and no session cookie, so Django never sees carol signed in.
    let refused = log_in(&carol, "carol").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("All 2 seats of this license are in use"),
        "{}",
        refused.body
    );
    assert!(!session_cookie_set(&refused), "{:?}", refused.headers);
    // The upstream's answer was left unread: the connection is not reused.
    assert_eq!(
        refused.headers["connection"], "close",
        "{:?}",
        refused.headers
    );
    assert_eq!(whoami(&carol).await.unwrap(), None);
    // Those holding a seat keep working.
    assert_eq!(whoami(&alice).await.unwrap().as_deref(), Some("alice"));
    assert_eq!(whoami(&bob).await.unwrap().as_deref(), Some("bob"));

    // The admin API lists the two seats (hash prefixes, never the cookie).
    let listed = admin(&gw, "GET", "/admin/v1/tenants/default/seats").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    assert_eq!(listed["in_use"], 2, "{listed}");
    assert_eq!(listed["max_seats"], 2);
    let seats = listed["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 2);
    assert_eq!(seats[0]["client_address"], "127.0.0.1");
    assert_eq!(seats[0]["id"].as_str().unwrap().len(), 12);

    // alice idles past the timeout while bob works: carol signs in.
    gw.set_quota_clock(start + 5 * 60);
    assert_eq!(whoami(&bob).await.unwrap().as_deref(), Some("bob"));
    gw.set_quota_clock(start + 11 * 60);
    let done = log_in(&carol, "carol").await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(whoami(&carol).await.unwrap().as_deref(), Some("carol"));
    // alice's session is Django's still, but her seat went to carol.
    let alice_back = whoami(&alice).await.unwrap_err();
    assert_eq!(alice_back.status, 403);
    assert!(
        alice_back.body.contains("All 2 seats"),
        "{}",
        alice_back.body
    );

    // dave is refused; an administrator releases bob's seat and dave signs in at once.
    assert_eq!(log_in(&dave, "dave").await.status, 403);
    let listed = admin(&gw, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    let bob_seat = listed["seats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| (start + 300..start + 310).contains(&s["last_seen"].as_i64().unwrap()))
        .unwrap_or_else(|| panic!("bob's seat: {listed}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let released = admin(
        &gw,
        "DELETE",
        &format!("/admin/v1/tenants/default/seats/{bob_seat}"),
    )
    .await;
    assert_eq!(released.status, 200, "{}", released.text());
    let done = log_in(&dave, "dave").await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(whoami(&dave).await.unwrap().as_deref(), Some("dave"));

    // Logging out frees the seat: Django deletes the cookie, the gateway follows.
    let csrf = carol.get("/").await.input_value("csrfmiddlewaretoken");
    let out = carol
        .post_form("/accounts/logout/", &[("csrfmiddlewaretoken", &csrf)])
        .await;
    assert!(out.status == 302 || out.status == 200, "{}", out.body);
    let listed = admin(&gw, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(listed["in_use"], 1, "{listed}");
    let done = log_in(&alice, "alice").await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(whoami(&alice).await.unwrap().as_deref(), Some("alice"));

    // No cookie value reached the gateway's log.
    let logs = gw.logs();
    assert!(!logs.contains("sessionid="), "{logs}");
}

/// A GET of `path` with `Cookie: sessionid=<session>` as an API client.
async fn with_session(gw: &Gateway, path: &str, session: &str) -> RawResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nCookie: csrftoken=x; sessionid={session}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    raw_request(gw.addr, request.as_bytes()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_warns_then_refuses_and_active_users_outlast_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let setup = licensed(
        "default",
        licgate::license::Limits {
            max_seats: Some(2),
            overage: licgate::license::claims::Overage::new(1.5),
            ..Default::default()
        },
    );
    let gw = Gateway::start_with(
        &config(
            &setup,
            "identity = \"cookie:sessionid\"\nidle_timeout = \"1m\"",
        ),
        upstream.addr,
    )
    .await;
    let start = SystemClock.now();
    gw.set_quota_clock(start);
    for session in ["s1", "s2"] {
        let r = with_session(&gw, "/echo", session).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("x-licgate-warning").is_none());
    }
    // The third is within the allowance: served, with a warning, and counted.
    let third = with_session(&gw, "/echo", "s3").await;
    assert_eq!(third.status, 200);
    assert!(
        third
            .header("x-licgate-warning")
            .unwrap()
            .contains("overage"),
        "{:?}",
        third.headers
    );
    assert_eq!(
        echoed_header(&third.json(), "cookie").unwrap(),
        "csrftoken=x; sessionid=s3"
    );
    // The fourth is refused before the app sees it.
    let fourth = with_session(&gw, "/echo", "s4").await;
    assert_eq!(fourth.status, 403, "{}", fourth.text());
    let problem = fourth.json();
    assert_eq!(problem["error_code"], "SEAT_LIMIT_EXCEEDED");
    assert_eq!(problem["details"]["limit"], 2);
    assert_eq!(problem["details"]["in_use"], 3);
    let frees_at = problem["details"]["frees_at"].as_i64().unwrap();
    assert!((start + 60..start + 90).contains(&frees_at), "{problem}");
    let metrics = http_get(gw.admin, "/metrics").await.unwrap().text();
    assert!(
        metrics
            .contains(r#"licgate_denials_total{tenant="default",reason="SEAT_LIMIT_EXCEEDED"} 1"#),
        "{metrics}"
    );
    // A held seat keeps working; static and anonymous requests take none.
    assert_eq!(with_session(&gw, "/echo", "s1").await.status, 200);
    assert_eq!(http_get(gw.addr, "/echo").await.unwrap().status, 200);
    assert_ne!(with_session(&gw, "/static/x.css", "s9").await.status, 403);
    // Two sessions at once: the gateway cannot tell which the app will use.
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nCookie: sessionid=s1; sessionid=s9\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let ambiguous = raw_request(gw.addr, request.as_bytes()).await.unwrap();
    assert_eq!(ambiguous.status, 400, "{}", ambiguous.text());

    // After the idle timeout the seats free.
    gw.set_quota_clock(start + 120);
    assert_eq!(with_session(&gw, "/echo", "s4").await.status, 200);

    // The ledger has the peak (3 at once, though no save may have seen them
    // together) and the people of the day; written at shutdown at the latest.
    let mut gw = gw;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
    let (first, last) = (date_of(start), date_of(start + 120));
    let seats = seats_report(&gw, &first, &last);
    let most = |field: &str| seats.iter().map(|r| r[field].as_u64().unwrap()).max();
    assert_eq!(most("peak_seats"), Some(3), "{seats:?}");
    if first == last {
        assert_eq!(seats.len(), 1, "{seats:?}");
        assert_eq!(most("daily_users"), Some(4), "{seats:?}");
    }
    let csv = usage_report(&gw, &first, &last, &["--seats", "--format", "csv"]);
    assert!(
        csv.starts_with("tenant,period,peak_seats,daily_users\ndefault,"),
        "{csv}"
    );
}

/// The UTC date (`YYYY-MM-DD`) of Unix time `at`.
fn date_of(at: i64) -> String {
    licgate::license::time_text(at)[..10].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_users_count_over_the_window_and_survive_a_restart() {
    let upstream = Upstream::start().await;
    let setup = licensed(
        "default",
        licgate::license::Limits {
            max_active_users: Some(2),
            ..Default::default()
        },
    );
    let text = config(
        &setup,
        "identity = \"cookie:sessionid\"\nidle_timeout = \"1m\"\nactive_window = \"1d\"",
    );
    let mut gw = Gateway::start_with(&text, upstream.addr).await;
    let start = SystemClock.now();
    gw.set_quota_clock(start);
    assert_eq!(with_session(&gw, "/echo", "u1").await.status, 200);
    assert_eq!(with_session(&gw, "/echo", "u2").await.status, 200);
    // Idle for an hour: no seat in use, but both are this window's active users.
    gw.set_quota_clock(start + 3600);
    let third = with_session(&gw, "/echo", "u3").await;
    assert_eq!(third.status, 403, "{}", third.text());
    assert_eq!(third.json()["details"]["kind"], "active_users");
    let frees_at = third.json()["details"]["frees_at"].as_i64().unwrap();
    assert!((start + 86_400..start + 86_430).contains(&frees_at));

    // A restart keeps them (saved in the store's database).
    let before = admin(&gw, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(before["active_users"], 2, "{before}");
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
    let gw = Gateway::start_with(&text, upstream.addr).await;
    gw.set_quota_clock(start + 3600);
    let after = admin(&gw, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(after["seats"], before["seats"], "{after}");
    assert_eq!(with_session(&gw, "/echo", "u3").await.status, 403);
    assert_eq!(with_session(&gw, "/echo", "u1").await.status, 200);
    // A day later the window has passed.
    gw.set_quota_clock(start + 86_400 + 120);
    assert_eq!(with_session(&gw, "/echo", "u3").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cookies_on_anonymous_paths_and_unlicensed_tenants_leave_no_seat_state() {
    let upstream = Upstream::start().await;
    let setup = licensed(
        "acme",
        licgate::license::Limits {
            max_seats: Some(5),
            ..Default::default()
        },
    );
    let text = config(&setup, "identity = \"cookie:sessionid\"").replace(
        "[public]",
        "[tenants]\nmode = \"host\"\nhost_pattern = \"{tenant}.shop.test\"\n[public]",
    );
    let gw = Gateway::start_with(&text, upstream.addr).await;
    let client = reqwest::Client::builder()
        .resolve("acme.shop.test", gw.addr)
        .resolve("ghost.shop.test", gw.addr)
        .build()
        .unwrap();
    let port = gw.addr.port();
    let requests = 100_000usize;
    let workers = 8;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = [0usize; 2];
            for i in (w..requests).step_by(workers) {
                // Half to a public path of the licensed tenant, half to a tenant
                // without a license; every one with a cookie never seen before.
                let (host, path) = if i % 2 == 0 {
                    ("acme.shop.test", "/static/app.css")
                } else {
                    ("ghost.shop.test", "/echo")
                };
                let r = client
                    .get(format!("http://{host}:{port}{path}"))
                    .header("Cookie", format!("sessionid=random-{i}-{}", i * 7919))
                    .send()
                    .await
                    .unwrap();
                statuses[usize::from(r.status() == 403)] += 1;
            }
            statuses
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap()[1];
    }
    // The unlicensed tenant's requests are refused (no license), the public ones pass.
    assert_eq!(refused, requests / 2);
    let acme = admin(&gw, "GET", "/admin/v1/tenants/acme/seats")
        .await
        .json();
    assert_eq!(acme["seats"].as_array().unwrap().len(), 0, "{acme}");
    assert_eq!(
        admin(&gw, "GET", "/admin/v1/tenants/ghost/seats")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_seats_and_a_redis_fault_locks_no_seated_user_out() {
    let upstream = Upstream::start().await;
    let redis = crate::common::redis_server::RedisServer::start_on(free_addr().port()).await;
    let setup = licensed(
        "default",
        licgate::license::Limits {
            max_seats: Some(2),
            ..Default::default()
        },
    );
    let text = config(&setup, "identity = \"cookie:sessionid\"").replace(
        "[public]",
        &format!(
            "[quota]\nbackend = \"redis\"\n[quota.redis]\nurl = \"{}\"\non_error = \"deny\"\ntimeout = \"200ms\"\nbreaker_failures = 2\nbreaker_cooldown = \"200ms\"\n[public]",
            redis.url()
        ),
    );
    let gw1 = Gateway::start_with(&text, upstream.addr).await;
    let gw2 = Gateway::start_with(&text, upstream.addr).await;
    assert_eq!(with_session(&gw1, "/echo", "s1").await.status, 200);
    assert_eq!(with_session(&gw2, "/echo", "s2").await.status, 200);
    // The fleet has two seats in use: a third is refused by either gateway.
    for gw in [&gw1, &gw2] {
        let third = with_session(gw, "/echo", "s3").await;
        assert_eq!(third.status, 403, "{}", third.text());
        assert_eq!(third.json()["details"]["in_use"], 2);
    }
    // Each gateway lists the fleet's seats.
    let listed = admin(&gw1, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(listed["counted_by"], "fleet");
    assert_eq!(listed["in_use"], 2, "{listed}");
    // A release on one gateway frees the seat for the fleet.
    let id = listed["seats"][0]["id"].as_str().unwrap().to_string();
    let released = admin(
        &gw1,
        "DELETE",
        &format!("/admin/v1/tenants/default/seats/{id}"),
    )
    .await;
    assert_eq!(released.status, 200, "{}", released.text());
    let listed = admin(&gw2, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(listed["in_use"], 1, "{listed}");

    // Redis gone, on_error = "deny": the people seated keep working, a new one is
    // told to retry (503), nobody is locked out by the fault itself.
    let kept = if listed["seats"][0]["id"] == serde_json::json!(id) {
        unreachable!("released seat still listed: {listed}")
    } else {
        // Whoever kept a seat: try both on the gateway that seated them.
        let one = with_session(&gw1, "/echo", "s1").await.status;
        let two = with_session(&gw2, "/echo", "s2").await.status;
        (one, two)
    };
    assert!(kept.0 == 200 || kept.1 == 200, "{kept:?}");
    let mut redis = redis;
    redis.kill();
    for (gw, session) in [(&gw1, "s1"), (&gw2, "s2")] {
        let status = with_session(gw, "/echo", session).await.status;
        let expected = if (session == "s1" && kept.0 == 200) || (session == "s2" && kept.1 == 200) {
            200
        } else {
            503
        };
        assert_eq!(status, expected, "{session}");
    }
    let new = with_session(&gw1, "/echo", "s7").await;
    assert_eq!(new.status, 503, "{}", new.text());
    assert_eq!(new.json()["error_code"], "QUOTA_UNAVAILABLE");
    // Anonymous requests are untouched by the fault.
    assert_eq!(http_get(gw1.addr, "/echo").await.unwrap().status, 200);

    // gw2 seated one person itself, but its ledger has the fleet's figures.
    let mut gw2 = gw2;
    gw2.signal("TERM");
    assert!(gw2.wait_exit(Duration::from_secs(20)).await.is_some());
    let today = date_of(SystemClock.now());
    let report = seats_report(&gw2, &today, &today);
    assert_eq!(report[0]["peak_seats"], 2, "{report:?}");
    assert_eq!(report[0]["daily_users"], 2, "{report:?}");
    assert_eq!(report[0]["fleet"], true, "{report:?}");
}

/// What `licgate usage report --from FIRST --to LAST [extra]` prints for `gw`'s store.
fn usage_report(gw: &Gateway, first: &str, last: &str, extra: &[&str]) -> String {
    let config = gw.dir().join("licgate.toml");
    let mut args = vec![
        "usage",
        "report",
        "--config",
        config.to_str().unwrap(),
        "--from",
        first,
        "--to",
        last,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    out
}

/// The seat rows of `licgate usage report` (JSON) of days `first..=last`.
fn seats_report(gw: &Gateway, first: &str, last: &str) -> Vec<serde_json::Value> {
    let out = usage_report(gw, first, last, &["--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    report["seats"].as_array().unwrap().clone()
}

/// A GET of `/echo` with the extra header lines `headers` (each ending in CRLF).
async fn echo_with(gw: &Gateway, headers: &str) -> RawResponse {
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{headers}Connection: close\r\n\r\n",
        gw.addr
    );
    raw_request(gw.addr, request.as_bytes()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_from_a_verified_jwt_claim_and_from_a_trusted_header_only() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let one_seat = licgate::license::Limits {
        max_seats: Some(1),
        ..Default::default()
    };
    setup.preinstall(&seat_license(&setup, "acme", one_seat.clone()), "acme.jwt");
    setup.preinstall(&seat_license(&setup, "default", one_seat), "default.jwt");

    // jwt:sub — the person is the verified token's `sub`, whatever the token.
    let idp = Setup::new();
    let text = config(&setup, "identity = \"jwt:sub\"").replace(
        "[public]",
        &format!(
            "[tenants]\nmode = \"jwt_claim\"\njwt_claim = \"org\"\njwt_keys = [{{ path = \"{}\" }}]\n[public]",
            idp.public.display()
        ),
    );
    let gw = Gateway::start_with(&text, upstream.addr).await;
    let bearer = |signer: &Setup, sub: &str, exp_offset: i64| {
        let claims =
            serde_json::json!({"org": "acme", "sub": sub, "exp": SystemClock.now() + exp_offset});
        let key = licgate::license::keys::SigningKey::load(&signer.private).unwrap();
        let token =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(key.alg.jwt()), &claims, &key.key)
                .unwrap();
        format!("Authorization: Bearer {token}\r\n")
    };
    let first = echo_with(&gw, &bearer(&idp, "user-1", 600)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["path"], "/echo");
    // A new token of the same person: the same seat.
    assert_eq!(
        echo_with(&gw, &bearer(&idp, "user-1", 900)).await.status,
        200
    );
    let second = echo_with(&gw, &bearer(&idp, "user-2", 600)).await;
    assert_eq!(second.status, 403, "{}", second.text());
    assert_eq!(second.json()["error_code"], "SEAT_LIMIT_EXCEEDED");
    // A forged token names nobody (and no tenant): it takes no seat.
    let forged = echo_with(&gw, &bearer(&Setup::new(), "user-3", 600)).await;
    assert_eq!(forged.status, 403);
    assert_ne!(forged.json()["error_code"], "SEAT_LIMIT_EXCEEDED");
    let listed = admin(&gw, "GET", "/admin/v1/tenants/acme/seats")
        .await
        .json();
    assert_eq!(listed["in_use"], 1, "{listed}");

    // header:X-Remote-User — from a trusted proxy only.
    let trusted = config(&setup, "identity = \"header:X-Remote-User\"").replace(
        "threads = 1",
        "threads = 1\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let gw = Gateway::start_with(&trusted, upstream.addr).await;
    let alice = echo_with(&gw, "X-Remote-User: alice\r\n").await;
    assert_eq!(alice.status, 200, "{}", alice.text());
    assert_eq!(
        echoed_header(&alice.json(), "x-remote-user").as_deref(),
        Some("alice")
    );
    let bob = echo_with(&gw, "X-Remote-User: bob\r\n").await;
    assert_eq!(bob.status, 403, "{}", bob.text());
    assert_eq!(bob.json()["error_code"], "SEAT_LIMIT_EXCEEDED");
    // Two different values: the gateway cannot know which one the app reads.
    let both = echo_with(&gw, "X-Remote-User: alice\r\nX-Remote-User: bob\r\n").await;
    assert_eq!(both.status, 400, "{}", both.text());

    // The same header from a peer that is not a trusted proxy names nobody.
    let untrusted = config(&setup, "identity = \"header:X-Remote-User\"").replace(
        "threads = 1",
        "threads = 1\ntrusted_proxies = [\"10.9.0.0/16\"]",
    );
    let gw = Gateway::start_with(&untrusted, upstream.addr).await;
    for user in ["alice", "bob", "carol"] {
        let r = echo_with(&gw, &format!("X-Remote-User: {user}\r\n")).await;
        assert_eq!(r.status, 200, "{user}: {}", r.text());
    }
    let listed = admin(&gw, "GET", "/admin/v1/tenants/default/seats")
        .await
        .json();
    assert_eq!(listed["seats"].as_array().unwrap().len(), 0, "{listed}");
}
