//! Product offering prices: the typed view of a `productOfferingPrice` document, its
//! completeness rules, price versions (`priceChange`) and grandfathering.
//!
//! - `priceType` is `oneTime`, `recurring` or `usage`. `oneTime`/`recurring` carry
//!   `price {unit, value}`; `recurring` also `recurringChargePeriodType` (day|week|month|year)
//!   and `recurringChargePeriodLength` (default 1); `usage` carries `tariff {id}`. A price may be
//!   incomplete while `inDesign` (the TMF kit creates one with only a name and a type); it must be
//!   complete to become `active` ([`PriceView::completeness`]), which includes a `taxCategory`.
//! - Versions: `priceVersion: [{version, price, validFor: {startDateTime}}]` inside the document,
//!   oldest first; top-level `version` is the latest version number (a string) and top-level
//!   `price` the latest version's price. A document without `priceVersion` has one implicit
//!   version "1": its `price`, effective since `validFor.startDateTime` (or since always).
//! - Grandfathering: `grandfathering: {"policy": "keepPurchasedPrice" | "applyNewPrice",
//!   "durationMonths"?: n}`. Absent means keepPurchasedPrice for ever: a subscription keeps the
//!   version it bought "until the rule says otherwise" ([`applicable_version`]).

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Doc, Lifecycle, Problem, Ref, TimePeriod, money_from_json, money_to_json, take};
use crate::money::Money;

/// Longest price history kept in one document.
pub const MAX_PRICE_VERSIONS: usize = 500;

/// `priceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PriceType {
    /// Charged once (activation, device).
    OneTime,
    /// Charged every period.
    Recurring,
    /// Rated from usage with a tariff.
    Usage,
}

impl PriceType {
    /// The JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceType::OneTime => "oneTime",
            PriceType::Recurring => "recurring",
            PriceType::Usage => "usage",
        }
    }
}

/// `recurringChargePeriodType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeriodType {
    /// Daily.
    Day,
    /// Weekly.
    Week,
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

/// `grandfathering.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GrandfatheringPolicy {
    /// Existing subscriptions keep the version they bought (for `durationMonths` after the next
    /// version takes effect, or for ever).
    KeepPurchasedPrice,
    /// Existing subscriptions move to each new version when it takes effect.
    ApplyNewPrice,
}

/// `grandfathering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grandfathering {
    /// The policy.
    pub policy: GrandfatheringPolicy,
    /// How long the purchased price is kept after a newer version takes effect (keep policy).
    pub duration_months: Option<u32>,
}

/// One version of a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceVersion {
    /// 1, 2, ...
    pub version: u32,
    /// The price of this version.
    pub price: Money,
    /// From when it applies to new sales (inclusive).
    pub valid_from: DateTime<Utc>,
}

/// The typed view of a `productOfferingPrice` document.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceView {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `priceType` (absent only in an invalid document).
    pub price_type: PriceType,
    /// The latest price, if any.
    pub price: Option<Money>,
    /// `recurringChargePeriodType`.
    pub period_type: Option<PeriodType>,
    /// `recurringChargePeriodLength` (default 1).
    pub period_length: u32,
    /// `tariff.id` for usage.
    pub tariff_id: Option<String>,
    /// `taxCategory`.
    pub tax_category: Option<String>,
    /// `validFor`.
    pub valid_for: TimePeriod,
    /// `lifecycleStatus`.
    pub lifecycle: Lifecycle,
    /// Versions, oldest first (at least one when `price` is set).
    pub versions: Vec<PriceVersion>,
    /// `grandfathering`.
    pub grandfathering: Option<Grandfathering>,
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVersion {
    version: String,
    price: Value,
    #[serde(default)]
    valid_for: TimePeriod,
}

impl PriceView {
    /// Reads a document; every problem found is returned (naming its attribute).
    pub fn read(v: &Value) -> Result<PriceView, Vec<Problem>> {
        let d = Doc::of(v).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let name = take(&mut problems, d.req::<String>("name"));
        let price_type = take(&mut problems, d.req::<PriceType>("priceType"));
        let price = take(
            &mut problems,
            d.raw("price").map(|p| money_from_json(p).map_err(|m| Problem::new("price", m))).transpose(),
        );
        let period_type = take(&mut problems, d.opt::<PeriodType>("recurringChargePeriodType"));
        let period_length = take(&mut problems, d.opt::<u32>("recurringChargePeriodLength"));
        let tariff = take(&mut problems, d.opt::<Ref>("tariff"));
        let tax_category = take(&mut problems, d.opt::<String>("taxCategory"));
        let valid_for = take(&mut problems, d.valid_for());
        let lifecycle = take(&mut problems, d.lifecycle());
        let grandfathering = take(&mut problems, d.opt::<Grandfathering>("grandfathering"));
        let raw_versions = take(&mut problems, d.opt::<Vec<RawVersion>>("priceVersion"));
        let mut versions = Vec::new();
        if let (Some(Some(raw)), Some(Some(_))) = (&raw_versions, &price) {
            if raw.is_empty() || raw.len() > MAX_PRICE_VERSIONS {
                problems.push(Problem::new("priceVersion", format!("must hold 1 to {MAX_PRICE_VERSIONS} versions")));
            }
            for (i, r) in raw.iter().enumerate() {
                let field = format!("priceVersion[{i}]");
                let number = r.version.parse::<u32>().ok().filter(|n| *n as usize == i + 1);
                let money = money_from_json(&r.price);
                match (number, money) {
                    (Some(version), Ok(price)) => versions.push(PriceVersion {
                        version,
                        price,
                        valid_from: r.valid_for.start_date_time.unwrap_or_else(epoch),
                    }),
                    (None, _) => problems.push(Problem::new(field, format!("version must be \"{}\"", i + 1))),
                    (_, Err(m)) => problems.push(Problem::new(format!("{field}.price"), m)),
                }
            }
            if versions.windows(2).any(|w| w[1].valid_from <= w[0].valid_from) {
                problems.push(Problem::new("priceVersion", "versions must take effect in increasing time order"));
            }
            if let (Some(last), Some(Some(p))) = (versions.last(), &price)
                && last.price != *p
            {
                problems.push(Problem::new("price", "must equal the price of the latest priceVersion"));
            }
        } else if let (Some(Some(p)), Some(vf)) = (&price, &valid_for) {
            versions.push(PriceVersion { version: 1, price: *p, valid_from: vf.start_date_time.unwrap_or_else(epoch) });
        } else if let Some(Some(_)) = &raw_versions {
            problems.push(Problem::new("price", "is mandatory when priceVersion is given"));
        }
        if let Some(Some(n)) = period_length
            && n == 0
        {
            problems.push(Problem::new("recurringChargePeriodLength", "must be at least 1"));
        }
        if let Some(vf) = &valid_for {
            vf.check("validFor", &mut problems);
        }
        if let Some(name) = &name
            && name.trim().is_empty()
        {
            problems.push(Problem::new("name", "must not be empty"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let price_type = price_type.unwrap_or(PriceType::OneTime);
        let view = PriceView {
            id: d.id().to_string(),
            name: name.unwrap_or_default(),
            price_type,
            price: price.flatten(),
            period_type: period_type.flatten(),
            period_length: period_length.flatten().unwrap_or(1),
            tariff_id: tariff.flatten().map(|r| r.id),
            tax_category: tax_category.flatten(),
            valid_for: valid_for.unwrap_or_default(),
            lifecycle: lifecycle.unwrap_or_default(),
            versions,
            grandfathering: grandfathering.flatten(),
        };
        view.consistency().map(|()| view)
    }

    /// Rules that hold in every lifecycle state: attributes that do not belong to the type.
    fn consistency(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if self.price_type == PriceType::Usage && self.price.is_some() {
            problems.push(Problem::new("price", "a usage price is rated by its tariff; it has no price"));
        }
        if self.price_type != PriceType::Usage && self.tariff_id.is_some() {
            problems.push(Problem::new("tariff", "only a usage price refers to a tariff"));
        }
        if self.price_type != PriceType::Recurring && self.period_type.is_some() {
            problems.push(Problem::new("recurringChargePeriodType", "only a recurring price has a period"));
        }
        if self.price.is_some_and(|p| p.amount.is_sign_negative()) {
            problems.push(Problem::new("price.value", "must not be negative"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// What a price needs before it can be active (and be sold).
    pub fn completeness(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        match self.price_type {
            PriceType::OneTime | PriceType::Recurring if self.price.is_none() => {
                problems.push(Problem::new("price", format!("a {} price needs a price", self.price_type.as_str())))
            }
            PriceType::Usage if self.tariff_id.is_none() => {
                problems.push(Problem::new("tariff", "a usage price needs a tariff reference"))
            }
            _ => {}
        }
        if self.price_type == PriceType::Recurring && self.period_type.is_none() {
            problems.push(Problem::new(
                "recurringChargePeriodType",
                "a recurring price needs a period (day, week, month or year)",
            ));
        }
        if self.tax_category.as_deref().is_none_or(|t| t.trim().is_empty()) {
            problems.push(Problem::new("taxCategory", "a price needs a tax category (billing taxes by it)"));
        }
        problems
    }

    /// The version sold to a new customer at `at`.
    pub fn current_version(&self, at: DateTime<Utc>) -> Option<&PriceVersion> {
        current_version(&self.versions, at)
    }
}

/// The latest version in effect at `at` (versions oldest first).
pub fn current_version(versions: &[PriceVersion], at: DateTime<Utc>) -> Option<&PriceVersion> {
    versions.iter().rev().find(|v| v.valid_from <= at)
}

/// The version a subscription that bought version `purchased` pays at `at`, under
/// `grandfathering` (absent: keep the purchased price for ever). `purchased = None` is a new
/// sale: the version in effect at `at`. An unknown purchased version answers `None`.
///
/// keepPurchasedPrice with `durationMonths = n`: the purchased version applies until `n` months
/// after the first newer version takes effect; from then on the version in effect applies.
pub fn applicable_version<'a>(
    versions: &'a [PriceVersion],
    grandfathering: Option<&Grandfathering>,
    purchased: Option<u32>,
    at: DateTime<Utc>,
) -> Option<&'a PriceVersion> {
    let Some(purchased) = purchased else { return current_version(versions, at) };
    let bought = versions.iter().find(|v| v.version == purchased)?;
    let policy = grandfathering.map_or(GrandfatheringPolicy::KeepPurchasedPrice, |g| g.policy);
    match policy {
        GrandfatheringPolicy::ApplyNewPrice => {
            current_version(versions, at).filter(|v| v.version >= purchased).or(Some(bought))
        }
        GrandfatheringPolicy::KeepPurchasedPrice => {
            let months = grandfathering.and_then(|g| g.duration_months);
            let next = versions.iter().find(|v| v.version > purchased);
            match (months, next) {
                (Some(n), Some(next)) => {
                    let until = next.valid_from.checked_add_months(Months::new(n)).unwrap_or(DateTime::<Utc>::MAX_UTC);
                    if at < until { Some(bought) } else { current_version(versions, at).or(Some(bought)) }
                }
                _ => Some(bought),
            }
        }
    }
}

/// Appends a price version to a `productOfferingPrice` document: the new `price` takes effect
/// at `effective_from`, which must be after the latest version's start and not before `now`; the
/// currency cannot change (another currency is another price). Sets `priceVersion`, `price` and
/// `version`.
pub fn apply_price_change(
    doc: &mut Value,
    new_price: &Value,
    effective_from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Vec<Problem>> {
    let view = PriceView::read(doc)?;
    let mut problems = Vec::new();
    if view.lifecycle == Lifecycle::Retired {
        problems.push(Problem::new("lifecycleStatus", "a retired price cannot change"));
    }
    if view.price_type == PriceType::Usage {
        problems.push(Problem::new("priceType", "a usage price changes through its tariff, not priceChange"));
    }
    let new = match money_from_json(new_price) {
        Ok(m) if m.amount.is_sign_negative() => {
            problems.push(Problem::new("price.value", "must not be negative"));
            None
        }
        Ok(m) => Some(m),
        Err(m) => {
            problems.push(Problem::new("price", m));
            None
        }
    };
    let Some(latest) = view.versions.last() else {
        problems.push(Problem::new("price", "the price has no current version to change; set price first"));
        return Err(problems);
    };
    if let Some(new) = new
        && new.currency != latest.price.currency
    {
        problems.push(Problem::new(
            "price.unit",
            format!(
                "the price is in {}; a price in another currency is another productOfferingPrice",
                latest.price.currency
            ),
        ));
    }
    if effective_from <= latest.valid_from {
        problems.push(Problem::new(
            "effectiveFrom",
            format!("must be after the latest version's start ({})", latest.valid_from.to_rfc3339()),
        ));
    }
    if effective_from < now {
        problems.push(Problem::new("effectiveFrom", "must not be in the past"));
    }
    if view.versions.len() >= MAX_PRICE_VERSIONS {
        problems.push(Problem::new("priceVersion", format!("at most {MAX_PRICE_VERSIONS} versions are kept")));
    }
    let (Some(new), true) = (new, problems.is_empty()) else { return Err(problems) };
    let mut versions: Vec<Value> = view.versions.iter().map(version_json).collect();
    let number = latest.version + 1;
    versions.push(version_json(&PriceVersion { version: number, price: new, valid_from: effective_from }));
    let obj = doc.as_object_mut().ok_or_else(|| vec![Problem::new("(document)", "must be a JSON object")])?;
    obj.insert("priceVersion".into(), Value::Array(versions));
    obj.insert("price".into(), money_to_json(&new));
    obj.insert("version".into(), Value::String(number.to_string()));
    Ok(())
}

fn version_json(v: &PriceVersion) -> Value {
    let mut j = json!({"version": v.version.to_string(), "price": money_to_json(&v.price)});
    if v.valid_from != epoch() {
        j["validFor"] = json!({"startDateTime": v.valid_from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn eur(x: i64) -> Money {
        Money::new(Decimal::new(x, 2), Currency::new("EUR").unwrap())
    }

    #[test]
    fn the_kits_minimal_price_is_readable_but_incomplete() {
        let v = json!({"name": "Recurring Charge", "isBundle": false, "priceType": "recurring"});
        let p = PriceView::read(&v).unwrap();
        let problems = p.completeness();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["price", "recurringChargePeriodType", "taxCategory"]);
    }

    #[test]
    fn wrong_types_and_misplaced_attributes_name_the_field() {
        let e = PriceView::read(&json!({"name": "x", "priceType": "monthly"})).unwrap_err();
        assert_eq!(e[0].field, "priceType");
        let e =
            PriceView::read(&json!({"name": "x", "priceType": "oneTime", "price": {"unit": "EUR", "value": "abc"}}))
                .unwrap_err();
        assert_eq!(e[0].field, "price");
        let e = PriceView::read(&json!({"name": "x", "priceType": "usage", "price": {"unit": "EUR", "value": 1}}))
            .unwrap_err();
        assert_eq!(e[0].field, "price");
        let e = PriceView::read(&json!({"priceType": "oneTime"})).unwrap_err();
        assert_eq!(e[0], Problem::new("name", "is mandatory"));
        let e = PriceView::read(&json!({"name": "x", "priceType": "recurring", "recurringChargePeriodLength": 0}))
            .unwrap_err();
        assert_eq!(e[0].field, "recurringChargePeriodLength");
    }

    #[test]
    fn price_change_appends_a_version_and_keeps_history() {
        let mut doc = json!({"id": "p1", "name": "Mobile M monthly", "priceType": "recurring",
            "recurringChargePeriodType": "month", "price": {"unit": "EUR", "value": 20},
            "validFor": {"startDateTime": "2026-01-01T00:00:00Z"}, "lifecycleStatus": "active"});
        let now = t("2026-03-01T00:00:00Z");
        apply_price_change(&mut doc, &json!({"unit": "EUR", "value": 22.5}), t("2026-04-01T00:00:00Z"), now).unwrap();
        assert_eq!(doc["version"], "2");
        assert_eq!(doc["price"], json!({"unit": "EUR", "value": 22.5}));
        assert_eq!(doc["priceVersion"][0]["price"]["value"], json!(20));
        let view = PriceView::read(&doc).unwrap();
        assert_eq!(view.versions.len(), 2);
        assert_eq!(view.current_version(t("2026-03-31T23:59:59Z")).unwrap().version, 1);
        assert_eq!(view.current_version(t("2026-04-01T00:00:00Z")).unwrap().version, 2);
        // Not before the latest version, not in the past, not another currency.
        let before =
            apply_price_change(&mut doc.clone(), &json!({"unit": "EUR", "value": 1}), t("2026-03-15T00:00:00Z"), now);
        assert!(before.unwrap_err().iter().any(|p| p.field == "effectiveFrom"));
        let usd =
            apply_price_change(&mut doc.clone(), &json!({"unit": "USD", "value": 1}), t("2026-05-01T00:00:00Z"), now);
        assert!(usd.unwrap_err().iter().any(|p| p.field == "price.unit"));
        let past = apply_price_change(
            &mut doc.clone(),
            &json!({"unit": "EUR", "value": 1}),
            t("2026-05-01T00:00:00Z"),
            t("2026-06-01T00:00:00Z"),
        );
        assert!(past.unwrap_err().iter().any(|p| p.message.contains("past")));
        // A document whose top-level price disagrees with its history is refused.
        let mut bad = doc.clone();
        bad["price"] = json!({"unit": "EUR", "value": 99});
        assert!(PriceView::read(&bad).is_err());
    }

    #[test]
    fn grandfathering_examples() {
        let vs = [
            PriceVersion { version: 1, price: eur(2000), valid_from: t("2026-01-01T00:00:00Z") },
            PriceVersion { version: 2, price: eur(2500), valid_from: t("2026-06-01T00:00:00Z") },
        ];
        let keep6 = Grandfathering { policy: GrandfatheringPolicy::KeepPurchasedPrice, duration_months: Some(6) };
        let apply = Grandfathering { policy: GrandfatheringPolicy::ApplyNewPrice, duration_months: None };
        let at = t("2026-07-01T00:00:00Z");
        assert_eq!(applicable_version(&vs, None, Some(1), at).unwrap().version, 1);
        assert_eq!(applicable_version(&vs, Some(&apply), Some(1), at).unwrap().version, 2);
        assert_eq!(applicable_version(&vs, Some(&keep6), Some(1), at).unwrap().version, 1);
        assert_eq!(applicable_version(&vs, Some(&keep6), Some(1), t("2026-12-01T00:00:00Z")).unwrap().version, 2);
        assert_eq!(applicable_version(&vs, None, None, at).unwrap().version, 2);
        assert!(applicable_version(&vs, None, Some(7), at).is_none());
    }

    fn versions_strategy() -> impl Strategy<Value = Vec<PriceVersion>> {
        prop::collection::vec((1i64..10_000, 1i64..400), 1..8).prop_map(|steps| {
            let mut from = t("2025-01-01T00:00:00Z");
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (cents, gap_days))| {
                    from += chrono::Duration::days(gap_days);
                    PriceVersion { version: i as u32 + 1, price: eur(cents), valid_from: from }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn applicable_version_follows_the_policy(
            vs in versions_strategy(),
            pick in 0usize..8,
            offset_days in 0i64..4000,
            months in prop::option::of(0u32..36),
            apply_new in any::<bool>(),
        ) {
            let bought = &vs[pick % vs.len()];
            let at = bought.valid_from + chrono::Duration::days(offset_days);
            let g = Grandfathering {
                policy: if apply_new { GrandfatheringPolicy::ApplyNewPrice } else { GrandfatheringPolicy::KeepPurchasedPrice },
                duration_months: months,
            };
            let got = applicable_version(&vs, Some(&g), Some(bought.version), at).unwrap();
            let current = current_version(&vs, at).unwrap();
            // Never a version older than the one bought, never one not yet in effect.
            prop_assert!(got.version >= bought.version);
            prop_assert!(got.valid_from <= at);
            // Never newer than what a new customer would get.
            prop_assert!(got.version <= current.version);
            if apply_new {
                prop_assert_eq!(got, current);
            } else if months.is_none() {
                prop_assert_eq!(got, bought);
            } else {
                let next = vs.iter().find(|v| v.version > bought.version);
                let protected = next.is_some_and(|n| at < n.valid_from.checked_add_months(Months::new(months.unwrap())).unwrap());
                prop_assert_eq!(got, if protected || next.is_none() { bought } else { current });
            }
            // Without grandfathering the purchased price is kept for ever.
            prop_assert_eq!(applicable_version(&vs, None, Some(bought.version), at).unwrap(), bought);
            // A new sale pays the version in effect.
            prop_assert_eq!(applicable_version(&vs, Some(&g), None, at).unwrap(), current);
        }
    }
}
