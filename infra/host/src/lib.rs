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

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the [`Allocator`]'s options; called first in `main` (and by the native baselines, so
/// that they run with the same allocator). mimalloc gives memory that stayed free for a moment
/// back to the OS and faults it in again, zeroed, when it is reused: under a bill run that churn
/// (transparent huge pages of 2 MiB zeroed on each fault) was about 1.5% of the host's CPU.
/// Without it a bill run of 100,000 accounts took 0–6% less CPU (alternating runs, accounts per
/// CPU-second: 3,110/3,159 against 3,307/3,320 with `MIMALLOC_PURGE_DELAY=-1`, 3,204/3,363
/// against 3,288/3,363 with this call). The host's heap is bounded (its caches and instance
/// slots are), so freed memory is kept for reuse: the process holds its peak.
pub fn tune_allocator() {
    // SAFETY: `mi_option_set` stores an option's value; it takes no pointers and is safe to call
    // at any time, from any thread (mimalloc reads options on its slow paths only).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    };
}
