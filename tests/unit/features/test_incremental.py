"""IncrementalFeatures as a component: slots, snapshots, resets, validation, edge values."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from orchestrator.features import (
    FEATURE_NAMES,
    FEATURE_SPECS,
    IncrementalFeatures,
    compute_features,
)
from tests.unit.features.helpers import (
    CANDLE_COLUMNS,
    adversarial_series,
    open_time_ms,
    random_walk,
    run_incremental,
)

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _feed(engine, slots, frames, rows: slice) -> list[np.ndarray]:
    """Feed rows[rows] of every frame (same length) to ``slots``; one call per candle."""
    out = []
    for t in range(len(frames[0]))[rows]:
        candle = [np.array([f[c].iloc[t] for f in frames]) for c in CANDLE_COLUMNS]
        times = np.array([open_time_ms(f)[t] for f in frames])
        taker = np.array([f["taker_buy_base"].iloc[t] for f in frames])
        out.append(engine.update(slots, times, *candle, taker))
    return out


def test_add_symbols_is_idempotent_and_slots_are_stable():
    engine = IncrementalFeatures()
    assert engine.add_symbols(["binance:BTC/USDT", "binance:ETH/USDT"]).tolist() == [0, 1]
    again = engine.add_symbols(
        ["binance:ETH/USDT", "kraken:BTC/USD", "binance:BTC/USDT", "kraken:BTC/USD"]
    )
    assert again.tolist() == [1, 2, 0, 2]
    assert engine.keys == ("binance:BTC/USDT", "binance:ETH/USDT", "kraken:BTC/USD")
    assert engine.add_symbols(f"s{i}" for i in range(100))[-1] == 102  # growth keeps order
    assert engine.add_symbols(["kraken:BTC/USD"]).tolist() == [2]


def test_every_feature_is_nan_before_its_warmup_and_finite_from_it():
    frame = random_walk(60, seed=2)
    rows = run_incremental([frame])[0]
    for j, spec in enumerate(FEATURE_SPECS):
        assert np.isnan(rows[: spec.warmup, j]).all(), spec.name
        assert np.isfinite(rows[spec.warmup :, j]).all(), spec.name


def test_snapshot_restore_mid_series_equals_an_uninterrupted_run_bit_for_bit():
    frames = [random_walk(150, seed=s) for s in (1, 2, 3)]
    straight = IncrementalFeatures()
    slots = straight.add_symbols(["a", "b", "c"])
    expected = _feed(straight, slots, frames, slice(None))

    first = IncrementalFeatures()
    first.add_symbols(["a", "b", "c"])
    _feed(first, slots, frames, slice(0, 70))
    blob = pickle.dumps(first.snapshot())
    _feed(first, slots, frames, slice(70, 80))  # the original moving on changes nothing
    restored = IncrementalFeatures.from_snapshot(pickle.loads(blob))
    resumed = _feed(restored, slots, frames, slice(70, None))
    np.testing.assert_array_equal(np.array(resumed), np.array(expected[70:]))
    assert restored.keys == ("a", "b", "c")


def test_snapshot_is_plain_data():
    engine = IncrementalFeatures()
    engine.add_symbols(["x"])
    snap = engine.snapshot()
    allowed = (np.ndarray, list, str, int)
    assert all(isinstance(v, allowed) for v in snap.values())
    assert all(v.dtype.kind in "fi" for v in snap.values() if isinstance(v, np.ndarray))


def test_from_snapshot_rejects_foreign_or_damaged_state():
    snap = IncrementalFeatures().snapshot()
    with pytest.raises(ValueError, match="format"):
        IncrementalFeatures.from_snapshot({**snap, "format": "something/else"})
    with pytest.raises(ValueError, match="different feature set"):
        IncrementalFeatures.from_snapshot({**snap, "feature_names": ["ret_1"]})
    with pytest.raises(ValueError, match="history"):
        IncrementalFeatures.from_snapshot(
            {**snap, "keys": ["a"], "count": np.zeros(1), "last_open_time": np.zeros(1)}
        )


def test_reset_symbols_starts_warmup_over_like_a_fresh_series():
    frame = random_walk(120, seed=4)
    engine = IncrementalFeatures()
    slots = engine.add_symbols(["a", "b"])
    other = random_walk(120, seed=5)
    _feed(engine, slots, [frame, other], slice(0, 50))
    engine.reset_symbols(slots[:1])
    assert engine.candles_seen(slots).tolist() == [0, 50]
    after = np.array(_feed(engine, slots, [frame, other], slice(50, None)))
    np.testing.assert_array_equal(after[:, 0], compute_features(frame.iloc[50:]).to_numpy())
    np.testing.assert_array_equal(after[:, 1], compute_features(other).to_numpy()[50:])


def test_drop_slots_removes_symbols_and_the_rest_continue_as_if_alone():
    frames = [random_walk(120, seed=s) for s in (11, 12, 13)]
    engine, alone = IncrementalFeatures(), IncrementalFeatures()
    slots = engine.add_symbols(["a", "b", "c"])
    _feed(engine, slots, frames, slice(0, 60))
    _feed(alone, alone.add_symbols(["a", "c"]), frames[::2], slice(0, 60))
    engine.drop_slots([1])
    assert engine.keys == alone.keys == ("a", "c") and len(engine) == 2
    for key, value in engine.snapshot().items():
        np.testing.assert_array_equal(value, alone.snapshot()[key])
    after = _feed(engine, np.array([0, 1]), frames[::2], slice(60, None))
    np.testing.assert_array_equal(
        after, _feed(alone, np.array([0, 1]), frames[::2], slice(60, None))
    )
    assert engine.add_symbols(["b"]).tolist() == [2] and engine.candles_seen([2]).tolist() == [0]
    with pytest.raises(ValueError, match="out of range"):
        engine.drop_slots([3])


def test_rows_follow_the_order_of_slots():
    frames = [random_walk(40, seed=s) for s in (6, 7, 8)]
    forward, backward = IncrementalFeatures(), IncrementalFeatures()
    slots = forward.add_symbols(["a", "b", "c"])
    backward.add_symbols(["a", "b", "c"])
    rows_fwd = _feed(forward, slots, frames, slice(None))
    rows_bwd = _feed(backward, slots[::-1], frames[::-1], slice(None))
    np.testing.assert_array_equal(np.array(rows_fwd), np.array(rows_bwd)[:, ::-1])


def _candle(price=100.0, t=0, volume=1.0):
    arr = lambda v: np.array([v])  # noqa: E731
    return dict(
        open_time_ms=np.array([t], dtype=np.int64),
        open=arr(price),
        high=arr(price),
        low=arr(price),
        close=arr(price),
        volume=arr(volume),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"close": np.array([np.nan])}, "invalid candle"),
        ({"low": np.array([0.0])}, "invalid candle"),
        ({"high": np.array([99.0])}, "invalid candle"),
        ({"volume": np.array([-1.0])}, "invalid candle"),
        ({"open_time_ms": np.array([60_000])}, "is not after"),
        ({"close": np.array([1.0, 2.0])}, "shape"),
    ],
)
def test_bad_input_raises_and_changes_nothing(change, message):
    engine = IncrementalFeatures()
    slots = engine.add_symbols(["a"])
    engine.update(slots, **_candle(t=60_000))
    before = engine.snapshot()
    with pytest.raises(ValueError, match=message):
        engine.update(slots, **{**_candle(t=120_000), **change})
    after = engine.snapshot()
    for key in ("count", "last_open_time", "history", "state"):
        np.testing.assert_array_equal(after[key], before[key])


def test_bad_slots_are_refused():
    engine = IncrementalFeatures()
    engine.add_symbols(["a", "b", "c"])
    candle = {k: np.repeat(v, 2) for k, v in _candle().items()}
    with pytest.raises(ValueError, match="unique"):
        engine.update(np.array([2, 2]), **candle)
    with pytest.raises(ValueError, match="out of range"):
        engine.update(np.array([0, 3]), **candle)
    with pytest.raises(ValueError, match="integer"):
        engine.update(np.array([0.0, 1.0]), **candle)


def test_hour_features_follow_the_timestamps_across_a_gap():
    frame = adversarial_series()["time_gap"]
    hours = pd.to_datetime(frame["open_time"], unit="ms", utc=True).dt.hour.to_numpy()
    assert (hours[80] - hours[79]) % 24 == 7  # the gap moves the clock by seven hours
    for rows in (run_incremental([frame])[0], compute_features(frame).to_numpy()):
        np.testing.assert_allclose(
            rows[:, COL["hour_sin"]], np.sin(2 * np.pi * hours / 24), atol=1e-15
        )
        np.testing.assert_allclose(
            rows[:, COL["hour_cos"]], np.cos(2 * np.pi * hours / 24), atol=1e-15
        )


def test_constant_prices_and_zero_volume_give_the_documented_neutral_values():
    rows = run_incremental([adversarial_series()["constant"]])[0][-1]
    expected = {
        "ret_1": 0.0,
        "ret_15": 0.0,
        "roc_10": 0.0,
        "rsi_14": 50.0,
        "stoch_k": 50.0,
        "stoch_d": 50.0,
        "willr_14": -50.0,
        "cci_20": 0.0,
        "adx_14": 0.0,
        "mfi_14": 50.0,
        "bb_pctb_20": 0.5,
        "bb_width_20": 0.0,
        "atr_14": 0.0,
        "natr_14": 0.0,
        "vol_20": 0.0,
        "volume_z_20": 0.0,
        "hl_range": 0.0,
        "close_pos": 0.5,
        "taker_buy_ratio": 0.5,
    }
    for name, value in expected.items():
        assert rows[COL[name]] == value, name
    for name in ("macd", "macd_signal", "macd_hist"):  # only rounding of the 0.1 seeds
        assert abs(rows[COL[name]]) < 1e-14, name
    for name in ("sma_ratio_5", "sma_ratio_20", "ema_ratio_12"):
        assert abs(rows[COL[name]] - 1.0) < 1e-14, name


def test_a_huge_spike_stays_finite_and_in_range():
    frame = adversarial_series()["spike"]
    rows = run_incremental([frame])[0][40:]
    assert np.isfinite(rows).all()
    for name, lo, hi in (
        ("rsi_14", 0, 100),
        ("stoch_k", 0, 100),
        ("stoch_d", 0, 100),
        ("willr_14", -100, 0),
        ("mfi_14", 0, 100),
        ("adx_14", 0, 100),
        ("close_pos", 0, 1),
        ("bb_pctb_20", -5, 5),
    ):
        col = rows[:, COL[name]]
        assert ((col >= lo) & (col <= hi)).all(), name
    assert rows[70 - 40, COL["ret_1"]] > 6  # ln(1000): the spike is seen, not clipped


def test_taker_ratio_is_missing_where_the_source_has_none():
    frames = adversarial_series()
    with_gaps = run_incremental([frames["taker_partly_missing"]])[0][:, COL["taker_buy_ratio"]]
    taker = frames["taker_partly_missing"]["taker_buy_base"].to_numpy()
    volume = frames["taker_partly_missing"]["volume"].to_numpy()
    assert np.isnan(with_gaps[::3]).all()
    keep = ~np.isnan(taker)
    np.testing.assert_array_equal(with_gaps[keep], taker[keep] / volume[keep])
    engine = IncrementalFeatures()
    slots = engine.add_symbols(["x"])
    row = engine.update(slots, **_candle())  # taker_buy_base omitted
    assert np.isnan(row[0, COL["taker_buy_ratio"]])


def test_price_features_are_scale_free_and_volume_features_volume_scale_free():
    frame = random_walk(300, seed=9)
    scaled = frame.copy()
    scaled[["open", "high", "low", "close"]] *= 1024.0  # powers of two scale exactly
    scaled[["volume", "taker_buy_base"]] *= 2.0**-30
    a, b = run_incremental([frame, scaled])
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
