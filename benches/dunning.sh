#!/usr/bin/env bash
# Dunning-run benchmark (measured, not a timed test): N accounts seeded as for bill runs (the
# folder of benches/billrun-ab.sh, seeded there if absent), billed by a bill run through bss-host
# (each account gets a ledger and a bill), then one `POST dunningRun` over every account at a
# time past the bills' due dates with a reminder-only policy, queued to billing-worker; its
# status is polled every second. Prints the run's accounts/s (overall and the median of 1-s
# intervals), the host's CPU, and the run's counts (every account checked once, one reminder per
# account that owes, no failure).
# Usage: benches/dunning.sh N   (builds bss-host and the components with release-lto)
# Environment: BILLRUN_AB_OUT (default target/billrun-ab/N, shared with benches/billrun-ab.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: benches/dunning.sh N}
out=${BILLRUN_AB_OUT:-target/billrun-ab/$n}
cargo build --profile release-lto -q -p bss-host -p bss-bench --bin bss-host --bin billrun-seed
cargo build --profile release-lto -q --target wasm32-wasip2 -p tenants -p catalog -p customer -p bss-quote -p order \
    -p usage -p order-worker -p oss-sim -p billing -p billing-worker
host=./target/release-lto/bss-host
[ -f "$out/seeded" ] || benches/billrun-ab.sh "$n" 0 "$host" "$host"
seed=./target/release-lto/billrun-seed
# shellcheck source=benches/bench-host.sh
. benches/bench-host.sh
export BSS_LOG=${BSS_LOG:-warn}
trap 'stop_host; rm -rf "$out/dunning"' EXIT
trap 'exit 130' INT TERM
rm -rf "$out/dunning"
cp -a "$out/seed" "$out/dunning"
host_bin=$host start_host "$out/dunning" "$out/host-dunning"
$seed run --url "$url" --state "$out/state.json" --admin "$admin" --interval-secs 1 --host-pid "$host_pid" \
    >"$out/dunning-billrun.txt" 2>/dev/null
head -1 "$out/dunning-billrun.txt"
key=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['apiKey'])" "$out/state.json")
api=$url/tmf-api/customerBillManagement/v4
# 40 days after the bills: past their due dates (the seeded accounts pay in 14 days) plus 7.
now=$(date -u -d '+40 days' +%Y-%m-%dT12:00:00Z)
cpu() { awk '{print $14 + $15}' "/proc/$host_pid/stat"; }
cpu0=$(cpu)
t0=$(date +%s.%N)
id=$(curl -sf -X POST "$api/dunningRun" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"now\": \"$now\", \"policy\": {\"steps\": [{\"afterDays\": 7, \"action\": \"reminder\"}]}}" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
samples=()
while :; do
    sleep 1
    line=$(curl -sf "$api/dunningRun/$id" -H "Authorization: Bearer $key" | python3 -c "
import json, sys
d = json.load(sys.stdin)
print(d['state'], d['accountsChecked'], d.get('accountsTotal'), d['actionsTaken'], d['failures'])")
    samples+=("$(date +%s.%N) $line")
    case "$line" in inProgress*) ;; *) break ;; esac
done
t1=$(date +%s.%N)
cpu1=$(cpu)
printf '%s\n' "${samples[@]}" | python3 -c "
import statistics, sys
t0, cpu = $t0, ($cpu1 - $cpu0) / 100
rows = [l.split() for l in sys.stdin if l.strip()]
last = rows[-1]
state, checked, total, actions, failures = last[1], int(last[2]), last[3], int(last[4]), int(last[5])
secs = float(last[0]) - t0
rates, (pt, pc) = [], (t0, 0)
for r in rows:
    t, c = float(r[0]), int(r[2])
    if c > pc or r is last:
        rates.append((c - pc) / (t - pt))
    pt, pc = t, c
print(f'bss-host dunning run: {checked} accounts checked in {secs:.1f} s = {checked / secs:,.0f} accounts/s overall; '
      f'per ~1 s interval: median {statistics.median(rates):,.0f}, min-max {min(rates):,.0f}-{max(rates):,.0f}')
print(f'bss-host dunning run: host CPU {cpu:.1f} s = {checked / cpu:,.0f} accounts per CPU-second; '
      f'state {state}, accountsTotal {total}, actionsTaken {actions}, failures {failures}')
"
