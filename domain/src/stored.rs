//! A compact binary form for what the usage pipeline writes with every record it rates: the
//! stored record ([`UsageDoc`]: the normalised record, its rating and the steps that explain it),
//! and its product's allowance buckets and usage totals for the bill period, which every record
//! rewrites. Tests: `cargo test -p bss-domain stored`.
//!
//! Why not JSON: a rated record was about 1.3 kB of JSON and its product's buckets and totals
//! about 900 bytes more, written (and the buckets and totals read) for every record — key names,
//! decimals and times as text, a currency object per amount. Encoding and decoding them was about
//! a fifth of the host's CPU under ingestion, and every byte is copied again by the host, its
//! write-back log and SQLite. In this form the record is about 400 bytes and the buckets and
//! totals about 150, written and read field by field.
//!
//! The form: the byte [`FORM_V1`], then the fields in declaration order — unsigned integers as
//! LEB128 varints, text as its length and UTF-8 bytes, a decimal as one byte of scale (bit 7:
//! negative, so `-0.00` stays `-0.00`) and its mantissa's magnitude as a varint, a sequence as
//! its length and its items, an option as 0 or 1 and the value. A JSON document starts with `{`,
//! never with [`FORM_V1`]: [`decode`] reads both, so values stored before this form stay
//! readable. Enumerations are stored as the tags `compact_enum!` and [`Step`]'s `write` give
//! them, never reused. A build from before this form cannot read a value in it: deploying this
//! form is one-way for a tenant's stored usage.

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use std::fmt;

use crate::catalog::tariff::{RatingUnit, TierMode};
use crate::money::{Currency, Money, RoundingRule};
use crate::rating::{Basis, Bucket, Buckets, Direction, Name, RatedRecord, RawUsage, Service, Step, UsageRecord};
use crate::usage::mediation::UsageStatus;
use crate::usage::{ServiceTotal, UsageDoc, UsageTotals};
use chrono::{DateTime, Utc};

/// First byte of a value in this form (version 1).
pub const FORM_V1: u8 = 0x01;

/// Most items or bytes one length prefix may announce: a stored document is far smaller, and a
/// corrupt length must not make a reader allocate gigabytes before it finds out.
pub const LEN_MAX: u64 = 1 << 20;

/// Why stored bytes do not read as the document asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The bytes end inside a field.
    Truncated,
    /// A varint longer than its type, or a length above [`LEN_MAX`].
    TooLarge,
    /// A tag outside its enumeration (what it tags, the tag).
    BadTag(&'static str, u64),
    /// Text that is not UTF-8.
    NotUtf8,
    /// A decimal whose scale or mantissa is out of range.
    BadDecimal,
    /// A currency code that does not parse.
    BadCurrency,
    /// An instant out of range.
    BadTime,
    /// Bytes left after the document (how many).
    Trailing(usize),
    /// A JSON document (the legacy form) that does not parse as the type (serde's message).
    Json(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "the value ends inside a field"),
            Self::TooLarge => write!(f, "a number or length is out of range"),
            Self::BadTag(what, tag) => write!(f, "{tag} is not a {what}"),
            Self::NotUtf8 => write!(f, "text is not UTF-8"),
            Self::BadDecimal => write!(f, "a decimal is out of range"),
            Self::BadCurrency => write!(f, "a currency code is not valid"),
            Self::BadTime => write!(f, "an instant is out of range"),
            Self::Trailing(n) => write!(f, "{n} bytes follow the document"),
            Self::Json(e) => write!(f, "JSON: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// A type with a compact stored form.
pub trait Compact: Sized {
    /// Appends `self`.
    fn write(&self, w: &mut Writer);
    /// Reads one value; an error leaves the reader at an unspecified position.
    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError>;
}

/// `v` in the compact form, [`FORM_V1`] first.
pub fn encode<T: Compact>(v: &T) -> Vec<u8> {
    // A rated record takes about 430 bytes: one allocation for most values.
    let mut w = Writer { buf: Vec::with_capacity(512) };
    w.buf.push(FORM_V1);
    v.write(&mut w);
    w.buf
}

/// A stored value in either form: the compact one ([`FORM_V1`] first, every byte read) or JSON.
pub fn decode<T: Compact + DeserializeOwned>(bytes: &[u8]) -> Result<T, ReadError> {
    match bytes.split_first() {
        Some((&FORM_V1, body)) => {
            let mut r = Reader { rest: body };
            let v = T::read(&mut r)?;
            match r.rest.len() {
                0 => Ok(v),
                n => Err(ReadError::Trailing(n)),
            }
        }
        _ => serde_json::from_slice(bytes).map_err(|e| ReadError::Json(e.to_string())),
    }
}

/// Appends fields in the compact form.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An unsigned integer, LEB128 (in 64-bit arithmetic: most fields are counts and units, and
    /// 128-bit shifts are several instructions each on wasm32).
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn u128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A flag, one byte.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8)
    }

    /// Text: its length, then its bytes.
    pub fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A decimal, exactly (its scale and the sign of a zero included).
    pub fn decimal(&mut self, d: Decimal) {
        // The scale is at most 28 (rust_decimal's limit), so bit 7 is free for the sign.
        debug_assert!(d.scale() <= 28);
        self.buf.push(d.scale() as u8 | ((d.is_sign_negative() as u8) << 7));
        self.u128(d.mantissa().unsigned_abs());
    }
}

/// Reads fields of the compact form.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, ReadError> {
        let (&b, rest) = self.rest.split_first().ok_or(ReadError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    fn u128(&mut self, bits_max: u32) -> Result<u128, ReadError> {
        let mut v: u128 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            let part = (b & 0x7f) as u128;
            if shift >= bits_max || (shift > 0 && part >> (bits_max - shift).min(127) != 0) {
                return Err(ReadError::TooLarge);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// An unsigned integer (64-bit arithmetic, as [`Writer::u64`]; the same bounds as `u128(64)`).
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            let part = (b & 0x7f) as u64;
            if shift >= 64 || (shift > 0 && part >> (64 - shift) != 0) {
                return Err(ReadError::TooLarge);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// A length prefix (at most [`LEN_MAX`]).
    pub fn length(&mut self) -> Result<usize, ReadError> {
        match self.u64()? {
            n if n <= LEN_MAX => Ok(n as usize),
            _ => Err(ReadError::TooLarge),
        }
    }

    /// A flag.
    pub fn bool(&mut self) -> Result<bool, ReadError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(ReadError::BadTag("flag", t as u64)),
        }
    }

    /// Text.
    pub fn str(&mut self) -> Result<&'a str, ReadError> {
        let n = self.length()?;
        if n > self.rest.len() {
            return Err(ReadError::Truncated);
        }
        let (text, rest) = self.rest.split_at(n);
        self.rest = rest;
        std::str::from_utf8(text).map_err(|_| ReadError::NotUtf8)
    }

    /// Owned text.
    pub fn string(&mut self) -> Result<String, ReadError> {
        self.str().map(str::to_string)
    }

    /// A decimal.
    pub fn decimal(&mut self) -> Result<Decimal, ReadError> {
        let head = self.byte()?;
        let mantissa = self.u128(96)?;
        let mut d = Decimal::try_from_i128_with_scale(mantissa as i128, (head & 0x7f) as u32)
            .map_err(|_| ReadError::BadDecimal)?;
        d.set_sign_negative(head & 0x80 != 0);
        Ok(d)
    }
}

impl<T: Compact> Compact for Vec<T> {
    fn write(&self, w: &mut Writer) {
        w.u64(self.len() as u64);
        for x in self {
            x.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let n = r.length()?;
        // Each item takes at least one byte: a length the bytes cannot hold is refused before
        // anything is allocated for it.
        if n > r.rest.len() {
            return Err(ReadError::Truncated);
        }
        (0..n).map(|_| T::read(r)).collect()
    }
}

impl<T: Compact> Compact for Option<T> {
    fn write(&self, w: &mut Writer) {
        w.bool(self.is_some());
        if let Some(x) = self {
            x.write(w);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(if r.bool()? { Some(T::read(r)?) } else { None })
    }
}

impl Compact for String {
    fn write(&self, w: &mut Writer) {
        w.str(self)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        r.string()
    }
}

impl Compact for Currency {
    fn write(&self, w: &mut Writer) {
        w.str(self.code())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Currency::new(r.str()?).map_err(|_| ReadError::BadCurrency)
    }
}

impl Compact for Money {
    fn write(&self, w: &mut Writer) {
        w.decimal(self.amount);
        self.currency.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(Money { amount: r.decimal()?, currency: Currency::read(r)? })
    }
}

impl Compact for Bucket {
    fn write(&self, w: &mut Writer) {
        self.service.write(w);
        w.u64(self.initial_base_units);
        w.u64(self.used_base_units);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(Bucket { service: Service::read(r)?, initial_base_units: r.u64()?, used_base_units: r.u64()? })
    }
}

impl Compact for Buckets {
    fn write(&self, w: &mut Writer) {
        w.str(&self.tariff_id);
        self.allowances.write(w);
        w.decimal(self.tier_units);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(Buckets { tariff_id: r.string()?, allowances: Vec::read(r)?, tier_units: r.decimal()? })
    }
}

impl Compact for ServiceTotal {
    fn write(&self, w: &mut Writer) {
        self.service.write(w);
        w.u64(self.records);
        w.u64(self.quantity_base_units);
        w.u64(self.allowance_base_units);
        self.net.write(w);
        self.tax.write(w);
        self.tax_category.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(ServiceTotal {
            service: Service::read(r)?,
            records: r.u64()?,
            quantity_base_units: r.u64()?,
            allowance_base_units: r.u64()?,
            net: Money::read(r)?,
            tax: Money::read(r)?,
            tax_category: Option::read(r)?,
        })
    }
}

impl Compact for UsageTotals {
    fn write(&self, w: &mut Writer) {
        self.services.write(w);
        w.bool(self.complete);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(UsageTotals { services: Vec::read(r)?, complete: r.bool()? })
    }
}

/// Implements [`Compact`] for an enumeration of unit variants: each variant's tag, written once
/// here, is its stored form (a tag, once stored, keeps its meaning; new variants take new tags).
macro_rules! compact_enum {
    ($ty:ty, $what:literal, { $($tag:literal => $variant:ident),+ $(,)? }) => {
        impl Compact for $ty {
            fn write(&self, w: &mut Writer) {
                w.u64(match self { $(<$ty>::$variant => $tag,)+ })
            }

            fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
                match r.u64()? {
                    $($tag => Ok(<$ty>::$variant),)+
                    t => Err(ReadError::BadTag($what, t)),
                }
            }
        }
    };
}

compact_enum!(Service, "service", { 0 => Voice, 1 => Sms, 2 => Data });
compact_enum!(Direction, "direction", { 0 => Outgoing, 1 => Incoming, 2 => Transit });
compact_enum!(UsageStatus, "usage status", {
    0 => Received, 1 => Rejected, 2 => Recycled, 3 => Guided, 4 => Rated, 5 => Rerated, 6 => Billed,
});
compact_enum!(Basis, "rate source", { 0 => RoamingZone, 1 => OnNet, 2 => DestinationGroup, 3 => Period, 4 => Base });
compact_enum!(RatingUnit, "rating unit", {
    0 => Second, 1 => Minute, 2 => Event, 3 => Byte, 4 => Kilobyte, 5 => Megabyte, 6 => Gigabyte,
});
compact_enum!(TierMode, "tier mode", { 0 => Tiered, 1 => Volume });
compact_enum!(RoundingRule, "rounding rule", { 0 => HalfEven, 1 => HalfUp, 2 => Down, 3 => Up });

impl Compact for bool {
    fn write(&self, w: &mut Writer) {
        w.bool(*self)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        r.bool()
    }
}

impl Compact for u64 {
    fn write(&self, w: &mut Writer) {
        w.u64(*self)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        r.u64()
    }
}

impl Compact for u16 {
    fn write(&self, w: &mut Writer) {
        w.u64(*self as u64)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        u16::try_from(r.u64()?).map_err(|_| ReadError::TooLarge)
    }
}

impl Compact for Decimal {
    fn write(&self, w: &mut Writer) {
        w.decimal(*self)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        r.decimal()
    }
}

impl Compact for Name {
    fn write(&self, w: &mut Writer) {
        w.str(self.as_str())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(Name::new(r.str()?))
    }
}

/// An instant: seconds since the epoch (zigzag, so times before 1970 stay short) and
/// nanoseconds (a leap second's are 1e9 or more, as chrono keeps them).
impl Compact for DateTime<Utc> {
    fn write(&self, w: &mut Writer) {
        let secs = self.timestamp();
        w.u64(((secs << 1) ^ (secs >> 63)) as u64);
        w.u64(self.timestamp_subsec_nanos() as u64);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let z = r.u64()?;
        let secs = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let nanos = u32::try_from(r.u64()?).map_err(|_| ReadError::BadTime)?;
        DateTime::from_timestamp(secs, nanos).ok_or(ReadError::BadTime)
    }
}

/// A record as received, kept only by held records (rejected, recycled), which are few: its
/// JSON, as text.
impl Compact for RawUsage {
    fn write(&self, w: &mut Writer) {
        w.str(&serde_json::to_string(self).expect("a raw record is plain strings and numbers"))
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        serde_json::from_str(r.str()?).map_err(|e| ReadError::Json(e.to_string()))
    }
}

impl Compact for UsageRecord {
    fn write(&self, w: &mut Writer) {
        w.str(&self.record_id);
        w.str(&self.subscriber);
        self.service.write(w);
        self.start.write(w);
        w.u64(self.quantity);
        self.called_number.write(w);
        self.apn.write(w);
        self.visited_network.write(w);
        w.bool(self.on_net);
        self.direction.write(w);
        self.carrier.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(UsageRecord {
            record_id: r.string()?,
            subscriber: r.string()?,
            service: Service::read(r)?,
            start: DateTime::read(r)?,
            quantity: r.u64()?,
            called_number: Option::read(r)?,
            apn: Option::read(r)?,
            visited_network: Option::read(r)?,
            on_net: r.bool()?,
            direction: Option::read(r)?,
            carrier: Option::read(r)?,
        })
    }
}

/// Writes each field with its [`Compact`] form, in order.
macro_rules! write_all {
    ($w:expr; $($field:expr),* $(,)?) => {{ $( Compact::write($field, $w); )* }};
}

impl Compact for Step {
    fn write(&self, w: &mut Writer) {
        match self {
            Step::RoamingZone { zone, allowances_apply } => {
                w.u64(0);
                write_all!(w; zone, allowances_apply);
            }
            Step::OutsideRoamingZones { visited_network } => {
                w.u64(1);
                write_all!(w; visited_network);
            }
            Step::Destination { group, prefix } => {
                w.u64(2);
                write_all!(w; group, prefix);
            }
            Step::OnNet => w.u64(3),
            Step::Rounding { measured_base_units, charged_base_units, first_increment, next_increment } => {
                w.u64(4);
                write_all!(w; measured_base_units, charged_base_units, first_increment, next_increment);
            }
            Step::Part { period, start, base_units } => {
                w.u64(5);
                write_all!(w; period, start, base_units);
            }
            Step::Allowance { allowance, service, base_units, remaining_base_units } => {
                w.u64(6);
                write_all!(w; allowance, service, base_units, remaining_base_units);
            }
            Step::Free { base_units, basis } => {
                w.u64(7);
                write_all!(w; base_units, basis);
            }
            Step::Rate { base_units, basis, rate, rating_unit, amount } => {
                w.u64(8);
                write_all!(w; base_units, basis, rate, rating_unit, amount);
            }
            Step::Overage { allowance, base_units, rate, amount } => {
                w.u64(9);
                write_all!(w; allowance, base_units, rate, amount);
            }
            Step::Blocked { allowance, base_units } => {
                w.u64(10);
                write_all!(w; allowance, base_units);
            }
            Step::Tier { mode, units_before, units, amount } => {
                w.u64(11);
                write_all!(w; mode, units_before, units, amount);
            }
            Step::Rounded { rule, unrounded, net } => {
                w.u64(12);
                write_all!(w; rule, unrounded, net);
            }
            Step::Tax { tax_rate, category, percent, amount } => {
                w.u64(13);
                write_all!(w; tax_rate, category, percent, amount);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(match r.u64()? {
            0 => Step::RoamingZone { zone: Name::read(r)?, allowances_apply: r.bool()? },
            1 => Step::OutsideRoamingZones { visited_network: r.string()? },
            2 => Step::Destination { group: Name::read(r)?, prefix: Name::read(r)? },
            3 => Step::OnNet,
            4 => Step::Rounding {
                measured_base_units: r.u64()?,
                charged_base_units: r.u64()?,
                first_increment: r.u64()?,
                next_increment: r.u64()?,
            },
            5 => Step::Part { period: Option::read(r)?, start: DateTime::read(r)?, base_units: r.u64()? },
            6 => Step::Allowance {
                allowance: u16::read(r)?,
                service: Service::read(r)?,
                base_units: r.u64()?,
                remaining_base_units: r.u64()?,
            },
            7 => Step::Free { base_units: r.u64()?, basis: Basis::read(r)? },
            8 => Step::Rate {
                base_units: r.u64()?,
                basis: Basis::read(r)?,
                rate: r.decimal()?,
                rating_unit: Option::read(r)?,
                amount: r.decimal()?,
            },
            9 => Step::Overage {
                allowance: u16::read(r)?,
                base_units: r.u64()?,
                rate: r.decimal()?,
                amount: r.decimal()?,
            },
            10 => Step::Blocked { allowance: u16::read(r)?, base_units: r.u64()? },
            11 => Step::Tier {
                mode: TierMode::read(r)?,
                units_before: r.decimal()?,
                units: r.decimal()?,
                amount: r.decimal()?,
            },
            12 => Step::Rounded { rule: RoundingRule::read(r)?, unrounded: r.decimal()?, net: r.decimal()? },
            13 => Step::Tax {
                tax_rate: Name::read(r)?,
                category: Name::read(r)?,
                percent: r.decimal()?,
                amount: r.decimal()?,
            },
            t => return Err(ReadError::BadTag("rating step", t)),
        })
    }
}

impl Compact for RatedRecord {
    fn write(&self, w: &mut Writer) {
        w.str(&self.record_id);
        write_all!(w; &self.tariff_id, &self.tariff_version, &self.service);
        for units in [
            self.measured_base_units,
            self.charged_base_units,
            self.allowance_base_units,
            self.overage_base_units,
            self.blocked_base_units,
        ] {
            w.u64(units);
        }
        write_all!(w; &self.net, &self.tax, &self.gross, &self.steps);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(RatedRecord {
            record_id: r.string()?,
            tariff_id: Name::read(r)?,
            tariff_version: Name::read(r)?,
            service: Service::read(r)?,
            measured_base_units: r.u64()?,
            charged_base_units: r.u64()?,
            allowance_base_units: r.u64()?,
            overage_base_units: r.u64()?,
            blocked_base_units: r.u64()?,
            net: Money::read(r)?,
            tax: Money::read(r)?,
            gross: Money::read(r)?,
            steps: Vec::read(r)?,
        })
    }
}

impl Compact for UsageDoc {
    fn write(&self, w: &mut Writer) {
        w.str(&self.id);
        self.status.write(w);
        w.str(&self.fingerprint);
        write_all!(w; &self.raw, &self.record, &self.reason, &self.product_id, &self.account_id);
        write_all!(w; &self.customer_id, &self.partner_id, &self.period, &self.rated, &self.previous);
        write_all!(w; &self.tax_percent, &self.received_at, &self.rated_at);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        Ok(UsageDoc {
            id: r.string()?,
            status: UsageStatus::read(r)?,
            fingerprint: r.string()?,
            raw: Option::read(r)?,
            record: Option::read(r)?,
            reason: Option::read(r)?,
            product_id: Option::read(r)?,
            account_id: Option::read(r)?,
            customer_id: Option::read(r)?,
            partner_id: Option::read(r)?,
            period: Option::read(r)?,
            rated: Option::read(r)?,
            previous: Option::read(r)?,
            tax_percent: Option::read(r)?,
            received_at: r.string()?,
            rated_at: Option::read(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decimal() -> impl Strategy<Value = Decimal> {
        (any::<u128>(), 0u32..=28, any::<bool>()).prop_map(|(m, scale, negative)| {
            let mut d = Decimal::from_i128_with_scale((m % (1u128 << 96)) as i128, scale);
            d.set_sign_negative(negative);
            d
        })
    }

    fn service() -> impl Strategy<Value = Service> {
        prop::sample::select(Service::ALL.to_vec())
    }

    fn money() -> impl Strategy<Value = Money> {
        (decimal(), prop::sample::select(vec!["EUR", "USD", "JPY", "BHD"]))
            .prop_map(|(amount, c)| Money::new(amount, Currency::new(c).unwrap()))
    }

    fn buckets() -> impl Strategy<Value = Buckets> {
        let bucket = (service(), any::<u64>(), any::<u64>()).prop_map(|(service, i, u)| Bucket {
            service,
            initial_base_units: i,
            used_base_units: u,
        });
        (".{0,40}", prop::collection::vec(prop::option::of(bucket), 0..5), decimal())
            .prop_map(|(tariff_id, allowances, tier_units)| Buckets { tariff_id, allowances, tier_units })
    }

    fn totals() -> impl Strategy<Value = UsageTotals> {
        let service_total =
            (service(), any::<u64>(), any::<u64>(), any::<u64>(), money(), money(), prop::option::of(".{0,20}"))
                .prop_map(|(service, records, q, a, net, tax, tax_category)| ServiceTotal {
                    service,
                    records,
                    quantity_base_units: q,
                    allowance_base_units: a,
                    net,
                    tax,
                    tax_category,
                });
        (prop::collection::vec(service_total, 0..4), any::<bool>())
            .prop_map(|(services, complete)| UsageTotals { services, complete })
    }

    /// The value reads back equal, and identical as JSON (so a decimal's scale and the sign of
    /// a zero, which `==` ignores, survive too); every shorter prefix of it is refused.
    fn round_trips<T>(v: &T)
    where
        T: Compact + DeserializeOwned + serde::Serialize + PartialEq + fmt::Debug,
    {
        let bytes = encode(v);
        assert_eq!(bytes[0], FORM_V1);
        let back: T = decode(&bytes).unwrap();
        assert_eq!(&back, v);
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(v).unwrap());
        for cut in 1..bytes.len() {
            assert!(decode::<T>(&bytes[..cut]).is_err(), "a prefix of {cut} bytes read as a value");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode::<T>(&longer).unwrap_err(), ReadError::Trailing(1));
    }

    fn time() -> impl Strategy<Value = DateTime<Utc>> {
        // Years -9999 to 9999, any nanosecond; and a leap second (nanoseconds past 1e9 at :59).
        prop_oneof![
            (-377_705_116_800i64..253_402_300_800, 0u32..1_000_000_000)
                .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap()),
            (0i64..1_000_000, 1_000_000_000u32..2_000_000_000).prop_map(|(m, n)| DateTime::from_timestamp(
                m * 60 + 59,
                n
            )
            .unwrap()),
        ]
    }

    fn name() -> impl Strategy<Value = Name> {
        ".{0,12}".prop_map(|s: String| Name::new(&s))
    }

    fn step() -> impl Strategy<Value = Step> {
        let basis = prop::sample::select(vec![
            Basis::RoamingZone,
            Basis::OnNet,
            Basis::DestinationGroup,
            Basis::Period,
            Basis::Base,
        ]);
        let unit = prop::option::of(prop::sample::select(vec![
            RatingUnit::Second,
            RatingUnit::Minute,
            RatingUnit::Event,
            RatingUnit::Byte,
            RatingUnit::Kilobyte,
            RatingUnit::Megabyte,
            RatingUnit::Gigabyte,
        ]));
        let rule = prop::sample::select(vec![
            RoundingRule::HalfEven,
            RoundingRule::HalfUp,
            RoundingRule::Down,
            RoundingRule::Up,
        ]);
        let mode = prop::sample::select(vec![TierMode::Tiered, TierMode::Volume]);
        prop_oneof![
            (name(), any::<bool>()).prop_map(|(zone, allowances_apply)| Step::RoamingZone { zone, allowances_apply }),
            ".{0,8}".prop_map(|visited_network| Step::OutsideRoamingZones { visited_network }),
            (name(), name()).prop_map(|(group, prefix)| Step::Destination { group, prefix }),
            Just(Step::OnNet),
            any::<[u64; 4]>().prop_map(|[a, b, c, d]| Step::Rounding {
                measured_base_units: a,
                charged_base_units: b,
                first_increment: c,
                next_increment: d
            }),
            (prop::option::of(name()), time(), any::<u64>()).prop_map(|(period, start, base_units)| Step::Part {
                period,
                start,
                base_units
            }),
            (any::<u16>(), service(), any::<u64>(), any::<u64>()).prop_map(|(allowance, service, b, r)| {
                Step::Allowance { allowance, service, base_units: b, remaining_base_units: r }
            }),
            (any::<u64>(), basis.clone()).prop_map(|(base_units, basis)| Step::Free { base_units, basis }),
            (any::<u64>(), basis, decimal(), unit, decimal()).prop_map(
                |(base_units, basis, rate, rating_unit, amount)| {
                    Step::Rate { base_units, basis, rate, rating_unit, amount }
                }
            ),
            (any::<u16>(), any::<u64>(), decimal(), decimal()).prop_map(|(allowance, base_units, rate, amount)| {
                Step::Overage { allowance, base_units, rate, amount }
            }),
            (any::<u16>(), any::<u64>()).prop_map(|(allowance, base_units)| Step::Blocked { allowance, base_units }),
            (mode, decimal(), decimal(), decimal()).prop_map(|(mode, units_before, units, amount)| Step::Tier {
                mode,
                units_before,
                units,
                amount
            }),
            (rule, decimal(), decimal()).prop_map(|(rule, unrounded, net)| Step::Rounded { rule, unrounded, net }),
            (name(), name(), decimal(), decimal()).prop_map(|(tax_rate, category, percent, amount)| Step::Tax {
                tax_rate,
                category,
                percent,
                amount
            }),
        ]
    }

    fn rated() -> impl Strategy<Value = RatedRecord> {
        (
            ".{0,20}",
            name(),
            name(),
            service(),
            any::<[u64; 5]>(),
            money(),
            money(),
            money(),
            prop::collection::vec(step(), 0..8),
        )
            .prop_map(|(record_id, tariff_id, tariff_version, service, u, net, tax, gross, steps)| {
                RatedRecord {
                    record_id,
                    tariff_id,
                    tariff_version,
                    service,
                    measured_base_units: u[0],
                    charged_base_units: u[1],
                    allowance_base_units: u[2],
                    overage_base_units: u[3],
                    blocked_base_units: u[4],
                    net,
                    tax,
                    gross,
                    steps,
                }
            })
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(".{0,16}")
    }

    fn record() -> impl Strategy<Value = UsageRecord> {
        let direction =
            prop::option::of(prop::sample::select(vec![Direction::Outgoing, Direction::Incoming, Direction::Transit]));
        (
            (".{0,20}", ".{0,16}", service(), time(), any::<u64>()),
            (text(), text(), text(), any::<bool>(), direction, text()),
        )
            .prop_map(
                |(
                    (record_id, subscriber, service, start, quantity),
                    (called, apn, visited, on_net, direction, carrier),
                )| {
                    UsageRecord {
                        record_id,
                        subscriber,
                        service,
                        start,
                        quantity,
                        called_number: called,
                        apn,
                        visited_network: visited,
                        on_net,
                        direction,
                        carrier,
                    }
                },
            )
    }

    fn raw() -> impl Strategy<Value = RawUsage> {
        (".{0,10}", ".{0,10}", prop::option::of(any::<i64>()), text(), any::<bool>()).prop_map(
            |(record_id, start_time, duration, called_number, on_net)| RawUsage {
                record_id,
                start_time,
                duration,
                called_number,
                on_net,
                ..RawUsage::default()
            },
        )
    }

    fn usage_doc() -> impl Strategy<Value = UsageDoc> {
        let status = prop::sample::select(UsageStatus::ALL.to_vec());
        (
            (".{0,20}", status, ".{0,16}", prop::option::of(raw()), prop::option::of(record()), text()),
            (text(), text(), text(), text(), text()),
            (prop::option::of(rated()), prop::option::of(rated()), text(), ".{0,24}", text()),
        )
            .prop_map(
                |(
                    (id, status, fingerprint, raw, record, reason),
                    (product_id, account_id, customer_id, partner_id, period),
                    (rated, previous, tax_percent, received_at, rated_at),
                )| UsageDoc {
                    id,
                    status,
                    fingerprint,
                    raw,
                    record,
                    reason,
                    product_id,
                    account_id,
                    customer_id,
                    partner_id,
                    period,
                    rated,
                    previous,
                    tax_percent,
                    received_at,
                    rated_at,
                },
            )
    }

    proptest! {
        #[test]
        fn usage_records_round_trip(v in usage_doc()) {
            round_trips(&v);
        }

        #[test]
        fn the_json_of_a_usage_record_written_before_reads_the_same(v in usage_doc()) {
            prop_assert_eq!(decode::<UsageDoc>(&serde_json::to_vec(&v).unwrap()).unwrap(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic_a_usage_record(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut stored = vec![FORM_V1];
            stored.extend(bytes);
            let _ = decode::<UsageDoc>(&stored);
        }

        #[test]
        fn buckets_round_trip(v in buckets()) {
            round_trips(&v);
        }

        #[test]
        fn totals_round_trip(v in totals()) {
            round_trips(&v);
        }

        #[test]
        fn the_json_written_before_reads_the_same(v in totals(), b in buckets()) {
            let json = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(decode::<UsageTotals>(&json).unwrap(), v);
            let json = serde_json::to_vec(&b).unwrap();
            prop_assert_eq!(decode::<Buckets>(&json).unwrap(), b);
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut stored = vec![FORM_V1];
            stored.extend(bytes);
            let _ = decode::<UsageTotals>(&stored);
            let _ = decode::<Buckets>(&stored);
        }
    }

    #[test]
    fn decimals_keep_their_scale_sign_and_range() {
        for text in
            ["0", "-0.00", "12.17", "-0.000001", "79228162514264337593543950335", "-7.9228162514264337593543950335"]
        {
            let d: Decimal = text.parse().unwrap();
            let mut w = Writer { buf: Vec::new() };
            w.decimal(d);
            let back = Reader { rest: &w.buf }.decimal().unwrap();
            assert_eq!(back.to_string(), d.to_string(), "{text}");
        }
        // A scale above 28 and a mantissa of 97 bits are refused.
        assert_eq!(Reader { rest: &[29, 1] }.decimal(), Err(ReadError::BadDecimal));
        let mut w = Writer { buf: vec![0] };
        w.u128(1 << 96);
        assert_eq!(Reader { rest: &w.buf }.decimal(), Err(ReadError::TooLarge));
    }

    #[test]
    fn varints_refuse_what_their_type_cannot_hold() {
        let mut w = Writer { buf: Vec::new() };
        w.u64(u64::MAX);
        assert_eq!(Reader { rest: &w.buf }.u64(), Ok(u64::MAX));
        let mut w = Writer { buf: Vec::new() };
        w.u128(u64::MAX as u128 + 1);
        assert_eq!(Reader { rest: &w.buf }.u64(), Err(ReadError::TooLarge));
        // A length above LEN_MAX, and a count the remaining bytes cannot hold.
        let mut w = Writer { buf: Vec::new() };
        w.u64(LEN_MAX + 1);
        assert_eq!(Reader { rest: &w.buf }.length(), Err(ReadError::TooLarge));
        assert_eq!(Vec::<Bucket>::read(&mut Reader { rest: &[5, 0] }), Err(ReadError::Truncated));
    }

    #[test]
    fn a_rated_record_is_a_third_of_its_json() {
        let json = br#"{"id":"b86ac76-1","status":"rated","fingerprint":"f43df16d384fee4d","record":{"recordId":"b86ac76-1","subscriber":"+33610000847","service":"voice","start":"2026-10-14T00:15:27Z","quantity":19,"calledNumber":"+33616097939"},"productId":"03e17175-1b42-4196-bf29-624ab49ecfd5","accountId":"f1c42355-2dc0-4e80-871a-ae1b32971fbc","customerId":"1ee971e9-3589-4146-9219-b182039d758c","period":"2026-10-01","rated":{"recordId":"b86ac76-1","tariffId":"tariff-mobile-m","tariffVersion":"2026-11-27T17:36:36.413Z","service":"voice","measuredBaseUnits":19,"chargedBaseUnits":60,"allowanceBaseUnits":60,"overageBaseUnits":0,"blockedBaseUnits":0,"net":{"amount":"0.00","currency":"EUR"},"tax":{"amount":"0.00","currency":"EUR"},"gross":{"amount":"0.00","currency":"EUR"},"steps":[{"step":"destination","group":"Domestic mobile","prefix":"336"},{"step":"rounding","measuredBaseUnits":19,"chargedBaseUnits":60,"firstIncrement":60,"nextIncrement":1},{"step":"part","period":null,"start":"2026-10-14T00:15:27Z","baseUnits":60},{"step":"allowance","allowance":0,"service":"voice","baseUnits":60,"remainingBaseUnits":29940},{"step":"rounded","rule":"halfEven","unrounded":"0","net":"0.00"},{"step":"tax","taxRate":"tax-standard","category":"standard","percent":"20","amount":"0.00"}]},"taxPercent":"20","receivedAt":"2026-11-27T17:37:34.295Z","ratedAt":"2026-11-27T17:37:34.295Z"}"#;
        let doc: UsageDoc = decode(json).unwrap();
        let compact = encode(&doc);
        assert!(compact.len() * 3 < json.len(), "{} bytes against {} of JSON", compact.len(), json.len());
        let back: UsageDoc = decode(&compact).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), json.to_vec());
    }

    #[test]
    fn a_state_is_a_fraction_of_its_json() {
        let json = br#"{"tariffId":"tariff-mobile-m","allowances":[{"service":"voice","initialBaseUnits":30000,"usedBaseUnits":3202},{"service":"sms","initialBaseUnits":1000,"usedBaseUnits":5},{"service":"data","initialBaseUnits":10000000000,"usedBaseUnits":9753601}],"tierUnits":"0"}"#;
        let b: Buckets = decode(json).unwrap();
        let compact = encode(&b);
        assert!(compact.len() * 4 < json.len(), "{} bytes against {} of JSON", compact.len(), json.len());
        assert_eq!(decode::<Buckets>(&compact).unwrap(), b);
    }
}
