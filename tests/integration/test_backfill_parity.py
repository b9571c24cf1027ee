"""Parity with live: the same real candles replayed through the live pipeline and backfilled
give the same predictions (within 1e-6, times the calibration map's steepest slope where a
model is calibrated) for every key, and no key on one side only."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.batch.backfill.job import BackfillOptions, run_backfill
from orchestrator.batch.backfill.models import ModelSpec
from orchestrator.batch.backfill.sources import DataSource
from orchestrator.market.archives import read_candles
from orchestrator.models.calibration import max_slope
from orchestrator.models.registry import Registry
from orchestrator.sinks.parquet_log import read_log
from serve_app.app import build_app

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
WARMUP, LIVE = 2000, 400  # minutes of history first, then minutes predicted live
# A fast replay sends several minutes per batch (one model call for all of them); the rows
# are the same as one minute at a time, and the test stays well inside a minute.
BATCH_MINUTES = 10
MINUTE = 60_000
KEY = ("model_id", "model_version", "exchange", "symbol", "timeframe", "open_time")
TOLERANCE = 1e-6


def _live_log(serve_app, shared_data, tmp_path) -> pa.Table:
    args = {
        "environment": "parity",
        "feeds": [
            {
                "kind": "replay",
                "path": str(shared_data / "binance-spot-1m"),
                "symbols": list(SYMBOLS),
                "speed": 0,
                "warmup_minutes": WARMUP,
                "max_minutes": LIVE,
                "batch_minutes": BATCH_MINUTES,
            }
        ],
        "features": {"shards": 1, "num_cpus": 0.1, "timeframes": ["1m", "5m"]},
        "stream": {"state_dir": str(tmp_path / "state")},
        "models": [
            {"model_type": t, "timeframe": tf}
            for t in ("direction", "volatility")
            for tf in ("1m", "5m")
        ],
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp_path / "live"), "flush_rows": 1000, "flush_seconds": 1.0},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    deadline = time.monotonic() + 150
    while not all(f.get("done") for f in pipeline.status.remote().result()["feeds"]):
        if time.monotonic() > deadline:
            pytest.fail("the live replay did not finish in time")
        time.sleep(0.5)
    pipeline.flush.remote().result()
    return read_log(tmp_path / "live")


def _backfill_log(shared_data, tmp_path) -> pa.Table:
    first = read_candles(shared_data / "binance-spot-1m" / "BTC_USDT-1m.parquet", "binance")
    t0 = first.column("open_time")[0].as_py()  # every spot file starts at the same minute
    options = BackfillOptions(
        sources=(DataSource(shared_data / "binance-spot-1m", "binance"),),
        symbols=SYMBOLS,
        out=tmp_path / "backfill",
        timeframes=("1m", "5m"),
        models=(ModelSpec("direction"), ModelSpec("volatility")),
        # the live minutes: candles closing after the warm-up history, until the replay ends
        start_ms=t0 + WARMUP * MINUTE,
        end_ms=t0 + (WARMUP + LIVE) * MINUTE,
        executor="ray",
        num_actors=1,
        actor_cpus=0.25,
        feature_cpus=0.25,
    )
    run_backfill(options, say=lambda _: None)
    return read_log(tmp_path / "backfill" / "predictions")


def _by_key(log: pa.Table) -> dict[tuple, dict]:
    rows = log.select([*KEY, "value", "outputs", "signal", "confidence", "trend"]).to_pylist()
    keyed = {tuple(r[k] for k in KEY): r for r in rows}
    assert len(keyed) == len(rows), "a key appears twice"
    return keyed


def test_backfill_predicts_what_the_live_pipeline_predicted(serve_app, shared_data, tmp_path):
    live = _by_key(_live_log(serve_app, shared_data, tmp_path))
    backfill = _by_key(_backfill_log(shared_data, tmp_path))
    assert len(live) == len(SYMBOLS) * 2 * (LIVE + LIVE // 5)  # every live minute and 5m close
    assert set(backfill) == set(live)
    keys = sorted(live)
    # Both sides apply the same calibration map after the model; where the engines differ by
    # float rounding (the backfill's compiled trees, the live ONNX Runtime: <= 1e-6), the
    # map can stretch that by its steepest slope (a few units: calibration.fit_isotonic).
    registry = Registry(PROJECT_ROOT / "models_onnx")
    stretch = {
        k: max_slope(getattr(registry.manifest(k[0], k[1]), "calibration", None)) for k in keys
    }
    diff = np.abs(
        np.array([live[k]["value"] for k in keys]) - np.array([backfill[k]["value"] for k in keys])
    )
    assert np.all(diff <= TOLERANCE * np.array([stretch[k] for k in keys]))
    assert max(stretch.values()) < 100  # a map that magnifies rounding this much is a bug
    for k in keys:
        live_out, back_out = dict(live[k]["outputs"]), dict(backfill[k]["outputs"])
        assert live_out.keys() == back_out.keys()
        assert all(abs(live_out[n] - back_out[n]) <= TOLERANCE * stretch[k] for n in live_out)
        for name in ("signal", "confidence", "trend"):
            assert live[k][name] == backfill[k][name], (k, name)
