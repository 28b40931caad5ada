"""GenAI metrics from the real instrumentation (issue 23).

The official OpenAI Python client, instrumented by
opentelemetry-instrumentation-openai-v2 (with its experimental-conventions
switch OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental off and on),
talks to a fake OpenAI-compatible server in this test (a plain answer, a
streamed one, a model the price table does not know, a 500) and exports its
spans to the sidecar. /metrics must hold exactly what the fake server
returned: operation counts, token sums, the cost from the price table to the
cent, the unpriced model's tokens, the error's type.

What the pinned instrumentation (openai-v2 2.4b0 with util-genai 1.0b0)
records of a chat completion: input and output tokens, not the usage's
cached or reasoning token details and no time to first chunk (the sidecar's
handling of those attributes, and of the older names, is tested with the
Rust SDK in tests/suite/genai.rs). The test asserts that too, so an upgrade that
starts sending them shows here.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import clients_helpers as ch
import monitoring_helpers as mh

HERE = Path(__file__).resolve().parent
APP = HERE / "genai" / "openai_app.py"

# what the fake server answers (cached tokens are inside prompt_tokens)
PLAIN = {"prompt_tokens": 400_000, "completion_tokens": 100_000, "total_tokens": 500_000,
         "prompt_tokens_details": {"cached_tokens": 300_000},
         "completion_tokens_details": {"reasoning_tokens": 20_000}}
STREAMED = {"prompt_tokens": 200_000, "completion_tokens": 50_000, "total_tokens": 250_000,
            "prompt_tokens_details": {"cached_tokens": 100_000}}
LOCAL = {"prompt_tokens": 70, "completion_tokens": 30, "total_tokens": 100}
PRICES = """\
# USD per million tokens (test table)
- {match: "gpt-4o-mini*", input: 0.15, output: 0.60, cache_read_input: 0.075}
- {match: "gpt-4o*", input: 2.50, output: 10.00, cache_read_input: 1.25}
"""


class _Fake(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, status: int, doc: dict):
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        if model == "broken":
            return self._json(500, {"error": {"message": "overloaded", "type": "server_error"}})
        base = {"id": "chatcmpl-1", "created": 1, "model": f"{model}-2024-07-18"}
        if not body.get("stream"):
            usage = LOCAL if model == "local-llama" else PLAIN
            msg = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
            return self._json(200, {**base, "object": "chat.completion", "choices": [msg], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base["object"] = "chat.completion.chunk"
        chunks = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                  for w in ("hel", "lo")]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({**base, "choices": [], "usage": STREAMED})
        for c in chunks:
            self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def fake_openai():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


def _run_app(base_url: str, sidecar, latest: bool, tmp_path: Path):
    env = dict(os.environ)
    env.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    if latest:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
    log = tmp_path / f"app-{latest}.log"
    p = mh.Proc([sys.executable, str(APP), base_url, sidecar.grpc_endpoint], log, env=env)
    mh.wait_for(lambda: not p.alive(), 60, what="the OpenAI app")
    assert p.p.returncode == 0, f"the app failed:\n{p.log()}"


def _expected(latest: bool) -> dict:
    model = "gpt-4o-mini-2024-07-18"
    chat = (("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "openai"))
    ok = chat + (("gen_ai_request_model", "gpt-4o-mini"), ("gen_ai_response_model", model))
    local = chat + (("gen_ai_request_model", "local-llama"),
                    ("gen_ai_response_model", "local-llama-2024-07-18"))
    failed = chat + (("gen_ai_request_model", "broken"), ("gen_ai_response_model", ""))
    d = "gen_ai_client_operation_duration_seconds_count"
    exp = {
        (d, tuple(sorted(ok + (("error_type", ""),)))): 2.0,
        (d, tuple(sorted(local + (("error_type", ""),)))): 1.0,
        (d, tuple(sorted(failed + (("error_type", "InternalServerError"),)))): 1.0,
    }
    tokens_in = PLAIN["prompt_tokens"] + STREAMED["prompt_tokens"]
    tokens_out = PLAIN["completion_tokens"] + STREAMED["completion_tokens"]
    if latest:
        for name, v, lv in (("input_tokens", tokens_in, 70), ("output_tokens", tokens_out, 30)):
            n = f"gen_ai_client_inference_usage_{name}_total"
            exp[(n, tuple(sorted(ok)))] = float(v)
            exp[(n, tuple(sorted(local)))] = float(lv)
    else:
        for tt, v, lv in (("input", tokens_in, 70), ("output", tokens_out, 30)):
            n = "gen_ai_client_token_usage_sum"
            exp[(n, tuple(sorted(ok + (("gen_ai_token_type", tt),))))] = float(v)
            exp[(n, tuple(sorted(local + (("gen_ai_token_type", tt),))))] = float(lv)
    for tt, v, lv in (("input", tokens_in, 70), ("output", tokens_out, 30)):
        exp[("ai_model_tokens_total", (("model", model), ("token_type", tt), ("type", "chat")))] = float(v)
        exp[("ai_model_tokens_total",
             (("model", "local-llama-2024-07-18"), ("token_type", tt), ("type", "chat")))] = float(lv)
    exp[("geometra_sidecar_ai_unpriced_tokens_total", (("model", "local-llama-2024-07-18"),))] = 100.0
    exp[("ai_requests_total", (("status", "success"), ("type", "chat")))] = 3.0
    exp[("ai_requests_total", (("status", "error"), ("type", "chat")))] = 1.0
    # the chat spans carry no cached tokens (see the module doc), so all
    # input is priced at the input rate: 600k x 0.15 + 150k x 0.60 per 1M
    exp[("ai_cost_usd_total", (("model", model), ("type", "chat")))] = 0.18
    return exp


@pytest.mark.parametrize("latest", [False, True], ids=["released", "latest_experimental"])
def test_openai_v2_instrumentation_gives_exact_genai_metrics(latest, start_sidecar, fake_openai, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    conventions = "latest_experimental" if latest else "released"
    sc = start_sidecar({"ai": {"conventions": conventions, "prices_file": str(prices)}})
    _run_app(fake_openai, sc, latest, tmp_path)
    exp = _expected(latest)
    got = ch.wait_exact(sc, {k: v for k, v in exp.items() if k[0] != "ai_cost_usd_total"}, "GenAI metrics")
    assert got
    samples = sc.samples()
    cost = ch.value(samples, "ai_cost_usd_total", model="gpt-4o-mini-2024-07-18", type="chat")
    assert cost is not None and round(cost, 2) == 0.18 and abs(cost - 0.18) < 1e-9, cost
    # nothing the instrumentation did not send
    names = {n for n, _ in samples}
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_count" not in names
    assert not ch.series(samples, "ai_model_tokens_total", token_type="cache_read_input")
    other = "gen_ai_client_token_usage_sum" if latest else "gen_ai_client_inference_usage_input_tokens_total"
    assert other not in names
