//! `bss-quote`: quotes (TMF648 v4 under `/tmf-api/quoteManagement/v4/`). Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p bss-quote`; tested end to end by
//! `cargo test -p bss-host --test e2e_quote` and natively (acceptance) by `cargo test -p bss-quote`;
//! the pricing and the lifecycle are domain code
//! (`cargo test -p bss-domain quote`).
//!
//! Thin: the kit's resource layer stores the documents (collection `quote`, `Idempotency-Key`,
//! lists, merge PATCH, `If-Match`, events of domain `quote`); [`QuoteHooks::validate`] prices and
//! checks every write through `bss_commerce::pricing` and `bss_domain::quote`:
//!
//! - `POST quote` `{relatedParty: [{id, role: customer}] | [{role: prospect, name, marketSegment?}],
//!   billingAccount?, quoteDate?, validFor?: {endDateTime}, currency?, jurisdiction?,
//!   quoteItem: [{id, action, quantity, productOffering: {id}, product?, productCharacteristic?}]}`
//!   → 201, `state` `inProgress`, every item's `quoteItemPrice` and the `quoteTotalPrice` (net,
//!   tax, gross per charge with its tax lines). The currency defaults to the billing account's;
//!   the quote date to now (prices, rules and tax rates are those at that date); the validity to
//!   30 days. A basket the catalog refuses (unknown or retired offering, requires / excludes /
//!   add-on / segment rules, quantity below 1, a tax category without a rate...) answers 422 with
//!   `problems: [{item, field, message}]`, one per item, and stores nothing.
//! - `PATCH quote/{id}`: while `inProgress`, items (and the party, account, currency, date,
//!   jurisdiction) may change and the quote is priced again. `state` follows the domain table
//!   (`inProgress → approved`, `→ rejected | cancelled` from both; nothing leaves `accepted`,
//!   `rejected`, `cancelled`): an illegal transition is a 409. A prospect's quote may be given its
//!   customer (`relatedParty`) while approved too: it is checked and priced again for that
//!   customer, and refused (409) if its prices would change. `state: accepted` is refused here:
//!   acceptance is an action.
//! - `POST quote/{id}/accept` (extension; the decision: an action, not a PATCH, because it
//!   creates another resource): the quote must be `approved`, within `validFor.endDateTime` (422
//!   naming the date otherwise) and name a customer. It places the product order in one step
//!   with `bss_commerce::order::place_order`, each order item carrying its quoted lines as
//!   `itemPrice`, under the id `quote-<quoteId>`: a retried or concurrent acceptance finds that
//!   order (409 from the create) and completes the acceptance, so one quote makes one order. The
//!   quote then records `productOrder {id, href}` and `state: accepted`; accepting again is a 409.
//! - `DELETE quote/{id}`: refused (409) once approved or accepted.
//!
//! Limits: 100 items per quote, 50 characteristics per item, the kit's 1 MiB bodies.

use bss_commerce::pricing::{self, rejected};
use bss_domain::money::RoundingRule;
use bss_domain::quote::pricing::PricingRequest;
use bss_domain::quote::state::{NotAcceptable, QuoteState, check_acceptance};
use bss_domain::quote::{Party, QuoteDoc, apply_prices, default_valid_until};
use bss_kit::ApiError;
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, handler, method_not_allowed, not_found, param};
use bss_kit::kv::KvBackend;
use bss_kit::resource::{self, Change, Env, Hooks, Kind, emit, ok_reply, with_env};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use spin_sdk::http::{Params, Request, Response};

bss_kit::export_http!(route);

/// The API base path.
pub const BASE: &str = "/tmf-api/quoteManagement/v4";

/// The quote resource.
pub const QUOTE: Kind = Kind { collection: "quote", type_name: "Quote", base_path: BASE, domain: "quote" };

/// The product orders acceptance creates (TMF622, owned by the order side).
pub use bss_commerce::order::ORDER as PRODUCT_ORDER;

/// Attributes whose change re-prices a quote.
const PRICED_FROM: &[&str] =
    &["quoteItem", "relatedParty", "billingAccount", "currency", "jurisdiction", "quoteDate", "validFor"];

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    resource::register(&mut r, QUOTE, QuoteHooks { accepting: false });
    let accept = format!("{BASE}/quote/:id/accept");
    r.post(&accept, handler(accept_route));
    r.any(&accept, method_not_allowed);
    r.any("/*", not_found);
    r.handle(req)
}

fn state_of(doc: &Value) -> Result<QuoteState, ApiError> {
    let s = doc.get("state").and_then(Value::as_str).unwrap_or("inProgress");
    QuoteState::parse(s).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "state: {s:?} is not one of inProgress, approved, accepted, rejected, cancelled"
        ))
        .with_code("INVALID_STATE")
    })
}

/// Checks and prices `doc` for its party at its quote date (default `now`): the document with
/// its prices, or 422 naming every problem.
fn price_doc<B: KvBackend>(env: &Env<'_, B>, mut doc: Value, now: DateTime<Utc>) -> Result<Value, ApiError> {
    let q = QuoteDoc::read(&doc).map_err(|p| rejected("INVALID_QUOTE", &p))?;
    let quote_date = q.quote_date.unwrap_or(now);
    let valid_until = q.valid_until.unwrap_or_else(|| default_valid_until(quote_date));
    let view = match &q.party {
        Party::Customer { id } => pricing::customer_view(env, id)?,
        Party::Prospect { segment, .. } => pricing::prospect_view(segment.as_deref()),
    };
    let account_currency = match &q.billing_account {
        Some(a) => pricing::billing_account_currency(env, a, q.customer_id())?,
        None => None,
    };
    let currency = match (q.currency, account_currency) {
        (Some(c), Some(a)) if c != a => {
            return Err(ApiError::unprocessable(format!(
                "currency: {c} differs from the billing account's currency {a}"
            ))
            .with_code("INVALID_QUOTE"));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(ApiError::unprocessable("currency: is mandatory when no billing account gives one")
                .with_code("INVALID_QUOTE"));
        }
    };
    let req = PricingRequest {
        items: q.items,
        currency,
        at: quote_date,
        jurisdiction: q.jurisdiction,
        rounding: RoundingRule::HalfEven,
    };
    let priced = pricing::price(env, &req, &view)?;
    apply_prices(&mut doc, &priced, quote_date, valid_until, currency);
    doc["rounding"] = json!("halfEven");
    Ok(doc)
}

fn changed(before: &Value, next: &Value, fields: &[&str]) -> bool {
    fields.iter().any(|f| before.get(f) != next.get(f))
}

/// The quote's rules on every write. `accepting` is set only by the accept action, the one
/// writer of `state: accepted` and `productOrder`.
#[derive(Debug, Clone, Copy)]
pub struct QuoteHooks {
    /// Whether the write records an acceptance.
    pub accepting: bool,
}

impl<B: KvBackend> Hooks<B> for QuoteHooks {
    fn validate(&self, env: &Env<'_, B>, _: &Kind, before: Option<&Value>, mut next: Value) -> Result<Value, ApiError> {
        let now = Utc::now();
        let Some(before) = before else {
            // A create: the server owns the state, the prices and the order.
            match next.get("state").and_then(Value::as_str) {
                None | Some("inProgress") => {}
                Some(other) => {
                    return Err(ApiError::unprocessable(format!(
                        "state: a quote is created inProgress, not {other:?}"
                    ))
                    .with_code("INVALID_STATE"));
                }
            }
            if let Some(m) = next.as_object_mut() {
                m.remove("productOrder");
                m.remove("quoteTotalPrice");
            }
            next["state"] = json!("inProgress");
            return price_doc(env, next, now);
        };
        if self.accepting {
            return Ok(next);
        }
        let from = state_of(before)?;
        let to = state_of(&next)?;
        if next.get("productOrder") != before.get("productOrder") {
            return Err(ApiError::bad_request("productOrder is set by the server when the quote is accepted")
                .with_code("SERVER_OWNED_ATTRIBUTE"));
        }
        if from.is_final() {
            return Err(
                ApiError::conflict(format!("quote is {from}; it can no longer change")).with_code("QUOTE_CLOSED")
            );
        }
        if to != from {
            if to == QuoteState::Accepted {
                return Err(ApiError::unprocessable(
                    "state: a quote is accepted with POST .../quote/{id}/accept, which places its order",
                )
                .with_code("INVALID_STATE_TRANSITION"));
            }
            from.transition(to)
                .map_err(|m| ApiError::conflict(format!("state: {m}")).with_code("INVALID_STATE_TRANSITION"))?;
        }
        let priced_from_changed = changed(before, &next, PRICED_FROM);
        let prices_touched = changed(before, &next, &["quoteTotalPrice"]);
        if !priced_from_changed {
            if prices_touched {
                return Err(ApiError::bad_request("quoteTotalPrice is computed by the server")
                    .with_code("SERVER_OWNED_ATTRIBUTE"));
            }
            return Ok(next);
        }
        let prospect_named = matches!(QuoteDoc::read(before).map(|q| q.party), Ok(Party::Prospect { .. }))
            && !changed(
                before,
                &next,
                &["quoteItem", "billingAccount", "currency", "jurisdiction", "quoteDate", "validFor"],
            );
        if !from.items_editable() && !prospect_named {
            return Err(ApiError::conflict(format!(
                "quote is {from}: its items, party and prices change only while inProgress"
            ))
            .with_code("QUOTE_NOT_EDITABLE"));
        }
        let repriced = price_doc(env, next, now)?;
        if !from.items_editable() && repriced.get("quoteTotalPrice") != before.get("quoteTotalPrice") {
            return Err(ApiError::conflict("the approved prices differ for this customer; quote again for them")
                .with_code("PRICES_CHANGED"));
        }
        Ok(repriced)
    }

    fn before_delete(&self, _: &Env<'_, B>, _: &Kind, doc: &Value) -> Result<(), ApiError> {
        match state_of(doc)? {
            s @ (QuoteState::Approved | QuoteState::Accepted) => {
                Err(ApiError::conflict(format!("quote is {s}; cancel or reject it instead")).with_code("QUOTE_KEPT"))
            }
            _ => Ok(()),
        }
    }
}

/// The TMF622 order of an accepted quote: its customer, account and items, each item carrying
/// its quoted lines as `itemPrice` (the order keeps the quoted prices).
pub fn order_body(quote: &Value, quote_id: &str, customer_id: &str) -> Value {
    let items: Vec<Value> = quote
        .get("quoteItem")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let mut o = json!({
                        "id": i.get("id"),
                        "action": i.get("action").cloned().unwrap_or(json!("add")),
                        "quantity": i.get("quantity").cloned().unwrap_or(json!(1)),
                        "productOffering": i.get("productOffering"),
                        "itemPrice": i.get("quoteItemPrice").cloned().unwrap_or(json!([])),
                    });
                    for f in ["product", "productCharacteristic"] {
                        if let Some(v) = i.get(f).filter(|v| !v.is_null()) {
                            o[f] = v.clone();
                        }
                    }
                    if let Some(r) = i.get("quoteItemRelationship").filter(|v| !v.is_null()) {
                        o["productOrderItemRelationship"] = r.clone();
                    }
                    o
                })
                .collect()
        })
        .unwrap_or_default();
    let mut body = json!({
        "quote": [{"id": quote_id, "href": QUOTE.href(quote_id), "@referredType": "Quote"}],
        "relatedParty": [{"id": customer_id, "role": "customer", "@referredType": "Customer"}],
        "productOrderItem": items,
    });
    if let Some(a) = quote.get("billingAccount").filter(|v| !v.is_null()) {
        body["billingAccount"] = a.clone();
    }
    body
}

/// The id of the order a quote's acceptance creates: one per quote.
pub fn order_id(quote_id: &str) -> String {
    format!("quote-{quote_id}")
}

/// `POST quote/{id}/accept`.
fn accept_route(ctx: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = param(params, "id")?;
    with_env(ctx, |env| {
        let (change, order) = accept(env, &id, Utc::now(), place_order)?;
        if let Some(order) = order {
            emit(env.tenant, &order);
        }
        if change.before != change.after {
            emit(env.tenant, &change);
        }
        ok_reply(&change)
    })
}

fn not_acceptable(e: NotAcceptable, doc: &Value) -> ApiError {
    match e {
        NotAcceptable::AlreadyAccepted => ApiError::conflict(format!(
            "{e}; its product order is {}",
            doc.pointer("/productOrder/id").and_then(Value::as_str).unwrap_or("recorded")
        ))
        .with_code("ALREADY_ACCEPTED"),
        NotAcceptable::WrongState(_) => ApiError::conflict(e.to_string()).with_code("INVALID_STATE_TRANSITION"),
        NotAcceptable::Expired(_) => ApiError::unprocessable(e.to_string()).with_code("QUOTE_EXPIRED"),
        NotAcceptable::Prospect => ApiError::unprocessable(e.to_string()).with_code("NO_CUSTOMER"),
    }
}

/// Accepts quote `id` at `now`: places its order (once, with `place`: the order side's
/// `place_order`) and records the acceptance. The quote's change and the order's create change
/// to announce: when this call placed it, or when an earlier attempt placed it and may have
/// stopped before announcing it (the order is still `acknowledged`).
pub fn accept<B: KvBackend>(
    env: &Env<'_, B>,
    id: &str,
    now: DateTime<Utc>,
    place: impl Fn(&Env<'_, B>, Value, &str) -> Result<Change, ApiError>,
) -> Result<(Change, Option<Change>), ApiError> {
    let quotes = env.resources(QUOTE);
    let doc = quotes.get(id)?.data;
    let q = QuoteDoc::read(&doc).map_err(|p| rejected("INVALID_QUOTE", &p))?;
    check_acceptance(state_of(&doc)?, q.valid_until, q.customer_id().is_some(), now)
        .map_err(|e| not_acceptable(e, &doc))?;
    let customer_id = q.customer_id().unwrap_or_default().to_string();
    let order_id = order_id(id);
    let (order_doc, created) = match place(env, order_body(&doc, id, &customer_id), &order_id) {
        Ok(change) => (change.after.clone().unwrap_or(Value::Null), Some(change)),
        // A previous or concurrent acceptance placed it: finish that acceptance (announcing the
        // order again if it may never have been announced).
        Err(e) if e.status == 409 => match bss_commerce::order::placed_earlier(env, &order_id)? {
            Some((change, announce)) => (change.after.clone().unwrap_or(Value::Null), announce.then_some(change)),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let href = order_doc.get("href").cloned().unwrap_or_else(|| json!(PRODUCT_ORDER.href(&order_id)));
    let reference = json!({"id": order_id, "href": href, "@referredType": "ProductOrder"});
    let change = quotes.modify(env, &QuoteHooks { accepting: true }, id, |current| {
        let mut next = current.clone();
        match state_of(current)? {
            QuoteState::Accepted => return Ok(current.clone()),
            QuoteState::Approved => {}
            other => return Err(not_acceptable(NotAcceptable::WrongState(other), current)),
        }
        next["state"] = json!("accepted");
        next["productOrder"] = reference.clone();
        Ok(next)
    })?;
    Ok((change, created))
}

/// Places the order of an accepted quote through the order side's one entry point.
fn place_order<B: KvBackend>(env: &Env<'_, B>, body: Value, id: &str) -> Result<Change, ApiError> {
    bss_commerce::order::place_order(env, body, Some(id))
}

#[cfg(test)]
mod tests {
    //! Acceptance natively, on the in-memory store, with a stand-in for the order side's
    //! `place_order` that stores the order document as given (the real one validates and
    //! prices it too): exactly one order per quote, however often acceptance runs.
    use super::*;
    use bss_kit::Tenant;
    use bss_kit::kv::{MemKv, Store};
    use bss_kit::resource::NoHooks;

    fn placed<B: KvBackend>(env: &Env<'_, B>, body: Value, id: &str) -> Result<Change, ApiError> {
        env.resources(PRODUCT_ORDER).create_with_id(env, &NoHooks, id, body)
    }

    fn approved_quote<B: KvBackend>(env: &Env<'_, B>, id: &str, end: &str) {
        let doc = json!({"relatedParty": [{"id": "c1", "role": "customer"}], "billingAccount": {"id": "a1"},
            "state": "approved", "validFor": {"endDateTime": end}, "currency": "EUR",
            "quoteItem": [{"id": "1", "action": "add", "quantity": 1, "productOffering": {"id": "mobile-m"},
                           "quoteItemPrice": [{"priceType": "recurring", "price": {"dutyFreeAmount": {"unit": "EUR", "value": 17.99}}}]}]});
        env.resources(QUOTE).create_with_id(env, &NoHooks, id, doc).unwrap();
    }

    #[test]
    fn one_order_per_quote_and_a_retry_completes_the_acceptance() {
        let store = Store::new(MemKv::default());
        let t = Tenant { tenant_id: "t1".into(), key_id: "k1".into() };
        let env = Env::new(&store, &t);
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        approved_quote(&env, "q1", "2026-07-01T00:00:00Z");
        // A first attempt placed the order and stopped before recording the acceptance.
        placed(&env, order_body(&env.resources(QUOTE).get("q1").unwrap().data, "q1", "c1"), "quote-q1").unwrap();
        let (change, created) = accept(&env, "q1", now, placed).unwrap();
        assert!(created.is_none(), "the retry found the order instead of making a second one");
        let quote = change.after.unwrap();
        assert_eq!(quote["state"], "accepted");
        assert_eq!(quote["productOrder"]["id"], "quote-q1");
        let orders = env.resources(PRODUCT_ORDER).all().unwrap();
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0]["productOrderItem"][0]["itemPrice"][0]["price"]["dutyFreeAmount"]["value"], 17.99);
        assert_eq!(orders[0]["quote"][0]["id"], "q1");
        // Accepting again: 409, nothing changes.
        let e = accept(&env, "q1", now, placed).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (409, "ALREADY_ACCEPTED"));
        assert_eq!(env.resources(PRODUCT_ORDER).all().unwrap().len(), 1);
    }

    #[test]
    fn refused_acceptances_place_nothing() {
        let store = Store::new(MemKv::default());
        let t = Tenant { tenant_id: "t1".into(), key_id: "k1".into() };
        let env = Env::new(&store, &t);
        approved_quote(&env, "old", "2026-02-01T00:00:00Z");
        let e = accept(&env, "old", "2026-06-01T00:00:00Z".parse().unwrap(), placed).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("2026-02-01T00:00:00Z"), "{e}");
        assert_eq!(accept(&env, "missing", Utc::now(), placed).unwrap_err().status, 404);
        // An order-side refusal (here: unavailable) leaves the quote approved.
        approved_quote(&env, "q2", "2099-01-01T00:00:00Z");
        let e = accept(&env, "q2", Utc::now(), |_: &Env<'_, MemKv>, _, _: &str| {
            Err(ApiError::unprocessable("offering retired since"))
        })
        .unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(env.resources(QUOTE).get("q2").unwrap().data["state"], "approved");
        assert!(env.resources(PRODUCT_ORDER).all().unwrap().is_empty());
    }
}
