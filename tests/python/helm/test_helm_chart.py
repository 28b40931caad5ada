"""Tests of the geometra-sidecar Helm chart, without a cluster.

Real Helm (helm-python-sdk: Helm v4's Go code compiled into the package, no
helm binary, no network) lints and renders the chart; every rendered object is
validated against Kubernetes' own schemas (kubernetes-validate, strict, a fixed
Kubernetes version); PodMonitor objects (a CRD) are checked structurally.
The rendered config.yaml must pass the `check-config` of the binary that
GEOMETRA_SIDECAR_BIN names (scripts/test.sh sets it).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

# tests/requirements.txt installs both; a missing one fails the collection
# (a chart suite that skipped itself would pass having checked nothing)
import helm_python as helm  # noqa: E402
import kubernetes_validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "geometra-sidecar"
FIXTURE_APP = Path(__file__).resolve().parent / "fixtures" / "geometra-app"
KUBE_VERSION = "1.30.0"
RELEASE = "geo"
NAMESPACE = "geometra"

SIDECAR = "geometra-sidecar"
CONFIG_PATH = "/etc/geometra-sidecar/config.yaml"
QUEUE_DIR = "/var/lib/geometra-sidecar/queue"


def load_example(name: str) -> dict:
    return yaml.safe_load((CHART / "examples" / name).read_text())


FORWARDING = {
    "forwarding": {
        "endpoint": "http://otel-gateway.observability:4317",
        "headers": {"X-Scope-OrgID": "geometra"},
        "logs": {"enabled": True},
        "traces": {"enabled": True, "endpoint": "http://tempo.observability:4317"},
        "metrics": {"enabled": True},
        "bearerTokenSecret": {"name": "otel-gateway-token", "key": "token"},
    }
}
EXTRA_RULES = {
    "extraRules": [
        {
            "name": "chat_feedback_total",
            "help": "Chat feedback given by users",
            "kind": "counter",
            "signal": "logs",
            "match": {"event_name": "chat_feedback"},
            "labels": [{"name": "rating", "from": ["rating"], "default": "none"}],
        }
    ]
}
FULL = {
    **copy.deepcopy(FORWARDING),
    **EXTRA_RULES,
    "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "queue": {"persistent": True},
    "limits": {"maxInFlightBytesPerConnection": 16 << 20},
    "redaction": load_example("values-redaction.yaml")["redaction"],
    "otlp": {"http": {"listen": "0.0.0.0:4318", "corsAllowedOrigins": ["https://app.geometra.example"]}},
    "telemetry": {"otlp": {"endpoint": "http://otel-collector.observability:4318", "protocol": "http"}},
}
FULL["forwarding"]["tls"] = {"secretName": "otel-gateway-ca", "caKey": "ca.crt"}

RW_URL = "https://mimir.example.com/api/v1/push"
# the three ways to give remote write its URL and credentials
REMOTE_WRITE = {
    "remoteWrite": {
        "url": RW_URL,
        "interval": "30s",
        "timeout": "10s",
        "externalLabels": {"cluster": "eu-1"},
        "headers": {"X-Scope-OrgID": "geometra"},
        "bearerTokenSecret": {"name": "mimir-rw-token", "key": "rw-token"},
    }
}
REMOTE_WRITE_URL_SECRET = {  # a URL that carries tenant credentials: from a Secret, via the environment
    "remoteWrite": {
        "urlSecret": {"name": "mimir-rw-url", "key": "push-url"},
        "interval": "30s",
        "bearerTokenSecret": {"name": "mimir-rw-token", "key": "token"},
    }
}
REMOTE_WRITE_BASIC_AUTH = {
    "remoteWrite": {
        "url": RW_URL,
        "basicAuth": {"username": "geometra", "passwordSecret": {"name": "mimir-rw", "key": "password"}},
        "tls": {"secretName": "mimir-ca", "caKey": "ca.crt"},
    }
}
FULL["remoteWrite"] = copy.deepcopy(REMOTE_WRITE["remoteWrite"])

BROWSER_FULL = {
    "browser": {
        "enabled": True,
        "port": 4320,
        "serviceName": "geometra-web-eu",
        "corsAllowedOrigins": ["https://app.geometra.example", "https://*.geometra.example"],
        "corsAllowedHeaders": ["x-tenant-id"],
        "corsMaxAge": 600,
        "trustedProxies": ["10.0.0.0/8", "fd00::/8", "192.168.1.1"],
        "rateLimit": {
            "requestsPerSecond": 2.5,
            "burst": 10,
            "itemsPerSecond": 250,
            "globalItemsPerSecond": 5000,
            "maxClients": 1000,
            "ipv6Prefix": 56,
        },
        "limits": {
            "maxBodyBytes": 131072,
            "maxItemsPerRequest": 100,
            "maxAttributesPerItem": 32,
            "maxAttributeValueBytes": 1024,
        },
        "auth": {
            "secret": {"name": "geometra-browser-jwt", "key": "hs256"},
            "audience": "geometra-sidecar",
            "clockSkew": "10s",
            "rotationOverlap": "1h",
        },
        "service": {"annotations": {"example.com/team": "web"}},
    }
}

SCENARIOS: dict[str, dict | None] = {
    "default": None,
    "container-mode": {"sidecarMode": "container"},
    "podmonitor": {"podMonitor": {"enabled": True}},
    "disk-queue-emptydir": {"queue": {"persistent": True}},
    "disk-queue-ephemeral": {
        "queue": {"persistent": True, "volume": {"type": "ephemeral", "size": "2Gi", "storageClassName": "fast"}}
    },
    "disk-queue-pvc": {"queue": {"persistent": True, "volume": {"type": "persistentVolumeClaim", "claimName": "q"}}},
    "forwarding-token": FORWARDING,
    "redaction": load_example("values-redaction.yaml"),
    "extra-rules": EXTRA_RULES,
    "http-receiver-off": {"otlp": {"http": {"enabled": False}}},
    "no-demo": {"demo": {"enabled": False}},
    "remote-write": REMOTE_WRITE,
    "remote-write-url-secret": REMOTE_WRITE_URL_SECRET,
    "remote-write-basic-auth": REMOTE_WRITE_BASIC_AUTH,
    "full": FULL,
    "browser": {"browser": {"enabled": True}},
    "browser-full": BROWSER_FULL,
    "browser-no-demo": {"demo": {"enabled": False},
                        "browser": {"enabled": True, "service": {"selector": {"app": "frontend"}}}},
    "browser-no-service": {"browser": {"enabled": True, "service": {"enabled": False}}},
    "example-frontend": load_example("values-frontend.yaml"),
    "example-production": load_example("values-production.yaml"),
    "example-remote-write": load_example("values-remote-write.yaml"),
}


# ---------------------------------------------------------------- helpers


def render(values: dict | None = None, chart: Path = CHART) -> list[dict]:
    """Render with real Helm; return every Kubernetes object (NOTES.txt skipped)."""
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(values, name=RELEASE, namespace=NAMESPACE)
    objs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__template", path)
                objs.append(doc)
    return objs


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__template"}


def only(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(objs: list[dict], name: str | None = None) -> dict:
    return only(objs, "Deployment", name)["spec"]["template"]["spec"]


def sidecar_of(spec: dict) -> tuple[dict, str]:
    """The sidecar container and where it is ('initContainers' or 'containers')."""
    hits = [
        (c, where)
        for where in ("initContainers", "containers")
        for c in spec.get(where) or []
        if c["name"] == SIDECAR
    ]
    assert len(hits) == 1, f"sidecar found {len(hits)} times"
    return hits[0]


def config_of(objs: list[dict], name: str | None = None) -> tuple[dict, str]:
    cm = only(objs, "ConfigMap", name)
    text = cm["data"]["config.yaml"]
    return yaml.safe_load(text), text


POD_MONITOR_SPEC_KEYS = {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"}
POD_MONITOR_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings", "scheme",
                             "honorLabels"}
RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def check_pod_monitor(pm: dict) -> None:
    """Structural check of a PodMonitor (monitoring.coreos.com/v1 CRD, not in Kubernetes' schemas)."""
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pm) <= {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", pm["metadata"]["name"])
    spec = pm["spec"]
    assert set(spec) <= POD_MONITOR_SPEC_KEYS, set(spec) - POD_MONITOR_SPEC_KEYS
    labels = spec["selector"]["matchLabels"]
    assert labels and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    assert all(isinstance(n, str) for n in spec["namespaceSelector"]["matchNames"])
    assert spec["podMetricsEndpoints"]
    for ep in spec["podMetricsEndpoints"]:
        assert set(ep) <= POD_MONITOR_ENDPOINT_KEYS, set(ep) - POD_MONITOR_ENDPOINT_KEYS
        assert isinstance(ep["port"], str)
        assert ep["path"].startswith("/")
        assert DURATION.match(ep["interval"]) and DURATION.match(ep["scrapeTimeout"])
        for r in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
            assert set(r) <= RELABEL_KEYS, set(r) - RELABEL_KEYS
            assert r.get("action", "replace") in {"replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod"}


def validate_all(objs: list[dict]) -> None:
    assert objs, "nothing rendered"
    seen = set()
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in seen, f"duplicate object {key}"
        seen.add(key)
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            check_pod_monitor(strip(obj))
            continue
        try:
            kubernetes_validate.validate(strip(obj), KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:  # pragma: no cover - message on failure
            pytest.fail(f"{obj['__template']}: {obj['kind']} {obj['metadata']['name']}: {e.message} at {list(e.path)}")


def lint_errors(chart: Path, values: dict | None, **kw) -> list[str]:
    report = helm.lint(str(chart), values, strict=True, kube_version="v" + KUBE_VERSION, **kw)
    # severity 2 = warning, 3 = error; --strict fails on warnings too
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report.get("errors") or [])


# ---------------------------------------------------------------- lint, render, validate


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario):
    assert lint_errors(CHART, SCENARIOS[scenario]) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_render_valid_kubernetes_objects(scenario):
    validate_all(render(SCENARIOS[scenario]))


def test_default_render_objects():
    objs = render()
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == [
        ("ConfigMap", f"{RELEASE}-geometra-sidecar-config"),
        ("Deployment", f"{RELEASE}-geometra-sidecar-demo"),
    ]


def test_image_tag_follows_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == chart["appVersion"]


# ---------------------------------------------------------------- the pod


def test_native_sidecar_is_default():
    spec = pod_spec(render())
    sidecar, where = sidecar_of(spec)
    assert where == "initContainers"
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["demo-app"]
    assert sidecar["image"] == "geometra/geometra-sidecar:0.1.0"


def test_container_mode():
    spec = pod_spec(render({"sidecarMode": "container"}))
    sidecar, where = sidecar_of(spec)
    assert where == "containers"
    assert "restartPolicy" not in sidecar
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["demo-app", SIDECAR]


@pytest.mark.parametrize("mode", ["native", "container"])
def test_security_context_hardened(mode):
    spec = pod_spec(render({"sidecarMode": mode}))
    sc = sidecar_of(spec)[0]["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_resources():
    res = sidecar_of(pod_spec(render()))[0]["resources"]
    assert res == {"requests": {"cpu": "25m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}


@pytest.mark.parametrize("mode", ["native", "container"])
def test_probes_and_ports(mode):
    c = sidecar_of(pod_spec(render({"sidecarMode": mode})))[0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 9464}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_listen_addresses_in_config():
    cfg, _ = config_of(render())
    # both loopbacks by default: the SDKs' localhost may resolve to ::1
    assert cfg["receivers"]["otlp_grpc"]["listen"] == "localhost:4317"
    assert cfg["receivers"]["otlp_http"]["listen"] == "localhost:4318"
    assert cfg["receivers"]["otlp_http"]["cors_allowed_headers"] == []
    assert cfg["receivers"]["otlp_http"]["cors_max_age"] == 7200
    assert cfg["server"]["listen"] == "0.0.0.0:9464"

    # the front end example: browsers on the browser listener, the in-pod
    # receivers on loopback without CORS (whatever reaches them is trusted)
    cfg, _ = config_of(render(load_example("values-frontend.yaml")))
    assert cfg["receivers"]["otlp_http"]["listen"] == "localhost:4318"
    assert cfg["receivers"]["otlp_http"]["cors_allowed_origins"] == []
    assert cfg["receivers"]["browser"]["listen"] == "0.0.0.0:4319"
    assert cfg["receivers"]["browser"]["cors_allowed_origins"] == ["https://app.geometra.example"]
    assert cfg["receivers"]["browser"]["cors_allowed_headers"] == ["x-tenant-id"]

    objs = render({"otlp": {"http": {"enabled": False}}})
    cfg, _ = config_of(objs)
    assert cfg["receivers"]["otlp_http"]["listen"] is None
    ports = [p["name"] for p in sidecar_of(pod_spec(objs))[0]["ports"]]
    assert ports == ["otlp-grpc", "metrics"]


def test_config_mounted_and_passed():
    objs = render()
    spec = pod_spec(objs)
    c = sidecar_of(spec)[0]
    assert f"--config={CONFIG_PATH}" in c["args"]
    cm = only(objs, "ConfigMap")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(CONFIG_PATH))
    assert mount["readOnly"] is True
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert vol["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]
    # no writable mount by default (read-only root filesystem, no queue)
    assert all(m.get("readOnly") for m in c["volumeMounts"])
    assert not any(a.startswith("--queue-dir") for a in c["args"])


def test_config_changes_do_not_roll_pods_by_default():
    # the sidecar reloads the mounted ConfigMap in place: no checksum annotation
    ann = only(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("checksum/") for k in ann)
    assert ann["prometheus.io/scrape"] == "true"
    changed = render({"rules": [], "limits": {"maxSeriesPerMetric": 500}})
    assert only(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"] == ann


def test_checksum_annotation_follows_config_when_opted_in():
    roll = {"rollOnConfigChange": True}
    objs = render(roll)
    ann = only(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    _, text = config_of(objs)
    assert ann["checksum/geometra-sidecar-config"] == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()

    changed = render({**roll, "limits": {"maxSeriesPerMetric": 500}})
    ann2 = only(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann2["checksum/geometra-sidecar-config"] != ann["checksum/geometra-sidecar-config"]
    assert config_of(changed)[0]["store"]["max_series_per_metric"] == 500

    same = render({**roll, "demo": {"replicas": 3}})
    ann3 = only(same, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann3["checksum/geometra-sidecar-config"] == ann["checksum/geometra-sidecar-config"]


def test_store_and_depth_limits_reach_the_config():
    cfg, _ = config_of(render())
    assert cfg["store"]["max_series"] == 50000
    assert cfg["store"]["max_series_bytes"] == 8 << 20
    assert cfg["store"]["max_label_value_bytes"] == 2048
    assert cfg["store"]["max_passthrough_families"] == 1000
    assert cfg["store"]["passthrough_share_percent"] == 50
    # processes of one service keep their own pass-through series by default
    assert cfg["passthrough"]["resource_labels"] is True
    off, _ = config_of(render({"passthrough": {"resourceLabels": False}}))
    assert off["passthrough"]["resource_labels"] is False
    assert cfg["receivers"]["max_value_depth"] == 24
    assert cfg["receivers"]["max_in_flight_bytes"] == 32 << 20
    # unset, the sidecar's default share follows the budget and the message limits
    assert "max_in_flight_bytes_per_connection" not in cfg["receivers"]
    v = {
        "limits": {
            "maxSeries": 7,
            "maxValueDepth": 5,
            "maxInFlightBytes": 8 << 20,
            "maxInFlightBytesPerConnection": 6 << 20,
            "passthroughSharePercent": 20,
        }
    }
    cfg, _ = config_of(render(v))
    assert cfg["store"]["max_series"] == 7
    assert cfg["store"]["passthrough_share_percent"] == 20
    assert cfg["receivers"]["max_value_depth"] == 5
    assert cfg["receivers"]["max_in_flight_bytes"] == 8 << 20
    assert cfg["receivers"]["max_in_flight_bytes_per_connection"] == 6 << 20


def test_native_histogram_values_reach_the_config():
    cfg, _ = config_of(render())
    assert cfg["store"]["histograms"] == "classic"
    assert cfg["store"]["native_histogram_schema"] == 3
    assert cfg["store"]["native_histogram_max_buckets"] == 160
    v = {"metrics": {"histograms": "both", "nativeHistogramSchema": -2}}
    cfg, _ = config_of(render(v))
    assert cfg["store"]["histograms"] == "both"
    assert cfg["store"]["native_histogram_schema"] == -2


def test_telemetry_otlp_reaches_the_config():
    cfg, _ = config_of(render())
    assert "otlp" not in cfg["telemetry"], "off unless an endpoint is set"
    v = {
        "telemetry": {
            "otlp": {
                "endpoint": "http://otel-collector.observability:4318",
                "protocol": "http",
                "headers": {"X-Scope-OrgID": "geometra"},
                "interval": "15s",
                "resource": {"team": "obs"},
            }
        }
    }
    cfg, _ = config_of(render(v))
    assert cfg["telemetry"]["otlp"] == {
        "endpoint": "http://otel-collector.observability:4318",
        "protocol": "http",
        "headers": {"X-Scope-OrgID": "geometra"},
        "interval": "15s",
        "timeout": "10s",
        "resource": {"team": "obs"},
    }
    # the log settings stay beside it
    assert cfg["telemetry"]["log_level"] == "info"
    cfg, _ = config_of(render({"telemetry": {"otlp": {"endpoint": "http://c:4317"}}}))
    assert cfg["telemetry"]["otlp"] == {
        "endpoint": "http://c:4317",
        "protocol": "grpc",
        "interval": "60s",
        "timeout": "10s",
    }


def test_scrape_annotations():
    ann = only(render(), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "9464"
    assert ann["prometheus.io/path"] == "/metrics"
    off_objs = render({"scrapeAnnotations": {"enabled": False}})
    # nothing left to annotate (no checksum either by default): still a valid pod
    validate_all(off_objs)
    off = only(off_objs, "Deployment")
    assert not any(k.startswith("prometheus.io/") for k in off["spec"]["template"]["metadata"]["annotations"] or {})


def test_pod_monitor():
    assert not [o for o in render() if o["kind"] == "PodMonitor"]
    objs = render({"podMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    pm = only(objs, "PodMonitor")
    check_pod_monitor(strip(pm))
    assert pm["metadata"]["labels"]["release"] == "prom"
    dep = only(objs, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ep = pm["spec"]["podMetricsEndpoints"][0]
    port_names = [p["name"] for p in sidecar_of(dep["spec"]["template"]["spec"])[0]["ports"]]
    assert ep["port"] == "metrics" and ep["port"] in port_names
    assert ep["path"] == "/metrics"
    # the job label the alert rules in monitoring/ select on
    assert {"action": "replace", "targetLabel": "job", "replacement": "geometra-sidecar"} in ep["relabelings"]
    # the pod's job/instance win over the app processes' (exported_job / exported_instance)
    assert ep["honorLabels"] is False


def test_pod_monitor_needs_selector_without_demo():
    with pytest.raises(helm.HelmRenderError, match="podMonitor.selector"):
        render({"demo": {"enabled": False}, "podMonitor": {"enabled": True}})
    objs = render({"demo": {"enabled": False}, "podMonitor": {"enabled": True, "selector": {"app": "api"}}})
    assert only(objs, "PodMonitor")["spec"]["selector"]["matchLabels"] == {"app": "api"}


@pytest.mark.parametrize(
    "volume, expect",
    [
        ({}, "emptyDir"),
        ({"type": "ephemeral", "size": "2Gi"}, "ephemeral"),
        ({"type": "persistentVolumeClaim", "claimName": "sidecar-queue"}, "persistentVolumeClaim"),
    ],
)
def test_disk_queue(volume, expect):
    spec = pod_spec(render({"queue": {"persistent": True, "volume": volume}}))
    c = sidecar_of(spec)[0]
    assert f"--queue-dir={QUEUE_DIR}" in c["args"]
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == [QUEUE_DIR]
    vol = next(v for v in spec["volumes"] if v["name"] == writable[0]["name"])
    assert expect in vol
    if expect == "emptyDir":
        # the volume must hold the disk queue's whole cap (queue.maxDiskBytes) plus a segment
        limit = vol["emptyDir"]["sizeLimit"]
        assert limit == "3Gi"
        assert (3 << 30) > yaml.safe_load((CHART / "values.yaml").read_text())["queue"]["maxDiskBytes"]
    if expect == "persistentVolumeClaim":
        assert vol["persistentVolumeClaim"]["claimName"] == "sidecar-queue"


def test_disk_queue_claim_name_required():
    with pytest.raises(helm.HelmRenderError, match="claimName"):
        render({"queue": {"persistent": True, "volume": {"type": "persistentVolumeClaim"}}})


def test_forwarding_with_token_secret():
    objs = render(FORWARDING)
    cfg, text = config_of(objs)
    fwd = cfg["forward"]
    assert fwd["logs"]["endpoint"] == "http://otel-gateway.observability:4317"
    assert fwd["metrics"]["endpoint"] == "http://otel-gateway.observability:4317"
    assert fwd["traces"]["endpoint"] == "http://tempo.observability:4317"
    assert fwd["logs"]["headers"] == {"X-Scope-OrgID": "geometra"}
    token_file = fwd["logs"]["bearer_token_file"]
    assert {fwd[s]["bearer_token_file"] for s in ("logs", "traces", "metrics")} == {token_file}
    spec = pod_spec(objs)
    c = sidecar_of(spec)[0]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(token_file))
    assert mount["readOnly"] is True
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "otel-gateway-token"
    assert vol["secret"]["items"] == [{"key": "token", "path": os.path.basename(token_file)}]
    # no Secret rendered, no token inlined
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert "Authorization" not in text


def test_forwarding_needs_endpoint():
    with pytest.raises(helm.HelmRenderError, match="forwarding.logs.enabled"):
        render({"forwarding": {"logs": {"enabled": True}}})


def test_forwarding_tls():
    objs = render(FULL)
    cfg, _ = config_of(objs)
    tls = cfg["forward"]["logs"]["tls"]
    assert set(tls) == {"ca_file"}
    spec = pod_spec(objs)
    mount = next(m for m in sidecar_of(spec)[0]["volumeMounts"] if m["mountPath"] == os.path.dirname(tls["ca_file"]))
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "otel-gateway-ca"


def env_of(container: dict, name: str) -> dict | None:
    hits = [e for e in container.get("env") or [] if e["name"] == name]
    assert len(hits) <= 1, f"{name} set {len(hits)} times"
    return hits[0] if hits else None


def secret_mount(spec: dict, path: str) -> tuple[dict, dict]:
    """The read-only mount holding the file `path` and its Secret volume."""
    c = sidecar_of(spec)[0]
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(path)]
    assert len(mounts) == 1, f"{path}: {len(mounts)} mounts of its directory"
    vol = next(v for v in spec["volumes"] if v["name"] == mounts[0]["name"])
    return mounts[0], vol


def test_remote_write_off_by_default():
    objs = render()
    cfg, _ = config_of(objs)
    assert "remote_write" not in cfg
    spec = pod_spec(objs)
    assert env_of(sidecar_of(spec)[0], "GEOMETRA_REMOTE_WRITE_URL") is None
    assert not [v for v in spec["volumes"] if "remote-write" in v["name"]]


def test_remote_write_with_url_and_token_secret():
    objs = render(REMOTE_WRITE)
    cfg, text = config_of(objs)
    token_file = cfg["remote_write"]["bearer_token_file"]
    assert cfg["remote_write"] == {
        "url": RW_URL,
        "interval": "30s",
        "timeout": "10s",
        "external_labels": {"cluster": "eu-1"},
        "headers": {"X-Scope-OrgID": "geometra"},
        "bearer_token_file": token_file,
    }
    spec = pod_spec(objs)
    mount, vol = secret_mount(spec, token_file)
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "mimir-rw-token"
    assert vol["secret"]["items"] == [{"key": "rw-token", "path": os.path.basename(token_file)}]
    # a plain URL lives in the ConfigMap (reloadable); no variable overrides it
    assert env_of(sidecar_of(spec)[0], "GEOMETRA_REMOTE_WRITE_URL") is None
    # no Secret rendered, no credential inlined
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert "Authorization" not in text
    # defaults of the section
    cfg, _ = config_of(render({"remoteWrite": {"url": RW_URL}}))
    assert cfg["remote_write"] == {"url": RW_URL, "interval": "15s", "timeout": "30s"}


def test_remote_write_url_from_secret():
    objs = render(REMOTE_WRITE_URL_SECRET)
    cfg, text = config_of(objs)
    rw = cfg["remote_write"]
    # no url in the ConfigMap: GEOMETRA_REMOTE_WRITE_URL fills it in
    assert "url" not in rw
    assert rw == {"interval": "30s", "timeout": "30s", "bearer_token_file": rw["bearer_token_file"]}
    spec = pod_spec(objs)
    c = sidecar_of(spec)[0]
    env = env_of(c, "GEOMETRA_REMOTE_WRITE_URL")
    assert env == {
        "name": "GEOMETRA_REMOTE_WRITE_URL",
        "valueFrom": {"secretKeyRef": {"name": "mimir-rw-url", "key": "push-url"}},
    }
    # the URL's Secret is not mounted; the token's is, read-only, where the config says
    assert not [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "mimir-rw-url"]
    mount, vol = secret_mount(spec, rw["bearer_token_file"])
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "mimir-rw-token"
    assert vol["secret"]["items"] == [{"key": "token", "path": os.path.basename(rw["bearer_token_file"])}]
    assert "mimir-rw-url" not in text


def test_remote_write_basic_auth_and_tls():
    objs = render(REMOTE_WRITE_BASIC_AUTH)
    cfg, _ = config_of(objs)
    rw = cfg["remote_write"]
    assert "bearer_token_file" not in rw
    assert rw["basic_auth"]["username"] == "geometra"
    password_file = rw["basic_auth"]["password_file"]
    assert set(rw["basic_auth"]) == {"username", "password_file"}
    assert set(rw["tls"]) == {"ca_file"}
    spec = pod_spec(objs)
    mount, vol = secret_mount(spec, password_file)
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "mimir-rw"
    assert vol["secret"]["items"] == [{"key": "password", "path": os.path.basename(password_file)}]
    mount, vol = secret_mount(spec, rw["tls"]["ca_file"])
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "mimir-ca"
    assert vol["secret"]["items"] == [{"key": "ca.crt", "path": os.path.basename(rw["tls"]["ca_file"])}]
    # still no writable mount
    assert all(m.get("readOnly") for m in sidecar_of(spec)[0]["volumeMounts"])


def test_remote_write_settings_need_a_url():
    with pytest.raises(helm.HelmRenderError, match="remoteWrite.url nor remoteWrite.urlSecret.name"):
        render({"remoteWrite": {"bearerTokenSecret": {"name": "mimir-rw-token"}}})


def test_remote_write_in_notes():
    with helm.Chart.load(str(CHART)) as c:
        notes = c.render(REMOTE_WRITE, name=RELEASE, namespace=NAMESPACE)["geometra-sidecar/templates/NOTES.txt"]
        assert f"Remote write: every 30s to {RW_URL}" in notes
        notes = c.render(REMOTE_WRITE_URL_SECRET, name=RELEASE, namespace=NAMESPACE)[
            "geometra-sidecar/templates/NOTES.txt"
        ]
        assert "Secret mimir-rw-url" in notes and "GEOMETRA_REMOTE_WRITE_URL" in notes
        assert "Remote write" not in c.render(None, name=RELEASE, namespace=NAMESPACE)[
            "geometra-sidecar/templates/NOTES.txt"
        ]


def test_redaction_of_chat_fields():
    objs = render(load_example("values-redaction.yaml"))
    cfg, _ = config_of(objs)
    red = cfg["redaction"]
    assert red["attributes"] == [
        {"key": "message", "action": "drop"},
        {"key": "response", "action": "hash"},
        {"key": "content", "action": "truncate", "max_length": 64},
    ]
    spec = pod_spec(objs)
    mount = next(
        m for m in sidecar_of(spec)[0]["volumeMounts"] if m["mountPath"] == os.path.dirname(red["hash_key_file"])
    )
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "geometra-redaction-key"
    assert "redaction" not in config_of(render())[0]


def test_hash_redaction_needs_key():
    with pytest.raises(helm.HelmRenderError, match="hashKeySecret"):
        render({"redaction": {"attributes": [{"key": "response", "action": "hash"}]}})


def test_extra_rules_and_rules():
    cfg, _ = config_of(render(EXTRA_RULES))
    assert cfg["extra_rules"] == EXTRA_RULES["extraRules"]
    assert "rules" not in cfg  # the sidecar's built-in defaults stay
    cfg, _ = config_of(render({"rules": EXTRA_RULES["extraRules"]}))
    assert cfg["rules"] == EXTRA_RULES["extraRules"]


def test_config_overrides_are_merged():
    cfg, _ = config_of(render({"configOverrides": {"store": {"series_ttl": "1h"}}}))
    assert cfg["store"]["series_ttl"] == "1h"
    assert cfg["store"]["max_series_per_metric"] == 2000


# ---------------------------------------------------------------- the browser listener


def test_browser_listener_off_by_default():
    objs = render()
    cfg, _ = config_of(objs)
    assert "browser" not in cfg["receivers"]
    c = sidecar_of(pod_spec(objs))[0]
    assert "browser" not in [p["name"] for p in c["ports"]]
    assert not [o for o in objs if o["kind"] == "Service"]
    # the browser values alone, without enabled, change nothing
    objs2 = render({"browser": {**BROWSER_FULL["browser"], "enabled": False}})
    assert config_of(objs2)[1] == config_of(objs)[1]
    assert pod_spec(objs2) == pod_spec(objs)
    assert not [o for o in objs2 if o["kind"] == "Service"]


def test_browser_listener_defaults_match_the_sidecar():
    """browser.enabled with nothing else renders the sidecar's own defaults
    (print-default-config), on 0.0.0.0:4319, with no token check."""
    cfg, _ = config_of(render({"browser": {"enabled": True}}))
    b = cfg["receivers"]["browser"]
    assert b == {
        "listen": "0.0.0.0:4319",
        "service_name": "geometra-web",
        "cors_allowed_origins": [],
        "cors_allowed_headers": [],
        "cors_max_age": 7200,
        "trusted_proxies": [],
        "max_body_bytes": 524288,
        "max_items_per_request": 512,
        "max_attributes_per_item": 64,
        "max_attribute_value_bytes": 4096,
        "rate_limit": {
            "requests_per_second": 10,
            "burst": 20,
            "items_per_second": 500,
            "global_items_per_second": 20000,
            "max_clients": 65536,
            "ipv6_prefix": 64,
        },
        "auth": {"clock_skew": "30s", "rotation_overlap": "10m"},
    }


def test_browser_listener_values_reach_the_config():
    objs = render(BROWSER_FULL)
    cfg, text = config_of(objs)
    b = cfg["receivers"]["browser"]
    assert b["listen"] == "0.0.0.0:4320"
    assert b["service_name"] == "geometra-web-eu"
    assert b["cors_allowed_origins"] == ["https://app.geometra.example", "https://*.geometra.example"]
    assert b["cors_allowed_headers"] == ["x-tenant-id"]
    assert b["cors_max_age"] == 600
    assert b["trusted_proxies"] == ["10.0.0.0/8", "fd00::/8", "192.168.1.1"]
    assert b["rate_limit"] == {"requests_per_second": 2.5, "burst": 10, "items_per_second": 250,
                               "global_items_per_second": 5000, "max_clients": 1000, "ipv6_prefix": 56}
    assert (b["max_body_bytes"], b["max_items_per_request"], b["max_attributes_per_item"],
            b["max_attribute_value_bytes"]) == (131072, 100, 32, 1024)
    secret_file = b["auth"]["jwt_hs256_secret_file"]
    assert b["auth"] == {"jwt_hs256_secret_file": secret_file, "audience": "geometra-sidecar",
                         "clock_skew": "10s", "rotation_overlap": "1h"}
    # the in-pod receivers are untouched
    assert cfg["receivers"]["otlp_http"]["listen"] == "localhost:4318"
    assert cfg["receivers"]["otlp_http"]["cors_allowed_origins"] == []
    # the HS256 key: a read-only mount of the user's Secret, never inlined, no Secret rendered
    spec = pod_spec(objs)
    mount, vol = secret_mount(spec, secret_file)
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "geometra-browser-jwt"
    assert vol["secret"]["items"] == [{"key": "hs256", "path": os.path.basename(secret_file)}]
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert all(m.get("readOnly") for m in sidecar_of(spec)[0]["volumeMounts"])


@pytest.mark.parametrize("mode", ["native", "container"])
def test_browser_port_on_the_pod_and_the_service(mode):
    objs = render({"sidecarMode": mode, "browser": {"enabled": True}})
    validate_all(objs)
    dep = only(objs, "Deployment")
    c = sidecar_of(dep["spec"]["template"]["spec"])[0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 9464, "browser": 4319}
    svc = only(objs, "Service")
    assert svc["metadata"]["name"] == f"{RELEASE}-geometra-sidecar-browser"
    assert svc["spec"]["type"] == "ClusterIP"
    # the browser port only: never OTLP (trusted as the app's) nor metrics
    assert svc["spec"]["ports"] == [{"name": "browser", "port": 4319, "targetPort": "browser", "protocol": "TCP"}]
    # it selects the pods that carry the sidecar
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"] and svc["spec"]["selector"].items() <= pod_labels.items()


def test_browser_service_selector_and_opt_out():
    with pytest.raises(helm.HelmRenderError, match="browser.service.selector"):
        render({"demo": {"enabled": False}, "browser": {"enabled": True}})
    objs = render(SCENARIOS["browser-no-demo"])
    assert only(objs, "Service")["spec"]["selector"] == {"app": "frontend"}
    objs = render(SCENARIOS["browser-no-service"])
    assert not [o for o in objs if o["kind"] == "Service"]
    assert "browser" in [p["name"] for p in sidecar_of(pod_spec(objs))[0]["ports"]]
    svc = only(render(BROWSER_FULL), "Service")
    assert svc["metadata"]["annotations"] == {"example.com/team": "web"}
    assert svc["spec"]["ports"][0]["port"] == 4320


@pytest.mark.parametrize(
    "values, message",
    [
        ({"browser": {"enabled": True, "port": 9464}}, "browser.port 9464 is already taken by metrics.port"),
        ({"browser": {"enabled": True, "port": 4317}}, "already taken by otlp.grpc.listen"),
        ({"browser": {"enabled": True, "port": 4318}}, "already taken by otlp.http.listen"),
        ({"browser": {"enabled": True, "limits": {"maxBodyBytes": 64 << 20}}}, "limits.maxInFlightBytes"),
        ({"browser": {"enabled": True, "limits": {"maxBodyBytes": 8 << 20}},
          "limits": {"maxInFlightBytesPerConnection": 6 << 20}}, "limits.maxInFlightBytesPerConnection"),
    ],
    ids=["metrics-port", "grpc-port", "http-port", "body-over-in-flight", "body-over-per-connection"],
)
def test_browser_refused_combinations(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)
    # the in-pod HTTP receiver off frees its port
    render({"otlp": {"http": {"enabled": False}}, "browser": {"enabled": True, "port": 4318}})


BROWSER_REFUSED = [
    # (values under browser, the key the error names)
    ({"enabled": "yes"}, "/browser/enabled"),
    ({"port": 0}, "/browser/port"),
    ({"port": 70000}, "/browser/port"),
    ({"serviceName": ""}, "/browser/serviceName"),
    ({"serviceName": "  "}, "/browser/serviceName"),
    ({"corsAllowedHeaders": ["x tenant"]}, "/browser/corsAllowedHeaders"),
    ({"corsMaxAge": 86401}, "/browser/corsMaxAge"),
    ({"trustedProxies": ["ingress-nginx"]}, "/browser/trustedProxies"),
    ({"trustedProxies": ["10.0.0.0/33"]}, "/browser/trustedProxies"),
    ({"trustedProxies": "10.0.0.0/8"}, "/browser/trustedProxies"),
    ({"rateLimit": {"requestsPerSecond": 0}}, "/browser/rateLimit/requestsPerSecond"),
    ({"rateLimit": {"burst": 0}}, "/browser/rateLimit/burst"),
    ({"rateLimit": {"burst": 1.5}}, "/browser/rateLimit/burst"),
    ({"rateLimit": {"itemsPerSecond": -1}}, "/browser/rateLimit/itemsPerSecond"),
    ({"rateLimit": {"globalItemsPerSecond": 0}}, "/browser/rateLimit/globalItemsPerSecond"),
    ({"rateLimit": {"maxClients": 15}}, "/browser/rateLimit/maxClients"),
    ({"rateLimit": {"maxClients": 16777217}}, "/browser/rateLimit/maxClients"),
    ({"rateLimit": {"ipv6Prefix": 129}}, "/browser/rateLimit/ipv6Prefix"),
    ({"rateLimit": {"requestPerSecond": 5}}, "requestPerSecond"),
    ({"limits": {"maxBodyBytes": 0}}, "/browser/limits/maxBodyBytes"),
    ({"limits": {"maxBodyBytes": 67108865}}, "/browser/limits/maxBodyBytes"),
    ({"limits": {"maxItemsPerRequest": 0}}, "/browser/limits/maxItemsPerRequest"),
    ({"limits": {"maxAttributesPerItem": 0}}, "/browser/limits/maxAttributesPerItem"),
    ({"limits": {"maxAttributeValueBytes": 0}}, "/browser/limits/maxAttributeValueBytes"),
    ({"auth": {"secret": "hunter2"}}, "/browser/auth/secret"),
    ({"auth": {"secret": {"name": "jwt", "value": "hunter2"}}}, "additional properties 'value' not allowed"),
    ({"auth": {"jwtHs256Secret": "hunter2"}}, "jwtHs256Secret"),
    ({"auth": {"secret": {"name": "jwt", "key": ""}}}, "/browser/auth/secret/key"),
    ({"auth": {"audience": "geometra-sidecar"}}, "/browser/auth/secret"),
    ({"auth": {"secret": {"name": "jwt"}, "audience": " "}}, "/browser/auth/audience"),
    ({"auth": {"clockSkew": "301s"}}, "/browser/auth/clockSkew"),
    ({"auth": {"clockSkew": "6m"}}, "/browser/auth/clockSkew"),
    ({"auth": {"clockSkew": 30}}, "/browser/auth/clockSkew"),
    ({"auth": {"rotationOverlap": "25h"}}, "/browser/auth/rotationOverlap"),
    ({"auth": {"rotationOverlap": "1441m"}}, "/browser/auth/rotationOverlap"),
    ({"service": {"type": "LoadBalancer"}}, "additional properties 'type' not allowed"),
]


@pytest.mark.parametrize("browser, message", BROWSER_REFUSED, ids=[m for _, m in BROWSER_REFUSED])
def test_schema_refuses_bad_browser_values(browser, message):
    values = {"browser": {"enabled": True, **browser}}
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)
    assert lint_errors(CHART, values), "lint --strict must fail too"


# ---------------------------------------------------------------- values schema

TYPOS = [
    ({"sidecarMod": "container"}, "sidecarMod"),
    ({"sidecarMode": "sidecar"}, "sidecarMode"),
    ({"podMonitor": {"enable": True}}, "enable"),
    ({"podMonitor": {"enabled": "yes"}}, "enabled"),
    ({"metrics": {"port": "9464"}}, "port"),
    ({"queue": {"persistant": True}}, "persistant"),
    ({"forwarding": {"logs": {"enabled": True, "endpoint": "gateway:4317"}}}, "endpoint"),
    ({"forwarding": {"bearerTokenSecret": {"nmae": "x"}}}, "nmae"),
    ({"redaction": {"attributes": [{"key": "message", "action": "delete"}]}}, "action"),
    ({"redaction": {"attributes": [{"key": "content", "action": "truncate"}]}}, "maxLength"),
    ({"extraRules": [{"name": "x_total", "kind": "counter", "signal": "spans", "lables": []}]}, "lables"),
    ({"limits": {"seriesTtl": 600}}, "seriesTtl"),
    ({"otlp": {"grpc": {"listen": "example.com:4317"}}}, "listen"),
    ({"otlp": {"http": {"corsAllowedHeaders": ["x tenant"]}}}, "corsAllowedHeaders"),
    ({"otlp": {"http": {"corsMaxAge": 100000}}}, "corsMaxAge"),
    ({"resources": {"request": {"cpu": "1"}}}, "request"),
    ({"limits": {"maxValueDepth": 40}}, "maxValueDepth"),
    ({"limits": {"maxInFlightBytes": 100}}, "maxInFlightBytes"),
    ({"limits": {"maxInFlightBytesPerConnection": "8Mi"}}, "maxInFlightBytesPerConnection"),
    ({"limits": {"maxLabelValueBytes": 70000}}, "maxLabelValueBytes"),
    ({"telemetry": {"otlp": {"protocol": "https"}}}, "protocol"),
    ({"telemetry": {"otlp": {"endpoint": "otel-collector:4317"}}}, "endpoint"),
    ({"telemetry": {"otlp": {"interval": 60}}}, "interval"),
]


@pytest.mark.parametrize("values, key", TYPOS, ids=[k for _, k in TYPOS])
def test_schema_refuses_typos_and_wrong_types(values, key):
    with pytest.raises(helm.HelmValuesError, match=key):
        render(values)
    assert lint_errors(CHART, values), "lint --strict must fail too"


BASIC_AUTH = {"username": "geometra", "passwordSecret": {"name": "mimir-rw", "key": "password"}}
RW_REFUSED = [
    # credentials inline instead of from a Secret
    ("password-inline", {"url": RW_URL, "basicAuth": {"username": "geometra", "password": "hunter2"}},
     "additional properties 'password' not allowed"),
    ("password-secret-as-string", {"url": RW_URL, "basicAuth": {"username": "geometra", "passwordSecret": "hunter2"}},
     "/remoteWrite/basicAuth/passwordSecret'"),
    ("token-inline", {"url": RW_URL, "bearerToken": "abc"}, "additional properties 'bearerToken' not allowed"),
    ("token-secret-as-string", {"url": RW_URL, "bearerTokenSecret": "abc"}, "/remoteWrite/bearerTokenSecret'"),
    ("authorization-header", {"url": RW_URL, "headers": {"Authorization": "Bearer abc"}}, "'Authorization'"),
    ("authorization-header-lowercase", {"url": RW_URL, "headers": {"authorization": "Basic Zm9v"}}, "'authorization'"),
    ("credentials-in-url", {"url": "https://tenant:s3cret@mimir.example.com/api/v1/push"}, "/remoteWrite/url'"),
    ("url-secret-value-inline", {"urlSecret": {"name": "mimir-rw-url", "value": RW_URL}},
     "additional properties 'value' not allowed"),
    # url XOR urlSecret
    ("url-and-url-secret", {"url": RW_URL, "urlSecret": {"name": "mimir-rw-url", "key": "url"}},
     "/remoteWrite/urlSecret/name"),
    # bad URLs
    ("url-without-scheme", {"url": "mimir:8080/api/v1/push"}, "/remoteWrite/url'"),
    ("url-other-scheme", {"url": "ftp://mimir.example.com/push"}, "/remoteWrite/url'"),
    # Secrets need a name and a key
    ("url-secret-empty-key", {"urlSecret": {"name": "mimir-rw-url", "key": ""}}, "/remoteWrite/urlSecret/key"),
    ("token-secret-empty-key", {"url": RW_URL, "bearerTokenSecret": {"name": "t", "key": ""}},
     "/remoteWrite/bearerTokenSecret/key"),
    ("basic-auth-without-password", {"url": RW_URL, "basicAuth": {"username": "geometra"}},
     "/remoteWrite/basicAuth/passwordSecret/name"),
    ("password-without-username", {"url": RW_URL, "basicAuth": {"passwordSecret": {"name": "mimir-rw"}}},
     "/remoteWrite/basicAuth/username"),
    ("token-and-basic-auth", {"url": RW_URL, "bearerTokenSecret": {"name": "t"}, "basicAuth": BASIC_AUTH},
     "/remoteWrite/basicAuth"),
    # what the sidecar would refuse in the pod
    ("interval-below-1s", {"url": RW_URL, "interval": "500ms"}, "/remoteWrite/interval"),
    ("timeout-zero", {"url": RW_URL, "timeout": "0s"}, "/remoteWrite/timeout"),
    ("reserved-label", {"url": RW_URL, "externalLabels": {"__name__": "x"}}, "'__name__'"),
    ("bad-label-name", {"url": RW_URL, "externalLabels": {"cluster-name": "x"}}, "'cluster-name'"),
]


@pytest.mark.parametrize("rw, message", [(v, m) for _, v, m in RW_REFUSED], ids=[i for i, _, _ in RW_REFUSED])
def test_schema_refuses_remote_write_misuse(rw, message):
    values = {"remoteWrite": rw}
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)
    assert lint_errors(CHART, values), "lint --strict must fail too"


def test_schema_accepts_defaults_and_examples():
    with helm.Chart.load(str(CHART)) as c:
        c.validate_schema(c.values)
        for f in sorted((CHART / "examples").glob("values-*.yaml")):
            c.validate_schema(c.merge_values(yaml.safe_load(f.read_text())))


def leaf_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and path not in ("resources", "securityContext", "demo.resources"):
            out += leaf_keys(v, path + ".")
        else:
            out.append(path)
    return out


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [k for k in leaf_keys(values) if k not in documented]
    assert not missing, f"values missing from the README table: {missing}"


def test_notes_render():
    with helm.Chart.load(str(CHART)) as c:
        notes = c.render(None, name=RELEASE, namespace=NAMESPACE)["geometra-sidecar/templates/NOTES.txt"]
    assert "port-forward" in notes and "9464" in notes


def test_browser_listener_in_notes():
    def notes(values):
        with helm.Chart.load(str(CHART)) as c:
            return c.render(values, name=RELEASE, namespace=NAMESPACE)["geometra-sidecar/templates/NOTES.txt"]

    assert "Browser listener" not in notes(None)
    text = notes({"browser": {"enabled": True}})
    assert f"Service {RELEASE}-geometra-sidecar-browser:4319" in text
    assert "browser.trustedProxies is empty" in text
    text = notes(load_example("values-frontend.yaml"))
    assert "Secret geometra-browser-jwt" in text and "trustedProxies is empty" not in text
    # the old way (browsers on the trusted in-pod receiver) is called out
    text = notes({"otlp": {"http": {"listen": "0.0.0.0:4318", "corsAllowedOrigins": ["https://app.geometra.example"]}}})
    assert "WARNING: OTLP/HTTP listens beyond loopback with CORS origins" in text


# ---------------------------------------------------------------- grace period and drain


@pytest.mark.parametrize("values, grace, drain", [
    (None, 30, "25s"),
    ({"terminationGracePeriodSeconds": 60}, 60, "55s"),
    ({"terminationGracePeriodSeconds": 6}, 6, "1s"),
    ({"forwarding": {"drainTimeout": "10s"}}, 30, "10s"),
    ({"terminationGracePeriodSeconds": 20, "forwarding": {"drainTimeout": "19500ms"}}, 20, "19500ms"),
    ({"sidecarMode": "container"}, 30, "20s"),
    ({"sidecarMode": "container", "keepAcceptingSeconds": 0}, 30, "25s"),
    ({"keepAcceptingSeconds": 10, "terminationGracePeriodSeconds": 60}, 60, "45s"),
])
def test_drain_timeout_derives_from_the_grace_period(values, grace, drain):
    objs = render(values)
    assert pod_spec(objs)["terminationGracePeriodSeconds"] == grace
    assert config_of(objs)[0]["forward"]["drain_timeout"] == drain


@pytest.mark.parametrize("values, keep", [
    (None, None),
    ({"sidecarMode": "container"}, "5s"),
    ({"sidecarMode": "container", "keepAcceptingSeconds": 0}, None),
    ({"keepAcceptingSeconds": 3}, "3s"),
])
def test_container_mode_keeps_accepting_after_sigterm(values, keep):
    """In container mode the app exports its last telemetry after the SIGTERM both get."""
    assert config_of(render(values))[0]["receivers"].get("keep_accepting_for") == keep


@pytest.mark.parametrize("values, message", [
    ({"forwarding": {"drainTimeout": "30s"}},
     "geometra-sidecar: forwarding.drainTimeout 30s and keepAcceptingSeconds 0 are not shorter than "
     "terminationGracePeriodSeconds 30: the pod would be killed mid-drain; leave forwarding.drainTimeout empty to "
     "derive it"),
    ({"terminationGracePeriodSeconds": 60, "forwarding": {"drainTimeout": "1m"}},
     "geometra-sidecar: forwarding.drainTimeout 1m and keepAcceptingSeconds 0 are not shorter than "
     "terminationGracePeriodSeconds 60"),
    ({"terminationGracePeriodSeconds": 5},
     "geometra-sidecar: terminationGracePeriodSeconds 5 leaves no time to drain (the drain timeout is the grace "
     "period less keepAcceptingSeconds 0 and 5s); raise it or set forwarding.drainTimeout"),
    ({"terminationGracePeriodSeconds": 10, "sidecarMode": "container"},
     "geometra-sidecar: terminationGracePeriodSeconds 10 leaves no time to drain (the drain timeout is the grace "
     "period less keepAcceptingSeconds 5 and 5s); raise it or set forwarding.drainTimeout"),
    ({"sidecarMode": "container", "forwarding": {"drainTimeout": "25s"}},
     "geometra-sidecar: forwarding.drainTimeout 25s and keepAcceptingSeconds 5 are not shorter than "
     "terminationGracePeriodSeconds 30"),
])
def test_drain_that_cannot_finish_in_the_grace_period_is_refused(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# ---------------------------------------------------------------- used as a dependency


@pytest.fixture(scope="module")
def app_chart(tmp_path_factory) -> Path:
    """The fixture app chart, copied, its file:// dependency made absolute and resolved by Helm."""
    dst = tmp_path_factory.mktemp("app") / "geometra-app"
    shutil.copytree(FIXTURE_APP, dst, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = dst / "Chart.yaml"
    declared = yaml.safe_load(chart_yaml.read_text())["dependencies"][0]["repository"]
    assert declared.startswith("file://")
    assert (FIXTURE_APP / declared[len("file://") :]).resolve() == CHART.resolve()
    chart_yaml.write_text(re.sub(r"repository: file://\S+", f"repository: file://{CHART}", chart_yaml.read_text()))
    helm.dependency_update(str(dst))
    assert [d["status"] for d in helm.dependency_list(str(dst))] == ["ok"]
    return dst


def test_app_chart_lints(app_chart):
    assert lint_errors(app_chart, None, with_subcharts=True) == []


@pytest.mark.parametrize("mode", ["native", "container"])
def test_app_chart_includes_the_sidecar(app_chart, mode):
    objs = render({"geometra-sidecar": {"sidecarMode": mode, "rollOnConfigChange": True}}, chart=app_chart)
    validate_all(objs)
    # the sidecar chart renders no workload and no ConfigMap of its own here
    assert not [o for o in objs if "charts/geometra-sidecar" in o["__template"] and o["kind"] != "PodMonitor"]
    cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    assert set(cms) == {f"{RELEASE}-geometra-sidecar-config", "geometra-frontend-sidecar-config"}
    checksums = set()
    for name in (f"{RELEASE}-api", f"{RELEASE}-frontend"):
        dep = only(objs, "Deployment", name)
        spec = dep["spec"]["template"]["spec"]
        sidecar, where = sidecar_of(spec)
        assert where == ("initContainers" if mode == "native" else "containers")
        assert (sidecar.get("restartPolicy") == "Always") == (mode == "native")
        assert sidecar["securityContext"]["runAsUser"] == 65532
        cm_vol = next(v for v in spec["volumes"] if "configMap" in v)
        assert cm_vol["configMap"]["name"] in cms
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        _, text = config_of(objs, cm_vol["configMap"]["name"])
        assert ann["checksum/geometra-sidecar-config"] == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
        assert ann["prometheus.io/port"] == "9464"
        checksums.add(ann["checksum/geometra-sidecar-config"])
    assert len(checksums) == 2
    fe_cfg, _ = config_of(objs, "geometra-frontend-sidecar-config")
    assert fe_cfg["receivers"]["otlp_http"]["listen"] == "localhost:4318"
    assert fe_cfg["receivers"]["browser"]["listen"] == "0.0.0.0:4319"
    api_cfg, _ = config_of(objs, f"{RELEASE}-geometra-sidecar-config")
    assert api_cfg["receivers"]["otlp_http"]["listen"] == "localhost:4318"
    assert "browser" not in api_cfg["receivers"]
    # the browser port (and the JWT Secret) on the front end's sidecar only;
    # the app's Service routes to the port named browser, never to OTLP
    fe_spec = only(objs, "Deployment", f"{RELEASE}-frontend")["spec"]["template"]["spec"]
    api_spec = only(objs, "Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    assert "browser" in [p["name"] for p in sidecar_of(fe_spec)[0]["ports"]]
    assert "browser" not in [p["name"] for p in sidecar_of(api_spec)[0]["ports"]]
    assert secret_mount(fe_spec, fe_cfg["receivers"]["browser"]["auth"]["jwt_hs256_secret_file"])[1]["secret"][
        "secretName"] == "geometra-browser-jwt"
    svc = only(objs, "Service", f"{RELEASE}-frontend-otlp")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["browser"]
    assert api_cfg["forward"]["logs"]["bearer_token_file"].endswith("/token")
    pm = only(objs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "geometra-app"}


def test_app_chart_remote_write_url_from_secret(app_chart):
    objs = render({"geometra-sidecar": copy.deepcopy(REMOTE_WRITE_URL_SECRET)}, chart=app_chart)
    validate_all(objs)
    for name in (f"{RELEASE}-api", f"{RELEASE}-frontend"):
        spec = only(objs, "Deployment", name)["spec"]["template"]["spec"]
        env = env_of(sidecar_of(spec)[0], "GEOMETRA_REMOTE_WRITE_URL")
        assert env["valueFrom"]["secretKeyRef"] == {"name": "mimir-rw-url", "key": "push-url"}
        cm_name = next(v for v in spec["volumes"] if "configMap" in v)["configMap"]["name"]
        rw = config_of(objs, cm_name)[0]["remote_write"]
        assert "url" not in rw
        assert secret_mount(spec, rw["bearer_token_file"])[1]["secret"]["secretName"] == "mimir-rw-token"


def test_app_chart_schema_applies_to_sidecar_values(app_chart):
    with pytest.raises(helm.HelmValuesError, match="sidecarMod"):
        render({"geometra-sidecar": {"sidecarMod": "container"}}, chart=app_chart)


# ---------------------------------------------------------------- the real binary

BIN = os.environ.get("GEOMETRA_SIDECAR_BIN", "")


@pytest.fixture
def sidecar_bin():
    """The binary the rendered configs are checked with: scripts/test.sh sets
    GEOMETRA_SIDECAR_BIN; without it these tests fail (skip only under
    GEOMETRA_TEST_ALLOW_SKIP=1), since a chart whose config the sidecar
    refuses would otherwise pass unnoticed."""
    if not (BIN and os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        reason = f"GEOMETRA_SIDECAR_BIN={BIN!r} is not an executable (scripts/test.sh sets it)"
        if os.environ.get("GEOMETRA_TEST_ALLOW_SKIP") == "1":
            pytest.skip(reason)
        pytest.fail(reason)


@pytest.mark.usefixtures("sidecar_bin")
@pytest.mark.parametrize(
    "scenario",
    ["default", "full", "example-production", "example-frontend", "remote-write", "remote-write-basic-auth",
     "example-remote-write", "browser", "browser-full", "browser-no-demo"],
)
def test_rendered_config_passes_check_config(scenario, tmp_path):
    _, text = config_of(render(SCENARIOS[scenario]))
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    res = subprocess.run(
        [BIN, "check-config", "--config", str(cfg_file)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, f"check-config refused the chart's config:\n{res.stdout}\n{res.stderr}\n---\n{text}"


@pytest.mark.usefixtures("sidecar_bin")
@pytest.mark.parametrize("scenario", ["default", "example-frontend", "full", "http-receiver-off"])
def test_container_env_agrees_with_config(scenario, tmp_path):
    """GEOMETRA_*_LISTEN variables override the file, whoever sets them: the
    chart pins them to the config's values, so the effective config is the
    rendered one even when the environment around it says otherwise."""
    objs = render(SCENARIOS[scenario])
    _, text = config_of(objs)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    c = sidecar_of(pod_spec(objs))[0]
    env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("GEOMETRA_")}
    image_env = {  # what an older image or a platform might set
        "GEOMETRA_OTLP_GRPC_LISTEN": "0.0.0.0:4317",
        "GEOMETRA_OTLP_HTTP_LISTEN": "0.0.0.0:4318",
        "GEOMETRA_METRICS_LISTEN": "0.0.0.0:9464",
        "GEOMETRA_LOG_FORMAT": "json",
    }
    res = subprocess.run(
        [BIN, "check-config", "--config", str(cfg_file)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **image_env, **env},
    )
    assert res.returncode == 0, res.stderr
    effective = yaml.safe_load(res.stdout)
    rendered = yaml.safe_load(text)
    assert effective["receivers"]["otlp_grpc"]["listen"] == rendered["receivers"]["otlp_grpc"]["listen"]
    assert effective["receivers"]["otlp_http"]["listen"] == rendered["receivers"]["otlp_http"]["listen"]
    assert effective["server"]["listen"] == rendered["server"]["listen"]
    assert effective["telemetry"]["log_format"] == rendered["telemetry"]["log_format"]


@pytest.mark.usefixtures("sidecar_bin")
def test_remote_write_effective_config_with_plain_url(tmp_path):
    objs = render(REMOTE_WRITE)
    rendered, text = config_of(objs)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "GEOMETRA_REMOTE_WRITE_URL"}
    res = subprocess.run([BIN, "check-config", "--config", str(cfg_file)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n---\n{text}"
    rw = yaml.safe_load(res.stdout)["remote_write"]
    assert rw["url"] == RW_URL
    assert rw["bearer_token_file"] == rendered["remote_write"]["bearer_token_file"]
    assert rw["external_labels"] == {"cluster": "eu-1"}
    assert rw["headers"] == {"X-Scope-OrgID": "geometra"}


@pytest.mark.usefixtures("sidecar_bin")
def test_remote_write_url_secret_config_passes_check_config(tmp_path):
    """With urlSecret the ConfigMap's remote_write has no url: the pod's
    GEOMETRA_REMOTE_WRITE_URL (from the Secret) fills it in, and the rest of
    the section comes from the file. Needs the sidecar to accept a partial
    section completed by the environment (issue 19)."""
    objs = render(REMOTE_WRITE_URL_SECRET)
    rendered, text = config_of(objs)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    ref = env_of(sidecar_of(pod_spec(objs))[0], "GEOMETRA_REMOTE_WRITE_URL")["valueFrom"]["secretKeyRef"]
    secret_data = {("mimir-rw-url", "push-url"): "https://tenant-1:s3cret@mimir.example.com/api/v1/push"}
    url = secret_data[(ref["name"], ref["key"])]  # what kubelet puts in the variable
    res = subprocess.run(
        [BIN, "check-config", "--config", str(cfg_file)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GEOMETRA_REMOTE_WRITE_URL": url},
    )
    assert res.returncode == 0, f"check-config refused the chart's config with the URL from the environment:\n{res.stdout}\n{res.stderr}\n---\n{text}"
    rw = yaml.safe_load(res.stdout)["remote_write"]
    # the URL from the environment, the rest from the file (compared without
    # the credentials, which check-config's output may mask)
    got, want = urlsplit(rw["url"]), urlsplit(url)
    assert (got.scheme, got.hostname, got.port, got.path) == (want.scheme, want.hostname, want.port, want.path)
    assert rw["bearer_token_file"] == rendered["remote_write"]["bearer_token_file"]
    assert rw["interval"] == "30s"


# (values under browser, the same key in receivers.browser, the last value the
# schema accepts, the first it refuses): the schema's bounds are the sidecar's
BROWSER_BOUNDS = [
    (("limits", "maxBodyBytes"), ("max_body_bytes",), 1, 0),
    (("limits", "maxItemsPerRequest"), ("max_items_per_request",), 1, 0),
    (("limits", "maxAttributesPerItem"), ("max_attributes_per_item",), 1, 0),
    (("limits", "maxAttributeValueBytes"), ("max_attribute_value_bytes",), 1, 0),
    (("corsMaxAge",), ("cors_max_age",), 86400, 86401),
    (("rateLimit", "requestsPerSecond"), ("rate_limit", "requests_per_second"), 0.001, 0),
    (("rateLimit", "itemsPerSecond"), ("rate_limit", "items_per_second"), 0.001, 0),
    (("rateLimit", "globalItemsPerSecond"), ("rate_limit", "global_items_per_second"), 0.001, 0),
    (("rateLimit", "burst"), ("rate_limit", "burst"), 1, 0),
    (("rateLimit", "burst"), ("rate_limit", "burst"), 4294967295, 4294967296),
    (("rateLimit", "maxClients"), ("rate_limit", "max_clients"), 16, 15),
    (("rateLimit", "maxClients"), ("rate_limit", "max_clients"), 16777216, 16777217),
    (("rateLimit", "ipv6Prefix"), ("rate_limit", "ipv6_prefix"), 1, 0),
    (("rateLimit", "ipv6Prefix"), ("rate_limit", "ipv6_prefix"), 128, 129),
    (("auth", "clockSkew"), ("auth", "clock_skew"), "5m", "301s"),
    (("auth", "clockSkew"), ("auth", "clock_skew"), "300000ms", "300001ms"),
    (("auth", "rotationOverlap"), ("auth", "rotation_overlap"), "24h", "1441m"),
    (("auth", "rotationOverlap"), ("auth", "rotation_overlap"), "86400s", "86401s"),
    (("serviceName",), ("service_name",), "w", " "),
]


def nested(path: tuple, value) -> dict:
    d = value
    for k in reversed(path):
        d = {k: d}
    return d


@pytest.mark.usefixtures("sidecar_bin")
@pytest.mark.parametrize("vpath, cpath, ok, bad", BROWSER_BOUNDS,
                         ids=[f"{'.'.join(v)}={o}|{b}" for v, _, o, b in BROWSER_BOUNDS])
def test_browser_schema_bounds_are_the_sidecars(vpath, cpath, ok, bad, tmp_path):
    cfg_file = tmp_path / "config.yaml"

    def check(text: str) -> subprocess.CompletedProcess:
        cfg_file.write_text(text)
        return subprocess.run([BIN, "check-config", "--config", str(cfg_file)], capture_output=True, text=True,
                              timeout=60)

    browser = {"enabled": True, "auth": {"secret": {"name": "jwt"}}}
    for k, v in nested(vpath, ok).items():
        browser[k] = {**browser.get(k, {}), **v} if isinstance(v, dict) else v
    cfg, text = config_of(render({"browser": browser}))
    res = check(text)
    assert res.returncode == 0, f"the sidecar refuses {'.'.join(vpath)}={ok!r} that the schema accepts:\n{res.stderr}"

    browser_bad = copy.deepcopy(browser)
    node = browser_bad
    for k in vpath[:-1]:
        node = node.setdefault(k, {})
    node[vpath[-1]] = bad
    with pytest.raises(helm.HelmValuesError):
        render({"browser": browser_bad})
    node = cfg["receivers"]["browser"]
    for k in cpath[:-1]:
        node = node[k]
    node[cpath[-1]] = bad
    res = check(yaml.safe_dump(cfg))
    assert res.returncode != 0, f"the schema refuses {'.'.join(vpath)}={bad!r} but the sidecar accepts it"
    assert "receivers.browser." + ".".join(cpath) in res.stderr or "receivers.browser" in res.stderr, res.stderr


def test_fleet_key_secret_is_mounted_and_named_in_the_config():
    """metrics.distinctKeySecret: the active-user sketch's fleet key (issue 21)."""
    cfg, _ = config_of(render())
    assert cfg["store"]["distinct_sketch_precision"] == 10
    assert "distinct_key_file" not in cfg["store"]
    objs = render({"metrics": {"distinctSketchPrecision": 12, "distinctKeySecret": {"name": "geometra-fleet-key"}}})
    cfg, _ = config_of(objs)
    assert cfg["store"]["distinct_sketch_precision"] == 12
    key_file = cfg["store"]["distinct_key_file"]
    mount, vol = secret_mount(pod_spec(objs), key_file)
    assert mount["readOnly"] is True
    assert vol["secret"]["secretName"] == "geometra-fleet-key"
    assert vol["secret"]["items"] == [{"key": "fleet-key", "path": os.path.basename(key_file)}]
