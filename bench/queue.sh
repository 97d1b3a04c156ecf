#!/usr/bin/env bash
# Job queue throughput on a real PostgreSQL (a throwaway server started here) and on SQLite: JOBS jobs, WORKERS
# concurrent workers claiming and completing. Prints claims+completions per second and checks for double claims.
#
# Usage: bench/queue.sh [JOBS] [WORKERS]     (default: 10000 4)
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${1:-10000}"
workers="${2:-4}"
work="$(mktemp -d)"
chmod 755 "$work"
url="$(scripts/start-postgres.sh "$work/pg")"
stop() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    else
        "$bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap stop EXIT

cargo build --release --locked -q -p buildit-benches --bin queue-bench
bench="$(pwd)/${CARGO_TARGET_DIR:-target}/release/queue-bench"
echo "== PostgreSQL ($url)"
"$bench" "$url" "$jobs" "$workers"
echo "== SQLite"
"$bench" "sqlite:$work/queue.db" "$jobs" "$workers"
