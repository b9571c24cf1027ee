"""Both twins against TA-Lib (1e-6 relative once warm, floor 1e-9; see helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.features import FEATURE_SPECS, compute_features
from tests.unit.features.helpers import (
    TALIB_ATOL,
    TALIB_RTOL,
    adversarial_series,
    assert_features_close,
    random_walk,
    run_incremental,
)
from tests.unit.features.talib_reference import reference_features

WARMUPS = np.array([spec.warmup for spec in FEATURE_SPECS])


def _warm_reference(frame) -> np.ndarray:
    """TA-Lib's values, NaN before each feature's documented warm-up (our contract)."""
    ref = reference_features(frame)
    ref[np.arange(len(frame))[:, None] < WARMUPS] = np.nan
    return ref


def test_talib_starts_every_indicator_where_our_warmup_says():
    frame = random_walk(200, seed=1)
    ref = reference_features(frame)
    first_valid = np.argmax(np.isfinite(ref), axis=0)
    for j, spec in enumerate(FEATURE_SPECS):
        assert first_valid[j] == spec.warmup, spec.name


@pytest.mark.parametrize("price", [1e-7, 0.03, 1.0, 3e4, 1e8])
def test_batch_matches_talib_at_any_price_scale(price):
    frame = random_walk(2000, seed=int(np.log10(price)) + 20, price=price)
    assert_features_close(
        compute_features(frame).to_numpy(),
        _warm_reference(frame),
        rtol=TALIB_RTOL,
        atol=TALIB_ATOL,
        label=f"price {price}",
    )


def test_incremental_matches_talib():
    frames = [random_walk(700, seed=s, price=p) for s, p in ((1, 0.5), (2, 50.0), (3, 5e4))]
    for frame, rows in zip(frames, run_incremental(frames), strict=True):
        assert_features_close(rows, _warm_reference(frame), rtol=TALIB_RTOL, atol=TALIB_ATOL)


@pytest.mark.parametrize("twin", ["batch", "incremental"])
def test_both_twins_match_talib_on_adversarial_series(twin):
    frames = adversarial_series()
    if twin == "batch":
        rows = [compute_features(f).to_numpy() for f in frames.values()]
    else:
        rows = run_incremental(list(frames.values()))
    for (name, frame), got in zip(frames.items(), rows, strict=True):
        assert_features_close(
            got, _warm_reference(frame), rtol=TALIB_RTOL, atol=TALIB_ATOL, label=name
        )
