//! Product offerings: the typed view of a `productOffering` document — its specification, prices,
//! bundle members, relationships to other offerings and market segments.
//!
//! - `productSpecification: {id}` (one, as TMF620 v4), `productOfferingPrice: [{id}]`.
//! - Bundles: `isBundle: true` + `bundledProductOffering: [{id}]` (at least one; no self, no
//!   cycle through other bundles); the bundle has its own prices.
//! - `productOfferingRelationship: [{id, relationshipType}]`, type one of `requires`, `excludes`
//!   (incompatible; symmetric in effect), `addOnOf` (the offering can only be had with one of its
//!   addOnOf targets), `upgradeTo`, `downgradeTo` (allowed plan changes). Self-reference refused.
//! - `marketSegment: [{id?, name?}]`: who may buy it (used by the basket check when the customer's
//!   segments are known).
//! - `allowanceSharing` (BSS extension): `none` (default: each product has its own allowance
//!   buckets) or `accountHierarchy` (the products of this offering in one account hierarchy
//!   consume one pool of the tariff's allowances per bill period of the hierarchy's top account).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Doc, Lifecycle, Problem, Ref, TimePeriod, take};

/// `relationshipType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RelationshipType {
    /// The target must be present too.
    Requires,
    /// The target must not be present.
    Excludes,
    /// Only sold on top of (one of) the target(s).
    AddOnOf,
    /// May be changed into the target (upgrade).
    UpgradeTo,
    /// May be changed into the target (downgrade).
    DowngradeTo,
}

impl RelationshipType {
    /// The JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipType::Requires => "requires",
            RelationshipType::Excludes => "excludes",
            RelationshipType::AddOnOf => "addOnOf",
            RelationshipType::UpgradeTo => "upgradeTo",
            RelationshipType::DowngradeTo => "downgradeTo",
        }
    }
}

/// One `productOfferingRelationship`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// Target offering id.
    pub id: String,
    /// Type.
    pub relationship_type: RelationshipType,
}

/// One `marketSegment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Id.
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
}

/// `allowanceSharing` values.
pub const ALLOWANCE_SHARING: &[&str] = &["none", "accountHierarchy"];

/// The typed view of a `productOffering` document.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferingView {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: String,
    /// `lifecycleStatus`.
    pub lifecycle: Lifecycle,
    /// `validFor`.
    pub valid_for: TimePeriod,
    /// `productSpecification.id`.
    pub spec_id: Option<String>,
    /// `productOfferingPrice[].id`.
    pub price_ids: Vec<String>,
    /// `isBundle`.
    pub is_bundle: bool,
    /// `bundledProductOffering[].id`.
    pub bundled_ids: Vec<String>,
    /// `productOfferingRelationship`.
    pub relationships: Vec<Relationship>,
    /// `marketSegment`.
    pub segments: Vec<Segment>,
    /// `category[].id`.
    pub category_ids: Vec<String>,
    /// `allowanceSharing: accountHierarchy`.
    pub shares_allowances: bool,
}

impl OfferingView {
    /// Reads a document; every problem names its attribute.
    pub fn read(v: &Value) -> Result<OfferingView, Vec<Problem>> {
        let d = Doc::of(v).map_err(|p| vec![p])?;
        let mut problems = Vec::new();
        let name = take(&mut problems, d.req::<String>("name"));
        let lifecycle = take(&mut problems, d.lifecycle());
        let valid_for = take(&mut problems, d.valid_for());
        let spec = take(&mut problems, d.opt::<Ref>("productSpecification"));
        let prices = take(&mut problems, d.refs("productOfferingPrice"));
        let is_bundle = take(&mut problems, d.opt::<bool>("isBundle"));
        let bundled = take(&mut problems, d.refs("bundledProductOffering"));
        let relationships = take(&mut problems, d.opt::<Vec<Relationship>>("productOfferingRelationship"));
        let segments = take(&mut problems, d.opt::<Vec<Segment>>("marketSegment"));
        let categories = take(&mut problems, d.refs("category"));
        let sharing = take(&mut problems, d.opt::<String>("allowanceSharing")).flatten();
        if let Some(x) = &sharing
            && !ALLOWANCE_SHARING.contains(&x.as_str())
        {
            problems.push(Problem::new("allowanceSharing", format!("{x:?} is not one of none, accountHierarchy")));
        }
        if let Some(n) = &name
            && n.trim().is_empty()
        {
            problems.push(Problem::new("name", "must not be empty"));
        }
        if let Some(vf) = &valid_for {
            vf.check("validFor", &mut problems);
        }
        if let Some(Some(rels)) = &relationships
            && rels.len() > super::MAX_REFS
        {
            problems.push(Problem::new("productOfferingRelationship", "too many relationships"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let ids = |r: Option<Vec<Ref>>| r.unwrap_or_default().into_iter().map(|r| r.id).collect::<Vec<_>>();
        let view = OfferingView {
            id: d.id().to_string(),
            name: name.unwrap_or_default(),
            lifecycle: lifecycle.unwrap_or_default(),
            valid_for: valid_for.unwrap_or_default(),
            spec_id: spec.flatten().map(|r| r.id),
            price_ids: ids(prices),
            is_bundle: is_bundle.flatten().unwrap_or(false),
            bundled_ids: ids(bundled),
            relationships: relationships.flatten().unwrap_or_default(),
            segments: segments.flatten().unwrap_or_default(),
            category_ids: ids(categories),
            shares_allowances: sharing.as_deref() == Some("accountHierarchy"),
        };
        let mut problems = Vec::new();
        if view.is_bundle && view.bundled_ids.is_empty() {
            problems
                .push(Problem::new("bundledProductOffering", "a bundle (isBundle: true) needs at least one offering"));
        }
        if !view.is_bundle && !view.bundled_ids.is_empty() {
            problems.push(Problem::new("bundledProductOffering", "only a bundle (isBundle: true) bundles offerings"));
        }
        if !view.id.is_empty() && view.bundled_ids.contains(&view.id) {
            problems.push(Problem::new("bundledProductOffering", "an offering cannot bundle itself"));
        }
        if !view.id.is_empty() && view.relationships.iter().any(|r| r.id == view.id) {
            problems.push(Problem::new("productOfferingRelationship", "an offering cannot relate to itself"));
        }
        for (i, s) in view.segments.iter().enumerate() {
            if s.id.is_none() && s.name.is_none() {
                problems.push(Problem::new(format!("marketSegment[{i}]"), "needs an id or a name"));
            }
        }
        if problems.is_empty() { Ok(view) } else { Err(problems) }
    }

    /// Targets of relationships of one type.
    pub fn related(&self, kind: RelationshipType) -> impl Iterator<Item = &str> {
        self.relationships.iter().filter(move |r| r.relationship_type == kind).map(|r| r.id.as_str())
    }

    /// Whether the offering may be sold at `at`.
    pub fn orderable_at(&self, at: chrono::DateTime<chrono::Utc>) -> bool {
        self.lifecycle == Lifecycle::Active && self.valid_for.contains(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allowance_sharing_is_validated() {
        let base = json!({"id": "o", "name": "Family", "lifecycleStatus": "active"});
        assert!(!OfferingView::read(&base).unwrap().shares_allowances);
        let mut shared = base.clone();
        shared["allowanceSharing"] = json!("accountHierarchy");
        assert!(OfferingView::read(&shared).unwrap().shares_allowances);
        let mut bad = base;
        bad["allowanceSharing"] = json!("family");
        let problems = OfferingView::read(&bad).unwrap_err();
        assert_eq!(problems[0].field, "allowanceSharing");
    }
}
