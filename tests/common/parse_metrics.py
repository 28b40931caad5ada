"""Parses a Prometheus text exposition from stdin with prometheus_client's
parser and prints its samples as JSON [[name, labels, value], ...]."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

rows = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        v = s.value
        rows.append([s.name, s.labels, v if math.isfinite(v) else None])
json.dump(rows, sys.stdout)
