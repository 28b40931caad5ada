"""Helpers for tests/python/pod: podman, the images of scripts/image.sh, pods from `podman kube play`.

podman runs with the repository's engine settings (scripts/podman/containers.conf
through CONTAINERS_CONF, as scripts/image.sh does). Everything the tests
create is named with the prefix geo-podtest- and removed by name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import monitoring_helpers as mh

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
CONF = ROOT / "scripts" / "podman" / "containers.conf"
SIDECAR_IMAGE = "localhost/geometra-sidecar:dev"
EXAMPLE_IMAGE = "localhost/geometra-fastapi-example:dev"
PREFIX = "geo-podtest"


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("CONTAINERS_CONF", str(CONF))
    return e


def need_tools():
    """podman, runc, catatonit (the pods' pause process) and debootstrap, or fail (skip under ALLOW_SKIP)."""
    missing = [t for t in ("podman", "runc", "catatonit", "debootstrap") if shutil.which(t) is None
               and not os.access(f"/usr/sbin/{t}", os.X_OK)]
    if missing:
        mh.skip_or_fail(f"{', '.join(missing)} not found (apt-get install podman runc catatonit debootstrap; "
                        "scripts/test.sh does it)")


def podman(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env(), **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def image_binary() -> Path:
    """The static binary the image ships (scripts/image-binary.sh: cargo builds it, or finds it
    fresh), or GEOMETRA_IMAGE_BIN where that names one (as scripts/image.sh takes it)."""
    if os.environ.get("GEOMETRA_IMAGE_BIN"):
        return Path(os.environ["GEOMETRA_IMAGE_BIN"])
    res = subprocess.run([str(ROOT / "scripts" / "image-binary.sh")], capture_output=True, text=True,
                         timeout=3600, cwd=ROOT)
    assert res.returncode == 0, f"scripts/image-binary.sh failed:\n{res.stderr[-3000:]}"
    return ROOT / res.stdout.strip()


def build_images(what: str = "all") -> float:
    """scripts/image.sh WHAT with the image's binary; returns the seconds it took."""
    t0 = time.monotonic()
    e = env()
    e["GEOMETRA_IMAGE_BIN"] = str(image_binary())
    res = subprocess.run([str(ROOT / "scripts" / "image.sh"), what], capture_output=True, text=True,
                         timeout=900, env=e, cwd=ROOT)
    assert res.returncode == 0, f"scripts/image.sh {what} failed:\n{res.stdout}\n{res.stderr}"
    return time.monotonic() - t0


def image_inspect(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def image_files(ref: str, tmp: Path) -> dict[str, tarfile.TarInfo]:
    """Every path in the image's filesystem (podman export of a created, never started, container)."""
    name = f"{PREFIX}-files"
    podman("rm", "--force", "--ignore", name)
    podman("create", "--name", name, ref)
    try:
        out = tmp / "image.tar"
        podman("export", "--output", str(out), name)
        with tarfile.open(out) as tar:
            return {m.name.lstrip("./").rstrip("/"): m for m in tar.getmembers() if m.name.strip("./")}
    finally:
        podman("rm", "--force", "--ignore", name)


def dockerfile_runtime_stage() -> str:
    text = (ROOT / "Dockerfile").read_text()
    start = re.search(r"^FROM scratch AS runtime$", text, re.M)
    assert start, "the Dockerfile has no 'FROM scratch AS runtime' stage"
    return text[start.start():]


def kube_play(yaml_text: str, path: Path, *extra: str) -> str:
    path.write_text(yaml_text)
    return podman("kube", "play", *extra, str(path), timeout=180).stdout


def pod_ip(pod: str) -> str:
    infra = json.loads(podman("pod", "inspect", pod).stdout)["InfraContainerID"]
    nets = json.loads(podman("inspect", infra, "--format", "{{json .NetworkSettings.Networks}}").stdout)
    ips = [n["IPAddress"] for n in nets.values() if n.get("IPAddress")]
    assert len(ips) == 1, f"pod {pod}: expected one address, got {nets}"
    return ips[0]


def container(pod: str, name: str) -> dict:
    """`podman inspect` of the container NAME of a pod made by kube play (named <pod>-<name>)."""
    return json.loads(podman("inspect", f"{pod}-{name}").stdout)[0]


def kubelet_fields(spec: dict):
    """podman 4.3's kube play resolves the downward API's metadata.name and metadata.uid but
    refuses metadata.namespace and spec.nodeName: those two get the values the kubelet would
    give them (namespace geometra, node podman)."""
    kubelet = {"metadata.namespace": "geometra", "spec.nodeName": "podman"}
    for c in spec["containers"]:
        for e in c.get("env", []):
            path = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if path in kubelet:
                del e["valueFrom"]
                e["value"] = kubelet[path]


def free_host_ports(spec: dict):
    """podman 4.3's kube play publishes every containerPort on the host, at the same port unless
    hostPort says otherwise (the kubelet publishes none): pods of the same chart would collide,
    so each port gets a free host port. The tests reach the pods at their own IPs."""
    for c in spec["containers"]:
        for p in c.get("ports", []):
            p["hostPort"] = mh.free_port()


def network_gateway() -> str:
    """The address of the host on podman's default network (pods reach the host's services there)."""
    nets = json.loads(podman("network", "inspect", "podman").stdout)
    return nets[0]["subnets"][0]["gateway"]


def remove_pods(*pods: str):
    for pod in pods:
        podman("pod", "rm", "--force", "--ignore", pod, timeout=120, check=False)


def http(method: str, url: str, body: object | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
