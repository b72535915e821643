//! Raw → validated configuration. Every raw struct is destructured exhaustively so a
//! new field cannot be silently ignored; every problem is collected, not just the first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{
    OneOrMany, RawAdmin, RawConfig, RawLog, RawLogFormat, RawMode, RawServer, RawUpstream,
};
use super::{
    default_threads, AdminConfig, Config, Diagnostic, LogConfig, LogFormat, Mode, ServerConfig,
    UpstreamAddress, UpstreamConfig,
};

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
            log,
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
        let admin = validate_admin(admin.unwrap_or_default(), &mut diags);
        let log = validate_log(log.unwrap_or_default(), &mut diags);
        match (server, upstream, admin, log) {
            (Some(server), Some(upstream), Some(admin), Some(log)) if diags.is_empty() => {
                Ok(Config {
                    source: PathBuf::new(),
                    mode,
                    server,
                    upstream,
                    admin,
                    log,
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
    (diags.len() == start).then_some(ServerConfig {
        listen,
        threads,
        trusted_proxies,
        shutdown_timeout,
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
    let ca_file = ca_file.and_then(|f| ca_bundle(&f, base_dir, diags));
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

fn validate_admin(raw: RawAdmin, diags: &mut Vec<Diagnostic>) -> Option<AdminConfig> {
    let RawAdmin { listen } = raw;
    let listen = match listen {
        None => Some(
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("default admin address parses"),
        ),
        Some(l) => socket_addr(&l, "admin.listen", diags),
    };
    Some(AdminConfig { listen: listen? })
}

fn validate_log(raw: RawLog, diags: &mut Vec<Diagnostic>) -> Option<LogConfig> {
    let RawLog { format, level } = raw;
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
    Some(LogConfig { format, level })
}

fn socket_addr(
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
            diags.push(Diagnostic::at(
                raw.span(),
                format!("upstream.ca_file: {problem}"),
            ));
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

fn duration(
    raw: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            diags.push(Diagnostic::at(
                raw.span(),
                format!(
                    "{key}: `{}` is not a positive duration: expected e.g. \"250ms\", \"5s\" or \"2m\"",
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
