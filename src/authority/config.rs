//! `authority.toml`: the raw mirror of the file and the validated [`AuthorityConfig`],
//! every problem reported as `file:line:col: message`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{
    admin_token, bounded_int, duration, locate, socket_addr, AdminToken, ConfigError, Diagnostic,
    LogConfig, LogFormat,
};
use crate::license::SigningKey;

/// The default listener of `licgate authority serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// The file as written (`deny_unknown_fields` everywhere). `database_file` names a
/// file holding the URL (a Kubernetes Secret or a systemd credential), so a
/// PostgreSQL password need not sit in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorityConfig {
    listen: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    database_file: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
    database_connections: Option<Spanned<i64>>,
    signing: Option<Spanned<RawSigning>>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    attempts: RawAttempts,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    key: Spanned<String>,
    kid: Option<String>,
    issuer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token_file: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    max_activations: Option<Spanned<i64>>,
    token_ttl: Option<Spanned<String>>,
    heartbeat_interval: Option<Spanned<String>>,
    heartbeat_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttempts {
    per_address_per_minute: Option<Spanned<i64>>,
    per_key_per_minute: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<Spanned<String>>,
}

/// Where the authority keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (WAL), created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, as given (it may hold a password: never logged).
    Postgres(String),
}

impl DatabaseUrl {
    /// Reads `sqlite://PATH` (relative to `base_dir`) or `postgres://…`/`postgresql://…`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<DatabaseUrl, String> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err("sqlite:// needs a file name, e.g. \"sqlite://authority.db\"".into());
            }
            return Ok(DatabaseUrl::Sqlite(base_dir.join(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(text.to_string()));
        }
        Err(format!(
            "`{}` is not a database URL: expected \"sqlite://authority.db\" or \"postgres://user:pass@host:5432/db\"",
            redact_url(text)
        ))
    }

    /// The URL for messages and logs: a PostgreSQL password is replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

/// `url` with the password of its user-info replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The defaults a new policy takes for what `policy create` leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDefaults {
    pub max_activations: u32,
    /// How long an installation runs without reaching the authority.
    pub token_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// Floating policies: no heartbeat for this long frees the slot.
    pub heartbeat_timeout: Duration,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        PolicyDefaults {
            max_activations: 1,
            token_ttl: Duration::from_secs(30 * 86_400),
            heartbeat_interval: Duration::from_secs(3_600),
            heartbeat_timeout: Duration::from_secs(3 * 3_600),
        }
    }
}

/// Brute-force limits on the key-taking endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    pub per_address_per_minute: u32,
    pub per_key_per_minute: u32,
}

/// The validated configuration of `licgate authority serve`.
pub struct AuthorityConfig {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub database_connections: u32,
    /// The URL gateways reach the authority at (shown in answers and docs).
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub signing_key: SigningKey,
    pub signing_key_path: PathBuf,
    /// The key's PEM text (the signer keeps an Ed25519 key parsed).
    pub signing_key_pem: String,
    pub kid: Option<String>,
    pub issuer: String,
    pub admin_token: AdminToken,
    pub defaults: PolicyDefaults,
    pub attempts: AttemptLimits,
    pub log: LogConfig,
}

impl std::fmt::Debug for AuthorityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityConfig")
            .field("listen", &self.listen)
            .field("database", &self.database.display())
            .field("signing_key", &self.signing_key_path)
            .finish_non_exhaustive()
    }
}

impl AuthorityConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AuthorityConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthorityConfig::parse(&text, path)
    }

    /// Validates `text` as the contents of `path` (relative paths resolve against its
    /// directory).
    pub fn parse(text: &str, path: &Path) -> Result<AuthorityConfig, ConfigError> {
        let file = path.display().to_string();
        let fail = |diagnostics| ConfigError::Invalid(locate(&file, text, diagnostics));
        let raw: RawAuthorityConfig = toml::from_str(text).map_err(|e| {
            fail(vec![Diagnostic {
                span: e.span(),
                message: e.message().trim().to_string(),
            }])
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut diags = Vec::new();
        let config = validate(raw, path, &base_dir, &mut diags);
        match config {
            Some(config) if diags.is_empty() => Ok(config),
            _ => Err(fail(diags)),
        }
    }
}

fn validate(
    raw: RawAuthorityConfig,
    path: &Path,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthorityConfig> {
    let RawAuthorityConfig {
        listen,
        database,
        database_file,
        public_url,
        max_body_bytes,
        database_connections,
        signing,
        admin,
        defaults,
        attempts,
        log,
    } = raw;
    let listen = match &listen {
        Some(raw) => socket_addr(raw, "listen", diags),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let database = match (&database, &database_file) {
        (Some(_), Some(file)) => {
            diags.push(Diagnostic::at(
                file.span(),
                "give database or database_file, not both",
            ));
            None
        }
        (Some(raw), None) => match DatabaseUrl::parse(raw.get_ref(), base_dir) {
            Ok(url) => Some(url),
            Err(message) => {
                diags.push(Diagnostic::at(raw.span(), format!("database: {message}")));
                None
            }
        },
        (None, Some(file)) => {
            let path = base_dir.join(file.get_ref());
            let read = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| DatabaseUrl::parse(text.trim(), base_dir));
            match read {
                Ok(url) => Some(url),
                Err(message) => {
                    diags.push(Diagnostic::at(
                        file.span(),
                        format!("database_file: {message}"),
                    ));
                    None
                }
            }
        }
        (None, None) => Some(DatabaseUrl::Sqlite(base_dir.join("authority.db"))),
    };
    let public_url = public_url.and_then(|raw| {
        let text = raw.get_ref().trim_end_matches('/').to_string();
        if text.starts_with("https://") || text.starts_with("http://") {
            Some(text)
        } else {
            diags.push(Diagnostic::at(
                raw.span(),
                format!(
                    "public_url: `{}` is not an http(s) URL, e.g. \"https://licenses.example.com\"",
                    raw.get_ref()
                ),
            ));
            None
        }
    });
    let max_body_bytes = bounded_int(
        max_body_bytes,
        "max_body_bytes",
        1024 * 1024,
        1024..=64 * 1024 * 1024,
        diags,
    );
    let database_connections = bounded_int(
        database_connections,
        "database_connections",
        16,
        1..=1024,
        diags,
    ) as u32;
    let signing = match signing {
        Some(signing) => {
            let signing = signing.into_inner();
            let key_path = base_dir.join(signing.key.get_ref());
            match SigningKey::load(&key_path) {
                Ok(key) => {
                    let pem = std::fs::read_to_string(&key_path).unwrap_or_default();
                    Some((key, key_path, pem, signing.kid, signing.issuer))
                }
                Err(e) => {
                    diags.push(Diagnostic::at(
                        signing.key.span(),
                        format!("signing.key: {e}"),
                    ));
                    None
                }
            }
        }
        None => {
            diags.push(Diagnostic::whole_file(
                "[signing] is required: key = \"vendor.key.pem\" (from `licgate license keygen`)",
            ));
            None
        }
    };
    let admin = match admin {
        Some(admin) => admin_token(&admin.get_ref().token_file, base_dir, diags),
        None => {
            diags.push(Diagnostic::whole_file(
                "[admin] is required: token_file = \"admin.token\" (e.g. `openssl rand -hex 32 > admin.token`)",
            ));
            None
        }
    };
    let defaults = validate_defaults(defaults, diags);
    let attempts = AttemptLimits {
        per_address_per_minute: bounded_int(
            attempts.per_address_per_minute,
            "attempts.per_address_per_minute",
            60,
            1..=1_000_000,
            diags,
        ) as u32,
        per_key_per_minute: bounded_int(
            attempts.per_key_per_minute,
            "attempts.per_key_per_minute",
            30,
            1..=1_000_000,
            diags,
        ) as u32,
    };
    let format = match log.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            let span = log.format.as_ref().map(Spanned::span).unwrap_or(0..0);
            diags.push(Diagnostic::at(
                span,
                format!("log.format: `{other}`: expected \"text\" or \"json\""),
            ));
            LogFormat::Text
        }
    };
    let log = LogConfig {
        format,
        level: log.level.unwrap_or_else(|| "info".into()),
        access: false,
        access_file: None,
        access_overflow: crate::config::AccessOverflow::Drop,
    };
    let (signing_key, signing_key_path, signing_key_pem, kid, issuer) = signing?;
    Some(AuthorityConfig {
        source: path.to_path_buf(),
        listen: listen?,
        database: database?,
        database_connections,
        public_url,
        max_body_bytes,
        signing_key,
        signing_key_path,
        signing_key_pem,
        kid,
        issuer: issuer.unwrap_or_else(|| "licgate-authority".into()),
        admin_token: admin?,
        defaults,
        attempts,
        log,
    })
}

fn validate_defaults(raw: RawDefaults, diags: &mut Vec<Diagnostic>) -> PolicyDefaults {
    let fallback = PolicyDefaults::default();
    let RawDefaults {
        max_activations,
        token_ttl,
        heartbeat_interval,
        heartbeat_timeout,
    } = raw;
    let defaults = PolicyDefaults {
        max_activations: bounded_int(
            max_activations,
            "defaults.max_activations",
            fallback.max_activations as usize,
            1..=1_000_000,
            diags,
        ) as u32,
        token_ttl: duration(token_ttl, "defaults.token_ttl", fallback.token_ttl, diags),
        heartbeat_interval: duration(
            heartbeat_interval,
            "defaults.heartbeat_interval",
            fallback.heartbeat_interval,
            diags,
        ),
        heartbeat_timeout: duration(
            heartbeat_timeout,
            "defaults.heartbeat_timeout",
            fallback.heartbeat_timeout,
            diags,
        ),
    };
    if defaults.heartbeat_interval >= defaults.token_ttl {
        diags.push(Diagnostic::whole_file(
            "defaults.heartbeat_interval must be shorter than defaults.token_ttl (an installation must renew before its token runs out)",
        ));
    }
    defaults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_keys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let pair = crate::license::keys::generate_ed25519();
        crate::license::keys::write_key_pair(dir.path(), &pair).unwrap();
        std::fs::write(dir.path().join("admin.token"), "0123456789abcdef0123").unwrap();
        dir
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:7700"
database = "sqlite://authority.db"
[signing]
key = "vendor.key.pem"
kid = "2026"
[admin]
token_file = "admin.token"
"#;

    #[test]
    fn a_minimal_file_validates_with_defaults() {
        let dir = dir_with_keys();
        let path = dir.path().join("authority.toml");
        let config = AuthorityConfig::parse(GOOD, &path).unwrap();
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite(dir.path().join("authority.db"))
        );
        assert_eq!(config.defaults, PolicyDefaults::default());
        assert_eq!(config.issuer, "licgate-authority");
        assert_eq!(config.kid.as_deref(), Some("2026"));
    }

    #[test]
    fn errors_are_located() {
        let dir = dir_with_keys();
        let path = dir.path().join("authority.toml");
        let text = GOOD.replace("sqlite://authority.db", "mysql://x")
            + "[defaults]\ntoken_ttl = \"soon\"\n";
        let lines = AuthorityConfig::parse(&text, &path).unwrap_err().lines();
        assert!(
            lines[0].contains("authority.toml:3:12: database: `mysql://x` is not a database URL"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains(":10:13: defaults.token_ttl: `soon` is not a positive duration"),
            "{lines:?}"
        );
        let unknown = GOOD.to_string() + "colour = 1\n";
        let lines = AuthorityConfig::parse(&unknown, &path).unwrap_err().lines();
        assert!(
            lines[0].contains(":9:1: unknown field `colour`"),
            "{lines:?}"
        );
    }

    #[test]
    fn postgres_passwords_are_never_shown() {
        let url = DatabaseUrl::parse("postgres://lic:s3cret@db:5432/lic", Path::new("/")).unwrap();
        assert_eq!(url.display(), "postgres://lic:***@db:5432/lic");
        let err = DatabaseUrl::parse("mysql://u:pw@h/db", Path::new("/")).unwrap_err();
        assert!(!err.contains("pw"), "{err}");
    }
}
