#!/usr/bin/env bash
# Per-container overhead: the same N stages (`true` in the local busybox image) through `buildit run -j1` and
# through a shell loop of `docker run --rm`, alternately, several times in one go. Prints the median ratio.
# BuildIt runs with its default workspace (a volume for the run, the workspace copied in once); add `--bind`
# through BUILDIT_BENCH_ARGS to measure bind mounts.
#
# Usage: bench/vs-docker-run.sh [STAGES] [ROUNDS]     (default: 20 5)
set -euo pipefail
cd "$(dirname "$0")/.."

stages="${1:-20}"
rounds="${2:-5}"
image="buildit-test/busybox:latest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

scripts/build-test-image.sh
cargo build --release --locked -q -p buildit-cli
buildit="$(pwd)/${CARGO_TARGET_DIR:-target}/release/buildit"
{
    echo 'pipeline "containers"'
    for i in $(seq 1 "$stages"); do
        echo "stage \"s$i\" { image \"$image\"; run \"true\" }"
    done
} > "$work/buildit.kdl"
cat > "$work/loop.sh" <<LOOP
for i in \$(seq 1 $stages); do docker run --rm $image true; done
LOOP
echo "$stages containers running \`true\`, $rounds rounds; docker $(docker version --format '{{.Server.Version}}')"

python3 bench/alternate.py "$rounds" buildit docker-run \
    -- "$buildit" run -j1 --plain ${BUILDIT_BENCH_ARGS:-} --workspace "$work" "$work/buildit.kdl" \
    -- sh "$work/loop.sh"
leftovers="$(docker ps -aq --filter label=buildit.run | wc -l)"
volumes="$(docker volume ls -q --filter label=buildit.run | wc -l)"
echo "containers labelled buildit.run left: $leftovers; volumes: $volumes"
