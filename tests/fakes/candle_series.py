"""A deterministic 1m candle series the fake exchanges serve and the tests expect.

Prices are decimal strings exactly as Binance sends them, so a test can compute the
expected floats with ``float(text)`` independently of the code under test.
"""

from __future__ import annotations

import zlib

MINUTE_MS = 60_000


def market_id(symbol: str) -> str:
    """Binance's id for a unified spot symbol: ``BTC/USDT`` -> ``BTCUSDT``."""
    return symbol.replace("/", "")


def _fmt(value: float) -> str:
    return f"{value:.8f}"


def kline_fields(symbol: str, open_time: int) -> tuple[str, str, str, str, str]:
    """Final (closed) open, high, low, close, volume of ``symbol`` at ``open_time``."""
    base = 100 + zlib.crc32(symbol.encode()) % 500
    minute = open_time // MINUTE_MS
    open_ = base + (minute * 37 % 200) / 100
    close = base + ((minute + 1) * 37 % 200) / 100
    high = max(open_, close) + 0.5
    low = min(open_, close) - 0.5
    volume = 1 + (minute * 13 % 50) + 0.25
    return _fmt(open_), _fmt(high), _fmt(low), _fmt(close), _fmt(volume)


def provisional_fields(symbol: str, open_time: int, now_ms: int) -> tuple[str, ...]:
    """The still-open candle: final prices, volume so far (a revision the gate replaces)."""
    open_, high, low, close, volume = kline_fields(symbol, open_time)
    elapsed = max(0, min(MINUTE_MS, now_ms - open_time))
    return open_, high, low, close, _fmt(float(volume) * elapsed / MINUTE_MS)


def is_closed(open_time: int, now_ms: int) -> bool:
    return open_time + MINUTE_MS <= now_ms


def kline_row(symbol: str, open_time: int, now_ms: int) -> list:
    """One row of Binance's ``/api/v3/klines`` answer (12 fields)."""
    if is_closed(open_time, now_ms):
        fields = kline_fields(symbol, open_time)
    else:
        fields = provisional_fields(symbol, open_time, now_ms)
    open_, high, low, close, volume = fields
    quote = _fmt(float(volume) * float(close))
    return [
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        open_time + MINUTE_MS - 1,
        quote,
        42,
        _fmt(float(volume) / 2),
        _fmt(float(quote) / 2),
        "0",
    ]


def expected_ohlcv(symbol: str, open_time: int) -> tuple[float, float, float, float, float]:
    """What a correct source must report for a closed candle."""
    return tuple(float(v) for v in kline_fields(symbol, open_time))  # type: ignore[return-value]


def kline_event(symbol: str, open_time: int, now_ms: int) -> dict:
    """One message of Binance's ``<symbol>@kline_1m`` websocket stream."""
    row = kline_row(symbol, open_time, now_ms)
    sym = market_id(symbol)
    kline = {
        "t": open_time,
        "T": open_time + MINUTE_MS - 1,
        "s": sym,
        "i": "1m",
        "f": 1,
        "L": 42,
        "o": row[1],
        "c": row[4],
        "h": row[2],
        "l": row[3],
        "v": row[5],
        "n": 42,
        "x": is_closed(open_time, now_ms),
        "q": row[7],
        "V": row[9],
        "Q": row[10],
        "B": "0",
    }
    return {"e": "kline", "E": now_ms, "s": sym, "k": kline}
