"""Fixtures for tests/python/pod: the images of scripts/image.sh, built once per session.

Helpers live in pod_helpers.py (a unique module name); the skip policy, the
sidecar binary and the wait helpers are the monitoring suite's (monitoring_helpers).
"""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "monitoring"))

import pod_helpers as ph  # noqa: E402


@pytest.fixture(scope="session")
def images():
    """Both images (sidecar, FastAPI example), built by scripts/image.sh from the suite's binary;
    removed, by name, at the end of the session. Yields the build's seconds."""
    ph.need_tools()
    seconds = ph.build_images("all")
    print(f"\nscripts/image.sh all: {seconds:.0f}s")
    yield seconds
    ph.podman("rmi", "--force", "--ignore", ph.SIDECAR_IMAGE, ph.EXAMPLE_IMAGE, check=False)
