"""Exports SERVER spans with the OpenTelemetry Python SDK's own OTLP exporter
(HTTP or gRPC, with the compression asked for) and exits 0 only when the
exporter reports success.

usage: export_spans.py http|grpc ENDPOINT none|gzip|deflate ROUTE COUNT
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def exporter(protocol: str, endpoint: str, compression: str):
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        comp = {"none": Compression.NoCompression, "gzip": Compression.Gzip, "deflate": Compression.Deflate}
        return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", compression=comp[compression], timeout=10)
    from grpc import Compression
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    comp = {"none": Compression.NoCompression, "gzip": Compression.Gzip, "deflate": Compression.Deflate}
    return OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=comp[compression], timeout=10)


def main() -> int:
    protocol, endpoint, compression, route, count = sys.argv[1:6]
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "geometra-api"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tracer = tp.get_tracer("geometra.test")
    for _ in range(int(count)):
        with tracer.start_as_current_span("GET " + route, kind=SpanKind.SERVER) as s:
            s.set_attribute("http.request.method", "GET")
            s.set_attribute("http.route", route)
            s.set_attribute("http.response.status_code", 200)
    result = exporter(protocol, endpoint, compression).export(memory.get_finished_spans())
    print(result, file=sys.stderr)
    return 0 if result == SpanExportResult.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
