//! kv-layout: how many rated usage records a second bss-host's embedded SQLite store takes, by
//! key layout, natively — no HTTP, no wasm, no parsing or rating — so the ceiling each layout
//! puts on ingestion is known before a pipeline is built on it. Run with
//! `cargo run --release -p bss-bench --bin kv-layout -- [--seconds 10] [--products 2000]
//! [--doc-bytes 1200] [--compact-bytes 300]`.
//!
//! Every layout stores batches of 1,000 records (ids as `usage-load` makes them: a random batch
//! prefix and the index) spread uniformly over `--products` products, in groups of 200 records
//! with one `set_many` each, as the usage component does; in every layout but the journal each
//! group also rewrites the totals and the bucket state of every product it touches (400 and 300
//! bytes). Layouts:
//! - `per-record`: today's keys: `usage/<id>` → the record's document (`--doc-bytes`, 1.2 KB is
//!   what a rated record with its explanation weighs as JSON) and
//!   `usageProduct/<p>/records/<period>/<id>` → `""`;
//! - `per-record, compact`: the same keys with documents of `--compact-bytes`;
//! - `batch log`: `usage/<id>` → a 12-byte locator (the dedup key), each group's documents
//!   (`--compact-bytes` each) in one value `usageLog/<seq>`, and per product touched one
//!   `usageProduct/<p>/groups/<period>/<seq>` → its records' positions in that group;
//! - `journal`: the batch log's keys without the per-product ones; the totals and bucket state
//!   of the products touched are written once a second instead of with every group (state
//!   kept in memory and checkpointed, the log being what a restart replays — the shape of an
//!   online charging system's balance journal).
//!
//! The store is bss-host's as it runs: since its write-back buffer, a `set_many` is logged and
//! buffered, and SQLite receives everything in one transaction every 200 ms (the figures of
//! earlier runs, in the README, are of a store that committed each `set_many`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bss_bench::{Args, Rng, io_bytes, ready, thousands};
use bss_host::db::{SqliteDb, SyncMode};
use bss_host::kv::KvStore;
use bss_host::kv::sqlite::SqliteKv;

/// Records in one ingested batch (the size `usage-load` posts).
const BATCH_RECORDS: usize = 1000;
/// Records per `set_many`, as the usage component groups them (its `GROUP_RECORDS_MAX`).
const GROUP_RECORDS: usize = 200;
/// The tenant prefix every key of a tenant carries.
const TENANT: &str = "t/52ae5258-b991-479e-8b7b-13af4f3cdbf9/";
const PERIOD: &str = "2026-11-01";

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    PerRecord,
    BatchLog,
    Journal,
}

struct Run {
    name: String,
    layout: Layout,
    doc_bytes: usize,
}

/// What one layout did: records/s over the run and per 1-s window, bytes written a record (WAL
/// frames and checkpoints: whole pages, so this is the write amplification) and bytes on disk a
/// record at the end.
struct Outcome {
    records: usize,
    overall_per_sec: f64,
    windows: Vec<f64>,
    written_bytes_per_record: f64,
    disk_bytes_per_record: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let seconds: u64 = args.num("seconds", 10)?;
    let products: u64 = args.num("products", 2000)?;
    let doc_bytes: usize = args.num("doc-bytes", 1200)?;
    let compact_bytes: usize = args.num("compact-bytes", 300)?;
    anyhow::ensure!(seconds > 0 && products > 0, "--seconds and --products must be positive");
    let runs = [
        Run { name: format!("per-record, {doc_bytes}-byte documents"), layout: Layout::PerRecord, doc_bytes },
        Run {
            name: format!("per-record, {compact_bytes}-byte documents"),
            layout: Layout::PerRecord,
            doc_bytes: compact_bytes,
        },
        Run {
            name: format!("batch log, {compact_bytes}-byte documents"),
            layout: Layout::BatchLog,
            doc_bytes: compact_bytes,
        },
        Run {
            name: format!("journal, {compact_bytes}-byte documents, state once a second"),
            layout: Layout::Journal,
            doc_bytes: compact_bytes,
        },
    ];
    println!(
        "bss-host's SQLite store, one thread, {seconds} s a layout, batches of {BATCH_RECORDS} records over {products} \
         products, one set_many per {GROUP_RECORDS} records"
    );
    println!(
        "| layout | records/s, overall | median of 1-s windows (min–max) | bytes written a record | disk bytes a record |"
    );
    println!("|---|---:|---:|---:|---:|");
    for run in &runs {
        let dir = tempfile_dir(&run.name)?;
        let o = measure(&dir, run, products, Duration::from_secs(seconds))?;
        std::fs::remove_dir_all(&dir)?;
        let mut w = o.windows.clone();
        w.sort_by(f64::total_cmp);
        let (median, min, max) = if w.is_empty() { (0.0, 0.0, 0.0) } else { (w[w.len() / 2], w[0], w[w.len() - 1]) };
        println!(
            "| {} | {} ({} records) | {} ({}–{}) | {} | {:.0} |",
            run.name,
            thousands(o.overall_per_sec),
            o.records,
            thousands(median),
            thousands(min),
            thousands(max),
            thousands(o.written_bytes_per_record),
            o.disk_bytes_per_record
        );
    }
    Ok(())
}

/// A fresh folder for one layout's database.
fn tempfile_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let dir = std::env::temp_dir().join(format!("kv-layout-{}-{slug}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn measure(dir: &Path, run: &Run, products: u64, duration: Duration) -> anyhow::Result<Outcome> {
    let db = Arc::new(SqliteDb::open(&dir.join("bss.sqlite"), SyncMode::Normal)?);
    let kv = KvStore::Sqlite(Arc::new(SqliteKv::new(db, "default")));
    let mut ids = Rng(7);
    let mut w = Writer {
        layout: run.layout,
        rng: Rng(42),
        product_ids: (0..products).map(|_| uuid_like(&mut ids)).collect(),
        doc: vec![b'x'; run.doc_bytes],
        checkpoint: BTreeSet::new(),
    };
    let (mut records, mut seq) = (0usize, 0u64);
    let mut windows = Vec::new();
    let written_before = written_bytes()?;
    let start = Instant::now();
    let (mut window_start, mut window_records) = (start, 0usize);
    while start.elapsed() < duration {
        let batch_prefix = format!("{:07x}", w.rng.below(1 << 28));
        for group in 0..BATCH_RECORDS / GROUP_RECORDS {
            seq += 1;
            let entries = w.group(&batch_prefix, group, seq);
            assert!(entries.len() <= bss_host::kv::BATCH_MAX, "a group must fit one set_many");
            ready(kv.set_many(&entries))?;
        }
        records += BATCH_RECORDS;
        window_records += BATCH_RECORDS;
        if window_start.elapsed() >= Duration::from_secs(1) {
            w.checkpoint(&kv)?;
            windows.push(window_records as f64 / window_start.elapsed().as_secs_f64());
            (window_start, window_records) = (Instant::now(), 0);
        }
    }
    // The journal's last checkpoint counts in its time.
    w.checkpoint(&kv)?;
    let overall_per_sec = records as f64 / start.elapsed().as_secs_f64();
    let written = written_bytes()? - written_before;
    drop(kv);
    let disk_bytes: u64 = std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    let per_record = |bytes: u64| bytes as f64 / records.max(1) as f64;
    Ok(Outcome {
        records,
        overall_per_sec,
        windows,
        written_bytes_per_record: per_record(written),
        disk_bytes_per_record: per_record(disk_bytes),
    })
}

/// Makes the writes of one layout.
struct Writer {
    layout: Layout,
    rng: Rng,
    product_ids: Vec<String>,
    /// A stored record's document.
    doc: Vec<u8>,
    /// Products whose state the journal layout has yet to checkpoint.
    checkpoint: BTreeSet<String>,
}

impl Writer {
    /// Writes the state of the products the journal layout touched since its last checkpoint.
    fn checkpoint(&mut self, kv: &KvStore) -> anyhow::Result<()> {
        let state: Vec<_> = std::mem::take(&mut self.checkpoint).iter().flat_map(|p| state_entries(p)).collect();
        for chunk in state.chunks(bss_host::kv::BATCH_MAX) {
            ready(kv.set_many(chunk))?;
        }
        Ok(())
    }

    /// The keys and values one group of records writes (the records `group * GROUP_RECORDS..`
    /// of the batch whose ids start with `batch_prefix`; `seq` numbers the group).
    fn group(&mut self, batch_prefix: &str, group: usize, seq: u64) -> Vec<(String, Vec<u8>)> {
        let mut entries = Vec::with_capacity(3 * GROUP_RECORDS);
        let mut touched: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut log = Vec::with_capacity(GROUP_RECORDS * self.doc.len());
        for i in 0..GROUP_RECORDS {
            let id = format!("{batch_prefix}-{}", group * GROUP_RECORDS + i);
            let product = self.rng.below(self.product_ids.len() as u64) as usize;
            if self.layout == Layout::PerRecord {
                let p = &self.product_ids[product];
                entries.push((format!("{TENANT}usage/{id}"), self.doc.clone()));
                entries.push((format!("{TENANT}usageProduct/{p}/records/{PERIOD}/{id}"), Vec::new()));
                touched.entry(product).or_default();
            } else {
                let locator = [seq.to_be_bytes().as_slice(), (i as u32).to_be_bytes().as_slice()].concat();
                entries.push((format!("{TENANT}usage/{id}"), locator));
                log.extend_from_slice(&self.doc);
                touched.entry(product).or_default().extend_from_slice(&(i as u16).to_be_bytes());
            }
        }
        if self.layout != Layout::PerRecord {
            entries.push((format!("{TENANT}usageLog/{seq:012}"), log));
        }
        for (product, positions) in touched {
            let p = &self.product_ids[product];
            match self.layout {
                Layout::Journal => {
                    self.checkpoint.insert(p.clone());
                }
                Layout::PerRecord => entries.extend(state_entries(p)),
                Layout::BatchLog => {
                    entries.extend(state_entries(p));
                    entries.push((format!("{TENANT}usageProduct/{p}/groups/{PERIOD}/{seq:012}"), positions));
                }
            }
        }
        entries
    }
}

/// A product's period totals and allowance buckets, at about the size the usage component
/// stores them.
fn state_entries(product: &str) -> [(String, Vec<u8>); 2] {
    [
        (format!("{TENANT}usageProduct/{product}/totals/{PERIOD}"), vec![b't'; 400]),
        (format!("{TENANT}usageProduct/{product}/state/{PERIOD}"), vec![b's'; 300]),
    ]
}

/// A random id shaped like a UUID (36 characters), as product ids are.
fn uuid_like(r: &mut Rng) -> String {
    let (a, b) = (r.next_u64(), r.next_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Bytes this process has written through system calls so far: what SQLite wrote to its WAL
/// and, checkpointing, to the database file.
fn written_bytes() -> anyhow::Result<u64> {
    io_bytes("self").map(|(_, written)| written).ok_or_else(|| anyhow::anyhow!("cannot read /proc/self/io"))
}
