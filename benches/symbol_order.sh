#!/usr/bin/env bash
# Regenerates link/symbol-order.txt: the functions of the release binary that
# run at start-up, under traces and logs (the latency client's 512-item
# requests on 8 streams, /metrics scraped meanwhile), on the other scrape
# formats, OTLP/HTTP and SIGTERM, recorded by callgrind, hottest first.
# build.rs hands the list to lld (--symbol-ordering-file), which lays those
# functions out together: the kernel maps .text in 64 KiB windows around each
# fault, so code that runs packed together keeps the cold rest unmapped.
#
#   benches/symbol_order.sh        (then rebuild: cargo build --release)
#
# Symbol names carry a hash of the crate, its version, features and the
# profile: rerun after a change of Cargo.lock, Cargo.toml's profiles or the
# toolchain, when many functions change, or after a change to the receive
# path (a small one renamed hot symbols and cost 2 MiB of RSS: BENCHMARKS.md,
# "compare-rotel on the final tree"). A stale list is never wrong,
# only less effective (BENCHMARKS.md, "Issue 12: memory" has the check).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
port=${ORDER_PORT:-36317}
out=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$out"' EXIT

run() { # callgrind the release binary through one session, into $out/cg.$1
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$out/cg.$1" \
    target/release/geometra-sidecar --otlp-grpc-listen "localhost:$port" \
    --otlp-http-listen "localhost:$((port + 1))" --metrics-listen "127.0.0.1:$((port + 2))" \
    >"$out/log" 2>&1 &
  pid=$!
  local m="http://127.0.0.1:$((port + 2))" h="http://127.0.0.1:$((port + 1))"
  for _ in $(seq 300); do curl -sf "$m/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "$m/readyz" >/dev/null || { echo "the sidecar did not get ready" >&2; cat "$out/log" >&2; exit 1; }
  local client=(target/release/examples/otlp_latency --endpoint "http://127.0.0.1:$port" --concurrency 8 --seconds 3)
  "${client[@]}" --signal traces --scrape "$m/metrics" >/dev/null
  "${client[@]}" --signal logs >/dev/null
  curl -sf -H 'Accept: application/openmetrics-text; version=1.0.0' "$m/metrics" >/dev/null
  curl -sf -H 'Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited' "$m/metrics" >/dev/null
  curl -sf "$m/healthz" >/dev/null
  curl -sf -H 'Content-Type: application/json' "$h/v1/traces" \
    -d '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /x","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"http.route","value":{"stringValue":"/x"}}]}]}]}]}' >/dev/null
  curl -sf -H 'Content-Type: application/json' "$h/v1/logs" \
    -d '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"memory_operation"}}]}]}]}' >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  pid=
}

# A build with examples, tests or benches unifies the dev-dependencies'
# features into the shared dependencies, which changes their symbol hashes:
# that binary (scripts/test.sh's) and the plain one (`cargo build --release`,
# the Dockerfile's) are profiled both, the plain one last so that it is the
# one left in target/release.
cargo build -q --release --bin geometra-sidecar --example otlp_latency
run with-dev-deps
cargo build -q --release --bin geometra-sidecar
run plain
python3 benches/symbol_order.py geometra-sidecar "$out"/cg.* >link/symbol-order.txt
echo "link/symbol-order.txt: $(wc -l <link/symbol-order.txt) functions"
