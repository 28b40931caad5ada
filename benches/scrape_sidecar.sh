#!/usr/bin/env bash
# A scrape's cost in a real sidecar, two binaries interleaved: each round
# starts BEFORE then AFTER with 100k pass-through series (10 metrics, half
# counters, half 10-bucket histograms, sent over OTLP/HTTP by
# benches/scrape_load.py), scrapes it N times per format with curl, and
# prints per scrape the sidecar's user and system CPU (10 ms ticks) and
# minor faults from /proc/PID/stat, and its peak RSS (VmHWM). Stops only
# the sidecars it started, by pid.
#
#   N=20 ROUNDS=3 benches/scrape_sidecar.sh BEFORE_BINARY AFTER_BINARY
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BINARY AFTER_BINARY" >&2; exit 2; }
cd "$(dirname "$0")/.."
N=${N:-20}; ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d); pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
printf 'store:\n  max_series: 200000\n  max_series_bytes: 1073741824\n  max_series_per_metric: 10000\n' >"$dir/cfg.yaml"
declare -A accept=(
  [text]="text/plain; version=0.0.4"
  [openmetrics]="application/openmetrics-text; version=1.0.0"
  [protobuf]="application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)
stat() { awk '{print $10, $14, $15}' "/proc/$1/stat"; }
status() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
for round in $(seq "$ROUNDS"); do
  for which in before after; do
    bin=$1; [ $which = after ] && bin=$2
    setsid "$bin" --config "$dir/cfg.yaml" --otlp-grpc-listen 127.0.0.1:47317 \
      --otlp-http-listen 127.0.0.1:47318 --metrics-listen 127.0.0.1:47464 >"$dir/$which.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:47464/readyz >/dev/null && break; sleep 0.1; done
    .venv/bin/python benches/scrape_load.py 47318
    curl -s -o /dev/null http://127.0.0.1:47464/metrics
    hwm0=$(status $pid VmHWM)
    for fmt in text openmetrics protobuf; do
      read -r f0 u0 s0 < <(stat $pid); t0=$(date +%s%N)
      for _ in $(seq "$N"); do curl -s -o /dev/null -H "Accept: ${accept[$fmt]}" http://127.0.0.1:47464/metrics; done
      t1=$(date +%s%N); read -r f1 u1 s1 < <(stat $pid)
      size=$(curl -s -H "Accept: ${accept[$fmt]}" http://127.0.0.1:47464/metrics | wc -c)
      echo "round $round $which $fmt: wall $(( (t1-t0)/N/1000000 )) ms, user $(( (u1-u0)*10/N )) ms," \
        "sys $(( (s1-s0)*10/N )) ms, minflt $(( (f1-f0)/N )) a scrape, body $size B, load $(cut -d' ' -f1 /proc/loadavg)"
    done
    echo "round $round $which: peak RSS after load + 1 scrape ${hwm0} KiB, after all scrapes $(status $pid VmHWM) KiB"
    kill $pid; wait $pid 2>/dev/null || true; pid=
  done
done
