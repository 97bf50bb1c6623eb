#!/usr/bin/env bash
# Bill-run benchmark (measured, not a timed test): N billing accounts with ~R rated usage records
# each in the embedded store, billed for the previous month by bss-host (POST billRun, fanned out
# to billing-worker over the queue), and the same accounts billed natively on one thread, in one
# run. Steps (tool: benches/src/bin/billrun-seed.rs):
#   1. build bss-host, the components and billrun-seed with the release-lto profile;
#   2. start `bss-host up` on a fresh data folder; over the API: a tenant, the sample catalog, a
#      customer, a template account and Mobile M order (completed by the real order flow); stop it;
#   3. seed N accounts straight into the data folder's SQLite with the components' own code
#      (resource layer, complete_order, the usage pipeline rating every record);
#   4. natively, one thread, on the same SQLite: gather + build_bill per account (read-only), and
#      the parts of gather on 2,000 accounts;
#   5. start the host on the seeded folder; read back an account, its product, charges, usage
#      and the catalog over the API; run the bill run, polling its progress every second
#      (accounts/s per interval, median, overall); check one bill and an on-demand bill against
#      the seeded ratings; stop the host;
#   6. the stored bills: one per account, numbered gap-free, adding up to the native total.
# Usage: benches/billrun.sh N [records_per_account=30]
# Environment: BILLRUN_OUT (default target/billrun/N: logs, state, summaries, metrics),
#   BILLRUN_KEEP=1 keeps the data folder (deleted at the end otherwise), BSS_LOG (host log level).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: benches/billrun.sh N [records_per_account=30]}
records=${2:-30}
out=${BILLRUN_OUT:-target/billrun/$n}
data=$out/data

cargo build --profile release-lto -q -p bss-host -p bss-bench --bin bss-host --bin billrun-seed
cargo build --profile release-lto -q --target wasm32-wasip2 -p tenants -p catalog -p customer -p bss-quote -p order \
    -p usage -p order-worker -p oss-sim -p billing -p billing-worker

rm -rf "$out"
mkdir -p "$out"
seed=./target/release-lto/billrun-seed
state=$out/state.json
# shellcheck source=benches/bench-host.sh
. benches/bench-host.sh
cleanup() {
    stop_host
    [ "${BILLRUN_KEEP:-0}" = 1 ] || rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


avail_bytes() { df -B1 --output=avail "$1" | tail -1 | tr -d ' '; }

# 2. Tenant, catalog and templates over the API.
mkdir -p "$data"
start_host "$data" "$out/host-setup"
$seed setup --url "$url" --admin-key "$admin_key" --state "$state"
stop_host

# 3. Seed (about 1 kB of database per usage record in the compact stored form — 997 bytes
#    measured at 100,000 accounts; 2,229 in JSON before it —, with room for the WAL, and ~12 kB
#    per account for the run's bills, ledgers, marks and events; refuse what the disk cannot hold).
need=$((n * records * 1150 + n * 12000 + 1000000000))
if [ "$(avail_bytes "$out")" -lt "$need" ]; then
    echo "not enough disk for $n accounts x $records records: need ~$((need / 1000000000)) GB, $(df -h --output=avail "$out" | tail -1) free" >&2
    exit 1
fi
$seed seed --data "$data" --state "$state" --accounts "$n" --records "$records" | tee "$out/seed.txt"

# 4. Natively, on the same database (read-only).
$seed native --data "$data" --state "$state" --summary "$out/native.json" --breakdown 2000 | tee "$out/native.txt"

# 5. The bill run on bss-host.
start_host "$data" "$out/host-run"
$seed verify --url "$url" --state "$state" | tee "$out/verify.txt"
$seed run --url "$url" --state "$state" --admin "$admin" --out "$out" --interval-secs 1 --host-pid "$host_pid" --summary "$out/run.json" \
    2> >(tee "$out/run-progress.txt" >&2) | tee "$out/run.txt"
$seed check --url "$url" --state "$state" | tee "$out/check.txt"
stop_host

# 6. The stored bills against the native run.
$seed compare --data "$data" --state "$state" --native "$out/native.json" | tee "$out/compare.txt"

echo
echo "bill run of $n accounts x ~$records rated usage records, $(nproc) cores, $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- functions domain infra || echo ' + uncommitted changes in functions/domain/infra'):"
cat "$out/seed.txt" "$out/run.txt" "$out/native.txt" "$out/check.txt" "$out/compare.txt"
echo "queue deliveries of billing-worker (from the host's /metrics):"
grep -E '^bss_queue_deliveries_total\{consumer="billing-worker"' "$out/metrics-after.txt" || echo "  (no metrics)"
echo "(logs, state, summaries and metrics in $out)"
