"""Fixtures for tests/python/monitoring (helpers live in monitoring_helpers.py,
a unique module name, so they never clash with another suite's conftest)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import monitoring_helpers as mh  # noqa: E402


@pytest.fixture
def sidecar_bin() -> Path:
    """The sidecar under test; skips (clearly) only when GEOMETRA_SIDECAR_BIN is unset."""
    return mh.sidecar_bin_path()
