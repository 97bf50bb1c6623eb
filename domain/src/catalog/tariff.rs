//! Usage tariffs (BSS extension resource `tariff`): what the rating engine rates against.
//!
//! ```json
//! {"name": "Mobile voice", "currency": "EUR", "service": "voice", "ratingUnit": "minute",
//!  "rounding": {"firstIncrement": 60, "nextIncrement": 1},        // quantities in base units
//!  "rate": {"unit": "EUR", "value": 0.10},                         // per rating unit
//!  "tiers": {"mode": "tiered", "bands": [{"fromUnits": 0, "toUnits": 100, "rate": {...}}, {"fromUnits": 100, "rate": {...}}]},
//!  "periods": [{"name": "offPeak", "days": ["sat", "sun"], "from": "00:00", "to": "24:00", "rate": {...}}],
//!  "destinationGroups": [{"name": "France mobile", "prefixes": ["336", "337"], "rate": {...},
//!                         "rates": [{"service": "sms", "rate": {"unit": "EUR", "value": 0.25}, "ratingUnit": "event"}]}],
//!  "roamingZones": [{"name": "World", "visitedNetworks": ["310260"], "allowancesApply": false,
//!                    "rate": {...},                                // voice: the tariff's own ratingUnit
//!                    "rates": [{"service": "sms", "rate": {"unit": "EUR", "value": 0.50}, "ratingUnit": "event"},
//!                              {"service": "data", "rate": {"unit": "EUR", "value": 5.00}, "ratingUnit": "megabyte"}]}],
//!  "allowances": [{"service": "voice", "amount": 500, "unit": "minute", "overage": {"action": "charge", "rate": {...}}}]}
//! ```
//!
//! - Base units: usage quantities are measured in seconds (time), bytes (data) or events; the
//!   `ratingUnit` (second|minute|event|byte|kilobyte|megabyte|gigabyte, decimal multiples) is
//!   what a rate is per. `rounding` rounds a measured quantity up: at least `firstIncrement` base
//!   units, then whole multiples of `nextIncrement` ("per started 60 s" = 60/60, "first minute
//!   then per second" = 60/1) — [`Tariff::rounded_quantity`].
//! - `tiers`: `tiered` charges each band's units at its rate (graduated); `volume` charges all
//!   units at the rate of the band the total falls in ([`Tariff::tier_charge`]). Bands start at
//!   0, are contiguous, only the last is open.
//! - `periods` (time of day / day of week, local time of the rated event): the first matching
//!   period wins; `to` is exclusive, "24:00" is the end of the day.
//! - `destinationGroups`: digit prefixes of the called number; the longest matching prefix wins
//!   ([`Tariff::destination`]); a prefix belongs to one group only.
//! - `roamingZones`: visited networks by MCC-MNC (5 or 6 digits), one zone per network.
//! - `rates` (per service, in a roaming zone or a destination group): `{service, rate,
//!   ratingUnit?}`, at most one per service (`voice`, `sms`, `data`); `ratingUnit` (absent: the
//!   tariff's) must measure the service (time for voice, events for sms, data for data). It
//!   prices that service there and beats the zone's or group's single `rate`, which is in the
//!   tariff's `ratingUnit` and so only prices the services that unit measures.
//! - `allowances`: included quantities per service and what happens past them: `charge` at the
//!   overage rate (per the allowance's `unit`), or `block`. A destination group with
//!   `"allowancesApply": false` (international calls) is charged at its rate, never from them.
//! - `onNetRate` (optional): the rate of usage towards our own network (0 = free on-net); it
//!   beats destination groups and periods, a roaming zone's rate beats it
//!   ([`Tariff::unit_rate`] gives the whole precedence).
//! - `version` (optional, a string): kept on every rated record so a charge names what rated it.
//! - Every amount is in the tariff's `currency`; a rate is never negative.

use chrono::{Datelike, NaiveDateTime, NaiveTime, Timelike, Weekday};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::{Doc, Lifecycle, Problem, TimePeriod, tmf_decimal, tmf_money, tmf_money_opt};
use crate::money::{Currency, Money};
use crate::rating::Service;

/// Most entries in one tariff list (bands, periods, groups, zones, allowances).
pub const MAX_ENTRIES: usize = 500;
/// Most prefixes (or networks) in one tariff.
pub const MAX_PREFIXES: usize = 20_000;

/// `ratingUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RatingUnit {
    /// Time, 1 s.
    Second,
    /// Time, 60 s.
    Minute,
    /// One event (SMS, MMS, API call).
    Event,
    /// Data, 1 byte.
    Byte,
    /// Data, 1000 bytes.
    Kilobyte,
    /// Data, 10^6 bytes.
    Megabyte,
    /// Data, 10^9 bytes.
    Gigabyte,
}

/// What a rating unit measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Seconds.
    Time,
    /// Bytes.
    Data,
    /// Events.
    Events,
}

impl RatingUnit {
    /// Base units (seconds, bytes, events) in one rating unit.
    pub fn base_units(self) -> u64 {
        match self {
            RatingUnit::Second | RatingUnit::Event | RatingUnit::Byte => 1,
            RatingUnit::Minute => 60,
            RatingUnit::Kilobyte => 1_000,
            RatingUnit::Megabyte => 1_000_000,
            RatingUnit::Gigabyte => 1_000_000_000,
        }
    }

    /// What it measures.
    pub fn dimension(self) -> Dimension {
        match self {
            RatingUnit::Second | RatingUnit::Minute => Dimension::Time,
            RatingUnit::Event => Dimension::Events,
            _ => Dimension::Data,
        }
    }

    /// Its JSON name (`minute`).
    pub fn as_str(self) -> &'static str {
        match self {
            RatingUnit::Second => "second",
            RatingUnit::Minute => "minute",
            RatingUnit::Event => "event",
            RatingUnit::Byte => "byte",
            RatingUnit::Kilobyte => "kilobyte",
            RatingUnit::Megabyte => "megabyte",
            RatingUnit::Gigabyte => "gigabyte",
        }
    }
}

impl Dimension {
    /// What it is called in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Time => "time",
            Dimension::Data => "data volume",
            Dimension::Events => "events",
        }
    }
}

/// `rounding`, in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rounding {
    /// Minimum charged quantity of a non-zero usage.
    pub first_increment: u64,
    /// Step after the first increment.
    pub next_increment: u64,
}

/// `tiers.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TierMode {
    /// Graduated: each band's units at its rate.
    Tiered,
    /// All units at the rate of the band the total falls in.
    Volume,
}

/// One band of `tiers`, in rating units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Band {
    /// From (inclusive).
    #[serde(with = "tmf_decimal")]
    pub from_units: Decimal,
    /// To (exclusive); absent on the last, open band.
    #[serde(default, with = "opt_decimal")]
    pub to_units: Option<Decimal>,
    /// Rate per rating unit.
    #[serde(with = "tmf_money")]
    pub rate: Money,
}

mod opt_decimal {
    use super::*;
    use serde::{Deserializer, Serializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<Value>::deserialize(d)?
            .map(|v| super::super::decimal_from_json(&v).map_err(serde::de::Error::custom))
            .transpose()
    }
    pub fn serialize<S: Serializer>(x: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        x.map(|d| d.to_string()).serialize(s)
    }
}

/// `tiers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tiers {
    /// Graduated or volume.
    pub mode: TierMode,
    /// Bands, ascending.
    pub bands: Vec<Band>,
}

impl Tiers {
    /// The band a running total of `units` falls in.
    pub fn band_at(&self, units: Decimal) -> Option<&Band> {
        self.bands.iter().find(|b| units >= b.from_units && b.to_units.is_none_or(|t| units < t))
    }
}

/// Day of week in `periods.days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    /// The day of a chrono weekday.
    pub fn of(w: Weekday) -> Day {
        match w {
            Weekday::Mon => Day::Mon,
            Weekday::Tue => Day::Tue,
            Weekday::Wed => Day::Wed,
            Weekday::Thu => Day::Thu,
            Weekday::Fri => Day::Fri,
            Weekday::Sat => Day::Sat,
            Weekday::Sun => Day::Sun,
        }
    }
}

/// A time-of-day / day-of-week period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Period {
    /// Name (`peak`, `offPeak`).
    pub name: String,
    /// Days it applies (absent: every day).
    #[serde(default)]
    pub days: Vec<Day>,
    /// From `HH:MM` (inclusive).
    pub from: String,
    /// To `HH:MM` (exclusive; `24:00` = end of day).
    pub to: String,
    /// Rate per rating unit in this period (absent: the tariff's rate).
    #[serde(default, with = "tmf_money_opt")]
    pub rate: Option<Money>,
}

/// Seconds since midnight of `HH:MM` (`24:00` allowed).
fn clock_secs(s: &str) -> Option<u32> {
    if s == "24:00" {
        return Some(86_400);
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok().map(|t| t.num_seconds_from_midnight())
}

impl Period {
    /// `from` and `to` as seconds since midnight (`to` may be 86 400), `None` when unreadable
    /// (a validated tariff always has them): what a rater pre-computes instead of parsing per event.
    pub fn bounds_secs(&self) -> Option<(u32, u32)> {
        Some((clock_secs(&self.from)?, clock_secs(&self.to)?))
    }

    /// Whether the local time `at` falls in the period.
    pub fn contains(&self, at: NaiveDateTime) -> bool {
        let (Some(from), Some(to)) = (clock_secs(&self.from), clock_secs(&self.to)) else { return false };
        let secs = at.time().num_seconds_from_midnight();
        (self.days.is_empty() || self.days.contains(&Day::of(at.weekday()))) && from <= secs && secs < to
    }
}

/// A destination group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationGroup {
    /// Name (`France mobile`).
    pub name: String,
    /// Digit prefixes of the called number (international format without `+`).
    pub prefixes: Vec<String>,
    /// Rate per rating unit (absent: the tariff's rate).
    #[serde(default, with = "tmf_money_opt")]
    pub rate: Option<Money>,
    /// Rates per service, beating `rate` for their service.
    #[serde(default)]
    pub rates: Vec<ServiceRate>,
    /// Whether usage to the group is taken from allowances (default true; international groups
    /// usually say false, so their calls are charged at the group's rate).
    #[serde(default = "yes")]
    pub allowances_apply: bool,
}

fn yes() -> bool {
    true
}

/// The rate of one service in a roaming zone or destination group, per its own rating unit: how
/// a tariff rated per minute prices SMS and data there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRate {
    /// Service (`voice`, `sms`, `data`).
    pub service: String,
    /// Rate per `ratingUnit`.
    #[serde(with = "tmf_money")]
    pub rate: Money,
    /// What the rate is per (absent: the tariff's `ratingUnit`); measures the service.
    #[serde(default)]
    pub rating_unit: Option<RatingUnit>,
}

impl ServiceRate {
    /// The rating unit the rate is per, in a tariff rated per `tariff_unit`.
    pub fn per(&self, tariff_unit: RatingUnit) -> RatingUnit {
        self.rating_unit.unwrap_or(tariff_unit)
    }

    /// The service's rate and unit when it prices `service` (a mistyped unit never does).
    pub fn of(rates: &[ServiceRate], service: Service, tariff_unit: RatingUnit) -> Option<(Money, RatingUnit)> {
        rates
            .iter()
            .find(|r| r.service == service.as_str())
            .map(|r| (r.rate, r.per(tariff_unit)))
            .filter(|(_, per)| per.dimension() == service.dimension())
    }
}

/// A roaming zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoamingZone {
    /// Name (`EU`).
    pub name: String,
    /// Visited networks, MCC-MNC (`20801`).
    pub visited_networks: Vec<String>,
    /// Rate per rating unit in the zone (absent: the tariff's rate).
    #[serde(default, with = "tmf_money_opt")]
    pub rate: Option<Money>,
    /// Rates per service in the zone, beating `rate` for their service.
    #[serde(default)]
    pub rates: Vec<ServiceRate>,
    /// Whether allowances are consumed in the zone (EU "roam like at home").
    #[serde(default)]
    pub allowances_apply: bool,
}

/// What happens past an allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action", deny_unknown_fields)]
pub enum Overage {
    /// Charge at `rate` per rating unit.
    Charge {
        /// The overage rate.
        #[serde(with = "tmf_money")]
        rate: Money,
    },
    /// Refuse the usage.
    Block,
}

/// An included allowance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allowance {
    /// Service (`voice`, `sms`, `data`).
    pub service: String,
    /// Amount included per period, in `unit`.
    #[serde(with = "tmf_decimal")]
    pub amount: Decimal,
    /// Unit of the amount.
    pub unit: RatingUnit,
    /// Past the allowance.
    pub overage: Overage,
}

/// Where and when a usage event happened, for [`Tariff::unit_rate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageEvent<'a> {
    /// The service used (absent: the tariff's own, priced by the single rates in its rating unit).
    pub service: Option<Service>,
    /// Called number (international format, `+` or `00` allowed).
    pub destination: Option<&'a str>,
    /// Visited network (MCC-MNC) when roaming.
    pub visited_network: Option<&'a str>,
    /// Local time of the event (for time-of-day / day-of-week periods).
    pub local_time: Option<NaiveDateTime>,
    /// Whether the other party is on our own network (decided by mediation).
    pub on_net: bool,
}

/// A rate per rating unit, the unit and where it came from: [`Tariff::unit_rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitRate {
    /// Amount per `per`.
    pub rate: Money,
    /// The rating unit it is per.
    pub per: RatingUnit,
    /// Which part of the tariff gave it.
    pub source: RateSource,
}

/// Which part of a tariff gave a rate (also the `basis` of a rated record's explanation step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateSource {
    /// `roamingZones[].rates[]` or `roamingZones[].rate`.
    RoamingZone,
    /// `onNetRate`.
    OnNet,
    /// `destinationGroups[].rates[]` or `destinationGroups[].rate`.
    DestinationGroup,
    /// `periods[].rate`.
    Period,
    /// `rate`.
    Base,
}

/// The typed view of a `tariff` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tariff {
    /// `id`.
    #[serde(default)]
    pub id: String,
    /// `version` (absent: unversioned).
    #[serde(default)]
    pub version: Option<String>,
    /// `name`.
    pub name: String,
    /// Currency of every amount.
    pub currency: Currency,
    /// Service rated (`voice`, `sms`, `data`, `interconnect`...).
    #[serde(default)]
    pub service: Option<String>,
    /// What a rate is per.
    pub rating_unit: RatingUnit,
    /// Rounding of measured quantities (absent: exact).
    #[serde(default)]
    pub rounding: Option<Rounding>,
    /// Base rate per rating unit.
    #[serde(default, with = "tmf_money_opt")]
    pub rate: Option<Money>,
    /// Rate per rating unit towards our own network.
    #[serde(default, with = "tmf_money_opt")]
    pub on_net_rate: Option<Money>,
    /// Tiers.
    #[serde(default)]
    pub tiers: Option<Tiers>,
    /// Periods.
    #[serde(default)]
    pub periods: Vec<Period>,
    /// Destination groups.
    #[serde(default)]
    pub destination_groups: Vec<DestinationGroup>,
    /// Roaming zones.
    #[serde(default)]
    pub roaming_zones: Vec<RoamingZone>,
    /// Allowances.
    #[serde(default)]
    pub allowances: Vec<Allowance>,
    /// `lifecycleStatus`.
    #[serde(default)]
    pub lifecycle_status: Lifecycle,
    /// `validFor`.
    #[serde(default)]
    pub valid_for: TimePeriod,
}

const FIELDS: &[&str] = &[
    "name",
    "currency",
    "service",
    "ratingUnit",
    "rounding",
    "rate",
    "onNetRate",
    "tiers",
    "periods",
    "destinationGroups",
    "roamingZones",
    "allowances",
    "lifecycleStatus",
    "validFor",
];

impl Tariff {
    /// Reads and validates a tariff document; every problem names its attribute.
    pub fn read(v: &Value) -> Result<Tariff, Vec<Problem>> {
        let d = Doc::of(v).map_err(|p| vec![p])?;
        // Field by field first, so a wrong type names its attribute.
        let mut problems = Vec::new();
        for f in FIELDS {
            let r = match *f {
                "name" => d.req::<String>(f).map(drop),
                "currency" => d.req::<Currency>(f).map(drop),
                "ratingUnit" => d.req::<RatingUnit>(f).map(drop),
                "service" => d.opt::<String>(f).map(drop),
                "rounding" => d.opt::<Rounding>(f).map(drop),
                "rate" | "onNetRate" => {
                    d.raw(f).map_or(Ok(()), |r| super::money_from_json(r).map(drop).map_err(|m| Problem::new(*f, m)))
                }
                "tiers" => d.opt::<Tiers>(f).map(drop),
                "periods" => d.opt::<Vec<Period>>(f).map(drop),
                "destinationGroups" => d.opt::<Vec<DestinationGroup>>(f).map(drop),
                "roamingZones" => d.opt::<Vec<RoamingZone>>(f).map(drop),
                "allowances" => d.opt::<Vec<Allowance>>(f).map(drop),
                "lifecycleStatus" => d.lifecycle().map(drop),
                _ => d.valid_for().map(drop),
            };
            if let Err(p) = r {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let t: Tariff = serde_json::from_value(v.clone()).map_err(|e| vec![Problem::new("(tariff)", e.to_string())])?;
        t.check().map(|()| t)
    }

    fn check(&self) -> Result<(), Vec<Problem>> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push(Problem::new("name", "must not be empty"));
        }
        let mut rates: Vec<(String, Money)> = Vec::new();
        rates.extend(self.rate.map(|r| ("rate".to_string(), r)));
        rates.extend(self.on_net_rate.map(|r| ("onNetRate".to_string(), r)));
        if let Some(r) = self.rounding
            && (r.first_increment == 0 || r.next_increment == 0)
        {
            p.push(Problem::new("rounding", "firstIncrement and nextIncrement must be at least 1"));
        }
        if let Some(t) = &self.tiers {
            if t.bands.is_empty() || t.bands.len() > MAX_ENTRIES {
                p.push(Problem::new("tiers.bands", format!("must hold 1 to {MAX_ENTRIES} bands")));
            }
            let mut expected = Decimal::ZERO;
            for (i, b) in t.bands.iter().enumerate() {
                let field = format!("tiers.bands[{i}]");
                if b.from_units != expected {
                    p.push(Problem::new(&field, format!("fromUnits must be {expected} (bands are contiguous from 0)")));
                }
                match b.to_units {
                    Some(to) if to <= b.from_units => p.push(Problem::new(&field, "toUnits must be above fromUnits")),
                    Some(to) => expected = to,
                    None if i + 1 != t.bands.len() => p.push(Problem::new(&field, "only the last band may be open")),
                    None => {}
                }
                rates.push((format!("{field}.rate"), b.rate));
            }
        }
        if self.periods.len() > MAX_ENTRIES {
            p.push(Problem::new("periods", format!("at most {MAX_ENTRIES} periods")));
        }
        for (i, per) in self.periods.iter().enumerate() {
            match (clock_secs(&per.from), clock_secs(&per.to)) {
                (Some(f), Some(t)) if f < t => {}
                (Some(_), Some(_)) => p.push(Problem::new(format!("periods[{i}]"), "from must be before to")),
                _ => p.push(Problem::new(format!("periods[{i}]"), "from and to must be HH:MM (to may be 24:00)")),
            }
            rates.extend(per.rate.map(|r| (format!("periods[{i}].rate"), r)));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let total: usize = self.destination_groups.iter().map(|g| g.prefixes.len()).sum();
        if total > MAX_PREFIXES || self.destination_groups.len() > MAX_ENTRIES {
            p.push(Problem::new(
                "destinationGroups",
                format!("at most {MAX_ENTRIES} groups and {MAX_PREFIXES} prefixes"),
            ));
        }
        for (i, g) in self.destination_groups.iter().enumerate() {
            let field = format!("destinationGroups[{i}]");
            if g.prefixes.is_empty() {
                p.push(Problem::new(&field, "needs at least one prefix"));
            }
            for pre in &g.prefixes {
                if pre.is_empty() || pre.len() > 15 || !pre.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(Problem::new(&field, format!("prefix {pre:?} must be 1 to 15 digits")));
                } else if let Some(other) = seen.insert(pre, &g.name) {
                    p.push(Problem::new(&field, format!("prefix {pre} is already in group {other:?}")));
                }
            }
            rates.extend(g.rate.map(|r| (format!("{field}.rate"), r)));
            self.check_service_rates(&field, &g.rates, &mut p, &mut rates);
        }
        let mut networks: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, z) in self.roaming_zones.iter().enumerate() {
            let field = format!("roamingZones[{i}]");
            for n in &z.visited_networks {
                if !(5..=6).contains(&n.len()) || !n.bytes().all(|b| b.is_ascii_digit()) {
                    p.push(Problem::new(&field, format!("visited network {n:?} must be an MCC-MNC of 5 or 6 digits")));
                } else if let Some(other) = networks.insert(n, &z.name) {
                    p.push(Problem::new(&field, format!("network {n} is already in zone {other:?}")));
                }
            }
            rates.extend(z.rate.map(|r| (format!("{field}.rate"), r)));
            self.check_service_rates(&field, &z.rates, &mut p, &mut rates);
        }
        for (i, a) in self.allowances.iter().enumerate() {
            let field = format!("allowances[{i}]");
            if a.amount <= Decimal::ZERO {
                p.push(Problem::new(format!("{field}.amount"), "must be positive"));
            }
            if let Overage::Charge { rate } = &a.overage {
                rates.push((format!("{field}.overage.rate"), *rate));
            }
        }
        for (field, rate) in rates {
            if rate.currency != self.currency {
                p.push(Problem::new(field, format!("is in {}, the tariff is in {}", rate.currency, self.currency)));
            } else if rate.amount.is_sign_negative() {
                p.push(Problem::new(field, "must not be negative"));
            }
        }
        if self.rate.is_none()
            && self.tiers.is_none()
            && self.destination_groups.iter().all(|g| g.rate.is_none() && g.rates.is_empty())
        {
            p.push(Problem::new("rate", "a tariff needs a rate, tiers or destination group rates"));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// Checks the per-service `rates` of the zone or group at `field` (a known service, once, in
    /// a rating unit that measures it) and collects their amounts for the currency check.
    fn check_service_rates(
        &self,
        field: &str,
        list: &[ServiceRate],
        p: &mut Vec<Problem>,
        rates: &mut Vec<(String, Money)>,
    ) {
        if list.len() > Service::ALL.len() {
            p.push(Problem::new(format!("{field}.rates"), "at most one rate per service (voice, sms, data)"));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, r) in list.iter().enumerate() {
            let at = format!("{field}.rates[{j}]");
            rates.push((format!("{at}.rate"), r.rate));
            let Some(service) = Service::parse(&r.service) else {
                p.push(Problem::new(format!("{at}.service"), format!("{:?} must be voice, sms or data", r.service)));
                continue;
            };
            if let Some(k) = seen.get(service.as_str()) {
                p.push(Problem::new(
                    format!("{at}.service"),
                    format!("{} has a rate already in rates[{k}]", r.service),
                ));
            } else {
                seen.insert(service.as_str(), j);
            }
            let per = r.per(self.rating_unit);
            let wanted = service.dimension();
            if per.dimension() != wanted {
                let why = format!(
                    "{} measures {}, {} is measured in {}",
                    per.as_str(),
                    per.dimension().as_str(),
                    r.service,
                    wanted.as_str()
                );
                let msg = match r.rating_unit {
                    Some(_) => why,
                    None => format!("is needed: the tariff's ratingUnit {why}"),
                };
                p.push(Problem::new(format!("{at}.ratingUnit"), msg));
            }
        }
    }

    /// A measured quantity (base units) rounded up by the tariff's rounding rule.
    pub fn rounded_quantity(&self, measured: u64) -> u64 {
        let Some(r) = self.rounding else { return measured };
        if measured == 0 {
            return 0;
        }
        if measured <= r.first_increment {
            return r.first_increment;
        }
        let rest = measured - r.first_increment;
        r.first_increment + rest.div_ceil(r.next_increment) * r.next_increment
    }

    /// Base units as rating units (exact decimal: 90 s = 1.5 minutes).
    pub fn rating_units(&self, base: u64) -> Decimal {
        Decimal::from(base) / Decimal::from(self.rating_unit.base_units())
    }

    /// The charge of `units` rating units by the tiers (unrounded), or `None` without tiers.
    pub fn tier_charge(&self, units: Decimal) -> Option<Decimal> {
        let tiers = self.tiers.as_ref()?;
        match tiers.mode {
            TierMode::Volume => tiers.band_at(units).map(|b| b.rate.amount * units),
            TierMode::Tiered => Some(
                tiers
                    .bands
                    .iter()
                    .map(|b| {
                        let top = b.to_units.map_or(units, |t| t.min(units));
                        (top - b.from_units).max(Decimal::ZERO) * b.rate.amount
                    })
                    .sum(),
            ),
        }
    }

    /// The destination group of a called number: the longest matching prefix wins. A leading
    /// `+` or `00` is ignored.
    pub fn destination(&self, number: &str) -> Option<&DestinationGroup> {
        let n = number.strip_prefix('+').or_else(|| number.strip_prefix("00")).unwrap_or(number);
        self.destination_groups
            .iter()
            .flat_map(|g| g.prefixes.iter().map(move |p| (p, g)))
            .filter(|(p, _)| n.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, g)| g)
    }

    /// The roaming zone of a visited network (MCC-MNC).
    pub fn roaming_zone(&self, mcc_mnc: &str) -> Option<&RoamingZone> {
        self.roaming_zones.iter().find(|z| z.visited_networks.iter().any(|n| n == mcc_mnc))
    }

    /// The rate of one usage event, what it is per and where it came from. Levels, first that
    /// prices the event wins: the roaming zone of the visited network, the on-net rate (on-net
    /// usage), the destination group of the called number, the time period, the base rate.
    /// Within a zone or group, its per-service `rates` entry for the event's service beats its
    /// single `rate`. A single rate (zone, group, on-net, period, base) is per the tariff's
    /// rating unit, so it prices only the services that unit measures (all of them when the
    /// event names no service); a level that cannot price the service is skipped. `None` when
    /// none applies (a tariff rated by tiers only: the rater charges a period's total with
    /// [`Tariff::tier_charge`]; or a service priced by allowances only).
    pub fn unit_rate(&self, event: &UsageEvent<'_>) -> Option<UnitRate> {
        let unit = self.rating_unit;
        let single = |rate: Option<Money>| {
            rate.filter(|_| event.service.is_none_or(|s| s.dimension() == unit.dimension())).map(|r| (r, unit))
        };
        let level = |rates: &[ServiceRate], rate: Option<Money>| {
            event.service.and_then(|s| ServiceRate::of(rates, s, unit)).or_else(|| single(rate))
        };
        let zone = event.visited_network.and_then(|n| self.roaming_zone(n));
        let group = event.destination.and_then(|d| self.destination(d));
        let period = event.local_time.and_then(|t| self.period(t));
        zone.and_then(|z| level(&z.rates, z.rate))
            .map(|r| (r, RateSource::RoamingZone))
            .or_else(|| single(self.on_net_rate.filter(|_| event.on_net)).map(|r| (r, RateSource::OnNet)))
            .or_else(|| group.and_then(|g| level(&g.rates, g.rate)).map(|r| (r, RateSource::DestinationGroup)))
            .or_else(|| period.and_then(|p| single(p.rate)).map(|r| (r, RateSource::Period)))
            .or_else(|| single(self.rate).map(|r| (r, RateSource::Base)))
            .map(|((rate, per), source)| UnitRate { rate, per, source })
    }

    /// The period of a local time (the first matching one).
    pub fn period(&self, local: NaiveDateTime) -> Option<&Period> {
        self.periods.iter().find(|p| p.contains(local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn voice() -> Value {
        json!({"id": "t1", "name": "Voice", "currency": "EUR", "ratingUnit": "minute",
            "rounding": {"firstIncrement": 60, "nextIncrement": 1},
            "rate": {"unit": "EUR", "value": 0.10},
            "periods": [{"name": "weekend", "days": ["sat", "sun"], "from": "00:00", "to": "24:00", "rate": {"unit": "EUR", "value": 0.05}},
                        {"name": "evening", "from": "20:00", "to": "24:00", "rate": {"unit": "EUR", "value": 0.07}}],
            "destinationGroups": [{"name": "France", "prefixes": ["33"], "rate": {"unit": "EUR", "value": 0.10}},
                                  {"name": "France mobile", "prefixes": ["336", "337"], "rate": {"unit": "EUR", "value": 0.12}}],
            "roamingZones": [{"name": "EU", "visitedNetworks": ["26201", "21407"], "allowancesApply": true}],
            "allowances": [{"service": "voice", "amount": 500, "unit": "minute", "overage": {"action": "charge", "rate": {"unit": "EUR", "value": 0.15}}},
                           {"service": "data", "amount": 10, "unit": "gigabyte", "overage": {"action": "block"}}]})
    }

    #[test]
    fn a_complete_tariff_reads_and_looks_up() {
        let t = Tariff::read(&voice()).unwrap();
        assert_eq!(t.destination("+33612345678").unwrap().name, "France mobile");
        assert_eq!(t.destination("0033145000000").unwrap().name, "France");
        assert!(t.destination("4930123").is_none());
        assert_eq!(t.roaming_zone("21407").unwrap().name, "EU");
        assert!(t.roaming_zone("31026").is_none());
        let sat = NaiveDateTime::parse_from_str("2026-03-07 10:00", "%Y-%m-%d %H:%M").unwrap();
        let mon_eve = NaiveDateTime::parse_from_str("2026-03-09 21:00", "%Y-%m-%d %H:%M").unwrap();
        let mon_day = NaiveDateTime::parse_from_str("2026-03-09 10:00", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(t.period(sat).unwrap().name, "weekend");
        assert_eq!(t.period(mon_eve).unwrap().name, "evening");
        assert!(t.period(mon_day).is_none());
        assert_eq!(t.allowances[1].overage, Overage::Block);
    }

    #[test]
    fn unit_rate_precedence() {
        let mut v = voice();
        v["roamingZones"][0]["rate"] = json!({"unit": "EUR", "value": 0.30});
        let t = Tariff::read(&v).unwrap();
        let sat = NaiveDateTime::parse_from_str("2026-03-07 10:00", "%Y-%m-%d %H:%M").unwrap();
        let rate = |destination, visited_network, local_time| {
            let u =
                t.unit_rate(&UsageEvent { destination, visited_network, local_time, ..UsageEvent::default() }).unwrap();
            assert_eq!(u.per, RatingUnit::Minute, "a single rate is per the tariff's rating unit");
            (u.rate.amount, u.source)
        };
        assert_eq!(rate(Some("33612"), Some("26201"), Some(sat)), (d("0.30"), RateSource::RoamingZone));
        assert_eq!(rate(Some("33612"), None, Some(sat)), (d("0.12"), RateSource::DestinationGroup));
        assert_eq!(rate(Some("4930"), None, Some(sat)), (d("0.05"), RateSource::Period));
        assert_eq!(rate(None, Some("99999"), None), (d("0.10"), RateSource::Base));
    }

    #[test]
    fn on_net_rate_version_and_group_allowances() {
        let mut v = voice();
        v["version"] = json!("4");
        v["onNetRate"] = json!({"unit": "EUR", "value": 0});
        v["destinationGroups"][0]["allowancesApply"] = json!(false);
        let t = Tariff::read(&v).unwrap();
        assert_eq!(t.version.as_deref(), Some("4"));
        assert!(!t.destination_groups[0].allowances_apply);
        assert!(t.destination_groups[1].allowances_apply, "groups take from allowances unless they opt out");
        let ev = |on_net, visited_network| UsageEvent {
            destination: Some("33612"),
            visited_network,
            on_net,
            ..UsageEvent::default()
        };
        assert_eq!(
            t.unit_rate(&ev(true, None)).unwrap(),
            UnitRate {
                rate: Money::new(Decimal::ZERO, t.currency),
                per: RatingUnit::Minute,
                source: RateSource::OnNet
            }
        );
        assert_eq!(t.unit_rate(&ev(false, None)).unwrap().source, RateSource::DestinationGroup);
        v["roamingZones"][0]["rate"] = json!({"unit": "EUR", "value": 0.30});
        let t = Tariff::read(&v).unwrap();
        assert_eq!(t.unit_rate(&ev(true, Some("26201"))).unwrap().source, RateSource::RoamingZone);
        v["onNetRate"] = json!({"unit": "EUR", "value": -1});
        assert!(Tariff::read(&v).unwrap_err().iter().any(|p| p.field == "onNetRate"));
        let p = &t.periods[1];
        assert_eq!(p.bounds_secs(), Some((72_000, 86_400)));
        let tiers = Tiers {
            mode: TierMode::Volume,
            bands: vec![
                Band { from_units: d("0"), to_units: Some(d("10")), rate: Money::new(d("1"), t.currency) },
                Band { from_units: d("10"), to_units: None, rate: Money::new(d("0.5"), t.currency) },
            ],
        };
        assert_eq!(tiers.band_at(d("10")).unwrap().rate.amount, d("0.5"));
    }

    /// The voice fixture with per-service rates: in the EU zone (voice, SMS; its single rate
    /// stays for the rest) and in the France mobile group (SMS).
    fn with_service_rates() -> Value {
        let mut v = voice();
        v["roamingZones"][0]["rate"] = json!({"unit": "EUR", "value": 0.30});
        v["roamingZones"][0]["rates"] = json!([
            {"service": "voice", "rate": {"unit": "EUR", "value": 0.20}},
            {"service": "sms", "rate": {"unit": "EUR", "value": 0.40}, "ratingUnit": "event"}]);
        v["destinationGroups"][1]["rates"] =
            json!([{"service": "sms", "rate": {"unit": "EUR", "value": 0.08}, "ratingUnit": "event"}]);
        v
    }

    #[test]
    fn per_service_rates_price_each_service_in_its_own_unit() {
        let t = Tariff::read(&with_service_rates()).unwrap();
        assert_eq!(t.roaming_zones[0].rates[0].per(t.rating_unit), RatingUnit::Minute, "absent: the tariff's unit");
        let rate = |service, destination, visited_network| {
            t.unit_rate(&UsageEvent { service, destination, visited_network, ..UsageEvent::default() })
                .map(|u| (u.rate.amount, u.per, u.source))
        };
        let (eu, france_mobile, elsewhere) = (Some("26201"), Some("33612"), Some("4930"));
        // In the zone: each service's own rate beats the zone's single rate.
        assert_eq!(
            rate(Some(Service::Voice), france_mobile, eu),
            Some((d("0.20"), RatingUnit::Minute, RateSource::RoamingZone))
        );
        assert_eq!(
            rate(Some(Service::Sms), france_mobile, eu),
            Some((d("0.40"), RatingUnit::Event, RateSource::RoamingZone))
        );
        // No data rate anywhere: every single rate is per minute, so none prices bytes.
        assert_eq!(rate(Some(Service::Data), france_mobile, eu), None);
        // At home, an SMS to the group is at the group's SMS rate; elsewhere nothing prices it.
        assert_eq!(
            rate(Some(Service::Sms), france_mobile, None),
            Some((d("0.08"), RatingUnit::Event, RateSource::DestinationGroup))
        );
        assert_eq!(rate(Some(Service::Sms), elsewhere, None), None);
        // An SMS in the zone without a zone SMS rate falls to the next level that prices SMS.
        let mut v = with_service_rates();
        v["roamingZones"][0]["rates"] = json!([{"service": "voice", "rate": {"unit": "EUR", "value": 0.20}}]);
        let t2 = Tariff::read(&v).unwrap();
        let sms = UsageEvent {
            service: Some(Service::Sms),
            destination: france_mobile,
            visited_network: eu,
            ..UsageEvent::default()
        };
        assert_eq!(t2.unit_rate(&sms).map(|u| u.source), Some(RateSource::DestinationGroup));
        // Without a service (the tariff's own), the single rates as before.
        assert_eq!(rate(None, france_mobile, eu), Some((d("0.30"), RatingUnit::Minute, RateSource::RoamingZone)));
        assert_eq!(
            rate(None, france_mobile, None),
            Some((d("0.12"), RatingUnit::Minute, RateSource::DestinationGroup))
        );
        // Voice, the tariff's own dimension: the single rates still apply.
        assert_eq!(
            rate(Some(Service::Voice), elsewhere, None),
            Some((d("0.10"), RatingUnit::Minute, RateSource::Base))
        );
        // The document round-trips.
        assert_eq!(Tariff::read(&serde_json::to_value(&t).unwrap()).unwrap(), t);
        // Destination group SMS rates alone are enough rates for a tariff.
        let only_groups = json!({"name": "SMS abroad", "currency": "EUR", "ratingUnit": "minute",
            "destinationGroups": [{"name": "World", "prefixes": ["1"], "allowancesApply": false,
                "rates": [{"service": "sms", "rate": {"unit": "EUR", "value": 0.25}, "ratingUnit": "event"}]}]});
        assert!(Tariff::read(&only_groups).is_ok());
    }

    #[test]
    fn bad_service_rates_name_their_field_path() {
        let fields = |zone_rates: Value, group_rates: Value| {
            let mut v = with_service_rates();
            v["roamingZones"][0]["rates"] = zone_rates;
            v["destinationGroups"][1]["rates"] = group_rates;
            let mut f: Vec<String> = Tariff::read(&v).unwrap_err().into_iter().map(|p| p.field).collect();
            f.sort();
            f
        };
        let eur = |value: f64| json!({"unit": "EUR", "value": value});
        assert_eq!(
            fields(
                json!([{"service": "fax", "rate": eur(1.0)},
                       {"service": "sms", "rate": eur(1.0), "ratingUnit": "event"},
                       {"service": "sms", "rate": eur(2.0), "ratingUnit": "event"}]),
                json!([{"service": "sms", "rate": eur(-0.1), "ratingUnit": "event"},
                       {"service": "voice", "rate": {"unit": "USD", "value": 0.1}}])
            ),
            [
                "destinationGroups[1].rates[0].rate",
                "destinationGroups[1].rates[1].rate",
                "roamingZones[0].rates[0].service",
                "roamingZones[0].rates[2].service",
            ]
        );
        // A unit of another dimension, given or the tariff's (per minute) by default.
        let e = {
            let mut v = with_service_rates();
            v["roamingZones"][0]["rates"] = json!([{"service": "sms", "rate": eur(0.5), "ratingUnit": "megabyte"},
                                                   {"service": "data", "rate": eur(5.0)},
                                                   {"service": "voice", "rate": eur(1.0), "ratingUnit": "event"}]);
            Tariff::read(&v).unwrap_err()
        };
        let got: Vec<(&str, &str)> = e.iter().map(|p| (p.field.as_str(), p.message.as_str())).collect();
        assert_eq!(
            got,
            [
                ("roamingZones[0].rates[0].ratingUnit", "megabyte measures data volume, sms is measured in events"),
                (
                    "roamingZones[0].rates[1].ratingUnit",
                    "is needed: the tariff's ratingUnit minute measures time, data is measured in data volume"
                ),
                ("roamingZones[0].rates[2].ratingUnit", "event measures events, voice is measured in time"),
            ]
        );
        // More entries than services; a misspelt member (read errors name the list).
        let four = json!([{"service": "voice", "rate": eur(1.0)}, {"service": "voice", "rate": eur(1.0)},
                          {"service": "voice", "rate": eur(1.0)}, {"service": "voice", "rate": eur(1.0)}]);
        assert!(fields(four, json!([])).contains(&"roamingZones[0].rates".to_string()));
        let mut v = with_service_rates();
        v["roamingZones"][0]["rates"] = json!([{"service": "sms", "rate": eur(1.0), "unit": "event"}]);
        assert_eq!(Tariff::read(&v).unwrap_err()[0].field, "roamingZones");
    }

    #[test]
    fn rounding_per_started_unit() {
        let mut t = Tariff::read(&voice()).unwrap();
        // First minute, then per second.
        assert_eq!(t.rounded_quantity(0), 0);
        assert_eq!(t.rounded_quantity(1), 60);
        assert_eq!(t.rounded_quantity(61), 61);
        // Per started 60 s.
        t.rounding = Some(Rounding { first_increment: 60, next_increment: 60 });
        assert_eq!(t.rounded_quantity(61), 120);
        assert_eq!(t.rounded_quantity(120), 120);
        assert_eq!(t.rating_units(90), d("1.5"));
    }

    #[test]
    fn tiered_and_volume() {
        let mut v = voice();
        v["tiers"] = json!({"mode": "tiered", "bands": [
            {"fromUnits": 0, "toUnits": 100, "rate": {"unit": "EUR", "value": 0.10}},
            {"fromUnits": 100, "rate": {"unit": "EUR", "value": 0.05}}]});
        let t = Tariff::read(&v).unwrap();
        assert_eq!(t.tier_charge(d("150")).unwrap(), d("12.50"));
        v["tiers"]["mode"] = json!("volume");
        let t = Tariff::read(&v).unwrap();
        assert_eq!(t.tier_charge(d("150")).unwrap(), d("7.50"));
        assert_eq!(t.tier_charge(d("50")).unwrap(), d("5.00"));
    }

    #[test]
    fn bad_tariffs_name_the_problem() {
        let check = |patch: Value, field: &str| {
            let mut v = voice();
            crate::catalog::tests_merge(&mut v, &patch);
            let e = Tariff::read(&v).unwrap_err();
            assert!(e.iter().any(|p| p.field.starts_with(field)), "{field}: {e:?}");
        };
        check(json!({"ratingUnit": "hour"}), "ratingUnit");
        check(json!({"currency": "euro"}), "currency");
        check(json!({"rate": {"unit": "USD", "value": 1}}), "rate");
        check(json!({"rounding": {"firstIncrement": 0, "nextIncrement": 1}}), "rounding");
        check(
            json!({"destinationGroups": [{"name": "a", "prefixes": ["33"]}, {"name": "b", "prefixes": ["33"]}]}),
            "destinationGroups[1]",
        );
        check(json!({"destinationGroups": [{"name": "a", "prefixes": ["+33"]}]}), "destinationGroups[0]");
        check(json!({"roamingZones": [{"name": "a", "visitedNetworks": ["2"]}]}), "roamingZones[0]");
        check(json!({"periods": [{"name": "x", "from": "25:00", "to": "26:00"}]}), "periods[0]");
        check(
            json!({"tiers": {"mode": "tiered", "bands": [{"fromUnits": 5, "rate": {"unit": "EUR", "value": 1}}]}}),
            "tiers.bands[0]",
        );
        check(
            json!({"allowances": [{"service": "voice", "amount": 0, "unit": "minute", "overage": {"action": "block"}}]}),
            "allowances[0]",
        );
        check(json!({"name": null}), "name");
    }

    proptest! {
        #[test]
        fn rounding_never_undercharges(measured in 0u64..1_000_000, first in 1u64..600, next in 1u64..120) {
            let mut t = Tariff::read(&voice()).unwrap();
            t.rounding = Some(Rounding { first_increment: first, next_increment: next });
            let r = t.rounded_quantity(measured);
            prop_assert!(r >= measured);
            if measured > 0 {
                prop_assert!(r >= first);
                prop_assert!(r < measured.max(first) + next);
                prop_assert_eq!((r - first) % next, 0);
            } else {
                prop_assert_eq!(r, 0);
            }
        }

        #[test]
        fn longest_prefix_wins(number in "(00|\\+)?[0-9]{4,12}") {
            let t = Tariff::read(&voice()).unwrap();
            // The oracle: the longest prefix of the national-significant digits, by brute force.
            let digits = number.strip_prefix('+').or_else(|| number.strip_prefix("00")).unwrap_or(&number);
            let best = t.destination_groups.iter()
                .flat_map(|g| g.prefixes.iter().map(move |p| (p, g)))
                .filter(|(p, _)| digits.starts_with(p.as_str()))
                .max_by_key(|(p, _)| p.len());
            prop_assert_eq!(t.destination(&number).map(|g| &g.name), best.map(|(_, g)| &g.name));
        }
    }
}
