"""examples/python-fastapi under `uvicorn --workers 2` against the real sidecar.

Checks the exact /metrics lines the sidecar derives from the app's spans and
logs, the app's own metrics passed through per worker, and the log records it
forwards to an OTLP sink (bodies, attributes, severity, trace ids, resource).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import clients_helpers as ch
import monitoring_helpers as mh

APP_DIR = ch.EXAMPLES / "python-fastapi"
JOB = "geometra-api"


def _need_app_deps():
    missing = [m for m in ("fastapi", "uvicorn", "structlog", "opentelemetry.instrumentation.fastapi")
               if importlib.util.find_spec(m) is None]
    if missing:
        ch.required(", ".join(missing), "pip install -r examples/python-fastapi/requirements.txt")


def start_api(procs, sidecar, tmp_path, instance_mode: str, protocol: str = "grpc", compression: str | None = None) -> str:
    """uvicorn --workers 2 on a free port, exporting to the sidecar; returns its base URL."""
    _need_app_deps()
    port = mh.free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.grpc_endpoint if protocol == "grpc" else sidecar.http_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        # the FastAPI spans with the current HTTP names; /legacy/ping writes the old ones
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "GEOMETRA_SERVICE_INSTANCE_ID": instance_mode,
    }
    if compression:
        env["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
    cmd = [sys.executable, "-m", "uvicorn", "geometra_api:app", "--workers", "2",
           "--host", "127.0.0.1", "--port", str(port)]
    proc = mh.Proc(cmd, tmp_path / f"uvicorn-{instance_mode}.log", env=env, cwd=APP_DIR)
    procs.append(proc)
    return f"http://127.0.0.1:{port}"


def call(base: str, path: str, data: dict | None = None, method: str | None = None) -> dict:
    if data is None and method == "POST":
        data = {}
    return mh.http_json(base + path, data, timeout=10)


class Traffic:
    """What the test sent, and which worker answered each request."""

    def __init__(self, base: str):
        self.base = base
        self.requests = Counter()  # (method, route) -> answered requests
        self.users: set[str] = set()
        self.memory_by_pid: dict[int, int] = {}
        self.writes_by_pid = Counter()
        self.instance_by_pid: dict[int, str | None] = {}
        self.tokens = Counter()  # (type, token_type) -> tokens

    def note(self, method: str, route: str, answer: dict) -> dict:
        self.requests[(method, route)] += 1
        w = answer["worker"]
        self.instance_by_pid[w["pid"]] = w["service_instance_id"]
        return answer

    def health_until_both_workers(self):
        pids = set()

        def both():
            answer = self.note("GET", "/health", call(self.base, "/health"))
            pids.add(answer["worker"]["pid"])
            return len(pids) == 2

        mh.wait_for(both, 60, interval=0.05, what="both uvicorn workers answering /health")

    def store(self, user: str, text: str) -> dict:
        a = self.note("POST", "/memory/{user_id}", call(self.base, f"/memory/{user}", {"text": text}))
        self.users.add(user)
        pid = a["worker"]["pid"]
        self.writes_by_pid[pid] += 1
        # stores only grow a worker's memory: its largest answer is its state
        self.memory_by_pid[pid] = max(self.memory_by_pid.get(pid, 0), a["memory_bytes"])
        return a

    def stores_on_both_workers(self):
        """Concurrent stores (several connections at once) until both workers hold memories."""
        n = 0
        with ThreadPoolExecutor(6) as pool:
            for _round in range(30):
                list(pool.map(lambda i: self.store(f"u{i % 4 + 1}", f"note {n + i} " + "x" * (i + 1)), range(6)))
                n += 6
                if len(self.writes_by_pid) == 2:
                    return
        raise AssertionError(f"stores never reached both workers: {self.writes_by_pid}")

    def archive(self, user: str):
        """Sequential, after the stores: the answer is that worker's memory from now on."""
        a = self.note("POST", "/memory/{user_id}/archive", call(self.base, f"/memory/{user}/archive", method="POST"))
        self.users.add(user)
        self.memory_by_pid[a["worker"]["pid"]] = a["memory_bytes"]

    def chat(self, user: str, message: str, route: str = "/chat", op: str = "chat"):
        a = self.note("POST", route, call(self.base, route, {"user_id": user, "message": message}))
        if route == "/chat":
            self.users.add(user)
        self.tokens[(op, "input")] += len(message.split())
        self.tokens[(op, "output")] += len(a["reply"].split())


def drive(base: str) -> Traffic:
    t = Traffic(base)
    t.health_until_both_workers()
    t.stores_on_both_workers()
    for user, msg in [("u1", "hello there"), ("u5", "what did I store yesterday"), ("u1", "thanks")]:
        t.chat(user, msg)
    for msg in ["summarise my notes", "one two three four five"]:
        t.chat("u6", msg, route="/complete", op="text_completion")
    for _ in range(2):
        t.note("GET", "/legacy/ping", call(base, "/legacy/ping"))
    t.archive("u2")
    t.archive("u7")
    return t


def expected_derived(t: Traffic) -> dict:
    exp = {}
    for (method, route), n in t.requests.items():
        exp[("http_requests_total", (("endpoint", route), ("method", method), ("status", "200")))] = n
    exp[("ai_requests_total", (("status", "success"), ("type", "chat")))] = t.requests[("POST", "/chat")]
    exp[("ai_requests_total", (("status", "success"), ("type", "text_completion")))] = t.requests[("POST", "/complete")]
    for (op, kind), n in t.tokens.items():
        exp[("ai_tokens_total", (("token_type", kind), ("type", op)))] = n
    exp[("memory_operations_total", (("operation", "store"), ("status", "success")))] = sum(t.writes_by_pid.values())
    exp[("memory_operations_total", (("operation", "archive"), ("status", "success")))] = \
        t.requests[("POST", "/memory/{user_id}/archive")]
    exp[("active_users", ())] = len(t.users)
    return exp


def passthrough(samples: dict, name: str) -> dict[tuple, float]:
    """The series of a pass-through metric: {labels: value}."""
    return ch.series(samples, name)


def by_instance(per_instance: dict) -> dict[tuple, float]:
    """What a pass-through metric should be: one series per worker labelled job and instance."""
    return {(("instance", i), ("job", JOB)): float(v) for i, v in per_instance.items()}


def check_no_false_reset(sidecar, name: str, scrapes: int = 12):
    """Counters per series never go down across scrapes while both workers keep exporting."""
    prev: dict[tuple, float] = {}
    for _ in range(scrapes):
        now = ch.series(sidecar.samples(), name)
        for k, v in now.items():
            assert v >= prev.get(k, 0), f"{name}{dict(k)} went down: {prev.get(k)} -> {v} (a false reset)"
        prev = now
        time.sleep(0.15)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "protocol,compression",
    [("grpc", None), ("http/protobuf", "deflate")],
    ids=["grpc", "http-deflate"],
)
def test_fastapi_two_workers_exact_metrics_and_forwarded_logs(sink, start_sidecar, procs, tmp_path, protocol, compression):
    """The whole app, exported over gRPC, and over OTLP/HTTP with the deflate compression the Python exporter offers."""
    sidecar = start_sidecar(ch.forward_config(sink))
    base = start_api(procs, sidecar, tmp_path, "auto", protocol, compression)
    t = drive(base)

    # each part is checked even when an earlier one failed; all failures are reported together
    failures = ch.Failures()
    with failures.check("derived metrics"):
        ch.wait_exact(sidecar, expected_derived(t), "derived metrics (http, ai, tokens, memory ops, active users)")
    with failures.check("pass-through metrics per worker"):
        check_passthrough_per_worker(sidecar, t)
    with failures.check("forwarded logs"):
        check_forwarded_logs(sink, t)
    with failures.check("transport"):
        check_transport(sidecar, "grpc" if protocol == "grpc" else "http")
    with failures.check("sidecar log"):
        ch.check_plain_log(sidecar)
    failures.raise_any()


def check_transport(sidecar, transport: str):
    """Everything arrived over the chosen transport, and nothing was refused or malformed."""
    s = sidecar.samples()
    for signal in ("spans", "log_records", "metric_points"):
        used = ch.value(s, f"otelcol_receiver_accepted_{signal}_total", receiver="otlp", transport=transport)
        assert used and used > 0, f"no {signal} accepted over {transport}"
        refused = ch.series(s, f"otelcol_receiver_refused_{signal}_total")
        assert set(refused.values()) <= {0.0}, f"refused {signal}: {refused}"
    bad = ch.series(s, "geometra_sidecar_receiver_bad_requests_total")
    assert set(bad.values()) <= {0.0}, f"bad requests: {bad}"


def check_passthrough_per_worker(sidecar, t: Traffic):
    """The app's own metrics: one series per worker, told apart by service.instance.id."""
    want_size = by_instance({t.instance_by_pid[p]: b for p, b in t.memory_by_pid.items()})
    want_writes = by_instance({t.instance_by_pid[p]: n for p, n in t.writes_by_pid.items()})
    assert len(want_size) == 2 and None not in t.instance_by_pid.values(), t.instance_by_pid
    got = {}

    def passthrough_exact():
        s = sidecar.samples()
        got["size"] = passthrough(s, "memory_size_bytes")
        got["writes"] = passthrough(s, "memory_writes_total")
        return got["size"] == want_size and got["writes"] == want_writes

    try:
        mh.wait_for(passthrough_exact, 30, interval=0.3, what="memory_size_bytes / memory_writes_total per worker")
    except AssertionError:
        pass
    assert got.get("size") == want_size, f"memory_size_bytes per instance: {got.get('size')} != {want_size}"
    assert got.get("writes") == want_writes, f"memory_writes_total per instance: {got.get('writes')} != {want_writes}"
    check_no_false_reset(sidecar, "memory_writes_total")


def test_fastapi_workers_without_instance_id_stay_apart(sink, start_sidecar, procs, tmp_path):
    """GEOMETRA_SERVICE_INSTANCE_ID=none: the sidecar's fallback instance, host.name:process.pid, keeps them apart."""
    sidecar = start_sidecar(ch.forward_config(sink))
    base = start_api(procs, sidecar, tmp_path, "none")
    t = Traffic(base)
    t.health_until_both_workers()
    t.stores_on_both_workers()
    assert set(t.instance_by_pid.values()) == {None}
    host = socket.gethostname()  # the app's host.name
    want_size = by_instance({f"{host}:{pid}": b for pid, b in t.memory_by_pid.items()})
    want_writes = by_instance({f"{host}:{pid}": n for pid, n in t.writes_by_pid.items()})
    got = {}

    def apart():
        s = sidecar.samples()
        got["size"] = passthrough(s, "memory_size_bytes")
        got["writes"] = passthrough(s, "memory_writes_total")
        return got["size"] == want_size and got["writes"] == want_writes

    try:
        mh.wait_for(apart, 30, interval=0.3, what="one memory_size_bytes series per worker")
    except AssertionError:
        pass
    assert got.get("size") == want_size, f"memory_size_bytes: {got.get('size')} != {want_size}"
    assert got.get("writes") == want_writes, f"memory_writes_total: {got.get('writes')} != {want_writes}"
    check_no_false_reset(sidecar, "memory_writes_total")


# --------------------------------------------------------------------------- forwarded logs
def check_forwarded_logs(sink, t: Traffic):
    n_store = sum(t.writes_by_pid.values())
    n_archive = t.requests[("POST", "/memory/{user_id}/archive")]

    def memory_records():
        recs = sink.log_records()
        stores = [r for r in recs if r[2].body.WhichOneof("value") == "string_value"
                  and '"memory_operation"' in r[2].body.string_value]
        maps = [r for r in recs if r[2].body.WhichOneof("value") == "kvlist_value"]
        return (stores, maps) if len(stores) >= n_store and len(maps) >= n_archive else None

    stores, maps = mh.wait_for(memory_records, 30, what=f"{n_store} store and {n_archive} archive log records at the sink")
    assert len(stores) == n_store and len(maps) == n_archive, (len(stores), len(maps))

    server_spans = {}

    def spans_arrived():
        server_spans.clear()
        for res, sp in sink.spans():
            route = ch.attrs(sp.attributes).get("http.route")
            if sp.kind == sp.SPAN_KIND_SERVER and route:
                server_spans[(sp.trace_id, sp.span_id)] = (route, ch.attrs(res.attributes))
        routes = Counter(r for r, _ in server_spans.values())
        return routes[("/memory/{user_id}")] >= n_store and routes["/memory/{user_id}/archive"] >= n_archive

    mh.wait_for(spans_arrived, 30, what="the memory routes' server spans at the sink")
    instances = {i for i in t.instance_by_pid.values()}

    for res, scope, lr in stores + maps:
        r = ch.attrs(res.attributes)
        assert r["service.name"] == JOB and r["service.instance.id"] in instances, r
        assert isinstance(r["process.pid"], int) and r["process.pid"] in t.instance_by_pid, r
        assert lr.severity_number == 9 and lr.severity_text == "INFO", (lr.severity_number, lr.severity_text)
        assert len(lr.trace_id) == 16 and len(lr.span_id) == 8, "a log inside a request carries its trace"
        route, span_res = server_spans.get((lr.trace_id, lr.span_id), (None, None))
        want_route = "/memory/{user_id}" if lr.body.WhichOneof("value") == "string_value" else "/memory/{user_id}/archive"
        assert route == want_route, f"log {lr.trace_id.hex()}/{lr.span_id.hex()} not in a {want_route} span ({route})"
        assert span_res["service.instance.id"] == r["service.instance.id"], "log and span from the same worker"

    for _res, scope, lr in stores:
        body = json.loads(lr.body.string_value)  # structlog's JSON, forwarded as sent
        assert body["event"] == "memory_operation" and body["operation"] == "store" and body["level"] == "info", body
        assert body["user_id"] in t.users and isinstance(body["size"], int), body
        assert scope.name == "geometra", scope.name

    archived_users = Counter()
    for _res, scope, lr in maps:
        body = ch.any_value(lr.body)
        assert set(body) == {"event", "operation", "user_id", "archived"}, body
        assert body["event"] == "memory_operation" and body["operation"] == "archive", body
        archived_users[body["user_id"]] += 1
        a = ch.attrs(lr.attributes)
        assert a["code.function.name"] == "memory_archive", a
        assert a["code.file.path"].endswith("geometra_api.py"), a
        assert scope.name == "geometra.memory", scope.name
    assert archived_users == Counter({"u2": 1, "u7": 1}), archived_users
