"""End to end: `serve run configs/local.yaml` in a subprocess, then real predictions over HTTP.

The only change to the shipped config is a free port and a temporary prediction log, so the
test does not collide with a tickcast a developer may be running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import free_port

STARTUP_BUDGET_S = 150


def _local_config(tmp_path: Path, port: int, redis_url: str) -> Path:
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "local.yaml").read_text())
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["sink"].update(log_dir=str(tmp_path / "predictions"), redis_url=redis_url, flush_seconds=1)
    args["stream"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def served(tmp_path, redis_server):
    port = free_port()  # outside the ranges Ray's processes take theirs from
    serve_bin = Path(sys.executable).with_name("serve")
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [str(serve_bin), "run", str(_local_config(tmp_path, port, redis_server.url))],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc, tmp_path, redis_server
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: serve shuts down, Ray stops
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _poll_latest(base: str, proc, deadline: float) -> dict:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve run exited early with code {proc.returncode}")
        try:
            body = httpx.get(f"{base}/v1/predictions/latest", timeout=5).json()
            if body.get("count"):
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    pytest.fail("no prediction within the start-up budget")


REAL_SYMBOLS = {
    "BTC/USDT",
    "ETH/USDT",
    "SOL/USDT",
    "ALGO/USDT",
    "AVAX/USDT",
    "DOT/USDT",
    "FIL/USDT",
    "LINK/USDT",
    "LTC/USDT",
}
MODELS = {
    f"{kind}-{tf}" for kind in ("direction", "volatility") for tf in ("1m", "5m", "15m", "1h")
}


def _keys(body: dict) -> set[tuple[str, str]]:
    return {(p["symbol"], p["model_id"]) for p in body["predictions"]}


def test_serve_run_local_serves_real_predictions(served, shared_data):
    base, proc, tmp_path, redis = served
    started = time.monotonic()
    first = _poll_latest(base, proc, started + STARTUP_BUDGET_S)
    expected = {
        (s, m) for s in REAL_SYMBOLS for m in MODELS
    }  # 9 real symbols x 4 timeframes x 2 types
    deadline = time.monotonic() + 60
    while _keys(first) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        first = httpx.get(f"{base}/v1/predictions/latest", timeout=5).json()
    assert _keys(first) == expected
    for p in first["predictions"]:
        if p["model_type"] == "direction":
            assert 0.0 <= p["prob_up"] <= 1.0 and p["signal"] in {"LONG", "SHORT", "NEUTRAL"}
        else:
            assert p["prob_up"] is None and p["value"] >= 0.0  # a predicted volatility
        assert p["model_version"] and p["latency_ms"] >= 0
    time.sleep(2)
    later = httpx.get(f"{base}/v1/predictions/latest", params={"timeframe": "1m"}, timeout=5).json()
    before = {(p["symbol"], p["model_id"]): p["open_time"] for p in first["predictions"]}
    assert all(p["open_time"] > before[(p["symbol"], p["model_id"])] for p in later["predictions"])
    _check_log_and_redis(base, tmp_path, redis)
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{base}/v1/predictions/latest", params={"timeframe": "7m"}).status_code == 422
    _check_api_over_http(base)
    _check_websocket(base)


def _check_log_and_redis(base: str, tmp_path: Path, redis) -> None:
    from orchestrator.sinks.parquet_log import read_log
    from orchestrator.sinks.redis_bus import RedisStreamBus

    time.sleep(2)  # flush_seconds=1: the log catches up
    logged = read_log(tmp_path / "predictions")
    assert logged.num_rows > 0 and set(logged.column("timeframe").to_pylist()) == {
        "1m",
        "5m",
        "15m",
        "1h",
    }
    assert RedisStreamBus(redis.url).length() > 0
    # The same log over HTTP, newest first, two pages by cursor: one series, no overlap.
    query = {"symbol": "BTC/USDT", "timeframe": "1m", "limit": 3, "order": "desc"}
    first = httpx.get(f"{base}/v1/predictions", params=query, timeout=10).json()
    second = httpx.get(
        f"{base}/v1/predictions", params={**query, "cursor": first["next_cursor"]}, timeout=10
    ).json()
    keys = [(p["open_time"], p["model_id"]) for p in first["predictions"] + second["predictions"]]
    assert len(keys) == 6 and keys == sorted(keys, reverse=True) and len(set(keys)) == 6


def _check_api_over_http(base: str) -> None:
    assert httpx.get(f"{base}/readyz", timeout=10).json()["ready"] is True
    models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
    served = next(m for m in models if m["serving"] and m["model_id"] == "direction-1m")
    rows = [[0.0] * len(served["feature_names"])] * 3
    answer = httpx.post(
        f"{base}/v1/predict",
        timeout=10,
        json={"model_type": "direction", "timeframe": "1m", "rows": rows},
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3 and answer.json()["version"] == served["version"]
    assert (
        httpx.post(f"{base}/v1/predict", timeout=10, json={"model_type": "direction"}).status_code
        == 422
    )
    status = httpx.get(f"{base}/v1/status", timeout=10).json()
    assert status["feeds"][0]["candles"] > 0 and status["sink"]["received"] > 0
    assert "/v1/predict" in httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]


def _check_websocket(base: str) -> None:
    import asyncio
    import json

    import websockets

    async def session():
        async with websockets.connect(base.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(
                json.dumps({"action": "subscribe", "symbols": ["BTC/USDT"], "timeframes": ["1m"]})
            )
            snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
            live = json.loads(await asyncio.wait_for(socket.recv(), 10))
            return snapshot, live

    snapshot, live = asyncio.run(session())
    assert snapshot["type"] == "snapshot"
    assert {(p["symbol"], p["timeframe"]) for p in snapshot["predictions"]} == {("BTC/USDT", "1m")}
    assert {p["model_id"] for p in snapshot["predictions"]} == {"direction-1m", "volatility-1m"}
    assert live["type"] == "prediction" and (live["symbol"], live["timeframe"]) == (
        "BTC/USDT",
        "1m",
    )
    # Live means new: not a prediction the snapshot already held (another model on the same
    # candle may arrive just after the snapshot, so compare keys, not only times).
    seen = {(p["model_id"], p["open_time"]) for p in snapshot["predictions"]}
    assert (live["model_id"], live["open_time"]) not in seen
    assert live["open_time"] >= min(p["open_time"] for p in snapshot["predictions"])
