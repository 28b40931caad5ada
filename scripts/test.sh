#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (Debian's prometheus/promtool and alertmanager/amtool, a Python venv with
# tests/requirements.txt), builds once in release (and the image's static
# binary, scripts/image-binary.sh), runs the Rust unit and integration
# tests, then the Python suites (Helm chart, monitoring assets, end-to-end
# against a real Prometheus, the fleet of three sidecar pods, the examples/
# clients against the sidecar: their node packages with `npm ci`, the page
# in Debian's chromium; the container images and the chart's pod under
# podman, tests/python/pod).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# tests/suite/proto.rs: Prometheus' client_model metrics.proto (the exposition's
# official field numbers)
[ -f /usr/share/gocode/src/github.com/prometheus/client_model/io/prometheus/client/metrics.proto ] \
  || need_apt+=(golang-github-prometheus-client-model-dev)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# fault tests: chattr +i makes a queue directory unwritable even for root,
# prlimit takes file descriptors away from a running sidecar
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
# tests/suite/loopback.rs: a network namespace whose loopback has no IPv6 (unshare,
# ip, sysctl); tests/suite/cli.rs: a pty from `script`. These tests fail without
# them (GEOMETRA_TEST_ALLOW_SKIP=1 lets them skip on a developer machine).
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
command -v script >/dev/null 2>&1 || need_apt+=(bsdutils)
# examples/ clients: the Node front end and the browser page (headless chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# tests/python/pod: the images (scripts/image.sh, no registry: podman builds
# FROM scratch, the example's root filesystem comes from debootstrap) and the
# pods (podman kube play; runc as the runtime, catatonit as the pods' pause
# process); strip, nm and readelf for the sidecar's binary, CA bundle for the image
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
command -v catatonit >/dev/null 2>&1 || need_apt+=(catatonit)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages would start their daemons; the tests start their own. Debian's
  # policy-rc.d hook (exit 101: "action forbidden") keeps the maintainer
  # scripts from starting anything, so there is nothing to stop afterwards.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  if [ $had_policy = 0 ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; fi
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ $had_policy = 0 ]; then rm -f "$policy"; fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt \
  -r examples/python-fastapi/requirements.txt

# the examples' node packages, exactly as their lockfiles pin them
for ex in examples/node-frontend examples/browser; do
  echo "== npm ci ($ex)"
  (cd "$ex" && npm ci --no-audit --no-fund --loglevel=error)
done

echo "== structure (scripts/check-structure.py)"
python3 scripts/check-structure.py
echo "== function length (scripts/fn-length.py)"
python3 scripts/fn-length.py

echo "== cargo build --release"
cargo build --release --locked --all-targets
echo "== cargo test --release"
cargo test --release --locked --no-fail-fast

# the container image's binary (Cargo.toml's `image` profile, glibc linked
# statically): what tests/python/pod and the fleet test run in their pods
echo "== scripts/image-binary.sh"
scripts/image-binary.sh >/dev/null

echo "== pytest"
export GEOMETRA_SIDECAR_BIN="$root/target/release/geometra-sidecar"
# podman's engine settings for an unprivileged CI container (tests/python/pod)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/scripts/podman/containers.conf}"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/python
