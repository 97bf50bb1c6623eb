//! Payments and refunds (TMF676), credit notes and the account balance (TMF678 extensions): each
//! one an entry of the account's ledger (`bss_domain::billing::ledger`), stored with
//! compare-and-swap by [`crate::bills::update_ledger`]. Unit tests: `cargo test -p billing
//! --no-default-features --lib`; end to end: `cargo test -p bss-host --test e2e_payments`.
//!
//! Routes (tenant API key required; every creating POST honours `Idempotency-Key`):
//! - `POST /tmf-api/paymentManagement/v4/payment` `{account: {id}, totalAmount: {unit, value},
//!   paymentDate?, paymentMethod?, correlatorId?, bill?: {id}, …}` → 201 the `Payment`: status
//!   `succeeded`, `paymentItem` (what it paid on which bill, as allocated when it was recorded)
//!   and `unallocatedAmount` (an over-payment, kept as credit for the next bills).
//!   `GET payment[/{id}]`.
//! - `POST /tmf-api/paymentManagement/v4/refund` `{account: {id}, totalAmount, payment?: {id}}`
//!   → 201 the `Refund` with `refundItem` (the credits it paid back): only credit not yet
//!   allocated is refunded (of the payment named, else the newest credits first), else 422.
//!   `GET refund[/{id}]`.
//! - `POST /tmf-api/customerBillManagement/v4/creditNote` `{bill: {id}, lines?: [line ids],
//!   amount?: {unit, value}, reason}` → 201 the `CreditNote`: the listed lines in full (their
//!   net, tax and gross; a line id is the bill line's `lineId` or its
//!   `appliedCustomerBillingRate` id `<billId>~<n>`; a line is credited once, else 409) or an
//!   amount outside tax (a commercial gesture). `GET creditNote[/{id}]`.
//! - `GET /tmf-api/customerBillManagement/v4/billingAccountBalance/{accountId}` → the ledger:
//!   `balance` (= bills − credit notes − payments + refunds, the `totals` listed), `openDebt`,
//!   `availableCredit` and the open bills.
//!
//! Rules:
//! - Amounts are above zero, exact to the currency's minor unit and in the account's currency
//!   (422 otherwise: never converted). A named bill must be the account's and posted.
//! - Allocation (the ledger's): to the named bill first, then to the open bills oldest first;
//!   what is left is credit.
//! - Exactly once: the entry id derives from the `Idempotency-Key` (else from `correlatorId`,
//!   else it is random), and the ledger takes an entry id it already holds as a no-op. A retry
//!   after a crash between the ledger write and the document therefore finishes the document
//!   instead of paying twice; a `correlatorId` sent again answers 200 with the first payment
//!   (409 if its amount or bill differ).
//! - The bills a write allocated to get `remainingAmount` and `state` (`partiallyPaid`,
//!   `settled`) from the ledger; those only ever move forward (what is open on a bill only
//!   shrinks), so concurrent writes never put a bill back.
//! - Every write publishes its TMF events (`billing.PaymentCreateEvent`,
//!   `billing.CustomerBillStateChangeEvent`, …).

use std::collections::BTreeSet;

use bss_domain::billing::BillingError;
use bss_domain::billing::ledger::{CreditNote, EntryKind, Ledger, LedgerBill};
use bss_domain::billing::number::BillState;
use bss_domain::catalog::{money_from_json, money_to_json};
use bss_domain::money::{Currency, Money};
use bss_kit::ApiError;
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Change, Env, Kind, NoHooks};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use crate::bills::{self, BILL, domain_bill};

/// The TMF676 base path.
pub const BASE: &str = "/tmf-api/paymentManagement/v4";
/// Payments (TMF676 `Payment`).
pub const PAYMENT: Kind = Kind { collection: "payment", type_name: "Payment", base_path: BASE, domain: "billing" };
/// Refunds (TMF676 `Refund`).
pub const REFUND: Kind = Kind { collection: "refund", type_name: "Refund", base_path: BASE, domain: "billing" };
/// Credit notes (BSS extension of TMF678).
pub const CREDIT_NOTE: Kind =
    Kind { collection: "creditNote", type_name: "CreditNote", base_path: bills::BASE, domain: "billing" };
/// The path segment of the balance view (under the TMF678 base).
pub const BALANCE: &str = "billingAccountBalance";
/// The ledgers' collection (the name `crate::bills` stores them under).
pub use crate::bills::LEDGER;
/// Attributes of a payment or refund the server sets.
const SERVER_OWNED: &[&str] = &["status", "statusDate", "paymentItem", "refundItem", "unallocatedAmount"];

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A money value the way `crate::bills` writes bill amounts (the value as a decimal string).
/// The HTTP error of a refused ledger operation.
pub fn ledger_error(e: BillingError) -> ApiError {
    let code = match &e {
        BillingError::DuplicateEntry { .. } => {
            return ApiError::conflict(format!("{e}: an entry id is used once")).with_code("DUPLICATE_ENTRY");
        }
        BillingError::DuplicateLine { id } => {
            return ApiError::conflict(format!("line {id} is already credited by another credit note"))
                .with_code("LINE_ALREADY_CREDITED");
        }
        BillingError::CurrencyMismatch { .. } => "CURRENCY_MISMATCH",
        BillingError::InvalidAmount { .. } => "INVALID_AMOUNT",
        BillingError::Unknown { .. } => "UNKNOWN_REFERENCE",
        BillingError::DraftBill { .. } => "DRAFT_BILL",
        BillingError::CreditExceedsBill { .. } => "CREDIT_EXCEEDS_BILL",
        BillingError::RefundExceedsCredit { .. } => "REFUND_EXCEEDS_CREDIT",
        _ => "UNPROCESSABLE_ENTITY",
    };
    ApiError::unprocessable(e.to_string()).with_code(code)
}

/// The request body as an object.
fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("the body must be a JSON object").with_code("INVALID_BODY")),
    }
}

/// `<field>.id` of a reference, if present (400 if present but not a non-empty string).
fn reference(doc: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(r) => match r.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Some(id.to_string())),
            _ => Err(ApiError::bad_request(format!("{field}: a reference {{\"id\": \"...\"}}"))),
        },
    }
}

/// An amount of `field`: present and well formed (400), then in the account's currency, above
/// zero and exact to the minor unit (422).
fn amount(doc: &Map<String, Value>, field: &str, currency: Currency) -> Result<Money, ApiError> {
    let raw = doc.get(field).ok_or_else(|| ApiError::bad_request(format!("{field} {{unit, value}} is mandatory")))?;
    let m = money_from_json(raw).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
    if m.currency != currency {
        return Err(ApiError::unprocessable(format!(
            "{field} is in {} but the account is in {}; amounts are never converted",
            m.currency.code(),
            currency.code()
        ))
        .with_code("CURRENCY_MISMATCH"));
    }
    if m.amount <= Decimal::ZERO {
        return Err(ApiError::unprocessable(format!("{field} must be above zero")).with_code("INVALID_AMOUNT"));
    }
    if m.amount.normalize().scale() > currency.minor_digits() {
        return Err(ApiError::unprocessable(format!(
            "{field} {} is finer than the minor unit of {}",
            m.amount,
            currency.code()
        ))
        .with_code("INVALID_AMOUNT"));
    }
    Ok(m)
}

/// An optional RFC 3339 time of `field`.
fn time(doc: &Map<String, Value>, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| ApiError::bad_request(format!("{field}: {s:?} is not an RFC 3339 time ({e})"))),
        Some(_) => Err(ApiError::bad_request(format!("{field}: an RFC 3339 time"))),
    }
}

fn account_ref(id: &str) -> Value {
    json!({"id": id, "href": format!("/tmf-api/accountManagement/v4/billingAccount/{id}"), "@referredType": "BillingAccount"})
}

fn bill_ref(id: &str) -> Value {
    json!({"id": id, "href": BILL.href(id), "@referredType": "CustomerBill"})
}

/// The id of a new ledger entry: derived from the `Idempotency-Key` (else from `correlatorId`),
/// so a retried request addresses the same entry; random without either.
pub fn entry_id(prefix: &str, idempotency_key: Option<&str>, doc: &Value) -> String {
    match (idempotency_key, doc.get("correlatorId").and_then(Value::as_str)) {
        (Some(key), _) => bss_kit::ids::derived_id(prefix, &format!("key:{key}")),
        (None, Some(c)) if !c.is_empty() => bss_kit::ids::derived_id(prefix, &format!("correlator:{c}")),
        _ => format!("{prefix}{}", bss_kit::ids::new_id()),
    }
}

/// The stored bill `id` of `account` (422 otherwise).
fn bill_of_account<B: KvBackend>(env: &Env<'_, B>, id: &str, account: &str) -> Result<Value, ApiError> {
    let doc = env
        .resources(BILL)
        .find(id)?
        .ok_or_else(|| ApiError::unprocessable(format!("bill: customerBill {id} does not exist")))?
        .data;
    if text(&doc, "/billingAccount/id") != account {
        return Err(ApiError::unprocessable(format!(
            "bill: customerBill {id} is not a bill of billing account {account}"
        ))
        .with_code("BILL_OF_ANOTHER_ACCOUNT"));
    }
    Ok(doc)
}

/// What a write did: the document created (or found, on a replay) and the bills it moved.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The payment, refund or credit note.
    pub change: Change,
    /// Whether the document existed already (a replayed request).
    pub replayed: bool,
    /// The bills whose remaining amount or state changed.
    pub bills: Vec<Change>,
}

impl Recorded {
    /// Every change, the document's first (to publish).
    pub fn changes(&self) -> Vec<&Change> {
        let own = (!self.replayed).then_some(&self.change);
        own.into_iter().chain(self.bills.iter()).collect()
    }
}

/// Creates `doc` under `id`, or answers the stored one if an earlier attempt created it.
fn store<B: KvBackend>(env: &Env<'_, B>, kind: Kind, id: &str, doc: Value) -> Result<(Change, bool), ApiError> {
    match env.resources(kind).create_with_id(env, &NoHooks, id, doc) {
        Ok(c) => Ok((c, false)),
        Err(e) if e.code == "ALREADY_EXISTS" => {
            let found = env.resources(kind).get(id)?;
            Ok((Change::new(kind, None, Some(found.data), found.version), true))
        }
        Err(e) => Err(e),
    }
}

/// Refuses an entry id already used by a document of another request (same id, other data).
fn same_request(
    existing: &Value,
    account: &str,
    amount: &Money,
    reference: Option<(&str, Option<&str>)>,
) -> Result<(), ApiError> {
    let stored = existing.get("totalAmount").and_then(|m| money_from_json(m).ok());
    let same_ref =
        reference.is_none_or(|(field, id)| existing.pointer(&format!("/{field}/id")).and_then(Value::as_str) == id);
    if text(existing, "/account/id") != account || stored.as_ref() != Some(amount) || !same_ref {
        return Err(ApiError::conflict(format!(
            "{} {} was already recorded with other data (correlatorId or Idempotency-Key reused)",
            text(existing, "/@type"),
            text(existing, "/id")
        ))
        .with_code("DUPLICATE_ENTRY"));
    }
    Ok(())
}

/// Records a payment (see the module doc) under entry `id` at `now`.
pub fn record_payment<B: KvBackend>(
    env: &Env<'_, B>,
    body: Value,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Recorded, ApiError> {
    let mut doc = object(body)?;
    let account_id = reference(&doc, "account")?
        .ok_or_else(|| ApiError::bad_request("account {id}: the billing account that pays is mandatory"))?;
    let acct = bills::account(env, &account_id)?;
    let total = amount(&doc, "totalAmount", acct.currency)?;
    let bill = reference(&doc, "bill")?;
    if let Some(b) = &bill {
        bill_of_account(env, b, &account_id)?;
    }
    let paid_at = time(&doc, "paymentDate")?.unwrap_or(now);
    if let Some(existing) = env.resources(PAYMENT).find(id)? {
        same_request(&existing.data, &account_id, &total, Some(("bill", bill.as_deref())))?;
    }
    let (posting, ledger) = bills::update_ledger(env, &account_id, acct.currency, |l| {
        let posting = l.record_payment(id, total, now, bill.as_deref()).map_err(ledger_error)?;
        Ok((posting, l.clone()))
    })?;
    let entry = ledger.entry(id).ok_or_else(|| ApiError::internal(format!("payment {id} not in the ledger")))?;
    let mut touched: BTreeSet<String> = posting.state_changes.iter().map(|c| c.bill_id.clone()).collect();
    let mut items = Vec::new();
    for a in ledger.allocations.iter().filter(|a| a.from == id && ledger.bill(&a.to).is_some()) {
        touched.insert(a.to.clone());
        items.push(json!({"id": (items.len() + 1).to_string(), "amount": money_to_json(&a.amount),
                          "totalAmount": money_to_json(&a.amount), "item": bill_ref(&a.to)}));
    }
    for f in SERVER_OWNED {
        doc.remove(*f);
    }
    let mut account = doc.get("account").cloned().unwrap_or_else(|| json!({}));
    for (k, v) in account_ref(&account_id).as_object().into_iter().flatten() {
        account[k] = v.clone();
    }
    doc.insert("account".into(), account);
    if let Some(b) = &bill {
        doc.insert("bill".into(), bill_ref(b));
    }
    doc.insert("totalAmount".into(), money_to_json(&total));
    doc.insert("paymentDate".into(), json!(rfc3339(paid_at)));
    doc.insert("status".into(), json!("succeeded"));
    doc.insert("statusDate".into(), json!(rfc3339(now)));
    doc.insert("paymentItem".into(), Value::Array(items));
    doc.insert("unallocatedAmount".into(), money_to_json(&entry.unallocated));
    let (change, replayed) = store(env, PAYMENT, id, Value::Object(doc))?;
    let bills = sync_bills(env, &ledger, &touched)?;
    Ok(Recorded { change, replayed, bills })
}

/// Records a refund (see the module doc) under entry `id` at `now`.
pub fn record_refund<B: KvBackend>(
    env: &Env<'_, B>,
    body: Value,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Recorded, ApiError> {
    let mut doc = object(body)?;
    let account_id = reference(&doc, "account")?
        .ok_or_else(|| ApiError::bad_request("account {id}: the billing account refunded is mandatory"))?;
    let acct = bills::account(env, &account_id)?;
    let total = amount(&doc, "totalAmount", acct.currency)?;
    let payment = reference(&doc, "payment")?;
    if let Some(p) = &payment {
        let found = env
            .resources(PAYMENT)
            .find(p)?
            .ok_or_else(|| ApiError::unprocessable(format!("payment: payment {p} does not exist")))?;
        if text(&found.data, "/account/id") != account_id {
            return Err(ApiError::unprocessable(format!(
                "payment: payment {p} is not a payment of billing account {account_id}"
            ))
            .with_code("PAYMENT_OF_ANOTHER_ACCOUNT"));
        }
    }
    if let Some(existing) = env.resources(REFUND).find(id)? {
        same_request(&existing.data, &account_id, &total, Some(("payment", payment.as_deref())))?;
    }
    let ledger = bills::update_ledger(env, &account_id, acct.currency, |l| {
        l.record_refund(id, total, now, payment.as_deref()).map_err(ledger_error)?;
        Ok(l.clone())
    })?;
    let items: Vec<Value> = ledger
        .allocations
        .iter()
        .filter(|a| a.to == id)
        .enumerate()
        .map(|(n, a)| {
            let kind = ledger.entry(&a.from).map(|e| e.kind);
            let item = match kind {
                Some(EntryKind::Payment) => {
                    json!({"id": a.from, "href": PAYMENT.href(&a.from), "@referredType": "Payment"})
                }
                Some(EntryKind::CreditNote) => {
                    json!({"id": a.from, "href": CREDIT_NOTE.href(&a.from), "@referredType": "CreditNote"})
                }
                _ => bill_ref(&a.from),
            };
            json!({"id": (n + 1).to_string(), "amount": money_to_json(&a.amount), "item": item})
        })
        .collect();
    for f in SERVER_OWNED {
        doc.remove(*f);
    }
    let mut account = doc.get("account").cloned().unwrap_or_else(|| json!({}));
    for (k, v) in account_ref(&account_id).as_object().into_iter().flatten() {
        account[k] = v.clone();
    }
    doc.insert("account".into(), account);
    if let Some(p) = &payment {
        doc.insert("payment".into(), json!({"id": p, "href": PAYMENT.href(p), "@referredType": "Payment"}));
    }
    doc.insert("totalAmount".into(), money_to_json(&total));
    let refunded_at = time(&doc, "refundDate")?.unwrap_or(now);
    doc.insert("refundDate".into(), json!(rfc3339(refunded_at)));
    doc.insert("status".into(), json!("succeeded"));
    doc.insert("statusDate".into(), json!(rfc3339(now)));
    doc.insert("refundItem".into(), Value::Array(items));
    let (change, replayed) = store(env, REFUND, id, Value::Object(doc))?;
    Ok(Recorded { change, replayed, bills: Vec::new() })
}

/// Issues a credit note (see the module doc) under entry `id` at `now`.
pub fn record_credit_note<B: KvBackend>(
    env: &Env<'_, B>,
    body: Value,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Recorded, ApiError> {
    let doc = object(body)?;
    let bill_id =
        reference(&doc, "bill")?.ok_or_else(|| ApiError::bad_request("bill {id}: the bill corrected is mandatory"))?;
    let reason = match doc.get("reason") {
        Some(Value::String(r)) if !r.trim().is_empty() => r.trim().to_string(),
        _ => return Err(ApiError::bad_request("reason: why the bill is corrected (a non-empty text)")),
    };
    let stored = env
        .resources(BILL)
        .find(&bill_id)?
        .ok_or_else(|| ApiError::unprocessable(format!("bill: customerBill {bill_id} does not exist")))?
        .data;
    let bill = domain_bill(&stored)?;
    let acct = bills::account(env, &bill.account_id)?;
    let lines = match doc.get("lines") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => {
            let mut out = Vec::new();
            for v in ids {
                let Some(s) = v.as_str() else {
                    return Err(ApiError::bad_request("lines: the ids of the bill's lines (strings)"));
                };
                // An appliedCustomerBillingRate id `<billId>~<n>` names the n-th line.
                let line = s
                    .strip_prefix(&format!("{bill_id}~"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| bill.lines.get(n))
                    .map_or_else(|| s.to_string(), |l| l.id.clone());
                out.push(line);
            }
            Some(out)
        }
        Some(_) => return Err(ApiError::bad_request("lines: an array of line ids")),
    };
    let note = match (lines, doc.contains_key("amount")) {
        (Some(lines), false) => {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            CreditNote::for_lines(id, &bill, &refs, &reason, now).map_err(|e| match e {
                BillingError::DuplicateLine { id } => ApiError::bad_request(format!("lines: {id} is listed twice")),
                other => ledger_error(other),
            })?
        }
        (None, true) => {
            if bill.state.is_draft() {
                return Err(ledger_error(BillingError::DraftBill { bill_id }));
            }
            let m = amount(&doc, "amount", acct.currency)?;
            CreditNote::for_amount(id, &bill_id, m, &reason, now).map_err(ledger_error)?
        }
        _ => return Err(ApiError::bad_request("a credit note credits either lines or an amount: give one of them")),
    };
    if let Some(existing) = env.resources(CREDIT_NOTE).find(id)? {
        let same = existing.data.get("creditNote").and_then(|n| serde_json::from_value::<CreditNote>(n.clone()).ok());
        if same.is_none_or(|s| s.gross != note.gross || s.line_ids != note.line_ids || s.bill_id != note.bill_id) {
            return Err(ApiError::conflict(format!("credit note {id} was already issued with other data"))
                .with_code("DUPLICATE_ENTRY"));
        }
    }
    let (posting, ledger) = bills::update_ledger(env, &acct.id, acct.currency, |l| {
        let posting = l.record_credit_note(&note).map_err(ledger_error)?;
        Ok((posting, l.clone()))
    })?;
    let entry = ledger.entry(id).ok_or_else(|| ApiError::internal(format!("credit note {id} not in the ledger")))?;
    let mut touched: BTreeSet<String> = posting.state_changes.iter().map(|c| c.bill_id.clone()).collect();
    touched.insert(bill_id.clone());
    let applied: Vec<Value> = ledger
        .allocations
        .iter()
        .filter(|a| a.from == id)
        .map(|a| {
            touched.insert(a.to.clone());
            json!({"amount": money_to_json(&a.amount), "bill": bill_ref(&a.to)})
        })
        .collect();
    let mut bill_reference = bill_ref(&bill_id);
    bill_reference["billNo"] = json!(bill.bill_no);
    let out = json!({
        "name": format!("Credit note on {}", bill.bill_no.as_deref().unwrap_or(&bill_id)),
        "category": "credit",
        "state": "posted",
        "creditNoteDate": rfc3339(now),
        "bill": bill_reference,
        "billingAccount": account_ref(&acct.id),
        "reason": reason,
        "lines": note.line_ids,
        "taxExcludedAmount": money_to_json(&note.net),
        "taxAmount": money_to_json(&note.tax),
        "taxIncludedAmount": money_to_json(&note.gross),
        "appliedAmount": applied,
        "unallocatedAmount": money_to_json(&entry.unallocated),
        "creditNote": note,
    });
    let (change, replayed) = store(env, CREDIT_NOTE, id, out)?;
    let bills = sync_bills(env, &ledger, &touched)?;
    Ok(Recorded { change, replayed, bills })
}

/// What the ledger's view of a bill changes of its document (see [`synced_bill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncNeeded {
    /// `remainingAmount` is to be lowered to what is open.
    pub lower: bool,
    /// `state` is to move forward to `partiallyPaid` or `settled`.
    pub advance: bool,
}

impl SyncNeeded {
    /// Whether anything changes.
    pub fn any(self) -> bool {
        self.lower || self.advance
    }
}

/// What `lb` changes of a bill document whose head is `head`: never backwards (see the module
/// doc).
pub fn sync_needed(head: &crate::bills::BillHead, lb: &LedgerBill) -> SyncNeeded {
    SyncNeeded {
        lower: head.remaining.is_none_or(|r| lb.open.amount < r.amount),
        advance: lb.state >= BillState::PartiallyPaid && head.state.is_none_or(|s| lb.state > s),
    }
}

/// The bill document after the ledger's view of it: `remainingAmount` lowered to what is open,
/// `state` moved forward to `partiallyPaid` or `settled` ([`sync_needed`]); `None` when there is
/// nothing to change.
pub fn synced_bill(doc: &Value, lb: &LedgerBill) -> Result<Option<Value>, ApiError> {
    let needed = sync_needed(&crate::bills::BillHead::of(doc), lb);
    // Most calls change nothing (a bill just posted): decide before copying the document.
    if !needed.any() {
        return Ok(None);
    }
    let mut next = doc.clone();
    if needed.lower {
        next["remainingAmount"] = json!(crate::bills::money(&lb.open));
    }
    if needed.advance {
        let mut b = domain_bill(doc)?;
        b.state = lb.state;
        next["state"] = json!(lb.state.as_str());
        next["bill"] = serde_json::to_value(&b).map_err(|e| ApiError::internal(e.to_string()))?;
    }
    Ok(Some(next))
}

/// Brings the bills `ids` in line with `ledger` ([`synced_bill`]); the changes made.
pub fn sync_bills<B: KvBackend>(
    env: &Env<'_, B>,
    ledger: &Ledger,
    ids: &BTreeSet<String>,
) -> Result<Vec<Change>, ApiError> {
    let mut out = Vec::new();
    for id in ids {
        let Some(lb) = ledger.bill(id) else { continue };
        let Some(current) = env.resources(BILL).find(id)? else { continue };
        if synced_bill(&current.data, lb)?.is_none() {
            continue;
        }
        let change = env
            .resources(BILL)
            .modify(env, &NoHooks, id, |doc| Ok(synced_bill(doc, lb)?.unwrap_or_else(|| doc.clone())))?;
        out.push(change);
    }
    Ok(out)
}

/// The balance view of an account (see the module doc); 404 for an unknown account.
pub fn balance<B: KvBackend>(env: &Env<'_, B>, account_id: &str) -> Result<Value, ApiError> {
    let docs = env.store.tenant(&env.tenant.tenant_id);
    if docs.get::<Value>("billingAccount", account_id)?.is_none() {
        return Err(ApiError::not_found(format!("billingAccount {account_id} does not exist")));
    }
    let ledger = match docs.get::<Ledger>(LEDGER, account_id)? {
        Some(l) => l.data,
        None => Ledger::new(account_id, bills::account(env, account_id)?.currency),
    };
    let c = ledger.currency;
    let total = |kind: EntryKind| {
        Money::new(ledger.entries.iter().filter(|e| e.kind == kind).map(|e| e.amount.amount).sum(), c)
    };
    let open: Vec<Value> = ledger
        .bills
        .iter()
        .filter(|b| b.open.amount > Decimal::ZERO)
        .map(|b| {
            json!({"bill": bill_ref(&b.bill_id), "amount": money_to_json(&b.amount),
                   "remainingAmount": money_to_json(&b.open), "state": b.state.as_str(),
                   "paymentDueDate": b.due_date.to_string()})
        })
        .collect();
    Ok(json!({
        "id": account_id,
        "href": format!("{}/{BALANCE}/{account_id}", bills::BASE),
        "@type": "BillingAccountBalance",
        "billingAccount": account_ref(account_id),
        "balance": money_to_json(&ledger.balance()),
        "openDebt": money_to_json(&ledger.open_debt()),
        "availableCredit": money_to_json(&ledger.available_credit()),
        "totals": {
            "bills": money_to_json(&total(EntryKind::Bill)),
            "creditNotes": money_to_json(&total(EntryKind::CreditNote)),
            "payments": money_to_json(&total(EntryKind::Payment)),
            "refunds": money_to_json(&total(EntryKind::Refund)),
        },
        "openBills": open,
    }))
}

/// Registers the routes of the module doc.
#[cfg(feature = "component")]
pub fn register(r: &mut bss_kit::http::Router) {
    use bss_kit::http::{Ctx, Reply, handler, param};
    use bss_kit::idempotency::{HEADER, idempotent, tenant_scope};
    use bss_kit::resource::{created_reply, emit, ok_reply, routes, with_env};

    type Write = fn(&Env<'_, bss_kit::wasi_kv::WasiKv>, Value, &str, DateTime<Utc>) -> Result<Recorded, ApiError>;

    fn post(ctx: &Ctx, prefix: &'static str, write: Write) -> Result<Reply, ApiError> {
        with_env(ctx, |env| {
            idempotent(env.store.backend(), &tenant_scope(&env.tenant.tenant_id), ctx, || {
                let body: Value = ctx.json()?;
                let id = entry_id(prefix, ctx.header(HEADER), &body);
                let recorded = write(env, body, &id, Utc::now())?;
                for c in recorded.changes() {
                    emit(env.tenant, c);
                }
                if recorded.replayed { ok_reply(&recorded.change) } else { created_reply(&recorded.change) }
            })
        })
    }

    r.post(&PAYMENT.path(), handler(|ctx, _| post(ctx, "pay-", record_payment)));
    r.post(&REFUND.path(), handler(|ctx, _| post(ctx, "refund-", record_refund)));
    r.post(&CREDIT_NOTE.path(), handler(|ctx, _| post(ctx, "cn-", record_credit_note)));
    for kind in [PAYMENT, REFUND, CREDIT_NOTE] {
        r.get(&kind.path(), handler(move |ctx, _| with_env(ctx, |env| routes::list(env, kind, ctx))));
        r.get(
            &kind.item_route(),
            handler(move |ctx, p| with_env(ctx, |env| routes::get(env, kind, ctx, &param(p, "id")?))),
        );
    }
    r.get(
        &format!("{}/{BALANCE}/:id", bills::BASE),
        handler(|ctx, p| with_env(ctx, |env| Reply::json(200, &balance(env, &param(p, "id")?)?))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bss_domain::money::Currency;

    fn eur(s: &str) -> Money {
        Money::new(s.parse().unwrap(), Currency::new("EUR").unwrap())
    }

    fn ledger_bill(open: &str, state: BillState) -> LedgerBill {
        LedgerBill {
            bill_id: "b1".into(),
            issued_at: "2026-03-01T06:00:00Z".parse().unwrap(),
            due_date: "2026-03-15".parse().unwrap(),
            amount: eur("30.00"),
            open: eur(open),
            credited: eur("0"),
            credited_line_ids: BTreeSet::new(),
            state,
        }
    }

    fn empty_bill() -> bss_domain::billing::bill::Bill {
        use bss_domain::billing::bill::{BillInput, build_bill};
        use bss_domain::billing::period::BillPeriod;
        let currency = Currency::new("EUR").unwrap();
        let period = BillPeriod::new("2026-02-01".parse().unwrap(), "2026-03-01".parse().unwrap()).unwrap();
        let input =
            BillInput::new("a1", currency, period, chrono_tz::Tz::UTC, "2026-03-01T06:00:00Z".parse().unwrap(), 14);
        build_bill(&input).unwrap()
    }

    #[test]
    fn entry_ids_follow_the_key_then_the_correlator() {
        let body = json!({"correlatorId": "gw-1"});
        assert_eq!(entry_id("pay-", Some("k1"), &body), entry_id("pay-", Some("k1"), &json!({})));
        assert_ne!(entry_id("pay-", Some("k1"), &body), entry_id("pay-", None, &body));
        assert_eq!(entry_id("pay-", None, &body), entry_id("pay-", None, &body));
        assert_ne!(entry_id("pay-", None, &json!({})), entry_id("pay-", None, &json!({})));
        assert!(bss_kit::kv::valid_segment(&entry_id("refund-", None, &json!({}))));
    }

    #[test]
    fn amounts_are_checked() {
        let eur_c = Currency::new("EUR").unwrap();
        let doc = |v: Value| object(json!({"totalAmount": v})).unwrap();
        assert_eq!(amount(&doc(json!({"unit": "EUR", "value": 5})), "totalAmount", eur_c).unwrap(), eur("5"));
        let e = amount(&doc(json!({"unit": "USD", "value": 5})), "totalAmount", eur_c).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (422, "CURRENCY_MISMATCH"));
        assert_eq!(amount(&doc(json!({"unit": "EUR", "value": 0})), "totalAmount", eur_c).unwrap_err().status, 422);
        assert_eq!(
            amount(&doc(json!({"unit": "EUR", "value": "1.001"})), "totalAmount", eur_c).unwrap_err().status,
            422
        );
        assert_eq!(amount(&doc(json!(5)), "totalAmount", eur_c).unwrap_err().status, 400);
        assert_eq!(amount(&object(json!({})).unwrap(), "totalAmount", eur_c).unwrap_err().status, 400);
    }

    #[test]
    fn bills_only_move_forward() {
        let bill = empty_bill();
        let doc = json!({"state": "validated", "remainingAmount": {"unit": "EUR", "value": "30.00"},
                         "bill": serde_json::to_value(&bill).unwrap()});
        let next = synced_bill(&doc, &ledger_bill("10.00", BillState::PartiallyPaid)).unwrap().unwrap();
        assert_eq!(next["state"], "partiallyPaid");
        assert_eq!(next["bill"]["state"], "partiallyPaid");
        assert_eq!(money_from_json(&next["remainingAmount"]).unwrap(), eur("10.00"));
        // An older view of the ledger (more open, an earlier state) changes nothing.
        assert!(synced_bill(&next, &ledger_bill("20.00", BillState::PartiallyPaid)).unwrap().is_none());
        assert!(synced_bill(&next, &ledger_bill("30.00", BillState::Sent)).unwrap().is_none());
        let settled = synced_bill(&next, &ledger_bill("0", BillState::Settled)).unwrap().unwrap();
        assert_eq!(settled["state"], "settled");
    }

    #[test]
    fn ledger_refusals_are_4xx() {
        let e = ledger_error(BillingError::RefundExceedsCredit { requested: eur("5"), available: eur("1") });
        assert_eq!((e.status, e.code.as_str()), (422, "REFUND_EXCEEDS_CREDIT"));
        assert_eq!(ledger_error(BillingError::DuplicateEntry { id: "p".into() }).status, 409);
        assert_eq!(ledger_error(BillingError::DuplicateLine { id: "l".into() }).status, 409);
    }
}
