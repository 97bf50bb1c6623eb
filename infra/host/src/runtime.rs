//! wasmtime set-up: the engine (pooling allocator, copy-on-write memory images, epoch
//! interruption), compiling components with an on-disk cache of the compiled code, linking
//! them against WASI p2 + p3 and our interfaces, and making a fresh store per call with its
//! time limit.

use crate::state::{AppCtx, ComponentCtx, HostState};
use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

/// How often the epoch advances; the granularity of time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memory per slot reset in place rather than decommitted when an instance is freed.
pub const KEEP_RESIDENT_BYTES: usize = 16 << 20;
/// Part of a fiber stack zeroed in place when it is reused.
const ASYNC_STACK_KEEP_RESIDENT_BYTES: usize = 128 << 10;
/// Slots whose decommits are flushed together.
const DECOMMIT_BATCH: usize = 32;

/// Engine settings chosen on the command line.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Use the pooling instance allocator (preallocated slots; much faster instantiation).
    pub pooling: bool,
    /// Instances that can exist at once (requests in flight plus deliveries in progress).
    pub instances_max: u32,
    /// Linear memory one instance may grow to.
    pub memory_max_bytes: usize,
    /// Epoch interruption: compiled code checks the store's deadline at every function entry
    /// and loop back-edge, which is how a runaway guest is stopped (504). Always on in bss-host;
    /// only a benchmark turns it off, to measure what the checks cost (`rating-wasm`).
    pub interruptible: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { pooling: true, instances_max: 1000, memory_max_bytes: 128 << 20, interruptible: true }
    }
}

/// One engine per calling convention. wasmtime's component-model-async machinery (needed by
/// WASIp3 components) makes every guest-to-host call create and delete a task record; WASIp2
/// components don't need it, and on an engine without it they run about 20% faster per
/// request. So p2 components get the `sync` engine and p3 components the `concurrent` one.
#[derive(Clone)]
pub struct Engines {
    pub sync: Engine,
    pub concurrent: Engine,
}

impl Engines {
    pub fn new(opts: &EngineOptions) -> anyhow::Result<Engines> {
        // WASIp3 components are the exception today, so their pool is smaller.
        let concurrent_opts = EngineOptions { instances_max: (opts.instances_max / 4).max(16), ..opts.clone() };
        Ok(Engines { sync: engine(opts, false)?, concurrent: engine(&concurrent_opts, true)? })
    }
}

/// An engine; `concurrent` enables the component-model-async features WASIp3 needs.
pub fn engine(opts: &EngineOptions, concurrent: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(concurrent);
    config.concurrency_support(concurrent);
    config.epoch_interruption(opts.interruptible);
    config.memory_init_cow(true);
    // `perf record` can name guest functions (writes /tmp/perf-<pid>.map).
    if std::env::var("BSS_PROFILE").is_ok_and(|v| v == "perfmap") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if opts.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(opts.instances_max)
            .total_core_instances(opts.instances_max * 4)
            .total_memories(opts.instances_max * 2)
            .total_tables(opts.instances_max * 4)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .max_memory_size(opts.memory_max_bytes)
            .table_elements(20_000)
            // Freeing an instance must not cost a TLB shootdown on every core: reset the pages it
            // dirtied in place (the PAGEMAP_SCAN ioctl finds them; Linux 6.7+) instead of
            // madvise-ing them away, and batch the decommits that remain.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
            .async_stack_keep_resident(ASYNC_STACK_KEEP_RESIDENT_BYTES)
            .decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| anyhow!("creating the wasmtime engine: {e:?}"))
}

/// A compiled component and the engine it belongs to.
pub struct Loaded {
    pub engine: Engine,
    pub component: Component,
    /// Whether it needs the concurrent (WASIp3) engine.
    pub concurrent: bool,
    /// Whether the compiled code came from the on-disk cache.
    pub cached: bool,
}

/// Compile `wasm_path` for the sync engine, or for the concurrent one when it uses
/// component-model-async features (which the sync engine's validator refuses).
pub fn load(engines: &Engines, wasm_path: &Path, cache_dir: &Path) -> anyhow::Result<Loaded> {
    match load_component(&engines.sync, wasm_path, cache_dir) {
        Ok((component, cached)) => Ok(Loaded { engine: engines.sync.clone(), component, concurrent: false, cached }),
        Err(sync_err) => match load_component(&engines.concurrent, wasm_path, cache_dir) {
            Ok((component, cached)) => {
                Ok(Loaded { engine: engines.concurrent.clone(), component, concurrent: true, cached })
            }
            Err(_) => Err(sync_err),
        },
    }
}

/// Compile `wasm_path`, or load the compiled code cached under `cache_dir` by the hash of the
/// bytes and of the engine's settings, so a restart does not recompile unchanged components.
pub fn load_component(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> anyhow::Result<(Component, bool)> {
    let bytes = std::fs::read(wasm_path).with_context(|| format!("reading component {}", wasm_path.display()))?;
    let mut h = Sha256::new();
    h.update(&bytes);
    let mut compat = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut compat);
    let key = format!("{}-{:016x}", hex::encode(&h.finalize()[..16]), std::hash::Hasher::finish(&compat));
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.exists() {
        match deserialize(engine, &cached) {
            Ok(c) => return Ok((c, true)),
            Err(e) => tracing::warn!("ignoring unusable compiled cache {}: {e}", cached.display()),
        }
    }
    let component =
        Component::new(engine, &bytes).map_err(|e| anyhow!("compiling component {}: {e:?}", wasm_path.display()))?;
    let serialized = component.serialize().map_err(|e| anyhow!("serializing {}: {e:?}", wasm_path.display()))?;
    std::fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    // Write then rename, so a crash never leaves a half-written file under the final name.
    let tmp = cache_dir.join(format!("{key}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serialized)
        .and_then(|()| std::fs::rename(&tmp, &cached))
        .with_context(|| format!("writing {}", cached.display()))?;
    Ok((component, false))
}

#[expect(unsafe_code, reason = "loading precompiled code is unsafe in wasmtime's API")]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    // SAFETY: the file lives in our own data folder, was written by `load_component` through a
    // rename (never partially), and its name carries the hash of the source bytes and of the
    // engine settings; wasmtime itself also checks the engine compatibility header.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| anyhow!("{e:?}"))
}

/// A linker with everything the host provides. Imports of packages the host does not provide
/// are stubbed with traps per component (see [`stub_unknown_imports`]).
///
/// On the concurrent engine WASIp3 is linked beside WASIp2, since p3 components still import
/// `wasi:cli`/`wasi:io` 0.2 through Rust's std.
pub fn linker(engine: &Engine, concurrent: bool) -> anyhow::Result<Linker<HostState>> {
    let w = |e: wasmtime::Error| anyhow!("{e:?}");
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(w)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(w)?;
    if concurrent {
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(w)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(w)?;
    }
    crate::bindings::add_to_linker(&mut linker, concurrent).map_err(w)?;
    Ok(linker)
}

/// Packages whose interfaces the host provides.
const PROVIDED: &[&str] =
    &["wasi:", "fermyon:spin/key-value@", "fermyon:spin/variables@", "spin:key-value/", "bss:messaging/"];

/// Define every function of an imported instance the host does not provide as a trap, so a
/// component that imports (say) `spin:postgres` but never calls it still runs. Returns the
/// names stubbed. (`Linker::define_unknown_imports_as_traps` cannot be used in wasmtime 48: it
/// re-defines resource types of interfaces we do provide.)
pub fn stub_unknown_imports(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
) -> anyhow::Result<Vec<String>> {
    use wasmtime::component::types::ComponentItem;
    let mut stubbed = Vec::new();
    for (name, item) in component.component_type().imports(engine) {
        if PROVIDED.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            bail!("import {name} is not an interface instance; the host cannot provide it");
        };
        let mut li = linker.instance(name).map_err(|e| anyhow!("{e:?}"))?;
        for (fname, fitem) in inst.exports(engine) {
            let full = format!("{name}#{fname}");
            match fitem.ty {
                ComponentItem::ComponentFunc(_) => {
                    li.func_new(fname, move |_, _, _, _| {
                        wasmtime::bail!("import `{full}` is not provided by bss-host")
                    })
                    .map_err(|e| anyhow!("{e:?}"))?;
                }
                ComponentItem::Resource(_) => {
                    li.resource(fname, wasmtime::component::ResourceType::host::<()>(), |_, _| Ok(()))
                        .map_err(|e| anyhow!("{e:?}"))?;
                }
                _ => {}
            }
        }
        stubbed.push(name.to_string());
    }
    Ok(stubbed)
}

/// A call ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("deadline of {0:?} exceeded")]
pub struct DeadlineExceeded(pub Duration);

/// Was `err` (from a guest call) caused by its time limit?
pub fn is_deadline(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<DeadlineExceeded>().is_some())
        || err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
}

/// A fresh store for one call of `component`, stopped after `timeout`. While running the guest
/// yields to the executor every tick, so a busy guest cannot starve other requests.
pub fn new_store(
    engine: &Engine,
    app: &Arc<AppCtx>,
    component: &Arc<ComponentCtx>,
    memory_max_bytes: usize,
    timeout: Duration,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(app.clone(), component.clone(), memory_max_bytes));
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(|s| {
        if Instant::now() >= s.data().deadline {
            Err(wasmtime::Error::new(DeadlineExceeded(s.data().timeout)))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    arm(&mut store, timeout);
    store
}

/// Start the time limit of the next call on `store`: it stops `timeout` from now.
pub fn arm(store: &mut Store<HostState>, timeout: Duration) {
    let data = store.data_mut();
    data.timeout = timeout;
    data.deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
}

/// Advance the engine's epoch every [`EPOCH_TICK`] on a thread of its own, for as long as the
/// process lives.
pub fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .ok();
}
