//! The embedded SQLite database: one file under the data folder holds the key-value stores and
//! the queue. One writer connection (SQLite allows one writer at a time anyway, so a mutex is
//! cheaper than `SQLITE_BUSY` retries) and a few reader connections that WAL lets run beside it;
//! reads take the writer connection when it is idle (its page cache survives commits; see
//! [`SqliteDb::read`]).
//!
//! Key-value rows are kept in a rowid table found through a unique index on `(store, key)`
//! ([`KvLayout::Indexed`]); databases created before 2026-11-28 clustered them in a
//! `WITHOUT ROWID` table, still served, and rewritten by [`upgrade`] (`bss-host upgrade-store`).
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
//! may roll back, never half-apply. Key-value writes flushed (every second, the WAL fsynced) also
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

/// The key-value table of a new database: rows in a rowid table, found through a unique index on
/// `(store, key)` ([`KvLayout::Indexed`], with [`kv_index`]).
const KV_TABLE: &str = "
CREATE TABLE kv (
    store   TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL
);
";

/// The statement creating [`KV_TABLE`]'s index in the database `schema` (`main`, or an attached
/// one).
fn kv_index(schema: &str) -> String {
    format!("CREATE UNIQUE INDEX {schema}.kv_key ON kv (store, key)")
}

/// The key-value table of databases created before 2026-11-28 ([`KvLayout::Clustered`]): kept
/// so that tests can make one; such a database still works, and `bss-host upgrade-store`
/// rewrites it ([`upgrade`]).
pub const KV_TABLE_CLUSTERED: &str = "
CREATE TABLE kv (
    store   TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;
";

/// How a database keeps its key-value rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvLayout {
    /// A rowid table beside a unique index on `(store, key)`: how a database is created. A
    /// lookup walks the index, whose interior pages hold only keys (about 80 a page) and stay
    /// in the page cache, then reads the row; values up to a page stay in their leaf.
    Indexed,
    /// A `WITHOUT ROWID` table clustered on `(store, key)`: every interior page of its b-tree
    /// holds whole rows (SQLite's advice is rows under a twentieth of a page; a rated usage
    /// record is about 530 bytes, a bill 4.5 KB), so the tree is deep and wide, each lookup
    /// read 6–10 pages from the kernel (~950 KB an account in a bill run of 100,000 accounts
    /// against ~80 KB indexed), and values over ~2 KB spilled to overflow pages.
    Clustered,
}

/// The layout of the key-value table of `conn`'s database, `None` before it has one.
pub fn kv_layout(conn: &Connection) -> rusqlite::Result<Option<KvLayout>> {
    let sql: Option<String> = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'kv'", [], |r| r.get(0))
        .optional()?;
    Ok(sql.map(
        |s| if s.to_ascii_uppercase().contains("WITHOUT ROWID") { KvLayout::Clustered } else { KvLayout::Indexed },
    ))
}

/// Every table but the key-value one ([`KV_TABLE`], created on a new database).
const SCHEMA: &str = "
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
    layout: KvLayout,
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
        let layout = match kv_layout(&writer)? {
            Some(layout) => layout,
            None => {
                // One transaction: a table without its index would refuse every upsert.
                in_transaction(&mut writer, |tx| {
                    tx.execute_batch(KV_TABLE)?;
                    tx.execute_batch(&kv_index("main"))
                })
                .context("creating the key-value table")?;
                KvLayout::Indexed
            }
        };
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
        Ok(SqliteDb { shared, layout, _flusher: flusher, _checkpointer: checkpointer })
    }

    /// How this database keeps its key-value rows.
    pub fn kv_layout(&self) -> KvLayout {
        self.layout
    }
}

/// What [`upgrade`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgraded {
    /// The database had the current layout already: nothing was written.
    Current,
    /// The database was rewritten with the current layout, every row kept.
    Rewritten {
        /// Key-value rows copied.
        kv_rows: u64,
        /// Rows of the other tables (the queue's, the key-value metadata) copied.
        other_rows: u64,
    },
}

/// Rewrites the database at `path` with the current key-value layout ([`KvLayout::Indexed`]),
/// keeping every row of every table (key-value versions, the queue's messages and deliveries,
/// the sequence their order comes from), or changes nothing when it has that layout already.
/// No host may have it open: [`SqliteDb::open`] refuses a database open elsewhere, and the
/// caller holds the data folder's lock so that none starts meanwhile.
///
/// Crash-safe at every point: the new file is built beside the database (`<name>.upgrade`, a
/// leftover of an interrupted run is deleted first), synced, checked (row counts equal), and
/// only then renamed over it — an atomic replace, so the database is the old one whole or the
/// new one whole. It needs the database's size again in free disk, and reads and writes it once
/// (9.3 s for a database of 2.8 GB, 6.8 million rows, on a 2-core machine).
pub fn upgrade(path: &Path) -> anyhow::Result<Upgraded> {
    let name = path.file_name().and_then(|n| n.to_str()).context("the database path names no file")?;
    let next = path.with_file_name(format!("{name}.upgrade"));
    // Opening replays the key-value log, so the copy has every write.
    let db = SqliteDb::open_with(path, SyncMode::Normal, None)?;
    if db.kv_layout() == KvLayout::Indexed {
        return Ok(Upgraded::Current);
    }
    match std::fs::remove_file(&next) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", next.display()));
        }
        _ => {}
    }
    {
        // Created here, not by the ATTACH below: the page size must be set before any table.
        let c = Connection::open(&next).with_context(|| format!("creating {}", next.display()))?;
        c.pragma_update(None, "page_size", PAGE_SIZE_BYTES)?;
        c.execute_batch(SCHEMA)?;
        // The index before the rows: they come in key order, so each lands at its right edge,
        // where indexing them afterwards would sort every key through temporary files (about a
        // fifth of the database).
        c.execute_batch(KV_TABLE)?;
        c.execute_batch(&kv_index("main"))?;
    }
    let copied = db.with_writer(|w| -> anyhow::Result<Upgraded> {
        w.execute("ATTACH DATABASE ?1 AS up", [next.to_str().context("the database path is not UTF-8")?])?;
        let copied = copy_into_attached(w);
        w.execute("DETACH DATABASE up", [])?;
        copied
    });
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&next);
            return Err(e.context("copying into the upgraded database (the database is unchanged)"));
        }
    };
    // Closing checkpoints the WAL into the database and removes it (and the key-value log).
    drop(db);
    let wal = path.with_file_name(format!("{name}-wal"));
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) || !writeback::read_logs(path)?.0.is_empty() {
        let _ = std::fs::remove_file(&next);
        anyhow::bail!(
            "{} still has a WAL or key-value log after closing (was it opened meanwhile?); left unchanged",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&wal);
    std::fs::File::open(&next)?.sync_all()?;
    std::fs::rename(&next, path).with_context(|| format!("replacing {} with {}", path.display(), next.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(copied)
}

/// [`upgrade`]'s copy, on a connection with the new file attached as `up`: every table, the
/// key-value rows in key order; row counts checked before it commits.
fn copy_into_attached(w: &mut Connection) -> anyhow::Result<Upgraded> {
    // A file nobody uses yet: a crash leaves it to be deleted, so no journal is needed.
    w.execute_batch("PRAGMA up.journal_mode = OFF; PRAGMA up.synchronous = OFF;")?;
    let tx = w.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let tables: Vec<String> = tx
        .prepare("SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut kv_rows, mut other_rows) = (0, 0);
    for table in &tables {
        let columns: Vec<String> = tx
            .prepare(&format!("PRAGMA main.table_info(\"{table}\")"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        let columns = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let order = if table == "kv" { " ORDER BY store, key" } else { "" };
        let copied = tx.execute(
            &format!("INSERT INTO up.\"{table}\" ({columns}) SELECT {columns} FROM main.\"{table}\"{order}"),
            [],
        )?;
        let count = |schema: &str| -> rusqlite::Result<usize> {
            tx.query_row(&format!("SELECT count(*) FROM {schema}.\"{table}\""), [], |r| r.get(0))
        };
        let (from, to) = (count("main")?, count("up")?);
        anyhow::ensure!(
            from == copied && to == copied,
            "table {table}: {from} rows, {copied} copied, {to} in the copy"
        );
        if table == "kv" {
            kv_rows = copied as u64;
        } else {
            other_rows += copied as u64;
        }
    }
    // AUTOINCREMENT's high marks (the queue's message order goes on above them).
    let has_sequence = |schema: &str| -> rusqlite::Result<bool> {
        tx.query_row(&format!("SELECT count(*) FROM {schema}.sqlite_schema WHERE name = 'sqlite_sequence'"), [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })
    };
    if has_sequence("main")? && has_sequence("up")? {
        tx.execute("DELETE FROM up.sqlite_sequence", [])?;
        tx.execute("INSERT INTO up.sqlite_sequence (name, seq) SELECT name, seq FROM main.sqlite_sequence", [])?;
    }
    tx.commit()?;
    Ok(Upgraded::Rewritten { kv_rows, other_rows })
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

    /// The query plan of `sql` on `db`'s writer, one line per step.
    fn plan(db: &SqliteDb, sql: &str) -> String {
        db.with_writer(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let steps: Vec<String> =
                stmt.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
            steps.join("\n")
        })
    }

    #[test]
    fn a_new_database_finds_a_key_through_its_index_and_lists_keys_from_the_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("bss.sqlite"), SyncMode::Normal).unwrap();
        assert_eq!(db.kv_layout(), KvLayout::Indexed);
        let get = plan(&db, "SELECT value, version FROM kv WHERE store = 's' AND key = 'k'");
        assert!(get.contains("USING INDEX kv_key (store=? AND key=?)"), "{get}");
        let list = plan(&db, "SELECT key FROM kv WHERE store = 's' AND key > 'a' ORDER BY key LIMIT 10");
        assert!(list.contains("USING COVERING INDEX kv_key"), "{list}");
        assert!(!list.contains("TEMP B-TREE"), "listed in index order, not sorted: {list}");
        // Upserts find their row through the index too: a second write replaces, never adds.
        db.write(|tx| apply_kv(tx, [("s", "k", Some(b"1".as_slice()), 1), ("s", "k", Some(b"2".as_slice()), 2)]))
            .unwrap();
        let rows: Vec<(Vec<u8>, i64)> = db
            .read(|c| {
                c.prepare("SELECT value, version FROM kv")?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
            })
            .unwrap();
        assert_eq!(rows, [(b"2".to_vec(), 2)]);
    }

    /// Every row of every table of the database at `path` (the key-value rows by key), as text.
    fn dump(path: &Path) -> Vec<String> {
        let c = Connection::open(path).unwrap();
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut out = Vec::new();
        for t in tables {
            let n = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap().column_count();
            let order = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
            let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\" ORDER BY {order}")).unwrap();
            let rows = stmt
                .query_map([], |r| {
                    let cells: Vec<String> =
                        (0..n).map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap())).collect();
                    Ok(format!("{t}: {}", cells.join(" | ")))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        out
    }

    #[tokio::test]
    async fn a_database_of_the_clustered_layout_works_and_upgrade_rewrites_it_keeping_every_row() {
        use crate::queue::{NewMessage, sqlite::SqliteQueue};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        // A database as created before 2026-11-28 (and at SQLite's old default page size).
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!("PRAGMA page_size = 4096; {KV_TABLE_CLUSTERED}"))
            .unwrap();
        let db = Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap());
        assert_eq!(db.kv_layout(), KvLayout::Clustered);
        // Written through the host's own paths: values of every size (over a page too), two
        // labels, a deleted key (it raises the version floor), and queued messages, one of them
        // delivered and done.
        let kv = crate::kv::sqlite::SqliteKv::new(db.clone(), "default");
        let other = crate::kv::sqlite::SqliteKv::new(db.clone(), "other");
        for i in 0..300usize {
            kv.set(&format!("k/{i:04}"), &vec![b'a' + (i % 26) as u8; i * 37]).await.unwrap();
        }
        other.set("k/0001", b"elsewhere").await.unwrap();
        kv.delete("k/0007").await.unwrap();
        let queue = SqliteQueue::new(db.clone());
        let consumers = ["worker".to_string()];
        for i in 0..5 {
            let msg = NewMessage {
                id: format!("m{i}"),
                subject: "s".into(),
                body: vec![i as u8; 10],
                ordering_key: Some("o".into()),
            };
            assert!(queue.publish(&msg, &consumers).await.unwrap());
        }
        let first = queue.claim("worker", 1, Duration::from_secs(60)).await.unwrap();
        queue.complete(&first[0], &crate::queue::Outcome::Ack).await.unwrap();
        db.flush_kv().unwrap();
        let in_use: i64 = db.read(|c| c.query_row("SELECT max(version) FROM kv", [], |r| r.get(0))).unwrap();
        drop((kv, other, queue));
        let db = Arc::into_inner(db).expect("the only handle");
        drop(db);
        let before = dump(&path);
        assert!(before.len() > 300, "{}", before.len());

        // A leftover of an interrupted upgrade is replaced, not trusted.
        std::fs::write(dir.path().join("bss.sqlite.upgrade"), b"half a file").unwrap();
        let done = upgrade(&path).unwrap();
        assert!(matches!(done, Upgraded::Rewritten { kv_rows: 300, .. }), "{done:?}");
        assert!(!dir.path().join("bss.sqlite.upgrade").exists());
        assert_eq!(dump(&path), before, "every row of every table, as it was");

        let db = Arc::new(SqliteDb::open(&path, SyncMode::Normal).unwrap());
        assert_eq!(db.kv_layout(), KvLayout::Indexed);
        let get = plan(&db, "SELECT value, version FROM kv WHERE store = 's' AND key = 'k'");
        assert!(get.contains("USING INDEX kv_key (store=? AND key=?)"), "{get}");
        let page_size: i64 = db.read(|c| c.query_row("PRAGMA page_size", [], |r| r.get(0))).unwrap();
        assert_eq!(page_size, PAGE_SIZE_BYTES);
        assert!(db.next_kv_version() > in_use as u64 + 1, "versions go on above every one in use and deleted");
        let kv = crate::kv::sqlite::SqliteKv::new(db.clone(), "default");
        assert_eq!(kv.get("k/0299").await.unwrap(), Some(vec![b'a' + (299 % 26) as u8; 299 * 37]));
        assert_eq!(kv.get("k/0007").await.unwrap(), None);
        // The queue goes on where it was: the next message of the key, then one published now
        // after it (its sequence above the copied ones).
        let queue = SqliteQueue::new(db.clone());
        let late =
            NewMessage { id: "m5".into(), subject: "s".into(), body: Vec::new(), ordering_key: Some("o".into()) };
        assert!(queue.publish(&late, &consumers).await.unwrap());
        assert!(!queue.publish(&first_message(&first), &consumers).await.unwrap(), "still remembered as published");
        let mut order = Vec::new();
        while let Some(d) = queue.claim("worker", 1, Duration::from_secs(60)).await.unwrap().pop() {
            order.push(d.message_id.clone());
            queue.complete(&d, &crate::queue::Outcome::Ack).await.unwrap();
        }
        assert_eq!(order, ["m1", "m2", "m3", "m4", "m5"]);
        drop((kv, queue));
        drop(Arc::into_inner(db).expect("the only handle"));
        assert_eq!(upgrade(&path).unwrap(), Upgraded::Current, "a second upgrade finds nothing to do");
    }

    /// The message a delivery came from, to publish again.
    fn first_message(d: &[crate::queue::Delivery]) -> crate::queue::NewMessage {
        crate::queue::NewMessage {
            id: d[0].message_id.clone(),
            subject: d[0].subject.clone(),
            body: d[0].body.clone(),
            ordering_key: d[0].ordering_key.clone(),
        }
    }

    #[test]
    fn an_upgrade_that_cannot_copy_a_table_leaves_the_database_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bss.sqlite");
        Connection::open(&path).unwrap().execute_batch(KV_TABLE_CLUSTERED).unwrap();
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        db.write(|tx| apply_kv(tx, [("s", "k", Some(b"v".as_slice()), 1)])).unwrap();
        // A table this version does not know: the copy has nowhere to put it.
        db.write_one(|c| c.execute_batch("CREATE TABLE extra (x); INSERT INTO extra VALUES (1);")).unwrap();
        drop(db);
        let before = dump(&path);
        let e = upgrade(&path).unwrap_err();
        assert!(format!("{e:#}").contains("extra"), "{e:#}");
        assert!(format!("{e:#}").contains("the database is unchanged"), "{e:#}");
        assert_eq!(dump(&path), before);
        assert!(!dir.path().join("bss.sqlite.upgrade").exists());
        let db = SqliteDb::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.kv_layout(), KvLayout::Clustered);
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
