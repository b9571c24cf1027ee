"""The idempotent writer: re-running a range replaces it; the live readers read the result.
Each on a local folder and on an S3 server (``storage_root``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.batch.backfill.writer import ModelKey, PartitionedWriter, Scope, partition_file
from orchestrator.sinks.history import HistoryQuery, query_log
from orchestrator.sinks.parquet_log import read_log
from orchestrator.storage import locate
from orchestrator.stream.events import PREDICTION_SCHEMA, ModelOutput, TickRows, build_predictions
from tests.unit.backfill.helpers import MINUTE, START

DAY = 1440 * MINUTE
MODEL = ModelKey("direction-1m", "v1", "1m")
SYMBOLS = ("AAA/USDT", "BBB/USDT")


def predictions(symbols=SYMBOLS, start=START, minutes=2 * 1440, value=0.5, step=1) -> pa.Table:
    """A prediction row per symbol per minute (two UTC days by default)."""
    times = start + MINUTE * np.arange(0, minutes, step, dtype=np.int64)
    parts = []
    for symbol in symbols:
        n = len(times)
        output = ModelOutput(
            MODEL.model_id, "direction", MODEL.version, ("prob_up",), np.full((n, 1), value)
        )
        rows = TickRows(
            np.full(n, "test", object),
            np.full(n, symbol, object),
            "1m",
            times,
            np.full(n, 100.0),
            0.0,
        )
        parts.append(build_predictions(output, rows, 1.0, 0.6, 0.7, environment="backfill"))
    return pa.concat_tables(parts)


def scope(symbols=SYMBOLS, start=None, end=None) -> Scope:
    return Scope((MODEL,), tuple(("test", s, "1m") for s in symbols), start, end)


def write(
    root: Path, table: pa.Table, run_scope: Scope, flush_rows: int = 10**6
) -> PartitionedWriter:
    writer = PartitionedWriter(root, PREDICTION_SCHEMA, flush_rows=flush_rows)
    writer.clear(run_scope)
    writer.append(table)
    writer.flush()
    return writer


def _log(root: Path) -> pa.Table:
    return read_log(root).sort_by([("symbol", "ascending"), ("open_time", "ascending")])


def test_rows_land_in_the_live_log_layout_under_deterministic_names(storage_root):
    write(storage_root, predictions(), scope())
    root = locate(storage_root)
    files = [e.location.path[len(root.path) + 1 :] for e in root.files(recursive=True)]
    assert files == [
        "date=2026-01-01/timeframe=1m/backfill-direction-1m@v1.parquet",
        "date=2026-01-02/timeframe=1m/backfill-direction-1m@v1.parquet",
    ]
    log = _log(storage_root)
    assert log.num_rows == 2 * 2 * 1440
    assert set(log.column("date").to_pylist()) == {"2026-01-01", "2026-01-02"}
    page = query_log(
        storage_root,
        HistoryQuery(
            symbol="BBB/USDT", start_ms=START, end_ms=START + 10 * MINUTE, limit=5, count=True
        ),
    )
    assert page.total == 10
    assert [r["open_time"] for r in page.rows] == [START + i * MINUTE for i in range(5)]


def test_running_the_same_range_again_changes_nothing(storage_root):
    write(storage_root, predictions(), scope())
    first = _log(storage_root)
    writer = write(storage_root, predictions(), scope())
    again = _log(storage_root)
    assert again.equals(first)
    assert writer.rows_removed == first.num_rows  # all replaced, none added twice
    ids = again.column("event_id")
    assert pc.count_distinct(ids).as_py() == again.num_rows
    names = [e.name for e in locate(storage_root).files(recursive=True)]
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind


def test_a_narrower_rerun_replaces_only_its_symbols_and_range(storage_root):
    write(storage_root, predictions(value=0.5), scope())
    start, end = START + DAY - 30 * MINUTE, START + DAY + 30 * MINUTE  # across midnight
    redone = predictions(symbols=("AAA/USDT",), start=start, minutes=60, value=0.9)
    write(storage_root, redone, scope(("AAA/USDT",), start, end))
    log = _log(storage_root)
    assert log.num_rows == 2 * 2 * 1440
    times, values = log.column("open_time").to_numpy(), log.column("value").to_numpy()
    is_a = np.array(log.column("symbol").to_pylist()) == "AAA/USDT"
    inside = is_a & (times >= start) & (times < end)
    assert inside.sum() == 60
    np.testing.assert_array_equal(values[inside], 0.9)
    np.testing.assert_array_equal(values[~inside], 0.5)


def test_a_rerun_with_fewer_rows_leaves_none_of_the_old_ones(storage_root):
    write(storage_root, predictions(), scope())
    write(storage_root, predictions(step=2), scope())  # half the candles this time
    log = _log(storage_root)
    assert log.num_rows == 2 * 1440
    assert (log.column("open_time").to_numpy() % (2 * MINUTE) == START % (2 * MINUTE)).all()


def test_a_range_emptied_by_a_rerun_removes_its_files(storage_root):
    write(storage_root, predictions(), scope())
    day_two = START + DAY
    writer = PartitionedWriter(storage_root, PREDICTION_SCHEMA)
    assert writer.clear(scope(start=day_two, end=day_two + DAY)) == 2 * 1440
    assert not partition_file(locate(storage_root), "2026-01-02", "1m", MODEL.key).exists()
    assert partition_file(locate(storage_root), "2026-01-01", "1m", MODEL.key).exists()


def test_rows_appended_twice_without_a_clear_are_still_stored_once(storage_root):
    writer = PartitionedWriter(storage_root, PREDICTION_SCHEMA, flush_rows=1000)
    table = predictions(minutes=600)
    for piece in (table.slice(0, 700), table.slice(500)):  # overlapping pieces, small flushes
        writer.append(piece)
    writer.flush()
    log = read_log(storage_root)
    assert log.num_rows == table.num_rows
    assert pc.count_distinct(log.column("event_id")).as_py() == table.num_rows
