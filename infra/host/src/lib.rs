//! bss-host: the BSS runtime on wasmtime. Reads a Spin v2 `spin.toml`, serves its HTTP triggers,
//! runs its queue consumers and gives every component a key-value store and a durable queue
//! (embedded SQLite by default, Redis for several hosts). Run it with `cargo run --profile
//! release-lto -p bss-host -- up` (release with fat LTO: see the workspace's Cargo.toml); test it
//! with `cargo test -p bss-host`.

pub mod admin;
pub mod app;
pub mod billrun;
pub mod bindings;
pub mod db;
pub mod kv;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod runtime;
pub mod runtime_config;
pub mod server;
pub mod state;
pub mod variables;

/// The host's global allocator, for its binary and for the native baselines the benchmarks compare
/// it with (`#[global_allocator] static GLOBAL: bss_host::Allocator = bss_host::Allocator;`).
/// Every request allocates and frees many small objects (wasi:http resources, hyper buffers,
/// wasmtime's per-store tables) on two threads; mimalloc's per-thread free lists do that for
/// less CPU than glibc's arenas: +7% KV round-trips/s in alternating runs (README, Benchmarks).
pub use mimalloc::MiMalloc as Allocator;
