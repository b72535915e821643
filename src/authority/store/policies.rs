//! Policies (plans): created, listed, shown and updated by the vendor.

use sqlx::any::AnyRow;

use super::events::{append, NewEvent};
use super::{check_text, count, int, json, new_id, opt_int, opt_text, text, to_json, Store};
use crate::authority::error::{Outcome, Refusal};
use crate::authority::model::{Policy, PolicySpec};
use crate::license::claims::{FEATURE_LIMIT_NAMES, LIMIT_NAMES};
use crate::license::UnixTime;

const COLUMNS: &str = "id, name, tier, tier_name, features, limits, feature_limits, flags, \
    max_activations, duration_days, token_ttl, heartbeat_interval, floating, heartbeat_timeout, \
    grace_days, read_only_days, created_at, updated_at";

pub(crate) fn policy_of(row: &AnyRow) -> Result<Policy, sqlx::Error> {
    let small = |n: Option<i64>| n.map(count);
    Ok(Policy {
        id: text(row, "id")?,
        name: text(row, "name")?,
        tier: text(row, "tier")?,
        tier_name: opt_text(row, "tier_name")?,
        features: json(row, "features")?,
        limits: json(row, "limits")?,
        feature_limits: json(row, "feature_limits")?,
        flags: json(row, "flags")?,
        max_activations: count(int(row, "max_activations")?),
        duration_days: small(opt_int(row, "duration_days")?),
        token_ttl: int(row, "token_ttl")?.max(0) as u64,
        heartbeat_interval: int(row, "heartbeat_interval")?.max(0) as u64,
        floating: int(row, "floating")? != 0,
        heartbeat_timeout: int(row, "heartbeat_timeout")?.max(0) as u64,
        grace_days: small(opt_int(row, "grace_days")?),
        read_only_days: small(opt_int(row, "read_only_days")?),
        created_at: int(row, "created_at")?,
        updated_at: int(row, "updated_at")?,
    })
}

/// Applies `spec` over `policy` (fields absent from `spec` stay) and checks the result.
fn apply(policy: &mut Policy, spec: PolicySpec) -> Result<(), Refusal> {
    let PolicySpec {
        name,
        tier,
        tier_name,
        features,
        limits,
        feature_limits,
        flags,
        max_activations,
        duration_days,
        token_ttl,
        heartbeat_interval,
        floating,
        heartbeat_timeout,
        grace_days,
        read_only_days,
    } = spec;
    if let Some(name) = name {
        policy.name = name;
    }
    if let Some(tier) = tier {
        policy.tier = tier;
    }
    if tier_name.is_some() {
        policy.tier_name = tier_name;
    }
    if let Some(features) = features {
        policy.features = features;
    }
    if let Some(limits) = limits {
        policy.limits = limits;
    }
    if let Some(feature_limits) = feature_limits {
        policy.feature_limits = feature_limits;
    }
    if let Some(flags) = flags {
        policy.flags = flags;
    }
    if let Some(n) = max_activations {
        policy.max_activations = n;
    }
    if let Some(days) = duration_days {
        policy.duration_days = (days > 0).then_some(days);
    }
    if let Some(ttl) = token_ttl {
        policy.token_ttl = ttl;
    }
    if let Some(interval) = heartbeat_interval {
        policy.heartbeat_interval = interval;
    }
    if let Some(floating) = floating {
        policy.floating = floating;
    }
    if let Some(timeout) = heartbeat_timeout {
        policy.heartbeat_timeout = timeout;
    }
    if grace_days.is_some() {
        policy.grace_days = grace_days;
    }
    if read_only_days.is_some() {
        policy.read_only_days = read_only_days;
    }
    check(policy)
}

/// The rules every stored policy keeps.
fn check(policy: &Policy) -> Result<(), Refusal> {
    let bad = |s: String| Err(Refusal::BadRequest(s));
    check_text("name", &policy.name, 100)?;
    if !policy
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return bad("name: use letters, digits, `-`, `_` and `.` only".into());
    }
    check_text("tier", &policy.tier, 100)?;
    for feature in &policy.features {
        check_text("feature", feature, 100)?;
    }
    for flag in &policy.flags {
        check_text("flag", flag, 100)?;
    }
    let _ = (LIMIT_NAMES, FEATURE_LIMIT_NAMES);
    if policy.max_activations == 0 {
        return bad("max_activations must be at least 1".into());
    }
    if policy.token_ttl < 60 {
        return bad("token_ttl must be at least 60 seconds".into());
    }
    if policy.heartbeat_interval == 0 || policy.heartbeat_interval >= policy.token_ttl {
        return bad(
            "heartbeat_interval must be positive and shorter than token_ttl (an installation must renew before its token runs out)"
                .into(),
        );
    }
    if policy.floating && policy.heartbeat_timeout < policy.heartbeat_interval {
        return bad("heartbeat_timeout must be at least heartbeat_interval".into());
    }
    Ok(())
}

impl Store {
    /// Creates a policy from `spec` (`name` and `tier` required), the configured
    /// defaults filling what it leaves out.
    pub async fn create_policy(
        &self,
        spec: PolicySpec,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<Policy> {
        let (Some(_), Some(_)) = (&spec.name, &spec.tier) else {
            return Err(Refusal::BadRequest("a policy needs a name and a tier".into()).into());
        };
        let d = &self.defaults;
        let mut policy = Policy {
            id: new_id("pol"),
            name: String::new(),
            tier: String::new(),
            tier_name: None,
            features: Vec::new(),
            limits: Default::default(),
            feature_limits: Default::default(),
            flags: Vec::new(),
            max_activations: d.max_activations,
            duration_days: None,
            token_ttl: d.token_ttl.as_secs(),
            heartbeat_interval: d.heartbeat_interval.as_secs(),
            floating: false,
            heartbeat_timeout: d.heartbeat_timeout.as_secs(),
            grace_days: None,
            read_only_days: None,
            created_at: now,
            updated_at: now,
        };
        apply(&mut policy, spec)?;
        let mut tx = self
            .db
            .pool
            .begin_with(self.db.dialect.begin_write())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO policies (id, name, tier, tier_name, features, limits, feature_limits, flags, \
             max_activations, duration_days, token_ttl, heartbeat_interval, floating, heartbeat_timeout, \
             grace_days, read_only_days, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&policy.id)
        .bind(&policy.name)
        .bind(&policy.tier)
        .bind(&policy.tier_name)
        .bind(to_json(&policy.features))
        .bind(to_json(&policy.limits))
        .bind(to_json(&policy.feature_limits))
        .bind(to_json(&policy.flags))
        .bind(i64::from(policy.max_activations))
        .bind(policy.duration_days.map(i64::from))
        .bind(policy.token_ttl as i64)
        .bind(policy.heartbeat_interval as i64)
        .bind(i64::from(policy.floating))
        .bind(policy.heartbeat_timeout as i64)
        .bind(policy.grace_days.map(i64::from))
        .bind(policy.read_only_days.map(i64::from))
        .bind(policy.created_at)
        .bind(policy.updated_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Refusal::Conflict(format!("a policy named {} exists", policy.name)).into());
        }
        append(
            &mut tx,
            NewEvent {
                at: now,
                actor,
                action: "policy.created",
                license_id: None,
                activation_id: None,
                detail: serde_json::json!({"policy": policy.name, "policy_id": policy.id}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// Every policy, by name.
    pub async fn policies(&self) -> Result<Vec<Policy>, sqlx::Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM policies ORDER BY name"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(policy_of).collect()
    }

    /// The policy named `name` (or with id `name`).
    pub async fn policy(&self, name: &str) -> Outcome<Policy> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM policies WHERE name = $1 OR id = $1"
        )))
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?;
        match row {
            Some(row) => Ok(policy_of(&row)?),
            None => Err(Refusal::NotFound {
                what: "policy",
                id: name.to_string(),
            }
            .into()),
        }
    }

    /// Changes policy `name` by `spec`. Licenses of the policy get the change with
    /// their next token (heartbeat).
    pub async fn update_policy(
        &self,
        name: &str,
        spec: PolicySpec,
        actor: &str,
        now: UnixTime,
    ) -> Outcome<Policy> {
        let mut tx = self
            .db
            .pool
            .begin_with(self.db.dialect.begin_write())
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM policies WHERE name = $1 OR id = $1{}",
            self.db.dialect.for_update()
        )))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(Refusal::NotFound {
                what: "policy",
                id: name.to_string(),
            }
            .into());
        };
        let mut policy = policy_of(&row)?;
        let changes = serde_json::to_value(&spec).unwrap_or_default();
        apply(&mut policy, spec)?;
        policy.updated_at = now;
        let updated = sqlx::query(
            "UPDATE policies SET name = $2, tier = $3, tier_name = $4, features = $5, limits = $6, \
             feature_limits = $7, flags = $8, max_activations = $9, duration_days = $10, token_ttl = $11, \
             heartbeat_interval = $12, floating = $13, heartbeat_timeout = $14, grace_days = $15, \
             read_only_days = $16, updated_at = $17 \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM policies p2 WHERE p2.name = $2 AND p2.id <> $1)",
        )
        .bind(&policy.id)
        .bind(&policy.name)
        .bind(&policy.tier)
        .bind(&policy.tier_name)
        .bind(to_json(&policy.features))
        .bind(to_json(&policy.limits))
        .bind(to_json(&policy.feature_limits))
        .bind(to_json(&policy.flags))
        .bind(i64::from(policy.max_activations))
        .bind(policy.duration_days.map(i64::from))
        .bind(policy.token_ttl as i64)
        .bind(policy.heartbeat_interval as i64)
        .bind(i64::from(policy.floating))
        .bind(policy.heartbeat_timeout as i64)
        .bind(policy.grace_days.map(i64::from))
        .bind(policy.read_only_days.map(i64::from))
        .bind(policy.updated_at)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Refusal::Conflict(format!("a policy named {} exists", policy.name)).into());
        }
        append(
            &mut tx,
            NewEvent {
                at: now,
                actor,
                action: "policy.updated",
                license_id: None,
                activation_id: None,
                detail: serde_json::json!({"policy": policy.name, "policy_id": policy.id, "changes": changes}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }
}
