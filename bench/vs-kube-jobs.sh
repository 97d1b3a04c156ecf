#!/usr/bin/env bash
# Per-stage overhead on Kubernetes: the same N stages (`true` in the local busybox image) through `buildit run
# -j1` with `executor "kubernetes"`, and through the `kube-loop` client (kube-rs directly: each Job created,
# waited for until complete, deleted in the background and waited for until its pod is gone), alternately,
# several times in one go, against one `buildit-kube-fake` (its pods run in the local Docker Engine). Prints the
# median ratio (target: at most 1.10) and what either left on the cluster.
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
{
    echo 'pipeline "on-kubernetes"'
    for i in $(seq 1 "$stages"); do
        echo "stage \"s$i\" { executor \"kubernetes\"; image \"$image\"; run \"true\" }"
    done
} > "$work/repo/buildit.kdl"
printf 'executor "local"\nexecutor "kubernetes" { kubeconfig "%s"; namespace "bench"; }\n' "$work/kubeconfig" \
    > "$work/repo/buildit-system.kdl"
echo "$stages Kubernetes stages running \`true\`, $rounds rounds, on buildit-kube-fake"

(cd "$work/repo" && python3 "$OLDPWD/bench/alternate.py" "$rounds" buildit kube-loop \
    -- "$target/buildit" run -j1 --plain \
    -- "$target/kube-loop" "$work/kubeconfig" bench "$stages" "$image")
left="$(kubectl --kubeconfig "$work/kubeconfig" get jobs,pods,secrets -A -l buildit.run -o name 2>/dev/null | wc -l || true)"
echo "objects labelled buildit.run left: $left"
