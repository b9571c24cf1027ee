"""Candle messages in the three formats tickcast reads from Kafka: real Binance candles
written by ``encode_candles`` and read back by ``decode_candles``; bad messages rejected
with their reason and raw text."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from orchestrator.market.archives import read_candles
from orchestrator.market.formats import RAW_CHARS, decode_candles, encode_candles
from orchestrator.market.validate import REASONS, validate_candles

ALL = ("open_time", "close_time", "open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trade_count", "taker_buy_base", "taker_buy_quote")


@pytest.fixture(scope="module")
def futures(shared_data) -> pa.Table:
    """Real USD-M candles with every optional column (trade counts, taker volumes)."""
    path = shared_data / "binance-usdm-1m" / "LINKUSDT-1m-2026-02.zip"
    return read_candles(path, "binance", "LINK/USDT:USDT", "1m").slice(0, 500)


@pytest.mark.parametrize(
    ("format", "columns", "symbol"),
    [
        ("tickcast", ALL + OPTIONAL, "LINK/USDT:USDT"),
        ("binance", ALL + OPTIONAL, "LINK/USDT"),  # a kline names the pair, not the market
        ("cryptofeed", (*ALL, "trade_count"), "LINK/USDT:USDT"),  # no quote or taker volume
    ],
)
def test_each_format_round_trips_real_candles(futures, format, columns, symbol):
    for declared in (format, "auto"):
        decoded = decode_candles(encode_candles(futures, format), "binance", declared)
        assert len(decoded.rejects) == 0 and decoded.not_closed == 0
        for name in columns:
            assert decoded.candles.column(name).equals(futures.column(name)), name
        assert set(decoded.candles.column("symbol").to_pylist()) == {symbol}
        assert validate_candles(decoded.candles).rejects.rows.num_rows == 0


def test_open_candles_are_skipped_and_counted():
    kline = {"t": 0, "T": 59_999, "s": "BTCUSDT", "i": "1m", "o": "1", "c": "1", "h": "1"}
    kline.update(l="1", v="1", x=False)
    combined = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT", "k": kline}}
    feed = {"symbol": "BTC-USDT", "start": 0, "stop": 60, "interval": "1m", "closed": False}
    decoded = decode_candles([orjson.dumps(combined), orjson.dumps(feed)], "binance")
    assert decoded.candles.num_rows == 0 and decoded.not_closed == 2


def test_bad_messages_are_rejected_with_reason_origin_and_raw_text():
    long_garbage = b"\xff" * (RAW_CHARS * 3)
    values = [
        long_garbage,
        b"[1, 2]",
        None,  # a tombstone
        b'{"kind": "trade"}',
        b'{"e": "24hrTicker", "s": "BTCUSDT"}',
        b'{"symbol": "BTC/USDT", "open_time": "soon", "open": 1}',
        b'{"symbol": "", "open_time": 0, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}',
    ]
    origins = [f"candles/0@{i}" for i in range(len(values))]
    decoded = decode_candles(values, "binance", origins=origins)
    assert decoded.candles.num_rows == 0
    assert decoded.rejects.counts() == {"undecodable": 3, "bad_message": 4}
    records = decoded.rejects.records()
    assert [r.payload["origin"] for r in records] == origins
    assert len(records[0].payload["raw"]) <= RAW_CHARS  # a huge message is not kept whole
    assert "no known candle format" in records[3].payload["error"]
    assert {"undecodable", "bad_message"} <= set(REASONS)


def test_a_declared_format_reads_only_that_format(futures):
    binance = encode_candles(futures.slice(0, 3), "binance")
    decoded = decode_candles(binance, "binance", "cryptofeed")
    assert decoded.rejects.counts() == {"bad_message": 3}
    with pytest.raises(ValueError, match="unknown candle format"):
        decode_candles(binance, "binance", "protobuf")


def test_candle_values_are_left_to_validation():
    """A decodable candle with a bad value is a candle: validation rejects it by its reason."""
    row = {"symbol": "BTC/USDT", "open_time": 60_000, "open": 1.0, "high": 0.5, "low": 1.0}
    row.update(close=1.0, volume=1.0)
    decoded = decode_candles([orjson.dumps(row)], "binance", "tickcast")
    assert decoded.candles.num_rows == 1
    assert validate_candles(decoded.candles).rejects.counts() == {"high_below_low": 1}
