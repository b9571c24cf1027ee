"""Finding and reading a backfill's candles: both folder layouts, labels, base timeframes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.batch.backfill.job import BackfillOptions, load_candles
from orchestrator.batch.backfill.sources import (
    DataSource,
    base_timeframe,
    last_per_open_time,
    load_series,
    plan_series,
)
from tests.unit.backfill.helpers import MINUTE, random_candles


def test_a_source_is_a_path_or_an_exchange_label_and_a_path(tmp_path):
    assert DataSource.parse("../data/x") == DataSource(Path("../data/x"))
    assert DataSource.parse("binanceusdm=../d/usdm") == DataSource(Path("../d/usdm"), "binanceusdm")
    hive = tmp_path / "exchange=binance"
    hive.mkdir()
    assert DataSource.parse(str(hive)) == DataSource(hive)  # an existing path wins


def test_the_base_timeframe_is_the_exact_one_else_the_finest_divisor():
    assert base_timeframe(("1m", "5m", "1h"), "1h") == "1h"
    assert base_timeframe(("5m", "1h"), "15m") == "5m"
    assert base_timeframe(("1m", "5m"), "4h") == "1m"
    assert base_timeframe(("1h",), "5m") is None


def test_plans_for_the_real_folders(shared_data):
    spot = plan_series(DataSource(shared_data / "binance-spot-1m"), None, ("1m", "5m", "1h"))
    assert [(p.symbol, p.base, p.targets) for p in spot] == [
        (s, "1m", ("1m", "5m", "1h")) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    ]
    native = plan_series(
        DataSource(shared_data / "binance-spot-native"), ("BTC/USDT",), ("1m", "5m", "15m", "1h")
    )
    assert [(p.base, p.targets) for p in native] == [("5m", ("5m", "15m")), ("1h", ("1h",))]
    hourly = plan_series(DataSource(shared_data / "binance-spot-1h"), ("ETH/USDT",), ("1m", "1h"))
    assert [(p.base, p.targets, len(p.files)) for p in hourly] == [("1h", ("1h",), 1)]
    usdm = plan_series(
        DataSource(shared_data / "binance-usdm-1m", "binanceusdm"), ("LINK/USDT",), ("1m",)
    )
    candles, stats = load_series(usdm[0])
    assert set(candles.column("exchange").to_pylist()) == {"binanceusdm"}
    assert set(candles.column("symbol").to_pylist()) == {"LINK/USDT"}
    assert stats.candles == candles.num_rows == 40_320 and stats.invalid == 0


def _write_flat(folder: Path, table: pa.Table, name: str = "AAA_USDT-1m.parquet") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame = table.select(["open", "high", "low", "close", "volume"]).to_pandas()
    frame.insert(0, "date", (table.column("open_time").to_numpy()).astype("datetime64[ms]"))
    frame["date"] = frame["date"].dt.tz_localize("UTC")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / name)


def test_reading_drops_invalid_candles_and_keeps_the_last_of_a_repeated_time(tmp_path):
    candles = random_candles(50, seed=4).to_pandas()
    bad = candles.index[10]
    candles.loc[bad, "high"] = candles.loc[bad, "low"] - 1  # high below low: quarantined
    repeat = candles.iloc[[20]].assign(
        close=lambda f: f["close"] * 1.01, high=lambda f: f["high"] * 1.02
    )
    table = pa.Table.from_pandas(pd_concat(candles, repeat), preserve_index=False)
    _write_flat(tmp_path / "flat", table)
    plan = plan_series(DataSource(tmp_path / "flat", "lab"), None, ("1m",))[0]
    loaded, stats = load_series(plan)
    assert (stats.invalid, stats.duplicates, stats.candles) == (1, 1, 49)
    assert stats.by_reason == {"high_below_low": 1}
    times = loaded.column("open_time").to_numpy()
    assert np.all(np.diff(times) > 0)
    row = loaded.to_pandas().set_index("open_time").loc[repeat["open_time"].iloc[0]]
    assert row["close"] == repeat["close"].iloc[0]  # the later row won
    assert set(loaded.column("exchange").to_pylist()) == {"lab"}


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_the_hive_dataset_keeps_its_stored_names_unless_labelled(tmp_path):
    table = random_candles(30, exchange="kraken", symbol="BTC/USD")
    folder = tmp_path / "exchange=kraken" / "symbol=BTC_USD" / "timeframe=1m"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    stored = load_series(plan_series(DataSource(tmp_path), None, ("1m",))[0])[0]
    assert stored.column("symbol")[0].as_py() == "BTC/USD"
    assert stored.column("exchange")[0].as_py() == "kraken"
    labelled = load_series(plan_series(DataSource(tmp_path, "replayed"), ("BTC/USD",), ("1m",))[0])[
        0
    ]
    assert set(labelled.column("exchange").to_pylist()) == {"replayed"}


def test_a_series_in_two_sources_joins_unless_the_times_overlap(tmp_path):
    candles = random_candles(100, seed=6)
    _write_flat(tmp_path / "a", candles.slice(0, 60))
    _write_flat(tmp_path / "b", candles.slice(60))
    options = BackfillOptions(
        sources=(DataSource(tmp_path / "a"), DataSource(tmp_path / "b")), out=tmp_path / "out"
    )
    (joined,) = load_candles(options, ("1m",))
    assert joined.num_rows == 100
    np.testing.assert_array_equal(
        joined.column("close").to_numpy(), candles.column("close").to_numpy()
    )
    _write_flat(tmp_path / "c", candles.slice(50, 20))
    clash = BackfillOptions(
        sources=(DataSource(tmp_path / "a"), DataSource(tmp_path / "c")), out=tmp_path / "out"
    )
    with pytest.raises(ValueError, match="EXCHANGE=PATH"):
        load_candles(clash, ("1m",))
    with pytest.raises(ValueError, match="no candles"):
        load_candles(
            BackfillOptions(
                sources=(DataSource(tmp_path / "a"),), out=tmp_path, symbols=("ZZZ/USDT",)
            ),
            ("1m",),
        )


def test_last_per_open_time_orders_and_counts():
    table = random_candles(5, seed=1)
    shuffled = pa.concat_tables([table.slice(3), table.slice(0, 3), table.slice(1, 1)])
    kept, dropped = last_per_open_time(shuffled)
    assert dropped == 1
    np.testing.assert_array_equal(
        kept.column("open_time").to_numpy(), table.column("open_time").to_numpy()
    )
    assert np.all(np.diff(kept.column("open_time").to_numpy()) == MINUTE)
