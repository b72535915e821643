//! Why an activation or a deactivation did not happen, in the words the activation
//! page, the JSON answers and the CLI use.

use super::client::{CallError, Refused};
use crate::authority::key::KeyError;

/// Why a license key was not activated. Nothing is installed in every case.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The text is not of the key's form, or its check character is wrong.
    #[error("{0}")]
    Key(KeyError),
    #[error(transparent)]
    Call(#[from] CallError),
    /// The authority's token was refused here (another tenant, bad signature…); the
    /// slot it took was given back.
    #[error("the license server's license was not installed: {0}")]
    Install(String),
}

impl ActivateError {
    /// The HTTP status of the JSON answer.
    pub fn status(&self) -> u16 {
        match self {
            ActivateError::Key(_) => 400,
            ActivateError::Call(CallError::Refused(r)) if r.status < 500 => r.status,
            ActivateError::Call(CallError::Refused(_) | CallError::Unreachable(_)) => 503,
            ActivateError::Call(CallError::Invalid(_)) => 502,
            ActivateError::Install(_) => 422,
        }
    }

    /// The `error_code` (the authority's own for its refusals).
    pub fn code(&self) -> String {
        match self {
            ActivateError::Key(KeyError::Check) => "KEY_CHECK_FAILED".into(),
            ActivateError::Key(KeyError::Format) => "LICENSE_INVALID".into(),
            ActivateError::Call(CallError::Refused(r)) => r.code.clone(),
            ActivateError::Call(CallError::Unreachable(_)) => "AUTHORITY_UNAVAILABLE".into(),
            ActivateError::Call(CallError::Invalid(_)) => "AUTHORITY_ANSWER_INVALID".into(),
            ActivateError::Install(_) => "LICENSE_INVALID".into(),
        }
    }

    /// What the person activating reads.
    pub fn explanation(&self) -> String {
        match self {
            ActivateError::Key(KeyError::Check) => "This license key has a typo: its last character does not match the others. Compare it with the key your vendor sent.".into(),
            ActivateError::Key(KeyError::Format) => "This is neither a license key (LG-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX) nor a signed license.".into(),
            ActivateError::Call(CallError::Refused(r)) => refusal_text(r),
            ActivateError::Call(CallError::Unreachable(why)) => format!(
                "The license server cannot be reached ({why}). Try again later, or activate offline with an activation request file."
            ),
            ActivateError::Call(CallError::Invalid(why)) => format!(
                "The license server's answer could not be trusted ({why}); nothing was installed. Activate offline, or ask your vendor."
            ),
            ActivateError::Install(why) => format!("The license server's license was not installed: {why}."),
        }
    }

    /// Details for the JSON answer (the authority's, for its refusals).
    pub fn details(&self) -> serde_json::Value {
        match self {
            ActivateError::Call(CallError::Refused(r)) => {
                let mut details = r.details.clone();
                if let Some(map) = details.as_object_mut() {
                    map.remove("nonce");
                    map.remove("server_time");
                }
                details
            }
            _ => serde_json::json!({}),
        }
    }
}

/// A refusal of the authority in the words the activation page uses.
fn refusal_text(r: &Refused) -> String {
    let number = |key: &str| r.details.get(key).and_then(|v| v.as_u64());
    match r.code.as_str() {
        "ACTIVATION_LIMIT_REACHED" => match (number("active"), number("max_activations")) {
            (Some(active), Some(max)) => format!(
                "This key is active on {active} of {max} installations. Deactivate one, or ask your vendor for more."
            ),
            _ => "This key is active on as many installations as it allows. Deactivate one, or ask your vendor for more.".into(),
        },
        "LICENSE_KEY_UNKNOWN" => "The license server does not know this key. Compare it with the key your vendor sent.".into(),
        "KEY_CHECK_FAILED" => "This license key has a typo: its last character does not match the others.".into(),
        "LICENSE_SUSPENDED" => "This license is suspended. Ask your vendor to reinstate it.".into(),
        "LICENSE_REVOKED" => "This license was revoked by the vendor.".into(),
        "LICENSE_EXPIRED" => "This license has expired. Ask your vendor to renew it.".into(),
        "RATE_LIMITED" => "Too many activation attempts: wait a minute and try again.".into(),
        _ => format!("The license server refused: {} ({}).", r.message, r.code),
    }
}

/// Why a deactivation did not happen (what was done before stays done).
#[derive(Debug, thiserror::Error)]
pub enum DeactivateError {
    #[error("tenant {0} has no activation at the license server")]
    NoActivation(String),
    /// The authority could not be told: the license stays installed.
    #[error("{error}; nothing was removed for license {license_id} (write an offline deactivation request instead)")]
    Call {
        license_id: String,
        #[source]
        error: CallError,
    },
    /// The slot was freed but the license could not be removed here.
    #[error("deactivated at the license server, but the license could not be removed here: {0}")]
    Store(String),
}
