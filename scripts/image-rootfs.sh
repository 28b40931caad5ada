#!/usr/bin/env bash
# The root filesystem of the geometra-sidecar image, from a built binary:
#
#   scripts/image-rootfs.sh BINARY OUTDIR
#
# OUTDIR gets exactly: the binary, stripped, at /usr/local/bin/geometra-sidecar;
# for a dynamically linked binary, the shared libraries it loads (as `ldd`
# names them, at the same paths: the C library, libgcc_s, the dynamic
# loader), for a static one (scripts/image-binary.sh, what the image ships)
# none; the system's CA bundle at /etc/ssl/certs/ca-certificates.crt (TLS to
# downstreams); /etc/nsswitch.conf (host names from /etc/hosts, then DNS:
# the two NSS modules glibc has built in); /etc/passwd and /etc/group naming
# the non-root user 65532 ("nonroot", as distroless calls it); an empty
# /tmp. Nothing else: no shell, no package manager.
#
# Both image builds use it: scripts/image.sh on this machine (no registry)
# and the Dockerfile's build stage, so the two images hold the same files
# (tests/python/pod/test_image.py checks it).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY OUTDIR" >&2
  exit 2
fi
bin=$1
out=$2
ca=/etc/ssl/certs/ca-certificates.crt
[ -x "$bin" ] || { echo "$0: $bin: no executable binary" >&2; exit 1; }
[ -s "$ca" ] || { echo "$0: $ca missing (apt-get install ca-certificates)" >&2; exit 1; }
[ ! -e "$out" ] || [ -z "$(ls -A "$out")" ] || { echo "$0: $out is not empty" >&2; exit 1; }

mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
strip --strip-all -o "$out/usr/local/bin/geometra-sidecar" "$bin"
chmod 0755 "$out/usr/local/bin/geometra-sidecar"

# A binary with a program interpreter (PT_INTERP) is dynamically linked:
# ldd prints "name => /path (addr)" for each library and "/path (addr)" for
# the loader; linux-vdso has no file. Each is copied with its real contents
# at the path the binary asks for (cp -L follows the Debian symlinks). A
# static binary (no interpreter) needs none.
libs=
if readelf --program-headers "$bin" | grep -q 'Requesting program interpreter'; then
  libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  [ -n "$libs" ] || { echo "$0: ldd names no libraries for the dynamic binary $bin" >&2; exit 1; }
fi
for lib in $libs; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
  chmod 0755 "$out$lib"
done

cp -L "$ca" "$out$ca"
chmod 0644 "$out$ca"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/nsswitch.conf"
