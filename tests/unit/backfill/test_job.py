"""A whole backfill in this process (no Ray): files, idempotent reruns, record, report, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.batch.backfill.job import BackfillOptions, run_backfill
from orchestrator.batch.backfill.models import ModelSpec
from orchestrator.batch.backfill.sources import DataSource
from orchestrator.cli import backfill as cli
from orchestrator.models.registry import Registry
from orchestrator.sinks.parquet_log import read_log
from tests.unit.backfill.helpers import MINUTE, first_open_time, real_candles

NOW_MS = 1_800_000_000_000


def _options(shared_data: Path, out: Path, **changes) -> BackfillOptions:
    t0 = first_open_time(real_candles(shared_data, ("BTC/USDT",), 1))
    base = dict(
        sources=(DataSource(shared_data / "binance-spot-1m"),),
        out=out,
        symbols=("BTC/USDT", "ETH/USDT"),
        timeframes=("1m", "5m"),
        models=(ModelSpec("direction"), ModelSpec("volatility")),
        start_ms=t0 + 600 * MINUTE,
        end_ms=t0 + 1200 * MINUTE,
        report_dir=out / "report",
        executor="local",
        now_ms=NOW_MS,
    )
    return BackfillOptions(**{**base, **changes})


def test_a_local_run_writes_predictions_outcomes_record_and_report(shared_data, tmp_path):
    lines = []
    record = run_backfill(_options(shared_data, tmp_path), say=lines.append)
    predictions = read_log(tmp_path / "predictions")
    outcomes = read_log(tmp_path / "outcomes")
    counts = record["counts"]
    assert (
        counts["predictions"]
        == predictions.num_rows
        == sum(counts["predictions_by_model"].values())
    )
    assert counts["outcomes"] == outcomes.num_rows
    # what reading kept and dropped reaches the record (the real files are clean)
    assert counts["files_read"] >= 2 and counts["candles"] > 0
    assert counts["invalid_candles"] == sum(counts["invalid_by_reason"].values()) == 0
    # 2 symbols x (600 one-minute + 120 five-minute candles) x 2 model types
    assert predictions.num_rows == 2 * (600 + 120) * 2
    assert pc.count_distinct(predictions.column("event_id")).as_py() == predictions.num_rows
    assert json.loads((tmp_path / "completion.json").read_text()) == record
    assert record["kind"] == "backfill_complete" and record["duration_s"] >= 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| direction-1m |" in report and "| volatility-5m |" in report
    served = Registry(PROJECT_ROOT / "models_onnx").resolve("direction", "5m").key
    assert (tmp_path / "report" / f"equity-{served}.png").read_bytes()[:4] == b"\x89PNG"
    stages = [line for line in lines if line.startswith("[backfill]") and "done in" in line]
    assert len(stages) == 6  # one line per stage


def test_rerunning_a_range_replaces_it(shared_data, tmp_path):
    options = _options(shared_data, tmp_path, report_dir=None)
    first = run_backfill(options, say=lambda _: None)
    before = read_log(tmp_path / "predictions").sort_by("event_id")
    again = run_backfill(options, say=lambda _: None)
    after = read_log(tmp_path / "predictions").sort_by("event_id")
    assert after.equals(before)
    assert again["counts"]["rows_replaced"] == first["counts"]["predictions"]
    assert pc.count_distinct(after.column("event_id")).as_py() == after.num_rows
    narrower = run_backfill(
        _options(shared_data, tmp_path, report_dir=None, symbols=("ETH/USDT",), timeframes=("5m",)),
        say=lambda _: None,
    )
    assert narrower["counts"]["rows_replaced"] == narrower["counts"]["predictions"] == 2 * 120
    assert read_log(tmp_path / "predictions").sort_by("event_id").equals(before)


def test_the_cli_parses_dates_sources_and_models(tmp_path):
    args = cli.parse_args(
        [
            "--data",
            "binanceusdm=/x/usdm",
            "--data",
            "/y",
            "--start",
            "2026-02-01",
            "--end",
            "2026-02-02T12:00",
            "--timeframes",
            "1m,1h",
            "--models",
            "direction@all,volatility",
            "--out",
            str(tmp_path),
        ]
    )
    options = cli.options_from(args)
    assert options.sources == (DataSource(Path("/x/usdm"), "binanceusdm"), DataSource(Path("/y")))
    assert options.start_ms == 1_769_904_000_000
    assert options.end_ms == options.start_ms + 36 * 3600 * 1000
    assert options.timeframes == ("1m", "1h")
    assert options.models == (ModelSpec("direction", "all"), ModelSpec("volatility"))
    assert options.report_dir == tmp_path / "report" and options.executor == "ray"
    for bad in (
        ["--timeframes", "7m"],
        ["--models", "nope"],
        ["--start", "yesterday"],
        ["--start", "2026-02-02", "--end", "2026-02-01"],
    ):
        with pytest.raises(SystemExit):
            cli.parse_args(["--data", "/y", *bad])


def test_a_run_reads_and_writes_storage_by_uri(storage_root):
    """``--data`` and ``--out`` on a local folder and on the suite's S3 server: the same
    rows, the record beside them, a rerun replacing its range."""
    from orchestrator.storage import locate, write_parquet
    from tests.unit.backfill.helpers import START, random_candles

    for seed, symbol in enumerate(("AAA/USDT", "BBB/USDT")):
        candles = random_candles(2000, seed=seed, symbol=symbol)
        write_parquet(candles, locate(storage_root) / "candles" / f"{symbol[:3]}_USDT-1m.parquet")
    options = BackfillOptions(
        sources=(DataSource.parse(f"test={storage_root}/candles"),),
        out=f"{storage_root}/out",
        timeframes=("1m", "5m"),
        models=(ModelSpec("direction"),),
        start_ms=START + 600 * MINUTE,
        end_ms=START + 1200 * MINUTE,
        report_dir=None,
        executor="local",
        now_ms=NOW_MS,
    )
    first = run_backfill(options, say=lambda _: None)
    predictions = read_log(f"{storage_root}/out/predictions")
    assert predictions.num_rows == first["counts"]["predictions"] == 2 * (600 + 120)
    assert set(predictions.column("exchange").to_pylist()) == {"test"}
    stored = json.loads((locate(storage_root) / "out" / "completion.json").read_text())
    assert stored == first and first["outputs"]["predictions"].startswith(storage_root)
    again = run_backfill(options, say=lambda _: None)
    assert again["counts"]["rows_replaced"] == first["counts"]["predictions"]
    after = read_log(f"{storage_root}/out/predictions").sort_by("event_id")
    assert after.equals(predictions.sort_by("event_id"))
