#!/usr/bin/env bash
# The container image's binary: the `image` profile of Cargo.toml (the release
# build with fat LTO and one codegen unit) linked statically against glibc
# (`-C target-feature=+crt-static`, a static PIE), so the image needs no
# shared object at all. Prints the binary's path on stdout.
#
#   scripts/image-binary.sh
#
# The flag is given for the host's target only (CARGO_TARGET_<TRIPLE>_RUSTFLAGS
# with an explicit --target): build scripts and proc macros stay dynamic, as
# they must. The output lands in target/<triple>/image/, apart from the
# release build the tests and benchmarks use, which this leaves untouched.
#
# Name resolution in a static glibc: glibc 2.34 and later have the `files`
# and `dns` NSS modules built in, and the image's /etc/nsswitch.conf names
# only those two (scripts/image-rootfs.sh), so getaddrinfo never tries to
# load a module. The pod test forwards to its sink by a host name.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
case $triple in
  *-linux-gnu) ;;
  *) echo "$0: a static glibc build needs a *-linux-gnu host, not $triple" >&2; exit 1 ;;
esac
var=CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
# RUSTFLAGS would replace the per-target flags: not inherited here
env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS "$var=-C target-feature=+crt-static" \
  cargo build --profile image --locked --target "$triple" --bin geometra-sidecar >&2
echo "${CARGO_TARGET_DIR:-target}/$triple/image/geometra-sidecar"
