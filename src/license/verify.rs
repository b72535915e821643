//! License token verification: size, algorithm pinning, key selection, signature,
//! claims, issuer and audience. Every rejection carries a reason fit for an operator.

use base64::Engine as _;
use jsonwebtoken::Validation;
use serde_json::Value;

use super::batch::{verify_batch, Signed};
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

    /// The keys that verify licenses (and the license server's answers).
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
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
        self.verify_prepared(&self.prepare(token)?)
    }

    /// [`Verifier::verify`] of each of `tokens`, in order, with the same answers.
    /// Ed25519 signatures made with one key are verified in batches (a batch that
    /// fails is verified again one by one, so a bad token never costs the others).
    pub fn verify_many(&self, tokens: &[&str]) -> Vec<Result<License, Rejection>> {
        let prepared: Vec<Result<Prepared<'_>, Rejection>> =
            tokens.iter().map(|t| self.prepare(t)).collect();
        let mut verified: Vec<Option<Result<License, Rejection>>> =
            (0..tokens.len()).map(|_| None).collect();
        for (key_index, key) in self.keys.iter().enumerate() {
            let Some(batch_key) = &key.ed25519 else {
                continue;
            };
            let mut members: Vec<(usize, &Prepared<'_>, [u8; 64])> = Vec::new();
            for (i, p) in prepared.iter().enumerate() {
                // Only what the one-by-one path would check the signature of.
                let Ok(p) = p else { continue };
                let header_agrees =
                    || jsonwebtoken::decode_header(p.token).is_ok_and(|h| h.alg == p.alg.jwt());
                if p.candidates == [key_index] && header_agrees() {
                    if let Some(signature) = p.signature() {
                        members.push((i, p, signature));
                    }
                }
            }
            let batch: Vec<Signed<'_>> = members
                .iter()
                .map(|(_, p, signature)| Signed {
                    message: p.signing_input().as_bytes(),
                    signature,
                })
                .collect();
            let mut good = vec![false; batch.len()];
            for (from, chunk) in (0..batch.len()).step_by(BATCH).zip(batch.chunks(BATCH)) {
                mark_verified(batch_key, chunk, &mut good[from..from + chunk.len()]);
            }
            for ((i, p, _), good) in members.iter().zip(good) {
                // A payload that does not decode: the one-by-one path says why.
                if let Some(payload) = p.payload().filter(|_| good) {
                    verified[*i] = Some(self.finish(p, &payload));
                }
            }
        }
        prepared
            .into_iter()
            .zip(verified)
            .map(|(p, done)| match done {
                Some(result) => result,
                None => p.and_then(|p| self.verify_prepared(&p)),
            })
            .collect()
    }

    /// Every check of `token` that comes before its signature: size, header,
    /// algorithm, key selection.
    fn prepare<'t>(&self, token: &'t str) -> Result<Prepared<'t>, Rejection> {
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
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Rejection::Malformed("\"kid\" is not a string".into())),
        };
        let candidates: Vec<usize> = match &kid {
            Some(kid) => {
                let (index, key) = self
                    .keys
                    .iter()
                    .enumerate()
                    .find(|(_, k)| k.kid.as_deref() == Some(kid.as_str()))
                    .ok_or_else(|| Rejection::UnknownKid(kid.clone()))?;
                if key.alg != alg {
                    return Err(Rejection::AlgorithmMismatch {
                        kid: kid.clone(),
                        token_alg: alg_name.to_string(),
                        key_alg: key.alg,
                    });
                }
                vec![index]
            }
            None => (0..self.keys.len())
                .filter(|&i| self.keys[i].alg == alg)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(Rejection::NoKeyForAlgorithm(alg));
        }
        Ok(Prepared {
            token,
            alg,
            kid,
            candidates,
        })
    }

    /// The signature of `prepared`, checked against each candidate key, then
    /// [`Verifier::finish`].
    fn verify_prepared(&self, prepared: &Prepared<'_>) -> Result<License, Rejection> {
        let mut validation = Validation::new(prepared.alg.jwt());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let payload = prepared
            .candidates
            .iter()
            .find_map(|&key| {
                jsonwebtoken::decode::<Value>(prepared.token, &self.keys[key].key, &validation).ok()
            })
            .ok_or(Rejection::BadSignature)?
            .claims;
        self.finish(prepared, &payload)
    }

    /// The checks after the signature: claims, issuer, audience.
    fn finish(&self, prepared: &Prepared<'_>, payload: &Value) -> Result<License, Rejection> {
        let claims = Claims::try_from(payload)?;
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
            alg: prepared.alg,
            kid: prepared.kid.clone(),
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

/// Signatures verified together in one batch: large enough that the batch's fixed
/// cost is spread thin (per signature, 1,024 cost a fifth of one by one).
const BATCH: usize = 1024;

/// Below this many signatures a failed batch is not split again: they are left to
/// the one-by-one path.
const SMALLEST_BATCH: usize = 8;

/// Marks in `good` the signatures of `batch` that verify together: the whole batch
/// when it verifies; else each half, recursively, down to [`SMALLEST_BATCH`]. A bad
/// signature costs a few batches of ever smaller halves, not its whole batch.
fn mark_verified(key: &super::batch::Ed25519Key, batch: &[Signed<'_>], good: &mut [bool]) {
    if verify_batch(key, batch) {
        good.fill(true);
    } else if batch.len() >= SMALLEST_BATCH {
        let half = batch.len() / 2;
        let (left, right) = good.split_at_mut(half);
        mark_verified(key, &batch[..half], left);
        mark_verified(key, &batch[half..], right);
    }
}

/// A token that passed every check before its signature.
struct Prepared<'t> {
    /// The token, trimmed; three dot-separated parts.
    token: &'t str,
    alg: Algorithm,
    kid: Option<String>,
    /// Indexes of the configured keys that may have signed it.
    candidates: Vec<usize>,
}

impl Prepared<'_> {
    /// What was signed: the header and payload parts with the dot between them.
    fn signing_input(&self) -> &str {
        self.token
            .rsplit_once('.')
            .map_or(self.token, |(input, _)| input)
    }

    /// The 64 signature bytes, when the last part decodes to exactly that.
    fn signature(&self) -> Option<[u8; 64]> {
        let (_, signature) = self.token.rsplit_once('.')?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .ok()?
            .try_into()
            .ok()
    }

    /// The payload as JSON, when it decodes.
    fn payload(&self) -> Option<Value> {
        let payload = self.token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
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
