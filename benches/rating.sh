#!/usr/bin/env bash
# The pure rating kernel (bss_domain::rating) natively and inside WebAssembly, same workload,
# same run: builds the rating-loop command natively and as a WASI command (wasm32-wasip2), both
# with the components' profile (release-lto; the wasm build also takes .cargo/config.toml's
# wasm32-wasip2 flags, as the components do), and the rating-wasm runner in release, then prints
# native and wasm records/s (median, min-max, one core) and their ratio.
# Usage: benches/rating.sh [records=10000] [passes=15] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile release-lto -q --target wasm32-wasip2 -p bss-rating-loop --bin rating-loop
cargo build --profile release-lto -q -p bss-rating-loop --bin rating-loop
cargo build --release -q -p bss-bench --bin rating-wasm
exec target/release/rating-wasm --wasm target/wasm32-wasip2/release-lto/rating-loop.wasm \
    --native target/release-lto/rating-loop "$@"
