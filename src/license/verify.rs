//! License token verification: size, algorithm pinning, key selection, signature,
//! claims, issuer and audience. Every rejection carries a reason fit for an operator.

use base64::Engine as _;
use jsonwebtoken::Validation;
use serde_json::Value;

use super::claims::{ClaimError, Claims, UnixTime};
use super::keys::{Algorithm, PublicKey};
use super::time_text;

/// Tokens larger than this are rejected before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a license token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the license key is empty")]
    Empty,
    #[error("the license key is {size} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge { size: usize },
    #[error("not a license key: {0}")]
    Malformed(String),
    #[error(
        "signed with algorithm {0}, which is never accepted (only EdDSA, ES256 and RS256 are)"
    )]
    AlgorithmNotAllowed(String),
    #[error("signed by an unknown key (kid \"{0}\" is not configured)")]
    UnknownKid(String),
    #[error("the header says {token_alg} but key \"{kid}\" is pinned to {key_alg}")]
    AlgorithmMismatch {
        kid: String,
        token_alg: String,
        key_alg: Algorithm,
    },
    #[error("signed with {0}, but no configured public key uses {0}")]
    NoKeyForAlgorithm(Algorithm),
    #[error("the signature does not verify: signed by an unknown key, or altered after signing")]
    BadSignature,
    #[error("{0}")]
    Claims(#[from] ClaimError),
    #[error("issued by {got}, but this gateway accepts licenses from \"{expected}\" only")]
    WrongIssuer { expected: String, got: String },
    #[error("bound to instance {bound}, this is {instance}")]
    WrongAudience { bound: String, instance: String },
    #[error("expired on {}", time_text(*.0))]
    Expired(UnixTime),
    #[error("not valid before {}", time_text(*.0))]
    NotYetValid(UnixTime),
    #[error("revoked (license id {0})")]
    Revoked(String),
}

/// A license whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub claims: Claims,
    /// The algorithm and key id that verified it.
    pub alg: Algorithm,
    pub kid: Option<String>,
}

impl AsRef<Claims> for License {
    fn as_ref(&self) -> &Claims {
        &self.claims
    }
}

/// Verifies license tokens against the configured keys and binding.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<PublicKey>,
    issuer: Option<String>,
    instance_id: String,
    leeway_secs: i64,
    check_audience: bool,
}

impl Verifier {
    /// A verifier trusting `keys`, requiring `issuer` when set, for this `instance_id`,
    /// tolerating `leeway_secs` of clock difference on `nbf`/`exp` checks.
    pub fn new(
        keys: Vec<PublicKey>,
        issuer: Option<String>,
        instance_id: String,
        leeway_secs: i64,
    ) -> Verifier {
        Verifier {
            keys,
            issuer,
            instance_id,
            leeway_secs,
            check_audience: true,
        }
    }

    /// A verifier that checks signatures and claims but not the audience (for
    /// `license inspect` when no instance id is given).
    pub fn without_audience_check(keys: Vec<PublicKey>) -> Verifier {
        Verifier {
            keys,
            issuer: None,
            instance_id: String::new(),
            leeway_secs: 0,
            check_audience: false,
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn leeway_secs(&self) -> i64 {
        self.leeway_secs
    }

    /// Verifies `token`: size, header, algorithm, key, signature, claims, issuer and
    /// audience. Dates are not judged here (an expired license still verifies, so its
    /// status can say so); see [`Verifier::verify_for_install`].
    pub fn verify(&self, token: &str) -> Result<License, Rejection> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Rejection::Empty);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::TooLarge { size: token.len() });
        }
        let header = decode_header(token)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| Rejection::Malformed("the header has no \"alg\"".into()))?;
        let alg = Algorithm::from_name(alg_name)
            .ok_or_else(|| Rejection::AlgorithmNotAllowed(alg_name.to_string()))?;
        // `kid` only selects among configured keys; `jku`, `x5u`, `jwk` are ignored.
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(Rejection::Malformed("\"kid\" is not a string".into())),
        };
        let candidates: Vec<&PublicKey> = match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| Rejection::UnknownKid(kid.to_string()))?;
                if key.alg != alg {
                    return Err(Rejection::AlgorithmMismatch {
                        kid: kid.to_string(),
                        token_alg: alg_name.to_string(),
                        key_alg: key.alg,
                    });
                }
                vec![key]
            }
            None => self.keys.iter().filter(|k| k.alg == alg).collect(),
        };
        if candidates.is_empty() {
            return Err(Rejection::NoKeyForAlgorithm(alg));
        }
        let mut validation = Validation::new(alg.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let payload = candidates
            .iter()
            .find_map(|key| jsonwebtoken::decode::<Value>(token, &key.key, &validation).ok())
            .ok_or(Rejection::BadSignature)?
            .claims;
        let claims = Claims::try_from(&payload)?;
        if let Some(expected) = &self.issuer {
            if claims.iss.as_deref() != Some(expected.as_str()) {
                return Err(Rejection::WrongIssuer {
                    expected: expected.clone(),
                    got: claims
                        .iss
                        .as_ref()
                        .map(|i| format!("\"{i}\""))
                        .unwrap_or_else(|| "nobody (no \"iss\" claim)".into()),
                });
            }
        }
        if self.check_audience && !claims.binds_to(&self.instance_id) {
            return Err(Rejection::WrongAudience {
                bound: if claims.aud.is_empty() {
                    "nothing (no \"aud\" claim; use \"*\" for any instance)".into()
                } else {
                    claims.aud.join(", ")
                },
                instance: self.instance_id.clone(),
            });
        }
        Ok(License {
            claims,
            alg,
            kid: kid.map(str::to_string),
        })
    }

    /// [`Verifier::verify`], then refuses a license that cannot be used at `now`:
    /// past its last day of use (`exp` + grace + read-only days, from `policy`) or not
    /// valid yet (`nbf`), with the configured leeway.
    pub fn verify_for_install(
        &self,
        token: &str,
        now: UnixTime,
        policy: &super::status::StatusPolicy,
    ) -> Result<License, Rejection> {
        let license = self.verify(token)?;
        let claims = &license.claims;
        if let Some(nbf) = claims.nbf {
            if now + self.leeway_secs < nbf {
                return Err(Rejection::NotYetValid(nbf));
            }
        }
        if now - self.leeway_secs >= policy.usable_until(claims) {
            return Err(Rejection::Expired(claims.exp));
        }
        Ok(license)
    }
}

/// Decodes the JOSE header without trusting it.
fn decode_header(token: &str) -> Result<serde_json::Map<String, Value>, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed(
            "expected three base64url parts separated by dots".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| Rejection::Malformed("the header is not base64url".into()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Rejection::Malformed(
            "the header is not a JSON object".into(),
        )),
    }
}

/// Reads the claims of `token` without verifying anything (for display by
/// `license inspect`, and to attribute an unverifiable file to a tenant).
pub(crate) fn unverified_claims(token: &str) -> Option<(serde_json::Map<String, Value>, Value)> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let header = decode_header(token).ok()?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    Some((header, serde_json::from_slice(&bytes).ok()?))
}
