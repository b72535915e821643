//! Header hygiene on the way to the upstream: client copies of gateway headers are
//! removed, `Host` is optionally rewritten, and `X-Forwarded-*` are maintained; and
//! the names of the headers the gateway adds to responses. Added headers are written
//! as lines after the message's own (`pingora::http::AppendedHeaders`).

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::{AppendedHeadersBuilder, PreparsedHeaderName, RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr};

/// Prefix of the headers the gateway sets for the upstream (lowercase, as stored).
const GATEWAY_PREFIX_DASH: &[u8] = b"x-licgate-";
/// Same prefix with underscores: some servers (e.g. CGI/WSGI) fold `_` and `-` together.
const GATEWAY_PREFIX_UNDERSCORE: &[u8] = b"x_licgate_";

/// `X-Forwarded-For`, `-Proto`, `-Host`: set on every request sent upstream.
static X_FORWARDED_FOR: PreparsedHeaderName =
    PreparsedHeaderName::from_static("x-forwarded-for", "X-Forwarded-For");
static X_FORWARDED_PROTO: PreparsedHeaderName =
    PreparsedHeaderName::from_static("x-forwarded-proto", "X-Forwarded-Proto");
static X_FORWARDED_HOST: PreparsedHeaderName =
    PreparsedHeaderName::from_static("x-forwarded-host", "X-Forwarded-Host");

/// `X-Licgate-Warning`: added to responses while a license needs attention.
pub static WARNING: PreparsedHeaderName =
    PreparsedHeaderName::from_static("x-licgate-warning", "X-Licgate-Warning");
/// `RateLimit-Limit`, `-Remaining`, `-Reset`: added to quota-governed responses.
pub static RATELIMIT_LIMIT: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-limit", "RateLimit-Limit");
pub static RATELIMIT_REMAINING: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-remaining", "RateLimit-Remaining");
pub static RATELIMIT_RESET: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-reset", "RateLimit-Reset");

/// How `X-Forwarded-*` headers are produced.
#[derive(Debug, Clone, Default)]
pub struct ForwardingPolicy {
    /// Peers allowed to supply `X-Forwarded-*` (their values are kept and extended).
    pub trusted_proxies: Vec<IpNet>,
    /// Replacement `Host` header, if configured.
    pub host_header: Option<String>,
}

impl ForwardingPolicy {
    /// Whether `peer` is a trusted front proxy.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(&ip)))
    }

    /// The client a request comes from: `peer`, or, when `peer` is a trusted proxy,
    /// the right-most `X-Forwarded-For` address that is not itself a trusted proxy
    /// (addresses left of it could be forged by that client). Falls back to `peer`
    /// when the header is absent or unreadable.
    pub fn original_client(&self, req: &RequestHeader, peer: Option<IpAddr>) -> Option<IpAddr> {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in req.headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for hop in value.rsplit(',') {
                let Some(ip) = parse_forwarded_ip(hop.trim()) else {
                    return client;
                };
                client = Some(ip);
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }

    /// Rewrites `req` (the request about to go upstream) for a client at `peer`; the
    /// `X-Forwarded-*` headers it sets go to `lines` (written after `req`'s own).
    ///
    /// - every header named `X-Licgate-*` / `X_Licgate_*` (any case) is removed;
    /// - `X-Forwarded-For` gets the peer appended when the peer is trusted,
    ///   and is replaced by the peer otherwise;
    /// - `X-Forwarded-Proto` and `X-Forwarded-Host` are kept from trusted peers
    ///   when present, and otherwise set to `http` and the client's `Host`;
    /// - `Host` is replaced when `host_header` is configured.
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        lines: &mut AppendedHeadersBuilder,
    ) -> pingora::Result<()> {
        let present = strip_gateway_headers(req);
        let trusted = self.trusts(peer);

        if let Some(ip) = peer {
            let ip = ip_text(ip);
            let existing = if trusted && present.forwarded_for {
                joined_values(req, "x-forwarded-for")
            } else {
                None
            };
            let value = match existing {
                Some(chain) if !chain.is_empty() => format!("{chain}, {ip}"),
                _ => ip,
            };
            lines
                .value_bytes(&X_FORWARDED_FOR, value.as_bytes())
                .or_err(ErrorType::InvalidHTTPHeader, "X-Forwarded-For")?;
        }
        if present.forwarded_for && (peer.is_some() || !trusted) {
            req.remove_header(X_FORWARDED_FOR.name());
        }

        if !(trusted && present.forwarded_proto) {
            if present.forwarded_proto {
                req.remove_header(X_FORWARDED_PROTO.name());
            }
            lines.header(&X_FORWARDED_PROTO, &http::HeaderValue::from_static("http"));
        }
        if !(trusted && present.forwarded_host) {
            if present.forwarded_host {
                req.remove_header(X_FORWARDED_HOST.name());
            }
            if let Some(host) = req.headers.get(http::header::HOST) {
                lines.header(&X_FORWARDED_HOST, host);
            }
        }
        if let Some(host) = &self.host_header {
            req.insert_header(http::header::HOST, host.as_str())?;
        }
        Ok(())
    }
}

/// Which `X-Forwarded-*` headers a request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardedPresent {
    pub forwarded_for: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
}

/// Removes every client-sent header whose name starts with `x-licgate-` or `x_licgate_`,
/// and tells which `X-Forwarded-*` headers the request has (in the same pass over its
/// names). Allocates only when a gateway header is present.
///
/// `Connection` needs no care here: before the upstream request filter, pingora's
/// standard upstream request policy removes `Connection` and the headers it nominates,
/// and refuses (400) a request nominating `Host` or an `X-Forwarded-*` header.
pub fn strip_gateway_headers(req: &mut RequestHeader) -> ForwardedPresent {
    let mut present = ForwardedPresent::default();
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    for name in req.headers.keys() {
        if name == X_FORWARDED_FOR.name() {
            present.forwarded_for = true;
        } else if name == X_FORWARDED_PROTO.name() {
            present.forwarded_proto = true;
        } else if name == X_FORWARDED_HOST.name() {
            present.forwarded_host = true;
        } else if is_gateway_header(name.as_str().as_bytes()) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        req.remove_header(&name);
    }
    present
}

/// Removes from `resp` every header named in `names` that it has. One pass over the
/// response's names finds them, so that a response without any (the usual case) costs
/// no hashing of the `names`.
pub fn remove_present(resp: &mut ResponseHeader, names: &[&PreparsedHeaderName]) {
    debug_assert!(names.len() <= 32, "at most 32 names");
    let mut present = 0u32;
    for name in resp.headers.keys() {
        if let Some(i) = names.iter().position(|n| n.name() == name) {
            present |= 1 << i;
        }
    }
    for (i, name) in names.iter().enumerate() {
        if present & (1 << i) != 0 {
            resp.remove_header(name.name());
        }
    }
}

fn is_gateway_header(name: &[u8]) -> bool {
    name.len() >= GATEWAY_PREFIX_DASH.len()
        && (name[..GATEWAY_PREFIX_DASH.len()].eq_ignore_ascii_case(GATEWAY_PREFIX_DASH)
            || name[..GATEWAY_PREFIX_UNDERSCORE.len()]
                .eq_ignore_ascii_case(GATEWAY_PREFIX_UNDERSCORE))
}

/// `ip` as text, as `Display` writes it; IPv4 (the common case) without the
/// formatting machinery, which costs more than the rest of the header.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// An `X-Forwarded-For` element: an IP, `[IPv6]`, or either with a port.
fn parse_forwarded_ip(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// All values of header `name` joined with ", " (None when absent or not text).
fn joined_values(req: &RequestHeader, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in req.headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_what_display_writes() {
        for octet in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(octet, 0, 10, octet),
                std::net::Ipv4Addr::new(1, octet, 255, 100),
            ] {
                assert_eq!(ip_text(IpAddr::V4(ip)), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_text(v6), "2001:db8::1");
    }

    #[test]
    fn original_client_is_the_first_untrusted_hop_from_the_right() {
        let policy = ForwardingPolicy {
            trusted_proxies: vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
            ],
            host_header: None,
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let lb = ip("127.0.0.1");
        let with = |xff: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for v in xff {
                r.append_header("X-Forwarded-For", *v).unwrap();
            }
            r
        };
        // Untrusted peers: their header is ignored.
        assert_eq!(
            policy.original_client(&with(&["1.2.3.4"]), ip("8.8.8.8")),
            ip("8.8.8.8")
        );
        // Trusted peer without a header: the peer.
        assert_eq!(policy.original_client(&with(&[]), lb), lb);
        // A forged left part is skipped: the right-most untrusted address wins.
        let chain = with(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(policy.original_client(&chain, lb), ip("203.0.113.7"));
        // Several header lines read as one list; IPv6 with brackets and ports.
        let lines = with(&["6.6.6.6", "[2001:db8::1]:4711", "10.0.0.9"]);
        assert_eq!(policy.original_client(&lines, lb), ip("2001:db8::1"));
        let port = with(&["198.51.100.2:5555"]);
        assert_eq!(policy.original_client(&port, lb), ip("198.51.100.2"));
        // Only trusted hops: the left-most of them.
        assert_eq!(
            policy.original_client(&with(&["10.9.9.9, 10.1.1.1"]), lb),
            ip("10.9.9.9")
        );
        // Garbage stops the walk at the last address that could be read.
        let junk = with(&["unknown, 203.0.113.9, 10.0.0.1"]);
        assert_eq!(policy.original_client(&junk, lb), ip("203.0.113.9"));
        assert_eq!(policy.original_client(&with(&["nonsense"]), lb), lb);
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    /// The headers `policy` sends upstream for `r` from `peer`.
    fn applied(policy: &ForwardingPolicy, mut r: RequestHeader, peer: &str) -> http::HeaderMap {
        let mut lines = AppendedHeadersBuilder::default();
        policy
            .apply(&mut r, Some(peer.parse().unwrap()), &mut lines)
            .unwrap();
        r.set_appended_headers(lines.build());
        r.as_owned_parts().headers
    }

    #[test]
    fn strips_gateway_headers_in_any_spelling() {
        let mut r = request(&[
            ("X-Licgate-Tenant", "evil"),
            ("x-LICGATE-status", "VALID"),
            ("X_Licgate_Features", "all"),
            ("X-Licgatex", "kept"),
            ("Accept", "*/*"),
        ]);
        assert_eq!(strip_gateway_headers(&mut r), ForwardedPresent::default());
        let mut names: Vec<_> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["accept", "x-licgatex"]);
    }

    #[test]
    fn remove_present_removes_every_copy_of_the_named_headers_only() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("RateLimit-Limit", "999"),
            ("content-type", "text/plain"),
            ("ratelimit-limit", "998"),
            ("RATELIMIT-RESET", "5"),
            ("X-Licgate-Warning", "app's own"),
        ] {
            resp.append_header(name.to_string(), value).unwrap();
        }
        remove_present(
            &mut resp,
            &[&RATELIMIT_LIMIT, &RATELIMIT_REMAINING, &RATELIMIT_RESET],
        );
        let mut names: Vec<_> = resp
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["content-type", "x-licgate-warning"]);
        remove_present(&mut resp, &[&WARNING]);
        assert_eq!(resp.headers.len(), 1);
        remove_present(&mut resp, &[&WARNING]);
        assert_eq!(resp.headers["content-type"], "text/plain");
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding() {
        let policy = ForwardingPolicy::default();
        let r = request(&[
            ("Host", "app.example.com"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ]);
        let sent = applied(&policy, r, "10.0.0.7");
        assert_eq!(sent["x-forwarded-for"], "10.0.0.7");
        assert_eq!(sent["x-forwarded-proto"], "http");
        assert_eq!(sent["x-forwarded-host"], "app.example.com");
        assert_eq!(sent["host"], "app.example.com");
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
            assert_eq!(sent.get_all(name).iter().count(), 1, "{name} once");
        }
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let policy = ForwardingPolicy {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            host_header: Some("internal:8000".into()),
        };
        let r = request(&[
            ("Host", "app.example.com"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let sent = applied(&policy, r, "10.0.0.7");
        assert_eq!(
            sent.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["1.2.3.4, 5.6.7.8, 10.0.0.7"]
        );
        assert_eq!(
            sent.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(),
            ["https"]
        );
        assert_eq!(sent["x-forwarded-host"], "app.example.com");
        assert_eq!(sent["host"], "internal:8000");
    }
}
