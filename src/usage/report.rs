//! Signed usage reports for true-up: what an installation counted over a period of
//! whole days (UTC), per tenant, feature and day, with the licenses seen in force,
//! signed by the instance key and chained to the report before it.
//!
//! A report file is JSON:
//!
//! ```text
//! {"report": {"format": "licgate-usage-report/1", "instance_id", "instance_public_key",
//!             "instance_key_fingerprint", "sequence", "previous_sha256", "period":
//!             {"from", "to"}, "created_at", "licenses": {tenant: [ids]},
//!             "days": [{"tenant", "feature", "day", "allowed", "limited", "refused",
//!                       "peak_concurrency"}], "totals": {tenant: {...}},
//!             "seats": [{"tenant", "day", "peak_seats", "daily_users"}]},
//!  "signature": "<base64 Ed25519 signature of the report's bytes as they stand>"}
//! ```
//!
//! The signature covers the exact bytes of the `report` value in the file, so the
//! file must be sent as is (not reformatted). `previous_sha256` is the SHA-256 of the
//! previous report's file; periods follow one another without overlap or gap.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ledger::Tally;
use super::query::{licenses, read, read_seats, Granularity, SeatUsage, UsageQuery};
use crate::calendar::{date_text, parse_date};
use crate::database::{Database, DatabaseError};
use crate::license::instance_key::{InstanceKey, InstancePublicKey};

/// The `format` of the reports this build writes.
pub const FORMAT: &str = "licgate-usage-report/1";

/// A usage report's content (the signed part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub format: String,
    pub instance_id: String,
    /// SPKI PEM of the key that signs the report.
    pub instance_public_key: String,
    pub instance_key_fingerprint: String,
    /// The gateway replica (one store) that counted this: replicas of one
    /// installation each keep their own chain, and the license server sums them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// 1 for an installation's first report, then one more each time.
    pub sequence: u64,
    /// The SHA-256 (hex) of the previous report's file; `null` for the first.
    pub previous_sha256: Option<String>,
    pub period: ReportPeriod,
    pub created_at: String,
    /// The license ids seen in force per tenant during the period.
    pub licenses: BTreeMap<String, Vec<String>>,
    pub days: Vec<ReportDay>,
    /// The period's totals per tenant.
    pub totals: BTreeMap<String, Tally>,
    /// Seat figures per tenant and day (tenants with seats configured; absent in
    /// reports of installations without `[seats]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<ReportSeats>,
}

/// One tenant's seats on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSeats {
    pub tenant: String,
    pub day: String,
    #[serde(flatten)]
    pub usage: SeatUsage,
}

/// The days a report covers (inclusive, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPeriod {
    pub from: String,
    pub to: String,
}

/// One tenant's use of one feature on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportDay {
    pub tenant: String,
    pub feature: String,
    pub day: String,
    #[serde(flatten)]
    pub tally: Tally,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    report: &'a RawValue,
    signature: String,
}

/// The last report an installation made (from its database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExport {
    pub sequence: u64,
    pub from_day: i64,
    pub to_day: i64,
    pub sha256: String,
    /// The report file as written.
    pub file: String,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// The SHA-256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The last report recorded in `db`.
pub fn last_export(db: &Database) -> Result<Option<LastExport>, DatabaseError> {
    use rusqlite::OptionalExtension as _;
    db.connection
        .query_row(
            "SELECT sequence, from_day, to_day, sha256, report FROM usage_exports
             ORDER BY sequence DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(|e| db.sqlite(e))
        .map(|row| {
            row.map(|(sequence, from, to, sha256, file)| LastExport {
                sequence: sequence.unsigned_abs(),
                from_day: parse_date(&from).unwrap_or(0),
                to_day: parse_date(&to).unwrap_or(0),
                sha256,
                file,
            })
        })
}

/// Who makes a report: the installation's key and id, and the replica (store).
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    pub key: &'a InstanceKey,
    pub instance_id: &'a str,
    pub replica_id: Option<&'a str>,
}

/// What [`export`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The report file's text.
    pub file: String,
    pub sequence: u64,
    /// Whether this is the period's existing report, made again.
    pub again: bool,
}

/// Makes (and records in `db`) the report of days `from_day..=to_day`, signed by
/// `key`, following the installation's last report: the period must start the day
/// after the last one ended and be over by `today`. Asking again for the last
/// report's period gives that same report.
pub fn export(
    db: &mut Database,
    reporter: &Reporter<'_>,
    from_day: i64,
    to_day: i64,
    today: i64,
    created_at: &str,
) -> Result<Exported, ExportError> {
    if from_day > to_day {
        return Err(ExportError::Period(format!(
            "--from ({}) is after --to ({})",
            date_text(from_day),
            date_text(to_day)
        )));
    }
    if to_day >= today {
        return Err(ExportError::Period(format!(
            "the period must be over: --to must be before today ({}, UTC)",
            date_text(today)
        )));
    }
    let last = last_export(db)?;
    if let Some(last) = &last {
        if last.from_day == from_day && last.to_day == to_day {
            return Ok(Exported {
                file: last.file.clone(),
                sequence: last.sequence,
                again: true,
            });
        }
        if from_day != last.to_day + 1 {
            return Err(ExportError::Period(format!(
                "the last report (number {}) covered {} to {}: the next one starts on {} (reports neither overlap nor leave gaps)",
                last.sequence,
                date_text(last.from_day),
                date_text(last.to_day),
                date_text(last.to_day + 1)
            )));
        }
    }
    let records = read(
        db,
        &UsageQuery {
            tenant: None,
            feature: None,
            from_day,
            to_day,
            granularity: Granularity::Day,
        },
    )?;
    let mut totals: BTreeMap<String, Tally> = BTreeMap::new();
    let days: Vec<ReportDay> = records
        .into_iter()
        .map(|r| {
            totals.entry(r.tenant.clone()).or_default().add(&r.tally);
            ReportDay {
                day: Granularity::Day.label(r.period),
                tenant: r.tenant,
                feature: r.feature,
                tally: r.tally,
            }
        })
        .collect();
    let seats = read_seats(db, None, from_day, to_day, Granularity::Day)?
        .into_iter()
        .map(|r| ReportSeats {
            tenant: r.tenant,
            day: Granularity::Day.label(r.period),
            usage: r.figures,
        })
        .collect();
    let licenses = licenses(db, from_day, to_day)?
        .into_iter()
        .map(|(tenant, ids)| (tenant, ids.into_iter().collect()))
        .collect();
    let report = UsageReport {
        format: FORMAT.to_string(),
        instance_id: reporter.instance_id.to_string(),
        instance_public_key: reporter.key.public_key_pem(),
        instance_key_fingerprint: reporter.key.fingerprint(),
        replica_id: reporter.replica_id.map(str::to_string),
        sequence: last.as_ref().map_or(1, |l| l.sequence + 1),
        previous_sha256: last.as_ref().map(|l| l.sha256.clone()),
        period: ReportPeriod {
            from: date_text(from_day),
            to: date_text(to_day),
        },
        created_at: created_at.to_string(),
        licenses,
        days,
        totals,
        seats,
    };
    let file = signed_file(&report, reporter.key);
    db.connection
        .execute(
            "INSERT INTO usage_exports (sequence, from_day, to_day, sha256, created_at, report)
             VALUES (?1, ?2, ?3, ?4, strftime('%s', 'now'), ?5)",
            rusqlite::params![
                i64::try_from(report.sequence).unwrap_or(i64::MAX),
                report.period.from,
                report.period.to,
                sha256_hex(file.as_bytes()),
                file
            ],
        )
        .map_err(|e| db.sqlite(e))?;
    Ok(Exported {
        file,
        sequence: report.sequence,
        again: false,
    })
}

/// The report file of `report`, signed by `key`.
pub fn signed_file(report: &UsageReport, key: &InstanceKey) -> String {
    let body = serde_json::to_string_pretty(report).expect("a report serializes");
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(body.as_bytes()));
    format!("{{\"report\": {body},\n\"signature\": \"{signature}\"}}\n")
}

/// Why a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a licgate usage report: {0}")]
    Malformed(String),
    #[error("signed by another instance key ({found}), not by {expected}")]
    OtherKey { found: String, expected: String },
    #[error("the signature does not verify: the report was changed after it was signed")]
    BadSignature,
    #[error("the previous report: {0}")]
    Previous(Box<VerifyError>),
    #[error("replayed: report number {sequence} was already received (it is the previous report)")]
    Replayed { sequence: u64 },
    #[error("out of order: report number {sequence} comes before the previous report (number {previous})")]
    Reordered { sequence: u64, previous: u64 },
    #[error("a report is missing: report number {sequence} follows number {previous}")]
    Missing { sequence: u64, previous: u64 },
    #[error("the chain is broken: previous_sha256 is not the SHA-256 of the previous report")]
    BrokenChain,
    #[error(
        "the period {from}..{to} overlaps the previous report's (which ended on {previous_to})"
    )]
    Overlap {
        from: String,
        to: String,
        previous_to: String,
    },
    #[error("the period starts on {from}: the days after the previous report's end ({previous_to}) are missing")]
    Gap { from: String, previous_to: String },
    #[error("the counts do not add up: {0}")]
    Inconsistent(String),
}

/// A report whose signature (and chain, with the previous report) checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub report: UsageReport,
    /// Whether the chain was checked against the previous report.
    pub chained: bool,
}

/// Checks `file` against `key` (and `previous`, the report before it, when given):
/// the signature, the key it names, the counts, the sequence, the chain and that the
/// periods neither overlap nor leave a gap.
pub fn verify(
    file: &[u8],
    key: &InstancePublicKey,
    previous: Option<&[u8]>,
) -> Result<Verified, VerifyError> {
    let report = verify_signed(file, key)?;
    let Some(previous_file) = previous else {
        if report.sequence == 1 && report.previous_sha256.is_some() {
            return Err(VerifyError::Malformed(
                "report number 1 names a previous report".into(),
            ));
        }
        return Ok(Verified {
            report,
            chained: false,
        });
    };
    let before =
        verify_signed(previous_file, key).map_err(|e| VerifyError::Previous(Box::new(e)))?;
    if file == previous_file || report.sequence == before.sequence {
        return Err(VerifyError::Replayed {
            sequence: report.sequence,
        });
    }
    if report.sequence < before.sequence {
        return Err(VerifyError::Reordered {
            sequence: report.sequence,
            previous: before.sequence,
        });
    }
    if report.sequence > before.sequence + 1 {
        return Err(VerifyError::Missing {
            sequence: report.sequence,
            previous: before.sequence,
        });
    }
    if report.previous_sha256.as_deref() != Some(sha256_hex(previous_file).as_str()) {
        return Err(VerifyError::BrokenChain);
    }
    let from = parse_date(&report.period.from).unwrap_or(0);
    let previous_to = parse_date(&before.period.to).unwrap_or(0);
    if from <= previous_to {
        return Err(VerifyError::Overlap {
            from: report.period.from.clone(),
            to: report.period.to.clone(),
            previous_to: before.period.to.clone(),
        });
    }
    if from > previous_to + 1 {
        return Err(VerifyError::Gap {
            from: report.period.from.clone(),
            previous_to: before.period.to.clone(),
        });
    }
    Ok(Verified {
        report,
        chained: true,
    })
}

/// The report of `file` when `key` signed it and its content is consistent.
fn verify_signed(file: &[u8], key: &InstancePublicKey) -> Result<UsageReport, VerifyError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(file).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let signed = envelope.report.get().as_bytes();
    let report: UsageReport =
        serde_json::from_slice(signed).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if report.format != FORMAT {
        return Err(VerifyError::Malformed(format!(
            "format {:?}, expected {FORMAT:?}",
            report.format
        )));
    }
    let named = InstancePublicKey::from_pem(&report.instance_public_key)
        .map_err(|e| VerifyError::Malformed(format!("instance_public_key: {e}")))?;
    if named != *key {
        return Err(VerifyError::OtherKey {
            found: named.fingerprint(),
            expected: key.fingerprint(),
        });
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(envelope.signature.as_bytes())
        .map_err(|_| VerifyError::BadSignature)?;
    if !key.verifies(signed, &signature) {
        return Err(VerifyError::BadSignature);
    }
    check_counts(&report)?;
    Ok(report)
}

/// The report's days lie in its period and its totals are their sums.
fn check_counts(report: &UsageReport) -> Result<(), VerifyError> {
    let bad = |s: String| Err(VerifyError::Inconsistent(s));
    let (Some(from), Some(to)) = (
        parse_date(&report.period.from),
        parse_date(&report.period.to),
    ) else {
        return bad("the period's dates are not YYYY-MM-DD".into());
    };
    if from > to {
        return bad("the period ends before it starts".into());
    }
    let mut sums: BTreeMap<String, Tally> = BTreeMap::new();
    for day in &report.days {
        match parse_date(&day.day) {
            Some(d) if (from..=to).contains(&d) => {}
            _ => return bad(format!("day {} is outside the period", day.day)),
        }
        sums.entry(day.tenant.clone()).or_default().add(&day.tally);
    }
    if sums != report.totals {
        return bad("the totals are not the sums of the days".into());
    }
    for seats in &report.seats {
        match parse_date(&seats.day) {
            Some(d) if (from..=to).contains(&d) => {}
            _ => return bad(format!("seat day {} is outside the period", seats.day)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
