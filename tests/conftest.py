"""Fixtures shared by every test tier.

Real market data reaches tests only through ``shared_data``: it finds ``../shared/data``
beside the repository (or ``$TICKCAST_SHARED_DATA``) and skips cleanly when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import PROJECT_ROOT

# `tickcast registry promote` reads live evidence from the outcome log beside $TICKCAST_LOG_DIR
# (default var/predictions): tests give it explicitly, never the working copy's own runs.
os.environ["TICKCAST_LOG_DIR"] = str(PROJECT_ROOT / "var" / "tests-have-no-live-log")


def _find_shared_data() -> Path | None:
    candidates = [os.environ.get("TICKCAST_SHARED_DATA"), PROJECT_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "binance-spot-1m").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real market data set (read in place, never copied)."""
    path = _find_shared_data()
    if path is None:
        pytest.skip("real market data (../shared/data) is not present on this machine")
    return path


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    """External systems' schemas (``../shared/schemas``: KubeRay's RayService CRD), read in
    place, never copied."""
    path = PROJECT_ROOT.parent / "shared" / "schemas"
    if not (path / "kuberay").is_dir():
        pytest.skip("external schemas (../shared/schemas) are not present on this machine")
    return path


@pytest.fixture(scope="session", autouse=True)
def _compiled_tree_cache(tmp_path_factory) -> None:
    """Compiled tree models (``orchestrator.models.compiled``) go to a folder of this run,
    not the user's cache: each run compiles from scratch, as CI does."""
    os.environ.setdefault("TICKCAST_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _no_log_limit_left_behind():
    """An actor built in-process (``PredictionSink`` in a unit test) installs tickcast's log
    rate limit on the root logger's handlers, which include pytest's own capture handlers for
    the whole session: a later test's ``caplog`` would then lose the lines of a kind earlier
    tests logged more than five times a minute. Each test's additions are removed after it."""
    import logging

    root = logging.getLogger()
    before = {id(h): list(h.filters) for h in root.handlers}
    yield
    for handler in root.handlers:
        if id(handler) in before:
            handler.filters[:] = before[id(handler)]


# --- storage: every storage test runs on a local folder and on a local S3 server ----------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (``moto_server`` from the test extras) on 127.0.0.1, with
    one bucket ``tickcast``; yields the environment a client needs to reach it (endpoint and
    keys come from the environment, as in production)."""
    from orchestrator.bench.s3_server import s3_server

    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path, monkeypatch) -> str:
    """A fresh, empty storage location for one test: a local folder, then an ``s3://``
    prefix on the test's S3 server (its environment set for this test only)."""
    if request.param == "local":
        return str(tmp_path / "store")
    import uuid

    for name, value in request.getfixturevalue("s3_server").items():
        monkeypatch.setenv(name, value)
    return f"s3://tickcast/{uuid.uuid4().hex[:12]}"
