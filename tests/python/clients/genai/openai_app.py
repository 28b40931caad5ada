"""An app as Geometra's would be: the official OpenAI Python client,
instrumented by opentelemetry-instrumentation-openai-v2, exporting its spans
to the sidecar over OTLP/gRPC. Run by test_genai.py as
`openai_app.py OPENAI_BASE_URL OTLP_ENDPOINT`; OTEL_SEMCONV_STABILITY_OPT_IN
comes from the environment (the instrumentation reads it when instrumenting).
"""

import sys

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

base_url, endpoint = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": "geometra-api"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()

client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
ask = [{"role": "user", "content": "hello"}]
client.chat.completions.create(model="gpt-4o-mini", messages=ask)
stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=ask, stream=True, stream_options={"include_usage": True}
)
chunks = sum(1 for _ in stream)
client.chat.completions.create(model="local-llama", messages=ask)
try:
    client.chat.completions.create(model="broken", messages=ask)
except openai.InternalServerError:
    pass
else:
    sys.exit("the fake server's 500 did not raise")
provider.force_flush()
provider.shutdown()
print(f"done, {chunks} stream chunks")
