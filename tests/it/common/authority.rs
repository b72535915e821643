//! The license authority under test: a real `licgate authority serve` process on a
//! free port over SQLite or a real PostgreSQL server (started once per test binary,
//! as the `postgres` user, in a temp dir, on a free port; each test gets its own
//! database), and an installation's client that signs its requests with a real
//! instance key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_addr, licgate_bin};
use licgate::authority::protocol::{sign_request, verify_answer, DATE_HEADER, SIGNATURE_HEADER};
use licgate::license::instance_key::InstanceKey;
use licgate::license::{Algorithm, PublicKey};

/// Which database an authority runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server of this test binary.
pub(crate) struct Postgres {
    pub port: u16,
    bin: PathBuf,
}

/// The directory of Debian's PostgreSQL programs (the newest version installed).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: `make test` installs PostgreSQL")
}

/// Runs `program args…` as the `postgres` user (initdb refuses root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args);
    command
}

impl Postgres {
    /// The server, started at first use: `initdb` and `postgres` as the `postgres`
    /// user, trust authentication on 127.0.0.1, a watchdog that stops it when this
    /// test process ends.
    pub(crate) fn shared() -> &'static Postgres {
        static SERVER: OnceLock<Postgres> = OnceLock::new();
        SERVER.get_or_init(Postgres::start)
    }

    fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = std::env::temp_dir().join(format!("licgate-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown {}", dir.display());
        let data = dir.join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_addr().port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            dir.display()
        );
        let log = dir.join("server.log");
        let start = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .stdout(Stdio::null())
        .status()
        .expect("run pg_ctl");
        assert!(
            start.success(),
            "pg_ctl start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Stop the server when this test process is gone (statics are never dropped).
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let detached = Command::new("setsid")
            .args(["-f", "bash", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the PostgreSQL watchdog");
        assert!(detached.success(), "setsid -f: {detached}");
        Postgres { port, bin }
    }

    /// A new empty database; returns its URL.
    pub(crate) fn database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "licgate_{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let out = as_postgres(
            &self.bin.join("psql"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        )
        .output()
        .expect("run psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// A running `licgate authority serve`.
pub(crate) struct Authority {
    pub url: String,
    pub dir: PathBuf,
    pub database: String,
    child: Child,
    _temp: Option<tempfile::TempDir>,
}

/// What a test authority's config adds (e.g. `[attempts]`).
pub(crate) const NO_EXTRA: &str = "";

impl Authority {
    /// A new authority on a new database of `backend`.
    pub(crate) async fn start(backend: Backend, extra: &str) -> Authority {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let database = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.join("authority.db").display()),
            Backend::Postgres => Postgres::shared().database(),
        };
        prepare(&dir, &database, extra);
        let mut authority = Authority::spawn(&dir, &database).await;
        authority._temp = Some(temp);
        authority
    }

    /// Another process on the same directory and database (a second replica).
    pub(crate) async fn replica(&self) -> Authority {
        let replica_dir = self.dir.join(format!("replica-{}", free_addr().port()));
        std::fs::create_dir_all(&replica_dir).unwrap();
        for file in ["vendor.key.pem", "vendor.pub.pem", "admin.token"] {
            std::fs::copy(self.dir.join(file), replica_dir.join(file)).unwrap();
        }
        let text = std::fs::read_to_string(self.dir.join("authority.toml")).unwrap();
        std::fs::write(replica_dir.join("authority.toml"), text).unwrap();
        Authority::spawn(&replica_dir, &self.database).await
    }

    /// Starts the process on `dir` (its authority.toml gets a free port) and waits for
    /// `/readyz`.
    async fn spawn(dir: &Path, database: &str) -> Authority {
        Authority::spawn_on(dir, database, None).await
    }

    /// Kills the process and starts it again on the same address, directory and
    /// database (an outage of the license server).
    pub(crate) async fn restart(&mut self) {
        self.kill9();
        let addr: std::net::SocketAddr = self.url.trim_start_matches("http://").parse().unwrap();
        let mut fresh = Authority::spawn_on(&self.dir, &self.database, Some(addr)).await;
        std::mem::swap(&mut self.child, &mut fresh.child);
    }

    /// [`spawn`](Self::spawn) on `fixed` when given (else a free port).
    async fn spawn_on(
        dir: &Path,
        database: &str,
        fixed: Option<std::net::SocketAddr>,
    ) -> Authority {
        let config_path = dir.join("authority.toml");
        let template = std::fs::read_to_string(&config_path).unwrap();
        for _ in 0..5 {
            let addr = fixed.unwrap_or_else(free_addr);
            let text = template
                .lines()
                .filter(|l| !l.starts_with("listen ="))
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&config_path, format!("listen = \"{addr}\"\n{text}\n")).unwrap();
            let log =
                std::fs::File::create(dir.join(format!("authority-{}.log", addr.port()))).unwrap();
            let mut child = Command::new(licgate_bin())
                .args(["authority", "serve", "--config"])
                .arg(&config_path)
                .env("LICGATE_TEST_CLOCK_OFFSET_FILE", dir.join("clock-offset"))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start licgate authority");
            let url = format!("http://{addr}");
            let deadline = Instant::now() + Duration::from_secs(30);
            let http = reqwest::Client::new();
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "authority exited {status}: {}",
                        std::fs::read_to_string(dir.join(format!("authority-{}.log", addr.port())))
                            .unwrap_or_default()
                    );
                }
                if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
                    if r.status() == 200 {
                        return Authority {
                            url,
                            dir: dir.to_path_buf(),
                            database: database.to_string(),
                            child,
                            _temp: None,
                        };
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the authority did not become ready");
    }

    /// Runs `licgate authority ARGS…` against this authority; (exit code, stdout, stderr).
    pub(crate) fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(licgate_bin())
            .arg("authority")
            .args(args)
            .env("LICGATE_AUTHORITY_URL", &self.url)
            .env("LICGATE_AUTHORITY_TOKEN_FILE", self.dir.join("admin.token"))
            .output()
            .expect("run licgate authority");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`cli`](Self::cli) with `--json`, the output parsed; panics on failure.
    pub(crate) fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = self.cli(&all);
        assert_eq!(code, 0, "authority {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Answers the offline request file `request` with `licgate authority offline
    /// activate`, writing `response`; returns the response file's bytes.
    pub(crate) fn answer_offline(&self, request: &Path, response: &Path) -> Vec<u8> {
        let (code, _, err) = self.cli(&[
            "offline",
            "activate",
            request.to_str().unwrap(),
            "--out",
            response.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        std::fs::read(response).unwrap()
    }

    /// A policy `name` with `max` activations, created through the CLI.
    pub(crate) fn policy(&self, name: &str, max: u32, extra: &[&str]) {
        let max = max.to_string();
        let mut args = vec![
            "policy",
            "create",
            "--name",
            name,
            "--tier",
            "professional",
            "--feature",
            "sales",
            "--limit",
            "requests_per_hour=5000",
            "--max-activations",
            &max,
            "--days",
            "365",
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = self.cli(&args);
        assert_eq!(code, 0, "policy create: {err}");
    }

    /// A license of `policy` for `tenant` through the CLI: (id, key). The key is the
    /// last line of stdout, as the contract says.
    pub(crate) fn license(&self, policy: &str, tenant: &str) -> (String, String) {
        let (code, out, err) = self.cli(&[
            "license",
            "create",
            "--policy",
            policy,
            "--tenant",
            tenant,
            "--customer",
            "ACME",
        ]);
        assert_eq!(code, 0, "license create: {err}");
        let key = out.lines().last().unwrap().trim().to_string();
        assert!(key.starts_with("LG-"), "{out}");
        let id = out
            .lines()
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("lic_")))
            .unwrap()
            .to_string();
        (id, key)
    }

    /// The vendor public key that verifies tokens and answers.
    pub(crate) fn vendor_key(&self) -> PublicKey {
        PublicKey::load(
            &self.dir.join("vendor.pub.pem"),
            Algorithm::EdDSA,
            Some("v1".into()),
        )
        .unwrap()
    }

    /// Moves the authority's clock by `secs` (debug builds read the offset file).
    pub(crate) fn set_clock_offset(&self, secs: i64) {
        std::fs::write(self.dir.join("clock-offset"), secs.to_string()).unwrap();
    }

    /// The authority's clock now (the system clock plus the offset).
    pub(crate) fn now(&self) -> i64 {
        let offset: i64 = std::fs::read_to_string(self.dir.join("clock-offset"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        licgate::license::clock::Clock::now(&licgate::license::clock::SystemClock) + offset
    }

    /// Every event, through the admin API.
    pub(crate) async fn events(&self) -> Vec<Value> {
        let token = std::fs::read_to_string(self.dir.join("admin.token")).unwrap();
        let v: Value = reqwest::Client::new()
            .get(format!("{}/admin/v1/events?limit=10000", self.url))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["events"].as_array().unwrap().clone()
    }

    /// Kills the process with SIGKILL.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's log so far.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("authority-")
            {
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the signing keys, admin token and authority.toml into `dir`.
fn prepare(dir: &Path, database: &str, extra: &str) {
    let pair = licgate::license::keys::generate_ed25519();
    licgate::license::keys::write_key_pair(dir, &pair).unwrap();
    std::fs::write(
        dir.join("admin.token"),
        "test-admin-token-0123456789abcdef\n",
    )
    .unwrap();
    let config = format!(
        "database = \"{database}\"\nmax_body_bytes = 65536\n{extra}\n[signing]\nkey = \"vendor.key.pem\"\nkid = \"v1\"\nissuer = \"vendor.test\"\n[admin]\ntoken_file = \"admin.token\"\n"
    );
    std::fs::write(dir.join("authority.toml"), config).unwrap();
}

/// A fresh nonce.
pub(crate) fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "nonce-{}-{:016x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed) ^ 0x5eed_0000_0000
    )
}

/// An installation: its instance id and key, talking to one authority.
pub(crate) struct Installation {
    pub instance_id: String,
    pub key: InstanceKey,
    _dir: tempfile::TempDir,
}

/// An answer: status, JSON body, whether the vendor signature verified.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub signed: bool,
}

impl Answer {
    pub(crate) fn code(&self) -> &str {
        self.body["error_code"].as_str().unwrap_or("")
    }
}

async fn answer(response: reqwest::Response, vendor: &PublicKey) -> Answer {
    let status = response.status().as_u16();
    let signature = response
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response.bytes().await.unwrap();
    let signed = signature.is_some_and(|s| verify_answer(&s, &bytes, vendor));
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        signed,
    }
}

impl Installation {
    pub(crate) fn new(instance_id: &str) -> Installation {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(&dir.path().join("instance-key.pem")).unwrap();
        Installation {
            instance_id: instance_id.to_string(),
            key,
            _dir: dir,
        }
    }

    /// `POST /v1/activations` with `license_key`.
    pub(crate) async fn activate(&self, authority: &Authority, license_key: &str) -> Answer {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/activations", authority.url))
            .json(&json!({
                "license_key": license_key,
                "instance_id": self.instance_id,
                "instance_public_key": self.key.public_key_pem(),
                "hostname": format!("{}.test", self.instance_id),
                "nonce": nonce(),
            }))
            .send()
            .await
            .unwrap();
        answer(response, &authority.vendor_key()).await
    }

    /// A request signed by this installation's key at the authority's time.
    pub(crate) async fn signed(
        &self,
        authority: &Authority,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
    ) -> Answer {
        let (date, signature) =
            sign_request(&self.key, method.as_str(), path, authority.now(), body);
        self.send(authority, method, path, body, &date, &signature)
            .await
    }

    /// A request with the given date and signature headers.
    pub(crate) async fn send(
        &self,
        authority: &Authority,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
        date: &str,
        signature: &str,
    ) -> Answer {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", authority.url))
            .header(DATE_HEADER, date)
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        answer(response, &authority.vendor_key()).await
    }

    /// `POST path` with `body` and the given (date, signature) headers.
    pub(crate) async fn post_signed_as(
        &self,
        authority: &Authority,
        path: &str,
        body: &[u8],
        (date, signature): (&str, &str),
    ) -> Answer {
        self.send(
            authority,
            reqwest::Method::POST,
            path,
            body,
            date,
            signature,
        )
        .await
    }

    /// A heartbeat of `activation_id` with a fresh nonce.
    pub(crate) async fn heartbeat(&self, authority: &Authority, activation_id: &str) -> Answer {
        let body = json!({"nonce": nonce()}).to_string();
        self.signed(
            authority,
            reqwest::Method::POST,
            &format!("/v1/activations/{activation_id}/heartbeat"),
            body.as_bytes(),
        )
        .await
    }

    /// Frees `activation_id` (signed DELETE).
    pub(crate) async fn deactivate(&self, authority: &Authority, activation_id: &str) -> Answer {
        let body = json!({"nonce": nonce()}).to_string();
        self.signed(
            authority,
            reqwest::Method::DELETE,
            &format!("/v1/activations/{activation_id}"),
            body.as_bytes(),
        )
        .await
    }
}

/// The claims of a JWT (not verified: the gateway's verifier is tested elsewhere;
/// here the answer's signature is).
pub(crate) fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
