"""The fleet test (issue 21): three sidecars, one per replica of the API,
scraped by a real Prometheus that runs the shipped rules, and pushing by
remote write to a second Prometheus (as Mimir or Thanos would receive them)
that runs the same rules.

The three sidecars are three pods (issue 22): the chart's pod (its demo
Deployment, the sidecar in regular-container mode, rendered by real Helm)
on the image of scripts/image.sh, each played with `podman kube play` as
tests/python/pod does, one Helm release per replica (podman plays one
pod per Deployment; each release names its pod's pushed series with the
instance the truth uses). The demo's load generator is left out: the load
comes from outside the pods, over the pod network, the OTLP/gRPC receiver
listening on 0.0.0.0 as for other pods. Prometheus scrapes the pods' IPs;
the remote-write Prometheus listens on podman's gateway, where the pods
reach the host.

A deterministic load (fleet_model.py) is sent through the OpenTelemetry
Python SDK, one exporter per replica: a steady stream of HTTP, AI and memory
telemetry from 25 users, then bursts of 3 000 and 30 000 new users, each
making one to six requests that go to the replicas in turn (6 : 3 : 1), so
most users are seen by more than one sidecar. After each load:

  * each pod's `active_users` equals the ids sent to that replica, exactly;
  * `geometra:active_users:fleet` (the registers max-merged across pods) is
    within three standard errors (3 x 1.04/sqrt(1024)) of the distinct users
    sent, on the scraping Prometheus and, equal to it, on the remote-write one;
  * the output shows what `sum(active_users)` would have said.

Then every dashboard query and every alert expression is evaluated on the
scraping Prometheus and compared with the truth computed from the load: a
ratio is sum(rate)/sum(rate) (the average of per-pod ratios, printed beside
it, would be far off), a quantile comes from the summed buckets, memory is
summed over a pod's processes. A panel or alert with no truth here fails.

The AI calls carry cached input tokens and a time to first chunk, and are
priced by examples/prices.yaml, so the AI row (cost, tokens by model, the
cache-read share, time to first chunk) has a truth too.

Test-only changes: 1 s scrape and evaluation intervals, `for:` not waited
for (the expressions are evaluated directly), Grafana's $__rate_interval is
60s and the rate queries run after 65 s of steady load only.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

import fleet_model as fm
import monitoring_helpers as mh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pod"))
import pod_helpers as ph  # noqa: E402

import helm_python as helm  # noqa: E402  (tests/requirements.txt; missing: the collection fails)
FLEET_POD = "geo-fleet"

JOB = "geometra-sidecar"
RATE_S = 60
RATE = f"{RATE_S}s"
M = 1024
SE = 1.04 / math.sqrt(M)
PHASES = (("tens", 0), ("thousands", 3_000), ("tens of thousands", 30_000))


def _fast_rules(dst):
    doc = mh.load_yaml(mh.RULES)
    for g in doc["groups"]:
        g.pop("interval", None)
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))


def _prometheus(tmp_path_factory, name, targets, extra=(), **listen):
    tmp = tmp_path_factory.mktemp(name)
    conf = tmp / "conf"
    conf.mkdir()
    _fast_rules(conf / "rules.yml")
    cfg = mh.load_yaml(mh.PROM_CONFIG)
    cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    cfg.pop("alerting", None)
    cfg["scrape_configs"] = [
        {"job_name": JOB, "static_configs": [{"targets": targets}]}] if targets else []
    (conf / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return mh.start_prometheus(conf, "prometheus.yml", tmp, extra, **listen)


# --------------------------------------------------------------------------- the three pods
def _sidecar_objects(r: str, rw_url: str) -> tuple[dict, dict]:
    """The chart's ConfigMap and pod (its demo Deployment, rendered by real Helm) of replica r:
    the sidecar's container as the chart writes it, in regular-container mode."""
    vals = {
        "sidecarMode": "container",
        "image": {"repository": ph.SIDECAR_IMAGE.split(":")[0], "tag": "dev", "pullPolicy": "Never"},
        "podMonitor": {"enabled": False},
        # the load comes from outside the pod (the test's SDK), as from other pods
        "otlp": {"grpc": {"listen": "0.0.0.0:4317"}},
        # the sidecar would name each pod's pushed series by its pod (job and
        # instance, remote-write.md); the test names them as its truth does
        "remoteWrite": {"url": rw_url, "interval": "1s",
                        "externalLabels": {"job": JOB, "instance": f"{FLEET_POD}-{r}"}},
        # the AI calls are priced by the shipped example table; no
        # store.distinct_key_file: an unconfigured fleet shares the default key
        "configOverrides": {"ai": {"prices_file": "/etc/geometra-prices/prices.yaml"}},
        "extraVolumeMounts": [{"name": "prices", "mountPath": "/etc/geometra-prices", "readOnly": True}],
    }
    with helm.Chart.load(str(mh.REPO / "helm" / "geometra-sidecar")) as c:
        docs = [d for p, t in c.render(vals, name=f"{FLEET_POD}-{r}", namespace="geometra").items()
                if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    # the demo's load generator (telemetrygen, not pullable here) gives way to the test's load
    spec["containers"] = [c for c in spec["containers"] if c["name"] == "geometra-sidecar"]
    spec["volumes"].append({"name": "prices", "hostPath": {"path": str(mh.REPO / "examples"), "type": "Directory"}})
    ph.kubelet_fields(spec)
    ph.free_host_ports(spec)
    return cm, dep


def _pod_volumes(dep: dict) -> list[str]:
    return [v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v]


def _remove_sidecar(pod: str, dep: dict):
    ph.remove_pods(pod)
    ph.podman("volume", "rm", "--force", *_pod_volumes(dep), check=False)


def _play_sidecars(tmp, rw_url: str, pods: dict):
    """Each replica's pod played with podman kube play: pods[r] = (pod, ip, deployment)."""
    for r in fm.REPLICAS:
        cm, dep = _sidecar_objects(r, rw_url)
        pod = f"{dep['metadata']['name']}-pod-0"
        _remove_sidecar(pod, dep)
        pods[r] = (pod, "", dep)
        ph.kube_play(yaml.safe_dump_all([cm, dep]), tmp / f"{r}.yaml")
        pods[r] = (pod, ph.pod_ip(pod), dep)


def _ready(pods: dict):
    for pod, ip, _ in pods.values():
        def ready(pod=pod, ip=ip):
            if ph.container(pod, "geometra-sidecar")["State"]["Status"] == "exited":
                log = ph.podman("logs", f"{pod}-geometra-sidecar", check=False)
                raise mh.Fatal(f"sidecar pod {pod} exited:\n{log.stdout}{log.stderr}")
            return mh.http_get(f"http://{ip}:9464/readyz", timeout=1)[0] == 200
        mh.wait_for(ready, 30, what=f"sidecar pod {pod} /readyz")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three pods of the chart on the image (podman kube play), scraped over the pod network by
    one Prometheus and pushing by remote write to another, on the host (podman's gateway)."""
    ph.need_tools()
    print(f"\nscripts/image.sh sidecar: {ph.build_images('sidecar'):.0f}s")
    procs, pods = [], {}
    try:
        # the pods first: podman's bridge (and its gateway address) exists once a pod is on it
        rw_host, rw_port = ph.network_gateway(), mh.free_port()
        rw_url = f"http://{rw_host}:{rw_port}/api/v1/write"
        _play_sidecars(tmp_path_factory.mktemp("pods"), rw_url, pods)
        rw_proc, rw_base = _prometheus(tmp_path_factory, "prom-rw", [],
                                       ("--web.enable-remote-write-receiver",), host=rw_host, port=rw_port)
        procs.append(rw_proc)
        _ready(pods)
        grpc = {r: f"{ip}:4317" for r, (_, ip, _) in pods.items()}
        metrics = {r: f"{ip}:9464" for r, (_, ip, _) in pods.items()}
        prom_proc, base = _prometheus(tmp_path_factory, "prom", list(metrics.values()))
        procs.append(prom_proc)
        yield {"prom": base, "rw": rw_base, "grpc": grpc, "metrics": metrics,
               "instance": {addr: r for r, addr in metrics.items()}, "procs": procs}
    finally:
        for p in reversed(procs):
            p.stop()
        for pod, _, dep in pods.values():
            _remove_sidecar(pod, dep)
        ph.podman("rmi", "--force", "--ignore", ph.SIDECAR_IMAGE, check=False)


class FleetLoad:
    """Sends fleet_model's load through the OpenTelemetry SDK, one set of
    exporters per replica, and tallies what went where."""

    def __init__(self, grpc: dict):
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

        self.tracers, self.loggers, self.providers = {}, {}, []
        for r, addr in grpc.items():
            url = f"http://{addr}"
            res = Resource.create({"service.name": "geometra-api", "service.instance.id": f"{r}-1"})
            tp = TracerProvider(resource=res)
            tp.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=url, insecure=True), max_queue_size=50_000,
                max_export_batch_size=2_000, schedule_delay_millis=100))
            lp = LoggerProvider(resource=res)
            lp.add_log_record_processor(BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=url, insecure=True), schedule_delay_millis=100))
            self.tracers[r], self.loggers[r] = tp.get_tracer("geometra.api"), lp.get_logger("geometra.api")
            self.providers += [tp, lp]
            for w, size in enumerate(fm.MEMORY[r], 1):  # two worker processes of the pod
                wres = Resource.create({"service.name": "geometra-api", "service.instance.id": f"{r}-{w}"})
                mp = MeterProvider(resource=wres, metric_readers=[PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=url, insecure=True), export_interval_millis=1000)])
                mp.get_meter("geometra.api").create_observable_gauge(
                    "memory.size", unit="By", callbacks=[lambda _o, s=size: [Observation(s)]])
                self.providers.append(mp)
        self.tally = fm.Tally()
        self.users = {r: set() for r in fm.REPLICAS}
        self.k: Counter = Counter()
        self.pos: Counter = Counter()
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._steady, daemon=True)

    def _next(self, kind):
        r = fm.CYCLE[self.pos[kind] % len(fm.CYCLE)]
        self.pos[kind] += 1
        self.k[(kind, r)] += 1
        return r, self.k[(kind, r)]

    def _span(self, r, name, kind, attrs, seconds, error=False):
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        span = self.tracers[r].start_span(name, kind=kind, attributes=attrs, start_time=end - int(seconds * 1e9))
        if error:
            span.set_status(Status(StatusCode.ERROR, "fleet test"))
        span.end(end_time=end)

    def http(self, user):
        from opentelemetry.trace import SpanKind

        with self.lock:
            r, k = self._next("http")
            q = fm.http_request(r, k)
            self._span(r, f"{q['method']} {q['endpoint']}", SpanKind.SERVER, {
                "http.request.method": q["method"], "http.route": q["endpoint"],
                "http.response.status_code": int(q["status"]), "enduser.id": user}, q["seconds"])
            self.tally.add_http(r, q)
            self.users[r].add(user)

    def ai(self, user):
        from opentelemetry.trace import SpanKind

        with self.lock:
            r, k = self._next("ai")
            c = fm.ai_call(r, k)
            attrs = {"gen_ai.operation.name": c["type"], "gen_ai.system": "openai",
                     "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": c["input"],
                     "enduser.id": user}
            if c["output"]:
                attrs["gen_ai.usage.output_tokens"] = c["output"]
            if c["cache_read"]:
                attrs["gen_ai.usage.cache_read.input_tokens"] = c["cache_read"]
            if c["ttfc"] is not None:
                attrs["gen_ai.response.time_to_first_chunk"] = c["ttfc"]
            if c["failed"]:
                attrs["error.type"] = "429"
            self._span(r, f"{c['type']} gpt-4o-mini", SpanKind.CLIENT, attrs, c["seconds"], c["failed"])
            self.tally.add_ai(r, c)
            self.users[r].add(user)

    def memory(self, user):
        from opentelemetry._logs import SeverityNumber

        with self.lock:
            r, k = self._next("mem")
            op = fm.memory_op(r, k)
            self.loggers[r].emit(event_name="memory_operation", body="memory_operation",
                                 severity_number=SeverityNumber.INFO,
                                 attributes={"operation": op["operation"], "status": op["status"],
                                             "user_id": user})
            self.tally.add_mem(r, op)
            self.users[r].add(user)

    def _steady(self):
        t0, i = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                for j in range(fm.HTTP_PER_TICK):
                    self.http(f"steady-{(i * 3 + j) % 25}")
                self.ai(f"steady-{(i * 7) % 25}")
                self.memory(f"steady-{(i * 11) % 25}")
                i += 1
                self._stop.wait(max(0.0, t0 + i * fm.TICK - time.monotonic()))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def burst(self, first: int, n: int):
        """n new users, user u making 1..6 requests to the replicas in turn."""
        for u in range(first, first + n):
            for _ in range(1 + (u * 7919) % 6):
                self.http(f"user-{u}")
            if (u - first) % 2_000 == 1_999:
                self.flush()
        self.flush()

    def flush(self):
        for p in self.providers[:]:
            if hasattr(p, "get_tracer") or hasattr(p, "get_logger"):
                p.force_flush(10_000)

    def distinct(self) -> int:
        with self.lock:
            return len(set().union(*self.users.values()))

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=15)
        mh.shutdown_all(p.shutdown for p in self.providers)


@pytest.fixture(scope="module")
def load(fleet):
    yield from mh.run_load(FleetLoad(fleet["grpc"]))


def _query(base, expr, at=None):
    res = mh.prom_query(base, expr, at)
    assert res.get("status") == "success", f"query refused: {res.get('error')} :: {expr}"
    return res["data"]["result"]


def _by_instance(fleet, base, expr, at=None):
    return {fleet["instance"].get(s["metric"].get("instance"), s["metric"].get("instance")): float(s["value"][1])
            for s in _query(base, expr, at)}


def _users_settled(fleet, load):
    """Each pod's exact count equals the ids sent to it, on the scraping
    Prometheus; then the fleet estimate of those same registers."""
    want: dict = {}
    got: dict = {}

    def settled():  # the steady load's 25 users may still reach a new pod
        with load.lock:
            want.update({r: len(u) for r, u in load.users.items()})
        got.clear()
        got.update(_by_instance(fleet, fleet["prom"], "active_users"))
        return got == want

    try:
        mh.wait_for(settled, 60, interval=1, what="each pod's active_users equal to the ids sent to it")
    except AssertionError:
        pytest.fail(f"per-pod active_users {got} != ids sent per replica {want} (exact per pod)")
    time.sleep(3)  # three rule evaluations on these samples
    at = time.time()
    est = _query(fleet["prom"], "geometra:active_users:fleet", at)
    summed = _query(fleet["prom"], "sum(active_users)", at)
    assert len(est) == 1 and est[0]["metric"].get("job") == JOB, est
    return want, float(est[0]["value"][1]), float(summed[0]["value"][1])


def _remote_write_estimate(fleet, scraped):
    """The remote-write Prometheus, same rules on the pushed registers, ends
    at the same estimate."""
    seen: list = []

    def same():
        res = _query(fleet["rw"], "geometra:active_users:fleet")
        seen[:] = res
        return len(res) == 1 and abs(float(res[0]["value"][1]) - scraped) <= 1e-6 * max(scraped, 1)

    try:
        mh.wait_for(same, 30, interval=1, what="the remote-write Prometheus's fleet estimate")
    except AssertionError:
        pytest.fail(f"remote write: geometra:active_users:fleet {seen} != scraped {scraped}")
    return float(seen[0]["value"][1])


def test_fleet_active_users_within_three_standard_errors(fleet, load, capsys):
    rows = []
    for name, n in PHASES:
        if n:
            load.burst(10_000_000 * len(rows), n)
        else:
            time.sleep(3)
            load.flush()
        assert not load.errors, load.errors
        per_pod, est, summed = _users_settled(fleet, load)
        truth = load.distinct()
        rw = _remote_write_estimate(fleet, est)
        rows.append((name, truth, per_pod, summed, est, rw))
        assert abs(est - truth) <= 3 * SE * truth, (
            f"{name}: fleet estimate {est:.1f} vs {truth} distinct users: off by "
            f"{100 * (est - truth) / truth:+.2f} %, more than 3 standard errors ({300 * SE:.2f} %)")
        assert summed > truth, "the load must put users on several pods"
    with capsys.disabled():
        print("\nfleet of 3 sidecars, active users (p = 10, m = 1024, 3 SE = 9.75 %):")
        print(f"  {'load':<18} {'truth':>7} {'pods a/b/c (exact)':>22} {'sum(active_users)':>18} "
              f"{'fleet estimate':>15} {'error':>8} {'remote write':>13}")
        for name, truth, pods, summed, est, rw in rows:
            pods_s = "/".join(str(pods[r]) for r in fm.REPLICAS)
            print(f"  {name:<18} {truth:>7} {pods_s:>22} {summed:>12.0f} ({summed / truth:.2f}x) "
                  f"{est:>15.1f} {100 * (est - truth) / truth:>+7.2f}% {rw:>13.1f}")


# --------------------------------------------------------------------------- every panel, every alert
def _labels(s, names):
    return tuple(s["metric"].get(n, "") for n in names)


def _close(got, want, tol, what):
    if want == 0:
        return [] if abs(got) < 1e-9 else [f"{what}: {got} (want 0)"]
    if abs(got - want) > tol * abs(want):
        return [f"{what}: {got:.4g} (truth {want:.4g}, off {100 * (got - want) / want:+.1f} %)"]
    return []


# a rate over RATE of a stream of periodic events holds its mean count
# give or take one event per stream in the window, and Prometheus
# extrapolates from the window's first and last samples: a rate of a few
# events a minute is quantized by far more than the relative tolerance
# (memory retrieve errors: 0.1/s, 6 events a window, one event is 17 %)
RATE_EVENTS = 1.5


def _event_tol(per_s: float, tol: float) -> float:
    """The relative tolerance of a figure counted from events arriving at
    `per_s` a second: `tol`, or RATE_EVENTS of them in the window when that
    is more."""
    return max(tol, RATE_EVENTS / (per_s * RATE_S)) if per_s > 0 else tol


def _compare(result, truth: dict, names, tol, what, only=False, rate=False, events=None):
    """Series of `result` keyed by `names` against `truth` (missing = 0;
    `only`: just the keys `truth` has). Given RATE_EVENTS events of slack
    over RATE: `rate`, per-second rates of the truth's own events;
    `events`, a ratio's numerator events a second, by key."""
    got = {_labels(s, names): float(s["value"][1]) for s in result}
    per_s = truth if rate else events or {}
    errs = []
    for key in set(truth) if only else set(got) | set(truth):
        t = _event_tol(per_s.get(key, 0.0), tol)
        errs += _close(got.get(key, 0.0), truth.get(key, 0.0), t, f"{what} {dict(zip(names, key))}")
    return errs


def _quantiles(result, truth: dict, names, what, buckets):
    """A quantile interpolated in a bucket moves with the bucket's share of
    the window (one slow request more or less in a 60 s window moves an AI
    p95 by a tenth), so: in the same bucket as the truth, and within 40 %.
    The average of per-pod quantiles lands buckets away (printed by the test)."""
    got = {_labels(s, names): float(s["value"][1]) for s in result}
    bucket = lambda v: next((b for b in buckets if v <= b), math.inf)  # noqa: E731
    errs = []
    for key in set(got) | set(truth):
        g, w = got.get(key, math.nan), truth.get(key, math.nan)
        if math.isnan(g) or math.isnan(w) or bucket(g) != bucket(w) or abs(g - w) > 0.4 * w:
            errs.append(f"{what} {dict(zip(names, key))}: {g:.4g} (truth {w:.4g}, bucket le={bucket(w)})")
    return errs


def _none(result, what):
    bad = [s for s in result if float(s["value"][1]) != 0]
    return [f"{what}: expected no traffic, got {bad}"] if bad else []


class Truth:
    """What every panel must show: rates from the steady load's long-run
    counts (the 60 s windows hold only steady load), ratios over longer
    windows from everything sent."""

    def __init__(self, load, fleet):
        self.steady, self.dur = fm.steady_tally()
        self.all = load.tally
        self.load, self.fleet = load, fleet

    def rate(self, counter, key):
        return {k: v / self.dur for k, v in fm.group(counter, key).items()}

    def http_quantile(self, q, counter, key=lambda lab: (), bounds=()):
        """histogram_quantile of the summed buckets; every bound of the
        histogram is there (at 0 if empty), as in Prometheus, so that a
        quantile interpolates from its bucket's own lower bound."""
        return {g: fm.quantile(q, {**dict.fromkeys(bounds, 0.0), **b})
                for g, b in fm.buckets_of(counter, key).items()}


def _panel_checks(t: Truth):
    """(panel title, refId) -> check(result) -> list of mismatches."""
    s, http, ai, mem = t.steady, t.steady.http, t.steady.ai, t.steady.mem
    err5 = lambda lab: lab[3].startswith("5")  # noqa: E731
    aerr = lambda lab: lab[2] == "error"  # noqa: E731
    bounds = lambda c: fm.HTTP_BUCKETS if c is s.http_le else fm.AI_BUCKETS  # noqa: E731
    q = lambda qq, c, key, names, what: lambda res: _quantiles(  # noqa: E731
        res, t.http_quantile(qq, c, key, bounds(c)), names, what, bounds(c))
    instances = {addr: r for r, addr in t.fleet["metrics"].items()}
    per_pod_memory = {(JOB, addr, ""): float(sum(fm.MEMORY[r])) for addr, r in instances.items()}
    per_pod_users = {(addr,): float(len(t.load.users[r])) for addr, r in instances.items()}
    distinct = t.load.distinct()
    sidecar_series = lambda res: ([] if {x["metric"].get("instance") for x in res} == set(instances)  # noqa: E731
                                  else [f"expected one series per pod, got {res}"])
    return {
        ("Request rate by endpoint", "A"): lambda r: _compare(
            r, t.rate(http, lambda lab: (lab[1], lab[2])), ("method", "endpoint"), 0.12, "requests/s", rate=True),
        ("Requests by status", "A"): lambda r: _compare(
            r, t.rate(http, lambda lab: (lab[3],)), ("status",), 0.12, "requests/s", rate=True),
        ("Error ratio (5xx)", "A"): lambda r: _compare(
            r, {(k,): v for (k,), v in fm.ratio(http, err5, lambda lab: (lab[2],)).items()},
            ("endpoint",), 0.15, "5xx ratio"),
        ("Error ratio (5xx)", "B"): lambda r: _compare(
            r, {(JOB,): fm.ratio(http, err5)[()]}, ("job",), 0.15, "5xx ratio"),
        ("Latency p50 / p95 / p99", "A"): q(0.5, s.http_le, lambda lab: (), (), "p50"),
        ("Latency p50 / p95 / p99", "B"): q(0.95, s.http_le, lambda lab: (), (), "p95"),
        ("Latency p50 / p95 / p99", "C"): q(0.99, s.http_le, lambda lab: (), (), "p99"),
        ("Latency p95 by endpoint", "A"): q(0.95, s.http_le, lambda lab: (lab[1],), ("endpoint",), "p95"),
        ("AI request rate by type", "A"): lambda r: _compare(
            r, t.rate(ai, lambda lab: (lab[1], lab[2])), ("type", "status"), 0.12, "AI requests/s", rate=True),
        ("AI failure ratio by type", "A"): lambda r: _compare(
            r, fm.ratio(ai, aerr, lambda lab: (lab[1],)), ("type",), 0.15, "AI failure ratio"),
        ("AI latency p50 / p95 / p99", "A"): q(0.5, s.ai_le, lambda lab: (lab[1],), ("type",), "AI p50"),
        ("AI latency p50 / p95 / p99", "B"): q(0.95, s.ai_le, lambda lab: (lab[1],), ("type",), "AI p95"),
        ("AI latency p50 / p95 / p99", "C"): q(0.99, s.ai_le, lambda lab: (lab[1],), ("type",), "AI p99"),
        ("Token usage", "A"): lambda r: _compare(
            r, {k: v / t.dur for k, v in s.tokens.items()}, ("type", "token_type"), 0.12, "tokens/s", rate=True),
        ("AI cost per hour by model", "A"): lambda r: _compare(
            r, {k: v / t.dur * 3600 for k, v in s.cost.items()}, ("model",), 0.12, "USD/h"),
        ("AI cost per hour by model", "B"): lambda r: _compare(r, {(): 20.0}, (), 0, "budget USD/h"),
        ("Tokens by model and type", "A"): lambda r: _compare(
            r, t.rate(s.model_tokens, lambda lab: lab), ("model", "token_type"), 0.12, "tokens/s", rate=True),
        ("Cache-read share of input tokens", "A"): lambda r: _compare(
            r, {(fm.MODEL,): s.model_tokens[(fm.MODEL, "cache_read_input")] / s.model_tokens[(fm.MODEL, "input")]},
            ("model",), 0.15, "cache-read share"),
        ("Time to first chunk p50 / p95", "A"): q(0.5, s.ttfc_le, lambda lab: (), (), "TTFC p50"),
        ("Time to first chunk p50 / p95", "B"): q(0.95, s.ttfc_le, lambda lab: (), (), "TTFC p95"),
        ("Memory operations by type", "A"): lambda r: _compare(
            r, t.rate(mem, lambda lab: (lab[1], lab[2])), ("operation", "status"), 0.12, "memory ops/s", rate=True),
        ("Memory operation failures", "A"): lambda r: _compare(
            r, fm.ratio(mem, aerr, lambda lab: (lab[1],)), ("operation",), 0.15, "memory failure ratio",
            events={(op,): v for (op, st), v in t.rate(mem, lambda lab: (lab[1], lab[2])).items() if st == "error"}),
        ("Memory size", "A"): lambda r: _compare(r, per_pod_memory, ("job", "instance", "pod"), 0, "bytes"),
        ("Active users", "A"): lambda r: _compare(r, {(JOB,): distinct}, ("job",), 3 * SE, "fleet users"),
        ("Active users", "B"): lambda r: _compare(r, per_pod_users, ("instance",), 0, "pod users"),
        ("Availability error budget burn rate", "A"): lambda r: _compare(
            r, {(JOB,): fm.ratio(t.all.http, err5)[()] / 0.005}, ("job",), 0.15, "burn rate 1h"),
        ("Availability error budget burn rate", "B"): lambda r: _compare(
            r, {(JOB,): fm.ratio(t.all.http, err5)[()] / 0.005}, ("job",), 0.15, "burn rate 6h"),
        ("Latency error budget burn rate", "A"): lambda r: _compare(
            r, {(JOB,): _slow_share(t.all) / 0.01}, ("job",), 0.15, "burn rate 1h"),
        ("Latency error budget burn rate", "B"): lambda r: _compare(
            r, {(JOB,): _slow_share(t.all) / 0.01}, ("job",), 0.15, "burn rate 6h"),
        ("Accepted items", "A"): lambda r: _compare(
            r, {("grpc",): (fm.HTTP_PER_TICK + 1) / fm.TICK}, ("transport",), 0.12, "spans/s"),
        ("Accepted items", "B"): lambda r: _compare(r, {("grpc",): 1 / fm.TICK}, ("transport",), 0.12, "logs/s"),
        ("Accepted items", "C"): lambda r: _compare(r, {("grpc",): 6.0}, ("transport",), 0.25, "points/s"),
        ("Refused items", "A"): lambda r: _none(r, "refused spans"),
        ("Refused items", "B"): lambda r: _none(r, "refused log records"),
        ("Refused items", "C"): lambda r: _none(r, "refused points"),
        ("Refused items", "D"): lambda r: _none(r, "bad requests"),
        ("Refused items", "E"): lambda r: _none(r, "in-flight refusals"),
        ("Exports and export failures", "A"): lambda r: (
            [] if {x["metric"].get("exporter") for x in r if float(x["value"][1]) > 0} == {"prometheusremotewrite"}
            else [f"remote write sends (the only exporter): {r}"]),
        ("Exports and export failures", "B"): lambda r: _none(r, "send failures"),
        ("Exports and export failures", "C"): lambda r: _none(r, "enqueue failures"),
        ("Export queue fill", "A"): lambda r: [f"queue fill out of [0, 1]: {x}" for x in r
                                               if not 0 <= float(x["value"][1]) <= 1],
        ("Series per metric", "A"): lambda r: _compare(
            r, _series_truth(t.all), ("metric",), 0, "series", only=True),
        ("Cardinality overflow", "A"): lambda r: _none(r, "overflow"),
        ("Sidecar CPU", "A"): sidecar_series,
        ("Sidecar memory", "A"): sidecar_series,
        ("Browser requests refused by reason", "A"): lambda r: _none(r, "browser refusals"),
        ("Browser token refusals (401) by reason", "A"): lambda r: _none(r, "browser 401"),
        ("Browser spans and log records accepted", "A"): lambda r: _none(r, "browser spans"),
        ("Browser spans and log records accepted", "B"): lambda r: _none(r, "browser logs"),
        ("Browser refused share (rate limit or token)", "A"): lambda r: [
            f"browser refused share without browser traffic: {x}" for x in r if not math.isnan(float(x["value"][1]))
            and float(x["value"][1]) != 0],
        ("Browser clients tracked", "A"): lambda r: _none(r, "browser clients"),
    }


def _slow_share(tally) -> float:
    total = sum(tally.http_le.values())
    return sum(v for (_, _, le), v in tally.http_le.items() if le > 1) / total


def _series_truth(tally) -> dict:
    """Series per derived metric summed over pods: each pod has a series per
    label set it saw (only the three metrics whose label sets the load fixes)."""
    out: Counter = Counter()
    for name, c, key in (("http_requests_total", tally.http, lambda lab: lab),
                         ("ai_requests_total", tally.ai, lambda lab: lab),
                         ("memory_operations_total", tally.mem, lambda lab: lab)):
        out[(name,)] = len({key(lab) for lab in c})
    return dict(out)


def _alert_truth(t: Truth) -> dict:
    """Per alert rule (name, severity): the label groups it must fire for,
    from the ratios of everything sent (every window here is longer than
    the test), and the value each condition compares."""
    http, ai, mem = t.all.http, t.all.ai, t.all.mem
    err = fm.ratio(http, lambda lab: lab[3].startswith("5"))[()]
    slow = _slow_share(t.all)
    p95 = fm.quantile(0.95, fm.buckets_of(t.all.http_le, lambda lab: ())[()])
    ai_r = fm.ratio(ai, lambda lab: lab[2] == "error", lambda lab: (lab[1],))
    mem_r = fm.ratio(mem, lambda lab: lab[2] == "error", lambda lab: (lab[1],))
    checks = [("error ratio", err, 0.05), ("p95", p95, 2.0), ("slow share", slow, 0.03), ("slow share", slow, 0.06),
              ("error ratio", err, 0.03), ("error ratio", err, 0.072)]
    checks += [(f"AI failures {k}", v, 0.10) for k, v in ai_r.items()]
    checks += [(f"memory failures {k}", v, 0.05) for k, v in mem_r.items()]
    for what, v, thr in checks:  # the load is far enough from every threshold to tell
        assert abs(v - thr) > 0.15 * thr, f"test design: {what} {v:.4f} too close to the threshold {thr}"
    one = lambda cond: {()} if cond else set()  # noqa: E731
    return {
        ("HighErrorRate", "critical"): one(err > 0.05),
        ("HighLatency", "warning"): one(p95 > 2),
        ("AIRequestFailures", "critical"): {k for k, v in ai_r.items() if v > 0.10},
        ("MemoryOperationFailures", "warning"): {k for k, v in mem_r.items() if v > 0.05},
        ("AvailabilitySLOBurnRate", "critical"): one(err > 14.4 * 0.005 or err > 6 * 0.005),
        ("AvailabilitySLOBurnRate", "warning"): one(err > 3 * 0.005 or err > 0.005),
        ("LatencySLOBurnRate", "critical"): one(slow > 14.4 * 0.01 or slow > 6 * 0.01),
        ("LatencySLOBurnRate", "warning"): one(slow > 3 * 0.01 or slow > 0.01),
    }, {"5xx ratio": (err, fm.average_of_pod_ratios(http, lambda lab: lab[3].startswith("5"))[()]),
        "slow share (> 1 s)": (slow, None), "p95 (s)": (p95, _mean([
            fm.quantile(0.95, b) for b in fm.buckets_of(t.all.http_le, lambda lab: lab[0]).values()])),
        **{f"AI failure ratio {k[0]}": (v, fm.average_of_pod_ratios(
            ai, lambda lab: lab[2] == "error", lambda lab: (lab[1],))[k]) for k, v in ai_r.items()},
        **{f"memory failure ratio {k[0]}": (v, fm.average_of_pod_ratios(
            mem, lambda lab: lab[2] == "error", lambda lab: (lab[1],))[k]) for k, v in mem_r.items()}}


def _mean(xs):
    return sum(xs) / len(xs)


_ALERT_GROUPS = {"AIRequestFailures": ("type",), "MemoryOperationFailures": ("operation",)}


def test_every_panel_and_alert_against_the_truth(fleet, load, capsys):
    """Runs after the users test: 65 s more of steady load only, then every
    dashboard query and alert expression at one instant."""
    time.sleep(65)
    assert not load.errors, load.errors
    at = time.time()
    truth = Truth(load, fleet)
    checks = _panel_checks(truth)
    failures = []
    for title, ref, expr in mh.dashboard_targets():
        check = checks.pop((title, ref), None)
        if check is None:
            failures.append(f"{title} [{ref}]: no truth in this test for the query {expr}")
            continue
        failures += [f"{title} [{ref}]: {e}" for e in check(_query(fleet["prom"], mh.grafana_expr(expr, RATE), at))]
    failures += [f"{t} [{r}]: in the test, not on the dashboard" for t, r in checks]
    want, ratios = _alert_truth(truth)
    for rule in mh.alert_rules():
        key = (rule["alert"], rule["labels"].get("severity"))
        names = _ALERT_GROUPS.get(rule["alert"], ())
        fired = {_labels(s, names) for s in _query(fleet["prom"], rule["expr"], at)}
        expected = want.pop(key, set())
        if fired != expected:
            failures.append(f"alert {key}: fires for {sorted(fired)}, the truth says {sorted(expected)}")
    failures += [f"alert {k}: in the test, not in rules.yml" for k in want]
    with capsys.disabled():
        print("\nfleet of 3 sidecars: the load's truth, and what averaging per-pod ratios would say instead")
        for what, (v, avg) in ratios.items():
            print(f"  {what:<32} truth {v:8.4f}" + (f"   average of per-pod ratios {avg:8.4f}" if avg is not None else ""))
    assert not failures, "\n".join(failures)
