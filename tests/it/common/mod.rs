//! Integration test harness: a real upstream (the demo app: JSON echo, WebSocket echo)
//! on an ephemeral loopback port, the real `licgate` binary started with a generated
//! config, and clients (reqwest, raw sockets) that speak real HTTP to it.

#![allow(dead_code)]

pub(crate) mod apps;
pub(crate) mod authority;
pub(crate) mod mmdb;
pub(crate) mod redis_server;
pub(crate) mod setup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The licgate binary under test.
pub(crate) fn licgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_licgate")
}

/// The repository root (for `config/licgate.toml`).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free loopback port (bound then released; callers retry on the rare collision).
///
/// Within one test process a port is handed out at most once: parallel tests would
/// otherwise be given the same just-released port and one would talk to the other's
/// gateway.
pub(crate) fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
        let addr = l.local_addr().expect("local addr");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

/// True when `admin` answers `/readyz` as a ready licgate: a 200 with the readiness
/// report. Status alone is not enough: another test's server (the JSON echo answers
/// 200 to any path) may hold that port if the gateway could not bind it.
pub(crate) async fn licgate_ready(admin: SocketAddr) -> bool {
    let Ok(resp) = http_get(admin, "/readyz").await else {
        return false;
    };
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    resp.status == 200 && body["status"] == "ready" && body["checks"]["listening"] == true
}

/// A loopback address where nothing listens.
pub(crate) fn dead_addr() -> SocketAddr {
    free_addr()
}

/// The demo app running in this test's runtime.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(licgate::demo::app::serve(listener));
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The default test configuration (a plain proxy, `mode = "off"`); `{listen}`,
/// `{admin}`, `{upstream}` are filled in.
pub(crate) const BASE_CONFIG: &str = r#"
mode = "off"
[server]
listen = "{listen}"
threads = 1
shutdown_timeout = "10s"
[upstream]
address = "{upstream}"
[admin]
listen = "{admin}"
[log]
level = "info,pingora=warn"
"#;

/// A running `licgate serve` process.
pub(crate) struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with [`BASE_CONFIG`] in front of `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Gateway {
        Gateway::start_with(BASE_CONFIG, upstream).await
    }

    /// Starts the gateway with `template` (placeholders as in [`BASE_CONFIG`]) and waits
    /// until `/readyz` answers 200. Retries with new ports if a port was taken meanwhile.
    pub(crate) async fn start_with(template: &str, upstream: SocketAddr) -> Gateway {
        let mut last_error = String::new();
        for _ in 0..5 {
            let listen = free_addr();
            let admin = free_addr();
            let text = template
                .replace("{listen}", &listen.to_string())
                .replace("{admin}", &admin.to_string())
                .replace("{upstream}", &upstream.to_string());
            match Gateway::spawn(&text, listen, admin).await {
                Ok(g) => return g,
                Err(e) => last_error = e,
            }
        }
        panic!("gateway did not start: {last_error}");
    }

    async fn spawn(config: &str, addr: SocketAddr, admin: SocketAddr) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("licgate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let child = Command::new(licgate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            // Quota windows are counted on this clock (debug builds): see
            // `Gateway::set_quota_clock`.
            .env(
                "LICGATE_TEST_CLOCK_OFFSET_FILE",
                dir.path().join("quota-clock-offset"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn licgate");
        let mut gateway = Gateway {
            addr,
            admin,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = gateway.child.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}: {}", gateway.logs()));
            }
            if licgate_ready(admin).await {
                return Ok(gateway);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("not ready in time: {}", gateway.logs()))
    }

    /// `http://addr` of the client listener.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process wrote to stderr so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (all label sets) on `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = http_get(self.admin, "/metrics").await.unwrap().text();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until at least `n` proxied requests are in flight (10 s at most).
    pub(crate) async fn until_in_flight(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("licgate_in_flight_requests").await < n as f64 {
            assert!(Instant::now() < deadline, "{n} requests never in flight");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the logs contain `needle` (10 s at most).
    pub(crate) async fn until_logged(&self, needle: &str) {
        eventually(Duration::from_secs(10), needle, || {
            self.logs().contains(needle)
        })
        .await;
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, ...).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Moves the gateway's quota clock so that it reads `at` (Unix seconds) now; the
    /// clock goes on from there.
    pub(crate) fn set_quota_clock(&self, at: i64) {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let path = self.dir.path().join("quota-clock-offset");
        let temp = self.dir.path().join(".quota-clock-offset");
        std::fs::write(&temp, (at - system).to_string()).unwrap();
        std::fs::rename(temp, path).unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response read off a raw socket.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The exact bytes of the head (status line and headers).
    pub head: String,
}

impl RawResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `stream`. The body is framed by `Content-Length` or chunked
/// encoding; for `HEAD` (`head_only`) and 1xx/204/304 there is no body.
pub(crate) async fn read_response(
    stream: &mut TcpStream,
    head_only: bool,
) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "response head timed out")
            })??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let no_body = head_only || status < 200 || status == 204 || status == 304;
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if no_body {
        Vec::new()
    } else if let Some(len) = content_length {
        while rest.len() < len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "short body",
                ));
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if chunked {
        read_chunked(stream, rest).await?
    } else {
        stream.read_to_end(&mut rest).await?;
        rest
    };
    Ok(RawResponse {
        status,
        headers,
        body,
        head,
    })
}

async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        while find(&buf, b"\r\n").is_none() {
            fill(stream, &mut buf).await?;
        }
        let line_end = find(&buf, b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            fill(stream, &mut buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof in chunked body",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` bytes as-is on a new connection and reads one response.
pub(crate) async fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let head_only = request.starts_with(b"HEAD ");
    read_response(&mut stream, head_only).await
}

/// A minimal `GET path` with `Connection: close`.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<RawResponse> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).await
}

/// The echoed request headers as (name, value) pairs.
pub(crate) fn echoed_headers(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The first echoed value of header `name` (lowercase).
pub(crate) fn echoed_header(echo: &serde_json::Value, name: &str) -> Option<String> {
    echoed_headers(echo)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// Runs `licgate` with `args`, returning (exit code, stdout, stderr).
pub(crate) fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(licgate_bin())
        .args(args)
        .env_remove("LICGATE_CONFIG")
        .output()
        .expect("run licgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// License claims for `tenant` granting `features`, valid from `now` until `exp`,
/// bound to any instance.
pub(crate) fn test_claims(
    tenant: &str,
    features: &[&str],
    now: i64,
    exp: i64,
) -> licgate::license::Claims {
    licgate::license::Claims {
        iss: None,
        sub: None,
        aud: vec!["*".into()],
        jti: format!("{tenant}-{}-{exp}", features.join("+")),
        iat: Some(now),
        nbf: None,
        exp,
        tenant: tenant.into(),
        tier: Some("professional".into()),
        tier_name: None,
        features: features.iter().map(|f| f.to_string()).collect(),
        limits: licgate::license::Limits::default(),
        feature_limits: Default::default(),
        restrictions: Default::default(),
        flags: vec![],
        grace_days: None,
        read_only_days: None,
        license_exp: None,
    }
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after `within`.
pub(crate) async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
