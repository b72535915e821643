//! Raw → validated configuration. Every raw struct is destructured exhaustively so a
//! new field cannot be silently ignored; every problem is collected, not just the first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{
    OneOrMany, RawAccessOverflow, RawAdmin, RawAuthority, RawConfig, RawFeature, RawLicense,
    RawLog, RawLogFormat, RawMode, RawOdoo, RawPages, RawPaths, RawPublic, RawPublicKey, RawQuota,
    RawRedis, RawSeats, RawServer, RawTenants, RawUpstream, RawUsage,
};
use super::{
    default_threads, AdminConfig, Config, Diagnostic, FeatureRule, HostPattern, InstanceIdSetting,
    LicenseConfig, LogConfig, LogFormat, Mode, PagesConfig, ServerConfig, TenantsConfig,
    UpstreamAddress, UpstreamConfig, UsageConfig,
};
use super::{
    AccessOverflow, AdminToken, OnRedisError, QuotaConfig, RedisConfig, RedisMode, ReloadConfig,
};
use super::{AuthorityLinkConfig, ModelPattern, ModelRule, OdooConfig, DEFAULT_MAX_RPC_BODY};
use super::{SeatIdentity, SeatsConfig, DEFAULT_SEAT_ACTIVE_WINDOW, DEFAULT_SEAT_IDLE_TIMEOUT};
use crate::license::{Algorithm, PublicKey, StatusPolicy};
use crate::policy::path::{MethodOverride, PathOptions, PathParams};

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
const MAX_THREADS: i64 = 1024;

impl TryFrom<RawConfig> for Config {
    type Error = Vec<Diagnostic>;

    fn try_from(raw: RawConfig) -> Result<Config, Vec<Diagnostic>> {
        let RawConfig {
            base_dir,
            failed_keys,
            mode,
            server,
            upstream,
            admin,
            license,
            tenants,
            paths,
            public,
            features,
            pages,
            quota,
            usage,
            odoo,
            geoip,
            seats,
            authority,
            log,
            reload,
        } = raw;
        let mut diags = Vec::new();
        let mode = match mode.unwrap_or(RawMode::Enforce) {
            RawMode::Enforce => Mode::Enforce,
            RawMode::Shadow => Mode::Shadow,
            RawMode::Off => Mode::Off,
        };
        let server = validate_server(server.unwrap_or_default(), &mut diags);
        let upstream = match upstream {
            Some(upstream) => validate_upstream(upstream, &base_dir, &failed_keys, &mut diags),
            None if failed_keys.iter().any(|k| k == "upstream") => None,
            None => {
                diags.push(Diagnostic::whole_file(
                    "missing section [upstream]: set upstream.address to the application's host:port",
                ));
                None
            }
        };
        let admin = validate_admin(admin.unwrap_or_default(), &base_dir, &mut diags);
        let license = license.map(|l| validate_license(l, &base_dir, &mut diags));
        let tenants = validate_tenants(tenants.unwrap_or_default(), &base_dir, &mut diags);
        let (mut paths, method_override) = validate_paths(paths.unwrap_or_default(), &mut diags);
        let public_paths = validate_public(public.unwrap_or_default(), &mut diags);
        let odoo = validate_odoo(odoo.unwrap_or_default(), &mut diags);
        let geoip = geoip
            .and_then(|g| g.database)
            .and_then(|path| validate_geoip(path, &base_dir, &mut diags));
        let authority =
            authority.and_then(|a| validate_authority(a, license.is_some(), &base_dir, &mut diags));
        let (features, model_rules) =
            validate_features(features.unwrap_or_default(), odoo.enabled, &mut diags);
        paths.method_override =
            method_override.unwrap_or(if crate::policy::decide::has_method_rules(&features) {
                MethodOverride::Reject
            } else {
                MethodOverride::Allow
            });
        let pages = validate_pages(pages.unwrap_or_default(), &base_dir, &mut diags);
        let (quota, per_client_share) = validate_quota(quota.unwrap_or_default(), &mut diags);
        let usage = validate_usage(usage.unwrap_or_default(), &mut diags);
        let log = validate_log(log.unwrap_or_default(), &base_dir, &mut diags);
        let seats = seats.and_then(|s| validate_seats(s, &server, &tenants, &mut diags));
        match (server, upstream, admin, tenants, log) {
            (Some(server), Some(upstream), Some(admin), Some(tenants), Some(log))
                if diags.is_empty() =>
            {
                Ok(Config {
                    source: PathBuf::new(),
                    mode,
                    server,
                    upstream,
                    admin,
                    license: license.flatten(),
                    tenants,
                    paths,
                    public_paths,
                    features,
                    model_rules,
                    pages,
                    quota,
                    per_client_share,
                    usage,
                    odoo,
                    geoip,
                    seats,
                    authority,
                    log,
                    reload: ReloadConfig {
                        watch: reload.and_then(|r| r.watch).unwrap_or(true),
                    },
                })
            }
            _ => Err(diags),
        }
    }
}

fn validate_server(raw: RawServer, diags: &mut Vec<Diagnostic>) -> Option<ServerConfig> {
    let RawServer {
        listen,
        threads,
        trusted_proxies,
        shutdown_timeout,
        work_stealing,
        header_timeout,
        max_header_bytes,
        max_connections,
        max_connections_per_ip,
    } = raw;
    let start = diags.len();
    let listen = match listen {
        None => vec![DEFAULT_LISTEN
            .parse()
            .expect("default listen address parses")],
        Some(spanned) => {
            let whole = spanned.span();
            let addrs = match spanned.into_inner() {
                OneOrMany::One(one) => vec![Spanned::new(whole.clone(), one)],
                OneOrMany::Many(many) => many,
            };
            if addrs.is_empty() {
                diags.push(Diagnostic::at(
                    whole,
                    "server.listen is empty: give at least one address such as \"0.0.0.0:8080\"",
                ));
            }
            let mut parsed: Vec<SocketAddr> = Vec::new();
            for addr in addrs {
                if let Some(a) = socket_addr(&addr, "server.listen", diags) {
                    if parsed.contains(&a) {
                        diags.push(Diagnostic::at(
                            addr.span(),
                            format!("server.listen names {a} twice"),
                        ));
                    } else {
                        parsed.push(a);
                    }
                }
            }
            parsed
        }
    };
    let threads = match threads {
        None => default_threads(),
        Some(t) if (1..=MAX_THREADS).contains(t.get_ref()) => *t.get_ref() as usize,
        Some(t) => {
            diags.push(Diagnostic::at(
                t.span(),
                format!(
                    "server.threads must be between 1 and {MAX_THREADS}, got {}",
                    t.get_ref()
                ),
            ));
            0
        }
    };
    let trusted_proxies = trusted_proxies
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| ip_net(&p, diags))
        .collect();
    let shutdown_timeout = duration(
        shutdown_timeout,
        "server.shutdown_timeout",
        Duration::from_secs(30),
        diags,
    );
    let header_timeout = duration(
        header_timeout,
        "server.header_timeout",
        DEFAULT_HEADER_TIMEOUT,
        diags,
    );
    let max_header_bytes = bounded_int(
        max_header_bytes,
        "server.max_header_bytes",
        DEFAULT_MAX_HEADER_BYTES,
        1024..=MAX_HEADER_BYTES,
        diags,
    );
    let max_connections = bounded_int(
        max_connections,
        "server.max_connections",
        DEFAULT_MAX_CONNECTIONS,
        1..=10_000_000,
        diags,
    );
    let max_connections_per_ip = bounded_int(
        max_connections_per_ip,
        "server.max_connections_per_ip",
        DEFAULT_MAX_CONNECTIONS_PER_IP,
        0..=10_000_000,
        diags,
    );
    (diags.len() == start).then_some(ServerConfig {
        listen,
        threads,
        trusted_proxies,
        shutdown_timeout,
        work_stealing: work_stealing.unwrap_or(false),
        header_timeout,
        max_header_bytes,
        max_connections,
        max_connections_per_ip: (max_connections_per_ip > 0).then_some(max_connections_per_ip),
    })
}

fn validate_upstream(
    raw: Spanned<RawUpstream>,
    base_dir: &Path,
    failed_keys: &[String],
    diags: &mut Vec<Diagnostic>,
) -> Option<UpstreamConfig> {
    let section_span = raw.span();
    let RawUpstream {
        address,
        tls,
        sni,
        verify_cert,
        ca_file,
        host_header,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        keepalive_pool_size,
    } = raw.into_inner();
    let start = diags.len();
    let address = match address {
        None if failed_keys.iter().any(|k| k == "upstream.address") => None,
        None => {
            diags.push(Diagnostic::at(
                section_span,
                "upstream.address is required: the application's host:port, e.g. \"127.0.0.1:8000\"",
            ));
            None
        }
        Some(a) => upstream_address(&a, diags),
    };
    let tls = tls.unwrap_or(false);
    let ca_file = ca_file.and_then(|f| ca_bundle(&f, "upstream.ca_file", base_dir, diags));
    let sni = match sni {
        Some(s) if s.get_ref().is_empty() || s.get_ref().contains(char::is_whitespace) => {
            diags.push(Diagnostic::at(
                s.span(),
                "upstream.sni must be a host name without spaces",
            ));
            None
        }
        Some(s) => Some(s.into_inner()),
        None => None,
    };
    let host_header = match host_header {
        Some(h) if !is_valid_host_header(h.get_ref()) => {
            diags.push(Diagnostic::at(
                h.span(),
                "upstream.host_header must be a host or host:port (letters, digits, '.', '-', ':', '[', ']')",
            ));
            None
        }
        Some(h) => Some(h.into_inner()),
        None => None,
    };
    let [connect_timeout, read_timeout, write_timeout, idle_timeout] = [
        (connect_timeout, "upstream.connect_timeout", 5),
        (read_timeout, "upstream.read_timeout", 60),
        (write_timeout, "upstream.write_timeout", 60),
        (idle_timeout, "upstream.idle_timeout", 60),
    ]
    .map(|(raw, key, default_secs)| duration(raw, key, Duration::from_secs(default_secs), diags));
    let keepalive_pool_size = match keepalive_pool_size {
        None => 128,
        Some(n) if (0..=100_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            diags.push(Diagnostic::at(
                n.span(),
                "upstream.keepalive_pool_size must be between 0 and 100000",
            ));
            0
        }
    };
    let address = address?;
    (diags.len() == start).then(|| UpstreamConfig {
        sni: sni.unwrap_or_else(|| address.host.clone()),
        address,
        tls,
        verify_cert: verify_cert.unwrap_or(true),
        ca_file,
        host_header,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        keepalive_pool_size,
    })
}

fn validate_license(
    raw: RawLicense,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<LicenseConfig> {
    let RawLicense {
        public_keys,
        issuer,
        store_dir,
        instance_id,
        instance_key_file,
        expiry_warning_days,
        grace_days,
        read_only_days,
        clock_leeway,
        scan_interval,
        clock_rollback_tolerance,
    } = raw;
    let start = diags.len();
    let mut keys: Vec<PublicKey> = Vec::new();
    match public_keys {
        None => diags.push(Diagnostic::whole_file(
            "license.public_keys is required in [license]: the vendor's public key(s), e.g. [{ path = \"keys/vendor.pub.pem\", alg = \"EdDSA\" }]",
        )),
        Some(list) if list.get_ref().is_empty() => diags.push(Diagnostic::at(
            list.span(),
            "license.public_keys is empty: no license could ever be verified",
        )),
        Some(list) => {
            for (i, key) in list.into_inner().into_iter().enumerate() {
                if let Some(key) = public_key("license.public_keys", i, key, base_dir, diags) {
                    if let Some(kid) = &key.kid {
                        if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) {
                            diags.push(Diagnostic::whole_file(format!(
                                "license.public_keys[{i}]: kid \"{kid}\" is used by another key"
                            )));
                        }
                    }
                    keys.push(key);
                }
            }
        }
    }
    let store_dir = match store_dir {
        None => PathBuf::from("/var/lib/licgate"),
        Some(d) => {
            let path = base_dir.join(d.get_ref());
            if path.exists() && !path.is_dir() {
                diags.push(Diagnostic::at(
                    d.span(),
                    format!(
                        "license.store_dir: {} exists and is not a directory",
                        path.display()
                    ),
                ));
            }
            path
        }
    };
    let instance_id = match instance_id {
        None => InstanceIdSetting::Auto,
        Some(id) if id.get_ref() == "auto" => InstanceIdSetting::Auto,
        Some(id) if id.get_ref().trim().is_empty() || id.get_ref().len() > 200 => {
            diags.push(Diagnostic::at(
                id.span(),
                "license.instance_id must be \"auto\" or a non-empty id of at most 200 characters",
            ));
            InstanceIdSetting::Auto
        }
        Some(id) => InstanceIdSetting::Fixed(id.into_inner()),
    };
    let defaults = StatusPolicy::default();
    let mut days = |raw: Option<Spanned<i64>>, key: &str, default: u32| match raw {
        None => default,
        Some(d) if (0..=3650).contains(d.get_ref()) => *d.get_ref() as u32,
        Some(d) => {
            diags.push(Diagnostic::at(
                d.span(),
                format!(
                    "{key} must be a number of days between 0 and 3650, got {}",
                    d.get_ref()
                ),
            ));
            default
        }
    };
    let policy = StatusPolicy {
        expiry_warning_days: days(
            expiry_warning_days,
            "license.expiry_warning_days",
            defaults.expiry_warning_days,
        ),
        grace_days: days(grace_days, "license.grace_days", defaults.grace_days),
        read_only_days: days(
            read_only_days,
            "license.read_only_days",
            defaults.read_only_days,
        ),
    };
    let clock_leeway = duration_or_zero(
        clock_leeway,
        "license.clock_leeway",
        Duration::from_secs(60),
        diags,
    );
    let scan_interval = duration(
        scan_interval,
        "license.scan_interval",
        Duration::from_secs(5),
        diags,
    );
    let clock_rollback_tolerance = duration_or_zero(
        clock_rollback_tolerance,
        "license.clock_rollback_tolerance",
        Duration::from_secs(600),
        diags,
    );
    let instance_key_file = match instance_key_file {
        None => store_dir.join(crate::license::instance_key::FILE),
        Some(path) if path.get_ref().trim().is_empty() => {
            diags.push(Diagnostic::at(
                path.span(),
                "license.instance_key_file must be a path",
            ));
            PathBuf::new()
        }
        Some(path) => base_dir.join(path.get_ref()),
    };
    (diags.len() == start).then(|| LicenseConfig {
        instance_key_file,
        public_keys: keys,
        issuer: issuer.map(Spanned::into_inner),
        store_dir,
        instance_id,
        policy,
        clock_leeway,
        scan_interval,
        clock_rollback_tolerance,
    })
}

/// Loads entry `i` of the key list `list` (path relative to the config file).
fn public_key(
    list: &str,
    i: usize,
    raw: Spanned<RawPublicKey>,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<PublicKey> {
    let RawPublicKey { path, alg, kid } = raw.into_inner();
    let alg = match alg {
        None => Algorithm::EdDSA,
        Some(a) => match Algorithm::from_name(a.get_ref()) {
            Some(alg) => alg,
            None => {
                diags.push(Diagnostic::at(
                    a.span(),
                    format!(
                        "{list}[{i}].alg: `{}` is not accepted: use \"EdDSA\", \"ES256\" or \"RS256\"",
                        a.get_ref()
                    ),
                ));
                return None;
            }
        },
    };
    let file = base_dir.join(path.get_ref());
    match PublicKey::load(&file, alg, kid.map(Spanned::into_inner)) {
        Ok(key) => Some(key),
        Err(e) => {
            diags.push(Diagnostic::at(
                path.span(),
                format!("{list}[{i}].path: {e}"),
            ));
            None
        }
    }
}

fn validate_tenants(
    raw: RawTenants,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<TenantsConfig> {
    let RawTenants {
        mode,
        default,
        host_pattern,
        header,
        jwt_claim,
        jwt_keys,
        jwt_issuer,
        jwt_audience,
    } = raw;
    let mode_name = mode
        .as_ref()
        .map(|m| m.get_ref().as_str())
        .unwrap_or("single");
    let mode_span = mode.as_ref().map(|m| m.span());
    let missing = |key: &str, example: &str, diags: &mut Vec<Diagnostic>| {
        let message =
            format!("tenants.mode = \"{mode_name}\" needs tenants.{key}, e.g. {key} = {example}");
        diags.push(match &mode_span {
            Some(span) => Diagnostic::at(span.clone(), message),
            None => Diagnostic::whole_file(message),
        });
        None
    };
    match mode_name {
        "single" => {
            let tenant = match default {
                Some(t) if crate::policy::tenant::is_tenant_name(t.get_ref()) => t.into_inner(),
                Some(t) => {
                    diags.push(Diagnostic::at(
                        t.span(),
                        "tenants.default must be 1-63 letters, digits, '-', '_' or '.'",
                    ));
                    return None;
                }
                None => "default".to_string(),
            };
            Some(TenantsConfig::Single { tenant })
        }
        "host" => {
            let Some(pattern) = host_pattern else {
                return missing("host_pattern", "\"{tenant}.example.com\"", diags);
            };
            match pattern.get_ref().split_once("{tenant}") {
                Some((prefix, suffix))
                    if !suffix.contains("{tenant}")
                        && (prefix.is_empty() || prefix.ends_with('.'))
                        && (suffix.is_empty() || suffix.starts_with('.'))
                        && !pattern.get_ref().contains(':') =>
                {
                    Some(TenantsConfig::Host {
                        pattern: HostPattern {
                            prefix: prefix.to_ascii_lowercase(),
                            suffix: suffix.to_ascii_lowercase(),
                        },
                    })
                }
                _ => {
                    diags.push(Diagnostic::at(
                        pattern.span(),
                        "tenants.host_pattern must contain {tenant} once, as a whole DNS label, e.g. \"{tenant}.example.com\" (no port)",
                    ));
                    None
                }
            }
        }
        "header" => {
            let Some(name) = header else {
                return missing("header", "\"X-Tenant\"", diags);
            };
            match http::HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(h) if !h.as_str().starts_with("x-licgate-") => {
                    Some(TenantsConfig::Header { name: h })
                }
                _ => {
                    diags.push(Diagnostic::at(
                        name.span(),
                        "tenants.header must be a header name (not X-Licgate-*), e.g. \"X-Tenant\"",
                    ));
                    None
                }
            }
        }
        "jwt_claim" => {
            let claim = jwt_claim
                .map(Spanned::into_inner)
                .unwrap_or_else(|| "tenant".to_string());
            let Some(list) = jwt_keys else {
                return missing(
                    "jwt_keys",
                    "[{ path = \"keys/idp.pub.pem\", alg = \"RS256\" }]",
                    diags,
                );
            };
            if list.get_ref().is_empty() {
                diags.push(Diagnostic::at(list.span(), "tenants.jwt_keys is empty"));
                return None;
            }
            let start = diags.len();
            let keys: Vec<_> = list
                .into_inner()
                .into_iter()
                .enumerate()
                .filter_map(|(i, k)| public_key("tenants.jwt_keys", i, k, base_dir, diags))
                .collect();
            (diags.len() == start).then_some(TenantsConfig::JwtClaim {
                claim,
                keys,
                issuer: jwt_issuer,
                audience: jwt_audience,
            })
        }
        other => {
            diags.push(Diagnostic::at(
                mode_span.unwrap_or(0..0),
                format!("tenants.mode: unknown mode `{other}`, expected one of `single`, `host`, `header`, `jwt_claim`"),
            ));
            None
        }
    }
}

/// `[paths]`, and `method_override` when set (its default depends on the feature map).
fn validate_paths(
    raw: RawPaths,
    diags: &mut Vec<Diagnostic>,
) -> (PathOptions, Option<MethodOverride>) {
    let RawPaths {
        case_insensitive,
        path_params,
        method_override,
    } = raw;
    let method_override = method_override.and_then(|m| match m.get_ref().as_str() {
        "reject" => Some(MethodOverride::Reject),
        "allow" => Some(MethodOverride::Allow),
        other => {
            diags.push(Diagnostic::at(
                m.span(),
                format!(
                    "paths.method_override: unknown value `{other}`, expected `reject` or `allow`"
                ),
            ));
            None
        }
    });
    let path_params = match path_params {
        None => PathParams::Reject,
        Some(p) => {
            match p.get_ref().as_str() {
                "reject" => PathParams::Reject,
                "strip" => PathParams::Strip,
                other => {
                    diags.push(Diagnostic::at(
                    p.span(),
                    format!("paths.path_params: unknown value `{other}`, expected `reject` or `strip`"),
                ));
                    PathParams::Reject
                }
            }
        }
    };
    let options = PathOptions {
        path_params,
        case_insensitive: case_insensitive.unwrap_or(false),
        method_override: MethodOverride::default(),
    };
    (options, method_override)
}

/// A configured prefix: an already-normal absolute path outside `/_licgate/`.
fn prefix(raw: &Spanned<String>, key: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let text = raw.get_ref();
    let normal = match crate::policy::path::normalize(text.as_bytes(), &PathOptions::default()) {
        Ok(crate::policy::path::Target::Path(p)) => {
            p.query.is_none() && p.authority.is_none() && p.path == text.as_str()
        }
        _ => false,
    };
    let problem = if !normal {
        Some("must be a normalized path starting with / (no .., //, %, ; or ?)")
    } else if text == "/_licgate" || text.starts_with("/_licgate/") {
        Some("is reserved for the gateway's own pages")
    } else {
        None
    };
    match problem {
        Some(p) => {
            diags.push(Diagnostic::at(raw.span(), format!("{key}: `{text}` {p}")));
            None
        }
        None => Some(text.clone()),
    }
}

fn validate_public(raw: RawPublic, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let RawPublic { paths } = raw;
    paths
        .unwrap_or_default()
        .iter()
        .filter_map(|p| prefix(p, "public.paths", diags))
        .collect()
}

/// The feature map: path rules and, for Odoo, model rules (which need `[odoo]
/// enabled`).
fn validate_features(
    raw: Vec<Spanned<RawFeature>>,
    odoo_enabled: bool,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<FeatureRule>, Vec<ModelRule>) {
    let mut rules = Vec::with_capacity(raw.len());
    let mut model_rules = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let entry_span = entry.span();
        let RawFeature {
            prefix: raw_prefix,
            models,
            feature,
            methods,
            mode,
            format_suffixes,
        } = entry.into_inner();
        let key = format!("features[{i}]");
        if raw_prefix.is_none() && models.is_none() {
            diags.push(Diagnostic::at(
                entry_span.clone(),
                format!("{key} needs a prefix (a path) or models (Odoo models), or both"),
            ));
        }
        if let (Some(_), Some(_), Some(m)) = (&raw_prefix, &models, &methods) {
            let span = m.first().map_or(entry_span.clone(), |m| m.span());
            diags.push(Diagnostic::at(
                span,
                format!(
                    "{key}.methods is ambiguous with both prefix and models (HTTP methods or RPC methods?): split the entry in two"
                ),
            ));
        }
        if let (None, Some(_)) = (&raw_prefix, format_suffixes) {
            diags.push(Diagnostic::at(
                entry_span.clone(),
                format!("{key}.format_suffixes applies to a prefix, and this entry has none"),
            ));
        }
        let prefix = raw_prefix
            .as_ref()
            .and_then(|p| prefix(p, &format!("{key}.prefix"), diags));
        let name_ok = !feature.get_ref().is_empty()
            && feature.get_ref().len() <= 128
            && feature
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !name_ok {
            diags.push(Diagnostic::at(
                feature.span(),
                format!("{key}.feature must be a name of letters, digits, '_', '-', '.', ':'"),
            ));
        }
        let shadow = match mode {
            None => false,
            Some(m) => match m.get_ref().as_str() {
                "enforce" => false,
                "shadow" => true,
                other => {
                    diags.push(Diagnostic::at(
                        m.span(),
                        format!(
                            "{key}.mode: unknown value `{other}`, expected `enforce` or `shadow`"
                        ),
                    ));
                    false
                }
            },
        };
        let feature: Arc<str> = feature.into_inner().into();
        let http_methods = raw_prefix.is_some() && models.is_none();
        if let Some(models) = models {
            if !odoo_enabled {
                let span = models.first().map_or(entry_span.clone(), |m| m.span());
                diags.push(Diagnostic::at(
                    span,
                    format!("{key}.models: model rules need the RPC inspection: set [odoo] enabled = true"),
                ));
            }
            if models.is_empty() {
                diags.push(Diagnostic::at(
                    entry_span.clone(),
                    format!(
                        "{key}.models is empty: name models such as \"mrp.*\" or \"quality.check\""
                    ),
                ));
            }
            let rpc_methods = methods.as_ref().filter(|_| raw_prefix.is_none()).map(|list| {
                list.iter()
                    .filter_map(|m| {
                        let name = m.get_ref();
                        let ok = name.len() <= 128
                            && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                        if ok {
                            Some(name.clone())
                        } else {
                            diags.push(Diagnostic::at(
                                m.span(),
                                format!("{key}.methods: `{name}` is not an RPC method name such as \"write\""),
                            ));
                            None
                        }
                    })
                    .collect::<Vec<_>>()
            });
            for model in &models {
                match ModelPattern::parse(model.get_ref()) {
                    Some(pattern) => model_rules.push(ModelRule {
                        pattern,
                        feature: Arc::clone(&feature),
                        methods: rpc_methods.clone(),
                        shadow,
                    }),
                    None => diags.push(Diagnostic::at(
                        model.span(),
                        format!(
                            "{key}.models: `{}` is not a model pattern such as \"mrp.*\" or \"quality.check\"",
                            model.get_ref()
                        ),
                    )),
                }
            }
        }
        let methods = methods.filter(|_| http_methods).map(|list| {
            list.iter()
                .filter_map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => Some(method),
                        _ => {
                            diags.push(Diagnostic::at(
                                m.span(),
                                format!("{key}.methods: `{}` is not an HTTP method", m.get_ref()),
                            ));
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        if let (Some(prefix), true) = (prefix, name_ok) {
            rules.push(FeatureRule {
                prefix,
                feature,
                methods,
                shadow,
                format_suffixes: format_suffixes.unwrap_or(true),
            });
        }
    }
    (rules, model_rules)
}

/// `[authority]` (`licensed`: whether there is a `[license]` section to install into).
fn validate_authority(
    raw: Spanned<RawAuthority>,
    licensed: bool,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<AuthorityLinkConfig> {
    let section = raw.span();
    let RawAuthority {
        url,
        ca_file,
        timeout,
        grace_warning,
    } = raw.into_inner();
    let start = diags.len();
    if !licensed {
        diags.push(Diagnostic::at(
            section.clone(),
            "[authority] needs a [license] section: the licenses it issues are kept in license.store_dir and verified with license.public_keys",
        ));
    }
    let url = match url {
        None => {
            diags.push(Diagnostic::at(
                section,
                "authority.url is required: the license server's address, e.g. \"https://licenses.example.com\"",
            ));
            None
        }
        Some(raw_url) => match authority_url(raw_url.get_ref()) {
            Ok(parsed) => Some((parsed, raw_url.span())),
            Err(problem) => {
                diags.push(Diagnostic::at(
                    raw_url.span(),
                    format!("authority.url: {problem}"),
                ));
                None
            }
        },
    };
    let ca_file = ca_file.and_then(|f| ca_bundle(&f, "authority.ca_file", base_dir, diags));
    let timeout = duration(timeout, "authority.timeout", Duration::from_secs(10), diags);
    let grace_warning = duration_or_zero(
        grace_warning,
        "authority.grace_warning",
        Duration::from_secs(7 * 86_400),
        diags,
    );
    let (url, url_span) = url?;
    (diags.len() == start).then_some(AuthorityLinkConfig {
        url,
        url_span,
        ca_file,
        timeout,
        grace_warning,
    })
}

/// The authority's base URL: http or https, a host, no credentials, query or fragment.
fn authority_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        format!("`{text}` is not a URL ({e}): expected e.g. \"https://licenses.example.com\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}`: the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{text}` carries credentials: the authority's gateway API needs none"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or a fragment"));
    }
    Ok(url)
}

/// `[odoo]`.
fn validate_odoo(raw: RawOdoo, diags: &mut Vec<Diagnostic>) -> OdooConfig {
    let RawOdoo {
        enabled,
        max_rpc_body,
    } = raw;
    OdooConfig {
        enabled: enabled.unwrap_or(false),
        max_rpc_body: bounded_int(
            max_rpc_body,
            "odoo.max_rpc_body",
            DEFAULT_MAX_RPC_BODY,
            1024..=128 * 1024 * 1024,
            diags,
        ),
    }
}

fn validate_pages(raw: RawPages, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> PagesConfig {
    let RawPages {
        after_activation,
        templates_dir,
        public_status,
        flag_banner,
    } = raw;
    let after_activation = match after_activation {
        None => "/".to_string(),
        Some(a) if crate::policy::is_local_path(a.get_ref()) => a.into_inner(),
        Some(a) => {
            diags.push(Diagnostic::at(
                a.span(),
                "pages.after_activation must be a path on this site such as \"/accounts/login/\"",
            ));
            "/".to_string()
        }
    };
    let templates_dir = templates_dir.and_then(|d| {
        let path = base_dir.join(d.get_ref());
        if path.is_dir() {
            Some(path)
        } else {
            diags.push(Diagnostic::at(
                d.span(),
                format!("pages.templates_dir: {} is not a directory", path.display()),
            ));
            None
        }
    });
    PagesConfig {
        after_activation,
        templates_dir,
        public_status: public_status.unwrap_or(false),
        flag_banner: flag_banner.unwrap_or(false),
    }
}

/// `[geoip] database`: a MaxMind-format file (relative to the config file), opened
/// to be sure it is one.
fn validate_geoip(
    path: Spanned<String>,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<std::sync::Arc<crate::restrictions::GeoIp>> {
    let file = base_dir.join(path.get_ref());
    match crate::restrictions::GeoIp::open(&file) {
        Ok(db) => Some(std::sync::Arc::new(db)),
        Err(problem) => {
            diags.push(Diagnostic::at(
                path.span(),
                format!("geoip.database: {problem}"),
            ));
            None
        }
    }
}

/// `[seats]`: `identity` is required; a `jwt:` identity needs `tenants.mode =
/// "jwt_claim"` (whose keys verify the token), a `header:` identity needs
/// `server.trusted_proxies` (only they may send it).
fn validate_seats(
    raw: RawSeats,
    server: &Option<ServerConfig>,
    tenants: &Option<TenantsConfig>,
    diags: &mut Vec<Diagnostic>,
) -> Option<SeatsConfig> {
    let RawSeats {
        identity,
        idle_timeout,
        active_window,
    } = raw;
    let start = diags.len();
    let idle_timeout = duration(
        idle_timeout,
        "seats.idle_timeout",
        DEFAULT_SEAT_IDLE_TIMEOUT,
        diags,
    );
    let window_span = active_window.as_ref().map(|w| w.span());
    let active_window = duration(
        active_window,
        "seats.active_window",
        DEFAULT_SEAT_ACTIVE_WINDOW,
        diags,
    );
    if active_window < idle_timeout {
        let message = "seats.active_window must be at least seats.idle_timeout";
        diags.push(match window_span {
            Some(span) => Diagnostic::at(span, message),
            None => Diagnostic::whole_file(message),
        });
    }
    let Some(identity) = identity else {
        diags.push(Diagnostic::whole_file(
            "[seats] needs seats.identity, e.g. identity = \"cookie:sessionid\" (or \"jwt:sub\", \"header:X-Remote-User\")",
        ));
        return None;
    };
    let span = identity.span();
    let (kind, name) = identity
        .get_ref()
        .split_once(':')
        .map_or((identity.get_ref().as_str(), ""), |(k, n)| (k, n.trim()));
    let parsed = match kind {
        "cookie" if !name.is_empty() && name.bytes().all(is_cookie_name_byte) => {
            Ok(SeatIdentity::Cookie(name.to_string()))
        }
        "cookie" => Err("seats.identity: `cookie:` needs a cookie name, e.g. \"cookie:sessionid\"".to_string()),
        "jwt" if name.is_empty() => {
            Err("seats.identity: `jwt:` needs a claim name, e.g. \"jwt:sub\"".to_string())
        }
        "jwt" if !matches!(tenants, Some(TenantsConfig::JwtClaim { .. }) | None) => Err(
            "seats.identity = \"jwt:…\" needs tenants.mode = \"jwt_claim\" (its tenants.jwt_keys verify the token)".to_string(),
        ),
        "jwt" => Ok(SeatIdentity::Jwt(name.to_string())),
        "header" => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if h.as_str().starts_with("x-licgate-") => {
                Err("seats.identity: the header cannot be an X-Licgate-* header".to_string())
            }
            Ok(_)
                if server
                    .as_ref()
                    .is_some_and(|s| s.trusted_proxies.is_empty()) =>
            {
                Err("seats.identity = \"header:…\" needs server.trusted_proxies: only a trusted proxy may say who the user is".to_string())
            }
            Ok(h) => Ok(SeatIdentity::Header(h)),
            Err(_) => Err("seats.identity: `header:` needs a header name, e.g. \"header:X-Remote-User\"".to_string()),
        },
        other => Err(format!(
            "seats.identity: unknown source `{other}`, expected \"cookie:NAME\", \"jwt:CLAIM\" or \"header:NAME\""
        )),
    };
    match parsed {
        Ok(identity) if diags.len() == start => Some(SeatsConfig {
            identity,
            idle_timeout,
            active_window,
        }),
        Ok(_) => None,
        Err(message) => {
            diags.push(Diagnostic::at(span, message));
            None
        }
    }
}

/// A byte of a cookie name (an RFC 6265 token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

fn validate_usage(raw: RawUsage, diags: &mut Vec<Diagnostic>) -> UsageConfig {
    let RawUsage {
        enabled,
        retention_days,
    } = raw;
    let mut usage = UsageConfig {
        enabled: enabled.unwrap_or(true),
        ..UsageConfig::default()
    };
    if let Some(days) = retention_days {
        match u32::try_from(*days.get_ref()) {
            Ok(n) if (1..=3660).contains(&n) => usage.retention_days = n,
            _ => diags.push(Diagnostic::at(
                days.span(),
                format!(
                    "usage.retention_days must be a number of days between 1 and 3660, got {}",
                    days.get_ref()
                ),
            )),
        }
    }
    usage
}

fn validate_quota(raw: RawQuota, diags: &mut Vec<Diagnostic>) -> (QuotaConfig, Option<f64>) {
    let RawQuota {
        backend,
        redis,
        per_client_share,
    } = raw;
    let share = per_client_share.and_then(|s| {
        let value = *s.get_ref();
        if value > 0.0 && value <= 1.0 {
            Some(value)
        } else {
            diags.push(Diagnostic::at(
                s.span(),
                format!("quota.per_client_share must be more than 0 and at most 1, got {value}"),
            ));
            None
        }
    });
    (validate_backend(backend, redis, diags), share)
}

fn validate_backend(
    backend: Option<Spanned<String>>,
    redis: Option<Spanned<RawRedis>>,
    diags: &mut Vec<Diagnostic>,
) -> QuotaConfig {
    // [quota.redis] is checked whenever present, so its mistakes show up at once.
    let redis = validate_redis(redis.map(Spanned::into_inner).unwrap_or_default(), diags);
    match backend
        .as_ref()
        .map(|b| b.get_ref().as_str())
        .unwrap_or("local")
    {
        "local" => QuotaConfig::Local,
        "redis" => QuotaConfig::Redis(redis),
        other => {
            diags.push(Diagnostic::at(
                backend.as_ref().map(|b| b.span()).unwrap_or(0..0),
                format!("quota.backend: unknown backend `{other}`, expected `local` or `redis`"),
            ));
            QuotaConfig::Local
        }
    }
}

fn validate_redis(raw: RawRedis, diags: &mut Vec<Diagnostic>) -> RedisConfig {
    let RawRedis {
        url,
        key_prefix,
        timeout,
        on_error,
        fleet_size,
        breaker_failures,
        breaker_cooldown,
        mode,
    } = raw;
    let mode = match mode {
        None => RedisMode::Slice,
        Some(m) => {
            match m.get_ref().as_str() {
                "slice" => RedisMode::Slice,
                "exact" => RedisMode::Exact,
                other => {
                    diags.push(Diagnostic::at(
                    m.span(),
                    format!("quota.redis.mode: unknown value `{other}`, expected `slice` or `exact`"),
                ));
                    RedisMode::Slice
                }
            }
        }
    };
    let url = match url {
        None => "redis://127.0.0.1:6379".to_string(),
        Some(u) if u.get_ref().starts_with("redis://") || u.get_ref().starts_with("rediss://") => {
            u.into_inner()
        }
        Some(u) => {
            diags.push(Diagnostic::at(
                u.span(),
                "quota.redis.url must be a redis:// or rediss:// URL",
            ));
            String::new()
        }
    };
    let on_error = match on_error {
        None => OnRedisError::Local,
        Some(o) => match o.get_ref().as_str() {
            "local" => OnRedisError::Local,
            "allow" => OnRedisError::Allow,
            "deny" => OnRedisError::Deny,
            other => {
                diags.push(Diagnostic::at(
                    o.span(),
                    format!("quota.redis.on_error: unknown value `{other}`, expected `local`, `allow` or `deny`"),
                ));
                OnRedisError::Local
            }
        },
    };
    let mut count = |raw: Option<Spanned<i64>>, key: &str, default: u32| match raw {
        None => default,
        Some(n) if (1..=10_000).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            diags.push(Diagnostic::at(
                n.span(),
                format!("{key} must be between 1 and 10000"),
            ));
            default
        }
    };
    let fleet_size = count(fleet_size, "quota.redis.fleet_size", 1);
    let breaker_failures = count(breaker_failures, "quota.redis.breaker_failures", 3);
    RedisConfig {
        url,
        key_prefix: key_prefix
            .map(Spanned::into_inner)
            .unwrap_or_else(|| "licgate:".into()),
        timeout: duration(
            timeout,
            "quota.redis.timeout",
            Duration::from_millis(25),
            diags,
        ),
        on_error,
        fleet_size,
        breaker_failures,
        breaker_cooldown: duration(
            breaker_cooldown,
            "quota.redis.breaker_cooldown",
            Duration::from_secs(2),
            diags,
        ),
        mode,
    }
}

fn validate_admin(
    raw: RawAdmin,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<AdminConfig> {
    let RawAdmin { listen, token_file } = raw;
    let start = diags.len();
    let token = token_file.and_then(|file| admin_token(&file, base_dir, diags));
    let listen = match listen {
        None => Some(
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("default admin address parses"),
        ),
        Some(l) => socket_addr(&l, "admin.listen", diags),
    };
    (diags.len() == start).then_some(AdminConfig {
        listen: listen?,
        token,
    })
}

/// Reads the admin token from `file`: trimmed, at least [`AdminToken::MIN_LEN`]
/// visible ASCII characters (it travels in an `Authorization` header).
pub(crate) fn admin_token(
    file: &Spanned<String>,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<AdminToken> {
    let path = base_dir.join(file.get_ref());
    let mut fail = |message: String| {
        diags.push(Diagnostic::at(
            file.span(),
            format!("admin.token_file: {}: {message}", path.display()),
        ))
    };
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            fail(format!("cannot read the token ({e})"));
            return None;
        }
    };
    let token = text.trim_ascii();
    if token.len() < AdminToken::MIN_LEN {
        fail(format!(
            "the token has {} characters; use at least {} random ones (e.g. `openssl rand -hex 32`)",
            token.len(),
            AdminToken::MIN_LEN
        ));
        return None;
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        fail("the token must be visible ASCII characters without spaces".into());
        return None;
    }
    Some(AdminToken::new(token))
}

fn validate_log(raw: RawLog, base_dir: &Path, diags: &mut Vec<Diagnostic>) -> Option<LogConfig> {
    let RawLog {
        format,
        level,
        access,
        access_file,
        access_overflow,
    } = raw;
    let access_file = match access_file {
        None => None,
        Some(f) => {
            let path = base_dir.join(f.get_ref());
            let parent_ok = path
                .parent()
                .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir());
            if path.is_dir() {
                diags.push(Diagnostic::at(
                    f.span(),
                    format!("log.access_file: {} is a directory", path.display()),
                ));
                return None;
            }
            if !parent_ok {
                diags.push(Diagnostic::at(
                    f.span(),
                    format!(
                        "log.access_file: the directory of {} does not exist",
                        path.display()
                    ),
                ));
                return None;
            }
            Some(path)
        }
    };
    let access_overflow = match access_overflow.unwrap_or(RawAccessOverflow::Drop) {
        RawAccessOverflow::Drop => AccessOverflow::Drop,
        RawAccessOverflow::Block => AccessOverflow::Block,
    };
    let format = match format.unwrap_or(RawLogFormat::Text) {
        RawLogFormat::Text => LogFormat::Text,
        RawLogFormat::Json => LogFormat::Json,
    };
    let level = match level {
        None => "info".to_string(),
        Some(l) => match tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
            Ok(_) => l.into_inner(),
            Err(e) => {
                diags.push(Diagnostic::at(
                    l.span(),
                    format!(
                        "log.level is not a valid filter ({e}): use a level such as \"info\" or directives such as \"licgate=debug,pingora=warn\""
                    ),
                ));
                return None;
            }
        },
    };
    Some(LogConfig {
        format,
        level,
        access: access.unwrap_or(true),
        access_file,
        access_overflow,
    })
}

pub(crate) fn socket_addr(
    raw: &Spanned<String>,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<SocketAddr> {
    match raw.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diags.push(Diagnostic::at(
                raw.span(),
                format!(
                    "{key}: `{}` is not a valid address: expected IP:port such as \"0.0.0.0:8080\" or \"[::1]:8080\"",
                    raw.get_ref()
                ),
            ));
            None
        }
    }
}

fn upstream_address(raw: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> Option<UpstreamAddress> {
    let parsed = parse_host_port(raw.get_ref());
    if parsed.is_none() {
        diags.push(Diagnostic::at(
            raw.span(),
            format!(
                "upstream.address: `{}` is not a valid address: expected host:port such as \"127.0.0.1:8000\", \"app.internal:8069\" or \"[::1]:8000\"",
                raw.get_ref()
            ),
        ));
    }
    parsed
}

/// Parses `host:port` where host is a DNS name, an IPv4 literal or a bracketed IPv6 literal.
fn parse_host_port(s: &str) -> Option<UpstreamAddress> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        (v6, after.strip_prefix(':')?)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid_name {
            return None;
        }
        (host, port)
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(UpstreamAddress {
        host: host.to_string(),
        port,
    })
}

/// Resolves `raw` against `base_dir` and checks it is a readable PEM file holding
/// at least one certificate.
fn ca_bundle(
    raw: &Spanned<String>,
    key: &str,
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<PathBuf> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    let path = base_dir.join(raw.get_ref());
    let problem = match CertificateDer::pem_file_iter(&path) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        Ok(certs) => match certs.collect::<Result<Vec<_>, _>>() {
            Err(e) => Some(format!("{} is not valid PEM: {e}", path.display())),
            Ok(certs) if certs.is_empty() => {
                Some(format!("{} holds no PEM certificate", path.display()))
            }
            Ok(_) => None,
        },
    };
    match problem {
        Some(problem) => {
            diags.push(Diagnostic::at(raw.span(), format!("{key}: {problem}")));
            None
        }
        None => Some(path),
    }
}

fn is_valid_host_header(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

fn ip_net(raw: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> Option<IpNet> {
    let s = raw.get_ref();
    let parsed = s
        .parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    if parsed.is_none() {
        diags.push(Diagnostic::at(
            raw.span(),
            format!(
                "server.trusted_proxies: `{s}` is not an IP address or CIDR range such as \"10.0.0.0/8\""
            ),
        ));
    }
    parsed
}

/// A positive duration such as "250ms" or "5s".
/// Default `server.header_timeout`.
pub(super) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `server.max_header_bytes` (64 KiB).
pub(super) const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The largest `server.max_header_bytes` (pingora's own limit).
pub(super) const MAX_HEADER_BYTES: usize = 1_048_575;
/// Default `server.max_connections`.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default `server.max_connections_per_ip`.
pub(super) const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// An integer in `range`, or `default` when absent.
pub(crate) fn bounded_int(
    raw: Option<Spanned<i64>>,
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    diags: &mut Vec<Diagnostic>,
) -> usize {
    let Some(raw) = raw else { return default };
    match usize::try_from(*raw.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            diags.push(Diagnostic::at(
                raw.span(),
                format!(
                    "{key} must be between {} and {}, got {}",
                    range.start(),
                    range.end(),
                    raw.get_ref()
                ),
            ));
            default
        }
    }
}

pub(crate) fn duration(
    raw: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    parse_duration(raw, key, default, false, diags)
}

/// A duration that may be zero ("0s").
fn duration_or_zero(
    raw: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    parse_duration(raw, key, default, true, diags)
}

fn parse_duration(
    raw: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    zero_allowed: bool,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.get_ref()) {
        Ok(d) if zero_allowed || !d.is_zero() => d,
        _ => {
            let what = if zero_allowed {
                "duration"
            } else {
                "positive duration"
            };
            diags.push(Diagnostic::at(
                raw.span(),
                format!(
                    "{key}: `{}` is not a {what}: expected e.g. \"250ms\", \"5s\" or \"2m\"",
                    raw.get_ref()
                ),
            ));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("127.0.0.1:8000").unwrap().port, 8000);
        assert_eq!(
            parse_host_port("app.internal:8069").unwrap().host,
            "app.internal"
        );
        assert_eq!(parse_host_port("[::1]:80").unwrap().host, "::1");
        for bad in [
            "", "x", "x:", ":80", "a b:80", "h:0", "h:70000", "[::1]80", "::1:80", "a..b:1",
        ] {
            assert!(parse_host_port(bad).is_none(), "{bad} should be rejected");
        }
    }
}
