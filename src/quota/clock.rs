//! The time quota windows are counted in: the system clock, in Unix seconds.
//!
//! Debug builds (the test suite's) add an offset read from the file named by
//! `LICGATE_TEST_CLOCK_OFFSET_FILE`, so that tests can move a running gateway to the
//! end of an hour, a day or a month without waiting for it. Release builds never
//! read it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable naming the offset file (debug builds only).
pub const TEST_OFFSET_ENV: &str = "LICGATE_TEST_CLOCK_OFFSET_FILE";

/// Seconds since the Unix epoch as quotas count them (0 before the epoch).
#[inline]
pub fn now() -> i64 {
    system_now().saturating_add(test_offset())
}

/// Milliseconds since the Unix epoch as quotas count them.
pub fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    ms.saturating_add(test_offset().saturating_mul(1_000))
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(debug_assertions)]
fn test_offset() -> i64 {
    static PATH: std::sync::LazyLock<Option<std::path::PathBuf>> =
        std::sync::LazyLock::new(|| std::env::var_os(TEST_OFFSET_ENV).map(Into::into));
    let Some(path) = PATH.as_ref() else { return 0 };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn test_offset() -> i64 {
    0
}
