//! A map from names to values split into a fixed number of shards, each shared
//! (`Arc`) between the versions of the map that did not change it: a new version with
//! a few keys changed copies only the shards those keys fall in. Readers look a key up
//! with one hash and one probe of one shard, and never allocate.
//!
//! Every map in the process hashes with the same seeded hasher, so a key falls in the
//! same shard of every map: two maps built from one another can be compared and
//! derived shard by shard ([`ShardedMap::derive`]).

use std::sync::{Arc, LazyLock};

use hashbrown::HashTable;

/// How many shards every map has (a power of two). With 100,000 keys a shard holds
/// about 400: a change copies some 0.4 % of the map.
pub const SHARDS: usize = 256;

/// The process's hasher: foldhash, seeded once per process (keys come from signed
/// licenses, but a per-process seed keeps bucket layouts unpredictable anyway).
static HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The hash of `key`.
#[inline]
fn hash_of(key: &str) -> u64 {
    use std::hash::BuildHasher as _;
    HASHER.hash_one(key)
}

/// The shard of a key hashed to `hash`. Taken from bits the shard's own table does
/// not use for its buckets (low bits) or its tags (top seven bits).
#[inline]
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
}

/// One shard: the entries whose key falls in it (hashes are recomputed when the
/// table grows: 8 bytes per entry saved).
#[derive(Debug, Clone)]
struct Shard<V> {
    table: HashTable<(Arc<str>, V)>,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            table: HashTable::new(),
        }
    }
}

impl<V> Shard<V> {
    fn find(&self, hash: u64, key: &str) -> Option<&V> {
        self.table.find(hash, |(k, _)| **k == *key).map(|(_, v)| v)
    }

    /// Inserts or replaces the entry of `key`.
    fn put(&mut self, hash: u64, key: Arc<str>, value: V) {
        match self
            .table
            .entry(hash, |(k, _)| **k == *key, |(k, _)| hash_of(k))
        {
            hashbrown::hash_table::Entry::Occupied(mut slot) => slot.get_mut().1 = value,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert((key, value));
            }
        }
    }

    fn remove(&mut self, hash: u64, key: &str) {
        if let Ok(slot) = self.table.find_entry(hash, |(k, _)| **k == *key) {
            slot.remove();
        }
    }
}

/// Name → value, in [`SHARDS`] shared shards.
#[derive(Debug, Clone)]
pub struct ShardedMap<V> {
    shards: Box<[Arc<Shard<V>>]>,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        let empty = Arc::new(Shard::default());
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::clone(&empty)).collect(),
            len: 0,
        }
    }
}

/// A change to one key: its new value, or `None` to remove it.
pub type Change<V> = (Arc<str>, Option<V>);

impl<V: Clone> ShardedMap<V> {
    /// The map of `entries` (a later entry of the same key replaces an earlier one).
    pub fn build(entries: impl IntoIterator<Item = (Arc<str>, V)>) -> ShardedMap<V> {
        let mut shards: Vec<Shard<V>> = (0..SHARDS).map(|_| Shard::default()).collect();
        for (key, value) in entries {
            let hash = hash_of(&key);
            shards[shard_of(hash)].put(hash, key, value);
        }
        ShardedMap::from_shards(shards)
    }

    fn from_shards(shards: Vec<Shard<V>>) -> ShardedMap<V> {
        let len = shards.iter().map(|s| s.table.len()).sum();
        ShardedMap {
            shards: shards
                .into_iter()
                .map(|mut shard| {
                    shard.table.shrink_to_fit(|(k, _)| hash_of(k));
                    Arc::new(shard)
                })
                .collect(),
            len,
        }
    }

    /// This map with `changes` applied, and the indexes of the shards that changed
    /// (sorted). Only those shards are copied; the others are shared with `self`.
    pub fn with_changes(
        &self,
        changes: impl IntoIterator<Item = Change<V>>,
    ) -> (ShardedMap<V>, Vec<usize>) {
        let mut shards = self.shards.clone();
        let mut copied = [false; SHARDS];
        for (key, value) in changes {
            let hash = hash_of(&key);
            let i = shard_of(hash);
            copied[i] = true;
            let shard = Arc::make_mut(&mut shards[i]);
            match value {
                Some(value) => shard.put(hash, key, value),
                None => shard.remove(hash, &key),
            }
        }
        let changed: Vec<usize> = (0..SHARDS).filter(|&i| copied[i]).collect();
        for &i in &changed {
            let shard = Arc::make_mut(&mut shards[i]);
            shard.table.shrink_to_fit(|(k, _)| hash_of(k));
        }
        let len = shards.iter().map(|s| s.table.len()).sum();
        (ShardedMap { shards, len }, changed)
    }
}

impl<V> ShardedMap<V> {
    /// The value of `key` (one hash, one shard probe, no allocation).
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        let hash = hash_of(key);
        self.shards[shard_of(hash)].find(hash, key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.table.iter().map(|(k, v)| (k, v)))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The entries of shard `i`.
    pub fn shard(&self, i: usize) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards[i].table.iter().map(|(k, v)| (k, v))
    }

    /// Whether shard `i` of `self` and of `other` is the very same (shared) shard.
    pub fn same_shard<W>(&self, other: &ShardedMap<W>, i: usize) -> bool {
        std::ptr::eq(
            Arc::as_ptr(&self.shards[i]).cast::<()>(),
            Arc::as_ptr(&other.shards[i]).cast::<()>(),
        )
    }

    /// A map with the keys of `source`, the value of each made by `make(key, value,
    /// previous value)`. Shards of `source` shared with `previous_source` are taken
    /// from `previous` as they are (no call of `make`), so deriving from a map that
    /// changed a few shards costs those shards only. `previous` must have been
    /// derived from `previous_source`.
    pub fn derive<S>(
        source: &ShardedMap<S>,
        previous_source: &ShardedMap<S>,
        previous: &ShardedMap<V>,
        mut make: impl FnMut(&Arc<str>, &S, Option<&V>) -> V,
    ) -> ShardedMap<V> {
        let shards: Box<[Arc<Shard<V>>]> = (0..SHARDS)
            .map(|i| {
                if source.same_shard(previous_source, i) {
                    return Arc::clone(&previous.shards[i]);
                }
                let from = &source.shards[i].table;
                let before = &previous.shards[i];
                let mut table = HashTable::with_capacity(from.len());
                for (key, value) in from.iter() {
                    let hash = hash_of(key);
                    let made = make(key, value, before.find(hash, key));
                    table.insert_unique(hash, (Arc::clone(key), made), |(k, _)| hash_of(k));
                }
                Arc::new(Shard { table })
            })
            .collect();
        ShardedMap {
            shards,
            len: source.len,
        }
    }
}

/// Serialized as a map, in key order.
impl<V: serde::Serialize> serde::Serialize for ShardedMap<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut all: Vec<(&Arc<str>, &V)> = self.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_map(all)
    }
}

impl<V: Clone> FromIterator<(Arc<str>, V)> for ShardedMap<V> {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, V)>>(entries: I) -> Self {
        ShardedMap::build(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Arc<str> {
        Arc::from(format!("tenant-{i}"))
    }

    #[test]
    fn a_change_copies_only_the_shards_it_touches() {
        let map: ShardedMap<usize> = (0..10_000).map(|i| (key(i), i)).collect();
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get("tenant-77"), Some(&77));
        assert_eq!(map.get("tenant-10000"), None);
        let (next, changed) = map.with_changes([
            (key(77), Some(770)),
            (key(78), None),
            (key(20_000), Some(1)),
        ]);
        assert!(changed.len() <= 3 && !changed.is_empty());
        assert_eq!(next.len(), 10_000);
        assert_eq!(next.get("tenant-77"), Some(&770));
        assert_eq!(next.get("tenant-78"), None);
        assert_eq!(next.get("tenant-20000"), Some(&1));
        assert_eq!(
            map.get("tenant-77"),
            Some(&77),
            "the old version is unchanged"
        );
        for i in 0..SHARDS {
            assert_eq!(next.same_shard(&map, i), !changed.contains(&i));
        }
        let mut all: Vec<usize> = next.values().copied().collect();
        all.sort_unstable();
        assert_eq!(all.len(), 10_000);
    }

    #[test]
    fn derive_rebuilds_the_changed_shards_and_shares_the_others() {
        let source: ShardedMap<usize> = (0..5_000).map(|i| (key(i), i)).collect();
        let derived = ShardedMap::derive(
            &source,
            &ShardedMap::default(),
            &ShardedMap::default(),
            |_, v, old| {
                assert!(old.is_none());
                v * 2
            },
        );
        assert_eq!(derived.get("tenant-21"), Some(&42));
        let (next, changed) = source.with_changes([(key(21), Some(1000))]);
        let mut made = 0;
        let again = ShardedMap::derive(&next, &source, &derived, |_, v, old| {
            made += 1;
            old.copied().filter(|_| *v != 1000).unwrap_or(v * 2)
        });
        assert_eq!(again.get("tenant-21"), Some(&2000));
        assert_eq!(again.get("tenant-22"), Some(&44));
        assert_eq!(changed.len(), 1);
        assert!(
            made < 100,
            "only one shard was rebuilt ({made} values made)"
        );
        assert!(again.same_shard(&derived, (changed[0] + 1) % SHARDS));
    }
}
