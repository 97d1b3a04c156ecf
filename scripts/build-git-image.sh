#!/usr/bin/env bash
# Builds `buildit-test/git:latest` locally, with no registry: the test image's busybox plus this machine's `git`
# and the shared libraries it links. The Kubernetes tests use it as `git-image`, the image that checks a run's
# commit out into its workspace on the cluster. Does nothing if the image exists (pass --force to rebuild).
set -euo pipefail

image="buildit-test/git:latest"
if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
git="$(readlink -f "$(command -v git)")"
busybox="$(dpkg -L busybox-static | grep -E '/busybox$' | head -n 1)"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/root/bin" "$context/root/tmp" "$context/root/workspace"
cp "$busybox" "$context/root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$context/root/bin/$applet"
done
# git itself, where PATH finds it (git runs its helpers, `git index-pack`, through PATH), and the libraries
# and loader it links, at the same paths.
cp "$git" "$context/root/bin/git"
for library in $(ldd "$git" | grep -oE '/[^ ]+'); do
    mkdir -p "$context/root$(dirname "$library")"
    cp -L "$library" "$context/root$library"
done
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root/ /
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
if ! docker build --quiet --tag "$image" "$context" >"$context/build.log" 2>&1; then
    cat "$context/build.log" >&2
    exit 1
fi
echo "built $image"
