//! Offline activation on the installation's side, shared by the activation page and
//! `licgate activation request|install` / `licgate deactivate --offline`: a request
//! file signed by the instance key (its nonce kept in the store until the answer
//! comes), and the vendor's response file, checked (vendor signature, this instance,
//! the pending nonce) before its token is installed like any other license.

use serde::{Deserialize, Serialize};

use super::records::{ActivationRecord, Records};
use crate::authority::key::{KeyError, LicenseKey};
use crate::authority::offline::{
    self, OfflineKind, OfflineRequest, OfflineResponse, REQUEST_FORMAT,
};
use crate::license::instance_key::InstanceKey;
use crate::license::manager::Installed;
use crate::license::store::{write_atomically, Store};
use crate::license::{LicenseManager, PublicKey, UnixTime};

/// The pending request's nonce, kept in the store between request and response.
const PENDING_FILE: &str = "offline-request.json";

#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    created_at: UnixTime,
}

/// Why an offline file was not made or not installed (nothing changed then).
#[derive(Debug, thiserror::Error)]
pub enum OfflineFileError {
    #[error("KEY_CHECK_FAILED: the license key has a typo (its check character does not match)")]
    KeyCheck,
    #[error("the license key is not of the form LG-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")]
    KeyFormat,
    #[error("not a response signed by the vendor key(s) of license.public_keys")]
    NotSigned,
    #[error("the response is for instance {found}, this is {expected}")]
    OtherInstance { found: String, expected: String },
    #[error("no offline request is pending here: make an activation request first")]
    NothingPending,
    #[error("the response answers another request (its nonce is not the pending request's)")]
    OtherRequest,
    #[error("the response is a deactivation receipt, not an activation")]
    Receipt,
    #[error("{0}")]
    Install(String),
    #[error("{0}")]
    Store(String),
}

/// This installation, as offline files name it.
pub struct Installation<'a> {
    pub store: &'a Store,
    pub instance_id: &'a str,
    pub instance_key: &'a InstanceKey,
    pub hostname: &'a str,
}

impl Installation<'_> {
    /// The signed activation request for `key_text` (its nonce is now the pending one).
    pub fn activation_request(
        &self,
        key_text: &str,
        now: UnixTime,
    ) -> Result<(String, LicenseKey), OfflineFileError> {
        let key = LicenseKey::parse(key_text).map_err(|e| match e {
            KeyError::Check => OfflineFileError::KeyCheck,
            KeyError::Format => OfflineFileError::KeyFormat,
        })?;
        let file = self.request(OfflineKind::Activate, Some(key.to_string()), None, now)?;
        Ok((file, key))
    }

    /// The signed request that frees `activation_id` at the vendor.
    pub fn deactivation_request(
        &self,
        activation_id: &str,
        now: UnixTime,
    ) -> Result<String, OfflineFileError> {
        self.request(
            OfflineKind::Deactivate,
            None,
            Some(activation_id.to_string()),
            now,
        )
    }

    fn request(
        &self,
        kind: OfflineKind,
        license_key: Option<String>,
        activation_id: Option<String>,
        now: UnixTime,
    ) -> Result<String, OfflineFileError> {
        let nonce = super::new_nonce();
        let request = OfflineRequest {
            format: REQUEST_FORMAT.into(),
            kind,
            license_key,
            activation_id,
            instance_id: self.instance_id.to_string(),
            instance_public_key: self.instance_key.public_key_pem(),
            hostname: self.hostname.to_string(),
            nonce: nonce.clone(),
            created_at: now,
        };
        if kind == OfflineKind::Activate {
            let pending = serde_json::to_vec(&Pending {
                nonce,
                created_at: now,
            })
            .expect("pending serializes");
            write_atomically(&self.store.dir().join(PENDING_FILE), &pending)
                .map_err(|e| OfflineFileError::Store(e.to_string()))?;
        }
        Ok(offline::write_request(&request, self.instance_key))
    }

    /// Checks the vendor's response `file` and installs its token through `manager`;
    /// the activation is remembered (for heartbeats and deactivation).
    pub fn install_response(
        &self,
        manager: &LicenseManager,
        vendor_keys: &[PublicKey],
        file: &[u8],
        tenant: Option<&str>,
    ) -> Result<(Installed, OfflineResponse), OfflineFileError> {
        let response = vendor_keys
            .iter()
            .find_map(|key| offline::read_response(file, key).ok())
            .ok_or(OfflineFileError::NotSigned)?;
        if response.instance_id != self.instance_id {
            return Err(OfflineFileError::OtherInstance {
                found: response.instance_id,
                expected: self.instance_id.to_string(),
            });
        }
        let pending_path = self.store.dir().join(PENDING_FILE);
        let pending: Pending = std::fs::read(&pending_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(OfflineFileError::NothingPending)?;
        if pending.nonce != response.nonce {
            return Err(OfflineFileError::OtherRequest);
        }
        let Some(token) = response.token.as_deref() else {
            return Err(OfflineFileError::Receipt);
        };
        let installed = match tenant {
            Some(tenant) => manager.install_for(token, tenant),
            None => manager.install_any(token),
        }
        .map_err(|e| OfflineFileError::Install(e.to_string()))?;
        manager.observe_trusted_time(response.server_time);
        let _ = std::fs::remove_file(&pending_path);
        let now = manager.now();
        let record = ActivationRecord {
            activation_id: response.activation_id.clone(),
            license_id: response.license_id.clone(),
            tenant: installed.summary.tenant.to_string(),
            instance_id: self.instance_id.to_string(),
            heartbeat_interval: response.heartbeat_interval.max(1),
            activated_at: now,
            last_success: now,
            token_expires_at: response.token_expires_at.unwrap_or(0),
            status: "active".into(),
            key_hint: String::new(),
            claims_digest: super::records::claims_digest(token),
            saved_success: now,
        };
        Records::open(self.store.dir())
            .and_then(|records| records.save(&record))
            .map_err(|e| OfflineFileError::Store(e.to_string()))?;
        Ok((installed, response))
    }
}
