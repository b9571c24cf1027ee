"""Conversions of stored and fetched candle formats into ``CANDLE_SCHEMA``.

Pure converters take bytes, lists or Arrow tables and return a ``CANDLE_SCHEMA`` table:
- ccxt OHLCV lists (``candles_from_ccxt``), as ``fetch_ohlcv`` returns them;
- Binance public kline CSVs (``candles_from_binance_csv``), with or without a header line,
  with millisecond or microsecond times;
- freqtrade-style tables with a ``date`` column, or tables already in the schema
  (``candles_from_table``).
The readers at the bottom (``read_candles`` and friends) only open files and dispatch.

No converter validates prices: ``orchestrator.market.validate`` does that, so every bad
candle is quarantined and counted in one place.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from orchestrator.market.schema import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    candles_from_columns,
    conform_candles,
)
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.storage import locate

# --- ccxt -------------------------------------------------------------------------------

CCXT_FIELDS = ("open_time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class RejectedRow:
    """A ccxt row that cannot become a candle at all (no usable time, wrong shape)."""

    index: int
    row: object
    reason: str


@dataclass(frozen=True)
class CcxtConversion:
    candles: pa.Table
    rejected: tuple[RejectedRow, ...]


def candles_from_ccxt(
    rows: Sequence[Sequence[object]], *, exchange: str, symbol: str, timeframe: str
) -> CcxtConversion:
    """Convert ``[[ts_ms, o, h, l, c, v], ...]`` into candles; never raises on a bad row.

    Bad-row policy, two cases:
    - a price or volume that is None or not a number becomes NaN, and the row stays in
      ``candles``: validation rejects NaN, so it is quarantined and counted there;
    - a row that cannot be placed in time (not a list of 6, timestamp missing, not an
      integer number of ms, negative) is returned in ``rejected`` with the reason.
    Numeric strings (``"1.5"``) are accepted, since some exchanges send decimals as text.
    """
    matrix, shape_ok = _ccxt_matrix(rows)
    time_ok = _usable_times(matrix[:, 0])
    rejected = [
        RejectedRow(i, rows[i], _rejection_reason(shape_ok[i]))
        for i in np.flatnonzero(~(shape_ok & time_ok)).tolist()  # ints index a Sequence
    ]
    kept = matrix[shape_ok & time_ok]
    candles = candles_from_columns(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        open_time=kept[:, 0].astype(np.int64),
        columns={name: kept[:, k] for k, name in enumerate(CCXT_FIELDS) if k},
    )
    return CcxtConversion(candles, tuple(rejected))


def _ccxt_matrix(rows: Sequence[Sequence[object]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows as an (n, 6) float64 matrix, and which rows had the right shape."""
    width = len(CCXT_FIELDS)
    if len(rows) == 0:
        return np.empty((0, width)), np.ones(0, dtype=bool)
    try:  # fast path: a well-formed payload converts in one C call
        matrix = np.array(rows, dtype=np.float64)
        if matrix.ndim == 2 and matrix.shape[1] == width:
            return matrix, np.ones(len(matrix), dtype=bool)
    except (TypeError, ValueError):
        pass
    matrix = np.full((len(rows), width), np.nan)
    shape_ok = np.array([_is_row(row, width) for row in rows], dtype=bool)
    for i in np.flatnonzero(shape_ok).tolist():  # ints index a Sequence
        matrix[i] = [_to_float(value) for value in rows[i]]
    return matrix, shape_ok


def _is_row(row: object, width: int) -> bool:
    return isinstance(row, Sequence) and not isinstance(row, str | bytes) and len(row) == width


def _rejection_reason(shape_ok: bool) -> str:
    if not shape_ok:
        return f"expected a list of {len(CCXT_FIELDS)} values [ts_ms, o, h, l, c, v]"
    return "timestamp missing, negative or not a whole number of ms"


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


def _usable_times(times: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(times) & (times >= 0) & (np.floor(times) == times)


# --- Binance public kline archives -------------------------------------------------------

BINANCE_KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
_BINANCE_TO_SCHEMA = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "quote_volume": "quote_volume",
    "count": "trade_count",
    "taker_buy_volume": "taker_buy_base",
    "taker_buy_quote_volume": "taker_buy_quote",
}
# Epoch ms stay below 1e14 until the year 5138; epoch µs passed 1e14 in 1973. Binance spot
# archives switched to µs in 2025, so any value at or above this is read as µs.
MICROSECOND_THRESHOLD = 10**14


def candles_from_binance_csv(
    data: bytes, *, exchange: str, symbol: str, timeframe: str, source: str = "<bytes>"
) -> pa.Table:
    """Parse one Binance kline CSV (header line optional; ms or µs times) into candles.

    A malformed archive (non-numeric field, wrong column count) raises ValueError naming
    ``source``: archives are checksummed downloads, so damage is a data error to fix,
    not a stream event to quarantine.
    """
    if not data.strip():
        return CANDLE_SCHEMA.empty_table()
    try:
        raw = pa_csv.read_csv(pa.py_buffer(data), **_binance_csv_options(_has_header(data)))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{source}: not a Binance kline CSV ({exc})") from None
    return candles_from_columns(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        open_time=epoch_ms_from_ms_or_us(raw.column("open_time").to_numpy()),
        columns={ours: raw.column(theirs) for theirs, ours in _BINANCE_TO_SCHEMA.items()},
    )


def epoch_ms_from_ms_or_us(times: np.ndarray) -> np.ndarray:
    """Epoch milliseconds from values in ms or µs, decided per value (see the threshold)."""
    times = np.asarray(times, dtype=np.int64)
    return np.where(times >= MICROSECOND_THRESHOLD, times // 1000, times)


def _has_header(data: bytes) -> bool:
    first = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]  # a UTF-8 BOM would hide the first digit
    return not first.isdigit()


def _binance_csv_options(has_header: bool) -> dict:
    types = {name: pa.float64() for name in _BINANCE_TO_SCHEMA}
    types.update(open_time=pa.int64(), count=pa.int64())
    return {
        "read_options": pa_csv.ReadOptions(
            column_names=list(BINANCE_KLINE_COLUMNS), skip_rows=int(has_header)
        ),
        "convert_options": pa_csv.ConvertOptions(
            include_columns=["open_time", *_BINANCE_TO_SCHEMA], column_types=types
        ),
    }


# --- freqtrade-style tables --------------------------------------------------------------

_UNIT_TO_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}


def candles_from_table(table: pa.Table, *, exchange: str, symbol: str, timeframe: str) -> pa.Table:
    """Convert a stored candle table: already ``CANDLE_SCHEMA``, or freqtrade-style ``date``.

    A table that already has the schema's required columns is conformed as stored: its
    own exchange/symbol/timeframe columns win over the arguments (it may hold many symbols).
    """
    if {f.name for f in CANDLE_SCHEMA if not f.nullable} <= set(table.column_names):
        return conform_candles(table)
    if "date" in table.column_names:
        open_time = epoch_ms_from_timestamps(table.column("date"))
    elif "open_time" in table.column_names:
        open_time = epoch_ms_from_ms_or_us(table.column("open_time").to_numpy())
    else:
        raise ValueError("candle table needs a 'date' (timestamp, UTC) or 'open_time' column")
    present = [name for name in CANDLE_COLUMNS[5:] if name in table.column_names]
    columns = {name: table.column(name).combine_chunks() for name in present}
    return candles_from_columns(
        exchange=exchange, symbol=symbol, timeframe=timeframe, open_time=open_time, columns=columns
    )


def epoch_ms_from_timestamps(dates: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Epoch ms from a tz-aware Arrow timestamp column (floored to the millisecond)."""
    if not pa.types.is_timestamp(dates.type) or dates.type.tz is None:
        raise ValueError(
            f"candle 'date' column must be a timezone-aware timestamp, not {dates.type}"
        )
    multiply, divide = _UNIT_TO_MS[dates.type.unit]
    raw = dates.cast(pa.int64()).to_numpy()
    return raw * multiply // divide


# --- file names and readers (the only I/O in this module) -------------------------------

# Quote assets tried as suffixes of a concatenated Binance symbol ("LINKUSDT"), longest
# first so "FDUSD" wins over a shorter suffix. A symbol ending in none of them is an error
# rather than a guess; extend the list when a new quote asset is needed.
QUOTE_ASSETS = (
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI",
    "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "GBP", "JPY", "AUD",
)  # fmt: skip
_FILE_NAME = re.compile(r"^(?P<pair>[A-Za-z0-9_]+?)-(?P<timeframe>\d+[smhdwM])(?:-.*)?$")
_SUFFIXES = (".parquet", ".feather", ".arrow", ".ipc", ".zip", ".csv")


def split_quote(concatenated: str) -> tuple[str, str]:
    """``"LINKUSDT"`` -> ``("LINK", "USDT")`` by the longest known quote-asset suffix."""
    upper = concatenated.upper()
    for quote in sorted(QUOTE_ASSETS, key=len, reverse=True):
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    raise ValueError(f"cannot tell the quote asset of {concatenated!r}; known: {QUOTE_ASSETS}")


def infer_symbol_timeframe(path: str | Path) -> tuple[str, str]:
    """(ccxt symbol, timeframe) from a candle file name.

    ``BTC_USDT-1m.parquet`` -> ``("BTC/USDT", "1m")`` (freqtrade); ``BTC_USDT_USDT-1h-futures
    .feather`` -> ``("BTC/USDT:USDT", "1h")``; ``LINKUSDT-1m-2026-02.zip`` -> ``("LINK/USDT",
    "1m")`` (Binance archive; quote split by ``split_quote``).
    """
    name = Path(path).name
    stem = next((name[: -len(s)] for s in _SUFFIXES if name.lower().endswith(s)), name)
    match = _FILE_NAME.match(stem)
    if match is None:
        raise ValueError(f"cannot read symbol and timeframe from file name {name!r}")
    timeframe = match["timeframe"]
    timeframe_ms(timeframe)  # raises ValueError naming an unsupported timeframe
    return _symbol_from_pair(match["pair"]), timeframe


def _symbol_from_pair(pair: str) -> str:
    parts = pair.upper().split("_")
    if len(parts) == 1:
        return "/".join(split_quote(parts[0]))
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    raise ValueError(f"cannot read a symbol from {pair!r}")


def read_binance_zip(
    path: str | Path, *, exchange: str, symbol: str | None = None, timeframe: str | None = None
) -> pa.Table:
    """Read a Binance kline zip (one CSV inside); symbol/timeframe default to the file name."""
    symbol, timeframe = _names_or_inferred(path, symbol, timeframe)
    with zipfile.ZipFile(_opened(path)) as archive:
        members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
        if len(members) != 1:
            raise ValueError(f"{path}: expected exactly one CSV inside, found {members}")
        data = archive.read(members[0])
    return candles_from_binance_csv(
        data, exchange=exchange, symbol=symbol, timeframe=timeframe, source=str(path)
    )


def read_candles(
    path: str | Path, exchange: str, symbol: str | None = None, timeframe: str | None = None
) -> pa.Table:
    """Read any supported candle file into ``CANDLE_SCHEMA``, dispatching on its suffix.

    ``.zip``/``.csv``: Binance kline archive; ``.parquet``; ``.feather``/``.arrow``/``.ipc``.
    ``symbol`` and ``timeframe`` default to what the file name says. ``path`` may be an
    object-store URI (``s3://bucket/candles/BTC_USDT-1m.parquet``): read whole, then parsed.
    """
    suffix = Path(str(path)).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported candle file type {suffix!r}; expected {_SUFFIXES}")
    if suffix == ".zip":
        return read_binance_zip(path, exchange=exchange, symbol=symbol, timeframe=timeframe)
    symbol, timeframe = _names_or_inferred(path, symbol, timeframe)
    if suffix == ".csv":
        return candles_from_binance_csv(
            _read_bytes(path),
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            source=str(path),
        )
    table = _read_arrow_file(path, suffix)
    return candles_from_table(table, exchange=exchange, symbol=symbol, timeframe=timeframe)


def _read_bytes(path: str | Path) -> bytes:
    return locate(str(path)).read_bytes() if "://" in str(path) else Path(path).read_bytes()


def _opened(path: str | Path) -> Path | io.BytesIO:
    """A local path as it is; a URI's content in memory (a file object)."""
    return io.BytesIO(_read_bytes(path)) if "://" in str(path) else Path(path)


def _read_arrow_file(path: str | Path, suffix: str) -> pa.Table:
    opened = _opened(path)
    source = pa.BufferReader(opened.getvalue()) if isinstance(opened, io.BytesIO) else opened
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(source)
    import pyarrow.feather as feather  # .feather, .arrow, .ipc

    return feather.read_table(source)


def _names_or_inferred(
    path: str | Path, symbol: str | None, timeframe: str | None
) -> tuple[str, str]:
    if symbol is not None and timeframe is not None:
        return symbol, timeframe
    inferred_symbol, inferred_timeframe = infer_symbol_timeframe(path)
    return symbol or inferred_symbol, timeframe or inferred_timeframe


def path_safe_symbol(symbol: str) -> str:
    """A unified symbol as a file or folder name: ``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``."""
    return symbol.replace("/", "_").replace(":", "_")
