//! Money: an exact decimal amount in one ISO 4217 currency. Never `f64`.
//!
//! Rounding happens in one place, [`Money::round`], with a named [`RoundingRule`] (half-even by
//! default) to the currency's minor unit; totals are sums of rounded lines, so a bill always adds
//! up to the cent. Adding amounts of different currencies is an error, never a conversion.

use rust_decimal::{Decimal, RoundingStrategy};
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
    fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingRule::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingRule::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingRule::Down => RoundingStrategy::ToZero,
            RoundingRule::Up => RoundingStrategy::AwayFromZero,
        }
    }
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
    #[serde(with = "rust_decimal::serde::str")]
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
    pub fn round(self, rule: RoundingRule) -> Money {
        Money { amount: self.amount.round_dp_with_strategy(self.currency.minor_digits, rule.strategy()), ..self }
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
