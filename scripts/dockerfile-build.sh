#!/usr/bin/env bash
# Builds the Dockerfile itself, with podman, where no container registry is
# reachable (crates.io must be): the build stage's base image is made here
# and tagged with the name the Dockerfile's FROM asks for, then
# `podman build --pull=never` runs the Dockerfile as a user's builder would.
#
#   scripts/dockerfile-build.sh        -> localhost/geometra-sidecar:dockerfile
#
# The base, docker.io/library/rust:<RUST_VERSION>-bookworm: a Debian
# bookworm minbase root filesystem with gcc, libc6-dev, binutils, make and
# ca-certificates (debootstrap from the apt mirror, cached in
# target/images/bookworm-build), the host's CA bundle, and this machine's
# Rust toolchain (its bin/, lib/ and libexec/, no documentation) on PATH; rustc's version must
# be the Dockerfile's RUST_VERSION. It stands in for the official image,
# which has the same Debian release and the same toolchain. It is not
# removed at the end (it is 0.9 GB; `podman rmi` it by name).
#
# Not part of scripts/test.sh: the Dockerfile's build is a cold build of
# the `image` profile inside the container (601 s on a 2-core machine at
# load average 5, crates downloaded from crates.io; docs/deployment.md). tests/python/pod/test_image.py checks, without building, that
# the Dockerfile and scripts/image.sh make the same image.
#
# Needs: podman, runc, debootstrap (root), the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/scripts/podman/containers.conf}
work=$root/target/images
mkdir -p "$work"

want=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)
have=$(rustc --version | awk '{ print $2 }')
case $have in
  "$want" | "$want".*) ;;
  *) echo "$0: the Dockerfile asks for Rust $want, this machine has rustc $have" >&2; exit 1 ;;
esac
base=docker.io/library/rust:$want-bookworm

fs=$work/bookworm-build
if [ ! -x "$fs/usr/bin/gcc" ]; then
  mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "== debootstrap bookworm minbase + gcc, libc6-dev, binutils, make, ca-certificates"
  rm -rf "$fs.tmp"
  debootstrap --variant=minbase --include=gcc,libc6-dev,binutils,ca-certificates,make bookworm "$fs.tmp" \
    "${mirror:-http://deb.debian.org/debian}"
  rm -rf "$fs.tmp"/var/cache/apt/archives/*.deb "$fs.tmp"/var/lib/apt/lists/*
  mv "$fs.tmp" "$fs"
fi

ctx=$work/rust-base
rm -rf "$ctx"
mkdir -p "$ctx/rootfs" "$ctx/rust"
sysroot=$(rustc --print sysroot)
cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
[ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$ctx/rust/"
# the host's CA bundle, so that cargo in the build reaches crates.io as the
# host does (through a TLS-inspecting proxy, where the host trusts its CA)
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
cat >"$ctx/Containerfile" <<EOT
FROM scratch
COPY rootfs/ /
COPY rust/ /usr/local/rust/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOT
echo "== podman build $base (rust $have on the bookworm rootfs)"
mount --bind "$fs" "$ctx/rootfs" 2>/dev/null || { rmdir "$ctx/rootfs"; cp -a "$fs" "$ctx/rootfs"; }
rc=0
podman rmi --ignore "$base" >/dev/null 2>&1 || true
podman build --quiet --layers=false --tag "$base" "$ctx" >/dev/null || rc=$?
mountpoint -q "$ctx/rootfs" && umount "$ctx/rootfs"
rm -rf "$ctx"
[ $rc = 0 ] || exit $rc

echo "== podman build --pull=never -f Dockerfile (the build stage compiles the image profile)"
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
start=$(date +%s)
podman rmi --ignore localhost/geometra-sidecar:dockerfile >/dev/null 2>&1 || true
podman build --pull=never --layers=false --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --tag localhost/geometra-sidecar:dockerfile .
echo "== built in $(( $(date +%s) - start ))s"
podman run --rm localhost/geometra-sidecar:dockerfile --version
podman image ls --filter reference=localhost/geometra-sidecar:dockerfile --format '{{.Repository}}:{{.Tag}} {{.Size}}'
