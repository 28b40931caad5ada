"""OpenTelemetry set-up of the example API: traces, logs and metrics over OTLP/gRPC to the sidecar.

Everything the SDK reads from the environment applies (OTEL_EXPORTER_OTLP_ENDPOINT,
default http://localhost:4317; OTEL_EXPORTER_OTLP_COMPRESSION; OTEL_METRIC_EXPORT_INTERVAL;
OTEL_BSP_SCHEDULE_DELAY; OTEL_BLRP_SCHEDULE_DELAY). OTEL_EXPORTER_OTLP_PROTOCOL picks
the exporters: grpc (the default) or http/protobuf (then the endpoint is the
sidecar's :4318, and compression may be gzip or deflate). One call per process: under `uvicorn --workers N` every
worker imports the app and so sets up its own providers.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
import warnings

import structlog
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

with warnings.catch_warnings():
    # The SDK's handler is deprecated in favour of opentelemetry-instrumentation-logging's,
    # but only the SDK's keeps a dict message as a map (kvlist) body; the other one
    # stringifies it. Geometra logs dicts, so the example uses the SDK's.
    warnings.simplefilter("ignore", DeprecationWarning)
    from opentelemetry.sdk._logs import LoggingHandler


def instance_id() -> str | None:
    """service.instance.id of this process.

    GEOMETRA_SERVICE_INSTANCE_ID=auto (the default) gives every process (every
    uvicorn worker) its own random id, set here explicitly: SDK 1.45 would also
    make one (its ServiceInstanceIdResourceDetector), older SDKs did not. `none`
    removes it, as an older SDK or a hand-built Resource would leave it, and the
    sidecar then tells the workers apart by host.name:process.pid. Any other
    value is used as it is.
    """
    mode = os.environ.get("GEOMETRA_SERVICE_INSTANCE_ID", "auto")
    if mode == "auto":
        return str(uuid.uuid4())
    if mode == "none":
        return None
    return mode


def resource(service_name: str) -> Resource:
    attrs: dict[str, object] = {
        "service.name": service_name,
        "service.version": "0.1.0",
        "deployment.environment.name": os.environ.get("GEOMETRA_ENVIRONMENT", "dev"),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }
    iid = instance_id()
    if iid is not None:
        attrs["service.instance.id"] = iid
    res = Resource.create(attrs)
    if iid is None:
        res = Resource({k: v for k, v in res.attributes.items() if k != "service.instance.id"}, res.schema_url)
    return res


def exporters():
    """(span, log, metric) exporter classes for OTEL_EXPORTER_OTLP_PROTOCOL."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise SystemExit(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
    return OTLPSpanExporter, OTLPLogExporter, OTLPMetricExporter


def setup(service_name: str = "geometra-api") -> Resource:
    res = resource(service_name)
    OTLPSpanExporter, OTLPLogExporter, OTLPMetricExporter = exporters()  # noqa: N806 - classes

    tracer_provider = TracerProvider(resource=res)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)

    logger_provider = LoggerProvider(resource=res)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=logger_provider)
    geometra = logging.getLogger("geometra")
    geometra.setLevel(logging.INFO)
    geometra.addHandler(handler)

    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=res, metric_readers=[reader]))

    # structlog renders the event dict as one JSON string and hands it to the
    # standard "geometra" logger: the OTLP log body is that JSON string.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    return res


def shutdown() -> None:
    """Flush and stop the providers (uvicorn calls it on a worker's shutdown)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        if hasattr(provider, "shutdown"):
            provider.shutdown()
    from opentelemetry._logs import get_logger_provider

    lp = get_logger_provider()
    if hasattr(lp, "shutdown"):
        lp.shutdown()
