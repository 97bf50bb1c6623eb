//! Start-up and shutdown: build the components, open the stores and the queue, load and link
//! every component, serve HTTP and the admin port, run the queue consumers, and drain on
//! SIGTERM/SIGINT.

use crate::admin;
use crate::db::{SqliteDb, SyncMode};
use crate::kv::{KvStore, redis::RedisKv, sqlite::SqliteKv};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::outbound::AllowedHost;
use crate::queue::dispatcher::{ConsumerRuntime, DispatchEnv};
use crate::queue::{Queue, redis::RedisQueue, sqlite::SqliteQueue};
use crate::runtime::{EngineOptions, Engines, linker, load, start_epoch_ticker, stub_unknown_imports};
use crate::runtime_config::{Backend, RuntimeConfig};
use crate::server::{HttpComponent, HttpPre, HttpServer, Limits};
use crate::state::{AppCtx, ComponentCtx};
use crate::variables::Variables;
use anyhow::{Context as _, anyhow, bail};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

/// Everything `bss-host up` is told.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub manifest: PathBuf,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub runtime_config: Option<PathBuf>,
    pub build: bool,
    pub limits: Limits,
    pub handler_timeout: Duration,
    pub engine: EngineOptions,
    pub sqlite_sync: SyncMode,
    /// How often embedded key-value writes are flushed from their log into SQLite.
    pub kv_flush: Duration,
    /// Budget of each embedded key-value store's read cache.
    pub kv_cache_bytes: usize,
    pub shutdown_grace: Duration,
}

/// Run the component build commands of the manifest, each distinct command once. A cargo
/// command's `--target` is added with rustup first when the toolchain lacks it.
pub fn build_components(manifest: &Manifest) -> anyhow::Result<()> {
    let mut done: Vec<(&str, &Path)> = Vec::new();
    let mut targets_checked: Vec<(&str, &Path)> = Vec::new();
    for c in manifest.components.values() {
        let Some(b) = &c.build else { continue };
        if done.iter().any(|(cmd, dir)| *cmd == b.command && *dir == b.workdir.as_path()) {
            continue;
        }
        if let Some(target) = cargo_target(&b.command)
            && !targets_checked.contains(&(target, b.workdir.as_path()))
        {
            ensure_rust_target(target, &b.workdir)?;
            targets_checked.push((target, &b.workdir));
        }
        tracing::info!(component = %c.id, "building: {}", b.command);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&b.command)
            .current_dir(&b.workdir)
            .status()
            .with_context(|| format!("running the build of component {}: {}", c.id, b.command))?;
        if !status.success() {
            bail!("the build of component {} failed ({status}): {}", c.id, b.command);
        }
        done.push((&b.command, &b.workdir));
    }
    Ok(())
}

/// The `--target` a cargo build command compiles for (`--target T` or `--target=T`).
fn cargo_target(command: &str) -> Option<&str> {
    let mut words = command.split_whitespace();
    if !words.clone().any(|w| w == "cargo") {
        return None;
    }
    while let Some(w) = words.next() {
        if w == "--target" {
            return words.next();
        }
        if let Some(t) = w.strip_prefix("--target=") {
            return Some(t);
        }
    }
    None
}

/// Adds the Rust target `target` with rustup when the toolchain of `workdir` lacks it. rustup
/// installs the targets `rust-toolchain.toml` lists only when it installs the toolchain itself,
/// so on a machine that already had that toolchain every component build failed with "can't find
/// crate for `core`". Without rustup nothing is done and cargo reports a missing target itself.
fn ensure_rust_target(target: &str, workdir: &Path) -> anyhow::Result<()> {
    let rustup = |args: &[&str]| std::process::Command::new("rustup").args(args).current_dir(workdir).output();
    let installed = match rustup(&["target", "list", "--installed"]) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => return Ok(()),
    };
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    tracing::info!(target, "the toolchain lacks the build's target: rustup target add {target}");
    let out = rustup(&["target", "add", target]).context("running rustup target add")?;
    if !out.status.success() {
        bail!("rustup target add {target} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Rewrites the embedded database of the data folder `dir` with the current key-value layout
/// (see [`crate::db::upgrade`]), holding the folder's lock so that no host starts meanwhile;
/// refused while a host runs on it.
pub fn upgrade_store(dir: &Path) -> anyhow::Result<crate::db::Upgraded> {
    let path = dir.join("bss.sqlite");
    if !path.exists() {
        anyhow::bail!("no database in {} (no {})", dir.display(), path.display());
    }
    let _lock = lock_data_dir(dir)?;
    crate::db::upgrade(&path)
}

/// Holds the data folder for this process, so two hosts never share one SQLite file.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data folder {}", dir.display()))?;
    let path = dir.join("bss-host.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.try_lock().map_err(|_| {
        anyhow!("data folder {} is in use by another bss-host (lock {})", dir.display(), path.display())
    })?;
    Ok(f)
}

/// The host's SQLite databases, each file opened once and shared by every store label and the
/// queue that name it: a database's key-value writes go through one write-back buffer, whose log
/// a second open of the same file would replay underneath it (so [`SqliteDb::open`] refuses one).
struct Databases<F: Fn(&Path) -> anyhow::Result<SqliteDb>> {
    open: F,
    by_path: HashMap<PathBuf, Arc<SqliteDb>>,
}

impl<F: Fn(&Path) -> anyhow::Result<SqliteDb>> Databases<F> {
    fn new(open: F) -> Self {
        Databases { open, by_path: HashMap::new() }
    }

    /// The database at `path`, opened on first use.
    fn get(&mut self, path: &Path) -> anyhow::Result<Arc<SqliteDb>> {
        let key = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
        if let Some(db) = self.by_path.get(&key) {
            return Ok(db.clone());
        }
        let db = Arc::new((self.open)(path)?);
        if db.kv_layout() == crate::db::KvLayout::Clustered {
            tracing::warn!(
                database = %path.display(),
                "the key-value table has the layout of databases created before 2026-11-28 (WITHOUT ROWID), \
                 which reads several times more pages a lookup; stop the host and run \
                 `bss-host upgrade-store --data <folder>` to rewrite it"
            );
        }
        self.by_path.insert(key, db.clone());
        Ok(db)
    }
}

async fn open_stores<F: Fn(&Path) -> anyhow::Result<SqliteDb>>(
    manifest: &Manifest,
    config: &RuntimeConfig,
    embedded: &Arc<SqliteDb>,
    dbs: &mut Databases<F>,
    cache_bytes: usize,
) -> anyhow::Result<HashMap<String, KvStore>> {
    let mut labels: Vec<String> = manifest.components.values().flat_map(|c| c.key_value_stores.clone()).collect();
    labels.push("default".into());
    labels.sort();
    labels.dedup();
    let mut stores = HashMap::new();
    for label in labels {
        if label != "default" && !config.key_value_store.contains_key(&label) {
            let users: Vec<&str> = manifest
                .components
                .values()
                .filter(|c| c.key_value_stores.contains(&label))
                .map(|c| c.id.as_str())
                .collect();
            bail!(
                "key-value store {label:?} (used by {}) is not defined; add [key_value_store.{label}] to the runtime config",
                users.join(", ")
            );
        }
        let store = match config.store(&label) {
            Backend::Sqlite { path: None } => {
                KvStore::Sqlite(Arc::new(SqliteKv::with_cache_bytes(embedded.clone(), &label, cache_bytes)))
            }
            Backend::Sqlite { path: Some(p) } => {
                KvStore::Sqlite(Arc::new(SqliteKv::with_cache_bytes(dbs.get(&p)?, &label, cache_bytes)))
            }
            Backend::Redis { url } => KvStore::Redis(Arc::new(RedisKv::connect(&url, &label).await?)),
        };
        tracing::info!(store = %label, backend = ?store, "key-value store ready");
        stores.insert(label, store);
    }
    Ok(stores)
}

/// A running host. Dropping it does not stop it; call [`RunningHost::shutdown`].
pub struct RunningHost {
    pub http_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _lock: std::fs::File,
}

impl std::fmt::Debug for RunningHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHost").field("http_addr", &self.http_addr).finish_non_exhaustive()
    }
}

impl RunningHost {
    /// Stop accepting, let requests and deliveries in progress finish, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start everything; returns once the ports are bound.
pub async fn start(cfg: HostConfig) -> anyhow::Result<RunningHost> {
    let t0 = Instant::now();
    let manifest = Manifest::load(&cfg.manifest)?;
    if cfg.build {
        let m = manifest.clone();
        tokio::task::spawn_blocking(move || build_components(&m)).await??;
    }
    let variables = Variables::resolve(&manifest, |k| std::env::var(k).ok())?;
    let runtime_config = match &cfg.runtime_config {
        Some(p) => RuntimeConfig::load(p)?,
        None => RuntimeConfig::default(),
    };
    let lock = lock_data_dir(&cfg.data_dir)?;
    let mut dbs = Databases::new(|path: &Path| SqliteDb::open_with(path, cfg.sqlite_sync, Some(cfg.kv_flush)));
    let embedded = dbs.get(&cfg.data_dir.join("bss.sqlite"))?;
    let kv = open_stores(&manifest, &runtime_config, &embedded, &mut dbs, cfg.kv_cache_bytes).await?;
    let queue = match &runtime_config.queue {
        None | Some(Backend::Sqlite { path: None }) => Queue::Sqlite(Arc::new(SqliteQueue::new(embedded.clone()))),
        Some(Backend::Sqlite { path: Some(p) }) => Queue::Sqlite(Arc::new(SqliteQueue::new(dbs.get(p)?))),
        Some(Backend::Redis { url }) => Queue::Redis(Arc::new(RedisQueue::connect(url).await?)),
    };
    tracing::info!(backend = ?queue, "queue ready");

    let engines = Engines::new(&cfg.engine)?;
    start_epoch_ticker(&engines.sync);
    start_epoch_ticker(&engines.concurrent);
    let sync_linker = linker(&engines.sync, false)?;
    let concurrent_linker = linker(&engines.concurrent, true)?;
    let cache_dir = cfg.cache_dir.clone();
    let wake: HashMap<String, Arc<Notify>> =
        manifest.consumers.iter().map(|c| (c.component.clone(), Arc::new(Notify::new()))).collect();
    let metrics = Metrics::new(&kv);
    let app = Arc::new(AppCtx { manifest: manifest.clone(), kv, queue, variables, metrics, wake: wake.clone() });

    let mut http_components = HashMap::new();
    let mut consumers = Vec::new();
    let routed: std::collections::HashSet<&str> = manifest.routes.iter().map(|r| r.component.as_str()).collect();
    for c in manifest.components.values() {
        let t = Instant::now();
        let (engines2, source, cache) = (engines.clone(), c.source.clone(), cache_dir.clone());
        let loaded = tokio::task::spawn_blocking(move || load(&engines2, &source, &cache))
            .await?
            .with_context(|| format!("component {}", c.id))?;
        let (engine, component, cached) = (loaded.engine, loaded.component, loaded.cached);
        let mut linker = if loaded.concurrent { concurrent_linker.clone() } else { sync_linker.clone() };
        let pre = match linker.instantiate_pre(&component) {
            Ok(pre) => pre,
            Err(_) => {
                let stubbed = stub_unknown_imports(&mut linker, &engine, &component)
                    .with_context(|| format!("linking component {}", c.id))?;
                tracing::warn!(component = %c.id, ?stubbed, "imports the host does not provide trap when called");
                linker.instantiate_pre(&component).map_err(|e| anyhow!("linking component {}: {e:?}", c.id))?
            }
        };
        let allowed = c
            .allowed_outbound_hosts
            .iter()
            .map(|h| AllowedHost::parse(h).map_err(|e| anyhow!(e)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ctx = Arc::new(ComponentCtx {
            id: c.id.as_str().into(),
            kv_labels: c.key_value_stores.clone(),
            allowed_hosts: Arc::new(allowed),
            environment: c.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
        if routed.contains(c.id.as_str()) {
            let http = match wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone()) {
                Ok(p) => HttpPre::P2(p),
                Err(e2) => match wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()) {
                    Ok(p) => HttpPre::P3(p),
                    Err(e3) => bail!(
                        "component {} has an HTTP route but exports neither wasi:http/incoming-handler@0.2 ({e2}) nor wasi:http/handler@0.3 ({e3})",
                        c.id
                    ),
                },
            };
            http_components.insert(
                c.id.clone(),
                HttpComponent { engine: engine.clone(), ctx: ctx.clone(), pre: http, idle: Default::default() },
            );
        }
        for spec in manifest.consumers.iter().filter(|s| s.component == c.id) {
            let consumer_pre = crate::bindings::PlatformPre::new(pre.clone()).map_err(|e| {
                anyhow!("component {} is a queue consumer but does not export bss:messaging/handler: {e:?}", c.id)
            })?;
            consumers.push(Arc::new(ConsumerRuntime {
                engine: engine.clone(),
                spec: spec.clone(),
                ctx: ctx.clone(),
                pre: consumer_pre,
                wake: wake[&c.id].clone(),
            }));
        }
        tracing::info!(component = %c.id, cached, wasip3 = loaded.concurrent, elapsed_ms = t.elapsed().as_millis() as u64, "component loaded");
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let env = DispatchEnv {
        app: app.clone(),
        handler_timeout: cfg.handler_timeout,
        memory_max_bytes: cfg.limits.memory_max_bytes,
    };
    for c in consumers {
        tasks.push(tokio::spawn(crate::queue::dispatcher::run(env.clone(), c, shutdown_rx.clone())));
    }

    let server = Arc::new(HttpServer {
        app: app.clone(),
        components: http_components,
        in_flight: Arc::new(Semaphore::new(cfg.limits.in_flight_max)),
        idle_count: Default::default(),
        idle_max: crate::server::idle_instances_max(cfg.engine.instances_max, cfg.limits.in_flight_max),
        limits: cfg.limits.clone(),
    });
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let http_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(serve_http(listener, server, shutdown_rx.clone(), cfg.shutdown_grace)));

    let admin_addr = match cfg.admin_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("binding admin port {addr}"))?;
            let a = l.local_addr()?;
            tasks.push(tokio::spawn(admin::serve(l, app.clone(), shutdown_rx.clone())));
            Some(a)
        }
        None => None,
    };

    println!("bss-host: serving {} on http://{http_addr} (started in {} ms)", manifest.name, t0.elapsed().as_millis());
    let mut routes = manifest.routes.clone();
    routes.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    for r in &routes {
        println!("  {:<48} -> {}", r.pattern, r.component);
    }
    for c in &manifest.consumers {
        println!("  queue {:<42} -> {}", c.subjects.join(", "), c.component);
    }
    if let Some(a) = admin_addr {
        println!("  admin: http://{a}/metrics, http://{a}/admin/queue/dead");
    }
    Ok(RunningHost { http_addr, admin_addr, shutdown: shutdown_tx, tasks, _lock: lock })
}

/// Accept connections until shutdown, then give open connections `grace` to finish.
async fn serve_http(
    listener: TcpListener,
    server: Arc<HttpServer>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).max_buf_size(64 * 1024);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let svc = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(server.handle(req, client).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed with error: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cargo_builds_target_is_read_from_its_command() {
        let spin = "cargo build --target wasm32-wasip2 --profile release-lto -p usage";
        assert_eq!(cargo_target(spin), Some("wasm32-wasip2"));
        assert_eq!(cargo_target("cargo build --release --target=wasm32-wasip1"), Some("wasm32-wasip1"));
        assert_eq!(cargo_target("cd fn && cargo build --target wasm32-wasip2"), Some("wasm32-wasip2"));
        assert_eq!(cargo_target("cargo build --release"), None);
        assert_eq!(cargo_target("tinygo build --target wasip2 -o app.wasm"), None);
        assert_eq!(cargo_target("cargo build --target"), None);
    }

    /// Two store labels (or a label and the queue) naming one SQLite file share one open
    /// database: a second open of the file would be refused.
    #[test]
    fn stores_naming_one_database_file_share_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = Databases::new(|p: &Path| SqliteDb::open_with(p, SyncMode::Normal, None));
        let path = dir.path().join("other.sqlite");
        let a = dbs.get(&path).unwrap();
        let b = dbs.get(&dir.path().join(".").join("other.sqlite")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = dbs.get(&dir.path().join("third.sqlite")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
