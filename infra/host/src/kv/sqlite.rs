//! Key-value store on the embedded SQLite database (table `kv`, one row per store label and key).
//! Compare-and-swap is a conditional `INSERT … ON CONFLICT DO NOTHING` (expecting absent) or
//! `UPDATE … WHERE version = ?` (expecting a version), whose changed-row count says who won.
//! Reads are served from a read cache when they can (`cache.rs`).

use super::cache::{Cached, Committed, KvCache};
use super::{KeyPage, KvError, KvResult, Versioned, parse_counter};
use crate::db::{SqliteDb, in_transaction};
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

const UPSERT: &str = "INSERT INTO kv (store, key, value, version) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, version = excluded.version";
const SELECT: &str = "SELECT value, version FROM kv WHERE store = ?1 AND key = ?2";

/// What a write stored under a key.
fn stored(value: &[u8], version: u64) -> Committed<'_> {
    Committed { value: Some(Cow::Borrowed(value)), version }
}

/// What a database read found, as the cache keeps it.
fn read(row: &Option<(Vec<u8>, u64)>) -> Cached {
    match row {
        Some((value, version)) => Cached { value: Some(Bytes::copy_from_slice(value)), version: *version },
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
        let row = self.db.read(|c| select(c, &self.label, key)).map_err(backend)?;
        self.before_fill();
        self.cache.fill(key, ticket, || read(&row));
        Ok(match row {
            Some((value, version)) => Versioned { value: Some(value), version },
            None => Versioned { value: None, version: 0 },
        })
    }

    /// Run the write `f` of `keys` on the writer connection (in a transaction if `transaction`)
    /// and record in the cache what it committed: `f` answers its result and the committed value
    /// of each key it changed, in order. If it fails, its outcome is unknown to the cache, which
    /// then forgets everything it held in the shards of `keys`.
    fn write<'k, 'v, R>(
        &self,
        keys: &[&'k str],
        transaction: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(R, Vec<(&'k str, Committed<'v>)>)>,
    ) -> KvResult<R> {
        self.db
            .with_writer(|conn| {
                let write = self.cache.begin_write(keys.iter().copied());
                let (r, committed) = if transaction { in_transaction(conn, |tx| f(tx))? } else { f(conn)? };
                write.end(committed);
                Ok(r)
            })
            .map_err(backend)
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        // Autocommit: a single statement is atomic on its own.
        self.write(&[key], false, |c| {
            let version = self.db.next_kv_version();
            c.prepare_cached(UPSERT)?.execute(params![self.label, key, value, version as i64])?;
            Ok(((), vec![(key, stored(value, version))]))
        })
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
        let mut keys: Vec<String> = self
            .db
            .read(|c| {
                let mut stmt = c.prepare_cached(sql)?;
                let limit = (limit + 1) as i64;
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
        let in_prefix = keys.iter().take_while(|k| k.starts_with(prefix)).count();
        let more = in_prefix > limit;
        keys.truncate(in_prefix.min(limit));
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    pub async fn swap(&self, key: &str, expected_version: u64, value: &[u8]) -> KvResult<bool> {
        self.write(&[key], false, |c| {
            let version = self.db.next_kv_version();
            let changed = if expected_version == 0 {
                c.prepare_cached(
                    "INSERT INTO kv (store, key, value, version) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (store, key) DO NOTHING",
                )?
                .execute(params![self.label, key, value, version as i64])?
            } else {
                c.prepare_cached(
                    "UPDATE kv SET value = ?3, version = ?4 WHERE store = ?1 AND key = ?2 AND version = ?5",
                )?
                .execute(params![self.label, key, value, version as i64, expected_version as i64])?
            };
            let won = changed == 1;
            Ok((won, if won { vec![(key, stored(value, version))] } else { Vec::new() }))
        })
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.write(&[key], true, |tx| {
            let current = select(tx, &self.label, key)?;
            let next = match parse_counter(current.as_ref().map(|(v, _)| v.as_slice())) {
                Ok(n) => match n.checked_add(delta) {
                    Some(next) => next,
                    None => {
                        return Ok((Err(KvError::Invalid("increment overflows a 64-bit integer".into())), Vec::new()));
                    }
                },
                Err(e) => return Ok((Err(e), Vec::new())),
            };
            let version = self.db.next_kv_version();
            let value = next.to_string().into_bytes();
            tx.prepare_cached(UPSERT)?.execute(params![self.label, key, value, version as i64])?;
            Ok((Ok(next), vec![(key, Committed { value: Some(Cow::Owned(value)), version })]))
        })?
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
        let rows = self
            .db
            .read(|c| {
                // One read transaction for the batch, not one per key: every transaction start
                // takes and drops the WAL's shared lock with fcntl calls, which cost more than
                // the lookups themselves. The keys are also read from one snapshot.
                let tx = c.unchecked_transaction()?;
                let rows = missed
                    .iter()
                    .map(|(i, _)| select(&tx, &self.label, &keys[*i]))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.commit()?;
                Ok(rows)
            })
            .map_err(backend)?;
        self.before_fill();
        for ((i, ticket), row) in missed.into_iter().zip(rows) {
            self.cache.fill(&keys[i], ticket, || read(&row));
            out[i].1 = row.map(|(value, _)| value);
        }
        Ok(out)
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        self.write(&keys, true, |tx| {
            let mut stmt = tx.prepare_cached(UPSERT)?;
            let mut committed = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let version = self.db.next_kv_version();
                stmt.execute(params![self.label, k, v, version as i64])?;
                committed.push((k.as_str(), stored(v, version)));
            }
            Ok(((), committed))
        })
    }

    pub async fn delete_many(&self, keys: &[String]) -> KvResult<()> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.write(&keys, true, |tx| {
            // Remember the highest version that leaves the table, so that a restart never
            // hands out a version a deleted key once had (see `SqliteDb::open`).
            let mut floor = tx.prepare_cached(
                "INSERT INTO kv_meta (name, value) SELECT 'version_floor', version FROM kv WHERE store = ?1 AND key = ?2
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
            )?;
            let mut stmt = tx.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?;
            for k in &keys {
                floor.execute(params![self.label, k])?;
                stmt.execute(params![self.label, k])?;
            }
            Ok(((), keys.iter().map(|k| (*k, Committed::DELETED)).collect()))
        })
    }
}

/// The value and version of `key` in store `label`, if present.
fn select(c: &Connection, label: &str, key: &str) -> rusqlite::Result<Option<(Vec<u8>, u64)>> {
    c.prepare_cached(SELECT)?.query_row(params![label, key], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::SyncMode;
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
        // A rated usage record (~1.2 KB) stays in its b-tree page: no overflow page of its own.
        kv.set("u", &[b'x'; 1500]).await.unwrap();
        assert_eq!(page_size(&fresh), 8192);
        let old = dir.path().join("old.sqlite");
        rusqlite::Connection::open(&old).unwrap().execute_batch("PRAGMA page_size = 4096; VACUUM;").unwrap();
        let kv_old = SqliteKv::new(Arc::new(SqliteDb::open(&old, SyncMode::Normal).unwrap()), "default");
        kv_old.set("u", &[b'x'; 1500]).await.unwrap();
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
}
