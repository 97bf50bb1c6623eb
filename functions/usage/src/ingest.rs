//! The mediation and rating pipeline of one batch (a single record is a batch of one):
//! normalise → drop in-batch repeats → guide each record to its product, account and tariff → per
//! account shard, under the shard's lease: look up the ids already seen (a duplicate is
//! acknowledged, another payload under a rated id refused), rate against the period's buckets,
//! debit prepaid money or count postpaid credit, and store records, buckets and money with one
//! atomic `set_many` → store held records (which checks their ids too) → report.
//!
//! Why a lease per shard and not a compare-and-swap per record: a batch of 1,000 records would
//! need 1,000 CAS round-trips; under the lease the same work is a handful of batch calls, and a
//! crash before the `set_many` leaves nothing (the records are rated again when re-sent), after
//! it everything (the re-sent records are duplicates). Exactly once therefore holds per record
//! id across concurrent batches and restarts for records of the same account (a retry always
//! is); two *different* payloads under one id sent concurrently for two different accounts can
//! both be rated — the one case the lease does not cover, reported by `conflicts` only when the
//! batches do not overlap in time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use bss_commerce::subscribers::{self, LineEntry, SubscriberLine};
use bss_domain::catalog::price::PriceView;
use bss_domain::catalog::tariff::Tariff;
use bss_domain::catalog::tax::TaxRates;
use bss_domain::catalog::{Kind as CatalogKind, Lifecycle, Snapshot, describe};
use bss_domain::money::{Money, RoundingRule};
use bss_domain::order::proration::billing_period;
use bss_domain::rating::{
    Buckets, NormaliseConfig, PreparedTariff, RatedRecord, RatingContext, RawUsage, Taxation, UsageRecord, normalise,
};
use bss_domain::stored;
use bss_domain::usage::mediation::{self, BatchReport, Seen, UsageStatus};
use bss_domain::usage::{CreditLimit, CsvProblem};
use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, Versioned};
use bss_kit::resource::Env;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::model::{AccountState, CreditState, Keys, PeriodState, UsageDoc, storable_id};
use bss_domain::usage::UsageTotals;

/// Most records in one batch request.
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// Records per atomic write under a lease. Each writes two keys and may touch one period state,
/// one account state and one product's totals: at most 5 × 200 = 1,000 keys, inside the
/// platform's 1,000 keys of one `set_many` ([`bss_kit::kv::BATCH_MAX`]).
pub const GROUP_RECORDS_MAX: usize = 200;
const _: () = assert!(5 * GROUP_RECORDS_MAX <= bss_kit::kv::BATCH_MAX);
/// Why a record whose id was rated with another payload is refused.
const ALREADY_RATED_OTHER: &str = "already rated with another payload; the stored record is kept";
/// Deepest account hierarchy followed to its top.
pub const HIERARCHY_DEPTH_MAX: usize = 16;

/// How a batch is read and rated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Normalisation of numbers and times (includes `now`).
    pub normalise: NormaliseConfig,
    /// Shards of account state (each with its own lease).
    pub shards: u32,
    /// Lease time to live.
    pub lease_ttl_ms: u64,
}

/// Something to announce once the batch is stored.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Event type (`CreditLimitThresholdEvent`…).
    pub event_type: &'static str,
    /// Ordering key.
    pub key: String,
    /// Payload.
    pub payload: Value,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The per-batch answer.
    pub report: BatchReport,
    /// Events to publish.
    pub notices: Vec<Notice>,
    /// The stored record of a batch of one (the single-record answer); empty for larger batches,
    /// whose answer is the report (keeping a thousand documents only to drop them cost 2% of
    /// ingestion), unless the pipeline is [`Pipeline::keeping_documents`].
    pub docs: BTreeMap<usize, UsageDoc>,
}

/// What rating reads of a stored billing account. Only these fields are built; the rest of the
/// document is skipped while parsing (parsing whole documents into JSON trees was a quarter of
/// guiding a batch). Each is read as the full document's field was, so odd values read the same.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RatingFields {
    #[serde(default)]
    currency: Option<Value>,
    #[serde(default)]
    bill_cycle_day: Option<Value>,
    #[serde(default)]
    time_zone: Option<Value>,
    #[serde(default)]
    account_type: Option<Value>,
    #[serde(default)]
    credit_limit: Option<Value>,
    #[serde(default)]
    parent_account: Option<Value>,
}

/// One record of the batch on its way through.
#[derive(Debug)]
struct Item {
    index: usize,
    id: String,
    fingerprint: String,
    record: UsageRecord,
    raw: RawUsage,
}

/// Records of one shard rated and stored together, under one lease.
type Group = Vec<(Item, Guide)>;

/// Where a record goes.
#[derive(Debug, Clone)]
pub struct Guide {
    /// The product that carried the subscriber then.
    pub line: LineEntry,
    /// Its billing account.
    pub account: Rc<AccountInfo>,
    /// The tariff.
    pub tariff: Rc<PreparedTariff>,
    /// The tax of the usage price.
    pub tax: Option<Taxation>,
    /// Start of the bill period.
    pub period: String,
    /// Whose allowance buckets the record consumes: the product, or `pool.<topAccount>` when the
    /// offering shares allowances across the account hierarchy.
    pub bucket_owner: String,
    /// Start of the buckets' period (the top account's, for a pool).
    pub bucket_period: String,
}

/// What rating needs of a billing account.
#[derive(Debug, Clone)]
pub struct AccountInfo {
    /// Id.
    pub id: String,
    /// Billing currency.
    pub currency: String,
    /// Time zone.
    pub tz: chrono_tz::Tz,
    /// Bill cycle day.
    pub bill_cycle_day: u32,
    /// `accountType: prepaid`.
    pub prepaid: bool,
    /// Postpaid credit limit.
    pub credit_limit: Option<Money>,
    /// `parentAccount.id`.
    pub parent: Option<String>,
    /// The top of its hierarchy (itself without a parent): the state of a whole hierarchy is
    /// serialised by one lease, so a pool and each member's money never race.
    pub root: String,
}

fn kv_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// An account's money state, as JSON (records, buckets and totals, which every record rewrites,
/// are stored in the compact form of `bss_domain::stored`).
fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}

pub use bss_commerce::usage_keys::read_many;

/// The pipeline's state for one request: what it loaded once (catalog, tariffs, accounts).
pub struct Pipeline<'a, B> {
    env: &'a Env<'a, B>,
    keys: Keys,
    cfg: Config,
    catalog: Option<Snapshot>,
    /// Read from `catalog` once, as the two below: a batch guides every record with them.
    tax_rates: Option<Rc<TaxRates>>,
    /// Offering id → its prices, read.
    offering_prices: HashMap<String, Rc<Vec<PriceView>>>,
    /// Offering id → whether its allowances are shared across the account hierarchy.
    shared_allowances: HashMap<String, bool>,
    tariffs: HashMap<String, Option<Rc<PreparedTariff>>>,
    accounts: HashMap<String, Option<Rc<AccountInfo>>>,
    /// Record id → the online-charging reservation its charge settles (released first).
    settles: HashMap<String, String>,
    /// Whether [`Outcome::docs`] keeps every stored document ([`Pipeline::keeping_documents`]).
    keep_all_docs: bool,
    /// Whether the batch being ingested keeps them (a batch of one, or all kept).
    keep_docs: bool,
}

impl<'a, B: KvBackend> Pipeline<'a, B> {
    /// A pipeline for the caller's tenant.
    pub fn new(env: &'a Env<'a, B>, cfg: Config) -> Self {
        Pipeline {
            env,
            keys: Keys::new(&env.tenant.tenant_id),
            cfg,
            catalog: None,
            tax_rates: None,
            offering_prices: HashMap::new(),
            shared_allowances: HashMap::new(),
            tariffs: HashMap::new(),
            accounts: HashMap::new(),
            settles: HashMap::new(),
            keep_all_docs: false,
            keep_docs: false,
        }
    }

    /// A pipeline whose [`Outcome::docs`] holds every stored document of a batch, not only the
    /// record of a batch of one (for tools that inspect the ratings of what they load).
    pub fn keeping_documents(mut self) -> Self {
        self.keep_all_docs = true;
        self
    }

    /// The record `record_id` settles the reservation `reservation_id` (online charging): its
    /// charge is debited after the reservation is released, under the same lease.
    pub fn settles(&mut self, record_id: &str, reservation_id: &str) {
        self.settles.insert(record_id.to_string(), reservation_id.to_string());
    }

    /// The tenant's raw keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `f` under the lease of the shard of `account_id`.
    pub fn under_lease<T>(&self, account_id: &str, f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
        let shard = mediation::shard_of(account_id, self.cfg.shards);
        let now_ms = || bss_kit::ids::now_ms();
        bss_kit::lease::with_lease(self.kv(), &self.keys.lease(shard), self.cfg.lease_ttl_ms, &now_ms, f)
    }

    /// Runs `f` with the pipeline under the lease of the shard of `account_id`.
    pub fn under_lease_mut<T>(
        &mut self,
        account_id: &str,
        f: impl FnOnce(&mut Self) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let env = self.env;
        let kv = env.store.backend();
        let key = self.keys.lease(mediation::shard_of(account_id, self.cfg.shards));
        let now_ms = || bss_kit::ids::now_ms();
        let lease = bss_kit::lease::acquire(kv, &key, self.cfg.lease_ttl_ms, &now_ms)?;
        let out = f(self);
        let released = bss_kit::lease::release(kv, lease);
        let out = out?;
        released?;
        Ok(out)
    }

    /// Guides one normalised record: its product, account, tariff, tax and period.
    pub fn guide_record(&mut self, record: &UsageRecord) -> Result<Guide, String> {
        let item = Item {
            index: 0,
            id: record.record_id.clone(),
            fingerprint: String::new(),
            record: record.clone(),
            raw: RawUsage::default(),
        };
        match self.guide(std::slice::from_ref(&item)) {
            Ok(mut m) => m.remove(&0).unwrap_or_else(|| Err("not guided".into())),
            Err(e) => Err(e.message),
        }
    }

    /// The usage tariff and tax of an offering for a record (rerating uses today's catalog).
    pub fn tariff_of(
        &mut self,
        offering_id: &str,
        rec: &UsageRecord,
    ) -> Result<(Rc<PreparedTariff>, Option<Taxation>), String> {
        self.tariff_for(offering_id, rec)
    }

    /// Whether an offering's products share their allowances across the account hierarchy.
    pub fn shares_allowances(&mut self, offering_id: &str) -> Result<bool, ApiError> {
        Ok(self
            .catalog()?
            .get(CatalogKind::ProductOffering, offering_id)
            .and_then(|o| bss_domain::catalog::offering::OfferingView::read(o).ok())
            .is_some_and(|o| o.shares_allowances))
    }

    /// The account's rating facts, loaded once.
    pub fn account(&mut self, id: &str) -> Result<Option<Rc<AccountInfo>>, ApiError> {
        if !self.accounts.contains_key(id) {
            self.load_accounts(&[id.to_string()])?;
        }
        Ok(self.accounts.get(id).cloned().flatten())
    }

    fn kv(&self) -> &B {
        self.env.store.backend()
    }

    fn now(&self) -> DateTime<Utc> {
        self.cfg.normalise.now
    }

    fn now_text(&self) -> String {
        self.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn catalog(&mut self) -> Result<&Snapshot, ApiError> {
        if self.catalog.is_none() {
            self.catalog = Some(bss_kit::catalog::snapshot(self.env)?);
        }
        Ok(self.catalog.as_ref().expect("loaded above"))
    }

    /// Mediates and rates a batch (see the module doc).
    pub fn ingest(&mut self, batch: Vec<Result<RawUsage, CsvProblem>>) -> Result<Outcome, ApiError> {
        if batch.len() > BATCH_RECORDS_MAX {
            return Err(ApiError::payload_too_large(format!(
                "{} records: a batch holds at most {BATCH_RECORDS_MAX}",
                batch.len()
            )));
        }
        let mut out = Outcome::default();
        out.report.received = batch.len();
        self.keep_docs = self.keep_all_docs || batch.len() == 1;
        let mut held: Vec<(usize, UsageDoc)> = Vec::new();
        let mut items = Vec::new();
        let mut first: HashMap<String, (usize, String)> = HashMap::new();
        for (index, raw) in batch.into_iter().enumerate() {
            let raw = match raw {
                Ok(r) => r,
                Err(p) => {
                    out.report.note(index, p.record_id.as_deref(), "rejected", p.to_string());
                    continue;
                }
            };
            let id = raw.record_id.trim().to_string();
            let (fingerprint, normalised) = match normalise(&raw, &self.cfg.normalise) {
                Ok(r) => (mediation::fingerprint(&r), Ok(r)),
                Err(problems) => {
                    let text = serde_json::to_string(&raw).unwrap_or_default();
                    (mediation::raw_fingerprint(&text), Err(describe(&problems)))
                }
            };
            if !storable_id(&id) {
                let why = normalised.err().unwrap_or_default();
                let reason = format!("recordId: {id:?} is not 1 to 128 characters of A-Z a-z 0-9 . _ : -; {why}");
                out.report.note(index, Some(&id).filter(|i| !i.is_empty()).map(|s| s.as_str()), "rejected", reason);
                continue;
            }
            // A repeat inside the batch: the first occurrence decides.
            if let Some((_, fp)) = first.get(&id) {
                if *fp == fingerprint {
                    out.report.note(index, Some(&id), "duplicate", "repeated in this batch");
                } else {
                    out.report.note(
                        index,
                        Some(&id),
                        "conflict",
                        "this id appears earlier in the batch with another payload",
                    );
                }
                continue;
            }
            first.insert(id.clone(), (index, fingerprint.clone()));
            match normalised {
                Ok(record) => items.push(Item { index, id, fingerprint, record, raw }),
                Err(reason) => {
                    held.push((index, self.held_doc(&id, &fingerprint, UsageStatus::Rejected, raw, None, reason)))
                }
            }
        }
        // Ids already seen are found under the lease (`rate_group`) or when a held record is
        // stored (`store_held`), not here too: reading every id once more before guiding cost a
        // lookup a record for the few records a batch repeats, which are guided for nothing.
        let mut guides = self.guide(&items)?;
        let mut by_shard: BTreeMap<u32, Group> = BTreeMap::new();
        for item in items {
            match guides.remove(&item.index) {
                Some(Ok(g)) => {
                    let shard = mediation::shard_of(&g.account.root, self.cfg.shards);
                    by_shard.entry(shard).or_default().push((item, g));
                }
                Some(Err(reason)) => {
                    let doc = self.held_doc(
                        &item.id,
                        &item.fingerprint,
                        UsageStatus::Recycled,
                        item.raw.clone(),
                        Some(item.record.clone()),
                        reason,
                    );
                    held.push((item.index, doc));
                }
                None => {}
            }
        }
        // Each shard's groups in order, one lease each. A shard whose lease another batch holds
        // waits at the back while the batch rates its other shards: concurrent batches all start
        // with the same shards, and each waited (polling with backoff) behind the one before it,
        // shard by shard. The batch waits only when every shard it has left is held.
        let mut pending: VecDeque<(u32, VecDeque<Group>)> =
            by_shard.into_iter().map(|(shard, group)| (shard, chunks(group, GROUP_RECORDS_MAX).into())).collect();
        let (kv, ttl, now_ms) = (self.env.store.backend(), self.cfg.lease_ttl_ms, || bss_kit::ids::now_ms());
        let mut held_by_others = 0;
        while let Some((shard, mut groups)) = pending.pop_front() {
            let key = self.keys.lease(shard);
            let lease = if held_by_others <= pending.len() {
                bss_kit::lease::try_acquire(kv, &key, ttl, &now_ms)?
            } else {
                Some(bss_kit::lease::acquire(kv, &key, ttl, &now_ms)?)
            };
            let Some(lease) = lease else {
                held_by_others += 1;
                pending.push_back((shard, groups));
                continue;
            };
            held_by_others = 0;
            let group = groups.pop_front().expect("a pending shard has a group left");
            let rated = self.rate_group(group, &mut out, &mut held);
            let released = bss_kit::lease::release(kv, lease);
            rated?;
            released?;
            if !groups.is_empty() {
                pending.push_front((shard, groups));
            }
        }
        self.store_held(held, &mut out)?;
        out.report.records.sort_by_key(|r| r.index);
        debug_assert!(out.report.is_balanced());
        Ok(out)
    }

    fn held_doc(
        &self,
        id: &str,
        fingerprint: &str,
        status: UsageStatus,
        raw: RawUsage,
        record: Option<UsageRecord>,
        reason: String,
    ) -> UsageDoc {
        UsageDoc {
            id: id.to_string(),
            status,
            fingerprint: fingerprint.to_string(),
            raw: Some(raw),
            record,
            reason: Some(reason),
            product_id: None,
            account_id: None,
            customer_id: None,
            partner_id: None,
            period: None,
            rated: None,
            previous: None,
            tax_percent: None,
            received_at: self.now_text(),
            rated_at: None,
        }
    }

    /// Looks up product, account and tariff for each record; `Err(reason)` holds it for recycling.
    fn guide(&mut self, items: &[Item]) -> Result<HashMap<usize, Result<Guide, String>>, ApiError> {
        let docs = self.env.store.tenant(&self.env.tenant.tenant_id);
        let line_keys = distinct(
            items
                .iter()
                .filter_map(|i| subscribers::line_id(&i.record.subscriber))
                .filter_map(|id| docs.key(subscribers::COLLECTION, &id)),
        );
        let lines: HashMap<String, SubscriberLine> = read_many(self.kv(), &line_keys)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, kv_json::<Versioned<SubscriberLine>>(&v)?.data)))
            .collect();
        let mut out = HashMap::with_capacity(items.len());
        let mut entries = Vec::with_capacity(items.len());
        let (wholesale, items): (Vec<&Item>, Vec<&Item>) = items.iter().partition(|i| i.record.carrier.is_some());
        for item in wholesale {
            let g = self.guide_wholesale(&item.record);
            out.insert(item.index, g);
        }
        for item in items {
            let key =
                subscribers::line_id(&item.record.subscriber).and_then(|id| docs.key(subscribers::COLLECTION, &id));
            let entry = key.and_then(|k| lines.get(&k)).and_then(|l| l.at(item.record.start)).cloned();
            match entry {
                Some(e) => entries.push((item, e)),
                None => {
                    out.insert(
                        item.index,
                        Err(format!(
                            "subscriber: {} has no product at {}",
                            item.record.subscriber,
                            item.record.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        )),
                    );
                }
            }
        }
        let wanted: Vec<String> = entries
            .iter()
            .map(|(_, e)| e.billing_account_id.clone())
            .filter(|a| !self.accounts.contains_key(a))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.load_accounts(&wanted)?;
        for (item, entry) in entries {
            let g = self.guide_one(item, entry);
            out.insert(item.index, g);
        }
        Ok(out)
    }

    /// Guides an interconnect or roaming-partner record: the carrier is a partner (`partyRole`
    /// id, role interconnectCarrier or roamingPartner) whose `tariff {id}` rates it, untaxed, in
    /// the tariff's currency, which must be its settlement account's; settled monthly (UTC).
    fn guide_wholesale(&mut self, rec: &UsageRecord) -> Result<Guide, String> {
        let carrier = rec.carrier.clone().unwrap_or_default();
        let docs = self.env.store.tenant(&self.env.tenant.tenant_id);
        let read = |collection: &str, id: &str| -> Option<Value> {
            docs.get::<Value>(collection, id).ok().flatten().map(|v| v.data)
        };
        let partner =
            read("partyRole", &carrier).ok_or_else(|| format!("carrier: partner {carrier:?} does not exist"))?;
        let role = partner.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "interconnectCarrier" | "roamingPartner") {
            return Err(format!(
                "carrier: partner {carrier} is a {role}, not an interconnect carrier or roaming partner"
            ));
        }
        let tariff_id = partner
            .pointer("/tariff/id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("partner {carrier} has no wholesale tariff (tariff.id)"))?
            .to_string();
        let account_id = partner.pointer("/account/0/id").and_then(Value::as_str).unwrap_or_default().to_string();
        let settlement = read("settlementAccount", &account_id)
            .ok_or_else(|| format!("partner {carrier}: settlement account {account_id:?} does not exist"))?;
        let currency = settlement.get("currency").and_then(Value::as_str).unwrap_or_default().to_string();
        self.catalog().map_err(|e| e.message.clone())?;
        let tariff = self
            .tariff(&tariff_id)
            .ok_or_else(|| format!("partner {carrier}: tariff {tariff_id} does not exist or is invalid"))?;
        if tariff.currency().code() != currency {
            return Err(format!(
                "partner {carrier}: tariff {tariff_id} is in {} but the settlement account is in {currency}: no silent conversion",
                tariff.currency().code()
            ));
        }
        let (start, _) = billing_period(rec.start.date_naive(), 1);
        let line = LineEntry {
            product_id: format!("partner.{carrier}"),
            billing_account_id: account_id.clone(),
            offering_id: String::new(),
            customer_id: String::new(),
            start_date: String::new(),
            termination_date: None,
            status: "active".into(),
        };
        let account = Rc::new(AccountInfo {
            id: account_id.clone(),
            currency,
            tz: chrono_tz::UTC,
            bill_cycle_day: 1,
            prepaid: false,
            credit_limit: None,
            parent: None,
            root: account_id.clone(),
        });
        let owner = line.product_id.clone();
        let period = start.to_string();
        Ok(Guide { line, account, tariff, tax: None, bucket_owner: owner, bucket_period: period.clone(), period })
    }

    /// Loads accounts and every ancestor (at most [`HIERARCHY_DEPTH_MAX`] levels), then their roots.
    fn load_accounts(&mut self, ids: &[String]) -> Result<(), ApiError> {
        let mut wanted: Vec<String> = ids.iter().filter(|a| !self.accounts.contains_key(*a)).cloned().collect();
        for _ in 0..HIERARCHY_DEPTH_MAX {
            if wanted.is_empty() {
                break;
            }
            self.load_account_docs(&wanted)?;
            let mut parents: Vec<String> = wanted
                .iter()
                .filter_map(|a| self.accounts.get(a).cloned().flatten())
                .filter_map(|a| a.parent.clone())
                .filter(|p| !self.accounts.contains_key(p))
                .collect();
            parents.sort();
            parents.dedup();
            wanted = parents;
        }
        let loaded: Vec<String> = self.accounts.keys().cloned().collect();
        for id in loaded {
            let Some(info) = self.accounts.get(&id).cloned().flatten() else { continue };
            let mut root = info.id.clone();
            let mut at = info.parent.clone();
            for _ in 0..HIERARCHY_DEPTH_MAX {
                match at.as_ref().and_then(|p| self.accounts.get(p).cloned().flatten()) {
                    Some(parent) => {
                        root = parent.id.clone();
                        at = parent.parent.clone();
                    }
                    None => break,
                }
            }
            if root != info.root {
                let mut updated = (*info).clone();
                updated.root = root;
                self.accounts.insert(id, Some(Rc::new(updated)));
            }
        }
        Ok(())
    }

    fn load_account_docs(&mut self, ids: &[String]) -> Result<(), ApiError> {
        let docs = self.env.store.tenant(&self.env.tenant.tenant_id);
        let keys: Vec<String> = ids.iter().filter_map(|a| docs.key("billingAccount", a)).collect();
        let found = read_many(self.kv(), &keys)?;
        for id in ids {
            let fields = docs
                .key("billingAccount", id)
                .and_then(|k| found.get(&k))
                .and_then(|b| kv_json::<Versioned<RatingFields>>(b))
                .map(|v| v.data);
            let info = fields.map(|f| {
                let account =
                    bss_domain::order::inventory::Account::from_fields(f.bill_cycle_day.as_ref(), f.time_zone.as_ref());
                let credit_limit = f
                    .credit_limit
                    .as_ref()
                    .and_then(|m| bss_domain::catalog::money_from_json(m).ok())
                    .filter(|m| m.amount > Decimal::ZERO);
                Rc::new(AccountInfo {
                    id: id.clone(),
                    currency: f.currency.as_ref().and_then(Value::as_str).unwrap_or_default().to_string(),
                    tz: account.tz,
                    bill_cycle_day: account.bill_cycle_day,
                    prepaid: f
                        .account_type
                        .as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case("prepaid")),
                    credit_limit,
                    parent: f
                        .parent_account
                        .as_ref()
                        .and_then(|p| p.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    root: id.clone(),
                })
            });
            self.accounts.insert(id.clone(), info);
        }
        Ok(())
    }

    fn guide_one(&mut self, item: &Item, entry: LineEntry) -> Result<Guide, String> {
        let account = self
            .accounts
            .get(&entry.billing_account_id)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("billingAccount: {:?} does not exist", entry.billing_account_id))?;
        let (tariff, tax) = self.tariff_for(&entry.offering_id, &item.record)?;
        if tariff.currency().code() != account.currency {
            return Err(format!(
                "tariff {} is in {} but account {} bills in {}: no silent conversion",
                tariff.tariff().id,
                tariff.currency().code(),
                account.id,
                account.currency
            ));
        }
        let period = period_start(&account, item.record.start);
        let shared = self.shares_allowances_of(&entry.offering_id);
        let (bucket_owner, bucket_period) = match shared {
            true => {
                let top = self.accounts.get(&account.root).cloned().flatten().unwrap_or_else(|| account.clone());
                (format!("pool.{}", top.id), period_start(&top, item.record.start))
            }
            false => (entry.product_id.clone(), period.clone()),
        };
        Ok(Guide { line: entry, account, tariff, tax, period, bucket_owner, bucket_period })
    }

    /// The usage tariff of an offering for a record's service, and the tax of its price.
    fn tariff_for(
        &mut self,
        offering_id: &str,
        rec: &UsageRecord,
    ) -> Result<(Rc<PreparedTariff>, Option<Taxation>), String> {
        let at = rec.start;
        let prices = self.offering_prices(offering_id)?;
        let mut candidates = Vec::new();
        for price in prices.iter() {
            if price.lifecycle == Lifecycle::InDesign || !price.valid_for.contains(at) {
                continue;
            }
            if let Some(t) = price.tariff_id.clone() {
                candidates.push((t, price.tax_category.clone()));
            }
        }
        if candidates.is_empty() {
            return Err(format!("offering {offering_id} has no usage price valid at {at}"));
        }
        let rates = self.tax_rates().map_err(|e| e.message.clone())?;
        let tax_of = |cat: &Option<String>| cat.as_deref().and_then(|c| rates.rate_for(c, None, at)).map(Taxation::new);
        let mut fallback = None;
        for (tariff_id, cat) in candidates {
            let Some(t) = self.tariff(&tariff_id) else { continue };
            let service = t.tariff().service.clone();
            // A tariff of one service (voice, sms, data) rates only it; a tariff of a bundle of
            // services (`mobile`, `interconnect`, none) rates all of them, after the specific ones.
            match service.as_deref().and_then(bss_domain::rating::Service::parse) {
                Some(s) if s == rec.service => return Ok((t, tax_of(&cat))),
                Some(_) => {}
                None => fallback = fallback.or_else(|| Some((t, tax_of(&cat)))),
            }
        }
        fallback.ok_or_else(|| format!("offering {offering_id} has no usage tariff for {}", rec.service.as_str()))
    }

    /// Whether offering `offering_id` shares its allowances across the account hierarchy (an
    /// offering that does not read shares nothing), read once a batch.
    fn shares_allowances_of(&mut self, offering_id: &str) -> bool {
        if let Some(shared) = self.shared_allowances.get(offering_id) {
            return *shared;
        }
        let shared = self
            .catalog
            .as_ref()
            .and_then(|snap| snap.get(CatalogKind::ProductOffering, offering_id))
            .and_then(|o| bss_domain::catalog::offering::OfferingView::read(o).ok())
            .is_some_and(|o| o.shares_allowances);
        self.shared_allowances.insert(offering_id.to_string(), shared);
        shared
    }

    /// The prices of offering `offering_id` that read (others never apply), read once a batch.
    fn offering_prices(&mut self, offering_id: &str) -> Result<Rc<Vec<PriceView>>, String> {
        if let Some(p) = self.offering_prices.get(offering_id) {
            return Ok(p.clone());
        }
        let snap = self.catalog().map_err(|e| e.message.clone())?;
        let offering = snap
            .get(CatalogKind::ProductOffering, offering_id)
            .ok_or_else(|| format!("productOffering: {offering_id:?} does not exist"))?;
        let prices: Vec<PriceView> = offering
            .get("productOfferingPrice")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("id").and_then(Value::as_str))
            .filter_map(|pid| snap.get(CatalogKind::ProductOfferingPrice, pid))
            .filter_map(|doc| PriceView::read(doc).ok())
            .collect();
        let prices = Rc::new(prices);
        self.offering_prices.insert(offering_id.to_string(), prices.clone());
        Ok(prices)
    }

    fn tax_rates(&mut self) -> Result<Rc<TaxRates>, ApiError> {
        if self.tax_rates.is_none() {
            let rates = TaxRates::read(self.catalog()?);
            self.tax_rates = Some(Rc::new(rates));
        }
        Ok(self.tax_rates.clone().expect("read above"))
    }

    fn tariff(&mut self, id: &str) -> Option<Rc<PreparedTariff>> {
        if let Some(t) = self.tariffs.get(id) {
            return t.clone();
        }
        let snap = self.catalog.as_ref()?;
        let prepared = snap.get(CatalogKind::Tariff, id).and_then(|doc| {
            let mut t = Tariff::read(doc).ok()?;
            t.id = id.to_string();
            if t.version.is_none() {
                // A tariff corrected in place is a new version for rerating: its last update.
                t.version = doc.get("lastUpdate").and_then(Value::as_str).map(str::to_string);
            }
            Some(Rc::new(PreparedTariff::new(t)))
        });
        self.tariffs.insert(id.to_string(), prepared.clone());
        prepared
    }

    /// Rates a group of records of one shard under its lease and stores them atomically.
    fn rate_group(&self, group: Group, out: &mut Outcome, held: &mut Vec<(usize, UsageDoc)>) -> Result<(), ApiError> {
        let k = &self.keys;
        let mut keys: Vec<String> = group.iter().map(|(i, _)| k.usage(&i.id)).collect();
        keys.extend(distinct(group.iter().map(|(_, g)| k.state(&g.bucket_owner, &g.bucket_period))));
        keys.extend(distinct(group.iter().map(|(_, g)| k.account(&g.account.id))));
        keys.extend(distinct(group.iter().map(|(_, g)| k.totals(&g.line.product_id, &g.period))));
        // Buckets and totals written before the product keys moved are read at their old keys.
        let current = bss_commerce::usage_keys::get_many(self.kv(), k, &keys)?;
        // Totals this group starts count every record of their period (`complete`, so a bill
        // reads them without listing the index) when the index holds no record yet: one rated
        // before totals were kept would be missing from them.
        let mut starts_complete: HashMap<String, bool> = HashMap::new();
        let mut seen = HashSet::new();
        for (_, g) in &group {
            if !seen.insert((g.line.product_id.as_str(), g.period.as_str())) {
                continue;
            }
            let tkey = k.totals(&g.line.product_id, &g.period);
            if !current.contains_key(&tkey) {
                let indexed =
                    bss_commerce::usage_keys::record_ids(self.env.store, k, &g.line.product_id, &g.period, 1)?;
                starts_complete.insert(tkey, indexed.is_empty());
            }
        }
        let mut states: HashMap<String, PeriodState> = HashMap::new();
        let mut accounts: HashMap<String, AccountState> = HashMap::new();
        let mut totals: HashMap<String, UsageTotals> = HashMap::new();
        let mut writes: Vec<(String, Vec<u8>)> = Vec::with_capacity(group.len() * 2 + 8);
        let mut rated_count = 0;
        let mut rated_docs = Vec::new();
        let mut unheld = Vec::new();
        let now = self.now();
        let now_text = self.now_text();
        // Ids are unique here: `ingest` keeps the first occurrence of an id in a batch.
        for ((item, g), ukey) in group.into_iter().zip(keys) {
            // Re-checked under the lease: a concurrent batch may have rated it meanwhile.
            let seen = current.get(&ukey).and_then(|b| stored::decode::<UsageDoc>(b).ok());
            let was_held = seen.as_ref().is_some_and(|d| d.status.is_held());
            match mediation::classify(seen.as_ref().map(|d| (d.status, d.fingerprint.as_str())), &item.fingerprint) {
                Seen::New => {}
                Seen::Duplicate => {
                    out.report.note(item.index, Some(&item.id), "duplicate", "already rated");
                    continue;
                }
                Seen::Conflict { .. } => {
                    out.report.note(item.index, Some(&item.id), "conflict", ALREADY_RATED_OTHER);
                    continue;
                }
            }
            let state = loaded(&mut states, k.state(&g.bucket_owner, &g.bucket_period), |skey| {
                current
                    .get(skey)
                    .and_then(|b| stored::decode::<PeriodState>(b).ok())
                    .unwrap_or(PeriodState { buckets: Vec::new(), records: 0 })
            });
            let tariff = &g.tariff;
            let tid = &tariff.tariff().id;
            let slot = match state.buckets.iter().position(|b| b.tariff_id == *tid) {
                Some(i) => i,
                None => {
                    state.buckets.push(tariff.fresh_buckets());
                    state.buckets.len() - 1
                }
            };
            // A tariff whose allowances changed shape mid-period starts from fresh buckets.
            if state.buckets[slot].allowances.len() != tariff.allowance_count() {
                state.buckets[slot] = tariff.fresh_buckets();
            }
            // Only charging can refuse a rated record (prepaid money, a credit limit): only then are
            // the buckets kept to put back (a copy per record cost two allocations).
            let before: Option<Buckets> =
                (g.account.prepaid || g.account.credit_limit.is_some()).then(|| state.buckets[slot].clone());
            let ctx = RatingContext { time_zone: g.account.tz, tax: g.tax.clone(), rounding: RoundingRule::HalfEven };
            let rated = match tariff.rate(&item.record, &ctx, &mut state.buckets[slot]) {
                Ok(r) => r,
                Err(e) => {
                    let doc = self.recycled(&item, e.to_string());
                    held.push((item.index, doc));
                    continue;
                }
            };
            let account = loaded(&mut accounts, k.account(&g.account.id), |akey| {
                current.get(akey).and_then(|b| kv_json::<AccountState>(b)).unwrap_or_default()
            });
            if let (Some(reservation), Some(b)) = (self.settles.get(&item.id), account.balance.as_mut()) {
                // An expired reservation already gave its money back: nothing to release.
                let _ = b.release(reservation, now);
            }
            match charge(account, &g, &rated, now) {
                Ok(crossed) => {
                    for percent in crossed {
                        let limit = account.credit.as_ref().map(|c| c.limit.clone());
                        out.notices.push(Notice {
                            event_type: "CreditLimitThresholdEvent",
                            key: g.account.id.clone(),
                            payload: json!({"creditLimitThreshold": {
                                "billingAccount": {"id": g.account.id},
                                "percent": percent,
                                "period": g.period,
                                "spent": limit.as_ref().map(|l| json!({"unit": l.limit.currency.code(), "value": l.spent})),
                                "creditLimit": limit.as_ref().map(|l| json!({"unit": l.limit.currency.code(), "value": l.limit.amount})),
                            }}),
                        });
                    }
                }
                Err(reason) => {
                    debug_assert!(before.is_some(), "a charge that cannot fail failed");
                    if let Some(before) = before {
                        state.buckets[slot] = before;
                    }
                    held.push((item.index, self.recycled(&item, reason)));
                    continue;
                }
            }
            state.records += 1;
            let t = loaded(&mut totals, k.totals(&g.line.product_id, &g.period), |tkey| {
                current.get(tkey).and_then(|b| stored::decode::<UsageTotals>(b).ok()).unwrap_or_else(|| UsageTotals {
                    complete: starts_complete.get(tkey).copied().unwrap_or(false),
                    ..UsageTotals::default()
                })
            });
            // A record in another currency than the product's others is rated (it is the truth)
            // but not summed: the totals stop being complete, so billing reads the records.
            t.add_or_incomplete(&rated);
            writes.push((k.by_product(&g.line.product_id, &g.period, &item.id), Vec::new()));
            if was_held {
                unheld.push(k.held(&item.id));
            }
            // The item is done with: its fields move into the stored record.
            let Item { index, id, fingerprint, record, .. } = item;
            let wholesale = record.carrier.is_some();
            let doc = UsageDoc {
                id,
                status: UsageStatus::Rated,
                fingerprint,
                raw: None,
                partner_id: record.carrier.clone(),
                record: Some(record),
                reason: None,
                product_id: Some(g.line.product_id.clone()).filter(|_| !wholesale),
                account_id: Some(g.account.id.clone()),
                customer_id: Some(g.line.customer_id.clone()).filter(|c| !c.is_empty()),
                period: Some(g.period.clone()),
                tax_percent: g.tax.as_ref().map(|t| t.rate().rate.to_string()),
                rated: Some(rated),
                previous: None,
                received_at: now_text.clone(),
                rated_at: Some(now_text.clone()),
            };
            writes.push((ukey, stored::encode(&doc)));
            rated_count += 1;
            if self.keep_docs {
                rated_docs.push((index, doc));
            }
        }
        for (key, state) in &states {
            writes.push((key.clone(), stored::encode(state)));
        }
        for (key, account) in &accounts {
            // Only a changed money state is written: a postpaid account without a credit limit
            // never changes, and rewriting it cost a page of the store per account and batch.
            let bytes = encode(account)?;
            let unchanged = match current.get(key) {
                Some(stored) => *stored == bytes,
                None => *account == AccountState::default(),
            };
            if !unchanged {
                writes.push((key.clone(), bytes));
            }
        }
        for (key, t) in &totals {
            writes.push((key.clone(), stored::encode(t)));
        }
        debug_assert!(writes.len() <= bss_kit::kv::BATCH_MAX);
        if rated_count > 0 {
            self.kv().set_many(&writes)?;
        }
        if !unheld.is_empty() {
            // Only the index of held records: a marker left by a crash here is skipped on listing.
            self.kv().delete_many(&unheld)?;
        }
        out.report.accepted += rated_count;
        out.docs.extend(rated_docs);
        Ok(())
    }

    fn recycled(&self, item: &Item, reason: String) -> UsageDoc {
        self.held_doc(
            &item.id,
            &item.fingerprint,
            UsageStatus::Recycled,
            item.raw.clone(),
            Some(item.record.clone()),
            reason,
        )
    }

    /// Stores held records one by one with compare-and-swap (they are few): a held record never
    /// replaces a rated one written meanwhile.
    fn store_held(&self, held: Vec<(usize, UsageDoc)>, out: &mut Outcome) -> Result<(), ApiError> {
        let kv = self.kv();
        let mut markers = Vec::with_capacity(held.len());
        for (index, doc) in held {
            let key = self.keys.usage(&doc.id);
            let outcome = if doc.status == UsageStatus::Rejected { "rejected" } else { "recycled" };
            let reason = doc.reason.clone().unwrap_or_default();
            let mut stored = false;
            for attempt in 1..=8 {
                let (cas, current) = kv.cas_read(&key)?;
                let existing = current.as_deref().and_then(|b| stored::decode::<UsageDoc>(b).ok());
                if let Some(e) = existing.as_ref().filter(|e| !e.status.is_held()) {
                    let (what, why) = if e.fingerprint == doc.fingerprint {
                        ("duplicate", "already rated")
                    } else {
                        ("conflict", ALREADY_RATED_OTHER)
                    };
                    out.report.note(index, Some(&doc.id), what, why);
                    stored = true;
                    break;
                }
                let mut doc = doc.clone();
                if let Some(e) = existing {
                    doc.received_at = e.received_at;
                }
                if kv.cas_write(cas, &stored::encode(&doc))? {
                    markers.push((self.keys.held(&doc.id), Vec::new()));
                    out.report.note(index, Some(&doc.id), outcome, reason.clone());
                    if self.keep_docs {
                        out.docs.insert(index, doc);
                    }
                    stored = true;
                    break;
                }
                kv.backoff(attempt);
            }
            if !stored {
                return Err(ApiError::service_unavailable("usage records are busy; retry", format!("held {key}")));
            }
        }
        if !markers.is_empty() {
            kv.set_many(&markers)?;
        }
        Ok(())
    }
}

/// Start of the bill period of `account` containing `at` (its cycle day, in its time zone).
fn period_start(account: &AccountInfo, at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&account.tz).date_naive();
    billing_period(local, account.bill_cycle_day).0.to_string()
}

/// Debits prepaid money or counts postpaid credit for a rated record: the thresholds newly
/// crossed, or why the record cannot be charged now (held for recycling).
fn charge(account: &mut AccountState, g: &Guide, rated: &RatedRecord, now: DateTime<Utc>) -> Result<Vec<u8>, String> {
    let amount = rated.gross.amount;
    if g.account.prepaid {
        let Some(balance) = account.balance.as_mut() else {
            return Err(format!("prepaid account {} has no balance; top it up", g.account.id));
        };
        let before = balance.clone();
        return match balance.debit(amount, now) {
            Ok(()) => Ok(Vec::new()),
            Err(e) => {
                *balance = before;
                Err(format!("insufficient prepaid balance: {e}"))
            }
        };
    }
    let Some(limit) = g.account.credit_limit else { return Ok(Vec::new()) };
    let fresh = || CreditState { period: g.period.clone(), limit: CreditLimit::new(limit, false) };
    let credit = account.credit.get_or_insert_with(fresh);
    if credit.period != g.period {
        if credit.period.as_str() > g.period.as_str() {
            // Late usage of a closed period does not reopen its notifications.
            return Ok(Vec::new());
        }
        *credit = fresh();
    }
    credit.limit.limit = limit;
    credit.limit.try_charge(amount).map_err(|e| format!("credit limit: {e}"))
}

/// The value of `key` in `map`, loaded by `load` the first time: the key moves in only then (a
/// group's records share products and accounts, and cloning the key of each cost an allocation).
fn loaded<V>(map: &mut HashMap<String, V>, key: String, load: impl FnOnce(&str) -> V) -> &mut V {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let v = load(e.key());
            e.insert(v)
        }
    }
}

fn chunks<T>(v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::with_capacity(n.min(v.len()));
    for x in v {
        cur.push(x);
        if cur.len() == n {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The keys of `keys` once each, in their first order (sorting a batch's keys to drop repeats
/// was 3% of ingestion: they share long prefixes).
fn distinct(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    keys.filter(|k| seen.insert(k.clone())).collect()
}
