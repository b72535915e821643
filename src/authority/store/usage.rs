//! Usage reports received from installations (`licgate usage export` files): checked
//! against the instance key registered at activation, stored once per (instance,
//! sequence), chained to the previous report received.

use serde_json::json;

use super::events::{append, NewEvent};
use super::{check_text, int, text, Store};
use crate::authority::error::{Outcome, Refusal};
use crate::authority::model::{SeatUsageRow, UsageRow};
use crate::license::instance_key::InstancePublicKey;
use crate::license::UnixTime;
use crate::usage::report::{self, VerifyError};

/// What became of a report sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Received {
    pub instance_id: String,
    pub sequence: u64,
    /// `false` when this exact report had been received before (nothing changed).
    pub stored: bool,
}

/// Which received usage `usage` sums.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub license_id: Option<String>,
    pub tenant: Option<String>,
    /// Inclusive `YYYY-MM-DD` bounds.
    pub from: Option<String>,
    pub to: Option<String>,
}

fn refusal_of(e: VerifyError) -> Refusal {
    match e {
        VerifyError::BadSignature | VerifyError::OtherKey { .. } => {
            Refusal::SignatureInvalid(e.to_string())
        }
        VerifyError::Malformed(_) | VerifyError::Inconsistent(_) => {
            Refusal::BadRequest(format!("usage report: {e}"))
        }
        other => Refusal::Conflict(format!("usage report: {other}")),
    }
}

impl Store {
    /// Checks and stores the usage report `file` (the exact bytes of the export).
    pub async fn receive_usage(&self, file: &[u8], now: UnixTime) -> Outcome<Received> {
        #[derive(serde::Deserialize)]
        struct Named {
            report: NamedReport,
        }
        #[derive(serde::Deserialize)]
        struct NamedReport {
            instance_id: String,
            #[serde(default)]
            replica_id: Option<String>,
            sequence: u64,
        }
        let named: Named = serde_json::from_slice(file)
            .map_err(|e| Refusal::BadRequest(format!("not a licgate usage report: {e}")))?;
        let instance_id = named.report.instance_id;
        // Each replica of an installation keeps its own chain of reports; the sums
        // add them up.
        let chain = match &named.report.replica_id {
            Some(replica) => {
                check_text("replica_id", replica, 200)?;
                format!("{instance_id}#{replica}")
            }
            None => instance_id.clone(),
        };
        let sequence = named.report.sequence;
        let key_row = sqlx::query(
            "SELECT public_key FROM activations WHERE instance_id = $1 \
             ORDER BY first_seen DESC LIMIT 1",
        )
        .bind(&instance_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(key_row) = key_row else {
            return Err(Refusal::NotFound {
                what: "instance",
                id: instance_id,
            }
            .into());
        };
        let key = InstancePublicKey::from_pem(&text(&key_row, "public_key")?)
            .map_err(|e| Refusal::SignatureInvalid(format!("the registered key: {e}")))?;
        let sha256 = report::sha256_hex(file);
        let stored = sqlx::query(
            "SELECT sequence, sha256, file FROM usage_reports WHERE instance_id = $1 \
             AND sequence IN ($2, $3)",
        )
        .bind(&chain)
        .bind(sequence as i64)
        .bind(sequence as i64 - 1)
        .fetch_all(&self.db.pool)
        .await?;
        let mut previous = None;
        for row in &stored {
            if int(row, "sequence")? == sequence as i64 {
                if text(row, "sha256")? == sha256 {
                    return Ok(Received {
                        instance_id,
                        sequence,
                        stored: false,
                    });
                }
                return Err(Refusal::Conflict(format!(
                    "usage report number {sequence} was already received with other content"
                ))
                .into());
            }
            previous = Some(text(row, "file")?);
        }
        if previous.is_none() {
            let earlier = sqlx::query(
                "SELECT COUNT(*) AS n FROM usage_reports WHERE instance_id = $1 AND sequence < $2",
            )
            .bind(&chain)
            .bind(sequence as i64)
            .fetch_one(&self.db.pool)
            .await?;
            if int(&earlier, "n")? > 0 {
                return Err(Refusal::Conflict(format!(
                    "usage report number {} is missing: send it first",
                    sequence.saturating_sub(1)
                ))
                .into());
            }
        }
        let verified = report::verify(file, &key, previous.as_deref().map(str::as_bytes))
            .map_err(refusal_of)?;
        let body = std::str::from_utf8(file)
            .map_err(|_| Refusal::BadRequest("the report is not UTF-8".into()))?;
        let r = &verified.report;
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO usage_reports (instance_id, sequence, sha256, period_from, period_to, \
             received_at, file) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&chain)
        .bind(sequence as i64)
        .bind(&sha256)
        .bind(&r.period.from)
        .bind(&r.period.to)
        .bind(now)
        .bind(body)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Sent twice at once: the other request stored it.
            return Ok(Received {
                instance_id,
                sequence,
                stored: false,
            });
        }
        for day in &r.days {
            sqlx::query(
                "INSERT INTO usage_days (instance_id, sequence, tenant, feature, day, allowed, \
                 limited, refused, peak_concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&chain)
            .bind(sequence as i64)
            .bind(&day.tenant)
            .bind(&day.feature)
            .bind(&day.day)
            .bind(day.tally.allowed as i64)
            .bind(day.tally.limited as i64)
            .bind(day.tally.refused.values().sum::<u64>() as i64)
            .bind(day.tally.peak_concurrency as i64)
            .execute(&mut *tx)
            .await?;
        }
        for seats in &r.seats {
            sqlx::query(
                "INSERT INTO usage_seat_days (instance_id, installation, sequence, tenant, day, \
                 peak_seats, daily_users, fleet) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&chain)
            .bind(&instance_id)
            .bind(sequence as i64)
            .bind(&seats.tenant)
            .bind(&seats.day)
            .bind(seats.usage.peak_seats.min(i64::MAX as u64) as i64)
            .bind(seats.usage.daily_users.min(i64::MAX as u64) as i64)
            .bind(i64::from(seats.usage.fleet))
            .execute(&mut *tx)
            .await?;
        }
        for (tenant, licenses) in &r.licenses {
            for license in licenses {
                sqlx::query(
                    "INSERT INTO usage_licenses (instance_id, sequence, tenant, license_id) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&chain)
                .bind(sequence as i64)
                .bind(tenant)
                .bind(license)
                .execute(&mut *tx)
                .await?;
            }
        }
        let license_id = r.licenses.values().flatten().next().cloned();
        append(
            &mut tx,
            NewEvent {
                at: now,
                actor: &format!("instance:{instance_id}"),
                action: "usage.received",
                license_id: license_id.as_deref(),
                activation_id: None,
                detail: json!({
                    "sequence": sequence,
                    "from": r.period.from,
                    "to": r.period.to,
                    "sha256": sha256,
                    "chained": verified.chained,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Received {
            instance_id,
            sequence,
            stored: true,
        })
    }

    /// Received usage per tenant, feature and day.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, sqlx::Error> {
        let from = query.from.clone().unwrap_or_else(|| "0000-00-00".into());
        let to = query.to.clone().unwrap_or_else(|| "9999-99-99".into());
        let rows = match &query.license_id {
            Some(license) => {
                sqlx::query(
                    "SELECT d.tenant AS tenant, d.feature AS feature, d.day AS day, \
                     CAST(SUM(d.allowed) AS BIGINT) AS allowed, CAST(SUM(d.limited) AS BIGINT) AS limited, CAST(SUM(d.refused) AS BIGINT) AS refused, \
                     MAX(d.peak_concurrency) AS peak FROM usage_days d \
                     WHERE EXISTS (SELECT 1 FROM usage_licenses u WHERE u.instance_id = d.instance_id \
                     AND u.sequence = d.sequence AND u.tenant = d.tenant AND u.license_id = $1) \
                     AND d.day >= $2 AND d.day <= $3 \
                     GROUP BY d.tenant, d.feature, d.day ORDER BY d.day, d.tenant, d.feature",
                )
                .bind(license)
                .bind(&from)
                .bind(&to)
                .fetch_all(&self.db.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT tenant, feature, day, CAST(SUM(allowed) AS BIGINT) AS allowed, CAST(SUM(limited) AS BIGINT) AS limited, \
                     CAST(SUM(refused) AS BIGINT) AS refused, MAX(peak_concurrency) AS peak FROM usage_days \
                     WHERE tenant = COALESCE($1, tenant) AND day >= $2 AND day <= $3 \
                     GROUP BY tenant, feature, day ORDER BY day, tenant, feature",
                )
                .bind(query.tenant.as_deref())
                .bind(&from)
                .bind(&to)
                .fetch_all(&self.db.pool)
                .await?
            }
        };
        let n = |row: &sqlx::any::AnyRow, name: &str| int(row, name).map(|v| v.max(0) as u64);
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    tenant: text(row, "tenant")?,
                    feature: text(row, "feature")?,
                    day: text(row, "day")?,
                    allowed: n(row, "allowed")?,
                    limited: n(row, "limited")?,
                    refused: n(row, "refused")?,
                    peak_concurrency: n(row, "peak")?,
                })
            })
            .collect()
    }

    /// Received seat figures per tenant and day, summed over the installations that
    /// reported them; the replicas of one installation are added up too, unless
    /// they counted seats fleet-wide (then each reported the fleet's figure, and the
    /// largest is taken).
    pub async fn seat_usage(&self, query: &UsageQuery) -> Result<Vec<SeatUsageRow>, sqlx::Error> {
        let from = query.from.clone().unwrap_or_else(|| "0000-00-00".into());
        let to = query.to.clone().unwrap_or_else(|| "9999-99-99".into());
        let of_license = "EXISTS (SELECT 1 FROM usage_licenses u WHERE \
             u.instance_id = d.instance_id AND u.sequence = d.sequence AND u.tenant = d.tenant \
             AND u.license_id = $1)";
        let of_tenant = "d.tenant = COALESCE($1, d.tenant)";
        let sql = format!(
            "SELECT tenant, day, CAST(SUM(peak) AS BIGINT) AS peak_seats, \
             CAST(SUM(users) AS BIGINT) AS daily_users FROM ( \
               SELECT d.tenant AS tenant, d.day AS day, \
               CASE WHEN MAX(d.fleet) = 1 THEN MAX(d.peak_seats) ELSE SUM(d.peak_seats) END AS peak, \
               CASE WHEN MAX(d.fleet) = 1 THEN MAX(d.daily_users) ELSE SUM(d.daily_users) END AS users \
               FROM usage_seat_days d WHERE {} AND d.day >= $2 AND d.day <= $3 \
               GROUP BY d.tenant, d.day, d.installation \
             ) per_installation GROUP BY tenant, day ORDER BY day, tenant",
            if query.license_id.is_some() {
                of_license
            } else {
                of_tenant
            }
        );
        let filter = query.license_id.as_deref().or(query.tenant.as_deref());
        // Built from the two constant filters above only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter)
            .bind(&from)
            .bind(&to)
            .fetch_all(&self.db.pool)
            .await?;
        let n = |row: &sqlx::any::AnyRow, name: &str| int(row, name).map(|v| v.max(0) as u64);
        rows.iter()
            .map(|row| {
                Ok(SeatUsageRow {
                    tenant: text(row, "tenant")?,
                    day: text(row, "day")?,
                    peak_seats: n(row, "peak_seats")?,
                    daily_users: n(row, "daily_users")?,
                })
            })
            .collect()
    }
}
