//! The license token an activation gets: the gateway's usual signed token, bound to
//! the instance (`aud`), expiring at the license's expiry or after the policy's
//! `token_ttl` (the installation's offline grace), whichever comes first.

use super::model::{License, Policy};
use super::protocol::Signer;
use super::store::activations::Granted;
use crate::license::keys::SignError;
use crate::license::{Claims, UnixTime};

/// The `license_exp` of a perpetual license: 9999-12-31T23:59:59Z.
pub const PERPETUAL: UnixTime = 253_402_300_799;

/// A token made for an activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub expires_at: UnixTime,
    /// Half-way through the token's life: when the installation should renew.
    pub refresh_before: UnixTime,
}

/// The claims of `license` under `policy` for `instance_id` at `now`.
pub fn claims(
    license: &License,
    policy: &Policy,
    instance_id: &str,
    issuer: &str,
    now: UnixTime,
) -> Claims {
    let ttl_end = now.saturating_add(i64::try_from(policy.token_ttl).unwrap_or(i64::MAX));
    let exp = license.expires_at.map_or(ttl_end, |e| e.min(ttl_end));
    let mut features = policy.features.clone();
    for extra in &license.overrides.features {
        if !features.contains(extra) {
            features.push(extra.clone());
        }
    }
    Claims {
        iss: Some(issuer.to_string()),
        sub: license.customer.clone(),
        aud: vec![instance_id.to_string()],
        jti: license.id.clone(),
        iat: Some(now),
        nbf: Some(now - 60),
        exp,
        tenant: license.tenant.clone(),
        tier: Some(policy.tier.clone()),
        tier_name: policy.tier_name.clone(),
        features,
        limits: license
            .overrides
            .limits
            .clone()
            .unwrap_or_else(|| policy.limits.clone()),
        feature_limits: policy.feature_limits.clone(),
        restrictions: Default::default(),
        flags: policy.flags.clone(),
        grace_days: policy.grace_days,
        read_only_days: policy.read_only_days,
        license_exp: Some(license.expires_at.unwrap_or(PERPETUAL)),
    }
}

/// Signs the token of `granted` at `now`.
pub fn mint(granted: &Granted, signer: &Signer, now: UnixTime) -> Result<Minted, SignError> {
    let claims = claims(
        &granted.license,
        &granted.policy,
        &granted.activation.instance_id,
        &signer.issuer,
        now,
    );
    let token = signer.token(&claims).map_err(SignError::from)?;
    Ok(Minted {
        token,
        expires_at: claims.exp,
        refresh_before: now + (claims.exp - now).max(0) / 2,
    })
}
