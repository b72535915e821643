//! A lock-free limiter for repetitive log lines (e.g. one per failed request while
//! the upstream is down): at most one line per interval, with a count of the lines
//! left out in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per `interval`, counting the others.
#[derive(Debug)]
pub struct LogThrottle {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` before which no line may be written.
    next_allowed_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            start: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            next_allowed_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` = events left out since the last
    /// line); `None` when this event is to be left out (it is counted).
    pub fn permit(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_allowed_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_allowed_ms
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.permit(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.permit(), None);
        }
        // Next interval: the five left out are reported.
        throttle.next_allowed_ms.store(0, Ordering::Relaxed);
        assert_eq!(throttle.permit(), Some(5));
    }
}
