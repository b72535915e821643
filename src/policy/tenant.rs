//! Tenant resolution: which tenant a request belongs to.
//!
//! A resolved name is only ever used to look a tenant up in the license snapshot;
//! names that match no installed license are treated as unlicensed and never become
//! map keys or metric labels.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::license::PublicKey;

/// `[tenants]`: how the tenant of a request is resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantsConfig {
    /// One tenant for everything.
    Single { tenant: String },
    /// From the Host header by a pattern such as `{tenant}.example.com`.
    Host { pattern: HostPattern },
    /// From a request header, trusted only from `server.trusted_proxies`.
    Header { name: http::HeaderName },
    /// From a claim of the request's verified bearer token.
    JwtClaim {
        claim: String,
        keys: Vec<crate::license::PublicKey>,
        issuer: Option<String>,
        audience: Option<String>,
    },
}

/// A host pattern: `prefix{tenant}suffix`, matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub prefix: String,
    pub suffix: String,
}

impl HostPattern {
    /// The tenant named by `host` (port ignored): one DNS label, lower-cased. A host
    /// with anything but ASCII names no tenant.
    pub fn tenant<'h>(&self, host: &'h str) -> Option<&'h str> {
        if !host.is_ascii() {
            return None;
        }
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
            _ => host,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.len() < self.prefix.len() + self.suffix.len() {
            return None;
        }
        let (head, rest) = host.split_at(self.prefix.len());
        if !head.eq_ignore_ascii_case(&self.prefix) {
            return None;
        }
        let (label, tail) = rest.split_at(rest.len() - self.suffix.len());
        if !tail.eq_ignore_ascii_case(&self.suffix) || label.is_empty() || label.len() > 63 {
            return None;
        }
        label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then_some(label)
    }
}

/// Verified bearer tokens kept at most (then expired entries are dropped, or all).
const JWT_CACHE_CAPACITY: usize = 100_000;

/// Resolves the tenant of a request per `[tenants]`.
pub(crate) enum TenantResolver {
    Single(String),
    Host(HostPattern),
    Header {
        name: http::HeaderName,
        trusted_proxies: Vec<IpNet>,
    },
    JwtClaim(JwtTenants),
}

impl TenantResolver {
    /// The resolver for `config`; `trusted_proxies` gate the `header` mode.
    pub(crate) fn new(config: &TenantsConfig, trusted_proxies: &[IpNet]) -> TenantResolver {
        match config {
            TenantsConfig::Single { tenant } => TenantResolver::Single(tenant.clone()),
            TenantsConfig::Host { pattern } => TenantResolver::Host(pattern.clone()),
            TenantsConfig::Header { name } => TenantResolver::Header {
                name: name.clone(),
                trusted_proxies: trusted_proxies.to_vec(),
            },
            TenantsConfig::JwtClaim {
                claim,
                keys,
                issuer,
                audience,
            } => TenantResolver::JwtClaim(JwtTenants::new(
                claim,
                keys,
                issuer.clone(),
                audience.clone(),
                is_tenant_name,
            )),
        }
    }

    /// The tenant of `req` (sent by `peer`; `authority` of an absolute-form target
    /// takes the place of `Host`), or `None` when it cannot be told.
    pub(crate) fn resolve<'r>(
        &'r self,
        req: &'r RequestHeader,
        authority: Option<&'r str>,
        peer: Option<IpAddr>,
    ) -> Option<Cow<'r, str>> {
        match self {
            TenantResolver::Single(tenant) => Some(Cow::Borrowed(tenant)),
            TenantResolver::Host(pattern) => {
                let host =
                    authority.or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())?;
                let label = pattern.tenant(host)?;
                Some(if label.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(label.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(label)
                })
            }
            TenantResolver::Header {
                name,
                trusted_proxies,
            } => {
                let trusted =
                    peer.is_some_and(|ip| trusted_proxies.iter().any(|n| n.contains(&ip)));
                if !trusted {
                    return None;
                }
                let mut values = req.headers.get_all(name).iter();
                let value = values.next()?.to_str().ok()?.trim();
                // Two values: ambiguous, so no tenant.
                if values.next().is_some() || !is_tenant_name(value) {
                    return None;
                }
                Some(Cow::Borrowed(value))
            }
            TenantResolver::JwtClaim(jwt) => jwt.tenant_of(bearer_token(req)?).map(Cow::Owned),
        }
    }
}

/// The token of the request's `Authorization: Bearer …` header.
pub(crate) fn bearer_token(req: &RequestHeader) -> Option<&str> {
    let auth = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A tenant name as accepted from a request: 1-63 letters, digits, `-`, `_`, `.`.
pub(crate) fn is_tenant_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A string claim of a verified bearer token: the tenant of `tenants.mode =
/// "jwt_claim"`, or the person of `seats.identity = "jwt:CLAIM"`.
pub(crate) struct JwtTenants {
    claim: String,
    keys: Vec<PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Whether a claim's value is acceptable.
    accepts: fn(&str) -> bool,
    /// SHA-256 of a verified token → (claim, exp).
    cache: DashMap<[u8; 32], (String, i64)>,
}

impl JwtTenants {
    /// Reads `claim` of tokens verified with `keys` (and `issuer`, `audience`),
    /// keeping only values `accepts` accepts.
    pub(crate) fn new(
        claim: &str,
        keys: &[PublicKey],
        issuer: Option<String>,
        audience: Option<String>,
        accepts: fn(&str) -> bool,
    ) -> JwtTenants {
        JwtTenants {
            claim: claim.to_string(),
            keys: keys.to_vec(),
            issuer,
            audience,
            accepts,
            cache: DashMap::new(),
        }
    }

    /// The claim's value in `token`, only if the token verifies with a configured
    /// key (pinned algorithm), has not expired, and passes the issuer and audience
    /// checks. Verified tokens are cached by hash until their `exp`.
    pub(crate) fn tenant_of(&self, token: &str) -> Option<String> {
        if token.len() > crate::license::verify::MAX_TOKEN_BYTES {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().ok()?;
        if let Some(entry) = self.cache.get(&key) {
            if entry.1 > now {
                return Some(entry.0.clone());
            }
        }
        let (tenant, exp) = self.verify(token, now)?;
        if self.cache.len() >= JWT_CACHE_CAPACITY {
            self.cache.retain(|_, (_, exp)| *exp > now);
            if self.cache.len() >= JWT_CACHE_CAPACITY {
                self.cache.clear();
            }
        }
        self.cache.insert(key, (tenant.clone(), exp));
        Some(tenant)
    }

    fn verify(&self, token: &str, now: i64) -> Option<(String, i64)> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let claims = self
            .keys
            .iter()
            .filter(|k| k.alg.jwt() == header.alg)
            .filter(|k| k.kid.is_none() || k.kid == header.kid)
            .find_map(|k| jsonwebtoken::decode::<Value>(token, &k.key, &validation).ok())?
            .claims;
        let exp = claims.get("exp")?.as_i64()?;
        if exp <= now {
            return None;
        }
        let value = claims.get(&self.claim)?.as_str()?;
        (self.accepts)(value).then(|| (value.to_string(), exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn host_mode_reads_the_host_header_or_absolute_form_authority() {
        let resolver = TenantResolver::Host(HostPattern {
            prefix: String::new(),
            suffix: ".shop.example.com".into(),
        });
        let r = request(&[("Host", "Acme.shop.example.com:8443")]);
        assert_eq!(resolver.resolve(&r, None, None).as_deref(), Some("acme"));
        assert_eq!(
            resolver
                .resolve(&r, Some("globex.shop.example.com"), None)
                .as_deref(),
            Some("globex")
        );
        assert_eq!(
            resolver.resolve(&request(&[("Host", "evil.com")]), None, None),
            None
        );
        assert_eq!(resolver.resolve(&request(&[]), None, None), None);
    }

    #[test]
    fn header_mode_trusts_only_trusted_proxies() {
        let resolver = TenantResolver::Header {
            name: http::HeaderName::from_static("x-tenant"),
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let r = request(&[("X-Tenant", "acme")]);
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            resolver.resolve(&r, None, Some(trusted)).as_deref(),
            Some("acme")
        );
        assert_eq!(resolver.resolve(&r, None, Some(stranger)), None);
        assert_eq!(resolver.resolve(&r, None, None), None);
        let two = request(&[("X-Tenant", "acme"), ("X-Tenant", "globex")]);
        assert_eq!(resolver.resolve(&two, None, Some(trusted)), None);
        let odd = request(&[("X-Tenant", "../etc")]);
        assert_eq!(resolver.resolve(&odd, None, Some(trusted)), None);
    }
}
