//! Tax rates (BSS extension resource `taxRate`): what a price's `taxCategory` costs in tax.
//!
//! ```json
//! {"id": "tax-standard-fr", "name": "Standard rate (FR)", "taxCategory": "standard",
//!  "jurisdiction": "FR", "rate": 20, "validFor": {"startDateTime": "2026-01-01T00:00:00Z"},
//!  "lifecycleStatus": "active"}
//! ```
//!
//! `rate` is a percentage read exactly (0 ≤ rate ≤ 100, a JSON number through its text or a
//! decimal string). `jurisdiction` is optional: a rate without one is the default rate of its
//! category, used where no rate names the requested jurisdiction ([`rate_for`]). Only `active`
//! rates apply, at a date inside their `validFor`. Two active rates of the same category and
//! jurisdiction may not overlap in time ([`overlap_rules`]), so the rate at a date is never
//! ambiguous.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use super::{Doc, Kind, Lifecycle, Problem, Snapshot, TimePeriod, decimal_from_json, take};

/// Longest `taxCategory` or `jurisdiction`, in characters.
pub const MAX_CODE_CHARS: usize = 64;

/// The typed view of a `taxRate` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRate {
    /// `id`.
    pub id: String,
    /// `taxCategory` (matches a price's `taxCategory`).
    pub tax_category: String,
    /// `jurisdiction` (absent: the category's default rate).
    pub jurisdiction: Option<String>,
    /// Percentage.
    pub rate: Decimal,
    /// `validFor`.
    pub valid_for: TimePeriod,
    /// `lifecycleStatus`.
    pub lifecycle: Lifecycle,
}

fn code(d: &Doc<'_>, field: &str, required: bool, problems: &mut Vec<Problem>) -> Option<String> {
    match take(problems, d.opt::<String>(field))? {
        None if required => {
            problems.push(Problem::new(field, "is mandatory"));
            None
        }
        None => None,
        Some(s) if s.trim().is_empty() || s.chars().count() > MAX_CODE_CHARS => {
            problems.push(Problem::new(field, format!("must be 1 to {MAX_CODE_CHARS} characters")));
            None
        }
        Some(s) => Some(s),
    }
}

impl TaxRate {
    /// Reads a document; every problem found is returned (naming its attribute).
    pub fn read(v: &Value) -> Result<TaxRate, Vec<Problem>> {
        let d = Doc::of(v).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let tax_category = code(&d, "taxCategory", true, &mut problems);
        let jurisdiction = code(&d, "jurisdiction", false, &mut problems);
        let rate = match d.raw("rate") {
            None => {
                problems.push(Problem::new("rate", "is mandatory (a percentage, e.g. 20)"));
                None
            }
            Some(r) => match decimal_from_json(r) {
                Ok(r) if r < Decimal::ZERO || r > Decimal::ONE_HUNDRED => {
                    problems.push(Problem::new("rate", "must be a percentage from 0 to 100"));
                    None
                }
                Ok(r) => Some(r),
                Err(m) => {
                    problems.push(Problem::new("rate", m));
                    None
                }
            },
        };
        let valid_for = take(&mut problems, d.valid_for());
        let lifecycle = take(&mut problems, d.lifecycle());
        match (tax_category, rate, valid_for, lifecycle) {
            (Some(tax_category), Some(rate), Some(valid_for), Some(lifecycle)) if problems.is_empty() => {
                Ok(TaxRate { id: d.id().to_string(), tax_category, jurisdiction, rate, valid_for, lifecycle })
            }
            _ => Err(problems),
        }
    }

    /// The tax on a net amount (unrounded).
    pub fn tax_on(&self, net: Decimal) -> Decimal {
        net * self.rate / Decimal::ONE_HUNDRED
    }
}

fn overlaps(a: &TimePeriod, b: &TimePeriod) -> bool {
    a.start_date_time.is_none_or(|s| b.end_date_time.is_none_or(|e| s < e))
        && b.start_date_time.is_none_or(|s| a.end_date_time.is_none_or(|e| s < e))
}

/// Adds a problem for every other active rate of the same category and jurisdiction whose
/// validity overlaps `t`'s (when `t` is active).
pub fn overlap_rules(t: &TaxRate, snap: &Snapshot, problems: &mut Vec<Problem>) {
    if t.lifecycle != Lifecycle::Active {
        return;
    }
    for other in snap.all(Kind::TaxRate).filter_map(|d| TaxRate::read(d).ok()) {
        if other.id != t.id
            && other.lifecycle == Lifecycle::Active
            && other.tax_category == t.tax_category
            && other.jurisdiction == t.jurisdiction
            && overlaps(&other.valid_for, &t.valid_for)
        {
            problems.push(Problem::new(
                "validFor",
                format!(
                    "overlaps the active rate {} of tax category {:?}{}; end one before the other starts",
                    other.id,
                    t.tax_category,
                    t.jurisdiction.as_deref().map(|j| format!(" in {j}")).unwrap_or_default()
                ),
            ));
        }
    }
}

/// The active rate of `category` at `at`: the one of `jurisdiction` if there is one, else the
/// category's default rate (no jurisdiction). `None`: the category has no rate there and then.
pub fn rate_for(snap: &Snapshot, category: &str, jurisdiction: Option<&str>, at: DateTime<Utc>) -> Option<TaxRate> {
    TaxRates::read(snap).rate_for(category, jurisdiction, at)
}

/// Every tax rate of a catalog snapshot, read once: for a caller that looks up many rates in one
/// snapshot (rating a batch looked them up per record, reading every rate document each time).
#[derive(Debug, Clone, Default)]
pub struct TaxRates(Vec<TaxRate>);

impl TaxRates {
    /// The snapshot's rates that read without a problem (others are never applied).
    pub fn read(snap: &Snapshot) -> TaxRates {
        TaxRates(snap.all(Kind::TaxRate).filter_map(|d| TaxRate::read(d).ok()).collect())
    }

    /// [`rate_for`] among these rates.
    pub fn rate_for(&self, category: &str, jurisdiction: Option<&str>, at: DateTime<Utc>) -> Option<TaxRate> {
        let applies =
            |t: &&TaxRate| t.lifecycle == Lifecycle::Active && t.tax_category == category && t.valid_for.contains(at);
        let pick = |j: Option<&str>| self.0.iter().filter(applies).find(|t| t.jurisdiction.as_deref() == j).cloned();
        jurisdiction.and_then(|j| pick(Some(j))).or_else(|| pick(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn rate(id: &str, cat: &str, j: Option<&str>, r: Value, from: &str, to: Option<&str>) -> Value {
        let mut v = json!({"id": id, "name": id, "taxCategory": cat, "rate": r, "lifecycleStatus": "active",
                           "validFor": {"startDateTime": from}});
        if let Some(j) = j {
            v["jurisdiction"] = json!(j);
        }
        if let Some(to) = to {
            v["validFor"]["endDateTime"] = json!(to);
        }
        v
    }

    #[test]
    fn rates_are_read_exactly_and_checked() {
        let t = TaxRate::read(&rate("a", "standard", None, json!(5.5), "2026-01-01T00:00:00Z", None)).unwrap();
        assert_eq!(t.rate, Decimal::from_str("5.5").unwrap());
        assert_eq!(t.tax_on(Decimal::from(10)), Decimal::from_str("0.55").unwrap());
        let fields = |v: Value| TaxRate::read(&v).unwrap_err().into_iter().map(|p| p.field).collect::<Vec<_>>();
        assert_eq!(fields(json!({"name": "x", "rate": 101})), ["taxCategory", "rate"]);
        assert_eq!(fields(json!({"taxCategory": "s", "rate": "abc"})), ["rate"]);
        assert_eq!(
            fields(json!({"taxCategory": "", "jurisdiction": 3, "rate": -1})),
            ["taxCategory", "jurisdiction", "rate"]
        );
    }

    #[test]
    fn the_jurisdiction_rate_wins_over_the_default_and_dates_choose() {
        let mut s = Snapshot::new();
        s.insert(
            Kind::TaxRate,
            rate("std", "standard", None, json!(20), "2026-01-01T00:00:00Z", Some("2027-01-01T00:00:00Z")),
        );
        s.insert(Kind::TaxRate, rate("std27", "standard", None, json!(21), "2027-01-01T00:00:00Z", None));
        s.insert(Kind::TaxRate, rate("std-de", "standard", Some("DE"), json!(19), "2026-01-01T00:00:00Z", None));
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(rate_for(&s, "standard", None, at("2026-06-01T00:00:00Z")).unwrap().id, "std");
        assert_eq!(rate_for(&s, "standard", Some("FR"), at("2026-06-01T00:00:00Z")).unwrap().id, "std");
        assert_eq!(rate_for(&s, "standard", Some("DE"), at("2026-06-01T00:00:00Z")).unwrap().id, "std-de");
        assert_eq!(rate_for(&s, "standard", None, at("2027-01-01T00:00:00Z")).unwrap().id, "std27");
        assert!(rate_for(&s, "standard", None, at("2025-06-01T00:00:00Z")).is_none());
        assert!(rate_for(&s, "reduced", None, at("2026-06-01T00:00:00Z")).is_none());
        // Read once (a batch's lookups): an unreadable document and a draft rate never apply.
        s.insert(Kind::TaxRate, json!({"id": "bad", "taxCategory": "standard", "rate": "x"}));
        let mut draft = rate("draft-de", "standard", Some("DE"), json!(7), "2026-01-01T00:00:00Z", None);
        draft["lifecycleStatus"] = json!("inDesign");
        s.insert(Kind::TaxRate, draft);
        let rates = TaxRates::read(&s);
        for (cat, j, t, expected) in [
            ("standard", None, "2026-06-01T00:00:00Z", Some("std")),
            ("standard", Some("FR"), "2026-06-01T00:00:00Z", Some("std")),
            ("standard", Some("DE"), "2026-06-01T00:00:00Z", Some("std-de")),
            ("standard", None, "2027-01-01T00:00:00Z", Some("std27")),
            ("standard", None, "2025-06-01T00:00:00Z", None),
            ("reduced", None, "2026-06-01T00:00:00Z", None),
        ] {
            assert_eq!(rates.rate_for(cat, j, at(t)).map(|r| r.id).as_deref(), expected, "{cat} {j:?} {t}");
        }
    }

    #[test]
    fn active_rates_of_one_category_and_jurisdiction_do_not_overlap() {
        let mut s = Snapshot::new();
        s.insert(
            Kind::TaxRate,
            rate("std", "standard", None, json!(20), "2026-01-01T00:00:00Z", Some("2027-01-01T00:00:00Z")),
        );
        let mut p = Vec::new();
        let next = rate("std2", "standard", None, json!(21), "2026-12-01T00:00:00Z", None);
        overlap_rules(&TaxRate::read(&next).unwrap(), &s, &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("std"), "{p:?}");
        let mut p = Vec::new();
        let after = rate("std2", "standard", None, json!(21), "2027-01-01T00:00:00Z", None);
        overlap_rules(&TaxRate::read(&after).unwrap(), &s, &mut p);
        let other_place = rate("std-de", "standard", Some("DE"), json!(19), "2026-01-01T00:00:00Z", None);
        overlap_rules(&TaxRate::read(&other_place).unwrap(), &s, &mut p);
        assert!(p.is_empty(), "{p:?}");
    }
}
