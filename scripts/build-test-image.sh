#!/usr/bin/env bash
# Builds `buildit-test/busybox:latest` locally, with no registry: `FROM scratch` plus Debian's static busybox and
# a link for each applet (`sh`, `echo`, `sleep`, `cat`, ...). The Docker tests, examples and benchmarks use it.
# Does nothing if the image exists (pass --force to rebuild).
set -euo pipefail

image="buildit-test/busybox:latest"
if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
busybox="$(dpkg -L busybox-static | grep -E '/busybox$' | head -n 1)"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/root/bin" "$context/root/tmp" "$context/root/workspace"
cp "$busybox" "$context/root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$context/root/bin/$applet"
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
