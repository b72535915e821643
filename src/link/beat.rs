//! One heartbeat: the usage report it may carry, the signed call, and what its
//! answer changes here (a renewed token when due, the license's status, the tenant's
//! revocations, the signed time), or the offline notice when there is no answer.

use std::sync::Arc;

use super::client::{Call, CallError};
use super::heartbeats::Beat;
use super::records::{self, ActivationRecord};
use super::{new_nonce, usage, Link};
use crate::authority::protocol::HeartbeatAnswer;
use crate::license::UnixTime;

/// Which heartbeat carries the usage report, and when reports are tried again.
pub(super) struct UsageUpload {
    pub(super) reports: usage::UsageReports,
    /// A heartbeat is carrying (or making) a report.
    pub(super) busy: std::sync::atomic::AtomicBool,
    /// No report before this time (Unix seconds) after a failure.
    pub(super) paused_until: std::sync::atomic::AtomicI64,
    /// No look for a new report before this time (the quota clock, Unix seconds).
    pub(super) next_check: std::sync::atomic::AtomicI64,
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
    /// One heartbeat of `record`: applies the answer, or says why there is none.
    pub(crate) async fn beat(self: &Arc<Self>, record: &ActivationRecord) -> Beat {
        if !self.records.contains(&record.license_id) {
            // Deactivated by `licgate deactivate` or another replica on this store.
            return Beat::Stop;
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
        // Only the beat that took the report (and the flag) gives the flag back.
        if report.is_some() {
            self.usage
                .busy
                .store(false, std::sync::atomic::Ordering::Release);
        }
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
                    Ok(()) => Beat::Stop,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot remove the deactivated license");
                        Beat::Failed(e)
                    }
                }
            }
            Err(e) => Beat::Failed(e.to_string()),
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
    async fn apply(self: &Arc<Self>, record: &ActivationRecord, answer: HeartbeatAnswer) -> Beat {
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
            return Beat::Failed(e);
        }
        if answer.status == "revoked" || answer.revoked_license_ids.contains(&record.license_id) {
            tracing::warn!(tenant = %record.tenant, license_id = %record.license_id, "the license server revoked this license");
            self.schedule.remove(&record.license_id);
            let _ = self.records.remove(&record.license_id);
            self.manager.set_notice(&record.tenant, None);
            return Beat::Stop;
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
                    return Beat::Failed(reason);
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
        Beat::Done(updated)
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
pub(super) fn renewal_due(
    record: &ActivationRecord,
    digest: &str,
    expires: UnixTime,
    now: UnixTime,
) -> bool {
    let life = expires - now;
    let left = record.token_expires_at - now;
    digest != record.claims_digest || digest.is_empty() || left < life - life / 10
}
