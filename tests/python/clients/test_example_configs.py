"""The sidecar configs the client docs show are valid: `geometra-sidecar check-config` accepts them.

examples/browser/sidecar.yaml, sidecar-tokens.yaml and the YAML blocks of docs/clients.md (CORS
origins and headers for the browser) must not rot. (test_docs.py checks every
YAML block of the docs the same way.)
"""

from __future__ import annotations

import re
import subprocess

import yaml

import clients_helpers as ch
import monitoring_helpers as mh


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(mh.sidecar_bin_path()), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_browser_example_sidecar_config_is_valid():
    r = check_config(ch.EXAMPLES / "browser" / "sidecar.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    browser = yaml.safe_load(r.stdout)["receivers"]["browser"]
    assert browser["listen"] == "127.0.0.1:4319", browser
    assert browser["cors_allowed_origins"] == ["http://127.0.0.1:8080"], browser
    assert browser["cors_allowed_headers"] == ["x-tenant-id"], browser
    assert browser["auth"]["jwt_hs256_secret_file"] is None, "the plain example works without tokens"


def test_browser_example_sidecar_tokens_config_is_valid():
    r = check_config(ch.EXAMPLES / "browser" / "sidecar-tokens.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    browser = yaml.safe_load(r.stdout)["receivers"]["browser"]
    assert browser["cors_allowed_origins"] == ["http://127.0.0.1:8080"], browser
    assert browser["auth"]["jwt_hs256_secret_file"] == "/tmp/browser-token-secret", browser
    assert browser["auth"]["audience"] == "geometra-sidecar", browser


def test_client_setup_yaml_is_valid(tmp_path):
    page = (ch.REPO / "docs" / "clients.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    assert blocks, "docs/clients.md shows the sidecar's CORS config"
    assert any("cors_allowed_origins" in b and "cors_allowed_headers" in b for b in blocks), blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"client-setup-{i}.yaml"
        path.write_text(block)
        r = check_config(path)
        assert r.returncode == 0, f"docs/clients.md YAML block {i}:\n{block}\n{r.stdout}{r.stderr}"
