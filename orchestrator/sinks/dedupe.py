"""Idempotent writes: each prediction key reaches the sinks once, however often it is replayed.

The key is the event id (model id, version, exchange, symbol, timeframe, candle open time).
Replays after a crash repeat recent keys only, so a bounded memory of the newest keys is
enough; it is seeded at start from the log's newest partitions and the write-ahead log.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds


class SeenKeys:
    def __init__(self, capacity: int = 500_000):
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._seen: set[str] = set()
        self.duplicates = 0

    def add(self, keys) -> None:
        for key in keys:
            if key not in self._seen:
                self._remember(key)

    def keep_new(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` whose event id was never seen (also new within the table)."""
        ids = table.column("event_id").to_pylist()
        fresh = np.zeros(len(ids), dtype=bool)
        for i, key in enumerate(ids):
            if key not in self._seen:
                self._remember(key)
                fresh[i] = True
        self.duplicates += int((~fresh).sum())
        return table if fresh.all() else table.filter(pa.array(fresh))

    def _remember(self, key: str) -> None:
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())

    def __len__(self) -> int:
        return len(self._seen)


def recent_event_ids(log_root, partitions: int = 2) -> list[str]:
    """Event ids in the newest ``partitions`` date partitions of a prediction log."""
    dates = sorted(p for p in Path(log_root).glob("date=*") if p.is_dir())[-partitions:]
    ids: list[str] = []
    for folder in dates:
        table = ds.dataset(folder, format="parquet").to_table(columns=["event_id"])
        ids.extend(pc.unique(table.column("event_id")).to_pylist())
    return ids
