//! `order-worker`: order orchestration, a queue consumer (`[[trigger.queue]]`, no HTTP). Build
//! with `cargo build --target wasm32-wasip2 --profile release-lto -p order-worker`; tested end to end by
//! `cargo test -p bss-host --test e2e_order`.
//!
//! It consumes:
//! - `order.ProductOrderCreateEvent` → `bss_commerce::order::start`: decomposes every item into
//!   fulfilment tasks (by its product specification's service/resource specifications and the
//!   action), stores them on the order (compare-and-swap), then publishes each task on
//!   `oss.task.<taskType>` with the message id `<orderId>.<itemId>.<taskId>` and the order id as
//!   ordering key. A redelivered event resends the tasks in flight under the same ids, which the
//!   queue stores once, so work is never duplicated.
//! - `oss.result` (from oss-sim or any OSS on the queue) → `bss_commerce::order::apply_result`,
//!   the same function as the HTTP callback; then sends what was released (dependants) or
//!   cancelled, and — once the order is completed or partial — writes the inventory products and
//!   the charges that start billing (idempotent: deterministic ids), or closes the cancellation.
//!
//! An `Err` makes the host retry with backoff (a store or queue outage); a message that can never
//! succeed (unknown order or task, malformed) is logged and acknowledged so it does not loop.

use bss_commerce::order as orders;
use bss_kit::events::Message;
use bss_kit::resource::{Env, emit};
use bss_kit::{ApiError, Tenant};
use serde_json::Value;

bss_kit::export_consumer!(handle);

fn handle(msg: Message) -> Result<(), String> {
    let body: Value = match serde_json::from_slice(&msg.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("order-worker: dropping message {} on {}: not JSON ({e})", msg.id, msg.subject);
            return Ok(());
        }
    };
    let outcome = if msg.subject.starts_with("order.") { on_order_created(&body) } else { on_result(&body) };
    match outcome {
        Ok(()) => Ok(()),
        // Refusals (4xx) will not get better with a retry.
        Err(e) if e.status < 500 => {
            eprintln!("order-worker: message {} on {} refused: {}", msg.id, msg.subject, e.message);
            Ok(())
        }
        Err(e) => Err(format!("{} ({})", e.message, e.detail().unwrap_or_default())),
    }
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn with_tenant(
    tenant_id: &str,
    f: impl FnOnce(&Env<'_, bss_kit::wasi_kv::WasiKv>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    if tenant_id.is_empty() {
        return Err(ApiError::bad_request("message without tenantId"));
    }
    let store = bss_kit::wasi_kv::open_store()?;
    let tenant = Tenant { tenant_id: tenant_id.to_string(), key_id: "order-worker".into() };
    f(&Env::new(&store, &tenant))
}

fn finish(env: &Env<'_, bss_kit::wasi_kv::WasiKv>, step: orders::Step) -> Result<(), ApiError> {
    orders::send(env.tenant, &step.dispatches)?;
    if let Some(c) = &step.change {
        emit(env.tenant, c);
    }
    for c in orders::settle(env, &step.order)? {
        emit(env.tenant, &c);
    }
    Ok(())
}

fn on_order_created(event: &Value) -> Result<(), ApiError> {
    with_tenant(str_of(event, "/tenantId"), |env| {
        let step = orders::start(env, str_of(event, "/event/productOrder/id"))?;
        finish(env, step)
    })
}

fn on_result(result: &Value) -> Result<(), ApiError> {
    with_tenant(str_of(result, "/tenantId"), |env| {
        let parsed = orders::parse_result(result)?;
        let step = orders::apply_result(
            env,
            str_of(result, "/orderId"),
            str_of(result, "/itemId"),
            str_of(result, "/taskId"),
            &parsed,
        )?;
        finish(env, step)
    })
}
