//! The HTTP calls to the license authority, and the checks on their answers: every
//! answer that changes what the gateway enforces must be signed by a vendor key of
//! `license.public_keys`, echo the request's nonce and name this instance; anything
//! else is refused before it is acted on.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::authority::protocol::{
    sign_request, ActivationAnswer, ActivationRequest, DeactivationAnswer, HeartbeatAnswer,
    InstanceAnswer, DATE_HEADER, SIGNATURE_HEADER,
};
use crate::config::AuthorityLinkConfig;
use crate::license::instance_key::InstanceKey;
use crate::license::{PublicKey, UnixTime};

/// The largest answer read from the authority.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Which call was made (`licgate_authority_requests_total{call}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Activate,
    Heartbeat,
    Deactivate,
    /// A replica fetching the installation's activations.
    Sync,
}

impl Call {
    pub const ALL: [Call; 4] = [
        Call::Activate,
        Call::Heartbeat,
        Call::Deactivate,
        Call::Sync,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Call::Activate => "activate",
            Call::Heartbeat => "heartbeat",
            Call::Deactivate => "deactivate",
            Call::Sync => "sync",
        }
    }
}

/// The authority's refusal (its problem+json answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub status: u16,
    /// The authority's `error_code` (`ACTIVATION_LIMIT_REACHED`, …).
    pub code: String,
    /// The authority's explanation.
    pub message: String,
    pub details: serde_json::Value,
    /// Whether the vendor key signed it with this request's nonce (only such a
    /// refusal may take a license away).
    pub signed: bool,
}

/// Why a call did not give a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, timeout, TLS failure, or a 5xx.
    #[error("the license server cannot be reached: {0}")]
    Unreachable(String),
    /// The authority said no.
    #[error("the license server refused: {} ({})", .0.message, .0.code)]
    Refused(Box<Refused>),
    /// An answer that cannot be trusted: not JSON, not signed by the vendor, another
    /// nonce (a replay), another instance.
    #[error("the license server's answer was not accepted: {0}")]
    Invalid(String),
}

impl CallError {
    /// The `result` label of `licgate_authority_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Unreachable(_) => "unreachable",
            CallError::Refused(_) => "refused",
            CallError::Invalid(_) => "invalid",
        }
    }
}

/// A client of one authority.
#[derive(Debug, Clone)]
pub struct AuthorityClient {
    http: reqwest::Client,
    /// The base URL, ending with `/`.
    base: Url,
    /// The vendor keys that sign answers (and tokens).
    vendor_keys: Vec<PublicKey>,
}

impl AuthorityClient {
    /// A client for `config`, trusting answers signed by one of `vendor_keys`.
    pub fn new(
        config: &AuthorityLinkConfig,
        vendor_keys: Vec<PublicKey>,
    ) -> Result<AuthorityClient, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("licgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("authority.ca_file {}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("authority.ca_file {}: {e}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the authority client: {e}"))?;
        let mut base = config.url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(AuthorityClient {
            http,
            base,
            vendor_keys,
        })
    }

    /// The authority's base URL (for messages).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `POST /v1/activations`: the answer, signed and for this request.
    pub async fn activate(
        &self,
        request: &ActivationRequest,
    ) -> Result<ActivationAnswer, CallError> {
        let body = serde_json::to_vec(request).expect("a request serializes");
        let answer: ActivationAnswer = self
            .send(
                reqwest::Method::POST,
                "v1/activations",
                body,
                None,
                &request.nonce,
                None,
            )
            .await?;
        if answer.instance_id != request.instance_id {
            return Err(CallError::Invalid(format!(
                "the answer is for instance {}, not this one",
                answer.instance_id
            )));
        }
        Ok(answer)
    }

    /// `POST /v1/activations/{id}/heartbeat`, signed by `key`, with `usage_report`
    /// (a report file's exact text) when given.
    pub async fn heartbeat(
        &self,
        activation_id: &str,
        key: &InstanceKey,
        nonce: &str,
        usage_report: Option<&str>,
        now: UnixTime,
    ) -> Result<HeartbeatAnswer, CallError> {
        let mut body = format!("{{\"nonce\":{}", serde_json::Value::from(nonce));
        if let Some(report) = usage_report {
            body.push_str(",\"usage_report\":");
            body.push_str(report.trim_end());
        }
        body.push('}');
        let path = format!("v1/activations/{}/heartbeat", segment(activation_id));
        let signing = Some((key, now));
        let answer: HeartbeatAnswer = self
            .send(
                reqwest::Method::POST,
                &path,
                body.into_bytes(),
                signing,
                nonce,
                Some(activation_id),
            )
            .await?;
        if answer.activation_id != activation_id {
            return Err(CallError::Invalid(format!(
                "the answer is for activation {}, not {activation_id}",
                answer.activation_id
            )));
        }
        Ok(answer)
    }

    /// `POST /v1/instances/{instance_id}/activations`, signed by `key`: the
    /// instance's active activations with fresh tokens.
    pub async fn instance(
        &self,
        instance_id: &str,
        key: &InstanceKey,
        nonce: &str,
        now: UnixTime,
    ) -> Result<InstanceAnswer, CallError> {
        let body = serde_json::to_vec(&serde_json::json!({ "nonce": nonce })).expect("serializes");
        let path = format!("v1/instances/{}/activations", segment(instance_id));
        let answer: InstanceAnswer = self
            .send(
                reqwest::Method::POST,
                &path,
                body,
                Some((key, now)),
                nonce,
                None,
            )
            .await?;
        if answer.instance_id != instance_id {
            return Err(CallError::Invalid(format!(
                "the answer is for instance {}, not this one",
                answer.instance_id
            )));
        }
        Ok(answer)
    }

    /// `DELETE /v1/activations/{id}`, signed by `key`.
    pub async fn deactivate(
        &self,
        activation_id: &str,
        key: &InstanceKey,
        nonce: &str,
        now: UnixTime,
    ) -> Result<DeactivationAnswer, CallError> {
        let body = serde_json::to_vec(&serde_json::json!({ "nonce": nonce })).expect("serializes");
        let path = format!("v1/activations/{}", segment(activation_id));
        self.send(
            reqwest::Method::DELETE,
            &path,
            body,
            Some((key, now)),
            nonce,
            Some(activation_id),
        )
        .await
    }

    /// Sends `body` to `path` (relative to the base; signed by the instance key when
    /// `signing` is given) and reads a signed answer carrying `nonce`.
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        signing: Option<(&InstanceKey, UnixTime)>,
        nonce: &str,
        activation: Option<&str>,
    ) -> Result<T, CallError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| CallError::Invalid(format!("bad URL for {path}: {e}")))?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .header("content-type", "application/json");
        if let Some((key, now)) = signing {
            // Signed over the API path the authority routes (`/v1/…`), whatever
            // prefix the base URL has in front of it.
            let (date, signature) =
                sign_request(key, method.as_str(), &format!("/{path}"), now, &body);
            request = request
                .header(DATE_HEADER, date)
                .header(SIGNATURE_HEADER, signature);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        let status = response.status();
        let signature = response
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(response).await?;
        check_answer(
            &Answer {
                status: status.as_u16(),
                signature: signature.as_deref(),
                body: &bytes,
            },
            &self.vendor_keys,
            nonce,
            activation,
        )
    }
}

/// An answer as it came from the authority.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    /// Its `Licgate-Signature` header.
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// The answer `T` in `answer` when it is a success signed by one of `vendor_keys`
/// echoing `nonce`; else why not: a 5xx is `Unreachable`, a 4xx a `Refused` (signed
/// only when it also echoes the nonce and `activation`). Never panics.
pub fn check_answer<T: DeserializeOwned>(
    answer: &Answer<'_>,
    vendor_keys: &[PublicKey],
    nonce: &str,
    activation: Option<&str>,
) -> Result<T, CallError> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = answer.body;
    if status.is_server_error() {
        return Err(CallError::Unreachable(format!(
            "HTTP {status}: {}",
            problem_text(bytes).unwrap_or_else(|| "no explanation".into())
        )));
    }
    let signed = answer.signature.is_some_and(|s| {
        vendor_keys
            .iter()
            .any(|k| crate::authority::protocol::verify_answer(s, bytes, k))
    });
    if !status.is_success() {
        return Err(CallError::Refused(Box::new(refusal(
            status, bytes, signed, nonce, activation,
        ))));
    }
    if !signed {
        return Err(CallError::Invalid(match answer.signature {
            None => "it is not signed (no Licgate-Signature)".into(),
            Some(_) => "its signature is not by a vendor key of license.public_keys".into(),
        }));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| CallError::Invalid(format!("not JSON: {e}")))?;
    if value.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err(CallError::Invalid(
            "it answers another request (its nonce is not this request's): a replay".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| CallError::Invalid(format!("unexpected answer: {e}")))
}

/// `id` as one URL path segment (an id never holds `/`, but the server's input is
/// not trusted).
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// Reads at most [`MAX_ANSWER_BYTES`] of the answer.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::Unreachable(describe(&e)))?
    {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Invalid(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The refusal in a problem+json body (`signed` only counts when the body also
/// carries this request's nonce and, for an activation's call, its id).
fn refusal(
    status: StatusCode,
    bytes: &[u8],
    signed: bool,
    nonce: &str,
    activation_id: Option<&str>,
) -> Refused {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let details = value.get("details").cloned().unwrap_or_default();
    let echoed = details.get("nonce").and_then(|n| n.as_str()) == Some(nonce)
        && activation_id
            .is_none_or(|id| details.get("activation_id").and_then(|a| a.as_str()) == Some(id));
    Refused {
        status: status.as_u16(),
        code: text("error_code").unwrap_or_else(|| format!("HTTP_{}", status.as_u16())),
        message: text("detail")
            .or_else(|| text("error"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_string()),
        details,
        signed: signed && echoed,
    }
}

/// The explanation of a problem+json body, if it is one.
fn problem_text(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("detail")?.as_str().map(str::to_string)
}

/// A transport error in one line, without the URL's query (there is none) or body.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
