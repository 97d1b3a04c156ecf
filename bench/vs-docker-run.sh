#!/usr/bin/env bash
# Per-container overhead: the same N stages (`true` in the local busybox image) through `buildit run -j1` and
# through a shell loop of `docker run --rm`, alternately, several times in one go. Prints the median ratio.
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

python3 - "$buildit" "$work" "$rounds" <<'PY'
import statistics, subprocess, sys, time
buildit, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
commands = {
    "buildit run -j1": [buildit, "run", "-j1", "--plain", "--workspace", work, f"{work}/buildit.kdl"],
    "docker run loop": ["sh", f"{work}/loop.sh"],
}
times = {name: [] for name in commands}
for _ in range(rounds):
    for name, command in commands.items():  # alternately, so that both see the same machine state
        started = time.perf_counter()
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"{name} failed: {result.stderr.decode()[-2000:]}")
        times[name].append(elapsed)
medians = {name: statistics.median(values) for name, values in times.items()}
for name, median in medians.items():
    print(f"{name:16} median {median:.3f} s over {rounds} runs")
print(f"ratio buildit/docker-run (medians): {medians['buildit run -j1'] / medians['docker run loop']:.2f}")
PY
leftovers="$(docker ps -aq --filter label=buildit.run | wc -l)"
echo "containers labelled buildit.run left: $leftovers"
