"""Conversions into CANDLE_SCHEMA: ccxt lists, Binance kline archives, stored tables."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from orchestrator.market.archives import (
    BINANCE_KLINE_COLUMNS,
    candles_from_binance_csv,
    candles_from_ccxt,
    candles_from_table,
    infer_symbol_timeframe,
    read_binance_zip,
    read_candles,
    split_quote,
)
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS

T0 = 1_769_904_000_000  # 2026-02-01 00:00 UTC
KLINES = [  # open_time, o, h, l, c, v, close_time, quote_v, count, taker_b, taker_q, ignore
    [T0, "9.982", "9.990", "9.974", "9.987", "24464.35", T0 + 59_999, "244198.04745", 782,
     "9388.60", "93722.16297", 0],
    [T0 + MINUTE_MS, "9.986", "9.986", "9.972", "9.976", "11394.34", T0 + 119_999,
     "113691.69260", 541, "6072.95", "60592.76611", 0],
]  # fmt: skip


def kline_csv(rows=KLINES, *, header: bool = True, time_scale: int = 1) -> bytes:
    lines = [",".join(BINANCE_KLINE_COLUMNS)] if header else []
    for row in rows:
        scaled = [row[0] * time_scale, *row[1:6], row[6] * time_scale, *row[7:]]
        lines.append(",".join(str(v) for v in scaled))
    return ("\n".join(lines) + "\n").encode()


def convert(data: bytes) -> pa.Table:
    return candles_from_binance_csv(
        data, exchange="binanceusdm", symbol="LINK/USDT", timeframe="1m"
    )


# --- ccxt -----------------------------------------------------------------------------------


def ccxt(rows):
    return candles_from_ccxt(rows, exchange="binance", symbol="BTC/USDT", timeframe="1m")


def test_ccxt_rows_convert_exactly():
    rows = [[T0, 1.5, 2.0, 1.0, 1.75, 10.0], [T0 + MINUTE_MS, 1.75, 1.8, 1.7, 1.8, 0.0]]
    result = ccxt(rows)
    assert result.rejected == ()
    assert result.candles.schema.equals(CANDLE_SCHEMA)
    got = result.candles.to_pylist()
    for row, candle in zip(rows, got, strict=True):
        assert [candle[k] for k in ("open_time", "open", "high", "low", "close", "volume")] == row
        assert candle["close_time"] == row[0] + MINUTE_MS - 1
        assert (candle["exchange"], candle["symbol"], candle["timeframe"]) == (
            "binance",
            "BTC/USDT",
            "1m",
        )
        assert candle["trade_count"] is None and candle["quote_volume"] is None


def test_ccxt_numeric_strings_are_accepted():
    result = ccxt([[str(T0), "1.5", "2", "1", "1.75", "10"]])
    assert result.rejected == ()
    assert result.candles.to_pylist()[0]["high"] == 2.0


def test_ccxt_bad_values_become_nan_and_validation_quarantines_them():
    from orchestrator.market.validate import validate_candles

    rows = [
        [T0, 1.0, 2.0, 0.5, 1.5, 3.0],
        [T0 + MINUTE_MS, None, 2.0, 0.5, 1.5, 3.0],
        [T0 + 2 * MINUTE_MS, 1.0, "n/a", 0.5, 1.5, {"bad": 1}],
    ]
    result = ccxt(rows)
    assert result.rejected == ()
    assert result.candles.num_rows == 3
    assert np.isnan(result.candles["open"].to_numpy()[1])
    assert np.isnan(result.candles["high"].to_numpy()[2])
    valid, rejects = validate_candles(result.candles)
    assert valid["open_time"].to_pylist() == [T0]
    assert len(rejects) == 2


def test_ccxt_rows_without_a_usable_time_or_shape_are_returned_separately():
    rows = [
        [T0, 1.0, 2.0, 0.5, 1.5, 3.0],
        [None, 1.0, 2.0, 0.5, 1.5, 3.0],
        [T0 + 0.5, 1.0, 2.0, 0.5, 1.5, 3.0],
        [-MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 3.0],
        [T0, 1.0],
        "garbage",
        None,
        [T0 + MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 3.0, "extra"],
        [T0 + 2 * MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 3.0],
    ]
    result = ccxt(rows)
    assert result.candles["open_time"].to_pylist() == [T0, T0 + 2 * MINUTE_MS]
    assert [r.index for r in result.rejected] == [1, 2, 3, 4, 5, 6, 7]
    assert all(r.row is rows[r.index] for r in result.rejected)
    assert "timestamp" in result.rejected[0].reason and "list of 6" in result.rejected[3].reason


def test_ccxt_empty_payload():
    result = ccxt([])
    assert result.candles.num_rows == 0 and result.rejected == ()
    assert result.candles.schema.equals(CANDLE_SCHEMA)


# --- Binance CSV ------------------------------------------------------------------------------


def test_binance_csv_maps_every_column():
    table = convert(kline_csv())
    assert table.schema.equals(CANDLE_SCHEMA)
    first = table.to_pylist()[0]
    raw = KLINES[0]
    assert first["open_time"] == raw[0] and first["close_time"] == raw[6]
    assert [first[k] for k in ("open", "high", "low", "close", "volume")] == [
        float(v) for v in raw[1:6]
    ]
    assert first["quote_volume"] == float(raw[7]) and first["trade_count"] == raw[8]
    assert first["taker_buy_base"] == float(raw[9]) and first["taker_buy_quote"] == float(raw[10])
    assert (first["exchange"], first["symbol"], first["timeframe"]) == (
        "binanceusdm",
        "LINK/USDT",
        "1m",
    )


@pytest.mark.parametrize(
    "data",
    [
        kline_csv(header=False),
        kline_csv(time_scale=1000),
        kline_csv(header=False, time_scale=1000),
        b"\xef\xbb\xbf" + kline_csv(),
        kline_csv().replace(b"\n", b"\r\n"),
    ],
    ids=["no-header", "microseconds", "no-header-microseconds", "bom", "crlf"],
)
def test_binance_csv_variants_parse_the_same(data):
    assert convert(data).equals(convert(kline_csv()))


def test_binance_csv_damage_raises_naming_the_source():
    damaged = kline_csv().replace(b"9.990", b"nine")
    with pytest.raises(ValueError, match="damaged.zip"):
        candles_from_binance_csv(
            damaged, exchange="b", symbol="A/B", timeframe="1m", source="damaged.zip"
        )


def test_binance_csv_empty():
    assert convert(b"").num_rows == 0
    assert convert(kline_csv(rows=[])).num_rows == 0


def test_binance_zip_names_symbol_and_timeframe(tmp_path):
    path = tmp_path / "LINKUSDT-1m-2026-02.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("LINKUSDT-1m-2026-02.csv", kline_csv(header=False))
    table = read_candles(path, "binanceusdm")
    assert table.equals(convert(kline_csv()))
    assert read_binance_zip(path, exchange="x", symbol="L/U")["symbol"][0].as_py() == "L/U"


def test_plain_csv_file_reads_like_the_zip(tmp_path):
    path = tmp_path / "LINKUSDT-1m-2026-02.csv"
    path.write_bytes(kline_csv(time_scale=1000))
    assert read_candles(path, "binanceusdm").equals(convert(kline_csv()))


def test_zip_with_other_than_one_csv_is_an_error(tmp_path):
    path = tmp_path / "LINKUSDT-1m-2026-02.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", kline_csv())
        archive.writestr("b.csv", kline_csv())
    with pytest.raises(ValueError, match="exactly one CSV"):
        read_candles(path, "binanceusdm")


@pytest.mark.realdata
def test_real_usdm_archives_convert_with_right_rows_and_times(shared_data):
    paths = sorted((shared_data / "binance-usdm-1m").glob("*.zip"))
    assert len(paths) == 6
    start = int(dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp() * 1000)
    end = int(dt.datetime(2026, 2, 28, 23, 59, tzinfo=dt.UTC).timestamp() * 1000)
    for path in paths:
        table = read_candles(path, "binanceusdm")
        times = table["open_time"].to_numpy()
        assert table.num_rows == 40_320
        assert (times[0], times[-1]) == (start, end)
        assert np.all(np.diff(times) == MINUTE_MS)
        assert table["symbol"][0].as_py() == path.name.split("USDT")[0] + "/USDT"
        assert table["trade_count"].null_count == 0
        _assert_matches_pandas_reading(path, table)


def _assert_matches_pandas_reading(path, table: pa.Table) -> None:
    with zipfile.ZipFile(path) as archive:
        frame = pd.read_csv(io.BytesIO(archive.read(archive.namelist()[0])))
    np.testing.assert_array_equal(table["close_time"].to_numpy(), frame["close_time"].to_numpy())
    for ours, theirs in [
        ("open", "open"),
        ("low", "low"),
        ("volume", "volume"),
        ("trade_count", "count"),
        ("taker_buy_quote", "taker_buy_quote_volume"),
    ]:
        np.testing.assert_array_equal(table[ours].to_numpy(), frame[theirs].to_numpy(), ours)


# --- stored tables ------------------------------------------------------------------------


def freqtrade_frame(unit: str = "ms") -> pd.DataFrame:
    dates = pd.date_range("2026-01-01", periods=3, freq="1min", tz="UTC").astype(
        f"datetime64[{unit}, UTC]"
    )
    values = np.array([1.0, 2.0, 3.0])
    return pd.DataFrame(
        {
            "date": dates,
            "open": values,
            "high": values + 1,
            "low": values - 0.5,
            "close": values,
            "volume": values * 10,
        }
    )


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_freqtrade_feather_converts_any_time_unit(tmp_path, unit):
    path = tmp_path / "BTC_USDT-1m.feather"
    feather.write_feather(freqtrade_frame(unit), path)
    table = read_candles(path, "binance")
    start = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert table["open_time"].to_pylist() == [start, start + MINUTE_MS, start + 2 * MINUTE_MS]
    assert table["symbol"].unique().to_pylist() == ["BTC/USDT"]
    assert table["high"].to_pylist() == [2.0, 3.0, 4.0]
    assert table["quote_volume"].null_count == 3


def test_naive_dates_are_refused():
    frame = freqtrade_frame()
    frame["date"] = frame["date"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="timezone-aware"):
        candles_from_table(pa.Table.from_pandas(frame), exchange="b", symbol="A/B", timeframe="1m")


def test_schema_parquet_round_trips_and_keeps_its_own_symbols(tmp_path):
    a = read_candles_from_frame(tmp_path, "A_USDT-1m.feather")
    b = a.set_column(1, CANDLE_SCHEMA.field("symbol"), pa.array(["B/USDT"] * a.num_rows))
    both = pa.concat_tables([a, b])
    pq.write_table(both, tmp_path / "mixed_USDT-1m.parquet")
    assert read_candles(tmp_path / "mixed_USDT-1m.parquet", "ignored").equals(both)


def read_candles_from_frame(tmp_path, name: str) -> pa.Table:
    feather.write_feather(freqtrade_frame(), tmp_path / name)
    return read_candles(tmp_path / name, "binance")


@pytest.mark.realdata
def test_real_freqtrade_parquet_converts(shared_data):
    path = shared_data / "binance-spot-1m" / "ETH_USDT-1m.parquet"
    table = read_candles(path, "binance")
    frame = pd.read_parquet(path)
    assert table.num_rows == len(frame) == 43_199
    expected_ms = (frame["date"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    np.testing.assert_array_equal(table["open_time"].to_numpy(), expected_ms.to_numpy())
    np.testing.assert_array_equal(table["close"].to_numpy(), frame["close"].to_numpy())
    assert table["symbol"][0].as_py() == "ETH/USDT"


def test_unsupported_file_type(tmp_path):
    with pytest.raises(ValueError, match="unsupported"):
        read_candles(tmp_path / "BTC_USDT-1m.json", "binance")


# --- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BTC_USDT-1m.parquet", ("BTC/USDT", "1m")),
        ("1000SATS_USDT-1h.parquet", ("1000SATS/USDT", "1h")),
        ("BTC_USDT_USDT-1h-futures.feather", ("BTC/USDT:USDT", "1h")),
        ("LINKUSDT-1m-2026-02.zip", ("LINK/USDT", "1m")),
        ("FDUSDUSDT-5m-2025-01-01.zip", ("FDUSD/USDT", "5m")),
        ("ETHBTC-1d-2024-01.zip", ("ETH/BTC", "1d")),
        ("BTCFDUSD-4h-2025-03.csv", ("BTC/FDUSD", "4h")),
    ],
)
def test_infers_symbol_and_timeframe_from_file_names(name, expected):
    assert infer_symbol_timeframe(f"/some/dir/{name}") == expected


@pytest.mark.parametrize(
    "name", ["BTC_USDT-7m.parquet", "XYZABC-1m-2026-02.zip", "noformat.parquet"]
)
def test_unreadable_file_names_raise(name):
    with pytest.raises(ValueError):
        infer_symbol_timeframe(name)


def test_split_quote_prefers_the_longest_known_suffix():
    assert split_quote("usdcusdt") == ("USDC", "USDT")
    with pytest.raises(ValueError, match="quote asset"):
        split_quote("USDT")
