"""Fixtures for tests/python/clients: the examples/ apps against the real sidecar.

Helpers live in clients_helpers.py (a unique module name); the process,
port and wait helpers are the monitoring suite's (monitoring_helpers).
"""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "monitoring"))

import clients_helpers as ch  # noqa: E402


@pytest.fixture
def sink():
    """An OTLP/gRPC sink (logs and traces) on a free port; the sidecar forwards to it."""
    s = ch.OtlpSink()
    yield s
    s.stop()


@pytest.fixture
def start_sidecar(tmp_path):
    """start_sidecar(config: dict) -> Sidecar; every sidecar started is stopped at teardown."""
    started = []

    def start(config: dict) -> ch.Sidecar:
        sc = ch.Sidecar.start(config, tmp_path / f"sidecar{len(started)}")
        started.append(sc)
        return sc

    yield start
    for sc in started:
        sc.stop()


@pytest.fixture
def procs():
    """A list to append mh.Proc objects to; each is stopped (by its process group) at teardown."""
    started = []
    yield started
    for p in reversed(started):
        p.stop()
