#!/usr/bin/env bash
# End-to-end profile of the sidecar under the shared load generator: the
# release build with line tables (`--profile profiling`) runs under callgrind,
# loadgen sends traces then logs (512 items a request, 8 streams) over
# OTLP/gRPC, and the instructions of each signal's phase (counters zeroed
# before, dumped after) are split into transport, walk, rules, store,
# receiver, runtime, allocator, other by benches/profile_split.py. User-space
# instructions only (callgrind sees no kernel); deterministic per request up
# to the number of requests that share a connection read.
#
#   benches/profile.sh [-s SECONDS] [-c CONCURRENCY] [-- SIDECAR_BINARY [ARGS...]]
#
# SECONDS (default 20) of loadgen per signal: under callgrind the sidecar runs
# about 50x slower, so 20 s is a few dozen requests.
set -euo pipefail
secs=20; conc=8
while [ $# -gt 0 ]; do
  case "$1" in
    -s) secs=$2; shift 2;;
    -c) conc=$2; shift 2;;
    --) shift; break;;
    *) echo "usage: $0 [-s SECONDS] [-c CONCURRENCY] [-- BINARY [ARGS...]]" >&2; exit 2;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
if [ $# -eq 0 ]; then
  cargo build -q --profile profiling --bin geometra-sidecar
  set -- target/profiling/geometra-sidecar
fi
tools=${GEOMETRA_TOOLS:-$repo/../../shared/tools}
[ -d "$tools/loadgen" ] || tools=/work/shared/tools
cache=${GEOMETRA_BENCH_CACHE:-/tmp/geometra-bench}
cargo build -q --release --locked --manifest-path "$tools/loadgen/Cargo.toml" --target-dir "$cache/target"
lg="$cache/target/release/loadgen"
port=${PROFILE_PORT:-34317}
out=${PROFILE_OUT:-$(mktemp -d)}
mkdir -p "$out"
valgrind --tool=callgrind --separate-callers=12 --callgrind-out-file="$out/callgrind.out" "$@" \
  --otlp-grpc-listen "127.0.0.1:$port" --otlp-http-listen "127.0.0.1:$((port + 1))" \
  --metrics-listen "127.0.0.1:$((port + 2))" >"$out/sidecar.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
up=0
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[ "$up" = 1 ] || { echo "nothing listens on 127.0.0.1:$port" >&2; cat "$out/sidecar.log" >&2; exit 1; }
n=0
for sig in traces logs; do
  callgrind_control -z "$pid" >/dev/null
  res=$(taskset -c 0 "$lg" --endpoint "http://127.0.0.1:$port" --seconds "$secs" --concurrency "$conc" --signal "$sig")
  callgrind_control -d "$sig" "$pid" >/dev/null
  n=$((n + 1))
  items=$(sed -n 's/.* items=\([0-9]*\).*/\1/p' <<<"$res")
  echo "== $sig: $res"
  echo "   requests: $((items / 512))"
  dump=$(ls -t "$out"/callgrind.out* | head -1)
  python3 "$repo/benches/profile_split.py" "$dump" "$((items / 512))"
done
kill "$pid"; wait "$pid" 2>/dev/null || true
trap - EXIT
echo "profiles in $out"
