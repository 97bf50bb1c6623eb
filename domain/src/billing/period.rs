//! Bill periods and day-based proration. Tests: `cargo test -p bss-domain billing`.
//!
//! - A bill period is `[start, end)` in local dates of the account's IANA time zone, from one
//!   bill cycle day to the next ([`BillPeriod::containing`] reuses
//!   [`crate::order::proration::billing_period`], so bills and first charges agree).
//! - [`prorate`] charges the price of a whole period for some days of it: each piece
//!   `[from, to)` of the period is `price × days / days_in_period`. The pieces together are
//!   charged as one line of all their days would be — `price × Σdays / days_in_period`, rounded
//!   once with the named [`RoundingRule`] — and that rounded total is spread over the pieces by
//!   the largest-remainder method ([`allocate`]). So one piece is `price × days/days_in_period`
//!   rounded once, and pieces that partition the whole period sum to the price exactly, to the
//!   cent, whatever the rule.
//! - A plan change on `change_date` ([`change_proration`]): the old price was billed for the
//!   whole period in advance, so the unused part `[change_date, end)` is credited and the new
//!   price charged for the same days; a termination is a change to nothing (credit only).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use super::{BillingError, neg, same_currency};
use crate::money::{Money, RoundingRule};
use crate::order::proration::billing_period;

/// A bill period `[start, end)`: local dates in the account's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillPeriod {
    /// First day of the period.
    pub start: NaiveDate,
    /// First day of the next period.
    pub end: NaiveDate,
}

/// Some days `[from, to)` of a period (an active interval of a product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// First day.
    pub from: NaiveDate,
    /// First day after.
    pub to: NaiveDate,
}

impl Interval {
    /// Days in it.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days()
    }
}

/// Local midnight at the start of `date` in `tz`, as UTC (the first instant of the day when
/// midnight falls in a daylight-saving gap).
fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    (0..24)
        .find_map(|h| tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

impl BillPeriod {
    /// A period; `start` must be before `end`.
    pub fn new(start: NaiveDate, end: NaiveDate) -> Result<BillPeriod, BillingError> {
        if start >= end {
            return Err(BillingError::InvalidPeriod { start, end });
        }
        Ok(BillPeriod { start, end })
    }

    /// The period of a bill cycle day (1 to 28) containing the local `date`.
    pub fn containing(date: NaiveDate, bill_cycle_day: u32) -> BillPeriod {
        let (start, end) = billing_period(date, bill_cycle_day);
        BillPeriod { start, end }
    }

    /// The period containing the instant `at` in the account's time zone `tz`.
    pub fn at(at: DateTime<Utc>, bill_cycle_day: u32, tz: Tz) -> BillPeriod {
        BillPeriod::containing(at.with_timezone(&tz).date_naive(), bill_cycle_day)
    }

    /// The last period that has ended at `now`: the one a bill run at `now` closes (usage is
    /// billed for it in arrears).
    pub fn last_closed(now: DateTime<Utc>, bill_cycle_day: u32, tz: Tz) -> BillPeriod {
        BillPeriod::at(now, bill_cycle_day, tz).previous(bill_cycle_day)
    }

    /// The period after this one.
    pub fn next(&self, bill_cycle_day: u32) -> BillPeriod {
        BillPeriod::containing(self.end, bill_cycle_day)
    }

    /// The period before this one.
    pub fn previous(&self, bill_cycle_day: u32) -> BillPeriod {
        BillPeriod::containing(self.start.pred_opt().unwrap_or(self.start), bill_cycle_day)
    }

    /// Days in the period.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days()
    }

    /// Whether the local `date` is in the period.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.start <= date && date < self.end
    }

    /// The whole period as an interval.
    pub fn whole(&self) -> Interval {
        Interval { from: self.start, to: self.end }
    }

    /// Its first instant, UTC.
    pub fn start_instant(&self, tz: Tz) -> DateTime<Utc> {
        start_of_day(self.start, tz)
    }

    /// The first instant after it, UTC.
    pub fn end_instant(&self, tz: Tz) -> DateTime<Utc> {
        start_of_day(self.end, tz)
    }

    /// The year of the first day (the year a bill of the period is numbered in is its bill date's).
    pub fn year(&self) -> i32 {
        self.start.year()
    }
}

/// Splits `total` — rounded once by `rule` to the currency's minor unit — into shares
/// proportional to `weights` (none negative) that sum to the rounded total exactly: the
/// largest-remainder method. Each share first gets its exact value rounded towards zero; the
/// units left over (one cent each) go to the shares with the largest dropped remainders, ties
/// to the earlier share. A share of weight zero is zero. Negative totals are split like their
/// absolute value and negated.
pub fn allocate(total: Money, weights: &[Decimal], rule: RoundingRule) -> Result<Vec<Money>, BillingError> {
    let currency = total.currency;
    let minor = currency.minor_digits();
    if weights.iter().any(|w| w.is_sign_negative()) {
        return Err(BillingError::InvalidAmount { item: "allocation".into(), reason: "has a negative weight" });
    }
    let rounded = total.round(rule);
    let w_sum = weights.iter().try_fold(Decimal::ZERO, |a, w| a.checked_add(*w)).ok_or(BillingError::Overflow)?;
    if w_sum.is_zero() {
        if !rounded.amount.is_zero() {
            return Err(BillingError::InvalidAmount {
                item: "allocation".into(),
                reason: "cannot be spread over nothing",
            });
        }
        return Ok(vec![Money::zero(currency); weights.len()]);
    }
    let negative = total.amount.is_sign_negative();
    let scale = Decimal::from(10u64.pow(minor));
    let abs_units = total.amount.abs().checked_mul(scale).ok_or(BillingError::Overflow)?;
    let target = rounded.amount.abs().checked_mul(scale).and_then(|t| t.to_i128()).ok_or(BillingError::Overflow)?;
    let mut units = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for w in weights {
        let exact = match abs_units.checked_mul(*w) {
            Some(n) => n.checked_div(w_sum),
            None => abs_units.checked_mul(w.checked_div(w_sum).ok_or(BillingError::Overflow)?),
        }
        .ok_or(BillingError::Overflow)?;
        let floor = exact.floor();
        units.push(floor.to_i128().ok_or(BillingError::Overflow)?);
        remainders.push(exact - floor);
    }
    let mut order: Vec<usize> = (0..weights.len()).filter(|&i| !weights[i].is_zero()).collect();
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]).then(a.cmp(&b)));
    let mut left = target - units.iter().sum::<i128>();
    // Normally 0 ≤ left < number of shares; the loops also absorb the last digit of inexact
    // decimal division at the edges.
    while left > 0 {
        for &i in &order {
            if left == 0 {
                break;
            }
            units[i] += 1;
            left -= 1;
        }
    }
    while left < 0 {
        for &i in order.iter().rev() {
            if left == 0 {
                break;
            }
            if units[i] > 0 {
                units[i] -= 1;
                left += 1;
            }
        }
    }
    Ok(units
        .into_iter()
        .map(|u| {
            let amount = Decimal::from_i128_with_scale(u, minor);
            Money::new(if negative && u != 0 { -amount } else { amount }, currency)
        })
        .collect())
}

/// Checks pieces `[from, to)` of a period: forwards (or empty), inside it, not overlapping.
pub(crate) fn check_pieces(
    item: &str,
    period: &BillPeriod,
    pieces: &[(NaiveDate, NaiveDate)],
) -> Result<(), BillingError> {
    for &(from, to) in pieces {
        if from > to {
            return Err(BillingError::InvalidPeriod { start: from, end: to });
        }
        if from < period.start || to > period.end {
            return Err(BillingError::OutsidePeriod { item: item.to_string(), from, to, period: *period });
        }
    }
    let mut sorted: Vec<_> = pieces.iter().filter(|(f, t)| f < t).collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(BillingError::Overlap { item: item.to_string() });
    }
    Ok(())
}

/// The charge of `price` (the price of one whole `period`, e.g. a monthly price) for each of
/// `pieces` `[from, to)` of the period, in order (see the module doc: the pieces together are
/// `price × Σdays / days_in_period` rounded once, spread by largest remainder). Pieces must lie
/// inside the period and not overlap; an empty piece (`from == to`) is charged nothing.
pub fn prorate(
    price: Money,
    period: &BillPeriod,
    pieces: &[(NaiveDate, NaiveDate)],
    rule: RoundingRule,
) -> Result<Vec<Money>, BillingError> {
    check_pieces("proration", period, pieces)?;
    let days_in_period = period.days();
    if days_in_period <= 0 {
        return Err(BillingError::InvalidPeriod { start: period.start, end: period.end });
    }
    let days: Vec<i64> = pieces.iter().map(|(f, t)| (*t - *f).num_days()).collect();
    let charged: i64 = days.iter().sum();
    let total = if charged == days_in_period {
        price.amount
    } else {
        price
            .amount
            .checked_mul(Decimal::from(charged))
            .and_then(|x| x.checked_div(Decimal::from(days_in_period)))
            .ok_or(BillingError::Overflow)?
    };
    let weights: Vec<Decimal> = days.into_iter().map(Decimal::from).collect();
    allocate(Money::new(total, price.currency), &weights, rule)
}

/// The proration lines of a plan change (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeProration {
    /// The days changed: from the change date to the end of the period.
    pub remaining: Interval,
    /// Days in `remaining`.
    pub days: i64,
    /// Days in the period.
    pub days_in_period: i64,
    /// Credit for the unused part of the old price (zero or negative).
    pub credit: Money,
    /// Charge of the new price for the same days (none: a termination).
    pub charge: Option<Money>,
}

/// The credit of the old price and the charge of the new one (none: termination) for a change
/// on the local date `change_date` in `period`, each `price × remaining days / days_in_period`
/// rounded once with `rule`.
pub fn change_proration(
    old_price: Money,
    new_price: Option<Money>,
    period: &BillPeriod,
    change_date: NaiveDate,
    rule: RoundingRule,
) -> Result<ChangeProration, BillingError> {
    if !period.contains(change_date) {
        return Err(BillingError::OutsidePeriod {
            item: "plan change".into(),
            from: change_date,
            to: change_date,
            period: *period,
        });
    }
    let remaining = Interval { from: change_date, to: period.end };
    let piece = [(remaining.from, remaining.to)];
    let credit = neg(prorate(old_price, period, &piece, rule)?[0]);
    let charge = match new_price {
        Some(p) => {
            same_currency(old_price.currency, p, "new price")?;
            Some(prorate(p, period, &piece, rule)?[0])
        }
        None => None,
    };
    Ok(ChangeProration { remaining, days: remaining.days(), days_in_period: period.days(), credit, charge })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::testing::*;
    use crate::money::Currency;
    use proptest::prelude::*;

    fn jan() -> BillPeriod {
        BillPeriod::new(date("2026-01-01"), date("2026-02-01")).unwrap()
    }

    #[test]
    fn periods_follow_the_bill_cycle_day_in_the_local_time_zone() {
        let p = BillPeriod::containing(date("2026-02-20"), 15);
        assert_eq!((p.start, p.end, p.days()), (date("2026-02-15"), date("2026-03-15"), 28));
        assert_eq!(p.next(15), BillPeriod::new(date("2026-03-15"), date("2026-04-15")).unwrap());
        assert_eq!(p.previous(15), BillPeriod::new(date("2026-01-15"), date("2026-02-15")).unwrap());
        // 31 Jan 23:30 UTC is 1 Feb in Paris: a new period there, still January in UTC.
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(BillPeriod::at(at("2026-01-31T23:30:00Z"), 1, paris).start, date("2026-02-01"));
        assert_eq!(BillPeriod::at(at("2026-01-31T23:30:00Z"), 1, Tz::UTC).start, date("2026-01-01"));
        assert_eq!(BillPeriod::last_closed(at("2026-02-01T08:00:00Z"), 1, paris), jan());
        // The period's instants are local midnights.
        assert_eq!(jan().start_instant(paris), at("2025-12-31T23:00:00Z"));
        let summer = BillPeriod::containing(date("2026-07-10"), 1);
        assert_eq!(summer.end_instant(paris), at("2026-07-31T22:00:00Z"));
        assert!(BillPeriod::new(date("2026-01-02"), date("2026-01-02")).is_err());
    }

    #[test]
    fn a_single_piece_is_rounded_once() {
        // 16 Jan to 1 Feb: 31.00 × 16 / 31 = 16.00; 19.99 × 10 / 31 = 6.4483… → 6.45 / 6.44.
        assert_eq!(
            prorate(eur("31.00"), &jan(), &[(date("2026-01-16"), date("2026-02-01"))], RoundingRule::HalfEven).unwrap(),
            [eur("16.00")]
        );
        let piece = [(date("2026-01-01"), date("2026-01-11"))];
        assert_eq!(prorate(eur("19.99"), &jan(), &piece, RoundingRule::HalfEven).unwrap(), [eur("6.45")]);
        assert_eq!(prorate(eur("19.99"), &jan(), &piece, RoundingRule::Down).unwrap(), [eur("6.44")]);
        // The whole period is the price.
        assert_eq!(
            prorate(eur("19.99"), &jan(), &[(jan().start, jan().end)], RoundingRule::Up).unwrap(),
            [eur("19.99")]
        );
    }

    #[test]
    fn a_partition_sums_to_the_price_by_largest_remainder() {
        // 10.00 over 31 days in pieces of 10, 10 and 11 days: exact 3.2258…, 3.2258…, 3.5483…;
        // rounded down 3.22 + 3.22 + 3.54 = 9.98. The two cents left go to the largest dropped
        // remainders: 0.83… cent (third piece), then 0.58… (first piece; the tie with the
        // second goes to the earlier one).
        let pieces = [
            (date("2026-01-01"), date("2026-01-11")),
            (date("2026-01-11"), date("2026-01-21")),
            (date("2026-01-21"), date("2026-02-01")),
        ];
        let parts = prorate(eur("10.00"), &jan(), &pieces, RoundingRule::HalfEven).unwrap();
        assert_eq!(parts, [eur("3.23"), eur("3.22"), eur("3.55")]);
        // Rounded alone the pieces would sum to 3.23 + 3.23 + 3.55 = 10.01.
        assert_eq!(eur("3.548387").round(RoundingRule::HalfEven), eur("3.55"));
        // In reverse order the tie goes to the ten-day piece that now comes first.
        let reversed: Vec<_> = pieces.iter().rev().copied().collect();
        assert_eq!(
            prorate(eur("10.00"), &jan(), &reversed, RoundingRule::HalfEven).unwrap(),
            [eur("3.55"), eur("3.23"), eur("3.22")]
        );
    }

    #[test]
    fn pieces_must_be_inside_the_period_and_not_overlap() {
        let outside = [(date("2025-12-31"), date("2026-01-10"))];
        assert!(matches!(
            prorate(eur("1"), &jan(), &outside, RoundingRule::HalfEven),
            Err(BillingError::OutsidePeriod { .. })
        ));
        let overlap = [(date("2026-01-01"), date("2026-01-10")), (date("2026-01-09"), date("2026-01-12"))];
        assert!(matches!(
            prorate(eur("1"), &jan(), &overlap, RoundingRule::HalfEven),
            Err(BillingError::Overlap { .. })
        ));
        let empty = [(date("2026-01-05"), date("2026-01-05"))];
        assert_eq!(prorate(eur("10"), &jan(), &empty, RoundingRule::HalfEven).unwrap(), [eur("0")]);
    }

    #[test]
    fn a_mid_month_upgrade_credits_the_old_price_and_charges_the_new() {
        // Upgrade from 20.00 to 31.00 on 21 Jan: 11 of 31 days remain.
        // Credit 20.00 × 11 / 31 = 7.0967… → −7.10; charge 31.00 × 11 / 31 = 11.00.
        let c = change_proration(eur("20.00"), Some(eur("31.00")), &jan(), date("2026-01-21"), RoundingRule::HalfEven)
            .unwrap();
        assert_eq!((c.days, c.days_in_period), (11, 31));
        assert_eq!(c.credit, eur("-7.10"));
        assert_eq!(c.charge, Some(eur("11.00")));
        // A downgrade is the same with the prices swapped; a termination credits only.
        let t = change_proration(eur("20.00"), None, &jan(), date("2026-01-21"), RoundingRule::HalfEven).unwrap();
        assert_eq!((t.credit, t.charge), (eur("-7.10"), None));
        assert!(
            change_proration(eur("20"), Some(usd("31")), &jan(), date("2026-01-21"), RoundingRule::HalfEven).is_err()
        );
        assert!(change_proration(eur("20"), None, &jan(), date("2026-02-01"), RoundingRule::HalfEven).is_err());
    }

    #[test]
    fn allocation_spreads_exactly() {
        let parts = allocate(eur("-10.00"), &[d("1"), d("1"), d("1")], RoundingRule::HalfEven).unwrap();
        assert_eq!(parts, [eur("-3.34"), eur("-3.33"), eur("-3.33")]);
        let yen = Money::new(d("100"), Currency::new("JPY").unwrap());
        let parts = allocate(yen, &[d("2"), d("0"), d("1")], RoundingRule::HalfEven).unwrap();
        assert_eq!(parts.iter().map(|m| m.amount).collect::<Vec<_>>(), [d("67"), d("0"), d("33")]);
        assert!(allocate(eur("1"), &[d("0")], RoundingRule::HalfEven).is_err());
    }

    fn arb_partition() -> impl Strategy<Value = (u32, i64, Vec<i64>)> {
        // A bill cycle day, a period (by offset from 2026-01-01) and cut points inside it.
        (1u32..=28, 0i64..1500, proptest::collection::vec(0i64..40, 0..12))
    }

    proptest! {
        #[test]
        fn proration_over_any_partition_sums_to_the_price(
            (bcd, offset, cuts) in arb_partition(),
            cents in 0i64..100_000_000,
            rule in arb_rule(),
            minor in 0u32..=3,
        ) {
            let code = ["JPY", "EUR", "EUR", "KWD"][minor as usize];
            let currency = Currency::new(code).unwrap();
            let price = Money::new(Decimal::new(cents, currency.minor_digits()), currency);
            let period = BillPeriod::containing(date("2026-01-01") + chrono::Duration::days(offset), bcd);
            let mut points: Vec<NaiveDate> =
                cuts.iter().map(|c| period.start + chrono::Duration::days(c % period.days())).collect();
            points.push(period.start);
            points.push(period.end);
            points.sort();
            let pieces: Vec<_> = points.windows(2).map(|w| (w[0], w[1])).collect();
            let parts = prorate(price, &period, &pieces, rule).unwrap();
            prop_assert_eq!(parts.len(), pieces.len());
            let total = Money::sum(currency, parts.iter().copied()).unwrap();
            prop_assert_eq!(total, price);
            for (p, (f, t)) in parts.iter().zip(&pieces) {
                prop_assert!(p.amount >= Decimal::ZERO && p.amount.scale() <= currency.minor_digits());
                // Each piece is within one minor unit of its exact share.
                let exact = price.amount * Decimal::from((*t - *f).num_days()) / Decimal::from(period.days());
                prop_assert!((p.amount - exact).abs() < Decimal::new(1, currency.minor_digits()));
            }
            // A single piece is the exact share rounded once.
            if let Some(&(f, t)) = pieces.first() {
                let one = prorate(price, &period, &[(f, t)], rule).unwrap()[0];
                let exact = price.amount * Decimal::from((t - f).num_days()) / Decimal::from(period.days());
                prop_assert_eq!(one, Money::new(exact, currency).round(rule));
            }
        }
    }
}
