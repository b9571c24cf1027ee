"""Idempotent Parquet output beside the live log: the same layout, files replaced, not added.

Rows go where the live ``ParquetLog`` puts them (``date=YYYY-MM-DD/timeframe=TF/``, hive,
partition columns in the path), so ``read_log`` and ``query_log`` read a backfill as they
read the live log. Each partition holds one file per model version,
``backfill-<model_id>@<version>.parquet``, rewritten whole (written aside, then renamed
over the old one; on an object store, uploaded over it: visible only once complete)
whenever rows are added to it.

Re-running a range replaces it: ``clear(scope)`` first removes every stored row of the
run's models and series whose candle closes in the run's range, then ``append`` adds the
new rows (and drops any stored row with the same ``event_id``, so even a row outside the
declared scope is never stored twice). A run that dies part way leaves its range partly
written; running it again repairs it. One writer per root at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator.batch.backfill.features import in_range
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.storage import Location, locate, write_parquet

FILE_PREFIX = "backfill-"
DAY_MS = 86_400_000
# Rows held before they are merged into their files (about 200 bytes each in memory): every
# flush rewrites the partitions it touches, so fewer flushes write less.
DEFAULT_FLUSH_ROWS = 8_000_000
WRITER_THREADS = 4


@dataclass(frozen=True)
class ModelKey:
    model_id: str
    version: str
    timeframe: str

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"


@dataclass(frozen=True)
class Scope:
    """What a run replaces: these models' rows of these series, candles closing in
    ``[start_ms, end_ms)`` (None: unbounded)."""

    models: tuple[ModelKey, ...]
    series: tuple[tuple[str, str, str], ...]  # (exchange, symbol, timeframe)
    start_ms: int | None = None
    end_ms: int | None = None

    def series_keys(self, timeframe: str) -> pa.Array:
        return pa.array(
            [series_key(e, s) for e, s, tf in self.series if tf == timeframe], pa.string()
        )


def series_key(exchange: str, symbol: str) -> str:
    return f"{exchange}\x1f{symbol}"


def partition_file(root: Location, date: str, timeframe: str, model_key: str) -> Location:
    return root / f"date={date}" / f"timeframe={timeframe}" / f"{FILE_PREFIX}{model_key}.parquet"


def utc_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


@dataclass
class PartitionedWriter:
    """Buffers rows of ``schema`` (which has ``timeframe``, ``open_time``, ``model_id``,
    ``model_version`` and ``event_id``) and merges them into their partition files."""

    root: Location | Path | str
    schema: pa.Schema
    flush_rows: int = DEFAULT_FLUSH_ROWS
    rows_written: int = 0
    rows_removed: int = 0
    files_touched: set[Location] = field(default_factory=set)
    _pending: list[pa.Table] = field(default_factory=list)
    _pending_rows: int = 0

    def __post_init__(self) -> None:
        self.root = locate(self.root)
        self.file_schema = pa.schema([f for f in self.schema if f.name != "timeframe"])

    # --- removing a range ----------------------------------------------------------------
    def clear(self, scope: Scope) -> int:
        """Remove the scope's stored rows; returns how many were removed."""
        jobs = [
            (path, scope.series_keys(model.timeframe), model.timeframe, scope)
            for model in scope.models
            for path in self._stored_files(model, scope)
        ]
        removed = sum(_in_threads(lambda job: self._remove_rows(*job), jobs))
        self.rows_removed += removed
        return removed

    def _stored_files(self, model: ModelKey, scope: Scope) -> list[Location]:
        first, last = _date_bounds(scope, model.timeframe)
        name = f"{FILE_PREFIX}{model.key}.parquet"
        folders = (day / f"timeframe={model.timeframe}" for day in self.root.dirs("date="))
        return [
            entry.location
            for folder in folders
            if first <= folder.parent.name.removeprefix("date=") <= last
            for entry in folder.files(prefix=name)
            if entry.name == name
        ]

    def _remove_rows(self, path: Location, keys: pa.Array, timeframe: str, scope: Scope) -> int:
        stored = pq.read_table(path.path, filesystem=path.fs)
        close_time = stored.column("open_time").to_numpy() + (timeframe_ms(timeframe) - 1)
        series = pc.binary_join_element_wise(
            stored.column("exchange"), stored.column("symbol"), "\x1f"
        )
        doomed = pc.is_in(series, keys).to_numpy(zero_copy_only=False) & in_range(
            close_time, scope.start_ms, scope.end_ms
        )
        if doomed.any():
            self._replace(path, stored.filter(pa.array(~doomed)))
        return int(doomed.sum())

    # --- adding rows ---------------------------------------------------------------------
    def append(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self._pending.append(rows)
            self._pending_rows += rows.num_rows
        if self._pending_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> int:
        """Merge every buffered row into its partition file; returns the rows written."""
        if not self._pending_rows:
            return 0
        table = pa.concat_tables(self._pending)
        jobs = [(partition_file(self.root, *names), rows) for names, rows in partitions(table)]
        self.rows_removed += sum(_in_threads(lambda job: self._merge(*job), jobs))
        self._pending, self._pending_rows = [], 0
        self.rows_written += table.num_rows
        return table.num_rows

    def _merge(self, path: Location, rows: pa.Table) -> int:
        """Add ``rows`` to the file; returns how many stored rows they replaced."""
        rows = last_per_event_id(rows.drop_columns(["timeframe"]).cast(self.file_schema))
        replaced = 0
        if path.exists():
            stored = pq.read_table(path.path, filesystem=path.fs).cast(self.file_schema)
            kept = stored.filter(
                pc.invert(pc.is_in(stored.column("event_id"), rows.column("event_id")))
            )
            replaced = stored.num_rows - kept.num_rows
            rows = pa.concat_tables([kept, rows])
        order = [("exchange", "ascending"), ("symbol", "ascending"), ("open_time", "ascending")]
        self._replace(path, rows.sort_by(order))
        return replaced

    def _replace(self, path: Location, table: pa.Table) -> None:
        """Write ``table`` as ``path`` atomically (a reader sees old or new, never half);
        an empty table removes the file."""
        self.files_touched.add(path)  # set.add is atomic: safe from the writer threads
        if table.num_rows == 0:
            path.delete()
            return
        write_parquet(table, path)  # readers (read_log, query_log) never see half of it


def _in_threads(work, jobs: list) -> list:
    """``work`` over ``jobs`` in a few threads: Parquet reads and writes release the GIL, so
    thousands of small partition files go faster than one after another. Every job touches
    its own file."""
    if len(jobs) < 2:
        return [work(job) for job in jobs]
    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        return list(pool.map(work, jobs))


def last_per_event_id(rows: pa.Table) -> pa.Table:
    """The last row of each event id (a later row is the newer prediction of that key)."""
    codes = rows.column("event_id").combine_chunks().dictionary_encode().indices.to_numpy()
    if len(codes) == 0 or len(np.unique(codes)) == len(codes):
        return rows
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    return rows.take(pa.array(np.sort(len(codes) - 1 - first_from_end)))


def partitions(table: pa.Table) -> list[tuple[tuple[str, str, str], pa.Table]]:
    """Rows grouped by (date of open time, timeframe, model_id@version): one reordering of
    the whole table, then zero-copy slices (a take per group cost a pass per group)."""
    if table.num_rows == 0:
        return []
    day = table.column("open_time").to_numpy() // DAY_MS
    names = [
        table.column(c).combine_chunks().dictionary_encode()
        for c in ("model_id", "model_version", "timeframe")
    ]
    codes = day
    for encoded in names:  # one integer per (day, model, version, timeframe)
        codes = codes * len(encoded.dictionary) + encoded.indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    ordered = table.take(pa.array(order)).combine_chunks()
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])
    groups = []
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        first = order[start]
        model_id, version, timeframe = (
            n.dictionary[n.indices[first].as_py()].as_py() for n in names
        )
        key = (utc_date(int(day[first]) * DAY_MS), timeframe, f"{model_id}@{version}")
        groups.append((key, ordered.slice(start, size)))
    return groups


def _date_bounds(scope: Scope, timeframe: str) -> tuple[str, str]:
    """First and last partition date that can hold a row closing inside the scope."""
    step = timeframe_ms(timeframe)
    first = "0000-00-00" if scope.start_ms is None else utc_date(scope.start_ms - step + 1)
    last = "9999-99-99" if scope.end_ms is None else utc_date(max(scope.end_ms - step, 0))
    return first, last
