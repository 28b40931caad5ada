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

And for the browser: POST /telemetry/token mints a short-lived HS256 token
that the page sends to the sidecar's browser listener (receivers.browser.auth),
signed with the secret the sidecar reads from the same mounted Secret.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager

import jwt
import structlog
from fastapi import FastAPI, HTTPException, Response
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


# Browser telemetry tokens. The sidecar's browser listener asks for
# `Authorization: Bearer <JWT>` when receivers.browser.auth.jwt_hs256_secret_file
# is set; the page gets its tokens here. Both sides read the same Secret (the
# Helm chart mounts it as a file): GEOMETRA_BROWSER_TOKEN_SECRET_FILE names it
# here, receivers.browser.auth.jwt_hs256_secret_file in the sidecar. The file
# is read at every mint, so a rotated Secret signs the next token (the sidecar
# accepts the previous secret for receivers.browser.auth.rotation_overlap).
# GEOMETRA_BROWSER_TOKEN_AUDIENCE must equal receivers.browser.auth.audience.
TOKEN_SECRET_FILE = os.environ.get("GEOMETRA_BROWSER_TOKEN_SECRET_FILE", "")
TOKEN_AUDIENCE = os.environ.get("GEOMETRA_BROWSER_TOKEN_AUDIENCE", "geometra-sidecar")
TOKEN_TTL_S = int(os.environ.get("GEOMETRA_BROWSER_TOKEN_TTL_SECONDS", "300"))
SECRET_MAX = 64 << 10  # the sidecar's bound on a secret file


class TokenIn(BaseModel):
    user_id: str


def logged_in_user(body: TokenIn) -> str:
    """The user the token is for. This example identifies users by the user_id
    its clients send (as /chat and /memory do); a real back end takes it from
    its login session and mints tokens only for a logged-in user."""
    return body.user_id


def browser_token_secret() -> bytes | None:
    """The shared secret as the sidecar reads it: trailing newlines are not part
    of it, and fewer than 32 bytes is refused (RFC 7518 3.2) on both sides."""
    if not TOKEN_SECRET_FILE:
        return None
    try:
        with open(TOKEN_SECRET_FILE, "rb") as f:
            secret = f.read(SECRET_MAX + 1)
    except OSError:
        return None
    secret = secret.rstrip(b"\r\n")
    return secret if 32 <= len(secret) <= SECRET_MAX else None


@app.post("/telemetry/token")
def telemetry_token(body: TokenIn, response: Response):
    """A token for the page's OTLP exporter: HS256, `sub` the user, `exp` in
    TOKEN_TTL_S (5 minutes), `aud` the sidecar's audience. The page asks for a
    new one before this one expires."""
    user = logged_in_user(body)
    secret = browser_token_secret()
    if secret is None:
        raise HTTPException(status_code=503, detail="browser telemetry tokens are not configured "
                            "(GEOMETRA_BROWSER_TOKEN_SECRET_FILE: a readable file of at least 32 bytes)")
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + TOKEN_TTL_S}
    if TOKEN_AUDIENCE:
        claims["aud"] = TOKEN_AUDIENCE
    response.headers["Cache-Control"] = "no-store"
    return {"token": jwt.encode(claims, secret, algorithm="HS256"), "token_type": "Bearer",
            "expires_in": TOKEN_TTL_S}


FastAPIInstrumentor.instrument_app(app, excluded_urls="legacy/ping")
