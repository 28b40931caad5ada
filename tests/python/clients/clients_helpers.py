"""Helpers for tests/python/clients: an OTLP/gRPC sink, the sidecar under test, /metrics parsing.

The sink is a real OTLP server (grpcio with the opentelemetry-proto generated
services) that records every request the sidecar forwards. /metrics is parsed
with prometheus_client's text parser, so a line that does not parse fails the test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from concurrent import futures
from pathlib import Path

import grpc
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import monitoring_helpers as mh

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


def required(what: str, hint: str):
    """A missing tool fails the test with the reason (skips under GEOMETRA_TEST_ALLOW_SKIP=1)."""
    mh.skip_or_fail(f"{what} not found ({hint}; scripts/test.sh installs it)")


def node_modules(example: str) -> Path:
    """The example's directory once `npm ci` has installed its node_modules."""
    d = EXAMPLES / example
    if shutil.which("node") is None:
        required("node", "apt-get install nodejs npm")
    if not (d / "node_modules").is_dir():
        required(f"examples/{example}/node_modules", f"cd examples/{example} && npm ci")
    return d


# --------------------------------------------------------------------------- OTLP sink
class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.sink.lock:
            self.sink.log_requests.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.sink.lock:
            self.sink.trace_requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpSink:
    """OTLP/gRPC logs and traces server on 127.0.0.1:<free port>, keeping every request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.log_requests: list = []
        self.trace_requests: list = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self), self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[tuple]:
        """(resource, scope, log record) of every forwarded record."""
        with self.lock:
            reqs = list(self.log_requests)
        return [
            (rl.resource, sl.scope, lr)
            for req in reqs
            for rl in req.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]

    def spans(self) -> list[tuple]:
        """(resource, span) of every forwarded span."""
        with self.lock:
            reqs = list(self.trace_requests)
        return [(rs.resource, sp) for req in reqs for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]

    def stop(self):
        self.server.stop(grace=None).wait(5)


# --------------------------------------------------------------------------- OTLP values
def any_value(v):
    """An OTLP AnyValue as a Python value (kvlist -> dict, array -> list)."""
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


def attrs(kvs) -> dict:
    return {kv.key: any_value(kv.value) for kv in kvs}


# --------------------------------------------------------------------------- sidecar
class Sidecar:
    """The sidecar binary (GEOMETRA_SIDECAR_BIN) on free loopback ports, with a YAML config."""

    def __init__(self, proc: mh.Proc, grpc_port: int, http_port: int, metrics_port: int,
                 browser_port: int | None = None):
        self.proc = proc
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.browser_port = browser_port

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def browser_endpoint(self) -> str:
        """The browser listener (receivers.browser), when the config has one."""
        assert self.browser_port, "this sidecar has no receivers.browser"
        return f"http://127.0.0.1:{self.browser_port}"

    @classmethod
    def start(cls, config: dict, workdir: Path) -> "Sidecar":
        workdir.mkdir(parents=True, exist_ok=True)
        grpc_port, http_port, metrics_port = mh.free_port(), mh.free_port(), mh.free_port()
        cfg = dict(config)
        receivers = cfg.setdefault("receivers", {})
        receivers.setdefault("otlp_grpc", {})["listen"] = f"127.0.0.1:{grpc_port}"
        receivers.setdefault("otlp_http", {})["listen"] = f"127.0.0.1:{http_port}"
        cfg.setdefault("server", {})["listen"] = f"127.0.0.1:{metrics_port}"
        browser_port = None
        if "browser" in receivers:  # the browser listener on a free port too
            browser_port = mh.free_port()
            receivers["browser"] = {**receivers["browser"], "listen": f"127.0.0.1:{browser_port}"}
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = mh.Proc([str(mh.sidecar_bin_path()), "--config", str(path)], workdir / "sidecar.log")
        sc = cls(proc, grpc_port, http_port, metrics_port, browser_port)

        def ready():
            if not proc.alive():
                raise mh.Fatal("the sidecar exited")
            return mh.http_get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1)[0] == 200

        try:
            mh.wait_for(ready, 20, what="sidecar /readyz")
        except AssertionError as e:
            log = proc.log()
            proc.stop()
            raise AssertionError(f"{e}\nconfig:\n{path.read_text()}\nsidecar log:\n{log}") from None
        return sc

    def metrics_text(self) -> str:
        status, body = mh.http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body.decode()

    def samples(self) -> dict[tuple, float]:
        """Every sample of /metrics as {(name, ((label, value), ...sorted)): value}."""
        out = {}
        for fam in text_string_to_metric_families(self.metrics_text()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self):
        self.proc.stop()


def forward_config(sink: OtlpSink) -> dict:
    """Forward logs and traces to the sink, in small quick batches."""
    return {
        "forward": {
            "logs": {"endpoint": sink.endpoint},
            "traces": {"endpoint": sink.endpoint},
            "batch": {"timeout": "50ms"},
        }
    }


def series(samples: dict, name: str, **match) -> dict[tuple, float]:
    """The samples of one metric whose labels include `match`."""
    want = set(match.items())
    return {labels: v for (n, labels), v in samples.items() if n == name and want <= set(labels)}


def value(samples: dict, name: str, **labels) -> float | None:
    """The sample with exactly these labels, or None."""
    return samples.get((name, tuple(sorted(labels.items()))))


class Failures:
    """Runs several independent checks of one scenario and reports every failure at the end."""

    def __init__(self):
        self.errors: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str):
        try:
            yield
        except AssertionError as e:
            self.errors.append(f"[{name}] {e}")

    def raise_any(self):
        if self.errors:
            raise AssertionError(f"{len(self.errors)} check(s) failed:\n\n" + "\n\n".join(self.errors))


def derived_now(sidecar, exp: dict) -> dict:
    """Every sample of /metrics whose name is one of `exp`'s."""
    names = {n for n, _ in exp}
    return {k: v for k, v in sidecar.samples().items() if k[0] in names}


def wait_exact(sidecar, exp: dict, what: str) -> dict:
    """Wait (bounded) until /metrics holds exactly `exp` for these metric names; assert with a diff."""
    last = {}

    def same():
        nonlocal last
        last = derived_now(sidecar, exp)
        return last == exp

    try:
        mh.wait_for(same, 30, interval=0.3, what=what)
    except AssertionError:
        pass
    assert last == exp, f"{what}: /metrics differs\nmissing or wrong: " + json.dumps(
        {f"{n}{dict(l)}": [exp.get((n, l)), last.get((n, l))] for (n, l) in set(exp) | set(last)
         if exp.get((n, l)) != last.get((n, l))}, indent=1)
    return last


def check_plain_log(sidecar: Sidecar):
    """The sidecar's own log, captured to a file as Kubernetes would: no ANSI colour, plain addresses."""
    log = sidecar.proc.log(tail=200_000)
    assert "\x1b[" not in log, "ANSI escape codes in a log that is not a terminal:\n" + log[:600]
    ready = [line for line in log.splitlines() if "ready" in line]
    assert ready, "no ready line in the sidecar's log:\n" + log[:600]
    assert "Some(" not in ready[0], f"the ready line prints an Option: {ready[0]}"
    assert f"127.0.0.1:{sidecar.grpc_port}" in ready[0], ready[0]
