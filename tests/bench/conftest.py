"""Benchmarks in smoke mode: tiny sizes, seconds each, nothing judged but that they run."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "bench: a benchmark's smoke run (tests/bench)")
    config.addinivalue_line(
        "markers", "slow: starts Ray or Serve in a subprocess (tens of seconds on 2 cores)"
    )


@pytest.fixture(scope="session")
def data_args(request) -> list[str]:
    """``["--data", PATH]`` of the real data set where ``shared_data`` finds it, else ``[]``:
    each benchmark's smoke run then falls back to its synthetic data, and still runs."""
    try:
        path: Path = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return []
    return ["--data", str(path)]
