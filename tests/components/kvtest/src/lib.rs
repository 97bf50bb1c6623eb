//! `tc-kvtest`: test component exposing raw key-value operations over HTTP under `/kvtest/...`, for
//! the host's CAS race tests and the KV benchmark. Build with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tc-kvtest`; driven by the end-to-end tests
//! (route table in `tests/components/README.md`).
//!
//! Keys are the rest of the path after the route prefix, percent-decoded (so they may contain `/`).
//! Store failures answer 500 with a plain-text body `store error: <the host's message>` (this is a
//! test harness: the host's error text is what the tests want to see).

use bss_kit::ApiError;
use bss_kit::http::Router;
use bss_kit::http::{Ctx, Reply, respond, wildcard};
use bss_kit::kv::{KvBackend, KvError};
use bss_kit::wasi_kv::{DEFAULT_STORE, WasiKv};
use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{Params, Request, Response};

bss_kit::export_http!(route);

/// Default bound of `/kvtest/cas-incr` attempts.
const CAS_INCR_ATTEMPTS: u32 = 100;

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    r.get("/kvtest/kv/*", keyed(kv_get));
    r.put("/kvtest/kv/*", keyed(kv_put));
    r.delete("/kvtest/kv/*", keyed(kv_delete));
    r.get("/kvtest/exists/*", keyed(kv_exists));
    r.post("/kvtest/create/*", keyed(cas_create));
    r.post("/kvtest/swap/*", keyed(cas_swap));
    r.post("/kvtest/cas-incr/*", keyed(cas_incr));
    r.post("/kvtest/incr/*", keyed(incr));
    r.get("/kvtest/keys", keyed(keys));
    r.post("/kvtest/batch/get", keyed(batch_get));
    r.post("/kvtest/batch/set", keyed(batch_set));
    r.post("/kvtest/batch/delete", keyed(batch_delete));
    r.get("/kvtest/roundtrip/*", keyed(roundtrip));
    r.get("/kvtest/spin/*", keyed(spin_get));
    r.put("/kvtest/spin/*", keyed(spin_put));
    r.delete("/kvtest/spin/*", keyed(spin_delete));
    r.any("/*", bss_kit::http::not_found);
    r.handle(req)
}

/// A route failure: an API error (4xx) or a store error (500 with the store's text).
enum Fail {
    Api(ApiError),
    Store(String),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl From<KvError> for Fail {
    fn from(e: KvError) -> Self {
        Fail::Store(e.0)
    }
}

type Outcome = Result<Reply, Fail>;

/// Adapts `f(ctx, key, store)` to a router handler; `key` is the decoded wildcard ("" if none).
fn keyed(f: fn(&Ctx, &str, &WasiKv) -> Outcome) -> impl Fn(Request, Params) -> Response {
    move |req: Request, params: Params| {
        let ctx = Ctx::from_request(&req);
        let outcome = (|| {
            let key = wildcard(&params)?;
            let kv = WasiKv::open(DEFAULT_STORE)?;
            f(&ctx, &key, &kv)
        })();
        match outcome {
            Ok(reply) => reply.into(),
            Err(Fail::Api(e)) => respond(Err(e)),
            Err(Fail::Store(msg)) => {
                eprintln!("kvtest: store error: {msg}");
                Reply::text(500, format!("store error: {msg}")).into()
            }
        }
    }
}

/// 200 `ok`: the answer of every successful write.
fn ok() -> Reply {
    Reply::text(200, "ok")
}

fn kv_get(_: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    match kv.get(key)? {
        Some(v) => Ok(Reply::new(200, v).with_header("content-type", "application/octet-stream")),
        None => Err(ApiError::not_found(format!("no key {key:?}")).into()),
    }
}

fn kv_put(ctx: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    kv.set(key, &ctx.body)?;
    Ok(ok())
}

fn kv_delete(_: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    kv.delete(key)?;
    Ok(ok())
}

fn kv_exists(_: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    Ok(Reply::json(200, &json!({"exists": kv.exists(key)?}))?)
}

fn cas_create(ctx: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    let (cas, current) = kv.cas_read(key)?;
    if current.is_some() {
        return Ok(Reply::text(409, "exists"));
    }
    Ok(if kv.cas_write(cas, &ctx.body)? { Reply::text(201, "created") } else { Reply::text(409, "lost") })
}

fn cas_swap(ctx: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    let expect = ctx.query_param("expect");
    let (cas, current) = kv.cas_read(key)?;
    if current.as_deref() != expect.as_ref().map(|e| e.as_bytes()) {
        return Ok(Reply::text(409, "mismatch"));
    }
    Ok(if kv.cas_write(cas, &ctx.body)? { Reply::text(200, "swapped") } else { Reply::text(409, "lost") })
}

fn cas_incr(ctx: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    let attempts =
        match ctx.query_param("attempts") {
            Some(a) => a.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                ApiError::bad_request(format!("attempts must be an integer from 1 to 1000, not {a:?}"))
            })?,
            None => CAS_INCR_ATTEMPTS,
        };
    for attempt in 1..=attempts {
        let (cas, current) = kv.cas_read(key)?;
        let n = match current {
            None => 0,
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::unprocessable(format!("{key:?} does not hold a decimal counter")))?,
        };
        let next = n + 1;
        if kv.cas_write(cas, next.to_string().as_bytes())? {
            return Ok(Reply::text(200, next.to_string()).with_header("x-cas-attempts", attempt.to_string()));
        }
        kv.backoff(attempt);
    }
    Ok(Reply::text(409, format!("gave up after {attempts} attempts"))
        .with_header("x-cas-attempts", attempts.to_string()))
}

fn incr(ctx: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    let by = match ctx.query_param("by") {
        Some(b) => b.parse::<i64>().map_err(|_| ApiError::bad_request(format!("by must be an integer, not {b:?}")))?,
        None => 1,
    };
    Ok(Reply::text(200, kv.increment(key, by)?.to_string()))
}

fn keys(ctx: &Ctx, _: &str, kv: &WasiKv) -> Outcome {
    let prefix = ctx.query_param("prefix").unwrap_or_default();
    let cursor = ctx.query_param("cursor").filter(|c| !c.is_empty());
    if ctx.query_param("all").is_some_and(|a| a == "true" || a == "1") {
        let store = bss_kit::Store::new(kv);
        let keys = store.list_keys(&prefix, usize::MAX).map_err(|e| Fail::Store(e.to_string()))?;
        return Ok(Reply::json(200, &json!({"keys": keys, "cursor": null}))?);
    }
    let start = cursor.or_else(|| (!prefix.is_empty()).then(|| prefix.clone()));
    let page = kv.list_keys(start.as_deref())?;
    let mut keys = Vec::new();
    let mut past_prefix = false;
    for k in page.keys {
        if k.starts_with(&prefix) {
            keys.push(k);
        } else if k.as_str() > prefix.as_str() {
            past_prefix = true;
            break;
        }
    }
    let cursor = if past_prefix { None } else { page.cursor };
    Ok(Reply::json(200, &json!({"keys": keys, "cursor": cursor}))?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyList {
    keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Item {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemList {
    items: Vec<Item>,
}

fn batch_get(ctx: &Ctx, _: &str, kv: &WasiKv) -> Outcome {
    let req: KeyList = ctx.json()?;
    let items: Vec<Item> = kv
        .get_many(&req.keys)?
        .into_iter()
        .map(|(key, v)| Item { key, value: v.map(|b| String::from_utf8_lossy(&b).into_owned()) })
        .collect();
    Ok(Reply::json(200, &json!({"items": items}))?)
}

fn batch_set(ctx: &Ctx, _: &str, kv: &WasiKv) -> Outcome {
    let req: ItemList = ctx.json()?;
    let items: Vec<(String, Vec<u8>)> =
        req.items.into_iter().map(|i| (i.key, i.value.unwrap_or_default().into_bytes())).collect();
    kv.set_many(&items)?;
    Ok(ok())
}

fn batch_delete(ctx: &Ctx, _: &str, kv: &WasiKv) -> Outcome {
    let req: KeyList = ctx.json()?;
    kv.delete_many(&req.keys)?;
    Ok(ok())
}

fn roundtrip(_: &Ctx, key: &str, kv: &WasiKv) -> Outcome {
    let value = format!("roundtrip:{key}");
    kv.set(key, value.as_bytes())?;
    match kv.get(key)? {
        Some(v) if v == value.as_bytes() => Ok(Reply::text(200, value)),
        other => Err(Fail::Store(format!(
            "read back {:?} instead of {value:?}",
            other.as_deref().map(String::from_utf8_lossy)
        ))),
    }
}

fn spin_store() -> Result<spin_sdk::key_value::Store, Fail> {
    spin_sdk::key_value::Store::open_default().map_err(|e| Fail::Store(e.to_string()))
}

fn spin_get(_: &Ctx, key: &str, _: &WasiKv) -> Outcome {
    match spin_store()?.get(key).map_err(|e| Fail::Store(e.to_string()))? {
        Some(v) => Ok(Reply::new(200, v).with_header("content-type", "application/octet-stream")),
        None => Err(ApiError::not_found(format!("no key {key:?}")).into()),
    }
}

fn spin_put(ctx: &Ctx, key: &str, _: &WasiKv) -> Outcome {
    spin_store()?.set(key, &ctx.body).map_err(|e| Fail::Store(e.to_string()))?;
    Ok(ok())
}

fn spin_delete(_: &Ctx, key: &str, _: &WasiKv) -> Outcome {
    spin_store()?.delete(key).map_err(|e| Fail::Store(e.to_string()))?;
    Ok(ok())
}
