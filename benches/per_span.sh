#!/usr/bin/env bash
# Instructions per span (or log record), deterministic: the deriver on the
# hot-path bench's 512-item request (examples/per_span.rs) run 100 and 300
# times under callgrind; (Ir(300) - Ir(100)) / (200 * 512) is the cost of one
# item (walk, every default rule, apply to the store), start-up excluded.
# The walk validates the request as it goes (issue 24). PER_SPAN_VALIDATE=1
# adds a separate whole-request pass first (derive/validate.rs, what the
# receivers ran before issue 24 and still run for metrics): the difference
# is that pass's cost an item.
#
#   benches/per_span.sh [traces|logs|map_logs]...   (default: traces)
#   PER_SPAN_CONFIG=FILE benches/per_span.sh ...      (the deriver of that config)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
cargo build -q --profile profiling --example per_span
bin=target/profiling/examples/per_span
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ir() { # signal iterations -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$bin" "$1" "$2" ${PER_SPAN_VALIDATE:+validate} ${PER_SPAN_CONFIG:+"$PER_SPAN_CONFIG"} >/dev/null 2>&1
  awk '/^(summary|totals):/{print $2; exit}' "$out/cg.$1.$2"
}
[ $# -gt 0 ] || set -- traces
for sig in "$@"; do
  a=$(ir "$sig" 100); b=$(ir "$sig" 300)
  echo "$sig: Ir(100)=$a Ir(300)=$b instructions per item: $(( (b - a) / (200 * 512) ))"
done
