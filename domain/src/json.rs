//! Reading numbers out of JSON documents exactly, shared by every domain module that validates
//! TMF documents: a decimal comes from a JSON number's text (never through `f64`) or a string.

use rust_decimal::Decimal;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Why a JSON value is not a decimal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    /// Neither a number nor a string (the JSON type's name).
    WrongType(&'static str),
    /// A number or string whose text is not a decimal (the text).
    NotDecimal(String),
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongType(t) => write!(f, "must be a number or a decimal string, not {t}"),
            Self::NotDecimal(text) => write!(f, "{text:?} is not a decimal number"),
        }
    }
}

impl std::error::Error for DecimalError {}

/// An exact decimal from a JSON number (read from its text: `19.99` is exactly 19.99) or a
/// decimal string; scientific notation is accepted.
pub fn decimal(v: &Value) -> Result<Decimal, DecimalError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => return Err(DecimalError::WrongType(type_name(other))),
    };
    Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).map_err(|_| DecimalError::NotDecimal(text))
}

/// The JSON type of a value, for error messages (`a string`, `an object`…).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(&json!(19.99)).unwrap(), Decimal::from_str("19.99").unwrap());
        assert_eq!(decimal(&json!(0.1)).unwrap() + decimal(&json!(0.2)).unwrap(), Decimal::from_str("0.3").unwrap());
        assert_eq!(decimal(&json!(" 12.50 ")).unwrap(), Decimal::from_str("12.50").unwrap());
        assert_eq!(decimal(&json!(1e3)).unwrap(), Decimal::from(1000));
        assert_eq!(decimal(&json!(true)), Err(DecimalError::WrongType("a boolean")));
        assert_eq!(decimal(&json!("ten")), Err(DecimalError::NotDecimal("ten".into())));
    }
}

/// A UTC time written as chrono writes it (`serde` of `DateTime<Utc>`: RFC 3339 with `Z`, and
/// 0, 3, 6 or 9 fractional digits, as few as hold the nanoseconds exactly), without going through
/// `core::fmt`: chrono's writer cost about 1,850 instructions a time, and each rated record
/// stores two or more. Years outside 0–9999 and leap seconds are left to chrono. Reading is
/// chrono's. Use as `#[serde(serialize_with = "crate::json::utc_time")]`.
pub fn utc_time<S: serde::Serializer>(t: &chrono::DateTime<chrono::Utc>, s: S) -> Result<S::Ok, S::Error> {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return serde::Serialize::serialize(t, s);
    }
    let mut buf = [0u8; 30];
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    let mut len = 19;
    if nanos != 0 {
        let (value, digits) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        put(20, value, digits);
        buf[19] = b'.';
        len = 20 + digits;
    }
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[at] = sep;
    }
    buf[len] = b'Z';
    let text = std::str::from_utf8(&buf[..=len]).expect("ASCII digits and separators");
    s.serialize_str(text)
}

#[cfg(test)]
mod utc_time_tests {
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct Fast(#[serde(serialize_with = "super::utc_time")] DateTime<Utc>);

    fn both(t: DateTime<Utc>) -> (String, String) {
        (serde_json::to_string(&Fast(t)).unwrap(), serde_json::to_string(&t).unwrap())
    }

    proptest! {
        #[test]
        fn writes_what_chrono_writes(
            secs in -62_135_596_800i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
            round in 0u8..4,
        ) {
            // Whole seconds, milliseconds and microseconds are the common cases: draw them often.
            let nanos = match round {
                0 => 0,
                1 => nanos / 1_000_000 * 1_000_000,
                2 => nanos / 1_000 * 1_000,
                _ => nanos,
            };
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            let (fast, chrono) = both(t);
            prop_assert_eq!(fast, chrono);
        }
    }

    #[test]
    fn edges_write_what_chrono_writes() {
        for text in [
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2026-11-05T10:04:51Z",
            "2026-11-05T10:04:51.100Z",
            "2026-11-05T10:04:51.000100Z",
            "2026-11-05T10:04:51.000000100Z",
            "2016-12-31T23:59:60.5Z",
            "+10000-01-01T00:00:00Z",
            "-0001-12-31T23:59:59Z",
        ] {
            let t = match DateTime::parse_from_rfc3339(text) {
                Ok(t) => t.with_timezone(&Utc),
                Err(_) => continue,
            };
            let (fast, chrono) = both(t);
            assert_eq!(fast, chrono, "{text}");
        }
        // A leap second: chrono keeps it as nanoseconds past 10^9 (left to chrono's writer).
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .expect("a leap second")
            .and_utc();
        assert!(leap.timestamp_subsec_nanos() >= 1_000_000_000);
        let (fast, chrono) = both(leap);
        assert_eq!(fast, chrono);
        let far = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(both(far).0, both(far).1);
        let before = Utc.with_ymd_and_hms(-5, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(both(before).0, both(before).1);
    }
}

/// Decimals as JSON strings, written as `rust_decimal::serde::str` writes them (every digit of
/// the scale: `"1.5975"`, `"0.00"`, `"-0"`) without its digit loop — three 32-bit divisions
/// and a `char` push per digit, about 150 instructions a decimal natively; a rated record writes
/// nine and a bill dozens. Amounts of 2^64 or more are left to rust_decimal. Reading is
/// rust_decimal's. Use as `#[serde(with = "crate::json::decimal_str")]`.
pub mod decimal_str {
    use rust_decimal::Decimal;

    /// Writes `d` (see the module doc).
    pub fn serialize<S: serde::Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 48];
        match text(d, &mut buf) {
            Some(t) => s.serialize_str(t),
            None => rust_decimal::serde::str::serialize(d, s),
        }
    }

    /// Reads a decimal string (or number) as rust_decimal does.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        rust_decimal::serde::str::deserialize(d)
    }

    /// The text of `d` in `buf`, or `None` when its mantissa does not fit 64 bits.
    pub fn text<'a>(d: &Decimal, buf: &'a mut [u8; 48]) -> Option<&'a str> {
        let mantissa = u64::try_from(d.mantissa().unsigned_abs()).ok()?;
        let scale = d.scale() as usize;
        // Digits, least significant first, padded with zeros to the scale (as rust_decimal).
        let mut digits = [0u8; 30];
        let mut n = 0;
        let mut m = mantissa;
        while m != 0 {
            digits[n] = b'0' + (m % 10) as u8;
            m /= 10;
            n += 1;
        }
        while n < scale {
            digits[n] = b'0';
            n += 1;
        }
        let mut at = 0;
        if d.is_sign_negative() {
            buf[at] = b'-';
            at += 1;
        }
        let whole = n - scale;
        if whole == 0 {
            buf[at] = b'0';
            at += 1;
        }
        for i in 0..n {
            if i == whole && scale > 0 {
                buf[at] = b'.';
                at += 1;
            }
            buf[at] = digits[n - 1 - i];
            at += 1;
        }
        Some(std::str::from_utf8(&buf[..at]).expect("ASCII digits"))
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;
        use rust_decimal::Decimal;

        #[derive(serde::Serialize)]
        struct Fast(#[serde(with = "super")] Decimal);
        #[derive(serde::Serialize)]
        struct Theirs(#[serde(with = "rust_decimal::serde::str")] Decimal);

        fn same(d: Decimal) {
            assert_eq!(serde_json::to_string(&Fast(d)).unwrap(), serde_json::to_string(&Theirs(d)).unwrap(), "{d:?}");
        }

        proptest! {
            #[test]
            fn writes_what_rust_decimal_writes(
                lo in any::<u32>(),
                mid in any::<u32>(),
                hi in prop_oneof![Just(0u32), any::<u32>()],
                negative in any::<bool>(),
                scale in 0u32..=28,
                small in any::<bool>(),
            ) {
                // Small mantissas (the usual amounts) are drawn half the time.
                let (mid, hi) = if small { (mid % 4, 0) } else { (mid, hi) };
                same(Decimal::from_parts(lo, mid, hi, negative, scale));
            }
        }

        #[test]
        fn edges_write_what_rust_decimal_writes() {
            for (m, scale) in [
                (0i64, 0u32),
                (0, 2),
                (0, 28),
                (1, 28),
                (5, 1),
                (10, 1),
                (100, 2),
                (-7, 3),
                (i64::MAX, 0),
                (i64::MIN, 5),
            ] {
                same(Decimal::new(m, scale));
            }
            same(Decimal::from_parts(0, 0, 0, true, 0));
            same(Decimal::from_parts(0, 0, 0, true, 4));
            same(Decimal::from_parts(u32::MAX, u32::MAX, 0, true, 28));
            same(Decimal::from_parts(0, 0, 1, false, 3));
            same(Decimal::MAX);
            same(Decimal::MIN);
        }
    }
}
