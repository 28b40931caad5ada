#!/usr/bin/env bash
# Where a forwarded log record's CPU goes: the sidecar forwarding logs to a
# counting sink (a second sidecar), under the shared load generator (512
# records a request, 8 streams, OTLP/gRPC).
#
#   benches/profile_forward.sh [-s SECONDS] [-q QUEUE_DIR] [-m callgrind|cpu|perf] [-- BINARY [ARGS...]]
#
# callgrind (default): user-space instructions of the whole run (load and
# drain), split by benches/profile_split.py into transport, walk, validate,
# rules, store, queue, disk, send, receiver, runtime, allocator, other.
# Deterministic per record up to how requests share reads and batches.
# cpu: the sidecar at full speed, its user and system CPU time from the
# start of the load until the sink has every record (/proc/<pid>/stat; the
# kernel side callgrind does not see), and delivered records per CPU-second.
# perf: the sidecar at full speed under `perf record -e cpu-clock -g` (a
# software event: works where the VM has no hardware counters), user and
# kernel alike; prints the shares of gzip, validation, the kernel, and the
# kernel's by system call (perf.data is kept in the output directory).
# The sink is the same binary on 127.0.0.1:35317, pinned to CPU 0 with the
# load generator; the sidecar runs on CPU 1.
set -euo pipefail
secs=10; qdir=""; mode=callgrind
while [ $# -gt 0 ]; do
  case "$1" in
    -s) secs=$2; shift 2;;
    -q) qdir=$2; shift 2;;
    -m) mode=$2; shift 2;;
    --) shift; break;;
    *) echo "usage: $0 [-s SECONDS] [-q QUEUE_DIR] [-m callgrind|cpu|perf] [-- BINARY [ARGS...]]" >&2; exit 2;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
if [ $# -eq 0 ]; then
  cargo build -q --release --bin geometra-sidecar
  set -- target/release/geometra-sidecar
fi
bin=$1
tools=${GEOMETRA_TOOLS:-$repo/../../shared/tools}
[ -d "$tools/loadgen" ] || tools=/work/shared/tools
cache=${GEOMETRA_BENCH_CACHE:-/tmp/geometra-bench}
cargo build -q --release --locked --manifest-path "$tools/loadgen/Cargo.toml" --target-dir "$cache/target"
lg="$cache/target/release/loadgen"
port=${PROFILE_PORT:-34317}
out=${PROFILE_OUT:-$(mktemp -d)}
mkdir -p "$out"
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
sink_count() { curl -s -m 2 http://127.0.0.1:35464/metrics 2>/dev/null |
  awk '/^otelcol_receiver_accepted_log_records_total/{s+=$NF} END{printf "%d\n", s+0}'; }
taskset -c 0 "$bin" --otlp-grpc-listen 127.0.0.1:35317 --otlp-http-listen off \
  --metrics-listen 127.0.0.1:35464 >"$out/sink.log" 2>&1 &
sink=$!
pid=""
trap 'kill $sink $pid 2>/dev/null || true' EXIT
wait_port 35317 || { echo "the sink did not start" >&2; cat "$out/sink.log" >&2; exit 1; }
args=(--otlp-grpc-listen "127.0.0.1:$port" --otlp-http-listen "127.0.0.1:$((port + 1))"
  --metrics-listen "127.0.0.1:$((port + 2))" --forward-logs-to http://127.0.0.1:35317)
[ -n "$qdir" ] && args+=(--queue-dir "$qdir")
case "$mode" in
  callgrind) taskset -c 1 valgrind --tool=callgrind --separate-callers=12 \
      --callgrind-out-file="$out/callgrind.out" "$@" "${args[@]}" >"$out/sidecar.log" 2>&1 & ;;
  cpu) taskset -c 1 "$@" "${args[@]}" >"$out/sidecar.log" 2>&1 & ;;
  perf) command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
    taskset -c 1 perf record -q -e cpu-clock -F 4000 -g -o "$out/perf.data" \
      "$@" "${args[@]}" >"$out/sidecar.log" 2>&1 & ;;
  *) echo "mode: callgrind, cpu or perf" >&2; exit 2;;
esac
pid=$!
wait_port "$port" || { echo "nothing listens on 127.0.0.1:$port" >&2; cat "$out/sidecar.log" >&2; exit 1; }
[ "$mode" = callgrind ] && callgrind_control -z "$pid" >/dev/null
ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; }
read -r u0 s0 < <(ticks)
res=$(taskset -c 0 "$lg" --endpoint "http://127.0.0.1:$port" --seconds "$secs" --signal logs)
acked=$(sed -n 's/.* items=\([0-9]*\).*/\1/p' <<<"$res")
got=0
for _ in $(seq 1200); do got=$(sink_count); [ "$got" -ge "$acked" ] && break; sleep 0.1; done
read -r u1 s1 < <(ticks)
echo "== $res"
echo "   acknowledged $acked, delivered $got"
if [ "$mode" = callgrind ]; then
  callgrind_control -d forward "$pid" >/dev/null
  dump=$(ls -t "$out"/callgrind.out* | head -1)
  python3 "$repo/benches/profile_split.py" "$dump" "$((got / 512))"
fi
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
kill "$sink"; wait "$sink" 2>/dev/null || true
trap - EXIT
if [ "$mode" = cpu ]; then
  awk -v g="$got" -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN{c=(u+s)/100;
    printf "user %.2f s, system %.2f s (%.0f%%), delivered per CPU-s %.0f\n", u/100, s/100, 100*s/(u+s), g/c}'
fi
# shares of a perf profile: gzip, validation, the kernel, and the kernel's
# system calls (time under each, children included)
perf_split() {
  local self children
  self=$(perf report -i "$1" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%')
  children=$(perf report -i "$1" --children --sort sym --stdio -g none 2>/dev/null | grep '%')
  share() { grep -E "$1" <<<"$self" | awk '{s+=$1} END{printf "%.1f%%", s}'; }
  # validation: the schema tables (derive/validate.rs); the walker's own
  # checks are inlined into the walk and not counted here
  echo "gzip $(share 'zlib_rs|crc32fast')  validation $(share 'derive::validate')  kernel $(share '\[k\]')"
  for c in vfs_writev __x64_sys_fdatasync __x64_sys_recvfrom __x64_sys_sendto __x64_sys_futex \
    __x64_sys_unlink __x64_sys_pread64 __x64_sys_openat __x64_sys_epoll_wait; do
    printf '  %s %s' "${c#__x64_sys_}" "$(grep -E "\[k\] $c\s*$" <<<"$children" | awk '{print $1; exit}')"
  done
  echo
}
if [ "$mode" = perf ]; then
  sleep 1
  perf_split "$out/perf.data"
fi
echo "profiles in $out"
