//! `licgate healthcheck`: probes a running gateway's admin listener, for container
//! health checks in images without curl (the runtime image has no shell).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// How long the probe may take in all (connect, write, read).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Admin listener to probe. Default: `admin.listen` of the configuration (an
    /// unspecified address such as 0.0.0.0 is probed on loopback).
    #[arg(long)]
    pub address: Option<SocketAddr>,
    /// Probe readiness (`/readyz`: config and licenses loaded, listeners accepting)
    /// instead of liveness (`/healthz`).
    #[arg(long)]
    pub ready: bool,
    /// Configuration file (read only when --address is not given).
    #[arg(long, short = 'c', env = "LICGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Exits 0 when the probed endpoint answers 200, 1 otherwise (the reason on stderr).
pub(crate) fn run(args: &HealthcheckArgs) -> ExitCode {
    let address = match args.address {
        Some(address) => address,
        None => match Config::load(&args.config) {
            Ok(config) => loopback_for(config.admin.listen),
            Err(e) => {
                eprintln!("licgate healthcheck: {}: {e}", args.config.display());
                return ExitCode::from(1);
            }
        },
    };
    let path = if args.ready { "/readyz" } else { "/healthz" };
    match probe(address, path) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("licgate healthcheck: GET {path} on {address} answered {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("licgate healthcheck: GET {path} on {address}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `listen` with an unspecified IP replaced by the loopback address of its family.
fn loopback_for(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// The status code of `GET path` on `address` (HTTP/1.1, connection closed after).
fn probe(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: licgate-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    parse_status(&head[..filled])
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// The status code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head.get(..12)?).ok()?;
    let code = line.strip_prefix("HTTP/1.")?.get(2..5)?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH_9.2p1"), None);
    }

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        assert_eq!(loopback_for(v4), "127.0.0.1:9901".parse().unwrap());
        let v6: SocketAddr = "[::]:9901".parse().unwrap();
        assert_eq!(loopback_for(v6), "[::1]:9901".parse().unwrap());
        let set: SocketAddr = "10.0.0.5:9901".parse().unwrap();
        assert_eq!(loopback_for(set), set);
    }
}
