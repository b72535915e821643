//! Where a request's person is recognized (`seats.identity`): a session cookie, a
//! verified bearer token's claim, or a trusted proxy's header; and what a response
//! does to the session cookie (sets a new session, or deletes it).
//!
//! Cookies are read the way the frameworks behind the gateway read them (Django:
//! pairs split on `;`, the last of one name wins; werkzeug: the first wins): when
//! one name carries two different values, the gateway cannot tell which session
//! the app will use, and says so ([`Identity::Ambiguous`]).

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};

use super::book::SeatTimes;
use crate::config::{SeatIdentity, SeatsConfig, TenantsConfig};
use crate::policy::tenant::{bearer_token, JwtTenants};

/// The longest identity value read (longer ones are no identity).
const MAX_IDENTITY_BYTES: usize = 4096;

/// The seat rules of the request path, from `[seats]`.
pub(crate) struct SeatRules {
    source: Source,
    pub times: SeatTimes,
}

enum Source {
    Cookie(String),
    Jwt(JwtTenants),
    Header {
        name: http::HeaderName,
        trusted_proxies: Vec<IpNet>,
    },
}

/// Who a request says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity<'r> {
    /// Nobody recognized: the request takes no seat.
    Anonymous,
    /// The identity's value (hashed at once, never kept).
    Known(Cow<'r, [u8]>),
    /// The identity is given twice with different values (`what` names it).
    Ambiguous(&'static str),
}

/// What a response does to the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionCookie {
    /// It does not set it.
    Untouched,
    /// It sets it to this value (a login, or a rotated session).
    Set(Vec<u8>),
    /// It deletes it (a logout).
    Deleted,
}

impl SeatRules {
    /// The rules of `config`; a `jwt:` identity uses `tenants`' keys, a `header:`
    /// identity is taken only from `trusted_proxies`.
    pub(crate) fn new(
        config: &SeatsConfig,
        tenants: &TenantsConfig,
        trusted_proxies: &[IpNet],
    ) -> SeatRules {
        let source = match &config.identity {
            SeatIdentity::Cookie(name) => Source::Cookie(name.clone()),
            SeatIdentity::Jwt(claim) => {
                let (keys, issuer, audience) = match tenants {
                    TenantsConfig::JwtClaim {
                        keys,
                        issuer,
                        audience,
                        ..
                    } => (keys.as_slice(), issuer.clone(), audience.clone()),
                    // Validation requires jwt_claim; without keys nothing verifies.
                    _ => (&[][..], None, None),
                };
                Source::Jwt(JwtTenants::new(
                    claim,
                    keys,
                    issuer,
                    audience,
                    is_identity_value,
                ))
            }
            SeatIdentity::Header(name) => Source::Header {
                name: name.clone(),
                trusted_proxies: trusted_proxies.to_vec(),
            },
        };
        SeatRules {
            source,
            times: SeatTimes::of(config),
        }
    }

    /// The session cookie's name, when seats follow a cookie.
    pub(crate) fn cookie_name(&self) -> Option<&str> {
        match &self.source {
            Source::Cookie(name) => Some(name),
            _ => None,
        }
    }

    /// Who `req` (from `peer`, the direct peer) says it is.
    pub(crate) fn identity<'r>(
        &self,
        req: &'r RequestHeader,
        peer: Option<IpAddr>,
    ) -> Identity<'r> {
        match &self.source {
            Source::Cookie(name) => cookie_identity(req, name),
            Source::Jwt(jwt) => match bearer_token(req).and_then(|t| jwt.tenant_of(t)) {
                Some(value) => Identity::Known(Cow::Owned(value.into_bytes())),
                None => Identity::Anonymous,
            },
            Source::Header {
                name,
                trusted_proxies,
            } => {
                if !peer.is_some_and(|ip| trusted_proxies.iter().any(|n| n.contains(&ip))) {
                    return Identity::Anonymous;
                }
                let mut values = req.headers.get_all(name).iter();
                let Some(first) = values.next() else {
                    return Identity::Anonymous;
                };
                if values.any(|v| v != first) {
                    return Identity::Ambiguous("the identity header");
                }
                let value = trim(first.as_bytes());
                if value.is_empty() || value.len() > MAX_IDENTITY_BYTES {
                    Identity::Anonymous
                } else {
                    Identity::Known(Cow::Borrowed(value))
                }
            }
        }
    }

    /// What `response` does to the session cookie (`Untouched` unless seats
    /// follow a cookie). Of several `Set-Cookie` lines for it, the last counts.
    pub(crate) fn session_cookie(&self, response: &ResponseHeader, now: i64) -> SessionCookie {
        let Some(name) = self.cookie_name() else {
            return SessionCookie::Untouched;
        };
        let mut found = SessionCookie::Untouched;
        for line in response.headers.get_all(http::header::SET_COOKIE) {
            if let Some(cookie) = set_cookie(line.as_bytes(), name.as_bytes(), now) {
                found = cookie;
            }
        }
        found
    }
}

/// A claim value usable as an identity.
fn is_identity_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_IDENTITY_BYTES
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_identity<'r>(req: &'r RequestHeader, name: &str) -> Identity<'r> {
    let mut found: Option<&'r [u8]> = None;
    for header in req.headers.get_all(http::header::COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (trim(&pair[..i]), unquote(trim(&pair[i + 1..]))),
                None => continue,
            };
            if key != name.as_bytes() {
                continue;
            }
            match found {
                Some(previous) if previous != value => {
                    return Identity::Ambiguous("the session cookie");
                }
                _ => found = Some(value),
            }
        }
    }
    match found {
        Some(value) if !value.is_empty() && value.len() <= MAX_IDENTITY_BYTES => {
            Identity::Known(Cow::Borrowed(value))
        }
        _ => Identity::Anonymous,
    }
}

/// What one `Set-Cookie` line does to cookie `name` (`None`: another cookie).
fn set_cookie(line: &[u8], name: &[u8], now: i64) -> Option<SessionCookie> {
    let mut parts = line.split(|&b| b == b';');
    let first = parts.next()?;
    let eq = first.iter().position(|&b| b == b'=')?;
    if trim(&first[..eq]) != name {
        return None;
    }
    let value = unquote(trim(&first[eq + 1..]));
    let mut expired = value.is_empty();
    let mut max_age_seen = false;
    for attribute in parts {
        let (key, attr_value) = match attribute.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&attribute[..i]), trim(&attribute[i + 1..])),
            None => (trim(attribute), &[][..]),
        };
        if key.eq_ignore_ascii_case(b"max-age") {
            // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
            max_age_seen = true;
            let age = std::str::from_utf8(attr_value)
                .ok()
                .and_then(|t| t.parse::<i64>().ok());
            expired = value.is_empty() || age.is_some_and(|a| a <= 0);
        } else if key.eq_ignore_ascii_case(b"expires") && !max_age_seen {
            let at = std::str::from_utf8(attr_value)
                .ok()
                .and_then(|t| httpdate::parse_http_date(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if at.is_some_and(|at| at <= now) {
                expired = true;
            }
        }
    }
    Some(if expired {
        SessionCookie::Deleted
    } else {
        SessionCookie::Set(value.to_vec())
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// `"v"` → `v` (Django and werkzeug unquote cookie values).
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rules(identity: SeatIdentity) -> SeatRules {
        SeatRules::new(
            &SeatsConfig {
                identity,
                idle_timeout: Duration::from_secs(60),
                active_window: Duration::from_secs(600),
            },
            &TenantsConfig::Single { tenant: "t".into() },
            &["10.0.0.0/8".parse().unwrap()],
        )
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_unquoted() {
        let seats = rules(SeatIdentity::Cookie("sessionid".into()));
        let known = |v: &str| Identity::Known(Cow::Owned(v.as_bytes().to_vec()));
        let r = request(&[("Cookie", "csrftoken=x; sessionid=abc; theme=dark")]);
        assert_eq!(seats.identity(&r, None), known("abc"));
        let r = request(&[("Cookie", "sessionid=\"abc\"")]);
        assert_eq!(seats.identity(&r, None), known("abc"));
        let r = request(&[("Cookie", "sessionid=abc; sessionid=abc")]);
        assert_eq!(seats.identity(&r, None), known("abc"));
        for anonymous in ["csrftoken=x", "sessionid=", "xsessionid=abc", "sessionid"] {
            let r = request(&[("Cookie", anonymous)]);
            assert_eq!(seats.identity(&r, None), Identity::Anonymous, "{anonymous}");
        }
        assert_eq!(seats.identity(&request(&[]), None), Identity::Anonymous);
    }

    #[test]
    fn two_values_of_the_session_cookie_are_ambiguous() {
        let seats = rules(SeatIdentity::Cookie("sessionid".into()));
        let r = request(&[("Cookie", "sessionid=a; sessionid=b")]);
        assert!(matches!(seats.identity(&r, None), Identity::Ambiguous(_)));
        let r = request(&[("Cookie", "sessionid=a"), ("Cookie", "sessionid=b")]);
        assert!(matches!(seats.identity(&r, None), Identity::Ambiguous(_)));
    }

    #[test]
    fn the_identity_header_counts_only_from_trusted_proxies() {
        let seats = rules(SeatIdentity::Header(http::HeaderName::from_static(
            "x-remote-user",
        )));
        let r = request(&[("X-Remote-User", "alice")]);
        assert_eq!(
            seats.identity(&r, Some([203, 0, 113, 9].into())),
            Identity::Anonymous
        );
        assert_eq!(
            seats.identity(&r, Some([10, 0, 0, 1].into())),
            Identity::Known(Cow::Borrowed(b"alice"))
        );
        let r = request(&[("X-Remote-User", "alice"), ("X-Remote-User", "bob")]);
        assert!(matches!(
            seats.identity(&r, Some([10, 0, 0, 1].into())),
            Identity::Ambiguous(_)
        ));
    }

    #[test]
    fn responses_set_rotate_or_delete_the_session_cookie() {
        let seats = rules(SeatIdentity::Cookie("sessionid".into()));
        let response = |lines: &[&str]| {
            let mut r = ResponseHeader::build(200, None).unwrap();
            for l in lines {
                r.append_header("Set-Cookie", *l).unwrap();
            }
            r
        };
        let now = 1_800_000_000;
        let r = response(&[
            "csrftoken=x; Path=/",
            "sessionid=new1; HttpOnly; Path=/; Max-Age=1209600",
        ]);
        assert_eq!(
            seats.session_cookie(&r, now),
            SessionCookie::Set(b"new1".to_vec())
        );
        let django_logout =
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/";
        assert_eq!(
            seats.session_cookie(&response(&[django_logout]), now),
            SessionCookie::Deleted
        );
        let expired = "sessionid=v; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
        assert_eq!(
            seats.session_cookie(&response(&[expired]), now),
            SessionCookie::Deleted
        );
        let max_age_wins = "sessionid=v; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
        assert_eq!(
            seats.session_cookie(&response(&[max_age_wins]), now),
            SessionCookie::Set(b"v".to_vec())
        );
        assert_eq!(
            seats.session_cookie(&response(&["csrftoken=x"]), now),
            SessionCookie::Untouched
        );
        let last_wins = ["sessionid=a", django_logout];
        assert_eq!(
            seats.session_cookie(&response(&last_wins), now),
            SessionCookie::Deleted
        );
    }
}
