#!/usr/bin/env bash
# A stage printing many lines, followed remotely (`buildit pipelines trigger --follow` against a `buildit daemon`
# on loopback) against the same pipeline run locally (`buildit run --plain`), alternately, several times in one
# go. Prints the median ratio remote/local (target: at most 2).
#
# Usage: bench/remote-follow.sh [LINES] [ROUNDS]     (default: 1000000 5)
set -euo pipefail
cd "$(dirname "$0")/.."

lines="${1:-1000000}"
rounds="${2:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
source bench/daemon.sh

cargo build --release --locked -q -p buildit-cli
buildit="$(pwd)/${CARGO_TARGET_DIR:-target}/release/buildit"
mkdir -p "$work/local" "$work/remote" "$work/data"
command="awk 'BEGIN { for (i = 1; i <= $lines; i++) print \"line \" i \" of the build log\" }'"
python3 - "$work/local/buildit.kdl" "$command" <<'PY'
import json, sys
path, command = sys.argv[1], sys.argv[2]
with open(path, "w") as f:
    f.write('pipeline "log-lines"\nstage "print" {\n    run ' + json.dumps(command) + "\n}\n")
PY
cp "$work/local/buildit.kdl" "$work/remote/buildit.kdl"

start_daemon "$work" "$buildit"
echo "stage prints $lines lines; daemon at $address"

cd "$work/remote"
BUILDIT_SERVER="$address" BUILDIT_TOKEN="$token" python3 "$OLDPWD/bench/alternate.py" "$rounds" remote local \
    -- "$buildit" pipelines trigger --follow buildit.kdl \
    -- "$buildit" run --plain --workspace "$work/local" "$work/local/buildit.kdl"
