"""orchestrator/cli/fetch_history.py in-process against the fake Binance REST server."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow.dataset as ds
import pytest

from orchestrator.cli import fetch_history
from orchestrator.feeds.replay import candle_files
from orchestrator.storage import locate
from tests.fakes.binance import FakeBinanceInThread
from tests.fakes.candle_series import MINUTE_MS, kline_row
from tests.unit.feeds.support import SYMBOLS, T0, candle_values, expected_values, minutes


def _read(root, **partition):
    where = locate(root)
    table = ds.dataset(where.path, format="parquet", filesystem=where.fs).to_table()
    for column, value in partition.items():
        table = table.filter(ds.field(column) == value)
    return table


def _download(fake, out, *extra):
    argv = [
        "download",
        "--exchange",
        "binance",
        "--symbols",
        *SYMBOLS,
        "--since",
        str(T0),
        "--out",
        str(out),
        "--urls",
        json.dumps(fake.ccxt_urls()),
        "--rate-limit-ms",
        "1",
        "--retry-base-delay-s",
        "0.001",
        "--no-progress",
        *extra,
    ]
    assert fetch_history.main(argv) == 0


def test_download_paginates_writes_hive_partitions_and_resumes(tmp_path, capsys):
    with FakeBinanceInThread(
        SYMBOLS, now_ms=T0 + 2500 * MINUTE_MS + 30_000, first_open_ms=T0 - 50 * MINUTE_MS
    ) as fake:
        _download(fake, tmp_path, "--rows-per-file", "2000")
        first_run_queries = len(fake.kline_queries)
        first_summary = json.loads(capsys.readouterr().out)
        fake.now_ms += 100 * MINUTE_MS
        _download(fake, tmp_path)
        second_run = fake.kline_queries[first_run_queries:]

    for symbol, safe in (("BTC/USDT", "BTC_USDT"), ("ETH/USDT", "ETH_USDT")):
        directory = tmp_path / "exchange=binance" / f"symbol={safe}" / "timeframe=1m"
        assert len(list(directory.glob("*.parquet"))) == 3  # 2000 + 500 rows, then the resumed 100
        table = _read(tmp_path, symbol=symbol)
        open_times = list(range(T0, T0 + 2600 * MINUTE_MS, MINUTE_MS))  # closed candles only
        assert sorted(table.column("open_time").to_pylist()) == open_times
        assert candle_values(table) == expected_values([symbol], open_times)
    assert first_summary["written"] == {"BTC/USDT": 2500, "ETH/USDT": 2500}
    assert first_run_queries == 2 * 3  # three pages of 1000 per symbol
    # the second run asked only for what was new: from just after the newest stored candle
    assert sorted({int(q["startTime"]) for q in second_run}) == [T0 + 2500 * MINUTE_MS]
    hive = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert set(hive.column("symbol").to_pylist()) == {"BTC_USDT", "ETH_USDT"}


def test_download_retries_through_server_faults(tmp_path):
    with FakeBinanceInThread(SYMBOLS, now_ms=T0 + 30 * MINUTE_MS, first_open_ms=T0) as fake:
        fake.add_fault("http_5xx", times=1)
        fake.add_fault("http_429", retry_after_s=0.01)
        _download(fake, tmp_path)
        applied = dict(fake.faults_applied)
    assert applied == {"http_5xx": 1, "http_429": 1}
    table = _read(tmp_path)
    assert sorted(table.column("open_time").to_pylist()) == sorted(minutes(*range(30)) * 2)


def _binance_zip(path, symbol: str, open_times: list[int], header: bool) -> None:
    lines = (
        [
            "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
            "taker_buy_volume,taker_buy_quote_volume,ignore"
        ]
        if header
        else []
    )
    lines += [
        ",".join(str(v) for v in kline_row(symbol, t, t + 10 * MINUTE_MS)) for t in open_times
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(path.with_suffix(".csv").name, "\n".join(lines) + "\n")
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("header", [False, True])
def test_import_zip_is_idempotent_and_merges_with_stored_rows(tmp_path, storage_root, header):
    """Into a local folder and into an S3 prefix (``storage_root``); the backfill's reader
    then finds the series there."""
    first = tmp_path / "BTCUSDT-1m-2023-11.zip"
    second = tmp_path / "BTCUSDT-1m-2023-12.zip"
    _binance_zip(first, "BTC/USDT", minutes(*range(0, 60)), header)
    _binance_zip(second, "BTC/USDT", minutes(*range(40, 90)), header)  # overlaps 40..59
    out = f"{storage_root}/dataset"
    argv = ["import-zip", "--out", out, "--no-progress"]
    assert fetch_history.main([*argv, str(first)]) == 0
    assert fetch_history.main([*argv, str(first), str(second)]) == 0  # first again: nothing new

    directory = locate(out) / "exchange=binance" / "symbol=BTC_USDT" / "timeframe=1m"
    assert len(directory.files(suffix=".parquet")) == 2
    found = candle_files(out)  # what the backfill reads: the two files of the one series
    assert [(symbol, tf) for _, symbol, tf in found] == [("BTC_USDT", "1m")] * 2
    assert all(str(path).startswith(str(directory)) for path, _, _ in found)
    if directory.local:  # the same folder named as a file:// URI
        as_uri = [str(path) for path, _, _ in candle_files(f"file://{out}")]
        assert as_uri == [str(path) for path, _, _ in found]
    table = _read(out)
    assert sorted(table.column("open_time").to_pylist()) == minutes(*range(0, 90))
    assert candle_values(table) == expected_values(["BTC/USDT"], minutes(*range(0, 90)))
    assert set(table.column("trade_count").to_pylist()) == {42}  # archive-only columns kept


@pytest.mark.realdata
def test_import_a_real_binance_futures_archive(shared_data, tmp_path):
    archive = shared_data / "binance-usdm-1m" / "LINKUSDT-1m-2026-02.zip"
    assert (
        fetch_history.main(["import-zip", "--out", str(tmp_path), "--no-progress", str(archive)])
        == 0
    )
    table = _read(tmp_path)
    open_times = table.column("open_time").to_numpy()
    assert len(open_times) == 40_320 and len(set(open_times.tolist())) == 40_320
    assert (open_times.max() - open_times.min()) // MINUTE_MS == 40_319  # no gaps, per the README
    assert set(table.column("symbol").to_pylist()) == {"LINK/USDT"}
    assert (tmp_path / "exchange=binance" / "symbol=LINK_USDT" / "timeframe=1m").is_dir()
