//! Billing (TMF678 customer bills, TMF676 payments): the pure logic of bill runs — periods and
//! proration ([`period`]), bills from charges, usage and corrections ([`bill`]), enterprise
//! roll-up ([`rollup`]), the account ledger of bills, credit notes, payments and refunds
//! ([`ledger`]), dunning ([`dunning`]), gap-free bill numbers and the bill lifecycle ([`number`]).
//! No I/O and no clock: `now` is always passed in. Tests: `cargo test -p bss-domain billing`.
//!
//! Design (the way Kill Bill, Lago and Stripe Billing do it):
//! - Every amount is a [`Money`]: a `rust_decimal::Decimal` in one ISO 4217 currency. A bill is
//!   in its account's currency; an item in another currency is refused
//!   ([`BillingError::CurrencyMismatch`]), never converted.
//! - Money is rounded once per bill line with the bill's named
//!   [`RoundingRule`](crate::money::RoundingRule): the line's net once, its tax
//!   (`rate × rounded net`) once, `gross = net + tax` exactly. Totals are sums of rounded lines,
//!   so a bill always adds up to the cent.
//! - Every line has a deterministic id derived from what it bills (see [`bill`]), so a rerun of
//!   a bill run yields the same ids and can never bill a charge twice.
//! - Bills are immutable once validated; corrections are credit notes (which point at the bill
//!   they correct) or correction lines on a later bill (rerating deltas).
//! - Every type the billing component stores or serves is a serde value (camelCase JSON).

pub mod bill;
pub mod dunning;
pub mod ledger;
pub mod number;
pub mod period;
pub mod rollup;

pub use bill::{
    AccountActivity, ActivityKind, Bill, BillInput, BillLine, BillTaxRate, ChargeRef, Correction, DiscountInput,
    DiscountValue, LineKind, OneTimeCharge, PlanChange, Proration, RecurringItem, TaxSummary, UsageDetail,
    UsageSummary, build_bill,
};
pub use dunning::{DunningAction, DunningActionKind, DunningPolicy, DunningStep, actions_due};
pub use ledger::{Allocation, CreditNote, EntryKind, Ledger, LedgerBill, LedgerEntry, Posting, StateChange};
pub use number::{BillCounter, BillState, NumberSeries, format_bill_number, parse_bill_number};
pub use period::{BillPeriod, ChangeProration, Interval, allocate, change_proration, prorate};
pub use rollup::{BillSection, ConsolidatedBill, consolidate};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::fmt;

use crate::customer::hierarchy::HierarchyError;
use crate::money::{Currency, Money, MoneyError};

/// Why a billing operation was refused. Every refusal leaves its input unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingError {
    /// An amount in another currency than the account's (never converted).
    CurrencyMismatch {
        /// The account's currency.
        expected: Currency,
        /// The item's.
        found: Currency,
        /// Which item.
        item: String,
    },
    /// A period or interval that does not run forwards.
    InvalidPeriod {
        /// First day.
        start: NaiveDate,
        /// First day after.
        end: NaiveDate,
    },
    /// An interval outside the period it is billed in.
    OutsidePeriod {
        /// Which item.
        item: String,
        /// The interval's first day.
        from: NaiveDate,
        /// The interval's first day after.
        to: NaiveDate,
        /// The period.
        period: BillPeriod,
    },
    /// Two intervals of one item overlap (the days would be billed twice).
    Overlap {
        /// Which item.
        item: String,
    },
    /// A negative amount where a positive one is needed, or one finer than the minor unit.
    InvalidAmount {
        /// Which item.
        item: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No tax rate for a category (in the bill's jurisdiction nor as the category's default).
    MissingTaxRate {
        /// The tax category.
        category: String,
        /// The bill's jurisdiction.
        jurisdiction: Option<String>,
    },
    /// Two lines of one bill with the same id (the same thing billed twice).
    DuplicateLine {
        /// The line id.
        id: String,
    },
    /// A discount that cannot apply.
    InvalidDiscount {
        /// The pricing rule.
        rule_id: String,
        /// Why.
        reason: String,
    },
    /// A rerating correction whose gross is not its net plus its tax.
    InconsistentCorrection {
        /// The usage record.
        record_id: String,
    },
    /// A bill that cannot be consolidated into another.
    NotConsolidable {
        /// The child account (or bill).
        account_id: String,
        /// Why.
        reason: String,
    },
    /// An account hierarchy problem.
    Hierarchy(HierarchyError),
    /// No bill or ledger entry with this id.
    Unknown {
        /// The id.
        id: String,
    },
    /// A draft bill cannot be credited or posted: recompute it instead.
    DraftBill {
        /// The bill.
        bill_id: String,
    },
    /// A ledger entry id already used by another posting.
    DuplicateEntry {
        /// The entry id.
        id: String,
    },
    /// Credit notes on a bill for more than it billed.
    CreditExceedsBill {
        /// The bill.
        bill_id: String,
        /// What can still be credited on it.
        creditable: Money,
    },
    /// A refund of more than the credit available.
    RefundExceedsCredit {
        /// Asked.
        requested: Money,
        /// Available.
        available: Money,
    },
    /// A bill state transition the lifecycle does not allow.
    InvalidTransition {
        /// From.
        from: BillState,
        /// To.
        to: BillState,
    },
    /// A dunning policy or numbering series that cannot work.
    InvalidConfig(String),
    /// A bill number counter asked to go back in time.
    CounterBackwards {
        /// The counter's year.
        counter_year: i32,
        /// The year asked.
        year: i32,
    },
    /// An amount out of range.
    Overflow,
}

impl fmt::Display for BillingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillingError::CurrencyMismatch { expected, found, item } => {
                write!(f, "{item} is in {found} but the account bills in {expected}; amounts are never converted")
            }
            BillingError::InvalidPeriod { start, end } => write!(f, "period {start} to {end} does not run forwards"),
            BillingError::OutsidePeriod { item, from, to, period } => {
                write!(f, "{item}: interval {from} to {to} is outside the period {} to {}", period.start, period.end)
            }
            BillingError::Overlap { item } => write!(f, "{item}: active intervals overlap"),
            BillingError::InvalidAmount { item, reason } => write!(f, "{item}: amount {reason}"),
            BillingError::MissingTaxRate { category, jurisdiction } => match jurisdiction {
                Some(j) => write!(f, "no tax rate for category {category:?} in {j} nor a default rate"),
                None => write!(f, "no tax rate for category {category:?}"),
            },
            BillingError::DuplicateLine { id } => write!(f, "line {id} is billed twice"),
            BillingError::InvalidDiscount { rule_id, reason } => write!(f, "discount of rule {rule_id}: {reason}"),
            BillingError::InconsistentCorrection { record_id } => {
                write!(f, "correction of record {record_id}: gross is not net plus tax")
            }
            BillingError::NotConsolidable { account_id, reason } => {
                write!(f, "the bill of {account_id} cannot be consolidated: {reason}")
            }
            BillingError::Hierarchy(e) => e.fmt(f),
            BillingError::Unknown { id } => write!(f, "{id} does not exist"),
            BillingError::DraftBill { bill_id } => {
                write!(f, "bill {bill_id} is a draft: recompute it rather than credit or post it")
            }
            BillingError::DuplicateEntry { id } => write!(f, "entry {id} was already posted with other data"),
            BillingError::CreditExceedsBill { bill_id, creditable } => {
                write!(f, "at most {creditable} can still be credited on bill {bill_id}")
            }
            BillingError::RefundExceedsCredit { requested, available } => {
                write!(f, "refund of {requested} exceeds the available credit of {available}")
            }
            BillingError::InvalidTransition { from, to } => {
                write!(f, "a bill cannot go from {} to {}", from.as_str(), to.as_str())
            }
            BillingError::InvalidConfig(m) => f.write_str(m),
            BillingError::CounterBackwards { counter_year, year } => {
                write!(f, "the bill number counter is at {counter_year}; it cannot number a bill of {year}")
            }
            BillingError::Overflow => f.write_str("amount out of range"),
        }
    }
}

impl std::error::Error for BillingError {}

impl From<HierarchyError> for BillingError {
    fn from(e: HierarchyError) -> Self {
        BillingError::Hierarchy(e)
    }
}

/// Refuses an amount in another currency than `expected`.
pub(crate) fn same_currency(expected: Currency, m: Money, item: &str) -> Result<(), BillingError> {
    if m.currency != expected {
        return Err(BillingError::CurrencyMismatch { expected, found: m.currency, item: item.to_string() });
    }
    Ok(())
}

/// Refuses an amount finer than its currency's minor unit (an already rounded amount must be).
pub(crate) fn exact(m: Money, item: &str) -> Result<(), BillingError> {
    if m.amount.normalize().scale() > m.currency.minor_digits() {
        return Err(BillingError::InvalidAmount {
            item: item.to_string(),
            reason: "is finer than the currency's minor unit",
        });
    }
    Ok(())
}

/// An amount that must be in `expected`, exact to the minor unit and above zero.
pub(crate) fn positive(expected: Currency, m: Money, item: &str) -> Result<(), BillingError> {
    same_currency(expected, m, item)?;
    exact(m, item)?;
    if m.amount <= Decimal::ZERO {
        return Err(BillingError::InvalidAmount { item: item.to_string(), reason: "must be above zero" });
    }
    Ok(())
}

fn money_err(e: MoneyError) -> BillingError {
    match e {
        MoneyError::CurrencyMismatch { left, right } => {
            BillingError::CurrencyMismatch { expected: left, found: right, item: "amount".into() }
        }
        _ => BillingError::Overflow,
    }
}

pub(crate) fn add(a: Money, b: Money) -> Result<Money, BillingError> {
    a.checked_add(b).map_err(money_err)
}

pub(crate) fn sub(a: Money, b: Money) -> Result<Money, BillingError> {
    a.checked_sub(b).map_err(money_err)
}

pub(crate) fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, BillingError> {
    Money::sum(currency, items).map_err(money_err)
}

pub(crate) fn neg(m: Money) -> Money {
    if m.amount.is_zero() { Money::zero(m.currency) } else { Money::new(-m.amount, m.currency) }
}

/// Serde adapter: an IANA time zone by its name.
pub mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a name such as `Europe/Paris`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Tz>().map_err(|_| serde::de::Error::custom(format!("{s:?} is not an IANA time zone")))
    }

    /// Writes the name.
    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the billing tests.
    use super::*;
    use std::str::FromStr;

    pub fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    pub fn eur(s: &str) -> Money {
        Money::new(d(s), Currency::new("EUR").unwrap())
    }

    pub fn usd(s: &str) -> Money {
        Money::new(d(s), Currency::new("USD").unwrap())
    }

    pub fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    pub fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    pub fn arb_rule() -> impl proptest::strategy::Strategy<Value = crate::money::RoundingRule> {
        use crate::money::RoundingRule::*;
        proptest::prop_oneof![
            proptest::strategy::Just(HalfEven),
            proptest::strategy::Just(HalfUp),
            proptest::strategy::Just(Down),
            proptest::strategy::Just(Up)
        ]
    }
}
