"""Append-only Parquet logs (predictions, feature rows), partitioned by date and timeframe.

Rows are buffered and written as one file per flush and partition (row groups of
``ROW_GROUP_ROWS``; not sorted: the compactor sorts once, and sorting here cost the sink
0.7 us per row), so the log is readable by pyarrow/pandas/DuckDB while the pipeline runs.
Any table with ``open_time`` (epoch ms) and ``timeframe`` columns can be logged. The
sink's compactor merges the small files as they pile up (``compaction``); ``history``
reads pages of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from orchestrator.sinks.compaction import (
    ROW_GROUP_ROWS,
    dictionary_columns,
    live_files,
    partition_folders,
)
from orchestrator.storage import Location, locate
from orchestrator.stream.events import PREDICTION_SCHEMA

DAY_MS = 86_400_000


class ParquetLog:
    def __init__(self, root: Location | Path | str, flush_rows: int = 5000):
        self.root = locate(root)
        self.flush_rows = flush_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows_written = 0

    def remove_torn_flushes(self) -> int:
        """Staging folders a flush killed mid-way left behind (their rows are still in the
        sink's write-ahead log and are written again): call before the first flush."""
        torn = self.root.dirs("_staging-")
        for folder in torn:
            folder.delete_tree()
        return len(torn)

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
        # Locally written beside the log (pyarrow skips "_"-prefixed folders when reading)
        # and then renamed into place, so a reader never opens a half-written file; on an
        # object store each file's upload appears only when complete: written in place.
        target = self.root / f"_staging-{uuid.uuid4().hex}" if self.root.local else self.root
        ds.write_dataset(
            table,
            target.path,
            filesystem=self.root.fs,
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([("date", pa.string()), ("timeframe", pa.string())]), flavor="hive"
            ),
            basename_template=f"part-{uuid.uuid4().hex}-{{i}}.parquet",
            max_rows_per_group=ROW_GROUP_ROWS,
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(
                use_dictionary=dictionary_columns(table.schema)
            ),
        )
        if target != self.root:
            _move_into(target.local_path(), self.root.local_path())
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


def utc_date(ms: int) -> str:
    return utc_dates(pa.array([ms], pa.int64()))[0].as_py()


def read_log(
    root: Location | Path | str,
    empty: pa.Schema = PREDICTION_SCHEMA,
    where: ds.Expression | None = None,
) -> pa.Table:
    """The whole log as one table (its columns plus the partition columns), each row once
    while a compaction runs (see ``compaction.live_files``); ``where`` filters the rows in
    the scan."""
    root = locate(root)
    files = [p.path for folder in partition_folders(root) for p in live_files(folder)]
    if not files:
        return empty.empty_table()
    found = ds.dataset(
        files,
        format="parquet",
        partitioning="hive",
        partition_base_dir=root.path,
        filesystem=root.fs,
    )
    # Files written before a column was added read it as null (the schema inferred from the
    # first file would drop it from every file, or miss it).
    schema = pa.unify_schemas([found.schema, empty])
    return ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning="hive",
        partition_base_dir=root.path,
        filesystem=root.fs,
    ).to_table(filter=where)
