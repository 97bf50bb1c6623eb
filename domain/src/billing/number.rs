//! Bill numbers and the bill lifecycle (TMF678 `CustomerBill.state`). Tests:
//! `cargo test -p bss-domain billing`.
//!
//! - States: `new → onHold | validated`, `onHold → new | validated`, `validated → sent`,
//!   `sent → partiallyPaid | settled`, `partiallyPaid → settled`; the last three are made by
//!   the ledger as payments and credit notes are allocated ([`super::ledger`]). A bill's
//!   content may change while it is `new` or `onHold` (a draft, recomputed by reruns); from
//!   `validated` on it is immutable and corrected by credit notes.
//! - Numbers: a tenant's bills are numbered gap-free from one counter (`INV-2026-000001`): the
//!   number is taken when a bill becomes `validated` ([`validate`]), never for drafts, so a
//!   discarded or recomputed draft leaves no hole. The component stores the advanced counter
//!   and the validated bill with compare-and-swap (a lost race takes the next number again). A
//!   yearly series starts again at 1 on the first bill of a year; a counter never goes back to
//!   an earlier year. Numbers wider than the series width just grow (`INV-2026-1000000`).

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::BillingError;

/// The state of a bill (TMF678).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BillState {
    /// A draft computed by a bill run.
    New,
    /// A draft held for review.
    OnHold,
    /// Final and numbered, not yet sent.
    Validated,
    /// Sent to the customer; nothing paid.
    Sent,
    /// Part of it paid or credited.
    PartiallyPaid,
    /// Fully paid or credited.
    Settled,
}

impl BillState {
    /// Every state.
    pub const ALL: [BillState; 6] = [
        BillState::New,
        BillState::OnHold,
        BillState::Validated,
        BillState::Sent,
        BillState::PartiallyPaid,
        BillState::Settled,
    ];

    /// The TMF name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillState::New => "new",
            BillState::OnHold => "onHold",
            BillState::Validated => "validated",
            BillState::Sent => "sent",
            BillState::PartiallyPaid => "partiallyPaid",
            BillState::Settled => "settled",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<BillState> {
        BillState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether a user (API) may move a bill from `self` to `next`.
    pub fn can_become(self, next: BillState) -> bool {
        use BillState::*;
        matches!(
            (self, next),
            (New, OnHold | Validated)
                | (OnHold, New | Validated)
                | (Validated, Sent)
                | (Sent, PartiallyPaid | Settled)
                | (PartiallyPaid, Settled)
        )
    }

    /// `next` if `self → next` is allowed ([`BillState::can_become`]).
    pub fn transition(self, next: BillState) -> Result<BillState, BillingError> {
        if self.can_become(next) { Ok(next) } else { Err(BillingError::InvalidTransition { from: self, to: next }) }
    }

    /// Whether the content may still change (a draft).
    pub fn is_draft(self) -> bool {
        matches!(self, BillState::New | BillState::OnHold)
    }
}

/// How a tenant's bill numbers look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberSeries {
    /// `INV`: 1 to 16 ASCII letters, digits or `_`.
    pub prefix: String,
    /// Digits of the counter, zero-padded (1 to 18).
    pub width: u32,
    /// The year is part of the number and the counter restarts each year.
    pub yearly: bool,
}

impl Default for NumberSeries {
    fn default() -> Self {
        NumberSeries { prefix: "INV".into(), width: 6, yearly: true }
    }
}

impl NumberSeries {
    /// Refuses a prefix or width that cannot make readable, parseable numbers.
    pub fn check(&self) -> Result<(), BillingError> {
        let ok = !self.prefix.is_empty()
            && self.prefix.len() <= 16
            && self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(BillingError::InvalidConfig(format!(
                "bill number prefix {:?} must be 1 to 16 ASCII letters, digits or _",
                self.prefix
            )));
        }
        if !(1..=18).contains(&self.width) {
            return Err(BillingError::InvalidConfig(format!("bill number width {} must be 1 to 18", self.width)));
        }
        Ok(())
    }
}

/// The number `n` of a series in `year`: `INV-2026-000001` (or `INV-000001` without the year).
pub fn format_bill_number(series: &NumberSeries, year: i32, n: u64) -> String {
    let width = series.width as usize;
    if series.yearly {
        format!("{}-{year:04}-{n:0width$}", series.prefix)
    } else {
        format!("{}-{n:0width$}", series.prefix)
    }
}

/// The year (yearly series) and counter of a number of `series`; `None` if it is not one.
pub fn parse_bill_number(series: &NumberSeries, s: &str) -> Option<(Option<i32>, u64)> {
    let rest = s.strip_prefix(series.prefix.as_str())?.strip_prefix('-')?;
    let (year, digits) = if series.yearly {
        let (y, d) = rest.split_once('-')?;
        (Some(y), d)
    } else {
        (None, rest)
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(digits)
        || digits.len() < series.width as usize
        || year.is_some_and(|y| !all_digits(y) || y.len() != 4)
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    if n == 0 || (digits.len() > series.width as usize && digits.starts_with('0')) {
        return None;
    }
    let year = match year {
        None => None,
        Some(y) => Some(y.parse::<i32>().ok()?),
    };
    Some((year, n))
}

/// A tenant's counter: the last number taken and its year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillCounter {
    /// The year of the last number (yearly series).
    pub year: i32,
    /// The last number taken (0: none yet).
    pub last: u64,
}

impl BillCounter {
    /// The counter after taking the next number for a bill dated `bill_date`, and the number.
    pub fn next(&self, series: &NumberSeries, bill_date: NaiveDate) -> Result<(BillCounter, String), BillingError> {
        series.check()?;
        let year = bill_date.year();
        if year < self.year {
            return Err(BillingError::CounterBackwards { counter_year: self.year, year });
        }
        let last = if series.yearly && year > self.year { 0 } else { self.last };
        let n = last.checked_add(1).ok_or(BillingError::Overflow)?;
        Ok((BillCounter { year, last: n }, format_bill_number(series, year, n)))
    }
}

/// A bill or consolidated bill that can be validated (numbered).
pub trait Numbered {
    /// Its state.
    fn state(&self) -> BillState;
    /// Its bill date (the year of its number).
    fn bill_date(&self) -> NaiveDate;
    /// Sets it validated with its number.
    fn set_validated(&mut self, bill_no: String);
}

/// Validates a draft bill (`new` or `onHold`): takes the next number from `counter` and gives
/// the advanced counter, to be stored together with the bill.
pub fn validate<B: Numbered>(
    bill: &mut B,
    counter: &BillCounter,
    series: &NumberSeries,
) -> Result<BillCounter, BillingError> {
    bill.state().transition(BillState::Validated)?;
    let (next, number) = counter.next(series, bill.bill_date())?;
    bill.set_validated(number);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::testing::date;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_formatted_and_parsed() {
        let s = NumberSeries::default();
        assert_eq!(format_bill_number(&s, 2026, 1), "INV-2026-000001");
        assert_eq!(format_bill_number(&s, 2026, 1_234_567), "INV-2026-1234567");
        assert_eq!(parse_bill_number(&s, "INV-2026-000042"), Some((Some(2026), 42)));
        assert_eq!(parse_bill_number(&s, "INV-2026-1234567"), Some((Some(2026), 1_234_567)));
        for bad in [
            "INV-2026-42",
            "INV-26-000042",
            "INV-2026-000000",
            "XYZ-2026-000001",
            "INV-2026-00004x",
            "INV-2026-0000042",
        ] {
            assert_eq!(parse_bill_number(&s, bad), None, "{bad}");
        }
        let flat = NumberSeries { prefix: "B".into(), width: 4, yearly: false };
        assert_eq!(format_bill_number(&flat, 2026, 7), "B-0007");
        assert_eq!(parse_bill_number(&flat, "B-0007"), Some((None, 7)));
        assert!(NumberSeries { prefix: "IN V".into(), ..NumberSeries::default() }.check().is_err());
        assert!(NumberSeries { width: 0, ..NumberSeries::default() }.check().is_err());
    }

    #[test]
    fn the_counter_is_gap_free_and_restarts_each_year() {
        let s = NumberSeries::default();
        let c = BillCounter::default();
        let (c, a) = c.next(&s, date("2026-01-05")).unwrap();
        let (c, b) = c.next(&s, date("2026-12-31")).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("INV-2026-000001", "INV-2026-000002"));
        let (c, n) = c.next(&s, date("2027-01-01")).unwrap();
        assert_eq!((n.as_str(), c), ("INV-2027-000001", BillCounter { year: 2027, last: 1 }));
        assert_eq!(
            c.next(&s, date("2026-12-31")),
            Err(BillingError::CounterBackwards { counter_year: 2027, year: 2026 })
        );
        // A series without the year never restarts.
        let flat = NumberSeries { yearly: false, ..NumberSeries::default() };
        let (c, _) = BillCounter { year: 2026, last: 9 }.next(&flat, date("2027-01-01")).unwrap();
        assert_eq!(c.last, 10);
    }

    #[test]
    fn bill_states_follow_tmf678() {
        use BillState::*;
        assert_eq!(New.transition(OnHold), Ok(OnHold));
        assert_eq!(OnHold.transition(Validated), Ok(Validated));
        assert_eq!(Validated.transition(Sent), Ok(Sent));
        assert_eq!(Sent.transition(PartiallyPaid), Ok(PartiallyPaid));
        assert_eq!(PartiallyPaid.transition(Settled), Ok(Settled));
        assert_eq!(New.transition(Sent), Err(BillingError::InvalidTransition { from: New, to: Sent }));
        assert!(Validated.transition(New).is_err(), "a validated bill is immutable");
        assert!(Settled.transition(Sent).is_err(), "settled is final");
        assert!(New.is_draft() && OnHold.is_draft() && !Validated.is_draft());
        for s in BillState::ALL {
            assert_eq!(BillState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    proptest! {
        #[test]
        fn numbers_taken_in_date_order_are_consecutive_per_year(days in proptest::collection::vec(0i64..60, 1..80)) {
            let s = NumberSeries::default();
            let mut c = BillCounter::default();
            let mut d = date("2025-11-01");
            let mut seen: Vec<(i32, u64)> = Vec::new();
            for step in days {
                d += chrono::Duration::days(step);
                let (next, n) = c.next(&s, d).unwrap();
                let parsed = parse_bill_number(&s, &n).unwrap();
                let (year, k) = (parsed.0.unwrap(), parsed.1);
                match seen.last() {
                    Some(&(y, last)) if y == year => prop_assert_eq!(k, last + 1),
                    _ => prop_assert_eq!(k, 1),
                }
                seen.push((year, k));
                c = next;
            }
        }
    }
}
