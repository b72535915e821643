//! What the authority keeps: policies (plans), licenses, activations, events. These
//! are the admin API's JSON as well as the rows of the database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::license::claims::FeatureLimits;
use crate::license::{Limits, UnixTime};

/// A plan: what a license grants and how its installations are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub tier_name: Option<String>,
    pub features: Vec<String>,
    pub limits: Limits,
    pub feature_limits: BTreeMap<String, FeatureLimits>,
    pub flags: Vec<String>,
    pub max_activations: u32,
    /// Days a new license runs; `None` = perpetual.
    pub duration_days: Option<u32>,
    /// Seconds an installation runs without reaching the authority (its offline grace).
    pub token_ttl: u64,
    /// Seconds between an installation's heartbeats.
    pub heartbeat_interval: u64,
    /// Floating: an activation without a heartbeat for `heartbeat_timeout` seconds is
    /// culled and frees its slot. Node-locked: it stays until deactivated.
    pub floating: bool,
    pub heartbeat_timeout: u64,
    pub grace_days: Option<u32>,
    pub read_only_days: Option<u32>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// The fields of a policy a vendor sets (`policy create`/`update`); absent fields
/// keep their value (update) or take the configured default (create).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_limits: Option<BTreeMap<String, FeatureLimits>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_activations: Option<u32>,
    /// Days, or `0` for perpetual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_days: Option<u32>,
}

/// What one license changes of its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_activations: Option<u32>,
    /// Features granted besides the policy's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Limits that replace the policy's, limit by limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// The status a vendor sets; `expired` is read off the expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
    Expired,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
            LicenseStatus::Expired => "expired",
        }
    }

    /// The stored status (`expired` is never stored).
    pub(crate) fn from_stored(text: &str) -> LicenseStatus {
        match text {
            "suspended" => LicenseStatus::Suspended,
            "revoked" => LicenseStatus::Revoked,
            _ => LicenseStatus::Active,
        }
    }
}

/// A license as the vendor sees it (never its key: only the key's last group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub id: String,
    /// `LG-*****-…-XXXXX`.
    pub key_hint: String,
    pub policy: String,
    pub policy_id: String,
    pub tenant: String,
    pub customer: Option<String>,
    pub email: Option<String>,
    /// `None` = perpetual.
    pub expires_at: Option<UnixTime>,
    pub overrides: LicenseOverrides,
    /// The status now: `expired` once past `expires_at` unless suspended or revoked.
    pub status: LicenseStatus,
    pub max_activations: u32,
    pub active_activations: u32,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// What `license create` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSpec {
    pub policy: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Overrides the policy's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// An explicit expiry (RFC 3339 in the CLI, seconds here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    #[serde(default)]
    pub overrides: LicenseOverrides,
}

/// A license just made or given a new key: the key is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedLicense {
    #[serde(flatten)]
    pub license: License,
    pub key: String,
}

/// The state of an activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationStatus {
    Active,
    /// Freed by the installation or the vendor.
    Deactivated,
    /// Freed because a floating activation sent no heartbeat in time.
    Culled,
    /// The same instance activated again with another key.
    Replaced,
}

impl ActivationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationStatus::Active => "active",
            ActivationStatus::Deactivated => "deactivated",
            ActivationStatus::Culled => "culled",
            ActivationStatus::Replaced => "replaced",
        }
    }

    pub(crate) fn from_stored(text: &str) -> ActivationStatus {
        match text {
            "active" => ActivationStatus::Active,
            "culled" => ActivationStatus::Culled,
            "replaced" => ActivationStatus::Replaced,
            _ => ActivationStatus::Deactivated,
        }
    }
}

/// One installation holding a slot of a license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub id: String,
    pub license_id: String,
    pub instance_id: String,
    /// SPKI PEM of the instance key that signs its heartbeats.
    pub public_key: String,
    pub hostname: String,
    pub status: ActivationStatus,
    /// Made from an offline request file.
    pub offline: bool,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    pub ended_at: Option<UnixTime>,
}

/// One entry of the append-only audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: UnixTime,
    /// `admin`, `instance:<id>`, `offline:<id>` or `authority`.
    pub actor: String,
    /// e.g. `license.created`, `activation.created`, `activation.culled`.
    pub action: String,
    pub license_id: Option<String>,
    pub activation_id: Option<String>,
    pub detail: serde_json::Value,
}

/// One day of one tenant's feature, summed over received usage reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub tenant: String,
    pub feature: String,
    pub day: String,
    pub allowed: u64,
    pub limited: u64,
    pub refused: u64,
    pub peak_concurrency: u64,
}

/// One day of one tenant's seats, summed over received usage reports: the
/// installations (and replicas) each count their own seats, so a person served by
/// two of them on one day counts twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatUsageRow {
    pub tenant: String,
    pub day: String,
    pub peak_seats: u64,
    pub daily_users: u64,
}
