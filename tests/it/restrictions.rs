//! Network and country restrictions from the license, and the license's flags sent
//! upstream: the real gateway in front of the real upstream (which echoes what it
//! executed).

use std::net::Ipv4Addr;

use crate::common::mmdb::country_database;
use crate::common::setup::{Setup, DAY};
use crate::common::*;
use licgate::license::claims::{CountryCode, Restrictions};
use licgate::license::clock::{Clock, SystemClock};

fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

/// A license for `default` with `restrictions` and the `trial` flag.
fn restricted(setup: &Setup, restrictions: Restrictions) -> String {
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 30 * DAY);
    claims.iss = Some("Vendor".into());
    claims.restrictions = restrictions;
    claims.flags = vec!["trial".into()];
    setup.sign(&claims)
}

fn networks(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

const TRUSTED: &str = "threads = 1\ntrusted_proxies = [\"127.0.0.1\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_networks_on_the_original_client_address() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(
        &restricted(
            &setup,
            Restrictions {
                allowed_networks: networks(&["10.0.0.0/8", "2001:db8::/32"]),
                denied_networks: networks(&["10.66.0.0/16"]),
                allowed_countries: vec![],
            },
        ),
        "l.jwt",
    );
    // Behind a trusted proxy (the test's 127.0.0.1): X-Forwarded-For tells the client.
    let gw = Gateway::start_with(
        &setup.config("enforce", "").replace("threads = 1", TRUSTED),
        upstream.addr,
    )
    .await;
    let from = |client: &str, path: &str| {
        get(
            gw.addr,
            path,
            &format!("X-Forwarded-For: {client}\r\nAccept: application/json\r\n"),
        )
    };
    for client in ["10.1.2.3", "2001:db8::5", "::ffff:10.9.9.9"] {
        let resp = raw_request(gw.addr, &from(client, "/api/sales/orders"))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{client}: {}", resp.text());
        let echo = resp.json();
        assert_eq!(echo["path"], "/api/sales/orders", "the app executed it");
        assert_eq!(
            echoed_header(&echo, "x-licgate-flags").as_deref(),
            Some("trial"),
            "the license's flags reach the app"
        );
    }
    for (client, why) in [
        ("10.66.1.1", "a denied network inside an allowed one"),
        ("192.0.2.1", "outside every allowed network"),
        ("2001:db9::1", "outside the allowed IPv6 network"),
    ] {
        let resp = raw_request(gw.addr, &from(client, "/api/sales/orders"))
            .await
            .unwrap();
        assert_eq!(resp.status, 403, "{why}");
        let problem = resp.json();
        assert_eq!(problem["error_code"], "NETWORK_NOT_LICENSED", "{why}");
        assert!(problem["details"]["client_address"].is_string());
        assert!(
            problem.get("path").is_none(),
            "not the app's answer: {problem}"
        );
    }
    // Public paths are the operator's to open: not restricted.
    let resp = raw_request(gw.addr, &from("192.0.2.1", "/static/app.css"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let metrics = http_get(gw.admin, "/metrics").await.unwrap().text();
    assert!(
        metrics
            .contains(r#"licgate_denials_total{tenant="default",reason="NETWORK_NOT_LICENSED"} 3"#),
        "{metrics}"
    );

    // Without trusted proxies, a client's own X-Forwarded-For is ignored: the peer
    // (127.0.0.1) is what counts, and it is outside the allowed networks.
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let spoofed = get(
        gw.addr,
        "/api/sales/orders",
        "X-Forwarded-For: 10.1.2.3\r\nAccept: application/json\r\n",
    );
    let resp = raw_request(gw.addr, &spoofed).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["details"]["client_address"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_cannot_leave_an_allowed_network_either() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(
        &restricted(
            &setup,
            Restrictions {
                allowed_networks: networks(&["127.0.0.0/8"]),
                ..Restrictions::default()
            },
        ),
        "l.jwt",
    );
    let gw = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let resp = raw_request(
        gw.addr,
        &get(
            gw.addr,
            "/api/sales/orders",
            "X-Forwarded-For: 192.0.2.1\r\nX_Forwarded_For: 192.0.2.1\r\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["path"], "/api/sales/orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_countries_with_a_geoip_database() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    let database = setup.dir.path().join("countries.mmdb");
    std::fs::write(
        &database,
        country_database(&[
            (Ipv4Addr::new(198, 51, 100, 0), 24, "DE"),
            (Ipv4Addr::new(203, 0, 113, 0), 24, "US"),
        ]),
    )
    .unwrap();
    setup.preinstall(
        &restricted(
            &setup,
            Restrictions {
                allowed_networks: networks(&["10.0.0.0/8"]),
                allowed_countries: vec![CountryCode::parse("de").unwrap()],
                ..Restrictions::default()
            },
        ),
        "l.jwt",
    );
    let geoip = format!("[geoip]\ndatabase = \"{}\"\n", database.display());
    let gw = Gateway::start_with(
        &setup
            .config("enforce", &geoip)
            .replace("threads = 1", TRUSTED),
        upstream.addr,
    )
    .await;
    let status = |client: &'static str| {
        let request = get(
            gw.addr,
            "/api/sales/orders",
            &format!("X-Forwarded-For: {client}\r\nAccept: application/json\r\n"),
        );
        async move { raw_request(gw.addr, &request).await.unwrap() }
    };
    assert_eq!(status("198.51.100.7").await.status, 200, "in Germany");
    assert_eq!(
        status("10.2.3.4").await.status,
        200,
        "in an allowed network"
    );
    let us = status("203.0.113.9").await;
    assert_eq!(us.status, 403);
    assert_eq!(us.json()["details"]["country"], "US");
    let unknown = status("192.0.2.1").await;
    assert_eq!(unknown.status, 403, "a country the database does not know");

    // Without a database, countries are not looked up (the networks still count).
    let gw = Gateway::start_with(
        &setup.config("enforce", "").replace("threads = 1", TRUSTED),
        upstream.addr,
    )
    .await;
    let request = |client: &str| {
        get(
            gw.addr,
            "/api/sales/orders",
            &format!("X-Forwarded-For: {client}\r\nAccept: application/json\r\n"),
        )
    };
    let german = raw_request(gw.addr, &request("198.51.100.7"))
        .await
        .unwrap();
    assert_eq!(german.status, 403);
    assert!(german.json()["details"].get("country").is_none());
    let inside = raw_request(gw.addr, &request("10.2.3.4")).await.unwrap();
    assert_eq!(inside.status, 200);

    // A file that is not a database is a config error naming the key.
    let bad = setup.dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"not a database").unwrap();
    let config = setup.dir.path().join("bad.toml");
    std::fs::write(
        &config,
        setup
            .config(
                "enforce",
                &format!("[geoip]\ndatabase = \"{}\"\n", bad.display()),
            )
            .replace("{listen}", "127.0.0.1:1")
            .replace("{admin}", "127.0.0.1:2")
            .replace("{upstream}", "127.0.0.1:3"),
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("geoip.database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_banner_goes_into_html_pages_only_when_asked_for() {
    let upstream = Upstream::start().await;
    let setup = Setup::new();
    setup.preinstall(&restricted(&setup, Restrictions::default()), "l.jwt");
    let page = |gw: &Gateway, keep_alive: bool| {
        let request = format!(
            "GET /accounts/login/ HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\n{}\r\n",
            gw.addr,
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            }
        );
        let addr = gw.addr;
        async move { raw_request(addr, request.as_bytes()).await.unwrap() }
    };
    let plain = Gateway::start_with(&setup.config("enforce", ""), upstream.addr).await;
    let resp = page(&plain, false).await;
    assert_eq!(resp.status, 200);
    assert!(
        !resp.text().contains("data-licgate-banner"),
        "off by default"
    );

    let config = setup.config("enforce", "").replace(
        "after_activation = \"/accounts/login/\"",
        "after_activation = \"/accounts/login/\"\nflag_banner = true",
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let resp = page(&gw, false).await;
    assert_eq!(resp.status, 200);
    let html = resp.text();
    let body_tag = html.find("<body").expect("the app's page");
    let banner = html.find("data-licgate-banner").expect("the banner");
    assert!(banner > body_tag, "{html}");
    assert!(html.contains("Trial license"));
    assert!(html.contains("Log in"), "the page itself is whole: {html}");
    assert_eq!(resp.header("content-length"), None);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    // JSON is never touched.
    let resp = raw_request(
        gw.addr,
        &get(gw.addr, "/api/sales/orders", "Accept: application/json\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(resp.json()["path"], "/api/sales/orders");
}
