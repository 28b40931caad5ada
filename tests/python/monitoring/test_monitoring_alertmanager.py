"""monitoring/alertmanager/config.yml: amtool check-config, routing tests, the
webhook only from a file, and a real Alertmanager delivering to a fake Slack
(channel per severity, resolved notifications, dashboard button, inhibition)."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

import monitoring_helpers as mh


def test_amtool_check_config():
    r = mh.run([mh.find_tool("amtool"), "check-config", str(mh.AM_CONFIG)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["alertname=HighErrorRate", "severity=critical", "service=geometra-api"], "slack-critical"),
        (["alertname=AIRequestFailures", "severity=critical", "service=geometra-api"], "slack-critical"),
        (["alertname=GeometraSidecarDown", "severity=critical", "service=geometra-sidecar"], "slack-critical"),
        (["alertname=HighLatency", "severity=warning", "service=geometra-api"], "slack-notifications"),
        (["alertname=MemoryOperationFailures", "severity=warning"], "slack-notifications"),
        (["alertname=SomethingElse"], "slack-notifications"),
        (["alertname=SomethingElse", "severity=info"], "slack-notifications"),
    ],
)
def test_amtool_routes(labels, receiver):
    r = mh.run([mh.find_tool("amtool"), "config", "routes", "test", f"--config.file={mh.AM_CONFIG}",
                f"--verify.receivers={receiver}", *labels])
    assert r.returncode == 0, f"{labels} -> expected {receiver}: {r.stdout}{r.stderr}"


def test_amtool_routes_detects_a_wrong_receiver():
    """The routing test above can fail: critical does not go to #alerts."""
    r = mh.run([mh.find_tool("amtool"), "config", "routes", "test", f"--config.file={mh.AM_CONFIG}",
                "--verify.receivers=slack-notifications", "severity=critical"])
    assert r.returncode != 0, r.stdout


def test_config_structure():
    raw = mh.AM_CONFIG.read_text()
    assert "hooks.slack.com" not in raw, "a Slack webhook URL is written in the config"
    cfg = yaml.safe_load(raw)
    assert "slack_api_url" not in cfg.get("global", {})
    receivers = {r["name"]: r for r in cfg["receivers"]}
    channels = {}
    for name, rec in receivers.items():
        for sc in rec.get("slack_configs", []):
            assert "api_url" not in sc, f"{name}: inline api_url"
            assert sc.get("api_url_file"), f"{name}: no api_url_file"
            assert sc.get("send_resolved") is True, f"{name}: resolved notifications off"
            assert any(a.get("type") == "button" and "dashboard" in a.get("url", "") for a in sc.get("actions", [])), (
                f"{name}: no dashboard button"
            )
            channels[name] = sc["channel"]
    assert channels == {"slack-notifications": "#alerts", "slack-critical": "#critical-alerts"}
    assert cfg["route"]["receiver"] == "slack-notifications"
    inhibit = cfg["inhibit_rules"]
    assert any(
        i.get("source_matchers") == ['severity="critical"'] and i.get("target_matchers") == ['severity="warning"']
        and set(i.get("equal", [])) >= set(cfg["route"]["group_by"])
        for i in inhibit
    ), inhibit


# --------------------------------------------------------------------------- live Alertmanager
class _FakeSlack(BaseHTTPRequestHandler):
    messages: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _FakeSlack.messages.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_slack():
    _FakeSlack.messages = []
    server = HTTPServer(("127.0.0.1", 0), _FakeSlack)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeSlack.messages
    server.shutdown()
    server.server_close()


@pytest.fixture
def alertmanager(tmp_path, fake_slack):
    """A real Alertmanager on a copy of config.yml. Test-only changes: the
    secret file path (a temp file holding the fake Slack URL) and shorter
    group_wait/group_interval so a notification comes within seconds."""
    url, _ = fake_slack
    secret = tmp_path / "slack_webhook_url"
    secret.write_text(url + "/services/T000/B000/XXXX\n")
    raw = mh.AM_CONFIG.read_text().replace("/run/secrets/slack_webhook_url", str(secret))
    cfg = yaml.safe_load(raw)
    cfg["route"].update({"group_wait": "1s", "group_interval": "2s"})
    (tmp_path / "am.yml").write_text(yaml.safe_dump(cfg))
    port, cluster_port = mh.free_port(), mh.free_port()
    proc = mh.Proc(
        [mh.find_tool("alertmanager"), f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--cluster.listen-address=127.0.0.1:{cluster_port}",
         "--cluster.advertise-address=127.0.0.1:" + str(cluster_port)],
        tmp_path / "alertmanager.log",
    )
    base = f"http://127.0.0.1:{port}"

    def ready():
        if not proc.alive():
            raise mh.Fatal("alertmanager exited")
        return mh.http_get(base + "/-/ready", timeout=1)[0] == 200

    try:
        mh.wait_for(ready, 30, what="alertmanager /-/ready")
    except AssertionError:
        log = proc.log()
        proc.stop()
        raise AssertionError("alertmanager did not start:\n" + log)
    yield base, proc
    proc.stop()


def _alert(name, severity, ends=None):
    now = datetime.now(timezone.utc)
    a = {
        "labels": {"alertname": name, "severity": severity, "service": "geometra-api", "cluster": "test",
                   "job": "geometra-sidecar"},
        "annotations": {"summary": f"{name} {severity}", "description": "test",
                        "runbook_url": f"https://github.com/geometra/geometra-sidecar/blob/main/docs/runbook.md#{name.lower()}",
                        "dashboard": "http://localhost:3000/d/geometra/geometra-ai"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
    }
    if ends is not None:
        a["endsAt"] = ends.isoformat()
    return a


def test_live_alertmanager_slack_routing_inhibition_and_resolve(alertmanager, fake_slack):
    base, proc = alertmanager
    _, messages = fake_slack
    # fast-burn page and slow-burn ticket of the same SLO alert, plus an unrelated warning
    alerts = [
        _alert("LatencySLOBurnRate", "critical"),
        _alert("LatencySLOBurnRate", "warning"),
        _alert("HighLatency", "warning"),
    ]
    mh.http_json(base + "/api/v2/alerts", alerts)

    def delivered():
        chans = {m["channel"] for _, m in messages}
        return {"#critical-alerts", "#alerts"} <= chans

    try:
        mh.wait_for(delivered, 30, what="Slack messages on both channels")
    except AssertionError:
        pytest.fail(f"messages={messages!r}\nalertmanager log:\n{proc.log()}")

    # the webhook came from the file (the fake Slack's path), never from the config
    assert all(path == "/services/T000/B000/XXXX" for path, _ in messages)
    by_channel = {}
    for _, m in messages:
        by_channel.setdefault(m["channel"], []).append(m)
    crit = json.dumps(by_channel["#critical-alerts"])
    assert "LatencySLOBurnRate" in crit and "HighLatency" not in crit
    normal = json.dumps(by_channel["#alerts"])
    assert "HighLatency" in normal
    # the warning of the same group (alertname, cluster, service) is inhibited by the critical
    assert "LatencySLOBurnRate" not in normal, normal
    state = mh.http_json(base + "/api/v2/alerts")
    inhibited = [a for a in state if a["labels"]["alertname"] == "LatencySLOBurnRate"
                 and a["labels"]["severity"] == "warning"]
    assert inhibited and inhibited[0]["status"]["inhibitedBy"], inhibited
    # buttons: dashboard and runbook
    att = by_channel["#critical-alerts"][0]["attachments"][0]
    urls = {a["text"]: a["url"] for a in att.get("actions", [])}
    assert urls.get("View Dashboard") == "http://localhost:3000/d/geometra/geometra-ai", att
    assert urls.get("Runbook", "").endswith("#latencysloburnrate"), att

    # resolve the critical one: a resolved message follows on #critical-alerts
    n_before = len(messages)
    mh.http_json(base + "/api/v2/alerts", [_alert("LatencySLOBurnRate", "critical", ends=datetime.now(timezone.utc))])

    def resolved():
        return [m for _, m in messages[n_before:] if m["channel"] == "#critical-alerts"
                and re.search(r"RESOLVED", json.dumps(m))]

    try:
        mh.wait_for(resolved, 30, what="a RESOLVED message on #critical-alerts")
    except AssertionError:
        pytest.fail(f"messages={messages[n_before:]!r}\nalertmanager log:\n{proc.log()}")
