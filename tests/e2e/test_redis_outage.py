"""Redis stopped mid-run and started again, as an operator would see it: `serve run` of a
synthetic market publishing to a real redis-server that goes away for 30 s and comes back
on the same port. The log holds two lines about it, /v1/status shows it down then up,
and the bus then carries every prediction made after it came back, and those the buffer
kept from the outage."""

from __future__ import annotations

import time

import httpx

from orchestrator.bench.browser import dashboard_config, new_port, serve_run, wait_for_predictions
from orchestrator.sinks.redis_bus import RedisStreamBus, decode_prediction
from tests.redis_server import free_port, running_redis

OUTAGE_S = 30  # the outage


def _bus(base: str) -> dict:
    return httpx.get(f"{base}/v1/status", timeout=10).json()["sink"]["bus"]


def _wait_for(check, budget_s: float):
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"not within {budget_s} s")


def test_a_redis_outage_is_quiet_visible_and_loses_nothing_after_it(tmp_path):
    redis_port, port = free_port(), new_port()
    (tmp_path / "r1").mkdir(), (tmp_path / "r2").mkdir()
    url = f"redis://127.0.0.1:{redis_port}/0"
    sink = {
        "log_dir": str(tmp_path / "log"),
        "flush_seconds": 1.0,
        "redis_url": url,
        "bus_max_backoff_s": 4.0,
    }
    config = dashboard_config(tmp_path, port, 5, sink=sink)
    base = f"http://127.0.0.1:{port}"
    with serve_run(config, tmp_path / "serve.log") as proc:
        with running_redis(tmp_path / "r1", port=redis_port):
            wait_for_predictions(base, proc, 180, minimum=15)
            _wait_for(lambda: _bus(base)["published"] > 0, 30)
        down = _wait_for(lambda: (b := _bus(base))["state"] == "down" and b, 30)
        time.sleep(OUTAGE_S)
        during = _bus(base)
        with running_redis(tmp_path / "r2", port=redis_port):
            up = _wait_for(
                lambda: (b := _bus(base))["state"] == "up" and b["waiting"] == 0 and b, 30
            )
            back_at_ms = time.time() * 1000
            time.sleep(5)  # predictions made after it came back
            before_read = _bus(base)
            entries = RedisStreamBus(url).read(count=100_000)
            after_read = _bus(base)
            log = (tmp_path / "serve.log").read_text()  # before Redis stops again
    rows = [decode_prediction(fields) for _, fields in entries]
    assert during["failed_attempts"] < 15  # backed off: not one try per batch
    assert during["waiting"] > 0 and up["outages"] == down["outages"] == 1 and up["dropped"] == 0
    # The restarted server started empty: it holds what waited out the outage, then the rest,
    # each prediction once.
    assert len(rows) == len({r["event_id"] for r in rows})
    assert before_read["published"] <= down["published"] + len(rows) <= after_read["published"]
    assert sum(r["predicted_at"] < back_at_ms for r in rows) >= during["waiting"]
    assert any(r["predicted_at"] >= back_at_ms for r in rows)
    lines = [line for line in log.splitlines() if "event bus" in line]
    assert len(lines) == 2, lines
