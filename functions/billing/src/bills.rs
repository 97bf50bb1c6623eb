//! Billing one account for one period, exactly once: gather what the period owes (products and
//! their charges from the inventory, rated usage, rerating corrections, the ledger), build the
//! bill with `bss_domain::billing::bill::build_bill`, store it, number it and post it.
//!
//! A prepaid account's usage is not billed: rating debited it from the balance already; its
//! recurring and one-time charges are.
//!
//! Exactly once, whatever crashes or reruns: the bill's id is `bill:<account>:<periodStart>` and
//! it is created with compare-and-swap, so a second run finds it and only finishes what the first
//! left undone (numbering, posting). Each step is idempotent and checks its own mark:
//! 1. draft it: the stored bill if there is one, else built in memory (fresh, see [`prepare`]);
//! 2. number it (gap-free) and store it: a fresh bill validated at once is written once, with
//!    its number (`CustomerBillCreateEvent`, state `validated`); one left for review is stored
//!    `new` and numbered in place when it is validated. The tenant's counter document keeps each
//!    reservation of numbers open until its bills are stored with their numbers (its writer
//!    then closes it): a bill of an open reservation takes the reserved number when it is
//!    drafted again (a redelivered batch, a duplicate request), and once the reservation is old
//!    enough for its worker to have crashed, the next reservation writes its missing bills
//!    itself (a fresh one built again from the reservation's origin) and closes it, so numbers
//!    are never skipped nor given twice;
//! 3. post it to the account's ledger (a bill already posted is not posted again);
//! 4. mark its one-time charges billed and clear its corrections from the pending index.
//!
//! Lines cannot repeat across periods either: line ids derive from what they bill, and the
//! previous period's bill's line ids are passed as `alreadyBilled` (a one-time charge or a
//! correction whose step 4 was lost is skipped, then cleared).

use std::collections::{BTreeMap, HashMap};

use bss_commerce::subscribers::{ACCOUNT_CHILDREN, ACCOUNT_PRODUCTS, AccountChildren, AccountProducts};
use bss_commerce::usage_keys::Keys as UsageKeys;
use bss_domain::billing::bill::{
    AccountActivity, ActivityKind, Bill, BillInput, BillTaxRate, Correction, OneTimeCharge, RecurringItem,
    UsageSummary, build_bill,
};
use bss_domain::billing::ledger::{EntryKind, Ledger};
use bss_domain::billing::number::{BillCounter, BillState, NumberSeries, validate};
use bss_domain::billing::period::{BillPeriod, Interval};
use bss_domain::catalog::price::PriceView;
use bss_domain::catalog::tax::TaxRate;
use bss_domain::catalog::{Kind as CatalogKind, Lifecycle, Snapshot, money_from_json};
use bss_domain::money::{Currency, Money, RoundingRule};
use bss_domain::rating::{ChargeDelta, Service, Step};
use bss_domain::usage::UsageTotals;
use bss_kit::ApiError;
use bss_kit::kv::{KvBackend, ReadAhead, StoreError, Versioned};
use bss_kit::resource::{Env, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The bills (TMF678 `CustomerBill`).
pub const BILL: Kind =
    Kind { collection: "customerBill", type_name: "CustomerBill", base_path: BASE, domain: "billing" };
/// The API base path.
pub const BASE: &str = "/tmf-api/customerBillManagement/v4";
/// Days from the bill date to the due date unless the account says (`paymentTermsDays`).
pub const PAYMENT_TERMS_DAYS_DEFAULT: u32 = 14;
/// Most usage records read for one product and period.
pub const USAGE_RECORDS_MAX: usize = 100_000;
/// Most pending corrections billed at once.
pub const CORRECTIONS_MAX: usize = 10_000;

/// The collection of account ledgers (`bss_domain::billing::ledger::Ledger`).
pub const LEDGER: &str = "ledger";
const COUNTER: &str = "billNumber";
const COUNTER_ID: &str = "default";

/// The number counter of a tenant, with its reservations still open: numbers taken for bills
/// that were not all seen numbered yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counter {
    counter: Option<BillCounter>,
    /// Reservations whose bills may still lack their numbers (their workers are writing them,
    /// or crashed), oldest first.
    #[serde(default)]
    open: Vec<Reservation>,
    /// Counters written before reservations were kept open: the bills of the last one.
    #[serde(default, skip_serializing)]
    last: Vec<Assigned>,
    /// Counters written before reservations covered several bills named one.
    #[serde(default, skip_serializing)]
    last_bill_id: Option<String>,
    #[serde(default, skip_serializing)]
    last_bill_no: Option<String>,
}

/// Numbers taken at once for several bills (a bill-run batch) or one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reservation {
    /// When it was taken (ms since the epoch); 0 for one of an older counter.
    at_ms: i64,
    bills: Vec<Assigned>,
    /// Set when it reserved numbers for fresh bills (written only once numbered): their origin,
    /// to build them again if their worker never writes them. A bill of such a reservation
    /// that is not stored is not written yet; of another, it counts as done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fresh: Option<Origin>,
}

impl Counter {
    /// The open reservations, those of a counter of an older version included (as taken long ago).
    fn open(&self) -> Vec<Reservation> {
        let mut open = self.open.clone();
        let old = match (&self.last_bill_id, &self.last_bill_no) {
            (Some(bill_id), Some(bill_no)) if self.last.is_empty() => {
                vec![Assigned { bill_id: bill_id.clone(), bill_no: bill_no.clone() }]
            }
            _ => self.last.clone(),
        };
        if !old.is_empty() {
            open.insert(0, Reservation { at_ms: 0, bills: old, fresh: None });
        }
        open
    }
}

/// After this long a reservation's bills still without their numbers are taken to have lost
/// their worker (a crash between the reservation and the numbering), and the next reservation
/// gives them theirs. Before it, they are left to their worker: two workers numbering each
/// other's bills wrote each bill twice.
pub const RESERVATION_REPAIR_AFTER_MS: i64 = 60_000;
/// Most reservations kept open; past it the oldest are completed at once.
const OPEN_RESERVATIONS_MAX: usize = 64;

/// A number given to a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assigned {
    /// The bill.
    pub bill_id: String,
    /// Its number.
    pub bill_no: String,
}

/// Most compare-and-swap attempts to close a reservation (see [`close_reservations`]).
const CLOSE_ATTEMPTS_MAX: usize = 8;

/// Most bills one reservation of numbers covers.
pub const RESERVATION_BILLS_MAX: usize = 100;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable(e.to_string())
}

/// What billing needs of an account.
#[derive(Debug, Clone)]
pub struct AccountFacts {
    /// Id.
    pub id: String,
    /// Currency.
    pub currency: Currency,
    /// Time zone.
    pub tz: Tz,
    /// Bill cycle day.
    pub bill_cycle_day: u32,
    /// Payment terms.
    pub payment_terms_days: u32,
    /// The document.
    pub doc: Value,
}

/// Loads a billing account's facts.
pub fn account<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<AccountFacts, ApiError> {
    let doc = env
        .store
        .tenant(&env.tenant.tenant_id)
        .get::<Value>("billingAccount", id)?
        .map(|v| v.data)
        .ok_or_else(|| ApiError::unprocessable(format!("billingAccount: {id:?} does not exist")))?;
    let a = bss_domain::order::inventory::Account::from_billing_account(&doc);
    let currency = Currency::new(text(&doc, "/currency")).map_err(bad)?;
    let terms = doc.get("paymentTermsDays").and_then(Value::as_u64).map(|d| d.min(120) as u32);
    Ok(AccountFacts {
        id: id.to_string(),
        currency,
        tz: a.tz,
        bill_cycle_day: a.bill_cycle_day,
        payment_terms_days: terms.unwrap_or(PAYMENT_TERMS_DAYS_DEFAULT),
        doc,
    })
}

/// The period a bill of `acct` issued at `now` is for when none is named: its last closed one.
pub fn last_closed(acct: &AccountFacts, now: DateTime<Utc>) -> BillPeriod {
    BillPeriod::last_closed(now, acct.bill_cycle_day, acct.tz)
}

/// The id of an account's bill for a period.
pub fn bill_id(account: &str, period: &BillPeriod) -> String {
    format!("bill:{account}:{}", period.start)
}

fn local_date(s: &str, tz: Tz) -> Option<NaiveDate> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.with_timezone(&tz).date_naive())
}

/// The tenant's catalog as billing reads it, read once for many bills (a run's batch): the
/// active tax rates and each price's tax category, worked out once (for every account they were
/// 2% of a bill run's CPU).
#[derive(Debug)]
pub struct BillingCatalog {
    tax_rates: Vec<BillTaxRate>,
    /// Price (`productOfferingPrice`) id → its tax category.
    tax_categories: HashMap<String, String>,
}

impl BillingCatalog {
    /// What billing reads of `snap`.
    pub fn new(snap: &Snapshot) -> BillingCatalog {
        let tax_rates = snap
            .all(CatalogKind::TaxRate)
            .filter_map(|d| TaxRate::read(d).ok())
            .filter(|t| t.lifecycle == Lifecycle::Active)
            .map(|t| BillTaxRate::from(&t))
            .collect();
        let tax_categories = snap
            .all(CatalogKind::ProductOfferingPrice)
            .filter_map(|d| {
                let id = d.get("id").and_then(Value::as_str)?.to_string();
                Some((id, PriceView::read(d).ok()?.tax_category?))
            })
            .collect();
        BillingCatalog { tax_rates, tax_categories }
    }

    /// The tenant's catalog, read from the store.
    pub fn load<B: KvBackend>(env: &Env<'_, B>) -> Result<BillingCatalog, ApiError> {
        Ok(BillingCatalog::new(&bss_kit::catalog::snapshot(env)?))
    }

    /// The tax category of the price `pop` (`standard` when it names none, or is unknown).
    fn tax_category(&self, pop: Option<&str>) -> String {
        pop.and_then(|id| self.tax_categories.get(id)).cloned().unwrap_or_else(|| "standard".into())
    }
}

/// Everything the period owes, as the domain's bill input.
/// Most accounts one consolidated bill covers (the payer and every account rolling up into it).
pub const ROLL_UP_ACCOUNTS_MAX: usize = 10_000;

/// The accounts whose bills roll up into `payer` (children with `billRollUp`, and theirs), in
/// hierarchy order, without the payer.
pub fn rolled_up<B: KvBackend>(env: &Env<'_, B>, payer: &str) -> Result<Vec<String>, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let mut out: Vec<String> = Vec::new();
    let mut next = vec![payer.to_string()];
    while let Some(parent) = next.pop() {
        let children =
            docs.get::<AccountChildren>(ACCOUNT_CHILDREN, &parent)?.map(|v| v.data.children).unwrap_or_default();
        for c in children.into_iter().filter(|c| c.bill_roll_up) {
            if c.id == payer || out.contains(&c.id) || out.len() >= ROLL_UP_ACCOUNTS_MAX {
                continue;
            }
            out.push(c.id.clone());
            next.push(c.id);
        }
    }
    Ok(out)
}

/// What [`gather`] found.
#[derive(Debug)]
pub struct Gathered {
    /// The domain's bill input.
    pub input: BillInput,
    /// The one-time charges it bills (marked billed afterwards).
    pub one_time: Vec<String>,
    /// The index keys of the corrections it bills (cleared afterwards).
    pub corrections: Vec<String>,
    /// Each product's billing account (the payer's or a rolled-up one's).
    pub owner: BTreeMap<String, String>,
}

/// What billing reads of a product: these fields, the rest skipped unread (a product document
/// is large; building its whole JSON tree for every account was a large part of gathering).
/// Each field as the JSON it is, read as leniently as from the whole document (`productPrice`:
/// an array, or null).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ProductFacts {
    id: Value,
    billing_account: Value,
    start_date: Value,
    termination_date: Value,
    /// How many prices it has (its charges are `<id>.1` to `<id>.<n>`).
    #[serde(deserialize_with = "count_items")]
    product_price: usize,
}

/// What billing reads of a billing charge (as [`ProductFacts`]).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ChargeFacts {
    id: Value,
    name: Value,
    amount: Value,
    product_offering_price: Value,
    charge_type: Value,
    recurring_charge_period: Value,
    state: Value,
}

/// The length of a JSON array (0 for `null`), its items skipped unread.
fn count_items<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(Option::<Vec<serde::de::IgnoredAny>>::deserialize(d)?.map_or(0, |items| items.len()))
}

/// The ids of a product's billing charges: one a price, `<product>.1` to `<product>.<prices>`.
fn charge_ids(product: &str, prices: usize) -> Vec<String> {
    (1..=prices).map(|n| format!("{product}.{n}")).collect()
}

/// Reads ahead into `ahead` (the backend under `env`), in a few batch calls, what billing each
/// account of `bills` for its period reads key by key ([`prepare`], [`gather_in`]): its bill and
/// previous bill, ledger, hierarchy and product index; then, for an account with no bill yet,
/// its products; then their charges and usage totals. The accounts rolling up into a payer are
/// read as they come (few). A value read ahead is a few milliseconds older when it is used: as
/// good for a bill, whose ledger is changed by compare-and-swap only.
pub fn read_ahead<B: KvBackend, X: KvBackend>(
    env: &Env<'_, B>,
    ahead: &ReadAhead<X>,
    bills: &[(AccountFacts, BillPeriod)],
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let key = |collection: &str, id: &str| docs.key(collection, id);
    let bill_keys: Vec<Option<String>> =
        bills.iter().map(|(acct, period)| key(BILL.collection, &bill_id(&acct.id, period))).collect();
    let mut first = Vec::with_capacity(bills.len() * 5);
    for ((acct, period), bill) in bills.iter().zip(&bill_keys) {
        let previous = period.previous(acct.bill_cycle_day);
        first.extend(
            [
                bill.clone(),
                key(BILL.collection, &bill_id(&acct.id, &previous)),
                key(LEDGER, &acct.id),
                key(ACCOUNT_CHILDREN, &acct.id),
                key(ACCOUNT_PRODUCTS, &acct.id),
            ]
            .into_iter()
            .flatten(),
        );
    }
    ahead.fetch(&first)?;
    // Accounts billed already need nothing more; the others, their products.
    let to_bill = bills
        .iter()
        .zip(&bill_keys)
        .filter(|(_, bill)| bill.as_deref().and_then(|k| ahead.peek(k, |v| v.is_none())).unwrap_or(true));
    let mut products: Vec<(String, &BillPeriod)> = Vec::new();
    for ((acct, period), _) in to_bill {
        let Some(index) = key(ACCOUNT_PRODUCTS, &acct.id) else { continue };
        let ids = ahead
            .peek(&index, |v| v.and_then(|b| bss_kit::kv::decode::<AccountProducts>(&index, b).ok()))
            .flatten()
            .map(|d| d.data.products)
            .unwrap_or_default();
        products.extend(ids.into_iter().map(|p| (p, period)));
    }
    let product_keys: Vec<Option<String>> = products.iter().map(|(p, _)| key("product", p)).collect();
    ahead.fetch(&product_keys.iter().flatten().cloned().collect::<Vec<_>>())?;
    let usage = UsageKeys::new(&env.tenant.tenant_id);
    let mut last = Vec::new();
    for ((pid, period), k) in products.iter().zip(&product_keys) {
        let Some(k) = k else { continue };
        let prices = ahead
            .peek(k, |v| v.and_then(|b| bss_kit::kv::decode::<ProductFacts>(k, b).ok()))
            .flatten()
            .map_or(0, |d| d.data.product_price);
        last.extend(charge_ids(pid, prices).iter().filter_map(|c| key("billingCharge", c)));
        last.push(usage.totals(pid, &period.start.to_string()));
    }
    ahead.fetch(&last)?;
    Ok(())
}

/// Everything the period owes (the payer's and its rolled-up accounts'): see [`Gathered`]. Reads
/// the catalog; [`gather_in`] takes it from a caller that bills many accounts.
pub fn gather<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    period: BillPeriod,
    issued_at: DateTime<Utc>,
    ledger: &Ledger,
) -> Result<Gathered, ApiError> {
    gather_in(env, acct, period, issued_at, ledger, &BillingCatalog::load(env)?)
}

/// [`gather`] with the tenant's catalog already read.
pub fn gather_in<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    period: BillPeriod,
    issued_at: DateTime<Utc>,
    ledger: &Ledger,
    catalog: &BillingCatalog,
) -> Result<Gathered, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let accounts: Vec<String> = std::iter::once(acct.id.clone()).chain(rolled_up(env, &acct.id)?).collect();
    let mut products = Vec::new();
    // Prepaid accounts paid their usage from their balance as it was rated: never billed again.
    let mut prepaid = std::collections::BTreeSet::new();
    for a in &accounts {
        products.extend(docs.get::<AccountProducts>(ACCOUNT_PRODUCTS, a)?.map(|v| v.data.products).unwrap_or_default());
        let is_prepaid =
            |d: &Value| d.get("accountType").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("prepaid"));
        let prepaid_account = if *a == acct.id {
            is_prepaid(&acct.doc)
        } else {
            docs.get::<Value>("billingAccount", a)?.is_some_and(|v| is_prepaid(&v.data))
        };
        if prepaid_account {
            prepaid.insert(a.clone());
        }
    }
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let product_docs: Vec<ProductFacts> =
        docs.get_docs::<ProductFacts>("product", &products)?.into_iter().map(|d| d.data).collect();
    let mut recurring = Vec::new();
    let mut one_time = Vec::new();
    let mut usage = Vec::new();
    let mut one_time_ids = Vec::new();
    let whole = period.whole();
    for p in &product_docs {
        let pid = p.id.as_str().unwrap_or_default().to_string();
        let billed_to = text(&p.billing_account, "/id");
        if !accounts.iter().any(|a| a == billed_to) {
            continue;
        }
        owner.insert(pid.clone(), billed_to.to_string());
        let start = local_date(p.start_date.as_str().unwrap_or_default(), acct.tz).unwrap_or(period.start);
        let end = p.termination_date.as_str().and_then(|t| local_date(t, acct.tz));
        let from = start.max(whole.from);
        let to = end.unwrap_or(whole.to).min(whole.to);
        let charge_ids = charge_ids(&pid, p.product_price);
        for c in docs.get_docs::<ChargeFacts>("billingCharge", &charge_ids)?.into_iter().map(|d| d.data) {
            let Ok(amount) = money_from_json(&c.amount) else { continue };
            let category = catalog.tax_category(c.product_offering_price.pointer("/id").and_then(Value::as_str));
            let description = c.name.as_str().unwrap_or("charge").to_string();
            let charge_id = c.id.as_str().unwrap_or_default().to_string();
            match c.charge_type.as_str().unwrap_or_default() {
                // Monthly charges, in arrears over the days the product was active in the period.
                "recurring"
                    if matches!(c.recurring_charge_period.as_str().unwrap_or_default(), "month" | "") && from < to =>
                {
                    recurring.push(RecurringItem {
                        charge_id,
                        product_id: pid.clone(),
                        description,
                        price: amount,
                        tax_category: category,
                        period: None,
                        active: vec![Interval { from, to }],
                    });
                }
                "oneTime" if c.state.as_str().unwrap_or_default() == "pendingBilling" && start < whole.to => {
                    one_time_ids.push(charge_id.clone());
                    one_time.push(OneTimeCharge {
                        charge_id,
                        product_id: pid.clone(),
                        description,
                        unit_price: amount,
                        quantity: 1,
                        tax_category: category,
                    });
                }
                _ => {}
            }
        }
        if !prepaid.contains(billed_to) {
            usage.extend(usage_of(env, &pid, &period, acct.currency)?);
        }
    }
    let mut corrections = Vec::new();
    let mut correction_keys = Vec::new();
    for a in &accounts {
        let (c, k) = corrections_of(env, a, &period)?;
        corrections.extend(c);
        correction_keys.extend(k);
    }
    let last_bill_at = ledger.bills.last().map(|b| b.issued_at);
    let activity: Vec<AccountActivity> = ledger
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Bill && last_bill_at.is_none_or(|t| e.at > t) && e.at <= issued_at)
        .map(|e| AccountActivity {
            id: e.id.clone(),
            kind: match e.kind {
                EntryKind::Payment => ActivityKind::Payment,
                EntryKind::CreditNote => ActivityKind::CreditNote,
                _ => ActivityKind::Refund,
            },
            amount: e.amount,
            at: e.at,
            bill_id: e.bill_id.clone(),
        })
        .collect();
    // What the activity since the last bill changed is shown on this bill: the previous balance
    // is the balance before it.
    let mut previous = ledger.balance();
    for a in &activity {
        let signed = match a.kind {
            ActivityKind::Refund => -a.amount.amount,
            _ => a.amount.amount,
        };
        previous = Money::new(previous.amount + signed, previous.currency);
    }
    let previous_bill =
        docs.get::<Value>(BILL.collection, &bill_id(&acct.id, &period.previous(acct.bill_cycle_day)))?;
    let already_billed = previous_bill
        .and_then(|b| serde_json::from_value::<Bill>(b.data.get("bill").cloned().unwrap_or(Value::Null)).ok())
        .map(|b| b.line_ids().map(str::to_string).collect())
        .unwrap_or_default();
    let input = BillInput {
        account_id: acct.id.clone(),
        currency: acct.currency,
        period,
        time_zone: acct.tz,
        jurisdiction: acct.doc.get("taxJurisdiction").and_then(Value::as_str).map(str::to_string),
        issued_at,
        payment_terms_days: acct.payment_terms_days,
        rounding: RoundingRule::HalfEven,
        recurring,
        plan_changes: Vec::new(),
        one_time,
        usage,
        corrections,
        discounts: Vec::new(),
        tax_rates: catalog.tax_rates.clone(),
        previous_balance: previous,
        activity,
        already_billed,
    };
    Ok(Gathered { input, one_time: one_time_ids, corrections: correction_keys, owner })
}

#[derive(Default)]
struct ServiceSum {
    quantity: u64,
    allowance: u64,
    records: u64,
    net: Decimal,
    tax: Decimal,
    category: Option<String>,
}

/// What billing reads of a stored usage record: its rating's sums and tax category, and nothing
/// else. A record is a few kilobytes (the normalised record, the explanation steps…); reading
/// only these fields, without building a JSON tree, is what keeps a bill's usage cheap.
#[derive(Deserialize)]
struct BilledUsage {
    rated: Option<BilledRating>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BilledRating {
    record_id: String,
    service: Service,
    charged_base_units: u64,
    allowance_base_units: u64,
    net: Money,
    tax: Money,
    #[serde(default)]
    steps: Vec<BilledStep>,
}

/// A rating step: only the tax step's category is read.
#[derive(Deserialize)]
struct BilledStep {
    step: String,
    #[serde(default)]
    category: Option<String>,
}

impl BilledRating {
    /// The rating of a stored usage record: in the compact form the usage component writes
    /// (`bss_domain::stored`, read whole: it is a few hundred bytes of varints), or in the JSON
    /// it wrote before (only these fields parsed).
    fn of_stored(bytes: &[u8]) -> Option<BilledRating> {
        if bytes.first() != Some(&bss_domain::stored::FORM_V1) {
            return serde_json::from_slice::<BilledUsage>(bytes).ok()?.rated;
        }
        let rated = bss_domain::stored::decode::<bss_domain::usage::UsageDoc>(bytes).ok()?.rated?;
        let steps = rated
            .steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Tax { category, .. } => {
                    Some(BilledStep { step: "tax".into(), category: Some(category.as_str().to_string()) })
                }
                _ => None,
            })
            .collect();
        Some(BilledRating {
            record_id: rated.record_id,
            service: rated.service,
            charged_base_units: rated.charged_base_units,
            allowance_base_units: rated.allowance_base_units,
            net: rated.net,
            tax: rated.tax,
            steps,
        })
    }
}

/// A product's rated usage of a period, per service (taxed as rated: sums of rounded records):
/// the totals the usage component keeps beside the records (`usageTotals/<product>/<period>`,
/// one read) when they are complete or count as many records as the period's index, or the
/// records themselves (records rated before totals were kept, or not summable).
pub fn usage_of<B: KvBackend>(
    env: &Env<'_, B>,
    product: &str,
    period: &BillPeriod,
    currency: Currency,
) -> Result<Vec<UsageSummary>, ApiError> {
    let layout = UsageKeys::new(&env.tenant.tenant_id);
    let start = period.start.to_string();
    let totals = bss_commerce::usage_keys::get(env.store.backend(), &layout, &layout.totals(product, &start))?
        .and_then(|b| bss_domain::stored::decode::<UsageTotals>(&b).ok());
    // Complete totals are read alone: listing the index was a tenth of a bill run's CPU.
    let ids = match &totals {
        Some(t) if t.complete => Vec::new(),
        _ => bss_commerce::usage_keys::record_ids(env.store, &layout, product, &start, USAGE_RECORDS_MAX)?,
    };
    if let Some(t) = totals.filter(|t| t.complete || t.records() == ids.len() as u64) {
        let mut services = t.services;
        services.sort_by_key(|s| s.service.as_str());
        return services
            .into_iter()
            .map(|s| {
                if s.net.currency != currency {
                    return Err(ApiError::unprocessable(format!(
                        "{} usage of product {product} is in {} but the account bills in {}",
                        s.service.as_str(),
                        s.net.currency.code(),
                        currency.code()
                    )));
                }
                Ok(UsageSummary {
                    product_id: product.to_string(),
                    service: s.service,
                    description: None,
                    tax_category: s.tax_category.unwrap_or_else(|| "standard".into()),
                    quantity_base_units: s.quantity_base_units,
                    allowance_base_units: s.allowance_base_units,
                    records: s.records,
                    net: s.net,
                    tax: Some(s.tax),
                })
            })
            .collect();
    }
    let keys: Vec<String> = ids.iter().map(|i| layout.usage(i)).collect();
    let mut sums: BTreeMap<&'static str, (Service, ServiceSum)> = BTreeMap::new();
    for chunk in keys.chunks(1000) {
        for (_, v) in env.store.backend().get_many(chunk)? {
            let Some(rated) = v.and_then(|b| BilledRating::of_stored(&b)) else {
                continue;
            };
            if rated.net.currency != currency {
                return Err(ApiError::unprocessable(format!(
                    "usage {} is in {} but the account bills in {}",
                    rated.record_id,
                    rated.net.currency.code(),
                    currency.code()
                )));
            }
            let (_, s) = sums.entry(rated.service.as_str()).or_insert_with(|| (rated.service, ServiceSum::default()));
            s.quantity += rated.charged_base_units;
            s.allowance += rated.allowance_base_units;
            s.records += 1;
            s.net += rated.net.amount;
            s.tax += rated.tax.amount;
            if s.category.is_none() {
                s.category = rated.steps.into_iter().find(|st| st.step == "tax").and_then(|st| st.category);
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(|(_, (service, s))| UsageSummary {
            product_id: product.to_string(),
            service,
            description: None,
            tax_category: s.category.unwrap_or_else(|| "standard".into()),
            quantity_base_units: s.quantity,
            allowance_base_units: s.allowance,
            records: s.records,
            net: Money::new(s.net, currency),
            tax: Some(Money::new(s.tax, currency)),
        })
        .collect())
}

/// The account's pending rerating corrections a bill for `period` bills, and the index keys it
/// clears once issued. A correction is billed when its usage was on an earlier bill (its period
/// is before this one); one of this period or a later one is cleared without a line: this bill
/// (or that period's) reads those records at their new rating already.
pub fn corrections_of<B: KvBackend>(
    env: &Env<'_, B>,
    account: &str,
    period: &BillPeriod,
) -> Result<(Vec<Correction>, Vec<String>), ApiError> {
    let prefix = UsageKeys::new(&env.tenant.tenant_id).correction_by_account_prefix(account);
    let keys = env.store.list_keys(&prefix, CORRECTIONS_MAX)?;
    let mut out = Vec::new();
    for chunk in keys.chunks(1000) {
        for (_, v) in env.store.backend().get_many(chunk)? {
            let Some(doc) = v.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else { continue };
            let rated_in = doc.get("period").and_then(Value::as_str).and_then(|p| p.parse::<NaiveDate>().ok());
            if rated_in.is_none_or(|p| p >= period.start) {
                continue;
            }
            let Some(delta) = doc.get("delta").and_then(|d| serde_json::from_value::<ChargeDelta>(d.clone()).ok())
            else {
                continue;
            };
            out.push(Correction {
                rerate_run_id: text(&doc, "/rerateRun/id").to_string(),
                product_id: text(&doc, "/product/id").to_string(),
                description: None,
                tax_category: doc.get("taxCategory").and_then(Value::as_str).unwrap_or("standard").to_string(),
                delta,
            });
        }
    }
    Ok((out, keys))
}

/// A TMF `Money` as a bill document writes it: `{"unit": "EUR", "value": "12.50"}`.
#[derive(Debug, Serialize)]
pub struct TmfMoney<'a> {
    unit: &'a str,
    #[serde(with = "bss_domain::json::decimal_str")]
    value: Decimal,
}

/// `m` as a TMF `Money`.
pub fn money(m: &Money) -> TmfMoney<'_> {
    TmfMoney { unit: m.currency.code(), value: m.amount }
}

/// A reference by id (`{"id": …}`).
#[derive(Debug, Serialize)]
struct IdRef<'a> {
    id: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PeriodDoc {
    start_date_time: NaiveDate,
    end_date_time: NaiveDate,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TaxItemDoc<'a> {
    tax_category: &'a str,
    #[serde(with = "bss_domain::json::decimal_str")]
    tax_rate: Decimal,
    tax_amount: TmfMoney<'a>,
    taxable_amount: TmfMoney<'a>,
    jurisdiction: Option<&'a str>,
}

/// The TMF678 `CustomerBill` document of a bill (the domain bill kept whole under `bill`), as it
/// serialises: written straight from the domain bill, not built as a JSON tree first (see
/// [`bss_kit::resource::Resources::create_serialized`]). Absent references are written `null`;
/// `rollUp` only for a consolidated bill.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerBillDoc<'a> {
    bill_no: Option<&'a str>,
    bill_date: NaiveDate,
    payment_due_date: NaiveDate,
    billing_period: PeriodDoc,
    state: &'static str,
    category: &'static str,
    run_type: &'static str,
    billing_account: IdRef<'a>,
    amount_due: TmfMoney<'a>,
    remaining_amount: TmfMoney<'a>,
    tax_excluded_amount: TmfMoney<'a>,
    tax_included_amount: TmfMoney<'a>,
    tax_item: Vec<TaxItemDoc<'a>>,
    bill_run: Option<IdRef<'a>>,
    bill: &'a Bill,
    #[serde(skip_serializing_if = "Option::is_none")]
    roll_up: Option<&'a Value>,
}

impl CustomerBillDoc<'_> {
    /// What [`BillDoc::head`] answers for this document once written.
    fn head(&self) -> BillHead {
        BillHead { bill_no: self.bill.bill_no.clone(), remaining: Some(self.bill.total), state: Some(self.bill.state) }
    }
}

/// The TMF678 `CustomerBill` document of a bill (see [`CustomerBillDoc`]); a run's bill names its
/// run; an on-demand bill has category `onDemand`.
pub fn bill_doc<'a>(bill: &'a Bill, run_id: Option<&'a str>, on_demand: bool) -> CustomerBillDoc<'a> {
    CustomerBillDoc {
        bill_no: bill.bill_no.as_deref(),
        bill_date: bill.bill_date,
        payment_due_date: bill.due_date,
        billing_period: PeriodDoc { start_date_time: bill.period.start, end_date_time: bill.period.end },
        state: bill.state.as_str(),
        category: if on_demand { "onDemand" } else { "normal" },
        run_type: if on_demand { "offCycle" } else { "onCycle" },
        billing_account: IdRef { id: &bill.account_id },
        amount_due: money(&bill.amount_due),
        remaining_amount: money(&bill.total),
        tax_excluded_amount: money(&bill.subtotal),
        tax_included_amount: money(&bill.total),
        tax_item: bill
            .tax_summary
            .iter()
            .map(|t| TaxItemDoc {
                tax_category: &t.tax_category,
                tax_rate: t.rate,
                tax_amount: money(&t.tax),
                taxable_amount: money(&t.taxable),
                jurisdiction: t.jurisdiction.as_deref(),
            })
            .collect(),
        bill_run: run_id.map(|id| IdRef { id }),
        bill,
        roll_up: None,
    }
}

/// What posting reads of a stored bill document (see [`crate::payments::synced_bill`]): its
/// number, remaining amount and state, as the document has them (`None`: absent or unreadable).
#[derive(Debug, Clone, PartialEq)]
pub struct BillHead {
    /// `bill.billNo`.
    pub bill_no: Option<String>,
    /// `remainingAmount`.
    pub remaining: Option<Money>,
    /// `state`.
    pub state: Option<BillState>,
}

impl BillHead {
    /// The head of the stored bill document `doc`.
    pub fn of(doc: &Value) -> BillHead {
        BillHead {
            bill_no: doc.pointer("/bill/billNo").and_then(Value::as_str).map(str::to_string),
            remaining: doc.get("remainingAmount").and_then(|m| money_from_json(m).ok()),
            state: doc.get("state").and_then(Value::as_str).and_then(BillState::parse),
        }
    }
}

/// A stored bill document as billing holds it: the JSON tree read from the store (or made by a
/// write), or the text a new bill was written as, with its [`BillHead`]. The text is parsed
/// only when asked for the tree: a bill run never asks (building, serialising and dropping the
/// tree of each bill was about a tenth of a run's CPU).
#[derive(Debug, Clone)]
pub enum BillDoc {
    /// The document as a tree.
    Tree(Value),
    /// The document as written.
    Written {
        /// Its JSON text.
        json: Box<serde_json::value::RawValue>,
        /// What posting reads of it.
        head: BillHead,
    },
}

impl BillDoc {
    /// A stored document as read.
    pub fn stored(d: Versioned<Value>) -> Versioned<BillDoc> {
        Versioned { version: d.version, data: BillDoc::Tree(d.data) }
    }

    /// The document as a tree (a written one parsed).
    pub fn into_tree(self) -> Result<Value, ApiError> {
        match self {
            BillDoc::Tree(v) => Ok(v),
            BillDoc::Written { json, .. } => serde_json::from_str(json.get())
                .map_err(|e| ApiError::internal(format!("a written bill's document: {e}"))),
        }
    }

    /// The document as a tree, copied (tests compare documents so).
    #[cfg(test)]
    pub fn to_tree(&self) -> Result<Value, ApiError> {
        self.clone().into_tree()
    }

    /// What posting reads of it.
    pub fn head(&self) -> BillHead {
        match self {
            BillDoc::Tree(v) => BillHead::of(v),
            BillDoc::Written { head, .. } => head.clone(),
        }
    }

    /// Whether the bill has its number.
    pub fn has_number(&self) -> bool {
        match self {
            BillDoc::Tree(v) => has_number(v),
            BillDoc::Written { head, .. } => head.bill_no.is_some(),
        }
    }

    /// The domain bill the document keeps.
    pub fn domain_bill(&self) -> Result<Bill, ApiError> {
        #[derive(Deserialize)]
        struct BillOnly {
            bill: Bill,
        }
        match self {
            BillDoc::Tree(v) => domain_bill(v),
            BillDoc::Written { json, .. } => serde_json::from_str::<BillOnly>(json.get())
                .map(|d| d.bill)
                .map_err(|e| ApiError::internal(format!("stored bill: {e}"))),
        }
    }
}

/// Writes the document `doc` of the new bill `id` (409 `ALREADY_EXISTS` if it is stored) and
/// announces it (`billing.CustomerBillCreateEvent`); answers it as written.
fn create_bill<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    doc: &CustomerBillDoc<'_>,
) -> Result<Versioned<BillDoc>, ApiError> {
    let created = env.resources(BILL).create_serialized(id, doc)?;
    created.emit(env.tenant);
    Ok(Versioned { version: created.version, data: BillDoc::Written { json: created.into_json(), head: doc.head() } })
}

/// Bills `account` for `period` (see the module doc); answers the stored bill document. A bill
/// outside a run (`run_id` absent) is on demand (`category: onDemand`). `catalog`: the tenant's
/// catalog when the caller has it (a run loads it once per batch: reading it was 78% of the time
/// of a bill); loaded here otherwise. Validated now, a new bill is written once, numbered.
pub fn bill_account<B: KvBackend>(
    env: &Env<'_, B>,
    account_id: &str,
    period: Option<BillPeriod>,
    now: DateTime<Utc>,
    run_id: Option<&str>,
    validate_now: bool,
    catalog: Option<&BillingCatalog>,
) -> Result<Value, ApiError> {
    let acct = account(env, account_id)?;
    let mut draft = prepare(env, &acct, period, now, run_id, catalog)?;
    let doc = if validate_now {
        issue_draft(env, &acct, &mut draft, now)?.into_tree()?
    } else {
        store_draft(env, &mut draft)?;
        draft.stored.take().map(|s| s.data.into_tree()).transpose()?.unwrap_or_default()
    };
    finish(env, &draft.bill, &draft.one_time, &draft.corrections)?;
    Ok(doc)
}

/// Where a bill built by a draft comes from: the run (none: on demand) and the time it is
/// issued at. A reservation of numbers keeps it for its fresh bills, so that a repair can build
/// a bill whose worker crashed again (see [`take_numbers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    /// The bill run, if the bill is a run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The issue time (the run's, or the request's).
    pub issued_at: DateTime<Utc>,
}

/// A bill of an account for a period: the stored one, or one just built and not stored yet
/// (fresh). A fresh bill is stored once: numbered by [`number_bills`] when it is validated at
/// once, or as a draft by [`store_draft`].
#[derive(Debug)]
pub struct Draft {
    /// The bill's id.
    pub id: String,
    /// The domain bill.
    pub bill: Bill,
    /// The stored document at its version; `None` while the bill is fresh.
    pub stored: Option<Versioned<BillDoc>>,
    /// What its document holds besides the bill.
    pub fresh: Fresh,
    /// One-time charges it bills (empty when the bill existed already).
    pub one_time: Vec<String>,
    /// Correction index keys it bills (empty when the bill existed already).
    pub corrections: Vec<String>,
}

impl Draft {
    /// The draft to number, its stored document moved into it (numbering answers it numbered).
    pub fn unnumbered(&mut self) -> Unnumbered {
        let fresh = self.stored.is_none().then(|| self.fresh.clone());
        Unnumbered { id: self.id.clone(), bill: self.bill.clone(), known: self.stored.take(), fresh }
    }

    /// Takes in the document numbering answered for it (see [`NumberedBill`]).
    pub fn numbered(&mut self, n: NumberedBill) -> Result<(), ApiError> {
        if n.foreign {
            // Another worker wrote this bill (a duplicate delivery, or a repair): its lines are
            // the stored ones, and billing its charges is that worker's step 4.
            self.bill = n.doc.domain_bill()?;
            self.one_time.clear();
            self.corrections.clear();
        } else {
            sync_numbered(&mut self.bill, &n.doc)?;
        }
        self.stored = Some(Versioned { version: n.version, data: n.doc });
        Ok(())
    }
}

/// Step 1 of the module doc: the bill of `acct` for `period` (default: its last closed one) as
/// stored, or built fresh (not stored: see [`Draft`]).
pub fn prepare<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    period: Option<BillPeriod>,
    now: DateTime<Utc>,
    run_id: Option<&str>,
    catalog: Option<&BillingCatalog>,
) -> Result<Draft, ApiError> {
    let account_id = acct.id.as_str();
    if let Some(payer) = rolls_up_into(acct) {
        return Err(ApiError::conflict(format!(
            "billingAccount {account_id} rolls up into {payer}: its charges are on {payer}'s bill"
        ))
        .with_code("ROLLED_UP"));
    }
    let period = period.unwrap_or_else(|| last_closed(acct, now));
    let id = bill_id(&acct.id, &period);
    let origin = Origin { run_id: run_id.map(str::to_string), issued_at: now };
    let fresh = |roll_up| Fresh { origin: origin.clone(), roll_up };
    let docs = env.store.tenant(&env.tenant.tenant_id);
    if let Some(d) = docs.get::<Value>(BILL.collection, &id)? {
        let bill = domain_bill(&d.data)?;
        return Ok(Draft {
            id,
            bill,
            stored: Some(BillDoc::stored(d)),
            fresh: fresh(None),
            one_time: Vec::new(),
            corrections: Vec::new(),
        });
    }
    let ledger = load_ledger(env, acct)?;
    let loaded;
    let catalog = match catalog {
        Some(c) => c,
        None => {
            loaded = BillingCatalog::load(env)?;
            &loaded
        }
    };
    let Gathered { input, one_time, corrections, owner } = gather_in(env, acct, period, now, &ledger, catalog)?;
    let bill = build_bill(&input).map_err(bad)?;
    debug_assert!(bill.adds_up());
    let roll_up = owner.values().any(|a| *a != acct.id).then(|| roll_up_breakdown(&bill, &owner));
    Ok(Draft { id, bill, stored: None, fresh: fresh(roll_up), one_time, corrections })
}

/// Stores a fresh draft as it is (`new`, unnumbered: a bill left for review); a stored one is
/// left as it is. A bill another writer stored first is taken as stored (billing its charges is
/// that writer's step 4).
pub fn store_draft<B: KvBackend>(env: &Env<'_, B>, draft: &mut Draft) -> Result<(), ApiError> {
    if draft.stored.is_some() {
        return Ok(());
    }
    match create_bill(env, &draft.id, &draft.fresh.document(&draft.bill)) {
        Ok(written) => draft.stored = Some(written),
        Err(e) if e.code == "ALREADY_EXISTS" => {
            let d = env
                .store
                .tenant(&env.tenant.tenant_id)
                .get::<Value>(BILL.collection, &draft.id)?
                .ok_or_else(|| ApiError::internal(format!("customerBill {} vanished", draft.id)))?;
            draft.bill = domain_bill(&d.data)?;
            draft.one_time.clear();
            draft.corrections.clear();
            draft.stored = Some(BillDoc::stored(d));
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The payer an account's bills roll up into, if they do (`billRollUp` with a parent).
pub fn rolls_up_into(acct: &AccountFacts) -> Option<String> {
    let (parent, roll_up) = bss_domain::customer::account::hierarchy_attributes(&acct.doc);
    parent.filter(|_| roll_up)
}

/// Per account of a consolidated bill: its lines and subtotals (every line belongs to exactly
/// one account: the payer's own lines are the ones of no rolled-up product).
fn roll_up_breakdown(bill: &Bill, owner: &BTreeMap<String, String>) -> Value {
    let mut by: BTreeMap<String, (Vec<String>, Decimal, Decimal)> = BTreeMap::new();
    for l in &bill.lines {
        let a = l.product_id.as_ref().and_then(|p| owner.get(p)).cloned().unwrap_or_else(|| bill.account_id.clone());
        let e = by.entry(a).or_default();
        e.0.push(l.id.clone());
        e.1 += l.net.amount;
        e.2 += l.gross.amount;
    }
    let code = bill.currency.code();
    Value::Array(
        by.into_iter()
            .map(|(a, (lines, net, gross))| {
                json!({"billingAccount": {"id": a}, "lineId": lines,
                       "taxExcludedAmount": {"unit": code, "value": net},
                       "taxIncludedAmount": {"unit": code, "value": gross}})
            })
            .collect(),
    )
}

fn load_ledger<B: KvBackend>(env: &Env<'_, B>, acct: &AccountFacts) -> Result<Ledger, ApiError> {
    Ok(env
        .store
        .tenant(&env.tenant.tenant_id)
        .get::<Ledger>(LEDGER, &acct.id)?
        .map(|v| v.data)
        .unwrap_or_else(|| Ledger::new(&acct.id, acct.currency)))
}

/// Changes an account's ledger with compare-and-swap (an absent ledger is created with the change).
pub fn update_ledger<B: KvBackend, T>(
    env: &Env<'_, B>,
    account_id: &str,
    currency: Currency,
    mut f: impl FnMut(&mut Ledger) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let mut out = None;
    // A first ledger is created with the change in it: one write (an account's first bill).
    docs.upsert(
        LEDGER,
        account_id,
        || Ledger::new(account_id, currency),
        |l| {
            out = Some(f(l)?);
            Ok(())
        },
    )?;
    Ok(out.expect("set by the upsert"))
}

/// The stored bill `id` as a domain bill.
pub fn domain_bill(doc: &Value) -> Result<Bill, ApiError> {
    // From the borrowed tree: a bill run parses each bill several times, and cloning the subtree
    // first was a tenth of a bill's CPU.
    Bill::deserialize(doc.get("bill").unwrap_or(&Value::Null))
        .map_err(|e| ApiError::internal(format!("stored bill: {e}")))
}

/// Validates (numbers) a draft bill and posts it to the ledger; both idempotent (see module doc).
pub fn issue<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let current = env
        .store
        .tenant(&env.tenant.tenant_id)
        .get::<Value>(BILL.collection, id)?
        .ok_or_else(|| ApiError::not_found(format!("customerBill {id} does not exist")))?;
    let bill = domain_bill(&current.data)?;
    issue_known(env, acct, BillDoc::Tree(current.data), &bill, now)?.into_tree()
}

/// [`issue`] of the stored bill document `doc` the caller holds, with its domain bill at hand
/// (`bill`: `doc`'s, as [`domain_bill`]
/// reads it).
pub fn issue_known<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    doc: BillDoc,
    bill: &Bill,
    now: DateTime<Utc>,
) -> Result<BillDoc, ApiError> {
    if bill.state == BillState::OnHold {
        return Ok(doc);
    }
    if bill.bill_no.is_some() {
        return post(env, acct, doc, bill, now);
    }
    let n = number_bills(env, vec![Unnumbered { id: bill.id.clone(), bill: bill.clone(), known: None, fresh: None }])?
        .pop()
        .ok_or_else(|| ApiError::internal(format!("customerBill {}: numbering answered nothing", bill.id)))?;
    let bill = n.doc.domain_bill()?;
    post(env, acct, n.doc, &bill, now)
}

/// [`issue`] of a draft: a fresh bill is numbered and written once (one on hold is stored as it
/// is); a stored one goes as in [`issue_known`]. Answers the stored bill, moved out of the draft.
pub fn issue_draft<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    draft: &mut Draft,
    now: DateTime<Utc>,
) -> Result<BillDoc, ApiError> {
    if draft.stored.is_none() {
        if draft.bill.state == BillState::OnHold {
            store_draft(env, draft)?;
        } else {
            let n = number_bills(env, vec![draft.unnumbered()])?
                .pop()
                .ok_or_else(|| ApiError::internal(format!("customerBill {}: numbering answered nothing", draft.id)))?;
            draft.numbered(n)?;
        }
    }
    let doc = draft.stored.take().map_or(BillDoc::Tree(Value::Null), |s| s.data);
    issue_known(env, acct, doc, &draft.bill, now)
}

/// Brings the domain bill `bill` of a draft up to its numbered document `doc`: numbering changes
/// the number and the state of a bill and nothing else, so those two are read from `doc` instead
/// of parsing the whole bill again (which happens when they are not there).
pub fn sync_numbered(bill: &mut Bill, doc: &BillDoc) -> Result<(), ApiError> {
    let (number, state) = match doc {
        BillDoc::Tree(v) if v.pointer("/bill/id").and_then(Value::as_str) == Some(bill.id.as_str()) => (
            v.pointer("/bill/billNo").and_then(Value::as_str).map(str::to_string),
            v.pointer("/bill/state").and_then(|s| BillState::deserialize(s).ok()),
        ),
        BillDoc::Tree(_) => (None, None),
        // Written from this bill: the head is the bill's own number and state.
        BillDoc::Written { head, .. } => (head.bill_no.clone(), head.state),
    };
    match (number, state) {
        (Some(n), Some(state)) => {
            bill.bill_no = Some(n);
            bill.state = state;
        }
        _ => *bill = doc.domain_bill()?,
    }
    Ok(())
}

/// What a fresh bill's document holds besides the bill (see [`Draft`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Fresh {
    /// Where the bill comes from.
    pub origin: Origin,
    /// A consolidated bill's breakdown per account (`rollUp`).
    pub roll_up: Option<Value>,
}

impl Fresh {
    /// The TMF document of `bill`.
    fn document<'a>(&'a self, bill: &'a Bill) -> CustomerBillDoc<'a> {
        CustomerBillDoc {
            roll_up: self.roll_up.as_ref(),
            ..bill_doc(bill, self.origin.run_id.as_deref(), self.origin.run_id.is_none())
        }
    }
}

/// A draft bill to number: its id, its domain bill, and the stored document with its version
/// when the caller holds it (numbering then changes it without reading it back), or what a
/// fresh bill's document holds (numbering then writes it, numbered).
#[derive(Debug, Clone)]
pub struct Unnumbered {
    /// The bill's id.
    pub id: String,
    /// The domain bill.
    pub bill: Bill,
    /// The stored document, if the caller has it.
    pub known: Option<Versioned<BillDoc>>,
    /// Set when the bill is not stored yet.
    pub fresh: Option<Fresh>,
}

/// A bill [`number_bills`] answers, as stored.
#[derive(Debug)]
pub struct NumberedBill {
    /// The bill's id.
    pub id: String,
    /// The stored document.
    pub doc: BillDoc,
    /// Its version.
    pub version: u64,
    /// The document is another writer's, not the draft's bill numbered: a fresh bill that a
    /// duplicate delivery or a repair wrote first (see [`Draft::numbered`]).
    pub foreign: bool,
}

/// Step 2 of the module doc for several drafts at once (a bill run's batch): one reservation of
/// numbers on the tenant's counter for all of them, in order, then each bill takes its number: a
/// stored draft is numbered in place, a fresh bill is written once, numbered. One
/// compare-and-swap on the counter per batch instead of one per bill: bill-run workers
/// numbering bills one by one spent most of their time retrying on that one document.
/// Answers each bill as stored, in order. Drafts must be unnumbered and not on hold.
pub fn number_bills<B: KvBackend>(env: &Env<'_, B>, drafts: Vec<Unnumbered>) -> Result<Vec<NumberedBill>, ApiError> {
    number_bills_at(env, drafts, Utc::now().timestamp_millis())
}

/// [`number_bills`] at the time `now_ms` (ms since the epoch).
fn number_bills_at<B: KvBackend>(
    env: &Env<'_, B>,
    mut drafts: Vec<Unnumbered>,
    now_ms: i64,
) -> Result<Vec<NumberedBill>, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let mut out = Vec::with_capacity(drafts.len());
    // A reservation keeps one origin for its fresh bills.
    let same_origin =
        |a: &Unnumbered, b: &Unnumbered| a.fresh.as_ref().map(|f| &f.origin) == b.fresh.as_ref().map(|f| &f.origin);
    for group in drafts.chunk_by_mut(same_origin) {
        for chunk in group.chunks_mut(RESERVATION_BILLS_MAX) {
            let mut numbered: HashMap<String, NumberedBill> = HashMap::new();
            for a in take_numbers(env, chunk, now_ms)? {
                let Some(d) = chunk.iter_mut().find(|d| d.id == a.bill_id) else { continue };
                let n = match d.fresh.take() {
                    Some(fresh) => write_fresh(env, &d.id, d.bill.clone(), &fresh, &a.bill_no)?,
                    None => number_stored(env, &a.bill_id, &a.bill_no, d.known.take(), false)?,
                };
                numbered.insert(a.bill_id, n);
            }
            for d in chunk.iter() {
                // A bill numbered meanwhile (a repair, a duplicate) is answered as stored.
                let n = match numbered.remove(&d.id) {
                    Some(n) => n,
                    None => {
                        let stored = docs
                            .get::<Value>(BILL.collection, &d.id)?
                            .ok_or_else(|| ApiError::not_found(format!("customerBill {} does not exist", d.id)))?;
                        NumberedBill {
                            id: d.id.clone(),
                            doc: BillDoc::Tree(stored.data),
                            version: stored.version,
                            foreign: d.fresh.is_some(),
                        }
                    }
                };
                out.push(n);
            }
            // Every bill of the chunk has its number now: the reservations of only these bills
            // are complete (see [`close_reservations`]).
            close_reservations(env, &chunk.iter().map(|d| d.id.as_str()).collect())?;
        }
    }
    Ok(out)
}

/// Closes the open reservations all of whose bills are among `numbered`: bills the caller has
/// just seen stored with their numbers (written them, or found them written). The writer of a
/// reservation closes it so: later reservations then need not read its bills to see them done
/// (reading every other in-flight batch's bills was 4% of a bill run's CPU). A reservation left
/// open (its writer crashed, or this compare-and-swap lost too often) is closed by the first
/// reservation that finds it abandoned and all its bills numbered ([`take_numbers`]).
fn close_reservations<B: KvBackend>(
    env: &Env<'_, B>,
    numbered: &std::collections::HashSet<&str>,
) -> Result<(), ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let complete = |r: &Reservation| r.bills.iter().all(|a| numbered.contains(a.bill_id.as_str()));
    for _ in 0..CLOSE_ATTEMPTS_MAX {
        let Some(current) = docs.get::<Counter>(COUNTER, COUNTER_ID)? else { return Ok(()) };
        let open = current.data.open();
        if !open.iter().any(complete) {
            return Ok(());
        }
        let next = Counter {
            counter: current.data.counter,
            open: open.into_iter().filter(|r| !complete(r)).collect(),
            ..Counter::default()
        };
        if docs.replace_if_version(COUNTER, COUNTER_ID, current.version, next)?.is_some() {
            return Ok(());
        }
    }
    // Left open: closed once abandoned (see above). The bills are numbered either way.
    Ok(())
}

/// Writes the fresh bill `bill` (`id`; `fresh`: the rest of its document) with its number
/// `number`: created validated, one write. A bill found stored there is another writer's (a
/// duplicate delivery, a repair): answered as stored, given `number` if it has none yet (a draft
/// stored meanwhile), so that the number is not lost.
fn write_fresh<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    mut bill: Bill,
    fresh: &Fresh,
    number: &str,
) -> Result<NumberedBill, ApiError> {
    use bss_domain::billing::number::Numbered as _;
    bill.set_validated(number.to_string());
    match create_bill(env, id, &fresh.document(&bill)) {
        Ok(w) => Ok(NumberedBill { id: id.to_string(), version: w.version, doc: w.data, foreign: false }),
        Err(e) if e.code == "ALREADY_EXISTS" => {
            let stored = env
                .store
                .tenant(&env.tenant.tenant_id)
                .get::<Value>(BILL.collection, id)?
                .ok_or_else(|| ApiError::internal(format!("customerBill {id} vanished")))?;
            number_stored(env, id, number, Some(BillDoc::stored(stored)), true)
        }
        Err(e) => Err(e),
    }
}

/// Step 3 of the module doc: posts the numbered bill `doc` (its domain bill: `bill`) to the
/// account's ledger (once) and answers the stored bill (posting may have settled it at once with
/// credit the account had).
fn post<B: KvBackend>(
    env: &Env<'_, B>,
    acct: &AccountFacts,
    doc: BillDoc,
    bill: &Bill,
    now: DateTime<Utc>,
) -> Result<BillDoc, ApiError> {
    let ledger = update_ledger(env, &acct.id, acct.currency, |l| {
        if l.bill(&bill.id).is_none() {
            l.post(bill, now).map_err(bad)?;
        }
        Ok(l.clone())
    })?;
    // The stored bill needs syncing only if `doc` does: its remaining amount only goes down and
    // its state only forward, so when the ledger's view changes nothing of `doc` it changes
    // nothing of a later version either — and a bill just posted is the usual case (no re-read).
    let needs_sync = ledger.bill(&bill.id).is_some_and(|lb| crate::payments::sync_needed(&doc.head(), lb).any());
    if !needs_sync {
        return Ok(doc);
    }
    let ids = std::collections::BTreeSet::from([bill.id.clone()]);
    let mut latest = doc;
    for change in crate::payments::sync_bills(env, &ledger, &ids)? {
        bss_kit::resource::emit(env.tenant, &change);
        if let Some(after) = change.after {
            latest = BillDoc::Tree(after);
        }
    }
    Ok(latest)
}

/// Reserves the next gap-free numbers for the draft bills `drafts` that have none yet, in order
/// (a fresh one is not stored yet, a stored one is stored without a number); answers the numbers
/// the caller gives its drafts. No number is ever lost nor given twice: the counter keeps each
/// reservation open until all its bills are stored with their numbers — closed by its writer
/// ([`close_reservations`]), or by a later call once it is abandoned (see below) and its bills
/// are all seen numbered. Only the bills of `drafts` and of abandoned reservations are read
/// here: a reservation in flight is its writer's. A bill of an open
/// reservation that is one of `drafts` (a redelivered batch, a duplicate request) takes the
/// number reserved for it, so two workers drafting the same bill give it the same number.
/// Another's bill is left to its worker until the reservation is older than
/// [`RESERVATION_REPAIR_AFTER_MS`] (its worker crashed between the reservation and the bills):
/// then this call gives it its number itself ([`repair`]). All fresh drafts of one call are of
/// one [`Origin`], which the reservation keeps for a repair.
fn take_numbers<B: KvBackend>(env: &Env<'_, B>, drafts: &[Unnumbered], now_ms: i64) -> Result<Vec<Assigned>, ApiError> {
    debug_assert!(drafts.len() <= RESERVATION_BILLS_MAX);
    let origin = drafts.iter().find_map(|d| d.fresh.as_ref().map(|f| &f.origin));
    debug_assert!(drafts.iter().filter_map(|d| d.fresh.as_ref()).all(|f| Some(&f.origin) == origin));
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let series = NumberSeries::default();
    for _ in 0..32 {
        let current = docs.get::<Counter>(COUNTER, COUNTER_ID)?;
        let counter = current.as_ref().map(|c| c.data.clone()).unwrap_or_default();
        let open = counter.open();
        // Room for the reservation this call adds.
        let overflow = (open.len() + 1).saturating_sub(OPEN_RESERVATIONS_MAX);
        let abandoned = |n: usize, r: &Reservation| n < overflow || now_ms - r.at_ms >= RESERVATION_REPAIR_AFTER_MS;
        let is_draft = |id: &str| drafts.iter().any(|d| d.id == id);
        let ids: Vec<&str> = drafts
            .iter()
            .map(|d| d.id.as_str())
            .chain(
                open.iter()
                    .enumerate()
                    .filter(|(n, r)| abandoned(*n, r))
                    .flat_map(|(_, r)| r.bills.iter().map(|a| a.bill_id.as_str())),
            )
            .collect();
        // Read after the counter: a reservation closed there had its bills stored before.
        let has_number = stored_numbers(env, &ids)?;
        let mut still_open = Vec::with_capacity(open.len() + 1);
        let mut own = Vec::new();
        for (n, mut r) in open.into_iter().enumerate() {
            let abandoned = abandoned(n, &r);
            let (mut waiting, mut repair_failed) = (false, false);
            for a in &r.bills {
                // Unread (in flight, another's): its writer's, waiting.
                if !abandoned && !is_draft(&a.bill_id) {
                    waiting = true;
                    continue;
                }
                let stored = has_number.get(&a.bill_id).copied();
                // Numbered; or absent from a reservation of stored drafts only (bills are never
                // deleted: it was numbered and is gone from this store's view).
                if stored == Some(true) || (stored.is_none() && r.fresh.is_none()) {
                    continue;
                }
                let keep = if is_draft(&a.bill_id) {
                    own.push(a.clone());
                    true
                } else {
                    debug_assert!(abandoned, "only an abandoned reservation's bills are read");
                    match repair(env, a, stored.is_some(), r.fresh.as_ref()) {
                        Ok(()) => false,
                        Err(e) if e.status >= 500 => return Err(e),
                        Err(e) => {
                            eprintln!(
                                "billing: bill {} of an abandoned reservation keeps its number {} \
                                 reserved and cannot be written yet ({}); retried later",
                                a.bill_id, a.bill_no, e.message
                            );
                            repair_failed = true;
                            true
                        }
                    }
                };
                waiting |= keep;
            }
            if repair_failed {
                r.at_ms = now_ms;
            }
            if waiting {
                still_open.push(r);
            }
        }
        let pending: Vec<&Unnumbered> = drafts
            .iter()
            .filter(|d| !own.iter().any(|a| a.bill_id == d.id))
            .filter(|d| match has_number.get(&d.id) {
                Some(numbered) => !numbered,
                None => d.fresh.is_some(),
            })
            .collect();
        if pending.is_empty() {
            // Nothing to reserve: this caller writes nothing, so only a reservation it completed
            // is closed by it (see [`number_bills_at`]).
            return Ok(own);
        }
        let mut next = counter.counter.unwrap_or_default();
        let mut reserved = Vec::with_capacity(pending.len());
        for Unnumbered { id, bill, .. } in &pending {
            let mut b = bill.clone();
            b.state = BillState::New;
            next = validate(&mut b, &next, &series).map_err(|e| bad(format!("customerBill {id}: {e}")))?;
            reserved.push(Assigned { bill_id: id.clone(), bill_no: b.bill_no.unwrap_or_default() });
        }
        let fresh = pending.iter().any(|d| d.fresh.is_some()).then(|| origin.cloned()).flatten();
        still_open.push(Reservation { at_ms: now_ms, bills: reserved.clone(), fresh });
        let doc = Counter { counter: Some(next), open: still_open, ..Counter::default() };
        let won = match current {
            None => docs.create(COUNTER, COUNTER_ID, doc).map(|_| true).or_else(|e| match e {
                StoreError::AlreadyExists(_) => Ok(false),
                e => Err(e),
            })?,
            Some(v) => docs.replace_if_version(COUNTER, COUNTER_ID, v.version, doc)?.is_some(),
        };
        if won {
            own.extend(reserved);
            return Ok(own);
        }
    }
    Err(ApiError::service_unavailable("bill numbering is busy; retry", "counter contention"))
}

/// Gives the bill `a.bill_id` of an abandoned reservation its number `a.bill_no`: a stored draft
/// (`stored`) is numbered in place; a fresh bill its worker never wrote is built again from its
/// reservation's `origin` (the same account, period, run and issue time) and written. It is then
/// numbered but not posted: the batch that drafted it posts it when it is delivered again.
fn repair<B: KvBackend>(env: &Env<'_, B>, a: &Assigned, stored: bool, origin: Option<&Origin>) -> Result<(), ApiError> {
    if stored {
        return number_stored(env, &a.bill_id, &a.bill_no, None, false).map(drop);
    }
    let Some(origin) = origin else { return Ok(()) };
    let (account_id, start) = a
        .bill_id
        .strip_prefix("bill:")
        .and_then(|rest| rest.rsplit_once(':'))
        .and_then(|(account, start)| Some((account, start.parse::<NaiveDate>().ok()?)))
        .ok_or_else(|| ApiError::unprocessable(format!("reserved bill {} is not a bill id", a.bill_id)))?;
    let acct = account(env, account_id)?;
    let period = BillPeriod::containing(start, acct.bill_cycle_day);
    let mut d = prepare(env, &acct, Some(period), origin.issued_at, origin.run_id.as_deref(), None)?;
    if d.id != a.bill_id {
        return Err(ApiError::unprocessable(format!(
            "billingAccount {account_id} now bills a period starting {} (its bill cycle changed)",
            period.start
        )));
    }
    match d.stored.take() {
        None => write_fresh(env, &d.id, d.bill, &d.fresh, &a.bill_no).map(drop),
        // Stored meanwhile (a draft left for review): numbered in place, unless it has a number.
        Some(s) => number_stored(env, &a.bill_id, &a.bill_no, Some(s), false).map(drop),
    }
}

/// Only whether a stored bill has its number (a bill document is large; this reads one field).
#[derive(Deserialize)]
struct NumberOnly {
    data: NumberField,
}

#[derive(Deserialize)]
struct NumberField {
    #[serde(rename = "billNo", default)]
    bill_no: Option<String>,
}

/// Whether each stored bill of `ids` has its number (absent bills are left out).
fn stored_numbers<B: KvBackend>(env: &Env<'_, B>, ids: &[&str]) -> Result<HashMap<String, bool>, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    let keyed: Vec<(&str, String)> =
        ids.iter().filter_map(|id| docs.key(BILL.collection, id).map(|k| (*id, k))).collect();
    let keys: Vec<String> = keyed.iter().map(|(_, k)| k.clone()).collect();
    let stored: HashMap<String, Option<Vec<u8>>> = env.store.backend().get_many(&keys)?.into_iter().collect();
    Ok(keyed
        .into_iter()
        .filter_map(|(id, key)| {
            let bytes = stored.get(&key)?.as_ref()?;
            let numbered =
                serde_json::from_slice::<NumberOnly>(bytes).map(|d| d.data.bill_no.is_some()).unwrap_or(false);
            Some((id.to_string(), numbered))
        })
        .collect())
}

/// Gives the draft bill `id` its number: validated (a bill that has one keeps it).
/// `known`: the stored document at its version, when the caller holds it.
fn set_number<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    number: &str,
    known: Option<Versioned<Value>>,
) -> Result<bss_kit::resource::Change, ApiError> {
    let number_it = |doc: &Value| {
        let mut next = doc.clone();
        if !has_number(doc) {
            // The same two fields in the TMF document and in its domain bill, changed in place
            // (re-serialising the whole bill was a large part of numbering it).
            let state = json!(BillState::Validated.as_str());
            next["billNo"] = json!(number);
            next["state"] = state.clone();
            next["bill"]["billNo"] = json!(number);
            next["bill"]["state"] = state;
        }
        Ok(next)
    };
    let bills = env.resources(BILL);
    match known {
        Some(k) => bills.modify_known(env, &bss_kit::resource::NoHooks, id, k, number_it),
        None => bills.modify(env, &bss_kit::resource::NoHooks, id, number_it),
    }
}

/// Whether a stored bill document has its number.
fn has_number(doc: &Value) -> bool {
    doc.pointer("/bill/billNo").is_some_and(|n| !n.is_null())
}

/// [`set_number`] with the change emitted, answered as [`number_bills`] answers a bill; a `known`
/// document that has its number already is answered as it is, not written again. `foreign`: the
/// bill is another writer's (see [`NumberedBill`]).
fn number_stored<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    number: &str,
    known: Option<Versioned<BillDoc>>,
    foreign: bool,
) -> Result<NumberedBill, ApiError> {
    let known = match known {
        Some(k) if k.data.has_number() => {
            return Ok(NumberedBill { id: id.to_string(), doc: k.data, version: k.version, foreign });
        }
        Some(k) => Some(Versioned { version: k.version, data: k.data.into_tree()? }),
        None => None,
    };
    let change = set_number(env, id, number, known)?;
    bss_kit::resource::emit(env.tenant, &change);
    let version = change.version;
    Ok(NumberedBill { id: id.to_string(), doc: BillDoc::Tree(change.after.unwrap_or_default()), version, foreign })
}

/// Step 4: one-time charges billed, corrections cleared (idempotent). `bill`: the draft's domain
/// bill (numbering and posting do not change its lines).
pub fn finish<B: KvBackend>(
    env: &Env<'_, B>,
    bill: &Bill,
    one_time: &[String],
    corrections: &[String],
) -> Result<(), ApiError> {
    let billed: std::collections::BTreeSet<String> = bill.line_ids().map(str::to_string).collect();
    for charge in one_time {
        let line = format!("oneTime:{charge}");
        // Billed now, or skipped because an earlier bill billed it (its mark was lost).
        if !billed.contains(&line) && !bill.skipped_line_ids.contains(&line) {
            continue;
        }
        let bill_id = bill.id.clone();
        env.resources(bss_commerce::inventory::CHARGE).modify(env, &bss_kit::resource::NoHooks, charge, |c| {
            let mut next = c.clone();
            next["state"] = json!("billed");
            next["bill"] = json!({"id": bill_id});
            Ok(next)
        })?;
    }
    if !corrections.is_empty() {
        env.store.backend().delete_many(corrections)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_domain::billing::bill::TaxSummary;
    use bss_domain::rating::{Name, RatedRecord, Step};
    use std::str::FromStr;

    fn eur(s: &str) -> Money {
        Money::new(Decimal::from_str(s).unwrap(), Currency::new("EUR").unwrap())
    }

    /// An empty draft bill of account `a` for October 2026, stored (and held, as a bill run holds
    /// its drafts).
    fn stored_draft(env: &Env<'_, bss_kit::kv::MemKv>, a: &str) -> Unnumbered {
        let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);
        let input = BillInput::new(
            a,
            Currency::new("EUR").unwrap(),
            period,
            chrono_tz::UTC,
            "2026-11-01T00:00:00Z".parse().unwrap(),
            14,
        );
        let bill = build_bill(&input).unwrap();
        let id = bill_id(a, &period);
        let c = env
            .resources(BILL)
            .create_with_id(env, &bss_kit::resource::NoHooks, &id, json!(bill_doc(&bill, Some("run"), false)))
            .unwrap();
        Unnumbered {
            id,
            bill,
            known: Some(BillDoc::stored(Versioned { version: c.version, data: c.after.unwrap() })),
            fresh: None,
        }
    }

    /// The sizes of the counter's open reservations, oldest first.
    fn open_reservations<B: KvBackend>(env: &Env<'_, B>) -> Vec<usize> {
        let counter = env.store.tenant("t1").get::<Counter>(COUNTER, COUNTER_ID).unwrap().unwrap().data;
        counter.open().iter().map(|r| r.bills.len()).collect()
    }

    fn number_of(env: &Env<'_, bss_kit::kv::MemKv>, id: &str) -> Option<String> {
        env.resources(BILL).get(id).unwrap().data["billNo"].as_str().map(str::to_string)
    }

    #[test]
    fn a_batch_takes_one_reservation_of_gap_free_numbers_and_a_crash_after_it_loses_none() {
        let store = bss_kit::kv::Store::new(bss_kit::kv::MemKv::default());
        let tenant = bss_kit::auth::Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let batch: Vec<Unnumbered> = ["a", "b", "c"].iter().map(|a| stored_draft(&env, a)).collect();
        let batch_copy = batch.clone();
        let numbered = number_bills(&env, batch.clone()).unwrap();
        let numbers: Vec<Value> = numbered.iter().map(|n| n.doc.to_tree().unwrap()["billNo"].clone()).collect();
        assert_eq!(numbers, ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]);
        assert_eq!(numbered[1].doc.to_tree().unwrap()["state"], "validated");
        // Numbered in place, in the TMF document and in its domain bill alike, as stored.
        let stored = env.resources(BILL).get(&numbered[1].id).unwrap();
        assert_eq!(stored.version, 2);
        let b = domain_bill(&stored.data).unwrap();
        assert_eq!((b.bill_no.as_deref(), b.state), (Some("INV-2026-000002"), BillState::Validated));
        assert_eq!(stored.data, numbered[1].doc.to_tree().unwrap());
        // Its writer closed the reservation: every bill of it has its number.
        assert_eq!(open_reservations(&env), Vec::<usize>::new());
        // The draft's domain bill brought up to its numbered document is that document's bill.
        let mut synced = batch[1].bill.clone();
        sync_numbered(&mut synced, &numbered[1].doc).unwrap();
        assert_eq!(synced, b);
        let events = bss_kit::events::native::take_published();
        let changed: Vec<&str> = events.iter().map(|(_, subject, _)| subject.as_str()).collect();
        assert!(
            changed.iter().filter(|s| s.starts_with("billing.CustomerBillStateChangeEvent")).count() == 3,
            "{changed:?}"
        );
        // Numbering the same drafts again (a redelivered batch) gives them their own numbers.
        let again = number_bills(&env, batch).unwrap();
        assert_eq!(again.iter().map(|n| n.doc.to_tree().unwrap()["billNo"].clone()).collect::<Vec<_>>(), numbers);

        // A crash right after a reservation: the counter keeps it open; d and e lack their numbers.
        let t0 = Utc::now().timestamp_millis();
        let crashed: Vec<Unnumbered> = ["d", "e"].iter().map(|a| stored_draft(&env, a)).collect();
        take_numbers(&env, &crashed, t0).unwrap();
        assert_eq!(number_of(&env, &crashed[0].id), None);
        // Another batch meanwhile leaves them to their worker (it may just be writing them)...
        let f = number_bills_at(&env, vec![stored_draft(&env, "f")], t0 + 1_000).unwrap();
        assert_eq!(f[0].doc.to_tree().unwrap()["billNo"], "INV-2026-000006");
        assert_eq!(number_of(&env, &crashed[0].id), None);
        // ... and the crashed batch, redelivered, gets the numbers reserved for it: no gap.
        let redelivered = number_bills_at(&env, crashed, t0 + 2_000).unwrap();
        assert_eq!(redelivered[0].doc.to_tree().unwrap()["billNo"], "INV-2026-000004");
        assert_eq!(redelivered[1].doc.to_tree().unwrap()["billNo"], "INV-2026-000005");
        // Drafts read before they were numbered (a slow redelivery) get no new numbers: the
        // next bill takes the next number, no gap.
        let stale = number_bills_at(&env, batch_copy, t0 + 3_000).unwrap();
        assert_eq!(stale.iter().map(|n| n.doc.to_tree().unwrap()["billNo"].clone()).collect::<Vec<_>>(), numbers);
        let g = number_bills_at(&env, vec![stored_draft(&env, "g")], t0 + 4_000).unwrap();
        assert_eq!(g[0].doc.to_tree().unwrap()["billNo"], "INV-2026-000007");
        // A crash whose batch never comes back: the first reservation after the repair time
        // gives its bills their numbers.
        let lost: Vec<Unnumbered> = ["h", "i"].iter().map(|a| stored_draft(&env, a)).collect();
        take_numbers(&env, &lost, t0 + 5_000).unwrap();
        let j = number_bills_at(&env, vec![stored_draft(&env, "j")], t0 + 6_000).unwrap();
        assert_eq!(
            (j[0].doc.to_tree().unwrap()["billNo"].as_str(), number_of(&env, &lost[0].id)),
            (Some("INV-2026-000010"), None)
        );
        let k = number_bills_at(&env, vec![stored_draft(&env, "k")], t0 + 5_000 + RESERVATION_REPAIR_AFTER_MS).unwrap();
        assert_eq!(number_of(&env, &lost[0].id).as_deref(), Some("INV-2026-000008"));
        assert_eq!(number_of(&env, &lost[1].id).as_deref(), Some("INV-2026-000009"));
        assert_eq!(k[0].doc.to_tree().unwrap()["billNo"], "INV-2026-000011");
        // Repaired, the abandoned reservation was closed; k's writer closed k's.
        assert_eq!(open_reservations(&env), Vec::<usize>::new());
        // Counters of older versions: their last reservation is read as an open one, taken long ago.
        let old: Counter = serde_json::from_value(json!({"lastBillId": "x", "lastBillNo": "INV-2026-000009"})).unwrap();
        let x = Assigned { bill_id: "x".into(), bill_no: "INV-2026-000009".into() };
        assert_eq!(old.open(), [Reservation { at_ms: 0, bills: vec![x.clone()], fresh: None }]);
        let old: Counter =
            serde_json::from_value(json!({"last": [{"billId": "x", "billNo": "INV-2026-000009"}]})).unwrap();
        assert_eq!(old.open(), [Reservation { at_ms: 0, bills: vec![x], fresh: None }]);
    }

    /// A fresh bill of account `a` (stored, with no products) for October 2026 in run "run",
    /// built as a worker builds it: not stored.
    fn fresh_draft(env: &Env<'_, bss_kit::kv::MemKv>, a: &str) -> Draft {
        let docs = env.store.tenant("t1");
        if docs.get::<Value>("billingAccount", a).unwrap().is_none() {
            docs.create("billingAccount", a, json!({"id": a, "currency": "EUR", "billCycleDay": 1})).unwrap();
        }
        let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);
        let at = "2026-11-01T00:00:00Z".parse().unwrap();
        let d = prepare(env, &account(env, a).unwrap(), Some(period), at, Some("run"), None).unwrap();
        assert!(d.stored.is_none());
        d
    }

    /// Every stored bill's number, sorted.
    fn all_numbers(env: &Env<'_, bss_kit::kv::MemKv>) -> Vec<String> {
        let keys = env.store.list_keys("t/t1/customerBill/", 1_000).unwrap();
        let mut numbers: Vec<String> = env
            .store
            .backend()
            .get_many(&keys)
            .unwrap()
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Versioned<Value>>(&v?).ok())
            .map(|d| d.data["billNo"].as_str().unwrap_or("none").to_string())
            .collect();
        numbers.sort();
        numbers
    }

    #[test]
    fn fresh_bills_are_written_once_numbered_and_no_crash_or_duplicate_loses_or_repeats_a_number() {
        let store = bss_kit::kv::Store::new(bss_kit::kv::MemKv::default());
        let tenant = bss_kit::auth::Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let number = |n: u32| format!("INV-2026-{n:06}");
        let unnumbered = |accounts: &[&str]| -> Vec<Unnumbered> {
            accounts.iter().map(|a| fresh_draft(&env, a).unnumbered()).collect()
        };
        bss_kit::events::native::take_published();
        let numbered = number_bills(&env, unnumbered(&["a", "b", "c"])).unwrap();
        assert_eq!(
            numbered.iter().map(|n| n.doc.to_tree().unwrap()["billNo"].clone()).collect::<Vec<_>>(),
            [1, 2, 3].map(number)
        );
        // One write each: created validated, numbered in the TMF document and in its domain bill.
        let stored = env.resources(BILL).get(&numbered[1].id).unwrap();
        assert_eq!((stored.version, &stored.data), (1, &numbered[1].doc.to_tree().unwrap()));
        assert_eq!(
            (stored.data["state"].as_str(), stored.data["billRun"]["id"].as_str()),
            (Some("validated"), Some("run"))
        );
        let b = domain_bill(&stored.data).unwrap();
        assert_eq!((b.bill_no, b.state), (Some(number(2)), BillState::Validated));
        assert!(numbered.iter().all(|n| !n.foreign));
        assert_eq!(open_reservations(&env), Vec::<usize>::new(), "closed by its writer");
        // One event a bill: its creation, validated.
        let events = bss_kit::events::native::take_published();
        let subjects: Vec<&str> = events.iter().map(|(_, subject, _)| subject.as_str()).collect();
        assert_eq!(subjects, ["billing.CustomerBillCreateEvent"; 3], "{subjects:?}");
        // Drafted again (a redelivered batch): the stored bills, as they are.
        let again: Vec<Draft> = ["a", "b", "c"]
            .iter()
            .map(|a| {
                let at = "2026-11-01T00:00:00Z".parse().unwrap();
                let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);
                prepare(&env, &account(&env, a).unwrap(), Some(period), at, Some("run"), None).unwrap()
            })
            .collect();
        assert!(again.iter().all(|d| d.stored.is_some() && d.bill.bill_no.is_some()));

        // A crash right after a reservation: d and e have their numbers reserved, nothing stored.
        let t0 = Utc::now().timestamp_millis();
        let reserved = take_numbers(&env, &unnumbered(&["d", "e"]), t0).unwrap();
        assert_eq!(reserved.iter().map(|a| a.bill_no.clone()).collect::<Vec<_>>(), [4, 5].map(number));
        assert_eq!(all_numbers(&env).len(), 3);
        // Another batch meanwhile leaves them to their worker...
        let f = number_bills_at(&env, unnumbered(&["f"]), t0 + 1_000).unwrap();
        assert_eq!(f[0].doc.to_tree().unwrap()["billNo"], number(6));
        // ... and the batch, delivered again, builds them again and takes the numbers reserved.
        let redelivered = number_bills_at(&env, unnumbered(&["d", "e"]), t0 + 2_000).unwrap();
        assert_eq!(
            redelivered.iter().map(|n| n.doc.to_tree().unwrap()["billNo"].clone()).collect::<Vec<_>>(),
            [4, 5].map(number)
        );

        // Two workers drafting the same bill (a duplicate delivery): the second takes the number
        // reserved by the first; the first, writing after it, finds the bill and keeps its number.
        let mut g1 = fresh_draft(&env, "g");
        let g1_reserved = take_numbers(&env, &[g1.unnumbered()], t0 + 3_000).unwrap();
        let g2 = number_bills_at(&env, unnumbered(&["g"]), t0 + 3_100).unwrap();
        assert_eq!(
            (g1_reserved[0].bill_no.clone(), g2[0].doc.to_tree().unwrap()["billNo"].clone()),
            (number(7), json!(number(7)))
        );
        let late = write_fresh(&env, &g1.id, g1.bill.clone(), &g1.fresh, &g1_reserved[0].bill_no).unwrap();
        assert!(late.foreign && late.doc.to_tree().unwrap() == g2[0].doc.to_tree().unwrap());
        // The foreign document replaces the draft's bill, and its charges are the writer's to mark.
        g1.one_time = vec!["x".into()];
        g1.numbered(late).unwrap();
        assert_eq!((g1.bill.bill_no.as_deref(), g1.one_time.len()), (Some(number(7).as_str()), 0));

        // A crash whose batch never comes back: once the repair time is past, the next
        // reservation builds the bills again from the reservation's origin and writes them.
        let slow = unnumbered(&["h", "i"]);
        take_numbers(&env, &slow, t0 + 5_000).unwrap();
        // i's account is unreadable for now: its repair fails, and its number stays reserved.
        let i_account = env.store.tenant("t1").get::<Value>("billingAccount", "i").unwrap().unwrap().data;
        env.store.backend().delete("t/t1/billingAccount/i").unwrap();
        let j = number_bills_at(&env, unnumbered(&["j"]), t0 + 6_000).unwrap();
        assert_eq!(j[0].doc.to_tree().unwrap()["billNo"], number(10));
        let k = number_bills_at(&env, unnumbered(&["k"]), t0 + 5_000 + RESERVATION_REPAIR_AFTER_MS).unwrap();
        assert_eq!(k[0].doc.to_tree().unwrap()["billNo"], number(11));
        let h = env.resources(BILL).get(&bill_id("h", &again[0].bill.period)).unwrap().data;
        assert_eq!(
            (&h["billNo"], &h["state"], &h["billRun"]["id"]),
            (&json!(number(8)), &json!("validated"), &json!("run"))
        );
        assert_eq!(h["billDate"], "2026-11-01");
        assert_eq!(all_numbers(&env), (1..=11).filter(|n| *n != 9).map(number).collect::<Vec<_>>());
        // Retried a repair time after its failure, the account back: i takes its number, 9.
        env.store.tenant("t1").create("billingAccount", "i", i_account).unwrap();
        let l = number_bills_at(&env, unnumbered(&["l"]), t0 + 5_000 + 2 * RESERVATION_REPAIR_AFTER_MS).unwrap();
        assert_eq!(l[0].doc.to_tree().unwrap()["billNo"], number(12));
        assert_eq!(all_numbers(&env), (1..=12).map(number).collect::<Vec<_>>(), "gap-free, each number once");
        // h's worker, writing at last, finds h written and keeps its number.
        let h_late =
            number_bills_at(&env, vec![slow[0].clone()], t0 + 5_000 + 3 * RESERVATION_REPAIR_AFTER_MS).unwrap();
        assert_eq!((h_late[0].doc.to_tree().unwrap()["billNo"].clone(), h_late[0].foreign), (json!(number(8)), true));
        // Every reservation is closed: by its writer, or repaired once abandoned.
        assert_eq!(open_reservations(&env), Vec::<usize>::new());
        assert_eq!(all_numbers(&env), (1..=12).map(number).collect::<Vec<_>>());

        // A reservation in flight is its writer's: another batch does not read its bills.
        let t1 = t0 + 10 * RESERVATION_REPAIR_AFTER_MS;
        let accounts: Vec<String> = (0..30).map(|n| format!("m{n}")).collect();
        let in_flight = unnumbered(&accounts.iter().map(String::as_str).collect::<Vec<_>>());
        take_numbers(&env, &in_flight, t1).unwrap();
        let ahead = ReadAhead::new(store.backend());
        let keys: Vec<String> =
            in_flight.iter().map(|d| env.store.tenant("t1").key(BILL.collection, &d.id).unwrap()).collect();
        ahead.fetch(&keys).unwrap();
        let through_ahead = bss_kit::kv::Store::new(&ahead);
        let n = number_bills_at(&Env::new(&through_ahead, &tenant), unnumbered(&["n"]), t1 + 1_000).unwrap();
        assert_eq!(n[0].doc.to_tree().unwrap()["billNo"], number(43));
        assert_eq!(ahead.held(), 30, "none of the 30 bills in flight was read");
        assert_eq!(open_reservations(&env), [30]);
        // Its writer wrote them all and crashed before closing it: open until it is abandoned,
        // then closed by the next reservation, which finds every bill numbered (nothing
        // rewritten, no number taken again).
        for (d, a) in in_flight.iter().zip(13..) {
            write_fresh(&env, &d.id, d.bill.clone(), d.fresh.as_ref().unwrap(), &number(a)).unwrap();
        }
        number_bills_at(&env, unnumbered(&["o"]), t1 + 2_000).unwrap();
        assert_eq!(open_reservations(&env), [30]);
        let p = number_bills_at(&env, unnumbered(&["p"]), t1 + RESERVATION_REPAIR_AFTER_MS).unwrap();
        assert_eq!(p[0].doc.to_tree().unwrap()["billNo"], number(45));
        assert_eq!(open_reservations(&env), Vec::<usize>::new());
        assert_eq!(all_numbers(&env), (1..=45).map(number).collect::<Vec<_>>(), "gap-free, each number once");
        assert!(in_flight.iter().all(|d| env.resources(BILL).get(&d.id).unwrap().version == 1), "written once");
    }

    #[test]
    fn a_bill_document_is_written_straight_from_the_bill_in_the_tmf_shape() {
        let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);
        let input = BillInput::new(
            "a",
            Currency::new("EUR").unwrap(),
            period,
            chrono_tz::UTC,
            "2026-11-01T00:00:00Z".parse().unwrap(),
            14,
        );
        let mut bill = build_bill(&input).unwrap();
        bill.tax_summary = vec![
            TaxSummary {
                tax_category: "standard".into(),
                jurisdiction: Some("FR".into()),
                tax_rate_id: "vat-fr".into(),
                rate: Decimal::from_str("20.0").unwrap(),
                taxable: eur("10.50"),
                tax: eur("2.10"),
            },
            TaxSummary {
                tax_category: "reduced".into(),
                jurisdiction: None,
                tax_rate_id: "vat-r".into(),
                rate: Decimal::from_str("5.5").unwrap(),
                taxable: eur("-1"),
                tax: eur("-0.06"),
            },
        ];
        (bill.subtotal, bill.total, bill.amount_due) = (eur("9.50"), eur("11.54"), eur("12.04"));
        bss_domain::billing::number::Numbered::set_validated(&mut bill, "INV-2026-000042".into());
        let roll_up = json!([{"billingAccount": {"id": "child"}, "lineId": []}]);
        let fresh = Fresh {
            origin: Origin { run_id: Some("run-1".into()), issued_at: "2026-11-01T00:00:00Z".parse().unwrap() },
            roll_up: Some(roll_up.clone()),
        };
        let doc = serde_json::to_value(fresh.document(&bill)).unwrap();
        assert_eq!(
            doc,
            json!({
                "billNo": "INV-2026-000042",
                "billDate": bill.bill_date.to_string(),
                "paymentDueDate": bill.due_date.to_string(),
                "billingPeriod": {"startDateTime": "2026-10-01", "endDateTime": "2026-11-01"},
                "state": "validated",
                "category": "normal",
                "runType": "onCycle",
                "billingAccount": {"id": "a"},
                "amountDue": {"unit": "EUR", "value": "12.04"},
                "remainingAmount": {"unit": "EUR", "value": "11.54"},
                "taxExcludedAmount": {"unit": "EUR", "value": "9.50"},
                "taxIncludedAmount": {"unit": "EUR", "value": "11.54"},
                "taxItem": [
                    {"taxCategory": "standard", "taxRate": "20.0", "jurisdiction": "FR",
                     "taxAmount": {"unit": "EUR", "value": "2.10"}, "taxableAmount": {"unit": "EUR", "value": "10.50"}},
                    {"taxCategory": "reduced", "taxRate": "5.5", "jurisdiction": null,
                     "taxAmount": {"unit": "EUR", "value": "-0.06"}, "taxableAmount": {"unit": "EUR", "value": "-1"}}
                ],
                "billRun": {"id": "run-1"},
                "bill": serde_json::to_value(&bill).unwrap(),
                "rollUp": roll_up,
            })
        );
        // On demand: no run, no roll-up.
        let on_demand = Fresh { origin: Origin { run_id: None, ..fresh.origin.clone() }, roll_up: None };
        let doc = serde_json::to_value(on_demand.document(&bill)).unwrap();
        assert_eq!(
            (&doc["billRun"], &doc["category"], &doc["runType"]),
            (&Value::Null, &json!("onDemand"), &json!("offCycle"))
        );
        assert!(doc.get("rollUp").is_none());

        // Written, it answers as the stored tree does: its head, its number, its domain bill.
        let store = bss_kit::kv::Store::new(bss_kit::kv::MemKv::default());
        let tenant = bss_kit::auth::Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let written = create_bill(&env, &bill.id, &fresh.document(&bill)).unwrap();
        let stored = BillDoc::stored(env.resources(BILL).get(&bill.id).unwrap());
        assert!(matches!(written.data, BillDoc::Written { .. }));
        assert_eq!(written.version, stored.version);
        assert_eq!(written.data.head(), stored.data.head());
        assert_eq!(written.data.head().remaining, Some(eur("11.54")));
        assert!(written.data.has_number() && stored.data.has_number());
        assert_eq!(written.data.domain_bill().unwrap(), bill);
        assert_eq!(written.data.to_tree().unwrap(), stored.data.into_tree().unwrap());
        let e = create_bill(&env, &bill.id, &fresh.document(&bill)).unwrap_err();
        assert_eq!(e.code, "ALREADY_EXISTS");
    }

    #[test]
    fn a_batch_reads_ahead_every_key_that_billing_an_account_reads() {
        let kv = bss_kit::kv::MemKv::default();
        let store = bss_kit::kv::Store::new(&kv);
        let docs = store.tenant("t1");
        docs.create("billingAccount", "a", json!({"id": "a", "currency": "EUR", "billCycleDay": 1})).unwrap();
        docs.create(ACCOUNT_PRODUCTS, "a", AccountProducts { products: vec!["p".into()] }).unwrap();
        docs.create(
            "product",
            "p",
            json!({"id": "p", "billingAccount": {"id": "a"}, "startDate": "2026-09-01T00:00:00Z",
                   "productPrice": [{"name": "monthly"}, {"name": "SIM"}], "characteristic": [{"name": "msisdn"}]}),
        )
        .unwrap();
        let charge = |n: u32, kind: &str, amount: &str| {
            json!({"id": format!("p.{n}"), "name": kind, "chargeType": kind, "state": "pendingBilling",
                   "recurringChargePeriod": "month", "amount": {"unit": "EUR", "value": amount}})
        };
        docs.create("billingCharge", "p.1", charge(1, "recurring", "20.00")).unwrap();
        docs.create("billingCharge", "p.2", charge(2, "oneTime", "10.00")).unwrap();
        let layout = UsageKeys::new("t1");
        let totals = bss_domain::usage::UsageTotals { services: Vec::new(), complete: true };
        kv.set(&layout.totals("p", "2026-10-01"), &bss_domain::stored::encode(&totals)).unwrap();
        let tenant = bss_kit::auth::Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let acct = account(&env, "a").unwrap();
        let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);

        let ahead = ReadAhead::new(&kv);
        let ahead_store = bss_kit::kv::Store::new(&ahead);
        let ahead_env = Env::new(&ahead_store, &tenant);
        read_ahead(&ahead_env, &ahead, &[(acct.clone(), period)]).unwrap();
        let mut snap = Snapshot::new();
        snap.insert(
            CatalogKind::TaxRate,
            json!({"id": "tax-standard", "name": "VAT", "taxCategory": "standard", "rate": 20,
                   "validFor": {"startDateTime": "2026-01-01T00:00:00Z"}, "lifecycleStatus": "active"}),
        );
        let catalog = BillingCatalog::new(&snap);
        let at = "2026-11-01T00:00:00Z".parse().unwrap();
        let d = prepare(&ahead_env, &acct, Some(period), at, Some("run"), Some(&catalog)).unwrap();
        let lines: Vec<&str> = d.bill.lines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(lines, ["charge:p.1:2026-10-01", "oneTime:p.2"], "billed from what was read ahead");
        // Every key gathering read was read ahead, and everything read ahead was read.
        assert_eq!((ahead.missed(), ahead.held()), (0, 0));
    }

    fn voice(id: &str, net: &str) -> RatedRecord {
        RatedRecord {
            record_id: id.into(),
            tariff_id: Name::new("tariff-mobile-m"),
            tariff_version: Name::new("1"),
            service: Service::Voice,
            measured_base_units: 60,
            charged_base_units: 60,
            allowance_base_units: 0,
            overage_base_units: 0,
            blocked_base_units: 0,
            net: eur(net),
            tax: eur("0.09"),
            gross: eur("0.54"),
            steps: Vec::new(),
        }
    }

    #[test]
    fn usage_is_read_from_the_totals_while_they_count_every_indexed_record() {
        let store = bss_kit::kv::Store::new(bss_kit::kv::MemKv::default());
        let tenant = bss_kit::auth::Tenant { tenant_id: "t1".into(), key_id: "k".into() };
        let env = Env::new(&store, &tenant);
        let kv = store.backend();
        let layout = UsageKeys::new("t1");
        let period = BillPeriod::containing(NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(), 1);
        for id in ["u1", "u2"] {
            let doc = json!({"id": id, "status": "rated", "rated": voice(id, "0.45")});
            kv.set(&format!("t/t1/usage/{id}"), &serde_json::to_vec(&doc).unwrap()).unwrap();
            kv.set(&layout.by_product("p1", "2026-10-01", id), b"").unwrap();
        }
        let net = |env: &Env<'_, bss_kit::kv::MemKv>| {
            let u = usage_of(env, "p1", &period, Currency::new("EUR").unwrap()).unwrap();
            (u.len(), u[0].records, u[0].net.amount.to_string())
        };
        // No totals (records rated before they were kept): the records.
        assert_eq!(net(&env), (1, 2, "0.90".to_string()));
        // Totals counting both records are what is read (here deliberately not the records' sum),
        // in the compact form the usage component writes and as the JSON it wrote before.
        let totals = UsageTotals::of(&[voice("u1", "1.00"), voice("u2", "2.00")]).unwrap();
        kv.set(&layout.totals("p1", "2026-10-01"), &bss_domain::stored::encode(&totals)).unwrap();
        assert_eq!(net(&env), (1, 2, "3.00".to_string()));
        kv.set(&layout.totals("p1", "2026-10-01"), &serde_json::to_vec(&totals).unwrap()).unwrap();
        assert_eq!(net(&env), (1, 2, "3.00".to_string()));
        // Totals that miss a record are not trusted.
        let short = UsageTotals::of(&[voice("u1", "1.00")]).unwrap();
        kv.set(&layout.totals("p1", "2026-10-01"), &serde_json::to_vec(&short).unwrap()).unwrap();
        assert_eq!(net(&env), (1, 2, "0.90".to_string()));
        // Complete totals are read without the index: here the index lists two records and the
        // totals count one, and the totals are what the bill shows.
        let complete = UsageTotals { complete: true, ..short };
        kv.set(&layout.totals("p1", "2026-10-01"), &bss_domain::stored::encode(&complete)).unwrap();
        assert_eq!(net(&env), (1, 1, "1.00".to_string()));
    }

    #[test]
    fn billing_reads_the_same_sums_and_tax_category_as_the_full_rating() {
        let rated = RatedRecord {
            record_id: "r-1".into(),
            tariff_id: Name::new("tariff-mobile-m"),
            tariff_version: Name::new("2026-01-01"),
            service: Service::Voice,
            measured_base_units: 61,
            charged_base_units: 120,
            allowance_base_units: 60,
            overage_base_units: 0,
            blocked_base_units: 0,
            net: eur("0.45"),
            tax: eur("0.09"),
            gross: eur("0.54"),
            steps: vec![
                Step::OnNet,
                Step::Rounded {
                    rule: RoundingRule::HalfEven,
                    unrounded: Decimal::new(45, 2),
                    net: Decimal::new(45, 2),
                },
                Step::Tax {
                    tax_rate: Name::new("vat-fr-standard"),
                    category: Name::new("telecom"),
                    percent: Decimal::from(20),
                    amount: Decimal::new(9, 2),
                },
            ],
        };
        let doc = json!({"id": "r-1", "status": "rated", "fingerprint": "f", "receivedAt": "2026-10-02T10:00:00.000Z",
                         "rated": rated});
        let stored: bss_domain::usage::UsageDoc = serde_json::from_value(doc.clone()).unwrap();
        // The JSON stored before the compact form, and the compact form, read the same.
        for bytes in [serde_json::to_vec(&doc).unwrap(), bss_domain::stored::encode(&stored)] {
            let r = BilledRating::of_stored(&bytes).unwrap();
            assert_eq!((r.record_id.as_str(), r.service), ("r-1", Service::Voice));
            assert_eq!((r.charged_base_units, r.allowance_base_units), (120, 60));
            assert_eq!((r.net, r.tax), (eur("0.45"), eur("0.09")));
            let category = r.steps.into_iter().find(|s| s.step == "tax").and_then(|s| s.category);
            assert_eq!(category.as_deref(), Some("telecom"));
        }
        // A record that was never rated (held) has nothing to bill.
        let held =
            json!({"id": "r-2", "status": "recycled", "fingerprint": "g", "receivedAt": "2026-10-02T10:00:00.000Z"});
        assert!(BilledRating::of_stored(&serde_json::to_vec(&held).unwrap()).is_none());
        let held: bss_domain::usage::UsageDoc = serde_json::from_value(held).unwrap();
        assert!(BilledRating::of_stored(&bss_domain::stored::encode(&held)).is_none());
    }
}
