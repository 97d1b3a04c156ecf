#!/usr/bin/env bash
# Live latency through the daemon: a stage prints RATE lines a second for SECONDS seconds (a paced python3 loop),
# each line carrying the time it was printed (`time.time_ns()`); the `follow-latency` client triggers it on a
# `buildit daemon` on loopback and follows it with WatchRun and StreamLogs (follow) at once, and prints for each
# how long after its printing a line arrived: p50, p99 and max (target: p99 under 100 ms). It fails if a stream
# misses a line or gets one twice or out of order.
#
# Usage: bench/live-latency.sh [RATE] [SECONDS]     (default: 10000 10)
set -euo pipefail
cd "$(dirname "$0")/.."

rate="${1:-10000}"
seconds="${2:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
source bench/daemon.sh

cargo build --release --locked -q -p buildit-cli
cargo build --release --locked -q -p buildit-benches --bin follow-latency
buildit="$(pwd)/${CARGO_TARGET_DIR:-target}/release/buildit"
client="$(pwd)/${CARGO_TARGET_DIR:-target}/release/follow-latency"
mkdir -p "$work/data"
cat > "$work/ticker.py" <<'PY'
import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
out = sys.stdout
start = time.monotonic()
for i in range(1, int(rate * seconds) + 1):
    # Paced against the start, not the previous line: a late line is followed by the ones due, at once.
    wait = start + (i - 1) / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    out.write(f"tick {i} {time.time_ns()}\n")
    out.flush()
PY
printf 'pipeline "live-latency"\nstage "tick" {\n    run "python3 %s %s %s"\n}\n' \
    "$work/ticker.py" "$rate" "$seconds" > "$work/buildit.kdl"

start_daemon "$work" "$buildit"
echo "stage prints $rate lines a second for $seconds s; daemon at $address"
"$client" "$address" "$token" "$work/buildit.kdl"
