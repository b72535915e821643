//! One tenant's usage as a dense series of periods (every period of the range, zeros
//! included), with totals per feature: what the admin API answers and the usage page
//! draws.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ledger::Tally;
use super::query::{periods, read, Granularity, UsageQuery};
use crate::calendar::{date_text, parse_date};
use crate::database::{Database, DatabaseError};

/// Periods a series holds at most.
pub const MAX_POINTS: usize = 10_000;

/// A tenant's usage over days `from..=to`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub granularity: &'static str,
    /// The one feature asked for, if any.
    pub feature: Option<String>,
    /// Every period of the range, in order.
    pub series: Vec<Point>,
    /// The whole range.
    pub totals: Tally,
    /// The whole range per feature (`-`: outside the feature map).
    pub features: BTreeMap<String, Tally>,
}

/// One period of a [`Series`].
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub period: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// The period per feature (features with use only).
    pub by_feature: BTreeMap<String, Tally>,
}

/// A range of days, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub from_day: i64,
    pub to_day: i64,
}

/// Why a series cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("{0}")]
    BadRange(String),
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl DayRange {
    /// The range of `from` and `to` (`YYYY-MM-DD`, inclusive); a missing `to` is
    /// `today`, a missing `from` 29 days before `to`.
    pub fn parse(from: Option<&str>, to: Option<&str>, today: i64) -> Result<DayRange, String> {
        let day = |name: &str, text: &str| {
            parse_date(text)
                .ok_or_else(|| format!("{name} must be a date YYYY-MM-DD, not {text:?}"))
        };
        let to_day = match to {
            Some(text) => day("to", text)?,
            None => today,
        };
        let from_day = match from {
            Some(text) => day("from", text)?,
            None => to_day - 29,
        };
        if from_day > to_day {
            return Err(format!(
                "from ({}) is after to ({})",
                date_text(from_day),
                date_text(to_day)
            ));
        }
        Ok(DayRange { from_day, to_day })
    }
}

/// `tenant`'s series over `range` by `granularity`, of one `feature` or all.
pub fn tenant_series(
    db: &Database,
    tenant: &str,
    feature: Option<&str>,
    range: DayRange,
    granularity: Granularity,
) -> Result<Series, SeriesError> {
    let starts = periods(granularity, range.from_day, range.to_day, MAX_POINTS).ok_or_else(|| {
        SeriesError::BadRange(format!(
            "more than {MAX_POINTS} periods of a {granularity}: shorten the range or use a longer granularity"
        ))
    })?;
    let records = read(
        db,
        &UsageQuery {
            tenant: Some(tenant),
            feature,
            from_day: range.from_day,
            to_day: range.to_day,
            granularity,
        },
    )?;
    let mut points: Vec<Point> = starts
        .iter()
        .map(|&start| Point {
            period: granularity.label(start),
            tally: Tally::default(),
            by_feature: BTreeMap::new(),
        })
        .collect();
    let mut totals = Tally::default();
    let mut features: BTreeMap<String, Tally> = BTreeMap::new();
    for record in records {
        totals.add(&record.tally);
        features
            .entry(record.feature.clone())
            .or_default()
            .add(&record.tally);
        if let Ok(i) = starts.binary_search(&record.period) {
            let point = &mut points[i];
            point.tally.add(&record.tally);
            point
                .by_feature
                .entry(record.feature)
                .or_default()
                .add(&record.tally);
        }
    }
    // A period's peak is the tenant's, whichever feature's request saw it.
    Ok(Series {
        tenant: tenant.to_string(),
        from: date_text(range.from_day),
        to: date_text(range.to_day),
        granularity: granularity.name(),
        feature: feature.map(str::to_string),
        series: points,
        totals,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_to_the_last_30_days_and_must_be_in_order() {
        let today = parse_date("2026-12-01").unwrap();
        let r = DayRange::parse(None, None, today).unwrap();
        assert_eq!(
            (date_text(r.from_day), date_text(r.to_day)),
            ("2026-11-02".into(), "2026-12-01".into())
        );
        assert!(
            DayRange::parse(Some("2026-12-02"), Some("2026-12-01"), today)
                .unwrap_err()
                .contains("after")
        );
        assert!(DayRange::parse(Some("yesterday"), None, today)
            .unwrap_err()
            .contains("YYYY-MM-DD"));
    }
}
