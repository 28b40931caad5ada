#!/usr/bin/env python3
"""Start-up and shutdown of the sidecar's container, as a pod sees them (BENCHMARKS.md, "Container image").

    scripts/image.sh sidecar && python3 benches/container_lifecycle.py [RUNS]   (default 10)

Each run creates the image's container (read-only root filesystem, no
capabilities, uid 65532, the chart's defaults: OTLP on the container's
loopback, /metrics /healthz /readyz on 0.0.0.0:9464), then:
- start-up: from the container's State.StartedAt (the runtime started its
  process) to the first /readyz 200, polled every 5 ms from the host over the
  container's IP; and from `podman start` being called (engine included);
- shutdown: from `podman stop --time 30` (SIGTERM) to the container's exit,
  nothing queued (the backlog case is the pod test's: tests/python/pod), and
  the sidecar's own part of it, between its "stopping" and "stopped" log lines.
Prints the median and the worst of each. podman runs with
scripts/podman/containers.conf unless CONTAINERS_CONF names another file.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/geometra-sidecar:dev"
NAME = "geo-bench-lifecycle"
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "scripts/podman/containers.conf"))}


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True, env=ENV).stdout


def inspect() -> dict:
    return json.loads(podman("inspect", NAME))[0]


def unix(rfc3339: str) -> float:
    m = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    if not m:
        raise ValueError(rfc3339)
    return datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3])).timestamp() + float("0." + (m[2] or "0"))


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def one_run() -> tuple[float, float, float]:
    podman("rm", "--force", "--ignore", NAME)
    podman("create", "--name", NAME, "--read-only", "--cap-drop=ALL", "--env", "GEOMETRA_LOG_FORMAT=json", IMAGE)
    called = time.time()
    podman("start", NAME)
    c = inspect()
    ip = next(n["IPAddress"] for n in c["NetworkSettings"]["Networks"].values() if n.get("IPAddress"))
    deadline = time.monotonic() + 30
    while not ready(f"http://{ip}:9464/readyz"):
        if time.monotonic() > deadline:
            raise SystemExit(f"no /readyz 200 within 30s:\n{podman('logs', NAME)}")
        time.sleep(0.005)
    at = time.time()
    t0 = time.monotonic()
    podman("stop", "--time", "30", NAME)
    stop = time.monotonic() - t0
    state = inspect()["State"]
    if state["ExitCode"] != 0:
        raise SystemExit(f"exit code {state['ExitCode']} after SIGTERM")
    # the sidecar's own part: its "stopping" (SIGTERM seen) and "stopped" log lines
    log = {}
    logs = subprocess.run(["podman", "logs", NAME], capture_output=True, text=True, check=True, env=ENV)
    for line in (logs.stdout + logs.stderr).splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            log[rec.get("message", "").split(":")[0]] = unix(rec["timestamp"])
    podman("rm", "--force", NAME)
    return at - unix(c["State"]["StartedAt"]), at - called, stop, log["stopped"] - log["stopping"]


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    results = [one_run() for _ in range(runs)]
    for i, what in enumerate(("container start -> /readyz 200", "podman start called -> /readyz 200",
                              "podman stop -> exited (nothing queued)",
                              "sidecar: SIGTERM seen -> stopped (its log)")):
        xs = sorted(r[i] * 1000 for r in results)
        print(f"{what}: median {statistics.median(xs):.1f} ms, max {xs[-1]:.1f} ms ({runs} runs)")
    print(f"load average: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
