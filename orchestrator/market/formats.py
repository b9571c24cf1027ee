"""Candle messages as other systems write them, decoded into ``CANDLE_SCHEMA`` (pure).

Three JSON formats, told apart per message when ``format="auto"``:

- ``tickcast``: one object per candle with the ``CANDLE_SCHEMA`` names (``symbol`` in ccxt's
  unified form, ``open_time`` in epoch ms; ``close_time`` and ``timeframe`` may be left
  out: then the candle is a 1m candle closing one period after it opened; the optional
  columns may be left out or null).
- ``binance``: Binance's kline stream event (``{"e": "kline", "s": "BTCUSDT", "k": {...}}``,
  also inside a combined stream's ``{"stream": ..., "data": ...}``); prices are strings,
  ``k.x`` says whether the candle is closed; ``BTCUSDT`` becomes ``BTC/USDT``.
- ``cryptofeed``: cryptofeed's candle as its Kafka backend writes it (``start``/``stop`` in
  epoch seconds, ``interval``, ``closed``, numbers as numbers or strings); ``BTC-USDT``
  becomes ``BTC/USDT`` and ``BTC-USDT-PERP`` ``BTC/USDT:USDT``.

Candles that are not closed yet are skipped and counted (the closed one follows). A message
that is not a JSON object is rejected as ``undecodable``; one that is but matches no format
or lacks a field as ``bad_message``; either keeps its raw text (the first ``RAW_CHARS``
characters) and where it came from. Every candle is labelled with the caller's exchange.
What the candle says is checked afterwards, like any source's (``validate_candles``).
``encode_candles`` writes candles in any of the three (tests, benchmarks, ``tickcast
kafka-produce``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from orchestrator.market.archives import split_quote
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import TIMEFRAME_MS
from orchestrator.market.validate import Reason, Rejects

FORMATS = ("auto", "tickcast", "binance", "cryptofeed")
UNDECODABLE, BAD_MESSAGE = Reason.UNDECODABLE.value, Reason.BAD_MESSAGE.value
RAW_CHARS = 500
REJECT_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("open_time", pa.int64()),
        ("origin", pa.string()),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)
# timeframe, open_time, close_time, open, high, low, close, volume, quote_volume,
# trade_count, taker_buy_base, taker_buy_quote: everything but exchange and symbol.
_Row = tuple[str, int, int, float, float, float, float, float, Any, Any, Any, Any]


class Decoded(NamedTuple):
    candles: pa.Table  # CANDLE_SCHEMA, in message order
    rejects: Rejects
    not_closed: int  # candles skipped because they were still open


def decode_candles(
    values: Sequence[bytes | None],
    exchange: str,
    format: str = "auto",
    origins: Sequence[str] | None = None,
) -> Decoded:
    """Decode message values (``origins``: where each came from, e.g. ``topic/2@1234``)."""
    if format not in FORMATS:
        raise ValueError(f"unknown candle format {format!r}; expected one of {FORMATS}")
    symbols: list[str] = []
    rows: list[_Row] = []
    bad: list[tuple[str, str, str, bytes | None]] = []  # reason, error, origin, raw
    not_closed = 0
    for i, value in enumerate(values):
        try:
            message = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError as exc:
            bad.append((UNDECODABLE, str(exc), _origin(origins, i), value))
            continue
        if not isinstance(message, dict):
            bad.append((UNDECODABLE, "not a JSON object", _origin(origins, i), value))
            continue
        try:
            decoded = _decode(message, format)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            bad.append((BAD_MESSAGE, error, _origin(origins, i), value))
            continue
        if decoded is None:
            not_closed += 1
            continue
        symbols.append(decoded[0])
        rows.append(decoded[1])
    return Decoded(_candles(exchange, symbols, rows), _rejects(exchange, bad), not_closed)


def _decode(message: dict, format: str) -> tuple[str, _Row] | None:
    kind = format if format != "auto" else _kind(message)
    if kind == "binance":
        return _binance(message.get("data", message))
    if kind == "cryptofeed":
        return _cryptofeed(message)
    if kind == "tickcast":
        return _tickcast(message)
    raise ValueError("matches no known candle format (tickcast, binance, cryptofeed)")


def _kind(message: dict) -> str | None:
    inner = message.get("data", message)
    if isinstance(inner, dict) and inner.get("e") == "kline":
        return "binance"
    if "start" in message and "interval" in message:
        return "cryptofeed"
    if "open_time" in message:
        return "tickcast"
    return None


def _tickcast(m: dict) -> tuple[str, _Row]:
    timeframe = m.get("timeframe") or "1m"
    open_time = _int(m["open_time"])
    close_time = m.get("close_time")
    close_time = open_time + _period(timeframe) - 1 if close_time is None else _int(close_time)
    row = (
        timeframe,
        open_time,
        close_time,
        float(m["open"]),
        float(m["high"]),
        float(m["low"]),
        float(m["close"]),
        float(m["volume"]),
        _float_or_none(m.get("quote_volume")),
        _int_or_none(m.get("trade_count")),
        _float_or_none(m.get("taker_buy_base")),
        _float_or_none(m.get("taker_buy_quote")),
    )
    return _symbol(m["symbol"]), row


def _binance(event: dict) -> tuple[str, _Row] | None:
    if event.get("e") != "kline":
        raise ValueError(f"a Binance event of type {event.get('e')!r}, not kline")
    k = event["k"]
    if not k["x"]:
        return None
    row = (
        str(k["i"]),
        _int(k["t"]),
        _int(k["T"]),
        float(k["o"]),
        float(k["h"]),
        float(k["l"]),
        float(k["c"]),
        float(k["v"]),
        _float_or_none(k.get("q")),
        _int_or_none(k.get("n")),
        _float_or_none(k.get("V")),
        _float_or_none(k.get("Q")),
    )
    base, quote = split_quote(str(k["s"]))
    return f"{base}/{quote}", row


def _cryptofeed(m: dict) -> tuple[str, _Row] | None:
    if not m.get("closed", True):
        return None
    timeframe = str(m["interval"])
    open_time = round(float(m["start"]) * 1000)
    row = (
        timeframe,
        open_time,
        open_time + _period(timeframe) - 1,  # exchanges disagree on stop: x.999 or x+60
        float(m["open"]),
        float(m["high"]),
        float(m["low"]),
        float(m["close"]),
        float(m["volume"]),
        None,
        _int_or_none(m.get("trades")),
        None,
        None,
    )
    return _cryptofeed_symbol(str(m["symbol"])), row


def _cryptofeed_symbol(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTC/USDT``; ``BTC-USDT-PERP`` -> ``BTC/USDT:USDT`` (cryptofeed's
    normalised names); anything else is kept as it is."""
    parts = symbol.split("-")
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 3 and parts[2] == "PERP":
        return f"{parts[0]}/{parts[1]}:{parts[1]}"
    return symbol


def _symbol(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"symbol must be a non-empty string, got {value!r}")
    return value


def _period(timeframe: str) -> int:
    # An unknown timeframe still decodes (validation rejects it as wrong_timeframe).
    return TIMEFRAME_MS.get(timeframe, 0)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else _int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _origin(origins: Sequence[str] | None, i: int) -> str:
    return "" if origins is None else origins[i]


def _candles(exchange: str, symbols: list[str], rows: list[_Row]) -> pa.Table:
    if not rows:
        return CANDLE_SCHEMA.empty_table()
    columns = list(zip(*rows, strict=True))
    n = len(rows)
    arrays = [pa.array(np.full(n, exchange, dtype=object), pa.string()), pa.array(symbols)]
    for field, values in zip(list(CANDLE_SCHEMA)[2:], columns, strict=True):
        arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=CANDLE_SCHEMA)


def _rejects(exchange: str, bad: list[tuple[str, str, str, bytes | None]]) -> Rejects:
    if not bad:
        return Rejects.none()
    raw = [None if v is None else v[:RAW_CHARS].decode("utf-8", "replace") for *_, v in bad]
    table = pa.table(
        {
            "exchange": [exchange] * len(bad),
            "symbol": [None] * len(bad),
            "open_time": [None] * len(bad),
            "origin": [origin for _, _, origin, _ in bad],
            "error": [error for _, error, _, _ in bad],
            "raw": raw,
        },
        schema=REJECT_SCHEMA,
    )
    return Rejects(table, np.array([reason for reason, *_ in bad], dtype=object))


def encode_candles(candles: pa.Table, format: str = "tickcast") -> list[bytes]:
    """``CANDLE_SCHEMA`` rows as closed-candle messages of ``format`` (what a producer of
    that format would write; ``decode_candles`` reads them back)."""
    encoders = {
        "tickcast": _tickcast_message,
        "binance": _binance_message,
        "cryptofeed": _cryptofeed_message,
    }
    if format not in encoders:
        raise ValueError(f"cannot write candle format {format!r}; expected one of {list(encoders)}")
    return [encoders[format](row) for row in candles.to_pylist()]


def _tickcast_message(row: dict) -> bytes:
    return orjson.dumps({k: v for k, v in row.items() if v is not None})


def _binance_message(row: dict) -> bytes:
    pair = row["symbol"].split(":")[0].replace("/", "")
    k = {
        "t": row["open_time"],
        "T": row["close_time"],
        "s": pair,
        "i": row["timeframe"],
        "o": repr(row["open"]),
        "c": repr(row["close"]),
        "h": repr(row["high"]),
        "l": repr(row["low"]),
        "v": repr(row["volume"]),
        "n": row["trade_count"] or 0,
        "x": True,
        "q": repr(row["quote_volume"] or 0.0),
        "V": repr(row["taker_buy_base"] or 0.0),
        "Q": repr(row["taker_buy_quote"] or 0.0),
    }
    return orjson.dumps({"e": "kline", "E": row["close_time"] + 1, "s": pair, "k": k})


def _cryptofeed_message(row: dict) -> bytes:
    base, _, rest = row["symbol"].partition("/")
    quote, _, settle = rest.partition(":")
    symbol = f"{base}-{quote}-PERP" if settle else f"{base}-{quote}"
    return orjson.dumps(
        {
            "exchange": "BINANCE",
            "symbol": symbol,
            "start": row["open_time"] / 1000,
            "stop": (row["close_time"] + 1) / 1000 - 0.001,
            "interval": row["timeframe"],
            "trades": row["trade_count"],
            "open": row["open"],
            "close": row["close"],
            "high": row["high"],
            "low": row["low"],
            "volume": row["volume"],
            "closed": True,
            "timestamp": (row["close_time"] + 1) / 1000,
            "receipt_timestamp": (row["close_time"] + 1) / 1000,
        }
    )
