//! The seat limits of a license: concurrent seats, distinct active users, and the
//! overage allowance on both.

use crate::license::claims::{Limits, Overage};

/// What a tenant's licenses allow in seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatLimits {
    /// `limits.max_seats`.
    pub max_seats: Option<u64>,
    /// `limits.max_active_users` (or its older name `max_users`).
    pub max_active: Option<u64>,
    pub overage: Option<Overage>,
}

impl SeatLimits {
    /// The seat limits of `limits`; `None` when the license limits no seats (then
    /// the gateway keeps no seat state for the tenant).
    pub fn of(limits: &Limits) -> Option<SeatLimits> {
        let max_active = limits.active_users();
        (limits.max_seats.is_some() || max_active.is_some()).then_some(SeatLimits {
            max_seats: limits.max_seats,
            max_active,
            overage: limits.overage,
        })
    }

    /// The most admitted under `limit` with the overage allowance.
    pub fn allowed(&self, limit: u64) -> u64 {
        self.overage.map_or(limit, |o| o.allowed(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_seat_limit_means_no_seat_state() {
        assert_eq!(SeatLimits::of(&Limits::default()), None);
        let limits = Limits {
            max_users: Some(9),
            overage: Overage::new(1.25),
            ..Limits::default()
        };
        let seats = SeatLimits::of(&limits).unwrap();
        assert_eq!(seats.max_active, Some(9));
        assert_eq!(seats.allowed(8), 10);
    }
}
