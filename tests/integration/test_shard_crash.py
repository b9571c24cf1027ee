"""Kill feature shards mid-replay (ray.kill, then SIGKILL of the process): the feature rows
they emit must be exactly those of an uninterrupted run, none lost, none changed, and their
drift statistics must count each of those rows exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.features import FEATURE_NAMES
from orchestrator.market.schema import candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.sinks.parquet_log import read_log
from orchestrator.stream.shard import ShardState, feature_rows
from serve_app.app import build_app

N_SYMBOLS, MINUTES, SEED = 30, 420, 5
TIMEFRAMES = ["1m", "5m", "15m"]


def _reference_rows() -> dict:
    """The same synthetic market through one ShardState, no Ray, no crash."""
    symbols = [f"SYN{i:04d}/USDT" for i in range(N_SYMBOLS)]
    market, state, rows = SyntheticMarket(N_SYMBOLS, seed=SEED), ShardState(tuple(TIMEFRAMES)), {}
    for _ in range(MINUTES):
        m = market.next_minute()
        ohlcv = {k: getattr(m, k) for k in ("open", "high", "low", "close", "volume")}
        batch = candles_from_arrays("synthetic", symbols, "1m", [m.open_time] * N_SYMBOLS, ohlcv)
        for tick in state.process(batch):
            _add_rows(rows, feature_rows(tick))
    return rows


def _add_rows(rows: dict, table: pa.Table) -> None:
    keys = zip(
        table["timeframe"].to_pylist(),
        table["symbol"].to_pylist(),
        table["open_time"].to_pylist(),
        strict=True,
    )
    values = np.column_stack([table[name].to_numpy() for name in FEATURE_NAMES])
    for key, value in zip(keys, values, strict=True):
        rows.setdefault(key, []).append(value)


def _wait(predicate, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail("condition not reached in time")


def test_killed_shards_restore_and_emit_identical_feature_rows(serve_app, tmp_path):
    args = {
        "feeds": [
            {
                "kind": "synthetic",
                "n_symbols": N_SYMBOLS,
                "speed": 30,
                "max_minutes": MINUTES,
                "seed": SEED,
            }
        ],
        "features": {"shards": 2, "num_cpus": 0.1, "timeframes": TIMEFRAMES, "log_features": True},
        "stream": {"checkpoint_every": 20, "state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp_path / "predictions"), "flush_rows": 1000},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    actors = pipeline.actors.remote().result()
    shards = actors["shards"]

    def feed_done(minutes: int):
        return lambda: (
            pipeline.status.remote().result()["feeds"][0]["candles"] >= minutes * N_SYMBOLS
        )

    _wait(feed_done(120))
    import ray

    ray.kill(shards[0], no_restart=False)
    _wait(feed_done(260))
    os.kill(ray.get(shards[1].pid.remote()), signal.SIGKILL)
    _wait(lambda: pipeline.status.remote().result()["feeds"][0]["done"], timeout_s=180)

    status = pipeline.status.remote().result()
    assert status["feeds"][0]["shard_recoveries"] >= 2
    assert sum(s["restored"] for s in status["shards"]) == 2  # both came back from a checkpoint
    pipeline.flush.remote().result()

    logged: dict = {}
    _add_rows(logged, read_log(tmp_path / "predictions-features"))
    reference = _reference_rows()
    assert logged.keys() == reference.keys()  # none lost, none invented
    for key, (expected,) in reference.items():
        for value in logged[key]:  # a row replayed after a restore appears twice, identically
            np.testing.assert_array_equal(value, expected, err_msg=str(key))
    assert any(len(v) > 1 for v in logged.values())  # the crashes did force replays
    # Drift counts live in the shards' checkpoints: rows replayed after a restore are
    # counted once, so the totals are those of the uninterrupted run.
    drift = pipeline.drift.remote().result()
    per_timeframe = Counter(tf for tf, _, _ in reference)
    assert "1m" in drift  # the timeframes the served models have training bins for
    assert {tf: d["rows"] for tf, d in drift.items()} == {tf: per_timeframe[tf] for tf in drift}
