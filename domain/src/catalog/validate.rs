//! Validation of one catalog document against the catalog it joins, and referential integrity.

use serde_json::Value;
use std::collections::BTreeSet;

use super::offering::OfferingView;
use super::price::PriceView;
use super::rule::PricingRule;
use super::tariff::Tariff;
use super::{Doc, Kind, Lifecycle, MAX_NAME_CHARS, Problem, Ref, Snapshot};

/// Most bundle levels followed when looking for a cycle.
const MAX_BUNDLE_DEPTH: usize = 32;

/// The references a document makes: (kind referred to, id, attribute). Unreadable attributes
/// are skipped (validation reports them).
pub fn references(kind: Kind, doc: &Value) -> Vec<(Kind, String, &'static str)> {
    let Ok(d) = Doc::of(doc) else { return Vec::new() };
    let list = |field: &'static str, to: Kind| -> Vec<(Kind, String, &'static str)> {
        d.refs(field).unwrap_or_default().into_iter().map(|r| (to, r.id, field)).collect()
    };
    let one = |field: &'static str, to: Kind| -> Vec<(Kind, String, &'static str)> {
        d.opt::<Ref>(field).ok().flatten().map(|r| (to, r.id, field)).into_iter().collect()
    };
    match kind {
        Kind::Catalog => list("category", Kind::Category),
        Kind::Category => {
            let mut r = list("productOffering", Kind::ProductOffering);
            r.extend(list("subCategory", Kind::Category));
            if let Ok(Some(p)) = d.opt::<String>("parentId") {
                r.push((Kind::Category, p, "parentId"));
            }
            r
        }
        Kind::ProductSpecification => list("bundledProductSpecification", Kind::ProductSpecification),
        Kind::ProductOffering => {
            let mut r = one("productSpecification", Kind::ProductSpecification);
            r.extend(list("productOfferingPrice", Kind::ProductOfferingPrice));
            r.extend(list("bundledProductOffering", Kind::ProductOffering));
            r.extend(list("productOfferingRelationship", Kind::ProductOffering));
            r.extend(list("category", Kind::Category));
            r
        }
        Kind::ProductOfferingPrice => one("tariff", Kind::Tariff),
        Kind::Tariff | Kind::TaxRate => Vec::new(),
        Kind::PricingRule => {
            let mut r = list("appliesTo", Kind::ProductOffering);
            if let Ok(Some(c)) = d.opt::<super::rule::Condition>("condition") {
                r.extend(c.customer_has_one_of.into_iter().map(|x| (Kind::ProductOffering, x.id, "condition")));
            }
            r
        }
    }
}

/// Non-retired documents that refer to `kind`/`id`, as `kind "label" (id)` strings: a delete of
/// that resource must be refused while this is not empty.
pub fn referrers(kind: Kind, id: &str, snap: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for k in Kind::ALL {
        for doc in snap.all(k) {
            let Ok(d) = Doc::of(doc) else { continue };
            if d.lifecycle_or_default() == Lifecycle::Retired || (k == kind && d.id() == id) {
                continue;
            }
            if references(k, doc).iter().any(|(rk, rid, _)| *rk == kind && rid == id) {
                out.push(format!("{k} {:?} ({})", d.label(), d.id()));
            }
        }
    }
    out
}

/// Validates `doc` (a `kind` document) as it would be stored in `snap`; `previous` is the stored
/// version on an update (for lifecycle transitions and what an active price may not change).
/// Every problem is returned, each naming its attribute or rule.
pub fn validate(kind: Kind, doc: &Value, previous: Option<&Value>, snap: &Snapshot) -> Result<(), Vec<Problem>> {
    let d = Doc::of(doc).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    common(&d, previous, &mut problems);
    let typed = match kind {
        Kind::ProductOfferingPrice => PriceView::read(doc).map(|p| price_rules(&p, previous, doc, &mut problems)),
        Kind::ProductOffering => OfferingView::read(doc).map(|o| offering_rules(&o, snap, &mut problems)),
        Kind::Tariff => Tariff::read(doc).map(drop),
        Kind::PricingRule => PricingRule::read(doc).map(drop),
        Kind::TaxRate => super::tax::TaxRate::read(doc).map(|t| super::tax::overlap_rules(&t, snap, &mut problems)),
        Kind::Catalog | Kind::Category | Kind::ProductSpecification => Ok(()),
    };
    if let Err(p) = typed {
        problems.extend(p);
    }
    if kind == Kind::Category
        && let Ok(Some(parent)) = d.opt::<String>("parentId")
        && parent == d.id()
    {
        problems.push(Problem::new("parentId", "a category cannot be its own parent"));
    }
    // What an active offering uses cannot be retired under it.
    if matches!(kind, Kind::ProductSpecification | Kind::ProductOfferingPrice)
        && d.lifecycle() == Ok(Lifecycle::Retired)
        && previous.is_none_or(|p| Doc::of(p).is_ok_and(|p| p.lifecycle_or_default() != Lifecycle::Retired))
    {
        for o in snap.all(Kind::ProductOffering) {
            let Ok(od) = Doc::of(o) else { continue };
            if od.lifecycle_or_default() == Lifecycle::Active
                && references(Kind::ProductOffering, o).iter().any(|(k, id, _)| *k == kind && id == d.id())
            {
                problems.push(Problem::new(
                    "lifecycleStatus",
                    format!(
                        "cannot retire it: the active offering {:?} ({}) uses it; retire or change that offering first",
                        od.label(),
                        od.id()
                    ),
                ));
            }
        }
    }
    for (to, id, field) in references(kind, doc) {
        if snap.get(to, &id).is_none() {
            problems.push(Problem::new(field, format!("refers to {to} {id}, which does not exist")));
        }
    }
    dedup(&mut problems);
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn dedup(problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.to_string()));
}

fn common(d: &Doc<'_>, previous: Option<&Value>, problems: &mut Vec<Problem>) {
    match d.req::<String>("name") {
        Ok(n) if n.trim().is_empty() => problems.push(Problem::new("name", "must not be empty")),
        Ok(n) if n.chars().count() > MAX_NAME_CHARS => {
            problems.push(Problem::new("name", format!("must be at most {MAX_NAME_CHARS} characters")))
        }
        Ok(_) => {}
        Err(p) => problems.push(p),
    }
    if let Err(p) = d.opt::<String>("version") {
        problems.push(p);
    }
    if let Err(p) = d.opt::<String>("description") {
        problems.push(p);
    }
    match d.valid_for() {
        Ok(vf) => vf.check_into("validFor", problems),
        Err(p) => problems.push(p),
    }
    match d.lifecycle() {
        Ok(next) => {
            if let Some(prev) = previous.and_then(|p| Doc::of(p).ok()) {
                let was = prev.lifecycle_or_default();
                if !was.can_become(next) {
                    problems.push(Problem::new(
                        "lifecycleStatus",
                        format!("cannot go from {} to {} (inDesign → active → retired)", was.as_str(), next.as_str()),
                    ));
                }
            }
        }
        Err(p) => problems.push(p),
    }
}

fn price_rules(p: &PriceView, previous: Option<&Value>, doc: &Value, problems: &mut Vec<Problem>) {
    if p.lifecycle == Lifecycle::Active {
        for c in p.completeness() {
            problems.push(Problem::new(c.field, format!("{} (an active price must be complete)", c.message)));
        }
    }
    // An active price's amount changes only through priceChange, so subscriptions can keep the
    // version they bought.
    if let Some(prev) = previous
        && Doc::of(prev).is_ok_and(|d| d.lifecycle_or_default() != Lifecycle::InDesign)
    {
        for field in ["price", "priceVersion", "priceType"] {
            if prev.get(field) != doc.get(field) {
                problems.push(Problem::new(
                    field,
                    "of a price no longer inDesign changes only through POST .../productOfferingPrice/{id}/priceChange",
                ));
            }
        }
    }
}

fn offering_rules(o: &OfferingView, snap: &Snapshot, problems: &mut Vec<Problem>) {
    if o.lifecycle == Lifecycle::Active {
        if let Some(spec) = &o.spec_id
            && let Some(s) = snap.get(super::Kind::ProductSpecification, spec)
            && Doc::of(s).is_ok_and(|d| d.lifecycle_or_default() == Lifecycle::Retired)
        {
            problems.push(Problem::new(
                "productSpecification",
                format!("an active offering cannot refer to the retired specification {spec}"),
            ));
        }
        for id in &o.price_ids {
            let Some(doc) = snap.get(Kind::ProductOfferingPrice, id) else { continue };
            match PriceView::read(doc) {
                Ok(p) if p.lifecycle == Lifecycle::Retired => problems.push(Problem::new(
                    "productOfferingPrice",
                    format!("an active offering cannot use the retired price {id}"),
                )),
                Ok(p) => {
                    for c in p.completeness() {
                        problems.push(Problem::new(
                            "productOfferingPrice",
                            format!("price {:?} ({id}) is incomplete: {}: {}", p.name, c.field, c.message),
                        ));
                    }
                }
                Err(e) => problems.push(Problem::new(
                    "productOfferingPrice",
                    format!("price {id} is invalid: {}", super::describe(&e)),
                )),
            }
        }
    }
    // A bundle may not contain itself through other bundles.
    if o.is_bundle && !o.id.is_empty() {
        let mut stack: Vec<(String, usize)> = o.bundled_ids.iter().map(|b| (b.clone(), 1)).collect();
        let mut seen = BTreeSet::new();
        while let Some((id, depth)) = stack.pop() {
            if id == o.id {
                problems.push(Problem::new("bundledProductOffering", "bundles may not form a cycle"));
                break;
            }
            if depth > MAX_BUNDLE_DEPTH || !seen.insert(id.clone()) {
                continue;
            }
            if let Some(b) = snap.get(Kind::ProductOffering, &id).and_then(|d| OfferingView::read(d).ok()) {
                stack.extend(b.bundled_ids.into_iter().map(|x| (x, depth + 1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        s.insert(Kind::ProductSpecification, json!({"id": "s1", "name": "Mobile line"}));
        s.insert(
            Kind::Tariff,
            json!({"id": "t1", "name": "Voice", "currency": "EUR", "ratingUnit": "minute",
            "rate": {"unit": "EUR", "value": 0.1}}),
        );
        s.insert(
            Kind::ProductOfferingPrice,
            json!({"id": "p1", "name": "Monthly", "priceType": "recurring",
            "recurringChargePeriodType": "month", "price": {"unit": "EUR", "value": 20}, "taxCategory": "standard", "lifecycleStatus": "active"}),
        );
        s.insert(Kind::ProductOfferingPrice, json!({"id": "p2", "name": "Draft", "priceType": "recurring"}));
        s.insert(
            Kind::ProductOffering,
            json!({"id": "o1", "name": "Mobile M", "productSpecification": {"id": "s1"},
            "productOfferingPrice": [{"id": "p1"}], "lifecycleStatus": "active"}),
        );
        s
    }

    fn fields(r: Result<(), Vec<Problem>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn references_must_exist_and_be_of_the_right_kind() {
        let s = snap();
        let o = json!({"id": "o2", "name": "X", "productSpecification": {"id": "nope"}, "productOfferingPrice": [{"id": "s1"}]});
        assert_eq!(
            fields(validate(Kind::ProductOffering, &o, None, &s)),
            ["productSpecification", "productOfferingPrice"]
        );
        let ok = json!({"id": "o2", "name": "X", "productSpecification": {"id": "s1"}, "productOfferingPrice": [{"id": "p1"}]});
        validate(Kind::ProductOffering, &ok, None, &s).unwrap();
    }

    #[test]
    fn activation_needs_complete_prices() {
        let s = snap();
        let o = json!({"id": "o2", "name": "X", "productOfferingPrice": [{"id": "p2"}], "lifecycleStatus": "active"});
        let e = validate(Kind::ProductOffering, &o, None, &s).unwrap_err();
        assert!(e[0].message.contains("incomplete"), "{e:?}");
        let draft = json!({"id": "o2", "name": "X", "productOfferingPrice": [{"id": "p2"}]});
        validate(Kind::ProductOffering, &draft, None, &s).unwrap();
        let p = json!({"id": "p3", "name": "Y", "priceType": "oneTime", "lifecycleStatus": "active"});
        assert_eq!(fields(validate(Kind::ProductOfferingPrice, &p, None, &s)), ["price", "taxCategory"]);
    }

    #[test]
    fn lifecycle_cannot_leave_retired() {
        let s = snap();
        let prev = json!({"id": "s1", "name": "Mobile line", "lifecycleStatus": "retired"});
        let next = json!({"id": "s1", "name": "Mobile line", "lifecycleStatus": "active"});
        assert_eq!(fields(validate(Kind::ProductSpecification, &next, Some(&prev), &s)), ["lifecycleStatus"]);
    }

    #[test]
    fn what_an_active_offering_uses_cannot_be_retired() {
        let s = snap();
        let mut spec = s.get(Kind::ProductSpecification, "s1").unwrap().clone();
        let prev = spec.clone();
        spec["lifecycleStatus"] = json!("retired");
        let e = validate(Kind::ProductSpecification, &spec, Some(&prev), &s).unwrap_err();
        assert!(e[0].message.contains("\"Mobile M\" (o1)"), "{e:?}");
        let mut price = s.get(Kind::ProductOfferingPrice, "p1").unwrap().clone();
        let prev = price.clone();
        price["lifecycleStatus"] = json!("retired");
        assert_eq!(fields(validate(Kind::ProductOfferingPrice, &price, Some(&prev), &s)), ["lifecycleStatus"]);
        // An unused one can.
        let mut p2 = s.get(Kind::ProductOfferingPrice, "p2").unwrap().clone();
        let prev = p2.clone();
        p2["lifecycleStatus"] = json!("retired");
        validate(Kind::ProductOfferingPrice, &p2, Some(&prev), &s).unwrap();
    }

    #[test]
    fn active_price_changes_only_by_price_change() {
        let s = snap();
        let prev = s.get(Kind::ProductOfferingPrice, "p1").unwrap().clone();
        let mut next = prev.clone();
        next["price"]["value"] = json!(25);
        assert_eq!(fields(validate(Kind::ProductOfferingPrice, &next, Some(&prev), &s)), ["price"]);
        let mut renamed = prev.clone();
        renamed["name"] = json!("Renamed");
        validate(Kind::ProductOfferingPrice, &renamed, Some(&prev), &s).unwrap();
    }

    #[test]
    fn bundles_cannot_cycle_and_relationships_cannot_self_refer() {
        let mut s = snap();
        s.insert(
            Kind::ProductOffering,
            json!({"id": "b1", "name": "B1", "isBundle": true, "bundledProductOffering": [{"id": "b2"}]}),
        );
        s.insert(
            Kind::ProductOffering,
            json!({"id": "b2", "name": "B2", "isBundle": true, "bundledProductOffering": [{"id": "o1"}]}),
        );
        let b2 = json!({"id": "b2", "name": "B2", "isBundle": true, "bundledProductOffering": [{"id": "b1"}]});
        assert_eq!(fields(validate(Kind::ProductOffering, &b2, None, &s)), ["bundledProductOffering"]);
        let selfrel = json!({"id": "o1", "name": "M", "productOfferingRelationship": [{"id": "o1", "relationshipType": "requires"}]});
        assert_eq!(fields(validate(Kind::ProductOffering, &selfrel, None, &s)), ["productOfferingRelationship"]);
        let badtype = json!({"id": "o3", "name": "M", "productOfferingRelationship": [{"id": "o1", "relationshipType": "likes"}]});
        assert_eq!(fields(validate(Kind::ProductOffering, &badtype, None, &s)), ["productOfferingRelationship"]);
    }

    #[test]
    fn referrers_name_who_still_uses_a_resource() {
        let mut s = snap();
        assert_eq!(referrers(Kind::ProductOfferingPrice, "p1", &s), ["productOffering \"Mobile M\" (o1)"]);
        assert!(referrers(Kind::ProductOfferingPrice, "p2", &s).is_empty());
        // A retired referrer does not hold the resource.
        let mut o = s.get(Kind::ProductOffering, "o1").unwrap().clone();
        o["lifecycleStatus"] = json!("retired");
        s.insert(Kind::ProductOffering, o);
        assert!(referrers(Kind::ProductOfferingPrice, "p1", &s).is_empty());
    }

    #[test]
    fn wrong_types_name_the_attribute() {
        let s = snap();
        assert_eq!(fields(validate(Kind::ProductSpecification, &json!({"name": 5}), None, &s)), ["name"]);
        assert_eq!(fields(validate(Kind::Catalog, &json!({"name": "c", "version": 2}), None, &s)), ["version"]);
        assert_eq!(fields(validate(Kind::Category, &json!({"description": "x"}), None, &s)), ["name"]);
        assert_eq!(
            fields(validate(
                Kind::Catalog,
                &json!({"name": "c", "validFor": {"startDateTime": "yesterday"}}),
                None,
                &s
            )),
            ["validFor"]
        );
    }
}
