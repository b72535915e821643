//! Calendar windows of quotas, aligned on UTC: the minute, the hour, the day and the
//! calendar month a moment falls in, numbered from the Unix epoch.

use serde::Serialize;

use crate::calendar::{civil_from_days, days_from_civil};

/// The window of a quota "N per window".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

const SECS_PER_DAY: i64 = 86_400;

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Month];

    /// `minute`, `hour`, `day` or `month` (config keys, JSON, Redis keys, the database).
    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window named `name` ([`Window::name`]'s inverse).
    pub fn from_name(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The current window in words: "this minute", "this hour", "today", "this month".
    pub fn this(self) -> &'static str {
        match self {
            Window::Minute => "this minute",
            Window::Hour => "this hour",
            Window::Day => "today",
            Window::Month => "this month",
        }
    }

    /// The number of the window `now` (Unix seconds) falls in, counted from the
    /// window holding the epoch (times before the epoch count as the epoch).
    #[inline]
    pub fn index(self, now: i64) -> u64 {
        let now = now.max(0);
        let index = match self {
            Window::Minute => now / 60,
            Window::Hour => now / 3_600,
            Window::Day => now / SECS_PER_DAY,
            Window::Month => {
                let (year, month, _) = civil_from_days(now / SECS_PER_DAY);
                (year - 1970) * 12 + (month - 1)
            }
        };
        index.unsigned_abs()
    }

    /// When window `index` starts (Unix seconds).
    pub fn start(self, index: u64) -> i64 {
        let index = i64::try_from(index).unwrap_or(i64::MAX / 4_000_000);
        match self {
            Window::Minute => index.saturating_mul(60),
            Window::Hour => index.saturating_mul(3_600),
            Window::Day => index.saturating_mul(SECS_PER_DAY),
            Window::Month => {
                let (year, month) = (1970 + index / 12, index % 12 + 1);
                days_from_civil(year, month, 1).saturating_mul(SECS_PER_DAY)
            }
        }
    }

    /// When window `index` ends: the start of the next one (Unix seconds).
    #[inline]
    pub fn end(self, index: u64) -> i64 {
        self.start(index.saturating_add(1))
    }

    /// The length of window `index` in seconds (a month's depends on the month).
    #[inline]
    pub fn seconds(self, index: u64) -> u64 {
        match self {
            Window::Minute => 60,
            Window::Hour => 3_600,
            Window::Day => 86_400,
            Window::Month => (self.end(index) - self.start(index)).unsigned_abs(),
        }
    }
}

/// `HH:MM UTC` of `at` (Unix seconds), with the date in front when it is not the same
/// UTC day as `now` ("2026-12-02 00:00 UTC").
pub fn clock_text(at: i64, now: i64) -> String {
    let (day, secs) = (at.div_euclid(SECS_PER_DAY), at.rem_euclid(SECS_PER_DAY));
    let hm = format!("{:02}:{:02} UTC", secs / 3_600, secs % 3_600 / 60);
    if day == now.div_euclid(SECS_PER_DAY) {
        return hm;
    }
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02} {hm}")
}

/// A duration in words, rounded up to what a person reads: "42 s", "23 min",
/// "5 h 10 min", "3 days".
pub fn duration_text(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3_599 => format!("{} min", secs.div_ceil(60)),
        3_600..=86_399 => {
            let minutes = secs.div_ceil(60);
            match minutes % 60 {
                0 => format!("{} h", minutes / 60),
                m => format!("{} h {m} min", minutes / 60),
            }
        }
        _ => {
            let days = secs.div_ceil(86_400);
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip_and_match_the_time_crate() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let date = time::OffsetDateTime::from_unix_timestamp(days * SECS_PER_DAY)
                .unwrap()
                .date();
            assert_eq!(
                (y, m, d),
                (
                    i64::from(date.year()),
                    i64::from(u8::from(date.month())),
                    i64::from(date.day())
                )
            );
        }
    }

    #[test]
    fn windows_are_calendar_aligned() {
        // 2026-12-01 07:37:12 UTC.
        let now = 1_796_110_632;
        for w in Window::ALL {
            let i = w.index(now);
            assert!(w.start(i) <= now && now < w.end(i), "{w:?}");
            assert_eq!(w.index(w.start(i)), i);
            assert_eq!(w.index(w.end(i)), i + 1);
            assert_eq!(w.index(w.end(i) - 1), i);
        }
        assert_eq!(Window::Hour.end(Window::Hour.index(now)), 1_796_112_000);
        let month = Window::Month.index(now);
        assert_eq!(month, (2026 - 1970) * 12 + 11);
        assert_eq!(
            Window::Month.start(month),
            days_from_civil(2026, 12, 1) * 86_400
        );
        assert_eq!(
            Window::Month.end(month),
            days_from_civil(2027, 1, 1) * 86_400
        );
        assert_eq!(Window::Month.seconds(month), 31 * 86_400);
        let february_2028 = (2028 - 1970) * 12 + 1;
        assert_eq!(Window::Month.seconds(february_2028), 29 * 86_400);
        assert_eq!(Window::Day.index(-5), 0);
    }

    #[test]
    fn texts_say_when() {
        let now = 1_796_110_632; // 07:37:12
        assert_eq!(clock_text(1_796_112_000, now), "08:00 UTC");
        assert_eq!(clock_text(1_796_169_600, now), "2026-12-02 00:00 UTC");
        assert_eq!(
            duration_text((1_796_112_000 - now).unsigned_abs()),
            "23 min"
        );
        assert_eq!(duration_text(42), "42 s");
        assert_eq!(duration_text(3_600), "1 h");
        assert_eq!(duration_text(5 * 3_600 + 9 * 60 + 1), "5 h 10 min");
        assert_eq!(duration_text(2 * 86_400 + 1), "3 days");
        assert_eq!(duration_text(86_400), "1 day");
        for w in Window::ALL {
            assert_eq!(Window::from_name(w.name()), Some(w));
        }
    }
}
