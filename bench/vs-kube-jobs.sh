#!/usr/bin/env bash
# Per-stage overhead on Kubernetes: the same N stages (`true` in the local busybox image) through `buildit run
# -j1` with `executor "kubernetes"`, and through the `kube-loop` client (kube-rs directly: each Job created,
# waited for until complete, deleted in the background and waited for until its pod is gone, all mounting one
# volume claim), alternately, several times in one go, against one `buildit-kube-fake` (its pods run in the
# local Docker Engine); then the same with 2N stages. Prints the medians, the whole-run ratio at N, and the
# per-stage ratio: the time one more stage adds, (T(2N) - T(N)) / N, BuildIt's over the loop's (target: at most
# 1.10). What a run costs once (BuildIt's workspace: its claim, the pod that holds it, the copy of the
# workspace, and their removal) is the difference of the intercepts, printed too. Then what either left.
#
# Usage: bench/vs-kube-jobs.sh [STAGES] [ROUNDS]     (default: 10 5)
set -euo pipefail
cd "$(dirname "$0")/.."

stages="${1:-10}"
rounds="${2:-5}"
image="buildit-test/busybox:latest"
work="$(mktemp -d)"
fake_pid=""
cleanup() {
    if [[ -n "$fake_pid" ]]; then kill -TERM "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

scripts/build-test-image.sh
cargo build --release --locked -q -p buildit-cli -p buildit-kube-fake
cargo build --release --locked -q -p buildit-benches --bin kube-loop
target="$(pwd)/${CARGO_TARGET_DIR:-target}/release"
"$target/buildit-kube-fake" --kubeconfig "$work/kubeconfig" --namespace bench 2> "$work/fake.log" &
fake_pid=$!
for _ in $(seq 1 100); do
    [[ -s "$work/kubeconfig" ]] && grep -q "serving on" "$work/fake.log" 2>/dev/null && break
    sleep 0.1
done
mkdir -p "$work/repo"
printf 'executor "local"\nexecutor "kubernetes" { kubeconfig "%s"; namespace "bench"; }\n' "$work/kubeconfig" \
    > "$work/repo/buildit-system.kdl"

# Medians of both at COUNT stages, as "BUILDIT LOOP" seconds.
measure() {
    local count="$1"
    {
        echo 'pipeline "on-kubernetes"'
        for i in $(seq 1 "$count"); do
            echo "stage \"s$i\" { executor \"kubernetes\"; image \"$image\"; run \"true\" }"
        done
    } > "$work/repo/buildit.kdl"
    (cd "$work/repo" && python3 "$OLDPWD/bench/alternate.py" "$rounds" buildit kube-loop \
        -- "$target/buildit" run -j1 --plain \
        -- "$target/kube-loop" "$work/kubeconfig" bench "$count" "$image") | tee "$work/medians-$count" >&2
    awk '$2 == "median" { printf "%s ", $3 } END { print "" }' "$work/medians-$count"
}

echo "Kubernetes stages running \`true\`, $stages and $((2 * stages)) of them, $rounds rounds each, on buildit-kube-fake"
read -r buildit_n loop_n < <(measure "$stages")
read -r buildit_2n loop_2n < <(measure "$((2 * stages))")
python3 - "$stages" "$buildit_n" "$loop_n" "$buildit_2n" "$loop_2n" <<'PY'
import sys
n = int(sys.argv[1])
b1, l1, b2, l2 = map(float, sys.argv[2:])
bs, ls = (b2 - b1) / n, (l2 - l1) / n
print(f"whole run at {n} stages: buildit {b1:.3f} s, kube-loop {l1:.3f} s, ratio {b1 / l1:.2f}")
print(f"per stage: buildit {bs * 1000:.0f} ms, kube-loop {ls * 1000:.0f} ms, ratio {bs / ls:.2f}")
print(f"once per run (intercepts): buildit {(b1 - n * bs):.3f} s, kube-loop {(l1 - n * ls):.3f} s")
PY
left="$(kubectl --kubeconfig "$work/kubeconfig" get jobs,pods,secrets,pvc -A -l buildit.run -o name 2>/dev/null | wc -l || true)"
echo "objects labelled buildit.run left: $left"
