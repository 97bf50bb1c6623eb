//! Prepaid balances with online charging (reserve units, commit what was used, release the rest:
//! what an OCS offers the network) and postpaid credit limits with notification thresholds.
//! Plain serde values: the component loads one, an operation mutates it, the component stores it
//! with compare-and-swap. No clock: every operation is given `now`.
//! Tests: `cargo test -p bss-domain usage`.
//!
//! Rules:
//! - Amounts are `Decimal`s in the balance's currency, never `f64`. Top-ups and debits are exact
//!   and may not have more decimals than the currency's minor unit; a price × units is rounded
//!   once to the minor unit with the balance's [`RoundingRule`].
//! - `amount` is the money on the account; live reservations hold part of it, so the available
//!   money is `amount − Σ live reservations`, and it never goes below zero: a debit or a
//!   reservation that would take it there is refused.
//! - Each operation first drops the reservations expired at `now` (`expires_at <= now`): their
//!   money is available again. An operation that fails changes nothing else.
//! - A reservation grants as many whole units as the available money covers, up to the request
//!   (a zero unit price grants the request); none → [`BalanceError::Insufficient`]. Reserving a
//!   live id again returns its grant unchanged (network retries are idempotent).
//! - A commit charges the used units at the reserved unit price (rounded once), at most the
//!   granted units, and releases the rest of the reservation.
//! - Postpaid: a [`CreditLimit`] reports each threshold of [`CREDIT_THRESHOLDS`] once per period
//!   when spending reaches it, and refuses usage past the limit if `block_at_limit`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::money::{Currency, Money, RoundingRule};
use crate::rating::MAX_ID_CHARS;

/// Most live reservations of one balance (concurrent sessions of one subscriber).
pub const MAX_RESERVATIONS: usize = 64;
/// Credit-limit thresholds reported, in percent of the limit.
pub const CREDIT_THRESHOLDS: [u8; 2] = [80, 100];

/// Why a balance or credit-limit operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceError {
    /// A negative amount, or one finer than the currency's minor unit.
    InvalidAmount { amount: Decimal, reason: &'static str },
    /// Not enough available money: what was asked (a debit, or one unit's price) and what is left.
    Insufficient { requested: Money, available: Money },
    /// A reservation id that is empty, too long or has control characters.
    InvalidId(String),
    /// A reservation asking for no units.
    NoUnits { id: String },
    /// A reservation that would expire at or before now.
    AlreadyExpired { id: String, expires_at: DateTime<Utc> },
    /// More live reservations than [`MAX_RESERVATIONS`].
    TooManyReservations { limit: usize },
    /// No live reservation with this id (never made, committed, released or expired).
    UnknownReservation { id: String },
    /// A commit of more units than were granted.
    ExceedsGrant { id: String, used: u64, granted: u64 },
    /// Postpaid usage past the credit limit of an account that blocks there.
    CreditLimitReached { limit: Money, spent: Decimal, requested: Decimal },
    /// An amount out of `Decimal`'s range.
    Overflow,
}

impl fmt::Display for BalanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BalanceError::InvalidAmount { amount, reason } => write!(f, "amount {amount} {reason}"),
            BalanceError::Insufficient { requested, available } => {
                write!(f, "insufficient balance: {requested} requested, {available} available")
            }
            BalanceError::InvalidId(id) => {
                write!(f, "reservation id {id:?} must be 1 to {MAX_ID_CHARS} printable characters")
            }
            BalanceError::NoUnits { id } => write!(f, "reservation {id:?} asks for no units"),
            BalanceError::AlreadyExpired { id, expires_at } => {
                write!(f, "reservation {id:?} would expire at {expires_at}, not after now")
            }
            BalanceError::TooManyReservations { limit } => {
                write!(f, "the balance already has the limit of {limit} live reservations")
            }
            BalanceError::UnknownReservation { id } => {
                write!(f, "no live reservation {id:?} (never made, committed, released or expired)")
            }
            BalanceError::ExceedsGrant { id, used, granted } => {
                write!(f, "reservation {id:?}: {used} units used, more than the {granted} granted")
            }
            BalanceError::CreditLimitReached { limit, spent, requested } => {
                write!(f, "credit limit {limit} reached: {spent} spent, {requested} more requested",)
            }
            BalanceError::Overflow => f.write_str("amount out of range"),
        }
    }
}

impl std::error::Error for BalanceError {}

/// Money set aside for a network session until it commits, releases or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The session's id (e.g. a Diameter session id), unique among live reservations.
    pub id: String,
    /// Money held: the rounded price of the granted units.
    #[serde(with = "crate::json::decimal_str")]
    pub amount: Decimal,
    /// Units granted.
    pub units: u64,
    /// Price of one unit, unrounded; commits charge at it.
    #[serde(with = "crate::json::decimal_str")]
    pub unit_price: Decimal,
    /// When the hold lapses and its money is available again.
    pub expires_at: DateTime<Utc>,
}

/// What a reservation granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Units granted (at most the request).
    pub units: u64,
    /// Money held for them.
    pub amount: Decimal,
}

/// What a commit charged and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Taken from the balance: the used units at the reserved price, rounded once.
    pub charged: Decimal,
    /// The rest of the reservation, available again.
    pub released: Decimal,
}

/// A prepaid balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub currency: Currency,
    /// Money on the account, live reservations included.
    #[serde(with = "crate::json::decimal_str")]
    pub amount: Decimal,
    /// Live (and not yet dropped expired) reservations.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    /// How a price × units is brought to the minor unit.
    #[serde(default)]
    pub rounding: RoundingRule,
}

impl Balance {
    /// An empty balance in `currency`, rounding half-even.
    pub fn new(currency: Currency) -> Balance {
        Balance { currency, amount: Decimal::ZERO, reservations: Vec::new(), rounding: RoundingRule::default() }
    }

    fn money(&self, amount: Decimal) -> Money {
        Money::new(amount, self.currency)
    }

    /// Money that can be debited or reserved at `now`: the amount less live reservations.
    pub fn available(&self, now: DateTime<Utc>) -> Decimal {
        let held = self.reservations.iter().filter(|r| r.expires_at > now).map(|r| r.amount);
        held.fold(self.amount, |a, r| a.checked_sub(r).unwrap_or(Decimal::MIN))
    }

    /// Drops the reservations expired at `now` (their money is available again); returns them.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<Reservation> {
        let (expired, live) = std::mem::take(&mut self.reservations).into_iter().partition(|r| r.expires_at <= now);
        self.reservations = live;
        expired
    }

    /// An exact amount given by a caller: not negative, not finer than the minor unit.
    fn checked_amount(&self, amount: Decimal) -> Result<Decimal, BalanceError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(BalanceError::InvalidAmount { amount, reason: "must not be negative" });
        }
        if amount.normalize().scale() > self.currency.minor_digits() {
            return Err(BalanceError::InvalidAmount { amount, reason: "is finer than the currency's minor unit" });
        }
        Ok(amount)
    }

    /// Adds money.
    pub fn top_up(&mut self, amount: Decimal, now: DateTime<Utc>) -> Result<(), BalanceError> {
        self.expire(now);
        let amount = self.checked_amount(amount)?;
        self.amount = self.amount.checked_add(amount).ok_or(BalanceError::Overflow)?;
        Ok(())
    }

    /// Takes money outright (a rated charge), never more than is available.
    pub fn debit(&mut self, amount: Decimal, now: DateTime<Utc>) -> Result<(), BalanceError> {
        self.expire(now);
        let amount = self.checked_amount(amount)?;
        let available = self.available(now);
        if amount > available {
            return Err(BalanceError::Insufficient {
                requested: self.money(amount),
                available: self.money(available.max(Decimal::ZERO)),
            });
        }
        self.amount -= amount;
        Ok(())
    }

    /// The rounded price of `units` at `unit_price` (`None`: out of range).
    fn price(&self, unit_price: Decimal, units: u64) -> Option<Decimal> {
        let exact = unit_price.checked_mul(Decimal::from(units))?;
        Some(self.money(exact).round(self.rounding).amount)
    }

    /// Holds money for up to `requested_units` at `unit_price` until `expires_at`; grants as many
    /// whole units as the available money covers. A live `id` returns its grant unchanged.
    pub fn reserve(
        &mut self,
        id: &str,
        requested_units: u64,
        unit_price: Decimal,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Grant, BalanceError> {
        self.expire(now);
        if let Some(r) = self.reservations.iter().find(|r| r.id == id) {
            return Ok(Grant { units: r.units, amount: r.amount });
        }
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
            return Err(BalanceError::InvalidId(id.to_string()));
        }
        if requested_units == 0 {
            return Err(BalanceError::NoUnits { id: id.to_string() });
        }
        if unit_price.is_sign_negative() && !unit_price.is_zero() {
            return Err(BalanceError::InvalidAmount {
                amount: unit_price,
                reason: "must not be negative (unit price)",
            });
        }
        if expires_at <= now {
            return Err(BalanceError::AlreadyExpired { id: id.to_string(), expires_at });
        }
        if self.reservations.len() >= MAX_RESERVATIONS {
            return Err(BalanceError::TooManyReservations { limit: MAX_RESERVATIONS });
        }
        let available = self.available(now);
        let units = self.affordable(unit_price, requested_units, available);
        if units == 0 {
            let one = self.price(unit_price, 1).ok_or(BalanceError::Overflow)?;
            return Err(BalanceError::Insufficient {
                requested: self.money(one),
                available: self.money(available.max(Decimal::ZERO)),
            });
        }
        let amount = self.price(unit_price, units).ok_or(BalanceError::Overflow)?;
        self.reservations.push(Reservation { id: id.to_string(), amount, units, unit_price, expires_at });
        Ok(Grant { units, amount })
    }

    /// The most units, up to `requested`, whose rounded price is at most `available`.
    fn affordable(&self, unit_price: Decimal, requested: u64, available: Decimal) -> u64 {
        if available.is_sign_negative() && !available.is_zero() {
            return 0;
        }
        if unit_price.is_zero() {
            return requested;
        }
        // Rounding moves a price by less than one minor unit, so no more than this fits.
        let minor = Decimal::new(1, self.currency.minor_digits());
        let bound = available.checked_add(minor).and_then(|a| a.checked_div(unit_price)).map(|q| q.floor());
        let mut hi = bound.and_then(|q| u64::try_from(q).ok()).unwrap_or(u64::MAX).min(requested);
        let fits = |n: u64| self.price(unit_price, n).is_some_and(|p| p <= available);
        // The price is monotonic in the units: the largest n that fits, by bisection.
        let mut lo = 0u64;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Charges `used_units` of reservation `id` at its unit price and releases the rest.
    pub fn commit(&mut self, id: &str, used_units: u64, now: DateTime<Utc>) -> Result<Committed, BalanceError> {
        self.expire(now);
        let i = self.position(id)?;
        let r = &self.reservations[i];
        if used_units > r.units {
            return Err(BalanceError::ExceedsGrant { id: id.to_string(), used: used_units, granted: r.units });
        }
        // Never more than held, even for a reservation edited by hand.
        let charged = self.price(r.unit_price, used_units).ok_or(BalanceError::Overflow)?.min(r.amount);
        let released = r.amount - charged;
        self.amount = self.amount.checked_sub(charged).ok_or(BalanceError::Overflow)?;
        self.reservations.remove(i);
        Ok(Committed { charged, released })
    }

    /// Gives up reservation `id` without charging; returns the money released.
    pub fn release(&mut self, id: &str, now: DateTime<Utc>) -> Result<Decimal, BalanceError> {
        self.expire(now);
        let i = self.position(id)?;
        Ok(self.reservations.remove(i).amount)
    }

    fn position(&self, id: &str) -> Result<usize, BalanceError> {
        self.reservations
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| BalanceError::UnknownReservation { id: id.into() })
    }
}

/// A postpaid account's credit limit for the current bill period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditLimit {
    /// The limit (its currency is the account's).
    pub limit: Money,
    /// Charged this period.
    #[serde(with = "crate::json::decimal_str")]
    pub spent: Decimal,
    /// Thresholds (percent of [`CREDIT_THRESHOLDS`]) already reported this period.
    #[serde(default)]
    pub notified: Vec<u8>,
    /// Refuse usage that would take spending past the limit ([`CreditLimit::authorize`]).
    #[serde(default)]
    pub block_at_limit: bool,
}

impl CreditLimit {
    /// A fresh period with nothing spent.
    pub fn new(limit: Money, block_at_limit: bool) -> CreditLimit {
        CreditLimit { limit, spent: Decimal::ZERO, notified: Vec::new(), block_at_limit }
    }

    /// What is left before the limit (negative once past it).
    pub fn remaining(&self) -> Decimal {
        self.limit.amount.checked_sub(self.spent).unwrap_or(Decimal::MIN)
    }

    /// Whether usage costing `amount` may go ahead: always, unless the account blocks at its
    /// limit and the amount would take spending past it.
    pub fn authorize(&self, amount: Decimal) -> Result<(), BalanceError> {
        let after = self.spent.checked_add(amount).ok_or(BalanceError::Overflow)?;
        if self.block_at_limit && amount > Decimal::ZERO && after > self.limit.amount {
            return Err(BalanceError::CreditLimitReached { limit: self.limit, spent: self.spent, requested: amount });
        }
        Ok(())
    }

    /// Records a charge (a credit if negative) that already happened (a rated record cannot be
    /// refused); returns the thresholds newly reached, each once per period.
    pub fn charge(&mut self, amount: Decimal) -> Vec<u8> {
        self.spent = self.spent.saturating_add(amount);
        let mut crossed = Vec::new();
        for pct in CREDIT_THRESHOLDS {
            let reached = self.spent > Decimal::ZERO
                && self.spent.saturating_mul(Decimal::ONE_HUNDRED) >= self.limit.amount.saturating_mul(pct.into());
            if reached && !self.notified.contains(&pct) {
                self.notified.push(pct);
                crossed.push(pct);
            }
        }
        crossed
    }

    /// [`authorize`](Self::authorize) then [`charge`](Self::charge): usage asked for before it
    /// happens.
    pub fn try_charge(&mut self, amount: Decimal) -> Result<Vec<u8>, BalanceError> {
        self.authorize(amount)?;
        Ok(self.charge(amount))
    }

    /// Starts a new period: nothing spent, no threshold reported.
    pub fn new_period(&mut self) {
        self.spent = Decimal::ZERO;
        self.notified.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        "2026-03-09T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::seconds(secs)
    }

    fn funded(amount: &str) -> Balance {
        let mut b = Balance::new(eur());
        b.top_up(d(amount), t(0)).unwrap();
        b
    }

    #[test]
    fn top_ups_and_debits_are_exact_and_never_go_below_zero() {
        let mut b = funded("10.00");
        b.top_up(d("0.10"), t(0)).unwrap();
        b.debit(d("0.20"), t(0)).unwrap();
        b.debit(d("9.90"), t(0)).unwrap();
        assert_eq!(b.amount, Decimal::ZERO);
        let err = b.debit(d("0.01"), t(0)).unwrap_err();
        assert_eq!(
            err,
            BalanceError::Insufficient { requested: Money::new(d("0.01"), eur()), available: Money::zero(eur()) }
        );
        assert_eq!(err.to_string(), "insufficient balance: 0.01 EUR requested, 0.00 EUR available");
        b.debit(Decimal::ZERO, t(0)).unwrap();
        assert_eq!(b.amount, Decimal::ZERO);

        let err = b.top_up(d("-1"), t(0)).unwrap_err();
        assert_eq!(err, BalanceError::InvalidAmount { amount: d("-1"), reason: "must not be negative" });
        assert_eq!(err.to_string(), "amount -1 must not be negative");
        assert!(matches!(b.top_up(d("0.001"), t(0)), Err(BalanceError::InvalidAmount { .. })));
        assert!(matches!(b.debit(d("-0.01"), t(0)), Err(BalanceError::InvalidAmount { .. })));
        b.top_up(d("1.500"), t(0)).unwrap();
        assert_eq!(b.amount, d("1.5"), "trailing zeros are not finer than the minor unit");
        let mut yen = Balance::new(Currency::new("JPY").unwrap());
        assert!(yen.top_up(d("0.5"), t(0)).is_err());
        yen.top_up(d("500"), t(0)).unwrap();
        let mut huge = funded("1");
        huge.amount = Decimal::MAX;
        assert_eq!(huge.top_up(d("1"), t(0)), Err(BalanceError::Overflow));
    }

    #[test]
    fn reserve_grants_the_whole_units_the_money_covers() {
        let mut b = funded("1.00");
        let g = b.reserve("s1", 100, d("0.03"), t(60), t(0)).unwrap();
        assert_eq!(g, Grant { units: 33, amount: d("0.99") });
        assert_eq!(b.available(t(0)), d("0.01"));
        assert_eq!(b.amount, d("1.00"), "a reservation holds money, it does not take it");
        let err = b.reserve("s2", 1, d("0.03"), t(60), t(0)).unwrap_err();
        assert_eq!(
            err,
            BalanceError::Insufficient {
                requested: Money::new(d("0.03"), eur()),
                available: Money::new(d("0.01"), eur())
            }
        );
        assert!(b.debit(d("0.02"), t(0)).is_err(), "held money cannot be debited");
        let g = b.reserve("s2", 5, d("0.01"), t(60), t(0)).unwrap();
        assert_eq!(g, Grant { units: 1, amount: d("0.01") });
        assert_eq!(b.available(t(0)), Decimal::ZERO);

        // A grant below the request, and the whole request when it is covered.
        let mut b = funded("5.00");
        assert_eq!(b.reserve("a", 10, d("0.20"), t(60), t(0)).unwrap(), Grant { units: 10, amount: d("2.00") });
        // Free units are granted even when nothing is available.
        let mut empty = Balance::new(eur());
        assert_eq!(empty.reserve("f", 7, Decimal::ZERO, t(60), t(0)).unwrap(), Grant { units: 7, amount: d("0") });
        assert!(matches!(empty.reserve("g", 1, d("0.01"), t(60), t(0)), Err(BalanceError::Insufficient { .. })));
    }

    #[test]
    fn a_price_times_units_is_rounded_once_with_the_balance_rule() {
        // 0.004 a unit, 0.01 available: 3 units cost 0.012, half-even 0.01; 4 cost 0.016 → 0.02.
        let mut b = funded("0.01");
        assert_eq!(b.reserve("s", 100, d("0.004"), t(60), t(0)).unwrap(), Grant { units: 3, amount: d("0.01") });
        assert_eq!(b.commit("s", 1, t(1)).unwrap(), Committed { charged: d("0.00"), released: d("0.01") });
        assert_eq!(b.commit("s", 1, t(1)), Err(BalanceError::UnknownReservation { id: "s".into() }));
        let mut up = funded("0.01");
        up.rounding = RoundingRule::Up;
        assert_eq!(up.reserve("s", 100, d("0.004"), t(60), t(0)).unwrap(), Grant { units: 2, amount: d("0.01") });
        assert_eq!(up.commit("s", 1, t(1)).unwrap(), Committed { charged: d("0.01"), released: d("0.00") });
        assert_eq!(up.amount, d("0.00"));
        // A tiny price and a huge request stay exact and bounded.
        let mut b = funded("1000000.00");
        let g = b.reserve("s", u64::MAX, d("0.0000001"), t(60), t(0)).unwrap();
        // 10_000_000_050_000 units cost 1000000.005: half-even 1000000.00; one more is 1000000.01.
        assert_eq!(g.units, 10_000_000_050_000);
        assert_eq!(g.amount, d("1000000.00"));
    }

    #[test]
    fn reserving_a_live_id_again_is_idempotent() {
        let mut b = funded("1.00");
        let g = b.reserve("s1", 10, d("0.05"), t(60), t(0)).unwrap();
        b.top_up(d("10.00"), t(1)).unwrap();
        assert_eq!(b.reserve("s1", 500, d("0.01"), t(120), t(2)).unwrap(), g, "the existing grant, unchanged");
        assert_eq!(b.reservations.len(), 1);
        assert_eq!(b.reservations[0].expires_at, t(60));
        // Once expired, the id is free again.
        let g2 = b.reserve("s1", 500, d("0.01"), t(200), t(60)).unwrap();
        assert_eq!(g2, Grant { units: 500, amount: d("5.00") });
    }

    #[test]
    fn reservation_requests_are_checked() {
        let mut b = funded("1.00");
        assert_eq!(b.reserve("", 1, d("0.01"), t(60), t(0)), Err(BalanceError::InvalidId(String::new())));
        assert!(matches!(b.reserve("a\nb", 1, d("0.01"), t(60), t(0)), Err(BalanceError::InvalidId(_))));
        assert!(matches!(
            b.reserve(&"x".repeat(MAX_ID_CHARS + 1), 1, d("0.01"), t(60), t(0)),
            Err(BalanceError::InvalidId(_))
        ));
        assert_eq!(b.reserve("s", 0, d("0.01"), t(60), t(0)), Err(BalanceError::NoUnits { id: "s".into() }));
        assert!(matches!(b.reserve("s", 1, d("-0.01"), t(60), t(0)), Err(BalanceError::InvalidAmount { .. })));
        let err = b.reserve("s", 1, d("0.01"), t(0), t(0)).unwrap_err();
        assert_eq!(err, BalanceError::AlreadyExpired { id: "s".into(), expires_at: t(0) });
        assert_eq!(err.to_string(), "reservation \"s\" would expire at 2026-03-09 10:00:00 UTC, not after now");
        assert!(b.reservations.is_empty(), "a refused reservation holds nothing");

        let mut b = funded("100.00");
        for i in 0..MAX_RESERVATIONS {
            b.reserve(&format!("s{i}"), 1, d("0.01"), t(60), t(0)).unwrap();
        }
        let err = b.reserve("one-more", 1, d("0.01"), t(60), t(0)).unwrap_err();
        assert_eq!(err, BalanceError::TooManyReservations { limit: MAX_RESERVATIONS });
        assert_eq!(
            err.to_string(),
            format!("the balance already has the limit of {MAX_RESERVATIONS} live reservations")
        );
        assert!(b.reserve("s0", 1, d("0.01"), t(60), t(0)).is_ok(), "a retry of a live one still answers");
        b.release("s0", t(0)).unwrap();
        assert!(b.reserve("one-more", 1, d("0.01"), t(60), t(0)).is_ok());
    }

    #[test]
    fn commit_charges_used_units_and_releases_the_rest() {
        let mut b = funded("10.00");
        b.reserve("s1", 100, d("0.015"), t(60), t(0)).unwrap();
        assert_eq!(b.available(t(0)), d("8.50"));
        let err = b.commit("s1", 101, t(10)).unwrap_err();
        assert_eq!(err, BalanceError::ExceedsGrant { id: "s1".into(), used: 101, granted: 100 });
        assert_eq!(err.to_string(), "reservation \"s1\": 101 units used, more than the 100 granted");
        assert_eq!(b.reservations.len(), 1, "a refused commit keeps the reservation");
        // 37 × 0.015 = 0.555 → 0.56 (half-even).
        assert_eq!(b.commit("s1", 37, t(10)).unwrap(), Committed { charged: d("0.56"), released: d("0.94") });
        assert_eq!((b.amount, b.available(t(10))), (d("9.44"), d("9.44")));
        b.reserve("s2", 10, d("0.10"), t(60), t(10)).unwrap();
        assert_eq!(b.commit("s2", 0, t(11)).unwrap(), Committed { charged: d("0.00"), released: d("1.00") });
        let err = b.commit("nope", 1, t(11)).unwrap_err();
        assert_eq!(err.to_string(), "no live reservation \"nope\" (never made, committed, released or expired)");
        // A hand-edited reservation never charges more than it holds.
        b.reserve("s3", 10, d("0.10"), t(60), t(11)).unwrap();
        b.reservations[0].amount = d("0.50");
        assert_eq!(b.commit("s3", 10, t(12)).unwrap(), Committed { charged: d("0.50"), released: d("0.00") });
    }

    #[test]
    fn release_and_expiry_give_the_money_back() {
        let mut b = funded("2.00");
        b.reserve("s1", 10, d("0.10"), t(30), t(0)).unwrap();
        b.reserve("s2", 5, d("0.10"), t(60), t(0)).unwrap();
        assert_eq!(b.available(t(0)), d("0.50"));
        assert_eq!(b.available(t(30)), d("1.50"), "expired at its expiry time");
        assert_eq!(b.release("s2", t(10)).unwrap(), d("0.50"));
        assert_eq!(b.release("s2", t(10)), Err(BalanceError::UnknownReservation { id: "s2".into() }));
        assert_eq!(b.commit("s1", 1, t(30)), Err(BalanceError::UnknownReservation { id: "s1".into() }));
        assert!(b.reservations.is_empty());
        assert_eq!(b.amount, d("2.00"), "nothing was charged");
        b.reserve("s3", 1, d("0.10"), t(100), t(40)).unwrap();
        let gone = b.expire(t(100));
        assert_eq!(gone.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["s3"]);
        // Every operation drops expired reservations first.
        b.reserve("s4", 20, d("0.10"), t(200), t(100)).unwrap();
        b.debit(d("2.00"), t(200)).unwrap();
        assert!(b.reservations.is_empty());
    }

    #[test]
    fn balances_serialize_amounts_as_strings() {
        let mut b = funded("12.50");
        b.reserve("s1", 2, d("0.25"), t(60), t(0)).unwrap();
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"currency": "EUR", "amount": "12.50", "rounding": "halfEven",
                "reservations": [{"id": "s1", "amount": "0.50", "units": 2, "unitPrice": "0.25", "expiresAt": "2026-03-09T10:01:00Z"}]})
        );
        assert_eq!(serde_json::from_value::<Balance>(v).unwrap(), b);
        let minimal: Balance = serde_json::from_value(serde_json::json!({"currency": "EUR", "amount": "1"})).unwrap();
        assert_eq!(minimal, Balance { amount: d("1"), ..Balance::new(eur()) });
    }

    #[test]
    fn credit_limits_report_each_threshold_once_per_period() {
        let mut c = CreditLimit::new(Money::new(d("50.00"), eur()), false);
        assert_eq!(c.charge(d("39.99")), Vec::<u8>::new());
        assert_eq!(c.charge(d("0.01")), [80]);
        assert_eq!(c.charge(d("5")), Vec::<u8>::new());
        assert_eq!(c.charge(d("-10")), Vec::<u8>::new(), "a credit lowers spending");
        assert_eq!(c.charge(d("9.99")), Vec::<u8>::new(), "80 was reported already this period");
        assert_eq!(c.charge(d("5.01")), [100]);
        assert_eq!(c.charge(d("100")), Vec::<u8>::new());
        assert_eq!(c.remaining(), d("-100.00"));
        c.authorize(d("1000")).unwrap();
        c.new_period();
        assert_eq!((c.spent, c.notified.len()), (Decimal::ZERO, 0));
        assert_eq!(c.charge(d("60")), [80, 100], "both at once");

        let mut zero = CreditLimit::new(Money::zero(eur()), false);
        assert_eq!(zero.charge(Decimal::ZERO), Vec::<u8>::new());
        assert_eq!(zero.charge(d("0.01")), [80, 100]);
    }

    #[test]
    fn a_blocking_credit_limit_refuses_usage_past_it() {
        let mut c = CreditLimit::new(Money::new(d("10.00"), eur()), true);
        assert_eq!(c.try_charge(d("8.00")), Ok(vec![80]));
        let err = c.try_charge(d("2.01")).unwrap_err();
        assert_eq!(
            err,
            BalanceError::CreditLimitReached {
                limit: Money::new(d("10.00"), eur()),
                spent: d("8.00"),
                requested: d("2.01")
            }
        );
        assert_eq!(err.to_string(), "credit limit 10.00 EUR reached: 8.00 spent, 2.01 more requested");
        assert_eq!(c.spent, d("8.00"), "a refused charge is not recorded");
        assert_eq!(c.try_charge(d("2.00")), Ok(vec![100]));
        assert!(c.authorize(d("0.01")).is_err());
        c.authorize(Decimal::ZERO).unwrap();
        c.authorize(d("-1")).unwrap();
        // Usage that already happened is recorded even past the limit.
        assert_eq!(c.charge(d("3")), Vec::<u8>::new());
        assert_eq!(c.spent, d("13.00"));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"limit": {"amount": "10.00", "currency": "EUR"}, "spent": "13.00", "notified": [80, 100], "blockAtLimit": true})
        );
        assert_eq!(serde_json::from_value::<CreditLimit>(v).unwrap(), c);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TopUp(i64),
        Debit(i64),
        Reserve { id: u8, units: u64, price_mills: i64, ttl: i64 },
        Commit { id: u8, used: u64 },
        Release(u8),
        Advance(i64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0i64..5_000).prop_map(Op::TopUp),
            (0i64..3_000).prop_map(Op::Debit),
            (0u8..4, 0u64..400, 0i64..500, 1i64..120).prop_map(|(id, units, price_mills, ttl)| Op::Reserve {
                id,
                units,
                price_mills,
                ttl
            }),
            (0u8..4, 0u64..500).prop_map(|(id, used)| Op::Commit { id, used }),
            (0u8..4).prop_map(Op::Release),
            (0i64..90).prop_map(Op::Advance),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = RoundingRule> {
        prop_oneof![
            Just(RoundingRule::HalfEven),
            Just(RoundingRule::HalfUp),
            Just(RoundingRule::Down),
            Just(RoundingRule::Up)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn balances_never_go_negative_and_add_up(rule in arb_rule(), ops in proptest::collection::vec(arb_op(), 1..80)) {
            let mut b = Balance { rounding: rule, ..Balance::new(eur()) };
            let mut now = t(0);
            let (mut topped, mut taken) = (Decimal::ZERO, Decimal::ZERO);
            let mut grants: HashMap<String, Grant> = HashMap::new();
            for op in ops {
                let mut before = b.clone();
                before.expire(now);
                let ok = match op {
                    Op::TopUp(cents) => {
                        let r = b.top_up(Decimal::new(cents, 2), now);
                        if r.is_ok() { topped += Decimal::new(cents, 2); }
                        r.is_ok()
                    }
                    Op::Debit(cents) => {
                        let r = b.debit(Decimal::new(cents, 2), now);
                        if r.is_ok() { taken += Decimal::new(cents, 2); }
                        prop_assert!(r.is_ok() || Decimal::new(cents, 2) > before.available(now));
                        r.is_ok()
                    }
                    Op::Reserve { id, units, price_mills, ttl } => {
                        let id = format!("s{id}");
                        let price = Decimal::new(price_mills, 3);
                        let live = before.reservations.iter().find(|r| r.id == id).cloned();
                        let r = b.reserve(&id, units, price, now + chrono::Duration::seconds(ttl), now);
                        if let Ok(g) = r {
                            prop_assert!(g.units <= units || live.is_some());
                            prop_assert!(g.amount <= before.available(now) || live.is_some());
                            if let Some(l) = live {
                                prop_assert_eq!((g.units, g.amount), (l.units, l.amount));
                            } else {
                                prop_assert!(g.units >= 1);
                                prop_assert_eq!(g.amount, Money::new(price * Decimal::from(g.units), eur()).round(rule).amount);
                            }
                            grants.insert(id, g);
                        }
                        r.is_ok()
                    }
                    Op::Commit { id, used } => {
                        let id = format!("s{id}");
                        let live = before.reservations.iter().any(|r| r.id == id);
                        let r = b.commit(&id, used, now);
                        match &r {
                            Ok(c) => {
                                let g = grants[&id];
                                prop_assert!(used <= g.units, "committed {} of {}", used, g.units);
                                prop_assert!(c.charged <= g.amount);
                                prop_assert_eq!(c.charged + c.released, g.amount);
                                taken += c.charged;
                            }
                            Err(BalanceError::ExceedsGrant { used: u, granted, .. }) => {
                                prop_assert!(u > granted);
                                prop_assert_eq!(*granted, grants[&id].units);
                            }
                            Err(BalanceError::UnknownReservation { .. }) => prop_assert!(!live),
                            Err(e) => prop_assert!(false, "unexpected {}", e),
                        }
                        r.is_ok()
                    }
                    Op::Release(id) => {
                        let r = b.release(&format!("s{id}"), now);
                        if let Ok(freed) = r { prop_assert_eq!(freed, grants[&format!("s{id}")].amount); }
                        r.is_ok()
                    }
                    Op::Advance(secs) => {
                        now += chrono::Duration::seconds(secs);
                        true
                    }
                };
                if !ok {
                    prop_assert_eq!(&b, &before, "a refused operation changes nothing but expiry");
                }
                prop_assert!(b.available(now) >= Decimal::ZERO, "available {} < 0", b.available(now));
                prop_assert!(b.reservations.len() <= MAX_RESERVATIONS);
            }
            prop_assert_eq!(taken, topped - b.amount);
        }

        #[test]
        fn blocking_credit_limits_hold_and_report_once(
            limit_cents in 0i64..10_000,
            charges in proptest::collection::vec(-500i64..3_000, 1..60),
            block in any::<bool>(),
        ) {
            let limit = Decimal::new(limit_cents, 2);
            let mut c = CreditLimit::new(Money::new(limit, eur()), block);
            let mut reported: Vec<u8> = Vec::new();
            for cents in charges {
                let was = c.spent;
                let amount = Decimal::new(cents, 2);
                match c.try_charge(amount) {
                    Ok(crossed) => {
                        prop_assert_eq!(c.spent, was + amount);
                        for pct in &crossed {
                            prop_assert!(!reported.contains(pct), "{}% reported twice", pct);
                            prop_assert!(c.spent * Decimal::ONE_HUNDRED >= limit * Decimal::from(*pct));
                        }
                        reported.extend(crossed);
                    }
                    Err(_) => {
                        prop_assert!(block && amount > Decimal::ZERO && was + amount > limit);
                        prop_assert_eq!(c.spent, was);
                    }
                }
                if block {
                    prop_assert!(c.spent <= limit, "spent {} past {}", c.spent, limit);
                }
                for pct in CREDIT_THRESHOLDS {
                    let reached = c.spent > Decimal::ZERO && c.spent * Decimal::ONE_HUNDRED >= limit * Decimal::from(pct);
                    prop_assert!(!reached || reported.contains(&pct), "{}% reached but never reported", pct);
                }
            }
        }
    }
}
