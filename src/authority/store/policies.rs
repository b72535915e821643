//! Policies (plans): created, listed, shown and updated by the vendor.

use sqlx::any::AnyRow;

use super::events::{append, NewEvent};
use super::{check_text, count, int, json, new_id, opt_int, opt_text, text, to_json, Store};
use crate::authority::error::{Outcome, Refusal};
use crate::authority::model::{Policy, PolicySpec};
use crate::license::UnixTime;

const COLUMNS: &str = "id, name, tier, tier_name, features, limits, feature_limits, flags, \
    max_activations, duration_days, token_ttl, heartbeat_interval, floating, heartbeat_timeout, \
    grace_days, read_only_days, created_at, updated_at";

/// The policy columns of a query joining `policies p`, named `p_<column>` (read by
/// [`policy_of_joined`]).
pub(crate) const JOINED_COLUMNS: &str = "p.id AS p_id, p.name AS p_name, p.tier AS p_tier, \
    p.tier_name AS p_tier_name, p.features AS p_features, p.limits AS p_limits, \
    p.feature_limits AS p_feature_limits, p.flags AS p_flags, \
    p.max_activations AS p_max_activations, p.duration_days AS p_duration_days, \
    p.token_ttl AS p_token_ttl, p.heartbeat_interval AS p_heartbeat_interval, \
    p.floating AS p_floating, p.heartbeat_timeout AS p_heartbeat_timeout, \
    p.grace_days AS p_grace_days, p.read_only_days AS p_read_only_days, \
    p.created_at AS p_created_at, p.updated_at AS p_updated_at";

pub(crate) fn policy_of(row: &AnyRow) -> Result<Policy, sqlx::Error> {
    policy_with_prefix(row, "")
}

/// The policy of a row selected with [`JOINED_COLUMNS`].
pub(crate) fn policy_of_joined(row: &AnyRow) -> Result<Policy, sqlx::Error> {
    policy_with_prefix(row, "p_")
}

fn policy_with_prefix(row: &AnyRow, prefix: &str) -> Result<Policy, sqlx::Error> {
    let small = |n: Option<i64>| n.map(count);
    let c = |name: &str| format!("{prefix}{name}");
    Ok(Policy {
        id: text(row, &c("id"))?,
        name: text(row, &c("name"))?,
        tier: text(row, &c("tier"))?,
        tier_name: opt_text(row, &c("tier_name"))?,
        features: json(row, &c("features"))?,
        limits: json(row, &c("limits"))?,
        feature_limits: json(row, &c("feature_limits"))?,
        flags: json(row, &c("flags"))?,
        max_activations: count(int(row, &c("max_activations"))?),
        duration_days: small(opt_int(row, &c("duration_days"))?),
        token_ttl: int(row, &c("token_ttl"))?.max(0) as u64,
        heartbeat_interval: int(row, &c("heartbeat_interval"))?.max(0) as u64,
        floating: int(row, &c("floating"))? != 0,
        heartbeat_timeout: int(row, &c("heartbeat_timeout"))?.max(0) as u64,
        grace_days: small(opt_int(row, &c("grace_days"))?),
        read_only_days: small(opt_int(row, &c("read_only_days"))?),
        created_at: int(row, &c("created_at"))?,
        updated_at: int(row, &c("updated_at"))?,
    })
}

/// Binds every field of `policy` as `$1` (id) … `$18` (updated_at), in the order of
/// the table's columns.
fn bind_policy<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    policy: &'q Policy,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
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
        let mut tx = self.db.begin_write().await?;
        let inserted = bind_policy(
            sqlx::query(
                "INSERT INTO policies (id, name, tier, tier_name, features, limits, feature_limits, \
                 flags, max_activations, duration_days, token_ttl, heartbeat_interval, floating, \
                 heartbeat_timeout, grace_days, read_only_days, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 ON CONFLICT (name) DO NOTHING",
            ),
            &policy,
        )
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
        let mut tx = self.db.begin_write().await?;
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
        let updated = bind_policy(
            sqlx::query(
                "UPDATE policies SET name = $2, tier = $3, tier_name = $4, features = $5, limits = $6, \
                 feature_limits = $7, flags = $8, max_activations = $9, duration_days = $10, \
                 token_ttl = $11, heartbeat_interval = $12, floating = $13, heartbeat_timeout = $14, \
                 grace_days = $15, read_only_days = $16, created_at = $17, updated_at = $18 \
                 WHERE id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM policies p2 WHERE p2.name = $2 AND p2.id <> $1)",
            ),
            &policy,
        )
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
