//! `tc-queuetest`: test component that publishes on the queue over HTTP and reports what
//! `tc-queueconsumer` recorded. Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tc-queuetest`; driven by the end-to-end queue
//! tests (route table in `tests/components/README.md`).
//!
//! - `POST /queuetest/publish` `{"subject", "body": <any JSON>, "bodyText"?: string, "id"?: string,
//!   "orderingKey"?: string}` → 202 `{"id"}`; the message body is `body` serialised as JSON (or
//!   `bodyText` as is). A refused message → 400 (`INVALID_MESSAGE`, the host's reason in
//!   `message`), an unavailable queue → 503; bad request JSON → 400.
//! - `GET /queuetest/deliveries/{messageId}` → 200 `{"id", "attempts", "succeeded", "meta"}` (0 /
//!   false / null before the first delivery).
//! - `GET /queuetest/order/{orderingKey}` → 200 JSON array of the ids handled successfully for
//!   that key, in order (`[]` if none).

use bss_kit::ApiError;
use bss_kit::events::{PublishFailure, publish};
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, handler, method_not_allowed, not_found, wildcard};
use bss_kit::kv::KvBackend;
use bss_kit::wasi_kv::open_store;
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{Params, Request, Response};

#[path = "../../queueconsumer/src/keys.rs"]
mod keys;

bss_kit::export_http!(route);

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    r.post("/queuetest/publish", handler(publish_message));
    r.get("/queuetest/deliveries/*", handler(deliveries));
    r.get("/queuetest/order/*", handler(order));
    r.any("/queuetest/publish", method_not_allowed);
    r.any("/*", not_found);
    r.handle(req)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishRequest {
    subject: String,
    #[serde(default)]
    body: Value,
    body_text: Option<String>,
    id: Option<String>,
    ordering_key: Option<String>,
}

fn publish_message(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let req: PublishRequest = ctx.json()?;
    let body = match req.body_text {
        Some(text) => text.into_bytes(),
        None => serde_json::to_vec(&req.body).map_err(|e| ApiError::internal(e.to_string()))?,
    };
    match publish(&req.subject, body, req.id, req.ordering_key) {
        Ok(id) => Reply::json(202, &json!({"id": id})),
        Err(PublishFailure::Invalid(m)) => Err(ApiError::bad_request(m).with_code("INVALID_MESSAGE")),
        Err(e @ PublishFailure::Unavailable(_)) => {
            Err(ApiError::service_unavailable("the queue is unavailable; retry later", e.to_string()))
        }
    }
}

fn deliveries(_: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let id = wildcard(params)?;
    let store = open_store()?;
    let kv = store.backend();
    // `ok` first: the consumer counts the attempt before it marks success, so an `ok` seen here
    // comes with its attempt already counted (the other order can read 0 attempts, succeeded).
    let succeeded = kv.exists(&keys::ok_key(&id))?;
    let attempts = match kv.get(&keys::attempts_key(&id))? {
        Some(b) => String::from_utf8_lossy(&b).trim().parse::<i64>().unwrap_or(-1),
        None => 0,
    };
    let meta = kv.get(&keys::meta_key(&id))?.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    Reply::json(200, &json!({"id": id, "attempts": attempts, "succeeded": succeeded, "meta": meta}))
}

fn order(_: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let key = wildcard(params)?;
    let ids = open_store()?.get::<Vec<String>>(&keys::order_key(&key))?.map(|d| d.data).unwrap_or_default();
    Reply::json(200, &ids)
}
