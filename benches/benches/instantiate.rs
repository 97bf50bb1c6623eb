//! Per-request instantiation time of a real component (`tc_kvtest.wasm`, spin-sdk 5.2), with the
//! pooling allocator and with on-demand allocation: a fresh `Store` plus `instantiate_async`,
//! exactly what bss-host does for every request; and a whole KV round-trip request without the
//! network (`request/fresh`: store, instance, `handle`, drop, as bss-host does by default;
//! `request/reused`: one instance answering every request), so their difference is what a fresh
//! instance costs a request. Run with
//! `cargo build --target wasm32-wasip2 --profile release-lto -p tc-kvtest && cargo bench -p bss-bench --bench instantiate`.

use bss_host::db::{SqliteDb, SyncMode};
use bss_host::kv::{KvStore, sqlite::SqliteKv};
use bss_host::manifest::Manifest;
use bss_host::metrics::Metrics;
use bss_host::queue::{Queue, sqlite::SqliteQueue};
use bss_host::runtime::{EngineOptions, engine, linker, load_component, new_store};
use bss_host::state::{AppCtx, ComponentCtx, HostState};
use bss_host::variables::Variables;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/wasm32-wasip2/release-lto/tc_kvtest.wasm");
    assert!(wasm.exists(), "build it first: cargo build --target wasm32-wasip2 --profile release-lto -p tc-kvtest");
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::parse(
        "spin_manifest_version = 2\n[application]\nname = \"bench\"\n[component.kvtest]\nsource = \"x.wasm\"\nkey_value_stores = [\"default\"]\n",
        Path::new("spin.toml"),
        Path::new("."),
    )
    .unwrap();
    let db = Arc::new(SqliteDb::open(&dir.path().join("bss.sqlite"), SyncMode::Normal).unwrap());
    let kv = HashMap::from([("default".to_string(), KvStore::Sqlite(Arc::new(SqliteKv::new(db.clone(), "default"))))]);
    let app = Arc::new(AppCtx {
        variables: Variables::resolve(&manifest, |_| None).unwrap(),
        manifest,
        metrics: Metrics::new(&kv),
        kv,
        queue: Queue::Sqlite(Arc::new(SqliteQueue::new(db))),
        wake: HashMap::new(),
    });
    let ctx = Arc::new(ComponentCtx {
        id: "kvtest".into(),
        kv_labels: vec!["default".into()],
        allowed_hosts: Arc::new(Vec::new()),
        environment: Vec::new(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("instantiate");
    for pooling in [true, false] {
        let opts = EngineOptions { pooling, ..EngineOptions::default() };
        let (engine, proxy) = prepare(&opts, &wasm, &dir.path().join("cache"));
        let name = if pooling { "pooling" } else { "on-demand" };
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut store = new_store(&engine, &app, &ctx, opts.memory_max_bytes, Duration::from_secs(10));
                    proxy.instantiate_async(&mut store).await.unwrap();
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("request");
    let opts = EngineOptions::default();
    let (engine, proxy) = prepare(&opts, &wasm, &dir.path().join("cache"));
    let timeout = Duration::from_secs(10);
    let new_store = || new_store(&engine, &app, &ctx, opts.memory_max_bytes, timeout);
    group.bench_function("fresh", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut store = new_store();
                let instance = proxy.instantiate_async(&mut store).await.unwrap();
                roundtrip(&mut store, &instance).await;
            })
        })
    });
    let mut store = new_store();
    let instance = rt.block_on(proxy.instantiate_async(&mut store)).unwrap();
    group.bench_function("reused", |b| {
        b.iter(|| {
            rt.block_on(async {
                bss_host::runtime::arm(&mut store, timeout);
                roundtrip(&mut store, &instance).await;
            })
        })
    });
    group.finish();
}

/// An engine with `opts` (its epoch ticking, as in bss-host) and `wasm` compiled and linked for
/// it, ready to instantiate.
fn prepare(opts: &EngineOptions, wasm: &Path, cache: &Path) -> (Engine, ProxyPre<HostState>) {
    let engine = engine(opts, false).unwrap();
    bss_host::runtime::start_epoch_ticker(&engine);
    let (component, _) = load_component(&engine, wasm, cache).unwrap();
    let pre = linker(&engine, false).unwrap().instantiate_pre(&component).unwrap();
    (engine, ProxyPre::new(pre).unwrap())
}

/// One `GET /kvtest/roundtrip/bench` through `instance`, checked for its answer.
async fn roundtrip(store: &mut wasmtime::Store<HostState>, instance: &Proxy) {
    let req = hyper::Request::get("http://localhost/kvtest/roundtrip/bench")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).unwrap();
    let out = store.data_mut().http().new_response_outparam(sender).unwrap();
    let guest = instance.wasi_http_incoming_handler().call_handle(&mut *store, req, out);
    let response = async {
        let resp = receiver.await.unwrap().unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let (called, body) = tokio::join!(guest, response);
    called.unwrap();
    assert_eq!(&body[..], b"roundtrip:bench");
}

criterion_group!(benches, bench);
criterion_main!(benches);
