//! Quotes (TMF648 `quote`): pricing a basket for a customer or a prospect with its discounts and
//! taxes, and the quote lifecycle. Tested natively: `cargo test -p bss-domain quote`.
//!
//! Design decisions:
//! - A quote is its TMF648 JSON document; the server owns `state`, `quoteItem[].quoteItemPrice`,
//!   `quoteTotalPrice`, `quoteDate` (default: now) and `validFor.endDateTime` (default:
//!   [`DEFAULT_VALIDITY_DAYS`] after the quote date). [`QuoteDoc::read`] reads what the client
//!   sends, naming every problem.
//! - Who: `relatedParty` has a `customer` (by `id`) or a `prospect` (`name`, optional
//!   `marketSegment`, no id). A prospect's quote is priced like a new customer's (no existing
//!   products) and cannot be accepted until it names a customer.
//! - Pricing ([`pricing`]) reuses the catalog's basket check and pricing, then taxes lines by
//!   the `taxRate` of their price's `taxCategory` at the quote date ([`crate::catalog::tax`]).
//! - The lifecycle is a closed table ([`state`]).
//! - TMF648 shapes ([`item_prices`], [`total_prices`]): each line is a `QuotePrice`
//!   (`priceType`, `recurringChargePeriod`, `price {dutyFreeAmount, taxIncludedAmount, taxRate,
//!   taxCategory}`, `priceAlteration [{name of the rule, pricingRule, price}]`); totals per
//!   charge carry `taxAmount` and their `taxLine`s (extension attributes).

pub mod pricing;
pub mod state;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::catalog::money_to_json;
use crate::catalog::price::PriceType;
use crate::money::{Currency, Money};
use pricing::{Charge, ItemAction, ItemProblem, PricedQuote, QuoteItem};

/// Days a quote stays valid when the client does not say.
pub const DEFAULT_VALIDITY_DAYS: i64 = 30;
/// Longest quote item id, party name, jurisdiction.
pub const MAX_TEXT_CHARS: usize = 200;
/// Most characteristics per item.
pub const MAX_CHARACTERISTICS: usize = 50;

/// Who a quote is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    /// A customer (`relatedParty` with role `customer` and an id).
    Customer {
        /// Customer id.
        id: String,
    },
    /// A prospect (`relatedParty` with role `prospect`, no id).
    Prospect {
        /// Name, if given.
        name: Option<String>,
        /// Market segment, if given.
        segment: Option<String>,
    },
}

/// What a quote document asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteDoc {
    /// Who.
    pub party: Party,
    /// `billingAccount.id`.
    pub billing_account: Option<String>,
    /// `quoteDate`.
    pub quote_date: Option<DateTime<Utc>>,
    /// `validFor.endDateTime`.
    pub valid_until: Option<DateTime<Utc>>,
    /// `currency`.
    pub currency: Option<Currency>,
    /// `jurisdiction`.
    pub jurisdiction: Option<String>,
    /// `state` (absent on a create).
    pub state: Option<state::QuoteState>,
    /// `quoteItem`.
    pub items: Vec<QuoteItem>,
}

fn p(field: impl Into<String>, message: impl Into<String>) -> ItemProblem {
    ItemProblem { item: None, field: field.into(), message: message.into() }
}

fn text(v: Option<&Value>, field: &str, problems: &mut Vec<ItemProblem>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TEXT_CHARS => Some(s.clone()),
        Some(_) => {
            problems.push(p(field, format!("must be a text of 1 to {MAX_TEXT_CHARS} characters")));
            None
        }
    }
}

fn time(v: Option<&Value>, field: &str, problems: &mut Vec<ItemProblem>) -> Option<DateTime<Utc>> {
    let s = text(v, field, problems)?;
    match DateTime::parse_from_rfc3339(&s) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            problems.push(p(field, format!("must be an RFC 3339 date-time, not {s:?}")));
            None
        }
    }
}

fn ref_id(v: Option<&Value>, field: &str, problems: &mut Vec<ItemProblem>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => {
            let id = text(o.get("id"), &format!("{field}.id"), problems);
            if id.is_none() && !o.contains_key("id") {
                problems.push(p(format!("{field}.id"), "is mandatory"));
            }
            id
        }
        Some(_) => {
            problems.push(p(field, "must be a reference {\"id\": ...}"));
            None
        }
    }
}

impl QuoteDoc {
    /// Reads a quote document (a create body or a patched document); every problem, each
    /// naming its attribute (and quote item).
    pub fn read(doc: &Value) -> Result<QuoteDoc, Vec<ItemProblem>> {
        let Some(d) = doc.as_object() else { return Err(vec![p("(body)", "must be a JSON object")]) };
        let mut problems = Vec::new();
        let party = read_party(d.get("relatedParty"), &mut problems);
        let billing_account = ref_id(d.get("billingAccount"), "billingAccount", &mut problems);
        let quote_date = time(d.get("quoteDate"), "quoteDate", &mut problems);
        let valid_until = match d.get("validFor") {
            None | Some(Value::Null) => None,
            Some(Value::Object(v)) => time(v.get("endDateTime"), "validFor.endDateTime", &mut problems),
            Some(_) => {
                problems.push(p("validFor", "must be an object {\"endDateTime\": ...}"));
                None
            }
        };
        let currency = text(d.get("currency"), "currency", &mut problems)
            .and_then(|c| Currency::new(&c).map_err(|e| problems.push(p("currency", e.to_string()))).ok());
        let jurisdiction = text(d.get("jurisdiction"), "jurisdiction", &mut problems);
        let state = text(d.get("state"), "state", &mut problems).and_then(|s| {
            let st = state::QuoteState::parse(&s);
            if st.is_none() {
                problems.push(p(
                    "state",
                    format!("{s:?} is not one of inProgress, approved, accepted, rejected, cancelled"),
                ));
            }
            st
        });
        let items = match d.get("quoteItem") {
            Some(Value::Array(list)) if list.len() <= pricing::MAX_ITEMS => {
                list.iter().enumerate().filter_map(|(i, v)| read_item(i, v, &mut problems)).collect()
            }
            Some(Value::Array(_)) => {
                problems.push(p("quoteItem", format!("a quote holds 1 to {} items", pricing::MAX_ITEMS)));
                Vec::new()
            }
            _ => {
                problems.push(p("quoteItem", "is mandatory: a list of items"));
                Vec::new()
            }
        };
        if let (Some(date), Some(end)) = (quote_date, valid_until)
            && end <= date
        {
            problems.push(p("validFor.endDateTime", "must be after the quote date"));
        }
        match party {
            Some(party) if problems.is_empty() => {
                Ok(QuoteDoc { party, billing_account, quote_date, valid_until, currency, jurisdiction, state, items })
            }
            _ => Err(problems),
        }
    }

    /// The customer id, unless a prospect.
    pub fn customer_id(&self) -> Option<&str> {
        match &self.party {
            Party::Customer { id } => Some(id),
            Party::Prospect { .. } => None,
        }
    }
}

fn read_party(v: Option<&Value>, problems: &mut Vec<ItemProblem>) -> Option<Party> {
    let Some(Value::Array(parties)) = v else {
        problems.push(p(
            "relatedParty",
            "is mandatory: [{\"id\", \"role\": \"customer\"}] or [{\"role\": \"prospect\", \"name\"}]",
        ));
        return None;
    };
    let role = |x: &Value, r: &str| x.get("role").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case(r));
    if let Some(c) = parties.iter().find(|x| role(x, "customer")) {
        let id = text(c.get("id"), "relatedParty.id", problems);
        if id.is_none() && c.get("id").is_none() {
            problems.push(p("relatedParty.id", "the customer's id is mandatory"));
        }
        return id.map(|id| Party::Customer { id });
    }
    if let Some(x) = parties.iter().find(|x| role(x, "prospect")) {
        if x.get("id").is_some_and(|v| !v.is_null()) {
            problems.push(p("relatedParty", "a prospect has no id; a known customer has the role customer"));
            return None;
        }
        let name = text(x.get("name"), "relatedParty.name", problems);
        let segment = text(x.get("marketSegment"), "relatedParty.marketSegment", problems);
        return Some(Party::Prospect { name, segment });
    }
    problems.push(p("relatedParty", "names no party with the role customer or prospect"));
    None
}

fn read_item(i: usize, v: &Value, problems: &mut Vec<ItemProblem>) -> Option<QuoteItem> {
    let Some(o) = v.as_object() else {
        problems.push(p(format!("quoteItem[{i}]"), "must be an object"));
        return None;
    };
    let before = problems.len();
    let at = |f: &str| format!("quoteItem[{i}].{f}");
    let id = match o.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 64 => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        None => Some((i + 1).to_string()),
        _ => {
            problems.push(p(at("id"), "must be a text of 1 to 64 characters"));
            None
        }
    };
    let action = match o.get("action").and_then(Value::as_str) {
        None if o.get("action").is_none_or(Value::is_null) => Some(ItemAction::Add),
        Some("add") => Some(ItemAction::Add),
        Some("modify") => Some(ItemAction::Modify),
        Some("delete") => Some(ItemAction::Delete),
        _ => {
            problems.push(p(at("action"), "must be add, modify or delete"));
            None
        }
    };
    let quantity = match o.get("quantity") {
        None | Some(Value::Null) => Some(1),
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(_) => {
            problems.push(p(at("quantity"), "must be a whole number"));
            None
        }
    };
    let offering = ref_id(o.get("productOffering"), &at("productOffering"), problems);
    if offering.is_none() && o.get("productOffering").is_none_or(Value::is_null) {
        problems.push(p(at("productOffering"), "is mandatory"));
    }
    let product = ref_id(o.get("product"), &at("product"), problems);
    match o.get("productCharacteristic") {
        None | Some(Value::Null) => {}
        Some(Value::Array(c)) if c.len() <= MAX_CHARACTERISTICS => {}
        Some(_) => {
            problems.push(p(at("productCharacteristic"), format!("must be a list of at most {MAX_CHARACTERISTICS}")))
        }
    }
    if problems.len() > before {
        for x in &mut problems[before..] {
            x.item.clone_from(&id);
        }
        return None;
    }
    Some(QuoteItem { id: id?, action: action?, quantity: quantity?, offering_id: offering?, product_id: product })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The default end of validity of a quote dated `date`.
pub fn default_valid_until(date: DateTime<Utc>) -> DateTime<Utc> {
    date + TimeDelta::days(DEFAULT_VALIDITY_DAYS)
}

fn charge_json(out: &mut Map<String, Value>, charge: Charge) {
    out.insert("priceType".into(), json!(charge.0.as_str()));
    if let (PriceType::Recurring, Some((period, length))) = charge {
        out.insert("recurringChargePeriod".into(), serde_json::to_value(period).unwrap_or(Value::Null));
        if length != 1 {
            out.insert("recurringChargePeriodLength".into(), json!(length));
        }
    }
}

fn number(d: rust_decimal::Decimal) -> Value {
    serde_json::from_str(&d.normalize().to_string()).unwrap_or_else(|_| Value::String(d.to_string()))
}

/// The `quoteItemPrice` list of one quote item (TMF648 `QuotePrice`s).
pub fn item_prices(priced: &PricedQuote, item_id: &str) -> Vec<Value> {
    priced
        .lines
        .iter()
        .filter(|l| l.item_id == item_id)
        .map(|t| {
            let l = &t.line;
            let mut v = Map::new();
            v.insert("@type".into(), json!("QuotePrice"));
            v.insert("name".into(), json!(l.price_name));
            charge_json(&mut v, (l.price_type, l.period));
            v.insert("productOfferingPrice".into(), json!({"id": l.price_id, "name": l.price_name}));
            v.insert("priceVersion".into(), json!(l.price_version.to_string()));
            v.insert("quantity".into(), json!(l.quantity));
            v.insert("unitPrice".into(), money_to_json(&l.unit_price));
            let included = Money::new(l.amount.amount + t.indicative_tax.amount, l.amount.currency);
            v.insert(
                "price".into(),
                json!({"@type": "Price", "dutyFreeAmount": money_to_json(&l.amount),
                       "taxIncludedAmount": money_to_json(&included), "taxRate": number(t.tax_rate),
                       "taxCategory": t.tax_category}),
            );
            let alterations: Vec<Value> = l
                .discounts
                .iter()
                .map(|f| {
                    let mut a = Map::new();
                    a.insert("@type".into(), json!("PriceAlteration"));
                    a.insert("name".into(), json!(f.name));
                    a.insert("pricingRule".into(), json!({"id": f.id, "name": f.name}));
                    charge_json(&mut a, (l.price_type, l.period));
                    a.insert(
                        "price".into(),
                        json!({"dutyFreeAmount": money_to_json(&Money::new(-f.amount, l.amount.currency))}),
                    );
                    Value::Object(a)
                })
                .collect();
            v.insert("priceAlteration".into(), Value::Array(alterations));
            Value::Object(v)
        })
        .collect()
}

/// `quoteTotalPrice`: per charge, net (`dutyFreeAmount`), `taxAmount`, gross
/// (`taxIncludedAmount`) and the `taxLine`s that make up the tax.
pub fn total_prices(priced: &PricedQuote) -> Vec<Value> {
    priced
        .totals
        .iter()
        .map(|t| {
            let mut v = Map::new();
            v.insert("@type".into(), json!("QuotePrice"));
            charge_json(&mut v, t.charge);
            v.insert(
                "price".into(),
                json!({"@type": "Price", "dutyFreeAmount": money_to_json(&t.net),
                       "taxAmount": money_to_json(&t.tax), "taxIncludedAmount": money_to_json(&t.gross)}),
            );
            let lines: Vec<Value> = priced
                .taxes
                .iter()
                .filter(|x| x.charge == t.charge)
                .map(|x| {
                    let mut l = json!({"taxCategory": x.tax_category, "taxRate": number(x.rate),
                        "taxRateRef": {"id": x.tax_rate_id}, "taxableAmount": money_to_json(&x.taxable),
                        "taxAmount": money_to_json(&x.tax)});
                    if let Some(j) = &x.jurisdiction {
                        l["jurisdiction"] = json!(j);
                    }
                    l
                })
                .collect();
            v.insert("taxLine".into(), Value::Array(lines));
            Value::Object(v)
        })
        .collect()
}

/// Writes the prices into the document: each item's `quoteItemPrice`, `quoteTotalPrice`, and the
/// server's defaults (`quoteDate`, `validFor.endDateTime`, `currency`).
pub fn apply_prices(
    doc: &mut Value,
    priced: &PricedQuote,
    quote_date: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    currency: Currency,
) {
    if let Some(items) = doc.get_mut("quoteItem").and_then(Value::as_array_mut) {
        for (i, item) in items.iter_mut().enumerate() {
            let id = match item.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => (i + 1).to_string(),
            };
            item["id"] = json!(id);
            if item.get("action").is_none_or(Value::is_null) {
                item["action"] = json!("add");
            }
            if item.get("quantity").is_none_or(Value::is_null) {
                item["quantity"] = json!(1);
            }
            item["quoteItemPrice"] = Value::Array(item_prices(priced, &id));
        }
    }
    doc["quoteTotalPrice"] = Value::Array(total_prices(priced));
    doc["quoteDate"] = json!(rfc3339(quote_date));
    if !doc.get("validFor").is_some_and(Value::is_object) {
        doc["validFor"] = json!({});
    }
    doc["validFor"]["endDateTime"] = json!(rfc3339(valid_until));
    doc["currency"] = json!(currency.code());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_names_every_problem_and_item() {
        let e = QuoteDoc::read(&json!({"relatedParty": [{"role": "customer"}], "quoteDate": "yesterday",
            "quoteItem": [{"id": "a", "quantity": 1.5, "productOffering": {"id": "x"}}, {"id": "b", "action": "buy"}]}))
        .unwrap_err();
        let got: Vec<(Option<&str>, &str)> = e.iter().map(|x| (x.item.as_deref(), x.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (None, "relatedParty.id"),
                (None, "quoteDate"),
                (Some("a"), "quoteItem[0].quantity"),
                (Some("b"), "quoteItem[1].action"),
                (Some("b"), "quoteItem[1].productOffering")
            ]
        );
        let ok = QuoteDoc::read(
            &json!({"relatedParty": [{"role": "prospect", "name": "Ada", "marketSegment": "residential"}],
            "quoteItem": [{"productOffering": {"id": "x"}, "quantity": -2}], "currency": "EUR"}),
        )
        .unwrap();
        assert_eq!(ok.party, Party::Prospect { name: Some("Ada".into()), segment: Some("residential".into()) });
        assert_eq!((ok.items[0].id.as_str(), ok.items[0].quantity), ("1", -2));
        assert!(ok.customer_id().is_none());
        let e =
            QuoteDoc::read(&json!({"relatedParty": [{"role": "prospect", "id": "c1"}], "quoteItem": []})).unwrap_err();
        assert_eq!(e[0].field, "relatedParty");
    }
}
