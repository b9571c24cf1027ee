"""End to end: `serve run configs/local.yaml` in a subprocess, then real predictions over HTTP.

The only change to the shipped config is a free port and a temporary prediction log, so the
test does not collide with a tickcast a developer may be running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator import PROJECT_ROOT

STARTUP_BUDGET_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_config(tmp_path: Path, port: int) -> Path:
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "local.yaml").read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["sink"]["log_dir"] = str(tmp_path / "predictions")
    config["applications"][0]["args"]["features"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def served(tmp_path):
    port = _free_port()
    serve_bin = Path(sys.executable).with_name("serve")
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [str(serve_bin), "run", str(_local_config(tmp_path, port))],
        cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc, tmp_path
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


def test_serve_run_local_serves_real_predictions(served):
    base, proc, tmp_path = served
    started = time.monotonic()
    first = _poll_latest(base, proc, started + STARTUP_BUDGET_S)
    symbols = set(yaml.safe_load((PROJECT_ROOT / "configs" / "local.yaml").read_text())
                  ["applications"][0]["args"]["feeds"][0]["symbols"])
    deadline = time.monotonic() + 30
    while {p["symbol"] for p in first["predictions"]} != symbols and time.monotonic() < deadline:
        time.sleep(0.5)
        first = httpx.get(f"{base}/v1/predictions/latest", timeout=5).json()
    assert {p["symbol"] for p in first["predictions"]} == symbols
    for p in first["predictions"]:
        assert 0.0 <= p["prob_up"] <= 1.0
        assert p["signal"] in {"LONG", "SHORT", "NEUTRAL"}
        assert p["model_id"] == "direction-1m" and p["model_version"]
        assert p["latency_ms"] >= 0
    time.sleep(2)
    later = httpx.get(f"{base}/v1/predictions/latest", timeout=5).json()
    before = {p["symbol"]: p["open_time"] for p in first["predictions"]}
    assert all(p["open_time"] > before[p["symbol"]] for p in later["predictions"])
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{base}/v1/predictions/latest", params={"timeframe": "7m"}).status_code == 422
    _check_api_over_http(base)
    _check_websocket(base)


def _check_api_over_http(base: str) -> None:
    assert httpx.get(f"{base}/readyz", timeout=10).json()["ready"] is True
    models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
    served = next(m for m in models if m["serving"] and m["model_id"] == "direction-1m")
    rows = [[0.0] * len(served["feature_names"])] * 3
    answer = httpx.post(f"{base}/v1/predict", timeout=10,
                        json={"model_type": "direction", "timeframe": "1m", "rows": rows})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 3 and answer.json()["version"] == served["version"]
    assert httpx.post(f"{base}/v1/predict", timeout=10, json={"model_type": "direction"}).status_code == 422
    status = httpx.get(f"{base}/v1/status", timeout=10).json()
    assert status["feeds"][0]["candles"] > 0 and status["sink"]["received"] > 0
    assert "/v1/predict" in httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]


def _check_websocket(base: str) -> None:
    import asyncio
    import json

    import websockets

    async def session():
        async with websockets.connect(base.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(json.dumps({"action": "subscribe", "symbols": ["BTC/USDT"]}))
            snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
            live = json.loads(await asyncio.wait_for(socket.recv(), 10))
            return snapshot, live

    snapshot, live = asyncio.run(session())
    assert snapshot["type"] == "snapshot"
    assert [p["symbol"] for p in snapshot["predictions"]] == ["BTC/USDT"]
    assert live["type"] == "prediction" and live["symbol"] == "BTC/USDT"
    assert live["open_time"] > snapshot["predictions"][0]["open_time"]
