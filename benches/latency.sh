#!/usr/bin/env bash
# Tail latency under full load: the release sidecar pinned to CPU 1, the
# latency client (examples/otlp_latency.rs) on CPU 0 sending the 512-item
# request on 8 streams as fast as answered, without and then with a scrape
# of /metrics running back to back beside it. Prints p50/p90/p99/p99.9/max
# of the time from sending a request to its answer, and of the scrapes.
#
#   benches/latency.sh [-s SECONDS] [-c CONCURRENCY] [-- SIDECAR_BINARY]
set -euo pipefail
secs=10; conc=8
while [ $# -gt 0 ]; do
  case "$1" in
    -s) secs=$2; shift 2;;
    -c) conc=$2; shift 2;;
    --) shift; break;;
    *) echo "usage: $0 [-s SECONDS] [-c CONCURRENCY] [-- BINARY]" >&2; exit 2;;
  esac
done
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
cargo build -q --release --example otlp_latency
if [ $# -eq 0 ]; then
  cargo build -q --release --bin geometra-sidecar
  set -- target/release/geometra-sidecar
fi
port=${LATENCY_PORT:-35317}
log=$(mktemp)
taskset -c 1 "$@" --otlp-grpc-listen "127.0.0.1:$port" --otlp-http-listen "127.0.0.1:$((port + 1))" \
  --metrics-listen "127.0.0.1:$((port + 2))" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
up=0
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[ "$up" = 1 ] || { echo "nothing listens on 127.0.0.1:$port" >&2; cat "$log" >&2; exit 1; }
client=(taskset -c 0 target/release/examples/otlp_latency --endpoint "http://127.0.0.1:$port"
  --concurrency "$conc" --seconds "$secs")
for sig in traces logs; do
  echo "== $sig, no scrape";   "${client[@]}" --signal "$sig"
  echo "== $sig, scraping";    "${client[@]}" --signal "$sig" --scrape "http://127.0.0.1:$((port + 2))/metrics"
done
