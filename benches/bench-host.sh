# Sourced by the benchmark scripts: starts and stops the release-lto bss-host (or $host_bin) on
# free ports.
# start_host DATA OUT_PREFIX — serves spin.toml from DATA, logs to OUT_PREFIX.out/.log; sets
# host_pid, url, admin (the admin API; /metrics under it). stop_host — SIGTERM, then SIGKILL
# after 30 s. admin_key — the admin key the host was started with.
host_pid=
url=
admin=
admin_key="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
host_bin=${host_bin:-./target/release-lto/bss-host}

start_host() { # data out_prefix
    BSS_VAR_ADMIN_KEY=$admin_key BSS_LOG=${BSS_LOG:-info} "$host_bin" up --no-build --manifest spin.toml \
        --data "$1" --cache-dir target/bss-bench-cache --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        >"$2.out" 2>"$2.log" &
    host_pid=$!
    url= admin=
    for _ in $(seq 1 1200); do
        kill -0 "$host_pid" 2>/dev/null || { echo "bss-host exited:" >&2; tail -20 "$2.log" >&2; exit 1; }
        url=$(sed -n 's/^bss-host: serving .* on \(http:[^ ]*\).*/\1/p' "$2.out")
        admin=$(sed -n 's/^ *admin: \(http:[^ ]*\)\/metrics.*/\1/p' "$2.out")
        [ -n "$url" ] && [ -n "$admin" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "bss-host did not start in 120 s" >&2; tail -20 "$2.log" >&2; exit 1; }
    echo "bss-host serving on $url (admin $admin); data in $1" >&2
}

stop_host() {
    if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
        kill -TERM "$host_pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$host_pid" 2>/dev/null || true
        wait "$host_pid" 2>/dev/null || true
    fi
    host_pid=
}
