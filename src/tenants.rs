//! The request path's per-tenant entries, built from the license facts each time the
//! license manager publishes a snapshot: the facts themselves, the `X-Licgate-*`
//! header lines, the tenant's quota view and its request counters. Counters and
//! concurrency slots are carried from one table to the next while the tenant stays
//! licensed. Requests read the table with one lock-free load and allocate nothing.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::http::{AppendedHeadersBuilder, PreparsedHeaderName};

use crate::license::{LicenseManager, LicenseSnapshot, Status, TenantSummary};
use crate::metrics::{TenantCounterSource, TenantCounters};
use crate::policy::decide::Licenses;
use crate::quota::{RuleCache, Slots, TenantQuota};
use crate::sharded::ShardedMap;

/// One licensed tenant as the request path sees it.
#[derive(Debug)]
pub struct TenantEntry {
    /// `X-Licgate-Tenant/-Status/-Tier/-Features/-License-Id` for the upstream.
    pub upstream_headers: UpstreamHeaders,
    /// `X-Licgate-Warning` for the client while `EXPIRING_SOON`, `GRACE`, `READ_ONLY`.
    pub warning_header: Option<Box<http::HeaderValue>>,
    /// The tenant's license facts (shared with the license snapshot), rate rules, rate
    /// state and concurrency slots.
    pub quota: TenantQuota,
    /// This tenant's request counters.
    pub counters: Arc<TenantCounters>,
    /// The last day (days since 1970-01-01, UTC) the usage ledger recorded the
    /// licenses of this entry in force (0: not yet; a new license makes a new entry).
    pub ledger_day: AtomicU32,
    /// The license's seat limits (`None`: no seat state is kept for the tenant).
    pub seat_limits: Option<crate::seats::limits::SeatLimits>,
}

impl TenantEntry {
    /// The entry of `license`, counting into `counters` and `slots`.
    pub fn new(
        license: Arc<TenantSummary>,
        counters: Arc<TenantCounters>,
        slots: Arc<Slots>,
    ) -> TenantEntry {
        TenantEntry::with_cache(license, counters, slots, &mut RuleCache::default())
    }

    /// [`TenantEntry::new`], sharing quota rules through `rules`.
    pub fn with_cache(
        license: Arc<TenantSummary>,
        counters: Arc<TenantCounters>,
        slots: Arc<Slots>,
        rules: &mut RuleCache,
    ) -> TenantEntry {
        TenantEntry {
            upstream_headers: UpstreamHeaders::new(
                &license.tenant,
                license.status,
                license.tier.as_deref().unwrap_or(""),
                &license.features_text(),
                &license.license_ids.join(","),
                &license.flags.join(","),
            ),
            warning_header: license.warnings.first().map(|w| Box::new(header_value(w))),
            seat_limits: crate::seats::limits::SeatLimits::of(&license.limits),
            quota: TenantQuota::with_cache(license, slots, rules),
            counters,
            ledger_day: AtomicU32::new(0),
        }
    }

    /// The tenant's license facts.
    #[inline]
    pub fn license(&self) -> &Arc<TenantSummary> {
        &self.quota.license
    }
}

/// Tenant name → entry, sharded like the snapshot's tenants (shard by shard, a table
/// is derived from the snapshot it follows).
type EntryMap = ShardedMap<Arc<TenantEntry>>;

/// Every licensed tenant's entry at one instant, with the snapshot it was built from.
#[derive(Debug, Default)]
pub struct TenantTable {
    /// The license snapshot the entries come from.
    pub licenses: Arc<LicenseSnapshot>,
    entries: EntryMap,
}

impl TenantTable {
    /// The table of `licenses`. Entries whose license facts are the very ones of
    /// `previous` are kept as they are (whole shards when the snapshot shares them
    /// with the one `previous` was built from); the others get new header lines and
    /// quota views, keeping their counters and slots when the tenant was licensed
    /// before.
    pub fn build(licenses: Arc<LicenseSnapshot>, previous: &TenantTable) -> TenantTable {
        let mut rules = RuleCache::default();
        let entries = EntryMap::derive(
            &licenses.tenants,
            &previous.licenses.tenants,
            &previous.entries,
            |_, license, old| match old {
                Some(old) if Arc::ptr_eq(old.license(), license) => Arc::clone(old),
                Some(old) => Arc::new(TenantEntry::with_cache(
                    Arc::clone(license),
                    Arc::clone(&old.counters),
                    Arc::clone(&old.quota.slots),
                    &mut rules,
                )),
                None => Arc::new(TenantEntry::with_cache(
                    Arc::clone(license),
                    Arc::default(),
                    Arc::default(),
                    &mut rules,
                )),
            },
        );
        TenantTable { licenses, entries }
    }

    /// The entry of `tenant`, if it has a license (allocation-free).
    pub fn get(&self, tenant: &str) -> Option<&Arc<TenantEntry>> {
        self.entries.get(tenant)
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<TenantEntry>> {
        self.entries.values()
    }
}

impl Licenses for TenantTable {
    type Tenant = Arc<TenantEntry>;

    fn find(&self, tenant: &str) -> Option<&Arc<TenantEntry>> {
        self.entries.get(tenant)
    }

    fn license(tenant: &Arc<TenantEntry>) -> &TenantSummary {
        tenant.license()
    }
}

/// The current [`TenantTable`], kept in step with a license manager.
#[derive(Debug, Default)]
pub struct Tenants {
    table: ArcSwap<TenantTable>,
}

impl Tenants {
    /// A table that follows `manager`'s snapshots (empty without licensing): rebuilt
    /// before each publishing call of the manager returns.
    pub fn follow(manager: Option<&LicenseManager>) -> Arc<Tenants> {
        let tenants = Arc::new(Tenants::default());
        if let Some(manager) = manager {
            let follower = Arc::clone(&tenants);
            manager.subscribe(Box::new(move |snapshot| follower.publish(snapshot)));
        }
        tenants
    }

    /// A table of `licenses` alone (tests and tools).
    pub fn of(licenses: LicenseSnapshot) -> Tenants {
        let tenants = Tenants::default();
        tenants.publish(&Arc::new(licenses));
        tenants
    }

    /// Builds and swaps in the table of `snapshot`.
    pub fn publish(&self, snapshot: &Arc<LicenseSnapshot>) {
        let table = TenantTable::build(Arc::clone(snapshot), &self.table.load());
        self.table.store(Arc::new(table));
    }

    /// The current table (lock-free).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<TenantTable>> {
        self.table.load()
    }

    /// The current table as an owned handle.
    pub fn load_full(&self) -> Arc<TenantTable> {
        self.table.load_full()
    }
}

impl TenantCounterSource for Tenants {
    fn tenant_counters(&self) -> Vec<(Arc<str>, Arc<TenantCounters>)> {
        let table = self.table.load();
        let mut all: Vec<_> = table
            .entries
            .iter()
            .map(|(name, entry)| (Arc::clone(name), Arc::clone(&entry.counters)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The names of the headers in [`UpstreamHeaders`], in order.
pub static UPSTREAM_HEADER_NAMES: [PreparsedHeaderName; 6] = [
    PreparsedHeaderName::from_static("x-licgate-tenant", "X-Licgate-Tenant"),
    PreparsedHeaderName::from_static("x-licgate-status", "X-Licgate-Status"),
    PreparsedHeaderName::from_static("x-licgate-tier", "X-Licgate-Tier"),
    PreparsedHeaderName::from_static("x-licgate-features", "X-Licgate-Features"),
    PreparsedHeaderName::from_static("x-licgate-license-id", "X-Licgate-License-Id"),
    PreparsedHeaderName::from_static("x-licgate-flags", "X-Licgate-Flags"),
];

/// The values of the `X-Licgate-*` headers sent upstream (names in
/// [`UPSTREAM_HEADER_NAMES`]), compact: the five variable values one after another in
/// one buffer, and where they end (about 50 bytes per tenant). `X-Licgate-Flags` is
/// sent only when the license has flags. Each request writes
/// them as header lines after the request's own headers ([`Self::write_lines`]).
#[derive(Debug, Clone)]
pub struct UpstreamHeaders {
    /// Tenant, tier, features, license ids and flags, each a valid header value.
    text: Box<[u8]>,
    /// Where the tenant, tier, features and license ids end in `text`.
    ends: [u32; 4],
    status: Status,
}

impl UpstreamHeaders {
    /// The headers of one tenant (each value percent-encoded unless it is visible
    /// ASCII).
    pub fn new(
        tenant: &str,
        status: Status,
        tier: &str,
        features: &str,
        license_ids: &str,
        flags: &str,
    ) -> UpstreamHeaders {
        let parts = [tenant, tier, features, license_ids, flags].map(encoded_header_text);
        let mut ends = [0u32; 4];
        let mut end = 0;
        for (slot, part) in ends.iter_mut().zip(&parts) {
            end += part.len();
            *slot = u32::try_from(end).unwrap_or(u32::MAX);
        }
        let text = parts.concat().into_bytes().into_boxed_slice();
        UpstreamHeaders { text, ends, status }
    }

    /// Writes the headers, in order, as lines for the upstream request.
    pub fn write_lines(&self, lines: &mut AppendedHeadersBuilder) {
        let [tenant, tier, features, ids] = self.ends.map(|e| e as usize);
        let bounds = [
            Some((0, tenant)),
            None,
            Some((tenant, tier)),
            Some((tier, features)),
            Some((features, ids)),
            Some((ids, self.text.len())),
        ];
        for (i, (name, bounds)) in UPSTREAM_HEADER_NAMES.iter().zip(bounds).enumerate() {
            let value = match bounds {
                None => self.status.as_str().as_bytes(),
                Some((from, to)) => &self.text[from..to],
            };
            if i == FLAGS && value.is_empty() {
                continue;
            }
            // Each part was checked (or percent-encoded) by `encoded_header_text`.
            lines.checked_value_bytes(name, value);
        }
    }
}

/// The position of `X-Licgate-Flags` in [`UPSTREAM_HEADER_NAMES`].
const FLAGS: usize = 5;

/// `text` as a header value's text: as is when it is visible ASCII (or spaces
/// inside), percent-encoded otherwise.
fn encoded_header_text(text: &str) -> String {
    if http::HeaderValue::from_str(text).is_ok() {
        text.to_string()
    } else {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }
}

/// A header value for `text`: as is when it is visible ASCII, percent-encoded otherwise.
pub fn header_value(text: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&encoded_header_text(text))
        .unwrap_or(http::HeaderValue::from_static(""))
}
