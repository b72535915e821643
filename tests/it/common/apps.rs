//! Real applications behind the gateway: a Django project served by gunicorn and an
//! Odoo-like werkzeug app (`tests/e2e/`), run from the end-to-end virtualenv that
//! `scripts/e2e-venv.sh` creates (`make test` runs it first; the harness runs it again,
//! which is a no-op when the virtualenv is up to date), and a cookie-keeping HTTP client
//! that behaves like a browser or an API client.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, ORIGIN};

use super::{free_addr, repo_root};

/// The Django superuser the shop is created with.
pub(crate) const DJANGO_USER: &str = "alice";
pub(crate) const DJANGO_PASSWORD: &str = "correct-horse-battery";

/// The end-to-end virtualenv (created or updated once per test process).
pub(crate) fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/e2e-venv.sh"))
            .output()
            .expect("run scripts/e2e-venv.sh");
        assert!(
            out.status.success(),
            "scripts/e2e-venv.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::env::var_os("LICGATE_E2E_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/e2e-venv"))
    })
}

/// A program installed in the virtualenv (`python`, `gunicorn`, `hadolint`, ...).
pub(crate) fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// An application server process (its own process group, killed on drop).
pub(crate) struct AppProcess {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AppProcess {
    /// Starts `command` (which must listen on `addr`) and waits until `addr` accepts.
    fn spawn(mut command: Command, addr: SocketAddr, dir: tempfile::TempDir) -> AppProcess {
        let log = dir.path().join("app.log");
        let file = std::fs::File::create(&log).expect("app log");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("start the application");
        let mut app = AppProcess {
            addr,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = app.child.try_wait().expect("try_wait") {
                panic!("application exited with {status}:\n{}", app.logs());
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return app;
            }
            assert!(
                Instant::now() < deadline,
                "application did not listen in time:\n{}",
                app.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the application printed so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        // gunicorn forks workers: end the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Django shop (`tests/e2e/django_shop`): a fresh SQLite database with the
/// superuser [`DJANGO_USER`], served by gunicorn (one worker, four threads; methods
/// case-folded).
pub(crate) fn start_django() -> AppProcess {
    start_django_with_users(&[])
}

/// [`start_django`] with more users (`users`, each with [`DJANGO_PASSWORD`]).
pub(crate) fn start_django_with_users(users: &[&str]) -> AppProcess {
    let project = repo_root().join("tests/e2e/django_shop");
    let dir = tempfile::tempdir().unwrap();
    let manage = |args: &[&str]| {
        let out = Command::new(venv_bin("python"))
            .arg("manage.py")
            .args(args)
            .current_dir(&project)
            .env("SHOP_DATA_DIR", dir.path())
            .env("DJANGO_SUPERUSER_PASSWORD", DJANGO_PASSWORD)
            .output()
            .expect("run manage.py");
        assert!(
            out.status.success(),
            "manage.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    manage(&["migrate", "--noinput", "-v0"]);
    manage(&[
        "createsuperuser",
        "--noinput",
        "--username",
        DJANGO_USER,
        "--email",
        "alice@shop.test",
    ]);
    for user in users {
        manage(&[
            "createsuperuser",
            "--noinput",
            "--username",
            user,
            "--email",
            "u@shop.test",
        ]);
    }
    let addr = free_addr();
    let mut command = Command::new(venv_bin("gunicorn"));
    command
        .args(["--bind", &addr.to_string()])
        .args(["--workers", "1", "--threads", "4", "--access-logfile", "-"])
        // As older gunicorn, uWSGI and Django's runserver do: `post` reaches Django,
        // which runs it as POST (`request.method` is upper-cased).
        .args([
            "--permit-unconventional-http-method",
            "--casefold-http-method",
        ])
        .args(["--chdir", project.to_str().unwrap(), "shop.wsgi"])
        .env("SHOP_DATA_DIR", dir.path())
        .env("SHOP_ALLOWED_HOSTS", "127.0.0.1,localhost");
    AppProcess::spawn(command, addr, dir)
}

/// The Odoo-like app (`tests/e2e/odoo_like/app.py`) serving `databases`.
pub(crate) fn start_odoo_like(databases: &[&str]) -> AppProcess {
    let addr = free_addr();
    let mut command = Command::new(venv_bin("python"));
    command
        .arg(repo_root().join("tests/e2e/odoo_like/app.py"))
        .arg(addr.port().to_string())
        .args(databases);
    AppProcess::spawn(command, addr, tempfile::tempdir().unwrap())
}

/// A response as a client sees it (redirects are not followed).
#[derive(Debug)]
pub(crate) struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Location` of a redirect.
    pub(crate) fn location(&self) -> &str {
        self.header(LOCATION.as_str())
            .unwrap_or_else(|| panic!("no Location in {} {}", self.status, self.body))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `value` of the form input named `name`.
    pub(crate) fn input_value(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no input {name} in {}", self.body));
        let tag_start = self.body[..at].rfind('<').unwrap();
        let tag_end = at + self.body[at..].find('>').unwrap();
        let tag = &self.body[tag_start..tag_end];
        let value = tag.split("value=\"").nth(1).expect("input has a value");
        value[..value.find('"').unwrap()].to_string()
    }
}

/// A client with a cookie jar that never follows redirects, so each hop is seen.
pub(crate) struct WebClient {
    client: reqwest::Client,
    /// `http://host:port` the client addresses (resolved to the gateway).
    pub origin: String,
}

impl WebClient {
    /// A browser (`Accept: text/html`) talking to the gateway at `gateway` as `host`.
    pub(crate) fn browser(host: &str, gateway: SocketAddr) -> WebClient {
        WebClient::new(host, gateway, "text/html,application/xhtml+xml,*/*;q=0.8")
    }

    /// An API client (`Accept: application/json`).
    pub(crate) fn api(host: &str, gateway: SocketAddr) -> WebClient {
        WebClient::new(host, gateway, "application/json")
    }

    fn new(host: &str, gateway: SocketAddr, accept: &'static str) -> WebClient {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, gateway)
            .default_headers(headers)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        WebClient {
            client,
            origin: format!("http://{host}:{}", gateway.port()),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let response = request.send().await.expect("request through the gateway");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// `target` is a path or an absolute URL on this origin.
    fn url(&self, target: &str) -> String {
        if target.starts_with("http") {
            target.to_string()
        } else {
            format!("{}{}", self.origin, target)
        }
    }

    pub(crate) async fn get(&self, target: &str) -> Page {
        self.send(self.client.get(self.url(target))).await
    }

    /// A form POST as a browser sends it (with `Origin`, as Django's CSRF check wants).
    pub(crate) async fn post_form(&self, target: &str, fields: &[(&str, &str)]) -> Page {
        let request = self
            .client
            .post(self.url(target))
            .header(ORIGIN, &self.origin)
            .form(fields);
        self.send(request).await
    }

    /// A JSON POST with extra headers.
    pub(crate) async fn post_json(
        &self,
        target: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .client
            .post(self.url(target))
            .header(ORIGIN, &self.origin)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// GETs `target` and follows redirects (at most 10), returning every hop.
    pub(crate) async fn follow(&self, target: &str) -> Vec<Page> {
        let mut pages = vec![self.get(target).await];
        while (300..400).contains(&pages.last().unwrap().status) {
            assert!(pages.len() < 10, "redirect loop: {pages:?}");
            let next = pages.last().unwrap().location().to_string();
            pages.push(self.get(&next).await);
        }
        pages
    }
}
