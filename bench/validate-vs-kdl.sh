#!/usr/bin/env bash
# Whole-process comparison: `buildit validate` (read, parse, validate, check against the system configuration)
# against a program that only parses the same file with the `kdl` crate, on a generated layered pipeline.
# Prints both timings and the median ratio buildit/kdl from one hyperfine run.
#
# Usage: bench/validate-vs-kdl.sh [STAGES] [SHAPE]     (default: 10000 layered)
set -euo pipefail
cd "$(dirname "$0")/.."

stages="${1:-10000}"
shape="${2:-layered}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! command -v hyperfine >/dev/null; then
    echo "installing hyperfine (Debian package)" >&2
    apt-get install -y -qq hyperfine >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq hyperfine; }
fi

cargo build --release --locked -q -p buildit-cli -p buildit-benches
target="${CARGO_TARGET_DIR:-target}/release"
"$target/gen-pipeline" "$shape" "$stages" > "$work/buildit.kdl"
echo "pipeline: $stages stages ($shape), $(wc -c < "$work/buildit.kdl") bytes"

# Both must succeed on the file, or the comparison is meaningless.
"$target/buildit" validate "$work/buildit.kdl" >/dev/null
"$target/kdl-parse" "$work/buildit.kdl" >/dev/null

hyperfine --warmup 2 --runs 15 -N --export-json "$work/times.json" \
    -n buildit-validate "$target/buildit validate $work/buildit.kdl" \
    -n kdl-parse-only "$target/kdl-parse $work/buildit.kdl"

python3 - "$work/times.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
buildit, kdl = results["buildit-validate"]["median"], results["kdl-parse-only"]["median"]
print(f"median: buildit validate {buildit:.3f} s, kdl parse only {kdl:.3f} s, ratio buildit/kdl {buildit / kdl:.2f}")
PY
