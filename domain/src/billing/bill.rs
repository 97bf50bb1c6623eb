//! Bills (TMF678 `CustomerBill` and its lines): one account's bill for one bill period, from
//! everything a bill run gathered ([`BillInput`]) — recurring charges, plan changes, one-time
//! charges, rated usage, rerating corrections, discounts, tax rates and the account's activity
//! since its last bill. Pure: [`build_bill`] is a function of its input (the run's `issuedAt`
//! included), so a rerun gives the same bill. Tests: `cargo test -p bss-domain billing`.
//!
//! Rules:
//! - One currency: every amount of the input is in the account's currency, else
//!   [`BillingError::CurrencyMismatch`] (nothing is converted). Already rounded amounts (usage,
//!   corrections, activity, balance) must be exact to the minor unit.
//! - Lines and rounding: each line's net is rounded once with the bill's [`RoundingRule`]
//!   (proration spreads cents by largest remainder, see [`super::period`]); its tax is
//!   `rate × rounded net`, rounded once (usage rated with tax keeps the tax rating charged, a
//!   sum of rounded records; a correction keeps its delta's tax); `gross = net + tax`. Taxes are
//!   per line; the tax summary groups lines by category, jurisdiction and rate and sums their
//!   rounded net and tax. `subtotal = Σ net`, `taxTotal = Σ tax`, `total = Σ gross =
//!   subtotal + taxTotal`, to the cent, always.
//! - Recurring charges are charged for their service period (the bill's period unless the item
//!   names one: in advance or in arrears is the bill run's choice) over their active intervals
//!   ([`super::period::prorate`]): one line per charge and period. A plan change credits the
//!   unused part of the old price and charges the new price from the change date; a
//!   termination credits only.
//! - Discounts (from pricing rules, chosen by the caller): first those on a charge, then those
//!   on the total, each group in input order. A discount on a charge applies to the net of that
//!   charge's lines (charges, not credits) less the earlier discounts on it; a percentage is
//!   rounded once, a fixed amount is capped at that net. A discount on the total applies, per
//!   tax category, to the net of the bill's lines less corrections (never below zero): a
//!   percentage gives one line per category rounded once; a fixed amount (capped at the base)
//!   is spread over the categories by largest remainder. Discount lines are taxed like others.
//! - Credit notes, payments and refunds are not lines: they are documents of their own, already
//!   in the ledger ([`super::ledger`]); the bill lists those since the last bill and
//!   `amountDue = previousBalance + total − payments − credits + refunds`.
//! - Line ids are derived from what a line bills, so a rerun cannot bill anything twice (two
//!   lines with one id are refused, ids in [`BillInput::already_billed`] are skipped):
//!   - `charge:<chargeId>:<periodStart>`: a recurring charge for a service period, or the new
//!     charge of a plan change for the rest of it (the same id: never both);
//!   - `credit:<chargeId>:<periodStart>`: the proration credit of an ended or changed charge;
//!   - `oneTime:<chargeId>`: a one-time charge, billed once ever;
//!   - `usage:<productId>:<service>:<periodStart>`: a product's usage of a service in the bill period;
//!   - `correction:<rerateRunId>:<recordId>`: a rerating correction;
//!   - `discount:<ruleId>:<chargeId>:<periodStart>`: a discount on a charge (bill period);
//!   - `discount:<ruleId>:total:<accountId>:<periodStart>:<taxCategory>`: a discount on the total.
//! - The bill's id is `bill:<accountId>:<periodStart>`; it is a draft (`new`) without a number
//!   until validated ([`super::number::validate`]).

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::number::{BillState, Numbered};
use super::period::{BillPeriod, Interval, allocate, change_proration, check_pieces, prorate};
use super::{BillingError, add, exact, neg, same_currency, sub, sum};
use crate::catalog::rule::Discount;
use crate::catalog::tax::TaxRate;
use crate::money::{Currency, Money, RoundingRule};
use crate::rating::{ChargeDelta, Service};

/// A tax rate in force at the bill date, resolved by the component
/// ([`crate::catalog::tax::rate_for`] semantics: the bill's jurisdiction, else the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillTaxRate {
    /// The `taxRate` document.
    pub id: String,
    /// The tax category it taxes.
    pub tax_category: String,
    /// Its jurisdiction (none: the category's default rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// Percent.
    #[serde(with = "crate::json::decimal_str")]
    pub rate: Decimal,
}

impl From<&TaxRate> for BillTaxRate {
    fn from(t: &TaxRate) -> Self {
        BillTaxRate {
            id: t.id.clone(),
            tax_category: t.tax_category.clone(),
            jurisdiction: t.jurisdiction.clone(),
            rate: t.rate,
        }
    }
}

/// A recurring charge (`billingCharge` with `chargeType: recurring`) to bill for a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurringItem {
    /// The charge.
    pub charge_id: String,
    /// The product charged.
    pub product_id: String,
    /// Shown on the line.
    pub description: String,
    /// The price of one whole period (not negative).
    pub price: Money,
    /// The price's tax category.
    pub tax_category: String,
    /// The service period billed (absent: the bill's period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<BillPeriod>,
    /// Where the product was active in that period (not overlapping; empty: nothing to bill).
    pub active: Vec<Interval>,
}

/// One side of a plan change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRef {
    /// The charge.
    pub charge_id: String,
    /// Shown on the line.
    pub description: String,
    /// The price of one whole period (not negative).
    pub price: Money,
    /// The price's tax category.
    pub tax_category: String,
}

/// An upgrade, downgrade (`new` set) or termination (`new` absent) on `changeDate`, the old
/// charge having been billed for the whole period in advance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanChange {
    /// The product changed.
    pub product_id: String,
    /// The period the change falls in (absent: the bill's period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<BillPeriod>,
    /// The first local day of the new price (or without the product).
    pub change_date: NaiveDate,
    /// The charge that ends.
    pub old: ChargeRef,
    /// The charge that replaces it (absent: a termination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<ChargeRef>,
}

fn one() -> u32 {
    1
}

/// A one-time charge (`chargeType: oneTime`, `state: pendingBilling`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneTimeCharge {
    /// The charge.
    pub charge_id: String,
    /// The product charged.
    pub product_id: String,
    /// Shown on the line.
    pub description: String,
    /// Price of one unit (not negative).
    pub unit_price: Money,
    /// Units (default 1).
    #[serde(default = "one")]
    pub quantity: u32,
    /// The price's tax category.
    pub tax_category: String,
}

/// A product's rated usage of one service in the bill period: sums of rated records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// The product.
    pub product_id: String,
    /// The service.
    pub service: Service,
    /// Shown on the line (absent: "Voice usage", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The usage price's tax category.
    pub tax_category: String,
    /// Charged quantity, base units (seconds, events, bytes).
    pub quantity_base_units: u64,
    /// Of which taken from allowances.
    pub allowance_base_units: u64,
    /// Records rated.
    pub records: u64,
    /// Σ rounded record nets.
    pub net: Money,
    /// Σ rounded record taxes when rating taxed them (absent: taxed here on the net).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Money>,
}

/// A rerating correction of a record billed before: new minus old charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Correction {
    /// The rerating run.
    pub rerate_run_id: String,
    /// The product whose usage it corrects.
    pub product_id: String,
    /// Shown on the line (absent: a description of the tariff change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The usage price's tax category.
    pub tax_category: String,
    /// The difference (negative: a credit).
    pub delta: ChargeDelta,
}

/// What a discount takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DiscountValue {
    /// Percent off (above 0, at most 100).
    Percentage(#[serde(with = "crate::json::decimal_str")] Decimal),
    /// A fixed amount off (above 0).
    Amount(Money),
}

impl From<Discount> for DiscountValue {
    fn from(d: Discount) -> Self {
        match d {
            Discount::Percentage(p) => DiscountValue::Percentage(p),
            Discount::Fixed(m) => DiscountValue::Amount(m),
        }
    }
}

/// A discount from a pricing rule, on one charge or on the bill's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscountInput {
    /// The pricing rule.
    pub rule_id: String,
    /// Shown on the line.
    pub description: String,
    /// How much.
    pub value: DiscountValue,
    /// The charge discounted (absent: the total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
}

/// What moved the account's balance between two bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActivityKind {
    /// Money received.
    Payment,
    /// A credit note issued.
    CreditNote,
    /// Money paid back.
    Refund,
}

/// A payment, credit note or refund since the last bill (already in the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountActivity {
    /// The payment, credit note or refund.
    pub id: String,
    /// Which.
    pub kind: ActivityKind,
    /// Above zero.
    pub amount: Money,
    /// When.
    pub at: DateTime<Utc>,
    /// The bill it names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_id: Option<String>,
}

/// Everything a bill run gathered for one account and period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillInput {
    /// The billing account.
    pub account_id: String,
    /// Its currency: every amount must be in it.
    pub currency: Currency,
    /// The bill period (usage and, by default, recurring charges).
    pub period: BillPeriod,
    /// The account's IANA time zone.
    #[serde(with = "super::tz_name")]
    pub time_zone: Tz,
    /// The tax jurisdiction (absent: the categories' default rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// When the run makes the bill; its local date is the bill date.
    pub issued_at: DateTime<Utc>,
    /// Days from the bill date to the due date.
    pub payment_terms_days: u32,
    /// The rounding of every line.
    #[serde(default)]
    pub rounding: RoundingRule,
    /// Recurring charges.
    #[serde(default)]
    pub recurring: Vec<RecurringItem>,
    /// Upgrades, downgrades and terminations.
    #[serde(default)]
    pub plan_changes: Vec<PlanChange>,
    /// One-time charges.
    #[serde(default)]
    pub one_time: Vec<OneTimeCharge>,
    /// Usage per product and service.
    #[serde(default)]
    pub usage: Vec<UsageSummary>,
    /// Rerating corrections.
    #[serde(default)]
    pub corrections: Vec<Correction>,
    /// Discounts.
    #[serde(default)]
    pub discounts: Vec<DiscountInput>,
    /// Tax rates in force.
    #[serde(default)]
    pub tax_rates: Vec<BillTaxRate>,
    /// The balance the last bill left (negative: a credit).
    pub previous_balance: Money,
    /// Payments, credit notes and refunds since the last bill.
    #[serde(default)]
    pub activity: Vec<AccountActivity>,
    /// Line ids billed before (by earlier bills or runs): skipped.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub already_billed: BTreeSet<String>,
}

impl BillInput {
    /// An input with nothing owed yet (no charges, usage, activity or previous balance), rounded
    /// half-even; the caller adds what the period owes.
    pub fn new(
        account_id: &str,
        currency: Currency,
        period: BillPeriod,
        time_zone: Tz,
        issued_at: DateTime<Utc>,
        payment_terms_days: u32,
    ) -> BillInput {
        BillInput {
            account_id: account_id.to_string(),
            currency,
            period,
            time_zone,
            jurisdiction: None,
            issued_at,
            payment_terms_days,
            rounding: RoundingRule::HalfEven,
            recurring: Vec::new(),
            plan_changes: Vec::new(),
            one_time: Vec::new(),
            usage: Vec::new(),
            corrections: Vec::new(),
            discounts: Vec::new(),
            tax_rates: Vec::new(),
            previous_balance: Money::zero(currency),
            activity: Vec::new(),
            already_billed: BTreeSet::new(),
        }
    }
}

/// What a line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LineKind {
    /// A recurring charge for (part of) a period.
    Recurring,
    /// The unused part of a changed or ended charge, credited.
    ProrationCredit,
    /// The new charge of a plan change from its date.
    ProrationCharge,
    /// A one-time charge.
    OneTime,
    /// Rated usage.
    Usage,
    /// A discount (negative).
    Discount,
    /// A rerating correction (either sign).
    Correction,
}

/// Days charged of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proration {
    /// Days billed.
    pub days_charged: i64,
    /// Days in the period.
    pub days_in_period: i64,
}

/// What a usage line sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDetail {
    /// The service.
    pub service: Service,
    /// Charged quantity, base units.
    pub quantity_base_units: u64,
    /// Of which from allowances.
    pub allowance_base_units: u64,
    /// Records.
    pub records: u64,
}

/// One line of a bill (TMF678 `appliedCustomerBillingRate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillLine {
    /// Deterministic id (see the module doc).
    pub id: String,
    /// What it bills.
    pub kind: LineKind,
    /// Shown to the customer.
    pub description: String,
    /// The product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// The charge, rule (discounts) or usage record (corrections) it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A discount's charge (absent on a discount: the total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<String>,
    /// The days billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Interval>,
    /// Present when only part of a period is billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proration: Option<Proration>,
    /// Units (1 for a period's charge, base units for usage).
    #[serde(with = "crate::json::decimal_str")]
    pub quantity: Decimal,
    /// The unit of `quantity` for usage (`second`, `event`, `byte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Price of one unit (a whole period for a recurring charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_amount: Option<Money>,
    /// Usage quantities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageDetail>,
    /// Before tax, rounded once.
    pub net: Money,
    /// Tax category.
    pub tax_category: String,
    /// The rate's jurisdiction (absent: the default rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// The `taxRate` applied.
    pub tax_rate_id: String,
    /// Percent.
    #[serde(with = "crate::json::decimal_str")]
    pub tax_rate: Decimal,
    /// Tax, rounded once.
    pub tax: Money,
    /// `net + tax`.
    pub gross: Money,
}

/// The lines of one tax category, jurisdiction and rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaxSummary {
    /// Tax category.
    pub tax_category: String,
    /// Jurisdiction (absent: the default rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// The `taxRate`.
    pub tax_rate_id: String,
    /// Percent.
    #[serde(with = "crate::json::decimal_str")]
    pub rate: Decimal,
    /// Σ net of the lines.
    pub taxable: Money,
    /// Σ tax of the lines.
    pub tax: Money,
}

/// A bill (TMF678 `CustomerBill`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bill {
    /// `bill:<accountId>:<periodStart>`.
    pub id: String,
    /// The billing account.
    pub account_id: String,
    /// Its currency.
    pub currency: Currency,
    /// The bill period.
    pub period: BillPeriod,
    /// Local date of issue.
    pub bill_date: NaiveDate,
    /// Payment due (local date).
    pub due_date: NaiveDate,
    /// Lifecycle state.
    pub state: BillState,
    /// Gap-free number, from validation on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_no: Option<String>,
    /// The rounding used.
    pub rounding: RoundingRule,
    /// Lines, in a fixed order: recurring, plan changes, one-time, usage, corrections, discounts.
    pub lines: Vec<BillLine>,
    /// Per tax category, jurisdiction and rate.
    pub tax_summary: Vec<TaxSummary>,
    /// Σ net.
    pub subtotal: Money,
    /// Σ tax.
    pub tax_total: Money,
    /// Σ gross = subtotal + taxTotal.
    pub total: Money,
    /// The balance the last bill left.
    pub previous_balance: Money,
    /// Σ payments since.
    pub payments: Money,
    /// Σ credit notes since.
    pub credits: Money,
    /// Σ refunds since.
    pub refunds: Money,
    /// Those payments, credit notes and refunds.
    #[serde(default)]
    pub activity: Vec<AccountActivity>,
    /// previousBalance + total − payments − credits + refunds.
    pub amount_due: Money,
    /// Lines not billed again because their id was billed before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_line_ids: Vec<String>,
}

impl Numbered for Bill {
    fn state(&self) -> BillState {
        self.state
    }

    fn bill_date(&self) -> NaiveDate {
        self.bill_date
    }

    fn set_validated(&mut self, bill_no: String) {
        self.state = BillState::Validated;
        self.bill_no = Some(bill_no);
    }
}

impl Bill {
    /// The ids of its lines.
    pub fn line_ids(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.id.as_str())
    }

    /// Whether its sums hold: every line `gross = net + tax`, subtotal, tax total and total are
    /// the sums of the lines, the tax summary sums to them, and the amount due follows.
    pub fn adds_up(&self) -> bool {
        let c = self.currency;
        let total = |f: fn(&BillLine) -> Money| sum(c, self.lines.iter().map(f)).ok();
        self.lines.iter().all(|l| add(l.net, l.tax).ok() == Some(l.gross))
            && total(|l| l.net) == Some(self.subtotal)
            && total(|l| l.tax) == Some(self.tax_total)
            && total(|l| l.gross) == Some(self.total)
            && add(self.subtotal, self.tax_total).ok() == Some(self.total)
            && sum(c, self.tax_summary.iter().map(|t| t.tax)).ok() == Some(self.tax_total)
            && sum(c, self.tax_summary.iter().map(|t| t.taxable)).ok() == Some(self.subtotal)
            && amount_due(self.previous_balance, self.total, self.payments, self.credits, self.refunds).ok()
                == Some(self.amount_due)
    }
}

pub(crate) fn amount_due(
    previous: Money,
    total: Money,
    payments: Money,
    credits: Money,
    refunds: Money,
) -> Result<Money, BillingError> {
    add(sub(sub(add(previous, total)?, payments)?, credits)?, refunds)
}

/// A line before its tax.
struct Draft {
    id: String,
    kind: LineKind,
    description: String,
    product_id: Option<String>,
    reference: Option<String>,
    applies_to: Option<String>,
    period: Option<Interval>,
    proration: Option<Proration>,
    quantity: Decimal,
    unit: Option<String>,
    unit_amount: Option<Money>,
    usage: Option<UsageDetail>,
    net: Money,
    tax_category: String,
    /// Tax already charged (usage rated with tax, corrections).
    tax: Option<Money>,
}

impl Draft {
    fn new(id: String, kind: LineKind, description: String, net: Money, tax_category: &str) -> Draft {
        Draft {
            id,
            kind,
            description,
            product_id: None,
            reference: None,
            applies_to: None,
            period: None,
            proration: None,
            quantity: Decimal::ONE,
            unit: None,
            unit_amount: None,
            usage: None,
            net,
            tax_category: tax_category.to_string(),
            tax: None,
        }
    }
}

struct Builder<'a> {
    input: &'a BillInput,
    lines: Vec<BillLine>,
    ids: BTreeSet<String>,
    skipped: Vec<String>,
}

impl Builder<'_> {
    fn rate(&self, category: &str) -> Result<&BillTaxRate, BillingError> {
        let pick = |j: Option<&str>| {
            self.input.tax_rates.iter().find(|t| t.tax_category == category && t.jurisdiction.as_deref() == j)
        };
        self.input.jurisdiction.as_deref().and_then(|j| pick(Some(j))).or_else(|| pick(None)).ok_or_else(|| {
            BillingError::MissingTaxRate {
                category: category.to_string(),
                jurisdiction: self.input.jurisdiction.clone(),
            }
        })
    }

    fn push(&mut self, d: Draft) -> Result<(), BillingError> {
        if !self.ids.insert(d.id.clone()) {
            return Err(BillingError::DuplicateLine { id: d.id });
        }
        if self.input.already_billed.contains(&d.id) {
            self.skipped.push(d.id);
            return Ok(());
        }
        let rate = self.rate(&d.tax_category)?.clone();
        let rounding = self.input.rounding;
        let tax = match d.tax {
            Some(t) => t,
            None => {
                let amount = d.net.amount.checked_mul(rate.rate).ok_or(BillingError::Overflow)? / Decimal::ONE_HUNDRED;
                Money::new(amount, d.net.currency).round(rounding)
            }
        };
        let gross = add(d.net, tax)?;
        self.lines.push(BillLine {
            id: d.id,
            kind: d.kind,
            description: d.description,
            product_id: d.product_id,
            reference: d.reference,
            applies_to: d.applies_to,
            period: d.period,
            proration: d.proration,
            quantity: d.quantity,
            unit: d.unit,
            unit_amount: d.unit_amount,
            usage: d.usage,
            net: d.net,
            tax_category: d.tax_category,
            jurisdiction: rate.jurisdiction,
            tax_rate_id: rate.id,
            tax_rate: rate.rate,
            tax,
            gross,
        });
        Ok(())
    }
}

fn not_negative(currency: Currency, m: Money, item: &str) -> Result<(), BillingError> {
    same_currency(currency, m, item)?;
    if m.amount.is_sign_negative() && !m.amount.is_zero() {
        return Err(BillingError::InvalidAmount { item: item.to_string(), reason: "must not be negative" });
    }
    Ok(())
}

fn days_note(description: &str, days: i64, days_in_period: i64) -> String {
    if days < days_in_period {
        format!("{description} ({days} of {days_in_period} days)")
    } else {
        description.to_string()
    }
}

fn base_unit(service: Service) -> &'static str {
    match service {
        Service::Voice => "second",
        Service::Sms => "event",
        Service::Data => "byte",
    }
}

fn recurring_lines(b: &mut Builder<'_>, item: &RecurringItem) -> Result<(), BillingError> {
    let input = b.input;
    let what = format!("charge {}", item.charge_id);
    not_negative(input.currency, item.price, &what)?;
    let period = item.period.unwrap_or(input.period);
    let pieces: Vec<(NaiveDate, NaiveDate)> = item.active.iter().map(|i| (i.from, i.to)).collect();
    check_pieces(&what, &period, &pieces)?;
    let amounts = prorate(item.price, &period, &pieces, input.rounding)?;
    let days: i64 = item.active.iter().map(Interval::days).sum();
    if days == 0 {
        return Ok(());
    }
    let net = sum(input.currency, amounts)?;
    let used = item.active.iter().filter(|i| i.days() > 0);
    let from = used.clone().map(|i| i.from).min().unwrap_or(period.start);
    let to = used.map(|i| i.to).max().unwrap_or(period.end);
    let mut d = Draft::new(
        format!("charge:{}:{}", item.charge_id, period.start),
        LineKind::Recurring,
        days_note(&item.description, days, period.days()),
        net,
        &item.tax_category,
    );
    d.product_id = Some(item.product_id.clone());
    d.reference = Some(item.charge_id.clone());
    d.period = Some(Interval { from, to });
    d.proration = (days < period.days()).then_some(Proration { days_charged: days, days_in_period: period.days() });
    d.unit_amount = Some(item.price);
    b.push(d)
}

fn plan_change_lines(b: &mut Builder<'_>, pc: &PlanChange) -> Result<(), BillingError> {
    let input = b.input;
    not_negative(input.currency, pc.old.price, &format!("charge {}", pc.old.charge_id))?;
    if let Some(new) = &pc.new {
        not_negative(input.currency, new.price, &format!("charge {}", new.charge_id))?;
    }
    let period = pc.period.unwrap_or(input.period);
    let c = change_proration(pc.old.price, pc.new.as_ref().map(|n| n.price), &period, pc.change_date, input.rounding)?;
    let proration = Proration { days_charged: c.days, days_in_period: c.days_in_period };
    let mut credit = Draft::new(
        format!("credit:{}:{}", pc.old.charge_id, period.start),
        LineKind::ProrationCredit,
        format!("{}: unused {} of {} days", pc.old.description, c.days, c.days_in_period),
        c.credit,
        &pc.old.tax_category,
    );
    credit.product_id = Some(pc.product_id.clone());
    credit.reference = Some(pc.old.charge_id.clone());
    credit.period = Some(c.remaining);
    credit.proration = Some(proration);
    credit.quantity = -Decimal::ONE;
    credit.unit_amount = Some(pc.old.price);
    b.push(credit)?;
    if let (Some(new), Some(amount)) = (&pc.new, c.charge) {
        let mut charge = Draft::new(
            format!("charge:{}:{}", new.charge_id, period.start),
            LineKind::ProrationCharge,
            days_note(&new.description, c.days, c.days_in_period),
            amount,
            &new.tax_category,
        );
        charge.product_id = Some(pc.product_id.clone());
        charge.reference = Some(new.charge_id.clone());
        charge.period = Some(c.remaining);
        charge.proration = (c.days < c.days_in_period).then_some(proration);
        charge.unit_amount = Some(new.price);
        b.push(charge)?;
    }
    Ok(())
}

fn one_time_line(b: &mut Builder<'_>, o: &OneTimeCharge) -> Result<(), BillingError> {
    let input = b.input;
    not_negative(input.currency, o.unit_price, &format!("charge {}", o.charge_id))?;
    let amount = o.unit_price.amount.checked_mul(Decimal::from(o.quantity)).ok_or(BillingError::Overflow)?;
    let net = Money::new(amount, input.currency).round(input.rounding);
    let mut d =
        Draft::new(format!("oneTime:{}", o.charge_id), LineKind::OneTime, o.description.clone(), net, &o.tax_category);
    d.product_id = Some(o.product_id.clone());
    d.reference = Some(o.charge_id.clone());
    d.quantity = Decimal::from(o.quantity);
    d.unit_amount = Some(o.unit_price);
    b.push(d)
}

fn usage_line(b: &mut Builder<'_>, u: &UsageSummary) -> Result<(), BillingError> {
    let input = b.input;
    let what = format!("usage of {} ({})", u.product_id, u.service.as_str());
    same_currency(input.currency, u.net, &what)?;
    exact(u.net, &what)?;
    if let Some(t) = u.tax {
        same_currency(input.currency, t, &what)?;
        exact(t, &what)?;
    }
    if u.allowance_base_units > u.quantity_base_units {
        return Err(BillingError::InvalidAmount { item: what, reason: "uses more allowance than its quantity" });
    }
    let description = u.description.clone().unwrap_or_else(|| {
        let s = u.service.as_str();
        format!("{}{} usage", s[..1].to_uppercase(), &s[1..])
    });
    let mut d = Draft::new(
        format!("usage:{}:{}:{}", u.product_id, u.service.as_str(), input.period.start),
        LineKind::Usage,
        description,
        u.net,
        &u.tax_category,
    );
    d.product_id = Some(u.product_id.clone());
    d.period = Some(input.period.whole());
    d.quantity = Decimal::from(u.quantity_base_units);
    d.unit = Some(base_unit(u.service).to_string());
    d.usage = Some(UsageDetail {
        service: u.service,
        quantity_base_units: u.quantity_base_units,
        allowance_base_units: u.allowance_base_units,
        records: u.records,
    });
    d.tax = u.tax;
    b.push(d)
}

fn correction_line(b: &mut Builder<'_>, c: &Correction) -> Result<(), BillingError> {
    let input = b.input;
    let delta = &c.delta;
    let what = format!("correction of record {}", delta.record_id);
    for m in [delta.net, delta.tax, delta.gross] {
        same_currency(input.currency, m, &what)?;
        exact(m, &what)?;
    }
    if add(delta.net, delta.tax)? != delta.gross {
        return Err(BillingError::InconsistentCorrection { record_id: delta.record_id.clone() });
    }
    let description = c.description.clone().unwrap_or_else(|| {
        format!(
            "Correction of usage record {} (tariff {} {} → {} {})",
            delta.record_id, delta.old_tariff.0, delta.old_tariff.1, delta.new_tariff.0, delta.new_tariff.1
        )
    });
    let mut d = Draft::new(
        format!("correction:{}:{}", c.rerate_run_id, delta.record_id),
        LineKind::Correction,
        description,
        delta.net,
        &c.tax_category,
    );
    d.product_id = Some(c.product_id.clone());
    d.reference = Some(delta.record_id.clone());
    d.tax = Some(delta.tax);
    b.push(d)
}

fn check_discount(currency: Currency, disc: &DiscountInput) -> Result<(), BillingError> {
    let bad = |reason: &str| BillingError::InvalidDiscount { rule_id: disc.rule_id.clone(), reason: reason.into() };
    match disc.value {
        DiscountValue::Percentage(p) if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED => {
            Err(bad("a percentage must be above 0 and at most 100"))
        }
        DiscountValue::Amount(m) => {
            same_currency(currency, m, &format!("discount of rule {}", disc.rule_id))?;
            exact(m, &format!("discount of rule {}", disc.rule_id))?;
            if m.amount <= Decimal::ZERO {
                return Err(bad("an amount must be above zero"));
            }
            Ok(())
        }
        DiscountValue::Percentage(_) => Ok(()),
    }
}

fn charge_discount_line(b: &mut Builder<'_>, disc: &DiscountInput, charge_id: &str) -> Result<(), BillingError> {
    let input = b.input;
    let charged = |l: &&BillLine| {
        l.reference.as_deref() == Some(charge_id)
            && matches!(l.kind, LineKind::Recurring | LineKind::ProrationCharge | LineKind::OneTime)
    };
    let targets: Vec<&BillLine> = b.lines.iter().filter(charged).collect();
    let Some(first) = targets.first() else {
        let known = input.recurring.iter().any(|r| r.charge_id == charge_id)
            || input.one_time.iter().any(|o| o.charge_id == charge_id)
            || input.plan_changes.iter().any(|p| p.new.as_ref().is_some_and(|n| n.charge_id == charge_id));
        if known {
            return Ok(()); // Nothing of the charge on this bill (already billed, or no active day).
        }
        return Err(BillingError::InvalidDiscount {
            rule_id: disc.rule_id.clone(),
            reason: format!("the bill has no charge {charge_id}"),
        });
    };
    if targets.iter().any(|l| l.tax_category != first.tax_category) {
        return Err(BillingError::InvalidDiscount {
            rule_id: disc.rule_id.clone(),
            reason: format!("charge {charge_id} has lines of several tax categories"),
        });
    }
    let (category, product, period) = (first.tax_category.clone(), first.product_id.clone(), first.period);
    let earlier = b.lines.iter().filter(|l| l.kind == LineKind::Discount && l.applies_to.as_deref() == Some(charge_id));
    let base = sum(input.currency, targets.iter().map(|l| l.net).chain(earlier.map(|l| l.net)))?;
    if base.amount <= Decimal::ZERO {
        return Ok(());
    }
    let off = match disc.value {
        DiscountValue::Percentage(p) => {
            Money::new(base.amount * p / Decimal::ONE_HUNDRED, input.currency).round(input.rounding)
        }
        DiscountValue::Amount(m) => Money::new(m.amount.min(base.amount), input.currency),
    };
    if off.amount.is_zero() {
        return Ok(());
    }
    let mut d = Draft::new(
        format!("discount:{}:{}:{}", disc.rule_id, charge_id, input.period.start),
        LineKind::Discount,
        disc.description.clone(),
        neg(off),
        &category,
    );
    d.product_id = product;
    d.reference = Some(disc.rule_id.clone());
    d.applies_to = Some(charge_id.to_string());
    d.period = period;
    b.push(d)
}

fn total_discount_lines(b: &mut Builder<'_>, disc: &DiscountInput) -> Result<(), BillingError> {
    let input = b.input;
    let mut bases: BTreeMap<String, Decimal> = BTreeMap::new();
    for l in b.lines.iter().filter(|l| l.kind != LineKind::Correction) {
        *bases.entry(l.tax_category.clone()).or_default() += l.net.amount;
    }
    let bases: Vec<(String, Decimal)> = bases.into_iter().filter(|(_, v)| *v > Decimal::ZERO).collect();
    let total_base: Decimal = bases.iter().map(|(_, v)| *v).sum();
    if total_base <= Decimal::ZERO {
        return Ok(());
    }
    let offs: Vec<Money> = match disc.value {
        DiscountValue::Percentage(p) => bases
            .iter()
            .map(|(_, v)| Money::new(*v * p / Decimal::ONE_HUNDRED, input.currency).round(input.rounding))
            .collect(),
        DiscountValue::Amount(m) => {
            let weights: Vec<Decimal> = bases.iter().map(|(_, v)| *v).collect();
            allocate(Money::new(m.amount.min(total_base), input.currency), &weights, input.rounding)?
        }
    };
    for ((category, _), off) in bases.iter().zip(offs) {
        if off.amount.is_zero() {
            continue;
        }
        let mut d = Draft::new(
            format!("discount:{}:total:{}:{}:{}", disc.rule_id, input.account_id, input.period.start, category),
            LineKind::Discount,
            disc.description.clone(),
            neg(off),
            category,
        );
        d.reference = Some(disc.rule_id.clone());
        d.period = Some(input.period.whole());
        b.push(d)?;
    }
    Ok(())
}

/// The bill of `input` (see the module doc).
pub fn build_bill(input: &BillInput) -> Result<Bill, BillingError> {
    let currency = input.currency;
    same_currency(currency, input.previous_balance, "previous balance")?;
    exact(input.previous_balance, "previous balance")?;
    if input.period.start >= input.period.end {
        return Err(BillingError::InvalidPeriod { start: input.period.start, end: input.period.end });
    }
    let mut b = Builder { input, lines: Vec::new(), ids: BTreeSet::new(), skipped: Vec::new() };
    for item in &input.recurring {
        recurring_lines(&mut b, item)?;
    }
    for pc in &input.plan_changes {
        plan_change_lines(&mut b, pc)?;
    }
    for o in &input.one_time {
        one_time_line(&mut b, o)?;
    }
    for u in &input.usage {
        usage_line(&mut b, u)?;
    }
    for c in &input.corrections {
        correction_line(&mut b, c)?;
    }
    for disc in &input.discounts {
        check_discount(currency, disc)?;
    }
    for disc in &input.discounts {
        if let Some(charge_id) = &disc.charge_id {
            charge_discount_line(&mut b, disc, charge_id)?;
        }
    }
    for disc in input.discounts.iter().filter(|d| d.charge_id.is_none()) {
        total_discount_lines(&mut b, disc)?;
    }

    let lines = b.lines;
    let subtotal = sum(currency, lines.iter().map(|l| l.net))?;
    let tax_total = sum(currency, lines.iter().map(|l| l.tax))?;
    let total = sum(currency, lines.iter().map(|l| l.gross))?;
    let mut groups: BTreeMap<(String, Option<String>, String), TaxSummary> = BTreeMap::new();
    for l in &lines {
        let key = (l.tax_category.clone(), l.jurisdiction.clone(), l.tax_rate_id.clone());
        let g = groups.entry(key).or_insert_with(|| TaxSummary {
            tax_category: l.tax_category.clone(),
            jurisdiction: l.jurisdiction.clone(),
            tax_rate_id: l.tax_rate_id.clone(),
            rate: l.tax_rate,
            taxable: Money::zero(currency),
            tax: Money::zero(currency),
        });
        g.taxable = add(g.taxable, l.net)?;
        g.tax = add(g.tax, l.tax)?;
    }

    let mut seen = BTreeSet::new();
    let (mut payments, mut credits, mut refunds) =
        (Money::zero(currency), Money::zero(currency), Money::zero(currency));
    for a in &input.activity {
        super::positive(currency, a.amount, &format!("{:?} {}", a.kind, a.id))?;
        if !seen.insert((a.kind, a.id.as_str())) {
            return Err(BillingError::DuplicateEntry { id: a.id.clone() });
        }
        let slot = match a.kind {
            ActivityKind::Payment => &mut payments,
            ActivityKind::CreditNote => &mut credits,
            ActivityKind::Refund => &mut refunds,
        };
        *slot = add(*slot, a.amount)?;
    }
    let amount_due = amount_due(input.previous_balance, total, payments, credits, refunds)?;
    let bill_date = input.issued_at.with_timezone(&input.time_zone).date_naive();
    let due_date =
        bill_date.checked_add_days(Days::new(input.payment_terms_days.into())).ok_or(BillingError::Overflow)?;
    Ok(Bill {
        id: format!("bill:{}:{}", input.account_id, input.period.start),
        account_id: input.account_id.clone(),
        currency,
        period: input.period,
        bill_date,
        due_date,
        state: BillState::New,
        bill_no: None,
        rounding: input.rounding,
        lines,
        tax_summary: groups.into_values().collect(),
        subtotal,
        tax_total,
        total,
        previous_balance: input.previous_balance,
        payments,
        credits,
        refunds,
        activity: input.activity.clone(),
        amount_due,
        skipped_line_ids: b.skipped,
    })
}

#[cfg(test)]
#[path = "bill_tests.rs"]
mod tests;
