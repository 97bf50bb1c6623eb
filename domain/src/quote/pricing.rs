//! Pricing a quote: the catalog's basket check and pricing ([`crate::catalog::basket`]), then
//! taxes by tax category, then totals. Basket in, priced lines out — orders price the same way.
//!
//! - Items: `add` (a new product), `delete` (an existing product, by `product.id`), `modify` (an
//!   existing product; to another offering it is an upgrade when the current offering has an
//!   `upgradeTo` path to it, else a downgrade, which must then have a `downgradeTo` path; to the
//!   same offering it changes characteristics only and carries no charge).
//! - Every problem names its quote item when it has one ([`ItemProblem`]).
//! - Taxes: each line is taxed by its price's `taxCategory` at the rate in force at the quote
//!   date ([`crate::catalog::tax::rate_for`]; the quote's jurisdiction, else the category's
//!   default rate). Tax lines group the lines of one charge (price type and period) and one rate;
//!   each tax line is `rate × sum of its lines`, rounded once with the named rule. A line's own
//!   `taxIncludedAmount` is indicative (its tax rounded alone); the tax lines are what is owed.
//! - Totals per charge (price type and period) in the quote's one currency: net = sum of the
//!   rounded lines, tax = sum of its tax lines, gross = net + tax. So totals always add up.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::catalog::basket::{self, Action, Basket, Item, Line, MAX_QUANTITY, UsageLine};
use crate::catalog::offering::{OfferingView, RelationshipType};
use crate::catalog::price::{PeriodType, PriceType};
use crate::catalog::{Kind, Snapshot, tax};
use crate::money::{Currency, Money, RoundingRule};

/// Most items in one quote.
pub const MAX_ITEMS: usize = basket::MAX_ITEMS;

/// What a quote item does (TMF648 `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemAction {
    /// A new product.
    Add,
    /// Change an existing product (another offering, or characteristics).
    Modify,
    /// Stop an existing product.
    Delete,
}

/// One quote item, read from the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteItem {
    /// `id` (unique in the quote).
    pub id: String,
    /// `action`.
    pub action: ItemAction,
    /// `quantity` as sent (checked here: 1 to [`MAX_QUANTITY`]).
    pub quantity: i64,
    /// `productOffering.id`.
    pub offering_id: String,
    /// `product.id` (modify, delete).
    pub product_id: Option<String>,
}

/// A product the customer already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingProduct {
    /// Product id.
    pub id: String,
    /// Its offering.
    pub offering_id: String,
}

/// Who the quote is for, as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerView {
    /// Market segments (ids or names); `None`: unknown, not checked.
    pub segments: Option<Vec<String>>,
    /// Active (or suspended) products.
    pub products: Vec<ExistingProduct>,
}

/// What to price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingRequest {
    /// Items.
    pub items: Vec<QuoteItem>,
    /// Currency.
    pub currency: Currency,
    /// The quote date: validity, price versions, rules and tax rates at this date.
    pub at: DateTime<Utc>,
    /// Tax jurisdiction (e.g. a country code); `None`: the categories' default rates.
    pub jurisdiction: Option<String>,
    /// Rounding of lines and tax lines.
    pub rounding: RoundingRule,
}

/// Why a quote cannot be priced: the item (its `id`) and rule concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemProblem {
    /// The quote item's id, if the problem is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The attribute path or rule.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ItemProblem {
    fn new(item: Option<&str>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { item: item.map(str::to_string), field: field.into(), message: message.into() }
    }
}

/// Joins problems into one message (`quoteItem 2: excludes: ...; ...`).
pub fn describe(problems: &[ItemProblem]) -> String {
    problems
        .iter()
        .map(|p| match &p.item {
            Some(i) => format!("quoteItem {i}: {}: {}", p.field, p.message),
            None => format!("{}: {}", p.field, p.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A priced line with its tax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxedLine {
    /// The quote item's id.
    pub item_id: String,
    /// The catalog's priced line (net, rounded; discounts named).
    pub line: Line,
    /// The tax category.
    pub tax_category: String,
    /// The rate applied (percent).
    pub tax_rate: Decimal,
    /// The line's own tax, rounded alone (indicative; see the module doc).
    pub indicative_tax: Money,
}

/// A charge: price type and recurring period.
pub type Charge = (PriceType, Option<(PeriodType, u32)>);

/// Tax owed on the lines of one charge and one rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxLine {
    /// Which charge.
    pub charge: Charge,
    /// Tax category.
    pub tax_category: String,
    /// The rate's jurisdiction (`None`: the default rate).
    pub jurisdiction: Option<String>,
    /// The `taxRate` document.
    pub tax_rate_id: String,
    /// Percent.
    pub rate: Decimal,
    /// Sum of the lines taxed.
    pub taxable: Money,
    /// `rate × taxable`, rounded once.
    pub tax: Money,
}

/// Totals of one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeTotal {
    /// Which charge.
    pub charge: Charge,
    /// Sum of the lines.
    pub net: Money,
    /// Sum of the tax lines.
    pub tax: Money,
    /// net + tax.
    pub gross: Money,
}

/// A priced quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedQuote {
    /// Lines, in item order.
    pub lines: Vec<TaxedLine>,
    /// Usage prices (rated later).
    pub usage: Vec<(String, UsageLine)>,
    /// Tax lines.
    pub taxes: Vec<TaxLine>,
    /// Totals per charge.
    pub totals: Vec<ChargeTotal>,
}

fn offering(snap: &Snapshot, id: &str) -> Option<OfferingView> {
    snap.get(Kind::ProductOffering, id).and_then(|d| OfferingView::read(d).ok())
}

/// Checks and prices a quote for `customer` against the catalog `snap` (which holds the tax
/// rates too): every problem, each naming its item, or the priced quote.
pub fn price_quote(
    req: &PricingRequest,
    customer: &CustomerView,
    snap: &Snapshot,
) -> Result<PricedQuote, Vec<ItemProblem>> {
    let mut problems = Vec::new();
    if req.items.is_empty() || req.items.len() > MAX_ITEMS {
        problems.push(ItemProblem::new(None, "quoteItem", format!("a quote holds 1 to {MAX_ITEMS} items")));
    }
    let mut seen = std::collections::BTreeSet::new();
    // The basket, and for each basket item the quote item it comes from.
    let mut items = Vec::new();
    let mut origin: Vec<&str> = Vec::new();
    for it in &req.items {
        let id = Some(it.id.as_str());
        if !seen.insert(it.id.as_str()) {
            problems.push(ItemProblem::new(id, "id", format!("quote item id {} appears twice", it.id)));
        }
        if it.quantity < 1 || it.quantity > i64::from(MAX_QUANTITY) {
            problems.push(ItemProblem::new(
                id,
                "quantity",
                format!("must be 1 to {MAX_QUANTITY}, not {}", it.quantity),
            ));
            continue;
        }
        let quantity = u32::try_from(it.quantity).unwrap_or(1);
        let existing = it.product_id.as_deref().map(|p| customer.products.iter().find(|e| e.id == p));
        let (action, replaces) = match (it.action, existing) {
            (ItemAction::Add, _) => (Action::Add, None),
            (_, None) => {
                problems.push(ItemProblem::new(
                    id,
                    "product",
                    "modify and delete name the existing product (product.id)",
                ));
                continue;
            }
            (_, Some(None)) => {
                problems.push(ItemProblem::new(
                    id,
                    "product",
                    format!(
                        "product {} is not among the customer's active products",
                        it.product_id.as_deref().unwrap_or_default()
                    ),
                ));
                continue;
            }
            (ItemAction::Delete, Some(Some(p))) => {
                if p.offering_id != it.offering_id {
                    problems.push(ItemProblem::new(
                        id,
                        "productOffering",
                        format!("product {} is of offering {}, not {}", p.id, p.offering_id, it.offering_id),
                    ));
                    continue;
                }
                (Action::Remove, None)
            }
            // The same offering: characteristics only, no charge, nothing to check.
            (ItemAction::Modify, Some(Some(p))) if p.offering_id == it.offering_id => continue,
            (ItemAction::Modify, Some(Some(p))) => {
                let up = offering(snap, &p.offering_id)
                    .is_some_and(|o| o.related(RelationshipType::UpgradeTo).any(|t| t == it.offering_id));
                let down = offering(snap, &p.offering_id)
                    .is_some_and(|o| o.related(RelationshipType::DowngradeTo).any(|t| t == it.offering_id));
                let action = if up || !down { Action::Upgrade } else { Action::Downgrade };
                (action, Some(p.offering_id.clone()))
            }
        };
        items.push(Item { offering_id: it.offering_id.clone(), quantity, action, replaces });
        origin.push(&it.id);
    }
    let b = Basket {
        items,
        existing: customer.products.iter().map(|p| p.offering_id.clone()).collect(),
        market_segments: customer.segments.clone(),
        currency: req.currency,
        at: req.at,
    };
    if !b.items.is_empty() {
        for (i, p) in basket::check_items(&b, snap) {
            // The basket's own item-count rule is the quote's (reported above).
            if p.field == "items" {
                continue;
            }
            let field = p.field.strip_prefix(&format!("items[{}].", i.unwrap_or(usize::MAX))).unwrap_or(&p.field);
            problems.push(ItemProblem::new(i.map(|i| origin[i]), field, p.message));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let priced = basket::price(&b, snap, req.rounding)
        .map_err(|ps| ps.into_iter().map(|p| ItemProblem::new(None, p.field, p.message)).collect::<Vec<_>>())?;
    let mut lines = Vec::new();
    let mut groups: BTreeMap<(Charge, String, String), (tax::TaxRate, Decimal)> = BTreeMap::new();
    for line in priced.lines {
        let item_id = origin[line.item].to_string();
        let Some(category) = line.tax_category.clone() else {
            problems.push(ItemProblem::new(
                Some(&item_id),
                "taxCategory",
                format!("price {:?} ({}) has no tax category", line.price_name, line.price_id),
            ));
            continue;
        };
        let Some(rate) = tax::rate_for(snap, &category, req.jurisdiction.as_deref(), req.at) else {
            let place = req.jurisdiction.as_deref().map(|j| format!(" in {j}")).unwrap_or_default();
            problems.push(ItemProblem::new(
                Some(&item_id),
                "taxCategory",
                format!(
                    "no active tax rate for tax category {category:?}{place} on {} (price {:?})",
                    req.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    line.price_name
                ),
            ));
            continue;
        };
        let charge = (line.price_type, line.period);
        let group =
            groups.entry((charge, category.clone(), rate.id.clone())).or_insert_with(|| (rate.clone(), Decimal::ZERO));
        group.1 += line.amount.amount;
        let indicative_tax = Money::new(rate.tax_on(line.amount.amount), req.currency).round(req.rounding);
        lines.push(TaxedLine { item_id, tax_category: category, tax_rate: rate.rate, indicative_tax, line });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let taxes: Vec<TaxLine> = groups
        .into_iter()
        .map(|((charge, tax_category, tax_rate_id), (rate, taxable))| TaxLine {
            charge,
            tax_category,
            jurisdiction: rate.jurisdiction.clone(),
            tax_rate_id,
            rate: rate.rate,
            taxable: Money::new(taxable, req.currency),
            tax: Money::new(rate.tax_on(taxable), req.currency).round(req.rounding),
        })
        .collect();
    let totals = priced
        .totals
        .iter()
        .map(|t| {
            let charge = (t.price_type, t.period);
            let tax: Decimal = taxes.iter().filter(|x| x.charge == charge).map(|x| x.tax.amount).sum();
            ChargeTotal {
                charge,
                net: t.amount,
                tax: Money::new(tax, req.currency),
                gross: Money::new(t.amount.amount + tax, req.currency),
            }
        })
        .collect();
    let usage = priced.usage.into_iter().map(|u| (origin[u.item].to_string(), u)).collect();
    Ok(PricedQuote { lines, usage, taxes, totals })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        let pop = |id: &str, t: &str, v: &str, tax: &str| {
            let mut p = json!({"id": id, "name": id, "priceType": t, "price": {"unit": "EUR", "value": v},
                               "taxCategory": tax, "lifecycleStatus": "active"});
            if t == "recurring" {
                p["recurringChargePeriodType"] = json!("month");
            }
            p
        };
        for p in [
            pop("p-bb", "recurring", "40", "standard"),
            pop("p-mob", "recurring", "19.99", "standard"),
            pop("p-mob-l", "recurring", "29.99", "standard"),
            pop("p-act", "oneTime", "10", "standard"),
            pop("p-tv", "recurring", "9.99", "reduced"),
            pop("p-exotic", "oneTime", "5", "luxury"),
        ] {
            s.insert(Kind::ProductOfferingPrice, p);
        }
        let off = |id: &str, prices: &[&str], rels: Value| {
            json!({"id": id, "name": id, "lifecycleStatus": "active",
                   "productOfferingPrice": prices.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
                   "productOfferingRelationship": rels})
        };
        s.insert(Kind::ProductOffering, off("bb", &["p-bb"], json!([])));
        s.insert(Kind::ProductOffering, off("dsl", &[], json!([{"id": "bb", "relationshipType": "excludes"}])));
        s.insert(Kind::ProductOffering, off("tv", &["p-tv"], json!([{"id": "bb", "relationshipType": "addOnOf"}])));
        s.insert(
            Kind::ProductOffering,
            off("mob", &["p-mob", "p-act"], json!([{"id": "mob-l", "relationshipType": "upgradeTo"}])),
        );
        s.insert(Kind::ProductOffering, off("mob-l", &["p-mob-l"], json!([])));
        s.insert(Kind::ProductOffering, off("exotic", &["p-exotic"], json!([])));
        let mut biz = off("biz", &["p-bb"], json!([]));
        biz["marketSegment"] = json!([{"id": "business", "name": "Business"}]);
        s.insert(Kind::ProductOffering, biz);
        // Two stackable rules on the mobile plan (10% then 2 EUR) and a non-stackable one of
        // lower priority that is skipped.
        let rule = |id: &str, discount: Value, priority: i64, stackable: bool| {
            json!({"id": id, "name": format!("rule {id}"), "appliesTo": [{"id": "mob"}], "priceType": "recurring",
                   "condition": {"customerHasOneOf": [{"id": "bb"}]}, "discount": discount,
                   "priority": priority, "stackable": stackable, "lifecycleStatus": "active"})
        };
        s.insert(Kind::PricingRule, rule("r10", json!({"percentage": 10}), 20, true));
        s.insert(Kind::PricingRule, rule("r2", json!({"amount": {"unit": "EUR", "value": 2}}), 10, true));
        s.insert(Kind::PricingRule, rule("r-low", json!({"percentage": 50}), 1, false));
        let tax = |id: &str, cat: &str, j: Option<&str>, rate: &str| {
            let mut t = json!({"id": id, "name": id, "taxCategory": cat, "rate": rate, "lifecycleStatus": "active"});
            if let Some(j) = j {
                t["jurisdiction"] = json!(j);
            }
            t
        };
        s.insert(Kind::TaxRate, tax("t-std", "standard", None, "20"));
        s.insert(Kind::TaxRate, tax("t-red", "reduced", None, "10"));
        s.insert(Kind::TaxRate, tax("t-std-de", "standard", Some("DE"), "19"));
        s
    }

    fn item(id: &str, offering: &str, qty: i64) -> QuoteItem {
        QuoteItem {
            id: id.into(),
            action: ItemAction::Add,
            quantity: qty,
            offering_id: offering.into(),
            product_id: None,
        }
    }

    fn req(items: Vec<QuoteItem>) -> PricingRequest {
        PricingRequest {
            items,
            currency: Currency::new("EUR").unwrap(),
            at: "2026-06-01T00:00:00Z".parse().unwrap(),
            jurisdiction: None,
            rounding: RoundingRule::HalfEven,
        }
    }

    #[test]
    fn stacked_discounts_and_taxes_by_category() {
        let s = snap();
        let q = price_quote(
            &req(vec![item("1", "mob", 1), item("2", "bb", 1), item("3", "tv", 2)]),
            &CustomerView::default(),
            &s,
        )
        .unwrap();
        let mob = q.lines.iter().find(|l| l.line.price_id == "p-mob").unwrap();
        // 19.99 − 10% = 17.991, − 2 = 15.991 → 15.99; the non-stackable rule is skipped.
        assert_eq!(mob.line.amount.amount, d("15.99"));
        let names: Vec<&str> = mob.line.discounts.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["rule r10", "rule r2"]);
        assert_eq!(mob.tax_rate, d("20"));
        let tv = q.lines.iter().find(|l| l.line.price_id == "p-tv").unwrap();
        assert_eq!(
            (tv.line.amount.amount, tv.tax_category.as_str(), tv.item_id.as_str()),
            (d("19.98"), "reduced", "3")
        );
        // Recurring: standard 15.99 + 40 = 55.99 → 11.198 → 11.20; reduced 19.98 → 1.998 → 2.00.
        let rec = (PriceType::Recurring, Some((PeriodType::Month, 1)));
        let std = q.taxes.iter().find(|t| t.charge == rec && t.tax_category == "standard").unwrap();
        assert_eq!((std.taxable.amount, std.tax.amount), (d("55.99"), d("11.20")));
        let red = q.taxes.iter().find(|t| t.charge == rec && t.tax_category == "reduced").unwrap();
        assert_eq!(red.tax.amount, d("2.00"));
        let total = q.totals.iter().find(|t| t.charge == rec).unwrap();
        assert_eq!((total.net.amount, total.tax.amount, total.gross.amount), (d("75.97"), d("13.20"), d("89.17")));
        let one_time = q.totals.iter().find(|t| t.charge.0 == PriceType::OneTime).unwrap();
        assert_eq!((one_time.net.amount, one_time.gross.amount), (d("10"), d("12.00")));
        // The jurisdiction's own rate wins; the default applies where it has none.
        let mut de = req(vec![item("1", "bb", 1), item("2", "tv", 1)]);
        de.jurisdiction = Some("DE".into());
        let q = price_quote(&de, &CustomerView::default(), &s).unwrap();
        let rates: Vec<(&str, Decimal)> = q.taxes.iter().map(|t| (t.tax_rate_id.as_str(), t.rate)).collect();
        assert_eq!(rates, [("t-red", d("10")), ("t-std-de", d("19"))]);
    }

    #[test]
    fn every_problem_names_its_item() {
        let s = snap();
        let customer = CustomerView {
            segments: Some(vec!["residential".into()]),
            products: vec![ExistingProduct { id: "prod-1".into(), offering_id: "bb".into() }],
        };
        let e = price_quote(
            &req(vec![item("a", "nope", 1), item("b", "dsl", 1), item("c", "mob", 0), item("d", "biz", 1)]),
            &customer,
            &s,
        )
        .unwrap_err();
        let got: Vec<(Option<&str>, &str)> = e.iter().map(|p| (p.item.as_deref(), p.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some("c"), "quantity"),
                (Some("a"), "productOffering"),
                (Some("d"), "marketSegment"),
                (Some("b"), "excludes")
            ]
        );
        assert!(describe(&e).contains("quoteItem b: excludes: offering \"dsl\" excludes \"bb\""), "{}", describe(&e));
        // A tax category without a rate is named.
        let e = price_quote(&req(vec![item("x", "exotic", 1)]), &customer, &s).unwrap_err();
        assert_eq!(e[0].item.as_deref(), Some("x"));
        assert!(e[0].message.contains("\"luxury\""), "{e:?}");
        // Modify and delete need an existing product; an upgrade follows the path.
        let mut up = item("u", "mob-l", 1);
        up.action = ItemAction::Modify;
        up.product_id = Some("prod-9".into());
        let e = price_quote(&req(vec![up.clone()]), &customer, &s).unwrap_err();
        assert_eq!(e[0].field, "product");
        let with_mob = CustomerView {
            segments: None,
            products: vec![ExistingProduct { id: "prod-9".into(), offering_id: "mob".into() }],
        };
        let q = price_quote(&req(vec![up]), &with_mob, &s).unwrap();
        assert_eq!(q.lines[0].line.price_id, "p-mob-l");
        let mut del = item("x", "mob", 1);
        del.action = ItemAction::Delete;
        del.product_id = Some("prod-9".into());
        let q = price_quote(&req(vec![del]), &with_mob, &s).unwrap();
        assert!(q.lines.is_empty() && q.totals.is_empty());
    }

    proptest! {
        /// Totals are sums of lines; each charge's tax is the sum of its per-category tax lines;
        /// gross = net + tax; every amount is rounded to the cent.
        #[test]
        fn totals_add_up(picks in prop::collection::vec((0usize..5, 1i64..40), 1..8), de in any::<bool>(), up in any::<bool>()) {
            let s = snap();
            let offers = ["mob", "bb", "tv", "mob-l", "mob"];
            let mut items: Vec<QuoteItem> =
                picks.iter().enumerate().map(|(i, (o, q))| item(&i.to_string(), offers[*o], *q)).collect();
            items.push(item("host", "bb", 1));
            let mut r = req(items);
            r.jurisdiction = de.then(|| "DE".to_string());
            if up { r.rounding = RoundingRule::HalfUp; }
            let q = price_quote(&r, &CustomerView::default(), &s).unwrap();
            let net: Decimal = q.lines.iter().map(|l| l.line.amount.amount).sum();
            prop_assert_eq!(net, q.totals.iter().map(|t| t.net.amount).sum::<Decimal>());
            for t in &q.totals {
                let lines: Decimal = q.lines.iter().filter(|l| (l.line.price_type, l.line.period) == t.charge).map(|l| l.line.amount.amount).sum();
                prop_assert_eq!(lines, t.net.amount);
                let tax: Decimal = q.taxes.iter().filter(|x| x.charge == t.charge).map(|x| x.tax.amount).sum();
                prop_assert_eq!(tax, t.tax.amount);
                prop_assert_eq!(t.gross.amount, t.net.amount + t.tax.amount);
                prop_assert_eq!(t.tax.amount, t.tax.amount.round_dp(2));
            }
            for x in &q.taxes {
                let taxable: Decimal = q.lines.iter()
                    .filter(|l| (l.line.price_type, l.line.period) == x.charge && l.tax_category == x.tax_category)
                    .map(|l| l.line.amount.amount).sum();
                prop_assert_eq!(taxable, x.taxable.amount);
                prop_assert!((x.tax.amount - taxable * x.rate / Decimal::ONE_HUNDRED).abs() <= d("0.005"));
            }
        }
    }
}
