"""Feature rows of candle series, with their realized labels, for the rows a model sees live.

For each series (one exchange, symbol and timeframe, time-ordered) this computes every
feature with the batch twin ``compute_features`` and keeps exactly the rows the live shard
sends to a model: every required feature warm (``warm_rows``, the shard's own mask). A
series is cut where candles are missing and each piece starts its features afresh, as the
live pipeline resets a symbol after an unrepairable gap (and training splits at gaps).

Each kept row also carries its realized label for every model type, computed with the
live outcome scorer's own label functions (``orchestrator.stream.outcomes.LABEL_FUNCTIONS``) on
the contiguous piece, so the label is NaN wherever live scoring could not settle it: past
the end of the data, or across a gap. ``hist_volatility`` is the volatility model's naive
forecast (known at t). Pure: no Ray, no I/O.

The range: a row belongs to ``[start_ms, end_ms)`` when its candle *closes* inside it,
i.e. its ``close_time`` (the candle's last millisecond) is in the range: that is the set
of predictions a live run over that period makes (a 5m candle that opened a minute
before ``start_ms`` is predicted live once it closes, after ``start_ms``). For ranges on
whole days this is the same as "open time in range".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from orchestrator.market.schema import constant_strings
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.labels import LABEL_SPECS, trailing_volatility
from orchestrator.models.scoring import LABEL_FUNCTIONS
from orchestrator.models.training.datasets import contiguous_runs

N_FEATURES = len(FEATURE_NAMES)
MODEL_TYPES: tuple[str, ...] = tuple(LABEL_SPECS)
HIST_VOLATILITY = "hist_volatility"
SERIES_KEY = ("exchange", "symbol", "timeframe")
_CANDLE_INPUTS = ("open_time", "open", "high", "low", "close", "volume", "taker_buy_base")


def label_column(model_type: str) -> str:
    return f"label_{model_type}"


FEATURE_ROW_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("open_time", pa.int64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        # Every feature of a row, in FEATURE_NAMES order: one contiguous buffer, which is
        # what a model input is built from (28 separate columns would be gathered again).
        pa.field("features", pa.list_(pa.float64(), N_FEATURES), nullable=False),
        *(pa.field(label_column(t), pa.float64()) for t in MODEL_TYPES),
        pa.field(HIST_VOLATILITY, pa.float64()),
    ]
)


def in_range(close_time: np.ndarray, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    """Rows whose candle closes in ``[start_ms, end_ms)`` (None: unbounded on that side)."""
    keep = np.ones(len(close_time), dtype=bool)
    if start_ms is not None:
        keep &= close_time >= start_ms
    if end_ms is not None:
        keep &= close_time < end_ms
    return keep


def feature_rows(
    candles: pa.Table,
    start_ms: int | None = None,
    end_ms: int | None = None,
    label_types: tuple[str, ...] = MODEL_TYPES,
) -> pa.Table:
    """``FEATURE_ROW_SCHEMA`` rows of every series in ``candles`` (each series whole).

    Labels are computed for ``label_types`` only (the others stay NaN) and the return label
    always (a strategy's next-candle return)."""
    parts = [
        series_feature_rows(series, start_ms, end_ms, label_types)
        for series in split_series(candles)
    ]
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else FEATURE_ROW_SCHEMA.empty_table()


def split_series(candles: pa.Table) -> list[pa.Table]:
    """One time-ordered table per (exchange, symbol, timeframe), in first-seen order."""
    if candles.num_rows == 0:
        return []
    open_time = candles.column("open_time").to_numpy()
    if _one_key(candles) and bool(np.all(np.diff(open_time) > 0)):
        return [candles]  # one series, already in order: the usual block
    key = pc.binary_join_element_wise(*(candles.column(c) for c in SERIES_KEY), "\x1f")
    codes = key.combine_chunks().dictionary_encode().indices.to_numpy()
    order = np.lexsort((open_time, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return [candles.take(pa.array(rows)) for rows in np.split(order, bounds)]


def _one_key(candles: pa.Table) -> bool:
    extremes = (pc.min_max(candles.column(c)) for c in SERIES_KEY)
    return all(e["min"] == e["max"] for e in extremes)


def series_feature_rows(
    candles: pa.Table,
    start_ms: int | None,
    end_ms: int | None,
    label_types: tuple[str, ...] = MODEL_TYPES,
) -> pa.Table:
    """Warm, in-range rows of ONE time-ordered series, features and labels attached."""
    step = timeframe_ms(candles.column("timeframe")[0].as_py())
    frame = _candle_frame(candles)
    open_time = frame["open_time"].to_numpy()
    runs = contiguous_runs(open_time, step)
    features, labels = _features_and_labels(frame, runs, {*label_types, "return"})
    keep = warm_rows(features) & in_range(open_time + (step - 1), start_ms, end_ms)
    index = _as_slice(np.flatnonzero(keep))
    return _rows_table(candles, index, features[index], {k: v[index] for k, v in labels.items()})


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A slice when the rows are one unbroken range (the usual: all but the warm-up), so
    taking them is a view, not a copy of every feature."""
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _candle_frame(candles: pa.Table) -> pd.DataFrame:
    columns = {}
    for name in _CANDLE_INPUTS:
        column = candles.column(name)
        if column.null_count:  # optional taker volume: null means unknown, never invented
            column = column.cast(pa.float64()).fill_null(np.nan)
        columns[name] = column.to_numpy()
    return pd.DataFrame(columns, copy=False)


def _features_and_labels(
    frame: pd.DataFrame, runs: list[tuple[int, int]], label_types: set
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features and labels of every row, each contiguous run computed on its own."""
    n = len(frame)
    labels = {
        name: np.full(n, np.nan) for name in (*map(label_column, MODEL_TYPES), HIST_VOLATILITY)
    }
    close, high, low = (frame[c].to_numpy() for c in ("close", "high", "low"))
    if runs == [(0, n)]:  # one unbroken series: its features as computed, no copy
        features = compute_features(frame).to_numpy()
    else:
        features = np.full((n, N_FEATURES), np.nan)
        for a, b in runs:
            features[a:b] = compute_features(frame.iloc[a:b].reset_index(drop=True)).to_numpy()
    for a, b in runs:
        for model_type in label_types:
            label = LABEL_FUNCTIONS[model_type]
            labels[label_column(model_type)][a:b] = label(close[a:b], high[a:b], low[a:b])
        if "volatility" in label_types:
            labels[HIST_VOLATILITY][a:b] = trailing_volatility(close[a:b])
    return features, labels


def _rows_table(
    candles: pa.Table,
    index: slice | np.ndarray,
    features: np.ndarray,
    labels: dict[str, np.ndarray],
) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(features).reshape(-1), pa.float64())
    columns = {
        # one series: its names repeat (cheaper than gathering strings row by row)
        **{
            name: constant_strings(candles.column(name)[0].as_py(), len(features))
            for name in SERIES_KEY
        },
        "open_time": pa.array(candles.column("open_time").to_numpy()[index]),
        "close": pa.array(candles.column("close").to_numpy()[index]),
        "features": pa.FixedSizeListArray.from_arrays(flat, N_FEATURES),
        **labels,
    }
    return pa.Table.from_arrays(
        [columns[f.name] for f in FEATURE_ROW_SCHEMA], schema=FEATURE_ROW_SCHEMA
    )


def feature_matrix(rows: pa.Table) -> np.ndarray:
    """The (n, N_FEATURES) float64 matrix of ``FEATURE_ROW_SCHEMA`` rows (no copy when the
    column is one chunk)."""
    column = rows.column("features")
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(rows), N_FEATURES)
