//! Proration of the first recurring period: a product activated between two bill cycle days
//! pays, for that first period, the share of the monthly price for the days it had the product.
//!
//! Rule (by day, in the billing account's time zone): the activation instant is converted to the
//! account's local date `d`. The billing period containing `d` runs from the last bill cycle day
//! on or before `d` (inclusive) to the next bill cycle day after `d` (exclusive). The first
//! charge is `price × (days from d to the next cycle day) / (days in that period)`, rounded once
//! with the named [`RoundingRule`]. A product activated on a bill cycle day pays the full price.
//! The bill cycle day is 1 to 28 (the account rule), so every month has it; larger values are
//! clamped to the month's last day anyway.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::money::{Money, RoundingRule};

/// The first (prorated) period of a monthly recurring charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPeriod {
    /// Local activation date (first charged day).
    pub start: NaiveDate,
    /// Next bill cycle date (first day not charged in this period).
    pub end: NaiveDate,
    /// Start of the whole billing period containing `start`.
    pub period_start: NaiveDate,
    /// Days charged (`end - start`).
    pub days_charged: i64,
    /// Days in the billing period (`end - period_start`).
    pub days_in_period: i64,
    /// The prorated amount, rounded.
    pub amount: Money,
}

fn cycle_date(year: i32, month: u32, day: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    let last = first.checked_add_months(Months::new(1)).and_then(|d| d.pred_opt()).unwrap_or(first).day();
    NaiveDate::from_ymd_opt(year, month, day.clamp(1, last)).unwrap_or(first)
}

/// The billing period `[start, end)` containing `date` for a bill cycle day.
pub fn billing_period(date: NaiveDate, bill_cycle_day: u32) -> (NaiveDate, NaiveDate) {
    let this = cycle_date(date.year(), date.month(), bill_cycle_day);
    let start = if this <= date {
        this
    } else {
        let prev = date.checked_sub_months(Months::new(1)).unwrap_or(date);
        cycle_date(prev.year(), prev.month(), bill_cycle_day)
    };
    let after = start.checked_add_months(Months::new(1)).unwrap_or(start);
    (start, cycle_date(after.year(), after.month(), bill_cycle_day))
}

/// The first period of a monthly charge of `monthly` activated at `activated` (see module doc).
pub fn first_period(
    monthly: Money,
    activated: DateTime<Utc>,
    bill_cycle_day: u32,
    tz: Tz,
    rounding: RoundingRule,
) -> FirstPeriod {
    let start = activated.with_timezone(&tz).date_naive();
    let (period_start, end) = billing_period(start, bill_cycle_day);
    let days_charged = (end - start).num_days();
    let days_in_period = (end - period_start).num_days().max(1);
    let amount = if days_charged >= days_in_period {
        monthly.round(rounding)
    } else {
        Money::new(monthly.amount * Decimal::from(days_charged) / Decimal::from(days_in_period), monthly.currency)
            .round(rounding)
    };
    FirstPeriod { start, end, period_start, days_charged, days_in_period, amount }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;
    use rust_decimal::prelude::FromPrimitive;

    fn eur(v: &str) -> Money {
        Money::new(v.parse().unwrap(), Currency::new("EUR").unwrap())
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn mid_month_activation_is_prorated_by_day() {
        // 16 Jan to 1 Feb: 16 of 31 days.
        let p = first_period(eur("31.00"), at("2026-01-16T10:00:00Z"), 1, Tz::UTC, RoundingRule::HalfEven);
        assert_eq!((p.days_charged, p.days_in_period), (16, 31));
        assert_eq!(p.amount, eur("16.00"));
        assert_eq!(p.end, NaiveDate::from_ymd_opt(2026, 2, 1).unwrap());
        // Bill cycle day 15, activated 20 Feb 2026: period 15 Feb – 15 Mar (28 days), 23 charged.
        let p = first_period(eur("19.99"), at("2026-02-20T00:00:00Z"), 15, Tz::UTC, RoundingRule::HalfEven);
        assert_eq!((p.days_charged, p.days_in_period), (23, 28));
        assert_eq!(p.amount, eur("16.42")); // 19.99 × 23 / 28 = 16.4203…
    }

    #[test]
    fn the_local_date_counts() {
        // 31 Jan 23:30 UTC is already 1 Feb in Paris: a full period from the cycle day.
        let p = first_period(
            eur("20"),
            at("2026-01-31T23:30:00Z"),
            1,
            "Europe/Paris".parse().unwrap(),
            RoundingRule::HalfEven,
        );
        assert_eq!(p.start, NaiveDate::from_ymd_opt(2026, 2, 1).unwrap());
        assert_eq!(p.amount, eur("20.00"));
        let p = first_period(eur("20"), at("2026-01-31T23:30:00Z"), 1, Tz::UTC, RoundingRule::HalfEven);
        assert_eq!(p.days_charged, 1);
    }

    proptest! {
        #[test]
        fn prorated_never_exceeds_the_full_price_and_a_full_period_is_the_full_price(
            cents in 0u32..10_000_000, day_offset in 0i64..3_000, bcd in 1u32..=28, secs in 0i64..86_400,
        ) {
            let price = Money::new(Decimal::from_u32(cents).unwrap() / Decimal::from(100), Currency::new("EUR").unwrap());
            let activated = at("2026-01-01T00:00:00Z") + chrono::Duration::days(day_offset) + chrono::Duration::seconds(secs);
            let p = first_period(price, activated, bcd, Tz::UTC, RoundingRule::HalfEven);
            prop_assert!(p.amount.amount <= price.amount);
            prop_assert!(p.amount.amount >= Decimal::ZERO);
            prop_assert!(p.days_charged >= 1 && p.days_charged <= p.days_in_period);
            prop_assert!((28..=31).contains(&p.days_in_period));
            // Activating on the cycle day itself charges exactly the full price.
            let cycle = cycle_date(activated.year(), activated.month(), bcd).and_hms_opt(0, 0, 0).unwrap().and_utc();
            let full = first_period(price, cycle, bcd, Tz::UTC, RoundingRule::HalfEven);
            prop_assert_eq!(full.amount, price.round(RoundingRule::HalfEven));
            prop_assert_eq!(full.days_charged, full.days_in_period);
        }
    }
}
