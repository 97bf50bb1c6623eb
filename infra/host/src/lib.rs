//! bss-host: the BSS runtime on wasmtime. Reads a Spin v2 `spin.toml`, serves its HTTP triggers,
//! runs its queue consumers and gives every component a key-value store and a durable queue
//! (embedded SQLite by default, Redis for several hosts). Run it with `cargo run --release -p
//! bss-host -- up`; test it with `cargo test -p bss-host`.

pub mod admin;
pub mod app;
pub mod billrun;
pub mod bindings;
pub mod db;
pub mod kv;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod runtime;
pub mod runtime_config;
pub mod server;
pub mod state;
pub mod variables;
