#!/usr/bin/env bash
# End-to-end usage ingestion through bss-host against the same pipeline natively, in one run:
# builds bss-host, the application's components and usage-load (profile release-lto); starts `bss-host up`
# with the root spin.toml on a fresh data folder; sets up a tenant with the sample catalog and
# S subscribers (an account and a mobile-m product each); posts batches of 1,000 usage records
# (POST /tmf-api/usageManagement/v4/usageBatch) for D seconds with C connections, first with
# unique records, then with 1% of every batch re-sent (duplicates); stops the host; then runs the
# same records through the usage component's pipeline natively on one thread, over the kit's
# in-memory store and over bss-host's SQLite KV store; prints one table.
# Usage: benches/usage-e2e.sh [seconds=20] [concurrency=4] [subscribers=2000]
# Results (summaries as JSON, the host's log and metrics) stay in target/usage-e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
concurrency=${2:-4}
subscribers=${3:-2000}

cargo build --profile release-lto -q -p bss-host -p bss-bench --bin bss-host --bin usage-load
cargo build --profile release-lto -q --target wasm32-wasip2 -p tenants -p catalog -p customer -p bss-quote -p order \
    -p usage -p order-worker -p oss-sim -p billing -p billing-worker

out=target/usage-e2e
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
# shellcheck source=benches/bench-host.sh
. benches/bench-host.sh
trap 'stop_host; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

start_host "$work/data" "$out/host"

./target/release-lto/usage-load setup --url "$url" --admin-key "$admin_key" --subscribers "$subscribers" \
    --state "$work/state.json"
./target/release-lto/usage-load load --state "$work/state.json" --seconds "$seconds" --concurrency "$concurrency" \
    --duplicates-percent 0 --label "bss-host, unique" --summary "$out/host-unique.json"
./target/release-lto/usage-load load --state "$work/state.json" --seconds "$seconds" --concurrency "$concurrency" \
    --duplicates-percent 1 --label "bss-host, 1% duplicates" --summary "$out/host-dup1.json"
curl -sf "$admin/metrics" >"$out/metrics.txt" || true
stop_host

for store in mem sqlite; do
    for dup in 0 1; do
        name="native-$store-dup$dup"
        label="native $store, $([ "$dup" = 0 ] && echo unique || echo "1% duplicates")"
        ./target/release-lto/usage-load native --store "$store" --data "$work/$name" --subscribers "$subscribers" \
            --seconds "$seconds" --duplicates-percent "$dup" --label "$label" --summary "$out/$name.json"
    done
done

echo
echo "usage ingestion, $subscribers subscribers, batches of 1,000 records; bss-host: $concurrency connections" \
    "for ${seconds}s per run; native: one thread, pipeline time only"
./target/release-lto/usage-load table "$out/host-unique.json" "$out/host-dup1.json" "$out/native-mem-dup0.json" \
    "$out/native-mem-dup1.json" "$out/native-sqlite-dup0.json" "$out/native-sqlite-dup1.json"
echo
echo "usage component answers (bss_http_requests_total, from the host's /metrics):"
grep -E '^bss_http_requests_total\{.*component="usage"' "$out/metrics.txt" || echo "  (no metrics)"
errors=$(grep -ciE ' (WARN|ERROR) ' "$out/host.log" || true)
echo "host log: $errors WARN/ERROR lines (target/usage-e2e/host.log)"
grep -iE ' (WARN|ERROR) ' "$out/host.log" | head -5 || true
echo "goal of the usage issue: 100,000 records/s end to end on this machine"
echo "machine: $(nproc) cores, load generator on the same cores;" \
    "command: benches/usage-e2e.sh $seconds $concurrency $subscribers"
