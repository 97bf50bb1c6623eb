//! `tc-misbehave`: test component that misbehaves on request under `/misbehave/...`, to test the
//! host's limits (time, memory, traps, bodies) and its plain capabilities (variables, outbound
//! HTTP allow-list). Build with `cargo build --target wasm32-wasip2 --profile release-lto -p tc-misbehave`;
//! driven by the end-to-end tests (route table in `tests/components/README.md`).

use bss_kit::ApiError;
use bss_kit::http::{Ctx, Reply, respond};
use serde_json::json;
use spin_sdk::http::conversions::TryFromIncomingRequest as _;
use spin_sdk::http::{IncomingRequest, Method, OutgoingResponse, Params, Request, Response, ResponseOutparam, Router};
use std::sync::atomic::{AtomicU64, Ordering};

/// The exported handler (the generated export glue is `unsafe`, hence the scoped allow). It takes
/// the raw request and response outparam, so that `/misbehave/forget-response` can leak the
/// outparam, which the `#[http_component]` glue for a `Request -> Response` function never does.
#[allow(unsafe_code)]
mod component {
    #[spin_sdk::http_component]
    async fn handle(req: spin_sdk::http::IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
        super::serve(req, out).await
    }
}

/// Requests this instance has begun to handle, counting the current one.
static REQUESTS_SEEN: AtomicU64 = AtomicU64::new(0);

async fn serve(req: IncomingRequest, out: ResponseOutparam) {
    let seen = REQUESTS_SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    let path = req.path_with_query().unwrap_or_default();
    if path == "/misbehave/forget-response" {
        // Return without setting a response and without dropping the outparam.
        std::mem::forget(out);
        return;
    }
    let mut response = match Request::try_from_incoming_request(req).await {
        Ok(req) if path == "/misbehave/instance" && req.method() == &Method::Get => {
            Response::new(200, format!("request {seen} of this instance"))
        }
        Ok(req) => route(req).await,
        Err(e) => Response::new(400, format!("unreadable request: {e}")),
    };
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(head) => {
            if let Err(e) = out.set_with_body(head, body).await {
                eprintln!("could not send the response: {e}");
            }
        }
        Err(e) => eprintln!("could not convert the response: {e}"),
    }
}

async fn route(req: Request) -> Response {
    let mut r = Router::new();
    r.get("/misbehave/spin", spin);
    r.get("/misbehave/sleep", sync(sleep));
    r.get("/misbehave/panic", panic);
    r.get("/misbehave/alloc", sync(alloc));
    r.get("/misbehave/big", sync(big));
    r.post("/misbehave/echo", sync(echo));
    r.put("/misbehave/echo", sync(echo));
    r.get("/misbehave/var/:name", sync(var));
    r.get_async("/misbehave/fetch", fetch);
    r.any("/*", bss_kit::http::not_found);
    r.handle_async(req).await
}

fn sync(f: fn(&Ctx, &Params) -> Result<Reply, ApiError>) -> impl Fn(Request, Params) -> Response {
    bss_kit::http::handler(f)
}

fn count_param(ctx: &Ctx, name: &str) -> Result<u64, ApiError> {
    let v =
        ctx.query_param(name).ok_or_else(|| ApiError::bad_request(format!("query parameter {name} is required")))?;
    v.parse().map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer, not {v:?}")))
}

/// Never returns: the host must stop it at its time limit.
fn spin(_: Request, _: Params) -> Response {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn sleep(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let ms = count_param(ctx, "ms")?;
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(Reply::text(200, format!("slept {ms} ms")))
}

fn panic(_: Request, _: Params) -> Response {
    panic!("planned panic");
}

/// Allocates and touches `mb` MiB (past the host's memory limit this traps).
fn alloc(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let mb = count_param(ctx, "mb")?;
    let bytes = usize::try_from(mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes).map_err(|e| ApiError::payload_too_large(format!("cannot allocate {mb} MiB: {e}")))?;
    v.resize(bytes, 1);
    let sum: u64 = v.iter().step_by(4096).map(|b| u64::from(*b)).sum();
    Ok(Reply::text(200, format!("allocated {mb} MiB ({sum} pages)")))
}

/// Answers a body of `kb` KiB of `x`.
fn big(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let kb = count_param(ctx, "kb")?;
    let len = usize::try_from(kb).unwrap_or(usize::MAX).saturating_mul(1024);
    Ok(Reply::new(200, vec![b'x'; len]).with_header("content-type", "application/octet-stream"))
}

/// Echoes the body with its content type; `X-Body-Length` is its length.
fn echo(ctx: &Ctx, _: &Params) -> Result<Reply, ApiError> {
    let ct = ctx.header("content-type").unwrap_or("application/octet-stream").to_string();
    Ok(Reply::new(200, ctx.body.clone())
        .with_header("content-type", ct)
        .with_header("x-body-length", ctx.body.len().to_string()))
}

fn var(_: &Ctx, params: &Params) -> Result<Reply, ApiError> {
    let name = bss_kit::http::param(params, "name")?;
    match spin_sdk::variables::get(&name) {
        Ok(v) => Ok(Reply::text(200, v)),
        Err(spin_sdk::variables::Error::Undefined(m)) => Err(ApiError::not_found(format!("undefined: {m}"))),
        Err(spin_sdk::variables::Error::InvalidName(m)) => Err(ApiError::bad_request(format!("invalid name: {m}"))),
        Err(e) => Ok(Reply::text(500, format!("variables error: {e}"))),
    }
}

/// GETs `url`: 200 `{"status", "body"}` with the upstream's answer, or 502 with the error text.
async fn fetch(req: Request, _: Params) -> Response {
    let ctx = Ctx::from_request(&req);
    let Some(url) = ctx.query_param("url") else {
        return respond(Err(ApiError::bad_request("query parameter url is required")));
    };
    let outgoing = Request::get(url).build();
    match spin_sdk::http::send::<_, Response>(outgoing).await {
        Ok(resp) => {
            let out = json!({"status": *resp.status(), "body": String::from_utf8_lossy(resp.body())});
            respond(Reply::json(200, &out))
        }
        Err(e) => Reply::text(502, format!("outbound request failed: {e} ({e:?})")).into(),
    }
}
