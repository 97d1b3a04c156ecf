#!/usr/bin/env bash
# Whole-process comparison of scheduling speed: the SAME layered DAG (N stages, width W, each stage needing 2-3
# stages of the layer before, command `true`) as a buildit.kdl and as a build.ninja, run with -j2 by
# `buildit run` and by ninja, alternately, several times in one go. Prints the median ratio buildit/ninja.
# JOBS is the acceptance's 2 by default; 1 shows the per-stage cost with no competition for the cores.
#
# Usage: bench/vs-ninja.sh [STAGES] [WIDTH] [ROUNDS] [JOBS]     (default: 1000 50 7 2)
set -euo pipefail
cd "$(dirname "$0")/.."

stages="${1:-1000}"
width="${2:-50}"
rounds="${3:-7}"
jobs="${4:-2}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The real ninja binary: a version manager's shim in front of it (pyenv) would add tens of milliseconds to every
# ninja run and flatter BuildIt.
ninja_bin() {
    python3 -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))' 2>/dev/null && return
    command -v ninja
}
if ! ninja_bin >/dev/null; then
    echo "installing ninja from PyPI" >&2
    python3 -m pip install --quiet ninja
fi
ninja="$(ninja_bin)"
ninja="$(readlink -f "$ninja")"

cargo build --release --locked -q -p buildit-cli -p buildit-benches
target="$(pwd)/${CARGO_TARGET_DIR:-target}/release"
mkdir -p "$work/buildit" "$work/ninja"
"$target/gen-pipeline" layered "$stages" true --width "$width" > "$work/buildit/buildit.kdl"
"$target/gen-pipeline" layered "$stages" true --width "$width" --ninja > "$work/ninja/build.ninja"
echo "graph: $stages stages, width $width, -j$jobs; ninja $("$ninja" --version) at $ninja"

# Every edge's output is missing, so every ninja run runs all.
# BuildIt runs in its workspace, as `buildit run` in a repository does (ninja changes into its directory with -C).
bench="$(pwd)/bench"
cd "$work/buildit"
python3 "$bench/alternate.py" "$rounds" buildit ninja \
    -- "$target/buildit" run "-j$jobs" --plain buildit.kdl \
    -- "$ninja" "-j$jobs" -C "$work/ninja"
