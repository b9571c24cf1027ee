"""Batch resampling of candles to a higher timeframe, for many symbols at once.

This is the vectorized twin of ``orchestrator.market.aggregate.TimeframeAggregator``:
both emit a higher-timeframe candle only when every source candle of its UTC-aligned
bucket is present, and both aggregate the same way:
open = first, high = max, low = min, close = last; volume, quote_volume, trade_count
and the taker volumes are summed, and a bucket holding any null in an optional column
gets null there (a sum over unknown values is unknown, not smaller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.schema import (
    CANDLE_SCHEMA,
    OPTIONAL_COLUMNS,
    candles_from_columns,
    conform_candles,
)
from orchestrator.market.timeframes import timeframe_ms

SUMMED_COLUMNS = ("volume", *OPTIONAL_COLUMNS)


def resample(candles: pa.Table | pd.DataFrame, timeframe: str) -> pa.Table | pd.DataFrame:
    """Aggregate candles into complete ``timeframe`` buckets; returns the input's kind.

    Input: ``CANDLE_SCHEMA`` rows of one source timeframe (usually 1m), any number of
    (exchange, symbol) groups, in any order; (exchange, symbol, open_time) must be unique.
    Output: one row per complete bucket, ordered by group (first appearance) then time.
    """
    if isinstance(candles, pd.DataFrame):
        table = pa.Table.from_pandas(candles, preserve_index=False)
        return resample_table(table, timeframe).to_pandas()
    return resample_table(candles, timeframe)


def resample_table(candles: pa.Table, timeframe: str) -> pa.Table:
    table = conform_candles(candles)
    if table.num_rows == 0:
        return CANDLE_SCHEMA.empty_table()
    ratio = _candles_per_bucket(_source_timeframe(table), timeframe)
    if ratio == 1:
        return table
    rows = _SortedRows.of(table)
    first = _complete_bucket_starts(rows, timeframe, ratio)
    members = first[:, None] + np.arange(ratio)  # (buckets, ratio) row indices
    return _aggregate(rows, members, timeframe)


def _source_timeframe(table: pa.Table) -> str:
    names = pc.unique(table.column("timeframe")).to_pylist()
    if len(names) != 1:
        raise ValueError(f"resample needs candles of one timeframe, got {sorted(names)}")
    return names[0]


def _candles_per_bucket(source: str, target: str) -> int:
    source_ms, target_ms = timeframe_ms(source), timeframe_ms(target)
    if target_ms < source_ms or target_ms % source_ms:
        raise ValueError(f"cannot resample {source} candles to {target}")
    return target_ms // source_ms


@dataclass(frozen=True)
class _SortedRows:
    """The input sorted by (group, open_time), with numpy views of what is aggregated."""

    table: pa.Table
    group: np.ndarray
    open_time: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> _SortedRows:
        group = group_codes(table)
        open_time = table.column("open_time").to_numpy()
        if not _is_sorted(group, open_time):
            order = np.lexsort((open_time, group))
            table, group, open_time = table.take(order), group[order], open_time[order]
        _check_unique_and_aligned(group, open_time, table.column("timeframe")[0].as_py())
        return cls(table, group, open_time)


def group_codes(table: pa.Table) -> np.ndarray:
    """Integer code per row for its (exchange, symbol), numbered by first appearance."""
    exchange, symbol = table.column("exchange"), table.column("symbol")
    key = symbol
    if len(pc.unique(exchange)) > 1:
        key = pc.binary_join_element_wise(exchange, symbol, "\x1f")
    encoded = key.combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy().astype(np.int64)


def _is_sorted(group: np.ndarray, open_time: np.ndarray) -> bool:
    step_group, step_time = np.diff(group), np.diff(open_time)
    return bool(np.all((step_group > 0) | ((step_group == 0) & (step_time >= 0))))


def _check_unique_and_aligned(group: np.ndarray, open_time: np.ndarray, source: str) -> None:
    if np.any((np.diff(group) == 0) & (np.diff(open_time) == 0)):
        raise ValueError("resample needs unique (exchange, symbol, open_time); deduplicate first")
    if np.any(open_time % timeframe_ms(source)):
        raise ValueError(f"some {source} candles are not aligned to their timeframe")


def _complete_bucket_starts(rows: _SortedRows, timeframe: str, ratio: int) -> np.ndarray:
    """Row index of the first candle of every bucket that holds all ``ratio`` candles.

    Rows are unique and sorted, so a bucket with ``ratio`` rows has every candle.
    """
    bucket = rows.open_time - rows.open_time % timeframe_ms(timeframe)
    is_start = np.ones(len(bucket), dtype=bool)
    is_start[1:] = (bucket[1:] != bucket[:-1]) | (rows.group[1:] != rows.group[:-1])
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.append(starts, len(bucket)))
    return starts[sizes == ratio]


def _aggregate(rows: _SortedRows, members: np.ndarray, timeframe: str) -> pa.Table:
    table, first = rows.table, members[:, 0]
    columns = {
        "open": _numpy(table, "open")[first],
        "high": _numpy(table, "high")[members].max(axis=1),
        "low": _numpy(table, "low")[members].min(axis=1),
        "close": _numpy(table, "close")[members[:, -1]],
    }
    for name in SUMMED_COLUMNS:
        if table.column(name).null_count < table.num_rows:  # all-null stays absent -> null
            columns[name] = _numpy(table, name)[members].sum(axis=1)  # NaN (null) propagates
    indices = pa.array(first)
    return candles_from_columns(
        exchange=table.column("exchange").take(indices).combine_chunks(),
        symbol=table.column("symbol").take(indices).combine_chunks(),
        timeframe=timeframe,
        open_time=rows.open_time[first],  # a complete bucket starts at its first candle
        columns=columns,
    )


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    """Column as float64 with NaN for null (trade counts stay exact below 2**53)."""
    column = table.column(name)
    if column.null_count:
        column = column.cast(pa.float64())
        return column.to_numpy()
    return column.to_numpy().astype(np.float64, copy=False)
