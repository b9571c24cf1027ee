"""Candle validation: every reason code, priority, quarantine, and a scalar reference twin."""

from __future__ import annotations

import io
import math
import pickle
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from orchestrator.market.schema import CANDLE_SCHEMA, candles_from_arrays, candles_from_frame
from orchestrator.market.validate import (
    FUTURE_TOLERANCE_MS,
    REASONS,
    Quarantine,
    Reason,
    Rejects,
    validate_candles,
)

MINUTE = 60_000
T0 = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
NULLABLE_SCHEMA = pa.schema([f.with_nullable(True) for f in CANDLE_SCHEMA])


def clean_batch(n: int = 20, symbol: str = "BTC/USDT", seed: int = 0, start: int = T0):
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.5, n))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = rng.uniform(0.01, 0.3, (2, n))
    ohlcv = {
        "open": open_,
        "high": np.maximum(open_, close) + spread[0],
        "low": np.minimum(open_, close) - spread[1],
        "close": close,
        "volume": rng.uniform(0, 10, n),
        "quote_volume": rng.uniform(0, 1000, n),
        "trade_count": rng.integers(0, 500, n),
        "taker_buy_base": rng.uniform(0, 5, n),
        "taker_buy_quote": rng.uniform(0, 500, n),
    }
    times = start + MINUTE * np.arange(n, dtype=np.int64)
    return candles_from_arrays("binance", symbol, "1m", times, ohlcv)


def with_values(batch: pa.RecordBatch, row: int, **changes) -> pa.RecordBatch:
    """A copy of ``batch`` with ``changes`` written into one row (nulls allowed)."""
    data = batch.to_pydict()
    for name, value in changes.items():
        data[name][row] = value
    return pa.RecordBatch.from_pydict(data, schema=NULLABLE_SCHEMA)


def body(batch: pa.RecordBatch, row: int) -> tuple[float, float]:
    o, c = batch.column("open")[row].as_py(), batch.column("close")[row].as_py()
    return min(o, c), max(o, c)


NOW = T0 + 100 * MINUTE
FUTURE = ((NOW + FUTURE_TOLERANCE_MS) // MINUTE + 1) * MINUTE  # first aligned future time


def corruptions(batch: pa.RecordBatch, row: int) -> list[tuple[str, dict]]:
    lo, hi = body(batch, row)
    t = batch.column("open_time")[row].as_py()
    return [
        (Reason.NULL_VALUE, {"open": None}),
        (Reason.NULL_VALUE, {"symbol": None}),
        (Reason.WRONG_EXCHANGE, {"exchange": "kraken"}),
        (Reason.WRONG_TIMEFRAME, {"timeframe": "5m"}),
        (Reason.UNKNOWN_SYMBOL, {"symbol": ""}),
        (Reason.UNKNOWN_SYMBOL, {"symbol": "DOGE/USDT"}),
        (Reason.NON_FINITE, {"open": math.nan}),
        (Reason.NON_FINITE, {"high": math.inf}),
        (Reason.NON_FINITE, {"volume": math.nan}),
        (Reason.NON_FINITE, {"quote_volume": -math.inf}),
        (Reason.NON_POSITIVE_PRICE, {"low": 0.0}),
        (Reason.NON_POSITIVE_PRICE, {"open": -1.0, "low": -2.0}),
        (Reason.HIGH_BELOW_LOW, {"high": lo - 1.0, "low": lo - 0.5}),
        (Reason.HIGH_BELOW_BODY, {"high": hi - 1e-6}),
        (Reason.LOW_ABOVE_BODY, {"low": lo + 1e-6}),
        (Reason.NEGATIVE_VOLUME, {"volume": -0.1}),
        (Reason.NEGATIVE_VOLUME, {"trade_count": -1}),
        (Reason.NEGATIVE_VOLUME, {"taker_buy_quote": -5.0}),
        (Reason.MISALIGNED, {"open_time": t + 1, "close_time": t + MINUTE}),
        (Reason.BAD_CLOSE_TIME, {"close_time": t + MINUTE}),
        (Reason.FUTURE, {"open_time": FUTURE, "close_time": FUTURE + MINUTE - 1}),
    ]


RULES = {"timeframe": "1m", "now_ms": NOW, "exchange": "binance", "symbols": ["BTC/USDT"]}


def test_clean_batch_passes_unchanged():
    batch = clean_batch()
    valid, rejects = validate_candles(batch, **RULES)
    assert valid is batch
    assert len(rejects) == 0 and rejects.counts() == {}


@pytest.mark.parametrize("case", range(len(corruptions(clean_batch(), 7))))
def test_each_reason_rejects_exactly_the_bad_row(case):
    batch = clean_batch()
    reason, changes = corruptions(batch, 7)[case]
    bad = with_values(batch, 7, **changes)
    valid, rejects = validate_candles(bad, **RULES)
    assert list(rejects.reasons) == [str(reason)]
    assert valid.num_rows == batch.num_rows - 1
    assert valid.schema.equals(CANDLE_SCHEMA)
    kept = valid.column("open_time").to_pylist()
    assert kept == [t for i, t in enumerate(batch.column("open_time").to_pylist()) if i != 7]
    record = rejects.records()[0]
    assert record.reason == reason
    for name, value in changes.items():
        assert _same(record.payload[name], value)


def _same(a, b) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def test_future_boundary_and_disabled_check():
    t = T0 + 10 * MINUTE
    batch = clean_batch(1, start=t)
    assert len(validate_candles(batch, now_ms=t - FUTURE_TOLERANCE_MS).rejects) == 0
    assert len(validate_candles(batch, now_ms=t - FUTURE_TOLERANCE_MS - 1).rejects) == 1
    assert len(validate_candles(batch, now_ms=None).rejects) == 0
    assert len(validate_candles(batch, now_ms=t, future_tolerance_ms=0).rejects) == 0


def test_first_applicable_reason_wins():
    batch = clean_batch()
    t = batch.column("open_time")[3].as_py()
    bad = with_values(batch, 3, open=math.nan, open_time=t + 7, exchange="kraken")
    assert list(validate_candles(bad, **RULES).rejects.reasons) == [Reason.WRONG_EXCHANGE]


def test_optional_columns_may_be_null():
    batch = with_values(clean_batch(), 2, quote_volume=None, trade_count=None)
    assert len(validate_candles(batch, **RULES).rejects) == 0


def test_timeframe_alignment_uses_the_given_timeframe():
    batch = clean_batch(10, start=T0 - T0 % (5 * MINUTE))  # every minute, aligned to 1m only
    data = batch.to_pydict()
    data["timeframe"] = ["5m"] * batch.num_rows
    data["close_time"] = [t + 5 * MINUTE - 1 for t in data["open_time"]]
    five = pa.RecordBatch.from_pydict(data, schema=CANDLE_SCHEMA)
    rejects = validate_candles(five, timeframe="5m").rejects
    aligned = [t % (5 * MINUTE) == 0 for t in data["open_time"]]
    assert len(rejects) == aligned.count(False)
    assert set(rejects.reasons) == {Reason.MISALIGNED}


def test_tables_reordered_columns_and_chunks_are_conformed():
    batch = clean_batch(30)
    table = pa.Table.from_batches([batch.slice(0, 10), batch.slice(10)])
    bad = pa.Table.from_batches([with_values(batch, 12, volume=-1.0)]).select(
        list(reversed(CANDLE_SCHEMA.names))
    )
    assert validate_candles(table).valid.equals(table)
    valid, rejects = validate_candles(bad)
    assert isinstance(valid, pa.Table) and valid.schema.equals(CANDLE_SCHEMA)
    assert valid.num_rows == 29 and list(rejects.reasons) == [Reason.NEGATIVE_VOLUME]


def test_missing_required_column_is_an_error_naming_it():
    table = pa.Table.from_batches([clean_batch()]).drop_columns(["high"])
    with pytest.raises(ValueError, match="high"):
        validate_candles(table)


def test_empty_input():
    valid, rejects = validate_candles(CANDLE_SCHEMA.empty_table(), now_ms=NOW)
    assert valid.num_rows == 0 and len(rejects) == 0


# --- scalar reference twin -----------------------------------------------------------------


def reference_reason(row: dict, now_ms: int) -> str | None:
    """One row, plain Python, same rules and priority as the vectorized validator."""
    required = [n for n in CANDLE_SCHEMA.names if not CANDLE_SCHEMA.field(n).nullable]
    o, h, lo, c, v = (row[k] for k in ("open", "high", "low", "close", "volume"))
    optional = [
        row[k] for k in ("quote_volume", "trade_count", "taker_buy_base", "taker_buy_quote")
    ]
    optional = [x for x in optional if x is not None]
    checks = [
        (Reason.NULL_VALUE, lambda: any(row[k] is None for k in required)),
        (Reason.WRONG_EXCHANGE, lambda: row["exchange"] != "binance"),
        (Reason.WRONG_TIMEFRAME, lambda: row["timeframe"] != "1m"),
        (Reason.UNKNOWN_SYMBOL, lambda: row["symbol"] not in ("BTC/USDT",)),
        (Reason.NON_FINITE, lambda: not all(math.isfinite(x) for x in (o, h, lo, c, v, *optional))),
        (Reason.NON_POSITIVE_PRICE, lambda: min(o, h, lo, c) <= 0),
        (Reason.HIGH_BELOW_LOW, lambda: h < lo),
        (Reason.HIGH_BELOW_BODY, lambda: h < max(o, c)),
        (Reason.LOW_ABOVE_BODY, lambda: lo > min(o, c)),
        (Reason.NEGATIVE_VOLUME, lambda: v < 0 or any(x < 0 for x in optional)),
        (Reason.MISALIGNED, lambda: row["open_time"] % MINUTE != 0),
        (Reason.BAD_CLOSE_TIME, lambda: row["close_time"] != row["open_time"] + MINUTE - 1),
        (Reason.FUTURE, lambda: row["open_time"] > now_ms + FUTURE_TOLERANCE_MS),
    ]
    return next((str(reason) for reason, failed in checks if failed()), None)


@pytest.mark.parametrize("seed", range(4))
def test_vectorized_matches_scalar_reference_on_random_corruption(seed):
    rng = np.random.default_rng(seed)
    batch = clean_batch(300, seed=seed)
    data = batch.to_pydict()
    for row in rng.choice(300, size=120, replace=False):
        reason, changes = corruptions(batch, int(row))[rng.integers(0, 21)]
        if "symbol" in changes and changes["symbol"] is None:
            changes = {"open": None}  # reference needs a string symbol to compare
        for name, value in changes.items():
            data[name][row] = value
    mixed = pa.RecordBatch.from_pydict(data, schema=NULLABLE_SCHEMA)
    valid, rejects = validate_candles(mixed, **RULES)
    rows = mixed.to_pylist()
    expected = [reference_reason(r, NOW) for r in rows]
    assert list(rejects.reasons) == [e for e in expected if e is not None]
    assert len(rejects) > 100
    rejected_times = [r["open_time"] for r, e in zip(rows, expected, strict=True) if e]
    kept_times = [r["open_time"] for r, e in zip(rows, expected, strict=True) if not e]
    assert rejects.rows.column("open_time").to_pylist() == rejected_times
    assert valid.column("open_time").to_pylist() == kept_times


# --- quarantine ----------------------------------------------------------------------------


def test_quarantine_keeps_recent_records_and_counts_everything():
    batch = clean_batch(50)
    data = batch.to_pydict()
    for row in range(0, 50, 2):
        data["volume"][row] = -1.0
    data["open"][1] = math.nan
    bad = pa.RecordBatch.from_pydict(data, schema=CANDLE_SCHEMA)
    quarantine = Quarantine(max_records=5)
    for _ in range(3):
        quarantine.add(validate_candles(bad, **RULES).rejects)
    assert quarantine.counts == {Reason.NEGATIVE_VOLUME: 75, Reason.NON_FINITE: 3}
    assert quarantine.total == 78
    records = quarantine.records
    assert len(records) == 5
    last_rejected = [r for i, r in enumerate(bad.to_pylist()) if i % 2 == 0 or i == 1][-5:]
    assert [r.payload for r in records] == last_rejected
    assert all(r.exchange == "binance" and r.symbol == "BTC/USDT" for r in records)
    assert [r.open_time for r in records] == [r["open_time"] for r in last_rejected]


def test_quarantine_snapshot_is_plain_and_round_trips():
    quarantine = Quarantine(max_records=3)
    quarantine.add(Rejects.of(clean_batch(4), Reason.OUT_OF_ORDER))
    snap = pickle.loads(pickle.dumps(quarantine.snapshot()))
    assert all(type(r) is dict for r in snap["records"])
    restored = Quarantine.from_snapshot(snap)
    assert restored.counts == {"out_of_order": 4} == quarantine.counts
    assert restored.records == quarantine.records


def test_reason_codes_are_stable_strings():
    assert "out_of_order" in REASONS and Reason.NON_FINITE == "non_finite"
    assert len(set(REASONS)) == len(REASONS)


# --- real data -----------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("base", ["BTC", "ETH", "SOL"])
def test_real_spot_1m_file_has_no_rejects(shared_data, base):
    frame = pd.read_parquet(shared_data / "binance-spot-1m" / f"{base}_USDT-1m.parquet")
    batch = candles_from_frame(frame, exchange="binance", symbol=f"{base}/USDT", timeframe="1m")
    now = int(batch.column("open_time")[-1].as_py()) + MINUTE
    valid, rejects = validate_candles(batch, now_ms=now, exchange="binance")
    assert len(rejects) == 0 and valid.num_rows == len(frame) == 43_199


@pytest.mark.realdata
def test_real_futures_archive_with_optional_columns_has_no_rejects(shared_data):
    path = shared_data / "binance-usdm-1m" / "LINKUSDT-1m-2026-02.zip"
    with zipfile.ZipFile(path) as archive:
        frame = pd.read_csv(io.BytesIO(archive.read(archive.namelist()[0])))
    columns = {
        **{k: frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume")},
        "quote_volume": frame["quote_volume"].to_numpy(),
        "trade_count": frame["count"].to_numpy(),
        "taker_buy_base": frame["taker_buy_volume"].to_numpy(),
        "taker_buy_quote": frame["taker_buy_quote_volume"].to_numpy(),
    }
    batch = candles_from_arrays("binance", "LINK/USDT", "1m", frame["open_time"], columns)
    assert np.array_equal(batch.column("close_time").to_numpy(), frame["close_time"].to_numpy())
    valid, rejects = validate_candles(batch, now_ms=int(frame["close_time"].iloc[-1]) + 1)
    assert len(rejects) == 0 and valid.num_rows == 40_320
