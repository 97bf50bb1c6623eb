//! The catalog as one JSON document, for operators who keep their catalog in git: export every
//! resource of a tenant, import (validate the whole document, then upsert by id).
//!
//! ```json
//! {"taxRate": [...], "tariff": [...], "productSpecification": [...], "productOfferingPrice": [...],
//!  "productOffering": [...], "pricingRule": [...], "category": [...], "catalog": [...]}
//! ```
//!
//! Every member is optional; each document needs an `id` (1 to 128 characters of
//! `[A-Za-z0-9._:-]`, unique per kind). References may point at documents of the same import or
//! already stored. The whole document is validated against the stored catalog overlaid with it
//! ([`validate_import`]) before anything is written, so a bad document stores nothing. An export
//! (`@type`, `exportedAt`, server attributes `href`/`lastUpdate`) imports as it is; server
//! attributes are dropped ([`normalise`]) so re-importing the same file changes nothing.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

use super::{Kind, Problem, Snapshot, validate};

/// Most documents in one import.
pub const MAX_IMPORT_DOCS: usize = 5_000;
/// Longest id.
pub const MAX_ID_LEN: usize = 128;
/// Top-level members of the document that are not kinds.
const META: &[&str] = &["@type", "exportedAt", "@baseType", "@schemaLocation", "description"];

/// Whether `id` is an acceptable resource id (the key-value store's segment rule).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Server-side defaults and what the server owns: drops `href` and `lastUpdate` (the store
/// stamps them), sets `lifecycleStatus` to `inDesign` when absent.
pub fn normalise(doc: &mut Value) {
    if let Value::Object(m) = doc {
        m.remove("href");
        m.remove("lastUpdate");
        defaults(m);
    }
}

/// Defaults of every stored document: `lifecycleStatus` `inDesign`.
pub fn defaults(m: &mut Map<String, Value>) {
    if m.get("lifecycleStatus").is_none_or(Value::is_null) {
        m.insert("lifecycleStatus".into(), json!("inDesign"));
    }
}

/// Reads an import document into (kind, normalised document) pairs in dependency order.
pub fn parse_import(v: &Value) -> Result<Vec<(Kind, Value)>, Vec<Problem>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![Problem::new("(document)", "must be a JSON object with one array per resource kind")]);
    };
    let mut problems = Vec::new();
    for key in obj.keys() {
        if Kind::from_collection(key).is_none() && !META.contains(&key.as_str()) {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.collection()).collect();
            problems.push(Problem::new(key, format!("is not a resource kind ({})", kinds.join(", "))));
        }
    }
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let Some(list) = obj.get(kind.collection()) else { continue };
        let Some(list) = list.as_array() else {
            problems.push(Problem::new(kind.collection(), "must be an array of documents"));
            continue;
        };
        let mut ids = BTreeSet::new();
        for (i, doc) in list.iter().enumerate() {
            let at = format!("{kind}[{i}]");
            match doc.get("id").and_then(Value::as_str) {
                None => problems.push(Problem::new(at, "needs an id")),
                Some(id) if !valid_id(id) => problems
                    .push(Problem::new(at, format!("id {id:?} must be 1 to {MAX_ID_LEN} characters [A-Za-z0-9._:-]"))),
                Some(id) if !ids.insert(id.to_string()) => {
                    problems.push(Problem::new(at, format!("id {id} appears twice")))
                }
                Some(_) if !doc.is_object() => problems.push(Problem::new(at, "must be an object")),
                Some(_) => {
                    let mut d = doc.clone();
                    normalise(&mut d);
                    out.push((kind, d));
                }
            }
        }
    }
    if out.len() > MAX_IMPORT_DOCS {
        problems.push(Problem::new("(document)", format!("at most {MAX_IMPORT_DOCS} documents per import")));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Validates every document of an import against `current` overlaid with the import; the
/// resulting catalog, or every problem (each prefixed with `kind[id]`).
pub fn validate_import(docs: &[(Kind, Value)], current: &Snapshot) -> Result<Snapshot, Vec<Problem>> {
    let mut next = current.clone();
    for (kind, doc) in docs {
        next.insert(*kind, doc.clone());
    }
    let mut problems = Vec::new();
    for (kind, doc) in docs {
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
        let previous = current.get(*kind, id);
        if let Err(ps) = validate(*kind, doc, previous, &next) {
            for p in ps {
                problems.push(Problem::new(format!("{kind}[{id}].{}", p.field), p.message));
            }
        }
    }
    if problems.is_empty() { Ok(next) } else { Err(problems) }
}

/// The export document of a catalog.
pub fn export(snap: &Snapshot, exported_at: &str) -> Value {
    let mut out = Map::new();
    out.insert("@type".into(), json!("CatalogExport"));
    out.insert("exportedAt".into(), json!(exported_at));
    for kind in Kind::ALL {
        out.insert(kind.collection().into(), Value::Array(snap.all(kind).cloned().collect()));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::basket::{self, Action, Basket, Item};
    use crate::money::{Currency, RoundingRule};

    const SAMPLE: &str = include_str!("../../../infra/samples/catalog.json");

    fn sample() -> Snapshot {
        let v: Value = serde_json::from_str(SAMPLE).unwrap();
        let docs = parse_import(&v).unwrap();
        validate_import(&docs, &Snapshot::new()).unwrap_or_else(|e| panic!("{}", crate::catalog::describe(&e)))
    }

    #[test]
    fn the_sample_catalog_is_valid_and_usable() {
        let s = sample();
        assert!(s.count(Kind::ProductOffering) >= 6);
        assert!(s.count(Kind::Tariff) >= 3);
        // The TV add-on needs broadband; mobile + broadband gets the 10% rule.
        let b = |items: &[&str], existing: &[&str]| Basket {
            items: items
                .iter()
                .map(|o| Item { offering_id: o.to_string(), quantity: 1, action: Action::Add, replaces: None })
                .collect(),
            existing: existing.iter().map(|s| s.to_string()).collect(),
            market_segments: None,
            currency: Currency::new("EUR").unwrap(),
            at: "2026-06-01T00:00:00Z".parse().unwrap(),
        };
        let v = basket::check(&b(&["tv-sport"], &[]), &s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "addOnOf");
        let ok = b(&["mobile-m", "fibre-1g"], &[]);
        assert!(basket::check(&ok, &s).is_empty());
        let priced = basket::price(&ok, &s, RoundingRule::HalfEven).unwrap();
        assert!(priced.lines.iter().any(|l| !l.discounts.is_empty()), "{priced:?}");
        // The interconnect tariff rates per destination group, longest prefix first.
        let t = crate::catalog::tariff::Tariff::read(s.get(Kind::Tariff, "tariff-interconnect").unwrap()).unwrap();
        assert_eq!(t.currency.code(), "USD");
        assert!(t.destination("+4915112345678").is_some());
    }

    #[test]
    fn every_tax_category_of_the_sample_has_a_rate() {
        let s = sample();
        let at = "2026-06-01T00:00:00Z".parse().unwrap();
        for p in s.all(Kind::ProductOfferingPrice) {
            let p = crate::catalog::price::PriceView::read(p).unwrap();
            let cat = p.tax_category.clone().unwrap_or_else(|| panic!("price {} has no tax category", p.id));
            for j in [None, Some("DE"), Some("FR")] {
                assert!(crate::catalog::tax::rate_for(&s, &cat, j, at).is_some(), "{cat} in {j:?} has no rate");
            }
        }
        let de = crate::catalog::tax::rate_for(&s, "reduced", Some("DE"), at).unwrap();
        assert_eq!(de.rate, rust_decimal::Decimal::from(7));
    }

    #[test]
    fn a_bad_import_names_every_problem() {
        let v = json!({"productOffering": [
            {"id": "a", "name": "A", "productOfferingPrice": [{"id": "missing"}]},
            {"id": "a", "name": "A again"},
            {"name": "no id"}],
            "tariff": [{"id": "t/1", "name": "x"}], "offers": []});
        let e = parse_import(&v).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["offers", "tariff[0]", "productOffering[1]", "productOffering[2]"]);
        let docs = parse_import(
            &json!({"productOffering": [{"id": "a", "name": "A", "productOfferingPrice": [{"id": "missing"}]}]}),
        )
        .unwrap();
        let e = validate_import(&docs, &Snapshot::new()).unwrap_err();
        assert_eq!(e[0].field, "productOffering[a].productOfferingPrice");
    }

    #[test]
    fn export_then_import_is_the_same_catalog() {
        let s = sample();
        let exported = export(&s, "2026-01-01T00:00:00Z");
        let docs = parse_import(&exported).unwrap();
        let again = validate_import(&docs, &s).unwrap();
        assert_eq!(again, s);
    }
}
