"""Both twins and TA-Lib on the real candles in ../shared/data (via the shared_data fixture).

Every 1m spot, native 5m/1h and USD-M file is used (USD-M has taker volume, so
taker_buy_ratio is exercised), plus an evenly spread sample of the 136 hourly files.
The incremental twin is driven over segments of every series at once (each segment a
fresh symbol, a few hundred symbols per call) so the whole data set takes seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from tests.unit.features.helpers import (
    TALIB_ATOL,
    TALIB_RTOL,
    TWIN_ATOL,
    TWIN_RTOL,
    assert_features_close,
    read_candles,
    real_data_files,
    run_incremental,
    segments,
)
from tests.unit.features.talib_reference import reference_features

pytestmark = pytest.mark.realdata
SEGMENT_ROWS = 3000


@pytest.fixture(scope="module")
def real_frames(shared_data):
    files = real_data_files(shared_data)
    assert len(files) >= 3 + 6 + 6 + 10
    return {path.name: read_candles(path) for path in files}


def test_batch_matches_talib_on_every_file(real_frames):
    for name, frame in real_frames.items():
        batch = compute_features(frame).to_numpy(copy=True)
        reference = reference_features(frame)
        warm = warm_rows(batch)
        assert warm.sum() == len(frame) - 33, name
        assert_features_close(
            batch[warm], reference[warm], rtol=TALIB_RTOL, atol=TALIB_ATOL, label=name
        )


def test_incremental_matches_batch_and_talib_on_every_file(real_frames):
    pieces = {
        f"{name}[{i}]": piece
        for name, frame in real_frames.items()
        for i, piece in enumerate(segments(frame, SEGMENT_ROWS))
    }
    rows = run_incremental(list(pieces.values()))
    for (label, piece), incremental in zip(pieces.items(), rows, strict=True):
        batch = compute_features(piece).to_numpy()
        assert_features_close(incremental, batch, rtol=TWIN_RTOL, atol=TWIN_ATOL, label=label)
        warm = warm_rows(incremental)
        assert_features_close(
            incremental[warm],
            reference_features(piece)[warm],
            rtol=TALIB_RTOL,
            atol=TALIB_ATOL,
            label=label,
        )


def test_taker_buy_ratio_is_present_exactly_where_the_data_has_taker_volume(real_frames):
    ratio = FEATURE_NAMES.index("taker_buy_ratio")
    for name, frame in real_frames.items():
        values = compute_features(frame).to_numpy()[:, ratio]
        if "taker_buy_base" in frame.columns:
            assert np.isfinite(values).all(), name
            assert ((values >= 0) & (values <= 1)).all(), name
        else:
            assert np.isnan(values).all(), name
