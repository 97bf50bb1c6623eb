//! billrun-seed: the bill-run benchmark's tools — seeds N billing accounts with a Mobile M product
//! and ~30 rated usage records each straight into a data folder's SQLite, checks the result over
//! the API, drives and measures a bill run on bss-host, and bills the same accounts natively.
//! `benches/billrun.sh N` runs everything in order; the subcommands:
//!
//! - `setup --url URL --admin-key KEY --state FILE`: over the API of a host started on a fresh data
//!   folder: a tenant, the sample catalog (`importCatalog`), a party and a customer, one template
//!   billing account (Paris, cycle day 1, EUR) and one `mobile-m` product order, completed by the
//!   real order flow; writes the tenant's key and the template documents to FILE.
//! - `seed --data DIR --state FILE --accounts N [--records 30] [--chunk 1000]` (host stopped):
//!   writes N accounts through the components' own code, compiled in, over bss-host's SQLite:
//!   the account with the resource layer (as the customer component stores it, without its audit
//!   record); the template order re-addressed to the account and completed at the start of the
//!   previous month by `bss_commerce::inventory::complete_order` (the product, its charges
//!   `<productId>.1` monthly and `.2` SIM activation, the `accountProducts` and `subscriberLine`
//!   indexes); then ~R usage records per product in the previous month, mediated and rated by the
//!   usage component's pipeline (`usage::ingest`, its library: normalise, guide, rate against
//!   the sample tariff with allowance buckets, store `usage/<id>` and
//!   `usageProduct/<product>/records/<period>/<id>` plus the period's buckets) in batches of 10,000.
//!   Writes are buffered and committed in one SQLite transaction per batch with the database's
//!   own version counter (`SqliteDb::next_kv_version`) and its high mark raised
//!   (`db::raise_version_high`), so the host restarts consistent. The
//!   first account (the probe) also gets 5 records in the current month (for the on-demand check).
//! - `verify --url URL --state FILE`: API GETs: the probe account, its product and charges, its
//!   usage records and the catalog read back as the components wrote them (same attributes as the
//!   API-made template, same ratings as seeded).
//! - `native --data DIR --state FILE [--summary OUT] [--breakdown 2000] [--limit K]`: bills the accounts
//!   in-process on one thread over the same SQLite (bss-host's `SqliteKv`, called as the host
//!   calls it for a guest): the catalog once per 50 accounts (as the billing worker reads it per
//!   message), and per account the billing component's `gather_in` (its library, without the
//!   HTTP export) then `bss_domain::billing::bill::build_bill` and the bill document,
//!   read-only; reports accounts/s for build_bill alone and for gather + build. `--breakdown K`
//!   times the parts of gather on K accounts. (The worker's whole `bill_batch` cannot run
//!   natively: storing a bill publishes its event, and the queue import is a stub off wasm.)
//! - `run --url URL --state FILE [--admin URL --out DIR] [--host-pid PID] [--interval-secs 1]
//!   [--summary OUT]`: starts a bill run for the previous month (`POST billRun {periodStart,
//!   billCycleDay: 1}`), polls its progress and prints accounts/s per interval, their median and
//!   the overall rate; with the host's pid, the CPU it used (accounts per host CPU-second: what the
//!   host would do alone on the machine, whatever else runs on it); with the admin address, the
//!   host's /metrics before and after, in DIR.
//! - `check --url URL --state FILE`: after the run: the probe's bill for the period and a
//!   `customerBillOnDemand` (current period) have the totals computed from the seeded ratings.
//! - `compare --data DIR --state FILE --native OUT.json` (host stopped): the stored bills of the
//!   period — one per account, numbered gap-free — add up to the native run's total.

// The host's allocator, so that the baseline differs from bss-host only by WebAssembly.
#[global_allocator]
static GLOBAL: bss_host::Allocator = bss_host::Allocator;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bss_domain::billing::bill::build_bill;
use bss_domain::billing::ledger::Ledger;
use bss_domain::billing::period::BillPeriod;
use bss_domain::rating::NormaliseConfig;
use bss_kit::auth::Tenant;
use bss_kit::kv::{KeyPage, KeyValues, KvBackend, KvError, Store};
use bss_kit::resource::{Env, NoHooks};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use billing::{bills, run};
use bss_bench::{Args, Measured, Rng, io_bytes, mix, ready, thousands, usage_mix};
use usage::{ingest, model};

const SAMPLE_CATALOG: &str = include_str!("../../../infra/samples/catalog.json");
const CB: &str = "/tmf-api/customerBillManagement/v4";
const PO: &str = "/tmf-api/productOrderingManagement/v4";
const PI: &str = "/tmf-api/productInventory/v4";
const US: &str = "/tmf-api/usageManagement/v4";
const CAT: &str = "/tmf-api/productCatalogManagement/v4";
const AM: &str = "/tmf-api/accountManagement/v4";
const PARIS: Tz = chrono_tz::Europe::Paris;
/// Records per usage batch (the usage component's limit).
const BATCH: usize = ingest::BATCH_RECORDS_MAX;
/// Records the probe account gets in the current month (and one international call).
const PROBE_CURRENT_RECORDS: usize = 5;

// ---------------------------------------------------------------------------------------------
// State shared by the steps

/// Sums of the ratings of some usage records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sums {
    records: usize,
    #[serde(with = "rust_decimal::serde::str")]
    net: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    tax: Decimal,
}

/// The first seeded account, checked over the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    account: String,
    product: String,
    msisdn: String,
    /// A few of its usage records with their net amounts as rated.
    samples: Vec<(String, String)>,
    /// Its usage in the billed period and in the current one.
    previous: Sums,
    current: Sums,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    tenant_id: String,
    api_key: String,
    customer_id: String,
    template_account: Value,
    template_order: Value,
    template_product: Value,
    /// Start of the billed period (the previous month, cycle day 1, Paris).
    period_start: Option<NaiveDate>,
    accounts: usize,
    records: usize,
    probe: Option<Probe>,
    seed_seconds: f64,
}

fn read_state(args: &Args) -> anyhow::Result<State> {
    let path = args.req("state")?;
    serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {path}"))?)
        .with_context(|| format!("reading {path}"))
}

fn write_state(args: &Args, s: &State) -> anyhow::Result<()> {
    let path = args.req("state")?;
    std::fs::write(path, serde_json::to_vec_pretty(s)?).with_context(|| format!("writing {path}"))
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (`self` for this one).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 }
}

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap_or_default(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap_or_default(),
        _ => Decimal::ZERO,
    }
}

fn round2(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven)
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Http {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.text).with_context(|| format!("not JSON: {}", self.text))
    }
}

impl Http {
    fn new(url: &str, key: &str) -> Http {
        Http {
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build(),
            url: url.trim_end_matches('/').to_string(),
            auth: format!("Bearer {key}"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.url);
        let req = self.agent.request(method, &url).set("Authorization", &self.auth);
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let res = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => bail!("{method} {url}: {e}"),
        };
        let status = res.status();
        let text = res.into_string().with_context(|| format!("reading {url}"))?;
        Ok(Answer { status, text })
    }

    /// The JSON answer of a call that must answer `expect`.
    fn expect(&self, method: &str, path: &str, body: Option<&Value>, expect: u16) -> anyhow::Result<Value> {
        let text = body.map(Value::to_string);
        let a = self.call(method, path, text.as_deref())?;
        if a.status != expect {
            bail!("{method} {path}: {} (expected {expect}): {}", a.status, a.text);
        }
        a.json()
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.expect("GET", path, None, 200)
    }
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no id in {v}"))
}

fn setup(args: &Args) -> anyhow::Result<()> {
    let url = args.req("url")?;
    let admin = Http::new(url, args.req("admin-key")?);
    let t = admin.expect("POST", "/admin/v1/tenants", Some(&json!({"name": "Bill run bench"})), 201)?;
    let tenant_id = id_of(&t)?;
    let api_key = t["apiKey"].as_str().ok_or_else(|| anyhow!("no apiKey in {t}"))?.to_string();
    let api = Http::new(url, &api_key);
    let a = api.call("POST", &format!("{CAT}/importCatalog"), Some(SAMPLE_CATALOG))?;
    if a.status != 200 {
        bail!("importing the sample catalog: {} {}", a.status, a.text);
    }
    let party = api.expect(
        "POST",
        "/tmf-api/party/v4/individual",
        Some(&json!({"givenName": "Bench", "familyName": "Customer"})),
        201,
    )?;
    let customer = api.expect(
        "POST",
        "/tmf-api/customerManagement/v4/customer",
        Some(&json!({"name": "Bench customer", "engagedParty": {"id": id_of(&party)?, "@referredType": "Individual"}})),
        201,
    )?;
    let customer_id = id_of(&customer)?;
    let account = api.expect("POST", &format!("{AM}/billingAccount"), Some(&account_body(&customer_id, 0)), 201)?;
    let account_id = id_of(&account)?;
    let order = api.expect(
        "POST",
        &format!("{PO}/productOrder"),
        Some(&json!({"relatedParty": [{"id": customer_id, "role": "customer"}], "billingAccount": {"id": account_id},
               "productOrderItem": [{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}]})),
        201,
    )?;
    let order_id = id_of(&order)?;
    let started = Instant::now();
    let order = loop {
        let o = api.get(&format!("{PO}/productOrder/{order_id}"))?;
        if o["state"] == "completed" {
            break o;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the template order did not complete in 120 s: {o}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let product = api.get(&format!("{PI}/product/{order_id}-1"))?;
    let state = State {
        tenant_id: tenant_id.clone(),
        api_key,
        customer_id,
        template_account: api.get(&format!("{AM}/billingAccount/{account_id}"))?,
        template_order: order,
        template_product: product,
        ..State::default()
    };
    write_state(args, &state)?;
    eprintln!(
        "setup: tenant {tenant_id}, sample catalog, customer, template account {account_id} and order {order_id}"
    );
    Ok(())
}

fn account_body(customer: &str, i: usize) -> Value {
    json!({"name": format!("Bench account {i}"), "billCycleDay": 1, "timeZone": "Europe/Paris", "currency": "EUR",
           "billDelivery": "email", "relatedParty": [{"id": customer, "role": "owner", "@referredType": "Customer"}]})
}

// ---------------------------------------------------------------------------------------------
// bss-host's KV store as the kit's backend (what the host does for a guest's calls)

fn host_err(e: bss_host::kv::KvError) -> KvError {
    KvError(e.to_string())
}

/// bss-host's KV store, called as its wasi:keyvalue binding calls it: `list_keys` pages as the
/// host serves them (`bss_host::bindings::list_page`: a short first page for a seek, then long
/// ones), or pages of `page` keys from the cursor when set (no prefix: the interface has none).
struct HostKv {
    store: bss_host::kv::KvStore,
    page: Option<usize>,
}

impl KvBackend for HostKv {
    type Cas = (String, u64);
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        ready(self.store.get(key)).map_err(host_err)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        ready(self.store.set(key, value)).map_err(host_err)
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        ready(self.store.delete(key)).map_err(host_err)
    }
    fn exists(&self, key: &str) -> Result<bool, KvError> {
        ready(self.store.exists(key)).map_err(host_err)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let p = match self.page {
            Some(page) => ready(self.store.list_keys("", cursor, page)),
            None => ready(bss_host::bindings::list_page(&self.store, cursor)),
        }
        .map_err(host_err)?;
        Ok(KeyPage { keys: p.keys, cursor: p.cursor })
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        ready(self.store.get_many(keys)).map_err(host_err)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        ready(self.store.set_many(items)).map_err(host_err)
    }
    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        ready(self.store.delete_many(keys)).map_err(host_err)
    }
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        let v = ready(self.store.get_versioned(key)).map_err(host_err)?;
        Ok(((key.to_string(), v.version), v.value))
    }
    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        ready(self.store.swap(&cas.0, cas.1, value)).map_err(host_err)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        ready(self.store.increment(key, delta)).map_err(host_err)
    }
}

/// A backend that keeps what it read of the catalog (pages listed from a catalog collection's
/// prefix and catalog documents): the KV cost of a catalog loaded once per worker instance (the
/// documents are still parsed per bill, so this bounds that saving from below).
struct CatalogMemo {
    inner: HostKv,
    prefixes: Vec<String>,
    pages: RefCell<HashMap<String, KeyPage>>,
    docs: RefCell<HashMap<String, Option<Vec<u8>>>>,
}

impl CatalogMemo {
    fn new(inner: HostKv, tenant: &str) -> CatalogMemo {
        let prefixes =
            bss_domain::catalog::Kind::ALL.iter().map(|k| format!("t/{tenant}/{}/", k.collection())).collect();
        CatalogMemo { inner, prefixes, pages: RefCell::default(), docs: RefCell::default() }
    }

    fn catalog(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

impl KvBackend for CatalogMemo {
    type Cas = (String, u64);
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.get_many(&[key.to_string()])?.pop().and_then(|(_, v)| v))
    }
    fn set(&self, _: &str, _: &[u8]) -> Result<(), KvError> {
        Err(KvError("read-only".into()))
    }
    fn delete(&self, _: &str) -> Result<(), KvError> {
        Err(KvError("read-only".into()))
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let Some(c) = cursor.filter(|c| self.catalog(c)) else { return self.inner.list_keys(cursor) };
        if let Some(p) = self.pages.borrow().get(c) {
            return Ok(p.clone());
        }
        let page = self.inner.list_keys(cursor)?;
        self.pages.borrow_mut().insert(c.to_string(), page.clone());
        Ok(page)
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        let missing: Vec<String> =
            keys.iter().filter(|k| !self.catalog(k) || !self.docs.borrow().contains_key(*k)).cloned().collect();
        let mut fetched: HashMap<String, Option<Vec<u8>>> = self.inner.get_many(&missing)?.into_iter().collect();
        let mut docs = self.docs.borrow_mut();
        Ok(keys
            .iter()
            .map(|k| {
                let v = match fetched.remove(k) {
                    Some(v) => {
                        if self.catalog(k) {
                            docs.insert(k.clone(), v.clone());
                        }
                        v
                    }
                    None => docs.get(k).cloned().flatten(),
                };
                (k.clone(), v)
            })
            .collect())
    }
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        self.inner.cas_read(key)
    }
    fn cas_write(&self, _: Self::Cas, _: &[u8]) -> Result<bool, KvError> {
        Err(KvError("read-only".into()))
    }
    fn increment(&self, _: &str, _: i64) -> Result<i64, KvError> {
        Err(KvError("read-only".into()))
    }
}

fn open_db(data: &Path) -> anyhow::Result<Arc<bss_host::db::SqliteDb>> {
    let path = data.join("bss.sqlite");
    if !path.exists() {
        bail!("{} does not exist: run setup on a host started with --data {}", path.display(), data.display());
    }
    Ok(Arc::new(bss_host::db::SqliteDb::open(&path, bss_host::db::SyncMode::Normal)?))
}

fn host_kv(db: Arc<bss_host::db::SqliteDb>, page: Option<usize>) -> HostKv {
    // No read cache: the seeder also writes the table with its own SQL (`SeedKv::flush`), which
    // the cache would not see.
    let kv = bss_host::kv::sqlite::SqliteKv::with_cache_bytes(db, "default", 0);
    HostKv { store: bss_host::kv::KvStore::Sqlite(Arc::new(kv)), page }
}

// ---------------------------------------------------------------------------------------------
// Seeding

use bss_host::db::KV_UPSERT as UPSERT;

/// The seeder's backend: reads see buffered writes first, then the database; writes are kept
/// until [`SeedKv::flush`] commits them in one transaction, each with a fresh version from the
/// database's own counter. One writer (this process, host stopped): every compare-and-swap wins.
struct SeedKv {
    db: Arc<bss_host::db::SqliteDb>,
    read: HostKv,
    pending: RefCell<BTreeMap<String, Option<Vec<u8>>>>,
    rows: RefCell<u64>,
}

impl SeedKv {
    fn new(db: Arc<bss_host::db::SqliteDb>) -> SeedKv {
        SeedKv { read: host_kv(db.clone(), None), db, pending: RefCell::default(), rows: 0.into() }
    }

    fn flush(&self) -> Result<(), KvError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        let deletes: Vec<String> = pending.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.clone()).collect();
        let db = &self.db;
        db.write(|tx| {
            let mut up = tx.prepare_cached(UPSERT)?;
            let mut high = 0;
            for (k, v) in &pending {
                if let Some(v) = v {
                    high = db.next_kv_version();
                    up.execute(rusqlite::params!["default", k, v, high as i64])?;
                }
            }
            if high > 0 {
                bss_host::db::raise_version_high(tx, high)?;
            }
            Ok(())
        })
        .map_err(|e| KvError(e.to_string()))?;
        if !deletes.is_empty() {
            self.read.delete_many(&deletes)?;
            // Into SQLite now: a later upsert of this SQL must not be undone by a flush of the
            // deletion.
            self.db.flush_kv().map_err(|e| KvError(e.to_string()))?;
        }
        *self.rows.borrow_mut() += pending.len() as u64;
        Ok(())
    }
}

impl KvBackend for SeedKv {
    type Cas = String;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(v) = self.pending.borrow().get(key) {
            return Ok(v.clone());
        }
        self.read.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.pending.borrow_mut().insert(key.to_string(), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.pending.borrow_mut().insert(key.to_string(), None);
        Ok(())
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        self.flush()?;
        self.read.list_keys(cursor)
    }
    fn get_many(&self, keys: &[String]) -> Result<KeyValues, KvError> {
        let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        {
            let pending = self.pending.borrow();
            for (i, k) in keys.iter().enumerate() {
                match pending.get(k) {
                    Some(v) => out.push((k.clone(), v.clone())),
                    None => {
                        out.push((k.clone(), None));
                        misses.push(i);
                    }
                }
            }
        }
        if !misses.is_empty() {
            let wanted: Vec<String> = misses.iter().map(|i| keys[*i].clone()).collect();
            for (i, (_, v)) in misses.into_iter().zip(self.read.get_many(&wanted)?) {
                out[i].1 = v;
            }
        }
        Ok(out)
    }
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut pending = self.pending.borrow_mut();
        for (k, v) in items {
            pending.insert(k.clone(), Some(v.clone()));
        }
        Ok(())
    }
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        Ok((key.to_string(), self.get(key)?))
    }
    fn cas_write(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        self.set(&cas, value)?;
        Ok(true)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let current = match self.get(key)? {
            None => 0,
            Some(b) => String::from_utf8_lossy(&b).trim().parse::<i64>().map_err(|e| KvError(e.to_string()))?,
        };
        self.set(key, (current + delta).to_string().as_bytes())?;
        Ok(current + delta)
    }
}

/// The MSISDN of account `i` (E.164).
fn msisdn(i: usize) -> String {
    format!("+337{i:08}")
}

/// The template order, re-addressed to account `i` and completed at `at`.
fn order_for(template: &Value, i: usize, account: &str, customer: &str, at: &str) -> Value {
    let mut o = template.clone();
    let id = bss_kit::ids::new_id();
    o["id"] = json!(id);
    o["href"] = json!(format!("{PO}/productOrder/{id}"));
    o["billingAccount"] = json!({"id": account});
    o["relatedParty"] = json!([{"id": customer, "role": "customer"}]);
    o["state"] = json!("completed");
    o["completionDate"] = json!(at);
    let chars = json!([
        {"name": "lineId", "value": format!("LINE-{:010}", mix(i as u64) % 10_000_000_000)},
        {"name": "ICCID", "value": format!("89333{:014}", i)},
        {"name": "MSISDN", "value": msisdn(i)},
    ]);
    if let Some(items) = o["productOrderItem"].as_array_mut() {
        for item in items {
            item["completionDate"] = json!(at);
            item["state"] = json!("completed");
            item["product"] = json!({"productCharacteristic": chars});
        }
    }
    o
}

/// Usage of one subscriber: `n` records with start times in `[from, to)` (Unix seconds), in time
/// order, in the benchmarks' mix ([`bss_bench::usage_mix`]); subscriber in national or
/// international form. Ids are 16 hex digits (like
/// the unique ids of network elements: one subscriber's records are spread over the key space).
fn records_for(i: usize, salt: u64, n: usize, from: i64, to: i64, out: &mut Vec<Value>) {
    let mut r = Rng(mix(salt ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)));
    let mut starts: Vec<i64> = (0..n).map(|_| from + r.below((to - from).max(1) as u64) as i64).collect();
    starts.sort_unstable();
    let number = msisdn(i);
    for start in starts {
        let id = format!("{:016x}", r.next_u64());
        let subscriber = if r.below(100) < 30 { format!("0{}", &number[3..]) } else { number.clone() };
        let start = DateTime::from_timestamp(start, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut rec = json!({"recordId": id, "subscriber": subscriber, "startTime": start});
        let (measured, visited) = usage_mix(&mut r);
        match measured {
            Measured::Voice { secs, called } => {
                rec["service"] = json!("voice");
                rec["duration"] = json!(secs);
                rec["calledNumber"] = json!(called);
            }
            Measured::Sms { called } => {
                rec["service"] = json!("sms");
                rec["events"] = json!(1);
                rec["calledNumber"] = json!(called);
            }
            Measured::Data { bytes } => {
                rec["service"] = json!("data");
                rec["volume"] = json!(bytes);
                rec["apn"] = json!("internet");
            }
        }
        if let Some(v) = visited {
            rec["visitedNetwork"] = json!(v);
        }
        out.push(rec);
    }
}

fn api(e: bss_kit::ApiError) -> anyhow::Error {
    anyhow!("{} ({})", e.message, e.detail().unwrap_or_default())
}

/// Rates a batch through the usage component's pipeline; every record must be accepted.
fn ingest_batch<B: KvBackend>(
    env: &Env<'_, B>,
    records: Vec<Value>,
    now: DateTime<Utc>,
) -> anyhow::Result<ingest::Outcome> {
    let n = records.len();
    let batch = bss_domain::usage::parse_json_batch(&Value::Array(records), BATCH).map_err(|e| anyhow!("{e}"))?;
    let cfg = ingest::Config { normalise: NormaliseConfig::new("33", now), shards: 16, lease_ttl_ms: 60_000 };
    // The probe's checks read the ratings of the stored records.
    let out = ingest::Pipeline::new(env, cfg).keeping_documents().ingest(batch).map_err(api)?;
    if out.report.accepted != n {
        let sample: Vec<String> =
            out.report.records.iter().take(3).map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
        bail!("usage batch of {n}: {} accepted; e.g. {}", out.report.accepted, sample.join(" "));
    }
    Ok(out)
}

fn sums_of<'a>(docs: impl Iterator<Item = &'a model::UsageDoc>) -> Sums {
    let mut s = Sums::default();
    for d in docs {
        if let Some(r) = &d.rated {
            s.records += 1;
            s.net += r.net.amount;
            s.tax += r.tax.amount;
        }
    }
    s
}

fn db_bytes(data: &Path) -> u64 {
    ["bss.sqlite", "bss.sqlite-wal"].iter().filter_map(|f| std::fs::metadata(data.join(f)).ok()).map(|m| m.len()).sum()
}

/// Bigger page caches and memory-mapped reads on this process's connections, and commits that do
/// not wait for the disk (a crash while seeding means seeding again): the host's settings are
/// untouched (they are per connection).
fn tune_for_seeding(db: &bss_host::db::SqliteDb) -> anyhow::Result<()> {
    let tune = |c: &rusqlite::Connection| -> rusqlite::Result<()> {
        c.pragma_update(None, "cache_size", -262_144)?;
        c.pragma_update(None, "mmap_size", 1i64 << 36)?;
        Ok(())
    };
    db.write_one(|c| {
        tune(c)?;
        c.pragma_update(None, "synchronous", "OFF")?;
        c.pragma_update(None, "wal_autocheckpoint", 20_000)
    })?;
    // Every reader connection (each call takes the next one).
    for _ in 0..16 {
        db.read(tune)?;
    }
    Ok(())
}

fn seed(args: &Args) -> anyhow::Result<()> {
    let mut state = read_state(args)?;
    let data = PathBuf::from(args.req("data")?);
    let n: usize = args.num("accounts", 10_000)?;
    let per: usize = args.num("records", 30)?;
    let chunk: usize = args.num("chunk", 1_000)?.max(1);
    if state.accounts > 0 {
        bail!("{} already holds {} seeded accounts: seed a fresh data folder", data.display(), state.accounts);
    }
    let db = open_db(&data)?;
    tune_for_seeding(&db)?;
    let kv = SeedKv::new(db.clone());
    let store = Store::new(kv);
    let tenant = Tenant { tenant_id: state.tenant_id.clone(), key_id: "billrun-seed".into() };
    let env = Env::new(&store, &tenant);
    let now = Utc::now();
    let period = BillPeriod::last_closed(now, 1, PARIS);
    let current = BillPeriod::at(now, 1, PARIS);
    let activated = period.start_instant(PARIS);
    let at = activated.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Usage two hours off the period's bounds (the accounts bill in Paris time).
    let (from, to) = (activated.timestamp() + 7_200, period.end_instant(PARIS).timestamp() - 7_200);
    let (cur_from, cur_to) = (current.start_instant(PARIS).timestamp() + 7_200, now.timestamp() - 600);
    let salt = mix(now.timestamp() as u64);
    eprintln!(
        "seed: {n} accounts, {per} records each in {} .. {} (products active from {at}), into {}",
        period.start,
        period.end,
        data.display()
    );
    let started = Instant::now();
    let mut records = 0usize;
    let mut probe: Option<Probe> = None;
    let mut last_print = Instant::now();
    let mut i = 0usize;
    let mut phases = [Duration::ZERO; 3];
    while i < n {
        let t = Instant::now();
        let end = (i + chunk).min(n);
        let mut usage: Vec<Value> = Vec::with_capacity((end - i) * per);
        for k in i..end {
            let account = bss_kit::ids::new_id();
            env.resources(bss_commerce::inventory::BILLING_ACCOUNT)
                .create_with_id(&env, &NoHooks, &account, account_body(&state.customer_id, k))
                .map_err(api)?;
            let order = order_for(&state.template_order, k, &account, &state.customer_id, &at);
            bss_commerce::inventory::complete_order(&env, &order).map_err(api)?;
            records_for(k, salt, per, from, to, &mut usage);
            if k == 0 {
                probe = Some(Probe {
                    account: account.clone(),
                    product: format!("{}-1", order["id"].as_str().unwrap_or_default()),
                    msisdn: msisdn(k),
                    ..Probe::default()
                });
            }
        }
        phases[0] += t.elapsed();
        let t = Instant::now();
        let probe_ids: Vec<String> = if i == 0 {
            usage[..per.min(usage.len())].iter().filter_map(|r| r["recordId"].as_str().map(str::to_string)).collect()
        } else {
            Vec::new()
        };
        for batch in usage.chunks(BATCH) {
            let out = ingest_batch(&env, batch.to_vec(), now)?;
            if let Some(p) = probe.as_mut().filter(|_| !probe_ids.is_empty()) {
                let mine: Vec<&model::UsageDoc> = out.docs.values().filter(|d| probe_ids.contains(&d.id)).collect();
                let s = sums_of(mine.iter().copied());
                p.previous.records += s.records;
                p.previous.net += s.net;
                p.previous.tax += s.tax;
                for d in mine.iter().take(4) {
                    if let Some(r) = &d.rated {
                        p.samples.push((d.id.clone(), r.net.amount.to_string()));
                    }
                }
            }
            records += batch.len();
        }
        if i == 0 && cur_to - cur_from > 3_600 {
            // The probe's usage of the current period (billed by the on-demand check).
            let mut cur = Vec::new();
            records_for(0, salt ^ 1, PROBE_CURRENT_RECORDS, cur_from, cur_to, &mut cur);
            // And a 90 s call to New York, outside every allowance (0.68 + 0.14 VAT).
            cur.push(json!({"recordId": format!("{:016x}", mix(salt ^ 2)), "subscriber": msisdn(0), "service": "voice",
                            "startTime": DateTime::from_timestamp(cur_to - 60, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "duration": 90, "calledNumber": "+12125550100"}));
            let out = ingest_batch(&env, cur, now)?;
            if let Some(p) = probe.as_mut() {
                p.current = sums_of(out.docs.values());
            }
            records += out.docs.len();
        }
        phases[1] += t.elapsed();
        let t = Instant::now();
        store.backend().flush().map_err(|e| anyhow!("{e}"))?;
        phases[2] += t.elapsed();
        i = end;
        if last_print.elapsed() > Duration::from_secs(5) || i == n {
            let s = started.elapsed().as_secs_f64();
            eprintln!(
                "seed: {i}/{n} accounts, {records} records in {s:.1} s ({} accounts/s, {} records/s; accounts and products {:.1} s, usage pipeline {:.1} s, commits {:.1} s); {:.2} GB on disk",
                thousands(i as f64 / s),
                thousands(records as f64 / s),
                phases[0].as_secs_f64(),
                phases[1].as_secs_f64(),
                phases[2].as_secs_f64(),
                db_bytes(&data) as f64 / 1e9
            );
            last_print = Instant::now();
        }
    }
    db.write_one(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))?;
    state.period_start = Some(period.start);
    state.accounts = n;
    state.records = records;
    state.probe = probe;
    state.seed_seconds = started.elapsed().as_secs_f64();
    write_state(args, &state)?;
    println!(
        "seeded {n} accounts and {records} rated usage records in {:.1} s ({} rows written); database {:.2} GB ({:.0} bytes per record)",
        state.seed_seconds,
        store.backend().rows.borrow(),
        db_bytes(&data) as f64 / 1e9,
        db_bytes(&data) as f64 / records.max(1) as f64
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checks over the API

/// Top-level attribute names of a document.
fn attributes(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

fn same_shape(what: &str, seeded: &Value, template: &Value) -> anyhow::Result<()> {
    let (a, b) = (attributes(seeded), attributes(template));
    if a != b {
        bail!("{what}: attributes {a:?} differ from those of the API-made template {b:?}");
    }
    Ok(())
}

fn probe_of(state: &State) -> anyhow::Result<&Probe> {
    state.probe.as_ref().ok_or_else(|| anyhow!("the state has no probe: run seed first"))
}

fn verify(args: &Args) -> anyhow::Result<()> {
    let state = read_state(args)?;
    let p = probe_of(&state)?;
    let api = Http::new(args.req("url")?, &state.api_key);
    let account = api.get(&format!("{AM}/billingAccount/{}", p.account))?;
    same_shape("billingAccount", &account, &state.template_account)?;
    for (f, want) in [("currency", json!("EUR")), ("billCycleDay", json!(1)), ("timeZone", json!("Europe/Paris"))] {
        if account[f] != want {
            bail!("billingAccount {}: {f} is {} not {want}", p.account, account[f]);
        }
    }
    let product = api.get(&format!("{PI}/product/{}", p.product))?;
    same_shape("product", &product, &state.template_product)?;
    let msisdn = product["productCharacteristic"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "MSISDN"))
        .map(|c| c["value"].clone());
    if product["billingAccount"]["id"] != p.account.as_str()
        || product["status"] != "active"
        || msisdn != Some(json!(p.msisdn))
        || product["productPrice"] != state.template_product["productPrice"]
    {
        bail!("product {} does not read back as seeded: {product}", p.product);
    }
    let charges = api.get(&format!("{PI}/product/{}/charge", p.product))?;
    let kinds: Vec<&str> =
        charges.as_array().map(|c| c.iter().filter_map(|c| c["chargeType"].as_str()).collect()).unwrap_or_default();
    if kinds.len() != 2 || !kinds.contains(&"recurring") || !kinds.contains(&"oneTime") {
        bail!("product {}: charges {charges}", p.product);
    }
    let monthly = charges.as_array().and_then(|c| c.iter().find(|c| c["chargeType"] == "recurring")).cloned();
    if monthly.as_ref().map(|m| m["id"].clone()) != Some(json!(format!("{}.1", p.product))) {
        bail!("product {}: no monthly charge {}.1 in {charges}", p.product, p.product);
    }
    for (id, net) in &p.samples {
        let u = api.get(&format!("{US}/usage/{id}"))?;
        let rated = &u["ratedProductUsage"][0];
        if u["status"] != "rated"
            || u["product"]["id"] != p.product.as_str()
            || dec(&rated["taxExcludedRatingAmount"]["value"]) != dec(&json!(net))
        {
            bail!("usage {id} does not read back as rated ({net}): {u}");
        }
    }
    let offerings = api.get(&format!("{CAT}/productOffering"))?;
    let tariffs = api.get(&format!("{CAT}/tariff"))?;
    let mobile = api.get(&format!("{CAT}/productOffering/mobile-m"))?;
    if offerings.as_array().map(Vec::len) != Some(7)
        || tariffs.as_array().map(Vec::len) != Some(3)
        || mobile["id"] != "mobile-m"
    {
        bail!("the catalog does not read back: {} offerings, {} tariffs", offerings, tariffs);
    }
    println!(
        "verify: account {} (attributes as the API writes them), product {} (MSISDN {}, charges {}.1 monthly and {}.2 SIM), {} usage records read back with their ratings, catalog (7 offerings, 3 tariffs)",
        p.account,
        p.product,
        p.msisdn,
        p.product,
        p.product,
        p.samples.len()
    );
    Ok(())
}

/// What a Mobile M bill of a whole month owes before usage: 19.99 + 20% VAT.
fn monthly_gross() -> Decimal {
    let net = Decimal::new(1999, 2);
    net + round2(net * Decimal::new(20, 2))
}

fn check(args: &Args) -> anyhow::Result<()> {
    let state = read_state(args)?;
    let p = probe_of(&state)?;
    let start = state.period_start.ok_or_else(|| anyhow!("no period in the state"))?;
    let api = Http::new(args.req("url")?, &state.api_key);
    // The run's bill: the month, the SIM activation (10 + 2 VAT) and the usage as rated.
    let bill = api.get(&format!("{CB}/customerBill/bill:{}:{start}", p.account))?;
    let want = monthly_gross() + Decimal::new(12, 0) + p.previous.net + p.previous.tax;
    let got = dec(&bill["taxIncludedAmount"]["value"]);
    if got != want || bill["state"] != "validated" {
        bail!(
            "bill of {} for {start}: total {got}, expected {want} ({} records): {bill}",
            p.account,
            p.previous.records
        );
    }
    // On demand, now: the current month and its usage; due: that plus the run's unpaid bill.
    let od = api.expect(
        "POST",
        &format!("{CB}/customerBillOnDemand"),
        Some(&json!({"billingAccount": {"id": p.account}})),
        201,
    )?;
    let want_od = monthly_gross() + p.current.net + p.current.tax;
    let got_od = dec(&od["taxIncludedAmount"]["value"]);
    let due = dec(&od["amountDue"]["value"]);
    if got_od != want_od || due != want_od + want {
        bail!(
            "on-demand bill of {}: total {got_od} (expected {want_od}), due {due} (expected {}): {od}",
            p.account,
            want_od + want
        );
    }
    println!(
        "check: bill {} total {got} = 23.99 month + 12.00 SIM + {} usage ({} records); on-demand bill {} total {got_od} = 23.99 + {} usage ({} records), amount due {due} with the unpaid bill",
        bill["id"].as_str().unwrap_or_default(),
        p.previous.net + p.previous.tax,
        p.previous.records,
        od["id"].as_str().unwrap_or_default(),
        p.current.net + p.current.tax,
        p.current.records
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bill run on the host

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunSummary {
    accounts: u64,
    failed: u64,
    start_request_seconds: f64,
    seconds: f64,
    overall_per_sec: f64,
    interval_secs: f64,
    intervals: Vec<f64>,
    median_per_sec: f64,
    min_per_sec: f64,
    max_per_sec: f64,
    server_elapsed_ms: u64,
    host_cpu_seconds: f64,
    per_host_cpu_second: f64,
    /// What the host read and wrote through system calls during the run, per account billed
    /// (`/proc/<pid>/io` `rchar` and `wchar`: SQLite's WAL and database pages, checkpoints
    /// included, and its sockets).
    host_read_bytes_per_account: f64,
    host_written_bytes_per_account: f64,
    load_before: String,
    load_after: String,
}

fn run_bills(args: &Args) -> anyhow::Result<()> {
    let state = read_state(args)?;
    let start = state.period_start.ok_or_else(|| anyhow!("no period in the state"))?;
    let api = Http::new(args.req("url")?, &state.api_key);
    let interval: f64 = args.num("interval-secs", 1.0)?;
    let metrics = |name: &str| -> anyhow::Result<()> {
        if let (Some(admin), Some(dir)) = (args.str("admin"), args.str("out")) {
            let text = ureq::get(&format!("{admin}/metrics")).call()?.into_string()?;
            std::fs::write(Path::new(dir).join(name), text)?;
        }
        Ok(())
    };
    metrics("metrics-before.txt")?;
    let host_pid = args.str("host-pid");
    let cpu0 = host_pid.and_then(cpu_seconds);
    let io0 = host_pid.and_then(io_bytes);
    let load0 = load_average();
    let t0 = Instant::now();
    let run =
        api.expect("POST", &format!("{CB}/billRun"), Some(&json!({"periodStart": start, "billCycleDay": 1})), 201)?;
    let post = t0.elapsed().as_secs_f64();
    let id = id_of(&run)?;
    eprintln!("run: bill run {id} for {start} (POST answered in {post:.2} s)");
    // Known once the worker has queued every account.
    let mut total = None;
    let mut samples: Vec<(f64, u64)> = vec![(0.0, 0)];
    let mut k = 1u64;
    let status = loop {
        let target = t0 + Duration::from_secs_f64(interval * k as f64);
        std::thread::sleep(target.saturating_duration_since(Instant::now()));
        k += 1;
        let s = api.get(&format!("{CB}/billRun/{id}"))?;
        let t = t0.elapsed().as_secs_f64();
        let n = |f: &str| s[f].as_u64().unwrap_or(0);
        let finished = n("accountsDone") + n("accountsSkipped") + n("accountsFailed");
        let (pt, pn) = *samples.last().unwrap_or(&(0.0, 0));
        samples.push((t, finished));
        if total.is_none() && s.get("accountsTotal").is_some() {
            total = s["accountsTotal"].as_u64();
            eprintln!("run: t={t:>6.1}s every account queued: {} accounts", n("accountsTotal"));
        }
        let over = s["state"] != "inProgress";
        if k % 10 == 2 || over {
            eprintln!(
                "run: t={t:>6.1}s {finished:>8}/{} accounts, {} failed; {:>6} accounts/s now, {:>6} overall",
                total.map_or_else(|| format!("{}+", n("accountsQueued")), |t| t.to_string()),
                n("accountsFailed"),
                thousands((finished - pn) as f64 / (t - pt)),
                thousands(finished as f64 / t)
            );
        }
        if over {
            break s;
        }
        if t > args.num("timeout-secs", 7_200.0)? {
            bail!("the run did not finish in time: {s}");
        }
    };
    metrics("metrics-after.txt")?;
    let total = status["accountsTotal"].as_u64().unwrap_or(0);
    let host_cpu = match (cpu0, host_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let (host_read, host_written) = match (io0, host_pid.and_then(io_bytes)) {
        (Some((r0, w0)), Some((r1, w1))) => (r1.saturating_sub(r0) as f64, w1.saturating_sub(w0) as f64),
        _ => (0.0, 0.0),
    };
    let seconds = samples.last().map(|s| s.0).unwrap_or(0.0);
    // Per-interval rates; the last interval is partial (the run ended inside it).
    let mut intervals: Vec<f64> = samples.windows(2).map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0)).collect();
    intervals.pop();
    let summary = RunSummary {
        accounts: total,
        failed: status["accountsFailed"].as_u64().unwrap_or(0),
        start_request_seconds: post,
        seconds,
        overall_per_sec: total as f64 / seconds,
        interval_secs: interval,
        median_per_sec: median(&intervals),
        min_per_sec: intervals.iter().copied().fold(f64::INFINITY, f64::min),
        max_per_sec: intervals.iter().copied().fold(0.0, f64::max),
        intervals,
        server_elapsed_ms: status["elapsedMs"].as_u64().unwrap_or(0),
        host_cpu_seconds: host_cpu,
        per_host_cpu_second: if host_cpu > 0.0 { total as f64 / host_cpu } else { 0.0 },
        host_read_bytes_per_account: host_read / total.max(1) as f64,
        host_written_bytes_per_account: host_written / total.max(1) as f64,
        load_before: load0,
        load_after: load_average(),
    };
    if summary.failed > 0 {
        eprintln!("run: failures: {}", status["failure"]);
    }
    println!(
        "bss-host bill run: {} accounts in {:.1} s = {} accounts/s overall; per {interval} s interval: median {}, min-max {}-{} ({} intervals); {} failed",
        summary.accounts,
        summary.seconds,
        thousands(summary.overall_per_sec),
        thousands(summary.median_per_sec),
        thousands(summary.min_per_sec),
        thousands(summary.max_per_sec),
        summary.intervals.len(),
        summary.failed
    );
    println!(
        "bss-host bill run: host process CPU {:.1} s over {:.1} s ({:.0}% of {} cores) = {} accounts per host CPU-second; load average {} before, {} after",
        summary.host_cpu_seconds,
        summary.seconds,
        100.0 * summary.host_cpu_seconds
            / summary.seconds
            / std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        thousands(summary.per_host_cpu_second),
        summary.load_before,
        summary.load_after
    );
    if host_pid.is_some() {
        println!(
            "bss-host bill run: host read {} and wrote {} bytes an account (rchar/wchar: SQLite's WAL and database pages, checkpoints included)",
            thousands(summary.host_read_bytes_per_account),
            thousands(summary.host_written_bytes_per_account)
        );
    }
    if let Some(path) = args.str("summary") {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    if status["state"] != "completed" {
        bail!("the run ended {}: {status}", status["state"]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Native

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NativeSummary {
    accounts: usize,
    list_seconds: f64,
    gather_seconds: f64,
    build_seconds: f64,
    doc_seconds: f64,
    seconds: f64,
    build_per_sec: f64,
    gather_build_per_sec: f64,
    cpu_seconds: f64,
    lines: usize,
    #[serde(with = "rust_decimal::serde::str")]
    total: Decimal,
}

fn tenant_env(state: &State) -> Tenant {
    Tenant { tenant_id: state.tenant_id.clone(), key_id: "billrun-native".into() }
}

fn account_ids<B: KvBackend>(store: &Store<B>, tenant: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("t/{tenant}/billingAccount/");
    Ok(store
        .list_keys(&prefix, run::RUN_ACCOUNTS_MAX)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|k| k[prefix.len()..].to_string())
        .collect())
}

/// One account's bill as the run would compute it, read-only: (gather, build, document) times.
fn bill_one<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    start: NaiveDate,
    at: DateTime<Utc>,
    catalog: &bills::BillingCatalog,
) -> anyhow::Result<(bss_domain::billing::bill::Bill, [Duration; 3])> {
    let t0 = Instant::now();
    let acct = bills::account(env, id).map_err(api)?;
    let period = BillPeriod::containing(start, acct.bill_cycle_day);
    let ledger = env
        .store
        .tenant(&env.tenant.tenant_id)
        .get::<Ledger>("ledger", &acct.id)
        .map_err(|e| anyhow!("{e}"))?
        .map(|v| v.data)
        .unwrap_or_else(|| Ledger::new(&acct.id, acct.currency));
    let input = bills::gather_in(env, &acct, period, at, &ledger, catalog).map_err(api)?.input;
    let t1 = Instant::now();
    let bill = build_bill(&input).map_err(|e| anyhow!("{id}: {e}"))?;
    let t2 = Instant::now();
    let doc = serde_json::to_vec(&bills::bill_doc(&bill, Some("native"), false))?;
    std::hint::black_box(doc);
    let t3 = Instant::now();
    Ok((bill, [t1 - t0, t2 - t1, t3 - t2]))
}

fn native(args: &Args) -> anyhow::Result<()> {
    let state = read_state(args)?;
    let start = state.period_start.ok_or_else(|| anyhow!("no period in the state"))?;
    let data = PathBuf::from(args.req("data")?);
    let db = open_db(&data)?;
    let store = Store::new(host_kv(db.clone(), None));
    let tenant = tenant_env(&state);
    let env = Env::new(&store, &tenant);
    let t = Instant::now();
    let mut ids = account_ids(&store, &state.tenant_id)?;
    let list_seconds = t.elapsed().as_secs_f64();
    ids.truncate(args.num("limit", usize::MAX)?);
    let at = Utc::now();
    let mut s = NativeSummary { accounts: ids.len(), list_seconds, ..NativeSummary::default() };
    let cpu0 = cpu_seconds("thread-self");
    let started = Instant::now();
    let mut last = Instant::now();
    let mut times = [Duration::ZERO; 3];
    let mut catalog = None;
    for (n, id) in ids.iter().enumerate() {
        // The catalog once per batch of accounts, as the billing worker reads it.
        if n % run::ACCOUNTS_PER_MESSAGE == 0 {
            let t = Instant::now();
            catalog = Some(bills::BillingCatalog::load(&env).map_err(api)?);
            times[0] += t.elapsed();
        }
        let (bill, t) = bill_one(&env, id, start, at, catalog.as_ref().expect("read above"))?;
        for k in 0..3 {
            times[k] += t[k];
        }
        s.lines += bill.lines.len();
        s.total += bill.total.amount;
        if last.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "native: {} accounts, {} accounts/s",
                n + 1,
                thousands((n + 1) as f64 / started.elapsed().as_secs_f64())
            );
            last = Instant::now();
        }
    }
    s.gather_seconds = times[0].as_secs_f64();
    s.build_seconds = times[1].as_secs_f64();
    s.doc_seconds = times[2].as_secs_f64();
    s.build_per_sec = ids.len() as f64 / s.build_seconds;
    s.gather_build_per_sec = ids.len() as f64 / (s.gather_seconds + s.build_seconds + s.doc_seconds);
    s.seconds = started.elapsed().as_secs_f64();
    s.cpu_seconds = cpu_seconds("thread-self").zip(cpu0).map(|(b, a)| b - a).unwrap_or(0.0);
    let per = |x: f64| x * 1e6 / s.accounts.max(1) as f64;
    println!(
        "native, one thread: build_bill alone {} accounts/s ({:.1} µs/bill); gather (the billing component's KV reads and parsing) + build_bill + bill document {} accounts/s ({:.0} + {:.1} + {:.1} µs/bill; {:.1} s wall, {:.1} s CPU); {} accounts, {} lines, total {} EUR",
        thousands(s.build_per_sec),
        per(s.build_seconds),
        thousands(s.gather_build_per_sec),
        per(s.gather_seconds),
        per(s.build_seconds),
        per(s.doc_seconds),
        s.seconds,
        s.cpu_seconds,
        s.accounts,
        s.lines,
        s.total,
    );
    if let Some(k) = args.str("breakdown") {
        breakdown(&state, db, &ids[..k.parse::<usize>()?.min(ids.len())], start, at)?;
    }
    if let Some(path) = args.str("summary") {
        std::fs::write(path, serde_json::to_vec_pretty(&s)?)?;
    }
    Ok(())
}

/// Times the parts of gathering on some accounts, natively: the catalog snapshot, the account,
/// products and charges, the usage index listing and the usage documents; and the whole gather
/// with `list_keys` paged as the host pages it and in pages of 1,000 keys.
/// How a `HostKv` pages `list_keys`, in words.
fn pages(page: Option<usize>) -> String {
    match page {
        None => format!(
            "paged as bss-host pages it ({} keys, then {})",
            bss_host::bindings::SEEK_PAGE_KEYS,
            bss_host::kv::LIST_PAGE_MAX
        ),
        Some(n) => format!("in pages of {n} keys"),
    }
}

fn breakdown(
    state: &State,
    db: Arc<bss_host::db::SqliteDb>,
    ids: &[String],
    start: NaiveDate,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let tenant = tenant_env(state);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ids.len().max(1) as f64;
    let mut rows: Vec<(String, f64)> = Vec::new();
    for page in [None, Some(bss_host::kv::LIST_PAGE_MAX)] {
        let store = Store::new(host_kv(db.clone(), page));
        let env = Env::new(&store, &tenant);
        let mut parts = [Duration::ZERO; 6];
        let mut gather = Duration::ZERO;
        for id in ids {
            let t = Instant::now();
            let snap = bss_kit::catalog::snapshot(&env).map_err(api)?;
            std::hint::black_box(snap);
            parts[0] += t.elapsed();
            let t = Instant::now();
            let acct = bills::account(&env, id).map_err(api)?;
            parts[1] += t.elapsed();
            let t = Instant::now();
            let docs = store.tenant(&state.tenant_id);
            let products = docs
                .get::<bss_commerce::subscribers::AccountProducts>(bss_commerce::subscribers::ACCOUNT_PRODUCTS, id)
                .map_err(|e| anyhow!("{e}"))?
                .map(|v| v.data.products)
                .unwrap_or_default();
            let keys: Vec<String> = products.iter().filter_map(|p| docs.key("product", p)).collect();
            let charge_keys: Vec<String> = products
                .iter()
                .flat_map(|p| [1, 2].map(|n| format!("{p}.{n}")))
                .filter_map(|c| docs.key("billingCharge", &c))
                .collect();
            std::hint::black_box(store.backend().get_many(&keys)?);
            std::hint::black_box(store.backend().get_many(&charge_keys)?);
            parts[2] += t.elapsed();
            let period = BillPeriod::containing(start, acct.bill_cycle_day);
            for p in &products {
                let t = Instant::now();
                let prefix = bss_commerce::usage_keys::Keys::new(&state.tenant_id)
                    .by_product_prefix(p, Some(&start.to_string()));
                std::hint::black_box(store.list_keys(&prefix, bills::USAGE_RECORDS_MAX).map_err(|e| anyhow!("{e}"))?);
                parts[3] += t.elapsed();
                let t = Instant::now();
                std::hint::black_box(bills::usage_of(&env, p, &period, acct.currency).map_err(api)?);
                parts[4] += t.elapsed();
            }
            let t = Instant::now();
            std::hint::black_box(bills::corrections_of(&env, id, &period).map_err(api)?);
            parts[5] += t.elapsed();
            let t = Instant::now();
            let ledger = Ledger::new(&acct.id, acct.currency);
            std::hint::black_box(bills::gather(&env, &acct, period, at, &ledger).map_err(api)?);
            gather += t.elapsed();
        }
        if page.is_none() {
            for (name, d) in [
                "catalog snapshot (every catalog collection: list + get_many + parse)",
                "billing account (get + parse)",
                "accountProducts + product + charges (get, get_many)",
                "usage records index: list_keys from the prefix (billing lists it only for incomplete totals)",
                "usage of the products (usage_of: the period's totals; the index and records when incomplete)",
                "pending corrections (corrections_of: list_keys from the prefix, get_many)",
            ]
            .iter()
            .zip(parts)
            {
                rows.push((name.to_string(), per(d)));
            }
        }
        rows.push((format!("whole gather, list_keys {}", pages(page)), per(gather)));
    }
    for page in [None, Some(bss_host::kv::LIST_PAGE_MAX)] {
        let store = Store::new(CatalogMemo::new(host_kv(db.clone(), page), &state.tenant_id));
        let env = Env::new(&store, &tenant);
        let t = Instant::now();
        for id in ids {
            let acct = bills::account(&env, id).map_err(api)?;
            let ledger = Ledger::new(&acct.id, acct.currency);
            let period = BillPeriod::containing(start, acct.bill_cycle_day);
            std::hint::black_box(bills::gather(&env, &acct, period, at, &ledger).map_err(api)?);
        }
        rows.push((
            format!("whole gather, catalog read from the store once (parsed per bill), list_keys {}", pages(page)),
            per(t.elapsed()),
        ));
    }
    println!("native breakdown of gather, µs per account over {} accounts:", ids.len());
    for (name, us) in rows {
        println!("  {us:>9.1} µs  {name}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// After the run: the stored bills against the native total

fn compare(args: &Args) -> anyhow::Result<()> {
    let state = read_state(args)?;
    let start = state.period_start.ok_or_else(|| anyhow!("no period in the state"))?;
    let native: NativeSummary = serde_json::from_slice(&std::fs::read(args.req("native")?)?)?;
    let db = open_db(Path::new(args.req("data")?))?;
    let store = Store::new(host_kv(db, None));
    let prefix = format!("t/{}/customerBill/", state.tenant_id);
    let keys = store.list_keys(&prefix, usize::MAX).map_err(|e| anyhow!("{e}"))?;
    let (mut count, mut total, mut numbers) = (0usize, Decimal::ZERO, Vec::new());
    let suffix = format!(":{start}");
    for chunk in keys.chunks(1000) {
        for (k, v) in store.backend().get_many(chunk)? {
            let doc: bss_kit::Versioned<Value> = serde_json::from_slice(&v.unwrap_or_default())?;
            if let Some(no) =
                doc.data["billNo"].as_str().and_then(|n| n.rsplit('-').next()).and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(no);
            }
            if k.ends_with(&suffix) {
                count += 1;
                total += dec(&doc.data["taxIncludedAmount"]["value"]);
            }
        }
    }
    numbers.sort_unstable();
    let gap_free = numbers.iter().enumerate().all(|(i, n)| *n == i as u64 + 1);
    // The seeded accounts and the template account made over the API (nothing to bill this period).
    let expected = state.accounts + 1;
    println!(
        "compare: {count} bills for {start} (expected {expected}: {} seeded accounts and the API-made template), total {total} EUR (native {}); {} bills numbered 1..{}{}",
        state.accounts,
        native.total,
        numbers.len(),
        numbers.last().copied().unwrap_or(0),
        if gap_free { ", gap-free" } else { " WITH GAPS OR REPEATS" }
    );
    if count != expected || total != native.total || !gap_free {
        bail!("the host's bills differ from the native run");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    bss_host::tune_allocator();
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let args = Args::parse(argv)?;
    match command.as_str() {
        "setup" => setup(&args),
        "seed" => seed(&args),
        "verify" => verify(&args),
        "native" => native(&args),
        "run" => run_bills(&args),
        "check" => check(&args),
        "compare" => compare(&args),
        _ => bail!(
            "usage: billrun-seed setup|seed|verify|native|run|check|compare [options] (see the header of benches/src/bin/billrun-seed.rs)"
        ),
    }
}
