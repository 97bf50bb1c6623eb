//! native-kv: the KV round-trip of the `kvtest` component (`GET /kvtest/roundtrip/{key}`: set
//! `roundtrip:{key}`, read it back, answer it) as a native hyper server on the same SQLite
//! store code as bss-host — the baseline that shows what the WebAssembly host adds.
//! Usage: `native-kv LISTEN_ADDR DATA_DIR`.

// The host's allocator, so that the baseline differs from bss-host only by WebAssembly.
#[global_allocator]
static GLOBAL: bss_host::Allocator = bss_host::Allocator;

use bss_host::db::{SqliteDb, SyncMode};
use bss_host::kv::KvStore;
use bss_host::kv::sqlite::SqliteKv;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

async fn roundtrip(kv: &KvStore, path: &str) -> hyper::Response<Full<Bytes>> {
    let Some(key) = path.strip_prefix("/kvtest/roundtrip/") else {
        return status(404, "not found".into());
    };
    let value = format!("roundtrip:{key}");
    if let Err(e) = kv.set(key, value.as_bytes()).await {
        return status(500, e.to_string());
    }
    match kv.get(key).await {
        Ok(Some(v)) if v == value.as_bytes() => status(200, value),
        other => status(500, format!("read back {other:?}")),
    }
}

fn status(code: u16, body: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bss_host::tune_allocator();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3100".into());
    let data = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".bss-native".into()));
    std::fs::create_dir_all(&data)?;
    let db = Arc::new(SqliteDb::open(&data.join("bss.sqlite"), SyncMode::Normal)?);
    let kv = KvStore::Sqlite(Arc::new(SqliteKv::new(db, "default")));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("native-kv: serving on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let kv = kv.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let kv = kv.clone();
                async move { Ok::<_, std::convert::Infallible>(roundtrip(&kv, req.uri().path()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
