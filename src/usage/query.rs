//! Reading the ledger: rows of a period summed per tenant, feature and hour, day or
//! month (UTC), and the licenses seen in force.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rusqlite::params;

use super::ledger::{Tally, DAY, HOUR};
use crate::calendar::{civil_from_days, date_text, days_from_civil, month_start};
use crate::database::{Database, DatabaseError};

/// How long the periods of a usage series are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    Hour,
    #[default]
    Day,
    Month,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Month => "month",
        }
    }

    /// The start (Unix seconds) of the period holding `at`.
    pub fn period_start(self, at: i64) -> i64 {
        match self {
            Granularity::Hour => at.div_euclid(HOUR) * HOUR,
            Granularity::Day => at.div_euclid(DAY) * DAY,
            Granularity::Month => month_start(at.div_euclid(DAY)) * DAY,
        }
    }

    /// The start of the period after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Granularity::Hour => start + HOUR,
            Granularity::Day => start + DAY,
            Granularity::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// The period's name: `2026-12-01T08:00Z`, `2026-12-01` or `2026-12`.
    pub fn label(self, start: i64) -> String {
        let day = date_text(start.div_euclid(DAY));
        match self {
            Granularity::Hour => format!("{day}T{:02}:00Z", start.rem_euclid(DAY) / HOUR),
            Granularity::Day => day,
            Granularity::Month => day[..7].to_string(),
        }
    }
}

impl FromStr for Granularity {
    type Err = String;

    fn from_str(s: &str) -> Result<Granularity, String> {
        match s {
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            "month" => Ok(Granularity::Month),
            other => Err(format!(
                "granularity must be hour, day or month, not {other:?}"
            )),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which rows to read: days `from_day..=to_day` (days since 1970-01-01, UTC).
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery<'a> {
    pub tenant: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub from_day: i64,
    pub to_day: i64,
    pub granularity: Granularity,
}

/// One tenant's use of one feature in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub tenant: String,
    pub feature: String,
    /// The period's start (Unix seconds).
    pub period: i64,
    pub tally: Tally,
}

/// The rows of `query`, summed per tenant, feature and period, in that order.
pub fn read(db: &Database, query: &UsageQuery<'_>) -> Result<Vec<UsageRecord>, DatabaseError> {
    let mut sums: BTreeMap<(String, String, i64), Tally> = BTreeMap::new();
    let period = |hour: i64| query.granularity.period_start(hour * HOUR);
    each_row(
        db,
        query,
        "x.allowed, x.limited, x.peak",
        "usage_hours",
        |key, hour, r| {
            let tally = sums.entry((key.0, key.1, period(hour))).or_default();
            tally.allowed += r.get::<_, i64>(3)?.unsigned_abs();
            tally.limited += r.get::<_, i64>(4)?.unsigned_abs();
            let peak = r.get::<_, i64>(5)?.unsigned_abs();
            tally.peak_concurrency = tally.peak_concurrency.max(peak);
            Ok(())
        },
    )?;
    each_row(
        db,
        query,
        "x.code, x.count",
        "usage_refusals",
        |key, hour, r| {
            let tally = sums.entry((key.0, key.1, period(hour))).or_default();
            let count = r.get::<_, i64>(4)?.unsigned_abs();
            *tally.refused.entry(r.get::<_, String>(3)?).or_default() += count;
            Ok(())
        },
    )?;
    Ok(sums
        .into_iter()
        .map(|((tenant, feature, period), tally)| UsageRecord {
            tenant,
            feature,
            period,
            tally,
        })
        .collect())
}

/// Calls `add` with (tenant, feature), the hour and the row, for every row of
/// `table` (`usage_hours`, `usage_refusals`) that `query` selects; the row's columns
/// 3 and on are `columns` (of `x`, the table).
fn each_row(
    db: &Database,
    query: &UsageQuery<'_>,
    columns: &str,
    table: &str,
    mut add: impl FnMut((String, String), i64, &rusqlite::Row<'_>) -> rusqlite::Result<()>,
) -> Result<(), DatabaseError> {
    let filter = match query.tenant {
        Some(_) => "k.tenant = ?3 AND (?4 IS NULL OR k.feature = ?4)",
        None => "(?3 IS NULL) AND (?4 IS NULL OR k.feature = ?4)",
    };
    let mut statement = db
        .connection
        .prepare(&format!(
            "SELECT k.tenant, k.feature, x.hour, {columns}
             FROM usage_keys k JOIN {table} x ON x.key = k.id
             WHERE {filter} AND x.hour >= ?1 AND x.hour < ?2"
        ))
        .map_err(|e| db.sqlite(e))?;
    let from_hour = query.from_day * (DAY / HOUR);
    let to_hour = (query.to_day + 1) * (DAY / HOUR);
    let mut rows = statement
        .query(params![from_hour, to_hour, query.tenant, query.feature])
        .map_err(|e| db.sqlite(e))?;
    while let Some(r) = rows.next().map_err(|e| db.sqlite(e))? {
        let tenant = r.get(0).map_err(|e| db.sqlite(e))?;
        let feature = r.get(1).map_err(|e| db.sqlite(e))?;
        let hour = r.get(2).map_err(|e| db.sqlite(e))?;
        add((tenant, feature), hour, r).map_err(|e| db.sqlite(e))?;
    }
    Ok(())
}

/// One tenant's seat figures in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SeatUsage {
    /// The most seats in use at once (sampled at each save, every few seconds).
    pub peak_seats: u64,
    /// The most distinct people (seat identities) seen on one day (UTC) of the period.
    pub daily_users: u64,
    /// The figures are the fleet's (seats counted in Redis): every replica of the
    /// installation reports the same, so they are not to be added up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fleet: bool,
}

/// One tenant's seat figures in one period (`seats` configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRecord {
    pub tenant: String,
    /// The period's start (Unix seconds).
    pub period: i64,
    pub figures: SeatUsage,
}

/// The seat rows of days `from_day..=to_day` (of `tenant`, or every tenant), per
/// tenant and period of `granularity`, in that order. For hours, `daily_users` is
/// the hour's day's figure.
pub fn read_seats(
    db: &Database,
    tenant: Option<&str>,
    from_day: i64,
    to_day: i64,
    granularity: Granularity,
) -> Result<Vec<SeatRecord>, DatabaseError> {
    let mut sums: BTreeMap<(String, i64), SeatUsage> = BTreeMap::new();
    let sqlite = |e| db.sqlite(e);
    let hours_per_day = DAY / HOUR;
    let mut hours = db
        .connection
        .prepare(
            "SELECT tenant, hour, peak_seats FROM usage_seat_hours
             WHERE (?3 IS NULL OR tenant = ?3) AND hour >= ?1 AND hour < ?2",
        )
        .map_err(sqlite)?;
    let rows = hours
        .query_map(
            params![
                from_day * hours_per_day,
                (to_day + 1) * hours_per_day,
                tenant
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .map_err(sqlite)?;
    for row in rows {
        let (tenant, hour, peak) = row.map_err(sqlite)?;
        let figures = sums
            .entry((tenant, granularity.period_start(hour * HOUR)))
            .or_default();
        figures.peak_seats = figures.peak_seats.max(peak.unsigned_abs());
    }
    let mut days = db
        .connection
        .prepare(
            "SELECT tenant, day, distinct_users, fleet FROM usage_seat_days
             WHERE (?3 IS NULL OR tenant = ?3) AND day >= ?1 AND day <= ?2",
        )
        .map_err(sqlite)?;
    let rows = days
        .query_map(params![from_day, to_day, tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)? != 0,
            ))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (tenant, day, users, fleet) = row.map_err(sqlite)?;
        let users = users.unsigned_abs();
        let starts: Vec<i64> = match granularity {
            // Each of the day's hours with a row carries the day's figure.
            Granularity::Hour => sums
                .range((tenant.clone(), day * DAY)..(tenant.clone(), (day + 1) * DAY))
                .map(|((_, start), _)| *start)
                .collect(),
            _ => vec![granularity.period_start(day * DAY)],
        };
        for start in starts {
            let figures = sums.entry((tenant.clone(), start)).or_default();
            figures.daily_users = figures.daily_users.max(users);
            figures.fleet |= fleet;
        }
    }
    Ok(sums
        .into_iter()
        .map(|((tenant, period), figures)| SeatRecord {
            tenant,
            period,
            figures,
        })
        .collect())
}

/// The license ids seen in force per tenant on days `from_day..=to_day`.
pub fn licenses(
    db: &Database,
    from_day: i64,
    to_day: i64,
) -> Result<BTreeMap<String, BTreeSet<String>>, DatabaseError> {
    let mut statement = db
        .connection
        .prepare("SELECT tenant, license_ids FROM usage_licenses WHERE day >= ?1 AND day <= ?2")
        .map_err(|e| db.sqlite(e))?;
    let rows = statement
        .query_map(params![from_day, to_day], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| db.sqlite(e))?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let (tenant, ids) = row.map_err(|e| db.sqlite(e))?;
        let set = out.entry(tenant).or_default();
        set.extend(ids.split(',').filter(|s| !s.is_empty()).map(str::to_string));
    }
    Ok(out)
}

/// The features `tenant` used (any request counted) since hour `since_hour`.
pub fn features_used_since(
    db: &Database,
    tenant: &str,
    since_hour: i64,
) -> Result<BTreeSet<String>, DatabaseError> {
    let mut statement = db
        .connection
        .prepare(
            "SELECT DISTINCT k.feature FROM usage_keys k
             WHERE k.tenant = ?1 AND (
                 EXISTS (SELECT 1 FROM usage_hours h WHERE h.key = k.id AND h.hour >= ?2)
                 OR EXISTS (SELECT 1 FROM usage_refusals r WHERE r.key = k.id AND r.hour >= ?2))",
        )
        .map_err(|e| db.sqlite(e))?;
    let rows = statement
        .query_map(params![tenant, since_hour], |r| r.get::<_, String>(0))
        .map_err(|e| db.sqlite(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| db.sqlite(e))
}

/// The period starts of `granularity` from day `from_day` to day `to_day`
/// (inclusive), at most `max` of them (`None` beyond).
pub fn periods(
    granularity: Granularity,
    from_day: i64,
    to_day: i64,
    max: usize,
) -> Option<Vec<i64>> {
    let end = (to_day + 1) * DAY;
    let mut at = granularity.period_start(from_day * DAY);
    let mut out = Vec::new();
    while at < end {
        if out.len() == max {
            return None;
        }
        out.push(at);
        at = granularity.next(at);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::parse_date;

    #[test]
    fn periods_are_utc_hours_days_and_calendar_months() {
        let day = parse_date("2026-11-30").unwrap();
        let at = day * DAY + 8 * HOUR + 59 * 60;
        assert_eq!(
            Granularity::Hour.label(Granularity::Hour.period_start(at)),
            "2026-11-30T08:00Z"
        );
        assert_eq!(
            Granularity::Day.label(Granularity::Day.period_start(at)),
            "2026-11-30"
        );
        let month = Granularity::Month.period_start(at);
        assert_eq!(Granularity::Month.label(month), "2026-11");
        assert_eq!(
            Granularity::Month.label(Granularity::Month.next(month)),
            "2026-12"
        );
        let dec = parse_date("2026-12-15").unwrap() * DAY;
        assert_eq!(
            Granularity::Month.label(Granularity::Month.next(dec - dec % DAY)),
            "2027-01"
        );
        let months = periods(
            Granularity::Month,
            day,
            parse_date("2027-01-01").unwrap(),
            10,
        )
        .unwrap();
        assert_eq!(months.len(), 3);
        assert_eq!(periods(Granularity::Hour, day, day, 24).unwrap().len(), 24);
        assert_eq!(periods(Granularity::Hour, day, day + 1, 24), None);
        assert_eq!(
            "week".parse::<Granularity>().unwrap_err(),
            "granularity must be hour, day or month, not \"week\""
        );
    }
}
