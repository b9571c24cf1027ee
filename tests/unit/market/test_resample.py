"""Batch resampling: exchange ground truth, a pandas oracle, hand-made edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.market.archives import read_candles
from orchestrator.market.resample import SUMMED_COLUMNS, resample
from orchestrator.market.schema import CANDLE_SCHEMA, candles_from_columns
from orchestrator.market.timeframes import MINUTE_MS, TIMEFRAMES, timeframe_ms

DAY_MS = 1440 * MINUTE_MS
START_MS = 1_767_225_600_000 + 137 * MINUTE_MS  # 2026-01-01 02:17 UTC: mid-bucket for 5m+
SORT_KEYS = [("exchange", "ascending"), ("symbol", "ascending"), ("open_time", "ascending")]


# --- helpers shared with test_aggregate ---------------------------------------------------


def random_candles(
    rng: np.random.Generator,
    n_symbols: int,
    n_minutes: int,
    *,
    start_ms: int = START_MS,
    missing_fraction: float = 0.002,
    with_optional: bool = True,
) -> pa.Table:
    """Random-walk 1m candles with randomly missing minutes, sorted by symbol then time."""
    tables = []
    for s in range(n_symbols):
        keep = rng.random(n_minutes) >= missing_fraction
        times = start_ms + np.flatnonzero(keep) * MINUTE_MS
        tables.append(_random_symbol(rng, f"S{s}/USDT", times, with_optional))
    return pa.concat_tables(tables)


def _random_symbol(rng, symbol: str, times: np.ndarray, with_optional: bool) -> pa.Table:
    n = len(times)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.exponential(5e-4, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(5e-4, n))
    columns = {"open": open_, "high": high, "low": low, "close": close}
    columns["volume"] = rng.exponential(10.0, n)
    if with_optional:
        columns["quote_volume"] = columns["volume"] * close
        columns["trade_count"] = rng.integers(0, 500, n)
        columns["taker_buy_base"] = columns["volume"] * rng.random(n)
        columns["taker_buy_quote"] = columns["taker_buy_base"] * close
    return candles_from_columns(
        exchange="testex", symbol=symbol, timeframe="1m", open_time=times, columns=columns
    )


def assert_same_candles(actual: pa.Table, expected: pa.Table, *, rtol: float = 1e-12) -> None:
    """Same rows; keys and OHLC bit-equal; summed columns equal up to float rounding."""
    actual, expected = actual.sort_by(SORT_KEYS), expected.sort_by(SORT_KEYS)
    assert actual.schema.equals(CANDLE_SCHEMA)
    assert actual.num_rows == expected.num_rows
    for name in ("exchange", "symbol", "timeframe", "open_time", "close_time"):
        assert actual.column(name).equals(expected.column(name)), name
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(actual[name].to_numpy(), expected[name].to_numpy(), name)
    for name in SUMMED_COLUMNS:
        got, want = actual.column(name), expected.column(name)
        assert got.is_null().equals(want.is_null()), name
        got, want = got.drop_null().to_numpy(), want.drop_null().to_numpy()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=name)


def pandas_resample(candles: pa.Table, timeframe: str) -> pa.Table:
    """Independent oracle: pandas group-by with a bucket-size filter (no optional columns)."""
    frame = candles.to_pandas()
    step = timeframe_ms(timeframe)
    frame["bucket"] = frame["open_time"] // step * step
    frame = frame.sort_values("open_time", kind="stable")
    grouped = frame.groupby(["exchange", "symbol", "bucket"], sort=False)
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        size=("open", "size"),
    )
    out = out[out["size"] == step // MINUTE_MS].reset_index()
    tables = [
        candles_from_columns(
            exchange=ex,
            symbol=sym,
            timeframe=timeframe,
            open_time=part["bucket"].to_numpy(np.int64),
            columns={c: part[c].to_numpy() for c in part},
        )
        for (ex, sym), part in out.groupby(["exchange", "symbol"], sort=False)
    ]
    return pa.concat_tables(tables) if tables else CANDLE_SCHEMA.empty_table()


def hand_candles(symbol: str, minutes: list[int], **columns) -> pa.Table:
    """Candles at 2026-01-01 00:00 UTC + ``minutes``, simple distinct values unless given."""
    n = len(minutes)
    base = np.arange(1, n + 1, dtype=np.float64)
    values = {"open": base, "high": base + 10, "low": base - 0.5, "close": base + 1, "volume": base}
    values.update(columns)
    times = 1_767_225_600_000 + np.asarray(minutes, dtype=np.int64) * MINUTE_MS
    return candles_from_columns(
        exchange="testex", symbol=symbol, timeframe="1m", open_time=times, columns=values
    )


# --- exchange ground truth ----------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("timeframe", ["5m", "1h"])
def test_resampled_spot_minutes_reproduce_exchange_candles(shared_data, timeframe):
    files = sorted((shared_data / "binance-spot-1m").glob("*-1m.parquet"))
    assert files
    for path in files:
        ours = resample(read_candles(path, "binance"), timeframe)
        native_path = (
            shared_data / "binance-spot-native" / path.name.replace("-1m", f"-{timeframe}")
        )
        native = read_candles(native_path, "binance")
        overlap = np.intersect1d(ours["open_time"].to_numpy(), native["open_time"].to_numpy())
        assert len(overlap) > 0, path.name
        # every native bucket inside the span our complete buckets cover must be found
        inside = native.filter(pa.compute.less_equal(native["open_time"], ours["open_time"][-1]))
        inside = inside.filter(pa.compute.greater_equal(inside["open_time"], ours["open_time"][0]))
        assert inside.num_rows == len(overlap), path.name
        mine = ours.filter(pa.compute.is_in(ours["open_time"], pa.array(overlap)))
        assert_same_candles(mine, inside, rtol=1e-12)


@pytest.mark.realdata
def test_incomplete_edge_buckets_of_real_data_are_dropped(shared_data):
    minutes = read_candles(shared_data / "binance-spot-1m" / "BTC_USDT-1m.parquet", "binance")
    hourly = resample(minutes, "1h")
    first_minute, last_minute = minutes["open_time"][0].as_py(), minutes["open_time"][-1].as_py()
    hour = timeframe_ms("1h")
    assert hourly["open_time"][0].as_py() == -(-first_minute // hour) * hour  # first full hour
    assert hourly["open_time"][-1].as_py() + hour - MINUTE_MS <= last_minute


# --- oracle on random data ----------------------------------------------------------------


@pytest.mark.parametrize("timeframe", TIMEFRAMES[1:])
def test_matches_pandas_oracle_on_shuffled_random_candles_with_gaps(timeframe):
    rng = np.random.default_rng(11)
    gaps_per_bucket = 0.3  # about a quarter of the buckets lose a minute, at any timeframe
    missing = gaps_per_bucket / (timeframe_ms(timeframe) // MINUTE_MS)
    candles = random_candles(rng, 5, 3 * 1440 + 400, missing_fraction=missing, with_optional=False)
    shuffled = candles.take(pa.array(rng.permutation(candles.num_rows)))
    expected = pandas_resample(candles, timeframe)
    assert expected.num_rows > 0
    assert_same_candles(resample(shuffled, timeframe), expected)


def test_emits_exactly_the_buckets_with_no_missing_minute():
    rng = np.random.default_rng(5)
    candles = random_candles(rng, 3, 1440, missing_fraction=0.01, with_optional=False)
    step = timeframe_ms("15m")
    expected = set()
    for symbol in set(candles["symbol"].to_pylist()):
        rows = candles.filter(pa.compute.equal(candles["symbol"], symbol))
        present = set(rows["open_time"].to_pylist())
        buckets = {t - t % step for t in present}
        expected |= {
            (symbol, b) for b in buckets if all(b + i * MINUTE_MS in present for i in range(15))
        }
    out = resample(candles, "15m")
    got = set(zip(out["symbol"].to_pylist(), out["open_time"].to_pylist(), strict=True))
    assert got == expected
    assert len(expected) < 3 * 1440 // 15 - 3  # the gaps did remove some buckets


# --- hand-made cases ----------------------------------------------------------------------


def test_hand_made_buckets_aggregate_first_max_min_last_sum():
    candles = hand_candles("A/USDT", [0, 1, 2, 3, 4, 5, 6, 8, 9])  # minute 7 missing
    out = resample(candles, "5m")
    assert out["open_time"].to_pylist() == [1_767_225_600_000]
    row = out.to_pylist()[0]
    rows = candles.slice(0, 5).to_pylist()
    assert row["open"] == rows[0]["open"] and row["close"] == rows[-1]["close"]
    assert row["high"] == max(r["high"] for r in rows)
    assert row["low"] == min(r["low"] for r in rows)
    assert row["volume"] == sum(r["volume"] for r in rows)
    assert row["close_time"] == row["open_time"] + 5 * MINUTE_MS - 1
    assert row["timeframe"] == "5m" and row["symbol"] == "A/USDT"


def test_null_in_an_optional_column_makes_that_bucket_null():
    counts = pa.array([1, 2, None, 4, 5, 6, 7, 8, 9, 10], pa.int64())
    quote = np.arange(10, dtype=np.float64)
    candles = hand_candles("A/USDT", list(range(10)), trade_count=counts, quote_volume=quote)
    out = resample(candles, "5m")
    assert out["trade_count"].to_pylist() == [None, 6 + 7 + 8 + 9 + 10]
    assert out["quote_volume"].to_pylist() == [0 + 1 + 2 + 3 + 4, 5 + 6 + 7 + 8 + 9]
    assert out["taker_buy_base"].null_count == 2  # absent in the input: stays null
    assert out.schema.field("trade_count").type == pa.int64()


def test_groups_by_exchange_and_symbol():
    a = hand_candles("A/USDT", list(range(5)))
    b = hand_candles("B/USDT", list(range(5)), open=np.full(5, 42.0))
    other = hand_candles("A/USDT", list(range(5)), open=np.full(5, 7.0))
    other = other.set_column(0, CANDLE_SCHEMA.field("exchange"), pa.array(["otherex"] * 5))
    out = resample(pa.concat_tables([b, other, a]), "5m")
    keys = list(zip(out["exchange"].to_pylist(), out["symbol"].to_pylist(), strict=True))
    assert keys == [("testex", "B/USDT"), ("otherex", "A/USDT"), ("testex", "A/USDT")]
    assert out["open"].to_pylist() == [42.0, 7.0, 1.0]


def test_pandas_in_pandas_out():
    candles = hand_candles("A/USDT", list(range(10)))
    out = resample(candles.to_pandas(), "5m")
    assert isinstance(out, pd.DataFrame)
    assert out["open_time"].tolist() == resample(candles, "5m")["open_time"].to_pylist()


def test_higher_source_timeframe_resamples_like_minutes():
    rng = np.random.default_rng(3)
    candles = random_candles(rng, 2, 2 * 1440, missing_fraction=0.0)
    via_5m = resample(resample(candles, "5m"), "1h")
    assert_same_candles(via_5m, resample(candles, "1h"))


def test_empty_and_same_timeframe():
    assert resample(CANDLE_SCHEMA.empty_table(), "1h").num_rows == 0
    candles = hand_candles("A/USDT", [0, 1])
    assert resample(candles, "1m").num_rows == 2


@pytest.mark.parametrize(
    ("candles", "timeframe", "message"),
    [
        (
            pa.concat_tables([hand_candles("A/USDT", [0, 1]), hand_candles("A/USDT", [1])]),
            "5m",
            "unique",
        ),
        (hand_candles("A/USDT", [0, 1]), "bogus", "unknown timeframe"),
        (resample(hand_candles("A/USDT", list(range(60))), "1h"), "5m", "cannot resample"),
    ],
)
def test_bad_input_raises_a_clear_error(candles, timeframe, message):
    with pytest.raises(ValueError, match=message):
        resample(candles, timeframe)


def test_mixed_timeframes_and_misaligned_times_are_rejected():
    hourly = resample(hand_candles("B/USDT", list(range(60))), "1h")
    with pytest.raises(ValueError, match="one timeframe"):
        resample(pa.concat_tables([hand_candles("A/USDT", [0]), hourly]), "1d")
    shifted = hand_candles("A/USDT", [0, 1])
    shifted = shifted.set_column(
        3, CANDLE_SCHEMA.field("open_time"), pa.array([1_767_225_600_500, 1_767_225_660_500])
    )
    with pytest.raises(ValueError, match="aligned"):
        resample(shifted, "5m")


def test_reads_back_from_parquet(tmp_path):
    candles = hand_candles("A/USDT", list(range(10)))
    pq.write_table(candles, tmp_path / "candles.parquet")
    stored = pq.read_table(tmp_path / "candles.parquet")
    assert_same_candles(resample(stored, "5m"), resample(candles, "5m"))
