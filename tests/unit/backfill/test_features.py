"""Backfill feature rows: the rows (and values) the live shard sends to models, with labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from orchestrator.batch.backfill.features import (
    FEATURE_ROW_SCHEMA,
    HIST_VOLATILITY,
    feature_matrix,
    feature_rows,
    label_column,
    split_series,
)
from orchestrator.batch.backfill.sources import target_candles
from orchestrator.features import FEATURE_NAMES, compute_features
from orchestrator.features.specs import MAX_WARMUP
from orchestrator.models.labels import forward_volatility, next_direction, swing_points
from orchestrator.stream.shard import ShardState
from tests.unit.backfill.helpers import MINUTE, first_open_time, random_candles, real_candles

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def _live_rows(candles: pa.Table, timeframes: tuple[str, ...]) -> dict[tuple, np.ndarray]:
    """(timeframe, symbol, open_time) -> feature row, as the live shard emits them."""
    timeline = candles.sort_by([("open_time", "ascending"), ("symbol", "ascending")])
    rows = {}
    for tick in ShardState(timeframes).process(timeline):
        for symbol, open_time, features in zip(
            tick.symbol, tick.open_time, tick.features, strict=True
        ):
            rows[(tick.timeframe, symbol, int(open_time))] = features
    return rows


def _backfill_rows(
    candles: pa.Table, timeframes: tuple[str, ...], start=None, end=None
) -> pa.Table:
    per_symbol = [target_candles(series, timeframes) for series in split_series(candles)]
    return feature_rows(pa.concat_tables([t for d in per_symbol for t in d.values()]), start, end)


def test_rows_and_values_equal_the_live_shard_on_real_candles(shared_data):
    candles = real_candles(shared_data, SYMBOLS, 1500)
    live = _live_rows(candles, ("1m", "5m"))
    rows = _backfill_rows(candles, ("1m", "5m"))
    keys = list(
        zip(
            rows.column("timeframe").to_pylist(),
            rows.column("symbol").to_pylist(),
            rows.column("open_time").to_pylist(),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)) and set(keys) == set(live)
    assert {k[0] for k in keys} == {"1m", "5m"}
    expected = np.stack([live[k] for k in keys])
    np.testing.assert_allclose(feature_matrix(rows), expected, rtol=0, atol=1e-9, equal_nan=True)


def test_a_candle_belongs_to_the_range_it_closes_in(shared_data):
    candles = real_candles(shared_data, ("BTC/USDT",), 600)
    t0 = first_open_time(candles)
    start, end = t0 + 300 * MINUTE + 2 * MINUTE, t0 + 500 * MINUTE  # start inside a 5m bucket
    every = _backfill_rows(candles, ("1m", "5m"))
    ranged = _backfill_rows(candles, ("1m", "5m"), start, end)
    for timeframe, step in (("1m", MINUTE), ("5m", 5 * MINUTE)):
        mask = np.array(every.column("timeframe").to_pylist()) == timeframe
        times = every.column("open_time").to_numpy()[mask]
        closing = times + step - 1
        wanted = times[(closing >= start) & (closing < end)]
        got_mask = np.array(ranged.column("timeframe").to_pylist()) == timeframe
        np.testing.assert_array_equal(ranged.column("open_time").to_numpy()[got_mask], wanted)
    five = ranged.filter(pa.compute.equal(ranged.column("timeframe"), "5m"))
    assert five.column("open_time")[0].as_py() < start  # opened before, closed inside


def test_a_gap_restarts_the_features_like_a_live_reset():
    gap_at, n = 300, 700
    candles = random_candles(n, seed=3, missing=tuple(range(gap_at, gap_at + 7)))
    rows = feature_rows(candles)
    times = rows.column("open_time").to_numpy()
    after = candles.slice(gap_at).to_pandas()  # the candles after the hole, on their own
    expected = compute_features(after)[list(FEATURE_NAMES)].to_numpy()
    t_after = after["open_time"].to_numpy()
    warm_after = np.isfinite(expected[:, :-1]).all(axis=1)  # taker_buy_ratio is optional
    got = feature_matrix(rows)[times >= t_after[0]]
    np.testing.assert_array_equal(times[times >= t_after[0]], t_after[warm_after])
    np.testing.assert_allclose(got, expected[warm_after], rtol=0, atol=0, equal_nan=True)
    assert (times >= t_after[0]).sum() == len(t_after) - MAX_WARMUP


def test_labels_are_the_training_labels_and_unknown_across_a_gap():
    candles = random_candles(400, seed=5, missing=(250,))
    rows = feature_rows(candles)
    times = rows.column("open_time").to_numpy()
    full = candles.to_pandas()
    piece = full[full["open_time"] < full["open_time"].iloc[250]]  # the run before the hole
    close, high, low = (piece[c].to_numpy() for c in ("close", "high", "low"))
    index = np.searchsorted(
        piece["open_time"].to_numpy(), times[times < piece["open_time"].max() + 1]
    )
    for name, label in (
        ("direction", next_direction(close)),
        ("volatility", forward_volatility(close)),
        ("swing", swing_points(high, low)),
    ):
        got = rows.column(label_column(name)).to_numpy()[: len(index)]
        np.testing.assert_array_equal(got, label[index])
    last_before_gap = rows.column(label_column("direction")).to_numpy()[len(index) - 1]
    assert np.isnan(last_before_gap)  # its next candle is missing: live never settles it
    assert np.isfinite(rows.column(HIST_VOLATILITY).to_numpy()).all()


def test_series_are_split_whole_and_rows_keep_the_schema():
    a = random_candles(200, seed=1, symbol="AAA/USDT")
    b = random_candles(150, seed=2, symbol="BBB/USDT")
    mixed = pa.concat_tables([b.slice(0, 70), a, b.slice(70)])
    parts = split_series(mixed)
    assert [p.num_rows for p in parts] == [150, 200]
    rows = feature_rows(mixed)
    assert rows.schema == FEATURE_ROW_SCHEMA
    assert rows.num_rows == (200 - MAX_WARMUP) + (150 - MAX_WARMUP)
    alone = feature_rows(a)
    in_mixed = rows.filter(pa.compute.equal(rows.column("symbol"), "AAA/USDT"))
    pd.testing.assert_frame_equal(in_mixed.to_pandas(), alone.to_pandas())  # NaN == NaN


def test_empty_or_cold_series_give_no_rows():
    assert feature_rows(random_candles(5)).num_rows == 0
    assert feature_rows(random_candles(0)).schema == FEATURE_ROW_SCHEMA


@pytest.mark.parametrize("rows", [1, 3])
def test_feature_matrix_reads_sliced_tables(rows):
    table = feature_rows(random_candles(80, seed=9))
    piece = table.slice(10, rows)
    np.testing.assert_array_equal(feature_matrix(piece), feature_matrix(table)[10 : 10 + rows])
