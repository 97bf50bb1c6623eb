//! The rating kernel: normalised usage records rated against a prepared tariff, with allowance
//! buckets, time-period splitting, tax and an explanation of every charge. Pure (no I/O), so the
//! usage component stays thin: parse, load buckets, call [`PreparedTariff::rate`], store with
//! compare-and-swap. Tests: `cargo test -p bss-domain rating`; speed: `cargo bench -p bss-bench --bench rating`.
//!
//! Design decisions:
//! - The catalog's [`Tariff`](crate::catalog::tariff::Tariff) is the source of truth; a
//!   [`PreparedTariff`] only indexes it (a digit trie of destination prefixes, sorted roaming
//!   networks, periods as seconds of the day) so the per-record path does no parsing and few
//!   allocations. Property tests check the index answers exactly like the tariff's own lookups.
//! - Quantities are integers in base units (seconds, bytes, events); money is
//!   `rust_decimal::Decimal`, summed unrounded over a record's parts and rounded once per record
//!   with the context's named [`RoundingRule`]; the tax is computed on the rounded net and rounded
//!   once. Totals are sums of rounded records.
//! - Rounding (`firstIncrement`/`nextIncrement`) applies to the whole record, before splitting;
//!   the rounded-up extra is added to the last part, so parts always sum to the measured duration
//!   plus the rounding shown in the [`Step::Rounding`] step.
//! - A voice record crossing a period boundary (local time in the context's time zone) is split
//!   and each part rated at its period's rate. SMS and data are rated at their start time.
//! - Rate precedence is the tariff's ([`Tariff::unit_rate`](crate::catalog::tariff::Tariff::unit_rate)):
//!   roaming zone rate, on-net rate, destination group rate, period rate, base rate; tiers when
//!   none applies (graduated: the band of each unit of the period's running total; volume: the
//!   band the running total reaches, never retroactively).
//! - Allowances (buckets) are consumed in tariff order, at home, in a roaming zone with
//!   `allowancesApply`, and to destination groups that do not opt out; zero-rated (free) usage
//!   never consumes them. Past the last allowance of the service its overage applies: a charge
//!   per the allowance's unit, or a block (the blocked quantity is shown, never charged).
//! - [`Buckets`] is a plain value: the component loads it, rating mutates it (and leaves it
//!   untouched on error), the component stores it with compare-and-swap. Used quantities are
//!   unsigned and capped at the initial amount, so a bucket never goes negative.

pub mod normalise;
pub mod prepared;
pub mod rerate;
#[cfg(test)]
mod tests;

pub use normalise::{NormaliseConfig, RawUsage, e164, normalise};
pub use prepared::PreparedTariff;
pub use rerate::{ChargeDelta, charge_delta, rerate};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

use crate::catalog::tariff::{Dimension, RatingUnit, TierMode};
use crate::catalog::tax::TaxRate;
use crate::money::{Currency, Money, RoundingRule};

/// Longest record id, subscriber, APN or carrier, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest rated duration of one record (48 h: mediation cuts longer calls into partial records).
pub const MAX_DURATION_SECS: u64 = 172_800;
/// Largest volume of one record (10 TB).
pub const MAX_VOLUME_BYTES: u64 = 10_000_000_000_000;
/// Most events in one record.
pub const MAX_EVENTS: u64 = 100_000;
/// Most records in one batch.
pub const MAX_BATCH: usize = 1_000_000;

/// A shared, cheaply cloned name (period, group, zone...) carried by explanation steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// A name.
    pub fn new(s: &str) -> Name {
        Name(Arc::from(s))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        String::deserialize(d).map(|s| Name(Arc::from(s)))
    }
}

/// The service of a usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// A call, measured in seconds.
    Voice,
    /// A message, counted in events.
    Sms,
    /// A data session, measured in bytes.
    Data,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 3] = [Service::Voice, Service::Sms, Service::Data];

    /// The name an allowance's `service` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Voice => "voice",
            Service::Sms => "sms",
            Service::Data => "data",
        }
    }

    /// The service named `s`.
    pub fn parse(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// What its quantity measures.
    pub fn dimension(self) -> Dimension {
        match self {
            Service::Voice => Dimension::Time,
            Service::Sms => Dimension::Events,
            Service::Data => Dimension::Data,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Direction of a wholesale (interconnect) record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From our network to the partner (we pay termination).
    Outgoing,
    /// From the partner into our network (we bill termination).
    Incoming,
    /// Through our network.
    Transit,
}

/// A normalised usage record: what rating takes. Built by [`normalise`]. Stored with every
/// rated record, so absent fields are left out rather than written as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Unique id of the record (mediation deduplicates on it).
    pub record_id: String,
    /// The subscriber's MSISDN, E.164 (`+33612345678`).
    pub subscriber: String,
    /// Voice, SMS or data.
    pub service: Service,
    /// Start of the usage, UTC.
    #[serde(serialize_with = "crate::json::utc_time")]
    pub start: DateTime<Utc>,
    /// Seconds (voice), bytes (data) or events (SMS).
    pub quantity: u64,
    /// The called number, E.164 (`+4915112345678`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_number: Option<String>,
    /// The access point name of a data session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apn: Option<String>,
    /// The visited network (MCC-MNC) when roaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visited_network: Option<String>,
    /// The other party is on our own network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_net: bool,
    /// Wholesale direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Wholesale partner carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
}

/// Where a rate came from: the catalog's own [`RateSource`](crate::catalog::tariff::RateSource).
pub use crate::catalog::tariff::RateSource as Basis;

/// One rule that decided part of a charge: the explanation of a rated record, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum Step {
    /// The usage was visited-network roaming in a zone.
    #[serde(rename_all = "camelCase")]
    RoamingZone { zone: Name, allowances_apply: bool },
    /// Roaming in a network of no zone: allowances do not apply.
    #[serde(rename_all = "camelCase")]
    OutsideRoamingZones { visited_network: String },
    /// The called number matched a destination group by its longest prefix.
    #[serde(rename_all = "camelCase")]
    Destination { group: Name, prefix: Name },
    /// The other party is on our network and the tariff has an on-net rate.
    OnNet,
    /// The measured quantity was rounded up.
    #[serde(rename_all = "camelCase")]
    Rounding { measured_base_units: u64, charged_base_units: u64, first_increment: u64, next_increment: u64 },
    /// A part of the usage in one period (absent: no period applies), from `start`.
    #[serde(rename_all = "camelCase")]
    Part {
        period: Option<Name>,
        #[serde(serialize_with = "crate::json::utc_time")]
        start: DateTime<Utc>,
        base_units: u64,
    },
    /// Base units taken from an allowance (its index in the tariff).
    #[serde(rename_all = "camelCase")]
    Allowance { allowance: u16, service: Service, base_units: u64, remaining_base_units: u64 },
    /// Zero-rated usage: free, no allowance consumed.
    #[serde(rename_all = "camelCase")]
    Free { base_units: u64, basis: Basis },
    /// Base units charged at a unit rate, per `ratingUnit` (absent in records rated before steps
    /// named it: the tariff's `ratingUnit`).
    #[serde(rename_all = "camelCase")]
    Rate {
        base_units: u64,
        basis: Basis,
        #[serde(with = "crate::json::decimal_str")]
        rate: Decimal,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating_unit: Option<RatingUnit>,
        #[serde(with = "crate::json::decimal_str")]
        amount: Decimal,
    },
    /// Past the allowance, charged at its overage rate (per the allowance's unit).
    #[serde(rename_all = "camelCase")]
    Overage {
        allowance: u16,
        base_units: u64,
        #[serde(with = "crate::json::decimal_str")]
        rate: Decimal,
        #[serde(with = "crate::json::decimal_str")]
        amount: Decimal,
    },
    /// Past the allowance, blocked: not charged.
    #[serde(rename_all = "camelCase")]
    Blocked { allowance: u16, base_units: u64 },
    /// Charged by the tiers from the period's running total.
    #[serde(rename_all = "camelCase")]
    Tier {
        mode: TierMode,
        #[serde(with = "crate::json::decimal_str")]
        units_before: Decimal,
        #[serde(with = "crate::json::decimal_str")]
        units: Decimal,
        #[serde(with = "crate::json::decimal_str")]
        amount: Decimal,
    },
    /// The net amount rounded once.
    #[serde(rename_all = "camelCase")]
    Rounded {
        rule: RoundingRule,
        #[serde(with = "crate::json::decimal_str")]
        unrounded: Decimal,
        #[serde(with = "crate::json::decimal_str")]
        net: Decimal,
    },
    /// Tax by the price's tax category.
    #[serde(rename_all = "camelCase")]
    Tax {
        tax_rate: Name,
        category: Name,
        #[serde(with = "crate::json::decimal_str")]
        percent: Decimal,
        #[serde(with = "crate::json::decimal_str")]
        amount: Decimal,
    },
}

/// A rated record: the charge and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RatedRecord {
    /// The record rated.
    pub record_id: String,
    /// The tariff that rated it.
    pub tariff_id: Name,
    /// Its version.
    pub tariff_version: Name,
    /// The record's service.
    pub service: Service,
    /// Quantity measured (base units).
    pub measured_base_units: u64,
    /// Quantity after rounding (base units).
    pub charged_base_units: u64,
    /// Taken from allowances.
    pub allowance_base_units: u64,
    /// Charged at an overage rate.
    pub overage_base_units: u64,
    /// Blocked past an allowance (not charged).
    pub blocked_base_units: u64,
    /// Before tax, rounded once.
    pub net: Money,
    /// Tax, rounded once.
    pub tax: Money,
    /// `net + tax`.
    pub gross: Money,
    /// How the charge was decided, in order.
    pub steps: Vec<Step>,
}

/// The tax of the usage price: its category's rate, resolved by the component at the record's
/// time with [`crate::catalog::tax::rate_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taxation {
    /// Shared: a guide's taxation is cloned into the context of every record it rates, and a
    /// tax rate is three strings.
    rate: Arc<TaxRate>,
    id: Name,
    category: Name,
    /// The percentage over 100, so that rating multiplies once instead of dividing per record.
    fraction: Decimal,
}

impl Taxation {
    /// The taxation of a tax rate.
    pub fn new(rate: TaxRate) -> Taxation {
        let (id, category) = (Name::new(&rate.id), Name::new(&rate.tax_category));
        let fraction = rate.rate / Decimal::ONE_HUNDRED;
        Taxation { rate: Arc::new(rate), id, category, fraction }
    }

    /// The tax on a net amount (unrounded): the value of [`TaxRate::tax_on`] (a test holds them
    /// equal), by one multiplication.
    pub fn tax_on(&self, net: Decimal) -> Decimal {
        net * self.fraction
    }

    /// The rate.
    pub fn rate(&self) -> &TaxRate {
        &self.rate
    }
}

/// What rating needs besides the tariff: the subscriber's time zone (periods are local time),
/// the tax, and the one rounding rule.
#[derive(Debug, Clone)]
pub struct RatingContext {
    /// Time zone of the periods.
    pub time_zone: chrono_tz::Tz,
    /// Tax of the usage price (absent: untaxed, e.g. wholesale).
    pub tax: Option<Taxation>,
    /// Rounding of each record's amounts.
    pub rounding: RoundingRule,
}

impl Default for RatingContext {
    fn default() -> Self {
        RatingContext { time_zone: chrono_tz::UTC, tax: None, rounding: RoundingRule::HalfEven }
    }
}

/// One allowance bucket of a bill period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// The allowance's service.
    pub service: Service,
    /// Included base units for the period.
    pub initial_base_units: u64,
    /// Used so far (never above the initial amount).
    pub used_base_units: u64,
}

impl Bucket {
    /// What is left.
    pub fn remaining_base_units(&self) -> u64 {
        self.initial_base_units.saturating_sub(self.used_base_units)
    }
}

/// The usage state of one subscription and tariff for one bill period: allowance buckets (one
/// per tariff allowance of a rated service, in tariff order) and the running total of units
/// rated by tiers. A plain value: stored by the component with compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Buckets {
    /// The tariff they belong to.
    pub tariff_id: String,
    /// Allowance buckets, by tariff allowance index (`None`: not a voice/SMS/data allowance).
    pub allowances: Vec<Option<Bucket>>,
    /// Rating units charged by tiers so far in the period.
    #[serde(with = "crate::json::decimal_str")]
    pub tier_units: Decimal,
}

/// Why a record could not be rated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RatingError {
    /// The tariff is not valid at the record's start.
    TariffNotValidAt { tariff_id: String, at: DateTime<Utc> },
    /// The tariff is still being designed.
    TariffInDesign { tariff_id: String },
    /// The buckets belong to another tariff (or another shape of it).
    BucketsMismatch { tariff_id: String, buckets_tariff_id: String },
    /// Nothing in the tariff rates this usage.
    NoRate { service: Service, reason: &'static str },
    /// A quantity above the limit of its dimension (normalisation refuses it first).
    QuantityTooLarge { quantity: u64, limit: u64 },
    /// A batch above [`MAX_BATCH`] records.
    BatchTooLarge { records: usize },
    /// Two charges of different records or currencies compared.
    NotComparable(String),
    /// An amount out of range.
    Overflow,
}

impl fmt::Display for RatingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RatingError::TariffNotValidAt { tariff_id, at } => write!(f, "tariff {tariff_id} is not valid at {at}"),
            RatingError::TariffInDesign { tariff_id } => write!(f, "tariff {tariff_id} is still in design"),
            RatingError::BucketsMismatch { tariff_id, buckets_tariff_id } => {
                write!(f, "the buckets of tariff {buckets_tariff_id:?} do not fit tariff {tariff_id:?}")
            }
            RatingError::NoRate { service, reason } => {
                write!(f, "no rate for this {} usage: {reason}", service.as_str())
            }
            RatingError::QuantityTooLarge { quantity, limit } => {
                write!(f, "quantity {quantity} is above the limit of {limit} base units")
            }
            RatingError::BatchTooLarge { records } => write!(f, "{records} records: a batch holds at most {MAX_BATCH}"),
            RatingError::NotComparable(m) => f.write_str(m),
            RatingError::Overflow => f.write_str("amount out of range"),
        }
    }
}

impl std::error::Error for RatingError {}

/// The result of rating a batch: each record's outcome, in order, and the total of the rated
/// ones (a sum of rounded records, so it adds up to the cent).
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// One outcome per record.
    pub rated: Vec<Result<RatedRecord, RatingError>>,
    /// Sum of the rated records' gross amounts.
    pub total_gross: Money,
    /// Sum of their net amounts.
    pub total_net: Money,
}

/// Rates `records` in order against one tariff, consuming `buckets`; at most [`MAX_BATCH`].
pub fn rate_batch(
    tariff: &PreparedTariff,
    records: &[UsageRecord],
    ctx: &RatingContext,
    buckets: &mut Buckets,
) -> Result<BatchOutcome, RatingError> {
    if records.len() > MAX_BATCH {
        return Err(RatingError::BatchTooLarge { records: records.len() });
    }
    let currency: Currency = tariff.currency();
    let mut total_gross = Money::zero(currency);
    let mut total_net = Money::zero(currency);
    let mut rated = Vec::with_capacity(records.len());
    for r in records {
        let out = tariff.rate(r, ctx, buckets);
        if let Ok(x) = &out {
            total_gross = total_gross.checked_add(x.gross).map_err(|_| RatingError::Overflow)?;
            total_net = total_net.checked_add(x.net).map_err(|_| RatingError::Overflow)?;
        }
        rated.push(out);
    }
    Ok(BatchOutcome { rated, total_gross, total_net })
}
