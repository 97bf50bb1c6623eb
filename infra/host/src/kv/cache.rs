//! The embedded store's read cache: recently read values of one store label, in memory, so
//! that a read of a hot key (a tariff, a counter, a bill read again) does not go to SQLite.
//!
//! Only reads add entries; a write refreshes the entries the cache holds for its keys and adds
//! none. Most written keys are never read back soon (a rated usage record, its index entry):
//! caching them on write cost a copy, an allocation and the eviction of something hot (a
//! sixth of native usage ingestion's time while the cache filled). A key read then written (a
//! balance, a counter, a document updated) stays cached with its new value.
//!
//! It is exact, not eventually consistent, because this process is the only one that can write
//! the database (it holds it exclusively, see `db.rs`) and every write of the label goes through
//! a [`SqliteKv`](super::sqlite::SqliteKv) of that database, all of which share the label's one
//! cache ([`crate::db::SqliteDb::kv_cache`]) and tell it:
//! - A write first marks the shards of its keys ([`KvCache::begin_write`], before it commits),
//!   then after its commit refreshes the cached entries of its keys with the committed values
//!   and unmarks the shards ([`CacheWrite::end`]); if the write failed, it forgets what those
//!   shards held instead. Writes hold the database's
//!   writer lock throughout, so their cache updates happen in commit order.
//! - A read that missed takes a [`FillTicket`] before it reads SQLite and may store what it read
//!   only if no write touched the key's shard since (no write was in progress when the ticket
//!   was taken and none started after). Otherwise the value it read may already be stale, and
//!   it is not stored.
//!
//! Memory is bounded: each shard evicts its least recently used entries past its share of the
//! budget, and a value larger than an eighth of a shard's share is never stored.
//! A cache of budget 0 stores nothing.

use bytes::Bytes;
use hashlink::LruCache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Shards (independent locks and LRU lists); a power of two.
const SHARDS: usize = 64;
/// The seed of [`KvCache::shard_of`]'s hash (any constant: shards need only spread keys evenly).
const SHARD_SEED: u64 = 0x5eed_cace;
/// Bytes an entry costs besides its key and value (map slot, list links, lengths).
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// A cached value: `None` is a key known to be absent. `version` as in [`super::Versioned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub value: Option<Bytes>,
    pub version: u64,
}

#[derive(Default)]
struct ShardState {
    map: Option<LruCache<Box<str>, Cached>>,
    bytes: usize,
    /// Writes marked in this shard that have not ended.
    writing: u32,
    /// Writes ended in this shard, ever: a fill ticket is stale once it moved.
    ended: u64,
}

/// What a write committed for one key: its value (`None`: deleted) and version. The cache
/// copies a borrowed value only when it keeps it.
#[derive(Debug, Clone)]
pub struct Committed<'v> {
    pub value: Option<std::borrow::Cow<'v, [u8]>>,
    pub version: u64,
}

impl Committed<'_> {
    /// A deletion.
    pub const DELETED: Committed<'static> = Committed { value: None, version: 0 };
}

/// Hits and misses, for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub struct KvCache {
    shards: Box<[Mutex<ShardState>]>,
    shard_bytes_max: usize,
    pub stats: CacheStats,
}

/// What a read that missed saw of its key's shard before reading the database.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    shard: usize,
    /// `None`: a write was in progress, so whatever the read finds must not be stored.
    ended: Option<u64>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache").field("bytes_max", &(self.shard_bytes_max * SHARDS)).finish_non_exhaustive()
    }
}

impl KvCache {
    /// A cache of at most `bytes_max` bytes (keys, values and overhead).
    pub fn new(bytes_max: usize) -> KvCache {
        KvCache {
            shards: (0..SHARDS).map(|_| Mutex::new(ShardState::default())).collect(),
            shard_bytes_max: bytes_max / SHARDS,
            stats: CacheStats::default(),
        }
    }

    fn shard_of(key: &str) -> usize {
        // Keys share long prefixes (`t/<tenant>/<collection>/`), so every byte must count; a
        // byte-at-a-time hash (FNV-1a, before) was a chain of ~90 dependent multiplies per key,
        // taken two to four times per key read or written. foldhash mixes 16 bytes a step; a
        // fixed seed keeps a key's shard the same for the life of the process.
        use std::hash::BuildHasher;
        (foldhash::fast::FixedState::with_seed(SHARD_SEED).hash_one(key) as usize) & (SHARDS - 1)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, ShardState> {
        // A panic while holding a shard lock leaves at worst a counter off: the lock's data is
        // only ever changed by complete assignments, so carrying on is safe.
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value of `key`, if there is one (counted as a hit or a miss).
    pub fn get(&self, key: &str) -> Option<Cached> {
        let found = self.lock(Self::shard_of(key)).map.as_mut().and_then(|m| m.get(key).cloned());
        let counter = if found.is_some() { &self.stats.hits } else { &self.stats.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Take before reading `key` from the database after a miss; see [`KvCache::fill`].
    pub fn ticket(&self, key: &str) -> FillTicket {
        let shard = Self::shard_of(key);
        let s = self.lock(shard);
        FillTicket { shard, ended: (s.writing == 0).then_some(s.ended) }
    }

    /// Store the value of `key` as read from the database after `ticket` was taken (`value`
    /// makes the cache's copy, only when it is kept), unless a write touched the key's shard
    /// meanwhile (then the value may be stale: nothing stored).
    pub fn fill(&self, key: &str, ticket: FillTicket, value: impl FnOnce() -> Cached) {
        debug_assert_eq!(ticket.shard, Self::shard_of(key));
        if self.shard_bytes_max == 0 {
            return;
        }
        let mut s = self.lock(ticket.shard);
        if ticket.ended.is_some_and(|ended| s.writing == 0 && s.ended == ended) {
            self.put(&mut s, key, value());
        }
    }

    /// What a write of `key` that committed `c` does to the cache: a cached value is replaced
    /// by the committed one; a cached absence stays one if the key was deleted and is dropped if
    /// it was created (nothing says it will be read soon); nothing is added.
    fn refresh(&self, s: &mut ShardState, key: &str, c: Committed<'_>) {
        let Some(held_value) = s.map.as_ref().and_then(|m| m.peek(key)).map(|c| c.value.is_some()) else { return };
        match (held_value, c.value) {
            (false, None) => {
                if let Some(absent) = s.map.as_mut().and_then(|m| m.peek_mut(key)) {
                    absent.version = c.version;
                }
            }
            (true, Some(value)) => {
                let value = match value {
                    std::borrow::Cow::Borrowed(b) => Bytes::copy_from_slice(b),
                    std::borrow::Cow::Owned(v) => Bytes::from(v),
                };
                self.put(s, key, Cached { value: Some(value), version: c.version });
            }
            (true, None) => self.put(s, key, Cached { value: None, version: c.version }),
            (false, Some(_)) => self.remove(s, key),
        }
    }

    fn remove(&self, s: &mut ShardState, key: &str) {
        if let Some(old) = s.map.as_mut().and_then(|m| m.remove(key)) {
            s.bytes -= ENTRY_OVERHEAD_BYTES + key.len() + old.value.as_ref().map_or(0, Bytes::len);
        }
    }

    fn put(&self, s: &mut ShardState, key: &str, value: Cached) {
        let cost = ENTRY_OVERHEAD_BYTES + key.len() + value.value.as_ref().map_or(0, Bytes::len);
        self.remove(s, key);
        if cost > self.shard_bytes_max / 8 {
            return;
        }
        let map = s.map.get_or_insert_with(LruCache::new_unbounded);
        map.insert(key.into(), value);
        s.bytes += cost;
        while s.bytes > self.shard_bytes_max {
            let Some((k, v)) = s.map.as_mut().and_then(|m| m.remove_lru()) else { break };
            s.bytes -= ENTRY_OVERHEAD_BYTES + k.len() + v.value.as_ref().map_or(0, Bytes::len);
        }
    }

    /// Mark a write of `keys` as started. Call before the write can commit, while holding the
    /// database's writer lock; end it with [`CacheWrite::end`] under the same lock.
    pub fn begin_write<'a>(&'a self, keys: impl IntoIterator<Item = &'a str>) -> CacheWrite<'a> {
        let mut shards: Vec<usize> = keys.into_iter().map(Self::shard_of).collect();
        shards.sort_unstable();
        shards.dedup();
        for &shard in &shards {
            self.lock(shard).writing += 1;
        }
        CacheWrite { cache: self, shards, ended: false }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().bytes).sum()
    }
}

/// A write in progress (see [`KvCache::begin_write`]). Dropped without [`CacheWrite::end`] (an
/// error or a panic between), it forgets nothing it was not told but still unmarks its shards,
/// after dropping their entries: the write's outcome is unknown, so no cached value of those
/// shards can be trusted to be current.
pub struct CacheWrite<'a> {
    cache: &'a KvCache,
    shards: Vec<usize>,
    ended: bool,
}

impl CacheWrite<'_> {
    /// The write committed: refresh the cached entries of its keys with what it committed (see
    /// [`KvCache::refresh`]) and unmark.
    pub fn end<'k, 'v>(mut self, committed: impl IntoIterator<Item = (&'k str, Committed<'v>)>) {
        let mut committed: Vec<(usize, &str, Committed<'v>)> =
            committed.into_iter().map(|(k, v)| (KvCache::shard_of(k), k, v)).collect();
        // Later values of a key come later in the input; a stable sort keeps that order.
        committed.sort_by_key(|(shard, ..)| *shard);
        let mut next = committed.into_iter().peekable();
        for &shard in &self.shards {
            let mut s = self.cache.lock(shard);
            while let Some((_, key, value)) = next.next_if(|(sh, ..)| *sh == shard) {
                self.cache.refresh(&mut s, key, value);
            }
            s.writing -= 1;
            s.ended += 1;
        }
        debug_assert!(next.next().is_none(), "a committed key outside the write's keys");
        self.ended = true;
    }
}

impl Drop for CacheWrite<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        for &shard in &self.shards {
            let mut s = self.cache.lock(shard);
            s.map = None;
            s.bytes = 0;
            s.writing -= 1;
            s.ended += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(s: &str, version: u64) -> Cached {
        Cached { value: Some(Bytes::copy_from_slice(s.as_bytes())), version }
    }

    fn com(s: &str, version: u64) -> Committed<'_> {
        Committed { value: Some(std::borrow::Cow::Borrowed(s.as_bytes())), version }
    }

    /// Cache `key` as a read would.
    fn fill(c: &KvCache, key: &str, value: Cached) {
        let t = c.ticket(key);
        c.fill(key, t, || value);
    }

    #[test]
    fn a_fill_is_kept_only_if_no_write_touched_the_shard_since_its_ticket() {
        let c = KvCache::new(1 << 20);
        // Plain miss, read, fill: cached.
        assert_eq!(c.get("a"), None);
        let t = c.ticket("a");
        c.fill("a", t, || val("1", 1));
        assert_eq!(c.get("a"), Some(val("1", 1)));

        // A write commits between the reader's ticket and its fill: the reader's value (read
        // before the commit) must not replace the committed one.
        let t = c.ticket("a");
        c.begin_write(["a"]).end([("a", com("2", 2))]);
        c.fill("a", t, || val("1", 1));
        assert_eq!(c.get("a"), Some(val("2", 2)));

        // The ticket is taken while a write is in progress: nothing the read finds is stored.
        let w = c.begin_write(["b"]);
        let t = c.ticket("b");
        c.fill("b", t, || Cached { value: None, version: 0 });
        w.end([("b", com("x", 3))]);
        assert_eq!(c.get("b"), None);
        let t2 = c.ticket("b");
        c.fill("b", t, || val("stale", 1));
        assert_eq!(c.get("b"), None);

        // A ticket taken after the write ended is good.
        c.fill("b", t2, || val("x", 3));
        assert_eq!(c.get("b"), Some(val("x", 3)));
        assert_eq!((c.stats.hits.load(Ordering::Relaxed), c.stats.misses.load(Ordering::Relaxed)), (3, 3));
    }

    #[test]
    fn a_write_that_does_not_end_drops_the_cached_values_of_its_shards() {
        let c = KvCache::new(1 << 20);
        let t = c.ticket("k");
        c.fill("k", t, || val("1", 1));
        drop(c.begin_write(["k"]));
        assert_eq!(c.get("k"), None);
        assert_eq!(c.bytes(), 0);
        // And the shard is unmarked: a later fill is kept.
        let t = c.ticket("k");
        c.fill("k", t, || val("1", 1));
        assert_eq!(c.get("k"), Some(val("1", 1)));
    }

    #[test]
    fn memory_stays_within_the_budget_and_the_least_recently_used_go_first() {
        let budget = SHARDS * 4096;
        let c = KvCache::new(budget);
        let big = "v".repeat(300);
        for i in 0..2000 {
            let key = format!("key{i}");
            fill(&c, &key, val(&big, i));
            assert!(c.bytes() <= budget, "{} bytes cached, budget {budget}", c.bytes());
        }
        assert!(c.bytes() > budget / 2, "the cache holds too little: {}", c.bytes());
        assert!(c.get("key1999").is_some(), "the newest entry was evicted");
        assert!(c.get("key0").is_none(), "the oldest entry is still there");
        // A value over an eighth of a shard's share is not cached.
        let huge = "v".repeat(budget / SHARDS / 8);
        fill(&c, "h", val(&huge, 1));
        assert_eq!(c.get("h"), None);
        // Nor is a write's value that outgrows it.
        fill(&c, "g", val("small", 1));
        c.begin_write(["g"]).end([("g", com(&huge, 2))]);
        assert_eq!(c.get("g"), None);
        // A budget of 0 caches nothing.
        let off = KvCache::new(0);
        fill(&off, "a", val("1", 1));
        assert_eq!(off.get("a"), None);
    }

    #[test]
    fn a_write_refreshes_what_the_cache_holds_and_adds_nothing() {
        let c = KvCache::new(1 << 20);
        // Not cached: a write (create, update, delete) leaves it so.
        c.begin_write(["new"]).end([("new", com("1", 1))]);
        c.begin_write(["new"]).end([("new", Committed::DELETED)]);
        assert_eq!(c.get("new"), None);
        assert_eq!(c.bytes(), 0);
        // A cached value is replaced by the committed one, the later of two in one write.
        fill(&c, "v", val("1", 1));
        c.begin_write(["v"]).end([("v", com("2", 2)), ("v", com("3", 3))]);
        assert_eq!(c.get("v"), Some(val("3", 3)));
        // ... and by an absence when deleted.
        c.begin_write(["v"]).end([("v", Committed::DELETED)]);
        assert_eq!(c.get("v"), Some(Cached { value: None, version: 0 }));
        // A cached absence stays one when deleted again, and is dropped when the key is created.
        c.begin_write(["v"]).end([("v", Committed::DELETED)]);
        assert_eq!(c.get("v"), Some(Cached { value: None, version: 0 }));
        c.begin_write(["v"]).end([("v", com("4", 4))]);
        assert_eq!(c.get("v"), None);
        assert_eq!(c.bytes(), 0);
        // An owned value is kept without a copy.
        fill(&c, "o", val("1", 1));
        c.begin_write(["o"])
            .end([("o", Committed { value: Some(std::borrow::Cow::Owned(b"5".to_vec())), version: 5 })]);
        assert_eq!(c.get("o"), Some(val("5", 5)));
    }
}
