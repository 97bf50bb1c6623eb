//! `catalog`: the product catalog component (TMF620 v4 under
//! `/tmf-api/productCatalogManagement/v4/`). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p catalog`; tested end to end by
//! `cargo test -p bss-host --test e2e_catalog` and by the TM Forum kit (`../shared/ctk/run tmf620`).
//!
//! Thin: the generic TMF resource layer (`bss_kit::resource`) does create / list / get / merge
//! PATCH / DELETE, ids, `href`, `lastUpdate`, ETags, `Idempotency-Key` and events (domain
//! `catalog`); the domain (`bss_domain::catalog`) decides what is valid. This crate wires them:
//!
//! - Resources (TMF620): `catalog`, `category`, `productSpecification`, `productOffering`,
//!   `productOfferingPrice`; BSS extensions with the same conventions: `tariff` (usage rating
//!   definition), `pricingRule` (cross-product discounts) and `taxRate` (the percentage of a
//!   price's `taxCategory`, per optional `jurisdiction`, over a `validFor`; quotes tax with it).
//! - Every write is validated against the tenant's whole catalog ([`CatalogHooks::validate`]:
//!   references exist, lifecycle transitions, activation completeness); a refused write answers
//!   422 naming each problem and stores nothing. `lifecycleStatus` defaults to `inDesign`.
//! - A delete of a resource still referred to by a non-retired resource answers 409 naming the
//!   referrers.
//! - `POST productOfferingPrice/{id}/priceChange` `{"price": {"unit", "value"}, "effectiveFrom"}`
//!   appends a price version (extension; an active price's amount changes only this way).
//! - `POST basketCheck` (extension): relationship/eligibility check and pricing of a basket;
//!   200 with lines, fired rules and totals, or 422 listing every violation.
//! - `GET exportCatalog` / `POST importCatalog` (extension): the catalog as one JSON document;
//!   an import is validated whole, then upserted by id (re-importing changes nothing).
//!
//! Limits: the kit's 1 MiB JSON bodies and 10,000 documents per collection; 100 basket items;
//! 5,000 documents per import. Checks read the tenant's whole catalog (8 list reads per write),
//! which suits catalogs of thousands of documents, not millions.

mod api;

use bss_domain::catalog::{self as domain, Kind as DomainKind, Problem};
use bss_kit::ApiError;
use bss_kit::http::Router;
use bss_kit::http::{handler, method_not_allowed, not_found};
use bss_kit::kv::KvBackend;
use bss_kit::resource::{self, Env, Hooks, Kind};
use serde_json::Value;
use spin_sdk::http::{Request, Response};

bss_kit::export_http!(route);

pub use bss_kit::catalog::{BASE, kind, snapshot};

fn domain_kind(k: &Kind) -> Result<DomainKind, ApiError> {
    DomainKind::from_collection(k.collection)
        .ok_or_else(|| ApiError::internal(format!("no catalog kind {}", k.collection)))
}

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    for k in DomainKind::ALL {
        resource::register(&mut r, kind(k), CatalogHooks { price_change: false });
    }
    let price_change = format!("{BASE}/productOfferingPrice/:id/priceChange");
    r.post(&price_change, handler(api::price_change));
    r.any(&price_change, method_not_allowed);
    r.post(&format!("{BASE}/basketCheck"), handler(api::basket_check));
    r.any(&format!("{BASE}/basketCheck"), method_not_allowed);
    r.get(&format!("{BASE}/exportCatalog"), handler(api::export_catalog));
    r.any(&format!("{BASE}/exportCatalog"), method_not_allowed);
    r.post(&format!("{BASE}/importCatalog"), handler(api::import_catalog));
    r.any(&format!("{BASE}/importCatalog"), method_not_allowed);
    r.any("/*", not_found);
    r.handle(req)
}

/// 422 with `code`: the message joins every problem and the body lists them (`problems:
/// [{field, message}]`).
pub fn rejected(code: &str, problems: &[Problem]) -> ApiError {
    ApiError::unprocessable(domain::describe(problems))
        .with_code(code)
        .with_problems(serde_json::to_value(problems).unwrap_or(Value::Null))
}

/// 422 naming every problem of a document.
pub fn invalid(problems: &[Problem]) -> ApiError {
    rejected("INVALID_RESOURCE", problems)
}

/// The catalog's rules on every write. `price_change` lets a price's amount change (only the
/// priceChange action sets it).
#[derive(Debug, Clone, Copy)]
pub struct CatalogHooks {
    /// Whether the write is a priceChange.
    pub price_change: bool,
}

impl<B: KvBackend> Hooks<B> for CatalogHooks {
    fn validate(
        &self,
        env: &Env<'_, B>,
        kind: &Kind,
        before: Option<&Value>,
        mut next: Value,
    ) -> Result<Value, ApiError> {
        let k = domain_kind(kind)?;
        if let Value::Object(m) = &mut next {
            domain::import::defaults(m);
        }
        let mut snap = snapshot(env)?;
        snap.insert(k, next.clone());
        // A priceChange may change what a patch may not: compare against the previous document
        // with the new price attributes, so the other rules (lifecycle...) still apply.
        let previous = before.map(|b| {
            let mut p = b.clone();
            if self.price_change {
                for f in ["price", "priceVersion", "version"] {
                    match next.get(f) {
                        Some(v) => p[f] = v.clone(),
                        None => {
                            p.as_object_mut().map(|m| m.remove(f));
                        }
                    }
                }
            }
            p
        });
        domain::validate(k, &next, previous.as_ref(), &snap).map_err(|p| invalid(&p))?;
        Ok(next)
    }

    fn before_delete(&self, env: &Env<'_, B>, kind: &Kind, doc: &Value) -> Result<(), ApiError> {
        let k = domain_kind(kind)?;
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default();
        let referrers = domain::referrers(k, id, &snapshot(env)?);
        if referrers.is_empty() {
            return Ok(());
        }
        Err(ApiError::conflict(format!(
            "{k} {id} is still referred to by {}; change or retire them first",
            referrers.join(", ")
        ))
        .with_code("STILL_REFERENCED"))
    }
}
