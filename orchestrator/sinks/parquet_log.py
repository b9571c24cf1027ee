"""Append-only Parquet logs (predictions, feature rows), partitioned by date and timeframe.

Rows are buffered and written as one file per flush (one row group per partition), so the
log is readable by pyarrow/pandas/DuckDB while the pipeline runs. Any table with
``open_time`` (epoch ms) and ``timeframe`` columns can be logged.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from orchestrator.stream.events import PREDICTION_SCHEMA

DAY_MS = 86_400_000


class ParquetLog:
    def __init__(self, root: Path, flush_rows: int = 5000):
        self.root = Path(root)
        self.flush_rows = flush_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows_written = 0

    def append(self, predictions: pa.Table) -> bool:
        """Buffer rows; returns True when this append flushed everything to Parquet."""
        self._pending.append(predictions)
        self._pending_rows += predictions.num_rows
        if self._pending_rows >= self.flush_rows:
            self.flush()
            return True
        return False

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def flush(self) -> int:
        if not self._pending_rows:
            return 0
        table = pa.concat_tables(self._pending)
        table = table.append_column("date", utc_dates(table["open_time"]))
        # Written beside the log (pyarrow skips "_"-prefixed folders when reading) and then
        # renamed into place, so a reader never opens a half-written file.
        staging = self.root / f"_staging-{uuid.uuid4().hex}"
        ds.write_dataset(
            table,
            staging,
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([("date", pa.string()), ("timeframe", pa.string())]), flavor="hive"
            ),
            basename_template=f"part-{uuid.uuid4().hex}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
        _move_into(staging, self.root)
        # Cleared only after the write succeeded: a failed flush keeps its rows for the next one.
        self._pending, self._pending_rows = [], 0
        self.rows_written += table.num_rows
        return table.num_rows


def _move_into(staging: Path, root: Path) -> None:
    for path in sorted(staging.rglob("*.parquet")):
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)  # atomic: the file appears whole or not at all
    shutil.rmtree(staging, ignore_errors=True)


def utc_dates(open_time: pa.ChunkedArray | pa.Array) -> pa.Array:
    """YYYY-MM-DD (UTC) of each epoch-ms time: formatted once per distinct day, not per row
    (strftime per row cost more than writing the Parquet file)."""
    days = np.asarray(open_time, dtype=np.int64) // DAY_MS
    distinct, index = np.unique(days, return_inverse=True)
    names = pc.strftime(pa.array(distinct * DAY_MS, pa.timestamp("ms", tz="UTC")), "%Y-%m-%d")
    return names.take(pa.array(index.astype(np.int32)))


def _utc_date(ms: int) -> str:
    return utc_dates(pa.array([ms], pa.int64()))[0].as_py()


def read_log(root: Path, empty: pa.Schema = PREDICTION_SCHEMA) -> pa.Table:
    """The whole log as one table (its columns plus the `date` partition)."""
    if not Path(root).exists():
        return empty.empty_table()
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


@dataclass(frozen=True)
class HistoryQuery:
    """A page of the prediction log: filters, then ``limit`` rows from ``offset``, ordered by
    (open_time, symbol, model_id)."""

    symbol: str | None = None
    timeframe: str | None = None
    model_id: str | None = None
    start_ms: int | None = None  # inclusive, candle open time
    end_ms: int | None = None  # exclusive
    limit: int = 500
    offset: int = 0


def query_log(root: Path, query: HistoryQuery) -> tuple[list[dict], int]:
    """(rows of the page, total rows matching the filters)."""
    if not Path(root).exists():
        return [], 0
    # The schema is given, not inferred, so an empty log (no file yet) is just empty.
    schema = PREDICTION_SCHEMA.append(pa.field("date", pa.string()))
    dataset = ds.dataset(root, schema=schema, format="parquet", partitioning="hive")
    table = dataset.to_table(filter=_filter(query))
    table = table.sort_by(
        [("open_time", "ascending"), ("symbol", "ascending"), ("model_id", "ascending")]
    )
    page = table.slice(query.offset, query.limit).drop_columns(["date"])
    rows = page.to_pylist()
    for row in rows:
        row["outputs"] = dict(row.get("outputs") or [])
    return rows, table.num_rows


def _filter(query: HistoryQuery) -> ds.Expression | None:
    conditions = []
    for column in ("symbol", "timeframe", "model_id"):
        if getattr(query, column) is not None:
            conditions.append(ds.field(column) == getattr(query, column))
    # The date conditions prune whole partitions (folders) before any file is opened.
    if query.start_ms is not None:
        conditions.append(ds.field("open_time") >= query.start_ms)
        conditions.append(ds.field("date") >= _utc_date(query.start_ms))
    if query.end_ms is not None:
        conditions.append(ds.field("open_time") < query.end_ms)
        conditions.append(ds.field("date") <= _utc_date(max(query.end_ms - 1, 0)))
    if not conditions:
        return None
    expression = conditions[0]
    for condition in conditions[1:]:
        expression = expression & condition
    return expression
