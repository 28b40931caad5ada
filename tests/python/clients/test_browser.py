"""examples/browser in headless Chromium against the real sidecar's browser listener (receivers.browser).

The page (sdk-trace-web with the document-load instrumentation, OTLP/HTTP
JSON, an `x-tenant-id` header, so the preflight needs
receivers.browser.cors_allowed_headers) is bundled with esbuild and served by
the example's static server (server.js). What the page sends: the page load
(documentLoad with its loadEventEnd event, documentFetch, one resourceFetch
per resource), and per round a `memory.panel.open` span and a CLIENT span
`memory.recall` with `memory.operation=recall` and `enduser.id`.

- From an allowed origin, the browser listener takes the spans and they feed
  the browser rules only (browser_page_loads_total, browser_fetch_*): the
  contract metrics (http_requests_total, ai_requests_total,
  memory_operations_total, active_users) do not move, although the spans
  carry `memory.operation` and `enduser.id`. Forwarded, they are stamped
  service.name=geometra-web and geometra.source=browser.
- From another origin, the browser's CORS check refuses; the sidecar takes
  nothing.
- With tokens (receivers.browser.auth): the FastAPI example mints them
  (3-second lifetime, so a page open for a few seconds refreshes them), the
  page fetches them through server.js's /api/ and sends them; every export
  is accepted, with at least two distinct tokens, and no token is refused.
  The same page without ?token is answered 401 and counted reason="missing".
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jwt
import pytest

import clients_helpers as ch
import monitoring_helpers as mh

CHROMIUM = "/usr/bin/chromium"
API_DIR = ch.EXAMPLES / "python-fastapi"
CONTRACT = ("http_requests_total", "http_request_duration_seconds_count", "ai_requests_total",
            "ai_tokens_total", "memory_operations_total")
UNAUTHORIZED_REASONS = ("missing", "malformed", "bad_signature", "expired", "wrong_audience", "no_secret")
AUDIENCE = "geometra-sidecar"


@pytest.fixture(scope="module")
def page_dir():
    d = ch.node_modules("browser")
    if not shutil.which("chromium") and not os.access(CHROMIUM, os.X_OK):
        ch.required("chromium", "apt-get install chromium")
    build = subprocess.run(["node_modules/.bin/esbuild", "src/app.js", "--bundle", "--format=iife",
                            "--target=es2020", "--outfile=dist/app.js", "--log-level=warning"],
                           cwd=d, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"esbuild failed:\n{build.stdout}\n{build.stderr}"
    return d


def serve(procs, page_dir, tmp_path, name: str, api_url: str | None = None) -> str:
    port = mh.free_port()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PORT": str(port)}
    if api_url:
        env["API_URL"] = api_url
    proc = mh.Proc(["node", "server.js"], tmp_path / f"{name}.log", env=env, cwd=page_dir)
    procs.append(proc)
    origin = f"http://127.0.0.1:{port}"

    def up():
        if not proc.alive():
            raise mh.Fatal(proc.log())
        return mh.http_get(origin + "/app.js", timeout=2)[0] == 200

    mh.wait_for(up, 20, what=f"{name} static server")
    return origin


def open_page(page_dir, url: str, tmp_path, finish: bool = True) -> dict:
    """Run headless-check.mjs (it bounds its own waits); on a hang, SIGTERM lets puppeteer close Chromium.

    The page's report, console errors, failed requests and its OTLP exports
    ({status, authorization}); with `finish`, the page must have reported done."""
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
    if finish:
        assert "error" not in out and (out["page"] or {}).get("done"), f"the page did not finish: {out}"
    return out


def browser_config(allowed_origin: str, **extra) -> dict:
    return {"receivers": {"browser": {
        "cors_allowed_origins": [allowed_origin],
        "cors_allowed_headers": ["x-tenant-id"],
        "cors_max_age": 600,
        **extra,
    }}}


def accepted_spans(sidecar, receiver: str) -> float:
    return sum(ch.series(sidecar.samples(), "otelcol_receiver_accepted_spans_total", receiver=receiver).values())


def wait_accepted(sidecar, n: int) -> None:
    """Until the browser listener has accepted `n` spans (bounded); assert exactly `n`."""
    try:
        mh.wait_for(lambda: accepted_spans(sidecar, "browser") >= n, 20, interval=0.2,
                    what=f"{n} spans accepted by the browser listener")
    except AssertionError:
        pass
    got = accepted_spans(sidecar, "browser")
    assert got == n, f"otelcol_receiver_accepted_spans_total{{receiver=\"browser\"}} is {got}, the page sent {n}"


def check_contract_untouched(samples: dict, allowed_http: dict | None = None):
    """No contract metric moved from browser data. `allowed_http`: the app's
    own http_requests_total series (the control: the API's spans on the
    in-pod listener do count)."""
    allowed = {name: {} for name in CONTRACT}
    for labels, n in (allowed_http or {}).items():
        allowed["http_requests_total"][labels] = n
        no_status = tuple(kv for kv in labels if kv[0] != "status")
        durations = allowed["http_request_duration_seconds_count"]
        durations[no_status] = durations.get(no_status, 0) + n
    for name in CONTRACT:
        got = {l: v for l, v in ch.series(samples, name).items() if v}
        assert got == allowed[name], f"{name}: {got}; the API's own requests: {allowed[name]}"
    assert ch.value(samples, "active_users") == 0, \
        f"active_users counts the browser's enduser.id: {ch.series(samples, 'active_users')}"


def browser_rules_expected(rounds: int) -> dict:
    """What the browser rules derive from one page load and `rounds` rounds:
    the documentLoad span (its loadEventEnd event), and per round the CLIENT
    span memory.recall (no http.* attributes: method _OTHER, status unknown)."""
    return {
        ("browser_page_loads_total", ()): 1,
        ("browser_page_load_duration_seconds_count", ()): 1,
        ("browser_fetch_requests_total", (("method", "_OTHER"), ("outcome", "success"), ("status", "unknown"))): rounds,
        ("browser_fetch_duration_seconds_count", (("method", "_OTHER"),)): rounds,
    }


def check_forwarded_as_browser(sink, names: set[str]):
    """Every forwarded span of the page is stamped as the browser's; the stamp is on nothing else."""
    def spans():
        return [(ch.attrs(r.attributes), sp.name) for r, sp in sink.spans()]

    try:
        mh.wait_for(lambda: names <= {n for _, n in spans()}, 20, interval=0.2,
                    what=f"the page's spans {sorted(names)} forwarded")
    except AssertionError as e:
        raise AssertionError(f"{e}; forwarded: {sorted({n for _, n in spans()})}") from None
    for res, name in spans():
        from_page = name in names or name in ("documentLoad", "documentFetch", "resourceFetch")
        if from_page:
            assert res.get("service.name") == "geometra-web" and res.get("geometra.source") == "browser", \
                f"forwarded browser span {name} not stamped: {res}"
        else:
            assert res.get("geometra.source") is None, f"the browser stamp on an app span {name}: {res}"


def test_browser_allowed_origin_spans_feed_the_browser_rules_only(start_sidecar, procs, page_dir, sink, tmp_path):
    allowed = serve(procs, page_dir, tmp_path, "allowed")
    sidecar = start_sidecar({**browser_config(allowed), **ch.forward_config(sink)})
    out = open_page(page_dir, f"{allowed}/?otlp={sidecar.browser_endpoint}&user=b1", tmp_path)
    page = out["page"]
    assert page["ok"] is True, out
    # the page load (documentLoad, documentFetch, a resourceFetch each for the page and app.js) and 2 spans
    assert page["spans"] >= 2 + 3, out
    assert out["exports"] and all(e["status"] == 200 and e["authorization"] is None for e in out["exports"]), out
    wait_accepted(sidecar, page["spans"])
    ch.wait_exact(sidecar, browser_rules_expected(1), "the browser rules, from the page's spans")
    s = sidecar.samples()
    assert accepted_spans(sidecar, "otlp") == 0, ch.series(s, "otelcol_receiver_accepted_spans_total")
    check_contract_untouched(s)
    check_forwarded_as_browser(sink, {"memory.panel.open", "memory.recall", "documentLoad"})


def test_browser_disallowed_origin_is_refused(start_sidecar, procs, page_dir, tmp_path):
    allowed = serve(procs, page_dir, tmp_path, "allowed")
    other = serve(procs, page_dir, tmp_path, "other")
    sidecar = start_sidecar(browser_config(allowed))
    out = open_page(page_dir, f"{other}/?otlp={sidecar.browser_endpoint}&user=b2", tmp_path)
    assert out["page"]["ok"] is False, out
    # refused for the origin (not for the header: the allowed origin's test shows the header passes)
    assert any("CORS" in m and "Access-Control-Allow-Origin" in m for m in out["console"]), \
        f"the browser reports a CORS failure for the origin: {out}"
    assert any(f["url"] == f"{sidecar.browser_endpoint}/v1/traces" for f in out["failed"]), out
    s = sidecar.samples()
    assert accepted_spans(sidecar, "browser") == 0, "nothing from a disallowed origin is taken in"
    assert not ch.series(s, "browser_page_loads_total") or not any(ch.series(s, "browser_page_loads_total").values())
    check_contract_untouched(s)


# --------------------------------------------------------------------------- tokens
def start_api(procs, sidecar, tmp_path, secret_file, ttl_s: int) -> str:
    """The FastAPI example (one uvicorn worker) minting browser tokens, its own telemetry to the sidecar."""
    missing = [m for m in ("fastapi", "uvicorn", "structlog", "opentelemetry.instrumentation.fastapi")
               if importlib.util.find_spec(m) is None]
    if missing:
        ch.required(", ".join(missing), "pip install -r examples/python-fastapi/requirements.txt")
    port = mh.free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.grpc_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "GEOMETRA_BROWSER_TOKEN_SECRET_FILE": str(secret_file),
        "GEOMETRA_BROWSER_TOKEN_AUDIENCE": AUDIENCE,
        "GEOMETRA_BROWSER_TOKEN_TTL_SECONDS": str(ttl_s),
    }
    cmd = [sys.executable, "-m", "uvicorn", "geometra_api:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = mh.Proc(cmd, tmp_path / "uvicorn.log", env=env, cwd=API_DIR)
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"

    def up():
        if not proc.alive():
            raise mh.Fatal(proc.log())
        return mh.http_get(base + "/health", timeout=2)[0] == 200

    mh.wait_for(up, 30, what="the FastAPI example")
    return base


def bearer(export: dict) -> str:
    auth = export["authorization"]
    assert auth and auth.startswith("Bearer "), f"an export without a bearer token: {export}"
    return auth[len("Bearer "):]


def unauthorized(samples: dict) -> dict[str, float]:
    return {r: ch.value(samples, "geometra_sidecar_browser_unauthorized_total", reason=r) for r in UNAUTHORIZED_REASONS}


def test_browser_with_tokens_refreshed_by_the_page(start_sidecar, procs, page_dir, sink, tmp_path):
    secret = os.urandom(48).rstrip(b"\r\n")  # both sides drop trailing newlines: keep the bytes the same
    while len(secret) < 48:
        secret = os.urandom(48).rstrip(b"\r\n")
    secret_file = tmp_path / "browser-token-secret"
    secret_file.write_bytes(secret)
    secret_file.chmod(0o600)

    # the page's origin is known before the sidecar starts (its CORS list), the API after it (its endpoint)
    port = mh.free_port()
    origin = f"http://127.0.0.1:{port}"
    sidecar = start_sidecar({
        **browser_config(origin, auth={"jwt_hs256_secret_file": str(secret_file), "audience": AUDIENCE,
                                       "clock_skew": "0s"}),
        **ch.forward_config(sink),
    })
    ttl = 3
    api = start_api(procs, sidecar, tmp_path, secret_file, ttl)
    proc = mh.Proc(["node", "server.js"], tmp_path / "page-server.log",
                   env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PORT": str(port), "API_URL": api}, cwd=page_dir)
    procs.append(proc)
    mh.wait_for(lambda: proc.alive() and mh.http_get(origin + "/app.js", timeout=2)[0] == 200, 20,
                what="the page's server")

    rounds = 3
    url = f"{origin}/?otlp={sidecar.browser_endpoint}&user=b3&token=/api/telemetry/token&exports={rounds}&every=2500"
    out = open_page(page_dir, url, tmp_path)
    page = out["page"]
    f = ch.Failures()
    with f.check("the page"):
        assert page["ok"] is True, out
        assert page["tokens"] == {"fetched": page["tokens"]["fetched"], "error": None}, out
        assert page["tokens"]["fetched"] >= 2, f"the page never refreshed its token: {out}"
    with f.check("every export carried a valid token and was accepted"):
        assert len(out["exports"]) >= rounds, out
        assert all(e["status"] == 200 for e in out["exports"]), out["exports"]
        tokens = [bearer(e) for e in out["exports"]]
        for t in set(tokens):
            claims = jwt.decode(t, secret, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False})
            assert claims["sub"] == "b3" and claims["exp"] - claims["iat"] == ttl, claims
        assert len(set(tokens)) >= 2, f"one token for {len(tokens)} exports over {rounds * 2.5:.0f} s: no refresh"
    with f.check("the sidecar accepted the page's spans"):
        wait_accepted(sidecar, page["spans"])
    with f.check("no token refused"):
        s = sidecar.samples()
        assert unauthorized(s) == dict.fromkeys(UNAUTHORIZED_REASONS, 0), unauthorized(s)
        refused = {l: v for l, v in ch.series(s, "geometra_sidecar_browser_refused_requests_total").items() if v}
        assert not refused, refused
    with f.check("the browser rules"):
        ch.wait_exact(sidecar, browser_rules_expected(rounds), "the browser rules, from the page's spans")
    with f.check("contract metrics: the API's token requests count, the browser's spans do not"):
        # the API's POST /telemetry/token spans arrive on the in-pod gRPC listener: the control
        # (and the one GET /health that found it up)
        want = {(("endpoint", "/telemetry/token"), ("method", "POST"), ("status", "200")): page["tokens"]["fetched"],
                (("endpoint", "/health"), ("method", "GET"), ("status", "200")): 1}
        try:
            mh.wait_for(lambda: {l: v for l, v in ch.series(sidecar.samples(), "http_requests_total").items() if v}
                        == want, 20, interval=0.3, what="the API's token requests in http_requests_total")
        except AssertionError:
            pass
        check_contract_untouched(sidecar.samples(), allowed_http=want)
    with f.check("forwarded spans are the browser's"):
        check_forwarded_as_browser(sink, {"memory.panel.open", "memory.recall", "documentLoad"})
    f.raise_any()

    # the same page without ?token: its export goes without one and is refused
    before = accepted_spans(sidecar, "browser")
    out = open_page(page_dir, f"{origin}/?otlp={sidecar.browser_endpoint}&user=b4", tmp_path)
    assert out["page"]["ok"] is False, out
    assert out["exports"] and all(e["status"] == 401 and e["authorization"] is None for e in out["exports"]), out
    want = {**dict.fromkeys(UNAUTHORIZED_REASONS, 0), "missing": len(out["exports"])}
    try:
        mh.wait_for(lambda: unauthorized(sidecar.samples()) == want, 10, interval=0.2,
                    what="the refused exports counted as reason=missing")
    except AssertionError:
        pass
    assert unauthorized(sidecar.samples()) == want, f"{out['exports']}"
    assert accepted_spans(sidecar, "browser") == before, "spans of a refused export were taken in"
