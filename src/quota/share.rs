//! Per-client fair share of a tenant's quotas (`quota.per_client_share`).
//!
//! Anyone who can reach the gateway can spend a tenant's quota: unauthenticated junk
//! requests to any non-public path count against it. With a share `s`, no single
//! client (an IPv4 address or an IPv6 /64; behind a trusted proxy, the client it
//! forwards for) may use more than `s` of any of the tenant's rate windows (at least
//! one request), nor hold more than `s` of its concurrent slots (at least one). A
//! client over its share gets `429 CLIENT_SHARE_EXCEEDED`; the tenant's other users
//! are not affected, and a request refused for its share consumes none of the
//! tenant's quota.
//!
//! Windows are counted per calendar window (UTC-aligned minute, hour, day, month) per
//! (tenant, feature, client): a count that resets at the window's end. State is
//! bounded: idle entries are pruned once a minute, and at most `max_clients` entries
//! are kept; while full, further clients are not held to a share (the tenant's own
//! quota still applies to them).

use std::hash::{BuildHasher as _, Hasher as _};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::TenantQuota;
use super::{Window, WindowRule};
use crate::throttle::client_network;

/// `(tenant, feature)` digest and client network.
type Key = (u64, IpAddr);

/// One client's use of one (tenant, feature): a count per window kind, and the
/// concurrent slots it holds (tenant entries only).
#[derive(Debug, Default)]
struct ClientUse {
    /// Per [`Window`] (minute, hour, day, month): (window index, requests counted in it).
    counts: [(u64, u64); 4],
    leases: Arc<AtomicU32>,
}

/// Why a client is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShareRefusal {
    /// The client used its share of `rule` in the current window.
    Rate {
        rule: WindowRule,
        share_limit: u64,
        retry_after_secs: u64,
    },
    /// The client holds its share of the tenant's concurrent slots.
    Concurrency { share_limit: u64 },
}

/// Counts of one allowed request, to give back if the tenant's quota refuses it.
#[derive(Debug)]
#[must_use = "refund the ticket if the request is refused after all"]
pub(crate) struct ShareTicket {
    keys: [Option<(Key, i64)>; 2],
}

/// A concurrent slot held by a client, given back on drop.
#[derive(Debug)]
pub(crate) struct ShareLease(Arc<AtomicU32>);

impl Drop for ShareLease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-client shares of every tenant's quotas.
#[derive(Debug)]
pub(crate) struct ClientShares {
    /// The share, in millionths (1..=1_000_000).
    share_ppm: u64,
    max_clients: usize,
    uses: DashMap<Key, ClientUse, foldhash::fast::FixedState>,
    hasher: foldhash::fast::FixedState,
}

/// Most (tenant, feature, client) entries kept at once (about 100 B each).
pub(crate) const MAX_CLIENTS: usize = 200_000;

fn window_index(window: Window) -> usize {
    match window {
        Window::Minute => 0,
        Window::Hour => 1,
        Window::Day => 2,
        Window::Month => 3,
    }
}

impl ClientShares {
    /// Shares of `share` (0 < share ≤ 1).
    pub(crate) fn new(share: f64, max_clients: usize) -> ClientShares {
        let ppm = (share.clamp(0.0, 1.0) * 1e6).round();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 0..=1e6 first"
        )]
        let ppm = ppm as u64;
        ClientShares {
            share_ppm: ppm.clamp(1, 1_000_000),
            max_clients,
            uses: DashMap::default(),
            hasher: foldhash::fast::FixedState::with_seed(0x6c69_6367_6174_6531),
        }
    }

    /// A client's share of `limit`: at least 1.
    pub(crate) fn share_of(&self, limit: u64) -> u64 {
        super::saturating_u64((u128::from(limit) * u128::from(self.share_ppm) / 1_000_000).max(1))
    }

    fn key(&self, tenant: &str, feature: Option<&str>, client: IpAddr) -> Key {
        let mut h = self.hasher.build_hasher();
        h.write(tenant.as_bytes());
        h.write_u8(0xff);
        if let Some(f) = feature {
            h.write(f.as_bytes());
        }
        (h.finish(), client_network(client))
    }

    /// Counts one request of `client` against its share of `tenant`'s rate rules (and
    /// `feature`'s), at `now` (Unix seconds). Refused: nothing is counted.
    pub(crate) fn check(
        &self,
        tenant: &TenantQuota,
        feature: Option<&str>,
        client: IpAddr,
        now: i64,
    ) -> Result<ShareTicket, ShareRefusal> {
        let mut ticket = ShareTicket { keys: [None, None] };
        let feature_rules = feature.and_then(|f| tenant.feature_rules.get(f).map(|r| (f, r)));
        let sets = [
            (None, &tenant.rate_rules.windows[..]),
            match feature_rules {
                Some((f, rules)) => (Some(f), &rules.windows[..]),
                None => (None, &[][..]),
            },
        ];
        // First see that every rule has room, then count (a refusal counts nothing).
        for (feature, rules) in sets {
            if rules.is_empty() {
                continue;
            }
            let key = self.key(tenant.tenant(), feature, client);
            if let Some(entry) = self.uses.get(&key) {
                for rule in rules {
                    let (index, count) = entry.counts[window_index(rule.window)];
                    let share_limit = self.share_of(rule.limit);
                    if index == rule.window.index(now) && count >= share_limit {
                        return Err(ShareRefusal::Rate {
                            rule: *rule,
                            share_limit,
                            retry_after_secs: super::secs_until(rule.window.end(index), now),
                        });
                    }
                }
            }
        }
        for (slot, (feature, rules)) in sets.into_iter().enumerate() {
            if rules.is_empty() {
                continue;
            }
            let key = self.key(tenant.tenant(), feature, client);
            let Some(mut entry) = self.entry(key) else {
                continue;
            };
            for rule in rules {
                let index = rule.window.index(now);
                let (at, count) = &mut entry.counts[window_index(rule.window)];
                if *at != index {
                    (*at, *count) = (index, 0);
                }
                *count += 1;
            }
            ticket.keys[slot] = Some((key, now));
        }
        Ok(ticket)
    }

    /// Gives back what `ticket` counted (the tenant's quota refused the request).
    pub(crate) fn refund(&self, ticket: ShareTicket, tenant: &TenantQuota, feature: Option<&str>) {
        let feature_rules = feature.and_then(|f| tenant.feature_rules.get(f));
        for (slot, entry) in ticket.keys.into_iter().enumerate() {
            let Some((key, now)) = entry else { continue };
            let rules = match slot {
                0 => &tenant.rate_rules.windows[..],
                _ => feature_rules.map_or(&[][..], |r| &r.windows[..]),
            };
            if let Some(mut entry) = self.uses.get_mut(&key) {
                for rule in rules {
                    let (at, count) = &mut entry.counts[window_index(rule.window)];
                    if *at == rule.window.index(now) {
                        *count = count.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Takes one of `client`'s share of `tenant`'s `limit` concurrent slots.
    pub(crate) fn acquire(
        &self,
        tenant: &TenantQuota,
        client: IpAddr,
        limit: u64,
    ) -> Result<Option<ShareLease>, ShareRefusal> {
        let key = self.key(tenant.tenant(), None, client);
        let Some(entry) = self.entry(key) else {
            return Ok(None);
        };
        let share_limit = self.share_of(limit);
        let leases = Arc::clone(&entry.leases);
        drop(entry);
        let taken = leases.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (u64::from(held) < share_limit).then_some(held + 1)
        });
        match taken {
            Ok(_) => Ok(Some(ShareLease(leases))),
            Err(_) => Err(ShareRefusal::Concurrency { share_limit }),
        }
    }

    /// The entry of `key`, created if there is room.
    fn entry(&self, key: Key) -> Option<dashmap::mapref::one::RefMut<'_, Key, ClientUse>> {
        if let Some(entry) = self.uses.get_mut(&key) {
            return Some(entry);
        }
        if self.uses.len() >= self.max_clients {
            return None;
        }
        Some(self.uses.entry(key).or_default())
    }

    /// Forgets entries with no count in a current window and no slot held.
    pub(crate) fn prune(&self, now: i64) {
        self.uses.retain(|_, use_| {
            use_.leases.load(Ordering::Acquire) > 0
                || Window::ALL.iter().any(|w| {
                    let (index, count) = use_.counts[window_index(*w)];
                    count > 0 && index == w.index(now)
                })
        });
        self.uses.shrink_to_fit();
    }

    /// Entries kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.uses.len()
    }
}

#[cfg(test)]
mod tests;
