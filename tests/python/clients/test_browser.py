"""examples/browser in headless Chromium against the real sidecar's OTLP/HTTP receiver with CORS.

The page (sdk-trace-web, OTLP/HTTP JSON, an `x-tenant-id` header, so the
preflight needs receivers.otlp_http.cors_allowed_headers) is bundled with
esbuild and served by the example's static server from two origins: the one
the sidecar allows gets its spans accepted and derived; the other is refused
by the browser's CORS check, and the sidecar takes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import clients_helpers as ch
import monitoring_helpers as mh

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page_dir():
    d = ch.node_modules("browser")
    if not shutil.which("chromium") and not shutil.which(CHROMIUM):
        ch.required("chromium", "apt-get install chromium")
    build = subprocess.run(["node_modules/.bin/esbuild", "src/app.js", "--bundle", "--format=iife",
                            "--target=es2020", "--outfile=dist/app.js", "--log-level=warning"],
                           cwd=d, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"esbuild failed:\n{build.stdout}\n{build.stderr}"
    return d


def serve(procs, page_dir, tmp_path, name: str) -> str:
    port = mh.free_port()
    proc = mh.Proc(["node", "server.js"], tmp_path / f"{name}.log",
                   env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PORT": str(port)}, cwd=page_dir)
    procs.append(proc)
    origin = f"http://127.0.0.1:{port}"

    def up():
        if not proc.alive():
            raise mh.Fatal(proc.log())
        return mh.http_get(origin + "/app.js", timeout=2)[0] == 200

    mh.wait_for(up, 20, what=f"{name} static server")
    return origin


def open_page(page_dir, url: str, tmp_path) -> dict:
    """Run headless-check.mjs (it bounds its own waits); on a hang, SIGTERM lets puppeteer close Chromium."""
    p = subprocess.Popen(["node", "headless-check.mjs", url], cwd=page_dir, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)})
    try:
        stdout, stderr = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            stdout, stderr = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        raise AssertionError(f"headless-check hung:\n{stdout}\n{stderr}") from None
    assert p.returncode == 0, f"headless-check failed:\n{stdout}\n{stderr}"
    out = json.loads(stdout.strip().splitlines()[-1])
    assert "error" not in out, f"the page did not finish: {out}"
    return out


def browser_config(allowed_origin: str) -> dict:
    return {"receivers": {"otlp_http": {
        "cors_allowed_origins": [allowed_origin],
        "cors_allowed_headers": ["x-tenant-id"],
        "cors_max_age": 600,
    }}}


def accepted_http_spans(sidecar) -> float:
    return ch.value(sidecar.samples(), "otelcol_receiver_accepted_spans_total", receiver="otlp", transport="http") or 0.0


def test_browser_allowed_origin_spans_are_accepted(start_sidecar, procs, page_dir, tmp_path):
    allowed = serve(procs, page_dir, tmp_path, "allowed")
    sidecar = start_sidecar(browser_config(allowed))
    out = open_page(page_dir, f"{allowed}/?otlp={sidecar.http_endpoint}&user=b1", tmp_path)
    assert out["page"] == {"done": True, "ok": True, "spans": 2}, out
    exp = {
        ("memory_operations_total", (("operation", "recall"), ("status", "success"))): 1,
        ("active_users", ()): 1,
    }
    ch.wait_exact(sidecar, exp, "metrics derived from the browser's spans")
    assert accepted_http_spans(sidecar) == 2


def test_browser_disallowed_origin_is_refused(start_sidecar, procs, page_dir, tmp_path):
    allowed = serve(procs, page_dir, tmp_path, "allowed")
    other = serve(procs, page_dir, tmp_path, "other")
    sidecar = start_sidecar(browser_config(allowed))
    out = open_page(page_dir, f"{other}/?otlp={sidecar.http_endpoint}&user=b2", tmp_path)
    assert out["page"]["ok"] is False, out
    # refused for the origin (not for the header: the allowed origin's test shows the header passes)
    assert any("CORS" in m and "Access-Control-Allow-Origin" in m for m in out["console"]), \
        f"the browser reports a CORS failure for the origin: {out}"
    assert any(f["url"] == f"{sidecar.http_endpoint}/v1/traces" for f in out["failed"]), out
    s = sidecar.samples()
    assert accepted_http_spans(sidecar) == 0, "nothing from a disallowed origin is taken in"
    assert ch.value(s, "active_users") == 0, ch.series(s, "active_users")
    assert not ch.series(s, "memory_operations_total"), ch.series(s, "memory_operations_total")
