//! The usage page's charts as geometry: numbers and texts the templates turn into
//! inline SVG (`<rect>`, `<text>`, `<title>`), so the page needs no script and every
//! text goes through the templates' escaping.

use serde::Serialize;

use crate::usage::series::Series;
use crate::usage::NO_FEATURE;

/// Colors of the features, in order of their use (the rest share the last one).
const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#6b7280",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 44.0;

/// Bars of requests per period, stacked by feature.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StackedChart {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    pub legend: Vec<Legend>,
    /// The chart in words, for screen readers (`aria-label`).
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bar {
    pub x: f64,
    pub w: f64,
    pub total: u64,
    pub total_y: f64,
    /// Whether the total is written above the bar (when there is room).
    pub show_total: bool,
    pub label: String,
    pub label_x: f64,
    /// Whether the period's name is written below (every few bars).
    pub show_label: bool,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Segment {
    pub y: f64,
    pub h: f64,
    pub color: &'static str,
    /// `2026-12-01 reports: 7 allowed`.
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Tick {
    pub y: f64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Legend {
    pub x: f64,
    pub color: &'static str,
    pub name: String,
}

/// A "nice" round top for an axis whose highest value is `max` (1, 2, 5 × 10^n).
fn nice_top(max: u64) -> u64 {
    if max == 0 {
        return 1;
    }
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            let top = step.saturating_mul(m);
            if top >= max {
                return top;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// The feature's display name (`-` is "other paths").
pub(crate) fn feature_name(feature: &str) -> String {
    if feature == NO_FEATURE {
        "other paths".to_string()
    } else {
        feature.to_string()
    }
}

/// The series' requests (allowed and refused) per period, stacked by feature.
pub(crate) fn requests_chart(series: &Series) -> StackedChart {
    // Features by total requests, the busiest first.
    let mut features: Vec<(&String, u64)> = series
        .features
        .iter()
        .map(|(f, t)| (f, t.requests()))
        .collect();
    features.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let color_of = |feature: &str| {
        let i = features
            .iter()
            .position(|(f, _)| *f == feature)
            .unwrap_or(0);
        PALETTE[i.min(PALETTE.len() - 1)]
    };
    let n = series.series.len().max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let max = series
        .series
        .iter()
        .map(|p| p.tally.requests())
        .max()
        .unwrap_or(0);
    let top = nice_top(max);
    let scale = plot_h / top as f64;
    let label_every = n.div_ceil(12);
    let bars = series
        .series
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
            let mut y = HEIGHT - BOTTOM;
            let mut segments = Vec::new();
            let mut parts: Vec<(&String, u64)> = point
                .by_feature
                .iter()
                .map(|(f, t)| (f, t.requests()))
                .filter(|(_, n)| *n > 0)
                .collect();
            parts.sort_by_key(|(f, _)| features.iter().position(|(g, _)| g == f));
            for (feature, count) in parts {
                let h = count as f64 * scale;
                y -= h;
                segments.push(Segment {
                    y,
                    h,
                    color: color_of(feature),
                    title: format!(
                        "{} {}: {count} requests",
                        point.period,
                        feature_name(feature)
                    ),
                });
            }
            let total = point.tally.requests();
            Bar {
                x,
                w: bar_w,
                total,
                total_y: (HEIGHT - BOTTOM - total as f64 * scale - 4.0).max(TOP - 4.0),
                show_total: total > 0 && n <= 48,
                label: short_period(&point.period),
                label_x: x + bar_w / 2.0,
                show_label: i % label_every == 0,
                segments,
            }
        })
        .collect();
    let ticks = [0, top / 2, top]
        .into_iter()
        .map(|v| Tick {
            y: HEIGHT - BOTTOM - v as f64 * scale,
            text: v.to_string(),
        })
        .collect();
    let mut legend = Vec::new();
    let mut x = LEFT;
    for (feature, _) in features.iter().take(PALETTE.len()) {
        let name = feature_name(feature);
        legend.push(Legend {
            x,
            color: color_of(feature),
            name: name.clone(),
        });
        x += 28.0 + 7.0 * name.chars().count() as f64;
    }
    StackedChart {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        top: TOP,
        bottom: HEIGHT - BOTTOM,
        bars,
        ticks,
        legend,
        summary: format!(
            "Requests per {} from {} to {}: {} in all, at most {} in one {}.",
            series.granularity,
            series.from,
            series.to,
            series.totals.requests(),
            max,
            series.granularity
        ),
    }
}

/// `2026-12-01T08:00Z` → `08:00`, `2026-12-01` → `12-01`, `2026-12` → `2026-12`.
fn short_period(period: &str) -> String {
    if let Some((_, time)) = period.split_once('T') {
        time.trim_end_matches('Z').to_string()
    } else if period.len() == 10 {
        period[5..].to_string()
    } else {
        period.to_string()
    }
}

/// Horizontal bars: one value per row against its own full length.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BarRows {
    pub width: f64,
    pub height: f64,
    pub label_w: f64,
    pub rows: Vec<BarRow>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BarRow {
    pub y: f64,
    pub label: String,
    /// The value's length, and the full length (the limit, or the largest value).
    pub w: f64,
    pub full_w: f64,
    pub text: String,
    pub color: &'static str,
}

const ROW_H: f64 = 28.0;
const LABEL_W: f64 = 240.0;
const BAR_W: f64 = 380.0;

/// One bar per `(label, value, of, text)`: `value` against `of`; red from 100 %,
/// amber from 80 %.
pub(crate) fn bar_rows(rows: Vec<(String, u64, u64, String)>) -> BarRows {
    let rows: Vec<BarRow> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (label, value, of, text))| {
            let share = if of == 0 {
                0.0
            } else {
                (value as f64 / of as f64).min(1.0)
            };
            let color = if of > 0 && value >= of {
                "#dc2626"
            } else if share >= 0.8 {
                "#d97706"
            } else {
                "#2563eb"
            };
            BarRow {
                y: 6.0 + ROW_H * i as f64,
                label,
                w: (BAR_W * share).max(if value > 0 { 1.0 } else { 0.0 }),
                full_w: BAR_W,
                text,
                color,
            }
        })
        .collect();
    BarRows {
        width: LABEL_W + BAR_W + 280.0,
        height: 12.0 + ROW_H * rows.len().max(1) as f64,
        label_w: LABEL_W,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_top(0), 1);
        assert_eq!(nice_top(7), 10);
        assert_eq!(nice_top(11), 20);
        assert_eq!(nice_top(2_000), 2_000);
        assert_eq!(nice_top(u64::MAX), u64::MAX);
        assert_eq!(short_period("2026-12-01T08:00Z"), "08:00");
        assert_eq!(short_period("2026-12-01"), "12-01");
    }
}
