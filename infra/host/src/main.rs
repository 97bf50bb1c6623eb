//! `bss-host`: run the BSS from its `spin.toml`. `bss-host up --help` lists the options.

use bss_host::app::{HostConfig, start};
use bss_host::db::SyncMode;
use bss_host::runtime::EngineOptions;
use bss_host::server::Limits;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static GLOBAL: bss_host::Allocator = bss_host::Allocator;

#[derive(Parser)]
#[command(name = "bss-host", version, about = "The BSS runtime: serves the spin.toml app on wasmtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the components, then serve every HTTP route and run every queue consumer.
    Up(UpArgs),
    /// Start a bill run on a running host (or follow one) and show its progress bar.
    BillRun(bss_host::billrun::BillRunArgs),
    /// Start a dunning run over every account on a running host (or follow one) and show its
    /// progress bar.
    DunningRun(bss_host::billrun::DunningRunArgs),
    /// Rewrite a data folder's database (stopped) with the current key-value layout: databases
    /// created before 2026-11-28 read several times more pages a lookup (the host warns at start).
    /// Crash-safe (an atomic replace); needs the database's size again in free disk.
    UpgradeStore {
        /// The data folder.
        #[arg(long, default_value = ".bss", env = "BSS_DATA")]
        data: PathBuf,
    },
    /// Run the components' build commands only.
    Build {
        /// The application manifest.
        #[arg(long, default_value = "spin.toml", env = "BSS_MANIFEST")]
        manifest: PathBuf,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// The application manifest (Spin v2 spin.toml).
    #[arg(long, default_value = "spin.toml", env = "BSS_MANIFEST")]
    manifest: PathBuf,
    /// Address for the HTTP triggers.
    #[arg(long, default_value = "127.0.0.1:3000", env = "BSS_LISTEN")]
    listen: SocketAddr,
    /// Data folder: the embedded database, the compiled-component cache, the lock file.
    #[arg(long, default_value = ".bss", env = "BSS_DATA")]
    data: PathBuf,
    /// Where compiled components are cached (default: <data>/cache). Several hosts may share it.
    #[arg(long, env = "BSS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Address of the admin port (/metrics, queue admin). Never expose it: it has no auth.
    #[arg(long, default_value = "127.0.0.1:3001", env = "BSS_ADMIN_LISTEN")]
    admin_listen: SocketAddr,
    /// Disable the admin port.
    #[arg(long)]
    no_admin: bool,
    /// Spin-style runtime config choosing the backend of each key-value store and of the queue.
    #[arg(long, env = "BSS_RUNTIME_CONFIG")]
    runtime_config: Option<PathBuf>,
    /// Skip the components' build commands; use the .wasm files as they are.
    #[arg(long)]
    no_build: bool,
    /// Time limit of one HTTP request, in milliseconds (504 past it).
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Time limit of one queue delivery, in milliseconds (a retry past it).
    #[arg(long, default_value_t = 60_000)]
    handler_timeout_ms: u64,
    /// Largest request body, in bytes (413 past it).
    #[arg(long, default_value_t = 4 << 20)]
    body_max_bytes: usize,
    /// Largest response body a component may produce, in bytes (500 past it).
    #[arg(long, default_value_t = 64 << 20)]
    response_max_bytes: usize,
    /// Requests handled at once (503 with Retry-After past it).
    #[arg(long, default_value_t = 512)]
    in_flight_max: usize,
    /// Linear memory one instance may use, in MiB.
    #[arg(long, default_value_t = 128)]
    memory_max_mib: usize,
    /// Requests one WASIp2 instance may answer, one after another. 1 (the default) gives every
    /// request a fresh instance, as Spin does; more keeps an instance that answered cleanly for the
    /// component's next request (much faster for small requests), but then a component must keep
    /// nothing in globals that one request could leave for another. An instance that failed, left
    /// a resource behind or grew its memory past 16 MiB is never reused.
    #[arg(long, default_value_t = 1, env = "BSS_INSTANCE_REUSE")]
    instance_reuse_max: u32,
    /// Instance slots of the pooling allocator (requests plus deliveries at once).
    #[arg(long, default_value_t = 1000)]
    instances_max: u32,
    /// Allocate instances on demand instead of from the pool (slower; for comparison).
    #[arg(long)]
    no_pooling: bool,
    /// fsync every commit of the embedded database (normal: survive a process crash).
    #[arg(long, value_enum, default_value_t = SyncMode::Normal)]
    sqlite_sync: SyncMode,
    /// How often embedded key-value writes move from their log into SQLite, in milliseconds
    /// (each flush writes a page once however many writes changed it since the last).
    #[arg(long, default_value_t = bss_host::kv::writeback::FLUSH_INTERVAL_MS, env = "BSS_KV_FLUSH_MS",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    kv_flush_ms: u64,
    /// Read cache of each embedded key-value store, in MiB (0: none); not used with Redis.
    #[arg(long, default_value_t = 256, env = "BSS_KV_CACHE_MIB")]
    kv_cache_mib: usize,
    /// Time given to requests in progress to finish on SIGTERM, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
}

fn main() -> anyhow::Result<()> {
    bss_host::tune_allocator();
    let log = bss_host::logging::BufferedStderr::start();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BSS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(log.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _flush = log.flush_on_drop();
    match Cli::parse().command {
        Command::BillRun(a) => bss_host::billrun::run(a).map(drop),
        Command::DunningRun(a) => bss_host::billrun::dunning(a).map(drop),
        Command::UpgradeStore { data } => {
            let t0 = std::time::Instant::now();
            match bss_host::app::upgrade_store(&data)? {
                bss_host::db::Upgraded::Current => {
                    println!("bss-host: {} has the current layout already; nothing to do", data.display())
                }
                bss_host::db::Upgraded::Rewritten { kv_rows, other_rows } => println!(
                    "bss-host: {} rewritten with the current layout in {:.1} s: {kv_rows} key-value rows and \
                     {other_rows} other rows kept",
                    data.display(),
                    t0.elapsed().as_secs_f64()
                ),
            }
            Ok(())
        }
        Command::Build { manifest } => bss_host::app::build_components(&bss_host::manifest::Manifest::load(&manifest)?),
        Command::Up(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(up(a))
        }
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    if a.in_flight_max == 0 || a.body_max_bytes == 0 || a.request_timeout_ms == 0 || a.handler_timeout_ms == 0 {
        anyhow::bail!("limits must be greater than zero");
    }
    let memory_max_bytes = a.memory_max_mib << 20;
    let cfg = HostConfig {
        manifest: a.manifest,
        cache_dir: a.cache_dir.unwrap_or_else(|| a.data.join("cache")),
        data_dir: a.data,
        listen: a.listen,
        admin_listen: (!a.no_admin).then_some(a.admin_listen),
        runtime_config: a.runtime_config,
        build: !a.no_build,
        limits: Limits {
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            body_max_bytes: a.body_max_bytes,
            in_flight_max: a.in_flight_max,
            memory_max_bytes,
            response_max_bytes: a.response_max_bytes,
            instance_reuse_max: a.instance_reuse_max,
        },
        handler_timeout: Duration::from_millis(a.handler_timeout_ms),
        engine: EngineOptions {
            pooling: !a.no_pooling,
            instances_max: a.instances_max,
            memory_max_bytes,
            ..EngineOptions::default()
        },
        sqlite_sync: a.sqlite_sync,
        kv_flush: Duration::from_millis(a.kv_flush_ms),
        kv_cache_bytes: a.kv_cache_mib << 20,
        shutdown_grace: Duration::from_millis(a.shutdown_grace_ms),
    };
    let host = start(cfg).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("bss-host: shutting down, draining requests and deliveries in progress");
    host.shutdown().await;
    Ok(())
}
