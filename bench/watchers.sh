#!/usr/bin/env bash
# Many watchers against run time: one stage prints LINES lines (`awk`); a `buildit daemon` on loopback runs it
# alone and with WATCHERS WatchRun streams attached (the `watch-many` client: each stream on its own
# connection, reading every event), alternately, ROUNDS times each in one go. Prints the run's duration as its
# record gives it, per round, and the ratio of the medians (target: at most 1.10). The client shares the
# machine with the daemon; its own decoding (WATCHERS x LINES events) takes the cores from the run, which
# watchers on other machines would not: BUILDIT_BENCH_CLIENT_WRAP="chrt --idle 0" runs it only when the
# cores are otherwise idle (BUILDIT_BENCH_CLIENT_NICE=N: at niceness N).
# BUILDIT_BENCH_DAEMON_ARGS: more arguments for `buildit daemon` (e.g. `--serve-niceness 0`, to serve streams
# at the runs' priority).
#
# Usage: bench/watchers.sh [LINES] [WATCHERS] [ROUNDS]     (default: 200000 100 5)
set -euo pipefail
cd "$(dirname "$0")/.."

lines="${1:-200000}"
watchers="${2:-100}"
rounds="${3:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
source bench/daemon.sh

cargo build --release --locked -q -p buildit-cli
cargo build --release --locked -q -p buildit-benches --bin watch-many
buildit="$(pwd)/${CARGO_TARGET_DIR:-target}/release/buildit"
client="$(pwd)/${CARGO_TARGET_DIR:-target}/release/watch-many"
mkdir -p "$work/data"
command="awk 'BEGIN { for (i = 1; i <= $lines; i++) print \"line \" i \" of the build log\" }'"
python3 - "$work/buildit.kdl" "$command" <<'PY'
import json, sys
path, command = sys.argv[1], sys.argv[2]
with open(path, "w") as f:
    f.write('pipeline "watched"\nstage "print" {\n    run ' + json.dumps(command) + "\n}\n")
PY

# shellcheck disable=SC2086 # the extra arguments are words
start_daemon "$work" "$buildit" ${BUILDIT_BENCH_DAEMON_ARGS:-}
echo "stage prints $lines lines; $watchers watchers; daemon at $address"
${BUILDIT_BENCH_CLIENT_WRAP:-} nice -n "${BUILDIT_BENCH_CLIENT_NICE:-0}" "$client" "$address" "$token" "$work/buildit.kdl" "$watchers" "$rounds"
