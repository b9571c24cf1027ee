"""Incremental twin == batch twin at every index (1e-9 relative, floor 1e-12; see helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.features import FEATURE_SPECS, IncrementalFeatures, compute_features
from tests.unit.features.helpers import (
    TWIN_ATOL,
    TWIN_RTOL,
    adversarial_series,
    assert_features_close,
    random_walk,
    run_incremental,
    segments,
)


def _assert_twins_agree(frames: dict) -> None:
    rows = run_incremental(list(frames.values()))
    for (name, frame), incremental in zip(frames.items(), rows, strict=True):
        batch = compute_features(frame).to_numpy()
        assert_features_close(incremental, batch, rtol=TWIN_RTOL, atol=TWIN_ATOL, label=name)


def test_twins_agree_on_random_walks_of_ragged_lengths():
    lengths = (5, 34, 35, 300, 1200)
    frames = {f"walk{n}": random_walk(n, seed=n, taker=n % 2 == 0) for n in lengths}
    _assert_twins_agree(frames)


def test_twins_agree_on_adversarial_series():
    _assert_twins_agree(adversarial_series())


def test_many_symbols_in_one_call_equal_each_symbol_alone():
    frames = [random_walk(200, seed=s + 3, price=10.0**s) for s in range(-3, 4)]
    together = run_incremental(frames)
    for frame, rows in zip(frames, together, strict=True):
        alone = run_incremental([frame])[0]
        np.testing.assert_array_equal(rows, alone)


def test_a_crowded_engine_gives_each_symbol_the_same_rows():
    """Slots far apart, other symbols warm or cold: no state leaks between slots."""
    engine = IncrementalFeatures()
    engine.add_symbols([f"filler{i}" for i in range(37)])
    frame = random_walk(120, seed=3)
    crowded = run_incremental([frame, random_walk(60, seed=4)], engine)[0]
    np.testing.assert_array_equal(crowded, run_incremental([frame])[0])


def test_windowed_features_do_not_depend_on_loaded_history():
    """Only EMA/Wilder (seeded) features may depend on where the series started."""
    frame = random_walk(1500, seed=5)
    full = compute_features(frame).to_numpy()
    start = 400
    late = compute_features(frame.iloc[start:]).to_numpy()
    for j, spec in enumerate(FEATURE_SPECS):
        tail_full, tail_late = full[start + spec.warmup :, j], late[spec.warmup :, j]
        if not spec.seeded:
            np.testing.assert_array_equal(tail_late, tail_full, err_msg=spec.name)
        else:  # the seed's weight decays geometrically: equal to 1e-9 after 600 candles
            np.testing.assert_allclose(
                tail_late[600:], tail_full[600:], rtol=1e-9, atol=1e-12, err_msg=spec.name
            )
            assert not np.array_equal(tail_late[:5], tail_full[:5]), spec.name


@pytest.mark.parametrize("size", [1, 7])
def test_twins_agree_when_series_are_cut_into_segments(size):
    """A reset mid-series (segments as fresh symbols) is a fresh warm-up in both twins."""
    frame = random_walk(90, seed=6)
    pieces = segments(frame, 90 // size + 1)
    rows = run_incremental(pieces)
    for piece, incremental in zip(pieces, rows, strict=True):
        assert_features_close(
            incremental, compute_features(piece).to_numpy(), rtol=TWIN_RTOL, atol=TWIN_ATOL
        )
