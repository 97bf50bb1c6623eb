//! Money: an exact decimal amount in one ISO 4217 currency. Never `f64`.
//!
//! Rounding happens in one place, [`Money::round`], with a named [`RoundingRule`] (half-even by
//! default) to the currency's minor unit; totals are sums of rounded lines, so a bill always adds
//! up to the cent. Adding amounts of different currencies is an error, never a conversion.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 currency code with its number of minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    minor_digits: u32,
}

/// Currencies whose minor unit is not the usual 2 digits (ISO 4217).
const MINOR_DIGITS: &[(&str, u32)] = &[
    ("BHD", 3),
    ("CLP", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("TND", 3),
    ("UGX", 0),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
];

impl Currency {
    /// Parse a three-letter upper-case code such as `EUR`.
    pub fn new(code: &str) -> Result<Currency, MoneyError> {
        let bytes: [u8; 3] = code.as_bytes().try_into().map_err(|_| MoneyError::BadCurrency(code.to_string()))?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::BadCurrency(code.to_string()));
        }
        let minor_digits = MINOR_DIGITS.iter().find(|(c, _)| *c == code).map_or(2, |(_, d)| *d);
        Ok(Currency { code: bytes, minor_digits })
    }

    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    pub fn minor_digits(&self) -> u32 {
        self.minor_digits
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// How an amount is brought to the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoundingRule {
    /// Banker's rounding: halves go to the even digit (no drift over many lines).
    #[default]
    HalfEven,
    /// Halves away from zero (commercial rounding).
    HalfUp,
    /// Towards zero (truncate).
    Down,
    /// Away from zero.
    Up,
}

impl RoundingRule {
    /// `amount` rounded to `dp` decimal places: the same value, scale and sign as rust_decimal's
    /// `round_dp_with_strategy` with this rule's strategy (a property test holds them equal).
    /// Why not call it: it walks the dropped digits one multiplication by ten at a time (25 of
    /// them from 28 places to 2, the common case after a per-minute rate charged by the second),
    /// which made it the largest item of the rating kernel, and a loop of loops costs more again
    /// in wasm; here it is at most three divisions of the 96-bit mantissa by a power of ten.
    #[inline]
    fn round_dp(self, amount: Decimal, dp: u32) -> Decimal {
        let scale = amount.scale();
        if scale <= dp {
            return amount;
        }
        // Drop all but the last (at most nine) digits, remembering whether any was not zero; then
        // the last digits dropped against half their power decide, the earlier ones breaking a tie.
        let magnitude = amount.mantissa().unsigned_abs();
        let (mut kept, mut dropped, mut sticky) = (magnitude, scale - dp, false);
        while dropped > 9 {
            let (q, r) = div_rem_small(kept, POWERS_10[9]);
            (kept, sticky, dropped) = (q, sticky || r != 0, dropped - 9);
        }
        let power = POWERS_10[dropped as usize];
        let (q, rest) = div_rem_small(kept, power);
        kept = q;
        // power is an even power of ten: 2 × rest < power means less than half even with the tail.
        let away = match self {
            RoundingRule::HalfEven => 2 * rest > power || (2 * rest == power && (sticky || kept % 2 == 1)),
            RoundingRule::HalfUp => 2 * rest >= power,
            RoundingRule::Down => false,
            RoundingRule::Up => rest != 0 || sticky,
        };
        // `kept` ≤ magnitude / 10, so one more still fits 96 bits.
        let kept = kept + u128::from(away);
        let mut out = from_magnitude(kept, false, dp);
        // As rust_decimal: a zero keeps its sign, an amount rounded to zero is positive.
        out.set_sign_negative(amount.is_sign_negative() && (kept != 0 || magnitude == 0));
        out
    }
}

/// `amount × quantity / per` (a price per unit applied to a quantity of base units, `per` of
/// them to the unit): the value **and scale** of rust_decimal's `checked_mul` then `checked_div`
/// (a property test holds them equal); `None` on overflow or a zero `per`.
///
/// Why not just call them: rating does this once per rated part, and a per-minute price charged
/// by the second rarely divides evenly, so rust_decimal runs its general 96-bit long division to
/// 28 digits every time — the largest item of the rating kernel, and more so in wasm, which has
/// no 64×64→128-bit multiply. Here, when the product fits 64 bits and `per` 32 bits (as rating's
/// prices, quantities and units do), the same long division runs on machine integers.
#[inline]
pub fn mul_div(amount: Decimal, quantity: u64, per: u64) -> Option<Decimal> {
    mul_div_small(amount, quantity, per).or_else(|| mul_div_wide(amount, quantity, per))
}

/// [`mul_div`] by rust_decimal itself, kept out of line so that the common path inlines.
#[cold]
#[inline(never)]
fn mul_div_wide(amount: Decimal, quantity: u64, per: u64) -> Option<Decimal> {
    amount.checked_mul(Decimal::from(quantity))?.checked_div(Decimal::from(per))
}

/// `total + amount` as rust_decimal's `checked_add`; `amount` itself when `total` is the plain
/// zero a sum starts from (the same result: a property test holds them equal), which skips the
/// scale alignment rust_decimal multiplies out in 128 bits (a library call on wasm).
#[inline]
pub fn add(total: Decimal, amount: Decimal) -> Option<Decimal> {
    // Decimal::ZERO exactly: no digits, scale 0, positive.
    if total.is_zero() && total.scale() == 0 && total.is_sign_positive() {
        Some(amount)
    } else {
        total.checked_add(amount)
    }
}

/// Largest scale of a decimal, where rust_decimal's division stops and rounds.
const SCALE_MAX: u32 = 28;
const POWERS_10: [u64; 10] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];

/// [`mul_div`] on machine integers: rust_decimal's `div_impl` for a 32-bit divisor, step for step
/// (integer division; then, on a remainder, more digits nine at a time while they fit 96 bits,
/// until it divides or reaches scale 28, rounding the last digit half-even; then its `unscale`).
/// `None` when the operands leave that path or the quotient would carry past 96 bits.
#[inline]
fn mul_div_small(amount: Decimal, quantity: u64, per: u64) -> Option<Decimal> {
    let divisor = u64::from(u32::try_from(per).ok().filter(|p| *p > 0)?);
    let mantissa = u64::try_from(amount.mantissa().unsigned_abs()).ok()?;
    // Two 32-bit factors cannot overflow: no checked multiply, which wasm does in 128 bits.
    let dividend =
        if (mantissa | quantity) >> 32 == 0 { mantissa * quantity } else { mantissa.checked_mul(quantity)? };
    if dividend == 0 {
        // rust_decimal: a product with a zero factor is plain zero, and so is zero divided.
        return Some(Decimal::ZERO);
    }
    let negative = amount.is_sign_negative();
    let mut scale = amount.scale();
    let mut quotient = u128::from(dividend / divisor);
    let mut rest = dividend % divisor;
    if rest == 0 {
        return Some(from_magnitude(quotient, negative, scale));
    }
    while rest != 0 {
        // rust_decimal's `find_scale`: as many more digits as keep the quotient below 2^96, nine
        // at most and up to scale 28; with none left, the last digit is rounded half-even.
        let mut digits = (SCALE_MAX - scale).min(9);
        let mut shifted = mul_small(quotient, POWERS_10[digits as usize]);
        while digits > 0 && shifted >> 96 != 0 {
            digits -= 1;
            shifted = mul_small(quotient, POWERS_10[digits as usize]);
        }
        if digits == 0 {
            let twice = 2 * rest;
            if twice > divisor || (twice == divisor && quotient & 1 == 1) {
                quotient += 1;
            }
            if quotient >> 96 != 0 {
                return None;
            }
            break;
        }
        let power = POWERS_10[digits as usize];
        // rest < 2^32 and power < 2^30: no overflow.
        let scaled = rest * power;
        quotient = shifted + u128::from(scaled / divisor);
        if quotient >> 96 != 0 {
            // A carry past 96 bits: rust_decimal drops a digit there (`unscale_from_overflow`).
            return None;
        }
        rest = scaled % divisor;
        scale += digits;
    }
    // rust_decimal's `unscale`: not every trailing zero, only the ones these tests find.
    while quotient as u32 == 0 && scale >= 8 {
        match div_rem_small(quotient, 100_000_000) {
            (q, 0) => (quotient, scale) = (q, scale - 8),
            _ => break,
        }
    }
    for (mask, power, digits) in [(0xF, 10_000, 4), (0x3, 100, 2), (0x1, 10, 1)] {
        if quotient & mask == 0
            && scale >= digits
            && let (q, 0) = div_rem_small(quotient, power)
        {
            (quotient, scale) = (q, scale - digits);
        }
    }
    Some(from_magnitude(quotient, negative, scale))
}

/// `(q / p, q % p)` for `q` below 2^96 and `p` below 2^32, as three 64-bit divisions of 32-bit
/// limbs (a 128-bit division is a library call on wasm and x86-64 alike).
#[inline]
fn div_rem_small(q: u128, p: u64) -> (u128, u64) {
    debug_assert!(q >> 96 == 0 && p > 0 && p >> 32 == 0);
    let (hi, mid, lo) = ((q >> 64) as u64, (q >> 32) as u32 as u64, q as u32 as u64);
    let (q2, r) = (hi / p, hi % p);
    let t = (r << 32) | mid;
    let (q1, r) = (t / p, t % p);
    let t = (r << 32) | lo;
    let (q0, r) = (t / p, t % p);
    ((u128::from(q2) << 64) | (u128::from(q1) << 32) | u128::from(q0), r)
}

/// `q × p` for `q` below 2^96 and `p` below 2^32 (so below 2^128), as three 64-bit products of
/// 32-bit limbs (a 128-bit product is a library call on wasm).
#[inline]
fn mul_small(q: u128, p: u64) -> u128 {
    debug_assert!(q >> 96 == 0 && p >> 32 == 0);
    let (hi, mid, lo) = ((q >> 64) as u64, (q >> 32) as u32 as u64, q as u32 as u64);
    let t0 = lo * p;
    let t1 = mid * p + (t0 >> 32);
    let t2 = hi * p + (t1 >> 32);
    (u128::from(t2) << 64) | (u128::from(t1 as u32) << 32) | u128::from(t0 as u32)
}

/// A decimal from a magnitude below 2^96.
fn from_magnitude(m: u128, negative: bool, scale: u32) -> Decimal {
    debug_assert!(m < 1 << 96);
    Decimal::from_parts(m as u32, (m >> 32) as u32, (m >> 64) as u32, negative, scale)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    BadCurrency(String),
    CurrencyMismatch { left: Currency, right: Currency },
    Overflow,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::BadCurrency(c) => write!(f, "{c:?} is not an ISO 4217 currency code"),
            MoneyError::CurrencyMismatch { left, right } => write!(f, "cannot combine {left} with {right}"),
            MoneyError::Overflow => f.write_str("amount out of range"),
        }
    }
}

impl std::error::Error for MoneyError {}

/// An amount in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "crate::json::decimal_str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money { amount: Decimal::ZERO, currency }
    }

    /// The amount brought to the currency's minor unit by `rule`: the one place money is rounded.
    #[inline]
    pub fn round(self, rule: RoundingRule) -> Money {
        Money { amount: rule.round_dp(self.amount, self.currency.minor_digits), ..self }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, ..self })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, ..self })
    }

    /// Sum of amounts that must all be in `currency`.
    pub fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency });
        }
        Ok(())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn eur(s: &str) -> Money {
        Money::new(Decimal::from_str(s).unwrap(), Currency::new("EUR").unwrap())
    }

    #[test]
    fn currencies_know_their_minor_unit() {
        assert_eq!(Currency::new("EUR").unwrap().minor_digits(), 2);
        assert_eq!(Currency::new("JPY").unwrap().minor_digits(), 0);
        assert_eq!(Currency::new("KWD").unwrap().minor_digits(), 3);
        assert!(Currency::new("eur").is_err());
        assert!(Currency::new("EURO").is_err());
    }

    #[test]
    fn rounding_rules_are_named_and_exact() {
        assert_eq!(eur("2.345").round(RoundingRule::HalfEven), eur("2.34"));
        assert_eq!(eur("2.355").round(RoundingRule::HalfEven), eur("2.36"));
        assert_eq!(eur("2.345").round(RoundingRule::HalfUp), eur("2.35"));
        assert_eq!(eur("-2.345").round(RoundingRule::HalfUp), eur("-2.35"));
        assert_eq!(eur("2.349").round(RoundingRule::Down), eur("2.34"));
        assert_eq!(eur("2.341").round(RoundingRule::Up), eur("2.35"));
        let yen = Money::new(Decimal::from_str("100.5").unwrap(), Currency::new("JPY").unwrap());
        assert_eq!(yen.round(RoundingRule::HalfEven).amount, Decimal::from(100));
    }

    fn strategy(rule: RoundingRule) -> rust_decimal::RoundingStrategy {
        use rust_decimal::RoundingStrategy as S;
        match rule {
            RoundingRule::HalfEven => S::MidpointNearestEven,
            RoundingRule::HalfUp => S::MidpointAwayFromZero,
            RoundingRule::Down => S::ToZero,
            RoundingRule::Up => S::AwayFromZero,
        }
    }

    const RULES: [RoundingRule; 4] =
        [RoundingRule::HalfEven, RoundingRule::HalfUp, RoundingRule::Down, RoundingRule::Up];

    /// Same value, scale and text (negative zero included) as rust_decimal's rounding.
    fn assert_rounds_like_rust_decimal(d: Decimal, dp: u32) {
        for rule in RULES {
            let (ours, theirs) = (rule.round_dp(d, dp), d.round_dp_with_strategy(dp, strategy(rule)));
            assert_eq!(ours, theirs, "{d} to {dp} places, {rule:?}");
            assert_eq!(ours.scale(), theirs.scale(), "{d} to {dp} places, {rule:?}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{d} to {dp} places, {rule:?}");
            assert_eq!(ours.is_sign_negative(), theirs.is_sign_negative(), "{d} to {dp} places, {rule:?}");
        }
    }

    #[test]
    fn rounding_matches_rust_decimal_at_the_edges() {
        let max = Decimal::MAX;
        let third = Decimal::ONE / Decimal::from(3);
        for d in [max, -max, third, -third, Decimal::ZERO, -Decimal::new(0, 5), Decimal::new(-1, 3), Decimal::new(5, 3)]
        {
            for dp in 0..=29 {
                assert_rounds_like_rust_decimal(d, dp);
            }
        }
        for scale in 0..=28 {
            for m in [1i64, 5, 15, 25, 49, 50, 51, 95, 99, 150, 250, -5, -15, -25, -50, -150] {
                for dp in 0..=scale {
                    assert_rounds_like_rust_decimal(Decimal::new(m, scale), dp);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn rounding_matches_rust_decimal(lo: u32, mid: u32, hi: u32, negative: bool, scale in 0u32..=28, dp in 0u32..=28) {
            assert_rounds_like_rust_decimal(Decimal::from_parts(lo, mid, hi, negative, scale), dp);
        }

        #[test]
        fn rounding_matches_rust_decimal_for_short_amounts(m in -100_000i64..100_000, scale in 0u32..=8, dp in 0u32..=4) {
            assert_rounds_like_rust_decimal(Decimal::new(m, scale), dp);
        }
    }

    /// Same value, scale and sign as rust_decimal's multiplication then division.
    fn assert_mul_div_like_rust_decimal(amount: Decimal, quantity: u64, per: u64) {
        let theirs = amount.checked_mul(Decimal::from(quantity)).and_then(|p| p.checked_div(Decimal::from(per)));
        let ours = mul_div(amount, quantity, per);
        let text = |d: Option<Decimal>| d.map(|d| (d.to_string(), d.scale(), d.is_sign_negative()));
        assert_eq!(text(ours), text(theirs), "{amount} x {quantity} / {per}");
    }

    #[test]
    fn mul_div_matches_rust_decimal_at_the_edges() {
        let amounts = [
            Decimal::ZERO,
            -Decimal::new(0, 3),
            Decimal::ONE,
            Decimal::new(1, 28),
            Decimal::new(-1, 28),
            Decimal::new(4, 3),
            Decimal::new(12, 2),
            Decimal::new(-15, 2),
            Decimal::new(45, 2),
            Decimal::new(5, 1),
            Decimal::new(i64::MAX, 0),
            Decimal::new(i64::MAX, 20),
            Decimal::new(999_999_999_999, 6),
            Decimal::MAX,
            Decimal::from_parts(u32::MAX, u32::MAX, 0, false, 10),
            Decimal::from_parts(0, 0, 1, true, 5),
        ];
        let quantities =
            [0, 1, 2, 3, 7, 30, 59, 60, 61, 90, 125, 1_800, 86_399, 1_000_000, 10_000_000_000_000, u64::MAX];
        let pers = [0, 1, 2, 3, 7, 60, 100, 1_000, 3_600, 1_000_000, 1_000_000_000, u32::MAX as u64, 1 << 32, 1 << 40];
        for a in amounts {
            for q in quantities {
                for p in pers {
                    assert_mul_div_like_rust_decimal(a, q, p);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn mul_small_is_multiplication(q in 0u128..(1 << 96), p in 0u64..(1 << 32)) {
            proptest::prop_assert_eq!(mul_small(q, p), q * u128::from(p));
        }

        #[test]
        fn div_rem_small_is_division(q in 0u128..(1 << 96), p in 1u64..(1 << 32), k in 0usize..=9) {
            for p in [p, POWERS_10[k]] {
                proptest::prop_assert_eq!(div_rem_small(q, p), (q / u128::from(p), (q % u128::from(p)) as u64));
            }
        }
    }

    #[test]
    fn adding_to_the_plain_zero_is_the_amount() {
        for d in
            [Decimal::ZERO, Decimal::new(0, 5), Decimal::MAX, Decimal::MIN, Decimal::new(-15, 28), Decimal::new(7, 0)]
        {
            assert_eq!(
                add(Decimal::ZERO, d).map(|d| d.serialize()),
                Decimal::ZERO.checked_add(d).map(|d| d.serialize())
            );
        }
        let (zero_with_scale, big) = (Decimal::new(0, 3), Decimal::from_parts(1, 2, 3, false, 28));
        assert_eq!(
            add(zero_with_scale, big),
            zero_with_scale.checked_add(big),
            "a zero with a scale: rust_decimal's sum"
        );
    }

    #[test]
    fn mul_div_takes_machine_integers_for_prices() {
        // Terminating (with the trailing zero rust_decimal leaves), not terminating, exact, and a
        // rate of the sample interconnect tariff.
        for (amount, quantity, per, expect) in [
            (Decimal::new(1, 1), 30, 60, "0.050"),
            (Decimal::new(1, 1), 7, 60, "0.0116666666666666666666666667"),
            (Decimal::new(12, 2), 120, 60, "0.24"),
            (Decimal::new(4, 3), 125, 60, "0.0083333333333333333333333333"),
            (Decimal::new(5, 0), 2_500_000, 1_000_000, "12.50"),
        ] {
            let d = mul_div_small(amount, quantity, per).expect("the machine-integer path");
            assert_eq!(d.to_string(), expect);
            assert_mul_div_like_rust_decimal(amount, quantity, per);
        }
        assert_eq!(mul_div_small(Decimal::MAX, 2, 60), None, "beyond 64 bits: rust_decimal's own division");
    }

    proptest::proptest! {
        #[test]
        fn adding_to_zero_matches_rust_decimal(lo: u32, mid: u32, hi: u32, negative: bool, scale in 0u32..=28) {
            let d = Decimal::from_parts(lo, mid, hi, negative, scale);
            proptest::prop_assert_eq!(add(Decimal::ZERO, d).map(|d| d.serialize()), Decimal::ZERO.checked_add(d).map(|d| d.serialize()));
        }

        #[test]
        fn mul_div_matches_rust_decimal(m in -1_000_000i64..1_000_000, scale in 0u32..=28, quantity in 0u64..100_000_000, per in 1u64..100_000) {
            assert_mul_div_like_rust_decimal(Decimal::new(m, scale), quantity, per);
        }

        #[test]
        fn mul_div_matches_rust_decimal_for_rating_units(m in 0i64..100_000, scale in 0u32..=6, quantity in 0u64..10_000_000_000_000,
            per in proptest::sample::select(vec![1u64, 60, 3_600, 1_000, 1_000_000, 1_000_000_000, 1_024, 1_048_576])) {
            assert_mul_div_like_rust_decimal(Decimal::new(m, scale), quantity, per);
        }

        #[test]
        fn mul_div_matches_rust_decimal_for_large_operands(lo: u32, mid: u32, negative: bool, scale in 0u32..=28, quantity: u64, per: u32) {
            assert_mul_div_like_rust_decimal(Decimal::from_parts(lo, mid, 0, negative, scale), quantity >> (quantity % 64), u64::from(per));
        }
    }

    #[test]
    fn currencies_never_mix() {
        let usd = Money::new(Decimal::ONE, Currency::new("USD").unwrap());
        assert!(matches!(eur("1").checked_add(usd), Err(MoneyError::CurrencyMismatch { .. })));
        assert_eq!(Money::sum(Currency::new("EUR").unwrap(), [eur("0.10"), eur("0.20")]).unwrap(), eur("0.30"));
    }

    #[test]
    fn serializes_amounts_as_strings() {
        let json = serde_json::to_string(&eur("12.50")).unwrap();
        assert_eq!(json, r#"{"amount":"12.50","currency":"EUR"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, eur("12.50"));
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"XX"}"#).is_err());
    }
}
