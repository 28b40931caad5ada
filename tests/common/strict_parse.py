"""Parses a /metrics body from stdin with prometheus_client's parser of the
format named by argv[1] ("text" or "openmetrics"); exits non-zero with the
parser's error when it refuses the input."""
import sys

fmt = sys.argv[1]
text = sys.stdin.read()
if fmt == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
try:
    for _family in text_string_to_metric_families(text):
        pass
except Exception as e:  # noqa: BLE001 - any refusal is the answer
    print(f"{type(e).__name__}: {e}"[:2000], file=sys.stderr)
    sys.exit(1)
