"""Idempotent writes: each prediction key reaches the sinks once, however often it is replayed.

The key is the event id (model id, version, exchange, symbol, timeframe, candle open time).
Replays after a crash repeat recent keys only, so a bounded memory of the newest keys is
enough; it is seeded at start from the log's newest partitions and the write-ahead log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from orchestrator.storage import Location, locate


class SeenKeys:
    """The newest keys, between ``capacity`` / 2 and ``capacity`` of them: two generations of
    sets, the older dropped whole when the newer fills (no per-key eviction)."""

    def __init__(self, capacity: int = 500_000):
        self.capacity = capacity
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self.duplicates = 0

    def add(self, keys) -> None:
        for key in keys:
            if key not in self:
                self._remember([key])

    def keep_new(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` whose event id was never seen (also new within the table)."""
        ids = table.column("event_id").to_pylist()
        if (
            len(set(ids)) == len(ids)
            and self._current.isdisjoint(ids)
            and self._previous.isdisjoint(ids)
        ):
            self._remember(ids)  # the usual case: every row new, checked in C
            return table
        fresh = np.zeros(len(ids), dtype=bool)
        for i, key in enumerate(ids):
            if key not in self:
                self._remember([key])
                fresh[i] = True
        self.duplicates += int((~fresh).sum())
        return table if fresh.all() else table.filter(pa.array(fresh))

    def _remember(self, keys: list[str]) -> None:
        self._current.update(keys)
        if len(self._current) >= max(1, self.capacity // 2):
            self._previous, self._current = self._current, set()

    def __contains__(self, key: str) -> bool:
        return key in self._current or key in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)


def recent_event_ids(log_root: Location | Path | str, partitions: int = 2) -> list[str]:
    """Event ids in the newest ``partitions`` date partitions of a prediction log."""
    root = locate(log_root)
    ids: list[str] = []
    for folder in root.dirs("date=")[-partitions:]:
        dataset = ds.dataset(folder.path, format="parquet", filesystem=folder.fs)
        table = dataset.to_table(columns=["event_id"])
        ids.extend(pc.unique(table.column("event_id")).to_pylist())
    return ids


def recently_written_event_ids(log_root: Location | Path | str, window_s: float) -> list[str]:
    """Event ids in the files of a log written (or merged) within ``window_s`` of its newest
    file: what the log took in its last stretch of writing, whatever the rows' dates."""
    root = locate(log_root)
    files = [
        entry
        for day in root.dirs("date=")
        for entry in day.files(suffix=".parquet", recursive=True)
        if entry.name[0] not in "._"
    ]
    if not files or window_s <= 0:
        return []
    newest = max(entry.mtime for entry in files)
    recent = [e.location.path for e in files if e.mtime >= newest - window_s]
    table = ds.dataset(recent, format="parquet", filesystem=root.fs).to_table(columns=["event_id"])
    return pc.unique(table.column("event_id")).to_pylist()
