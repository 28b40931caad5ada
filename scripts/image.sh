#!/usr/bin/env bash
# Container images built with podman on a Debian machine that reaches no
# container registry (nothing is pulled: every image starts FROM scratch).
#
#   scripts/image.sh [sidecar|example|all]      (default: sidecar)
#
# sidecar  localhost/geometra-sidecar:dev. The image's static binary
#          (scripts/image-binary.sh, built here unless GEOMETRA_IMAGE_BIN
#          names a binary to use instead), laid out by
#          scripts/image-rootfs.sh exactly as the Dockerfile's build stage
#          does; the Containerfile is the Dockerfile's runtime stage itself
#          (its one `COPY --from=build /out/rootfs/ /` pointed at the tree
#          made here), so labels, ports, user and entrypoint are the
#          Dockerfile's.
# example  localhost/geometra-fastapi-example:dev: examples/python-fastapi on
#          a Debian bookworm minbase root filesystem with python3
#          (debootstrap from the apt mirror, cached in target/images/), its
#          pinned requirements installed from PyPI, user 65532, uvicorn on
#          0.0.0.0:8000. The pod test also runs its log sink on this image.
#
# podman's engine settings come from scripts/podman/containers.conf unless
# CONTAINERS_CONF names another file. Needs: podman, runc, debootstrap
# (example), ca-certificates, binutils (strip, readelf), python3 with pip (example).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/scripts/podman/containers.conf}
work=$root/target/images
mkdir -p "$work"

version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

build_sidecar() {
  local bin=${GEOMETRA_IMAGE_BIN:-}
  if [ -z "$bin" ]; then
    echo "== scripts/image-binary.sh (cargo build --profile image, static)"
    bin=$root/$(scripts/image-binary.sh)
  fi
  local ctx=$work/sidecar
  rm -rf "$ctx"
  mkdir -p "$ctx"
  scripts/image-rootfs.sh "$bin" "$ctx/rootfs"
  # the Dockerfile's runtime stage, its COPY of the build stage's tree
  # pointed at ours
  sed -n '/^FROM scratch AS runtime$/,$p' Dockerfile \
    | sed 's#^COPY --from=build /out/rootfs/ /$#COPY rootfs/ /#' >"$ctx/Containerfile"
  if ! grep -qx 'COPY rootfs/ /' "$ctx/Containerfile" || grep -q -- '--from=' "$ctx/Containerfile"; then
    echo "$0: the Dockerfile's runtime stage must start with 'FROM scratch AS runtime' and copy only" \
      "'COPY --from=build /out/rootfs/ /'" >&2
    exit 1
  fi
  echo "== podman build localhost/geometra-sidecar:dev"
  # the previous build goes (unless a container still uses it), not left dangling
  podman rmi --ignore localhost/geometra-sidecar:dev >/dev/null 2>&1 || true
  podman build --quiet --layers=false --no-cache --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --label org.opencontainers.image.created="$created" \
    --tag localhost/geometra-sidecar:dev "$ctx" >/dev/null
  podman run --rm localhost/geometra-sidecar:dev --version
}

# a Debian bookworm minbase with python3, made once and kept
python_rootfs() {
  local fs=$work/bookworm-python3
  if [ ! -x "$fs/usr/bin/python3" ]; then
    local mirror
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    echo "== debootstrap bookworm minbase + python3 (${mirror:-http://deb.debian.org/debian})" >&2
    rm -rf "$fs.tmp"
    debootstrap --variant=minbase --include=python3 bookworm "$fs.tmp" "${mirror:-http://deb.debian.org/debian}" >&2
    # the apt lists, package cache and documentation are not needed at run time
    rm -rf "$fs.tmp"/var/cache/apt/archives/*.deb "$fs.tmp"/var/lib/apt/lists/* \
      "$fs.tmp"/usr/share/doc "$fs.tmp"/usr/share/man "$fs.tmp"/usr/share/info "$fs.tmp"/usr/share/locale
    mv "$fs.tmp" "$fs"
  fi
  echo "$fs"
}

build_example() {
  local fs ctx py
  fs=$(python_rootfs)
  ctx=$work/example
  rm -rf "$ctx"
  mkdir -p "$ctx/app" "$ctx/site-packages"
  py=$("$fs/usr/bin/python3" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null \
    || chroot "$fs" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  # wheels for the rootfs' CPython and glibc (bookworm: 2.36), whatever python3 runs pip
  local platforms=(--platform linux_x86_64 --platform manylinux2014_x86_64)
  local v
  for v in $(seq 17 36); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
  echo "== pip install examples/python-fastapi/requirements.txt (CPython $py wheels)"
  local pip_py=python3
  [ -x .venv/bin/python ] && pip_py=.venv/bin/python
  "$pip_py" -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
    --python-version "$py" --implementation cp "${platforms[@]}" \
    --target "$ctx/site-packages" -r examples/python-fastapi/requirements.txt
  cp examples/python-fastapi/*.py "$ctx/app/"
  cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY site-packages/ /opt/geometra/site-packages/
COPY app/ /opt/geometra/app/
ENV PYTHONPATH=/opt/geometra/site-packages PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/geometra/app
LABEL org.opencontainers.image.title="geometra-fastapi-example" \\
      org.opencontainers.image.description="examples/python-fastapi of geometra-sidecar" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$revision" \\
      org.opencontainers.image.created="$created"
EXPOSE 8000
USER 65532:65532
ENTRYPOINT ["/usr/bin/python3", "-m", "uvicorn", "geometra_api:app", "--host", "0.0.0.0", "--port", "8000"]
EOF
  # the rootfs joins the context as a bind of the cached tree (no copy)
  mkdir -p "$ctx/rootfs"
  mount --bind "$fs" "$ctx/rootfs" 2>/dev/null || { rmdir "$ctx/rootfs"; cp -a "$fs" "$ctx/rootfs"; }
  echo "== podman build localhost/geometra-fastapi-example:dev"
  podman rmi --ignore localhost/geometra-fastapi-example:dev >/dev/null 2>&1 || true
  local rc=0
  podman build --quiet --layers=false --no-cache --tag localhost/geometra-fastapi-example:dev "$ctx" >/dev/null || rc=$?
  mountpoint -q "$ctx/rootfs" && umount "$ctx/rootfs"
  [ $rc = 0 ] || exit $rc
  podman run --rm --entrypoint /usr/bin/python3 localhost/geometra-fastapi-example:dev \
    -c 'import fastapi, grpc, opentelemetry.sdk; print("fastapi", fastapi.__version__)'
}

what=${1:-sidecar}
case $what in
  sidecar) build_sidecar ;;
  example) build_example ;;
  all) build_sidecar; build_example ;;
  *) echo "usage: $0 [sidecar|example|all]" >&2; exit 2 ;;
esac
podman image ls --filter reference='localhost/geometra-*' --format '{{.Repository}}:{{.Tag}} {{.Size}}'
