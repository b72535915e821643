//! What gateways and the authority say to each other: the JSON of the gateway-facing
//! API, the instance's request signatures, and the vendor's answer signatures.
//!
//! - A request that acts on an activation (heartbeat, deactivation) carries
//!   `Licgate-Date` (Unix seconds) and `Licgate-Signature` (base64 Ed25519 by the
//!   instance key registered at activation) over [`request_message`]: method, path,
//!   date and the SHA-256 of the body. The body holds a fresh `nonce`.
//! - An answer that changes what a gateway enforces carries the request's `nonce` and
//!   `server_time` in its body, and `Licgate-Signature: alg=…, kid=…, sig=…` over the
//!   exact body bytes, by the vendor's signing key (the key that signs tokens).

use serde::{Deserialize, Serialize};

use crate::license::instance_key::{InstanceKey, InstancePublicKey};
use crate::license::{Algorithm, PublicKey, SigningKey, UnixTime};
use crate::usage::report::sha256_hex;

/// The header with the request's date (Unix seconds).
pub const DATE_HEADER: &str = "licgate-date";
/// The header with a request's (instance) or an answer's (vendor) signature.
pub const SIGNATURE_HEADER: &str = "licgate-signature";
/// How far a signed request's date may be from the authority's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// `POST /v1/activations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    pub license_key: String,
    pub instance_id: String,
    /// SPKI PEM of the instance's Ed25519 key.
    pub instance_public_key: String,
    pub hostname: String,
    pub nonce: String,
}

/// The answer to an activation (online or offline): a token for the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationAnswer {
    pub activation_id: String,
    pub license_id: String,
    pub instance_id: String,
    pub token: String,
    /// Seconds between heartbeats.
    pub heartbeat_interval: u64,
    /// Renew before this time (Unix seconds): half-way through the token's life.
    pub refresh_before: UnixTime,
    /// When the token expires (Unix seconds).
    pub token_expires_at: UnixTime,
    pub nonce: String,
    pub server_time: UnixTime,
}

/// `POST /v1/activations/{id}/heartbeat` (signed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest<'a> {
    pub nonce: String,
    /// A usage report file (`licgate usage export`), verbatim.
    #[serde(borrow, default)]
    pub usage_report: Option<&'a serde_json::value::RawValue>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub activation_id: String,
    /// The license's status: `active`, `suspended`, `revoked`, `expired`.
    pub status: String,
    /// A renewed token while the license is active; `null` otherwise.
    pub token: Option<String>,
    pub token_expires_at: Option<UnixTime>,
    pub refresh_before: Option<UnixTime>,
    /// Licenses of the tenant the installation must stop honouring.
    pub revoked_license_ids: Vec<String>,
    /// Seconds until the next heartbeat.
    pub next_heartbeat: u64,
    /// What became of the usage report sent with the heartbeat, if any.
    pub usage_report: Option<super::store::usage::Received>,
    pub nonce: String,
    pub server_time: UnixTime,
}

/// `POST /v1/instances/{instance_id}/activations` (signed by the instance key): a
/// replica of a fleet asks for the installation's activations and their tokens.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    pub nonce: String,
}

/// One active activation of an instance, with its current token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActivation {
    pub activation_id: String,
    pub license_id: String,
    pub tenant: String,
    /// The license's status: a token only while `active`.
    pub status: String,
    pub token: Option<String>,
    pub token_expires_at: Option<UnixTime>,
    pub heartbeat_interval: u64,
}

/// The answer to an instance request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAnswer {
    pub instance_id: String,
    pub activations: Vec<InstanceActivation>,
    pub nonce: String,
    pub server_time: UnixTime,
}

/// `DELETE /v1/activations/{id}` (signed).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeactivationRequest {
    pub nonce: String,
}

/// The answer to a deactivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationAnswer {
    pub activation_id: String,
    pub status: String,
    pub nonce: String,
    pub server_time: UnixTime,
}

/// What an instance signs for a request: method, path, date, SHA-256 of the body.
pub fn request_message(method: &str, path: &str, date: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "licgate-request/1\n{}\n{path}\n{date}\n{}",
        method.to_ascii_uppercase(),
        sha256_hex(body)
    )
    .into_bytes()
}

/// The `(Licgate-Date, Licgate-Signature)` headers of a request signed by `key`.
pub fn sign_request(
    key: &InstanceKey,
    method: &str,
    path: &str,
    now: UnixTime,
    body: &[u8],
) -> (String, String) {
    use base64::Engine as _;
    let date = now.to_string();
    let signature = key.sign(&request_message(method, path, &date, body));
    (
        date,
        base64::engine::general_purpose::STANDARD.encode(signature),
    )
}

/// Checks a signed request against the instance's registered key and the clock:
/// `Err` says what is wrong.
pub fn verify_request(
    key: &InstancePublicKey,
    method: &str,
    path: &str,
    date: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: UnixTime,
) -> Result<(), String> {
    use base64::Engine as _;
    let date = date.ok_or("the Licgate-Date header is missing")?;
    let signature = signature.ok_or("the Licgate-Signature header is missing")?;
    let at: i64 = date
        .trim()
        .parse()
        .map_err(|_| "Licgate-Date must be Unix seconds")?;
    if (at - now).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(format!(
            "Licgate-Date is {} s from the authority's clock (at most {MAX_CLOCK_SKEW_SECS} s)",
            at - now
        ));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| "Licgate-Signature is not base64")?;
    if !key.verifies(&request_message(method, path, date, body), &signature) {
        return Err("not signed by the instance key of this activation".into());
    }
    Ok(())
}

/// The vendor key that signs tokens and answers.
pub struct Signer {
    pub key: SigningKey,
    pub kid: Option<String>,
    pub issuer: String,
    /// The same key parsed once, when it is Ed25519 (jsonwebtoken parses its key at
    /// every signature, which costs as much again as the signature).
    ed25519: Option<ring::signature::Ed25519KeyPair>,
}

impl Signer {
    /// The signer of `key` (read from the PKCS#8 PEM `pem`, to keep an Ed25519 key
    /// parsed).
    pub fn new(key: SigningKey, pem: &str, kid: Option<String>, issuer: String) -> Signer {
        let ed25519 = match key.alg {
            Algorithm::EdDSA => {
                crate::license::keys::pem_body(pem, "PRIVATE KEY").and_then(|der| {
                    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).ok()
                })
            }
            Algorithm::ES256 | Algorithm::RS256 => None,
        };
        Signer {
            key,
            kid,
            issuer,
            ed25519,
        }
    }

    /// The base64url signature of `message` (the JWS signature encoding).
    fn signature(&self, message: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        use base64::Engine as _;
        match &self.ed25519 {
            Some(pair) => Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(pair.sign(message).as_ref())),
            None => jsonwebtoken::crypto::sign(message, &self.key.key, self.key.alg.jwt()),
        }
    }

    /// `claims` as a signed JWT (the header names the algorithm and `kid`).
    pub fn token(
        &self,
        claims: &crate::license::Claims,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        use base64::Engine as _;
        let mut header = jsonwebtoken::Header::new(self.key.alg.jwt());
        header.kid = self.kid.clone();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = serde_json::to_vec(&header).expect("a header serializes");
        let payload = serde_json::to_vec(&claims.to_json()).expect("claims serialize");
        let message = format!("{}.{}", b64(&header), b64(&payload));
        let signature = self.signature(message.as_bytes())?;
        Ok(format!("{message}.{signature}"))
    }

    /// The `Licgate-Signature` value of an answer whose body is `body`.
    pub fn sign_answer(&self, body: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        let sig = self.signature(body)?;
        Ok(match &self.kid {
            Some(kid) => format!("alg={}, kid={kid}, sig={sig}", self.key.alg.name()),
            None => format!("alg={}, sig={sig}", self.key.alg.name()),
        })
    }
}

/// Whether `header` (an answer's `Licgate-Signature`) is `key`'s signature of `body`.
pub fn verify_answer(header: &str, body: &[u8], key: &PublicKey) -> bool {
    let mut alg = None;
    let mut sig = None;
    let mut kid = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("alg", v)) => alg = Algorithm::from_name(v),
            Some(("sig", v)) => sig = Some(v),
            Some(("kid", v)) => kid = Some(v),
            _ => {}
        }
    }
    let (Some(alg), Some(sig)) = (alg, sig) else {
        return false;
    };
    if alg != key.alg || (key.kid.is_some() && key.kid.as_deref() != kid) {
        return false;
    }
    jsonwebtoken::crypto::verify(sig, body, &key.key, alg.jwt()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_only_unchanged_and_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(&dir.path().join("k.pem")).unwrap();
        let public = InstancePublicKey::from_pem(&key.public_key_pem()).unwrap();
        let body = br#"{"nonce":"0123456789abcdef"}"#;
        let path = "/v1/activations/act_1/heartbeat";
        let (date, sig) = sign_request(&key, "POST", path, 1_000, body);
        let check = |method: &str, path: &str, body: &[u8], now| {
            verify_request(&public, method, path, Some(&date), Some(&sig), body, now)
        };
        assert!(check("POST", path, body, 1_000).is_ok());
        assert!(check("POST", path, body, 1_290).is_ok());
        assert!(check("POST", path, body, 1_301)
            .unwrap_err()
            .contains("clock"));
        assert!(check("DELETE", path, body, 1_000).is_err());
        assert!(check("POST", "/v1/activations/act_2/heartbeat", body, 1_000).is_err());
        assert!(check("POST", path, br#"{"nonce":"0123456789abcdeg"}"#, 1_000).is_err());
        assert!(verify_request(&public, "POST", path, None, Some(&sig), body, 1_000).is_err());
    }

    #[test]
    fn answers_verify_with_the_vendor_key_only() {
        let pair = crate::license::keys::generate_ed25519();
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = crate::license::keys::write_key_pair(dir.path(), &pair).unwrap();
        let signer = Signer::new(
            SigningKey::load(&private).unwrap(),
            &pair.private_pem,
            Some("k1".into()),
            "test".into(),
        );
        let header = signer.sign_answer(b"{\"nonce\":\"n\"}").unwrap();
        let key = PublicKey::load(&public, Algorithm::EdDSA, Some("k1".into())).unwrap();
        assert!(verify_answer(&header, b"{\"nonce\":\"n\"}", &key));
        assert!(!verify_answer(&header, b"{\"nonce\":\"m\"}", &key));
        let other = PublicKey::load(&public, Algorithm::EdDSA, Some("k2".into())).unwrap();
        assert!(!verify_answer(&header, b"{\"nonce\":\"n\"}", &other));
        assert!(!verify_answer("alg=EdDSA", b"", &key));
    }
}
