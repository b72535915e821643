//! Header hygiene on the way to the upstream: client copies of gateway headers are
//! removed, `Host` is optionally rewritten, and `X-Forwarded-*` are maintained; and
//! the names of the headers the gateway adds to responses. Added headers are written
//! as lines after the message's own (`pingora::http::AppendedHeaders`).

use std::borrow::Cow;
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
pub(crate) static WARNING: PreparsedHeaderName =
    PreparsedHeaderName::from_static("x-licgate-warning", "X-Licgate-Warning");
/// `RateLimit-Limit`, `-Remaining`, `-Reset`: added to quota-governed responses.
pub(crate) static RATELIMIT_LIMIT: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-limit", "RateLimit-Limit");
pub(crate) static RATELIMIT_REMAINING: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-remaining", "RateLimit-Remaining");
pub(crate) static RATELIMIT_RESET: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-reset", "RateLimit-Reset");
/// `RateLimit-Policy`: every rule of a quota-governed request (`100;w=3600, …`).
pub(crate) static RATELIMIT_POLICY: PreparsedHeaderName =
    PreparsedHeaderName::from_static("ratelimit-policy", "RateLimit-Policy");

/// `Forwarded` (RFC 7239): rebuilt on every request sent upstream.
static FORWARDED: PreparsedHeaderName = PreparsedHeaderName::from_static("forwarded", "Forwarded");

/// Headers that say something about the client or the original request, which
/// frameworks believe (Rack's `X-Forwarded-Ssl`/`-Scheme`, `X-Url-Scheme`; client-IP
/// helpers' `X-Real-IP`, `X-Client-IP`, ...): kept only from trusted proxies.
const TRUSTED_ONLY: &[&[u8]] = &[
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-forwarded-server",
    b"x-forwarded-ssl",
    b"x-forwarded-protocol",
    b"x-forwarded-scheme",
    b"x-url-scheme",
    b"front-end-https",
    b"x-real-ip",
    b"x-client-ip",
    b"true-client-ip",
    b"x-cluster-client-ip",
];

/// Headers that make an app (IIS, Symfony, Zend) route another path than the request
/// line's, which the gateway decided about: never forwarded.
const NEVER: &[&[u8]] = &[b"x-original-url", b"x-rewrite-url"];

/// How `X-Forwarded-*` and `Forwarded` headers are produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct ForwardingPolicy {
    /// Peers allowed to supply forwarding headers (their values are kept and extended).
    pub trusted_proxies: Vec<IpNet>,
    /// Replacement `Host` header, if configured.
    pub host_header: Option<String>,
    /// The tenant header of `tenants.mode = "header"`: only trusted peers may send it,
    /// on every route (public ones included).
    pub tenant_header: Option<http::HeaderName>,
}

impl ForwardingPolicy {
    /// Whether `peer` is a trusted front proxy.
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(&ip)))
    }

    /// The client a request comes from: `peer`, or, when `peer` is a trusted proxy,
    /// the right-most `X-Forwarded-For` address that is not itself a trusted proxy
    /// (addresses left of it could be forged by that client). Falls back to `peer`
    /// when the header is absent or unreadable.
    pub(crate) fn original_client(
        &self,
        req: &RequestHeader,
        peer: Option<IpAddr>,
    ) -> Option<IpAddr> {
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
    /// forwarding headers it sets go to `lines` (written after `req`'s own).
    ///
    /// - every header named `X-Licgate-*` / `X_Licgate_*` (any case) is removed, and
    ///   so are `X-Original-URL`, `X-Rewrite-URL` and every `_` spelling of a
    ///   forwarding header (servers that fold `_` into `-` would believe them);
    /// - from untrusted peers, `Forwarded`, the [`TRUSTED_ONLY`] headers and the
    ///   tenant header (header mode) are removed;
    /// - `X-Forwarded-For` gets the peer appended when the peer is trusted,
    ///   and is replaced by the peer otherwise;
    /// - `X-Forwarded-Proto` and `X-Forwarded-Host` are kept from trusted peers
    ///   when present, and otherwise set to `http` and the client's `Host`;
    /// - `Forwarded`: a trusted peer's is extended with `for=<peer>`; otherwise it is
    ///   built from the `X-Forwarded-*` values sent, one element per hop, each with
    ///   their `proto` and `host`, so an app that prefers `Forwarded` (Rack ≥ 3) reads
    ///   what an app reading `X-Forwarded-*` reads;
    /// - `Host` is replaced when `host_header` is configured.
    pub(crate) fn apply(
        &self,
        req: &mut RequestHeader,
        peer: Option<IpAddr>,
        lines: &mut AppendedHeadersBuilder,
    ) -> pingora::Result<()> {
        let trusted = self.trusts(peer);
        let present = strip_untrusted_headers(req, trusted, self.tenant_header.as_ref());
        if trusted {
            extend_trusted(req, peer, present, lines)?;
        } else {
            replace_untrusted(req, peer, present, lines)?;
        }
        if let Some(host) = &self.host_header {
            req.insert_header(http::header::HOST, host.as_str())?;
        }
        Ok(())
    }
}

/// The forwarding headers of a request from a trusted proxy at `peer`: its
/// `X-Forwarded-For` extended with `peer`, its `-Proto`/`-Host` kept (or set), its
/// `Forwarded` extended with `for=<peer>` (or built from the `X-Forwarded-*` values).
fn extend_trusted(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    present: ForwardedPresent,
    lines: &mut AppendedHeadersBuilder,
) -> pingora::Result<()> {
    let existing_for = present
        .forwarded_for
        .then(|| joined_values(req, "x-forwarded-for"))
        .flatten();
    let forwarded_for = match (peer, existing_for) {
        (Some(ip), Some(chain)) if !chain.is_empty() => Some(format!("{chain}, {}", ip_text(ip))),
        (Some(ip), _) => Some(ip_text(ip)),
        (None, chain) => chain,
    };
    if let (Some(value), Some(_)) = (&forwarded_for, peer) {
        lines
            .value_bytes(&X_FORWARDED_FOR, value.as_bytes())
            .or_err(ErrorType::InvalidHTTPHeader, "X-Forwarded-For")?;
        if present.forwarded_for {
            req.remove_header(X_FORWARDED_FOR.name());
        }
    }
    let proto: Option<Cow<'static, str>> = if present.forwarded_proto {
        joined_values(req, "x-forwarded-proto").map(Cow::Owned)
    } else {
        lines.header(&X_FORWARDED_PROTO, &http::HeaderValue::from_static("http"));
        Some(Cow::Borrowed("http"))
    };
    let forwarded_host = if present.forwarded_host {
        joined_values(req, "x-forwarded-host")
    } else {
        let host = req.headers.get(http::header::HOST);
        if let Some(host) = host {
            lines.header(&X_FORWARDED_HOST, host);
        }
        host.and_then(|h| h.to_str().ok()).map(str::to_string)
    };
    let forwarded = match (present.forwarded, peer) {
        (true, Some(ip)) => joined_values(req, "forwarded")
            .map(|chain| format!("{chain}, for={}", forwarded_node(ip))),
        (true, None) => None,
        (false, _) => Some(build_forwarded(
            forwarded_for.as_deref().unwrap_or_default(),
            proto.as_deref(),
            forwarded_host.as_deref(),
        )),
    };
    if let Some(value) = forwarded.filter(|v| !v.is_empty()) {
        if present.forwarded {
            req.remove_header(FORWARDED.name());
        }
        lines
            .value_bytes(&FORWARDED, value.as_bytes())
            .or_err(ErrorType::InvalidHTTPHeader, "Forwarded")?;
    }
    Ok(())
}

/// The forwarding headers of a request from an untrusted `peer` (the common case,
/// kept cheap): `X-Forwarded-For` the peer, `-Proto` `http`, `-Host` the `Host`, and
/// `Forwarded: for=<peer>;proto=http;host="<Host>"`; the client's own copies (already
/// stripped of the rest) are removed.
fn replace_untrusted(
    req: &mut RequestHeader,
    peer: Option<IpAddr>,
    present: ForwardedPresent,
    lines: &mut AppendedHeadersBuilder,
) -> pingora::Result<()> {
    if present.forwarded_for {
        req.remove_header(X_FORWARDED_FOR.name());
    }
    if present.forwarded_proto {
        req.remove_header(X_FORWARDED_PROTO.name());
    }
    if present.forwarded_host {
        req.remove_header(X_FORWARDED_HOST.name());
    }
    let ip = peer.map(ip_text);
    if let Some(ip) = &ip {
        lines
            .value_bytes(&X_FORWARDED_FOR, ip.as_bytes())
            .or_err(ErrorType::InvalidHTTPHeader, "X-Forwarded-For")?;
    }
    lines.header(&X_FORWARDED_PROTO, &http::HeaderValue::from_static("http"));
    let host = req.headers.get(http::header::HOST);
    if let Some(host) = host {
        lines.header(&X_FORWARDED_HOST, host);
    }
    let host = host.and_then(|h| h.to_str().ok());
    let mut forwarded = String::with_capacity(48 + host.map_or(0, str::len));
    if let (Some(ip), Some(addr)) = (&ip, peer) {
        forwarded.push_str("for=");
        match addr {
            IpAddr::V4(_) => forwarded.push_str(ip),
            IpAddr::V6(_) => {
                forwarded.push_str("\"[");
                forwarded.push_str(ip);
                forwarded.push_str("]\"");
            }
        }
        forwarded.push(';');
    }
    forwarded.push_str("proto=http");
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        forwarded.push_str(";host=");
        push_quoted(&mut forwarded, host);
    }
    lines
        .value_bytes(&FORWARDED, forwarded.as_bytes())
        .or_err(ErrorType::InvalidHTTPHeader, "Forwarded")?;
    Ok(())
}

/// A `Forwarded` value with one element per hop of `forwarded_for` (an
/// `X-Forwarded-For` list), each with `proto` and `host` when known.
fn build_forwarded(forwarded_for: &str, proto: Option<&str>, host: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    let mut params = String::new();
    if let Some(proto) = proto.and_then(|p| p.split(',').next()).map(str::trim) {
        if !proto.is_empty()
            && proto
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            params.push_str(";proto=");
            params.push_str(proto);
        }
    }
    if let Some(host) = host.and_then(|h| h.split(',').next()).map(str::trim) {
        if !host.is_empty() {
            params.push_str(";host=");
            push_quoted(&mut params, host);
        }
    }
    for hop in forwarded_for
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str("for=");
        match parse_forwarded_ip(hop) {
            Some(ip) => out.push_str(&forwarded_node(ip)),
            None => out.push_str("unknown"),
        }
        out.push_str(&params);
    }
    if out.is_empty() && !params.is_empty() {
        out.push_str(&params[1..]);
    }
    out
}

/// A node of `Forwarded`: an IPv4 address, or a quoted, bracketed IPv6 address.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => ip_text(ip),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Appends `value` as a quoted-string (`"` and `\\` escaped).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Which forwarding headers a request carries (dash spellings only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ForwardedPresent {
    pub forwarded_for: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
    /// `Forwarded`, when sent by a trusted peer (it is removed otherwise).
    pub forwarded: bool,
}

#[cfg(test)]
/// Removes every client-sent header whose name starts with `x-licgate-` or `x_licgate_`
/// (any case). Allocates only when such a header is present.
pub(crate) fn strip_gateway_headers(req: &mut RequestHeader) -> ForwardedPresent {
    strip_untrusted_headers(req, true, None)
}

/// What one request header name is to the forwarding rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    Forwarded,
    /// Kept from trusted peers only.
    TrustedOnly,
    /// Never forwarded.
    Never,
    Other,
}

/// Whether `name` (lower-case, as stored) equals `wanted` with `_` read as `-`.
fn folded_eq(name: &[u8], wanted: &[u8]) -> bool {
    name.len() == wanted.len()
        && name
            .iter()
            .zip(wanted)
            .all(|(n, w)| n == w || (*n == b'_' && *w == b'-'))
}

/// Classifies a stored (lower-case) header name; an `_` spelling of a forwarding or
/// tenant header is [`NameKind::Never`].
fn classify(name: &[u8], tenant_header: Option<&http::HeaderName>) -> NameKind {
    if is_gateway_header(name) {
        return NameKind::Never;
    }
    let tenant = tenant_header.map(|t| t.as_str().as_bytes());
    // Most names (accept, cookie, user-agent, ...) start with neither letter.
    if !matches!(name.first(), Some(b'x' | b'f' | b't'))
        && tenant.is_none_or(|t| t.first() != name.first())
    {
        return NameKind::Other;
    }
    let underscore = name.contains(&b'_');
    let kind = if folded_eq(name, X_FORWARDED_FOR.name().as_str().as_bytes()) {
        NameKind::ForwardedFor
    } else if folded_eq(name, X_FORWARDED_PROTO.name().as_str().as_bytes()) {
        NameKind::ForwardedProto
    } else if folded_eq(name, X_FORWARDED_HOST.name().as_str().as_bytes()) {
        NameKind::ForwardedHost
    } else if name == b"forwarded" {
        NameKind::Forwarded
    } else if NEVER.iter().any(|n| folded_eq(name, n)) {
        NameKind::Never
    } else if TRUSTED_ONLY.iter().any(|n| folded_eq(name, n))
        || tenant.is_some_and(|t| folded_eq(name, t))
    {
        NameKind::TrustedOnly
    } else {
        NameKind::Other
    };
    if underscore && kind != NameKind::Other {
        NameKind::Never
    } else {
        kind
    }
}

/// Removes the headers a request from a peer (`trusted` or not) may not pass on, and
/// tells which `X-Forwarded-*` headers remain, in one pass over its names. Allocates
/// only when something is removed.
///
/// `Connection` needs no care here: before the upstream request filter, pingora's
/// standard upstream request policy removes `Connection` and the headers it nominates,
/// and refuses (400) a request nominating `Host` or an `X-Forwarded-*` header.
fn strip_untrusted_headers(
    req: &mut RequestHeader,
    trusted: bool,
    tenant_header: Option<&http::HeaderName>,
) -> ForwardedPresent {
    let mut present = ForwardedPresent::default();
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    for name in req.headers.keys() {
        match classify(name.as_str().as_bytes(), tenant_header) {
            NameKind::ForwardedFor => present.forwarded_for = true,
            NameKind::ForwardedProto => present.forwarded_proto = true,
            NameKind::ForwardedHost => present.forwarded_host = true,
            NameKind::Forwarded if trusted => present.forwarded = true,
            NameKind::TrustedOnly if trusted => {}
            NameKind::Forwarded | NameKind::TrustedOnly | NameKind::Never => {
                doomed.push(name.clone())
            }
            NameKind::Other => {}
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
pub(crate) fn remove_present(resp: &mut ResponseHeader, names: &[&PreparsedHeaderName]) {
    debug_assert!(names.len() <= 32, "at most 32 names");
    // The names' lengths, as bits: most of a response's headers are skipped on their
    // length alone.
    let lengths = names.iter().fold(0u64, |bits, n| {
        bits | 1u64
            .checked_shl(n.name().as_str().len() as u32)
            .unwrap_or(0)
    });
    let mut present = 0u32;
    for name in resp.headers.keys() {
        let len = name.as_str().len();
        if len < 64 && lengths & (1 << len) == 0 {
            continue;
        }
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
            ..ForwardingPolicy::default()
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
            tenant_header: None,
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
