"""The whole application killed at once (every tickcast process SIGKILLed at the same
moment) during a replay of two feeds whose candles are of different days, then started
again on the same state and log: the log holds every prediction once.

Before the sink's dedupe was also seeded from what it wrote lately (the log's files of its
last ``sink.dedupe_window_s`` of writing), a restarted sink knew only the log's two newest
dates: those of the feed replaying the later days, so the other feed's replayed
predictions were written a second time."""

from __future__ import annotations

import os
import signal
import time

import pyarrow.compute as pc
import ray

from orchestrator.sinks.parquet_log import read_log
from serve_app.app import build_app
from tests.integration.polling import wait_for_status

# The spot files start at 12:09 UTC: by minute 760 of its replay the spot feed has written
# two dates (03-23, 03-24), newer than the USD-M feed's one (02-01).
MINUTES, KILL_AT = 900, 760


def test_the_whole_application_killed_at_once_writes_each_prediction_once(
    serve_app, shared_data, tmp_path
):
    feeds = [
        {
            "kind": "replay",
            "exchange": exchange,
            "path": str(shared_data / folder),
            "speed": 60,
            "max_minutes": MINUTES,
            **({"symbols": ["LINK/USDT", "DOT/USDT"]} if exchange == "binance-usdm" else {}),
        }
        for exchange, folder in (
            ("binance", "binance-spot-1m"),
            ("binance-usdm", "binance-usdm-1m"),
        )
    ]
    args = {
        "environment": "whole-kill",
        "feeds": feeds,
        "features": {"shards": 2, "num_cpus": 0.1},
        "stream": {"checkpoint_every": 30, "state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp_path / "log"), "flush_rows": 100, "flush_seconds": 0.5},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")

    def emitted(status: dict) -> int:
        return min(f["source"].get("minutes_emitted", 0) for f in status["feeds"])

    wait_for_status(pipeline, lambda s: emitted(s) >= KILL_AT, "the kill's minute")
    actors = pipeline.actors.remote().result(timeout_s=30)
    pids = [ray.get(a.pid.remote()) for a in (*actors["feeds"], *actors["shards"], actors["sink"])]
    pids.append(pipeline.pid.remote().result(timeout_s=30))
    for pid in pids:  # everything at once: no actor outlives another to tidy up
        os.kill(pid, signal.SIGKILL)
    time.sleep(2)
    wait_for_status(pipeline, lambda s: all(f.get("done") for f in s["feeds"]), "the replay's end")
    pipeline.flush.remote().result(timeout_s=60)

    log = read_log(tmp_path / "log")
    ids = log.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} predictions written twice"
    scored = read_log(tmp_path / "log-outcomes").column("event_id").to_pylist()
    assert scored and len(scored) == len(set(scored)), "an outcome was written twice"
    # None missing either: per series, every minute from its first prediction to the end.
    for exchange in ("binance", "binance-usdm"):
        mine = log.filter(pc.equal(log.column("exchange"), exchange))
        for symbol in pc.unique(mine.column("symbol")).to_pylist():
            times = mine.filter(pc.equal(mine.column("symbol"), symbol))["open_time"]
            first, last = pc.min(times).as_py(), pc.max(times).as_py()
            assert len(times) == (last - first) // 60_000 + 1, f"{exchange} {symbol} has gaps"
