//! The gateway with `[authority]`: license keys activated at a real `licgate
//! authority` process, heartbeats that renew tokens and bring revocations and
//! suspensions, an authority that goes away and comes back, deactivation that moves
//! a slot, and answers the gateway must not trust. The app behind is the demo echo:
//! what it saw is asserted, not only what the gateway answered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::authority::{Authority, Backend, NO_EXTRA};
use crate::common::*;

const ADMIN_TOKEN: &str = "link-admin-token-0123456789abcdef";

/// An installation: its store, its config file (for the CLI) and its gateway.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    gateway: Gateway,
}

/// The template of a gateway that activates at `authority` (`extra` appended).
fn template(authority: &Authority, dir: &std::path::Path, extra: &str) -> String {
    template_for(
        &authority.dir.join("vendor.pub.pem"),
        &authority.url,
        dir,
        extra,
    )
}

/// The template of a gateway trusting `vendor_pub` and activating at `url`.
fn template_for(
    vendor_pub: &std::path::Path,
    url: &str,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    // What comes before an `[authority]` line of `extra` goes into `[license]`.
    let (license_extra, extra) = match extra.split_once("[authority]\n") {
        Some((license, authority)) => (license, authority),
        None => ("", extra),
    };
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    BASE_CONFIG
        .replace("mode = \"off\"", "mode = \"enforce\"")
        .replace(
            "[admin]\n",
            &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
        )
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\", kid = \"v1\" }}]\nissuer = \"vendor.test\"\nstore_dir = \"{}\"\nscan_interval = \"100ms\"\ngrace_days = 0\nread_only_days = 0\n{license_extra}[authority]\nurl = \"{}\"\ntimeout = \"2s\"\n{extra}\n",
            vendor_pub.display(),
            dir.join("store").display(),
            url,
        )
}

impl Site {
    async fn start(authority: &Authority, upstream: &Upstream, extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let template = template(authority, dir.path(), extra);
        Site::start_with(dir, template, upstream).await
    }

    /// A site trusting `vendor_pub`, activating at `url`.
    async fn start_at(vendor_pub: &std::path::Path, url: &str, upstream: &Upstream) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let template = template_for(vendor_pub, url, dir.path(), "");
        Site::start_with(dir, template, upstream).await
    }

    async fn start_with(dir: tempfile::TempDir, template: String, upstream: &Upstream) -> Site {
        let config = dir.path().join("licgate.toml");
        std::fs::write(
            &config,
            template
                .replace("{listen}", "127.0.0.1:1")
                .replace("{admin}", "127.0.0.1:2")
                .replace("{upstream}", &upstream.addr.to_string()),
        )
        .unwrap();
        let gateway = Gateway::start_with(&template, upstream.addr).await;
        Site {
            dir,
            config,
            gateway,
        }
    }

    /// `POST /_licgate/activate` with JSON `{"license_key": key}`.
    async fn activate(&self, key: &str) -> RawResponse {
        let body = json!({ "license_key": key }).to_string();
        request(
            self.gateway.addr,
            "POST",
            "/_licgate/activate",
            None,
            body.as_bytes(),
        )
        .await
    }

    /// A request to the admin API with the admin token.
    async fn admin(&self, method: &str, path: &str, body: &[u8]) -> RawResponse {
        request(self.gateway.admin, method, path, Some(ADMIN_TOKEN), body).await
    }

    /// An API request to the app (`Accept: application/json`).
    async fn get(&self, path: &str) -> RawResponse {
        request(self.gateway.addr, "GET", path, None, b"").await
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        run_cli(&all)
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    raw_request(addr, &bytes).await.unwrap()
}

/// Waits (up to `within`) until `GET path` answers `status`; returns how long it took.
async fn until_status(site: &Site, path: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let response = site.get(path).await;
        if response.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} still answers {} (not {status}) after {within:?}: {}\n{}",
            response.status,
            response.text(),
            site.gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_license_key_activates_and_its_one_slot_moves_between_installations() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy("pro", 1, &[]);
    let (license_id, key) = authority.license("pro", "default");
    let upstream = Upstream::start().await;
    let first = Site::start(&authority, &upstream, "").await;
    let second = Site::start(&authority, &upstream, "").await;

    let refused = first.get("/api/orders").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error_code"], "LICENSE_MISSING");

    // A typo is caught here, before the license server is asked.
    let mut typo: Vec<char> = key.chars().collect();
    let at = typo.len() - 2;
    typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    let answer = first.activate(&typo).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error_code"], "KEY_CHECK_FAILED");

    let answer = first.activate(&key.to_lowercase()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["license"]["status"], "VALID");
    assert_eq!(answer.json()["license"]["tier"], "professional");
    let served = first.get("/api/orders").await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.json()["path"], "/api/orders", "the app executed it");
    assert!(
        !first.gateway.logs().contains(&key[3..]),
        "the key reached a log line"
    );
    assert!(!http_get(first.gateway.admin, "/metrics")
        .await
        .unwrap()
        .text()
        .contains(&key[3..]));

    // The second installation finds the only slot taken.
    let answer = second.activate(&key).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error_code"], "ACTIVATION_LIMIT_REACHED");
    assert_eq!(body["details"]["max_activations"], 1);
    assert_eq!(body["details"]["active"], 1);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("This key is active on 1 of 1 installations. Deactivate one, or ask your vendor for more."),
        "{body}"
    );
    assert_eq!(second.get("/api/orders").await.status, 403);

    // Deactivating the first frees the slot and removes its license.
    let (code, out, err) = first.cli(&["deactivate"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&license_id) && out.contains("deactivated"),
        "{out}"
    );
    until_status(&first, "/api/orders", 403, Duration::from_secs(5)).await;
    assert_eq!(
        first.get("/api/orders").await.json()["error_code"],
        "LICENSE_MISSING"
    );
    let answer = second.activate(&key).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        second.get("/api/orders").await.json()["path"],
        "/api/orders"
    );

    // The admin API moves it back the same way.
    let released = second
        .admin("DELETE", "/admin/v1/tenants/default/activation", b"")
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert_eq!(released.json()["deactivated"][0]["license_id"], license_id);
    assert_eq!(second.get("/api/orders").await.status, 403);
    let again = second
        .admin("DELETE", "/admin/v1/tenants/default/activation", b"")
        .await;
    assert_eq!(again.status, 404, "{}", again.text());
    // And the admin API activates a key as well.
    let installed = first
        .admin(
            "PUT",
            "/admin/v1/tenants/default/license",
            json!({ "license_key": key }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(installed.status, 200, "{}", installed.text());
    assert_eq!(installed.json()["installed"], license_id);
    assert_eq!(first.get("/api/orders").await.status, 200);
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    let active: Vec<&Value> = listed["activations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert!(
        first
            .store()
            .join("activations")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_suspension_arrive_within_one_heartbeat() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy(
        "beat",
        2,
        &["--heartbeat-interval", "2s", "--token-ttl", "1h"],
    );
    let (revoked_id, revoked_key) = authority.license("beat", "default");
    let upstream = Upstream::start().await;
    let site = Site::start(&authority, &upstream, "").await;
    assert_eq!(site.activate(&revoked_key).await.status, 200);
    assert_eq!(site.get("/api/orders").await.status, 200);

    // Suspended: refused at the next heartbeat; reinstated: served again.
    let (code, _, err) = authority.cli(&["license", "suspend", &revoked_id]);
    assert_eq!(code, 0, "{err}");
    until_status(&site, "/api/orders", 403, Duration::from_secs(5)).await;
    assert_eq!(
        site.get("/api/orders").await.json()["error_code"],
        "LICENSE_SUSPENDED"
    );
    let (code, _, err) = authority.cli(&["license", "reinstate", &revoked_id]);
    assert_eq!(code, 0, "{err}");
    until_status(&site, "/api/orders", 200, Duration::from_secs(5)).await;

    // Revoked: refused within one heartbeat interval (2 s, ±10 %) of the revocation.
    let (code, _, err) = authority.cli(&["license", "revoke", &revoked_id]);
    assert_eq!(code, 0, "{err}");
    let took = until_status(&site, "/api/orders", 403, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(2600),
        "revocation took {took:?}"
    );
    eprintln!("revocation to refusal: {took:?}");
    assert_eq!(
        site.get("/api/orders").await.json()["error_code"],
        "LICENSE_REVOKED"
    );
    // Revocation is final here too: the same token cannot be installed again, and
    // heartbeats for it stopped.
    assert!(site.store().join("revocations.json").exists());
    let beats = site
        .gateway
        .metric("licgate_authority_requests_total")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        site.gateway
            .metric("licgate_authority_requests_total")
            .await,
        beats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_authority_leaves_the_token_in_force_until_it_expires() {
    let mut authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy(
        "short",
        1,
        &["--heartbeat-interval", "2s", "--token-ttl", "60s"],
    );
    let (_, key) = authority.license("short", "default");
    // Tokens are minted 44 s in the authority's past: they expire 16 s from now.
    authority.set_clock_offset(-44);
    let upstream = Upstream::start().await;
    let site = Site::start(&authority, &upstream, "grace_warning = \"8s\"").await;
    assert_eq!(site.activate(&key).await.status, 200);
    let served = site.get("/api/orders").await;
    assert_eq!(served.status, 200);
    assert!(served.header("x-licgate-warning").is_none());

    authority.kill9();
    // Still served while the token lives; warned once less than 8 s are left.
    let warned_by = Instant::now() + Duration::from_secs(14);
    let warning = loop {
        let response = site.get("/api/orders").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["path"], "/api/orders");
        if let Some(w) = response.header("x-licgate-warning") {
            break w.to_string();
        }
        assert!(
            Instant::now() < warned_by,
            "no warning: {}",
            site.gateway.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        warning.contains("license server has not been reached"),
        "{warning}"
    );
    assert!(site
        .gateway
        .logs()
        .contains("the license server has not been reached since"));
    assert!(
        site.gateway
            .metric("licgate_license_grace_remaining_seconds")
            .await
            <= 8.0
    );
    // Then the usual expiry journey: browsers to the activation-required page.
    until_status(&site, "/api/orders", 403, Duration::from_secs(15)).await;
    assert_eq!(
        site.get("/api/orders").await.json()["error_code"],
        "LICENSE_EXPIRED"
    );
    let browser = raw_request(
        site.gateway.addr,
        format!(
            "GET /orders HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
            site.gateway.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(browser.status, 303);
    assert!(browser
        .header("location")
        .unwrap()
        .starts_with("/_licgate/activation-required"));

    // The authority is back (its clock right again): the next heartbeat restores a
    // fresh token without anyone doing anything.
    authority.set_clock_offset(0);
    authority.restart().await;
    until_status(&site, "/api/orders", 200, Duration::from_secs(10)).await;
    let served = site.get("/api/orders").await;
    assert!(
        served.header("x-licgate-warning").is_none(),
        "{:?}",
        served.headers
    );
    assert!(
        site.gateway
            .metric("licgate_license_grace_remaining_seconds")
            .await
            > 50.0
    );
    assert!(
        site.gateway
            .metric("licgate_authority_last_success_timestamp_seconds")
            .await
            > 0.0
    );
}

/// What the stand-in authority answers to `POST /v1/activations`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trick {
    /// A 200 that is not JSON.
    Garbage,
    /// A well-formed answer signed by a key the gateway does not trust.
    OtherKey,
    /// A signed answer to an earlier request (another nonce).
    Replayed,
    /// A fresh, signed answer whose token is bound to another instance.
    OtherInstance,
}

/// A stand-in license server playing `trick`; counts the deactivations it gets.
struct FakeAuthority {
    url: String,
    vendor_pub: PathBuf,
    deactivations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAuthority {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAuthority {
    async fn start(trick: Trick) -> FakeAuthority {
        use axum::routing::{delete, post};
        use licgate::authority::protocol::Signer;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let pair = licgate::license::keys::generate_ed25519();
        let (private, public) = licgate::license::keys::write_key_pair(dir.path(), &pair).unwrap();
        let signer_of = |pem: &str, path: &std::path::Path| {
            Signer::new(
                licgate::license::keys::SigningKey::load(path).unwrap(),
                pem,
                Some("v1".into()),
                "vendor.test".into(),
            )
        };
        let vendor = Arc::new(signer_of(&pair.private_pem, &private));
        let stranger_dir = dir.path().join("stranger");
        std::fs::create_dir_all(&stranger_dir).unwrap();
        let stranger_pair = licgate::license::keys::generate_ed25519();
        let (stranger_private, _) =
            licgate::license::keys::write_key_pair(&stranger_dir, &stranger_pair).unwrap();
        let stranger = Arc::new(signer_of(&stranger_pair.private_pem, &stranger_private));
        let deactivations = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&deactivations);
        let activate = move |body: axum::body::Bytes| {
            let (vendor, stranger) = (Arc::clone(&vendor), Arc::clone(&stranger));
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let instance = request["instance_id"].as_str().unwrap().to_string();
                let mut claims = test_claims("default", &["sales"], now - 60, now + 86_400);
                claims.iss = Some("vendor.test".into());
                claims.aud = vec![if trick == Trick::OtherInstance {
                    "another-instance".into()
                } else {
                    instance.clone()
                }];
                claims.jti = "lic_fake".into();
                let answer = json!({
                    "activation_id": "act_fake",
                    "license_id": "lic_fake",
                    "instance_id": instance,
                    "token": vendor.token(&claims).unwrap(),
                    "heartbeat_interval": 3600,
                    "refresh_before": now + 43_200,
                    "token_expires_at": now + 86_400,
                    "nonce": if trick == Trick::Replayed { "0123456789abcdef0123456789abcdef".to_string() } else { request["nonce"].as_str().unwrap().to_string() },
                    "server_time": now,
                });
                // Garbage, signed all the same: the signature alone proves nothing.
                let body = if trick == Trick::Garbage {
                    b"<html>welcome to nginx</html>".to_vec()
                } else {
                    serde_json::to_vec(&answer).unwrap()
                };
                let signer = if trick == Trick::OtherKey {
                    &stranger
                } else {
                    &vendor
                };
                let signature = signer.sign_answer(&body).unwrap();
                axum::response::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .header("licgate-signature", signature)
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }
        };
        let deactivate = move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::GONE
            }
        };
        let app = axum::Router::new()
            .route("/v1/activations", post(activate))
            .route("/v1/activations/{id}", delete(deactivate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAuthority {
            url,
            vendor_pub: public,
            deactivations,
            _dir: dir,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_cannot_be_trusted_install_nothing() {
    let upstream = Upstream::start().await;
    // A well-formed key (its check character right) for the stand-in servers.
    let key = licgate::authority::key::LicenseKey::generate()
        .unwrap()
        .to_string();
    for (trick, status, code, says) in [
        (Trick::Garbage, 502, "AUTHORITY_ANSWER_INVALID", "not JSON"),
        (
            Trick::OtherKey,
            502,
            "AUTHORITY_ANSWER_INVALID",
            "not by a vendor key",
        ),
        (Trick::Replayed, 502, "AUTHORITY_ANSWER_INVALID", "a replay"),
        (Trick::OtherInstance, 422, "LICENSE_INVALID", "instance"),
    ] {
        let fake = FakeAuthority::start(trick).await;
        let site = Site::start_at(&fake.vendor_pub, &fake.url, &upstream).await;
        let answer = site.activate(&key).await;
        assert_eq!(answer.status, status, "{trick:?}: {}", answer.text());
        assert_eq!(answer.json()["error_code"], code, "{trick:?}");
        assert!(
            answer.json()["detail"].as_str().unwrap().contains(says),
            "{trick:?}: {}",
            answer.text()
        );
        // Nothing installed: no license file, no record, the app never reached.
        let licenses = site.store().join("licenses");
        assert_eq!(
            std::fs::read_dir(&licenses).unwrap().count(),
            0,
            "{trick:?}"
        );
        assert_eq!(
            std::fs::read_dir(site.store().join("activations"))
                .unwrap()
                .count(),
            0
        );
        let refused = site.get("/api/orders").await;
        assert_eq!(refused.status, 403, "{trick:?}");
        assert_eq!(refused.json()["error_code"], "LICENSE_MISSING");
        site.gateway.until_logged("license key not activated").await;
        // A token refused here gives its slot back at once.
        let given_back = fake.deactivations.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            given_back,
            usize::from(trick == Trick::OtherInstance),
            "{trick:?}"
        );
        assert!(!site.gateway.logs().contains(&key[3..]));
    }

    // No license server at all: a clear 503 that points to offline activation.
    let dead = format!("http://{}", dead_addr());
    let fake = FakeAuthority::start(Trick::Garbage).await;
    let site = Site::start_at(&fake.vendor_pub, &dead, &upstream).await;
    let answer = site.activate(&key).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error_code"], "AUTHORITY_UNAVAILABLE");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("activate offline"));
}

/// The value of `name="…" value="…"` in `html`.
fn form_value(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_activation_works_from_the_page() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy("pro", 1, &[]);
    let (license_id, key) = authority.license("pro", "default");
    let upstream = Upstream::start().await;
    // The gateway's license server is out of reach: the page offers the files.
    let dead = format!("http://{}", dead_addr());
    let site = Site::start_at(&authority.dir.join("vendor.pub.pem"), &dead, &upstream).await;
    let answer = site.activate(&key).await;
    assert_eq!(answer.status, 503, "{}", answer.text());

    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(site.gateway.url("/_licgate/activate"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("No connection to the license server?"),
        "{page}"
    );
    assert!(page.contains("Download an activation request"));
    let csrf = form_value(&page, "csrf_token");

    // Without the page's CSRF token, no request file.
    let forged = http
        .post(site.gateway.url("/_licgate/activate/offline-request"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("license_key={key}&csrf_token=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let download = http
        .post(site.gateway.url("/_licgate/activate/offline-request"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("license_key={key}&csrf_token={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"licgate-activation-request.json\""
    );
    let request_file = download.text().await.unwrap();
    assert!(
        request_file.contains("licgate-offline-request/1"),
        "{request_file}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (request_path, response_path) = (dir.path().join("req.json"), dir.path().join("resp.json"));
    std::fs::write(&request_path, &request_file).unwrap();
    let response_file = authority.answer_offline(&request_path, &response_path);

    // The upload, as the browser's form sends it.
    let boundary = "----licgateTestBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"response\"; filename=\"resp.json\"\r\nContent-Type: application/json\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&response_file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let tampered: Vec<u8> = String::from_utf8(body.clone())
        .unwrap()
        .replace(
            "\"heartbeat_interval\": 3600",
            "\"heartbeat_interval\": 3601",
        )
        .into_bytes();
    let refused = http
        .post(site.gateway.url("/_licgate/activate/offline-response"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not a response signed by the vendor"));
    assert_eq!(site.get("/api/orders").await.status, 403);

    let installed = http
        .post(site.gateway.url("/_licgate/activate/offline-response"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        installed.status(),
        303,
        "{}",
        installed.text().await.unwrap()
    );
    assert_eq!(installed.headers()["location"], "/");
    let served = site.get("/api/orders").await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.json()["path"], "/api/orders");
    // The same response again answers no pending request (JSON clients send the file).
    let again = request(
        site.gateway.addr,
        "POST",
        "/_licgate/activate/offline-response",
        None,
        &response_file,
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(again.text().contains("no offline request is pending"));
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    assert_eq!(listed["activations"][0]["offline"], true);
    // The installation remembers the activation: it can give it back later.
    assert_eq!(
        std::fs::read_dir(site.store().join("activations"))
            .unwrap()
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_flows_back_with_heartbeats_and_is_counted_once() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy("beat", 1, &["--heartbeat-interval", "2s"]);
    let (license_id, key) = authority.license("beat", "default");
    let upstream = Upstream::start().await;
    let site = Site::start(
        &authority,
        &upstream,
        "[[features]]\nprefix = \"/api/sales/\"\nfeature = \"sales\"\n",
    )
    .await;
    assert_eq!(site.activate(&key).await.status, 200);
    const N: u64 = 37;
    for i in 0..N {
        let response = site.get(&format!("/api/sales/orders/{i}")).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], format!("/api/sales/orders/{i}"));
    }
    // Whole days only: once the day is over (the gateway's clock moved to tomorrow,
    // after the ledger wrote the counts), the next heartbeat carries its report.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    site.gateway.set_quota_clock(now + 86_400);
    site.gateway
        .until_logged("usage report delivered to the license server")
        .await;
    let sales = |usage: &Value| -> u64 {
        usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["feature"] == "sales")
            .map(|r| r["allowed"].as_u64().unwrap())
            .sum()
    };
    let usage = authority.cli_json(&["usage", "show", "--tenant", "default"]);
    assert_eq!(sales(&usage), N, "{usage}");
    let by_license = authority.cli_json(&["usage", "show", "--license", &license_id]);
    assert_eq!(sales(&by_license), N, "{by_license}");

    // The acknowledgement lost (a heartbeat retried): the same report goes again, and
    // the license server keeps counting it once.
    std::fs::remove_file(site.store().join("usage-acknowledged.json")).unwrap();
    site.gateway.until_logged("stored=false").await;
    let usage = authority.cli_json(&["usage", "show", "--tenant", "default"]);
    assert_eq!(sales(&usage), N, "{usage}");
    assert!(site.store().join("usage-acknowledged.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_without_a_shared_store_are_one_activation() {
    let authority = Authority::start(Backend::Sqlite, NO_EXTRA).await;
    authority.policy("fleet", 1, &["--heartbeat-interval", "2s"]);
    let (license_id, key) = authority.license("fleet", "default");
    let upstream = Upstream::start().await;
    // The installation's identity, as a Kubernetes Secret would mount it in each pod.
    let secret = tempfile::tempdir().unwrap();
    let key_file = secret.path().join("instance-key.pem");
    licgate::license::instance_key::InstanceKey::load_or_create(&key_file).unwrap();
    let fleet = format!(
        "instance_id = \"erp-production\"\ninstance_key_file = \"{}\"\n[authority]\n[[features]]\nprefix = \"/api/sales/\"\nfeature = \"sales\"\n",
        key_file.display()
    );
    let first = Site::start(&authority, &upstream, &fleet).await;
    assert_eq!(first.activate(&key).await.status, 200);
    // A replica started on an empty store of its own fetches the installation's
    // license from the license server: no second slot, no shared volume.
    let second = Site::start(&authority, &upstream, &fleet).await;
    until_status(&second, "/api/sales/orders", 200, Duration::from_secs(10)).await;
    let listed = authority.cli_json(&["activation", "list", "--license", &license_id]);
    let active = listed["activations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "active")
        .count();
    assert_eq!(active, 1, "{listed}");

    // Each replica's usage reaches the license server, summed.
    for (site, n) in [(&first, 5u64), (&second, 7)] {
        for i in 0..n {
            let r = site.get(&format!("/api/sales/orders/{i}")).await;
            assert_eq!(r.status, 200);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for site in [&first, &second] {
        site.gateway.set_quota_clock(now + 86_400);
    }
    for site in [&first, &second] {
        site.gateway
            .until_logged("usage report delivered to the license server")
            .await;
    }
    let usage = authority.cli_json(&["usage", "show", "--tenant", "default"]);
    let sales: u64 = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["feature"] == "sales")
        .map(|r| r["allowed"].as_u64().unwrap())
        .sum();
    // 5 on the first, 7 on the second plus the one that found its license served
    // (the refused ones before it are not `allowed`).
    assert_eq!(sales, 5 + 7 + 1, "{usage}");

    // A revocation reaches every replica.
    let (code, _, err) = authority.cli(&["license", "revoke", &license_id]);
    assert_eq!(code, 0, "{err}");
    for site in [&first, &second] {
        until_status(site, "/api/sales/orders", 403, Duration::from_secs(5)).await;
    }
}

#[test]
fn licgate_check_resolves_the_license_servers_name() {
    let dir = tempfile::tempdir().unwrap();
    let pair = licgate::license::keys::generate_ed25519();
    let (_, public) = licgate::license::keys::write_key_pair(dir.path(), &pair).unwrap();
    let write = |url: &str| {
        let text = template_for(&public, url, dir.path(), "")
            .replace("{listen}", "127.0.0.1:1")
            .replace("{admin}", "127.0.0.1:2")
            .replace("{upstream}", "127.0.0.1:3");
        let path = dir.path().join("licgate.toml");
        std::fs::write(&path, &text).unwrap();
        let line = text.lines().position(|l| l.starts_with("url = ")).unwrap() + 1;
        (path, line)
    };
    let (path, line) = write("https://no-such-host.invalid");
    let (code, _, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let expected = format!(
        "{}:{line}:7: authority.url: cannot resolve no-such-host.invalid",
        path.display()
    );
    assert!(err.contains(&expected), "{expected}\n{err}");
    let (path, _) = write("http://127.0.0.1:7700");
    let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("license server http://127.0.0.1:7700/"),
        "{out}"
    );
}
