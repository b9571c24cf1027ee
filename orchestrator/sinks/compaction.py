"""Compaction of a Parquet log's small files, invisible to its readers.

The sink writes one file per flush and partition (``part-*.parquet``, a few thousand rows):
an hour at 1,000 symbols is hundreds of files, and every reader pays per file. Per partition
folder (``date=…/timeframe=…``) the compactor merges them by levels: ``fanout`` files of one
level become one file of the next (``compact-L1-…``, ``compact-L2-…``), so a folder being
written holds at most ``fanout`` files per level; a folder nobody wrote for
``closed_after_s`` (a day that is over) is merged into a single file. Files are immutable:
a merge writes a new file and deletes its sources, never rewrites one.

Merged files are sorted by (symbol, model_id, open_time) in row groups of
``row_group_rows``, so a symbol filter reads one or two row groups of a day, the rest pruned
by their statistics.

Readers never see a row twice or miss one: the merged file is published whole (locally
written under a dot-name and renamed into place; on an object store uploaded, visible only
once complete) and names the files it replaces in its footer
(``tickcast.replaces``); ``live_files`` leaves out every file so named. The sources are
deleted only after the publish, so a crash between the two leaves both, the sources
superseded (and deleted by the next run). A reader that listed a source just before it was
deleted re-lists (``FileNotFoundError`` → read the folder again).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.storage import Entry, Location, locate

log = logging.getLogger(__name__)

FLUSH_PREFIX = "part-"  # ParquetLog.flush's files: level 0
COMPACT_PREFIX = "compact-L"
REPLACES_KEY = b"tickcast.replaces"
SORT_COLUMNS = ("symbol", "model_id", "open_time")
# Small enough that a page's second pass (whole rows of the row groups holding it) decodes
# little; large enough that a day's footer stays a few hundred KiB.
ROW_GROUP_ROWS = 10_000
UNIQUE_COLUMNS = ("event_id",)  # a value per row: no dictionary


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The string columns whose values repeat (symbols, models, signals, ...): only they
    are dictionary-encoded. A dictionary tried on the event ids, unique per row, cost a
    quarter of each flush and made the files bigger."""
    return [f.name for f in schema if pa.types.is_string(f.type) and f.name not in UNIQUE_COLUMNS]


# uri -> (mtime, names it replaces): a compacted file never changes once published.
_replaces_cache: dict[str, tuple[float, frozenset[str]]] = {}
_CACHE_LIMIT = 20_000


def live_entries(folder: Location | Path | str) -> list[Entry]:
    """The Parquet files of one partition folder that a reader should read: published whole
    (no ``.``/``_`` prefix) and not replaced by a compacted file beside them."""
    entries = [e for e in locate(folder).files(suffix=".parquet") if e.name[0] not in "._"]
    superseded: set[str] = set()
    for entry in entries:
        if entry.name.startswith(COMPACT_PREFIX):
            superseded |= _replaced_by(entry)
    return [e for e in entries if e.name not in superseded]


def live_files(folder: Location | Path | str) -> list[Location]:
    return [e.location for e in live_entries(folder)]


def _replaced_by(entry: Entry) -> frozenset[str]:
    where = entry.location
    cached = _replaces_cache.get(where.uri)
    if cached is not None and cached[0] == entry.mtime:
        return cached[1]
    try:
        metadata = pq.read_schema(where.path, filesystem=where.fs).metadata or {}
    except FileNotFoundError:  # itself replaced and deleted since the listing
        return frozenset()
    names = frozenset(json.loads(metadata.get(REPLACES_KEY, b"[]")))
    if len(_replaces_cache) >= _CACHE_LIMIT:
        _replaces_cache.clear()
    _replaces_cache[where.uri] = (entry.mtime, names)
    return names


def partition_folders(root: Location | Path | str) -> list[Location]:
    """Every ``date=…/timeframe=…`` folder of a log."""
    return [sub for day in locate(root).dirs("date=") for sub in day.dirs() if "=" in sub.name]


def level_of(name: str) -> int | None:
    """0 for a flush file, n for ``compact-Ln-…``, None for a file compaction leaves alone."""
    if name.startswith(FLUSH_PREFIX):
        return 0
    if name.startswith(COMPACT_PREFIX):
        digits = name[len(COMPACT_PREFIX) :].split("-", 1)[0]
        return int(digits) if digits.isdigit() else None
    return None


def sorted_for_reading(table: pa.Table) -> pa.Table:
    """Symbol-major: a symbol's rows sit in few row groups, the others skipped by statistics."""
    keys = [(c, "ascending") for c in SORT_COLUMNS if c in table.column_names]
    return table.sort_by(keys) if keys else table


@dataclass
class CompactionStats:
    runs: int = 0
    merges: int = 0
    files_merged: int = 0
    rows_merged: int = 0
    leftovers_removed: int = 0
    seconds: float = 0.0
    last_error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self) | {"seconds": round(self.seconds, 3)}


class Compactor:
    def __init__(
        self,
        root: Location | Path | str,
        fanout: int = 8,
        closed_after_s: float = 3600.0,
        row_group_rows: int = ROW_GROUP_ROWS,
        band_rows: int = 200_000,
    ):
        if fanout < 2:
            raise ValueError("fanout must be at least 2")
        self.root = locate(root)
        self.fanout = fanout
        self.closed_after_s = closed_after_s
        self.row_group_rows = row_group_rows
        self.band_rows = band_rows
        self.stats = CompactionStats()

    def run(self, now_s: float | None = None) -> CompactionStats:
        """One pass over every partition folder; ``now_s`` (wall clock) decides which are
        closed. Returns the running totals."""
        started = time.perf_counter()
        now = time.time() if now_s is None else now_s
        self.stats.runs += 1
        self.stats.last_error = None
        for folder in self.partitions():
            try:
                newest = max((e.mtime for e in live_entries(folder)), default=now)
                self.compact(folder, closed=now - newest >= self.closed_after_s)
            except FileNotFoundError:  # the folder changed under the pass: next run
                continue
            except Exception as exc:  # noqa: BLE001 - one bad folder must not stop the rest
                self.stats.last_error = f"{folder.name} of {folder.parent.name}: {exc!r}"[:300]
                log.warning("compaction of %s failed: %s", folder, exc)
        self.stats.seconds += time.perf_counter() - started
        return self.stats

    def partitions(self) -> list[Location]:
        return partition_folders(self.root)

    def _remove_leftovers(self, folder: Location) -> None:
        """Sources a crash left after their merged file was published."""
        live = set(live_files(folder))
        for entry in folder.files(suffix=".parquet"):
            if entry.location not in live and level_of(entry.name) is not None:
                entry.location.delete()
                self.stats.leftovers_removed += 1

    def compact(self, folder: Location | Path | str, closed: bool) -> None:
        """Merge one partition folder's files: by levels, or (``closed``) into one file."""
        folder = locate(folder)
        self._remove_leftovers(folder)
        files = [(p, level_of(p.name)) for p in live_files(folder)]
        ours = [(p, level) for p, level in files if level is not None]
        if len(ours) < 2:
            return
        if closed:
            top = max(level for _, level in ours)
            self._merge(folder, [p for p, _ in ours], top + 1)
            return
        level = 0
        while True:
            group = [p for p, lv in ours if lv == level]
            if not group and level > max(lv for _, lv in ours):
                return
            if len(group) >= self.fanout:
                merged = self._merge(folder, group, level + 1)
                ours = [(p, lv) for p, lv in ours if lv != level] + [(merged, level + 1)]
            level += 1

    def _merge(self, folder: Location, sources: list[Location], level: int) -> Location:
        """One sorted file of ``sources``, written a band of symbols at a time so that memory
        holds a band (about ``band_rows`` rows), not the folder. Merged sources are sorted by
        symbol too, so a band's scan decodes only their row groups that overlap it; flush
        files (unsorted, a few row groups each) are small, and a level-1 merge of them is
        usually a single band."""
        fs = folder.fs
        schema = pa.unify_schemas(
            [pq.read_schema(p.path, filesystem=fs).remove_metadata() for p in sources]
        )
        schema = schema.with_metadata({REPLACES_KEY: json.dumps(sorted(p.name for p in sources))})
        dataset = ds.dataset(
            [p.path for p in sources], schema=schema, format="parquet", filesystem=fs
        )
        target = folder / f"{COMPACT_PREFIX}{level}-{uuid.uuid4().hex}.parquet"
        # Locally written under a dot-name and renamed into place; on an object store the
        # upload itself appears only when complete.
        staging = folder / f".{target.name}.tmp" if folder.local else target
        rows = 0
        with pq.ParquetWriter(
            staging.path, schema, filesystem=fs, use_dictionary=dictionary_columns(schema)
        ) as writer:
            for band in self._bands(dataset):
                table = dataset.to_table(filter=band) if band is not None else dataset.to_table()
                writer.write_table(sorted_for_reading(table), row_group_size=self.row_group_rows)
                rows += table.num_rows
        if staging != target:
            staging.atomic_rename(target)  # published: readers now skip the sources
        for path in sources:
            path.delete()
        self.stats.merges += 1
        self.stats.files_merged += len(sources)
        self.stats.rows_merged += rows
        return target

    def _bands(self, dataset: ds.Dataset) -> list[ds.Expression | None]:
        """Filters cutting the rows into consecutive symbol ranges of about ``band_rows``."""
        if "symbol" not in dataset.schema.names or dataset.count_rows() <= self.band_rows:
            return [None]
        counts = dataset.to_table(columns=["symbol"]).column("symbol").value_counts()
        order = np.argsort(counts.field("values").to_numpy(zero_copy_only=False))
        symbols = counts.field("values").to_numpy(zero_copy_only=False)[order]
        sizes = counts.field("counts").to_numpy()[order]
        bands, first, held = [], 0, 0
        for i, size in enumerate(sizes):
            held += int(size)
            if held >= self.band_rows or i == len(sizes) - 1:
                low, high = symbols[first], symbols[i]
                bands.append((ds.field("symbol") >= low) & (ds.field("symbol") <= high))
                first, held = i + 1, 0
        return bands
