# Sourced by the daemon benchmarks: a throwaway `buildit daemon` on loopback and a token for it.
#
# start_daemon WORK BUILDIT [ARGS...]: starts `BUILDIT daemon` with its data in WORK/data (and ARGS), stops it
# when the script exits (and removes WORK), waits until it listens, and sets `address` and `token` (tenant
# `bench`).

daemon_pid=""
daemon_work=""
stop_daemon() {
    if [[ -n "$daemon_pid" ]]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
    if [[ -n "$daemon_work" ]]; then rm -rf "$daemon_work"; fi
}

start_daemon() {
    local work="$1" buildit="$2"
    shift 2
    daemon_work="$work"
    trap stop_daemon EXIT
    mkdir -p "$work/data"
    (cd "$work" && exec "$buildit" daemon --listen 127.0.0.1:0 --data-dir "$work/data" --workers 1 "$@" 2> "$work/daemon.log") &
    daemon_pid=$!
    for _ in $(seq 1 100); do
        grep -q "listening on" "$work/daemon.log" 2>/dev/null && break
        sleep 0.1
    done
    address="$(sed -n 's/^buildit daemon listening on //p' "$work/daemon.log" | head -n 1)"
    token="$("$buildit" tokens create --tenant bench --database-url "sqlite:$work/data/buildit.db" 2>/dev/null)"
}
