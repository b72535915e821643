//! What the gateway did with a request, and why it refused one: the domain words the
//! request path, the metrics and the admin API share.

use super::decide::DenyReason;

/// What the gateway did with a request (`requests_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded: the license and the feature map allow it.
    Allowed,
    /// Forwarded: a public path, no license needed.
    Public,
    /// Forwarded in shadow mode although a check would have refused it.
    Shadowed,
    /// Refused with 403 (license or feature).
    Denied,
    /// Refused with 429 (rate or concurrency quota).
    Limited,
    /// Refused with 503: the quota backend is unavailable and `on_error = "deny"`.
    Unavailable,
    /// Answered by the gateway's own pages under `/_licgate/`.
    Gateway,
    /// Refused with 400: a request target that cannot be normalized safely.
    Rejected,
    /// Forwarded without checks (`mode = "off"`).
    Unchecked,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Allowed,
        Outcome::Public,
        Outcome::Shadowed,
        Outcome::Denied,
        Outcome::Limited,
        Outcome::Unavailable,
        Outcome::Gateway,
        Outcome::Rejected,
        Outcome::Unchecked,
    ];

    /// Whether the gateway decided about the request (what the usage ledger counts):
    /// not for its own pages or without checks.
    pub fn is_decided(self) -> bool {
        !matches!(self, Outcome::Gateway | Outcome::Unchecked)
    }

    /// The `decision` label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Public => "public",
            Outcome::Shadowed => "shadowed",
            Outcome::Denied => "denied",
            Outcome::Limited => "limited",
            Outcome::Unavailable => "unavailable",
            Outcome::Gateway => "gateway",
            Outcome::Rejected => "rejected",
            Outcome::Unchecked => "unchecked",
        }
    }
}

/// Why a request was (or, in shadow mode, would have been) refused: the contract's
/// error codes (`denials_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    License(DenyReason),
    UsageLimit,
    ConcurrencyLimit,
    QuotaUnavailable,
    /// A client over its `quota.per_client_share`.
    ClientShare,
    /// A client outside the networks (or countries) the license allows.
    Network,
    /// A new identity beyond the license's seats or active users.
    Seats,
}

/// Every [`Refusal`], in label order.
pub const REFUSALS: [Refusal; 14] = [
    Refusal::License(DenyReason::LicenseMissing),
    Refusal::License(DenyReason::LicenseExpired),
    Refusal::License(DenyReason::LicenseRevoked),
    Refusal::License(DenyReason::LicenseInvalid),
    Refusal::License(DenyReason::LicenseNotYetValid),
    Refusal::License(DenyReason::LicenseReadOnly),
    Refusal::License(DenyReason::FeatureNotLicensed),
    Refusal::UsageLimit,
    Refusal::ConcurrencyLimit,
    Refusal::QuotaUnavailable,
    Refusal::ClientShare,
    Refusal::License(DenyReason::LicenseSuspended),
    Refusal::Network,
    Refusal::Seats,
];

impl Refusal {
    /// The error code (also the `reason` label).
    pub fn error_code(self) -> &'static str {
        match self {
            Refusal::License(reason) => reason.error_code(),
            Refusal::UsageLimit => "USAGE_LIMIT_EXCEEDED",
            Refusal::ConcurrencyLimit => "CONCURRENCY_LIMIT_EXCEEDED",
            Refusal::QuotaUnavailable => "QUOTA_UNAVAILABLE",
            Refusal::ClientShare => "CLIENT_SHARE_EXCEEDED",
            Refusal::Network => "NETWORK_NOT_LICENSED",
            Refusal::Seats => "SEAT_LIMIT_EXCEEDED",
        }
    }

    /// The refusal's position in [`REFUSALS`] (metric tables).
    pub fn index(self) -> usize {
        match self {
            Refusal::License(reason) => match reason {
                DenyReason::LicenseMissing => 0,
                DenyReason::LicenseExpired => 1,
                DenyReason::LicenseRevoked => 2,
                DenyReason::LicenseInvalid => 3,
                DenyReason::LicenseNotYetValid => 4,
                DenyReason::LicenseReadOnly => 5,
                DenyReason::FeatureNotLicensed => 6,
                DenyReason::LicenseSuspended => 11,
            },
            Refusal::UsageLimit => 7,
            Refusal::ConcurrencyLimit => 8,
            Refusal::QuotaUnavailable => 9,
            Refusal::ClientShare => 10,
            Refusal::Network => 12,
            Refusal::Seats => 13,
        }
    }
}

/// The kind of quota that refused a request (`quota_rejections_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// The tenant's request rate (`limits.requests_per_*`).
    Rate,
    /// A feature's request rate (`feature_limits`).
    Feature,
    /// Concurrent connections (`limits.max_concurrent_connections`).
    Concurrency,
    /// One client's share of the tenant's quotas (`quota.per_client_share`).
    ClientShare,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 4] = [
        QuotaKind::Rate,
        QuotaKind::Feature,
        QuotaKind::Concurrency,
        QuotaKind::ClientShare,
    ];

    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Rate => "rate",
            QuotaKind::Feature => "feature",
            QuotaKind::Concurrency => "concurrency",
            QuotaKind::ClientShare => "client_share",
        }
    }
}
