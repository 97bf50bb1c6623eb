//! Cross-product pricing rules (BSS extension resource `pricingRule`) and how they apply.
//!
//! ```json
//! {"name": "Mobile + broadband: 10% off mobile", "appliesTo": [{"id": "mobile-m"}],
//!  "priceType": "recurring", "condition": {"customerHasOneOf": [{"id": "fibre-1g"}]},
//!  "discount": {"percentage": 10}, "priority": 10, "stackable": false,
//!  "validFor": {...}, "lifecycleStatus": "active"}
//! ```
//!
//! `discount` is `{"percentage": p}` (0 < p ≤ 100) or `{"amount": {"unit", "value"}}` (a fixed
//! amount off each unit, in that currency only). The condition holds when the basket or the
//! customer's existing products contain one of the listed offerings.
//!
//! Stacking ([`apply_rules`]): the applicable rules are ordered by priority (higher first, then
//! id). If the first one is not stackable it applies alone; otherwise every stackable rule
//! applies, compounding in that order (a percentage applies to the amount left by the rules
//! before it) and non-stackable rules are skipped. A price never goes below zero.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::price::PriceType;
use super::{Doc, Lifecycle, Problem, Ref, TimePeriod, money_from_json, take};
use crate::money::Money;

/// `discount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    /// Percent off.
    Percentage(Decimal),
    /// Fixed amount off each unit.
    Fixed(Money),
}

/// `condition`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Offerings one of which the customer must also have (basket or existing products).
    #[serde(default)]
    pub customer_has_one_of: Vec<Ref>,
}

/// The typed view of a `pricingRule` document.
#[derive(Debug, Clone, PartialEq)]
pub struct PricingRule {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// Offerings discounted.
    pub applies_to: Vec<String>,
    /// Which prices of them (oneTime or recurring).
    pub price_type: PriceType,
    /// Offerings one of which must also be present (empty: no condition).
    pub customer_has_one_of: Vec<String>,
    /// The discount.
    pub discount: Discount,
    /// Higher first.
    pub priority: i64,
    /// Whether it combines with other stackable rules.
    pub stackable: bool,
    /// `validFor`.
    pub valid_for: TimePeriod,
    /// `lifecycleStatus`.
    pub lifecycle: Lifecycle,
}

impl PricingRule {
    /// Reads a document; every problem names its attribute.
    pub fn read(v: &Value) -> Result<PricingRule, Vec<Problem>> {
        let d = Doc::of(v).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let name = take(&mut problems, d.req::<String>("name"));
        let applies_to = take(&mut problems, d.refs("appliesTo"));
        let price_type = take(&mut problems, d.req::<PriceType>("priceType"));
        let condition = take(&mut problems, d.opt::<Condition>("condition"));
        let discount = take(&mut problems, d.req::<Value>("discount").and_then(|v| read_discount(&v)));
        let priority = take(&mut problems, d.opt::<i64>("priority"));
        let stackable = take(&mut problems, d.opt::<bool>("stackable"));
        let valid_for = take(&mut problems, d.valid_for());
        let lifecycle = take(&mut problems, d.lifecycle());
        if let Some(PriceType::Usage) = price_type {
            problems.push(Problem::new("priceType", "a pricing rule applies to oneTime or recurring prices"));
        }
        if let Some(a) = &applies_to
            && a.is_empty()
        {
            problems.push(Problem::new("appliesTo", "must name at least one offering"));
        }
        if let Some(vf) = &valid_for {
            vf.check("validFor", &mut problems);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(PricingRule {
            id: d.id().to_string(),
            name: name.unwrap_or_default(),
            applies_to: applies_to.unwrap_or_default().into_iter().map(|r| r.id).collect(),
            price_type: price_type.unwrap_or(PriceType::Recurring),
            customer_has_one_of: condition
                .flatten()
                .unwrap_or_default()
                .customer_has_one_of
                .into_iter()
                .map(|r| r.id)
                .collect(),
            discount: discount.flatten().unwrap_or(Discount::Percentage(Decimal::ZERO)),
            priority: priority.flatten().unwrap_or(0),
            stackable: stackable.flatten().unwrap_or(false),
            valid_for: valid_for.unwrap_or_default(),
            lifecycle: lifecycle.unwrap_or_default(),
        })
    }

    /// Whether the rule discounts a price of `offering` of type `price_type` at `at`, for a
    /// customer whose basket and existing products are `present`.
    pub fn applies(&self, offering: &str, price_type: PriceType, present: &[&str], at: DateTime<Utc>) -> bool {
        self.lifecycle == Lifecycle::Active
            && self.valid_for.contains(at)
            && self.price_type == price_type
            && self.applies_to.iter().any(|o| o == offering)
            && (self.customer_has_one_of.is_empty()
                || self.customer_has_one_of.iter().any(|c| c != offering && present.contains(&c.as_str())))
    }
}

fn read_discount(v: &Value) -> Result<Option<Discount>, Problem> {
    let obj = v.as_object().ok_or_else(|| Problem::new("discount", "must be an object"))?;
    match (obj.get("percentage"), obj.get("amount")) {
        (Some(p), None) => {
            let p = super::decimal_from_json(p).map_err(|m| Problem::new("discount.percentage", m))?;
            if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                return Err(Problem::new("discount.percentage", "must be above 0 and at most 100"));
            }
            Ok(Some(Discount::Percentage(p)))
        }
        (None, Some(a)) => {
            let m = money_from_json(a).map_err(|m| Problem::new("discount.amount", m))?;
            if m.amount <= Decimal::ZERO {
                return Err(Problem::new("discount.amount", "must be positive"));
            }
            Ok(Some(Discount::Fixed(m)))
        }
        _ => Err(Problem::new("discount", "must be {\"percentage\": p} or {\"amount\": {\"unit\", \"value\"}}")),
    }
}

/// A rule that fired on a price, and how much it took off (unrounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Rule id.
    pub id: String,
    /// Rule name.
    pub name: String,
    /// Amount taken off.
    pub amount: Decimal,
}

/// Applies the applicable `rules` to `gross` (see the module doc for the stacking semantics):
/// the net amount and the rules that fired. A fixed discount in another currency than `gross`
/// does not fire.
pub fn apply_rules(gross: Money, rules: &[&PricingRule]) -> (Decimal, Vec<Fired>) {
    let mut ordered: Vec<&PricingRule> = rules
        .iter()
        .copied()
        .filter(|r| !matches!(r.discount, Discount::Fixed(m) if m.currency != gross.currency))
        .collect();
    ordered.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
    let chosen: Vec<&PricingRule> = match ordered.first() {
        None => Vec::new(),
        Some(first) if !first.stackable => vec![*first],
        Some(_) => ordered.into_iter().filter(|r| r.stackable).collect(),
    };
    let mut net = gross.amount;
    let mut fired = Vec::new();
    for r in chosen {
        let off = match r.discount {
            Discount::Percentage(p) => net * p / Decimal::ONE_HUNDRED,
            Discount::Fixed(m) => m.amount.min(net),
        };
        net -= off;
        fired.push(Fired { id: r.id.clone(), name: r.name.clone(), amount: off });
    }
    (net.max(Decimal::ZERO), fired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;
    use serde_json::json;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn rule(id: &str, priority: i64, stackable: bool, discount: Value) -> PricingRule {
        PricingRule::read(&json!({"id": id, "name": format!("rule {id}"), "appliesTo": [{"id": "m"}],
            "priceType": "recurring", "discount": discount, "priority": priority, "stackable": stackable,
            "lifecycleStatus": "active"}))
        .unwrap()
    }

    fn eur(s: &str) -> Money {
        Money::new(d(s), Currency::new("EUR").unwrap())
    }

    #[test]
    fn reading_names_the_field() {
        let e = PricingRule::read(&json!({"name": "x", "appliesTo": [{"id": "m"}], "priceType": "recurring",
            "discount": {"percentage": 150}}))
        .unwrap_err();
        assert_eq!(e[0].field, "discount.percentage");
        let e = PricingRule::read(&json!({"name": "x", "appliesTo": "m", "priceType": "recurring",
            "discount": {"percentage": 5}}))
        .unwrap_err();
        assert_eq!(e[0].field, "appliesTo");
        let e = PricingRule::read(&json!({"name": "x", "appliesTo": [{"id": "m"}], "priceType": "usage",
            "discount": {"percentage": 5}}))
        .unwrap_err();
        assert_eq!(e[0].field, "priceType");
    }

    #[test]
    fn non_stackable_highest_priority_applies_alone() {
        let a = rule("a", 10, false, json!({"percentage": 10}));
        let b = rule("b", 5, true, json!({"percentage": 50}));
        let (net, fired) = apply_rules(eur("20"), &[&b, &a]);
        assert_eq!(net, d("18"));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].name, "rule a");
    }

    #[test]
    fn stackable_rules_compound_in_priority_order() {
        let a = rule("a", 10, true, json!({"percentage": 10}));
        let b = rule("b", 5, true, json!({"amount": {"unit": "EUR", "value": 2}}));
        let c = rule("c", 1, false, json!({"percentage": 90}));
        let (net, fired) = apply_rules(eur("20"), &[&c, &b, &a]);
        // 20 - 10% = 18, then - 2 = 16; the exclusive rule of lower priority is skipped.
        assert_eq!(net, d("16"));
        assert_eq!(fired.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // Fixed amounts in another currency do not fire; nothing goes below zero.
        let usd = rule("u", 99, true, json!({"amount": {"unit": "USD", "value": 2}}));
        let big = rule("g", 1, true, json!({"amount": {"unit": "EUR", "value": 500}}));
        let (net, fired) = apply_rules(eur("20"), &[&usd, &big]);
        assert_eq!(net, Decimal::ZERO);
        assert_eq!(fired.len(), 1);
    }

    #[test]
    fn conditions_and_validity() {
        let mut r = rule("a", 1, false, json!({"percentage": 10}));
        r.customer_has_one_of = vec!["bb".into()];
        let at = Utc::now();
        assert!(!r.applies("m", PriceType::Recurring, &["m"], at));
        assert!(r.applies("m", PriceType::Recurring, &["m", "bb"], at));
        assert!(!r.applies("m", PriceType::OneTime, &["m", "bb"], at));
        r.lifecycle = Lifecycle::InDesign;
        assert!(!r.applies("m", PriceType::Recurring, &["m", "bb"], at));
    }

    proptest! {
        #[test]
        fn discounts_never_increase_or_go_negative(
            cents in 0i64..1_000_000,
            specs in prop::collection::vec((0i64..20, any::<bool>(), 1u32..100, any::<bool>()), 0..6),
        ) {
            let rules: Vec<PricingRule> = specs.iter().enumerate().map(|(i, (prio, stack, x, pct))| {
                let disc = if *pct { json!({"percentage": x}) } else { json!({"amount": {"unit": "EUR", "value": x}}) };
                rule(&format!("r{i}"), *prio, *stack, disc)
            }).collect();
            let refs: Vec<&PricingRule> = rules.iter().collect();
            let gross = Money::new(Decimal::new(cents, 2), Currency::new("EUR").unwrap());
            let (net, fired) = apply_rules(gross, &refs);
            prop_assert!(net >= Decimal::ZERO && net <= gross.amount);
            let off: Decimal = fired.iter().map(|f| f.amount).sum();
            prop_assert_eq!(gross.amount - off, net);
            // Exclusive rule fired => it fired alone.
            if fired.iter().any(|f| !rules.iter().find(|r| r.id == f.id).unwrap().stackable) {
                prop_assert_eq!(fired.len(), 1);
            }
        }
    }
}
