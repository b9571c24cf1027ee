"""compute_features as a component: its input contract and output shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.features import FEATURE_NAMES, FEATURE_SPECS, compute_features
from tests.unit.features.helpers import random_walk


def test_output_keeps_the_index_and_uses_feature_names_as_columns():
    frame = random_walk(50, seed=1).set_index(pd.RangeIndex(1000, 1050))
    out = compute_features(frame)
    assert list(out.columns) == list(FEATURE_NAMES)
    assert out.index.equals(frame.index)
    assert out.dtypes.eq(np.float64).all()


def test_a_utc_date_column_is_the_same_as_open_time():
    frame = random_walk(80, seed=2)
    dated = frame.drop(columns="open_time")
    dated["date"] = pd.to_datetime(frame["open_time"], unit="ms", utc=True)
    pd.testing.assert_frame_equal(compute_features(dated), compute_features(frame))
    dated["date"] = dated["date"].dt.tz_convert("Asia/Tokyo")  # same instants, other zone
    pd.testing.assert_frame_equal(compute_features(dated), compute_features(frame))


def test_empty_and_short_frames_are_all_nan_where_not_warm():
    assert compute_features(random_walk(0, seed=3)).shape == (0, len(FEATURE_NAMES))
    short = compute_features(random_walk(3, seed=3)).to_numpy()
    for j, spec in enumerate(FEATURE_SPECS):
        assert np.isnan(short[: spec.warmup, j]).all(), spec.name
        assert np.isfinite(short[spec.warmup :, j]).all(), spec.name
    assert np.isfinite(short[2]).sum() == 6  # ret_1 and the five per-candle features


def test_bad_frames_are_refused_with_the_reason():
    frame = random_walk(30, seed=4)
    with pytest.raises(ValueError, match="lacks columns"):
        compute_features(frame.drop(columns="volume"))
    naive = frame.drop(columns="open_time").assign(
        date=pd.to_datetime(frame["open_time"], unit="ms")
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_features(naive)
    with pytest.raises(ValueError, match="open_time"):
        compute_features(frame.drop(columns="open_time"))
    with pytest.raises(ValueError, match="increase strictly"):
        compute_features(frame.iloc[[0, 1, 3, 2, 4]])
    broken = frame.copy()
    broken.loc[7, "close"] = -1.0
    with pytest.raises(ValueError, match="row 7"):
        compute_features(broken)


def test_blocked_batch_equals_one_block_and_the_incremental_twin(monkeypatch):
    """compute_features works in blocks; block boundaries must change nothing."""
    from orchestrator.features import IncrementalFeatures
    from orchestrator.features import batch as batch_module

    frame = random_walk(1500, seed=11)
    whole = compute_features(frame).to_numpy(copy=True)
    monkeypatch.setattr(batch_module, "_BLOCK_ROWS", 40)
    blocked = compute_features(frame).to_numpy(copy=True)
    np.testing.assert_array_equal(blocked, whole)
    engine = IncrementalFeatures()
    slot = engine.add_symbols(["x:A/USDT"])
    taker = frame["taker_buy_base"].to_numpy() if "taker_buy_base" in frame else None
    for i in range(len(frame)):
        row = engine.update(
            slot,
            frame["open_time"].to_numpy()[i : i + 1],
            *(frame[c].to_numpy()[i : i + 1] for c in ("open", "high", "low", "close", "volume")),
            taker_buy_base=None if taker is None else taker[i : i + 1],
        )
        np.testing.assert_allclose(row[0], blocked[i], rtol=1e-9, atol=1e-12, equal_nan=True)
