//! Licenses: signed tokens, their verification, the status model, the on-disk store,
//! and the lock-free snapshot the request path reads.
//!
//! - [`claims`]: the typed claims of a token;
//! - [`keys`]: algorithms, public/signing keys, key generation;
//! - [`verify`]: verification with a reason for every rejection;
//! - [`status`]: the status model, a pure function of (licenses, revocations, now);
//! - [`store`]: the license directory (atomic writes, revocations, instance id);
//! - [`clock`]: the clock, with the rollback defence;
//! - [`snapshot`]: per-tenant summaries behind `ArcSwap`;
//! - [`manager`]: ties them together and keeps the snapshot current.

mod batch;
pub mod claims;
pub mod clock;
pub mod instance_key;
mod kept;
pub mod keys;
pub mod manager;
pub mod snapshot;
pub(crate) mod status;
pub mod store;
pub(crate) mod verify;

pub use claims::{Claims, Limits, UnixTime};
pub use keys::{sign, Algorithm, PublicKey, SigningKey};
pub use manager::LicenseManager;
pub use snapshot::{LicenseSnapshot, TenantSummary};
pub use status::{Status, StatusPolicy};
pub use verify::{License, Rejection, Verifier};

/// `secs` as an RFC 3339 UTC date-time (`2026-11-23T10:00:00Z`), or the number when
/// out of range.
pub fn time_text(secs: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Parses an RFC 3339 date-time into seconds since the epoch.
pub fn parse_time(text: &str) -> Option<UnixTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
