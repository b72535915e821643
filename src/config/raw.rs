//! Raw configuration: serde structs that mirror the TOML file exactly.
//!
//! Every struct denies unknown fields; values that need checking beyond their
//! type keep their source span (`Spanned`) so errors can point at them.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file, section by section. Each section is deserialized on its own so
/// that an error in one does not hide errors in the others.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// Directory that relative paths in the file are resolved against (the config
    /// file's directory); set by the loader, not read from the file.
    pub base_dir: std::path::PathBuf,
    /// Dotted keys (`upstream.address`) whose values failed to parse and were already
    /// reported; value checks do not report them again (e.g. as missing).
    pub failed_keys: Vec<String>,
    pub mode: Option<RawMode>,
    pub server: Option<RawServer>,
    pub upstream: Option<Spanned<RawUpstream>>,
    pub admin: Option<RawAdmin>,
    pub license: Option<RawLicense>,
    pub tenants: Option<RawTenants>,
    pub paths: Option<RawPaths>,
    pub public: Option<RawPublic>,
    pub features: Option<Vec<Spanned<RawFeature>>>,
    pub pages: Option<RawPages>,
    pub quota: Option<RawQuota>,
    pub usage: Option<RawUsage>,
    pub odoo: Option<RawOdoo>,
    pub geoip: Option<RawGeoIp>,
    pub seats: Option<RawSeats>,
    pub authority: Option<Spanned<RawAuthority>>,
    pub log: Option<RawLog>,
    pub reload: Option<RawReload>,
}

/// Top-level keys accepted in the file, in documentation order.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "mode",
    "server",
    "upstream",
    "admin",
    "license",
    "tenants",
    "paths",
    "public",
    "features",
    "pages",
    "quota",
    "usage",
    "odoo",
    "geoip",
    "seats",
    "authority",
    "log",
    "reload",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "one of \"enforce\", \"shadow\", \"off\""
)]
pub enum RawMode {
    Enforce,
    Shadow,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [server]")]
pub struct RawServer {
    pub listen: Option<Spanned<OneOrMany>>,
    pub threads: Option<Spanned<i64>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub work_stealing: Option<bool>,
    pub header_timeout: Option<Spanned<String>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [upstream]")]
pub struct RawUpstream {
    pub address: Option<Spanned<String>>,
    pub tls: Option<bool>,
    pub sni: Option<Spanned<String>>,
    pub verify_cert: Option<bool>,
    pub ca_file: Option<Spanned<String>>,
    pub host_header: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub keepalive_pool_size: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [admin]")]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [license]")]
pub struct RawLicense {
    pub public_keys: Option<Spanned<Vec<Spanned<RawPublicKey>>>>,
    pub issuer: Option<Spanned<String>>,
    pub store_dir: Option<Spanned<String>>,
    pub instance_id: Option<Spanned<String>>,
    pub instance_key_file: Option<Spanned<String>>,
    pub expiry_warning_days: Option<Spanned<i64>>,
    pub grace_days: Option<Spanned<i64>>,
    pub read_only_days: Option<Spanned<i64>>,
    pub clock_leeway: Option<Spanned<String>>,
    pub scan_interval: Option<Spanned<String>>,
    pub clock_rollback_tolerance: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a key such as { path = \"keys/vendor.pub.pem\", alg = \"EdDSA\" }"
)]
pub struct RawPublicKey {
    pub path: Spanned<String>,
    pub alg: Option<Spanned<String>>,
    pub kid: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [tenants]")]
pub struct RawTenants {
    pub mode: Option<Spanned<String>>,
    pub default: Option<Spanned<String>>,
    pub host_pattern: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    pub jwt_claim: Option<Spanned<String>>,
    pub jwt_keys: Option<Spanned<Vec<Spanned<RawPublicKey>>>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [paths]")]
pub struct RawPaths {
    pub case_insensitive: Option<bool>,
    pub path_params: Option<Spanned<String>>,
    pub method_override: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [public]")]
pub struct RawPublic {
    pub paths: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[features]] entry such as { prefix = \"/api/manufacturing/\", feature = \"manufacturing_module\" } or { models = [\"mrp.*\"], feature = \"manufacturing_module\" }"
)]
pub struct RawFeature {
    pub prefix: Option<Spanned<String>>,
    pub models: Option<Vec<Spanned<String>>>,
    pub feature: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub mode: Option<Spanned<String>>,
    pub format_suffixes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [pages]")]
pub struct RawPages {
    pub after_activation: Option<Spanned<String>>,
    pub templates_dir: Option<Spanned<String>>,
    pub public_status: Option<bool>,
    pub flag_banner: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [quota]")]
pub struct RawQuota {
    pub backend: Option<Spanned<String>>,
    pub redis: Option<Spanned<RawRedis>>,
    pub per_client_share: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [usage]")]
pub struct RawUsage {
    pub enabled: Option<bool>,
    pub retention_days: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [geoip]")]
pub struct RawGeoIp {
    pub database: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [seats]")]
pub struct RawSeats {
    pub identity: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub active_window: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [odoo]")]
pub struct RawOdoo {
    pub enabled: Option<bool>,
    pub max_rpc_body: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [authority]")]
pub struct RawAuthority {
    pub url: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub grace_warning: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [quota.redis]")]
pub struct RawRedis {
    pub url: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub on_error: Option<Spanned<String>>,
    pub fleet_size: Option<Spanned<i64>>,
    pub breaker_failures: Option<Spanned<i64>>,
    pub breaker_cooldown: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [log]")]
pub struct RawLog {
    pub format: Option<RawLogFormat>,
    pub level: Option<Spanned<String>>,
    pub access: Option<bool>,
    pub access_file: Option<Spanned<String>>,
    pub access_overflow: Option<RawAccessOverflow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAccessOverflow {
    Drop,
    Block,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table [reload]")]
pub struct RawReload {
    pub watch: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Text,
    Json,
}

/// A string or a list of strings (`listen = "a"` or `listen = ["a", "b"]`).
/// A single string takes the span of the whole value.
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a list of address strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    all.push(item);
                }
                Ok(OneOrMany::Many(all))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}
