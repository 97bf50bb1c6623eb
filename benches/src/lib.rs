//! bss-bench: benchmarks of bss-host. `benches/host-kv.sh` runs the KV round-trip load test
//! (bss-host against the native baseline `native-kv`, same machine, same run);
//! `cargo bench -p bss-bench --bench instantiate` measures per-request instantiation time with
//! and without the pooling allocator; `benches/rating.sh` runs the rating kernel natively and in
//! wasm in one run (`rating-wasm` with the `bss-rating-loop` WASI command, benches/rating-loop);
//! `benches/usage-e2e.sh` runs usage ingestion end to end through bss-host (`usage-load`: HTTP
//! batches of 1,000 records, unique and with 1% duplicates) and the usage component's pipeline
//! natively on the same records, over the in-memory store and over bss-host's SQLite store.
