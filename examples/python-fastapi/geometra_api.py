"""A small Geometra-like API: AI chat assistant and a per-user memory store, instrumented with OpenTelemetry.

Run it against a sidecar (see README.md):

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 uvicorn geometra_api:app --workers 2

What it sends, so the sidecar derives Geometra's metrics:
- server spans of every route (FastAPI instrumentation: http.route, method, status);
- GenAI spans (gen_ai.operation.name=chat, token usage: current names on /chat,
  the older prompt/completion names on /complete);
- a hand-made SERVER span with the old HTTP names (http.method, http.status_code)
  on /legacy/ping, which the FastAPI instrumentation is told to skip;
- memory_operation logs: structlog JSON string bodies (store) and map bodies
  from the standard logger (archive);
- the `memory.size` gauge (unit By, this worker's store) and the `memory.writes`
  counter through the metrics API.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

import telemetry

RESOURCE = telemetry.setup("geometra-api")
INSTANCE_ID = RESOURCE.attributes.get("service.instance.id")

tracer = trace.get_tracer("geometra.api")
meter = metrics.get_meter("geometra.api")
log = structlog.get_logger("geometra")
std_log = logging.getLogger("geometra.memory")

# The per-user memory store of this worker (each uvicorn worker has its own).
MEMORY: dict[str, list[str]] = {}


def memory_bytes() -> int:
    return sum(len(t.encode()) for items in MEMORY.values() for t in items)


def observe_memory_size(_options: CallbackOptions):
    yield Observation(memory_bytes())


meter.create_observable_gauge("memory.size", callbacks=[observe_memory_size], unit="By",
                              description="Bytes held in this worker's memory store")
memory_writes = meter.create_counter("memory.writes", unit="1", description="Memory entries written")


@asynccontextmanager
async def lifespan(_app: FastAPI):
    log.info("worker_started", pid=os.getpid(), service_instance_id=INSTANCE_ID)
    yield
    telemetry.shutdown()


app = FastAPI(title="geometra-api (example)", lifespan=lifespan)


class ChatIn(BaseModel):
    user_id: str
    message: str


class MemoryIn(BaseModel):
    text: str


def worker() -> dict:
    return {"pid": os.getpid(), "service_instance_id": INSTANCE_ID}


def fake_model_reply(message: str) -> str:
    return f"You said {len(message.split())} words"


@app.get("/health")
def health():
    return {"ok": True, "worker": worker()}


@app.post("/chat")
def chat(body: ChatIn):
    """The assistant: one GenAI span with token usage (current semantic-convention names)."""
    trace.get_current_span().set_attribute("enduser.id", body.user_id)
    with tracer.start_as_current_span("chat geometra-mini", kind=SpanKind.CLIENT) as span:
        reply = fake_model_reply(body.message)
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "geometra")
        span.set_attribute("gen_ai.request.model", "geometra-mini")
        span.set_attribute("gen_ai.usage.input_tokens", len(body.message.split()))
        span.set_attribute("gen_ai.usage.output_tokens", len(reply.split()))
    log.info("chat_request", user_id=body.user_id, response_words=len(reply.split()))
    return {"reply": reply, "worker": worker()}


@app.post("/complete")
def complete(body: ChatIn):
    """An older client path: the GenAI span uses the older token names."""
    with tracer.start_as_current_span("text_completion geometra-mini", kind=SpanKind.CLIENT) as span:
        reply = fake_model_reply(body.message)
        span.set_attribute("gen_ai.operation.name", "text_completion")
        span.set_attribute("gen_ai.system", "geometra")
        span.set_attribute("gen_ai.usage.prompt_tokens", len(body.message.split()))
        span.set_attribute("gen_ai.usage.completion_tokens", len(reply.split()))
    return {"reply": reply, "worker": worker()}


@app.get("/legacy/ping")
def legacy_ping():
    """Not instrumented by FastAPI (excluded below): a SERVER span written by hand with the old HTTP names."""
    start = time.time_ns()
    with tracer.start_as_current_span("GET /legacy/ping", kind=SpanKind.SERVER, start_time=start) as span:
        span.set_attribute("http.method", "GET")
        span.set_attribute("http.route", "/legacy/ping")
        span.set_attribute("http.target", "/legacy/ping")
        span.set_attribute("http.status_code", 200)
    return {"pong": True, "worker": worker()}


@app.post("/memory/{user_id}")
def memory_store(user_id: str, body: MemoryIn):
    """Store a memory; the event is a structlog JSON string body."""
    trace.get_current_span().set_attribute("enduser.id", user_id)
    MEMORY.setdefault(user_id, []).append(body.text)
    memory_writes.add(1)
    log.info("memory_operation", operation="store", user_id=user_id, size=len(body.text.encode()))
    return {"stored": True, "memory_bytes": memory_bytes(), "worker": worker()}


@app.post("/memory/{user_id}/archive")
def memory_archive(user_id: str):
    """Archive a user's memories; the event is a map body (a dict to the standard logger)."""
    trace.get_current_span().set_attribute("enduser.id", user_id)
    archived = len(MEMORY.pop(user_id, []))
    std_log.info({"event": "memory_operation", "operation": "archive", "user_id": user_id, "archived": archived})
    return {"archived": archived, "memory_bytes": memory_bytes(), "worker": worker()}


FastAPIInstrumentor.instrument_app(app, excluded_urls="legacy/ping")
