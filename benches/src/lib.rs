//! bss-bench: benchmarks of bss-host. `benches/host-kv.sh` runs the KV round-trip load test
//! (bss-host against the native baseline `native-kv`, same machine, same run);
//! `cargo bench -p bss-bench --bench instantiate` measures per-request instantiation time with
//! and without the pooling allocator.
