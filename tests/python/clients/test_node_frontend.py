"""examples/node-frontend (express, Node SDK over OTLP/gRPC, winston) against the real sidecar.

Two processes of the same service (the Node SDK sets no service.instance.id):
exact derived /metrics lines, the page-view counter passed through once per
process, and winston's records forwarded to an OTLP sink with their trace.
"""

from __future__ import annotations

import socket
from collections import Counter

import clients_helpers as ch
import monitoring_helpers as mh

JOB = "geometra-frontend"


def start_frontend(procs, sidecar, tmp_path, name: str) -> str:
    app_dir = ch.node_modules("node-frontend")
    port = mh.free_port()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PORT": str(port),
        "OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.grpc_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }
    proc = mh.Proc(["node", "--require", "./telemetry.js", "server.js"], tmp_path / f"{name}.log", env=env, cwd=app_dir)
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"

    def up():
        if not proc.alive():
            raise mh.Fatal(f"{name} exited:\n{proc.log()}")
        return mh.http_json(base + "/healthz", timeout=2)

    return base, mh.wait_for(up, 30, what=f"{name} /healthz")["pid"]


def get(base: str, path: str) -> int:
    return mh.http_get(base + path, timeout=10)[0]


def test_node_frontend_two_processes(sink, start_sidecar, procs, tmp_path):
    sidecar = start_sidecar(ch.forward_config(sink))
    (a, pid_a), (b, pid_b) = (start_frontend(procs, sidecar, tmp_path, n) for n in ("frontend-a", "frontend-b"))
    sent = Counter({("GET", "/healthz", "200"): 2})
    views = {pid_a: 3, pid_b: 1}
    for base, pid in ((a, pid_a), (b, pid_b)):
        for _ in range(views[pid]):
            assert get(base, "/") == 200
            sent[("GET", "/", "200")] += 1
    for user in ("f1", "f2", "f1"):
        assert get(a, f"/api/users/{user}/memories") == 200
        sent[("GET", "/api/users/:userId/memories", "200")] += 1
    assert mh.http_json(b + "/api/chat", {"user_id": "f3", "message": "hi there"})["ok"]
    sent[("POST", "/api/chat", "200")] += 1
    assert get(b, "/api/fail") == 500
    sent[("GET", "/api/fail", "500")] += 1

    exp = {("http_requests_total", (("endpoint", r), ("method", m), ("status", s))): n for (m, r, s), n in sent.items()}
    exp[("memory_operations_total", (("operation", "recall"), ("status", "success")))] = 3
    exp[("active_users", ())] = 3  # f1, f2, f3 from winston's user_id

    failures = ch.Failures()
    with failures.check("derived metrics"):
        ch.wait_exact(sidecar, exp, "derived metrics from the Node spans and winston logs")
    with failures.check("page views per process"):
        check_page_views(sidecar, {(("instance", f"{socket.gethostname()}:{pid}"), ("job", JOB)): float(n)
                                   for pid, n in views.items()})
    with failures.check("forwarded winston logs"):
        check_winston_logs(sink, {pid_a, pid_b})
    failures.raise_any()


def check_page_views(sidecar, want: dict):
    """frontend.page.views from two processes without service.instance.id: one series each, never merged.

    The sidecar's fallback instance is host.name:process.pid (the Node SDK's host and process detectors).
    """
    got = {}

    def apart():
        got.clear()
        got.update(ch.series(sidecar.samples(), "frontend_page_views_total"))
        return got == want

    try:
        mh.wait_for(apart, 30, interval=0.3, what="frontend_page_views_total per process")
    except AssertionError:
        pass
    assert got == want, f"frontend_page_views_total: {got} != {want}"


def check_winston_logs(sink, pids: set[int]):
    def records():
        recs = [r for r in sink.log_records() if r[2].body.string_value in ("memory_operation", "upstream_failed")]
        return recs if len(recs) >= 4 else None

    recs = mh.wait_for(records, 30, what="winston's memory_operation and upstream_failed records at the sink")
    assert len(recs) == 4, [r[2].body for r in recs]
    spans = {}

    def spans_arrived():
        spans.clear()
        for _res, sp in sink.spans():
            if sp.kind == sp.SPAN_KIND_SERVER:
                spans[(sp.trace_id, sp.span_id)] = ch.attrs(sp.attributes).get("http.route")
        return len(spans) >= 4

    mh.wait_for(spans_arrived, 30, what="the server spans at the sink")
    traced_routes = Counter()
    for res, scope, lr in recs:
        r = ch.attrs(res.attributes)
        assert r["service.name"] == JOB and r.get("process.pid") in pids, r
        assert "service.instance.id" not in r, "the Node SDK sets none; the test relies on it"
        a = ch.attrs(lr.attributes)
        assert scope.name == "@opentelemetry/winston-transport", scope.name
        if lr.body.string_value == "memory_operation":
            assert (lr.severity_number, lr.severity_text) == (9, "info"), (lr.severity_number, lr.severity_text)
            assert a["operation"] == "recall" and a["user_id"] in {"f1", "f2"}, a
        else:
            assert (lr.severity_number, lr.severity_text) == (17, "error"), (lr.severity_number, lr.severity_text)
            assert a == {"upstream": "geometra-api", "reason": "timeout"}, a
        assert len(lr.trace_id) == 16, "a winston record written in a request carries its trace"
        # the record's span is the request's (the express handler runs in the server span's context)
        route = spans.get((lr.trace_id, lr.span_id))
        if route is None:  # a child span (express middleware): the trace still must be a server span's
            route = next((rt for (tid, _), rt in spans.items() if tid == lr.trace_id), None)
        traced_routes[route] += 1
    assert traced_routes == Counter({"/api/users/:userId/memories": 3, "/api/fail": 1}), traced_routes
