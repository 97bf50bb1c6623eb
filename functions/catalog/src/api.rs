//! The catalog's extension endpoints: priceChange, basketCheck, exportCatalog, importCatalog.
//! Each parses the request, calls the domain and shapes the answer.

use bss_domain::catalog::basket::{self, Action, Basket, Item, Priced};
use bss_domain::catalog::{self as domain, Kind as DomainKind, Ref, money_to_json};
use bss_domain::money::{Currency, RoundingRule};
use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply, param};
use bss_kit::idempotency::{idempotent, tenant_scope};
use bss_kit::ids::now_rfc3339;
use bss_kit::resource::{NoHooks, emit, ok_reply, with_env};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use spin_sdk::http::Params;

use crate::{CatalogHooks, invalid, kind, rejected, snapshot};

/// The body as `T`: the kit's JSON checks (content type, size, syntax → 400), then the shape,
/// whose error names the attribute path (`items[0].productOffering`).
fn body<T: serde::de::DeserializeOwned>(ctx: &Ctx) -> Result<T, ApiError> {
    let v: Value = ctx.json()?;
    serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::bad_request(format!("{}: {}", e.path(), e.inner())).with_code("INVALID_BODY"))
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 date-time, not {s:?}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PriceChange {
    price: Value,
    effective_from: String,
}

/// `POST productOfferingPrice/{id}/priceChange`: appends a price version; 200 with the price.
pub fn price_change(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        idempotent(env.store.backend(), &tenant_scope(&env.tenant.tenant_id), ctx, || {
            let body: PriceChange = body(ctx)?;
            let effective_from = parse_time("effectiveFrom", &body.effective_from)?;
            let now = Utc::now();
            let hooks = CatalogHooks { price_change: true };
            let change = env.resources(kind(DomainKind::ProductOfferingPrice)).modify(env, &hooks, &id, |cur| {
                let mut next = cur.clone();
                domain::price::apply_price_change(&mut next, &body.price, effective_from, now)
                    .map_err(|p| invalid(&p))?;
                Ok(next)
            })?;
            emit(env.tenant, &change);
            ok_reply(&change)
        })
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BasketItem {
    product_offering: Ref,
    quantity: Option<u32>,
    action: Option<Action>,
    replaces: Option<Ref>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExistingProduct {
    product_offering: Ref,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BasketRequest {
    items: Vec<BasketItem>,
    #[serde(default)]
    existing_products: Vec<ExistingProduct>,
    currency: String,
    at: Option<String>,
    market_segment: Option<Vec<String>>,
    rounding: Option<RoundingRule>,
}

/// `POST basketCheck`: 200 with the priced basket, or 422 listing every violated rule.
pub fn basket_check(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    with_env(ctx, |env| {
        let req: BasketRequest = body(ctx)?;
        let currency = Currency::new(&req.currency).map_err(|e| ApiError::bad_request(format!("currency: {e}")))?;
        let at = match &req.at {
            Some(s) => parse_time("at", s)?,
            None => Utc::now(),
        };
        if req.items.len() > basket::MAX_ITEMS || req.existing_products.len() > basket::MAX_EXISTING {
            return Err(ApiError::unprocessable(format!(
                "a basket holds at most {} items and {} existing products",
                basket::MAX_ITEMS,
                basket::MAX_EXISTING
            )));
        }
        let b = Basket {
            items: req
                .items
                .into_iter()
                .map(|i| Item {
                    offering_id: i.product_offering.id,
                    quantity: i.quantity.unwrap_or(1),
                    action: i.action.unwrap_or_default(),
                    replaces: i.replaces.map(|r| r.id),
                })
                .collect(),
            existing: req.existing_products.into_iter().map(|p| p.product_offering.id).collect(),
            market_segments: req.market_segment,
            currency,
            at,
        };
        let snap = snapshot(env)?;
        let violations = basket::check(&b, &snap);
        if !violations.is_empty() {
            return Err(rejected("BASKET_NOT_ALLOWED", &violations));
        }
        let rounding = req.rounding.unwrap_or_default();
        match basket::price(&b, &snap, rounding) {
            Ok(priced) => Reply::json(200, &priced_json(&b, &priced, &snap, rounding)),
            Err(problems) => Err(rejected("BASKET_NOT_PRICED", &problems)),
        }
    })
}

fn period_type(p: bss_domain::catalog::price::PeriodType) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn priced_json(b: &Basket, priced: &Priced, snap: &domain::Snapshot, rounding: RoundingRule) -> Value {
    let offering = |id: &str| json!({"id": id, "name": snap.label(DomainKind::ProductOffering, id)});
    let lines: Vec<Value> = priced
        .lines
        .iter()
        .map(|l| {
            let mut v = json!({
                "item": l.item,
                "productOffering": offering(&l.offering_id),
                "productOfferingPrice": {"id": l.price_id, "name": l.price_name},
                "priceType": l.price_type.as_str(),
                "priceVersion": l.price_version.to_string(),
                "unitPrice": money_to_json(&l.unit_price),
                "quantity": l.quantity,
                "discounts": l.discounts.iter().map(|d| json!({
                    "pricingRule": {"id": d.id, "name": d.name},
                    "amount": money_to_json(&bss_domain::money::Money::new(d.amount, l.amount.currency)),
                })).collect::<Vec<_>>(),
                "price": money_to_json(&l.amount),
            });
            if let Some((t, n)) = l.period {
                v["recurringChargePeriodType"] = period_type(t);
                v["recurringChargePeriodLength"] = json!(n);
            }
            if let Some(t) = &l.tax_category {
                v["taxCategory"] = json!(t);
            }
            v
        })
        .collect();
    let usage: Vec<Value> = priced
        .usage
        .iter()
        .map(|u| {
            json!({"item": u.item, "productOffering": offering(&u.offering_id),
                   "productOfferingPrice": {"id": u.price_id}, "tariff": {"id": u.tariff_id}})
        })
        .collect();
    let totals: Vec<Value> = priced
        .totals
        .iter()
        .map(|t| {
            let mut v = json!({"priceType": t.price_type.as_str(), "price": money_to_json(&t.amount)});
            if let Some((p, n)) = t.period {
                v["recurringChargePeriodType"] = period_type(p);
                v["recurringChargePeriodLength"] = json!(n);
            }
            v
        })
        .collect();
    json!({
        "@type": "BasketCheck",
        "currency": b.currency.code(),
        "at": b.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "rounding": rounding,
        "lines": lines,
        "usage": usage,
        "totals": totals,
        "violations": [],
    })
}

/// `GET exportCatalog`: every catalog document of the tenant as one import document.
pub fn export_catalog(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    with_env(ctx, |env| Reply::json(200, &domain::import::export(&snapshot(env)?, &now_rfc3339())))
}

/// `POST importCatalog`: validates the whole document, then upserts every document by id;
/// 200 with counts per kind, or 422 naming every problem with nothing stored.
pub fn import_catalog(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    with_env(ctx, |env| {
        idempotent(env.store.backend(), &tenant_scope(&env.tenant.tenant_id), ctx, || {
            let body: Value = ctx.json()?;
            let docs = match domain::import::parse_import(&body) {
                Ok(d) => d,
                Err(p) => return Err(rejected("INVALID_CATALOG", &p)),
            };
            if let Err(p) = domain::import::validate_import(&docs, &snapshot(env)?) {
                return Err(rejected("INVALID_CATALOG", &p));
            }
            // Validated as a whole above, so each write needs no further check. Writes go in
            // dependency order (tariffs, specifications, prices, offerings, rules, categories,
            // catalogs); they are not one transaction, so an import cut short (a crash) leaves
            // part of it written, and re-running the same import completes it.
            let mut counts = Map::new();
            for k in DomainKind::ALL {
                counts.insert(k.collection().into(), json!({"created": 0, "updated": 0, "unchanged": 0}));
            }
            for (k, doc) in docs {
                let change = env.resources(kind(k)).upsert(env, &NoHooks, doc)?;
                let what = if change.before == change.after { "unchanged" } else { change.action() };
                if let Some(n) = counts.get_mut(k.collection()).and_then(|c| c.get_mut(what)) {
                    *n = json!(n.as_u64().unwrap_or(0) + 1);
                }
                if what != "unchanged" {
                    emit(env.tenant, &change);
                }
            }
            Reply::json(200, &json!({"@type": "CatalogImport", "imported": counts}))
        })
    })
}
