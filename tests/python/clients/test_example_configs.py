"""The sidecar configs the client docs show are valid: `geometra-sidecar check-config` accepts them.

examples/browser/sidecar.yaml and the YAML block of the README's "Client
setup" section (CORS origins and headers for the browser) must not rot.
"""

from __future__ import annotations

import re
import subprocess

import clients_helpers as ch
import monitoring_helpers as mh


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(mh.sidecar_bin_path()), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_browser_example_sidecar_config_is_valid():
    r = check_config(ch.EXAMPLES / "browser" / "sidecar.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "x-tenant-id" in r.stdout and "http://127.0.0.1:8080" in r.stdout, r.stdout


def test_readme_client_setup_yaml_is_valid(tmp_path):
    readme = (ch.REPO / "README.md").read_text()
    section = readme.split("## Client setup", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks, "the Client setup section shows the sidecar's CORS config"
    for i, block in enumerate(blocks):
        path = tmp_path / f"client-setup-{i}.yaml"
        path.write_text(block)
        r = check_config(path)
        assert r.returncode == 0, f"README Client setup block {i}:\n{block}\n{r.stdout}{r.stderr}"
