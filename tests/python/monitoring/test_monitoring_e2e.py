"""End to end: a real Prometheus scraping a running geometra-sidecar fed by the
Python OpenTelemetry SDK. Every query of every dashboard panel must return data,
an injected burst of 5xx must turn HighErrorRate into a firing alert, and a
flood of one browser client past its rate limit on the browser listener must
turn GeometraSidecarBrowserRefusedSurge into a firing alert.

Test-only changes (so the test takes about a minute, not half an hour):
  * Prometheus scrapes and evaluates every 1 s (production: 15 s / 30 s);
  * it loads a copy of monitoring/prometheus/rules.yml in which every `for:`
    is cut to 2 s and the group-level `interval:` is removed (so the SLO
    recording rules also run every second). The expressions are unchanged.
  * Grafana's $__rate_interval is replaced by 30s in the dashboard queries.
Everything listens on 127.0.0.1 on free ports; processes are killed in the
fixtures' teardown; every wait is bounded.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

import monitoring_helpers as mh

RATE_INTERVAL = "30s"
JOB = "geometra-sidecar"
WORKER2_MEMORY = 2_000_000


# --------------------------------------------------------------------------- sidecar
@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    sidecar_bin = mh.sidecar_bin_path()
    tmp_path = tmp_path_factory.mktemp("sidecar")
    grpc_port, http_port, metrics_port, dead_port, browser_port = (mh.free_port() for _ in range(5))
    # the browser listener, with a small per-client budget so that one test
    # client can flood it (the other listeners come from the flags)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"receivers": {"browser": {
        "listen": f"127.0.0.1:{browser_port}",
        "rate_limit": {"requests_per_second": 2, "burst": 2},
    }}, "ai": {"prices_file": str(mh.REPO / "examples" / "prices.yaml")}}))
    proc = mh.Proc(
        [
            str(sidecar_bin),
            "--config", str(config),
            "--otlp-grpc-listen", f"127.0.0.1:{grpc_port}",
            "--otlp-http-listen", f"127.0.0.1:{http_port}",
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            # forward logs to a port nobody listens on: the exporter metrics
            # (sent / failed / queue) exist and the "export" panels have data
            "--forward-logs-to", f"http://127.0.0.1:{dead_port}",
        ],
        tmp_path / "sidecar.log",
    )
    base = f"http://127.0.0.1:{metrics_port}"

    def ready():
        if not proc.alive():
            raise mh.Fatal("the sidecar exited")
        return mh.http_get(base + "/readyz", timeout=1)[0] == 200

    try:
        mh.wait_for(ready, 20, what="sidecar /readyz")
    except BaseException:
        log = proc.log()
        proc.stop()
        raise AssertionError("sidecar did not become ready:\n" + log)
    yield {"grpc": f"127.0.0.1:{grpc_port}", "metrics": f"127.0.0.1:{metrics_port}", "proc": proc,
           "browser": f"127.0.0.1:{browser_port}"}
    proc.stop()


# --------------------------------------------------------------------------- prometheus
def _fast_rules(dst: Path):
    """rules.yml with `for:` shortened to 2s and group intervals removed (test only)."""
    doc = mh.load_yaml(mh.RULES)
    for g in doc["groups"]:
        g.pop("interval", None)
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "2s"
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def prometheus(sidecar, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prometheus")
    conf = tmp_path / "prom-conf"
    conf.mkdir()
    _fast_rules(conf / "rules.yml")
    cfg = mh.load_yaml(mh.PROM_CONFIG)
    # same job name as the real config; 1 s intervals for the test only
    cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    cfg.pop("alerting", None)  # no Alertmanager here: /api/v1/alerts is read from Prometheus
    for job in cfg["scrape_configs"]:
        if job["job_name"] == JOB:
            job["static_configs"] = [{"targets": [sidecar["metrics"]]}]
    (conf / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc, base = mh.start_prometheus(conf, "prometheus.yml", tmp_path)
    yield base
    proc.stop()


# --------------------------------------------------------------------------- load
class Load:
    """OTLP/gRPC load through the Python OpenTelemetry SDK: HTTP SERVER spans,
    GenAI CLIENT spans with token usage, memory spans, memory_operation log
    records, a memory.size gauge (unit By), enduser.id on everything. Metrics
    come from two worker processes of one service (uvicorn --workers 2: the
    same service.name, each its own service.instance.id) exporting the same
    counter and gauge."""

    ROUTES = [("GET", "/api/health"), ("POST", "/api/chat"), ("GET", "/api/memories/{id}"), ("POST", "/api/memories")]

    def __init__(self, endpoint: str):
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = f"http://{endpoint}"
        resource = Resource.create({"service.name": "geometra-api", "service.instance.id": "e2e-1"})
        self.tp = TracerProvider(resource=resource)
        self.tp.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=url, insecure=True), schedule_delay_millis=200)
        )
        self.lp = LoggerProvider(resource=resource)
        self.lp.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=url, insecure=True), schedule_delay_millis=200)
        )
        self.memory_size = 1_000_000
        self.reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=url, insecure=True), export_interval_millis=1000
        )
        self.mp = MeterProvider(resource=resource, metric_readers=[self.reader])
        meter = self.mp.get_meter("geometra.api")
        meter.create_observable_gauge(
            "memory.size", callbacks=[lambda _opts: [Observation(self.memory_size)]], unit="By",
            description="Total size of memory in bytes",
        )
        # the second worker: a smaller counter and a constant memory.size
        resource2 = Resource.create({"service.name": "geometra-api", "service.instance.id": "e2e-2"})
        self.mp2 = MeterProvider(resource=resource2, metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=url, insecure=True), export_interval_millis=1000)])
        meter2 = self.mp2.get_meter("geometra.api")
        meter2.create_observable_gauge(
            "memory.size", callbacks=[lambda _opts: [Observation(WORKER2_MEMORY)]], unit="By",
            description="Total size of memory in bytes",
        )
        self.chats = meter.create_counter("geometra.chat.messages")
        self.chats2 = meter2.create_counter("geometra.chat.messages")
        self.chats.add(100)
        self.tracer = self.tp.get_tracer("geometra.api")
        self.logger = self.lp.get_logger("geometra.api")
        self.error_share = 0.01  # 5xx share of HTTP requests; raised by burst()
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="otlp-load", daemon=True)
        self.rng = random.Random(42)

    # spans with explicit timestamps, so durations are what we choose
    def _span(self, name, kind, attrs, seconds, error=False):
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        start = end - int(seconds * 1e9)
        span = self.tracer.start_span(name, kind=kind, attributes=attrs, start_time=start)
        if error:
            span.set_status(Status(StatusCode.ERROR, "e2e failure"))
        span.end(end_time=end)

    def _log(self, attrs):
        from opentelemetry._logs import SeverityNumber

        try:
            self.logger.emit(event_name="memory_operation", body="memory_operation", attributes=attrs,
                             severity_number=SeverityNumber.INFO, severity_text="INFO")
        except TypeError:  # older SDKs: LogRecord object
            from opentelemetry.sdk._logs import LogRecord

            self.logger.emit(LogRecord(timestamp=time.time_ns(), body="memory_operation", attributes=attrs,
                                       severity_number=SeverityNumber.INFO, severity_text="INFO",
                                       event_name="memory_operation"))

    def one_round(self):
        from opentelemetry.trace import SpanKind

        rng = self.rng
        for _ in range(20):
            method, route = rng.choice(self.ROUTES)
            status = 500 if rng.random() < self.error_share else rng.choice([200, 200, 200, 201, 404])
            user = f"user-{rng.randrange(25)}"
            self._span(f"{method} {route}", SpanKind.SERVER, {
                "http.request.method": method, "http.route": route,
                "url.path": route.replace("{id}", str(rng.randrange(10_000))),
                "http.response.status_code": status, "enduser.id": user,
            }, rng.choice([0.004, 0.03, 0.2, 0.6, 1.5, 3.0]))
        for op in ("chat", "chat", "embeddings"):
            failed = rng.random() < 0.1
            attrs = {"gen_ai.operation.name": op, "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                     "gen_ai.usage.input_tokens": rng.randrange(50, 500),
                     "gen_ai.usage.output_tokens": rng.randrange(10, 300), "enduser.id": f"user-{rng.randrange(25)}"}
            if op == "chat":
                # streamed, some of the prompt from the provider's cache
                attrs["gen_ai.response.time_to_first_chunk"] = rng.choice([0.08, 0.3, 0.9])
                attrs["gen_ai.usage.cache_read.input_tokens"] = rng.randrange(0, 50)
            if failed:
                attrs["error.type"] = "429"
            self._span(f"{op} gpt-4o-mini", SpanKind.CLIENT, attrs, rng.choice([0.05, 0.4, 1.2, 4.0]), error=failed)
        for op in ("store", "retrieve"):
            self._span(f"memory {op}", SpanKind.INTERNAL,
                       {"memory.operation": op, "enduser.id": f"user-{rng.randrange(25)}"},
                       0.01, error=rng.random() < 0.05)
            self._log({"operation": op, "status": "error" if rng.random() < 0.05 else "success",
                       "user_id": f"user-{rng.randrange(25)}"})
        self.memory_size += rng.randrange(0, 4096)
        self.chats.add(1)
        self.chats2.add(1)
        self.sent += 1

    def _run(self):
        while not self._stop.is_set():
            try:
                self.one_round()
                self.tp.force_flush(5000)
                self.lp.force_flush(5000)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                return
            self._stop.wait(0.25)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=15)
        mh.shutdown_all((self.tp.shutdown, self.lp.shutdown, self.mp.shutdown, self.mp2.shutdown))


@pytest.fixture(scope="module")
def load(sidecar):
    yield from mh.run_load(Load(sidecar["grpc"]))


def _non_empty(base: str, expr: str, at: float | None = None):
    res = mh.prom_query(base, expr, at)
    assert res.get("status") == "success", f"query refused: {res.get('error')} :: {expr}"
    return res["data"]["result"]


# --------------------------------------------------------------------------- the tests
# One sidecar, one Prometheus and one load for the module; the tests run in
# file order (the last one injects the error burst).


def _alerts(base):
    return mh.http_json(base + "/api/v1/alerts")["data"]["alerts"]


@pytest.fixture(scope="module")
def scraping(sidecar, prometheus, load):
    """Prometheus scrapes the sidecar and the derived metrics have arrived."""
    base = prometheus
    mh.wait_for(lambda: any(s["value"][1] == "1" for s in _non_empty(base, f'up{{job="{JOB}"}}')),
                30, what="up == 1 for the sidecar")
    mh.wait_for(lambda: _non_empty(base, "http_requests_total"), 30, what="http_requests_total in Prometheus")
    assert not load.errors, f"load generator failed: {load.errors!r}"
    return base


def test_derived_metrics_reach_prometheus(scraping, load):
    base = scraping
    mh.wait_for(lambda: _non_empty(base, "ai_tokens_total") and _non_empty(base, "memory_size_bytes")
                and _non_empty(base, "memory_operations_total"), 30, what="AI, token and memory metrics")
    # labels come from the right attributes; ids never become labels
    endpoints = {s["metric"].get("endpoint") for s in _non_empty(base, "http_requests_total")}
    assert "/api/memories/{id}" in endpoints, endpoints
    assert not any(e and re.search(r"/\d+$", e) for e in endpoints), endpoints
    tokens = {(s["metric"]["type"], s["metric"]["token_type"]) for s in _non_empty(base, "ai_tokens_total")}
    assert {("chat", "input"), ("chat", "output"), ("embeddings", "input")} <= tokens, tokens
    ops = {(s["metric"]["operation"], s["metric"]["status"]) for s in _non_empty(base, "memory_operations_total")}
    assert {("store", "success"), ("retrieve", "success")} <= ops, ops
    mh.wait_for(lambda: float(_non_empty(base, "sum(active_users)")[0]["value"][1]) > 0, 20, what="active_users > 0")
    assert float(_non_empty(base, "max(memory_size_bytes)")[0]["value"][1]) >= 1_000_000
    assert not load.errors, f"load generator failed: {load.errors!r}"


def test_processes_of_one_pod_keep_their_own_series(scraping, load):
    """Two workers of one service export the same counter and gauge: each has
    its own series (exported_instance), Prometheus sees no counter reset, and
    the dashboard's memory panel shows the pod's sum."""
    base = scraping

    def per_worker(expr):
        return {s["metric"].get("exported_instance"): s for s in _non_empty(base, expr)}

    mh.wait_for(lambda: set(per_worker("memory_size_bytes")) == {"e2e-1", "e2e-2"}
                and set(per_worker("count_over_time(geometra_chat_messages_total[1m]) >= 5")) == {"e2e-1", "e2e-2"},
                40, interval=1, what="both workers' series, 5 scrapes each")
    for inst, s in per_worker("memory_size_bytes").items():
        # the scrape's own job/instance stay the pod's (honor_labels: false)
        assert s["metric"]["job"] == JOB and s["metric"]["exported_job"] == "geometra-api", s
    resets = {i: float(s["value"][1]) for i, s in per_worker("resets(geometra_chat_messages_total[1m])").items()}
    assert resets == {"e2e-1": 0.0, "e2e-2": 0.0}, resets
    chats = {i: float(s["value"][1]) for i, s in per_worker("geometra_chat_messages_total").items()}
    assert chats["e2e-1"] > chats["e2e-2"] + 50, chats  # worker 1 started 100 ahead
    # the dashboard's query is the sum of the workers, at one instant
    [expr] = [e for title, _, e in mh.dashboard_targets() if title == "Memory size"]
    at = time.time() - 1
    workers = sum(float(s["value"][1]) for s in _non_empty(base, "memory_size_bytes", at))
    [panel] = _non_empty(base, mh.grafana_expr(expr, RATE_INTERVAL), at)
    assert float(panel["value"][1]) == workers
    assert workers >= 1_000_000 + WORKER2_MEMORY
    assert not load.errors, f"load generator failed: {load.errors!r}"


def test_every_dashboard_query_has_data(scraping, sidecar, load):
    base = scraping
    targets = mh.dashboard_targets()
    assert len(targets) >= 20
    missing: list[str] = []

    def all_have_data():
        missing.clear()
        for title, ref, expr in targets:
            if not _non_empty(base, mh.grafana_expr(expr, RATE_INTERVAL)):
                missing.append(f"{title} [{ref}]: {expr}")
        return not missing

    try:
        mh.wait_for(all_have_data, 60, interval=2, what="data for every dashboard query")
    except AssertionError:
        metrics = mh.http_get(f"http://{sidecar['metrics']}/metrics")[1].decode(errors="replace")
        names = sorted({re.split(r"[{ ]", line, 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")})
        pytest.fail(
            "dashboard queries without data (the sidecar does not expose what they need?):\n  "
            + "\n  ".join(missing)
            + "\n\nmetric names the sidecar exposes:\n  " + "\n  ".join(names)
            + "\n\nsidecar log tail:\n" + sidecar["proc"].log(2000)
        )
    assert not load.errors, f"load generator failed: {load.errors!r}"


def _browser_export(addr: str) -> int:
    """One OTLP/HTTP JSON export of a document-load span, as the web SDK sends it."""
    now = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "geometra-web"}}]},
        "scopeSpans": [{"scope": {"name": "@opentelemetry/instrumentation-document-load"}, "spans": [{
            "traceId": "%032x" % random.getrandbits(128), "spanId": "%016x" % random.getrandbits(64),
            "name": "documentLoad", "kind": 1,
            "startTimeUnixNano": str(now - 300_000_000), "endTimeUnixNano": str(now),
        }]}],
    }]}
    req = urllib.request.Request(f"http://{addr}/v1/traces", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_browser_flood_fires_browser_refused_surge(scraping, sidecar, load):
    """One client past its budget (2 requests/s, burst 2) at 10 requests a
    second: the sidecar answers 429 and counts rate_limited, the dashboard's
    browser queries see it, and GeometraSidecarBrowserRefusedSurge fires on
    the real sidecar's series (sum/sum over the job)."""
    base = scraping
    alert = "GeometraSidecarBrowserRefusedSurge"
    assert not [a for a in _alerts(base) if a["labels"]["alertname"] == alert], _alerts(base)
    codes: list[int] = []
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            codes.append(_browser_export(sidecar["browser"]))
            stop.wait(0.1)

    th = threading.Thread(target=flood, daemon=True)
    th.start()

    def firing():
        return [a for a in _alerts(base) if a["labels"]["alertname"] == alert and a["state"] == "firing"]

    try:
        alerts = mh.wait_for(firing, 90, interval=1, what=f"{alert} firing")
    except AssertionError:
        pytest.fail(f"{alert} did not fire; codes={sorted(set(codes))}; alerts={_alerts(base)!r}; refused="
                    f"{_non_empty(base, 'sum by (reason) (rate(geometra_sidecar_browser_refused_requests_total[1m]))')!r}")
    finally:
        stop.set()
        th.join(timeout=10)
    assert 200 in codes and 429 in codes, sorted(set(codes))
    a = alerts[0]
    assert a["labels"]["job"] == JOB and a["labels"]["severity"] == "warning"
    assert a["labels"]["service"] == "geometra-sidecar"
    assert a["annotations"]["runbook_url"].endswith("#geometrasidecarbrowserrefusedsurge")
    # the refusals are rate_limited, nothing else; the accepted spans are the browser's
    reasons = {s["metric"]["reason"]: float(s["value"][1]) for s in _non_empty(
        base, "sum by (reason) (increase(geometra_sidecar_browser_refused_requests_total[5m]))")}
    assert reasons["rate_limited"] > 0 and all(v == 0 for r, v in reasons.items() if r != "rate_limited"), reasons
    assert float(_non_empty(base, 'sum(otelcol_receiver_accepted_spans_total{receiver="browser"})')[0]["value"][1]) > 0
    # every query of the browser row has data now
    for title, ref, expr in mh.dashboard_targets():
        if "browser" in expr:
            assert _non_empty(base, mh.grafana_expr(expr, RATE_INTERVAL)), f"{title} [{ref}]: {expr}"
    assert not load.errors, f"load generator failed: {load.errors!r}"


def test_error_burst_fires_high_error_rate(scraping, load):
    base = scraping
    # healthy traffic (1 % of 5xx): the error ratio is known and HighErrorRate is quiet
    mh.wait_for(lambda: _non_empty(base, "job:http_request_errors:ratio_rate5m"), 30,
                what="the recorded error ratio")
    ratio = float(_non_empty(base, "job:http_request_errors:ratio_rate5m")[0]["value"][1])
    assert ratio < 0.05, ratio
    assert not [a for a in _alerts(base) if a["labels"]["alertname"] == "HighErrorRate"], _alerts(base)

    # burst: 80 % of HTTP requests answer 500 -> HighErrorRate fires
    load.error_share = 0.8

    def firing():
        return [a for a in _alerts(base) if a["labels"]["alertname"] == "HighErrorRate" and a["state"] == "firing"]

    try:
        alerts = mh.wait_for(firing, 90, interval=1, what="HighErrorRate firing")
    except AssertionError:
        pytest.fail(f"HighErrorRate did not fire; alerts={_alerts(base)!r}; "
                    f"error ratio={_non_empty(base, 'job:http_request_errors:ratio_rate5m')!r}")
    alert = alerts[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["service"] == "geometra-api"
    assert alert["labels"]["job"] == JOB
    assert alert["annotations"]["runbook_url"].endswith("#higherrorrate")
    assert "5xx" in alert["annotations"]["description"]
    assert not load.errors, f"load generator failed: {load.errors!r}"
