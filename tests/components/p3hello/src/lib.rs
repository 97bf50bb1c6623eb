//! `tc-p3hello`: test component for the host's WASIp3 path — a spin-sdk 7 `#[http_service]`
//! (wasi:http 0.3, async) whose `GET /p3/hello` answers 200 `hello from p3 (count N)` after a
//! counter round-trip through `spin:key-value@3.0.0` (store `default`, key `p3hello/count`).
//! Build with `cargo build --target wasm32-wasip2 --profile release-lto -p tc-p3hello`; driven by the
//! end-to-end tests. Other paths answer 404; a store failure answers 500 with its text.

use spin_sdk::http::{HeaderMap, HeaderValue, IntoResponse, Method, Request, StatusCode};
use spin_sdk::key_value::Store;

const COUNTER_KEY: &str = "p3hello/count";

/// The exported handler (the generated export glue is `unsafe`, hence the scoped allow).
#[allow(unsafe_code)]
mod component {
    #[spin_sdk::http_service]
    async fn handle(req: spin_sdk::http::Request) -> impl spin_sdk::http::IntoResponse {
        super::route(req).await
    }
}

fn text(status: StatusCode, body: String) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    (status, headers, body)
}

async fn route(req: Request) -> impl IntoResponse {
    if req.uri().path() != "/p3/hello" {
        return text(StatusCode::NOT_FOUND, format!("no route for {}", req.uri().path()));
    }
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET".into());
    }
    match bump().await {
        Ok(n) => text(StatusCode::OK, format!("hello from p3 (count {n})")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("key-value error: {e}")),
    }
}

/// Reads, increments and writes back the counter (not atomic: spin:key-value has no CAS).
async fn bump() -> Result<u64, String> {
    let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
    let current = store.get(COUNTER_KEY).await.map_err(|e| format!("{e:?}"))?;
    let n = current.and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1;
    store.set(COUNTER_KEY, n.to_string().as_bytes()).await.map_err(|e| format!("{e:?}"))?;
    let back = store.get(COUNTER_KEY).await.map_err(|e| format!("{e:?}"))?;
    if back.as_deref() != Some(n.to_string().as_bytes()) {
        return Err(format!("read back {back:?} after writing {n}"));
    }
    Ok(n)
}
