"""The whole application stopped and started again as a user does it, on the same state and
log, in the middle of a replay of real candles: `serve run` ended with Ctrl-C (graceful),
or every process of it SIGKILLed at once and `ray stop --force` (nothing tidies up). After
the second `serve run` finishes the replay, the prediction log and the outcome log hold
each key exactly once, and no series has a gap."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pytest
import yaml

from orchestrator.bench.harness import free_port, session_pids, start_session, stop_session
from orchestrator.sinks.parquet_log import read_log

MINUTES, STOP_AT = 600, 300  # replayed minutes per series; the stop falls about halfway
STEP_BUDGET_S = 240


def _config(tmp_path: Path, shared_data: Path, port: int) -> Path:
    feeds = [
        {
            "kind": "replay",
            "exchange": exchange,
            "path": str(shared_data / folder),
            "speed": 10,
            "max_minutes": MINUTES,
            "symbols": symbols,
        }
        for exchange, folder, symbols in (
            ("binance", "binance-spot-1m", ["BTC/USDT", "ETH/USDT"]),
            ("binance-usdm", "binance-usdm-1m", ["LINK/USDT"]),
        )
    ]
    args = {
        "environment": "restart",
        "feeds": feeds,
        "features": {"shards": 1, "num_cpus": 0.1, "timeframes": ["1m", "5m"]},
        "models": [
            {"model_type": "direction", "timeframe": "1m"},
            {"model_type": "volatility", "timeframe": "5m"},
        ],
        "stream": {"checkpoint_every": 30, "state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1, "model_groups": "all"},
        "sink": {"log_dir": str(tmp_path / "log"), "flush_rows": 100, "flush_seconds": 0.5},
    }
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "tickcast",
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "args": args,
            }
        ],
    }
    path = tmp_path / "restart.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _feeds(base: str) -> list[dict] | None:
    try:
        return httpx.get(f"{base}/v1/status", timeout=5).json()["feeds"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _wait(base: str, proc, done, what: str) -> None:
    deadline = time.monotonic() + STEP_BUDGET_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve run exited early with code {proc.returncode}")
        feeds = _feeds(base)
        if feeds and done(feeds):
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def _emitted(feeds: list[dict]) -> int:
    return min(f.get("source", {}).get("minutes_emitted", 0) for f in feeds)


def _serve(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    serve_bin = Path(sys.executable).with_name("serve")
    return start_session([str(serve_bin), "run", str(config)], log.open("a"), env=env)


def _kill_everything(proc: subprocess.Popen) -> None:
    """Every process of the session at once, then what a user types after: ray stop --force."""
    for pid in [*session_pids(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    ray_bin = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120)


@pytest.mark.parametrize("stop", ["ctrl-c", "kill-everything"])
def test_the_whole_application_stopped_and_started_again_writes_each_key_once(
    stop, shared_data, tmp_path
):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, shared_data, port)
    first = _serve(config, tmp_path / "serve.log")
    try:
        _wait(base, first, lambda f: _emitted(f) >= STOP_AT, "the stop's minute")
    finally:
        if stop == "ctrl-c":
            stop_session(first)
        else:
            _kill_everything(first)
    second = _serve(config, tmp_path / "serve.log")
    try:
        _wait(base, second, lambda f: all(x.get("done") for x in f), "the replay's end")
        time.sleep(3)  # flush_seconds 0.5: the sink writes what it holds
    finally:
        stop_session(second)

    log = read_log(tmp_path / "log")
    ids = log.column("event_id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} predictions written twice"
    scored = read_log(tmp_path / "log-outcomes").column("event_id").to_pylist()
    assert scored and len(scored) == len(set(scored)), "an outcome was written twice"
    # None missing: per series and model, every candle from its first prediction to the end.
    for model_id, step_ms in (("direction-1m", 60_000), ("volatility-5m", 300_000)):
        mine = log.filter(pc.equal(log.column("model_id"), model_id))
        series = set(zip(mine["exchange"].to_pylist(), mine["symbol"].to_pylist(), strict=True))
        assert len(series) == 3, (model_id, series)
        for exchange, symbol in series:
            times = mine.filter(
                pc.and_(pc.equal(mine["exchange"], exchange), pc.equal(mine["symbol"], symbol))
            )["open_time"]
            first_t, last_t = pc.min(times).as_py(), pc.max(times).as_py()
            assert len(times) == (last_t - first_t) // step_ms + 1, (model_id, exchange, symbol)
    # and the replay reached its end after the restart
    one_minute = log.filter(pc.equal(log.column("model_id"), "direction-1m"))
    assert one_minute.num_rows >= 3 * (MINUTES - 100)
