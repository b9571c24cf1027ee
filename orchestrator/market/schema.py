"""The one candle schema every source converts into, and the conversions into it.

A candle is labelled by its open time. ``close_time`` follows Binance: the last
millisecond inside the candle (``open_time + timeframe_ms - 1``), so the instant the
candle closes is ``close_time + 1``. All times are epoch milliseconds, UTC.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.market.timeframes import timeframe_ms

PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_COLUMNS = ("quote_volume", "trade_count", "taker_buy_base", "taker_buy_quote")

CANDLE_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("open_time", pa.int64(), nullable=False),
        pa.field("close_time", pa.int64(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64()),
        pa.field("trade_count", pa.int64()),
        pa.field("taker_buy_base", pa.float64()),
        pa.field("taker_buy_quote", pa.float64()),
    ]
)
CANDLE_COLUMNS: tuple[str, ...] = tuple(CANDLE_SCHEMA.names)


def empty_candles() -> pa.Table:
    return CANDLE_SCHEMA.empty_table()


def candles_from_arrays(
    exchange: str | np.ndarray,
    symbol: str | np.ndarray,
    timeframe: str,
    open_time: np.ndarray,
    ohlcv: Mapping[str, np.ndarray],
) -> pa.RecordBatch:
    """Build a schema-conformant batch; scalars for exchange/symbol are broadcast.

    ``ohlcv`` holds open/high/low/close/volume and any of the optional columns;
    optional columns that are absent become nulls, never invented values.
    """
    # Through the columnar builder; numpy columns become Arrow arrays here as given, so a
    # NaN in an optional column stays NaN (validation rejects it) rather than turning null.
    columns = {
        name: pa.array(
            np.asarray(values, dtype=np.float64) if name != "trade_count" else values,
            CANDLE_SCHEMA.field(name).type,
        )
        for name, values in ohlcv.items()
        if values is not None and name in CANDLE_SCHEMA.names
    }
    table = candles_from_columns(
        exchange=exchange if isinstance(exchange, str) else _string_column(exchange),
        symbol=symbol if isinstance(symbol, str) else _string_column(symbol),
        timeframe=timeframe,
        open_time=np.asarray(open_time, dtype=np.int64),
        columns=columns,
    )
    return pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in table.columns], schema=CANDLE_SCHEMA
    )


def candles_from_frame(
    frame: pd.DataFrame, *, exchange: str, symbol: str, timeframe: str
) -> pa.RecordBatch:
    """Convert a freqtrade-style frame (``date`` UTC open time, open..volume) to the schema."""
    if "date" in frame.columns:
        open_time = _to_epoch_ms(frame["date"])
    else:
        open_time = frame["open_time"].to_numpy(np.int64)
    ohlcv = {
        c: frame[c].to_numpy() for c in (*PRICE_COLUMNS, "volume", *OPTIONAL_COLUMNS) if c in frame
    }
    return candles_from_arrays(exchange, symbol, timeframe, open_time, ohlcv)


def _to_epoch_ms(dates: pd.Series) -> np.ndarray:
    if not isinstance(dates.dtype, pd.DatetimeTZDtype):
        raise ValueError("candle 'date' column must be timezone-aware UTC")
    return dates.dt.tz_convert("UTC").astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _string_column(values) -> pa.Array:
    if isinstance(values, pa.Array):  # already a column (e.g. cycled_strings)
        return values
    return pa.array(np.asarray(values, dtype=object), pa.string())


# --- Columnar builders (added for archives/resample): no Python lists, no per-row work. ---

_INT32_MAX = 2**31 - 1


def constant_strings(value: str, n: int) -> pa.StringArray:
    """``n`` copies of ``value`` as a string array, built from two buffers in one step.

    ``pa.array([value] * n)`` costs a Python list of ``n`` items; at a million candles
    that alone would eat most of the parse budget.
    """
    encoded = value.encode()
    if len(encoded) * n > _INT32_MAX:  # beyond 32-bit offsets: let Arrow chunk it
        return pa.repeat(value, n)
    return cycled_strings((value,), n)


def cycled_strings(values: tuple[str, ...], times: int) -> pa.StringArray:
    """``values`` one after another, ``times`` times over (``len(values) * times`` strings),
    from two buffers: e.g. the keys of ``times`` maps that all have the keys ``values``."""
    encoded = [v.encode() for v in values]
    pattern = b"".join(encoded)
    if len(pattern) * times > _INT32_MAX:
        raise ValueError(f"{times:,} copies of {values} exceed a string array's 2 GiB")
    starts = np.cumsum([0, *map(len, encoded)])
    offsets = np.arange(times, dtype=np.int64)[:, None] * len(pattern) + starts[None, :-1]
    offsets = np.append(offsets.reshape(-1), times * len(pattern)).astype(np.int32)
    return pa.StringArray.from_buffers(
        len(values) * times, pa.py_buffer(offsets), pa.py_buffer(pattern * times)
    )


def candles_from_columns(
    *,
    exchange: str | pa.Array,
    symbol: str | pa.Array,
    timeframe: str,
    open_time: pa.Array | np.ndarray,
    columns: Mapping[str, pa.Array | np.ndarray],
) -> pa.Table:
    """Build a ``CANDLE_SCHEMA`` table from Arrow or numpy columns, without Python lists.

    ``exchange``/``symbol`` are one string for every row or a string array per row.
    ``columns`` holds open/high/low/close/volume and any optional columns; absent optional
    columns become nulls. ``close_time`` is derived from ``open_time`` and the timeframe.
    """
    open_time = pa.array(open_time, pa.int64()) if isinstance(open_time, np.ndarray) else open_time
    open_time = open_time.cast(pa.int64())
    n = len(open_time)
    close_np = open_time.to_numpy(zero_copy_only=False) + (timeframe_ms(timeframe) - 1)
    arrays = {
        "exchange": constant_strings(exchange, n) if isinstance(exchange, str) else exchange,
        "symbol": constant_strings(symbol, n) if isinstance(symbol, str) else symbol,
        "timeframe": constant_strings(timeframe, n),
        "open_time": open_time,
        "close_time": pa.array(close_np, pa.int64()),
    }
    for name in CANDLE_COLUMNS[5:]:
        arrays[name] = _typed_column(columns.get(name), CANDLE_SCHEMA.field(name), n)
    return pa.Table.from_arrays([arrays[c] for c in CANDLE_COLUMNS], schema=CANDLE_SCHEMA)


def conform_candles(table: pa.Table) -> pa.Table:
    """Select, order and cast a table holding the schema's columns into ``CANDLE_SCHEMA``.

    Optional columns that are missing become nulls; a missing required column is a
    ValueError naming it. Extra columns are dropped.
    """
    missing = [f.name for f in CANDLE_SCHEMA if not f.nullable and f.name not in table.column_names]
    if missing:
        raise ValueError(f"candle table lacks required column(s) {missing}")
    arrays = [
        _typed_column(table.column(f.name) if f.name in table.column_names else None, f, len(table))
        for f in CANDLE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=CANDLE_SCHEMA)


def _typed_column(values, field: pa.Field, n: int) -> pa.Array | pa.ChunkedArray:
    if values is None:
        if not field.nullable:
            raise ValueError(f"candle column {field.name!r} is required")
        return pa.nulls(n, field.type)
    if isinstance(values, np.ndarray):
        # from_pandas: NaN in a float numpy column means "null" for optional columns.
        return pa.array(values, field.type, from_pandas=field.nullable)
    return values if values.type == field.type else values.cast(field.type)
