#!/usr/bin/env bash
# A/B of two bss-host binaries on bill runs (measured, not a timed test): N accounts seeded once
# (as benches/billrun.sh does), then ROUNDS rounds, each billing a fresh copy of the seeded
# folder with host A and with host B, the order alternating — so that both see the same data
# and the same hour of a machine whose speed drifts. Prints each run's accounts/s, host CPU and
# bytes read and written an account (billrun-seed run).
# Usage: benches/billrun-ab.sh N ROUNDS HOST_A HOST_B   (build each host with
#   `cargo build --profile release-lto -p bss-host` and copy it aside; the components are the
#   built ones in target/wasm32-wasip2/release-lto, the same for both)
#   or benches/billrun-ab.sh N ROUNDS WORKER_A.wasm WORKER_B.wasm   (two builds of the
#   billing-worker component, `cargo build --profile release-lto --target wasm32-wasip2
#   -p billing-worker` copied aside: each is put in place of the built one for its rounds, the
#   built one put back at the end; one host, the built one)
# Environment: BILLRUN_AB_OUT (default target/billrun-ab/N; the seeded folder is kept there and
#   reused by the next call with the same N; delete it to seed again).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: benches/billrun-ab.sh N ROUNDS HOST_A HOST_B}
rounds=${2:?rounds}
a=$(realpath "${3:?host A}")
b=$(realpath "${4:?host B}")
out=${BILLRUN_AB_OUT:-target/billrun-ab/$n}
seed=./target/release-lto/billrun-seed
cargo build --profile release-lto -q -p bss-bench --bin billrun-seed
# shellcheck source=benches/bench-host.sh
. benches/bench-host.sh
export BSS_LOG=${BSS_LOG:-warn}
worker=target/wasm32-wasip2/release-lto/billing_worker.wasm
components=0
setup_host=$a
if [[ $a == *.wasm && $b == *.wasm ]]; then
    components=1
    setup_host=./target/release-lto/bss-host
    mkdir -p "$(dirname "$out")"
    cp "$worker" "$out.worker-built.wasm"
    trap 'stop_host; rm -rf "$out/run"; mv "$out.worker-built.wasm" "$worker"' EXIT
else
    trap 'stop_host; rm -rf "$out/run"' EXIT
fi
trap 'exit 130' INT TERM

if [ ! -f "$out/seeded" ]; then
    rm -rf "$out"
    mkdir -p "$out/seed"
    host_bin=$setup_host start_host "$out/seed" "$out/host-setup"
    $seed setup --url "$url" --admin-key "$admin_key" --state "$out/state.json"
    stop_host
    $seed seed --data "$out/seed" --state "$out/state.json" --accounts "$n" --records 30 | tail -1
    touch "$out/seeded"
fi
for r in $(seq 1 "$rounds"); do
    order="A B"
    [ $((r % 2)) = 0 ] && order="B A"
    for x in $order; do
        bin=$a
        [ "$x" = B ] && bin=$b
        rm -rf "$out/run"
        cp -a "$out/seed" "$out/run"
        if [ "$components" = 1 ]; then
            cp "$bin" "$worker"
            bin=./target/release-lto/bss-host
        fi
        host_bin=$bin start_host "$out/run" "$out/host-$x-$r"
        $seed run --url "$url" --state "$out/state.json" --admin "$admin" --interval-secs 1 --host-pid "$host_pid" \
            --summary "$out/$x-$r.json" 2>/dev/null | sed "s/^bss-host bill run/$x round $r/"
        stop_host
    done
done
