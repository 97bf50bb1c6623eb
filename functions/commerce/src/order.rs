//! Product orders (TMF622, collection `productOrder`): placing one ([`place_order`], the one way
//! an order is created — by `POST productOrder` and by quote acceptance), and the orchestration
//! steps both the order-worker (queue) and the order component (HTTP) run: [`start`],
//! [`apply_result`], [`cancel`], [`set_state`]. The decisions themselves are pure functions of
//! the document in `bss_domain::order::fulfilment`; this module loads, stores with
//! compare-and-swap (`Resources::modify`, so concurrent results for one order never lose one)
//! and answers the messages to send after the write ([`send`]).
//!
//! Placing an order validates, and refuses with 4xx naming the problem (nothing stored):
//! - 1 to 100 items with unique ids (1–32 chars `[A-Za-z0-9_-]`), `action` add | modify |
//!   delete | noChange, `quantity` an integer ≥ 1 (default 1), relationships between items of
//!   the order without cycles;
//! - the customer (`relatedParty` role customer) and `billingAccount` exist (and the account
//!   names the customer);
//! - `add` needs an orderable `productOffering` (exists, active, not retired) and the basket
//!   rules of the catalog hold with the customer's existing products (requires, excludes,
//!   add-on-of); `modify`/`delete`/`noChange` need `product {id}` of an active or suspended
//!   product of that customer. A modify whose `product.status` is `suspended` suspends,
//!   `active` on a suspended product resumes, `terminated` terminates.
//! - Prices: each `add` item is priced from the catalog at the order date in the account's
//!   currency (`itemPrice`, with the price id and version), unless it carries `itemPrice`
//!   already (an accepted quote keeps its prices).
//!
//! The stored order has `state: acknowledged`, `orderDate`, `stateChange` history, and per item
//! `state`, `stateChange`, `quantity`, `productAction`.

use bss_domain::catalog::basket::{self, Action, Basket, Item};
use bss_domain::catalog::{Kind as CatalogKind, money_to_json};
use bss_domain::money::RoundingRule;
use bss_domain::order::fulfilment::{self, Dispatch, MAX_ITEMS, OrderError, SpecRef, TaskResult};
use bss_domain::order::{CancelState, OrderState};
use bss_kit::ApiError;
use bss_kit::auth::Tenant;
use bss_kit::ids::now_rfc3339;
use bss_kit::kv::KvBackend;
use bss_kit::resource::{Change, Env, Kind, NoHooks};
use serde_json::{Value, json};

use crate::inventory::customer_of;

/// API base path.
pub const BASE: &str = "/tmf-api/productOrderingManagement/v4";
/// Product orders.
pub const ORDER: Kind =
    Kind { collection: "productOrder", type_name: "ProductOrder", base_path: BASE, domain: "order" };
/// Cancellation requests.
pub const CANCEL: Kind =
    Kind { collection: "cancelProductOrder", type_name: "CancelProductOrder", base_path: BASE, domain: "order" };
/// Server-owned attributes of an order a client may not send.
const SERVER_OWNED: &[&str] = &["state", "stateChange", "orderDate", "completionDate"];

fn s<'a>(v: &'a Value, f: &str) -> &'a str {
    v.get(f).and_then(Value::as_str).unwrap_or_default()
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(msg).with_code("INVALID_ORDER")
}

/// The HTTP error of a refused orchestration step.
pub fn api_error(e: OrderError) -> ApiError {
    match e {
        OrderError::Conflict(m) => ApiError::conflict(m).with_code("INVALID_STATE_TRANSITION"),
        OrderError::Invalid(m) => ApiError::unprocessable(m),
        OrderError::NotFound(m) => ApiError::not_found(m),
    }
}

/// The order `id` that an earlier attempt of the same step (a retried quote acceptance or
/// `Idempotency-Key` POST) already placed, as the change to answer with, and whether it still
/// needs announcing: an order still `acknowledged` may come from an attempt that stopped before
/// publishing its create event, on which orchestration starts (the worker is idempotent, so a
/// second announcement is harmless). `None` if there is no such order.
pub fn placed_earlier<B: KvBackend>(env: &Env<'_, B>, id: &str) -> Result<Option<(Change, bool)>, ApiError> {
    Ok(env.resources(ORDER).find(id)?.map(|doc| {
        let announce = doc.data.get("state").and_then(Value::as_str) == Some(OrderState::Acknowledged.as_str());
        (Change::new(ORDER, None, Some(doc.data), doc.version), announce)
    }))
}

/// Places an order (see the module doc); `id` is a server-chosen id (quote acceptance: a retried
/// acceptance gets 409 instead of a second order). Publish the create event with
/// `bss_kit::resource::emit`.
pub fn place_order<B: KvBackend>(env: &Env<'_, B>, body: Value, id: Option<&str>) -> Result<Change, ApiError> {
    let Value::Object(mut doc) = body else {
        return Err(ApiError::bad_request("a product order must be a JSON object").with_code("INVALID_BODY"));
    };
    for f in SERVER_OWNED {
        if doc.get(*f).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request(format!("{f} is set by the server; leave it out of a new order"))
                .with_code("SERVER_OWNED_ATTRIBUTE"));
        }
    }
    let mut items = match doc.remove("productOrderItem") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_ITEMS => items,
        _ => return Err(invalid(format!("productOrderItem must hold 1 to {MAX_ITEMS} items"))),
    };
    let customer = customer_of(&Value::Object(doc.clone()))
        .ok_or_else(|| invalid("relatedParty must name the customer (role customer)"))?;
    crate::pricing::existing_customer(env, &customer)?;
    let account_id =
        doc.get("billingAccount").and_then(|b| b.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
    if account_id.is_empty() {
        return Err(invalid("billingAccount {id} is mandatory: it pays for the products"));
    }
    // Prices are in the paying account's currency: never a silent default or conversion.
    let currency = crate::pricing::billing_account_currency(env, &account_id, Some(&customer))?.ok_or_else(|| {
        invalid(format!("billingAccount {account_id} has no currency; an order is priced in the account's currency"))
    })?;
    let problems = fulfilment::check_relationships(&items);
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }
    let held: Vec<Value> = crate::pricing::customer_products(env, &customer)?
        .into_iter()
        .filter(|p| customer_of(p).as_deref() == Some(customer.as_str()))
        .filter(|p| matches!(s(p, "status"), "active" | "suspended"))
        .collect();
    let snap = crate::pricing::catalog(env)?;
    let now = now_rfc3339();
    let at = chrono::Utc::now();
    let mut basket_items = Vec::new();
    let mut priced_index = Vec::new();
    for (n, item) in items.iter_mut().enumerate() {
        let action = item.get("action").and_then(Value::as_str).unwrap_or("add").to_string();
        let quantity = match item.get("quantity") {
            None => 1,
            Some(q) => match q.as_u64() {
                Some(q) if (1..=u64::from(basket::MAX_QUANTITY)).contains(&q) => q,
                _ => {
                    return Err(invalid(format!(
                        "productOrderItem[{n}].quantity must be an integer from 1 to {}, not {q}",
                        basket::MAX_QUANTITY
                    )));
                }
            },
        };
        item["quantity"] = json!(quantity);
        item["action"] = json!(action);
        let product_action = match action.as_str() {
            "add" => {
                let offering =
                    item.pointer("/productOffering/id").and_then(Value::as_str).unwrap_or_default().to_string();
                if offering.is_empty() {
                    return Err(invalid(format!("productOrderItem[{n}]: an add needs productOffering {{id}}")));
                }
                if let Some(o) = snap.get(CatalogKind::ProductOffering, &offering) {
                    item["productOffering"] = json!({"id": offering, "name": o.get("name")});
                    item["isBundle"] = o.get("isBundle").cloned().unwrap_or(json!(false));
                }
                basket_items.push(Item {
                    offering_id: offering,
                    quantity: quantity as u32,
                    action: Action::Add,
                    replaces: None,
                });
                priced_index.push(n);
                "activate".to_string()
            }
            "modify" | "delete" | "noChange" => {
                let pid = item.pointer("/product/id").and_then(Value::as_str).unwrap_or_default().to_string();
                let Some(product) = held.iter().find(|p| s(p, "id") == pid) else {
                    return Err(invalid(format!(
                        "productOrderItem[{n}]: {action} needs product {{id}} of an active or suspended product of customer {customer}; {pid:?} is not one"
                    )));
                };
                item["productOffering"] = product.get("productOffering").cloned().unwrap_or(Value::Null);
                let current = s(product, "status");
                match action.as_str() {
                    "delete" => {
                        let offering =
                            product.pointer("/productOffering/id").and_then(Value::as_str).unwrap_or_default();
                        basket_items.push(Item {
                            offering_id: offering.into(),
                            quantity: 1,
                            action: Action::Remove,
                            replaces: None,
                        });
                        "deactivate".to_string()
                    }
                    "noChange" => "none".to_string(),
                    _ => match (current, item.pointer("/product/status").and_then(Value::as_str)) {
                        ("active", Some("suspended")) => "suspend".to_string(),
                        ("suspended", Some("active")) => "resume".to_string(),
                        (_, Some("terminated")) => "deactivate".to_string(),
                        (c, Some(st)) if st != c && !st.is_empty() => {
                            return Err(invalid(format!(
                                "productOrderItem[{n}]: product {pid} is {c}; a modify cannot make it {st}"
                            )));
                        }
                        _ => "modify".to_string(),
                    },
                }
            }
            other => {
                return Err(invalid(format!(
                    "productOrderItem[{n}].action must be add, modify, delete or noChange, not {other:?}"
                )));
            }
        };
        item["productAction"] = json!(product_action);
    }
    if !basket_items.is_empty() {
        let existing: Vec<String> = held
            .iter()
            .filter_map(|p| p.pointer("/productOffering/id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let basket = Basket { items: basket_items.clone(), existing, market_segments: None, currency, at };
        let problems = basket::check(&basket, &snap);
        if !problems.is_empty() {
            return Err(invalid(bss_domain::catalog::describe(&problems)).with_code("ORDER_NOT_ALLOWED"));
        }
        let adds: Vec<Item> = basket_items.into_iter().filter(|i| i.action == Action::Add).collect();
        if !adds.is_empty() {
            let basket = Basket { items: adds, ..basket };
            let priced = basket::price(&basket, &snap, RoundingRule::HalfEven)
                .map_err(|p| invalid(bss_domain::catalog::describe(&p)))?;
            for (k, n) in priced_index.iter().enumerate() {
                let item = &mut items[*n];
                if item.get("itemPrice").is_some() {
                    continue; // an accepted quote's prices are kept
                }
                let lines: Vec<Value> = priced
                    .lines
                    .iter()
                    .filter(|l| l.item == k)
                    .map(|l| {
                        let mut p = json!({
                            "name": l.price_name, "priceType": l.price_type.as_str(),
                            "price": {"dutyFreeAmount": money_to_json(&l.amount)},
                            "unitPrice": money_to_json(&l.unit_price), "quantity": l.quantity,
                            "productOfferingPrice": {"id": l.price_id}, "priceVersion": l.price_version.to_string(),
                        });
                        if let Some((period, len)) = l.period {
                            p["recurringChargePeriod"] = serde_json::to_value(period).unwrap_or(Value::Null);
                            p["recurringChargePeriodLength"] = json!(len);
                        }
                        if !l.discounts.is_empty() {
                            // TMF622 priceAlteration: the rules that fired, amounts for the line.
                            let currency = l.amount.currency;
                            p["priceAlteration"] = Value::Array(
                                l.discounts
                                    .iter()
                                    .map(|f| {
                                        json!({"name": f.name, "pricingRule": {"id": f.id}, "priceType": l.price_type.as_str(),
                                               "price": {"dutyFreeAmount": money_to_json(&bss_domain::money::Money::new(-f.amount, currency))}})
                                    })
                                    .collect(),
                            );
                        }
                        if let Some(t) = &l.tax_category {
                            p["taxCategory"] = json!(t);
                        }
                        p
                    })
                    .collect();
                item["itemPrice"] = Value::Array(lines);
            }
        }
    }
    for item in &mut items {
        item["state"] = json!("acknowledged");
        item["stateChange"] = json!([{"state": "acknowledged", "changeDate": now}]);
    }
    doc.insert("productOrderItem".into(), Value::Array(items));
    doc.insert("state".into(), json!("acknowledged"));
    doc.insert("orderDate".into(), json!(now));
    doc.insert("stateChange".into(), json!([{"state": "acknowledged", "changeDate": now}]));
    let resources = env.resources(ORDER);
    match id {
        Some(id) => resources.create_with_id(env, &NoHooks, id, Value::Object(doc)),
        None => resources.create(env, &NoHooks, Value::Object(doc)),
    }
}

/// The service and resource specifications of an item's offering's product specification.
fn specs_of(snap: &bss_domain::catalog::Snapshot, item: &Value) -> Vec<SpecRef> {
    let offering = item.pointer("/productOffering/id").and_then(Value::as_str).unwrap_or_default();
    let Some(spec_id) = snap
        .get(CatalogKind::ProductOffering, offering)
        .and_then(|o| o.pointer("/productSpecification/id"))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    let Some(spec) = snap.get(CatalogKind::ProductSpecification, spec_id) else { return Vec::new() };
    let mut out = Vec::new();
    for (field, t) in
        [("serviceSpecification", "ServiceSpecification"), ("resourceSpecification", "ResourceSpecification")]
    {
        for r in spec.get(field).and_then(Value::as_array).into_iter().flatten() {
            out.push(SpecRef { id: s(r, "id").into(), name: s(r, "name").into(), referred_type: t });
        }
    }
    out
}

/// What a step did: the order change (if it wrote) and the messages to send.
#[derive(Debug, Default)]
pub struct Step {
    /// The stored change, `None` when nothing changed.
    pub change: Option<Change>,
    /// Messages to send (after the write).
    pub dispatches: Vec<Dispatch>,
    /// The order after the step.
    pub order: Value,
}

/// Runs `f` on the order under compare-and-swap; no write when `f` changes nothing.
fn step<B: KvBackend>(
    env: &Env<'_, B>,
    order_id: &str,
    f: impl Fn(&mut Value, &str) -> Result<Vec<Dispatch>, OrderError>,
) -> Result<Step, ApiError> {
    let current = env.resources(ORDER).get(order_id)?.data;
    let now = now_rfc3339();
    let mut probe = current.clone();
    let out = f(&mut probe, &now).map_err(api_error)?;
    if probe == current {
        return Ok(Step { change: None, dispatches: out, order: current });
    }
    let mut sent = Vec::new();
    let change = env.resources(ORDER).modify(env, &NoHooks, order_id, |doc| {
        let mut next = doc.clone();
        sent = f(&mut next, &now).map_err(api_error)?;
        Ok(next)
    })?;
    let order = change.after.clone().unwrap_or(Value::Null);
    Ok(Step { change: Some(change), dispatches: sent, order })
}

/// Starts fulfilment of an order (order-worker, on its create event; or after an agent resumed a
/// never-started order). A redelivered event resends the tasks in flight (same message ids).
pub fn start<B: KvBackend>(env: &Env<'_, B>, order_id: &str) -> Result<Step, ApiError> {
    let snap = crate::pricing::catalog(env)?;
    let mut st = step(env, order_id, |doc, now| fulfilment::start(doc, &|item| specs_of(&snap, item), now))?;
    if st.change.is_none() {
        st.dispatches = fulfilment::in_flight(&st.order);
    }
    Ok(st)
}

/// Applies an OSS result (queue or HTTP callback). Idempotent.
pub fn apply_result<B: KvBackend>(
    env: &Env<'_, B>,
    order_id: &str,
    item_id: &str,
    task_id: &str,
    result: &TaskResult,
) -> Result<Step, ApiError> {
    step(env, order_id, |doc, now| fulfilment::apply_result(doc, item_id, task_id, result, now))
}

/// An agent's PATCH of `state` (held, pending, inProgress with `stateChangeReason`).
pub fn set_state<B: KvBackend>(
    env: &Env<'_, B>,
    order_id: &str,
    state: &str,
    reason: Option<&str>,
) -> Result<Step, ApiError> {
    let next = OrderState::parse(state)
        .ok_or_else(|| ApiError::unprocessable(format!("state {state:?} is not a product order state")))?;
    let snap = crate::pricing::catalog(env)?;
    step(env, order_id, |doc, now| {
        let mut out = fulfilment::set_state_by_agent(doc, next, reason, now)?;
        if fulfilment::needs_decomposition(doc) {
            out.extend(fulfilment::start(doc, &|item| specs_of(&snap, item), now)?);
        }
        Ok(out)
    })
}

/// `POST cancelProductOrder`: records the request, cancels the order (409 when it cannot be),
/// and answers the request (done when nothing was left to compensate, else inProgress until the
/// order-worker sees the order cancelled) with the order step.
pub fn cancel<B: KvBackend>(env: &Env<'_, B>, body: Value) -> Result<(Change, Step), ApiError> {
    let order_id = body.pointer("/productOrder/id").and_then(Value::as_str).unwrap_or_default().to_string();
    if order_id.is_empty() {
        return Err(ApiError::unprocessable("productOrder {id} is mandatory"));
    }
    let reason = body.get("cancellationReason").and_then(Value::as_str).unwrap_or("cancelled on request").to_string();
    env.resources(ORDER)
        .find(&order_id)?
        .ok_or_else(|| ApiError::not_found(format!("productOrder {order_id} does not exist")))?;
    let step = step(env, &order_id, |doc, now| fulfilment::cancel(doc, &reason, now))?;
    let now = now_rfc3339();
    let state = if step.order["state"] == "cancelled" { CancelState::Done } else { CancelState::InProgress };
    let mut req = body;
    req["state"] = json!(state.as_str());
    req["effectiveCancellationDate"] = json!(now);
    req["productOrder"] = json!({"id": order_id, "href": ORDER.href(&order_id), "@referredType": "ProductOrder"});
    req["stateChange"] =
        json!([{"state": "acknowledged", "changeDate": now}, {"state": state.as_str(), "changeDate": now}]);
    let change = env.resources(CANCEL).create(env, &NoHooks, req)?;
    // Link the order to its cancellation so the worker can close the request.
    let cancel_id = change.id().to_string();
    let _ = env.resources(ORDER).modify(env, &NoHooks, &order_id, |doc| {
        let mut next = doc.clone();
        next["cancellation"] = json!({"id": cancel_id, "href": CANCEL.href(&cancel_id)});
        Ok(next)
    });
    Ok((change, step))
}

/// Closes the cancellation request of a cancelled order (done; terminatedWithError when some
/// compensation failed). Idempotent.
pub fn close_cancellation<B: KvBackend>(env: &Env<'_, B>, order: &Value) -> Result<Option<Change>, ApiError> {
    let Some(id) = order.pointer("/cancellation/id").and_then(Value::as_str) else { return Ok(None) };
    if s(order, "state") != "cancelled" {
        return Ok(None);
    }
    let failed = order["productOrderItem"].as_array().into_iter().flatten().any(|i| s(i, "state") == "failed");
    let target = if failed { CancelState::TerminatedWithError } else { CancelState::Done };
    let current = env.resources(CANCEL).get(id)?.data;
    let from = CancelState::parse(s(&current, "state")).unwrap_or(CancelState::Acknowledged);
    if !from.can_become(target) {
        return Ok(None);
    }
    let now = now_rfc3339();
    env.resources(CANCEL)
        .modify(env, &NoHooks, id, |doc| {
            let mut next = doc.clone();
            next["state"] = json!(target.as_str());
            if let Some(h) = next.get_mut("stateChange").and_then(Value::as_array_mut) {
                h.push(json!({"state": target.as_str(), "changeDate": now}));
            }
            Ok(next)
        })
        .map(Some)
}

/// After a step: writes the inventory and charges of a completed/partial order and closes a
/// cancellation; answers every change made (to publish events).
pub fn settle<B: KvBackend>(env: &Env<'_, B>, order: &Value) -> Result<Vec<Change>, ApiError> {
    let mut changes = crate::inventory::complete_order(env, order)?;
    changes.extend(close_cancellation(env, order)?);
    Ok(changes)
}

/// Publishes fulfilment messages (wasm only): subject, deterministic id and the order id as
/// ordering key; the body gains `tenantId`.
pub fn send(tenant: &Tenant, dispatches: &[Dispatch]) -> Result<(), ApiError> {
    for d in dispatches {
        let mut body = d.body.clone();
        body["tenantId"] = json!(tenant.tenant_id);
        let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::internal(e.to_string()))?;
        let key = s(&body, "orderId").to_string();
        bss_kit::events::publish(&d.subject, bytes, Some(d.message_id.clone()), Some(key)).map_err(|e| {
            ApiError::service_unavailable("the fulfilment queue is unavailable; retry later", e.to_string())
        })?;
    }
    Ok(())
}

/// A result as the OSS reports it: `{state: completed|failed, reason?, characteristic?}`.
pub fn parse_result(body: &Value) -> Result<TaskResult, ApiError> {
    let completed = match s(body, "state") {
        "completed" => true,
        "failed" => false,
        other => return Err(ApiError::unprocessable(format!("state must be completed or failed, not {other:?}"))),
    };
    let characteristic = body.get("characteristic").and_then(Value::as_array).cloned().unwrap_or_default();
    if characteristic.len() > 50 {
        return Err(ApiError::unprocessable("at most 50 characteristics per result"));
    }
    Ok(TaskResult { completed, reason: body.get("reason").and_then(Value::as_str).map(str::to_string), characteristic })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{CHARGE, PRODUCT, complete_order};
    use bss_kit::kv::{MemKv, Store};
    use bss_kit::resource::Env;

    fn tenant() -> Tenant {
        Tenant { tenant_id: "t1".into(), key_id: "k1".into() }
    }

    /// The sample catalog, a customer and its billing account, in memory.
    fn seeded(store: &Store<MemKv>, t: &Tenant) {
        let env = Env::new(store, t);
        let sample: Value = serde_json::from_str(include_str!("../../../infra/samples/catalog.json")).unwrap();
        for (kind, doc) in bss_domain::catalog::import::parse_import(&sample).unwrap() {
            env.resources(bss_kit::catalog::kind(kind)).upsert(&env, &NoHooks, doc).unwrap();
        }
        env.resources(crate::inventory::CUSTOMER).create_with_id(&env, &NoHooks, "c1", json!({"name": "Ada"})).unwrap();
        env.resources(crate::inventory::BILLING_ACCOUNT)
            .create_with_id(
                &env,
                &NoHooks,
                "ba1",
                json!({"name": "Home", "currency": "EUR", "billCycleDay": 1, "timeZone": "UTC",
                       "relatedParty": [{"id": "c1", "role": "owner"}]}),
            )
            .unwrap();
    }

    fn body(items: Value) -> Value {
        json!({"relatedParty": [{"id": "c1", "role": "customer"}], "billingAccount": {"id": "ba1"}, "productOrderItem": items})
    }

    #[test]
    fn an_order_is_placed_fulfilled_and_completed_into_the_inventory_once() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        seeded(&store, &t);
        let env = Env::new(&store, &t);
        let placed = place_order(
            &env,
            body(json!([{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}])),
            Some("o1"),
        )
        .unwrap();
        assert_eq!(placed.after.as_ref().unwrap()["state"], "acknowledged");
        // A retried quote acceptance with the same server-chosen id makes no second order.
        let again = place_order(
            &env,
            body(json!([{"id": "1", "action": "add", "productOffering": {"id": "mobile-m"}}])),
            Some("o1"),
        );
        assert_eq!(again.unwrap_err().status, 409);

        let started = start(&env, "o1").unwrap();
        let ids: Vec<&str> = started.dispatches.iter().map(|d| d.message_id.as_str()).collect();
        assert_eq!(ids, vec!["o1.1.t1", "o1.1.t2"]);
        // A redelivered create event resends the same messages and writes nothing.
        let redelivered = start(&env, "o1").unwrap();
        assert!(redelivered.change.is_none());
        assert_eq!(redelivered.dispatches.len(), 2);

        let ok = TaskResult {
            completed: true,
            reason: None,
            characteristic: vec![json!({"name": "MSISDN", "value": "+1"})],
        };
        apply_result(&env, "o1", "1", "t1", &ok).unwrap();
        let last = apply_result(&env, "o1", "1", "t2", &ok).unwrap();
        assert_eq!(last.order["state"], "completed");
        let first = complete_order(&env, &last.order).unwrap();
        assert_eq!(first.len(), 3, "the product and its two charges");
        assert!(complete_order(&env, &last.order).unwrap().is_empty(), "a second completion writes nothing");
        let product = env.resources(PRODUCT).get("o1-1").unwrap().data;
        assert_eq!(product["status"], "active");
        assert_eq!(product["productCharacteristic"][0]["value"], "+1");
        assert_eq!(env.resources(CHARGE).all().unwrap().len(), 2);
        assert!(apply_result(&env, "o1", "1", "t2", &ok).unwrap().change.is_none(), "duplicate result");
    }

    #[test]
    fn refused_orders_store_nothing() {
        let store = Store::new(MemKv::default());
        let t = tenant();
        seeded(&store, &t);
        let env = Env::new(&store, &t);
        let cases = [
            (json!([{"id": "1", "productOffering": {"id": "nope"}}]), 422),
            (
                json!([{"id": "1", "productOffering": {"id": "fibre-1g"}}, {"id": "2", "productOffering": {"id": "adsl-20m"}}]),
                422,
            ),
            (json!([{"id": "1", "quantity": 0, "productOffering": {"id": "mobile-m"}}]), 422),
            (json!([{"id": "1", "action": "delete", "product": {"id": "p9"}}]), 422),
            (json!([{"id": "a b", "productOffering": {"id": "mobile-m"}}]), 422),
        ];
        for (items, status) in cases {
            assert_eq!(place_order(&env, body(items.clone()), None).unwrap_err().status, status, "{items}");
        }
        assert!(env.resources(ORDER).all().unwrap().is_empty());
    }
}
