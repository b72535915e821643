//! Why the authority refuses a request: one variant per stable `error_code`, each with
//! its HTTP status, a sentence for people and structured details for programs.

use http::StatusCode;
use serde_json::{json, Value};

/// A refusal the API answers with (problem+json).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No license has this key (or the key is not well-formed). Tells nothing else.
    #[error("no license has this key")]
    KeyUnknown,
    /// The key's check character is wrong: a typo, caught before any lookup.
    #[error("the license key has a typo: its check character does not match")]
    KeyCheckFailed,
    #[error("the license is active on {active} of {max} installations: deactivate one first")]
    LimitReached { max: u32, active: u32 },
    #[error("the license is suspended")]
    Suspended,
    #[error("the license is revoked")]
    Revoked,
    #[error("the license has expired")]
    Expired,
    #[error("the activation was deactivated or culled: activate again")]
    ActivationGone,
    #[error("the request's signature does not verify: {0}")]
    SignatureInvalid(String),
    #[error("this nonce was already used: the request is a replay")]
    Replayed,
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("too many attempts: retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the database is unavailable")]
    Unavailable,
}

impl Refusal {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::KeyUnknown => "LICENSE_KEY_UNKNOWN",
            Refusal::KeyCheckFailed => "KEY_CHECK_FAILED",
            Refusal::LimitReached { .. } => "ACTIVATION_LIMIT_REACHED",
            Refusal::Suspended => "LICENSE_SUSPENDED",
            Refusal::Revoked => "LICENSE_REVOKED",
            Refusal::Expired => "LICENSE_EXPIRED",
            Refusal::ActivationGone => "ACTIVATION_GONE",
            Refusal::SignatureInvalid(_) => "SIGNATURE_INVALID",
            Refusal::Replayed => "REPLAYED",
            Refusal::BadRequest(_) => "BAD_REQUEST",
            Refusal::TooLarge(_) => "PAYLOAD_TOO_LARGE",
            Refusal::NotFound { .. } => "NOT_FOUND",
            Refusal::Conflict(_) => "CONFLICT",
            Refusal::Unauthorized => "UNAUTHORIZED",
            Refusal::RateLimited { .. } => "RATE_LIMITED",
            Refusal::Unavailable => "DATABASE_UNAVAILABLE",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::KeyUnknown | Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
            Refusal::KeyCheckFailed | Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::LimitReached { .. }
            | Refusal::Suspended
            | Refusal::Revoked
            | Refusal::Expired => StatusCode::FORBIDDEN,
            Refusal::ActivationGone => StatusCode::GONE,
            Refusal::SignatureInvalid(_) | Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::Replayed | Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Structured extras (`details`).
    pub fn details(&self) -> Value {
        match self {
            Refusal::LimitReached { max, active } => {
                json!({"max_activations": max, "active": active})
            }
            Refusal::RateLimited { retry_after } => json!({"retry_after": retry_after}),
            _ => json!({}),
        }
    }
}

/// What a store operation can fail with: a refusal to answer, or the database.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl AuthorityError {
    /// The refusal to answer with (a database failure is `DATABASE_UNAVAILABLE`).
    pub fn refusal(&self) -> Refusal {
        match self {
            AuthorityError::Refused(r) => r.clone(),
            AuthorityError::Database(_) => Refusal::Unavailable,
        }
    }
}

/// Shorthand for a store result.
pub type Outcome<T> = Result<T, AuthorityError>;
