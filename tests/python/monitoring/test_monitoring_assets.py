"""Static checks of the Grafana dashboard and provisioning, the compose stack,
the Dockerfile and .dockerignore. (No Grafana or Docker engine on the test
machine: see monitoring/README.md for what that leaves unchecked. The
dashboard's queries are run against a real Prometheus by
test_monitoring_rules.py (parse) and test_monitoring_e2e.py (data).)"""

from __future__ import annotations

import json
import re

import yaml

import monitoring_helpers as mh

DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard():
    return json.loads(mh.DASHBOARD.read_text())


def _all_panels(panels):
    for p in panels:
        yield p
        yield from _all_panels(p.get("panels", []))


def test_dashboard_schema_and_variable():
    d = _dashboard()
    assert d["schemaVersion"] >= 39
    assert d["uid"] == "geometra" and d["title"] == "Geometra AI"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", variables
    assert d.get("id") is None, "provisioned dashboards must not carry a database id"


def test_dashboard_panels():
    d = _dashboard()
    panels = list(_all_panels(d["panels"]))
    types = {p["type"] for p in panels}
    assert "graph" not in types, "deprecated graph panels"
    assert types <= {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text"}, types
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        if p["type"] in ("row", "text"):
            continue
        where = p["title"]
        assert p.get("datasource") == DS_REF, f"{where}: datasource {p.get('datasource')}"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert p.get("targets"), f"{where}: no queries"
        for t in p["targets"]:
            assert t.get("datasource") == DS_REF, f"{where}/{t.get('refId')}: datasource {t.get('datasource')}"
            expr = t["expr"]
            assert expr.strip(), f"{where}: empty expr"
            # rate/increase over a fixed window would ignore the scrape interval
            for m in re.finditer(r"\b(rate|irate|increase)\(([^()]|\([^()]*\))*?\[([^\]]+)\]", expr):
                assert m.group(3) == "$__rate_interval", f"{where}: {m.group(1)} over [{m.group(3)}]"
            assert "Prometheus" not in json.dumps(t.get("datasource")), where
        gp = p["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24, where


def test_dashboard_covers_the_contract():
    exprs = " ".join(e for _, _, e in mh.dashboard_targets())
    for metric in [
        "http_requests_total", "http_request_duration_seconds_bucket", "ai_requests_total",
        "ai_request_duration_seconds_bucket", "ai_tokens_total", "memory_operations_total", "memory_size_bytes",
        "active_users", "otelcol_receiver_accepted_spans_total", "otelcol_receiver_refused_spans_total",
        "otelcol_exporter_send_failed_log_records_total", "otelcol_exporter_queue_size",
        "geometra_sidecar_series", "geometra_sidecar_series_overflow_total",
        # the browser listener
        "geometra_sidecar_browser_refused_requests_total", "geometra_sidecar_browser_unauthorized_total",
        "geometra_sidecar_browser_clients",
        # the GenAI row
        "ai_cost_usd_total", "ai_model_tokens_total", "geometra:ai_cost_budget_usd_per_hour",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
    ]:
        assert re.search(rf"\b{metric}\b", exprs), f"no panel uses {metric}"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le)" in exprs, f"no p{q} latency over all endpoints"
    rows = [p["title"] for p in _dashboard()["panels"] if p["type"] == "row"]
    for row in ("HTTP", "AI", "Memory", "Users", "Sidecar health"):
        assert row in rows, rows


def test_dashboard_browser_listener_row():
    """The browser listener's row: refusals and 401s by reason, accepted
    browser items, clients tracked, and the alert's own ratio with its
    threshold line (the same sum/sum as GeometraSidecarBrowserRefusedSurge)."""
    d = _dashboard()
    panels = d["panels"]
    [row] = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Browser listener"]
    below = []
    for p in panels[row + 1:]:
        if p["type"] == "row":
            break
        below.append(p)
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in below}
    by_metric = lambda m: [title for title, es in exprs.items() if any(m in e for e in es)]  # noqa: E731
    assert by_metric("sum by (reason) (rate(geometra_sidecar_browser_refused_requests_total")
    assert by_metric("sum by (reason) (rate(geometra_sidecar_browser_unauthorized_total")
    assert by_metric('otelcol_receiver_accepted_spans_total{receiver="browser"}')
    assert by_metric('otelcol_receiver_accepted_log_records_total{receiver="browser"}')
    assert by_metric("geometra_sidecar_browser_clients")
    [ratio] = [p for p in below if p["fieldConfig"]["defaults"]["unit"] == "percentunit"]
    steps = ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]
    alert = next(a for a in mh.alert_rules() if a["alert"] == "GeometraSidecarBrowserRefusedSurge")
    threshold = float(re.search(r"\)\s*>\s*([0-9.]+)\s+and on", alert["expr"]).group(1))
    assert steps[-1]["value"] == threshold
    # the panel's ratio is the alert's, over Grafana's interval
    [expr] = [t["expr"] for t in ratio["targets"]]
    alert_ratio = " ".join(alert["expr"].split()).split(" > ")[0].strip()[2:-2]
    alert_ratio = re.sub(r',? ?job="geometra-sidecar",? ?', "", alert_ratio).replace("{}", "").replace("[5m]", "[$__rate_interval]")
    assert " ".join(expr.split()) == alert_ratio.replace("( ", "(").replace(" )", ")"), (expr, alert_ratio)


def test_grafana_provisioning():
    prov = mh.MONITORING / "grafana" / "provisioning"
    ds = mh.load_yaml(prov / "datasources" / "datasources.yml")
    assert ds["apiVersion"] == 1
    prom = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "http://prometheus:9090" and prom[0]["isDefault"] is True
    # $__rate_interval is derived from the scrape interval Grafana is told about
    assert prom[0]["jsonData"]["timeInterval"] == mh.load_yaml(mh.PROM_CONFIG)["global"]["scrape_interval"]
    dash = mh.load_yaml(prov / "dashboards" / "geometra.yml")
    assert dash["apiVersion"] == 1
    provider = dash["providers"][0]
    assert provider["type"] == "file"
    compose = mh.load_yaml(mh.COMPOSE)
    mounts = compose["services"]["grafana"]["volumes"]
    target = provider["options"]["path"]
    assert any(m.startswith("./monitoring/grafana/dashboards:" + target) for m in mounts), mounts
    assert any(m.startswith("./monitoring/grafana/provisioning:/etc/grafana/provisioning") for m in mounts), mounts


def test_compose_images_pinned_and_wired():
    compose = mh.load_yaml(mh.COMPOSE)
    services = compose["services"]
    assert {"prometheus", "alertmanager", "grafana", "sidecar"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image (build-only services must still tag the image)"
        last = image.rsplit("/", 1)[-1]
        assert ":" in last or "@sha256:" in image, f"{name}: image {image} is not pinned"
        tag = last.split(":", 1)[1] if ":" in last else ""
        assert tag and tag != "latest" and "latest" not in tag, f"{name}: image {image} uses latest"
        assert re.search(r"\d", tag) or "@sha256:" in image, f"{name}: tag {tag!r} is not a version"
    assert services["sidecar"]["build"]["dockerfile"] == "Dockerfile"
    # Prometheus/Alertmanager get the repo's files; the Slack webhook comes from a secret file
    prom_cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert any(v.startswith("./monitoring/prometheus:/etc/prometheus") for v in services["prometheus"]["volumes"])
    am_cmd = " ".join(services["alertmanager"]["command"])
    assert "--config.file=/etc/alertmanager/config.yml" in am_cmd
    assert "slack_webhook_url" in services["alertmanager"]["secrets"]
    assert "slack_webhook_url" in compose["secrets"]
    am_cfg = mh.AM_CONFIG.read_text()
    assert "/run/secrets/slack_webhook_url" in am_cfg
    raw = mh.COMPOSE.read_text()
    assert "hooks.slack.com/services/" not in raw.replace("https://hooks.slack.com/services/...", "")
    # the static scrape target is the compose service
    targets = mh.load_yaml(mh.PROM_CONFIG)["scrape_configs"][0]["static_configs"][0]["targets"]
    host = targets[0].split(":")[0]
    assert host in services and "9464" in targets[0]


def test_dockerfile():
    text = mh.DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(froms) >= 2, "not a multi-stage build"
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), f) for f, _ in froms]
    assert re.fullmatch(r"rust:1\.\d+(\.\d+)?-bookworm", images[0]), images[0]
    # the runtime is the root filesystem scripts/image-rootfs.sh lays out, on
    # scratch (tests/python/pod/test_image.py builds and checks it)
    assert images[-1] == "scratch", images
    assert re.search(r"^COPY --from=build /out/rootfs/ /$", text, re.M)
    for img in images[:-1]:
        assert ":" in img and not img.endswith(":latest"), img
    # the binary: scripts/image-binary.sh (Cargo.lock's versions, the image profile)
    assert re.search(r"^\s*bin=\$\(scripts/image-binary\.sh\)", text, re.M)
    assert "cargo build --profile image --locked" in (mh.REPO / "scripts" / "image-binary.sh").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid == "65532", users
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/geometra-sidecar"\]', text, re.M)


def test_dockerignore():
    lines = [l.strip() for l in (mh.REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "**", "context should start from nothing"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    text = mh.DOCKERFILE.read_text()
    for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for item in src.split():
            assert item.rstrip("/") in allowed, f"Dockerfile copies {item} but .dockerignore excludes it"
