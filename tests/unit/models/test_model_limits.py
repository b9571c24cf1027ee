"""Predictions that know their limits: ``in_distribution`` from the training distribution
stored in the manifest, ``model_age_s`` from the end of the training range, and direction
signals turned NEUTRAL by either when the config says so."""

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES
from orchestrator.features.batch import compute_features
from orchestrator.models.predictor import DistributionCheck, OnnxPredictor, trained_until_ms
from orchestrator.models.registry import Registry
from orchestrator.stream.events import ModelOutput, SignalLimits, TickRows, build_predictions

REGISTRY = Registry(PROJECT_ROOT / "models_onnx")
DAY_S = 86_400.0


@pytest.fixture(scope="module")
def btc(shared_data) -> pd.DataFrame:
    return pd.read_parquet(shared_data / "binance-spot-1m" / "BTC_USDT-1m.parquet").iloc[-3000:]


def _predictor(model_type: str = "direction", timeframe: str = "1m") -> OnnxPredictor:
    manifest = REGISTRY.resolve(model_type, timeframe)
    return OnnxPredictor(manifest, REGISTRY.load_bytes(manifest))


def test_a_candle_ten_sigma_outside_the_training_range_is_out_of_distribution(btc):
    """Real BTC/USDT candles, then one whose close jumps by 10 training standard deviations
    of the one-candle return: that row, and only rows its jump reaches, are outside."""
    predictor = _predictor()
    stored = predictor.manifest.training_distribution
    sigma = stored["std"][stored["feature_names"].index("ret_1")]
    jump = btc.iloc[[-1]].copy()
    jump["date"] += pd.Timedelta(minutes=1)
    jump["open"] = btc["close"].iloc[-1]
    jump["close"] = jump["open"] * np.exp(10 * sigma + stored["mean"][0])
    jump["high"] = jump["close"]
    candles = pd.concat([btc, jump], ignore_index=True)
    rows = compute_features(candles).to_numpy()
    warm = ~np.isnan(rows[:, [FEATURE_NAMES.index(n) for n in predictor.manifest.feature_names]])
    rows = rows[warm.all(axis=1)]
    answer = predictor.answer(predictor.predict(rows), rows)
    inside = answer["in_distribution"]
    assert inside.dtype == bool and len(inside) == len(rows)
    assert not inside[-1]  # the jump
    assert inside[:-1].mean() > 0.99  # ordinary minutes are inside
    # a stricter limit flags more, a laxer one the jump no more
    predictor.in_distribution.z_limit = 12.0
    assert predictor.in_distribution(rows[-1:]).tolist() == [True]


def test_rows_are_checked_on_the_models_own_features_and_nan_is_not_counted():
    manifest = REGISTRY.resolve("direction", "1h")
    check = DistributionCheck(manifest)
    stored = manifest.training_distribution
    at_mean = np.full((3, len(FEATURE_NAMES)), np.nan)
    for name, mean in zip(stored["feature_names"], stored["mean"], strict=True):
        at_mean[:, FEATURE_NAMES.index(name)] = mean
    unused = [n for n in FEATURE_NAMES if n not in stored["feature_names"]]
    if unused:
        at_mean[1, FEATURE_NAMES.index(unused[0])] = 1e12  # a feature the model does not read
    rsi = FEATURE_NAMES.index("rsi_14")
    at_mean[2, rsi] = (
        stored["mean"][stored["feature_names"].index("rsi_14")]
        + 9 * stored["std"][stored["feature_names"].index("rsi_14")]
    )
    at_mean[0, FEATURE_NAMES.index("ret_1")] = np.nan
    assert check(at_mean).tolist() == [True, True, False]
    assert check(at_mean[:0]).tolist() == []


def test_a_model_without_a_stored_distribution_calls_everything_inside():
    manifest = REGISTRY.resolve("direction", "1m").model_copy(
        update={"training_distribution": None}
    )
    check = DistributionCheck(manifest)
    assert not check.known and check(np.full((2, len(FEATURE_NAMES)), 1e9)).all()


def test_model_age_is_measured_at_the_candles_close():
    manifest = REGISTRY.resolve("direction", "1h")
    until = trained_until_ms(manifest)
    assert until == int(pd.Timestamp(manifest.training["range"][1]).timestamp() * 1000)
    output = ModelOutput(
        "direction-1h",
        "direction",
        "v2",
        ("prob_up",),
        np.array([[0.8], [0.8], [0.2]]),
        np.array([True, False, True]),
        until,
    )
    hour = 3_600_000
    open_times = np.array([until - 2 * hour, until + 100 * 86_400_000, until + 10 * 86_400_000])
    rows = TickRows(
        np.array(["binance"] * 3, dtype=object),
        np.array(["BTC/USDT"] * 3, dtype=object),
        "1h",
        open_times,
        np.array([1.0, 1.0, 1.0]),
        0.0,
    )
    plain = build_predictions(output, rows, 1.0, 0.6, 0.7)
    assert plain.column("model_age_s").to_pylist() == [
        -3600.0,
        100 * DAY_S + 3600,
        10 * DAY_S + 3600,
    ]
    assert plain.column("in_distribution").to_pylist() == [True, False, True]
    assert plain.column("signal").to_pylist() == ["LONG", "LONG", "SHORT"]

    limited = build_predictions(output, rows, 1.0, 0.6, 0.7, limits=SignalLimits(True, 30 * DAY_S))
    assert limited.column("signal").to_pylist() == ["LONG", "NEUTRAL", "SHORT"]
    aged = build_predictions(output, rows, 1.0, 0.6, 0.7, limits=SignalLimits(False, 5 * DAY_S))
    assert aged.column("signal").to_pylist() == ["LONG", "NEUTRAL", "NEUTRAL"]
    assert aged.column("confidence").to_pylist()[1:] == ["LOW", "LOW"]
    # other model types carry the fields, and no signal to turn
    volatility = ModelOutput(
        "volatility-1h",
        "volatility",
        "v1",
        ("volatility",),
        np.array([[0.01]] * 3),
        np.array([True, True, False]),
        until,
    )
    table = build_predictions(volatility, rows, 1.0, 0.6, 0.7, limits=SignalLimits(True, 1.0))
    assert table.column("in_distribution").to_pylist() == [True, True, False]
    assert pc.all(pc.is_null(table.column("signal"))).as_py()


def test_an_answer_without_the_fields_gives_nulls_not_guesses():
    output = ModelOutput.from_response(
        {
            "model_id": "direction-1m",
            "model_type": "direction",
            "version": "v1",
            "names": ["prob_up"],
            "values": [[0.9]],
        }
    )
    rows = TickRows(
        np.array(["x"], dtype=object),
        np.array(["A/B"], dtype=object),
        "1m",
        np.array([0]),
        np.array([1.0]),
        0.0,
    )
    table = build_predictions(output, rows, 1.0, 0.6, 0.7, limits=SignalLimits(True, 1.0))
    assert table.column("in_distribution").to_pylist() == [None]
    assert table.column("model_age_s").to_pylist() == [None]
    assert table.column("signal").to_pylist() == ["LONG"]
