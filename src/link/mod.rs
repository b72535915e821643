//! The gateway's side of the license authority (`[authority]`): activation by
//! license key, heartbeats that renew tokens and bring revocations and suspensions,
//! deactivation.
//!
//! - [`client`]: the HTTP calls and the checks on every answer (vendor signature,
//!   nonce, instance);
//! - [`records`]: the activations remembered in the store;
//! - [`heartbeats`]: the supervised schedule of heartbeats, with back-off while the
//!   authority cannot be reached, and the metrics of the link;
//! - `beat`: one heartbeat and what its answer changes here;
//! - [`offline`]: offline request and response files;
//! - [`usage`]: the usage reports heartbeats carry;
//! - `error`: why an activation or deactivation did not happen.
//!
//! Every call runs on the link's own runtime (one thread), whichever runtime asks:
//! the HTTP client's connections never outlive the runtime they were made on. A
//! license key is sent to the authority and nowhere else: never logged, never
//! stored, never a metric label.

mod beat;
pub mod client;
mod error;
pub mod heartbeats;
pub mod offline;
pub mod records;
pub mod usage;

pub use error::{ActivateError, DeactivateError};

use std::future::Future;
use std::sync::Arc;

use crate::authority::key::LicenseKey;
use crate::authority::protocol::ActivationRequest;
use crate::config::{AuthorityLinkConfig, LicenseConfig};
use crate::license::instance_key::InstanceKey;
use crate::license::manager::InstallError;
use crate::license::{LicenseManager, TenantSummary, UnixTime};
use beat::{renewal_due, UsageUpload};
use client::{AuthorityClient, Call, CallError};
use heartbeats::Schedule;
use records::{ActivationRecord, Records};

/// A key activated and its license installed.
#[derive(Debug)]
pub struct Activated {
    pub summary: TenantSummary,
    pub record: ActivationRecord,
}

/// What a deactivation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deactivated {
    pub license_id: String,
    pub activation_id: String,
    /// `deactivated` (the authority freed the slot) or `gone` (it had already).
    pub result: &'static str,
}

/// The link: the authority client, the store's records, the heartbeat schedule.
pub struct Link {
    client: AuthorityClient,
    manager: Arc<LicenseManager>,
    records: Records,
    instance_key: Arc<InstanceKey>,
    instance_id: String,
    hostname: String,
    /// Seconds before a token's expiry from which an unreachable authority is warned of.
    grace_warning: i64,
    runtime: tokio::runtime::Handle,
    schedule: Schedule,
    metrics: heartbeats::LinkMetrics,
    usage: UsageUpload,
    /// `license.instance_id` is set: replicas of one installation (one activation
    /// each license) may run on stores of their own, and each fetches the
    /// installation's activations from the authority.
    fleet: bool,
}

impl Link {
    /// The link of `config` for the licenses of `manager`, signing with
    /// `instance_key`. Starts the link's thread; no call is made yet.
    pub fn new(
        config: &AuthorityLinkConfig,
        license: &LicenseConfig,
        manager: Arc<LicenseManager>,
        instance_key: Arc<InstanceKey>,
    ) -> Result<Arc<Link>, String> {
        let client = AuthorityClient::new(config, license.public_keys.clone())?;
        let records = Records::open(manager.store().dir()).map_err(|e| e.to_string())?;
        let instance_id = manager.settings().verifier.instance_id().to_string();
        let fleet = matches!(
            license.instance_id,
            crate::config::InstanceIdSetting::Fixed(_)
        );
        let link = Arc::new(Link {
            client,
            records,
            instance_key,
            instance_id,
            hostname: hostname(),
            grace_warning: i64::try_from(config.grace_warning.as_secs()).unwrap_or(i64::MAX),
            runtime: crate::background::runtime_thread("licgate-authority")
                .map_err(|e| format!("cannot start the authority link's thread: {e}"))?,
            schedule: Schedule::default(),
            metrics: heartbeats::LinkMetrics::new(),
            fleet,
            usage: UsageUpload {
                reports: usage::UsageReports::new(manager.store().dir()),
                busy: Default::default(),
                paused_until: Default::default(),
                next_check: Default::default(),
            },
            manager,
        });
        for record in link.records.list() {
            link.schedule.insert_at_start(record);
        }
        Ok(link)
    }

    /// The authority's base URL.
    pub fn authority_url(&self) -> &str {
        self.client.base().as_str()
    }

    /// The link's Prometheus collector (requests, last success, grace remaining).
    pub fn collector(self: &Arc<Self>) -> Box<dyn prometheus::core::Collector> {
        Box::new(heartbeats::LinkCollector::new(Arc::clone(self)))
    }

    /// Runs `future` on the link's runtime and waits for it.
    async fn on_link<F>(&self, future: F) -> Result<F::Output, CallError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .spawn(future)
            .await
            .map_err(|e| CallError::Unreachable(format!("the call failed unexpectedly: {e}")))
    }

    fn now(&self) -> UnixTime {
        self.manager.now()
    }

    /// Activates `key_text` for `tenant` at the authority and installs the token it
    /// gives: verified like any license (vendor key, issuer, this instance, this
    /// tenant). A token refused here gives the slot back.
    pub async fn activate_key(
        self: &Arc<Self>,
        key_text: &str,
        tenant: &str,
    ) -> Result<Activated, ActivateError> {
        let outcome = self.activate_parsed(key_text, tenant).await;
        if let Err(e) = &outcome {
            tracing::warn!(tenant, code = %e.code(), reason = %e, "license key not activated");
        }
        outcome
    }

    async fn activate_parsed(
        self: &Arc<Self>,
        key_text: &str,
        tenant: &str,
    ) -> Result<Activated, ActivateError> {
        let key = LicenseKey::parse(key_text).map_err(ActivateError::Key)?;
        let request = ActivationRequest {
            license_key: key.to_string(),
            instance_id: self.instance_id.clone(),
            instance_public_key: self.instance_key.public_key_pem(),
            hostname: self.hostname.clone(),
            nonce: new_nonce(),
        };
        let client = self.client.clone();
        let answer = self
            .on_link(async move { client.activate(&request).await })
            .await
            .and_then(|r| r);
        self.metrics.count(Call::Activate, &answer);
        let answer = answer?;
        self.manager.observe_trusted_time(answer.server_time);
        let installed = self.install(&answer.token, tenant).await;
        let summary = match installed {
            Ok(summary) => summary,
            Err(reason) => {
                self.give_back(&answer.activation_id).await;
                return Err(ActivateError::Install(reason));
            }
        };
        let now = self.now();
        let record = ActivationRecord {
            activation_id: answer.activation_id.clone(),
            license_id: answer.license_id.clone(),
            tenant: tenant.to_string(),
            instance_id: self.instance_id.clone(),
            heartbeat_interval: answer.heartbeat_interval.max(1),
            activated_at: now,
            last_success: now,
            token_expires_at: answer.token_expires_at,
            status: "active".into(),
            key_hint: key.redacted(),
            claims_digest: records::claims_digest(&answer.token),
            saved_success: now,
        };
        if let Err(e) = self.records.save(&record) {
            tracing::error!(error = %e, "cannot save the activation record: heartbeats stop at the next restart");
        }
        self.schedule.insert(record.clone());
        tracing::info!(
            tenant,
            license_id = %answer.license_id,
            activation_id = %answer.activation_id,
            key = %key.redacted(),
            token_expires_at = %crate::license::time_text(answer.token_expires_at),
            "license key activated at the license server"
        );
        Ok(Activated { summary, record })
    }

    /// Installs `token` for `tenant` (on the blocking pool): the tenant's new
    /// summary, or why not.
    async fn install(&self, token: &str, tenant: &str) -> Result<TenantSummary, String> {
        let (manager, token, tenant) = (
            Arc::clone(&self.manager),
            token.to_string(),
            tenant.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            manager
                .install_for(&token, &tenant)
                .map(|i| i.summary)
                .map_err(|e| match e {
                    InstallError::TenantMismatch { license, expected } => format!(
                        "the license is for tenant \"{license}\", this site is tenant \"{expected}\""
                    ),
                    other => other.to_string(),
                })
        })
        .await
        .unwrap_or_else(|_| Err("the installation failed unexpectedly".into()))
    }

    /// Frees activation `id` at the authority, best effort (a slot taken by a token
    /// that could not be installed).
    async fn give_back(self: &Arc<Self>, activation_id: &str) {
        if let Err(e) = self.release(activation_id).await {
            tracing::warn!(activation_id, error = %e, "cannot give the activation back; the vendor can deactivate it");
        }
    }

    /// `DELETE /v1/activations/{id}`: `Ok(true)` deactivated, `Ok(false)` already gone.
    async fn release(self: &Arc<Self>, activation_id: &str) -> Result<bool, CallError> {
        let (client, key, id, now) = (
            self.client.clone(),
            Arc::clone(&self.instance_key),
            activation_id.to_string(),
            crate::license::clock::Clock::now(&crate::license::clock::SystemClock),
        );
        let answer = self
            .on_link(async move { client.deactivate(&id, &key, &new_nonce(), now).await })
            .await
            .and_then(|r| r);
        self.metrics.count(Call::Deactivate, &answer);
        match answer {
            Ok(_) => Ok(true),
            Err(CallError::Refused(r)) if r.code == "ACTIVATION_GONE" || r.code == "NOT_FOUND" => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deactivates every activation of `tenant` at the authority and removes their
    /// licenses here. Stops at the first activation the authority cannot be told of
    /// (its license stays installed).
    pub async fn deactivate(
        self: &Arc<Self>,
        tenant: &str,
    ) -> Result<Vec<Deactivated>, DeactivateError> {
        let records = self.records.of_tenant(tenant);
        if records.is_empty() {
            return Err(DeactivateError::NoActivation(tenant.to_string()));
        }
        let mut done = Vec::new();
        for record in records {
            let released = self.release(&record.activation_id).await.map_err(|error| {
                DeactivateError::Call {
                    license_id: record.license_id.clone(),
                    error,
                }
            })?;
            self.forget(&record).await.map_err(DeactivateError::Store)?;
            tracing::info!(
                tenant,
                license_id = %record.license_id,
                activation_id = %record.activation_id,
                "deactivated at the license server; license removed"
            );
            done.push(Deactivated {
                license_id: record.license_id,
                activation_id: record.activation_id,
                result: if released { "deactivated" } else { "gone" },
            });
        }
        Ok(done)
    }

    /// Removes `record`'s license and the record, and stops its heartbeats.
    async fn forget(&self, record: &ActivationRecord) -> Result<(), String> {
        self.schedule.remove(&record.license_id);
        let (manager, tenant, jti) = (
            Arc::clone(&self.manager),
            record.tenant.clone(),
            record.license_id.clone(),
        );
        tokio::task::spawn_blocking(move || manager.remove(&tenant, &jti).map(|_| ()))
            .await
            .map_err(|_| "the removal failed unexpectedly".to_string())?
            .map_err(|e| e.to_string())?;
        self.manager.set_notice(&record.tenant, None);
        self.records
            .remove(&record.license_id)
            .map_err(|e| e.to_string())
    }

    /// Fetches this instance's active activations from the authority and installs
    /// their tokens (a replica of a fleet starting on an empty store, or learning of
    /// a key another replica activated). Returns how many were installed.
    pub async fn sync(self: &Arc<Self>) -> Result<usize, CallError> {
        let (client, key, instance_id, now, nonce) = (
            self.client.clone(),
            Arc::clone(&self.instance_key),
            self.instance_id.clone(),
            crate::license::clock::Clock::now(&crate::license::clock::SystemClock),
            new_nonce(),
        );
        let answer = self
            .on_link(async move { client.instance(&instance_id, &key, &nonce, now).await })
            .await
            .and_then(|r| r);
        self.metrics.count(Call::Sync, &answer);
        let answer = match answer {
            Err(CallError::Refused(r)) if r.code == "NOT_FOUND" => return Ok(0),
            other => other?,
        };
        self.manager.observe_trusted_time(answer.server_time);
        let known = self.records.list();
        let mut installed = 0;
        for activation in answer.activations {
            let Some(token) = activation.token.as_deref() else {
                if activation.status == "suspended" {
                    let manager = Arc::clone(&self.manager);
                    let jti = activation.license_id.clone();
                    let _ = tokio::task::spawn_blocking(move || manager.set_suspended(&jti, true))
                        .await;
                }
                continue;
            };
            let now = self.now();
            let before = known.iter().find(|r| r.license_id == activation.license_id);
            let digest = records::claims_digest(token);
            let expires = activation.token_expires_at.unwrap_or(0);
            // What this replica holds already is renewed by its own heartbeats.
            if before.is_some_and(|b| !renewal_due(b, &digest, expires, now)) {
                continue;
            }
            if let Err(reason) = self.install(token, &activation.tenant).await {
                tracing::warn!(tenant = %activation.tenant, license_id = %activation.license_id, reason, "a license from the license server was not installed");
                continue;
            }
            installed += 1;
            let record = ActivationRecord {
                activation_id: activation.activation_id.clone(),
                license_id: activation.license_id.clone(),
                tenant: activation.tenant.clone(),
                instance_id: self.instance_id.clone(),
                heartbeat_interval: activation.heartbeat_interval.max(1),
                activated_at: before.map_or(now, |b| b.activated_at),
                last_success: now,
                token_expires_at: expires,
                status: activation.status.clone(),
                key_hint: before.map(|b| b.key_hint.clone()).unwrap_or_default(),
                claims_digest: digest,
                saved_success: now,
            };
            if let Err(e) = self.records.save(&record) {
                tracing::warn!(error = %e, "cannot save the activation record");
            }
            if before.is_none() {
                tracing::info!(tenant = %record.tenant, license_id = %record.license_id, activation_id = %record.activation_id, "license of this installation fetched from the license server");
                self.schedule.insert(record);
            }
        }
        Ok(installed)
    }
}

/// A fresh 128-bit nonce in hex.
pub(crate) fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's host name (shown in the vendor's activation list).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
