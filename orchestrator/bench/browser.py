"""A real browser and a real ``serve run``, for the dashboard's benchmark and its end-to-end
test: Debian's chromium driven by Playwright (never a downloaded browser), and the
application started the way a user starts it, on 127.0.0.1 with a free port."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from orchestrator.bench.harness import free_port, start_session, stop_session

CHROMIUM = "/usr/bin/chromium"
# Headless as root, and quiet: without the networking flags chromium keeps trying to reach
# hosts this machine cannot resolve.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def dashboard_config(tmp: Path, port: int, n_symbols: int, **args) -> Path:
    """A fast synthetic market (one candle a second per symbol) with a direction, a return and
    a volatility model on 1m, as a Serve config file in ``tmp``."""
    app_args = {
        "environment": "dashboard",
        "feeds": [{"kind": "synthetic", "n_symbols": n_symbols, "speed": 1, "warmup_minutes": 60}],
        "features": {"shards": 1, "num_cpus": 0.1, "timeframes": ["1m"]},
        "stream": {"state_dir": str(tmp / "state")},
        "models": [
            {"model_type": t, "timeframe": "1m"} for t in ("direction", "return", "volatility")
        ],
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp / "predictions"), "flush_seconds": 1.0},
        **args,
    }
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "logging_config": {"encoding": "TEXT", "enable_access_log": False},
        "applications": [
            {
                "name": "tickcast",
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "args": app_args,
            }
        ],
    }
    path = tmp / "dashboard.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serve_run(config: Path, log: Path, env: dict | None = None):
    """``serve run CONFIG`` in its own session; stopped as Ctrl-C stops it."""
    serve_bin = Path(sys.executable).with_name("serve")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    with log.open("w") as out:
        proc = start_session([str(serve_bin), "run", str(config)], out, env)
        try:
            yield proc
        finally:
            stop_session(proc)


def wait_for_predictions(
    base: str, proc, budget_s: float, minimum: int = 1, headers: dict | None = None
) -> float:
    """Seconds until ``/v1/predictions/latest`` holds at least ``minimum`` rows."""
    started = time.monotonic()
    while time.monotonic() - started < budget_s:
        if proc.poll() is not None:
            raise RuntimeError(f"serve run exited with {proc.returncode}")
        try:
            answer = httpx.get(f"{base}/v1/predictions/latest", headers=headers, timeout=5)
            if answer.status_code == 200 and answer.json()["count"] >= minimum:
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {minimum} predictions after {budget_s} s")


def new_port() -> int:
    return free_port()
