"""The sidecar image scripts/image.sh builds, and the Dockerfile that must produce the same one.

No registry is reachable here, so the Dockerfile itself cannot be built in the suite; what
keeps the two from drifting: both lay out the root filesystem with
scripts/image-rootfs.sh, and scripts/image.sh uses the Dockerfile's runtime
stage as its Containerfile. These tests check that chain: the image holds
exactly the files of the script's tree (no more, no less), and its user,
ports, entrypoint and labels are the ones the Dockerfile declares; the
Dockerfile's build stage copies everything the build reads.
"""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import struct
import subprocess
import threading
import tomllib
from pathlib import Path

import pod_helpers as ph

CA = "etc/ssl/certs/ca-certificates.crt"
BIN = "usr/local/bin/geometra-sidecar"


def declared(stage: str, instr: str) -> list[str]:
    return re.findall(rf"^{instr}\s+(.+)$", stage, re.M)


def interpreter(binary) -> str | None:
    """The ELF program interpreter (the dynamic loader) a binary asks for; None if static."""
    out = subprocess.run(["readelf", "--program-headers", str(binary)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"Requesting program interpreter: (\S+)\]", out)
    return m[1] if m else None


def ldd_paths(binary) -> set[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = set(re.findall(r"=> (/\S+)", out)) | set(re.findall(r"^\s*(/\S+) \(", out, re.M))
    return {p.lstrip("/") for p in paths}


def staged_tree(binary, dst: Path) -> set[str]:
    subprocess.run([str(ph.ROOT / "scripts" / "image-rootfs.sh"), str(binary), str(dst)], check=True)
    return {str(p.relative_to(dst)) for p in dst.rglob("*")}


def test_image_holds_exactly_the_staged_tree(images, tmp_path):
    files = ph.image_files(ph.SIDECAR_IMAGE, tmp_path)
    binary = ph.image_binary()
    # what the image ships is a static binary (scripts/image-binary.sh): no
    # loader, no shared object
    assert interpreter(binary) is None
    regular = {name for name, m in files.items() if m.isfile()}
    assert regular == {BIN, CA, "etc/passwd", "etc/group", "etc/nsswitch.conf"}
    assert not [n for n in files if ".so" in n or n.startswith("lib")], sorted(files)
    # the same tree the Dockerfile's build stage makes with the same script
    staged = tmp_path / "rootfs"
    want = staged_tree(binary, staged)
    assert {n for n in files if n in want or not files[n].isdir()} == want
    for name in want:
        if (staged / name).is_file():
            assert files[name].size == (staged / name).stat().st_size, name
            assert files[name].mode & 0o777 == (staged / name).stat().st_mode & 0o777, name
    assert files["tmp"].mode & 0o7777 == 0o1777
    assert (staged / CA).read_bytes() == open("/" + CA, "rb").read()
    # host names: /etc/hosts, then DNS, the two NSS modules a static glibc has built in
    assert (staged / "etc/nsswitch.conf").read_text() == "hosts: files dns\n"
    # stripped: no symbol table left
    nm = subprocess.run(["nm", str(staged / BIN)], capture_output=True, text=True)
    assert "no symbols" in nm.stderr, nm.stderr
    assert "nonroot:x:65532:65532:" in (staged / "etc/passwd").read_text()


def test_rootfs_of_a_dynamic_binary_holds_the_libraries_it_loads(tmp_path):
    """scripts/image-rootfs.sh given a dynamically linked binary (GEOMETRA_IMAGE_BIN=the release
    build) copies the libraries ldd names, the loader included, at the paths the binary asks for."""
    binary = Path(ph.mh.sidecar_bin_path())
    assert interpreter(binary) == "/lib64/ld-linux-x86-64.so.2"
    libs = ldd_paths(binary)
    assert {"lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2"} <= libs
    staged = tmp_path / "rootfs"
    want = staged_tree(binary, staged)
    regular = {n for n in want if (staged / n).is_file()}
    assert regular == {BIN, CA, "etc/passwd", "etc/group", "etc/nsswitch.conf"} | libs
    for lib in libs:
        assert (staged / lib).read_bytes() == Path("/" + lib).read_bytes(), lib


def test_image_config_is_the_dockerfiles(images):
    stage = ph.dockerfile_runtime_stage()
    cfg = ph.image_inspect(ph.SIDECAR_IMAGE)["Config"]
    assert declared(stage, "USER") == ["65532:65532"] and cfg["User"] == "65532:65532"
    ports = {f"{p}/tcp" for line in declared(stage, "EXPOSE") for p in line.split()}
    assert ports == {"4317/tcp", "4318/tcp", "9464/tcp"}
    assert set(cfg["ExposedPorts"]) == ports
    assert declared(stage, "ENTRYPOINT") == ['["/usr/local/bin/geometra-sidecar"]']
    assert cfg["Entrypoint"] == ["/usr/local/bin/geometra-sidecar"]
    assert not cfg.get("Cmd")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', stage))
    version = tomllib.loads((ph.ROOT / "Cargo.toml").read_text())["package"]["version"]
    labels["org.opencontainers.image.version"] = version
    got = {k: v for k, v in cfg["Labels"].items() if k.startswith("org.opencontainers.image.")}
    revision = got.pop("org.opencontainers.image.revision")
    assert re.fullmatch(r"[0-9a-f]{12}", revision), revision
    labels.pop("org.opencontainers.image.revision")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got.pop("org.opencontainers.image.created"))
    assert got == labels
    # the only reference to the build stage is the tree's COPY
    assert re.findall(r"^COPY .*$", stage, re.M) == ["COPY --from=build /out/rootfs/ /"]


def test_dockerfile_build_stage_copies_what_the_build_reads():
    text = (ph.ROOT / "Dockerfile").read_text()
    build = text[: text.index(ph.dockerfile_runtime_stage())]
    copied = {item.rstrip("/") for line in declared(build, "COPY") for item in line.split()[:-1]}
    manifest = tomllib.loads((ph.ROOT / "Cargo.toml").read_text())
    needed = {"Cargo.toml", "Cargo.lock", "build.rs", "src", "scripts/image-binary.sh", "scripts/image-rootfs.sh"}
    needed |= {b.get("path", f"benches/{b['name']}.rs").split("/")[0] for b in manifest.get("bench", [])}
    # the directories build.rs reads: proto/ (prost types) and link/ (symbol order)
    needed |= set(re.findall(r'"(proto|link)(?:/[^"]*)?"', (ph.ROOT / "build.rs").read_text()))
    assert {"proto", "link"} <= needed
    assert needed <= copied, f"the build stage does not copy {sorted(needed - copied)}"
    assert 'bin=$(scripts/image-binary.sh)' in build and 'scripts/image-rootfs.sh "$bin" /out/rootfs' in build


def test_dockerfile_build_context_loads_the_manifest(tmp_path):
    """Only what the build stage copies, laid out as it copies it: Cargo loads the package
    (its benches, the lockfile) offline, and build.rs finds the files it reads."""
    text = (ph.ROOT / "Dockerfile").read_text()
    build = text[: text.index(ph.dockerfile_runtime_stage())]
    ctx = tmp_path / "src"
    ctx.mkdir()
    for line in declared(build, "COPY"):
        *sources, dest = line.split()
        for src in sources:
            target = ctx / dest / Path(src).name if dest.endswith("/") else ctx / dest
            if (ph.ROOT / src).is_dir():
                shutil.copytree(ph.ROOT / src, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ph.ROOT / src, target)
    # Cargo loads the whole package (every declared target's file, the
    # lockfile) before it looks for the target asked for; one that does not
    # exist stops it there, before anything compiles
    res = subprocess.run(["cargo", "check", "--locked", "--offline", "--bin", "no-such-target"],
                         cwd=ctx, capture_output=True, text=True, timeout=120)
    assert "error: no bin target named `no-such-target`" in res.stderr, res.stderr
    assert "available bin targets:\n    geometra-sidecar" in res.stderr, res.stderr
    assert (ctx / "link" / "symbol-order.txt").is_file()
    assert list((ctx / "proto").rglob("*.proto"))
    assert (ctx / "scripts" / "image-rootfs.sh").stat().st_mode & 0o111
    assert (ctx / "scripts" / "image-binary.sh").stat().st_mode & 0o111


def test_image_runs_read_only(images):
    version = tomllib.loads((ph.ROOT / "Cargo.toml").read_text())["package"]["version"]
    res = ph.podman("run", "--rm", "--read-only", "--cap-drop=ALL", ph.SIDECAR_IMAGE, "--version")
    assert res.stdout.strip() == f"geometra-sidecar {version}"
    out = ph.podman("run", "--rm", "--read-only", "--entrypoint", "/usr/local/bin/geometra-sidecar",
                    ph.SIDECAR_IMAGE, "print-default-config")
    assert "receivers:" in out.stdout


def dns_answer(query: bytes, name: str, ip: str) -> tuple[bytes, str, int]:
    """The answer to one DNS query: an A record for `name` (ip), no record of another type for it
    (NOERROR), NXDOMAIN for any other name. Returns (answer, asked name, asked type)."""
    i, labels = 12, []
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode().lower())
        i += 1 + query[i]
    qname, qtype, end = ".".join(labels), int.from_bytes(query[i + 1:i + 3], "big"), i + 5
    rcode, answer = (0, b"") if qname == name else (3, b"")
    if qname == name and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(ip)
    flags = bytes([0x80 | (query[2] & 0x79), 0x80 | rcode])  # QR, the query's opcode and RD; RA
    header = query[:2] + flags + struct.pack(">HHHH", 1, 1 if answer else 0, 0, 0)
    return header + query[12:end] + answer, qname, qtype


class DnsServer(threading.Thread):
    """A one-name DNS server on UDP port 53 of `host`, recording what it was asked."""

    def __init__(self, host: str, name: str, ip: str):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.2)
        self.name, self.ip, self.asked, self.stop = name, ip, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            answer, qname, qtype = dns_answer(query, self.name, self.ip)
            self.asked.append((qname, qtype))
            self.sock.sendto(answer, peer)
        self.sock.close()


def test_image_resolves_a_downstream_by_dns(images, tmp_path):
    """The static binary's DNS path (glibc's built-in nss_dns), as a cluster's Service names
    resolve: the container's only nameserver is a test DNS server that knows one name, the
    remote-write URL's host; the pushes arrive at the address it gave, naming that host."""
    # podman's bridge, and so its gateway address, exists once a container ran on it
    ph.podman("run", "--rm", ph.SIDECAR_IMAGE, "--version")
    gateway, name = ph.network_gateway(), "remote-write.dns-check.test"
    pushes: list[tuple[str, str]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            pushes.append((self.headers.get("host", ""), self.path))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    web = http.server.ThreadingHTTPServer((gateway, 0), Receiver)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    dns = DnsServer(gateway, name, gateway)
    dns.start()
    url = f"http://{name}:{web.server_address[1]}/api/v1/write"
    (tmp_path / "config.yaml").write_text(f"remote_write: {{url: '{url}', interval: 1s}}\n")
    ctr = f"{ph.PREFIX}-dns"
    ph.podman("rm", "--force", "--ignore", ctr)
    try:
        ph.podman("run", "--detach", "--name", ctr, "--read-only", "--dns", gateway,
                  "--volume", f"{tmp_path / 'config.yaml'}:/etc/geometra-sidecar/config.yaml:ro",
                  ph.SIDECAR_IMAGE, "--config", "/etc/geometra-sidecar/config.yaml")
        ph.mh.wait_for(lambda: pushes, 30, 0.2, f"a remote-write push to {url} (DNS asked: {dns.asked})")
    finally:
        log = ph.podman("logs", ctr, check=False)
        ph.podman("rm", "--force", "--ignore", ctr, check=False)
        web.shutdown()
        dns.stop.set()
    assert (name, 1) in dns.asked, f"{dns.asked}\n{log.stdout}{log.stderr}"
    assert pushes[0] == (f"{name}:{web.server_address[1]}", "/api/v1/write")
