//! The gateway's side of the license authority (`[authority]`): activation by
//! license key, heartbeats that renew tokens and bring revocations and suspensions,
//! deactivation.
//!
//! - [`client`]: the HTTP calls and the checks on every answer (vendor signature,
//!   nonce, instance);
//! - [`records`]: the activations remembered in the store;
//! - [`heartbeats`]: the supervised schedule of heartbeats, with back-off while the
//!   authority cannot be reached, and the metrics of the link.
//!
//! Every call runs on the link's own runtime (one thread), whichever runtime asks:
//! the HTTP client's connections never outlive the runtime they were made on. A
//! license key is sent to the authority and nowhere else: never logged, never
//! stored, never a metric label.

pub mod client;
pub mod heartbeats;
pub mod offline;
pub mod records;
pub mod usage;

use std::future::Future;
use std::sync::Arc;

use crate::authority::key::{KeyError, LicenseKey};
use crate::authority::protocol::{ActivationRequest, HeartbeatAnswer};
use crate::config::{AuthorityLinkConfig, LicenseConfig};
use crate::license::instance_key::InstanceKey;
use crate::license::manager::InstallError;
use crate::license::{LicenseManager, TenantSummary, UnixTime};
use client::{AuthorityClient, Call, CallError, Refused};
use heartbeats::Schedule;
use records::{ActivationRecord, Records};

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

    /// Whether offline activation is the way forward (the authority cannot be
    /// reached or cannot be trusted from here).
    pub fn offers_offline(&self) -> bool {
        matches!(
            self,
            ActivateError::Call(CallError::Unreachable(_) | CallError::Invalid(_))
        )
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

/// A key activated and its license installed.
#[derive(Debug)]
pub struct Activated {
    pub summary: TenantSummary,
    pub record: ActivationRecord,
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

/// Which heartbeat carries the usage report, and when reports are tried again.
struct UsageUpload {
    reports: usage::UsageReports,
    /// A heartbeat is carrying (or making) a report.
    busy: std::sync::atomic::AtomicBool,
    /// No report before this time (Unix seconds) after a failure.
    paused_until: std::sync::atomic::AtomicI64,
    /// No look for a new report before this time (the quota clock, Unix seconds).
    next_check: std::sync::atomic::AtomicI64,
}

impl UsageUpload {
    fn paused(&self) -> bool {
        let now = crate::license::clock::Clock::now(&crate::license::clock::SystemClock);
        self.paused_until.load(std::sync::atomic::Ordering::Relaxed) > now
    }

    fn pause(&self, secs: i64) {
        let now = crate::license::clock::Clock::now(&crate::license::clock::SystemClock);
        self.paused_until
            .store(now + secs, std::sync::atomic::Ordering::Relaxed);
    }
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
            runtime: link_runtime()?,
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

    /// One heartbeat of `record`: applies the answer, or says why there is none.
    pub(crate) async fn beat(self: &Arc<Self>, record: &ActivationRecord) -> heartbeats::Beat {
        if !self.records.contains(&record.license_id) {
            // Deactivated by `licgate deactivate` or another replica on this store.
            return heartbeats::Beat::Stop;
        }
        let report = self.usage_to_send().await;
        let mut answer = self.send_beat(record, report.as_ref()).await;
        if let (Some(sent), Err(CallError::Refused(r))) = (&report, &answer) {
            // A report the authority will not take must not hold the heartbeat back.
            tracing::warn!(sequence = sent.sequence, code = %r.code, reason = %r.message, "usage report refused by the license server; retried in an hour");
            self.usage.pause(3600);
            answer = self.send_beat(record, None).await;
        }
        if let (
            Some(sent),
            Ok(HeartbeatAnswer {
                usage_report: Some(received),
                ..
            }),
        ) = (&report, &answer)
        {
            if received.sequence == sent.sequence {
                if let Err(e) = self.usage.reports.acknowledge(sent.sequence) {
                    tracing::warn!(error = %e, "cannot record the acknowledged usage report");
                }
                tracing::info!(
                    sequence = sent.sequence,
                    stored = received.stored,
                    "usage report delivered to the license server"
                );
            }
        }
        self.usage
            .busy
            .store(false, std::sync::atomic::Ordering::Release);
        match answer {
            Ok(answer) => self.apply(record, answer).await,
            Err(CallError::Refused(r)) if r.signed && r.code == "ACTIVATION_GONE" => {
                tracing::warn!(
                    tenant = %record.tenant,
                    license_id = %record.license_id,
                    activation_id = %record.activation_id,
                    "the license server says this activation was deactivated: its license is removed"
                );
                match self.forget(record).await {
                    Ok(()) => heartbeats::Beat::Stop,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot remove the deactivated license");
                        heartbeats::Beat::Failed(e)
                    }
                }
            }
            Err(e) => heartbeats::Beat::Failed(e.to_string()),
        }
    }

    /// One signed heartbeat of `record`, carrying `report` when given.
    async fn send_beat(
        &self,
        record: &ActivationRecord,
        report: Option<&usage::PendingReport>,
    ) -> Result<HeartbeatAnswer, CallError> {
        let (client, key, id, now, nonce, file) = (
            self.client.clone(),
            Arc::clone(&self.instance_key),
            record.activation_id.clone(),
            crate::license::clock::Clock::now(&crate::license::clock::SystemClock),
            new_nonce(),
            report.map(|r| r.file.clone()),
        );
        let answer = self
            .on_link(async move {
                client
                    .heartbeat(&id, &key, &nonce, file.as_deref(), now)
                    .await
            })
            .await
            .and_then(|r| r);
        self.metrics.count(Call::Heartbeat, &answer);
        answer
    }

    /// The usage report this heartbeat carries, if it is the one to carry it (one
    /// heartbeat at a time carries the installation's report).
    async fn usage_to_send(&self) -> Option<usage::PendingReport> {
        use std::sync::atomic::Ordering;
        let today_clock = crate::quota::clock::now();
        if self.usage.paused()
            || self.usage.next_check.load(Ordering::Relaxed) > today_clock
            || self.usage.busy.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        let (reports, key, instance_id) = (
            self.usage.reports.clone(),
            Arc::clone(&self.instance_key),
            self.instance_id.clone(),
        );
        let now = crate::quota::clock::now();
        let next = tokio::task::spawn_blocking(move || reports.next(&key, &instance_id, now))
            .await
            .unwrap_or_else(|_| Err("the usage report failed unexpectedly".into()));
        match next {
            Ok(Some(report)) => Some(report),
            Ok(None) => {
                // Nothing new before the day is over: look again in a while.
                self.usage
                    .next_check
                    .store(today_clock + USAGE_CHECK_EVERY, Ordering::Relaxed);
                self.usage.busy.store(false, Ordering::Release);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the usage report; retried in an hour");
                self.usage.pause(3600);
                self.usage.busy.store(false, Ordering::Release);
                None
            }
        }
    }

    /// Applies a heartbeat's answer: a renewed token, the license's status, the
    /// tenant's revocations, the signed time.
    async fn apply(
        self: &Arc<Self>,
        record: &ActivationRecord,
        answer: HeartbeatAnswer,
    ) -> heartbeats::Beat {
        self.manager.observe_trusted_time(answer.server_time);
        let manager = Arc::clone(&self.manager);
        let jti = record.license_id.clone();
        let revoked = answer.revoked_license_ids.clone();
        let status = answer.status.clone();
        let changes = tokio::task::spawn_blocking(move || -> Result<(), String> {
            for id in revoked.iter().filter(|id| !manager.is_revoked(id)) {
                manager.revoke(id).map_err(|e| e.to_string())?;
            }
            match status.as_str() {
                "suspended" => manager.set_suspended(&jti, true),
                "active" => manager.set_suspended(&jti, false),
                _ => Ok(()),
            }
            .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err("applying the answer failed unexpectedly".into()));
        if let Err(e) = changes {
            return heartbeats::Beat::Failed(e);
        }
        if answer.status == "revoked" || answer.revoked_license_ids.contains(&record.license_id) {
            tracing::warn!(tenant = %record.tenant, license_id = %record.license_id, "the license server revoked this license");
            self.schedule.remove(&record.license_id);
            let _ = self.records.remove(&record.license_id);
            self.manager.set_notice(&record.tenant, None);
            return heartbeats::Beat::Stop;
        }
        let mut updated = record.clone();
        let now = self.now();
        let mut changed = answer.status != record.status
            || answer.next_heartbeat.max(1) != record.heartbeat_interval;
        if let (Some(token), Some(expires)) = (&answer.token, answer.token_expires_at) {
            let digest = records::claims_digest(token);
            if renewal_due(record, &digest, expires, now) {
                if let Err(reason) = self.install(token, &record.tenant).await {
                    tracing::error!(tenant = %record.tenant, license_id = %record.license_id, reason, "the renewed license was not installed");
                    return heartbeats::Beat::Failed(reason);
                }
                updated.token_expires_at = expires;
                updated.claims_digest = digest;
                changed = true;
            }
        }
        if answer.status != record.status {
            tracing::info!(tenant = %record.tenant, license_id = %record.license_id, status = %answer.status, "license status at the license server changed");
        }
        updated.status = answer.status;
        updated.last_success = now;
        updated.heartbeat_interval = answer.next_heartbeat.max(1);
        // The file follows what matters at once, the last success now and then.
        let stale = now - record.saved_success
            >= SAVE_SUCCESS_EVERY.max(10 * record.heartbeat_interval as i64);
        if changed || stale {
            match self.records.save(&updated) {
                Ok(()) => updated.saved_success = now,
                Err(e) => tracing::warn!(error = %e, "cannot save the activation record"),
            }
        }
        self.manager.set_notice(&record.tenant, None);
        heartbeats::Beat::Done(updated)
    }

    /// After a failed heartbeat of `record`: warns (header, and a log line when the
    /// warning begins) once less than `authority.grace_warning` of its token's life
    /// is left.
    pub(crate) fn offline_notice(&self, record: &ActivationRecord) {
        let left = record.token_expires_at - self.now();
        if left > self.grace_warning || left <= 0 {
            return;
        }
        let text = format!(
            "the license server has not been reached since {}; this license stops working on {} unless it is",
            crate::license::time_text(record.last_success),
            crate::license::time_text(record.token_expires_at)
        );
        if self.manager.set_notice(&record.tenant, Some(text.clone())) {
            tracing::warn!(
                tenant = %record.tenant,
                license_id = %record.license_id,
                seconds_left = left,
                "{text}"
            );
        }
    }

    /// This installation's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
}

/// How often, at most, the usage ledger is asked whether a new report is due (reports
/// cover whole days: a day's report goes at most this long after midnight UTC).
const USAGE_CHECK_EVERY: i64 = 600;

/// How often, at most, a record's file is rewritten only for its last success.
const SAVE_SUCCESS_EVERY: i64 = 3600;

/// Whether a renewed token (claims `digest`, expiring at `expires`) replaces the one
/// `record` installed at `now`: when it grants something else, or once the installed
/// one has lost a tenth of the renewed one's life (the offline grace stays at least
/// nine tenths of `token_ttl`; a heartbeat costs no disk write most of the time).
fn renewal_due(record: &ActivationRecord, digest: &str, expires: UnixTime, now: UnixTime) -> bool {
    let life = expires - now;
    let left = record.token_expires_at - now;
    digest != record.claims_digest || digest.is_empty() || left < life - life / 10
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

/// Starts the link's thread (a current-thread runtime that runs until the process
/// ends) and returns its handle.
fn link_runtime() -> Result<tokio::runtime::Handle, String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("licgate-authority".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = sender.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = sender.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })
        .map_err(|e| format!("cannot start the authority link's thread: {e}"))?;
    receiver
        .recv()
        .map_err(|_| "the authority link's thread did not start".to_string())?
        .map_err(|e| format!("cannot start the authority link's runtime: {e}"))
}
