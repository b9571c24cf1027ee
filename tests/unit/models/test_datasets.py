"""Training sets: features per symbol (never across symbols or gaps), pooled by time."""

import numpy as np
import pandas as pd

from orchestrator.features import REQUIRED_FEATURES, compute_features
from orchestrator.models.labels import next_direction
from orchestrator.models.training.datasets import (
    HIST_VOLATILITY,
    contiguous_runs,
    labelled_candles,
    model_data,
    pool_symbols,
)
from tests.unit.models.helpers import MINUTE_MS, random_candles


def test_pooled_rows_equal_each_symbols_own_features():
    candles = {"A": random_candles(400, seed=1), "B": random_candles(300, seed=2, drift=1e-3)}
    data = pool_symbols(
        {s: labelled_candles(c, MINUTE_MS) for s, c in candles.items()},
        "1m",
        MINUTE_MS,
        "synthetic",
    )
    assert np.all(np.diff(data.open_time) >= 0)  # ordered by time, not shuffled
    assert data.features.dtype == np.float32
    for code, symbol in enumerate(data.symbols):
        alone = compute_features(candles[symbol])[list(REQUIRED_FEATURES)]
        alone = alone.assign(open_time=candles[symbol]["open_time"]).dropna()
        mine = data.symbol_codes == code
        np.testing.assert_array_equal(data.open_time[mine], alone["open_time"])
        np.testing.assert_array_equal(
            data.features[mine], alone[list(REQUIRED_FEATURES)].to_numpy(np.float32)
        )
        close = candles[symbol].set_index("open_time")["close"]
        expected = next_direction(close.to_numpy())[close.index.get_indexer(data.open_time[mine])]
        np.testing.assert_array_equal(data.columns["direction"][mine], expected)


def test_a_gap_splits_the_series():
    candles = random_candles(500, seed=4)
    with_gap = candles.drop(index=range(250, 260)).reset_index(drop=True)
    assert contiguous_runs(with_gap["open_time"].to_numpy(), MINUTE_MS) == [(0, 250), (250, 490)]
    rows = labelled_candles(with_gap, MINUTE_MS).set_index("open_time")
    after = with_gap.iloc[250:].reset_index(drop=True)
    alone = compute_features(after)[list(REQUIRED_FEATURES)].set_index(after["open_time"]).dropna()
    np.testing.assert_array_equal(rows.loc[alone.index, list(REQUIRED_FEATURES)], alone)
    last_before_gap = with_gap["open_time"][249]
    assert np.isnan(rows.loc[last_before_gap, "direction"])  # its next candle is missing
    assert np.isnan(rows.loc[with_gap["open_time"][245], "volatility"])


def test_model_data_keeps_rows_with_known_labels_and_baselines():
    data = pool_symbols(
        {"A": labelled_candles(random_candles(300, seed=6), MINUTE_MS)},
        "5m",
        5 * MINUTE_MS,
        "synthetic",
    )
    vol = model_data(data, "volatility")
    assert np.isfinite(vol.target).all() and np.isfinite(vol.baseline).all()
    assert len(vol.target) == np.sum(
        np.isfinite(data.columns["volatility"]) & np.isfinite(data.columns[HIST_VOLATILITY])
    )
    ret = model_data(data, "return")
    np.testing.assert_array_equal(ret.baseline, 0.0)
    swing = model_data(data, "swing")
    assert set(np.unique(swing.target)) <= {0.0, 1.0, 2.0} and swing.baseline is None
    assert swing.purge_ms == 5 * 5 * MINUTE_MS


def test_every_label_column_is_present():
    rows = labelled_candles(random_candles(120, seed=9), MINUTE_MS)
    assert isinstance(rows, pd.DataFrame)
    assert {"direction", "return", "volatility", "swing", HIST_VOLATILITY, "open_time"} <= set(rows)
    assert np.isfinite(rows[list(REQUIRED_FEATURES)].to_numpy()).all()
