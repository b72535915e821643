//! The activation page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) loads the app through the gateway, lands on the activation form,
//! pastes a key, submits, and arrives on the application's login page.
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
        let args = [
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
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let value: Value = request.send().await.unwrap().json().await.unwrap();
        if value["value"].get("error").is_some() {
            panic!("WebDriver {path}: {value}");
        }
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
