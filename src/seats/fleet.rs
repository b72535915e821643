//! Seats counted fleet-wide in Redis (with `quota.backend = "redis"`): one sorted
//! set per tenant, `{prefix}seats:{tenant}`, its members the seat ids, scored by
//! last-seen time. A new identity is admitted by one script (count, compare, add)
//! so two gateways can never both take the last seat. An identity seated by Redis
//! is trusted by this gateway for [`SYNC_INTERVAL`] before asking again, so a busy
//! user costs one Redis call per interval, not one per request.
//!
//! While Redis cannot be reached, `quota.redis.on_error` decides for new identities
//! (`allow`: seated uncounted; `deny`: refused as unavailable; `local`: counted by
//! this gateway alone); identities this gateway has seated keep working.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::book::{Admission, SeatBook, SeatKind, SeatTimes, SeatsFull, UnixTime, KEPT_AT_LEAST};
use super::limits::SeatLimits;
use super::SeatId;
use crate::config::OnRedisError;
use crate::quota::redis::RedisQuotas;

/// How long a seat admitted by Redis is trusted without asking again (seconds).
pub(crate) const SYNC_INTERVAL: i64 = 10;
/// Seats one gateway remembers per tenant (beyond, the stalest are forgotten).
const CACHED_PER_TENANT: usize = 100_000;

/// Admits `ARGV` = (id high, id low, now, idle, window, seats allowed, seats limit,
/// active allowed, active limit, keep); a limit of -1 is none. Replies {1, over,
/// seats in use, identities seen today (UTC)} when seated (the fleet's figures for
/// the ledger), {0, kind (1 seats, 2 active users), in use, frees at} when full.
const ADMIT_LUA: &str = r#"
local z = KEYS[1]
local id = ARGV[1] .. ':' .. ARGV[2]
local now, idle, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local sa, sl, aa, al = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local keep = tonumber(ARGV[10])
local function figures(over)
  local in_use = redis.call('ZCOUNT', z, '(' .. (now - idle), '+inf')
  local today = redis.call('ZCOUNT', z, now - now % 86400, '+inf')
  return {1, over, in_use, today}
end
local last = redis.call('ZSCORE', z, id)
if last then
  last = tonumber(last)
  if (sa < 0 or now - last < idle) and (aa < 0 or now - last < window) then
    if now > last then redis.call('ZADD', z, now, id) end
    return figures(0)
  end
end
redis.call('ZREMRANGEBYSCORE', z, '-inf', now - keep)
local over = 0
local checks = {{sa, sl, idle, 1}, {aa, al, window, 2}}
for _, c in ipairs(checks) do
  local allowed, limit, span, kind = c[1], c[2], c[3], c[4]
  if allowed >= 0 then
    local since = '(' .. (now - span)
    local n = redis.call('ZCOUNT', z, since, '+inf')
    if last and now - last < span then n = n - 1 end
    if n >= allowed then
      local oldest = redis.call('ZRANGEBYSCORE', z, since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      local frees = now
      if oldest[2] then frees = tonumber(oldest[2]) + span end
      return {0, kind, n, frees}
    end
    if n >= limit then over = 1 end
  end
end
redis.call('ZADD', z, now, id)
redis.call('EXPIRE', z, keep)
return figures(over)
"#;

/// Every seat: replies {id high, id low, last seen, ...} (the ids as decimal
/// strings: Lua's numbers are doubles).
const LIST_LUA: &str = r#"
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #all, 2 do
  local sep = string.find(all[i], ':', 1, true)
  if sep then
    out[#out + 1] = string.sub(all[i], 1, sep - 1)
    out[#out + 1] = string.sub(all[i], sep + 1)
    out[#out + 1] = tonumber(all[i + 1])
  end
end
return out
"#;

/// Removes the seat (id high, id low); replies {removed}.
const REMOVE_LUA: &str = r#"
return {redis.call('ZREM', KEYS[1], ARGV[1] .. ':' .. ARGV[2])}
"#;

/// A seat as Redis keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetSeat {
    pub id: SeatId,
    pub last_seen: UnixTime,
}

/// What the fleet says about an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FleetAdmission {
    Decided(Admission),
    /// Redis cannot be used and `on_error = "deny"`.
    Unavailable,
}

/// This gateway's side of the fleet's seats.
pub(crate) struct FleetSeats {
    admit: Arc<redis::Script>,
    list: Arc<redis::Script>,
    remove: Arc<redis::Script>,
    /// Per tenant: seat id → (when Redis last seated it, over the nominal limit).
    seated: DashMap<Arc<str>, DashMap<SeatId, (UnixTime, bool)>>,
}

impl Default for FleetSeats {
    fn default() -> Self {
        FleetSeats {
            admit: Arc::new(redis::Script::new(ADMIT_LUA)),
            list: Arc::new(redis::Script::new(LIST_LUA)),
            remove: Arc::new(redis::Script::new(REMOVE_LUA)),
            seated: DashMap::new(),
        }
    }
}

impl std::fmt::Debug for FleetSeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSeats").finish_non_exhaustive()
    }
}

/// The id as two script arguments.
fn halves(id: SeatId) -> [i64; 2] {
    let (high, low) = id.0.split_at(8);
    [
        i64::from_be_bytes(high.try_into().unwrap_or([0; 8])),
        i64::from_be_bytes(low.try_into().unwrap_or([0; 8])),
    ]
}

/// The id of two script values.
fn joined(high: i64, low: i64) -> SeatId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    SeatId(id)
}

fn key(redis: &RedisQuotas, tenant: &str) -> String {
    format!("{}seats:{tenant}", redis.key_prefix())
}

/// `limit` as a script argument (-1: none).
fn arg(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

impl FleetSeats {
    /// Admits `id` of `tenant` at `now`: from this gateway's memory when Redis
    /// seated it within [`SYNC_INTERVAL`], else by Redis. Every identity admitted
    /// is also noted in `book` (this gateway's view: the admin list, the ledger).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admit(
        &self,
        redis: &RedisQuotas,
        book: &SeatBook,
        tenant: &Arc<str>,
        id: SeatId,
        client: Option<IpAddr>,
        now: UnixTime,
        limits: &SeatLimits,
        times: SeatTimes,
    ) -> FleetAdmission {
        let cached = self
            .seated
            .get(&**tenant)
            .and_then(|seats| seats.get(&id).map(|s| *s));
        if let Some((synced, over)) = cached {
            if now - synced < SYNC_INTERVAL {
                return FleetAdmission::Decided(Admission::Seated { over });
            }
        }
        let [high, low] = halves(id);
        let args = vec![
            high,
            low,
            now,
            times.idle_timeout,
            times.active_window,
            arg(limits.max_seats.map(|l| limits.allowed(l))),
            arg(limits.max_seats),
            arg(limits.max_active.map(|l| limits.allowed(l))),
            arg(limits.max_active),
            times.active_window.max(KEPT_AT_LEAST),
        ];
        let reply = redis.run(&self.admit, vec![key(redis, tenant)], args).await;
        let mut fleet_figures = None;
        let admission = match reply.as_deref() {
            Ok([1, over, rest @ ..]) => {
                if let [in_use, today, ..] = rest {
                    fleet_figures = Some((
                        u64::try_from(*in_use).unwrap_or(0),
                        u64::try_from(*today).unwrap_or(0),
                    ));
                }
                Admission::Seated { over: *over == 1 }
            }
            Ok([0, kind, in_use, frees_at, ..]) => Admission::Full(SeatsFull {
                kind: if *kind == 2 {
                    SeatKind::ActiveUsers
                } else {
                    SeatKind::Seats
                },
                limit: if *kind == 2 {
                    limits.max_active
                } else {
                    limits.max_seats
                }
                .unwrap_or(0),
                in_use: u64::try_from(*in_use).unwrap_or(0),
                frees_at: *frees_at,
            }),
            // Redis is unreachable (or answered nonsense): a seated identity keeps
            // working, a new one follows on_error.
            _ => {
                if let Some((_, over)) = cached {
                    return FleetAdmission::Decided(Admission::Seated { over });
                }
                return match redis.on_error() {
                    OnRedisError::Allow => {
                        FleetAdmission::Decided(Admission::Seated { over: false })
                    }
                    OnRedisError::Deny => FleetAdmission::Unavailable,
                    OnRedisError::Local => FleetAdmission::Decided(
                        book.tenant(tenant).admit(id, client, now, limits, times),
                    ),
                };
            }
        };
        match admission {
            Admission::Seated { over } => {
                let seats = self.seated.entry(Arc::clone(tenant)).or_default();
                if seats.len() >= CACHED_PER_TENANT {
                    seats.retain(|_, (synced, _)| now - *synced < SYNC_INTERVAL);
                }
                seats.insert(id, (now, over));
                drop(seats);
                let local = book.tenant(tenant);
                local.note(id, client, now, over, times.idle_timeout);
                if let Some((in_use, today)) = fleet_figures {
                    local.note_fleet(in_use, today, now);
                }
            }
            Admission::Full(_) => {
                if let Some(seats) = self.seated.get(&**tenant) {
                    seats.remove(&id);
                }
            }
        }
        FleetAdmission::Decided(admission)
    }

    /// Every seat of `tenant` in Redis.
    pub(crate) async fn list(
        &self,
        redis: &RedisQuotas,
        tenant: &str,
    ) -> Result<Vec<FleetSeat>, String> {
        let reply = redis
            .run(&self.list, vec![key(redis, tenant)], Vec::new())
            .await?;
        Ok(reply
            .chunks_exact(3)
            .map(|c| FleetSeat {
                id: joined(c[0], c[1]),
                last_seen: c[2],
            })
            .collect())
    }

    /// Releases `id` of `tenant` fleet-wide (and here); whether Redis had it.
    pub(crate) async fn remove(
        &self,
        redis: &RedisQuotas,
        book: &SeatBook,
        tenant: &str,
        id: SeatId,
    ) -> Result<bool, String> {
        if let Some(seats) = self.seated.get(tenant) {
            seats.remove(&id);
        }
        if let Some(local) = book.get(tenant) {
            local.remove(id);
        }
        let [high, low] = halves(id);
        let reply = redis
            .run(&self.remove, vec![key(redis, tenant)], vec![high, low])
            .await?;
        Ok(reply.first() == Some(&1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pass_through_script_arguments_unchanged() {
        for id in [
            SeatId([0; 16]),
            SeatId([0xff; 16]),
            SeatId(*b"0123456789abcdef"),
        ] {
            let [high, low] = halves(id);
            assert_eq!(joined(high, low), id);
        }
    }
}
