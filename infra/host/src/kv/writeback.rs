//! The embedded store's write-back buffer: a key-value write is appended to a redo log (one
//! `write(2)`) and held in memory, and a thread of the database moves what the buffer holds into
//! SQLite in one transaction every [`FLUSH_INTERVAL_MS`].
//!
//! Why: SQLite writes every B-tree page a commit touched, whole, into its WAL. A usage batch
//! commits per shard lease and touches the pages of a hundred or more products (their totals,
//! buckets and record index), so it wrote about 20 KB for each 1.2-KB record it stored, and a
//! bill run 131 KB an account. Here a page rewritten by every write of the interval is written
//! once an interval, and reader connections, which drop their page cache whenever another
//! connection committed, keep it between flushes.
//!
//! Exactness: [`SqliteKv`](super::sqlite::SqliteKv) reads the buffer before the database (the
//! newest writes first, then the ones being flushed), and an entry leaves the buffer only after
//! the transaction that copied it committed, so a read that does not find a key here finds its
//! newest value in SQLite. Writes (and the compare-and-swaps, which read the current version
//! under it) hold the buffer's lock, which orders them: versions, log frames and the read cache's
//! refreshes all follow that order.
//!
//! Durability, the same as SQLite's `synchronous = NORMAL` before: a write returns once its
//! frame is in the log file (in the kernel's page cache), so it survives the process dying at any
//! point (kill -9); the next open replays every whole frame of the logs into SQLite before
//! anything else runs, and stops at a torn last frame (one whose write never returned). After
//! each flush the WAL is fsynced before the logs it covered are deleted, so flushed writes also
//! survive power loss; with [`SyncMode::Full`] every frame is fsynced before the write returns.
//! One difference: on power loss, writes not yet flushed and the queue's last commits (written
//! to SQLite directly) may be lost independently of each other, being in two files; `Full`
//! keeps their order.
//!
//! Log files: `<database file>-kvlog.<generation>` beside the database. A flush starts a new
//! generation and deletes the older files once its transaction committed.
//!
//! Frame: `u32 body length | u32 CRC-32 of the body | body`, body = `u16 label length | label |
//! u32 entries | entries`, entry = `u32 key length | key | u64 version | u8 0 (deleted) or 1 |
//! [u32 value length | value]`, all little-endian.

use crate::db::SyncMode;
use anyhow::Context as _;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often the flusher moves the buffer into SQLite. Longer intervals coalesce more rewrites
/// of a page into one, at the cost of memory, of longer flush transactions (a queue write waits
/// for the one in progress, off the runtime's workers) and of a longer window of writes a power
/// loss may take with `synchronous = NORMAL`. Rating rewrites each product's allowance state and
/// totals, and adds to its record index, on every batch, so each flush writes the pages of every
/// product with usage since the last one, however long the interval: at 200 ms ingestion wrote
/// 6.3–6.6 KB a record, at 1 s 3.2–3.4 KB, for 10% less host CPU a record (2026-11-28,
/// alternating rounds); 2 s gained little more (2.5–2.7 KB, 0–1% CPU). Bill runs: unchanged.
pub const FLUSH_INTERVAL_MS: u64 = 1_000;
/// Bytes the buffer may hold (keys, values and overhead, the part being flushed included); a
/// write that finds it fuller waits for a flush, so a flusher slower than the writers holds
/// them back instead of growing without bound.
pub const BUFFER_BYTES_MAX: usize = 256 << 20;
/// How long a write waits for room in a full buffer before it fails.
pub const FULL_WAIT_MAX_MS: u64 = 10_000;
/// Bytes an entry costs besides its key and value.
const ENTRY_OVERHEAD_BYTES: usize = 64;
/// Capacity of the frame buffer kept for the next write (a larger one, made for a large batch,
/// is given back).
const FRAME_KEEP_BYTES: usize = 4 << 20;
/// Longest store label a frame can carry.
const LABEL_LEN_MAX: usize = u16::MAX as usize;

/// A buffered write of a key: its value (`None`: deleted) and the version it was given (for a
/// deletion, a fresh version that is never a key's: it only raises the version floor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub value: Option<Bytes>,
    pub version: u64,
}

/// Buffered writes by store label, then key (in key order, for listings and for a flush that
/// walks each B-tree in order).
type Entries = HashMap<Box<str>, BTreeMap<Box<str>, Pending>>;

fn entry_bytes(key: &str, p: &Pending) -> usize {
    ENTRY_OVERHEAD_BYTES + key.len() + p.value.as_ref().map_or(0, Bytes::len)
}

struct State {
    /// Writes since the flush in progress started (or the last one).
    active: Entries,
    active_bytes: usize,
    /// The writes a flush is copying into SQLite; kept until that flush commits (a failed
    /// flush is retried with it before anything newer).
    flushing: Option<Arc<Entries>>,
    flushing_bytes: usize,
    /// The log file of `active`, and its generation.
    log: File,
    generation: u64,
    /// The oldest log file not yet deleted: files `oldest_log..generation` hold what is being
    /// flushed (or was flushed, if a deletion failed).
    oldest_log: u64,
    /// A write to `log` failed part-way: what follows a torn frame would never be replayed, so
    /// writes are refused until the next flush starts a new file.
    log_torn: bool,
    /// Reused to encode frames.
    frame: Vec<u8>,
}

/// The buffer of one database (every store label of it).
pub struct WriteBack {
    state: Mutex<State>,
    /// Held through a whole flush: two at once (the flusher's and a caller's) could clear the
    /// entries the other just set aside before they reach SQLite.
    flushing_lock: Mutex<()>,
    /// Signalled when a flush ends (writers waiting for room).
    flushed: Condvar,
    db_path: PathBuf,
    sync: SyncMode,
    /// Held locked while open: see [`lock_logs`].
    _lock: File,
    /// [`BUFFER_BYTES_MAX`] and [`FULL_WAIT_MAX_MS`] (tests lower them).
    bytes_max: AtomicUsize,
    full_wait_ms: AtomicU64,
}

impl std::fmt::Debug for WriteBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBack").field("db_path", &self.db_path).finish_non_exhaustive()
    }
}

/// A write found the buffer full for [`FULL_WAIT_MAX_MS`]: nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the key-value write buffer stayed full for {FULL_WAIT_MAX_MS} ms (SQLite is not keeping up, or failing: see the log); nothing was written"
)]
pub struct BufferFull;

/// One write to apply: key, value (`None`: delete) and version.
pub type Op<'a> = (&'a str, Option<&'a [u8]>, u64);

/// Held while a write decides and applies (see [`WriteBack::lock`]).
pub struct WriteGuard<'a> {
    wb: &'a WriteBack,
    state: MutexGuard<'a, State>,
}

fn lookup(state: &State, label: &str, key: &str) -> Option<Pending> {
    let find = |e: &Entries| e.get(label).and_then(|m| m.get(key)).cloned();
    find(&state.active).or_else(|| state.flushing.as_deref().and_then(find))
}

impl WriteGuard<'_> {
    /// The buffered write of `key`, if any (see [`WriteBack::get`]).
    pub fn get(&self, label: &str, key: &str) -> Option<Pending> {
        lookup(&self.state, label, key)
    }

    /// Log `ops` as one frame, then buffer them. On error nothing is buffered, and the frame, if
    /// it reached the file at all, is never replayed before something after it (see `log_torn`).
    pub fn apply(&mut self, label: &str, ops: &[Op<'_>]) -> std::io::Result<()> {
        let s = &mut *self.state;
        if ops.is_empty() {
            return Ok(());
        }
        if s.log_torn {
            return Err(std::io::Error::other("the key-value log could not be written; retry after the next flush"));
        }
        encode(&mut s.frame, label, ops)?;
        let written = s.log.write_all(&s.frame).and_then(|()| match self.wb.sync {
            SyncMode::Full => s.log.sync_data(),
            SyncMode::Normal => Ok(()),
        });
        if s.frame.capacity() > FRAME_KEEP_BYTES {
            s.frame = Vec::new();
        }
        if let Err(e) = written {
            s.log_torn = true;
            return Err(e);
        }
        let map = match s.active.get_mut(label) {
            Some(m) => m,
            None => s.active.entry(label.into()).or_default(),
        };
        for &(key, value, version) in ops {
            let p = Pending { value: value.map(Bytes::copy_from_slice), version };
            s.active_bytes += entry_bytes(key, &p);
            if let Some(old) = map.insert(key.into(), p) {
                s.active_bytes -= entry_bytes(key, &old);
            }
        }
        Ok(())
    }
}

impl WriteBack {
    /// The buffer of the database at `db_path`, logging to a new file of generation `generation`
    /// (one above every file [`read_logs`] found), holding `lock` (from [`lock_logs`]).
    pub fn open(db_path: &Path, sync: SyncMode, generation: u64, lock: File) -> anyhow::Result<WriteBack> {
        let log = create_log(db_path, generation)?;
        Ok(WriteBack {
            state: Mutex::new(State {
                active: Entries::new(),
                active_bytes: 0,
                flushing: None,
                flushing_bytes: 0,
                log,
                generation,
                oldest_log: generation,
                log_torn: false,
                frame: Vec::new(),
            }),
            flushing_lock: Mutex::new(()),
            flushed: Condvar::new(),
            db_path: db_path.to_path_buf(),
            sync,
            _lock: lock,
            bytes_max: AtomicUsize::new(BUFFER_BYTES_MAX),
            full_wait_ms: AtomicU64::new(FULL_WAIT_MAX_MS),
        })
    }

    #[cfg(test)]
    pub(crate) fn set_limits(&self, bytes_max: usize, full_wait_ms: u64) {
        self.bytes_max.store(bytes_max, Ordering::Relaxed);
        self.full_wait_ms.store(full_wait_ms, Ordering::Relaxed);
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it left at worst an entry buffered without its byte count.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The buffered write of `key` of store `label`, newest first; `None`: the database has the
    /// key's newest value (or its absence).
    pub fn get(&self, label: &str, key: &str) -> Option<Pending> {
        lookup(&self.lock_state(), label, key)
    }

    /// The buffered writes of `keys` (`None` where the database has the newest), in order.
    pub fn get_many<'k>(&self, label: &str, keys: impl IntoIterator<Item = &'k str>) -> Vec<Option<Pending>> {
        let s = self.lock_state();
        keys.into_iter().map(|k| lookup(&s, label, k)).collect()
    }

    /// The buffered keys of `label` from `from` (excluded unless `inclusive`) up to `end`
    /// (excluded; `None`: no bound), in order, as `(key, present)` — present ones until
    /// `present_max` of them were found, with every deleted one before that point.
    pub fn range(
        &self,
        label: &str,
        from: &str,
        inclusive: bool,
        end: Option<&[u8]>,
        present_max: usize,
    ) -> Vec<(String, bool)> {
        let s = self.lock_state();
        let lower = if inclusive { Bound::Included(from) } else { Bound::Excluded(from) };
        fn layer<'e>(
            entries: Option<&'e Entries>,
            label: &str,
            lower: Bound<&'e str>,
            end: Option<&'e [u8]>,
        ) -> std::iter::Peekable<impl Iterator<Item = (&'e Box<str>, &'e Pending)>> {
            entries
                .and_then(|e| e.get(label))
                .into_iter()
                .flat_map(move |m| m.range::<str, _>((lower, Bound::Unbounded)))
                .take_while(move |(k, _)| end.is_none_or(|end| k.as_bytes() < end))
                .peekable()
        }
        // A merge of the two layers in key order, the newer write of a key winning.
        let mut newer = layer(Some(&s.active), label, lower, end);
        let mut older = layer(s.flushing.as_deref(), label, lower, end);
        let mut out = Vec::new();
        let mut present = 0;
        while present < present_max {
            let next = match (newer.peek(), older.peek()) {
                (None, None) => break,
                (Some(_), None) => newer.next(),
                (None, Some(_)) => older.next(),
                (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                    std::cmp::Ordering::Less => newer.next(),
                    std::cmp::Ordering::Greater => older.next(),
                    std::cmp::Ordering::Equal => {
                        older.next();
                        newer.next()
                    }
                },
            };
            let (k, p) = next.expect("peeked");
            present += usize::from(p.value.is_some());
            out.push((k.to_string(), p.value.is_some()));
        }
        out
    }

    /// Take the lock that orders writes, first waiting while the buffer is full — at most
    /// [`FULL_WAIT_MAX_MS`], then failing with [`BufferFull`]: a flusher that cannot keep up or
    /// cannot write (a full disk) holds writers back, and never lets the buffer grow unbounded.
    pub fn lock(&self) -> Result<WriteGuard<'_>, BufferFull> {
        let state = self.lock_state();
        let (state, waited) = self
            .flushed
            .wait_timeout_while(state, Duration::from_millis(self.full_wait_ms.load(Ordering::Relaxed)), |s| {
                s.active_bytes + s.flushing_bytes > self.bytes_max.load(Ordering::Relaxed)
            })
            .unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() {
            return Err(BufferFull);
        }
        Ok(WriteGuard { wb: self, state })
    }

    /// Copy what the buffer holds into SQLite with `commit` (one transaction, the entries of
    /// each label in key order), then forget it and delete the log files it came from. Returns
    /// how many entries it copied.
    pub fn flush(&self, commit: impl FnOnce(&Entries) -> anyhow::Result<()>) -> anyhow::Result<usize> {
        let _one_at_a_time = self.flushing_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (entries, oldest, generation) = {
            let mut s = self.lock_state();
            if s.flushing.is_none() {
                if s.active.is_empty() && !s.log_torn {
                    return Ok(0);
                }
                // New writes go to a new log file from here on.
                let log = create_log(&self.db_path, s.generation + 1)?;
                s.log = log;
                s.generation += 1;
                s.log_torn = false;
                let active = std::mem::take(&mut s.active);
                s.flushing = Some(Arc::new(active));
                s.flushing_bytes = std::mem::take(&mut s.active_bytes);
            }
            (s.flushing.clone().expect("set above"), s.oldest_log, s.generation)
        };
        commit(&entries)?;
        if self.sync == SyncMode::Normal {
            // The commit did not fsync: do it once here, so that the log files can go.
            sync_wal(&self.db_path)?;
        }
        {
            let mut s = self.lock_state();
            s.flushing = None;
            s.flushing_bytes = 0;
        }
        self.flushed.notify_all();
        for g in oldest..generation {
            let path = log_path(&self.db_path, g);
            match std::fs::remove_file(&path) {
                Ok(()) => self.lock_state().oldest_log = g + 1,
                // Already gone (removed by hand): nothing left to remove.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.lock_state().oldest_log = g + 1,
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        Ok(entries.values().map(BTreeMap::len).sum())
    }

    /// Bytes the buffer holds (the part being flushed included).
    pub fn bytes(&self) -> usize {
        let s = self.lock_state();
        s.active_bytes + s.flushing_bytes
    }
}

/// Lock the logs of the database at `db_path` for this process (`<database file>-kvlog.lock`,
/// released when the returned file is closed), before reading or removing any: another process
/// (or another open of the same database in this one) replaying or deleting the logs of a
/// running host would lose its writes.
pub fn lock_logs(db_path: &Path) -> anyhow::Result<File> {
    let mut path = db_path.as_os_str().to_owned();
    path.push("-kvlog.lock");
    let path = PathBuf::from(path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("{} is open elsewhere (another process, or already in this one)", db_path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// fsync the WAL of the database at `db_path` (what was committed to it survives power loss).
pub fn sync_wal(db_path: &Path) -> anyhow::Result<()> {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    match File::open(&wal) {
        Ok(f) => f.sync_data().with_context(|| format!("fsync of {}", wal.display())),
        // No WAL: everything is in the database file, which checkpoints fsync.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("opening {}", wal.display())),
    }
}

fn log_prefix(db_path: &Path) -> String {
    format!("{}-kvlog.", db_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

fn log_path(db_path: &Path, generation: u64) -> PathBuf {
    let dir = db_path.parent().unwrap_or(Path::new("."));
    dir.join(format!("{}{generation}", log_prefix(db_path)))
}

fn create_log(db_path: &Path, generation: u64) -> anyhow::Result<File> {
    let path = log_path(db_path, generation);
    File::options().create_new(true).append(true).open(&path).with_context(|| format!("creating {}", path.display()))
}

/// The log files of the database at `db_path`, by generation.
pub fn log_files(db_path: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let dir = db_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = log_prefix(db_path);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(generation) = name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|g| g.parse().ok()) else {
            continue;
        };
        files.push((generation, entry.path()));
    }
    files.sort();
    Ok(files)
}

fn encode(frame: &mut Vec<u8>, label: &str, ops: &[Op<'_>]) -> std::io::Result<()> {
    if label.len() > LABEL_LEN_MAX {
        return Err(std::io::Error::other(format!("store label of {} bytes", label.len())));
    }
    frame.clear();
    frame.extend_from_slice(&[0; 8]);
    frame.extend_from_slice(&(label.len() as u16).to_le_bytes());
    frame.extend_from_slice(label.as_bytes());
    frame.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for &(key, value, version) in ops {
        frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
        frame.extend_from_slice(key.as_bytes());
        frame.extend_from_slice(&version.to_le_bytes());
        match value {
            None => frame.push(0),
            Some(v) => {
                frame.push(1);
                frame.extend_from_slice(&(v.len() as u32).to_le_bytes());
                frame.extend_from_slice(v);
            }
        }
    }
    let body_len = u32::try_from(frame.len() - 8).map_err(|_| std::io::Error::other("frame over 4 GiB"))?;
    let crc = crc32fast::hash(&frame[8..]);
    frame[..4].copy_from_slice(&body_len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One decoded frame: its label and entries.
pub type Frame = (String, Vec<(String, Option<Vec<u8>>, u64)>);

/// The whole frames at the start of `bytes`, in order, and the bytes they take; a torn or
/// corrupt frame ends the list.
pub fn decode(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(frame) = decode_one(bytes, &mut at) {
        frames.push(frame);
    }
    (frames, at)
}

fn decode_one(bytes: &[u8], at: &mut usize) -> Option<Frame> {
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = bytes.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(s)
    };
    let u32_at = |at: &mut usize| take(at, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let mut pos = *at;
    let body_len = u32_at(&mut pos)? as usize;
    let crc = u32_at(&mut pos)?;
    let body_start = pos;
    let body = take(&mut pos, body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut p = body_start;
    let label_len = u16::from_le_bytes(take(&mut p, 2)?.try_into().unwrap()) as usize;
    let label = String::from_utf8(take(&mut p, label_len)?.to_vec()).ok()?;
    let n = u32_at(&mut p)? as usize;
    let mut entries = Vec::with_capacity(n.min(body_len));
    for _ in 0..n {
        let key_len = u32_at(&mut p)? as usize;
        let key = String::from_utf8(take(&mut p, key_len)?.to_vec()).ok()?;
        let version = u64::from_le_bytes(take(&mut p, 8)?.try_into().unwrap());
        let value = match take(&mut p, 1)?[0] {
            0 => None,
            1 => {
                let len = u32_at(&mut p)? as usize;
                Some(take(&mut p, len)?.to_vec())
            }
            _ => return None,
        };
        entries.push((key, value, version));
    }
    if p != pos {
        return None;
    }
    *at = pos;
    Some((label, entries))
}

/// Every whole frame of the log files of `db_path`, oldest first, with the generation after the
/// newest file (where a new log starts). A file's torn last frame (a write the process died in)
/// is skipped with a warning.
pub fn read_logs(db_path: &Path) -> anyhow::Result<(Vec<Frame>, u64)> {
    let mut frames = Vec::new();
    let mut next_generation = 1;
    for (generation, path) in log_files(db_path)? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
        let (whole, used) = decode(&bytes);
        if used != bytes.len() {
            tracing::warn!(
                file = %path.display(),
                ignored_bytes = bytes.len() - used,
                "the key-value log ends in a torn frame (a write the process died in): ignored"
            );
        }
        frames.extend(whole);
        next_generation = generation + 1;
    }
    Ok((frames, next_generation))
}

/// Remove the log files of `db_path` (after [`read_logs`]' frames were committed).
pub fn remove_logs(db_path: &Path) -> anyhow::Result<()> {
    for (_, path) in log_files(db_path)? {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_or_corrupt_tail_ends_them() {
        let mut log = Vec::new();
        let mut frame = Vec::new();
        encode(&mut frame, "default", &[("a", Some(b"1"), 7), ("b", None, 8)]).unwrap();
        log.extend_from_slice(&frame);
        let first = frame.len();
        encode(&mut frame, "other", &[("é", Some(&[0xff; 300]), 9)]).unwrap();
        log.extend_from_slice(&frame);
        let (frames, used) = decode(&log);
        assert_eq!(
            frames,
            vec![
                ("default".to_string(), vec![("a".to_string(), Some(b"1".to_vec()), 7), ("b".to_string(), None, 8)]),
                ("other".to_string(), vec![("é".to_string(), Some(vec![0xff; 300]), 9)]),
            ]
        );
        assert_eq!(used, log.len());
        // Every cut inside the second frame leaves the first alone.
        for cut in first..log.len() {
            assert_eq!(decode(&log[..cut]), (frames[..1].to_vec(), first), "cut at {cut}");
        }
        // A flipped byte in the second frame's body: its checksum fails.
        let mut corrupt = log.clone();
        corrupt[first + 20] ^= 1;
        assert_eq!(decode(&corrupt).1, first);
    }
}
