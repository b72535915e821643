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
use super::licenses::{license_of, COLUMNS as LICENSE_COLUMNS};
use super::policies::{policy_of_joined, JOINED_COLUMNS as POLICY_COLUMNS};
use super::{check_text, int, new_id, opt_int, text, Store};
use crate::authority::db::Dialect;
use crate::authority::error::{Outcome, Refusal};
use crate::authority::key::LicenseKey;
use crate::authority::model::{Activation, ActivationStatus, License, LicenseStatus, Policy};
use crate::license::UnixTime;

const COLUMNS: &str = "id, license_id, instance_id, public_key, hostname, status, offline, \
    first_seen, last_seen, ended_at";

/// How long a nonce is remembered: beyond it, the request's date is too old anyway.
pub(crate) const NONCE_MEMORY_SECS: i64 = 900;

/// The activation columns of a query joining `activations a`, named `a_<column>`.
const JOINED_ACTIVATION_COLUMNS: &str = "a.id AS a_id, a.license_id AS a_license_id, \
    a.instance_id AS a_instance_id, a.public_key AS a_public_key, a.hostname AS a_hostname, \
    a.status AS a_status, a.offline AS a_offline, a.first_seen AS a_first_seen, \
    a.last_seen AS a_last_seen, a.ended_at AS a_ended_at";

fn activation_of(row: &AnyRow) -> Result<Activation, sqlx::Error> {
    activation_with_prefix(row, "")
}

fn activation_with_prefix(row: &AnyRow, prefix: &str) -> Result<Activation, sqlx::Error> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(Activation {
        id: text(row, &c("id"))?,
        license_id: text(row, &c("license_id"))?,
        instance_id: text(row, &c("instance_id"))?,
        public_key: text(row, &c("public_key"))?,
        hostname: text(row, &c("hostname"))?,
        status: ActivationStatus::from_stored(&text(row, &c("status"))?),
        offline: int(row, &c("offline"))? != 0,
        first_seen: int(row, &c("first_seen"))?,
        last_seen: int(row, &c("last_seen"))?,
        ended_at: opt_int(row, &c("ended_at"))?,
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
    /// Whether the tenant has revoked licenses (read with heartbeats' context only).
    pub tenant_has_revoked: bool,
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
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LICENSE_COLUMNS}, {POLICY_COLUMNS} FROM licenses l \
             JOIN policies p ON p.id = l.policy_id WHERE l.key_hash = $1{}",
            self.db.dialect.for_update_of_license()
        )))
        .bind(input.key.hash())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Refusal::KeyUnknown.into());
        };
        let license = license_of(&row, now)?;
        if let Some(refusal) = refusal_for(license.status) {
            return Err(refusal.into());
        }
        let policy = policy_of_joined(&row)?;
        let license_id = license.id.clone();
        let max = license.max_activations;

        // One statement after the lock (a fresh snapshot on PostgreSQL): how many
        // are active, and whether this instance is one of them.
        let slots = sqlx::query(
            "SELECT COUNT(*) AS n, MAX(CASE WHEN instance_id = $2 THEN id END) AS mine \
             FROM activations WHERE license_id = $1 AND status = 'active'",
        )
        .bind(&license_id)
        .bind(input.instance_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut active = int(&slots, "n")?;
        let existing = match super::opt_text(&slots, "mine")? {
            Some(mine) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM activations WHERE id = $1"
                )))
                .bind(mine)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => None,
        };
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
                return Ok(Granted {
                    activation: Activation {
                        last_seen: now,
                        hostname: input.hostname.to_string(),
                        ..activation
                    },
                    license,
                    policy,
                    created: false,
                    tenant_has_revoked: false,
                });
            }
            let ended = if policy.floating && stale(&activation, &policy, now) {
                ActivationStatus::Culled
            } else {
                ActivationStatus::Replaced
            };
            end(&mut tx, &activation, ended, "authority", now).await?;
            active -= 1;
            changed = true;
        }
        if policy.floating {
            let culled = cull_license(&mut tx, &license_id, &policy, now).await?;
            active -= culled as i64;
            changed |= culled > 0;
        }
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
        Ok(Granted {
            activation: Activation {
                id,
                license_id,
                instance_id: input.instance_id.to_string(),
                public_key: input.public_key.to_string(),
                hostname: input.hostname.to_string(),
                status: ActivationStatus::Active,
                offline: input.offline,
                first_seen: now,
                last_seen: now,
                ended_at: None,
            },
            license: License {
                active_activations: super::count(active + 1),
                ..license
            },
            policy,
            created: true,
            tenant_has_revoked: false,
        })
    }

    /// Activation `id` with its license and policy, in one read: what a heartbeat or
    /// deactivation is checked against before anything is written. `None` when no
    /// such activation exists.
    pub async fn activation_context(&self, id: &str, now: UnixTime) -> Outcome<Option<Granted>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOINED_ACTIVATION_COLUMNS}, {LICENSE_COLUMNS}, {POLICY_COLUMNS}, \
             (SELECT COUNT(*) FROM licenses r WHERE r.tenant = l.tenant AND r.status = 'revoked') \
             AS revoked_in_tenant FROM activations a JOIN licenses l ON l.id = a.license_id \
             JOIN policies p ON p.id = l.policy_id WHERE a.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Granted {
            activation: activation_with_prefix(&row, "a_")?,
            license: license_of(&row, now)?,
            policy: policy_of_joined(&row)?,
            created: false,
            tenant_has_revoked: int(&row, "revoked_in_tenant")? > 0,
        }))
    }

    /// The public key (SPKI PEM) of the newest active activation of `instance_id`.
    pub async fn instance_public_key(&self, instance_id: &str) -> Outcome<Option<String>> {
        let row = sqlx::query(
            "SELECT public_key FROM activations WHERE instance_id = $1 AND status = 'active' \
             ORDER BY first_seen DESC LIMIT 1",
        )
        .bind(instance_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(text(&row, "public_key")?),
            None => None,
        })
    }

    /// The active activations of `instance_id`, each with its license and policy
    /// (newest first), after remembering `nonce` for the instance (`REPLAYED` when
    /// it was used before).
    pub async fn instance_activations(
        &self,
        instance_id: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Outcome<Vec<Granted>> {
        check_text("instance_id", instance_id, 200)?;
        let mut tx = self.db.begin_write().await?;
        remember_nonce(&mut tx, &format!("instance:{instance_id}"), nonce, now).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOINED_ACTIVATION_COLUMNS}, {LICENSE_COLUMNS}, {POLICY_COLUMNS}              FROM activations a JOIN licenses l ON l.id = a.license_id              JOIN policies p ON p.id = l.policy_id              WHERE a.instance_id = $1 AND a.status = 'active' ORDER BY a.first_seen DESC"
        )))
        .bind(instance_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(Granted {
                    activation: activation_with_prefix(row, "a_")?,
                    license: license_of(row, now)?,
                    policy: policy_of_joined(row)?,
                    created: false,
                    tenant_has_revoked: false,
                })
            })
            .collect()
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

    /// Records a heartbeat of the activation of `context` (read by
    /// [`activation_context`](Self::activation_context) and authenticated by the
    /// caller) carrying `nonce`: refuses a nonce seen before, a gone activation, and a
    /// floating one silent past its timeout (culled now).
    pub async fn heartbeat(
        &self,
        context: Granted,
        nonce: &str,
        now: UnixTime,
    ) -> Outcome<Granted> {
        let Granted {
            activation,
            license,
            policy,
            tenant_has_revoked,
            ..
        } = context;
        if activation.status != ActivationStatus::Active {
            return Err(Refusal::ActivationGone.into());
        }
        if policy.floating && stale(&activation, &policy, now) {
            let mut tx = self.db.begin_write().await?;
            remember_nonce(&mut tx, &activation.id, nonce, now).await?;
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
        match self.db.dialect {
            // One statement, one round trip and one commit: the nonce recorded and
            // `last_seen` moved together, or neither.
            Dialect::Postgres => {
                check_nonce(nonce)?;
                let row = sqlx::query(
                    "WITH fresh AS (INSERT INTO nonces (scope, nonce, seen_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING RETURNING 1), \
                     beat AS (UPDATE activations SET last_seen = $3 WHERE id = $1 \
                     AND status = 'active' AND EXISTS (SELECT 1 FROM fresh) RETURNING 1) \
                     SELECT (SELECT COUNT(*) FROM fresh) AS fresh, (SELECT COUNT(*) FROM beat) AS beat",
                )
                .bind(&activation.id)
                .bind(nonce)
                .bind(now)
                .fetch_one(&self.db.pool)
                .await?;
                if int(&row, "fresh")? == 0 {
                    return Err(Refusal::Replayed.into());
                }
                if int(&row, "beat")? == 0 {
                    // Deactivated since it was read (the nonce stays spent).
                    return Err(Refusal::ActivationGone.into());
                }
            }
            Dialect::Sqlite => {
                let mut tx = self.db.begin_write().await?;
                remember_nonce(&mut tx, &activation.id, nonce, now).await?;
                let beat = sqlx::query(
                    "UPDATE activations SET last_seen = $2 WHERE id = $1 AND status = 'active'",
                )
                .bind(&activation.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if beat.rows_affected() == 0 {
                    // Deactivated since it was read.
                    return Err(Refusal::ActivationGone.into());
                }
                tx.commit().await?;
            }
        }
        Ok(Granted {
            activation: Activation {
                last_seen: now,
                ..activation
            },
            license,
            policy,
            created: false,
            tenant_has_revoked,
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
        let mut tx = self.db.begin_write().await?;
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
            let mut tx = self.db.begin_write().await?;
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

/// A nonce a client made: 16 to 128 visible ASCII characters.
pub(crate) fn check_nonce(nonce: &str) -> Result<(), Refusal> {
    if (16..=128).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Refusal::BadRequest(
            "nonce: 16 to 128 visible ASCII characters, fresh for every request".into(),
        ))
    }
}

/// Records `nonce` for `scope`; `REPLAYED` when it was seen before.
pub(crate) async fn remember_nonce(
    tx: &mut Transaction<'static, Any>,
    scope: &str,
    nonce: &str,
    now: UnixTime,
) -> Outcome<()> {
    check_nonce(nonce)?;
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

/// License `id` and its policy, read inside `tx`.
async fn license_and_policy(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now: UnixTime,
) -> Outcome<(License, Policy)> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_COLUMNS}, {POLICY_COLUMNS} FROM licenses l \
         JOIN policies p ON p.id = l.policy_id WHERE l.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((license_of(&row, now)?, policy_of_joined(&row)?))
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
