//! The gateway's pages in a real browser: headless Chromium driven over WebDriver
//! (chromedriver). The activation page: load the app through the gateway, land on
//! the activation form, paste a key, submit, arrive on the application's login page.
//! The usage page: sign in with the admin token, open a tenant, read the numbers the
//! test generated off the charts (a screenshot goes to `target/usage-page.png`).
//!
//! Needs `chromium` and `chromium-driver` (Debian packages); `make test` installs them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    client: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        Driver::start_with(&[]).await
    }

    /// A browser with extra Chromium arguments (`--host-resolver-rules=…`).
    async fn start_with(extra_args: &[&str]) -> Driver {
        let port = free_addr().port();
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver not found: `make test` installs chromium and chromium-driver");
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Driver {
            child,
            base,
            client,
            session,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.call_raw(method, path, body).await;
        if value.get("error").is_some() {
            panic!("WebDriver {path}: {value}");
        }
        value
    }

    /// A WebDriver call whose error is returned, not a panic.
    async fn call_raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let value: Value = request.send().await.unwrap().json().await.unwrap();
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_string()
    }

    /// The rendered text of the element `css` selects.
    async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Types `text` into the element `css` selects.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Waits until an element `css` selects exists, and returns its text.
    async fn until_text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .call_raw(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if found.get("error").is_none() {
                return self.text(css).await;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} in {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's URL ends with `suffix`.
    async fn until_url(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.url().await.ends_with(suffix) {
            assert!(
                Instant::now() < deadline,
                "not at {suffix}: {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_activates_a_license_and_lands_on_the_login_page() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_key_pair(&dir.path().join("keys"), &generate_ed25519()).unwrap();
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\n[pages]\nafter_activation = \"/accounts/login/\"\n",
            public.display(),
            dir.path().join("store").display()
        );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let now = SystemClock.now();
    let claims = test_claims("default", &[], now, now + 30 * 86_400);
    let token = sign(&claims, &SigningKey::load(&private).unwrap(), None).unwrap();

    let browser = Driver::start().await;
    browser.goto(&gw.url("/orders")).await;
    let url = browser.url().await;
    assert!(url.contains("/_licgate/activate?next=%2Forders"), "{url}");
    let page = browser.source().await;
    assert!(
        page.contains("Activate your license") && page.contains("UNLICENSED"),
        "{page}"
    );

    let textarea = browser.element("#license_key").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{textarea}/value"),
            Some(json!({"text": token})),
        )
        .await;
    let button = browser.element("button[type=submit]").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{button}/click"),
            Some(json!({})),
        )
        .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.url().await.ends_with("/accounts/login/") {
        assert!(
            Instant::now() < deadline,
            "did not land on the login page: {}",
            browser.url().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(browser.source().await.contains("Log in"));
    browser.goto(&gw.url("/")).await;
    assert!(
        browser.source().await.contains("Demo app"),
        "the app is reachable now"
    );
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_page_shows_in_a_browser_what_the_tenant_did() {
    const TOKEN: &str = "usage-page-admin-token-0123456789";
    let upstream = Upstream::start().await;
    let setup = crate::common::setup::Setup::new();
    let now = SystemClock.now();
    let mut claims = test_claims("default", &["reports"], now, now + 20 * 86_400);
    claims.iss = Some("Vendor".into());
    claims.limits.requests_per_hour = Some(6);
    setup.preinstall(&setup.sign(&claims), "default.jwt");
    let token_file = setup.dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = setup.config("enforce", "").replace(
        "[admin]\n",
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let gw = Gateway::start_with(&config, upstream.addr).await;
    let mut statuses = Vec::new();
    for path in [
        "/api/reports/a",
        "/api/reports/b",
        "/api/reports/c",
        "/api/reports/d",
        "/api/sales/orders",
        "/api/sales/orders",
    ] {
        statuses.push(http_get(gw.addr, path).await.unwrap().status);
    }
    for _ in 0..3 {
        statuses.push(
            http_get(gw.addr, "/api/manufacturing/plan")
                .await
                .unwrap()
                .status,
        );
    }
    for _ in 0..2 {
        statuses.push(http_get(gw.addr, "/api/reports/e").await.unwrap().status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 403, 403, 403, 429, 429]
    );
    // Once the ledger has it (written within a second or so).
    let api = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage: Value = api
            .get(admin("/admin/v1/tenants/default/usage"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if usage["totals"]["allowed"] == 6
            && usage["totals"]["refused"]["USAGE_LIMIT_EXCEEDED"] == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "ledger: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page's headers: no script, nothing from elsewhere.
    let overview = api
        .get(admin("/admin/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let csp = overview.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!overview.text().await.unwrap().contains("<script"));
    let signed = api
        .post(admin("/admin/sign-in"))
        .form(&[("token", TOKEN), ("next", "https://evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    assert_eq!(signed.headers()["location"], "/admin/");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let wrong = api
        .post(admin("/admin/sign-in"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let browser = Driver::start().await;
    browser.goto(&admin("/admin/")).await;
    assert!(browser
        .source()
        .await
        .contains("Sign in with the gateway's admin token"));
    browser.type_into("#token", TOKEN).await;
    browser.click("button[type=submit]").await;
    browser.until_url("/admin/").await;
    let row = browser.text("#tenants tbody tr").await;
    assert!(row.starts_with("default"), "{row}");
    assert!(
        row.contains("VALID") && row.contains("professional") && row.contains("19"),
        "{row}"
    );
    assert!(row.contains("80 %"), "the hourly quota is used up: {row}");
    browser.click("#tenants a").await;
    browser.until_url("/admin/tenants/default").await;
    // Today's bar: 11 requests, of which the reports feature's 6.
    let total = browser
        .text("#requests-chart g.bar[data-total='11'] text.total")
        .await;
    assert_eq!(total, "11");
    let source = browser.source().await;
    assert!(source.contains("reports: 6 requests"), "{source}");
    let features = browser.text("#features").await;
    assert!(features.contains("reports 4 2 2"), "{features}");
    assert!(
        features.contains("manufacturing_module 0 0 3"),
        "{features}"
    );
    assert!(features.contains("other paths 2 0 0"), "{features}");
    let quota = browser.text("#quota-chart").await;
    assert!(
        quota.contains("requests per hour") && quota.contains("6 of 6 (100 %)"),
        "{quota}"
    );
    let refusals = browser.text("#refusals-chart").await;
    assert!(
        refusals.contains("FEATURE_NOT_LICENSED") && refusals.contains("3"),
        "{refusals}"
    );
    assert!(refusals.contains("USAGE_LIMIT_EXCEEDED"), "{refusals}");
    let advice = browser.text("#advice").await;
    assert!(
        advice.contains("100 % of the hourly limit was used")
            && advice.contains("consider upgrading"),
        "{advice}"
    );
    browser
        .call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1100, "height": 1500})),
        )
        .await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"));
    let out = repo_root().join("target/usage-page.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, png).unwrap();
    // Per hour, for today only.
    browser
        .goto(&admin("/admin/tenants/default?granularity=hour"))
        .await;
    let from = browser.text("#requests-chart").await;
    assert!(from.contains("11"), "{from}");
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoos_web_client_shows_its_error_dialog_for_a_refused_model() {
    use crate::common::apps::start_odoo_like;
    use crate::common::setup::Setup;
    let setup = Setup::new();
    setup.preinstall(&setup.token("globex", &["sales"], 30), "globex.jwt");
    let app = start_odoo_like(&["globex"]);
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &setup.license_section()
        + "[tenants]\nmode = \"host\"\nhost_pattern = \"{tenant}.erp.test\"\n[odoo]\nenabled = true\n[[features]]\nmodels = [\"mrp.*\"]\nfeature = \"manufacturing_module\"\n";
    let gw = Gateway::start_with(&config, app.addr).await;
    let browser = Driver::start_with(&["--host-resolver-rules=MAP *.erp.test 127.0.0.1"]).await;
    let origin = format!("http://globex.erp.test:{}", gw.addr.port());
    browser.goto(&format!("{origin}/web")).await;
    browser.until_url("/web/login?redirect=/web").await;
    browser.type_into("input[name=login]", "admin").await;
    browser.type_into("input[name=password]", "admin").await;
    browser.click("button").await;
    browser.until_url("/web").await;

    // An allowed model: the records appear.
    browser.click("button[data-model='sale.order']").await;
    assert_eq!(
        browser.until_text("#records li").await,
        "sale.order: S00001"
    );
    // A refused model: the web client's own error dialog, with the gateway's words.
    browser.click("button[data-model='mrp.production']").await;
    let title = browser.until_text(".o_dialog .modal-title").await;
    assert_eq!(title, "Feature not licensed");
    assert_eq!(
        browser.text(".o_dialog .o_error_name").await,
        "licgate.FeatureNotLicensed"
    );
    let detail = browser.text(".o_dialog .o_error_detail").await;
    assert!(detail.contains("manufacturing_module"), "{detail}");
    let png = browser.screenshot().await;
    std::fs::write(repo_root().join("target/odoo-refused-model.png"), png).unwrap();

    // What the app executed: the allowed call only.
    let reached: Value = reqwest::get(format!("http://{}/__reached", app.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models: Vec<&str> = reached
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, vec!["sale.order"]);
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}

/// A gateway in front of the Django shop that activates license keys at `authority`.
async fn shop_gateway(
    authority: &crate::common::authority::Authority,
    django: std::net::SocketAddr,
    store: &std::path::Path,
) -> Gateway {
    let config = BASE_CONFIG.replace("mode = \"off\"", "mode = \"enforce\"")
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\", kid = \"v1\" }}]\nissuer = \"vendor.test\"\nstore_dir = \"{}\"\nscan_interval = \"100ms\"\n[authority]\nurl = \"{}\"\n[tenants]\nmode = \"single\"\ndefault = \"shop\"\n[pages]\nafter_activation = \"/accounts/login/\"\n",
            authority.dir.join("vendor.pub.pem").display(),
            store.display(),
            authority.url
        );
    Gateway::start_with(&config, django).await
}

/// Opens `gw`'s site, pastes `key` on the activation page it lands on, submits.
async fn paste_key(browser: &Driver, gw: &Gateway, key: &str) {
    browser.goto(&gw.url("/")).await;
    let url = browser.url().await;
    assert!(url.contains("/_licgate/activate"), "{url}");
    let page = browser.source().await;
    assert!(
        page.contains("Activate your license") && !page.contains("Shop sign-in"),
        "a fresh install shows only the activation page: {page}"
    );
    browser.type_into("#license_key", key).await;
    browser.click("button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pasted_in_a_browser_activates_at_the_license_server_and_lands_on_djangos_login() {
    use crate::common::apps::start_django;
    use crate::common::authority::{Authority, Backend, NO_EXTRA};
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy("shop", 1, &[]);
    let (license_id, key) = authority.license("shop", "shop");
    let django = start_django();
    let dir = tempfile::tempdir().unwrap();
    let first = shop_gateway(&authority, django.addr, &dir.path().join("first")).await;
    let second = shop_gateway(&authority, django.addr, &dir.path().join("second")).await;
    let browser = Driver::start().await;

    paste_key(&browser, &first, &key).await;
    browser.until_url("/accounts/login/").await;
    let login = browser.source().await;
    assert!(
        login.contains("Shop sign-in"),
        "Django rendered its login page: {login}"
    );

    // A second installation with the same key: the limit page, and still no app.
    paste_key(&browser, &second, &key).await;
    let error = browser.until_text(".error").await;
    assert!(
        error.contains("This key is active on 1 of 1 installations. Deactivate one, or ask your vendor for more."),
        "{error}"
    );
    assert!(browser.url().await.contains("/_licgate/activate"));
    browser.goto(&second.url("/accounts/login/")).await;
    assert!(!browser.source().await.contains("Shop sign-in"));

    // Deactivating the first lets the second activate.
    let config = first.dir().join("licgate.toml");
    let (code, out, err) = run_cli(&["deactivate", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&license_id), "{out}");
    paste_key(&browser, &second, &key).await;
    browser.until_url("/accounts/login/").await;
    assert!(browser.source().await.contains("Shop sign-in"));
    // The first is back to the activation page.
    browser.goto(&first.url("/")).await;
    browser.until_url("/_licgate/activate?next=%2F").await;
    let _ = browser.call(reqwest::Method::DELETE, "", None).await;
}
