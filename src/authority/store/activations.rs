//! Activations: an installation takes a slot of a license, renews it with heartbeats,
//! frees it (or loses it to culling when floating and silent).
//!
//! Every change runs in one write transaction that first locks the license row
//! (PostgreSQL `FOR UPDATE`; SQLite `BEGIN IMMEDIATE`), so concurrent activations of
//! one license — in one process or several on one PostgreSQL — are counted one after
//! the other and never exceed `max_activations`.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::events::{append, NewEvent};
use super::licenses::{license_of, status_at, COLUMNS as LICENSE_COLUMNS};
use super::policies::policy_of;
use super::{check_text, int, new_id, opt_int, text, Store};
use crate::authority::error::{Outcome, Refusal};
use crate::authority::key::LicenseKey;
use crate::authority::model::{
    Activation, ActivationStatus, License, LicenseOverrides, LicenseStatus, Policy,
};
use crate::license::UnixTime;

const COLUMNS: &str = "id, license_id, instance_id, public_key, hostname, status, offline, \
    first_seen, last_seen, ended_at";

/// How long a nonce is remembered: beyond it, the request's date is too old anyway.
pub(crate) const NONCE_MEMORY_SECS: i64 = 900;

fn activation_of(row: &AnyRow) -> Result<Activation, sqlx::Error> {
    Ok(Activation {
        id: text(row, "id")?,
        license_id: text(row, "license_id")?,
        instance_id: text(row, "instance_id")?,
        public_key: text(row, "public_key")?,
        hostname: text(row, "hostname")?,
        status: ActivationStatus::from_stored(&text(row, "status")?),
        offline: int(row, "offline")? != 0,
        first_seen: int(row, "first_seen")?,
        last_seen: int(row, "last_seen")?,
        ended_at: opt_int(row, "ended_at")?,
    })
}

/// What an installation presents to activate.
#[derive(Debug, Clone)]
pub struct ActivationInput<'a> {
    pub key: &'a LicenseKey,
    pub instance_id: &'a str,
    /// SPKI PEM, already checked to be an Ed25519 key.
    pub public_key: &'a str,
    pub hostname: &'a str,
    pub offline: bool,
}

/// An activation with what its token is made of.
#[derive(Debug, Clone)]
pub struct Granted {
    pub activation: Activation,
    pub license: License,
    pub policy: Policy,
    /// `false` when the instance already held a slot and got it back.
    pub created: bool,
}

/// The refusal for a license that may not be used at `now`, if any.
pub(crate) fn refusal_for(status: LicenseStatus) -> Option<Refusal> {
    match status {
        LicenseStatus::Active => None,
        LicenseStatus::Suspended => Some(Refusal::Suspended),
        LicenseStatus::Revoked => Some(Refusal::Revoked),
        LicenseStatus::Expired => Some(Refusal::Expired),
    }
}

impl Store {
    /// Activates `input.instance_id` on the license of `input.key`.
    ///
    /// The same instance with the same public key gets its activation back (no second
    /// slot); with another key its old activation is replaced. Floating activations
    /// silent past the policy's timeout are culled first, freeing their slots.
    pub async fn activate(
        &self,
        input: ActivationInput<'_>,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<Granted> {
        check_text("instance_id", input.instance_id, 200)?;
        check_text("hostname", input.hostname, 255)?;
        let mut tx = self
            .db
            .pool
            .begin_with(self.db.dialect.begin_write())
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, status, expires_at, overrides, policy_id FROM licenses WHERE key_hash = $1{}",
            self.db.dialect.for_update()
        )))
        .bind(input.key.hash())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Refusal::KeyUnknown.into());
        };
        let license_id = text(&row, "id")?;
        let status = status_at(&text(&row, "status")?, opt_int(&row, "expires_at")?, now);
        if let Some(refusal) = refusal_for(status) {
            return Err(refusal.into());
        }
        let overrides: LicenseOverrides = super::json(&row, "overrides")?;
        let policy_row = sqlx::query(
            "SELECT id, name, tier, tier_name, features, limits, feature_limits, flags, \
             max_activations, duration_days, token_ttl, heartbeat_interval, floating, \
             heartbeat_timeout, grace_days, read_only_days, created_at, updated_at \
             FROM policies WHERE id = $1",
        )
        .bind(text(&row, "policy_id")?)
        .fetch_one(&mut *tx)
        .await?;
        let policy = policy_of(&policy_row)?;
        let max = overrides.max_activations.unwrap_or(policy.max_activations);

        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM activations \
             WHERE license_id = $1 AND instance_id = $2 AND status = 'active'"
        )))
        .bind(&license_id)
        .bind(input.instance_id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut changed = false;
        if let Some(existing) = existing {
            let activation = activation_of(&existing)?;
            if activation.public_key.trim() == input.public_key.trim()
                && !(policy.floating && stale(&activation, &policy, now))
            {
                sqlx::query("UPDATE activations SET last_seen = $2, hostname = $3 WHERE id = $1")
                    .bind(&activation.id)
                    .bind(now)
                    .bind(input.hostname)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return self.granted(&activation.id, false, now).await;
            }
            let ended = if policy.floating && stale(&activation, &policy, now) {
                ActivationStatus::Culled
            } else {
                ActivationStatus::Replaced
            };
            end(&mut tx, &activation, ended, "authority", now).await?;
            changed = true;
        }
        if policy.floating {
            changed |= cull_license(&mut tx, &license_id, &policy, now).await? > 0;
        }
        let active = int(
            &sqlx::query(
                "SELECT COUNT(*) AS n FROM activations WHERE license_id = $1 AND status = 'active'",
            )
            .bind(&license_id)
            .fetch_one(&mut *tx)
            .await?,
            "n",
        )?;
        if active >= i64::from(max) {
            if changed {
                tx.commit().await?;
            }
            return Err(Refusal::LimitReached {
                max,
                active: super::count(active),
            }
            .into());
        }
        let id = new_id("act");
        sqlx::query(
            "INSERT INTO activations (id, license_id, instance_id, public_key, hostname, status, \
             offline, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7)",
        )
        .bind(&id)
        .bind(&license_id)
        .bind(input.instance_id)
        .bind(input.public_key)
        .bind(input.hostname)
        .bind(i64::from(input.offline))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            NewEvent {
                at: now,
                actor,
                action: "activation.created",
                license_id: Some(&license_id),
                activation_id: Some(&id),
                detail: json!({
                    "instance_id": input.instance_id,
                    "hostname": input.hostname,
                    "offline": input.offline,
                    "active": active + 1,
                    "max_activations": max,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        self.granted(&id, true, now).await
    }

    /// Activation `id` with its license and policy.
    async fn granted(&self, id: &str, created: bool, now: UnixTime) -> Outcome<Granted> {
        let activation = self.activation(id).await?;
        let license = self.license(&activation.license_id, now).await?;
        let policy = self.policy(&license.policy_id).await?;
        Ok(Granted {
            activation,
            license,
            policy,
            created,
        })
    }

    /// Activation `id` (in any status).
    pub async fn activation(&self, id: &str) -> Outcome<Activation> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM activations WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => Ok(activation_of(&row)?),
            None => Err(Refusal::NotFound {
                what: "activation",
                id: id.to_string(),
            }
            .into()),
        }
    }

    /// Activations (of `license_id` when given), newest first, at most `limit`.
    pub async fn activations(
        &self,
        license_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Activation>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM activations WHERE license_id = COALESCE($1, license_id) \
             ORDER BY first_seen DESC, id LIMIT $2"
        )))
        .bind(license_id)
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(activation_of).collect()
    }

    /// Records a heartbeat of activation `id` carrying `nonce` (already authenticated
    /// by the caller): refuses a nonce seen before, a gone activation, and a floating
    /// one silent past its timeout (culled now). Returns what its token is made of.
    pub async fn heartbeat(&self, id: &str, nonce: &str, now: UnixTime) -> Outcome<Granted> {
        let mut tx = self
            .db
            .pool
            .begin_with(self.db.dialect.begin_write())
            .await?;
        remember_nonce(&mut tx, id, nonce, now).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM activations WHERE id = $1{}",
            self.db.dialect.for_update()
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Refusal::ActivationGone.into());
        };
        let activation = activation_of(&row)?;
        if activation.status != ActivationStatus::Active {
            return Err(Refusal::ActivationGone.into());
        }
        let (license, policy) = license_and_policy(&mut tx, &activation.license_id, now).await?;
        if policy.floating && stale(&activation, &policy, now) {
            end(
                &mut tx,
                &activation,
                ActivationStatus::Culled,
                "authority",
                now,
            )
            .await?;
            tx.commit().await?;
            return Err(Refusal::ActivationGone.into());
        }
        sqlx::query("UPDATE activations SET last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let activation = Activation {
            last_seen: now,
            ..activation
        };
        Ok(Granted {
            activation,
            license,
            policy,
            created: false,
        })
    }

    /// Frees the slot of activation `id`; `nonce`, when given, must be new.
    pub async fn deactivate(
        &self,
        id: &str,
        nonce: Option<&str>,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<Activation> {
        let mut tx = self
            .db
            .pool
            .begin_with(self.db.dialect.begin_write())
            .await?;
        if let Some(nonce) = nonce {
            remember_nonce(&mut tx, id, nonce, now).await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM activations WHERE id = $1{}",
            self.db.dialect.for_update()
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Refusal::NotFound {
                what: "activation",
                id: id.to_string(),
            }
            .into());
        };
        let activation = activation_of(&row)?;
        if activation.status != ActivationStatus::Active {
            return Err(Refusal::ActivationGone.into());
        }
        end(
            &mut tx,
            &activation,
            ActivationStatus::Deactivated,
            actor,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Activation {
            status: ActivationStatus::Deactivated,
            ended_at: Some(now),
            ..activation
        })
    }

    /// Culls every floating activation silent past its policy's timeout (at most
    /// 1,000 per call); returns how many. Safe to run in several processes at once.
    pub async fn cull_stale(&self, now: UnixTime) -> Outcome<u64> {
        let rows = sqlx::query(
            "SELECT a.id AS id, a.license_id AS license_id FROM activations a \
             JOIN licenses l ON l.id = a.license_id JOIN policies p ON p.id = l.policy_id \
             WHERE a.status = 'active' AND p.floating = 1 AND a.last_seen < $1 - p.heartbeat_timeout \
             LIMIT 1000",
        )
        .bind(now)
        .fetch_all(&self.db.pool)
        .await?;
        let mut culled = 0;
        for row in rows {
            let license_id = text(&row, "license_id")?;
            let mut tx = self
                .db
                .pool
                .begin_with(self.db.dialect.begin_write())
                .await?;
            let (_, policy) = license_and_policy(&mut tx, &license_id, now).await?;
            culled += cull_license(&mut tx, &license_id, &policy, now).await?;
            tx.commit().await?;
        }
        Ok(culled)
    }

    /// Forgets nonces older than [`NONCE_MEMORY_SECS`].
    pub async fn prune_nonces(&self, now: UnixTime) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM nonces WHERE seen_at < $1")
            .bind(now - NONCE_MEMORY_SECS)
            .execute(&self.db.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Whether floating `activation` has been silent past its policy's timeout.
fn stale(activation: &Activation, policy: &Policy, now: UnixTime) -> bool {
    activation.last_seen < now - policy.heartbeat_timeout as i64
}

/// Records `nonce` for `scope`; `REPLAYED` when it was seen before.
pub(crate) async fn remember_nonce(
    tx: &mut Transaction<'static, Any>,
    scope: &str,
    nonce: &str,
    now: UnixTime,
) -> Outcome<()> {
    if nonce.len() < 16 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::BadRequest(
            "nonce: 16 to 128 visible ASCII characters, fresh for every request".into(),
        )
        .into());
    }
    let done = sqlx::query(
        "INSERT INTO nonces (scope, nonce, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(nonce)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Refusal::Replayed.into());
    }
    Ok(())
}

/// License `id` (locked) and its policy.
async fn license_and_policy(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now: UnixTime,
) -> Outcome<(License, Policy)> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses l JOIN policies p ON p.id = l.policy_id WHERE l.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let license = license_of(&row, now)?;
    let policy_row = sqlx::query(
        "SELECT id, name, tier, tier_name, features, limits, feature_limits, flags, \
         max_activations, duration_days, token_ttl, heartbeat_interval, floating, \
         heartbeat_timeout, grace_days, read_only_days, created_at, updated_at \
         FROM policies WHERE id = $1",
    )
    .bind(&license.policy_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((license, policy_of(&policy_row)?))
}

/// Ends `activation` with `status` and audits it.
async fn end(
    tx: &mut Transaction<'static, Any>,
    activation: &Activation,
    status: ActivationStatus,
    actor: &str,
    now: UnixTime,
) -> Outcome<()> {
    sqlx::query(
        "UPDATE activations SET status = $2, ended_at = $3 WHERE id = $1 AND status = 'active'",
    )
    .bind(&activation.id)
    .bind(status.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    append(
        tx,
        NewEvent {
            at: now,
            actor,
            action: match status {
                ActivationStatus::Culled => "activation.culled",
                ActivationStatus::Replaced => "activation.replaced",
                _ => "activation.deactivated",
            },
            license_id: Some(&activation.license_id),
            activation_id: Some(&activation.id),
            detail: json!({"instance_id": activation.instance_id, "last_seen": activation.last_seen}),
        },
    )
    .await?;
    Ok(())
}

/// Culls the silent activations of floating license `license_id`; returns how many.
async fn cull_license(
    tx: &mut Transaction<'static, Any>,
    license_id: &str,
    policy: &Policy,
    now: UnixTime,
) -> Outcome<u64> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM activations WHERE license_id = $1 AND status = 'active' AND last_seen < $2"
    )))
    .bind(license_id)
    .bind(now - policy.heartbeat_timeout as i64)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        end(
            tx,
            &activation_of(row)?,
            ActivationStatus::Culled,
            "authority",
            now,
        )
        .await?;
    }
    Ok(rows.len() as u64)
}
