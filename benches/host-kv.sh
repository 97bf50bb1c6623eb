#!/usr/bin/env bash
# KV round-trip load test: bss-host serving the kvtest component against the same logic in a
# native hyper server (native-kv), on this machine, in one run, with wrk on the same cores.
# Usage: benches/host-kv.sh [duration_secs=10] [connections=64] [only=ROW]
# (`only`: run the native server and the bss-host rows whose name contains ROW, e.g. `reuse`.)
# Prints requests/s, p50/p99 latency and the server's CPU per request under saturation, and the p50
# latency of one connection alone, for: native; bss-host as it starts by default (a fresh instance
# per request, Spin's way) with the pooling allocator and with on-demand allocation; and bss-host
# reusing an instance for up to 1,000 requests (`--instance-reuse-max 1000`).
set -euo pipefail
cd "$(dirname "$0")/.."
duration_secs=${1:-10}
connections=${2:-64}
only=${3:-}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 1; }

cargo build --profile release-lto -q -p bss-host -p bss-bench --bin bss-host --bin native-kv
cargo build --profile release-lto -q --target wasm32-wasip2 -p tc-kvtest
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/spin.toml" <<TOML
spin_manifest_version = 2
[application]
name = "kv-bench"
[[trigger.http]]
route = "/kvtest/..."
component = "kvtest"
[component.kvtest]
source = "$PWD/target/wasm32-wasip2/release-lto/tc_kvtest.wasm"
key_value_stores = ["default"]
TOML

# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }

run() { # name url pid: saturated (wrk -t2 -c$connections), then one connection (unloaded latency)
    local before after
    before=$(cpu_secs "$3")
    wrk -t2 -c"$connections" -d"${duration_secs}s" --latency "$2" > "$work/$1.txt"
    after=$(cpu_secs "$3")
    wrk -t1 -c1 -d"${duration_secs}s" --latency "$2" > "$work/$1-c1.txt"
    local rps p50 p99 cpu_us p50_1
    rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$1.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$1.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
    cpu_us=$(awk -v a="$before" -v b="$after" -v r="$rps" -v d="$duration_secs" 'BEGIN {printf "%.0f", (b - a) * 1e6 / (r * d)}')
    p50_1=$(awk '$1 == "50%" {print $2}' "$work/$1-c1.txt")
    printf '| %-36s | %10s | %8s | %8s | %8s | %8s |\n' "$1" "$rps" "$p50" "$p99" "$cpu_us" "$p50_1"
}

wait_up() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "server at $1 did not start" >&2; exit 1; }

echo "| server                               | requests/s |      p50 |      p99 | CPU µs/request | p50, 1 connection |"
echo "|--------------------------------------|-----------:|---------:|---------:|---------:|---------:|"
./target/release-lto/native-kv 127.0.0.1:3190 "$work/native" >/dev/null &
native_pid=$!
wait_up http://127.0.0.1:3190/kvtest/roundtrip/warm
run native http://127.0.0.1:3190/kvtest/roundtrip/bench "$native_pid"
kill %1; wait %1 2>/dev/null || true

for mode in "pooling, fresh instances" "on-demand, fresh instances" "pooling, instance reuse"; do
    [[ $mode == *"$only"* ]] || continue
    extra=()
    case $mode in *reuse) extra+=(--instance-reuse-max 1000) ;; esac
    case $mode in on-demand*) extra+=(--no-pooling) ;; esac
    BSS_LOG=info ./target/release-lto/bss-host up --no-build --no-admin --manifest "$work/spin.toml" \
        --data "$work/${mode//[ ,]/-}" --listen 127.0.0.1:3191 "${extra[@]}" >/dev/null 2>&1 &
    host_pid=$!
    wait_up http://127.0.0.1:3191/kvtest/roundtrip/warm
    run "bss-host ($mode)" http://127.0.0.1:3191/kvtest/roundtrip/bench "$host_pid"
    kill %%; wait 2>/dev/null || true
done
echo
echo "machine: $(nproc) cores; wrk -t2 -c$connections -d${duration_secs}s on the same cores; CPU µs/request: the"
echo "server process's user + system CPU over the saturated run / requests; last column: wrk -t1 -c1 (unloaded)"
