//! Brute-force limits on the endpoints that take a license key: attempts per client
//! address and per key (GCRA, governor), kept in memory per authority process.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::config::AttemptLimits;
use super::error::Refusal;

/// Attempt limiters for one process.
pub struct Attempts {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_key: DefaultKeyedRateLimiter<String>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Attempts {
    pub fn new(limits: AttemptLimits) -> Attempts {
        Attempts {
            by_address: RateLimiter::keyed(per_minute(limits.per_address_per_minute)),
            by_key: RateLimiter::keyed(per_minute(limits.per_key_per_minute)),
        }
    }

    /// Counts an attempt from `address`; `RATE_LIMITED` past the limit.
    pub fn from_address(&self, address: IpAddr) -> Result<(), Refusal> {
        self.by_address.check_key(&address).map_err(retry)
    }

    /// Counts an attempt on the key whose hash is `key_hash`.
    pub fn on_key(&self, key_hash: String) -> Result<(), Refusal> {
        self.by_key.check_key(&key_hash).map_err(retry)
    }

    /// Forgets keys whose limits have recovered (bounds memory).
    pub fn forget_recovered(&self) {
        self.by_address.retain_recent();
        self.by_key.retain_recent();
        self.by_address.shrink_to_fit();
        self.by_key.shrink_to_fit();
    }
}

fn retry(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Refusal {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    Refusal::RateLimited {
        retry_after: wait.as_secs().max(1),
    }
}
