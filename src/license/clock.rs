//! Time as licenses see it: the system clock (or a manual one in tests), guarded
//! against being turned back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::claims::UnixTime;

/// A source of the current time in seconds since the epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: UnixTime) -> ManualClock {
        ManualClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: UnixTime) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

/// Clock rollback defence: remembers the latest time seen (the high-water mark).
/// A clock more than `tolerance_secs` behind it is not believed: licenses are judged
/// at the high-water time instead, so turning the clock back cannot revive an expired
/// license.
#[derive(Debug)]
pub struct RollbackGuard {
    high_water: AtomicI64,
    tolerance_secs: i64,
}

/// The time to judge licenses at, and whether the clock was caught going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub now: UnixTime,
    pub rolled_back_by: Option<i64>,
}

impl RollbackGuard {
    /// A guard starting from a persisted `high_water` mark (0 when none).
    pub fn new(high_water: UnixTime, tolerance_secs: i64) -> RollbackGuard {
        RollbackGuard {
            high_water: AtomicI64::new(high_water),
            tolerance_secs,
        }
    }

    /// The time to use given the clock says `clock_now`; advances the mark.
    pub fn judge(&self, clock_now: UnixTime) -> Judged {
        let previous = self.high_water.fetch_max(clock_now, Ordering::AcqRel);
        if clock_now + self.tolerance_secs < previous {
            Judged {
                now: previous,
                rolled_back_by: Some(previous - clock_now),
            }
        } else {
            Judged {
                now: clock_now,
                rolled_back_by: None,
            }
        }
    }

    /// Takes `time` (from a trusted source) as seen: licenses are not judged before it.
    pub fn observe(&self, time: UnixTime) {
        self.high_water.fetch_max(time, Ordering::AcqRel);
    }

    /// The latest time seen.
    pub fn high_water(&self) -> UnixTime {
        self.high_water.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_time_sample_is_never_judged_before() {
        let guard = RollbackGuard::new(0, 60);
        // The license server signed 5,000 while this clock says 1,000: turned back.
        guard.observe(5_000);
        assert_eq!(
            guard.judge(1_000),
            Judged {
                now: 5_000,
                rolled_back_by: Some(4_000)
            }
        );
        // An older sample changes nothing.
        guard.observe(10);
        assert_eq!(guard.high_water(), 5_000);
        assert_eq!(guard.judge(6_000).now, 6_000);
    }

    #[test]
    fn small_steps_back_are_tolerated_large_ones_are_not() {
        let guard = RollbackGuard::new(1_000, 60);
        assert_eq!(
            guard.judge(2_000),
            Judged {
                now: 2_000,
                rolled_back_by: None
            }
        );
        assert_eq!(
            guard.judge(1_950),
            Judged {
                now: 1_950,
                rolled_back_by: None
            }
        );
        assert_eq!(
            guard.judge(1_000),
            Judged {
                now: 2_000,
                rolled_back_by: Some(1_000)
            }
        );
        assert_eq!(guard.high_water(), 2_000);
        assert_eq!(guard.judge(2_500).now, 2_500);
    }

    #[test]
    fn a_persisted_mark_survives_a_restart() {
        let guard = RollbackGuard::new(5_000, 60);
        assert_eq!(guard.judge(100).now, 5_000);
    }
}
