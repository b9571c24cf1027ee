"""Waiting on a running pipeline's status, through restarts of the actors that answer it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def pipeline_status(pipeline) -> dict:
    return pipeline.status.remote().result(timeout_s=30)


def wait_for_status(
    pipeline, done: Callable[[dict], bool], what: str, timeout_s: float = 240, poll_s: float = 0.3
) -> dict:
    """The first status for which ``done`` holds; fails the test naming ``what`` after
    ``timeout_s``. A status call that fails (a supervisor or actor restarting) is retried."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = pipeline_status(pipeline)
        except Exception:  # noqa: BLE001 - it answers again a moment later
            status = None
        if status is not None and done(status):
            return status
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}")


def post_until_stopped(url: str, body: dict, stop, results: list, pause_s: float = 0.0) -> None:
    """Steady HTTP load for a thread: POST ``body`` until ``stop`` is set, appending
    (time, status or exception name, answered version) per request."""
    import httpx

    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                answer = client.post(url, json=body)
                results.append((time.monotonic(), answer.status_code, answer.json().get("version")))
            except Exception as exc:  # noqa: BLE001 - a failed request is what we count
                results.append((time.monotonic(), type(exc).__name__, None))
            if pause_s:
                time.sleep(pause_s)


def until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Wait for ``condition``; fails the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
