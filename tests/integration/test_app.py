"""The Serve application on the shared cluster: feed -> shard -> model -> sink -> HTTP handle."""

from __future__ import annotations

import time

import numpy as np
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry
from serve_app.app import build_app

FAST_SYNTHETIC = {
    "feeds": [{"kind": "synthetic", "n_symbols": 40, "speed": 0, "max_minutes": 120, "seed": 11}],
    "features": {"shards": 2, "num_cpus": 0.1},
    "serving": {"num_cpus": 0.1},
}


def _wait_for(predicate, timeout_s: float = 60.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail("condition not reached in time")


def test_pipeline_predicts_every_symbol_once_per_closed_candle(serve_app, tmp_path, redis_server):
    args = {
        **FAST_SYNTHETIC,
        "sink": {
            "log_dir": str(tmp_path / "log"),
            "flush_rows": 100,
            "redis_url": redis_server.url,
        },
        "stream": {"state_dir": str(tmp_path / "state")},
    }
    ingress = serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")

    def finished():
        status = pipeline.status.remote().result()
        return status if all(f["done"] for f in status["feeds"]) else None

    status = _wait_for(finished, timeout_s=120)
    assert status["feeds"][0]["candles"] == 40 * 120
    assert sum(s["candles_in"] for s in status["shards"]) == 40 * 120
    assert all(s["model_errors"] == 0 for s in status["shards"])

    latest = pipeline.latest.remote().result()
    assert len(latest) == 40
    assert {r["open_time"] for r in latest} == {max(r["open_time"] for r in latest)}
    assert all(0.0 <= r["value"] <= 1.0 for r in latest)

    drift = status["drift"]["1m"]  # live features against the model's training bins
    assert drift["rows"] > 0 and drift["max_psi"] >= 0.0 and len(drift["worst"]) == 3

    predicted = sum(s["rows_predicted"] for s in status["shards"])
    cold = sum(s["rows_cold"] for s in status["shards"])
    assert predicted + cold == 40 * 120 and predicted > 0
    assert pipeline.flush.remote().result() >= 0
    from orchestrator.sinks.parquet_log import read_log

    log = read_log(tmp_path / "log")
    assert log.num_rows == predicted
    assert len(set(log.column("event_id").to_pylist())) == predicted  # one row per key

    from orchestrator.sinks.redis_bus import RedisStreamBus, decode_prediction

    bus = RedisStreamBus(redis_server.url)
    assert bus.length() == predicted  # every prediction also went to Redis Streams
    first = decode_prediction(bus.read(count=1)[0][1])
    assert first["event_id"] in set(log.column("event_id").to_pylist())
    assert first["trend"] in {"OVERBOUGHT", "OVERSOLD", "BULLISH", "BEARISH", "NEUTRAL"}

    scored = status["outcomes"]["models"]["direction-1m"]["1m"]
    assert scored["scored"] >= predicted - 40 and 0.0 <= scored["accuracy"] <= 1.0
    assert ingress is not None


def test_model_server_batches_concurrent_matrices(serve_app, tmp_path):
    args = FAST_SYNTHETIC | {
        "feeds": [],
        "stream": {"state_dir": str(tmp_path / "state")},
        "sink": {"log_dir": str(tmp_path / "log")},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    model = serve_app.get_deployment_handle("model-direction-1m", app_name="tickcast")
    rng = np.random.default_rng(0)
    matrices = [rng.normal(size=(n, len(FEATURE_NAMES))) for n in (1, 5, 17, 64)]
    responses = [model.predict.remote(m) for m in matrices]
    results = [r.result() for r in responses]
    assert [len(r["values"]) for r in results] == [1, 5, 17, 64]
    solo = model.predict.remote(matrices[2]).result()["values"]
    np.testing.assert_allclose(results[2]["values"], solo, rtol=0, atol=1e-7)
    assert all(r["model_id"] == "direction-1m" for r in results)


def test_a_model_group_answers_each_of_its_models_in_one_batch(serve_app, tmp_path):
    args = FAST_SYNTHETIC | {
        "feeds": [],
        "models": [
            {"model_type": "direction", "timeframe": "1m"},
            {"model_type": "volatility", "timeframe": "1m"},
        ],
        # Compiled trees (serving.engine auto) in the group: ONNX Runtime's answers to 1e-6.
        "serving": {"num_cpus": 0.1, "model_groups": "all", "engine": "auto"},
        "stream": {"state_dir": str(tmp_path / "state")},
        "sink": {"log_dir": str(tmp_path / "log")},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    group = serve_app.get_deployment_handle("models", app_name="tickcast")
    rng = np.random.default_rng(1)
    matrices = [rng.normal(size=(n, len(FEATURE_NAMES))) for n in (3, 8, 5, 2)]
    keys = ["direction-1m", "volatility-1m", "direction-1m", "volatility-1m"]
    calls = [group.predict_model.remote(m, k) for m, k in zip(matrices, keys, strict=True)]
    results = [call.result() for call in calls]
    assert [r["model_id"] for r in results] == keys
    assert [len(r["values"]) for r in results] == [3, 8, 5, 2]
    solo = group.predict_model.remote(matrices[1], "volatility-1m").result()["values"]
    np.testing.assert_allclose(results[1]["values"], solo, rtol=0, atol=1e-7)
    described = group.describe.remote("volatility-1m").result()
    assert described["model_id"] == "volatility-1m" and described["engine"] == "compiled trees"
    # A shard's tick: one call carrying the rows once for both models, batched with others.
    both = ("direction-1m", "volatility-1m")
    together = [group.predict_models.remote(m, both) for m in matrices[:2]]
    alone = [group.predict_model.remote(matrices[0], "volatility-1m")]
    answers = [call.result() for call in together + alone]
    assert [[a["model_id"] for a in answer] for answer in answers[:2]] == [list(both)] * 2
    np.testing.assert_allclose(answers[0][1]["values"], answers[2]["values"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(answers[1][1]["values"], solo, rtol=0, atol=1e-7)
    assert [len(a["values"]) for a in answers[1]] == [8, 8]
    registry = Registry(PROJECT_ROOT / "models_onnx")
    for answer in answers[0]:
        manifest = registry.resolve(*answer["model_id"].split("-"))
        expected = OnnxPredictor(manifest, registry.load_bytes(manifest)).predict(matrices[0])
        np.testing.assert_allclose(answer["values"], expected, rtol=0, atol=1e-6)
    missing = group.predict_version.remote(matrices[0], "v1", "swing-1m")
    with pytest.raises(Exception, match="not in this deployment"):
        missing.result()


def test_replay_of_both_archive_formats_predicts_every_symbol(serve_app, shared_data, tmp_path):
    args = {
        "feeds": [
            {
                "kind": "replay",
                "path": str(shared_data / "binance-spot-1m"),
                "max_minutes": 30,
                "warmup_minutes": 40,
            },
            {
                "kind": "replay",
                "exchange": "binance-usdm",
                "path": str(shared_data / "binance-usdm-1m"),
                "max_minutes": 30,
                "warmup_minutes": 40,
            },
        ],
        "features": {"shards": 2, "num_cpus": 0.1},
        "stream": {"state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp_path / "log")},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")

    def finished():
        status = pipeline.status.remote().result()
        return status if all(f.get("done") for f in status["feeds"]) else None

    status = _wait_for(finished, timeout_s=120)
    for feed, n_symbols in zip(status["feeds"], (3, 6), strict=True):
        assert feed["warmup_candles"] == 40 * n_symbols
        assert feed["candles"] == (40 + 30) * n_symbols
        assert feed["gate"]["rejected"] == 0 and feed["gate"]["duplicates"] == 0
        assert feed["step_errors"] == 0 and feed["source_errors"] == 0
    latest = pipeline.latest.remote().result()
    assert {(r["exchange"], r["symbol"]) for r in latest} == {
        ("binance", s) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    } | {
        ("binance-usdm", s)
        for s in ("ALGO/USDT", "AVAX/USDT", "DOT/USDT", "FIL/USDT", "LINK/USDT", "LTC/USDT")
    }
    # Warm-up candles made no predictions: every shard predicted exactly the 30 live minutes.
    assert sum(s["rows_predicted"] for s in status["shards"]) == 30 * 9
    assert pipeline.quarantine.remote().result() == {"replay-0": [], "replay-1": []}
