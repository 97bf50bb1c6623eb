//! The product catalog (TMF620 v4) as pure domain logic: validation of catalog resources,
//! lifecycle, price versions and grandfathering, usage tariffs, cross-product pricing rules, the
//! relationship/eligibility check and the pricing of a basket, and the one-document import.
//! Tested natively: `cargo test -p bss-domain catalog`.
//!
//! Design decisions:
//! - Resources are stored as their TMF JSON documents, so TMF attributes this code does not know
//!   are preserved. The domain validates a document by reading typed views of it (serde,
//!   `camelCase`), one top-level attribute at a time, so every error names the attribute (or the
//!   rule) that is wrong: see [`Problem`].
//! - Resource kinds ([`Kind`]): the five TMF620 resources plus two BSS extensions, `tariff`
//!   (usage rating definition, [`tariff`]) and `pricingRule` (cross-product discounts, [`rule`]).
//! - `lifecycleStatus` is `inDesign` (default), `active` or `retired`; allowed transitions are
//!   inDesign→active, active→retired and inDesign→retired; nothing leaves `retired`. Retired
//!   resources stay readable, rateable and billable, but a retired offering cannot be ordered.
//! - Referential integrity: every reference (`{id}`) must point at an existing resource of the
//!   right kind ([`validate`]); an active offering needs complete, non-retired prices and a
//!   non-retired specification; deleting a resource that a non-retired resource still refers to
//!   is refused, naming the referrer ([`referrers`]).
//! - All checks run against a [`Snapshot`] (the tenant's catalog in memory, or the catalog
//!   overlaid with an import document), so one code path serves single writes and imports.
//! - Prices ([`price`]): `priceType` oneTime|recurring|usage; complete (price, period, tariff,
//!   tax category) before `active`. A price change appends a version effective from a date
//!   (`priceVersion` inside the document); an active price's amount changes only that way.
//!   Grandfathering: subscriptions keep the version they bought (for ever, or `durationMonths`
//!   after the next version) unless the policy is `applyNewPrice` ([`price::applicable_version`]).
//! - Pricing rules ([`rule`]): the highest-priority applicable rule decides — if it is not
//!   stackable it applies alone, else every stackable rule compounds in priority order.
//! - Baskets ([`basket`]): every violated relationship rule is reported, naming the rule; lines are
//!   rounded once (named [`crate::money::RoundingRule`]) and totals are sums of rounded lines.
//! - Taxes ([`tax`]): the extension resource `taxRate` gives a `taxCategory` (the one every
//!   price names) a percentage `rate` (exact decimal), optionally per `jurisdiction` (a country
//!   code), over a `validFor`. Only `active` rates apply; two active rates of one category and
//!   jurisdiction may not overlap in time. Quotes tax their lines with it (`crate::quote`).
//! - Import ([`import`]): the whole document is validated before anything is written.
//! - Money is [`crate::money::Money`]; TMF prices `{"unit": "EUR", "value": 12.5}` are read
//!   exactly through the number's text ([`money_from_json`]), never through `f64` arithmetic.

pub mod basket;
pub mod import;
pub mod offering;
pub mod price;
pub mod rule;
pub mod tariff;
pub mod tax;
mod validate;

pub use validate::{references, referrers, validate};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

use crate::money::{Currency, Money};

/// Longest `name` of any catalog resource, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most references in one list attribute (prices of an offering, bundle members...).
pub const MAX_REFS: usize = 200;

/// A resource kind of the catalog API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// TMF620 `Catalog`.
    Catalog,
    /// TMF620 `Category`.
    Category,
    /// TMF620 `ProductSpecification`.
    ProductSpecification,
    /// TMF620 `ProductOffering`.
    ProductOffering,
    /// TMF620 `ProductOfferingPrice`.
    ProductOfferingPrice,
    /// BSS extension: usage rating definition.
    Tariff,
    /// BSS extension: cross-product discount.
    PricingRule,
    /// BSS extension: the rate of a tax category (in a jurisdiction) over a period ([`tax`]).
    TaxRate,
}

impl Kind {
    /// Every kind, in dependency order (a kind only refers to kinds before it, or to itself,
    /// except categories and catalogs, which refer to offerings).
    pub const ALL: [Kind; 8] = [
        Kind::TaxRate,
        Kind::Tariff,
        Kind::ProductSpecification,
        Kind::ProductOfferingPrice,
        Kind::ProductOffering,
        Kind::PricingRule,
        Kind::Category,
        Kind::Catalog,
    ];

    /// The path segment and collection name (`productOffering`).
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Catalog => "catalog",
            Kind::Category => "category",
            Kind::ProductSpecification => "productSpecification",
            Kind::ProductOffering => "productOffering",
            Kind::ProductOfferingPrice => "productOfferingPrice",
            Kind::Tariff => "tariff",
            Kind::PricingRule => "pricingRule",
            Kind::TaxRate => "taxRate",
        }
    }

    /// The `@type` (`ProductOffering`).
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Catalog => "Catalog",
            Kind::Category => "Category",
            Kind::ProductSpecification => "ProductSpecification",
            Kind::ProductOffering => "ProductOffering",
            Kind::ProductOfferingPrice => "ProductOfferingPrice",
            Kind::Tariff => "Tariff",
            Kind::PricingRule => "PricingRule",
            Kind::TaxRate => "TaxRate",
        }
    }

    /// The kind of a collection name.
    pub fn from_collection(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.collection() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.collection())
    }
}

/// One thing wrong with a document or a request: where (an attribute path or a rule name) and
/// what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The attribute path (`price.value`) or rule (`excludes`) concerned.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins problems into one message (`a: x; b: y`).
pub fn describe(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}

/// `lifecycleStatus` of every catalog resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Lifecycle {
    /// Being designed: not orderable, may be incomplete.
    #[default]
    InDesign,
    /// Orderable.
    Active,
    /// No longer orderable; still readable, rateable and billable.
    Retired,
}

impl Lifecycle {
    /// The JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::InDesign => "inDesign",
            Lifecycle::Active => "active",
            Lifecycle::Retired => "retired",
        }
    }

    /// Whether a resource may go from `self` to `next` (staying put is always allowed).
    pub fn can_become(self, next: Lifecycle) -> bool {
        use Lifecycle::*;
        self == next || matches!((self, next), (InDesign, Active) | (Active, Retired) | (InDesign, Retired))
    }
}

/// A TMF `validFor`: both ends optional; the end is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimePeriod {
    /// From (inclusive); absent: since always.
    pub start_date_time: Option<DateTime<Utc>>,
    /// Until (exclusive); absent: for ever.
    pub end_date_time: Option<DateTime<Utc>>,
}

impl TimePeriod {
    /// Whether `at` lies in the period.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start_date_time.is_none_or(|s| s <= at) && self.end_date_time.is_none_or(|e| at < e)
    }

    /// Adds a problem to `problems` if the end is not after the start.
    pub fn check_into(&self, field: &str, problems: &mut Vec<Problem>) {
        self.check(field, problems);
    }

    fn check(&self, field: &str, problems: &mut Vec<Problem>) {
        if let (Some(s), Some(e)) = (self.start_date_time, self.end_date_time)
            && e <= s
        {
            problems.push(Problem::new(field, "endDateTime must be after startDateTime"));
        }
    }
}

/// A reference to another resource: `{"id": ..., "href"?, "name"?, ...}` (other members kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// The id referred to.
    pub id: String,
}

/// A resource document and its typed accessors. Every accessor names the attribute on error.
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a>(pub &'a Map<String, Value>);

impl<'a> Doc<'a> {
    /// The document as an object, or a problem.
    pub fn of(v: &'a Value) -> Result<Doc<'a>, Problem> {
        v.as_object().map(Doc).ok_or_else(|| Problem::new("(document)", "must be a JSON object"))
    }

    /// A raw member.
    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    /// An optional member read as `T`.
    pub fn opt<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, Problem> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| Problem::new(field, e.to_string())),
        }
    }

    /// A mandatory member read as `T`.
    pub fn req<T: DeserializeOwned>(&self, field: &str) -> Result<T, Problem> {
        self.opt(field)?.ok_or_else(|| Problem::new(field, "is mandatory"))
    }

    /// The `id` (empty if absent).
    pub fn id(&self) -> &'a str {
        self.0.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// The `name`, or the id when there is none (for messages).
    pub fn label(&self) -> &'a str {
        self.0.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or_else(|| self.id())
    }

    /// `lifecycleStatus` (default `inDesign`).
    pub fn lifecycle(&self) -> Result<Lifecycle, Problem> {
        self.opt::<String>("lifecycleStatus")?.map_or(Ok(Lifecycle::InDesign), |s| {
            serde_json::from_value(Value::String(s.clone()))
                .map_err(|_| Problem::new("lifecycleStatus", format!("{s:?} is not one of inDesign, active, retired")))
        })
    }

    /// `lifecycleStatus`, `inDesign` when unreadable (for documents already validated).
    pub fn lifecycle_or_default(&self) -> Lifecycle {
        self.lifecycle().unwrap_or_default()
    }

    /// `validFor` (open when absent).
    pub fn valid_for(&self) -> Result<TimePeriod, Problem> {
        Ok(self.opt("validFor")?.unwrap_or_default())
    }

    /// A list of references (`[{id}]`), empty when absent.
    pub fn refs(&self, field: &str) -> Result<Vec<Ref>, Problem> {
        let refs: Vec<Ref> = self.opt(field)?.unwrap_or_default();
        if refs.len() > MAX_REFS {
            return Err(Problem::new(field, format!("at most {MAX_REFS} references are accepted")));
        }
        Ok(refs)
    }
}

/// The catalog of one tenant (or a candidate state of it) in memory: documents by kind and id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    docs: BTreeMap<Kind, BTreeMap<String, Value>>,
}

impl Snapshot {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a document (keyed by its `id`).
    pub fn insert(&mut self, kind: Kind, doc: Value) {
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        self.docs.entry(kind).or_default().insert(id, doc);
    }

    /// Removes a document.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        self.docs.get_mut(&kind).and_then(|m| m.remove(id))
    }

    /// A document.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.docs.get(&kind).and_then(|m| m.get(id))
    }

    /// Every document of a kind, by id.
    pub fn all(&self, kind: Kind) -> impl Iterator<Item = &Value> {
        self.docs.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// Number of documents of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.docs.get(&kind).map_or(0, BTreeMap::len)
    }

    /// A document's label (name or id) for messages; the bare id if unknown.
    pub fn label(&self, kind: Kind, id: &str) -> String {
        self.get(kind, id).and_then(|d| Doc::of(d).ok()).map_or(id, |d| d.label()).to_string()
    }
}

/// Reads a TMF money value `{"unit": "EUR", "value": 12.5}` exactly: a JSON number through its
/// text (`12.5` → `Decimal` 12.5, never via `f64` arithmetic), or a decimal string.
pub fn money_from_json(v: &Value) -> Result<Money, String> {
    let obj = v.as_object().ok_or("must be an object {\"unit\": \"EUR\", \"value\": 12.5}")?;
    let unit = obj.get("unit").and_then(Value::as_str).ok_or("unit (an ISO 4217 currency code) is mandatory")?;
    let currency = Currency::new(unit).map_err(|e| e.to_string())?;
    let amount = decimal_from_json(obj.get("value").ok_or("value is mandatory")?).map_err(|e| format!("value {e}"))?;
    Ok(Money::new(amount, currency))
}

/// Reads a decimal from a JSON number (through its text) or string ([`crate::json::decimal`]).
pub fn decimal_from_json(v: &Value) -> Result<Decimal, String> {
    crate::json::decimal(v).map_err(|e| e.to_string())
}

/// The TMF JSON of an amount: `{"unit": "EUR", "value": 12.5}`. The value is a JSON number
/// written from the decimal's exact text.
pub fn money_to_json(m: &Money) -> Value {
    let number = serde_json::from_str::<Value>(&m.amount.normalize().to_string())
        .unwrap_or_else(|_| Value::String(m.amount.to_string()));
    serde_json::json!({"unit": m.currency.code(), "value": number})
}

/// Serde adapter: a [`Money`] field in TMF JSON form.
pub mod tmf_money {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Reads `{"unit", "value"}`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        let v = Value::deserialize(d)?;
        money_from_json(&v).map_err(serde::de::Error::custom)
    }

    /// Writes `{"unit", "value"}`.
    pub fn serialize<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
        money_to_json(m).serialize(s)
    }
}

/// Serde adapter: an optional [`Money`] field in TMF JSON form.
pub mod tmf_money_opt {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Reads `{"unit", "value"}` or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Money>, D::Error> {
        let v = Option::<Value>::deserialize(d)?;
        v.map(|v| money_from_json(&v).map_err(serde::de::Error::custom)).transpose()
    }

    /// Writes `{"unit", "value"}` or null.
    pub fn serialize<S: Serializer>(m: &Option<Money>, s: S) -> Result<S::Ok, S::Error> {
        m.as_ref().map(money_to_json).serialize(s)
    }
}

/// Serde adapter: a [`Decimal`] from a JSON number (exactly) or string.
pub mod tmf_decimal {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Reads a number or a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let v = Value::deserialize(d)?;
        decimal_from_json(&v).map_err(serde::de::Error::custom)
    }

    /// Writes a JSON number.
    pub fn serialize<S: Serializer>(x: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        serde_json::from_str::<Value>(&x.normalize().to_string()).unwrap_or(Value::Null).serialize(s)
    }
}

/// RFC 7386 merge patch, for tests that derive a bad document from a good one.
#[cfg(test)]
pub(crate) fn tests_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    tests_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Keeps a value, or records its problem (to report every problem of a document at once).
pub(crate) fn take<T>(problems: &mut Vec<Problem>, r: Result<T, Problem>) -> Option<T> {
    r.map_err(|p| problems.push(p)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn money_is_read_exactly_from_numbers_and_strings() {
        let m = money_from_json(&json!({"unit": "EUR", "value": 12.5})).unwrap();
        assert_eq!(m.amount, Decimal::from_str("12.5").unwrap());
        let m = money_from_json(&json!({"unit": "EUR", "value": 0.1})).unwrap();
        assert_eq!(m.amount.to_string(), "0.1");
        let m = money_from_json(&json!({"unit": "EUR", "value": "19.99"})).unwrap();
        assert_eq!(m.amount.to_string(), "19.99");
        let m = money_from_json(&json!({"unit": "EUR", "value": 1e-3})).unwrap();
        assert_eq!(m.amount, Decimal::from_str("0.001").unwrap());
        assert!(money_from_json(&json!({"unit": "eur", "value": 1})).is_err());
        assert!(money_from_json(&json!({"unit": "EUR", "value": true})).is_err());
        assert!(money_from_json(&json!({"unit": "EUR"})).is_err());
        assert!(money_from_json(&json!(12)).is_err());
        assert_eq!(money_to_json(&m), json!({"unit": "EUR", "value": 0.001}));
    }

    #[test]
    fn lifecycle_transitions() {
        use Lifecycle::*;
        assert!(InDesign.can_become(Active));
        assert!(Active.can_become(Retired));
        assert!(InDesign.can_become(Retired));
        assert!(!Retired.can_become(Active));
        assert!(!Retired.can_become(InDesign));
        assert!(!Active.can_become(InDesign));
        let v = json!({"lifecycleStatus": "Launched"});
        let e = Doc::of(&v).unwrap().lifecycle().unwrap_err();
        assert!(e.message.contains("inDesign, active, retired"), "{e}");
        assert_eq!(Doc::of(&json!({})).unwrap().lifecycle().unwrap(), InDesign);
    }

    #[test]
    fn time_periods_are_half_open() {
        let p: TimePeriod = serde_json::from_value(
            json!({"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2026-02-01T00:00:00Z"}),
        )
        .unwrap();
        assert!(p.contains("2026-01-01T00:00:00Z".parse().unwrap()));
        assert!(!p.contains("2026-02-01T00:00:00Z".parse().unwrap()));
        assert!(TimePeriod::default().contains(Utc::now()));
    }
}
