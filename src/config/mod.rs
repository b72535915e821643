//! Configuration: the TOML file, its raw serde mirror, and the validated [`Config`]
//! the rest of the program uses.
//!
//! Loading never panics on operator input: every problem found is reported as
//! `file:line:col: message`, and as many problems as can be found are found at once
//! (syntax errors first; then each section on its own; then value checks).

mod error;
mod raw;
mod validate;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub(crate) use error::locate;
pub use error::{line_col, ConfigError, Diagnostic, Located};
pub use raw::RawConfig;
pub(crate) use validate::{admin_token, bounded_int, duration, socket_addr};

pub use crate::access_log::Overflow as AccessOverflow;

use crate::license::clock::SystemClock;
use crate::license::manager::LicenseSettings;
use crate::license::store::{Store, StoreError};
use crate::license::{LicenseManager, Verifier};
pub use crate::policy::decide::{FeatureRule, Mode};
pub use crate::policy::model::{ModelPattern, ModelRule};
pub use crate::policy::tenant::{HostPattern, TenantsConfig};

/// The default configuration path when neither `--config` nor `$LICGATE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/licgate.toml";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration came from (for messages and reloads).
    pub source: PathBuf,
    pub mode: Mode,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    /// Licensing; `None` when the file has no `[license]` section (every tenant is
    /// then unlicensed).
    pub license: Option<LicenseConfig>,
    /// How a request's tenant is found.
    pub tenants: TenantsConfig,
    /// Path normalization options.
    pub paths: crate::policy::path::PathOptions,
    /// Prefixes that need no license.
    pub public_paths: Vec<String>,
    /// The feature map's paths, in file order.
    pub features: Vec<FeatureRule>,
    /// The feature map's Odoo models (`[[features]] models = [...]`), in file order.
    pub model_rules: Vec<ModelRule>,
    pub pages: PagesConfig,
    /// Where quota counters live.
    pub quota: QuotaConfig,
    /// `quota.per_client_share`: the most of any tenant quota one client may use
    /// (0 < share ≤ 1); `None` = no per-client limit.
    pub per_client_share: Option<f64>,
    /// `[usage]`: the ledger.
    pub usage: UsageConfig,
    /// `[odoo]`: the inspection of Odoo's RPC bodies.
    pub odoo: OdooConfig,
    /// `[geoip] database`: the country of client addresses, for licenses with
    /// `restrictions.allowed_countries` (`None`: countries are not checked).
    pub geoip: Option<std::sync::Arc<crate::restrictions::GeoIp>>,
    /// `[seats]`: how a person is recognized for the license's seat limits (`None`:
    /// seats are not counted).
    pub seats: Option<SeatsConfig>,
    /// `[authority]`: the vendor's license server; `None` without the section (only
    /// signed tokens are then installed).
    pub authority: Option<AuthorityLinkConfig>,
    pub log: LogConfig,
    pub reload: ReloadConfig,
}

/// `[seats]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatsConfig {
    /// `seats.identity`: where a person is recognized.
    pub identity: SeatIdentity,
    /// A seat is in use while its identity was seen this recently (default 30 min).
    pub idle_timeout: Duration,
    /// An identity is an active user while seen this recently (default 30 days).
    pub active_window: Duration,
}

/// Where a request's person is recognized (`seats.identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatIdentity {
    /// `cookie:NAME`: a session cookie's value.
    Cookie(String),
    /// `jwt:CLAIM`: a claim of the bearer token verified with `tenants.jwt_keys`.
    Jwt(String),
    /// `header:NAME`: a header set by a trusted proxy (`server.trusted_proxies`).
    Header(http::HeaderName),
}

/// `seats.idle_timeout` and `seats.active_window` by default.
pub const DEFAULT_SEAT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_SEAT_ACTIVE_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// `[usage]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageConfig {
    /// Whether the ledger counts requests (`usage.enabled`, default true; it needs a
    /// `[license]` store).
    pub enabled: bool,
    /// Days of ledger rows kept (`usage.retention_days`, 1–3660, default 400).
    pub retention_days: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            retention_days: 400,
        }
    }
}

/// `[odoo]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OdooConfig {
    /// Whether Odoo's RPC endpoints are recognized: their refusals answered in Odoo's
    /// shapes and, with model rules, their bodies inspected (`odoo.enabled`, default
    /// false).
    pub enabled: bool,
    /// The largest RPC body inspected (`odoo.max_rpc_body`, bytes, default 1 MiB);
    /// a larger one on an inspected endpoint is refused (413).
    pub max_rpc_body: usize,
}

/// The default `odoo.max_rpc_body`.
pub const DEFAULT_MAX_RPC_BODY: usize = 1024 * 1024;

impl Default for OdooConfig {
    fn default() -> Self {
        OdooConfig {
            enabled: false,
            max_rpc_body: DEFAULT_MAX_RPC_BODY,
        }
    }
}

/// `[authority]`: where the gateway activates license keys and sends heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityLinkConfig {
    /// The authority's base URL (`http://` or `https://`, no query or fragment).
    pub url: reqwest::Url,
    /// Where `authority.url` is in the file (`licgate check` points at it).
    pub url_span: std::ops::Range<usize>,
    /// Extra CA certificates (PEM) trusted for the authority's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// The most one call to the authority may take (`authority.timeout`, default 10 s).
    pub timeout: Duration,
    /// While the authority cannot be reached, responses warn once less than this much
    /// of the token's life is left (`authority.grace_warning`, default 7 days).
    pub grace_warning: Duration,
}

/// `[quota]` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaConfig {
    /// In-process counters (default).
    Local,
    /// Counters shared by a fleet of gateways in Redis.
    Redis(RedisConfig),
}

/// `[quota.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    /// Longest wait for one Redis call.
    pub timeout: Duration,
    pub on_error: OnRedisError,
    /// Gateways sharing the quota: the local fallback allows 1/fleet_size of each limit.
    pub fleet_size: u32,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before probing Redis again.
    pub breaker_cooldown: Duration,
    /// Whether each gateway spends reserved slices of a quota or asks Redis per request.
    pub mode: RedisMode,
}

/// How the Redis backend counts (`quota.redis.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// Each gateway reserves a slice of a window's remaining quota in one call and
    /// spends it locally; slices shrink as the window nears its limit (the default).
    Slice,
    /// One atomic round trip per request.
    Exact,
}

/// What quota checks do while Redis cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Count locally, with this gateway's share of each limit.
    Local,
    /// Let requests through uncounted.
    Allow,
    /// Refuse quota-governed requests with 503 (never 429).
    Deny,
}

/// `[pages]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PagesConfig {
    /// Where a browser goes after a successful activation (a same-origin path).
    pub after_activation: String,
    /// Directory whose `*.html` files replace the embedded pages of the same name.
    pub templates_dir: Option<PathBuf>,
    /// Whether `/_licgate/status` shows everyone the full summary (features, limits,
    /// expiry); by default it shows only status and tier.
    pub public_status: bool,
    /// `pages.flag_banner`: a top bar in the app's HTML pages for `trial` and
    /// `non_production` licenses.
    pub flag_banner: bool,
}

/// Where licenses come from and how they are judged.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseConfig {
    /// Public keys that verify licenses, each pinned to one algorithm.
    pub public_keys: Vec<crate::license::PublicKey>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// The license store directory.
    pub store_dir: PathBuf,
    pub instance_id: InstanceIdSetting,
    pub policy: crate::license::StatusPolicy,
    /// Clock difference tolerated on `nbf`/`exp` checks at installation.
    pub clock_leeway: Duration,
    /// How often the store directory is checked for changed files.
    pub scan_interval: Duration,
    /// How far back the clock may go before licenses are judged at the high-water time.
    pub clock_rollback_tolerance: Duration,
    /// The instance's Ed25519 key (PKCS#8 PEM; `license.instance_key_file`, default
    /// `store_dir/instance-key.pem`, created on first use).
    pub instance_key_file: PathBuf,
}

/// `license.instance_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceIdSetting {
    /// Generated once and persisted in the store directory.
    Auto,
    Fixed(String),
}

/// The client-facing listener(s).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Addresses to listen on (at least one).
    pub listen: Vec<SocketAddr>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Peers whose `X-Forwarded-*` headers are trusted and extended rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// One work-stealing runtime for all threads (`true`) or one single-threaded
    /// runtime per thread with connections spread over them (`false`, the default:
    /// fewer cross-thread wake-ups, measured faster for short proxied requests).
    pub work_stealing: bool,
    /// Longest time to receive a request head: from the connection's start for its
    /// first request, from the first byte for later ones.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Open client connections at most (new ones get 503 while full).
    pub max_connections: usize,
    /// Open client connections per client (IPv4 address or IPv6 /64) at most; `None`
    /// = no limit. Peers in `trusted_proxies` are exempt.
    pub max_connections_per_ip: Option<usize>,
}

/// The protected application.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `host:port` of the application.
    pub address: UpstreamAddress,
    /// Speak TLS to the upstream.
    pub tls: bool,
    /// TLS server name; defaults to the address's host.
    pub sni: String,
    /// Verify the upstream's certificate (TLS only).
    pub verify_cert: bool,
    /// PEM file of the CA certificates trusted for the upstream; `None` = the system's.
    pub ca_file: Option<PathBuf>,
    /// Replace the client's `Host` header with this value.
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection to the upstream is kept.
    pub idle_timeout: Duration,
    /// How many idle upstream connections are kept for reuse.
    pub keepalive_pool_size: usize,
}

/// An upstream address: a host name or IP literal and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    pub host: String,
    pub port: u16,
}

/// An upstream address that does not resolve.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve upstream.address {addr}: {reason}")]
pub struct ResolveError {
    pub addr: String,
    pub reason: String,
}

impl UpstreamAddress {
    /// Resolves the host name (first address wins).
    pub fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        let failed = |reason: String| ResolveError {
            addr: self.to_string(),
            reason,
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| failed(e.to_string()))?
            .next()
            .ok_or_else(|| failed("no addresses found".into()))
    }
}

impl std::fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The operators' listener (health, readiness, metrics, the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token of the `/admin/` API (`admin.token_file`); `None` turns the
    /// API off.
    pub token: Option<AdminToken>,
}

/// The admin API's bearer token. Only its SHA-256 digest is kept, and it never
/// appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Shortest token accepted, in characters.
    pub const MIN_LEN: usize = 16;

    pub fn new(secret: &[u8]) -> AdminToken {
        AdminToken {
            digest: sha256(secret),
        }
    }

    /// The key that signs the usage page's session cookies: derived from the token, so
    /// a new token ends every session.
    pub fn session_key(&self) -> [u8; 32] {
        let mut input = b"licgate-admin-session\0".to_vec();
        input.extend_from_slice(&self.digest);
        sha256(&input)
    }

    /// Whether `presented` is the token, compared in constant time (digests of equal
    /// length, so neither content nor length leaks through timing).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `licgate=debug,pingora=warn`.
    pub level: String,
    /// One line per request under the target `licgate::access` (`log.access`).
    pub access: bool,
    /// Where access lines go (`log.access_file`); `None` = stderr.
    pub access_file: Option<PathBuf>,
    /// What a full access-log queue does (`log.access_overflow`).
    pub access_overflow: AccessOverflow,
}

/// Live reload (`[reload]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Reload when the configuration file changes, and rescan the license store when
    /// its files change (besides SIGHUP and `POST /admin/v1/reload`).
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text` as the contents of the file `path` (used for messages only).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let fail = |diagnostics| ConfigError::Invalid(error::locate(&file, text, diagnostics));
        let (mut raw, mut diagnostics) = parse_raw(text).map_err(fail)?;
        raw.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        match Config::try_from(raw) {
            Err(more) => diagnostics.extend(more),
            Ok(mut config) if diagnostics.is_empty() => {
                config.source = path.to_path_buf();
                return Ok(config);
            }
            Ok(_) => {}
        }
        Err(fail(diagnostics))
    }
}

/// Parses `text` into the raw mirror. Syntax errors are fatal (`Err`, all of them).
/// Otherwise returns what did parse together with the unknown-key and type errors
/// of every section (keys that failed are listed in `RawConfig::failed_keys`), so
/// value checks can still run on the rest.
pub fn parse_raw(text: &str) -> Result<(RawConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return Err(syntax_errors.iter().map(diagnostic_of).collect());
    }
    let mut diagnostics = Vec::new();
    let mut raw = RawConfig::default();
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "mode" => raw.mode = section("mode", value, &mut diagnostics, &mut raw.failed_keys),
            "server" => {
                raw.server = section("server", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "upstream" => {
                raw.upstream = section("upstream", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "admin" => raw.admin = section("admin", value, &mut diagnostics, &mut raw.failed_keys),
            "license" => {
                raw.license = section("license", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "tenants" => {
                raw.tenants = section("tenants", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "paths" => raw.paths = section("paths", value, &mut diagnostics, &mut raw.failed_keys),
            "public" => {
                raw.public = section("public", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "features" => {
                raw.features = section("features", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "pages" => raw.pages = section("pages", value, &mut diagnostics, &mut raw.failed_keys),
            "quota" => raw.quota = section("quota", value, &mut diagnostics, &mut raw.failed_keys),
            "usage" => raw.usage = section("usage", value, &mut diagnostics, &mut raw.failed_keys),
            "odoo" => raw.odoo = section("odoo", value, &mut diagnostics, &mut raw.failed_keys),
            "geoip" => raw.geoip = section("geoip", value, &mut diagnostics, &mut raw.failed_keys),
            "seats" => raw.seats = section("seats", value, &mut diagnostics, &mut raw.failed_keys),
            "authority" => {
                raw.authority = section("authority", value, &mut diagnostics, &mut raw.failed_keys)
            }
            "log" => raw.log = section("log", value, &mut diagnostics, &mut raw.failed_keys),
            "reload" => {
                raw.reload = section("reload", value, &mut diagnostics, &mut raw.failed_keys)
            }
            other => diagnostics.push(Diagnostic::at(
                key_span,
                format!(
                    "unknown key `{other}`, expected one of {}",
                    raw::TOP_LEVEL_KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
    Ok((raw, diagnostics))
}

/// Deserializes one top-level value, recording every error (with span) it holds.
///
/// serde stops at the first error, so after each one the offending key is dropped from
/// the section (and remembered in `failed`) and the section is read again: a type error
/// in one key does not hide errors in the others, and the keys that did parse still
/// reach the value checks.
fn section<'i, T: Deserialize<'i>>(
    name: &str,
    mut value: Spanned<DeValue<'i>>,
    diagnostics: &mut Vec<Diagnostic>,
    failed: &mut Vec<String>,
) -> Option<T> {
    let whole = value.span();
    loop {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => return Some(parsed),
            Err(e) => e,
        };
        let span = error.span().unwrap_or(whole.clone());
        diagnostics.push(Diagnostic {
            span: Some(span.clone()),
            message: error
                .message()
                .trim()
                .replace("expected i64", "expected an integer"),
        });
        let DeValue::Table(table) = value.get_mut() else {
            failed.push(name.to_string());
            return None;
        };
        let inside = |outer: std::ops::Range<usize>| {
            outer.start <= span.start && span.start < outer.end.max(outer.start + 1)
        };
        let culprit = table
            .iter()
            .find(|(k, v)| inside(k.span()) || inside(v.span()))
            .map(|(k, _)| k.clone());
        match culprit {
            Some(key) => {
                table.remove(&key);
                failed.push(format!("{name}.{}", key.get_ref()));
            }
            None => {
                failed.push(name.to_string());
                return None;
            }
        }
    }
}

fn diagnostic_of(e: &toml::de::Error) -> Diagnostic {
    Diagnostic {
        span: e.span(),
        message: e.message().trim().to_string(),
    }
}

/// The number of cores, the default for `server.threads`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;

impl LicenseConfig {
    /// The instance id: the configured one, or the one persisted in `store`
    /// (generated on first use).
    pub fn instance_id(&self, store: &Store) -> Result<String, StoreError> {
        match &self.instance_id {
            InstanceIdSetting::Fixed(id) => Ok(id.clone()),
            InstanceIdSetting::Auto => store.instance_id(),
        }
    }

    /// The license manager's settings, with `store`'s instance id when it is `auto`.
    pub fn manager_settings(&self, store: &Store) -> Result<LicenseSettings, StoreError> {
        let instance_id = self.instance_id(store)?;
        Ok(LicenseSettings {
            verifier: Verifier::new(
                self.public_keys.clone(),
                self.issuer.clone(),
                instance_id,
                self.clock_leeway.as_secs() as i64,
            ),
            policy: self.policy,
            rollback_tolerance_secs: self.clock_rollback_tolerance.as_secs() as i64,
        })
    }

    /// Opens the store and loads it with the system clock (the caller runs the
    /// manager's refresher).
    pub fn open_manager(&self) -> Result<Arc<LicenseManager>, StoreError> {
        let store = Store::open(&self.store_dir)?;
        let settings = self.manager_settings(&store)?;
        Ok(Arc::new(LicenseManager::new(
            settings,
            store,
            Arc::new(SystemClock),
        )))
    }
}
