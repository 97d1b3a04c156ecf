#!/usr/bin/env bash
# Builds `buildit-test/git:latest` locally, with no registry: the test image (`scripts/build-test-image.sh`) plus
# this machine's `git` and the shared libraries it links. The Kubernetes tests use it as `git-image`, the image
# that checks a run's commit out into its workspace on the cluster. Does nothing if the image exists (pass
# --force to rebuild).
set -euo pipefail
cd "$(dirname "$0")"

image="buildit-test/git:latest"
if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
./build-test-image.sh
git="$(readlink -f "$(command -v git)")"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
# git itself, where PATH finds it (git runs its helpers, `git index-pack`, through PATH), and the libraries
# and loader it links, at the same paths.
mkdir -p "$context/root/bin"
cp "$git" "$context/root/bin/git"
for library in $(ldd "$git" | grep -oE '/[^ ]+'); do
    mkdir -p "$context/root$(dirname "$library")"
    cp -L "$library" "$context/root$library"
done
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM buildit-test/busybox:latest
COPY root/ /
DOCKERFILE
if ! docker build --quiet --tag "$image" "$context" >"$context/build.log" 2>&1; then
    cat "$context/build.log" >&2
    exit 1
fi
echo "built $image"
