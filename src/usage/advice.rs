//! Advice from usage, for the customer's administrator: a limit the tenant came close
//! to (≥ 80 % of it in one window of the period: "consider upgrading"), and licensed
//! features nobody used in the last 30 days.
//!
//! Windows are judged from the ledger's hours: hour, day and month limits exactly
//! (calendar windows, UTC, as the quotas count them), concurrency from the peak. A
//! minute is shorter than the ledger's hour, so minute limits are judged only by
//! refusals (a 429 of the period means some limit was reached).

use std::collections::BTreeMap;

use serde::Serialize;

use super::ledger::{Tally, DAY, HOUR};
use super::query::{features_used_since, read, Granularity, UsageQuery, UsageRecord};
use super::series::DayRange;
use crate::database::{Database, DatabaseError};
use crate::license::TenantSummary;

/// From this share of a limit on, a tenant is told to consider upgrading.
pub const NEAR_LIMIT: f64 = 0.8;
/// Days without use after which a licensed feature is reported unused.
pub const UNUSED_DAYS: i64 = 30;

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Advice {
    /// The tenant used `percent` % of a limit in one of its windows.
    NearLimit {
        /// `requests_per_hour`, … or `max_concurrent_connections`.
        limit: &'static str,
        /// The feature whose limit it is (`None`: the tenant's own).
        feature: Option<String>,
        used: u64,
        of: u64,
        percent: u64,
        /// The window (`2026-11-28`, `2026-11-28T08:00Z`, `2026-11`) of the most use.
        period: String,
        message: String,
    },
    /// A licensed feature without a single request in the last [`UNUSED_DAYS`] days.
    UnusedFeature { feature: String, message: String },
}

/// The limits a usage window is judged against: (name, window, limit).
fn windowed(limits: [Option<u64>; 3]) -> impl Iterator<Item = (&'static str, Granularity, u64)> {
    [
        ("requests_per_hour", Granularity::Hour),
        ("requests_per_day", Granularity::Day),
        ("requests_per_month", Granularity::Month),
    ]
    .into_iter()
    .zip(limits)
    .filter_map(|((name, g), limit)| limit.filter(|l| *l > 0).map(|l| (name, g, l)))
}

/// The advice for `license`'s tenant over `range`, with `today` for the unused
/// features (days since 1970-01-01).
pub fn advise(
    db: &Database,
    license: &TenantSummary,
    range: DayRange,
    today: i64,
) -> Result<Vec<Advice>, DatabaseError> {
    let tenant = &*license.tenant;
    let hours = read(
        db,
        &UsageQuery {
            tenant: Some(tenant),
            feature: None,
            from_day: range.from_day,
            to_day: range.to_day,
            granularity: Granularity::Hour,
        },
    )?;
    let mut out = Vec::new();
    let l = &license.limits;
    let all = |_: &UsageRecord| true;
    for (name, g, limit) in windowed([
        l.requests_per_hour,
        l.requests_per_day,
        l.requests_per_month,
    ]) {
        if let Some(advice) = near_limit(&hours, all, g, name, None, limit) {
            out.push(advice);
        }
    }
    for (feature, fl) in &license.feature_limits {
        let of_feature = |r: &UsageRecord| r.feature == *feature;
        for (name, g, limit) in windowed([
            fl.requests_per_hour,
            fl.requests_per_day,
            fl.requests_per_month,
        ]) {
            if let Some(advice) = near_limit(&hours, of_feature, g, name, Some(feature), limit) {
                out.push(advice);
            }
        }
    }
    if let Some(limit) = l.max_concurrent_connections.filter(|l| *l > 0) {
        if let Some(peak) = hours
            .iter()
            .max_by_key(|r| (r.tally.peak_concurrency, std::cmp::Reverse(r.period)))
            .filter(|r| r.tally.peak_concurrency as f64 >= NEAR_LIMIT * limit as f64)
        {
            let used = peak.tally.peak_concurrency;
            out.push(Advice::NearLimit {
                limit: "max_concurrent_connections",
                feature: None,
                used,
                of: limit,
                percent: percent(used, limit),
                period: Granularity::Hour.label(peak.period),
                message: format!(
                    "{used} of {limit} concurrent requests were in use at once ({} %): consider upgrading.",
                    percent(used, limit)
                ),
            });
        }
    }
    let used = features_used_since(db, tenant, (today - UNUSED_DAYS + 1) * (DAY / HOUR))?;
    for feature in license.features.iter() {
        if !used.contains(&**feature) {
            out.push(Advice::UnusedFeature {
                feature: feature.to_string(),
                message: format!(
                    "The licensed feature \"{feature}\" has had no requests in the last {UNUSED_DAYS} days."
                ),
            });
        }
    }
    Ok(out)
}

fn percent(used: u64, of: u64) -> u64 {
    if of == 0 {
        return 0;
    }
    ((u128::from(used) * 100) / u128::from(of)).min(u128::from(u64::MAX)) as u64
}

/// The advice for the window of `granularity` with the most requests among the
/// `hours` that `include` keeps, when it reached [`NEAR_LIMIT`] of `limit`.
fn near_limit(
    hours: &[UsageRecord],
    include: impl Fn(&UsageRecord) -> bool,
    granularity: Granularity,
    name: &'static str,
    feature: Option<&str>,
    limit: u64,
) -> Option<Advice> {
    let mut windows: BTreeMap<i64, Tally> = BTreeMap::new();
    for r in hours.iter().filter(|r| include(r)) {
        windows
            .entry(granularity.period_start(r.period))
            .or_default()
            .add(&r.tally);
    }
    // Allowed requests are what the quota counted (refused ones count nowhere).
    let (period, most) = windows
        .iter()
        .map(|(start, t)| (*start, t.allowed))
        .max_by_key(|(start, n)| (*n, std::cmp::Reverse(*start)))?;
    if (most as f64) < NEAR_LIMIT * limit as f64 {
        return None;
    }
    let per = match granularity {
        Granularity::Hour => "hourly",
        Granularity::Day => "daily",
        Granularity::Month => "monthly",
    };
    let whose = feature.map_or(String::new(), |f| format!(" of the feature \"{f}\""));
    let label = granularity.label(period);
    let p = percent(most, limit);
    Some(Advice::NearLimit {
        limit: name,
        feature: feature.map(str::to_string),
        used: most,
        of: limit,
        percent: p,
        message: format!(
            "{p} % of the {per} limit{whose} was used ({most} of {limit} requests in {label}): consider upgrading."
        ),
        period: label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(feature: &str, period: i64, allowed: u64) -> UsageRecord {
        UsageRecord {
            tenant: "acme".into(),
            feature: feature.into(),
            period,
            tally: Tally {
                allowed,
                ..Tally::default()
            },
        }
    }

    #[test]
    fn the_busiest_window_is_judged_against_its_limit() {
        let day = 20_000 * DAY;
        let hours = [
            hour("-", day, 50),
            hour("reports", day + HOUR, 40),
            hour("reports", day + DAY, 10),
        ];
        let all = |_: &UsageRecord| true;
        let advice =
            near_limit(&hours, all, Granularity::Day, "requests_per_day", None, 100).unwrap();
        let Advice::NearLimit {
            used,
            percent,
            message,
            ..
        } = advice
        else {
            panic!()
        };
        assert_eq!((used, percent), (90, 90));
        assert!(
            message.starts_with("90 % of the daily limit was used (90 of 100 requests in"),
            "{message}"
        );
        assert!(near_limit(
            &hours,
            all,
            Granularity::Hour,
            "requests_per_hour",
            None,
            100
        )
        .is_none());
        let reports = |r: &UsageRecord| r.feature == "reports";
        let advice = near_limit(
            &hours,
            reports,
            Granularity::Month,
            "requests_per_month",
            Some("reports"),
            60,
        );
        assert!(
            matches!(advice, Some(Advice::NearLimit { used: 50, .. })),
            "{advice:?}"
        );
    }
}
