//! Key-value store on the embedded SQLite database (table `kv`, one row per store label and key).
//! Writes go through the database's write-back buffer (`writeback.rs`: logged, then copied into
//! SQLite by the flusher), under its lock; a compare-and-swap reads the key's current version
//! under the same lock, so exactly one of two racing swaps of one version wins. Reads look in
//! the read cache (`cache.rs`), then the buffer, then SQLite.

use super::cache::{Cached, Committed, KvCache};
use super::writeback::{Op, Pending, WriteGuard};
use super::{KeyPage, KvError, KvResult, Versioned, parse_counter};
use crate::db::SqliteDb;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension as _, params};
use std::borrow::Cow;
use std::sync::Arc;

pub struct SqliteKv {
    db: Arc<SqliteDb>,
    label: String,
    cache: Arc<KvCache>,
    /// Tests widen the window between a read and its cache fill, where a write can slip in.
    #[cfg(test)]
    pause_before_fill_us: std::sync::atomic::AtomicU64,
}

fn backend(e: rusqlite::Error) -> KvError {
    KvError::Backend(e.to_string())
}

/// Default budget of a store's read cache (see `cache.rs`).
pub const CACHE_BYTES_DEFAULT: usize = 256 << 20;

const SELECT: &str = "SELECT value, version FROM kv WHERE store = ?1 AND key = ?2";

/// What a write stored under a key (`None`: deleted).
fn stored(value: Option<&[u8]>, version: u64) -> Committed<'_> {
    match value {
        Some(v) => Committed { value: Some(std::borrow::Cow::Borrowed(v)), version },
        None => Committed::DELETED,
    }
}

/// What a database read found, as the cache keeps it.
fn read(row: &Option<(Vec<u8>, u64)>) -> Cached {
    match row {
        Some((value, version)) => Cached { value: Some(Bytes::copy_from_slice(value)), version: *version },
        None => Cached { value: None, version: 0 },
    }
}

/// A buffered write as a read sees it (a deleted key is absent, version 0).
fn buffered(p: Pending) -> Cached {
    match p.value {
        Some(value) => Cached { value: Some(value), version: p.version },
        None => Cached { value: None, version: 0 },
    }
}

impl From<Cached> for Versioned {
    fn from(c: Cached) -> Versioned {
        Versioned { value: c.value.map(|b| b.to_vec()), version: c.version }
    }
}

impl SqliteKv {
    /// The store `label` of `db`, with a read cache of [`CACHE_BYTES_DEFAULT`].
    pub fn new(db: Arc<SqliteDb>, label: &str) -> SqliteKv {
        SqliteKv::with_cache_bytes(db, label, CACHE_BYTES_DEFAULT)
    }

    /// The store `label` of `db`, with a read cache of at most `cache_bytes` (0: none). Store
    /// values of one label on one database share their cache (the first one opened sets its
    /// budget), so every write of the label through any of them keeps it exact. A program that
    /// also writes the `kv` table with SQL of its own must open its stores with 0.
    pub fn with_cache_bytes(db: Arc<SqliteDb>, label: &str, cache_bytes: usize) -> SqliteKv {
        SqliteKv {
            cache: db.kv_cache(label, cache_bytes),
            db,
            label: label.to_string(),
            #[cfg(test)]
            pause_before_fill_us: Default::default(),
        }
    }

    fn before_fill(&self) {
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_micros(
            self.pause_before_fill_us.load(std::sync::atomic::Ordering::Relaxed),
        ));
    }

    /// The database the store is on.
    pub fn db(&self) -> Arc<SqliteDb> {
        self.db.clone()
    }

    /// The store's read cache (shared with every store value of its label and database).
    pub fn cache(&self) -> Arc<KvCache> {
        self.cache.clone()
    }

    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.value)
    }

    pub async fn get_versioned(&self, key: &str) -> KvResult<Versioned> {
        if let Some(hit) = self.cache.get(key) {
            return Ok(hit.into());
        }
        let ticket = self.cache.ticket(key);
        let found = match self.db.write_back().get(&self.label, key) {
            Some(p) => buffered(p),
            None => self.in_sqlite(key)?,
        };
        self.before_fill();
        self.cache.fill(key, ticket, || found.clone());
        Ok(found.into())
    }

    /// The current value and version of `key` for a write deciding under `guard`: buffered,
    /// cached (the cache is exact: writes refresh it under the same lock), or in SQLite.
    fn current(&self, guard: &WriteGuard<'_>, key: &str) -> KvResult<Cached> {
        if let Some(p) = guard.get(&self.label, key) {
            return Ok(buffered(p));
        }
        if let Some(hit) = self.cache.get(key) {
            return Ok(hit);
        }
        self.in_sqlite(key)
    }

    /// What SQLite holds of `key` (for a key the buffer does not hold).
    fn in_sqlite(&self, key: &str) -> KvResult<Cached> {
        Ok(read(&self.db.read(|c| select(c, &self.label, key)).map_err(backend)?))
    }

    /// Run the write of `keys` that `decide` makes, under the write-back lock: `decide` sees the
    /// store as it is (see [`SqliteKv::current`]) and answers its result and what to write, each
    /// key with its value or `None` to delete it (in order; a key may come twice, the last one
    /// wins). The writes are logged and buffered as one (all or none), given fresh versions in
    /// order, and the read cache refreshed with them.
    fn write<'k, R>(
        &self,
        keys: &[&'k str],
        decide: impl FnOnce(&WriteGuard<'_>) -> KvResult<(R, Vec<(&'k str, Option<Cow<'k, [u8]>>)>)>,
    ) -> KvResult<R> {
        let mut guard = self.db.write_back().lock().map_err(|e| KvError::Backend(e.to_string()))?;
        // Marked before deciding: a read that misses meanwhile must not cache what it reads.
        let cache_write = self.cache.begin_write(keys.iter().copied());
        let (r, writes) = match decide(&guard) {
            Ok(decided) => decided,
            Err(e) => {
                // Decided to write nothing (an increment of a non-integer, a failed read): the
                // cache is still exact.
                cache_write.end(std::iter::empty());
                return Err(e);
            }
        };
        let ops: Vec<Op<'_>> = writes.iter().map(|(k, v)| (*k, v.as_deref(), self.db.next_kv_version())).collect();
        guard.apply(&self.label, &ops).map_err(|e| KvError::Backend(format!("key-value log: {e}")))?;
        cache_write.end(ops.iter().map(|&(k, v, version)| (k, stored(v, version))));
        Ok(r)
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.write(&[key], |_| Ok(((), vec![(key, Some(Cow::Borrowed(value)))])))
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        self.delete_many(&[key.to_string()]).await
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        Ok(self.get_versioned(key).await?.value.is_some())
    }

    pub async fn list_keys(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> KvResult<KeyPage> {
        // Start at the prefix or just after the cursor, whichever is further; stop at the first
        // key outside the prefix (keys are in byte order, so the prefix range is contiguous).
        let (from, inclusive) = match cursor {
            Some(c) if c >= prefix => (c, false),
            _ => (prefix, true),
        };
        // Bounded above when the prefix allows it: without a bound, a prefix with fewer keys
        // than the page (an account's pending corrections: usually none) also reads the rows of
        // the prefixes after it, up to the page's size, only to drop them below.
        let end = super::prefix_successor(prefix.as_bytes());
        let sql = match (inclusive, end.is_some()) {
            (true, true) => "SELECT key FROM kv WHERE store = ?1 AND key >= ?2 AND key < ?4 ORDER BY key LIMIT ?3",
            (false, true) => "SELECT key FROM kv WHERE store = ?1 AND key > ?2 AND key < ?4 ORDER BY key LIMIT ?3",
            (true, false) => "SELECT key FROM kv WHERE store = ?1 AND key >= ?2 ORDER BY key LIMIT ?3",
            (false, false) => "SELECT key FROM kv WHERE store = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
        };
        // The buffer first (see `writeback.rs`): its first `limit + 1` present keys, and the
        // deletions among them, which may hide as many of SQLite's keys.
        let buffered = self.db.write_back().range(&self.label, from, inclusive, end.as_deref(), limit + 1);
        let deleted = buffered.iter().filter(|(_, present)| !present).count();
        let stored: Vec<String> = self
            .db
            .read(|c| {
                let mut stmt = c.prepare_cached(sql)?;
                let limit = (limit + 1 + deleted) as i64;
                match &end {
                    // Bound as text (it may not be UTF-8: SQLite compares text byte by byte).
                    Some(end) => {
                        let end = rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(end));
                        stmt.query_map(params![self.label, from, limit, end], |r| r.get(0))?.collect()
                    }
                    None => stmt.query_map(params![self.label, from, limit], |r| r.get(0))?.collect(),
                }
            })
            .map_err(backend)?;
        let mut keys = merge_listing(stored, buffered);
        keys.truncate(limit + 1);
        let in_prefix = keys.iter().take_while(|k| k.starts_with(prefix)).count();
        let more = in_prefix > limit;
        keys.truncate(in_prefix.min(limit));
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    pub async fn swap(&self, key: &str, expected_version: u64, value: &[u8]) -> KvResult<bool> {
        self.write(&[key], |guard| {
            let won = self.current(guard, key)?.version == expected_version;
            Ok((won, if won { vec![(key, Some(Cow::Borrowed(value)))] } else { Vec::new() }))
        })
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.write(&[key], |guard| {
            let current = self.current(guard, key)?;
            let next = parse_counter(current.value.as_deref())?
                .checked_add(delta)
                .ok_or_else(|| KvError::Invalid("increment overflows a 64-bit integer".into()))?;
            Ok((next, vec![(key, Some(Cow::Owned(next.to_string().into_bytes())))]))
        })
    }

    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(keys.len());
        let mut missed = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.cache.get(k) {
                Some(hit) => out.push((k.clone(), hit.value.map(|b| b.to_vec()))),
                None => {
                    missed.push((i, self.cache.ticket(k)));
                    out.push((k.clone(), None));
                }
            }
        }
        if missed.is_empty() {
            return Ok(out);
        }
        // The buffer first, then SQLite for what it does not hold (see `writeback.rs`).
        let buffered_rows = self.db.write_back().get_many(&self.label, missed.iter().map(|(i, _)| keys[*i].as_str()));
        let mut found: Vec<Option<Cached>> = buffered_rows.into_iter().map(|p| p.map(buffered)).collect();
        let unbuffered: Vec<usize> = (0..missed.len()).filter(|&m| found[m].is_none()).collect();
        if !unbuffered.is_empty() {
            let rows = self
                .db
                .read(|c| {
                    // One read transaction for the batch, not one per key: every transaction
                    // start takes and drops the WAL's shared lock with fcntl calls, which cost
                    // more than the lookups themselves. The keys are also read from one snapshot.
                    let tx = c.unchecked_transaction()?;
                    let rows = unbuffered
                        .iter()
                        .map(|&m| select(&tx, &self.label, &keys[missed[m].0]))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    tx.commit()?;
                    Ok(rows)
                })
                .map_err(backend)?;
            for (m, row) in unbuffered.into_iter().zip(rows) {
                found[m] = Some(read(&row));
            }
        }
        self.before_fill();
        for ((i, ticket), found) in missed.into_iter().zip(found) {
            let found = found.expect("buffered or read");
            out[i].1 = found.value.as_ref().map(|b| b.to_vec());
            self.cache.fill(&keys[i], ticket, || found);
        }
        Ok(out)
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        self.write(&keys, |_| {
            Ok(((), entries.iter().map(|(k, v)| (k.as_str(), Some(Cow::Borrowed(&v[..])))).collect()))
        })
    }

    pub async fn delete_many(&self, keys: &[String]) -> KvResult<()> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Each deletion gets a version of its own, which raises the version floor when it
        // reaches SQLite: a restart never hands out a version a deleted key once had.
        self.write(&keys, |_| Ok(((), keys.iter().map(|k| (*k, None)).collect())))
    }
}

/// The keys of a listing: SQLite's `stored` and the buffer's `(key, present)` (both ascending),
/// the buffer's word winning. One pass over both: listings page up to 1,001 keys of each.
fn merge_listing(stored: Vec<String>, buffered: Vec<(String, bool)>) -> Vec<String> {
    if buffered.is_empty() {
        return stored;
    }
    let mut out = Vec::with_capacity(stored.len() + buffered.len());
    let mut stored = stored.into_iter().peekable();
    for (key, present) in buffered {
        while let Some(s) = stored.next_if(|s| *s < key) {
            out.push(s);
        }
        // The same key in SQLite is older than the buffer's word on it.
        stored.next_if(|s| *s == key);
        if present {
            out.push(key);
        }
    }
    out.extend(stored);
    out
}

/// The value and version of `key` in store `label`, if present.
fn select(c: &Connection, label: &str, key: &str) -> rusqlite::Result<Option<(Vec<u8>, u64)>> {
    c.prepare_cached(SELECT)?.query_row(params![label, key], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::SyncMode;
    use crate::kv::ready;
    use std::sync::atomic::Ordering;

    /// A read that misses, reads the database, and stores what it read only after a write of
    /// the same key committed (its pause lets the write in): the older value is not cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_overtaken_by_a_write_does_not_cache_its_older_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SqliteDb::open(&dir.path().join("bss.sqlite"), SyncMode::Normal).unwrap());
        let kv = Arc::new(SqliteKv::new(db.clone(), "default"));
        // Stored before this process opened the store (not cached): the reads below miss.
        for k in ["single", "batch"] {
            db.write_one(|c| {
                c.execute("INSERT INTO kv (store, key, value, version) VALUES ('default', ?1, X'31', 1)", [k])
            })
            .unwrap();
        }
        kv.pause_before_fill_us.store(200_000, Ordering::Relaxed);
        let reader = {
            let kv = kv.clone();
            tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let single = rt.block_on(kv.get("single")).unwrap();
                let batch = rt.block_on(kv.get_many(&["batch".to_string()])).unwrap();
                (single, batch)
            })
        };
        // Each read pauses 200 ms between the database and the cache: write during each pause.
        for (k, after_ms) in [("single", 50), ("batch", 200)] {
            tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
            kv.set(k, b"2").await.unwrap();
        }
        let (single, batch) = reader.await.unwrap();
        assert_eq!(single.as_deref(), Some(&b"1"[..]), "the read happened before the write");
        assert_eq!(batch[0].1.as_deref(), Some(&b"1"[..]));
        kv.pause_before_fill_us.store(0, Ordering::Relaxed);
        // The first read of each key misses (a write adds nothing to the cache) and caches what
        // it reads; the second one hits.
        for _ in 0..2 {
            for k in ["single", "batch"] {
                assert_eq!(kv.get(k).await.unwrap().as_deref(), Some(&b"2"[..]), "{k}: a stale value was cached");
            }
        }
        assert_eq!(kv.cache().stats.hits.load(Ordering::Relaxed), 2);
    }

    /// Writers give each of their keys increasing numbers (by set, swap, batch set, and deletes
    /// in between) while readers read them through the cache (single, versioned and batch reads):
    /// no reader may see a key's number go down — which a stale value stored after a newer one
    /// would show — and afterwards every cached value is the stored one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_read_cache_never_answers_a_value_older_than_one_already_seen() {
        const WRITERS: usize = 3;
        const KEYS_PER_WRITER: usize = 6;
        const ROUNDS: u64 = 400;
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SqliteDb::open(&dir.path().join("bss.sqlite"), SyncMode::Normal).unwrap());
        let kv = Arc::new(SqliteKv::with_cache_bytes(db.clone(), "default", 64 << 10));
        let key = |w: usize, k: usize| format!("w{w}/k{k}");
        let number = |v: &[u8]| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let kv = kv.clone();
            writers.push(tokio::spawn(async move {
                for n in 1..=ROUNDS {
                    let k = key(w, n as usize % KEYS_PER_WRITER);
                    let v = n.to_string().into_bytes();
                    match n % 5 {
                        0 => {
                            let current = kv.get_versioned(&k).await.unwrap();
                            assert!(kv.swap(&k, current.version, &v).await.unwrap(), "only this writer writes {k}");
                        }
                        1 => kv.set_many(&[(k.clone(), v)]).await.unwrap(),
                        2 => {
                            kv.delete(&k).await.unwrap();
                            kv.set(&k, &v).await.unwrap();
                        }
                        _ => kv.set(&k, &v).await.unwrap(),
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        let mut readers = Vec::new();
        for r in 0..3 {
            let (kv, done) = (kv.clone(), done.clone());
            readers.push(tokio::spawn(async move {
                let mut seen = std::collections::HashMap::<String, u64>::new();
                let mut reads = 0u64;
                let all: Vec<String> =
                    (0..WRITERS).flat_map(|w| (0..KEYS_PER_WRITER).map(move |k| key(w, k))).collect();
                while !done.load(Ordering::Relaxed) {
                    let got: Vec<(String, Option<Vec<u8>>)> = match (reads + r) % 3 {
                        0 => kv.get_many(&all).await.unwrap(),
                        1 => {
                            let k = &all[reads as usize % all.len()];
                            vec![(k.clone(), kv.get(k).await.unwrap())]
                        }
                        _ => {
                            let k = &all[reads as usize % all.len()];
                            vec![(k.clone(), kv.get_versioned(k).await.unwrap().value)]
                        }
                    };
                    for (k, v) in got {
                        let Some(v) = v else { continue };
                        let n = number(&v);
                        let before = seen.insert(k.clone(), n).unwrap_or(0);
                        assert!(n >= before, "{k}: read {n} after {before}");
                    }
                    reads += 1;
                    tokio::task::yield_now().await;
                }
                reads
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.await.unwrap() > 0);
        }
        let stats = &kv.cache().stats;
        assert!(stats.hits.load(Ordering::Relaxed) > 0, "the cache never answered");
        db.flush_kv().unwrap();
        for w in 0..WRITERS {
            for k in 0..KEYS_PER_WRITER {
                let k = key(w, k);
                let stored = db.read(|c| select(c, "default", &k)).unwrap();
                let cached = kv.get_versioned(&k).await.unwrap();
                assert_eq!(stored.map(|(v, version)| (Some(v), version)), Some((cached.value, cached.version)), "{k}");
            }
        }
    }

    #[tokio::test]
    async fn a_new_database_has_8_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |path: &std::path::Path| -> i64 {
            rusqlite::Connection::open(path).unwrap().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap()
        };
        let fresh = dir.path().join("new.sqlite");
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&fresh, SyncMode::Normal).unwrap()), "default");
        // A bill (~4.5 KB) stays in its b-tree page: no overflow page of its own.
        kv.set("u", &[b'x'; 5000]).await.unwrap();
        kv.db.flush_kv().unwrap();
        assert_eq!(page_size(&fresh), 8192);
        let old = dir.path().join("old.sqlite");
        rusqlite::Connection::open(&old).unwrap().execute_batch("PRAGMA page_size = 4096; VACUUM;").unwrap();
        let kv_old = SqliteKv::new(Arc::new(SqliteDb::open(&old, SyncMode::Normal).unwrap()), "default");
        kv_old.set("u", &[b'x'; 5000]).await.unwrap();
        kv_old.db.flush_kv().unwrap();
        assert_eq!(page_size(&old), 4096, "a database keeps the page size it was created with");
        let overflow_pages = |path: &std::path::Path| -> i64 {
            rusqlite::Connection::open(path)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM dbstat WHERE pagetype = 'overflow'", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(overflow_pages(&fresh), 0);
        assert_eq!(overflow_pages(&old), 1, "at 4 KiB the same value spills into an overflow page");
    }

    #[tokio::test]
    async fn versions_are_never_reused_across_a_delete_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap()), "default");
        kv.set("a", b"1").await.unwrap();
        kv.set("b", b"1").await.unwrap();
        let highest = kv.get_versioned("b").await.unwrap().version;
        kv.delete("b").await.unwrap();
        drop(kv);
        let kv = SqliteKv::new(Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap()), "default");
        kv.set("b", b"2").await.unwrap();
        let recreated = kv.get_versioned("b").await.unwrap().version;
        assert!(recreated > highest, "version {recreated} reused (deleted key had {highest})");
        // A swap against the version read before the delete must fail.
        assert!(!kv.swap("b", highest, b"stale").await.unwrap());
    }

    /// Every key of `prefix`, paging `page` keys at a time.
    fn list_all(kv: &SqliteKv, prefix: &str, page: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let p = ready(kv.list_keys(prefix, cursor.as_deref(), page)).unwrap();
            assert!(p.keys.len() <= page);
            keys.extend(p.keys);
            match p.cursor {
                Some(c) => cursor = Some(c),
                None => return keys,
            }
        }
    }

    type Model = std::collections::BTreeMap<String, Vec<u8>>;

    /// Every read — single, versioned, batch, and listings of several prefixes paged by 1, 3
    /// and 1,000 — answers what `model` holds.
    fn check(kv: &SqliteKv, other: &SqliteKv, keys: &[String], model: &Model, when: &str) {
        for k in keys {
            assert_eq!(ready(kv.get(k)).unwrap().as_ref(), model.get(k), "{when}: get {k}");
            let v = ready(kv.get_versioned(k)).unwrap();
            assert_eq!(v.value.as_ref(), model.get(k), "{when}: get_versioned {k}");
            assert_eq!(v.version == 0, v.value.is_none(), "{when}: version of {k}");
        }
        for (k, v) in ready(kv.get_many(keys)).unwrap() {
            assert_eq!(v.as_ref(), model.get(&k), "{when}: get_many {k}");
        }
        for prefix in ["", "a", "a/", "ab/", "b/", "c"] {
            let want: Vec<String> = model.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
            for page in [1, 3, 1000] {
                assert_eq!(list_all(kv, prefix, page), want, "{when}: list {prefix:?} by {page}");
            }
        }
        // Another label of the same database sees none of it, and keeps its own.
        assert_eq!(ready(other.list_keys("", None, 1000)).unwrap().keys, ["x"], "{when}");
        assert_eq!(ready(other.get("x")).unwrap().as_deref(), Some(&b"other"[..]), "{when}");
    }

    /// One random write of `k` (kind `r`), applied to the store and to `model`.
    fn write(kv: &SqliteKv, model: &mut Model, r: u64, k: &str, n: u64) {
        let value = format!("{k}={n}").into_bytes();
        let counter = |m: &Model| m.get(k).map(|v| std::str::from_utf8(v).unwrap().parse::<i64>());
        match r {
            0 | 1 => {
                ready(kv.set(k, &value)).unwrap();
                model.insert(k.to_string(), value);
            }
            2 => {
                ready(kv.delete(k)).unwrap();
                model.remove(k);
            }
            3 => {
                let current = ready(kv.get_versioned(k)).unwrap();
                let stale = current.version.saturating_sub(1).max(1);
                assert!(!ready(kv.swap(k, stale, b"stale")).unwrap(), "{k}: swap of an older version");
                assert!(ready(kv.swap(k, current.version, &value)).unwrap(), "{k}: swap of the current version");
                assert!(!ready(kv.swap(k, current.version, b"again")).unwrap(), "{k}: swap of a replaced version");
                model.insert(k.to_string(), value);
            }
            4 => match counter(model) {
                Some(Err(_)) => assert!(ready(kv.increment(k, 1)).is_err(), "{k}: increment of a non-integer"),
                before => {
                    let before = before.map_or(0, Result::unwrap);
                    assert_eq!(ready(kv.increment(k, 5)).unwrap(), before + 5);
                    model.insert(k.to_string(), (before + 5).to_string().into_bytes());
                }
            },
            _ => {
                // A batch naming one key twice: the later value wins.
                let entries = [
                    (k.to_string(), b"first".to_vec()),
                    ("b/x".to_string(), value.clone()),
                    (k.to_string(), value.clone()),
                ];
                ready(kv.set_many(&entries)).unwrap();
                model.insert("b/x".to_string(), value.clone());
                model.insert(k.to_string(), value);
            }
        }
    }

    /// Copies the database's files as a crash would leave them (the process gone, the kernel's
    /// copies of what it wrote kept) into `to`.
    fn crash_image(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with("bss.sqlite") {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// Random writes (set, batch set, delete, swap, increment) against a model, with the buffer
    /// flushed at chosen points, writes and reads made while a flush holds the buffer aside, and
    /// crash images opened (the log replayed): every read answers what the model holds.
    #[test]
    fn reads_see_every_write_whether_buffered_being_flushed_or_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("bss.sqlite");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let db = Arc::new(SqliteDb::open_with(&path, SyncMode::Normal, None).unwrap());
        let kv = SqliteKv::with_cache_bytes(db.clone(), "s", 4096);
        let other = SqliteKv::new(db.clone(), "other");
        ready(other.set("x", b"other")).unwrap();
        let mut model = Model::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut keys: Vec<String> = (0..30).map(|i| format!("{}/{i:02}", ["a", "ab", "b"][i % 3])).collect();
        keys.push("b/x".to_string());
        for round in 0..12u64 {
            for n in 0..40 {
                let k = keys[next(keys.len() as u64) as usize].clone();
                write(&kv, &mut model, next(7), &k, round * 100 + n);
            }
            check(&kv, &other, &keys, &model, &format!("round {round}, buffered"));
            if round % 3 == 2 {
                // What a crash now leaves: SQLite as of the last flush, and the log.
                let image = dir.path().join(format!("crash{round}"));
                crash_image(path.parent().unwrap(), &image);
                let db2 = Arc::new(SqliteDb::open_with(&image.join("bss.sqlite"), SyncMode::Normal, None).unwrap());
                let (kv2, other2) = (SqliteKv::new(db2.clone(), "s"), SqliteKv::new(db2.clone(), "other"));
                check(&kv2, &other2, &keys, &model, &format!("round {round}, crash image"));
                // Replayed into SQLite: no log is left, and new versions are above the old.
                assert!(
                    crate::kv::writeback::log_files(&image.join("bss.sqlite"))
                        .unwrap()
                        .iter()
                        .all(|(_, p)| { std::fs::metadata(p).unwrap().len() == 0 })
                );
                let highest = keys.iter().map(|k| ready(kv.get_versioned(k)).unwrap().version).max().unwrap();
                ready(kv2.set("a/new", b"1")).unwrap();
                assert!(ready(kv2.get_versioned("a/new")).unwrap().version > highest);
            }
            // Writes and reads while the flush holds the buffer's entries aside.
            let mut during = model.clone();
            let flushed = db
                .flush_kv_after(|| {
                    check(&kv, &other, &keys, &model, &format!("round {round}, being flushed"));
                    for n in 0..10 {
                        let k = &keys[(round as usize * 7 + n) % keys.len()];
                        write(&kv, &mut during, n as u64 % 7, k, 10_000 + n as u64);
                    }
                    check(&kv, &other, &keys, &during, &format!("round {round}, written while flushing"));
                })
                .unwrap();
            assert!(flushed > 0);
            model = during;
            check(&kv, &other, &keys, &model, &format!("round {round}, flushed"));
        }
        // Dropping the database flushes: opened again, it has everything, with no log to replay.
        drop((kv, other, db));
        let db = Arc::new(SqliteDb::open_with(&path, SyncMode::Normal, None).unwrap());
        check(&SqliteKv::new(db.clone(), "s"), &SqliteKv::new(db.clone(), "other"), &keys, &model, "reopened");
        let rows: i64 =
            db.read(|c| c.query_row("SELECT COUNT(*) FROM kv WHERE store = 's'", [], |r| r.get(0))).unwrap();
        assert_eq!(rows as usize, model.len(), "everything reached SQLite");
    }

    /// A crash in the middle of a log write leaves a torn last frame: the frames before it are
    /// replayed, the torn one is not.
    #[test]
    fn a_torn_last_frame_is_ignored_and_the_frames_before_it_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let db = Arc::new(SqliteDb::open_with(&path, SyncMode::Normal, None).unwrap());
        let kv = SqliteKv::new(db.clone(), "s");
        ready(kv.set("kept", b"1")).unwrap();
        ready(kv.set_many(&[("torn".to_string(), vec![7; 5000])])).unwrap();
        let image = dir.path().join("crash");
        crash_image(dir.path(), &image);
        let (_, log) = crate::kv::writeback::log_files(&image.join("bss.sqlite")).unwrap().pop().unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len - 100).unwrap();
        let db2 = Arc::new(SqliteDb::open_with(&image.join("bss.sqlite"), SyncMode::Normal, None).unwrap());
        let kv2 = SqliteKv::new(db2, "s");
        assert_eq!(ready(kv2.get("kept")).unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(ready(kv2.get("torn")).unwrap(), None);
    }

    /// A buffer that stays full (nothing flushes it) refuses writes after its wait, naming the
    /// cause, and changes nothing; a flush makes room again.
    #[test]
    fn a_full_buffer_refuses_writes_until_a_flush_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SqliteDb::open_with(&dir.path().join("bss.sqlite"), SyncMode::Normal, None).unwrap());
        db.write_back().set_limits(4096, 50);
        let kv = SqliteKv::new(db.clone(), "s");
        ready(kv.set("big", &[1; 5000])).unwrap();
        let err = ready(kv.set("next", b"1")).unwrap_err();
        assert!(err.to_string().contains("write buffer stayed full"), "{err}");
        assert!(ready(kv.swap("next", 0, b"1")).is_err());
        assert_eq!(ready(kv.get("next")).unwrap(), None, "a refused write changed nothing");
        db.flush_kv().unwrap();
        ready(kv.set("next", b"1")).unwrap();
        assert_eq!(ready(kv.get("big")).unwrap().map(|v| v.len()), Some(5000));
    }
}
