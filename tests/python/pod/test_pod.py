"""What `helm install` deploys, run: the worked-example app chart's API pod under `podman kube play`.

The app chart of tests/python/helm/fixtures/geometra-app is rendered with real
Helm (helm-python-sdk), the sidecar in regular-container mode (podman 4.3
runs init containers to completion, so the native mode cannot run here; it
keeps its render tests), the FastAPI example as the API container and the
sidecar image of scripts/image.sh. Its Deployment and ConfigMap run as they
are rendered, beside a log sink in a pod of its own. Everything is checked
from outside the pods, over the pod network, as Prometheus, the kubelet and an
operator would:

- the app's requests become the contract metrics on the metrics port, the
  app exporting to the sidecar over the pod's localhost;
- the app's logs reach the sink in the other pod, which the sidecar
  addresses by a host name (the image's static glibc resolves it);
- the probes the chart declares pass (the test performs them as the kubelet
  does: podman 4.3 would run them as `curl` inside the container, and the
  image has no curl);
- the security context holds: uid 65532, read-only root filesystem, no
  capabilities, nothing written outside the queue volume (`podman diff`);
- a changed ConfigMap reaches the running sidecar: podman cannot update a
  mounted ConfigMap, so the test makes kubelet's atomic `..data` swap on the
  pod's ConfigMap volume and the new rule is in force without a restart;
- stopping the pod with the chart's grace period drains: log records queued
  while the sink was down reach it before the sidecar exits 0, within
  terminationGracePeriodSeconds. The containers are stopped as the kubelet
  does (SIGTERM to each with `podman kill`, SIGKILL at the grace period, the
  sandbox after): `podman pod stop`, and `podman stop` through the pod's exit
  policy, take the pod's network down before the sidecar drained, which no
  kubelet does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import pod_helpers as ph

import helm_python as helm  # noqa: E402  (tests/requirements.txt; missing: the collection fails)
mh = ph.mh

RELEASE = "geo"
SINK_POD = f"{ph.PREFIX}-sink"
# the sidecar forwards to the sink by this name, as to a Service: the pod's
# /etc/hosts maps it (hostAliases; podman's default network has no DNS), so
# the static binary's resolver (NSS files) is on the forwarding path
SINK_HOST = "otlp-sink.geometra.svc.cluster.local"
GRACE = 20  # terminationGracePeriodSeconds given to the chart; the drain timeout it derives: 20 - 5 (keep accepting) - 5 = 10s
CONFIG_DIR = "/etc/geometra-sidecar"
QUEUE_DIR = "/var/lib/geometra-sidecar/queue"
FIXTURE_APP = ph.ROOT / "tests" / "python" / "helm" / "fixtures" / "geometra-app"
CHART = ph.ROOT / "helm" / "geometra-sidecar"
RELOAD_RULE = {
    "name": "memory_notes_total",
    "help": "Memory operations (a rule added by the pod test's ConfigMap change)",
    "kind": "counter",
    "signal": "logs",
    "match": {"event_name": "memory_operation"},
    "labels": [{"name": "operation", "from": ["operation"], "default": "none"}],
}


# --------------------------------------------------------------------------- the chart
def app_chart(tmp: Path) -> Path:
    """The fixture app chart, copied, its file:// dependency made absolute and resolved by Helm."""
    dst = tmp / "geometra-app"
    shutil.copytree(FIXTURE_APP, dst, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = dst / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"repository: file://\S+", f"repository: file://{CHART}", chart_yaml.read_text()))
    helm.dependency_update(str(dst))
    return dst


def values(extra_rules: list | None = None) -> dict:
    return {
        "api": {"image": ph.EXAMPLE_IMAGE},
        "geometra-sidecar": {
            "sidecarMode": "container",
            "image": {"repository": ph.SIDECAR_IMAGE.split(":")[0], "tag": "dev", "pullPolicy": "Never"},
            "terminationGracePeriodSeconds": GRACE,
            "podMonitor": {"enabled": False},
            # no Secret objects here: the sink takes no token
            "forwarding": {"endpoint": f"http://{SINK_HOST}:4317", "bearerTokenSecret": {"name": ""}},
            "queue": {"persistent": True},
            "extraRules": extra_rules or [],
        },
    }


def render(chart: Path, vals: dict) -> list[dict]:
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(vals, name=RELEASE, namespace="geometra")
    return [d for p, t in sorted(manifests.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]


def api_objects(objs: list[dict]) -> tuple[dict, dict]:
    """The API's Deployment (one replica: one pod) and its sidecar's ConfigMap, as rendered."""
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-api")
    spec = dep["spec"]["template"]["spec"]
    cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v)
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name)
    dep["spec"]["replicas"] = 1
    # the app's SDK exports its logs every 5 s (the default is 1 s), so that
    # what it logs just before the pod stops is still in its batch at SIGTERM
    # and leaves only with the SDK's final flush, after the signal
    api = next(c for c in spec["containers"] if c["name"] == "api")
    api.setdefault("env", []).append({"name": "OTEL_BLRP_SCHEDULE_DELAY", "value": "5000"})
    # the kubelet restarts no container of a pod being deleted; podman's restart
    # policy would restart one that exits on the SIGTERM the drain test sends
    # (test_stopping_the_pod_drains_the_backlog_within_the_grace_period)
    spec["restartPolicy"] = "Never"
    # GEOMETRA_POD_RUST_LOG=<filter>: the sidecar's RUST_LOG (a failure's detail)
    if os.environ.get("GEOMETRA_POD_RUST_LOG"):
        side = next(c for c in spec["containers"] if c["name"] == "geometra-sidecar")
        side.setdefault("env", []).append({"name": "RUST_LOG", "value": os.environ["GEOMETRA_POD_RUST_LOG"]})
    ph.kubelet_fields(spec)
    ph.free_host_ports(spec)
    return dep, cm


# --------------------------------------------------------------------------- the pods
class Sink:
    def __init__(self, ip: str):
        self.ip = ip
        self.control = f"http://{ip}:8080"

    def records(self) -> list[dict]:
        status, body = ph.http("GET", f"{self.control}/records")
        assert status == 200, body
        return json.loads(body)

    def set(self, state: str):
        status, body = ph.http("POST", f"{self.control}/{state}")
        assert status == 200 and json.loads(body)["listening"] == (state == "up"), body


class App:
    def __init__(self, pod: str, ip: str, dep: dict, cm: dict, chart: Path, sink: Sink):
        self.pod, self.ip, self.dep, self.cm, self.chart, self.sink = pod, ip, dep, cm, chart, sink
        self.spec = dep["spec"]["template"]["spec"]
        self.sidecar = next(c for c in self.spec["containers"] if c["name"] == "geometra-sidecar")
        self.requests: dict[tuple[str, str], int] = {}

    def port(self, name: str) -> int:
        return next(p["containerPort"] for p in self.sidecar["ports"] if p["name"] == name)

    def call(self, method: str, route: str, path: str, body: dict | None = None) -> dict:
        status, raw = ph.http(method, f"http://{self.ip}:8000{path}", body, timeout=10)
        assert status == 200, f"{method} {path}: {status} {raw[:300]!r}"
        self.requests[(method, route)] = self.requests.get((method, route), 0) + 1
        return json.loads(raw)

    def store(self, user: str, text: str):
        self.call("POST", "/memory/{user_id}", f"/memory/{user}", {"text": text})

    def samples(self) -> dict[tuple, float]:
        status, body = ph.http("GET", f"http://{self.ip}:{self.port('metrics')}/metrics")
        assert status == 200, f"/metrics answered {status}"
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}

    def value(self, name: str, **labels) -> float | None:
        return self.samples().get((name, tuple(sorted(labels.items()))))

    def ctr(self, name: str) -> dict:
        return ph.container(self.pod, name)


@pytest.fixture(scope="module")
def sink(images, tmp_path_factory):
    ph.remove_pods(SINK_POD)
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": SINK_POD},
        "spec": {
            "containers": [{
                "name": "sink", "image": ph.EXAMPLE_IMAGE, "imagePullPolicy": "Never",
                "command": ["/usr/bin/python3", "/sink/otlp_sink.py"],
                "volumeMounts": [{"name": "sink", "mountPath": "/sink", "readOnly": True}],
            }],
            "volumes": [{"name": "sink", "hostPath": {"path": str(ph.HERE), "type": "Directory"}}],
        },
    }
    ph.kube_play(yaml.safe_dump(pod), tmp_path_factory.mktemp("sink") / "sink.yaml")
    s = Sink(ph.pod_ip(SINK_POD))
    mh.wait_for(lambda: s.records() == [], 30, 0.5, "the sink's control port")
    yield s
    ph.remove_pods(SINK_POD)


def volumes(dep: dict) -> list[str]:
    """The podman volumes kube play makes for the pod (named after the pod's volumes or ConfigMaps)."""
    spec = dep["spec"]["template"]["spec"]
    return [v["configMap"]["name"] if "configMap" in v else v["name"] for v in spec["volumes"]]


def remove_app(pod: str, dep: dict):
    ph.remove_pods(pod)
    ph.podman("volume", "rm", "--force", *volumes(dep), check=False)


def play_app(tmp: Path, sink: Sink) -> App:
    chart = app_chart(tmp)
    dep, cm = api_objects(render(chart, values()))
    dep["spec"]["template"]["spec"]["hostAliases"] = [{"ip": sink.ip, "hostnames": [SINK_HOST]}]
    pod = f"{dep['metadata']['name']}-pod-0"
    remove_app(pod, dep)
    out = ph.kube_play(yaml.safe_dump_all([cm, dep]), tmp / "api.yaml", "--start=false")
    assert pod in out or "Pod:" in out, out
    app = App(pod, "", dep, cm, chart, sink)
    app.started = time.monotonic()
    ph.podman("pod", "start", pod)
    app.ip = ph.pod_ip(pod)
    return app


@pytest.fixture(scope="module")
def app(sink, tmp_path_factory):
    a = play_app(tmp_path_factory.mktemp("app"), sink)
    wait_ready(a)
    yield a
    remove_app(a.pod, a.dep)


def unix(rfc3339: str) -> float:
    """An RFC 3339 time with up to nanoseconds (podman's State.StartedAt, the sidecar's log) as a Unix time."""
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert m, rfc3339
    base = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3])).timestamp()
    return base + float("0." + (m[2] or "0"))


def wait_ready(app: App):
    def ready():
        status, _ = ph.http("GET", f"http://{app.ip}:{app.port('metrics')}/readyz", timeout=1)
        return status == 200 and time.time()
    at = mh.wait_for(ready, 60, 0.01, "the sidecar's /readyz")
    print(f"\nsidecar container start -> /readyz 200: {(at - unix(app.ctr('geometra-sidecar')['State']['StartedAt'])) * 1000:.0f} ms"
          " (polled every 10 ms)")
    mh.wait_for(lambda: app.call("GET", "/health", "/health"), 60, 0.25, "the app")


def sidecar_log(app: App) -> str:
    res = ph.podman("logs", f"{app.pod}-geometra-sidecar")
    return res.stdout + res.stderr


def records_naming(sink: Sink, marks: list[str]) -> dict[str, int]:
    """How many records the sink holds that name each of `marks` (in body or attributes)."""
    texts = [json.dumps(r) for r in sink.records()]
    return {m: sum(f'"{m}"' in t or f'\\"{m}\\"' in t for t in texts) for m in marks}


def kubelet_swap(volume: Path, data: dict[str, str]):
    """What kubelet does to a mounted ConfigMap on a change: the new files in a timestamped
    directory, `..data` repointed to it by an atomic rename, each key a symlink through `..data`."""
    ts = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    ts.mkdir(mode=0o755)
    for key, text in data.items():
        (ts / key).write_text(text)
        (ts / key).chmod(0o644)
    os.symlink(ts.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    for key in data:
        os.symlink(f"..data/{key}", volume / f"{key}.tmp")
        os.rename(volume / f"{key}.tmp", volume / key)


# --------------------------------------------------------------------------- tests
def test_app_requests_become_contract_metrics(app):
    for user, msg in [("u1", "hello there"), ("u2", "what did I store yesterday"), ("u1", "thanks")]:
        app.call("POST", "/chat", "/chat", {"user_id": user, "message": msg})
    app.store("u1", "likes tea")
    want = {
        ("ai_requests_total", (("status", "success"), ("type", "chat"))): 3,
        ("memory_operations_total", (("operation", "store"), ("status", "success"))): 1,
        ("active_users", ()): 2,
    }
    for (method, route), n in app.requests.items():
        want[("http_requests_total", (("endpoint", route), ("method", method), ("status", "200")))] = n

    def exact():
        s = app.samples()
        return all(s.get(k) == v for k, v in want.items()) and s
    s = mh.wait_for(exact, 60, 0.5, f"the contract metrics {want}")
    # the app exported to the sidecar over the pod's localhost (OTLP/gRPC, the fixture's env)
    assert s[("otelcol_receiver_accepted_spans_total", (("receiver", "otlp"), ("transport", "grpc")))] > 0


def test_app_logs_reach_the_sink_in_another_pod(app):
    """...addressed by a host name (the pod's /etc/hosts), resolved by the image's static glibc."""
    forward = yaml.safe_load(app.cm["data"]["config.yaml"])["forward"]
    endpoints = {v["endpoint"] for v in forward.values() if isinstance(v, dict) and "endpoint" in v}
    assert endpoints == {f"http://{SINK_HOST}:4317"}, forward
    hosts = Path(f"/proc/{app.ctr('geometra-sidecar')['State']['Pid']}/root/etc/hosts").read_text()
    assert re.search(rf"^{re.escape(app.sink.ip)}\s+.*\b{re.escape(SINK_HOST)}\b", hosts, re.M), hosts
    app.store("sink-check", "a note for the downstream")
    got = mh.wait_for(lambda: records_naming(app.sink, ["sink-check"])["sink-check"] == 1 and app.sink.records(),
                      30, 0.5, "the app's log record at the sink")
    rec = next(r for r in got if "sink-check" in json.dumps(r))
    assert "memory_operation" in json.dumps(rec)


def test_probes_pass_as_the_chart_declares_them(app):
    declared = {k: app.sidecar[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert declared == {"startupProbe": "/readyz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for kind in declared:
        probe = app.sidecar[kind]
        get = probe["httpGet"]
        port = app.port(get["port"]) if isinstance(get["port"], str) else get["port"]
        for _ in range(probe.get("failureThreshold", 3)):
            status, _ = ph.http("GET", f"http://{app.ip}:{port}{get['path']}", timeout=probe.get("timeoutSeconds", 1))
            assert 200 <= status < 400, f"{kind} {get['path']} answered {status}"
    assert app.ctr("geometra-sidecar")["RestartCount"] == 0


def test_security_context_holds(app):
    sc = app.sidecar["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["readOnlyRootFilesystem"]) == (65532, 65532, True)
    c = app.ctr("geometra-sidecar")
    assert c["HostConfig"]["ReadonlyRootfs"] is True
    status = Path(f"/proc/{c['State']['Pid']}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split() == ["65532"] * 4 and fields["Gid"].split() == ["65532"] * 4
    assert int(fields["CapEff"], 16) == 0 and fields["NoNewPrivs"] == "1"
    mounts = Path(f"/proc/{c['State']['Pid']}/mountinfo").read_text().splitlines()
    root = next(m.split() for m in mounts if m.split()[4] == "/")
    assert "ro" in root[5].split(","), root
    # the queue volume is where it writes (the disk queue under forwarded logs), and only there
    queue = next(m for m in c["Mounts"] if m["Destination"] == QUEUE_DIR)
    written = [p for p in Path(queue["Source"]).rglob("*") if p.is_file()]
    assert written and all(p.stat().st_uid == 65532 for p in written), written
    # the container's own layer: only the mount points the engine made for the
    # pod's volumes (and their parents), nothing the sidecar wrote
    changed = {line.split(" ", 1)[1] for line in ph.podman("diff", c["Id"]).stdout.splitlines()}
    mount_points = {str(Path(m["Destination"])) for m in c["Mounts"]}
    made = {str(a) for d in mount_points for a in [Path(d), *Path(d).parents] if str(a) != "/"}
    assert changed <= made, f"written outside the volumes: {sorted(changed - made)}"
    assert all(line[0] in "AC" and Path(line[2:]).is_absolute() for line in ph.podman("diff", c["Id"]).stdout.splitlines())


def test_changed_configmap_reaches_the_running_sidecar(app):
    c = app.ctr("geometra-sidecar")
    volume = Path(next(m for m in c["Mounts"] if m["Destination"] == CONFIG_DIR)["Source"])
    assert (volume / "config.yaml").read_text() == app.cm["data"]["config.yaml"]
    _, new_cm = api_objects(render(app.chart, values([RELOAD_RULE])))
    assert yaml.safe_load(new_cm["data"]["config.yaml"])["extra_rules"][0]["name"] == RELOAD_RULE["name"]
    ok = (("result", "success"),)
    before = app.samples().get(("geometra_sidecar_config_reloads_total", ok), 0)
    kubelet_swap(volume, new_cm["data"])
    try:
        mh.wait_for(lambda: app.samples().get(("geometra_sidecar_config_reloads_total", ok)) == before + 1,
                    30, 0.5, "the reload of the swapped ConfigMap")
    except AssertionError as e:
        reloads = {k: v for k, v in app.samples().items() if "reload" in k[0]}
        raise AssertionError(f"{e}\nreload series: {reloads}\nsidecar log:\n{sidecar_log(app)[-3000:]}") from None
    app.store("reloaded-user", "counted by the new rule")
    mh.wait_for(lambda: app.value("memory_notes_total", operation="store") == 1, 30, 0.5,
                "the new rule's series")
    assert app.ctr("geometra-sidecar")["RestartCount"] == 0
    assert app.value("geometra_sidecar_config_last_reload_successful") == 1


def queued_bytes(app: App) -> float:
    return sum(v for (n, _), v in app.samples().items() if n == "otelcol_exporter_queue_size")


def test_stopping_the_pod_drains_the_backlog_within_the_grace_period(app):
    """Records queued while the sink is down reach it during the drain SIGTERM starts, before the
    sidecar exits 0, within the pod's terminationGracePeriodSeconds; so do the records the app
    logged just before the pod stopped, which its SDK exports only after the SIGTERM both
    containers get (the sidecar keeps accepting for 5 s in container mode)."""
    assert app.spec["terminationGracePeriodSeconds"] == GRACE
    config = yaml.safe_load(app.cm["data"]["config.yaml"])
    assert config["forward"]["drain_timeout"] == f"{GRACE - 10}s"
    assert config["receivers"]["keep_accepting_for"] == "5s"
    marks = [f"drain-{i}" for i in range(20)]
    app.sink.set("down")
    accepted = ("otelcol_receiver_accepted_log_records_total", (("receiver", "otlp"), ("transport", "grpc")))
    before = app.samples()[accepted]
    for m in marks:
        app.store(m, "queued while the sink is down")
    mh.wait_for(lambda: app.samples()[accepted] >= before + len(marks) and queued_bytes(app) > 0, 30, 0.25,
                "the sidecar to accept and queue the records")
    # as the kubelet deletes a pod: SIGTERM to every container at once, SIGKILL
    # after the grace period, the pod's sandbox (podman's infra container,
    # which holds the network) torn down only after they all exited. Not
    # `podman stop`: podman 4.3 counts a container being stopped as not
    # running, and the pod's exit policy then stops the pod, network included,
    # as soon as the app exited, in the middle of the sidecar's drain
    # (docs/deployment.md). So SIGTERM goes with `podman kill` (the pod plays
    # with restartPolicy Never, as the kubelet restarts nothing of a pod being
    # deleted), SIGKILL at the grace period from here.
    late = [f"late-{i}" for i in range(5)]
    for m in late:
        app.store(m, "logged just before the pod stops")
    ctrs = [f"{app.pod}-{c['name']}" for c in app.spec["containers"]]
    t0, t0_wall = time.monotonic(), time.time()
    ph.podman("kill", "--signal", "TERM", *ctrs)
    # SIGTERM reached the sidecar: it drains, and answers not ready meanwhile
    mh.wait_for(lambda: ph.http("GET", f"http://{app.ip}:{app.port('metrics')}/readyz", timeout=1)[0] == 503,
                10, 0.05, "/readyz 503 (draining)")
    assert set(records_naming(app.sink, marks + late).values()) == {0}, "delivered before the drain"
    app.sink.set("up")
    while time.monotonic() - t0 < GRACE and app.ctr("geometra-sidecar")["State"]["Status"] != "exited":
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    # as the kubelet once the containers exited or the grace period is over:
    # SIGKILL to whatever still runs, then the sandbox
    ph.podman("kill", "--signal", "KILL", *ctrs, check=False)
    ph.podman("pod", "stop", app.pod)
    c = app.ctr("geometra-sidecar")
    assert (c["State"]["Status"], c["State"]["ExitCode"]) == ("exited", 0), \
        f"{c['State']}\nsidecar log:\n{sidecar_log(app)[-3000:]}"
    delivered = records_naming(app.sink, marks + late)
    assert delivered == {m: 1 for m in marks + late}, \
        f"after {elapsed:.1f}s: {delivered}\nsidecar log:\n{sidecar_log(app)[-3000:]}"
    assert elapsed < GRACE, f"the pod took {elapsed:.1f}s to stop, past its grace period {GRACE}s"
    log = sidecar_log(app)
    at = {r["message"]: r["timestamp"] for r in map(json.loads, re.findall(r"^\{.*\}$", log, re.M))}
    keep = "not ready; still accepting for receivers.keep_accepting_for, then draining"
    assert {keep, "forward queue drained", "stopped"} <= set(at), log[-2000:]
    drained = unix(at["forward queue drained"]) - unix(at["stopping: no new requests, finishing in-flight ones"])
    exits = {n: unix(ph.container(app.pod, n)["State"]["FinishedAt"]) - t0_wall
             for n in (c["name"] for c in app.spec["containers"])}
    print("\n" + "\n".join(f"  sidecar {t}: {m}" for m, t in sorted(at.items(), key=lambda x: x[1])
                            if unix(t) >= t0_wall - 1))
    print(f"\npod stop with a backlog of {len(marks)} records (sink back during the drain): {elapsed:.2f}s;"
          f" the sidecar's drain (its log, end of keep_accepting_for to queue drained): {drained:.2f}s;"
          f" exits after SIGTERM: {', '.join(f'{n} {t:.2f}s' for n, t in exits.items())}")
