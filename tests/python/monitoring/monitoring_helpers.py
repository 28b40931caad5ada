"""Helpers for the monitoring/ tests (rules, Alertmanager, dashboard, e2e).

Tools: promtool/prometheus (Debian package `prometheus`) and
amtool/prometheus-alertmanager (`prometheus-alertmanager`); scripts/test.sh
installs both. A test that cannot run here (a tool missing,
GEOMETRA_SIDECAR_BIN unset) fails with the reason, as the Rust tests do
(tests/common: `require`), unless GEOMETRA_TEST_ALLOW_SKIP=1: then it skips
with the reason, for a developer machine. The suite never passes by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yml"
RULES_TEST = MONITORING / "prometheus" / "rules_test.yml"
PROM_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
PROM_K8S_CONFIG = MONITORING / "prometheus" / "prometheus-kubernetes.yml"
AM_CONFIG = MONITORING / "alertmanager" / "config.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "geometra.json"
RUNBOOK = REPO / "docs" / "runbook.md"
COMPOSE = REPO / "docker-compose.monitoring.yml"
DOCKERFILE = REPO / "Dockerfile"

ALLOW_SKIP = "GEOMETRA_TEST_ALLOW_SKIP"


def skip_or_fail(reason: str):
    """The one skip policy (the Rust tests' tests/common `skip_or_fail`): fail
    naming `reason`, or skip with it when GEOMETRA_TEST_ALLOW_SKIP=1."""
    if os.environ.get(ALLOW_SKIP) == "1":
        pytest.skip(reason)
    pytest.fail(f"cannot run here: {reason} (set {ALLOW_SKIP}=1 to skip such tests instead)")


# Candidate names: Debian ships the Alertmanager binary as prometheus-alertmanager.
_TOOLS = {
    "promtool": ["promtool"],
    "prometheus": ["prometheus"],
    "amtool": ["amtool"],
    "alertmanager": ["prometheus-alertmanager", "alertmanager"],
}


def find_tool(name: str) -> str:
    for cand in _TOOLS[name]:
        path = shutil.which(cand) or (f"/usr/bin/{cand}" if os.access(f"/usr/bin/{cand}", os.X_OK) else None)
        if path:
            return path
    skip_or_fail(f"{name} not found (apt-get install prometheus prometheus-alertmanager; scripts/test.sh does it)")


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str, data: object | None = None, timeout: float = 5.0) -> object:
    body = None
    headers = {}
    if data is not None:
        body = json.dumps(data).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


class Fatal(Exception):
    """Raised by a wait_for predicate to stop waiting at once (e.g. the process died)."""


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Bounded wait: returns the predicate's truthy value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Fatal as e:
            raise AssertionError(f"gave up waiting for {what}: {e}") from None
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def shutdown_all(shutdowns) -> None:
    """Calls every shutdown (a load's exporters at teardown), each even if
    another raised: a test's teardown must not hide the test's own result."""
    for shut in shutdowns:
        try:
            shut()
        except Exception:  # noqa: BLE001 - teardown
            pass


def run_load(load):
    """A module fixture's body: start a load, hand it to the tests, stop it."""
    load.start()
    yield load
    load.stop()


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules(rules_doc=None) -> list[dict]:
    doc = rules_doc if rules_doc is not None else load_yaml(RULES)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard_targets(dash=None) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every target of every panel (rows included, nested too)."""
    if dash is None:
        dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", ""), t.get("refId", ""), t.get("expr", "")))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def grafana_expr(expr: str, rate_interval: str = "30s") -> str:
    """Replace the Grafana variables a Prometheus query can contain by values Prometheus accepts."""
    return (
        expr.replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval)
        .replace("${__interval}", "15s")
        .replace("$__interval", "15s")
        .replace("${__range}", "1h")
        .replace("$__range", "1h")
        .replace("${datasource}", "prometheus")
        .replace("$datasource", "prometheus")
    )


class Proc:
    """A child process in its own process group, killed (by pgid) on stop()."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.p = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=5)
        self._log.close()


def start_prometheus(config_dir: Path, config_name: str, tmp: Path, extra_args: tuple = (),
                     host: str = "127.0.0.1", port: int | None = None) -> tuple[Proc, str]:
    """Start Debian's prometheus on host:port (127.0.0.1:<free port> unless given); return
    (proc, base URL) once /-/ready."""
    binary = find_tool("prometheus")
    port = port or free_port()
    data = tmp / "prom-data"
    data.mkdir(exist_ok=True)
    proc = Proc(
        [
            binary,
            f"--config.file={config_dir / config_name}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={host}:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=info",
            *extra_args,
        ],
        tmp / "prometheus.log",
    )
    base = f"http://{host}:{port}"

    def ready():
        if not proc.alive():
            raise Fatal("prometheus exited")
        return http_get(base + "/-/ready", timeout=1)[0] == 200

    try:
        wait_for(ready, 30, what="prometheus /-/ready")
    except BaseException:
        log = proc.log()
        proc.stop()
        raise AssertionError(f"prometheus did not become ready; log:\n{log}")
    return proc, base


def prom_query(base: str, expr: str, at: float | None = None) -> dict:
    """An instant query, evaluated now or at unix time `at`."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    url = base + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}")


def sidecar_bin_path() -> Path:
    """The sidecar under test: GEOMETRA_SIDECAR_BIN (unset: fail, or skip under GEOMETRA_TEST_ALLOW_SKIP=1)."""
    env = os.environ.get("GEOMETRA_SIDECAR_BIN")
    if not env:
        skip_or_fail("GEOMETRA_SIDECAR_BIN is not set (scripts/test.sh sets it to target/release/geometra-sidecar)")
    path = Path(env)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"GEOMETRA_SIDECAR_BIN={env} is not an executable file")
    return path
