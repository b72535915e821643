//! Licenses: made with a key shown once, listed, suspended, reinstated, revoked,
//! renewed, given a new key.

use serde_json::json;
use sqlx::any::AnyRow;

use super::events::{append, NewEvent};
use super::{check_text, count, int, json, new_id, opt_int, opt_text, text, to_json, Store};
use crate::authority::error::{AuthorityError, Outcome, Refusal};
use crate::authority::key::LicenseKey;
use crate::authority::model::{IssuedLicense, License, LicenseSpec, LicenseStatus};
use crate::license::UnixTime;

/// The columns [`license_of`] reads (licenses `l` joined with their policy `p`).
pub(crate) const COLUMNS: &str = "l.id, l.key_hint, l.policy_id, p.name AS policy, l.tenant, \
    l.customer, l.email, l.expires_at, l.overrides, l.status, l.created_at, l.updated_at, \
    p.max_activations AS policy_max_activations, \
    (SELECT COUNT(*) FROM activations a WHERE a.license_id = l.id AND a.status = 'active') AS active";

/// The status of a license at `now`: the stored one, or `expired` past its expiry.
pub(crate) fn status_at(
    stored: &str,
    expires_at: Option<UnixTime>,
    now: UnixTime,
) -> LicenseStatus {
    match LicenseStatus::from_stored(stored) {
        LicenseStatus::Active if expires_at.is_some_and(|e| e <= now) => LicenseStatus::Expired,
        status => status,
    }
}

pub(crate) fn license_of(row: &AnyRow, now: UnixTime) -> Result<License, sqlx::Error> {
    let overrides: crate::authority::model::LicenseOverrides = json(row, "overrides")?;
    let expires_at = opt_int(row, "expires_at")?;
    let max_activations = overrides
        .max_activations
        .unwrap_or_else(|| count(int(row, "policy_max_activations").unwrap_or(1)));
    Ok(License {
        id: text(row, "id")?,
        key_hint: text(row, "key_hint")?,
        policy: text(row, "policy")?,
        policy_id: text(row, "policy_id")?,
        tenant: text(row, "tenant")?,
        customer: opt_text(row, "customer")?,
        email: opt_text(row, "email")?,
        expires_at,
        status: status_at(&text(row, "status")?, expires_at, now),
        overrides,
        max_activations,
        active_activations: count(int(row, "active")?),
        created_at: int(row, "created_at")?,
        updated_at: int(row, "updated_at")?,
    })
}

/// Which licenses `licenses` lists.
#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    pub tenant: Option<String>,
    pub policy: Option<String>,
}

impl Store {
    /// Makes a license of `spec.policy` for `spec.tenant` with a new key.
    pub async fn create_license(
        &self,
        spec: LicenseSpec,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<IssuedLicense> {
        check_text("tenant", &spec.tenant, 200)?;
        for text in [&spec.customer, &spec.email].into_iter().flatten() {
            check_text("customer/email", text, 300)?;
        }
        if spec.overrides.max_activations == Some(0) {
            return Err(Refusal::BadRequest("max_activations must be at least 1".into()).into());
        }
        let policy = self.policy(&spec.policy).await?;
        let expires_at = match (spec.expires_at, spec.days.or(policy.duration_days)) {
            (Some(at), _) if at <= now => {
                return Err(Refusal::BadRequest("the expiry is in the past".into()).into())
            }
            (Some(at), _) => Some(at),
            (None, Some(0)) => None,
            (None, Some(days)) => Some(now + i64::from(days) * 86_400),
            (None, None) => None,
        };
        let key =
            LicenseKey::generate().map_err(|_| AuthorityError::Refused(Refusal::Unavailable))?;
        let id = new_id("lic");
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO licenses (id, key_hash, key_hint, policy_id, tenant, customer, email, \
             expires_at, overrides, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10)",
        )
        .bind(&id)
        .bind(key.hash())
        .bind(key.redacted())
        .bind(&policy.id)
        .bind(&spec.tenant)
        .bind(&spec.customer)
        .bind(&spec.email)
        .bind(expires_at)
        .bind(to_json(&spec.overrides))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            now,
            actor,
            "license.created",
            &id,
            json!({"policy": policy.name, "tenant": spec.tenant, "expires_at": expires_at}),
        )
        .await?;
        tx.commit().await?;
        Ok(IssuedLicense {
            license: self.license(&id, now).await?,
            key: key.to_string(),
        })
    }

    /// Licenses matching `filter`, newest first (at most `limit`).
    pub async fn licenses(
        &self,
        filter: &LicenseFilter,
        limit: u32,
        now: UnixTime,
    ) -> Result<Vec<License>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM licenses l JOIN policies p ON p.id = l.policy_id \
             WHERE l.tenant = COALESCE($1, l.tenant) AND p.name = COALESCE($2, p.name) \
             ORDER BY l.created_at DESC, l.id LIMIT $3"
        )))
        .bind(filter.tenant.as_deref())
        .bind(filter.policy.as_deref())
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|row| license_of(row, now)).collect()
    }

    /// License `id`.
    pub async fn license(&self, id: &str, now: UnixTime) -> Outcome<License> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM licenses l JOIN policies p ON p.id = l.policy_id WHERE l.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => Ok(license_of(&row, now)?),
            None => Err(not_found(id)),
        }
    }

    /// Suspends, reinstates or revokes license `id`. A revoked license stays revoked.
    pub async fn set_license_status(
        &self,
        id: &str,
        status: LicenseStatus,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<License> {
        let (action, stored) = match status {
            LicenseStatus::Suspended => ("license.suspended", "suspended"),
            LicenseStatus::Active => ("license.reinstated", "active"),
            LicenseStatus::Revoked => ("license.revoked", "revoked"),
            LicenseStatus::Expired => {
                return Err(Refusal::BadRequest("a license expires by its date".into()).into())
            }
        };
        let mut tx = self.db.begin_write().await?;
        let current = current_status(&mut tx, id, self.db.dialect).await?;
        if current == "revoked" {
            return Err(Refusal::Conflict(format!("license {id} is revoked for good")).into());
        }
        if current != stored {
            sqlx::query("UPDATE licenses SET status = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(stored)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                now,
                actor,
                action,
                id,
                json!({"from": current, "to": stored}),
            )
            .await?;
        }
        tx.commit().await?;
        self.license(id, now).await
    }

    /// Extends license `id` by `days` from its expiry (or from now when it has
    /// expired); a perpetual license stays perpetual.
    pub async fn renew_license(
        &self,
        id: &str,
        days: u32,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<License> {
        if days == 0 {
            return Err(Refusal::BadRequest("renew needs at least 1 day".into()).into());
        }
        let mut tx = self.db.begin_write().await?;
        current_status(&mut tx, id, self.db.dialect).await?;
        let row = sqlx::query("SELECT expires_at FROM licenses WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let Some(expires_at) = opt_int(&row, "expires_at")? else {
            return Err(Refusal::Conflict(format!("license {id} is perpetual")).into());
        };
        let renewed = expires_at.max(now) + i64::from(days) * 86_400;
        sqlx::query("UPDATE licenses SET expires_at = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(renewed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            now,
            actor,
            "license.renewed",
            id,
            json!({"from": expires_at, "to": renewed, "days": days}),
        )
        .await?;
        tx.commit().await?;
        self.license(id, now).await
    }

    /// Gives license `id` a new key; the old one stops working at once (installations
    /// already activated keep their activations).
    pub async fn rotate_license_key(
        &self,
        id: &str,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<IssuedLicense> {
        let key =
            LicenseKey::generate().map_err(|_| AuthorityError::Refused(Refusal::Unavailable))?;
        let mut tx = self.db.begin_write().await?;
        current_status(&mut tx, id, self.db.dialect).await?;
        sqlx::query(
            "UPDATE licenses SET key_hash = $2, key_hint = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(key.hash())
        .bind(key.redacted())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            now,
            actor,
            "license.key_rotated",
            id,
            json!({"key_hint": key.redacted()}),
        )
        .await?;
        tx.commit().await?;
        Ok(IssuedLicense {
            license: self.license(id, now).await?,
            key: key.to_string(),
        })
    }

    /// The ids of the revoked licenses of `tenant` (at most 1,000, newest first).
    pub async fn revoked_license_ids(&self, tenant: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id FROM licenses WHERE tenant = $1 AND status = 'revoked' \
             ORDER BY updated_at DESC LIMIT 1000",
        )
        .bind(tenant)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|row| text(row, "id")).collect()
    }
}

/// Locks license `id` for the transaction and returns its stored status.
async fn current_status(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    dialect: crate::authority::db::Dialect,
) -> Outcome<String> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM licenses WHERE id = $1{}",
        dialect.for_update()
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => Ok(text(&row, "status")?),
        None => Err(not_found(id)),
    }
}

/// Appends the audit event `action` of license `id` inside `tx`.
async fn audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    at: UnixTime,
    actor: &str,
    action: &str,
    id: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    append(
        tx,
        NewEvent {
            at,
            actor,
            action,
            license_id: Some(id),
            activation_id: None,
            detail,
        },
    )
    .await
}

fn not_found(id: &str) -> AuthorityError {
    Refusal::NotFound {
        what: "license",
        id: id.to_string(),
    }
    .into()
}
