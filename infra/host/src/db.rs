//! The embedded SQLite database: one file under the data folder holds the key-value stores and
//! the queue. One writer connection (SQLite allows one writer at a time anyway, so a mutex is
//! cheaper than `SQLITE_BUSY` retries) and a few reader connections that WAL lets run beside it;
//! reads take the writer connection when it is idle (its page cache survives commits; see
//! [`SqliteDb::read`]).
//!
//! The connections use SQLite's `unix-excl` VFS: the process holds the file exclusively and its
//! connections share the WAL index in heap memory, instead of taking and releasing file locks
//! (`fcntl`) on every transaction — 4% of a KV round-trip's CPU in a profile. Another process
//! cannot open the database while bss-host has it open (`bss-host.lock` already keeps a second
//! host out of the data folder).
//!
//! Checkpoints (copying the WAL's pages into the database file, with its fsyncs) run on a
//! thread of their own ([`CHECKPOINT_INTERVAL_MS`]), beside the writer: by default SQLite runs
//! them inside the commit that crosses the threshold, holding the write lock meanwhile, so every
//! writer waited for the disk.
//!
//! Key-value writes do not commit one by one: they go to a write-back buffer with a redo log
//! (`kv/writeback.rs`), which a thread of its own moves into SQLite in one transaction every
//! [`FLUSH_INTERVAL_MS`](crate::kv::writeback::FLUSH_INTERVAL_MS); opening the database first
//! replays what the log holds. The queue's tables are written directly.
//!
//! Durability: WAL with `synchronous = NORMAL`: a committed write (and a key-value write once
//! logged) survives the process dying at any point (kill -9); on power loss the last few commits
//! may roll back, never half-apply. Key-value writes flushed (every 200 ms, the WAL fsynced) also
//! survive power loss; of the ones after, the key-value log and the queue's commits may lose
//! their last writes independently (two files, neither fsynced). Run with `--sqlite-sync full`
//! for fsync on every commit and every key-value write, which keeps their order.

use crate::kv::cache::KvCache;
use crate::kv::writeback::{self, WriteBack};
use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The SQLite VFS of every connection (see the module doc).
const VFS: &str = "unix-excl";
/// Reader connections kept open.
const READERS: usize = 4;
/// The page size of a new database (an existing one keeps its own). At SQLite's default 4 KiB a
/// value over ~1 KB (a rated usage record, a bill) spills into an overflow page of its own;
/// at 8 KiB values up to ~2 KB stay in their b-tree page.
const PAGE_SIZE_BYTES: i64 = 8192;
/// How often the checkpointer copies what the WAL holds into the database file (a page rewritten
/// by several commits in between is copied once). It runs beside the writer (`PASSIVE`: it never
/// waits for, nor blocks, the writer or a reader). Not longer: every page a connection reads is
/// first looked up among the WAL frames written since the last checkpoint (`walFindFrame`, 5% of
/// a bill run's CPU at 1 s); at 200 ms a bill run bills about 11% more accounts per CPU-second,
/// and usage ingestion and KV round-trips are unchanged.
pub const CHECKPOINT_INTERVAL_MS: u64 = 200;
/// WAL pages past which the committing writer checkpoints itself (SQLite's default is 1,000): a
/// backstop for when the checkpointer falls behind, and the WAL file's size under a sustained
/// write load (256 MiB at 8 KiB pages): SQLite starts the WAL over only when a write finds every
/// page copied and no reader in it, which a steady load rarely offers.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 32_000;
/// Page cache of the writer connection (SQLite's default is 2 MiB a connection).
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// The part of the database file the writer reads through a memory map (SQLite caps it at its
/// compile-time limit, 2 GiB in the bundled build; pages past it are read one by one with
/// `pread`). Not the whole file: mapping all of a 30 GB database of 1,000,000 accounts on a
/// machine of 23 GB made every page fault read around it as far as the disk's readahead goes
/// (8 MB here): the native bill run's reads reached 623 GB from disk in 11 minutes before it
/// had listed the accounts (90 s with this map), where a `pread` reads its one page. At 100,000
/// accounts (3.3 GB) mapping it all cut the bytes read an account from ~930 KB to ~270 KB and
/// the host's CPU an account by 4–14%: a database that fits in memory gains, one that does not
/// thrashes.
const WRITER_MMAP_BYTES: i64 = 1 << 31;

/// Whether each commit waits for fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// Survives a crash of the process; power loss may lose the last commits.
    #[default]
    Normal,
    /// fsync on every commit.
    Full,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    store   TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;

-- version_floor: the highest version a deleted key had; versions restart above it.
-- version_high: at least the highest version any key has had (raised by every write), so that
-- opening the database finds where versions go on without scanning the kv table.
CREATE TABLE IF NOT EXISTS kv_meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS q_message (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    subject         TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    ordering_key    TEXT,
    published_at_ms INTEGER NOT NULL
);

-- One row per (consumer, message). state 0 = pending, 1 = dead. A leased delivery is pending
-- with due_at_ms pushed to the end of its lease, so it is invisible until the lease runs out.
CREATE TABLE IF NOT EXISTS q_delivery (
    consumer     TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    ordering_key TEXT,
    state        INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at_ms    INTEGER NOT NULL,
    last_error   TEXT,
    PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS q_delivery_due ON q_delivery (consumer, state, due_at_ms);
CREATE INDEX IF NOT EXISTS q_delivery_order ON q_delivery (consumer, ordering_key, state, seq)
    WHERE ordering_key IS NOT NULL;

-- Ids published recently, so that publishing an id twice stores it once even after the first
-- copy was delivered and removed.
CREATE TABLE IF NOT EXISTS q_seen (
    id              TEXT    PRIMARY KEY,
    published_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS q_seen_at ON q_seen (published_at_ms);
";

/// Writes a key-value row (the key's value and version, created or replaced).
pub const KV_UPSERT: &str = "INSERT INTO kv (store, key, value, version) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, version = excluded.version";
const KV_DELETE: &str = "DELETE FROM kv WHERE store = ?1 AND key = ?2";
/// Raises the version floor (see the schema) to `?1`.
const KV_RAISE_FLOOR: &str = "INSERT INTO kv_meta (name, value) VALUES ('version_floor', ?1)
     ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)";
/// Raises the versions' high mark (see the schema) to `?1`.
const KV_RAISE_HIGH: &str = "INSERT INTO kv_meta (name, value) VALUES ('version_high', ?1)
     ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)";

/// Records in `tx` that key-value rows up to `version` were written: whoever writes the kv table
/// with its own SQL (the bill-run seeder) calls it in the same transaction, as [`SqliteDb`]'s
/// own writes do, or the next open would start versions below ones in use.
pub fn raise_version_high(tx: &rusqlite::Transaction<'_>, version: u64) -> rusqlite::Result<()> {
    tx.execute(KV_RAISE_HIGH, [version as i64]).map(|_| ())
}

/// The open database: the connections and the key-value write-back buffer, with the threads that
/// flush that buffer and checkpoint the WAL (stopped, after a last flush and checkpoint, when
/// it is dropped).
pub struct SqliteDb {
    shared: Arc<Shared>,
    // Dropped in this order: the last flush before the last checkpoint.
    _flusher: Periodic,
    _checkpointer: Periodic,
}

impl std::ops::Deref for SqliteDb {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What the database's users and its threads share.
pub struct Shared {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Last version handed to a key-value write. Versions never repeat, even across a delete and
    /// a re-create of the same key, so a compare-and-swap can never be fooled by an A-B-A.
    kv_version: AtomicU64,
    /// The read cache of each key-value store label (see `kv/cache.rs`): one per label and
    /// database, however many store values are opened on it, so that every write of the label
    /// reaches the cache its reads use.
    kv_caches: Mutex<HashMap<String, Arc<KvCache>>>,
    /// Key-value writes not yet in SQLite.
    write_back: WriteBack,
}

/// A thread that runs a task every interval, and once more when it is stopped (dropped).
struct Periodic {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    fn start(name: &str, interval: Duration, mut task: impl FnMut() + Send + 'static) -> anyhow::Result<Periodic> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let (lock, wake) = &*stop2;
            let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*stopped {
                let (guard, _) = wake.wait_timeout(stopped, interval).unwrap_or_else(|p| p.into_inner());
                stopped = guard;
                if !*stopped {
                    drop(stopped);
                    task();
                    stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            drop(stopped);
            task();
        })?;
        Ok(Periodic { stop, thread: Some(thread) })
    }
}

/// Report a background task's failure once, until it succeeds again.
fn report_once(failed: &AtomicBool, what: &str, result: anyhow::Result<()>) {
    match result {
        Ok(()) => {
            if failed.swap(false, Ordering::Relaxed) {
                tracing::info!("{what} works again");
            }
        }
        Err(e) => {
            if !failed.swap(true, Ordering::Relaxed) {
                tracing::warn!("{what} failed: {e:#}");
            }
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteDb")
    }
}

/// Write key-value rows in `tx`: each `(label, key, value or None to delete, version)`. A
/// deletion's version raises the version floor, so that no later version repeats one of a
/// deleted key.
fn apply_kv<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a [u8]>, u64)>,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(KV_UPSERT)?;
    let mut delete = tx.prepare_cached(KV_DELETE)?;
    let (mut floor, mut high) = (0, 0);
    for (label, key, value, version) in rows {
        high = high.max(version);
        match value {
            Some(v) => upsert.execute(params![label, key, v, version as i64])?,
            None => {
                floor = floor.max(version);
                delete.execute(params![label, key])?
            }
        };
    }
    if floor > 0 {
        tx.execute(KV_RAISE_FLOOR, [floor as i64])?;
    }
    if high > 0 {
        raise_version_high(tx, high)?;
    }
    Ok(())
}

/// Where key-value versions go on from: above every version in use and every deleted one. Read
/// from `kv_meta` — one row, where scanning the kv table for its highest version read the whole
/// database file (30 GB and about 110 s at 1,000,000 accounts) on every start; a database written
/// before the high mark was kept is scanned once, and the mark recorded.
fn kv_version_start(conn: &mut Connection) -> rusqlite::Result<u64> {
    let meta = |conn: &Connection, name: &str| -> rusqlite::Result<Option<i64>> {
        conn.query_row("SELECT value FROM kv_meta WHERE name = ?1", [name], |r| r.get(0)).optional()
    };
    let floor = meta(conn, "version_floor")?.unwrap_or(0);
    let high = match meta(conn, "version_high")? {
        Some(high) => high,
        None => {
            let scanned: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM kv", [], |r| r.get(0))?;
            in_transaction(conn, |tx| raise_version_high(tx, scanned as u64))?;
            scanned
        }
    };
    Ok(floor.max(high).max(0) as u64)
}

fn configure(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "page_size", PAGE_SIZE_BYTES)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if sync == SyncMode::Full { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteDb {
    /// Open (creating if needed) the database file at `path`, flushing key-value writes every
    /// [`FLUSH_INTERVAL_MS`](writeback::FLUSH_INTERVAL_MS).
    pub fn open(path: &Path, sync: SyncMode) -> anyhow::Result<SqliteDb> {
        SqliteDb::open_with(path, sync, Some(Duration::from_millis(writeback::FLUSH_INTERVAL_MS)))
    }

    /// [`SqliteDb::open`] with key-value writes flushed every `flush_every`, or only by
    /// [`Shared::flush_kv`] (and when the database is dropped) if `None`.
    pub fn open_with(path: &Path, sync: SyncMode, flush_every: Option<Duration>) -> anyhow::Result<SqliteDb> {
        // First: nothing of this database may be touched while another open of it runs.
        let logs_lock = writeback::lock_logs(path)?;
        let open = || -> anyhow::Result<Connection> {
            let conn = Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), VFS)
                .with_context(|| format!("opening SQLite database {}", path.display()))?;
            configure(&conn, sync).with_context(|| format!("configuring SQLite database {}", path.display()))?;
            Ok(conn)
        };
        let mut writer = open()?;
        // Most reads run on the writer (see `read`): a cache that holds a working set, and the
        // file memory-mapped so pages outside it are not copied in by a read() each. Only the
        // writer: a reader drops its cache and its mapping whenever another connection committed.
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        writer.pragma_update(None, "mmap_size", WRITER_MMAP_BYTES)?;
        writer.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        writer.execute_batch(SCHEMA).context("creating the schema")?;
        // What the key-value log holds and SQLite may not: before anything reads.
        let (frames, generation) = writeback::read_logs(path)?;
        if !frames.is_empty() {
            in_transaction(&mut writer, |tx| {
                apply_kv(
                    tx,
                    frames.iter().flat_map(|(label, entries)| {
                        entries.iter().map(move |(k, v, version)| (label.as_str(), k.as_str(), v.as_deref(), *version))
                    }),
                )
            })
            .context("replaying the key-value log")?;
            tracing::info!(frames = frames.len(), "replayed the key-value log");
            writeback::sync_wal(path)?;
        }
        writeback::remove_logs(path)?;
        let kv_version = kv_version_start(&mut writer)?;
        let readers = (0..READERS).map(|_| open().map(Mutex::new)).collect::<anyhow::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            kv_version: AtomicU64::new(kv_version),
            kv_caches: Mutex::new(HashMap::new()),
            write_back: WriteBack::open(path, sync, generation, logs_lock)?,
        });
        let checkpointer = {
            let conn = open()?;
            let failed = AtomicBool::new(false);
            Periodic::start("sqlite-checkpoint", Duration::from_millis(CHECKPOINT_INTERVAL_MS), move || {
                // PASSIVE: copies what no reader still needs, waits for nobody. The writer's own
                // checkpoint is the backstop.
                let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                report_once(&failed, "SQLite checkpoint (the writer will checkpoint instead)", r.map_err(Into::into));
            })?
        };
        let flusher = {
            let shared = shared.clone();
            let failed = AtomicBool::new(false);
            // Without an interval the thread still makes the last flush.
            let every = flush_every.unwrap_or(Duration::MAX);
            Periodic::start("sqlite-kv-flush", every, move || {
                let r = shared.flush_kv().map(|_| ());
                report_once(&failed, "Flushing key-value writes into SQLite (they stay logged)", r);
            })?
        };
        Ok(SqliteDb { shared, _flusher: flusher, _checkpointer: checkpointer })
    }
}

impl Shared {
    /// Move the key-value writes buffered so far into SQLite, in one transaction; returns how
    /// many rows it wrote. The flusher thread calls it every interval; a program that reads the
    /// `kv` table with SQL of its own calls it first.
    pub fn flush_kv(&self) -> anyhow::Result<usize> {
        self.flush_kv_after(|| {})
    }

    /// [`Shared::flush_kv`], running `during` after the buffer's entries were set aside for the
    /// flush and before they are written (tests read and write in that window).
    pub(crate) fn flush_kv_after(&self, during: impl FnOnce()) -> anyhow::Result<usize> {
        self.write_back.flush(|entries| {
            during();
            let rows = entries.iter().flat_map(|(label, keys)| {
                keys.iter().map(move |(k, p)| (&**label, &**k, p.value.as_deref(), p.version))
            });
            self.write(|tx| apply_kv(tx, rows)).context("writing buffered key-value writes")
        })
    }

    /// The key-value write-back buffer (see `kv/writeback.rs`).
    pub fn write_back(&self) -> &WriteBack {
        &self.write_back
    }

    /// Run `f` on the writer connection, inside one transaction that commits when `f` succeeds.
    pub fn write<R>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        self.with_writer(|conn| in_transaction(conn, f))
    }

    /// Run one statement on the writer connection in autocommit mode: a single statement is
    /// atomic on its own, and skipping `BEGIN`/`COMMIT` saves two statement executions per write.
    pub fn write_one<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        self.with_writer(|conn| f(conn))
    }

    /// Run `f` holding the writer connection: no other write starts or commits until it returns,
    /// so what `f` records after its own commit is recorded in commit order.
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        f(&mut lock(&self.writer))
    }

    /// The read cache of store `label`, made with a budget of `bytes_max` by its first caller.
    pub fn kv_cache(&self, label: &str, bytes_max: usize) -> Arc<KvCache> {
        let mut caches = self.kv_caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.entry(label.to_string()).or_insert_with(|| Arc::new(KvCache::new(bytes_max))).clone()
    }

    /// A fresh key-value version. Call it inside [`SqliteDb::write`]: the writer lock orders
    /// versions with commits.
    pub fn next_kv_version(&self) -> u64 {
        self.kv_version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Run `f` on an idle connection: the writer's if it is idle, else a reader. Reads see every
    /// committed write.
    ///
    /// The writer first because its page cache stays warm: in WAL mode a connection drops its
    /// whole page cache when it starts reading after another connection committed, so under a
    /// steady write load a reader fetches every page it touches from the kernel again.
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        if let Ok(conn) = self.writer.try_lock() {
            return f(&conn);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        // Take the first idle reader; if all are busy wait for the one we were assigned.
        for i in 0..self.readers.len() {
            if let Ok(conn) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return f(&conn);
            }
        }
        f(&lock(&self.readers[start % self.readers.len()]))
    }
}

/// Run `f` inside one transaction of `conn` (taking the write lock at once) that commits when
/// `f` succeeds.
pub fn in_transaction<R>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let r = f(&tx)?;
    tx.commit()?;
    Ok(r)
}

/// A poisoned lock only means another thread panicked while holding it; the connection itself
/// is still valid (SQLite rolls back an unfinished transaction), so carry on.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpointer_copies_commits_into_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        let file_bytes = || std::fs::metadata(&path).unwrap().len();
        let before = file_bytes();
        // About 250 pages: far below the writer's own checkpoint threshold.
        for i in 0..500 {
            db.write_one(|c| {
                c.execute(
                    "INSERT INTO kv (store, key, value, version) VALUES ('s', ?1, zeroblob(4000), 1)",
                    [format!("k{i}")],
                )
            })
            .unwrap();
        }
        const _: () = assert!(500 * 4000 / PAGE_SIZE_BYTES < WAL_AUTOCHECKPOINT_PAGES / 10);
        // Many checkpoint intervals, and never under 10 s: a loaded CI machine may be slow to fsync.
        let wait = Duration::from_millis(CHECKPOINT_INTERVAL_MS * 10).max(Duration::from_secs(10));
        let deadline = std::time::Instant::now() + wait;
        while file_bytes() < before + 1_000_000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint: {} bytes, {before} before", file_bytes());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping the database stops the thread (the test would hang otherwise).
        drop(db);
    }

    #[test]
    fn versions_go_on_from_the_high_mark_and_a_database_without_one_is_scanned_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let mark = |db: &SqliteDb| -> Option<i64> {
            db.with_writer(|c| {
                c.query_row("SELECT value FROM kv_meta WHERE name = 'version_high'", [], |r| r.get(0)).optional()
            })
            .unwrap()
        };
        {
            let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
            // Rows of a database written before the mark was kept.
            db.write(|tx| {
                tx.execute(KV_UPSERT, params!["s", "a", b"1".as_slice(), 5])?;
                tx.execute(KV_UPSERT, params!["s", "b", b"1".as_slice(), 9])?;
                tx.execute("DELETE FROM kv_meta WHERE name = 'version_high'", [])
            })
            .unwrap();
        }
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        assert_eq!((db.next_kv_version(), mark(&db)), (10, Some(9)), "scanned once, the mark recorded");
        // Written through the database's own path: the mark follows.
        db.write(|tx| apply_kv(tx, [("s", "c", Some(b"x".as_slice()), 1_500)])).unwrap();
        assert_eq!(mark(&db), Some(1_500));
        drop(db);
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.next_kv_version(), 1_501);
        // The mark alone decides (no scan): set above every row, versions go on above it.
        db.write(|tx| raise_version_high(tx, 7_000)).unwrap();
        drop(db);
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.next_kv_version(), 7_001);
    }

    #[test]
    fn a_database_open_here_cannot_be_opened_again_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        let again = SqliteDb::open(&path, SyncMode::Normal).unwrap_err();
        assert!(format!("{again:#}").contains("is open elsewhere"), "{again:#}");
        drop(db);
        SqliteDb::open(&path, SyncMode::Normal).unwrap();
    }
}
