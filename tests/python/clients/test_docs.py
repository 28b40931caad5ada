"""The documentation does not drift from the binary, and its links resolve.

- docs/configuration.md holds `geometra-sidecar print-default-config`
  verbatim under "The embedded defaults", and documents every key of it in
  its own annotated YAML blocks (or in the page that owns a section:
  docs/forwarding.md for `forward` and `redaction`, docs/rules.md for the
  rules);
- every YAML block in README.md and docs/*.md is a config
  `geometra-sidecar check-config` accepts;
- every relative link in README.md, CONTRIBUTING.md, ARCHITECTURE.md and
  docs/*.md points to a file that exists, and to a heading of it when it
  names one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import clients_helpers as ch
import monitoring_helpers as mh

DOCS = ch.REPO / "docs"
CONFIG_DOC = DOCS / "configuration.md"
DEFAULTS_HEADING = "## The embedded defaults"
# Pages that own the keys of a config section, besides configuration.md:
# forward and redaction (forwarding.md), rules and extra_rules (rules.md).
KEY_OWNERS = [DOCS / "forwarding.md", DOCS / "rules.md"]

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)


def yaml_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == "yaml"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(mh.sidecar_bin_path()), *args], capture_output=True, text=True, timeout=30)


def defaults_text() -> str:
    r = run("print-default-config")
    assert r.returncode == 0, r.stderr
    return r.stdout


def key_paths(node, prefix: tuple = ()) -> set[tuple]:
    """Every mapping key path of a parsed YAML document (lists are not entered)."""
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(prefix + (str(k),))
            out |= key_paths(v, prefix + (str(k),))
    return out


def doc_sections(text: str) -> tuple[str, str]:
    """configuration.md split into (everything before the defaults, the defaults section)."""
    assert DEFAULTS_HEADING in text, f"{CONFIG_DOC.name} has no '{DEFAULTS_HEADING}' section"
    before, after = text.split(DEFAULTS_HEADING, 1)
    return before, after


# --------------------------------------------------------------------------- configuration.md
def test_configuration_doc_holds_print_default_config():
    _, defaults = doc_sections(CONFIG_DOC.read_text())
    blocks = yaml_blocks(defaults)
    assert len(blocks) == 1, "the embedded-defaults section holds one YAML block"
    want = defaults_text()
    assert blocks[0].strip() == want.strip(), (
        "docs/configuration.md's embedded defaults differ from `geometra-sidecar print-default-config`;"
        " paste its output into the block:\n" + want)


def test_every_default_key_is_documented():
    """Each key path of print-default-config appears in an annotated block of the page that owns it."""
    before, _ = doc_sections(CONFIG_DOC.read_text())
    documented = set()
    for block in yaml_blocks(before):
        documented |= key_paths(yaml.safe_load(block))
    for page in KEY_OWNERS:
        for block in yaml_blocks(page.read_text()):
            documented |= key_paths(yaml.safe_load(block))
    defaults = key_paths(yaml.safe_load(defaults_text()))
    missing = sorted(".".join(p) for p in defaults - documented)
    assert not missing, (
        "keys print-default-config has that no annotated YAML block documents"
        f" (docs/configuration.md, or {[p.name for p in KEY_OWNERS]}): {missing}")


def test_configuration_doc_names_every_flag():
    """The flags table has every flag `--help` lists, with its environment variable."""
    r = run("--help")
    assert r.returncode == 0, r.stderr
    flags = set(re.findall(r"--([a-z][a-z-]+)", r.stdout)) - {"help", "version"}
    assert flags, r.stdout
    text = CONFIG_DOC.read_text()
    table = text.split("## Flags, environment and file", 1)[1].split("\n## ", 1)[0]
    missing = []
    for flag in sorted(flags):
        env = "GEOMETRA_" + flag.upper().replace("-", "_")
        row = [line for line in table.splitlines() if line.startswith(f"| `--{flag}")]
        if not row or env not in row[0]:
            missing.append(f"--{flag} ({env})")
    assert not missing, f"flags missing from the table of 'Flags, environment and file': {missing}"


# --------------------------------------------------------------------------- every YAML block
def doc_pages() -> list[Path]:
    return [ch.REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def yaml_block_cases():
    for page in doc_pages():
        for i, block in enumerate(yaml_blocks(page.read_text())):
            yield pytest.param(page, i, block, id=f"{page.relative_to(ch.REPO)}#{i}")


@pytest.mark.parametrize("page,i,block", list(yaml_block_cases()))
def test_doc_yaml_block_passes_check_config(page, i, block, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(block)
    r = run("check-config", "--config", str(path))
    assert r.returncode == 0, f"{page.relative_to(ch.REPO)} YAML block {i}:\n{block}\n{r.stdout}{r.stderr}"


# --------------------------------------------------------------------------- links
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def link_pages() -> list[Path]:
    return [ch.REPO / n for n in ("README.md", "CONTRIBUTING.md", "ARCHITECTURE.md")] + sorted(DOCS.glob("*.md"))


def without_code(text: str) -> str:
    """Markdown without fenced blocks and inline code (their brackets are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_relative_links_resolve():
    broken = []
    for page in link_pages():
        for target in LINK.findall(without_code(page.read_text())):
            if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ch.REPO)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading with anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)
