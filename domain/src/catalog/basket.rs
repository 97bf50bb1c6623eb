//! What quotes and orders ask of the catalog: is this basket allowed for this customer at this
//! date ([`check`]), and what does it cost ([`price`])?
//!
//! Basket items are `add` (default), `remove` (an existing product), `upgrade` and `downgrade`
//! (replace the existing product `replaces` with the item's offering, along an `upgradeTo` /
//! `downgradeTo` relationship of the replaced offering). The customer's resulting products are
//! the existing ones, minus removed and replaced ones, plus the basket's, plus the members of
//! every bundle among them (recursively).
//!
//! Rules checked ([`check`]), each violation naming its rule:
//! - `orderable`: added offerings must exist, be `active` and valid at the date (a retired
//!   offering can still be rated and billed, never ordered);
//! - `requires`, `addOnOf`, `excludes` between the resulting products (every resulting product's
//!   rules are checked, so removing a product that another one requires is refused too);
//! - `upgradeTo`/`downgradeTo`: a change must follow a declared path;
//! - `marketSegment`: when the customer's segments are given, an offering restricted to segments
//!   must share one of them.
//!
//! Pricing ([`price`]): one line per non-usage price of each added offering in the requested
//! currency (a bundle is priced by its own prices, not its members'), at the version in effect at
//! the date; pricing rules apply per unit (see [`super::rule`] for the stacking semantics), then
//! the line is `net unit price × quantity`, rounded once with the named [`RoundingRule`]. Totals
//! are the sums of the rounded lines, per price type and period, so they always add up.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use super::offering::{OfferingView, RelationshipType};
use super::price::{PeriodType, PriceType, PriceView};
use super::rule::{Fired, PricingRule, apply_rules};
use super::{Kind, Lifecycle, Problem, Snapshot};
use crate::money::{Currency, Money, RoundingRule};

/// A kind of charge: price type and recurring period.
type ChargeKey = (PriceType, Option<(PeriodType, u32)>);

/// Most items in one basket.
pub const MAX_ITEMS: usize = 100;
/// Most existing products considered.
pub const MAX_EXISTING: usize = 1_000;
/// Largest quantity of one item.
pub const MAX_QUANTITY: u32 = 10_000;
/// Most bundle levels expanded.
const MAX_BUNDLE_DEPTH: usize = 16;

/// What an item does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// A new product.
    #[default]
    Add,
    /// Stop an existing product.
    Remove,
    /// Replace an existing product by a higher plan.
    Upgrade,
    /// Replace an existing product by a lower plan.
    Downgrade,
}

/// One basket item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The offering.
    pub offering_id: String,
    /// How many (≥ 1).
    pub quantity: u32,
    /// What it does.
    pub action: Action,
    /// For upgrade/downgrade: the existing product's offering it replaces.
    pub replaces: Option<String>,
}

/// A basket and its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basket {
    /// Items.
    pub items: Vec<Item>,
    /// Offerings of the customer's existing products.
    pub existing: Vec<String>,
    /// The customer's market segments (ids or names), if known.
    pub market_segments: Option<Vec<String>>,
    /// Currency to price in.
    pub currency: Currency,
    /// When (validity, price versions, rules).
    pub at: DateTime<Utc>,
}

fn offering(snap: &Snapshot, id: &str) -> Option<OfferingView> {
    snap.get(Kind::ProductOffering, id).and_then(|d| OfferingView::read(d).ok())
}

fn q(snap: &Snapshot, id: &str) -> String {
    format!("{:?}", snap.label(Kind::ProductOffering, id))
}

/// The customer's offerings after the basket (bundle members included).
pub fn resulting_products(basket: &Basket, snap: &Snapshot) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = basket.existing.iter().cloned().collect();
    for item in &basket.items {
        match item.action {
            Action::Remove => {
                set.remove(&item.offering_id);
            }
            Action::Upgrade | Action::Downgrade => {
                if let Some(r) = &item.replaces {
                    set.remove(r);
                }
                set.insert(item.offering_id.clone());
            }
            Action::Add => {
                set.insert(item.offering_id.clone());
            }
        }
    }
    let mut stack: Vec<(String, usize)> = set.iter().map(|s| (s.clone(), 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        if depth >= MAX_BUNDLE_DEPTH {
            continue;
        }
        if let Some(o) = offering(snap, &id) {
            for member in o.bundled_ids {
                if set.insert(member.clone()) {
                    stack.push((member, depth + 1));
                }
            }
        }
    }
    set
}

/// Every rule the basket breaks (empty: allowed). Each problem's `field` is the rule
/// (`orderable`, `requires`, `excludes`, `addOnOf`, `upgradeTo`, `downgradeTo`, `remove`,
/// `marketSegment`, `items[i]...`).
pub fn check(basket: &Basket, snap: &Snapshot) -> Vec<Problem> {
    check_items(basket, snap).into_iter().map(|(_, p)| p).collect()
}

/// [`check`], each problem with the index of the basket item it is about (quotes and orders
/// answer one reason per item): the item that adds the offering breaking the rule, else the one
/// that removes or replaces what the rule needs, else the one adding the other offering of the
/// rule; `None` for the basket as a whole, or for a rule that only the customer's existing
/// products or bundle members break.
pub fn check_items(basket: &Basket, snap: &Snapshot) -> Vec<(Option<usize>, Problem)> {
    let added = |id: &str| basket.items.iter().position(|it| it.offering_id == id && it.action != Action::Remove);
    let removed = |id: &str| {
        basket
            .items
            .iter()
            .position(|it| (it.action == Action::Remove && it.offering_id == id) || it.replaces.as_deref() == Some(id))
    };
    let mut p = Vec::new();
    // `who[k]` is the item of `p[k]`; per-item problems are attributed when the next item starts.
    let mut who: Vec<Option<usize>> = Vec::new();
    if basket.items.is_empty() || basket.items.len() > MAX_ITEMS {
        p.push(Problem::new("items", format!("a basket holds 1 to {MAX_ITEMS} items")));
    }
    if basket.existing.len() > MAX_EXISTING {
        p.push(Problem::new("existingProducts", format!("at most {MAX_EXISTING} existing products")));
    }
    who.resize(p.len(), None);
    for (i, item) in basket.items.iter().enumerate() {
        who.resize(p.len(), i.checked_sub(1));
        if item.quantity == 0 || item.quantity > MAX_QUANTITY {
            p.push(Problem::new(format!("items[{i}].quantity"), format!("must be 1 to {MAX_QUANTITY}")));
        }
        let Some(o) = offering(snap, &item.offering_id) else {
            p.push(Problem::new(
                format!("items[{i}].productOffering"),
                format!("offering {} does not exist", item.offering_id),
            ));
            continue;
        };
        let name = q(snap, &o.id);
        if item.action == Action::Remove {
            if !basket.existing.contains(&item.offering_id) {
                p.push(Problem::new("remove", format!("offering {name} is not among the customer's products")));
            }
            continue;
        }
        if !o.orderable_at(basket.at) {
            let why = match o.lifecycle {
                Lifecycle::Retired => "is retired and can no longer be ordered".to_string(),
                Lifecycle::InDesign => "is still inDesign and cannot be ordered yet".to_string(),
                Lifecycle::Active => format!("is not valid on {}", basket.at.to_rfc3339()),
            };
            p.push(Problem::new("orderable", format!("offering {name} {why}")));
        }
        if let (Some(segments), false) = (&basket.market_segments, o.segments.is_empty()) {
            let fits = o.segments.iter().any(|s| {
                segments.iter().any(|c| s.id.as_deref() == Some(c.as_str()) || s.name.as_deref() == Some(c.as_str()))
            });
            if !fits {
                let names: Vec<String> =
                    o.segments.iter().filter_map(|s| s.name.clone().or_else(|| s.id.clone())).collect();
                p.push(Problem::new(
                    "marketSegment",
                    format!("offering {name} is only for the market segments {}", names.join(", ")),
                ));
            }
        }
        if matches!(item.action, Action::Upgrade | Action::Downgrade) {
            let (rel, word) = if item.action == Action::Upgrade {
                (RelationshipType::UpgradeTo, "upgrade")
            } else {
                (RelationshipType::DowngradeTo, "downgrade")
            };
            match &item.replaces {
                None => p.push(Problem::new(
                    format!("items[{i}].replaces"),
                    format!("an {word} names the offering it replaces"),
                )),
                Some(from) if !basket.existing.contains(from) => p.push(Problem::new(
                    rel.as_str(),
                    format!(
                        "offering {} is not among the customer's products, so it cannot be replaced",
                        q(snap, from)
                    ),
                )),
                Some(from) => {
                    let allowed = offering(snap, from).is_some_and(|f| f.related(rel).any(|t| t == o.id));
                    if !allowed {
                        p.push(Problem::new(
                            rel.as_str(),
                            format!("offering {} has no {word} path to {name}", q(snap, from)),
                        ));
                    }
                }
            }
        }
    }
    who.resize(p.len(), basket.items.len().checked_sub(1));
    let result = resulting_products(basket, snap);
    let mut excluded_pairs = BTreeSet::new();
    for id in &result {
        let Some(o) = offering(snap, id) else { continue };
        let name = q(snap, id);
        for target in o.related(RelationshipType::Requires) {
            if !result.contains(target) {
                p.push(Problem::new(
                    "requires",
                    format!(
                        "offering {name} requires {}, which the basket and the customer's products do not contain",
                        q(snap, target)
                    ),
                ));
                who.push(added(id).or_else(|| removed(target)));
            }
        }
        let hosts: Vec<&str> = o.related(RelationshipType::AddOnOf).collect();
        if !hosts.is_empty() && !hosts.iter().any(|h| result.contains(*h)) {
            let names: Vec<String> = hosts.iter().map(|h| q(snap, h)).collect();
            p.push(Problem::new(
                "addOnOf",
                format!(
                    "offering {name} is an add-on of {}, which the basket and the customer's products do not contain",
                    names.join(" or ")
                ),
            ));
            who.push(added(id).or_else(|| hosts.iter().find_map(|h| removed(h))));
        }
        for target in o.related(RelationshipType::Excludes) {
            if result.contains(target) {
                let pair = if id.as_str() < target {
                    (id.clone(), target.to_string())
                } else {
                    (target.to_string(), id.clone())
                };
                if excluded_pairs.insert(pair) {
                    p.push(Problem::new(
                        "excludes",
                        format!(
                            "offering {name} excludes {} (incompatible): they cannot be held together",
                            q(snap, target)
                        ),
                    ));
                    who.push(added(id).or_else(|| added(target)));
                }
            }
        }
    }
    who.into_iter().zip(p).collect()
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Index of the basket item.
    pub item: usize,
    /// Offering id.
    pub offering_id: String,
    /// Price id.
    pub price_id: String,
    /// Price name.
    pub price_name: String,
    /// oneTime or recurring.
    pub price_type: PriceType,
    /// Period of a recurring price.
    pub period: Option<(PeriodType, u32)>,
    /// The price version sold.
    pub price_version: u32,
    /// Unit price before discounts.
    pub unit_price: Money,
    /// Quantity.
    pub quantity: u32,
    /// Rules that fired (amounts for the whole line, unrounded).
    pub discounts: Vec<Fired>,
    /// The line amount after discounts, rounded.
    pub amount: Money,
    /// `taxCategory`.
    pub tax_category: Option<String>,
}

/// A usage price of an added offering: rated later against its tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    /// Index of the basket item.
    pub item: usize,
    /// Offering id.
    pub offering_id: String,
    /// Price id.
    pub price_id: String,
    /// Tariff id.
    pub tariff_id: String,
}

/// A total: the sum of the lines of one price type and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    /// oneTime or recurring.
    pub price_type: PriceType,
    /// Period of recurring lines.
    pub period: Option<(PeriodType, u32)>,
    /// Sum of the rounded lines.
    pub amount: Money,
}

/// A priced basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Lines.
    pub lines: Vec<Line>,
    /// Usage prices.
    pub usage: Vec<UsageLine>,
    /// Totals per price type and period.
    pub totals: Vec<Total>,
}

/// Prices an allowed basket (call [`check`] first): see the module doc. An added offering whose
/// non-usage prices exist but none in the basket's currency is a problem.
pub fn price(basket: &Basket, snap: &Snapshot, rounding: RoundingRule) -> Result<Priced, Vec<Problem>> {
    let result = resulting_products(basket, snap);
    let present: Vec<&str> = result.iter().map(String::as_str).collect();
    let rules: Vec<PricingRule> = snap.all(Kind::PricingRule).filter_map(|d| PricingRule::read(d).ok()).collect();
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    let mut usage = Vec::new();
    for (i, item) in basket.items.iter().enumerate() {
        if item.action == Action::Remove {
            continue;
        }
        let Some(o) = offering(snap, &item.offering_id) else { continue };
        let prices: Vec<PriceView> = o
            .price_ids
            .iter()
            .filter_map(|id| snap.get(Kind::ProductOfferingPrice, id))
            .filter_map(|d| PriceView::read(d).ok())
            .filter(|p| p.lifecycle != Lifecycle::Retired && p.valid_for.contains(basket.at))
            .collect();
        // Charges by (type, period): each must be sold in the basket's currency, or the basket
        // would silently miss a charge.
        let mut charges: BTreeMap<ChargeKey, (Vec<String>, bool)> = BTreeMap::new();
        for p in &prices {
            if p.price_type == PriceType::Usage {
                if let Some(t) = &p.tariff_id {
                    usage.push(UsageLine {
                        item: i,
                        offering_id: o.id.clone(),
                        price_id: p.id.clone(),
                        tariff_id: t.clone(),
                    });
                }
                continue;
            }
            let period =
                (p.price_type == PriceType::Recurring).then(|| p.period_type.map(|t| (t, p.period_length))).flatten();
            let charge = charges.entry((p.price_type, period)).or_default();
            charge.0.push(format!("{:?}", p.name));
            let Some(version) = p.current_version(basket.at) else { continue };
            if version.price.currency != basket.currency {
                continue;
            }
            charge.1 = true;
            let applicable: Vec<&PricingRule> =
                rules.iter().filter(|r| r.applies(&o.id, p.price_type, &present, basket.at)).collect();
            let (net_unit, fired) = apply_rules(version.price, &applicable);
            let qty = Decimal::from(item.quantity);
            let amount = Money::new(net_unit * qty, basket.currency).round(rounding);
            lines.push(Line {
                item: i,
                offering_id: o.id.clone(),
                price_id: p.id.clone(),
                price_name: p.name.clone(),
                price_type: p.price_type,
                period: (p.price_type == PriceType::Recurring)
                    .then(|| p.period_type.map(|t| (t, p.period_length)))
                    .flatten(),
                price_version: version.version,
                unit_price: version.price,
                quantity: item.quantity,
                discounts: fired.into_iter().map(|f| Fired { amount: f.amount * qty, ..f }).collect(),
                amount,
                tax_category: p.tax_category.clone(),
            });
        }
        for ((price_type, _), (names, sold)) in charges {
            if !sold {
                problems.push(Problem::new(
                    "currency",
                    format!(
                        "offering {} has no {} price in {} at {} ({})",
                        q(snap, &o.id),
                        price_type.as_str(),
                        basket.currency,
                        basket.at.to_rfc3339(),
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let totals = totals(&lines, basket.currency);
    Ok(Priced { lines, usage, totals })
}

/// Sums of lines per price type and period (in first-seen order of the key).
pub fn totals(lines: &[Line], currency: Currency) -> Vec<Total> {
    let mut sums: BTreeMap<ChargeKey, Money> = BTreeMap::new();
    for l in lines {
        let e = sums.entry((l.price_type, l.period)).or_insert_with(|| Money::zero(currency));
        e.amount += l.amount.amount;
    }
    sums.into_iter().map(|((price_type, period), amount)| Total { price_type, period, amount }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::str::FromStr;

    fn at() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        let pop = |id: &str, t: &str, v: f64| {
            let mut p = json!({"id": id, "name": id, "priceType": t, "price": {"unit": "EUR", "value": v}, "lifecycleStatus": "active"});
            if t == "recurring" {
                p["recurringChargePeriodType"] = json!("month");
            }
            p
        };
        for p in [
            pop("bb-m", "recurring", 40.0),
            pop("mob-m", "recurring", 19.99),
            pop("mob-l", "recurring", 29.99),
            pop("mob-act", "oneTime", 10.0),
            pop("tv-m", "recurring", 9.99),
            pop("bundle-m", "recurring", 99.0),
        ] {
            s.insert(Kind::ProductOfferingPrice, p);
        }
        let off = |id: &str, name: &str, prices: &[&str], rels: Value| {
            json!({"id": id, "name": name, "lifecycleStatus": "active",
                   "productOfferingPrice": prices.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
                   "productOfferingRelationship": rels})
        };
        use serde_json::Value;
        s.insert(Kind::ProductOffering, off("bb", "Broadband 1G", &["bb-m"], json!([])));
        s.insert(
            Kind::ProductOffering,
            off("dsl", "DSL 20M", &[], json!([{"id": "bb", "relationshipType": "excludes"}])),
        );
        s.insert(
            Kind::ProductOffering,
            off("tv", "TV Sport", &["tv-m"], json!([{"id": "bb", "relationshipType": "addOnOf"}])),
        );
        s.insert(
            Kind::ProductOffering,
            off("mob-m", "Mobile M", &["mob-m", "mob-act"], json!([{"id": "mob-l", "relationshipType": "upgradeTo"}])),
        );
        s.insert(
            Kind::ProductOffering,
            off("mob-l", "Mobile L", &["mob-l"], json!([{"id": "mob-m", "relationshipType": "downgradeTo"}])),
        );
        s.insert(
            Kind::ProductOffering,
            off("sim", "Extra SIM", &[], json!([{"id": "mob-m", "relationshipType": "requires"}])),
        );
        let mut old = off("old", "Mobile Classic", &[], json!([]));
        old["lifecycleStatus"] = json!("retired");
        s.insert(Kind::ProductOffering, old);
        let mut bundle = off("ent", "Enterprise bundle", &["bundle-m"], json!([]));
        bundle["isBundle"] = json!(true);
        bundle["bundledProductOffering"] = json!([{"id": "bb"}, {"id": "mob-m"}]);
        s.insert(Kind::ProductOffering, bundle);
        s.insert(
            Kind::PricingRule,
            json!({"id": "r1", "name": "Mobile + broadband 10%", "appliesTo": [{"id": "mob-m"}, {"id": "mob-l"}],
            "priceType": "recurring", "condition": {"customerHasOneOf": [{"id": "bb"}]}, "discount": {"percentage": 10},
            "priority": 10, "stackable": false, "lifecycleStatus": "active"}),
        );
        s
    }

    fn basket(items: &[(&str, Action, Option<&str>)], existing: &[&str]) -> Basket {
        Basket {
            items: items
                .iter()
                .map(|(o, a, r)| Item {
                    offering_id: o.to_string(),
                    quantity: 1,
                    action: *a,
                    replaces: r.map(str::to_string),
                })
                .collect(),
            existing: existing.iter().map(|s| s.to_string()).collect(),
            market_segments: None,
            currency: eur(),
            at: at(),
        }
    }

    fn rules(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn add_on_needs_its_host() {
        let s = snap();
        let v = check(&basket(&[("tv", Action::Add, None)], &[]), &s);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].message,
            "offering \"TV Sport\" is an add-on of \"Broadband 1G\", which the basket and the customer's products do not contain"
        );
        assert!(check(&basket(&[("tv", Action::Add, None)], &["bb"]), &s).is_empty());
        assert!(check(&basket(&[("tv", Action::Add, None), ("bb", Action::Add, None)], &[]), &s).is_empty());
        // A bundle's members count.
        assert!(check(&basket(&[("tv", Action::Add, None)], &["ent"]), &s).is_empty());
        // Removing the host while keeping the add-on is refused too.
        assert_eq!(rules(&check(&basket(&[("bb", Action::Remove, None)], &["bb", "tv"]), &s)), ["addOnOf"]);
    }

    #[test]
    fn excludes_requires_retired_and_paths() {
        let s = snap();
        let v = check(&basket(&[("dsl", Action::Add, None)], &["bb"]), &s);
        assert_eq!(rules(&v), ["excludes"]);
        assert!(v[0].message.contains("\"DSL 20M\" excludes \"Broadband 1G\""), "{v:?}");
        assert_eq!(rules(&check(&basket(&[("sim", Action::Add, None)], &[]), &s)), ["requires"]);
        let v = check(&basket(&[("old", Action::Add, None)], &[]), &s);
        assert_eq!(rules(&v), ["orderable"]);
        assert!(v[0].message.contains("retired"));
        assert!(check(&basket(&[("mob-l", Action::Upgrade, Some("mob-m"))], &["mob-m"]), &s).is_empty());
        assert!(check(&basket(&[("mob-m", Action::Downgrade, Some("mob-l"))], &["mob-l"]), &s).is_empty());
        let v = check(&basket(&[("mob-m", Action::Upgrade, Some("mob-l"))], &["mob-l"]), &s);
        assert_eq!(rules(&v), ["upgradeTo"]);
        assert!(v[0].message.contains("has no upgrade path"), "{v:?}");
        assert_eq!(rules(&check(&basket(&[("nope", Action::Add, None)], &[]), &s)), ["items[0].productOffering"]);
        // Every violation is reported, not only the first.
        assert_eq!(check(&basket(&[("tv", Action::Add, None), ("sim", Action::Add, None)], &[]), &s).len(), 2);
    }

    #[test]
    fn problems_name_their_item() {
        let s = snap();
        let b = basket(&[("bb", Action::Add, None), ("dsl", Action::Add, None), ("old", Action::Add, None)], &[]);
        let v = check_items(&b, &s);
        let at: Vec<(Option<usize>, &str)> = v.iter().map(|(i, p)| (*i, p.field.as_str())).collect();
        assert_eq!(at, [(Some(2), "orderable"), (Some(1), "excludes")], "the item adding the offering that excludes");
        // A rule broken by an existing product alone names the item that adds the other side.
        let v = check_items(&basket(&[("dsl", Action::Add, None)], &["bb"]), &s);
        assert_eq!(v[0].0, Some(0));
        // Removing the host of an add-on names the removal.
        let v = check_items(&basket(&[("mob-m", Action::Add, None), ("bb", Action::Remove, None)], &["bb", "tv"]), &s);
        assert_eq!(v.iter().map(|(i, p)| (*i, p.field.as_str())).collect::<Vec<_>>(), [(Some(1), "addOnOf")]);
    }

    #[test]
    fn pricing_applies_the_cross_product_rule() {
        let s = snap();
        let b = basket(&[("mob-m", Action::Add, None), ("bb", Action::Add, None)], &[]);
        let priced = price(&b, &s, RoundingRule::HalfEven).unwrap();
        let mob: Vec<&Line> = priced.lines.iter().filter(|l| l.offering_id == "mob-m").collect();
        assert_eq!(mob.len(), 2);
        let monthly = mob.iter().find(|l| l.price_type == PriceType::Recurring).unwrap();
        // 19.99 - 10% = 17.991 → 17.99 (half-even).
        assert_eq!(monthly.amount.amount, Decimal::from_str("17.99").unwrap());
        assert_eq!(monthly.discounts[0].name, "Mobile + broadband 10%");
        let one_time = mob.iter().find(|l| l.price_type == PriceType::OneTime).unwrap();
        assert!(one_time.discounts.is_empty(), "the rule is for recurring prices");
        let rec = priced.totals.iter().find(|t| t.price_type == PriceType::Recurring).unwrap();
        assert_eq!(rec.amount.amount, Decimal::from_str("57.99").unwrap());
        // Without broadband no discount.
        let alone = price(&basket(&[("mob-m", Action::Add, None)], &[]), &s, RoundingRule::HalfEven).unwrap();
        assert!(alone.lines.iter().all(|l| l.discounts.is_empty()));
        // No price in the currency.
        let mut usd = b.clone();
        usd.currency = Currency::new("USD").unwrap();
        assert_eq!(rules(&price(&usd, &s, RoundingRule::HalfEven).unwrap_err()), ["currency", "currency", "currency"]);
    }

    proptest! {
        /// Soundness against an independent oracle: a basket passes the check exactly when the
        /// resulting products satisfy every requires / addOnOf / excludes rule and every added
        /// offering is orderable.
        #[test]
        fn check_agrees_with_the_rules(adds in prop::collection::vec(0usize..9, 1..5), existing in prop::collection::vec(0usize..9, 0..4)) {
            let s = snap();
            let ids = ["bb", "dsl", "tv", "mob-m", "mob-l", "sim", "old", "ent", "bb"];
            let b = basket(
                &adds.iter().map(|i| (ids[*i], Action::Add, None)).collect::<Vec<_>>(),
                &existing.iter().map(|i| ids[*i]).collect::<Vec<_>>(),
            );
            let result = resulting_products(&b, &s);
            let has = |x: &str| result.contains(x);
            let mut ok = adds.iter().all(|i| ids[*i] != "old");
            for id in &result {
                let o = OfferingView::read(s.get(Kind::ProductOffering, id).unwrap()).unwrap();
                ok &= o.related(RelationshipType::Requires).all(has);
                ok &= o.related(RelationshipType::Excludes).all(|x| !has(x));
                let hosts: Vec<&str> = o.related(RelationshipType::AddOnOf).collect();
                ok &= hosts.is_empty() || hosts.iter().any(|h| has(h));
            }
            let violations = check(&b, &s);
            prop_assert_eq!(violations.is_empty(), ok, "{:?}", violations);
        }
    }

    proptest! {
        #[test]
        fn totals_are_sums_of_lines(qty in prop::collection::vec(1u32..50, 1..6), pick in prop::collection::vec(0usize..4, 1..6)) {
            let s = snap();
            let ids = ["bb", "mob-m", "mob-l", "ent"];
            let mut b = basket(&[], &[]);
            for (i, p) in pick.iter().enumerate() {
                b.items.push(Item { offering_id: ids[*p].into(), quantity: qty[i % qty.len()], action: Action::Add, replaces: None });
            }
            let priced = price(&b, &s, RoundingRule::HalfEven).unwrap();
            let all: Decimal = priced.lines.iter().map(|l| l.amount.amount).sum();
            let tot: Decimal = priced.totals.iter().map(|t| t.amount.amount).sum();
            prop_assert_eq!(all, tot);
            for t in &priced.totals {
                let s: Decimal = priced.lines.iter().filter(|l| l.price_type == t.price_type && l.period == t.period).map(|l| l.amount.amount).sum();
                prop_assert_eq!(s, t.amount.amount);
            }
            for l in &priced.lines {
                prop_assert_eq!(l.amount.amount, l.amount.amount.round_dp(2), "lines are rounded to the cent");
                let gross = l.unit_price.amount * Decimal::from(l.quantity);
                prop_assert!(l.amount.amount <= gross.round_dp(2) + Decimal::new(1, 2));
            }
        }
    }
}
