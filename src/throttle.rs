//! Throttles: a lock-free limiter for repetitive log lines (e.g. one per failed
//! request while the upstream is down: at most one line per interval, with a count of
//! the lines left out in between), and the per-client limiter of activation attempts.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The network that stands for one client: the address for IPv4 (and IPv4-mapped
/// IPv6), its /64 for IPv6 (one host's allocation: a client with a /64 could
/// otherwise use 2^64 addresses).
pub(crate) fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Limits attempts per client network: an IPv4 address, or an IPv6 /64 (one host's
/// allocation: a client with a /64 could otherwise use 2^64 keys). Idle entries are
/// pruned, and the map holds at most `max_clients`; while it is full (after pruning)
/// every client shares one overflow key, so memory stays bounded under a spray of
/// addresses (attempts are then limited for all together until entries age out).
#[derive(Debug)]
pub(crate) struct AttemptThrottle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    max_clients: usize,
    /// A full map is pruned at most once a second (a prune walks every entry).
    prune_gate: LogThrottle,
}

/// The key all clients share once the map is full (an unroutable address).
const OVERFLOW_KEY: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

impl AttemptThrottle {
    /// `per_minute` attempts per client network, for at most `max_clients` networks.
    pub(crate) fn new(per_minute: NonZeroU32, max_clients: usize) -> AttemptThrottle {
        AttemptThrottle {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            max_clients,
            prune_gate: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Whether `ip` may make an attempt now (the attempt is counted).
    pub(crate) fn permit(&self, ip: IpAddr) -> bool {
        let mut key = client_network(ip);
        if self.limiter.len() >= self.max_clients {
            if self.prune_gate.permit().is_some() {
                self.prune();
            }
            if self.limiter.len() >= self.max_clients {
                key = OVERFLOW_KEY;
            }
        }
        self.limiter.check_key(&key).is_ok()
    }

    /// Forgets clients whose attempts no longer count against them.
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    /// Number of client networks remembered.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// Lets one event through per `interval`, counting the others.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` before which no line may be written.
    next_allowed_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            start: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            next_allowed_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` = events left out since the last
    /// line); `None` when this event is to be left out (it is counted).
    pub(crate) fn permit(&self) -> Option<u64> {
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
    fn attempts_are_counted_per_ipv4_address_and_ipv6_64() {
        let throttle = AttemptThrottle::new(NonZeroU32::new(2).unwrap(), 1000);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(throttle.permit(ip("2001:db8:1:2::1")));
        assert!(throttle.permit(ip("2001:db8:1:2:ffff::9")));
        assert!(
            !throttle.permit(ip("2001:db8:1:2:abcd::1")),
            "a third address of the same /64 is the same client"
        );
        assert!(throttle.permit(ip("2001:db8:1:3::1")), "another /64");
        assert!(throttle.permit(ip("192.0.2.1")));
        assert!(throttle.permit(ip("::ffff:192.0.2.1")));
        assert!(
            !throttle.permit(ip("192.0.2.1")),
            "mapped IPv4 is the same client"
        );
        assert!(throttle.permit(ip("192.0.2.2")));
        assert_eq!(throttle.len(), 4);
    }

    #[test]
    fn the_map_is_bounded_and_later_clients_share_one_key() {
        let throttle = AttemptThrottle::new(NonZeroU32::new(3).unwrap(), 100);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            throttle.permit(ip);
        }
        assert!(throttle.len() <= 101, "{}", throttle.len());
        // The overflow key took three attempts and then refuses the rest.
        let late = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
        assert!(!throttle.permit(late));
    }

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
