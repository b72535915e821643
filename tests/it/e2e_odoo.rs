//! licgate in front of a WSGI app that routes like Odoo (`tests/e2e/odoo_like/app.py`,
//! werkzeug, the HTTP stack Odoo runs on): one database per host (`dbfilter = ^%d$`),
//! `proxy_mode` (ProxyFix), `/web/login` sessions, `/web/static/` assets, JSON-RPC
//! `call_kw` and the JSON-2 API, with the model name in the URL. The gateway finds the
//! tenant from the Host (`tenants.mode = "host"`), so each database has its license.
//! Odoo itself (PostgreSQL, hundreds of modules) is too heavy to install for a test.

use crate::common::apps::{start_odoo_like, Page, WebClient};
use crate::common::setup::Setup;
use crate::common::*;
use serde_json::json;

/// Host-based tenants, Odoo's model URLs mapped to features, its assets public.
const ODOO: &str = r#"
[tenants]
mode = "host"
host_pattern = "{tenant}.erp.test"
[public]
paths = ["/web/static/", "/favicon.ico"]
[[features]]
prefix = "/web/dataset/call_kw/mrp.production"
format_suffixes = false
feature = "manufacturing_module"
[[features]]
prefix = "/json/2/mrp.production"
format_suffixes = false
feature = "manufacturing_module"
[[features]]
prefix = "/web/dataset/call_kw/hr.employee"
format_suffixes = false
feature = "hr"
[[features]]
prefix = "/json/2/hr.employee"
format_suffixes = false
feature = "hr"
[pages]
after_activation = "/web/login"
"#;

/// A JSON-RPC `call_kw` as Odoo's web client sends it.
async fn call_kw(client: &WebClient, model: &str) -> Page {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 1,
        "params": {"model": model, "method": "search_read", "args": [], "kwargs": {}}});
    client
        .post_json(
            &format!("/web/dataset/call_kw/{model}/search_read"),
            &body,
            &[("Accept", "application/json")],
        )
        .await
}

/// A JSON-2 API call with the database's API key.
async fn json2(client: &WebClient, database: &str, model: &str) -> Page {
    let key = format!("Bearer api-key-{database}");
    client
        .post_json(
            &format!("/json/2/{model}/search_read"),
            &json!({"domain": []}),
            &[("Authorization", &key)],
        )
        .await
}

/// Signs in on `/web/login` and checks the web client shows `database`.
async fn sign_in(browser: &WebClient, database: &str) {
    let first = browser.get("/web").await;
    assert_eq!(first.status, 303, "{}", first.body);
    assert_eq!(first.location(), "/web/login?redirect=/web");
    let login = browser.get(first.location()).await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains(&format!("database {database}")));
    let done = browser
        .post_form(
            "/web/login?redirect=/web",
            &[("login", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/web");
    let client = browser.get("/web").await;
    assert_eq!(client.status, 200);
    assert!(
        client
            .body
            .contains(&format!("database {database}, user admin")),
        "{}",
        client.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_is_a_database_with_its_own_license() {
    let setup = Setup::new();
    setup.preinstall(
        &setup.token("acme", &["sales", "manufacturing_module", "hr"], 30),
        "acme.jwt",
    );
    setup.preinstall(&setup.token("globex", &["sales"], 30), "globex.jwt");
    let app = start_odoo_like(&["acme", "globex", "initech"]);
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &setup.license_section()
        + ODOO;
    let gw = Gateway::start_with(&config, app.addr).await;

    // acme: the full product, through the app's own login and session.
    let acme = WebClient::browser("acme.erp.test", gw.addr);
    sign_in(&acme, "acme").await;
    let production = call_kw(&acme, "mrp.production").await;
    assert_eq!(production.status, 200, "{}", production.body);
    assert_eq!(production.json()["result"]["database"], "acme");
    assert_eq!(call_kw(&acme, "hr.employee").await.status, 200);
    let api = WebClient::api("acme.erp.test", gw.addr);
    let via_json2 = json2(&api, "acme", "mrp.production").await;
    assert_eq!(via_json2.status, 200, "{}", via_json2.body);
    assert_eq!(via_json2.json()["records"][0]["name"], "WH/MO/00007");

    // globex: sales only; manufacturing and HR are refused by the gateway, with the
    // problem document an RPC client can read, whether the session is valid or not.
    let globex = WebClient::browser("globex.erp.test", gw.addr);
    sign_in(&globex, "globex").await;
    let sales = call_kw(&globex, "sale.order").await;
    assert_eq!(sales.status, 200);
    assert_eq!(sales.json()["result"]["database"], "globex");
    for model in ["mrp.production", "hr.employee"] {
        let refused = call_kw(&globex, model).await;
        assert_eq!(refused.status, 403, "{model}: {}", refused.body);
        assert_eq!(refused.json()["error_code"], "FEATURE_NOT_LICENSED");
    }
    let api = WebClient::api("globex.erp.test", gw.addr);
    assert_eq!(json2(&api, "globex", "sale.order").await.status, 200);
    let refused = json2(&api, "globex", "mrp.production").await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["details"]["required_feature"],
        "manufacturing_module"
    );
    // A model whose name merely starts like a mapped one is not caught by the prefix.
    let lookalike = json2(&api, "globex", "mrp.production.line").await;
    assert_eq!(
        lookalike.status, 404,
        "the app's own answer: {}",
        lookalike.body
    );
    // The app's own answer to a bad API key is passed through unchanged.
    let bad_key = api
        .post_json(
            "/json/2/sale.order/search_read",
            &json!({}),
            &[("Authorization", "Bearer api-key-acme")],
        )
        .await;
    assert_eq!(bad_key.status, 401);
    assert_eq!(bad_key.json()["error"], "invalid API key");

    // Sessions stay with their database: acme's cookie means nothing on globex.
    let acme_session = acme.get("/web").await;
    assert_eq!(acme_session.status, 200);

    // initech has a database but no license: only the activation page and the assets.
    let initech = WebClient::browser("initech.erp.test", gw.addr);
    let page = initech.get("/web").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/_licgate/activate?next=%2Fweb");
    let asset = initech.get("/web/static/src/css/web.css").await;
    assert_eq!(asset.status, 200);
    assert!(asset
        .header("content-type")
        .unwrap()
        .starts_with("text/css"));
    let api = WebClient::api("initech.erp.test", gw.addr);
    let missing = json2(&api, "initech", "sale.order").await;
    assert_eq!(missing.status, 403);
    assert_eq!(missing.json()["error_code"], "LICENSE_MISSING");
    // A host outside the pattern has no tenant at all.
    let stranger = WebClient::api("127.0.0.1", gw.addr).get("/web/login").await;
    assert_eq!(stranger.status, 403);
    assert_eq!(stranger.json()["error_code"], "LICENSE_MISSING");

    // Activation on initech's host: another database's key is refused, initech's own is
    // installed for initech only, and the browser lands on Odoo's login page.
    let wrong = initech
        .post_json(
            "/_licgate/activate",
            &json!({"license_key": setup.token("acme", &["sales"], 60)}),
            &[("Accept", "application/json")],
        )
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.json()["details"]["reason"]
        .as_str()
        .unwrap()
        .contains("this site is tenant \"initech\""));
    let form = initech.get("/_licgate/activate?next=%2Fweb").await;
    let csrf = form.input_value("csrf_token");
    let key = setup.token("initech", &["sales"], 30);
    let activated = initech
        .post_form(
            "/_licgate/activate",
            &[
                ("csrf_token", &csrf),
                ("next", "/web"),
                ("license_key", &key),
            ],
        )
        .await;
    assert_eq!(activated.status, 303, "{}", activated.body);
    assert_eq!(activated.location(), "/web/login");
    sign_in(&initech, "initech").await;
    assert_eq!(json2(&api, "initech", "sale.order").await.status, 200);
    assert_eq!(
        json2(&api, "initech", "mrp.production").await.status,
        403,
        "initech's license has no manufacturing"
    );
    // The other tenants are unchanged.
    assert_eq!(call_kw(&globex, "mrp.production").await.status, 403);
    assert_eq!(call_kw(&acme, "mrp.production").await.status, 200);
}
