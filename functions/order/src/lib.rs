//! `order`: product orders (TMF622) with cancellation and tracking, and the product inventory
//! (TMF637). Build with `cargo build --target wasm32-wasip2 --profile release-lto -p order`; tested end to end
//! by `cargo test -p bss-host --test e2e_order` and the TMF637 kit (`--test e2e_ctk`).
//!
//! Routes (tenant API key required):
//! - `POST /tmf-api/productOrderingManagement/v4/productOrder` places an order through
//!   `bss_commerce::order::place_order` (the one way to create an order; honours
//!   `Idempotency-Key`: a retried POST never makes a second order — the order's id derives from
//!   the key, so even a retry after a crash mid-request finds the first order) → 201 `acknowledged`, and
//!   publishes `order.ProductOrderCreateEvent`, on which the order-worker starts fulfilment.
//! - `GET productOrder[/{id}]`: TMF lists / the tracking view — per item `state`, `stateChange`
//!   history and `fulfilmentTask` with their states and what the network allocated.
//! - `PATCH productOrder/{id}`: only `state` (held, pending, inProgress) with
//!   `stateChangeReason`, and descriptive attributes (`description`, `note`,
//!   `externalId`, `priority`); completed/failed/partial/cancelled come from fulfilment and
//!   cancellation (409 naming the transition); anything else is 409.
//! - `DELETE productOrder/{id}`: 405 (orders are cancelled, not deleted).
//! - `POST productOrder/{id}/fulfilmentResult` `{taskId, itemId?, state: completed|failed,
//!   reason?, characteristic?}` (extension): an external OSS reports a task (`taskId` is the
//!   task's id with `itemId`, or the message id `<orderId>.<itemId>.<taskId>`); the same domain
//!   function as the queue path; a duplicate changes nothing.
//! - `POST cancelProductOrder` `{productOrder: {id}, cancellationReason}` → 201 (`done`, or
//!   `inProgress` while completed items are compensated); 409 when the order is final.
//!   `GET cancelProductOrder[/{id}]`.
//! - `/tmf-api/productInventory/v4/product`: TMF list/get, POST (migration), PATCH of
//!   descriptive attributes; status changes are orders (409) — see `bss_commerce::inventory`.
//!   `GET product/{id}/charge` (extension): the product's charges (`billingCharge`).

use bss_commerce::inventory::{CHARGE, InventoryHooks, PRODUCT, product_charges};
use bss_commerce::order::{self as orders, CANCEL, ORDER};
use bss_kit::ApiError;
use bss_kit::http::Router;
use bss_kit::http::{Reply, handler, method_not_allowed, not_found, param};
use bss_kit::resource::{self, Change, created_reply, emit, ok_reply, routes, with_env};
use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};

bss_kit::export_http!(route);

/// Attributes of an order a PATCH may change besides `state`.
const PATCHABLE: &[&str] = &["description", "note", "externalId", "priority", "stateChangeReason", "state"];

fn emit_all(tenant: &bss_kit::Tenant, changes: &[Change]) {
    for c in changes {
        emit(tenant, c);
    }
}

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    let orders_path = ORDER.path();
    let order_item = ORDER.item_route();
    r.post(
        &orders_path,
        handler(|ctx, _| {
            with_env(ctx, |env| {
                let scope = bss_kit::idempotency::tenant_scope(&env.tenant.tenant_id);
                bss_kit::idempotency::idempotent(env.store.backend(), &scope, ctx, || {
                    // Under an Idempotency-Key the order's id derives from the key: a retry that
                    // runs again (its claim went stale after a crash) finds that order instead of
                    // placing a second one, and announces it if orchestration never started.
                    let id = ctx.header(bss_kit::idempotency::HEADER).map(|k| bss_kit::ids::derived_id("order-", k));
                    let (change, announce) = match orders::place_order(env, ctx.json()?, id.as_deref()) {
                        Ok(change) => (change, true),
                        Err(e) if e.status == 409 => match id.as_deref() {
                            Some(id) => orders::placed_earlier(env, id)?.ok_or(e)?,
                            None => return Err(e),
                        },
                        Err(e) => return Err(e),
                    };
                    if announce {
                        emit(env.tenant, &change);
                    }
                    created_reply(&change)
                })
            })
        }),
    );
    r.get(&orders_path, handler(|ctx, _| with_env(ctx, |env| routes::list(env, ORDER, ctx))));
    r.get(&order_item, handler(|ctx, p| with_env(ctx, |env| routes::get(env, ORDER, ctx, &param(p, "id")?))));
    r.patch(&order_item, handler(|ctx, p| with_env(ctx, |env| patch_order(env, ctx, &param(p, "id")?))));
    r.any(&orders_path, method_not_allowed);
    r.any(&order_item, method_not_allowed);
    let result = format!("{}/productOrder/:id/fulfilmentResult", orders::BASE);
    r.post(&result, handler(|ctx, p| with_env(ctx, |env| fulfilment_result(env, ctx, &param(p, "id")?))));
    r.any(&result, method_not_allowed);

    let cancel_path = CANCEL.path();
    r.post(
        &cancel_path,
        handler(|ctx, _| {
            with_env(ctx, |env| {
                let scope = bss_kit::idempotency::tenant_scope(&env.tenant.tenant_id);
                bss_kit::idempotency::idempotent(env.store.backend(), &scope, ctx, || {
                    let (change, step) = orders::cancel(env, ctx.json()?)?;
                    after_step(env, step)?;
                    emit(env.tenant, &change);
                    created_reply(&change)
                })
            })
        }),
    );
    r.get(&cancel_path, handler(|ctx, _| with_env(ctx, |env| routes::list(env, CANCEL, ctx))));
    r.get(&CANCEL.item_route(), handler(|ctx, p| with_env(ctx, |env| routes::get(env, CANCEL, ctx, &param(p, "id")?))));
    r.any(&cancel_path, method_not_allowed);
    r.any(&CANCEL.item_route(), method_not_allowed);

    let charges = format!("{}/product/:id/charge", PRODUCT.base_path);
    r.get(
        &charges,
        handler(|ctx, p| with_env(ctx, |env| resource::list_reply(ctx, product_charges(env, &param(p, "id")?)?))),
    );
    r.any(&charges, method_not_allowed);
    resource::register(&mut r, PRODUCT, InventoryHooks);
    let _ = CHARGE;
    r.any("/*", not_found);
    r.handle(req)
}

/// Sends a step's messages, settles a final order (inventory, charges, cancellation request)
/// and publishes the events of every change.
fn after_step(env: &resource::Env<'_, bss_kit::wasi_kv::WasiKv>, step: orders::Step) -> Result<Value, ApiError> {
    orders::send(env.tenant, &step.dispatches)?;
    if let Some(c) = &step.change {
        emit(env.tenant, c);
    }
    let settled = orders::settle(env, &step.order)?;
    emit_all(env.tenant, &settled);
    Ok(step.order)
}

fn patch_order(
    env: &resource::Env<'_, bss_kit::wasi_kv::WasiKv>,
    ctx: &bss_kit::Ctx,
    id: &str,
) -> Result<Reply, ApiError> {
    let patch: Value = ctx.json()?;
    let Value::Object(p) = &patch else { return Err(ApiError::bad_request("a merge patch must be a JSON object")) };
    if let Some(k) = p.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return Err(ApiError::conflict(format!(
            "product order {k} cannot be patched: items change through new orders, states through fulfilment and cancelProductOrder"
        ))
        .with_code("NOT_PATCHABLE"));
    }
    if let Some(state) = p.get("state") {
        let state = state.as_str().ok_or_else(|| ApiError::bad_request("state must be a string"))?;
        let reason = p.get("stateChangeReason").and_then(Value::as_str);
        let step = orders::set_state(env, id, state, reason)?;
        after_step(env, step)?;
    }
    let rest: serde_json::Map<String, Value> = p
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "state" | "stateChangeReason"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rest.is_empty() {
        let change = env.resources(ORDER).patch(env, &bss_kit::resource::NoHooks, id, &Value::Object(rest), None)?;
        emit(env.tenant, &change);
        return ok_reply(&change);
    }
    resource::doc_reply(&env.resources(ORDER).get(id)?)
}

fn fulfilment_result(
    env: &resource::Env<'_, bss_kit::wasi_kv::WasiKv>,
    ctx: &bss_kit::Ctx,
    order_id: &str,
) -> Result<Reply, ApiError> {
    let body: Value = ctx.json()?;
    let task = body.get("taskId").and_then(Value::as_str).unwrap_or_default();
    let (item, task) = match body.get("itemId").and_then(Value::as_str) {
        Some(item) => (item.to_string(), task.to_string()),
        None => {
            let rest = task.strip_prefix(&format!("{order_id}.")).unwrap_or(task);
            match rest.split_once('.') {
                Some((i, t)) => (i.to_string(), t.to_string()),
                None => {
                    return Err(ApiError::unprocessable("taskId must be <orderId>.<itemId>.<taskId>, or give itemId"));
                }
            }
        }
    };
    let result = orders::parse_result(&body)?;
    let step = orders::apply_result(env, order_id, &item, &task, &result)?;
    let changed = step.change.is_some();
    let order = after_step(env, step)?;
    Reply::json(200, &json!({"productOrder": {"id": order_id, "state": order["state"]}, "applied": changed}))
}
