//! bss-bench: benchmarks of bss-host. `benches/host-kv.sh` runs the KV round-trip load test
//! (bss-host against the native baseline `native-kv`, same machine, same run);
//! `cargo bench -p bss-bench --bench instantiate` measures per-request instantiation time with
//! and without the pooling allocator; `benches/rating.sh` runs the rating kernel natively and in
//! wasm in one run (`rating-wasm` with the `bss-rating-loop` WASI command, benches/rating-loop).
