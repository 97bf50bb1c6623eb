//! usage-load: end-to-end usage ingestion through bss-host (HTTP batches of usage records: dedup,
//! guiding, rating, persisted in the embedded store) and the same pipeline natively, on the same
//! generated records. `benches/usage-e2e.sh` builds everything, starts the host and runs it.
//!
//! Subcommands:
//! - `setup --url URL --admin-key KEY --state FILE [--subscribers 2000] [--customers 1]
//!   [--setup-concurrency 8]`: a tenant (admin API), the sample catalog (`importCatalog`),
//!   customers and, per subscriber, a billing account (Paris, cycle day 1, EUR) and a `mobile-m`
//!   inventory product with MSISDN `+3361xxxxxxx` (indexed for guiding); writes the tenant's key
//!   and the subscriber count to FILE.
//! - `load --state FILE [--seconds 20 | --batches B] [--concurrency 4] [--batch-size 1000]
//!   [--duplicates-percent 0] [--window-ms 1000] [--label L] [--summary OUT.json]`: posts batches
//!   to `POST /tmf-api/usageManagement/v4/usageBatch` with C keep-alive connections (one thread
//!   each), checks every answer (`accepted`, `duplicates` exactly as sent, nothing rejected,
//!   recycled or conflicting), prints records/s every window and a summary.
//! - `run --url URL --admin-key KEY [setup and load options]`: `setup` then `load`.
//! - `native [--store mem|sqlite] [--data DIR] [--subscribers 2000] [--customers 1]
//!   [--seconds 20 | --batches B] [--batch-size 1000] [--duplicates-percent 0] [--label L]
//!   [--summary OUT.json]`: the same setup written through the same kit and commerce code
//!   (catalog upserts, customer, accounts, products through `InventoryHooks`, which indexes
//!   subscribers), then, on one thread, per batch what the `usageBatch` handler does after
//!   authentication — parse the JSON body, `parse_json_batch`, `ingest::Pipeline::ingest` (the
//!   usage component's `ingest.rs` and `model.rs`, compiled into this binary), serialise the
//!   report — over `bss_kit::kv::MemKv` or over bss-host's own SQLite KV store
//!   (`bss_host::kv::KvStore`, called directly instead of through wasi:keyvalue).
//! - `table SUMMARY.json...`: one markdown table of summaries.
//!
//! Records (deterministic per run tag and sequence number, so a duplicate is byte-identical):
//! 50% voice (45% to French mobiles, 40% to French fixed numbers, 15% international: UK, DE,
//! US), 25% SMS, 25% data (APN `internet`, 1 kB to 5 MB); 3% roaming (EU mostly, some World
//! zone 1); subscribers in national (`06…`) or international form; start times 80% in the
//! current month, 20% in the previous one. With `--duplicates-percent P` every batch re-sends
//! P% of records already acknowledged, which must come back as `duplicates`.
//!
//! Throughput windows (`--window-ms`, default 1 s): each batch's records are spread evenly over
//! the time it was in flight (sent to answered), so a window counts the records processed during
//! it; median and min-max leave out the first window (warm-up) and every window not over before
//! the last batch was sent (the tail, when connections stop one by one). Natively the windows
//! are of pipeline time only: generating the JSON of a batch (the load generator's work) is not
//! counted. The live lines printed while a run goes count the records answered in each window.

// The host's allocator, so that the baseline differs from bss-host only by WebAssembly.
#[global_allocator]
static GLOBAL: bss_host::Allocator = bss_host::Allocator;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use bss_bench::{Args, Measured, Rng, mix, thousands, usage_mix};

/// The usage component's pipeline and storage model, compiled in from the very files the
/// component builds (`ingest.rs` needs only `crate::model` of its crate).
#[allow(dead_code, clippy::all)]
#[path = "../../../functions/usage/src/ingest.rs"]
mod ingest;
#[allow(dead_code, clippy::all)]
#[path = "../../../functions/usage/src/model.rs"]
mod model;

/// The sample catalog, as the HTTP setup imports it.
const SAMPLE_CATALOG: &str = include_str!("../../../infra/samples/catalog.json");
const USAGE_BATCH: &str = "/tmf-api/usageManagement/v4/usageBatch";
/// Start of the products (the sample tariffs are valid from 2026-01-01).
const PRODUCT_START: &str = "2026-01-01T00:00:00Z";

// ---------------------------------------------------------------------------------------------
// Records

/// The MSISDN of subscriber `i`, E.164.
fn msisdn(i: usize) -> String {
    format!("+3361{i:07}")
}

/// Generates the records of one run.
#[derive(Clone)]
struct Gen {
    tag: String,
    salt: u64,
    subscribers: usize,
    /// Start times: [from, to) of the current month and of the previous one (Unix seconds).
    current: (i64, i64),
    previous: (i64, i64),
}

impl Gen {
    fn new(tag: &str, subscribers: usize, now: DateTime<Utc>) -> anyhow::Result<Gen> {
        let month = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .ok_or_else(|| anyhow!("start of month"))?;
        let prev = if now.month() == 1 {
            Utc.with_ymd_and_hms(now.year() - 1, 12, 1, 0, 0, 0)
        } else {
            Utc.with_ymd_and_hms(now.year(), now.month() - 1, 1, 0, 0, 0)
        }
        .single()
        .ok_or_else(|| anyhow!("start of previous month"))?;
        let product_start: DateTime<Utc> = PRODUCT_START.parse()?;
        if prev < product_start {
            bail!("the previous month starts before the products ({PRODUCT_START}): the clock says {now}");
        }
        // Two hours off the month boundaries: the accounts bill in Europe/Paris (UTC+1/+2).
        let current = (month.timestamp() + 7_200, now.timestamp() - 600);
        let previous = (prev.timestamp() + 7_200, month.timestamp() - 7_200);
        let current = if current.1 - current.0 < 3_600 { previous } else { current };
        Ok(Gen {
            tag: tag.to_string(),
            salt: mix(tag.bytes().fold(7, |h, b| mix(h ^ u64::from(b)))),
            subscribers,
            current,
            previous,
        })
    }

    /// Appends record `seq` as a JSON object.
    fn record(&self, seq: u64, out: &mut String) {
        let mut r = Rng(self.salt ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let sub = r.below(self.subscribers as u64) as usize;
        let subscriber = if r.below(100) < 30 { format!("0{}", &msisdn(sub)[3..]) } else { msisdn(sub) };
        let (from, to) = if r.below(100) < 80 { self.current } else { self.previous };
        let start = DateTime::from_timestamp(from + r.below((to - from).max(1) as u64) as i64, 0).unwrap_or_default();
        let start = start.format("%Y-%m-%dT%H:%M:%SZ");
        let _ = write!(out, r#"{{"recordId":"{}-{seq}","subscriber":"{subscriber}","startTime":"{start}","#, self.tag);
        let (measured, visited) = usage_mix(&mut r);
        let _ = match measured {
            Measured::Voice { secs, called } => {
                write!(out, r#""service":"voice","duration":{secs},"calledNumber":"{called}""#)
            }
            Measured::Sms { called } => write!(out, r#""service":"sms","events":1,"calledNumber":"{called}""#),
            Measured::Data { bytes } => write!(out, r#""service":"data","volume":{bytes},"apn":"internet""#),
        };
        if let Some(v) = visited {
            let _ = write!(out, r#","visitedNetwork":"{v}""#);
        }
        out.push('}');
    }

    /// A JSON array of records `seqs`.
    fn batch(&self, seqs: &[u64]) -> String {
        let mut out = String::with_capacity(seqs.len() * 200 + 2);
        out.push('[');
        for (i, s) in seqs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.record(*s, &mut out);
        }
        out.push(']');
        out
    }
}

/// The sequence numbers of one batch: `fresh` new ones from `next` (`first..first + fresh`) and
/// `dups` already acknowledged ones (from `done`, ranges of acknowledged sequence numbers)
/// spread among them: `(seqs, first, fresh, dups)`.
fn plan_batch(
    size: usize,
    dup_percent: f64,
    next: &AtomicU64,
    done: &Mutex<Vec<(u64, u64)>>,
    rng: &mut Rng,
) -> (Vec<u64>, u64, usize, usize) {
    let wanted_dups = ((size as f64) * dup_percent / 100.0).round() as usize;
    let mut dups = Vec::new();
    if wanted_dups > 0 {
        let done = done.lock().expect("lock");
        let total: u64 = done.iter().map(|(_, n)| n).sum();
        if total >= wanted_dups as u64 * 4 {
            let mut seen = HashSet::new();
            while dups.len() < wanted_dups {
                let mut k = rng.below(total);
                for (s, n) in done.iter() {
                    if k < *n {
                        if seen.insert(s + k) {
                            dups.push(s + k);
                        }
                        break;
                    }
                    k -= n;
                }
            }
        }
    }
    let fresh = size - dups.len();
    let first = next.fetch_add(fresh as u64, Ordering::Relaxed);
    let mut seqs: Vec<u64> = (first..first + fresh as u64).collect();
    let n_dups = dups.len();
    for (i, d) in dups.into_iter().enumerate() {
        let at = ((i + 1) * seqs.len() / (n_dups + 1)).min(seqs.len());
        seqs.insert(at, d);
    }
    (seqs, first, fresh, n_dups)
}

// ---------------------------------------------------------------------------------------------
// Results

/// The answer of `usageBatch`.
#[derive(Debug, Deserialize)]
struct Report {
    received: usize,
    accepted: usize,
    duplicates: usize,
    conflicts: usize,
    rejected: usize,
    recycled: usize,
    #[serde(default)]
    records: Vec<Value>,
}

/// One answered batch.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// Seconds since the start of the load when the batch was sent.
    started: f64,
    /// Seconds since the start of the load when the answer arrived.
    at: f64,
    records: usize,
    accepted: usize,
    latency_ms: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    label: String,
    engine: String,
    subscribers: usize,
    concurrency: usize,
    batch_size: usize,
    duplicates_percent: f64,
    batches: usize,
    records: usize,
    accepted: usize,
    duplicates: usize,
    seconds: f64,
    overall_per_sec: f64,
    window_ms: u64,
    windows: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    failed_batches: usize,
    unexpected_batches: usize,
    problems: Vec<String>,
    setup_seconds: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summarise(base: Summary, done: &[Done], window_ms: u64) -> Summary {
    // Each batch's records are spread evenly over the time it was in flight, so a window counts
    // what was processed during it (batches of 1,000 would otherwise quantise the rate). Only
    // windows that end before the last batch was sent count: the load is complete in them.
    let w = window_ms as f64 / 1000.0;
    let last = done.iter().map(|d| d.at).fold(0.0, f64::max);
    let horizon = done.iter().map(|d| d.started).fold(0.0, f64::max);
    let full = (horizon / w).floor() as usize;
    let mut per = vec![0.0f64; full];
    for d in done {
        let span = (d.at - d.started).max(1e-9);
        for (k, n) in per.iter_mut().enumerate() {
            let (lo, hi) = (k as f64 * w, (k + 1) as f64 * w);
            let overlap = (hi.min(d.at) - lo.max(d.started)).max(0.0);
            *n += d.records as f64 * overlap / span;
        }
    }
    let skip = usize::from(full >= 3);
    let windows: Vec<f64> = per[skip..].iter().map(|n| n / w).collect();
    let mut sorted = windows.clone();
    sorted.sort_by(f64::total_cmp);
    let mut lat: Vec<f64> = done.iter().map(|d| d.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let records: usize = done.iter().map(|d| d.records).sum();
    Summary {
        batches: done.len(),
        records,
        accepted: done.iter().map(|d| d.accepted).sum(),
        seconds: last,
        overall_per_sec: if last > 0.0 { records as f64 / last } else { 0.0 },
        window_ms,
        median: percentile(&sorted, 0.5),
        min: sorted.first().copied().unwrap_or(0.0),
        max: sorted.last().copied().unwrap_or(0.0),
        windows,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        ..base
    }
}

fn print_summary(s: &Summary) {
    println!(
        "{}: {} batches, {} records ({} accepted, {} duplicates) in {:.1} s = {}/s overall",
        s.label,
        s.batches,
        s.records,
        s.accepted,
        s.duplicates,
        s.seconds,
        thousands(s.overall_per_sec)
    );
    println!(
        "{}: records/s per {} ms window: median {}, min-max {}-{} ({} windows); batch latency p50 {:.1} ms, p99 {:.1} ms",
        s.label,
        s.window_ms,
        thousands(s.median),
        thousands(s.min),
        thousands(s.max),
        s.windows.len(),
        s.latency_p50_ms,
        s.latency_p99_ms
    );
    if s.failed_batches + s.unexpected_batches > 0 {
        println!("{}: {} failed batches, {} unexpected answers", s.label, s.failed_batches, s.unexpected_batches);
    }
    for p in &s.problems {
        println!("{}: problem: {p}", s.label);
    }
}

fn write_summary(args: &Args, s: &Summary) -> anyhow::Result<()> {
    if let Some(path) = args.str("summary") {
        std::fs::write(path, serde_json::to_vec_pretty(s)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Http {
    agent: ureq::Agent,
}

/// Status and body of an answer (any status).
fn call(agent: &ureq::Agent, method: &str, url: &str, auth: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let req = agent.request(method, url).set("Authorization", auth);
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let res = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(anyhow!("{method} {url}: {e}")),
    };
    let status = res.status();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut res.into_reader(), &mut text).with_context(|| format!("reading {url}"))?;
    Ok((status, text))
}

impl Http {
    fn new() -> Http {
        Http {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(300))
                .max_idle_connections_per_host(64)
                .build(),
        }
    }

    /// POSTs `body`, retrying 503 (setup only); the created id.
    fn create(&self, url: &str, auth: &str, body: &Value) -> anyhow::Result<String> {
        let text = body.to_string();
        for attempt in 0..8 {
            let (status, answer) = call(&self.agent, "POST", url, auth, Some(&text))?;
            if status == 201 || status == 200 {
                let v: Value = serde_json::from_str(&answer)?;
                return v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("{url}: no id in {answer}"));
            }
            if status == 503 || status == 429 {
                eprintln!("setup: {url} answered {status} (attempt {}): {answer}", attempt + 1);
                std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
                continue;
            }
            bail!("{url}: {status} {answer}");
        }
        bail!("{url}: still busy after 8 attempts")
    }
}

/// What `setup` leaves for `load`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    url: String,
    tenant_id: String,
    api_key: String,
    subscribers: usize,
    setup_seconds: f64,
}

fn account_body(customer: &str) -> Value {
    json!({"name": "Mobile", "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR", "billDelivery": "email",
           "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]})
}

fn product_body(customer: &str, account: &str, i: usize) -> Value {
    json!({"name": "Mobile M", "status": "active", "productOffering": {"id": "mobile-m"},
           "relatedParty": [{"id": customer, "role": "customer", "@referredType": "Customer"}],
           "billingAccount": {"id": account}, "startDate": PRODUCT_START,
           "productCharacteristic": [{"name": "MSISDN", "value": msisdn(i)}]})
}

fn customer_body(party: &str, n: usize) -> Value {
    json!({"name": format!("Bench customer {n}"), "engagedParty": {"id": party, "@referredType": "Individual"}})
}

fn setup(args: &Args) -> anyhow::Result<State> {
    let url = args.req("url")?.trim_end_matches('/').to_string();
    let admin = format!("Bearer {}", args.req("admin-key")?);
    let subscribers: usize = args.num("subscribers", 2_000)?;
    let customers: usize = args.num("customers", 1)?;
    let conc: usize = args.num("setup-concurrency", 8)?;
    let started = Instant::now();
    let http = Http::new();
    let (status, body) = call(
        &http.agent,
        "POST",
        &format!("{url}/admin/v1/tenants"),
        &admin,
        Some(&json!({"name": format!("usage-bench-{}", std::process::id())}).to_string()),
    )?;
    if status != 201 {
        bail!("creating the tenant: {status} {body}");
    }
    let t: Value = serde_json::from_str(&body)?;
    let tenant_id = t["id"].as_str().unwrap_or_default().to_string();
    let api_key = t["apiKey"].as_str().ok_or_else(|| anyhow!("no apiKey in {body}"))?.to_string();
    let auth = format!("Bearer {api_key}");
    let (status, body) = call(
        &http.agent,
        "POST",
        &format!("{url}/tmf-api/productCatalogManagement/v4/importCatalog"),
        &auth,
        Some(SAMPLE_CATALOG),
    )?;
    if status != 200 {
        bail!("importing the sample catalog: {status} {body}");
    }
    let mut customer_ids = Vec::new();
    for n in 0..customers.max(1) {
        let party = http.create(
            &format!("{url}/tmf-api/party/v4/individual"),
            &auth,
            &json!({"givenName": "Bench", "familyName": format!("Customer {n}")}),
        )?;
        customer_ids.push(http.create(
            &format!("{url}/tmf-api/customerManagement/v4/customer"),
            &auth,
            &customer_body(&party, n),
        )?);
    }
    eprintln!(
        "setup: tenant {tenant_id}, catalog, {} customer(s) in {:.1} s",
        customer_ids.len(),
        started.elapsed().as_secs_f64()
    );
    let next = AtomicU64::new(0);
    let lines = Instant::now();
    let slow: Mutex<Vec<(usize, f64)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..conc.max(1))
            .map(|_| {
                let http = Http::new();
                let (url, auth, customer_ids, next, slow) = (&url, &auth, &customer_ids, &next, &slow);
                s.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= subscribers {
                            return Ok(());
                        }
                        let customer = &customer_ids[i % customer_ids.len()];
                        let t0 = Instant::now();
                        let account = http.create(
                            &format!("{url}/tmf-api/accountManagement/v4/billingAccount"),
                            auth,
                            &account_body(customer),
                        )?;
                        let t1 = Instant::now();
                        http.create(
                            &format!("{url}/tmf-api/productInventory/v4/product"),
                            auth,
                            &product_body(customer, &account, i),
                        )?;
                        let product_ms = t1.elapsed().as_secs_f64() * 1000.0;
                        if i % 500 == 499 || i + 1 == subscribers {
                            eprintln!(
                                "setup: {} lines in {:.1} s (line {}: account {:.1} ms, product {:.1} ms)",
                                i + 1,
                                lines.elapsed().as_secs_f64(),
                                i + 1,
                                (t1 - t0).as_secs_f64() * 1000.0,
                                product_ms
                            );
                        }
                        if i.is_multiple_of(100) || i + 1 == subscribers {
                            slow.lock().expect("lock").push((i, product_ms));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow!("a setup thread panicked"))??;
        }
        Ok(())
    })?;
    let samples = slow.into_inner().expect("lock");
    let first = samples.iter().filter(|(i, _)| *i < subscribers / 10 + 1).map(|(_, ms)| *ms).fold(0.0, f64::max);
    let last =
        samples.iter().filter(|(i, _)| *i + subscribers / 10 >= subscribers).map(|(_, ms)| *ms).fold(0.0, f64::max);
    eprintln!(
        "setup: {subscribers} subscribers (account + product each, {conc} at once) in {:.1} s; POST product took up to {first:.1} ms in the first tenth, up to {last:.1} ms in the last",
        lines.elapsed().as_secs_f64()
    );
    Ok(State { url, tenant_id, api_key, subscribers, setup_seconds: started.elapsed().as_secs_f64() })
}

/// Shared state of the load threads.
struct Shared {
    next_seq: AtomicU64,
    acknowledged: Mutex<Vec<(u64, u64)>>,
    done: Mutex<Vec<Done>>,
    records: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
    unexpected: AtomicU64,
    duplicates: AtomicU64,
    problems: Mutex<Vec<String>>,
    statuses: Mutex<BTreeMap<u16, usize>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            next_seq: AtomicU64::new(0),
            acknowledged: Mutex::new(Vec::new()),
            done: Mutex::new(Vec::new()),
            records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
            statuses: Mutex::new(BTreeMap::new()),
        }
    }

    fn problem(&self, p: String) {
        let mut ps = self.problems.lock().expect("lock");
        if ps.len() < 12 {
            eprintln!("problem: {p}");
            ps.push(p);
        }
    }

    /// Checks one answer against what was sent; records it.
    fn check(&self, report: &Report, seqs: &[u64], fresh: usize, dups: usize, at: f64, latency_ms: f64) -> bool {
        let ok = report.received == seqs.len()
            && report.accepted == fresh
            && report.duplicates == dups
            && report.conflicts + report.rejected + report.recycled == 0;
        if !ok {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            let sample: Vec<String> =
                report.records.iter().filter(|r| r["outcome"] != "duplicate").take(3).map(Value::to_string).collect();
            self.problem(format!(
                "sent {} ({fresh} new, {dups} re-sent): received {}, accepted {}, duplicates {}, conflicts {}, rejected {}, recycled {}; e.g. {}",
                seqs.len(),
                report.received,
                report.accepted,
                report.duplicates,
                report.conflicts,
                report.rejected,
                report.recycled,
                sample.join(" ")
            ));
        }
        self.duplicates.fetch_add(report.duplicates as u64, Ordering::Relaxed);
        self.records.fetch_add(report.received as u64, Ordering::Relaxed);
        self.done.lock().expect("lock").push(Done {
            started: at - latency_ms / 1000.0,
            at,
            records: report.received,
            accepted: report.accepted,
            latency_ms,
        });
        ok
    }
}

/// Prints the records answered per window while the load runs.
fn sampler(shared: &Shared, start: Instant, window_ms: u64, stop: &std::sync::atomic::AtomicBool, label: &str) {
    let mut last = 0u64;
    let mut k = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let target = start + Duration::from_millis(window_ms * k);
        while Instant::now() < target {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(target.saturating_duration_since(Instant::now())));
        }
        let now = shared.records.load(Ordering::Relaxed);
        eprintln!(
            "{label}: t={:>5.1}s {:>8} records/s ({} batches so far)",
            (window_ms * k) as f64 / 1000.0,
            thousands((now - last) as f64 * 1000.0 / window_ms as f64),
            shared.batches.load(Ordering::Relaxed)
        );
        last = now;
        k += 1;
    }
}

struct LoadOptions {
    seconds: f64,
    batches: Option<u64>,
    concurrency: usize,
    batch_size: usize,
    dup_percent: f64,
    window_ms: u64,
    label: String,
}

impl LoadOptions {
    fn from(args: &Args, default_label: &str) -> anyhow::Result<LoadOptions> {
        let o = LoadOptions {
            seconds: args.num("seconds", 20.0)?,
            batches: args.str("batches").map(str::parse).transpose().map_err(|_| anyhow!("--batches: not a number"))?,
            concurrency: args.num("concurrency", 4)?,
            batch_size: args.num("batch-size", 1_000)?,
            dup_percent: args.num("duplicates-percent", 0.0)?,
            window_ms: args.num("window-ms", 1_000)?,
            label: args.str("label").unwrap_or(default_label).to_string(),
        };
        if o.batch_size == 0 || o.concurrency == 0 || o.window_ms == 0 || !(0.0..50.0).contains(&o.dup_percent) {
            bail!("--batch-size, --concurrency, --window-ms must be > 0 and --duplicates-percent in [0, 50)");
        }
        Ok(o)
    }

    fn more(&self, shared: &Shared, start: Instant) -> bool {
        match self.batches {
            Some(b) => shared.batches.fetch_add(1, Ordering::Relaxed) < b,
            None => {
                let go = start.elapsed().as_secs_f64() < self.seconds;
                if go {
                    shared.batches.fetch_add(1, Ordering::Relaxed);
                }
                go
            }
        }
    }
}

fn run_tag() -> String {
    let ns = u64::try_from(Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
    format!("b{:x}", mix(ns ^ u64::from(std::process::id())) & 0xff_ffff)
}

fn load(state: &State, opts: &LoadOptions) -> anyhow::Result<Summary> {
    let tag = run_tag();
    let generator = Gen::new(&tag, state.subscribers, Utc::now())?;
    let url = format!("{}{USAGE_BATCH}", state.url);
    let auth = format!("Bearer {}", state.api_key);
    let shared = Shared::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    eprintln!(
        "{}: {} records per batch, {}% re-sent, {} connections, {}, record ids {tag}-<n>",
        opts.label,
        opts.batch_size,
        opts.dup_percent,
        opts.concurrency,
        match opts.batches {
            Some(b) => format!("{b} batches"),
            None => format!("{} s", opts.seconds),
        }
    );
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| sampler(&shared, start, opts.window_ms, &stop, &opts.label));
        let workers: Vec<_> = (0..opts.concurrency)
            .map(|w| {
                let (generator, shared, url, auth) = (&generator, &shared, &url, &auth);
                s.spawn(move || {
                    let http = Http::new();
                    let mut rng = Rng(mix(w as u64 + 1));
                    while opts.more(shared, start) {
                        let (seqs, first, fresh, dups) = plan_batch(
                            opts.batch_size,
                            opts.dup_percent,
                            &shared.next_seq,
                            &shared.acknowledged,
                            &mut rng,
                        );
                        let body = generator.batch(&seqs);
                        let t0 = Instant::now();
                        let answer = call(&http.agent, "POST", url, auth, Some(&body));
                        let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
                        let at = start.elapsed().as_secs_f64();
                        let (status, text) = match answer {
                            Ok(a) => a,
                            Err(e) => {
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                                shared.problem(format!("transport: {e}"));
                                continue;
                            }
                        };
                        *shared.statuses.lock().expect("lock").entry(status).or_default() += 1;
                        if status != 200 {
                            shared.failed.fetch_add(1, Ordering::Relaxed);
                            shared.problem(format!(
                                "HTTP {status} after {latency_ms:.0} ms: {}",
                                text.chars().take(600).collect::<String>()
                            ));
                            continue;
                        }
                        match serde_json::from_str::<Report>(&text) {
                            Ok(report) => {
                                if shared.check(&report, &seqs, fresh, dups, at, latency_ms) {
                                    shared.acknowledged.lock().expect("lock").push((first, fresh as u64));
                                }
                            }
                            Err(e) => {
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                                shared.problem(format!(
                                    "unreadable answer ({e}): {}",
                                    text.chars().take(300).collect::<String>()
                                ));
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let statuses = shared.statuses.lock().expect("lock").clone();
    eprintln!("{}: HTTP statuses {statuses:?}", opts.label);
    let done = shared.done.lock().expect("lock").clone();
    let base = Summary {
        label: opts.label.clone(),
        engine: "bss-host".into(),
        subscribers: state.subscribers,
        concurrency: opts.concurrency,
        batch_size: opts.batch_size,
        duplicates_percent: opts.dup_percent,
        duplicates: shared.duplicates.load(Ordering::Relaxed) as usize,
        failed_batches: shared.failed.load(Ordering::Relaxed) as usize,
        unexpected_batches: shared.unexpected.load(Ordering::Relaxed) as usize,
        problems: shared.problems.lock().expect("lock").clone(),
        setup_seconds: state.setup_seconds,
        ..Summary::default()
    };
    Ok(summarise(base, &done, opts.window_ms))
}

// ---------------------------------------------------------------------------------------------
// Native

mod native {
    use super::*;
    use crate::ingest::{BATCH_RECORDS_MAX, Config, Pipeline};
    use bss_bench::ready;
    use bss_commerce::inventory::{BILLING_ACCOUNT, CUSTOMER, InventoryHooks, PRODUCT};
    use bss_domain::rating::NormaliseConfig;
    use bss_kit::Store;
    use bss_kit::auth::Tenant;
    use bss_kit::kv::{KeyPage, KeyValues, KvBackend, KvError, MemKv};
    use bss_kit::resource::{Env, NoHooks};

    /// bss-host's KV store (the one its wasi:keyvalue serves), as the kit's backend: the calls
    /// the host makes for a guest's `get`, `get-many`, `set-many`, CAS `current`/`swap`.
    pub struct HostKv(pub bss_host::kv::KvStore);

    fn kv_err(e: bss_host::kv::KvError) -> KvError {
        KvError(e.to_string())
    }

    impl KvBackend for HostKv {
        type Cas = (String, u64);
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            ready(self.0.get(key)).map_err(kv_err)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            ready(self.0.set(key, value)).map_err(kv_err)
        }
        fn delete(&self, key: &str) -> Result<(), KvError> {
            ready(self.0.delete(key)).map_err(kv_err)
        }
        fn exists(&self, key: &str) -> Result<bool, KvError> {
            ready(self.0.exists(key)).map_err(kv_err)
        }
        fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
            let p = ready(self.0.list_keys("", cursor, bss_host::kv::LIST_PAGE_MAX)).map_err(kv_err)?;
            Ok(KeyPage { keys: p.keys, cursor: p.cursor })
        }
        fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
            ready(self.0.get_many(keys)).map_err(kv_err)
        }
        fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
            ready(self.0.set_many(items)).map_err(kv_err)
        }
        fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
            ready(self.0.delete_many(keys)).map_err(kv_err)
        }
        fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
            let v = ready(self.0.get_versioned(key)).map_err(kv_err)?;
            Ok(((key.to_string(), v.version), v.value))
        }
        fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
            ready(self.0.swap(&cas.0, cas.1, value)).map_err(kv_err)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            ready(self.0.increment(key, delta)).map_err(kv_err)
        }
    }

    fn api(e: bss_kit::ApiError) -> anyhow::Error {
        anyhow!("{e:?}")
    }

    /// The documents the HTTP setup writes, through the same kit and commerce code.
    fn setup<B: KvBackend>(env: &Env<'_, B>, subscribers: usize, customers: usize) -> anyhow::Result<()> {
        let catalog: Value = serde_json::from_str(SAMPLE_CATALOG)?;
        let docs = bss_domain::catalog::import::parse_import(&catalog).map_err(|p| anyhow!("sample catalog: {p:?}"))?;
        for (k, doc) in docs {
            env.resources(bss_kit::catalog::kind(k)).upsert(env, &NoHooks, doc).map_err(api)?;
        }
        let mut customer_ids = Vec::new();
        for n in 0..customers.max(1) {
            let c = env.resources(CUSTOMER).create(env, &NoHooks, customer_body("party", n)).map_err(api)?;
            customer_ids.push(c.id().to_string());
        }
        for i in 0..subscribers {
            let customer = &customer_ids[i % customer_ids.len()];
            let a = env.resources(BILLING_ACCOUNT).create(env, &NoHooks, account_body(customer)).map_err(api)?;
            env.resources(PRODUCT).create(env, &InventoryHooks, product_body(customer, a.id(), i)).map_err(api)?;
        }
        Ok(())
    }

    /// One batch as the `usageBatch` handler runs it after authentication.
    fn one_batch<B: KvBackend>(env: &Env<'_, B>, body: &[u8]) -> anyhow::Result<Report> {
        let value: Value = serde_json::from_slice(body)?;
        let batch = bss_domain::usage::parse_json_batch(&value, BATCH_RECORDS_MAX).map_err(|e| anyhow!("{e}"))?;
        let cfg = Config { normalise: NormaliseConfig::new("33", Utc::now()), shards: 16, lease_ttl_ms: 60_000 };
        let outcome = Pipeline::new(env, cfg).ingest(batch).map_err(api)?;
        let answer = serde_json::to_vec(&outcome.report)?;
        Ok(serde_json::from_slice(&answer)?)
    }

    fn run_on<B: KvBackend>(
        kv: B,
        engine: &str,
        subscribers: usize,
        customers: usize,
        opts: &LoadOptions,
    ) -> anyhow::Result<Summary> {
        let store = Store::new(kv);
        let tenant = Tenant { tenant_id: "bench".into(), key_id: "bench".into() };
        let env = Env::new(&store, &tenant);
        let t = Instant::now();
        setup(&env, subscribers, customers)?;
        let setup_seconds = t.elapsed().as_secs_f64();
        eprintln!("{}: native setup ({engine}) of {subscribers} subscribers in {setup_seconds:.1} s", opts.label);
        let generator = Gen::new(&run_tag(), subscribers, Utc::now())?;
        let shared = Shared::new();
        let mut rng = Rng(1);
        let start = Instant::now();
        let mut next_print = opts.window_ms;
        let mut last_records = 0u64;
        while opts.more(&shared, start) {
            let (seqs, first, fresh, dups) =
                plan_batch(opts.batch_size, opts.dup_percent, &shared.next_seq, &shared.acknowledged, &mut rng);
            // Generating the JSON is the client's work: not timed, as in the HTTP run.
            let body = generator.batch(&seqs);
            let t0 = Instant::now();
            let report = one_batch(&env, body.as_bytes());
            let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
            match report {
                Ok(r) => {
                    if shared.check(&r, &seqs, fresh, dups, start.elapsed().as_secs_f64(), latency_ms) {
                        shared.acknowledged.lock().expect("lock").push((first, fresh as u64));
                    }
                }
                Err(e) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    shared.problem(format!("{e:#}"));
                }
            }
            let ms = start.elapsed().as_millis() as u64;
            if ms >= next_print {
                let now = shared.records.load(Ordering::Relaxed);
                eprintln!(
                    "{}: t={:>5.1}s {:>8} records/s",
                    opts.label,
                    ms as f64 / 1000.0,
                    thousands((now - last_records) as f64 * 1000.0 / (ms + opts.window_ms - next_print) as f64)
                );
                last_records = now;
                next_print = ms + opts.window_ms;
            }
        }
        // Timed per batch, so the wall clock includes the untimed JSON generation: windows are
        // built from the pipeline's own time only.
        let mut done = shared.done.lock().expect("lock").clone();
        let mut t = 0.0;
        for d in &mut done {
            d.started = t;
            t += d.latency_ms / 1000.0;
            d.at = t;
        }
        let base = Summary {
            label: opts.label.clone(),
            engine: engine.into(),
            subscribers,
            concurrency: 1,
            batch_size: opts.batch_size,
            duplicates_percent: opts.dup_percent,
            duplicates: shared.duplicates.load(Ordering::Relaxed) as usize,
            failed_batches: shared.failed.load(Ordering::Relaxed) as usize,
            unexpected_batches: shared.unexpected.load(Ordering::Relaxed) as usize,
            problems: shared.problems.lock().expect("lock").clone(),
            setup_seconds,
            ..Summary::default()
        };
        Ok(summarise(base, &done, opts.window_ms))
    }

    pub fn run(args: &Args) -> anyhow::Result<Summary> {
        let subscribers: usize = args.num("subscribers", 2_000)?;
        let customers: usize = args.num("customers", 1)?;
        let store = args.str("store").unwrap_or("mem");
        let opts = LoadOptions::from(args, &format!("native-{store}"))?;
        match store {
            "mem" => run_on(MemKv::new(), "native, MemKv", subscribers, customers, &opts),
            "sqlite" => {
                let dir = match args.str("data") {
                    Some(d) => PathBuf::from(d),
                    None => std::env::temp_dir().join(format!("usage-load-native-{}", std::process::id())),
                };
                std::fs::create_dir_all(&dir)?;
                let path = dir.join("bss.sqlite");
                if path.exists() {
                    bail!("{} exists: use a fresh --data folder", path.display());
                }
                let db = Arc::new(bss_host::db::SqliteDb::open(&path, bss_host::db::SyncMode::Normal)?);
                let kv = bss_host::kv::KvStore::Sqlite(Arc::new(bss_host::kv::sqlite::SqliteKv::new(db, "default")));
                run_on(HostKv(kv), "native, bss-host SQLite KV", subscribers, customers, &opts)
            }
            other => bail!("--store {other}: mem or sqlite"),
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn table(paths: &[String]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for p in paths {
        let s: Summary = serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {p}"))?)
            .with_context(|| format!("reading {p}"))?;
        all.push(s);
    }
    println!(
        "| run                          | engine                       | conns | dup % | records/s median | min-max             | overall/s | batch p50 | batch p99 | records   | failed/unexpected |"
    );
    println!(
        "|------------------------------|------------------------------|------:|------:|-----------------:|---------------------|----------:|----------:|----------:|----------:|------------------:|"
    );
    for s in &all {
        println!(
            "| {:<28} | {:<28} | {:>5} | {:>5} | {:>16} | {:>19} | {:>9} | {:>6.0} ms | {:>6.0} ms | {:>9} | {:>17} |",
            s.label,
            s.engine,
            s.concurrency,
            s.duplicates_percent,
            thousands(s.median),
            format!("{}-{}", thousands(s.min), thousands(s.max)),
            thousands(s.overall_per_sec),
            s.latency_p50_ms,
            s.latency_p99_ms,
            s.records,
            format!("{}/{}", s.failed_batches, s.unexpected_batches)
        );
    }
    // Side by side: each bss-host run with the native runs of the same duplicate share.
    let cell = |s: Option<&Summary>| {
        s.map_or("-".to_string(), |s| format!("{} ({}-{})", thousands(s.median), thousands(s.min), thousands(s.max)))
    };
    let hosts: Vec<&Summary> = all.iter().filter(|s| s.engine == "bss-host").collect();
    if !hosts.is_empty() {
        println!();
        println!(
            "| records/s, median (min-max) | bss-host                | native, bss-host SQLite KV | native, MemKv           | bss-host / native SQLite |"
        );
        println!(
            "|-----------------------------|-------------------------|----------------------------|-------------------------|-------------------------:|"
        );
        for h in hosts {
            let same = |engine: &str| {
                all.iter().find(|s| s.engine.ends_with(engine) && s.duplicates_percent == h.duplicates_percent)
            };
            let sqlite = same("SQLite KV");
            println!(
                "| {:<27} | {:<23} | {:<26} | {:<23} | {:>24} |",
                format!("{}% duplicates", h.duplicates_percent),
                cell(Some(h)),
                cell(sqlite),
                cell(same("MemKv")),
                sqlite.map_or("-".to_string(), |n| format!("{:.2}", h.median / n.median.max(1e-9)))
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    bss_host::tune_allocator();
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let args = Args::parse(argv)?;
    match command.as_str() {
        "setup" => {
            let state = setup(&args)?;
            let path = args.req("state")?;
            std::fs::write(path, serde_json::to_vec_pretty(&state)?).with_context(|| format!("writing {path}"))?;
        }
        "load" => {
            let path = args.req("state")?;
            let state: State =
                serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {path}"))?)?;
            let opts = LoadOptions::from(&args, "bss-host")?;
            let s = load(&state, &opts)?;
            print_summary(&s);
            write_summary(&args, &s)?;
        }
        "run" => {
            let state = setup(&args)?;
            let opts = LoadOptions::from(&args, "bss-host")?;
            let s = load(&state, &opts)?;
            print_summary(&s);
            write_summary(&args, &s)?;
        }
        "native" => {
            let s = native::run(&args)?;
            print_summary(&s);
            write_summary(&args, &s)?;
        }
        "table" => table(&args.rest)?,
        _ => bail!(
            "usage: usage-load setup|load|run|native|table [options] (see the header of benches/src/bin/usage-load.rs)"
        ),
    }
    Ok(())
}
