//! Offline (air-gapped) activation: files instead of a connection.
//!
//! The installation writes a request file signed by its instance key
//! (`{"request": {...}, "signature": "<base64 Ed25519>"}`, the signature over the exact
//! bytes of `request`). The vendor turns it into a response file with
//! `licgate authority offline activate` (or any connected machine with
//! `POST /v1/offline/activations`): `{"response": {...}, "signature": "alg=…, sig=…"}`,
//! signed by the vendor key over the exact bytes of `response`. A deactivation
//! request frees the slot the same way and gets a signed receipt.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::protocol::{verify_answer, Signer};
use crate::license::instance_key::{InstanceKey, InstancePublicKey};
use crate::license::{PublicKey, UnixTime};

/// The `format` of request files.
pub const REQUEST_FORMAT: &str = "licgate-offline-request/1";
/// The `format` of response files.
pub const RESPONSE_FORMAT: &str = "licgate-offline-response/1";
/// How old a request file may be when the vendor answers it.
pub const MAX_REQUEST_AGE_SECS: i64 = 90 * 86_400;

/// What an offline request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfflineKind {
    Activate,
    Deactivate,
}

/// The signed content of a request file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    pub format: String,
    pub kind: OfflineKind,
    /// The license key (activation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
    /// The activation to free (deactivation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<String>,
    pub instance_id: String,
    pub instance_public_key: String,
    pub hostname: String,
    pub nonce: String,
    pub created_at: UnixTime,
}

/// The signed content of a response file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineResponse {
    pub format: String,
    pub kind: OfflineKind,
    pub activation_id: String,
    pub license_id: String,
    pub instance_id: String,
    /// The license token (activation); `null` for a deactivation receipt.
    pub token: Option<String>,
    pub token_expires_at: Option<UnixTime>,
    pub heartbeat_interval: u64,
    /// The request's nonce: the installation matches the response to its request.
    pub nonce: String,
    pub server_time: UnixTime,
}

#[derive(Deserialize)]
struct RequestFile<'a> {
    #[serde(borrow)]
    request: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct ResponseFile<'a> {
    #[serde(borrow)]
    response: &'a RawValue,
    signature: String,
}

/// Why a request or response file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    #[error("not a licgate offline file: {0}")]
    Malformed(String),
    #[error("the signature does not verify: the file was changed or signed by another key")]
    BadSignature,
    #[error("the request was made {0} days ago: make a new one")]
    TooOld(i64),
}

/// The request file of `request`, signed by `key`.
pub fn write_request(request: &OfflineRequest, key: &InstanceKey) -> String {
    use base64::Engine as _;
    let body = serde_json::to_string_pretty(request).expect("a request serializes");
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(body.as_bytes()));
    format!("{{\"request\": {body},\n\"signature\": \"{signature}\"}}\n")
}

/// The request in `file` when the instance key it names signed it and it is recent
/// at `now`.
pub fn read_request(file: &[u8], now: UnixTime) -> Result<OfflineRequest, OfflineError> {
    use base64::Engine as _;
    let malformed = |e: String| OfflineError::Malformed(e);
    let envelope: RequestFile<'_> =
        serde_json::from_slice(file).map_err(|e| malformed(e.to_string()))?;
    let signed = envelope.request.get().as_bytes();
    let request: OfflineRequest =
        serde_json::from_slice(signed).map_err(|e| malformed(e.to_string()))?;
    if request.format != REQUEST_FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {REQUEST_FORMAT:?}",
            request.format
        )));
    }
    match request.kind {
        OfflineKind::Activate if request.license_key.is_none() => {
            return Err(malformed("an activation request needs license_key".into()))
        }
        OfflineKind::Deactivate if request.activation_id.is_none() => {
            return Err(malformed(
                "a deactivation request needs activation_id".into(),
            ))
        }
        _ => {}
    }
    let key = InstancePublicKey::from_pem(&request.instance_public_key)
        .map_err(|e| malformed(format!("instance_public_key: {e}")))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(envelope.signature.trim())
        .map_err(|_| OfflineError::BadSignature)?;
    if !key.verifies(signed, &signature) {
        return Err(OfflineError::BadSignature);
    }
    let age = now - request.created_at;
    if age > MAX_REQUEST_AGE_SECS {
        return Err(OfflineError::TooOld(age / 86_400));
    }
    Ok(request)
}

/// The response file of `response`, signed by the vendor key.
pub fn write_response(
    response: &OfflineResponse,
    signer: &Signer,
) -> Result<String, jsonwebtoken::errors::Error> {
    let body = serde_json::to_string_pretty(response).expect("a response serializes");
    let signature = signer.sign_answer(body.as_bytes())?;
    Ok(format!(
        "{{\"response\": {body},\n\"signature\": {}}}\n",
        serde_json::Value::String(signature)
    ))
}

/// The response in `file` when `key` (the vendor's) signed it.
pub fn read_response(file: &[u8], key: &PublicKey) -> Result<OfflineResponse, OfflineError> {
    let envelope: ResponseFile<'_> =
        serde_json::from_slice(file).map_err(|e| OfflineError::Malformed(e.to_string()))?;
    let signed = envelope.response.get().as_bytes();
    if !verify_answer(&envelope.signature, signed, key) {
        return Err(OfflineError::BadSignature);
    }
    let response: OfflineResponse =
        serde_json::from_slice(signed).map_err(|e| OfflineError::Malformed(e.to_string()))?;
    if response.format != RESPONSE_FORMAT {
        return Err(OfflineError::Malformed(format!(
            "format {:?}, expected {RESPONSE_FORMAT:?}",
            response.format
        )));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_back_only_unchanged_and_recent() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(&dir.path().join("k.pem")).unwrap();
        let request = OfflineRequest {
            format: REQUEST_FORMAT.into(),
            kind: OfflineKind::Activate,
            license_key: Some("LG-00000-00000-00000-00000-00000".into()),
            activation_id: None,
            instance_id: "inst-1".into(),
            instance_public_key: key.public_key_pem(),
            hostname: "erp".into(),
            nonce: "0123456789abcdef".into(),
            created_at: 1_000,
        };
        let file = write_request(&request, &key);
        assert_eq!(read_request(file.as_bytes(), 2_000).unwrap(), request);
        let changed = file.replace("inst-1", "inst-2");
        assert_eq!(
            read_request(changed.as_bytes(), 2_000).unwrap_err(),
            OfflineError::BadSignature
        );
        assert!(matches!(
            read_request(file.as_bytes(), 1_000 + MAX_REQUEST_AGE_SECS + 86_400),
            Err(OfflineError::TooOld(91))
        ));
        assert!(matches!(
            read_request(b"{}", 0),
            Err(OfflineError::Malformed(_))
        ));
    }
}
