"""The newest prediction per (exchange, symbol, timeframe, model), and a short replayable
tail of every prediction for live streams (pure).

Writes are columnar (one dict update per row, no row objects built); rows become dicts only
when someone reads them. ``/v1/predictions/latest`` reads ``rows``; WebSocket streams read
``since(cursor)``: every prediction recorded after ``cursor``, while it is in the tail.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def newest_row_per_key(predictions: pa.Table) -> np.ndarray:
    """Per (exchange, symbol, timeframe, model_id), the row with the newest open time (the
    later row on a tie): a multi-minute batch repeats every key once per minute."""
    keys = pc.binary_join_element_wise(
        *(predictions.column(c) for c in ("exchange", "symbol", "timeframe", "model_id")), "\x1f"
    )
    codes = pa.chunked_array(keys).combine_chunks().dictionary_encode().indices.to_numpy()
    open_time = predictions.column("open_time").to_numpy()
    order = np.lexsort((np.arange(len(codes)), open_time, codes))
    return order[np.r_[codes[order][1:] != codes[order][:-1], True]]


class LatestStore:
    def __init__(self, tail: int = 20_000) -> None:
        self._tail_rows = tail
        self._where: dict[tuple, tuple[int, int, int]] = {}  # key -> (open_time, table id, row)
        self._tables: dict[int, pa.Table] = {}
        self._segments: deque[tuple[int, pa.Table]] = deque()  # (cursor of first row, rows)
        self._next_table = 0
        self.cursor = 0  # sequence number of the newest recorded prediction

    def update(self, predictions: pa.Table) -> None:
        if predictions.num_rows == 0:
            return
        table_id, self._next_table = self._next_table, self._next_table + 1
        self._tables[table_id] = predictions
        rows = newest_row_per_key(predictions)
        columns = [
            predictions.column(c).take(rows).to_numpy(zero_copy_only=False)
            for c in ("exchange", "symbol", "timeframe", "model_id", "open_time")
        ]
        for row, *key, open_time in zip(rows.tolist(), *columns, strict=True):
            current = self._where.get(tuple(key))
            if current is None or open_time >= current[0]:
                self._where[tuple(key)] = (int(open_time), table_id, row)
        self._segments.append((self.cursor + 1, predictions))
        self.cursor += predictions.num_rows
        self._trim()

    def _trim(self) -> None:
        # Whole segments go, once the rows after them alone fill the tail.
        while self._segments and self.cursor - _last(self._segments[0]) >= self._tail_rows:
            self._segments.popleft()
        live = {t for _, t, _ in self._where.values()}
        for table_id in [t for t in self._tables if t not in live]:
            del self._tables[table_id]

    def forget(self, exchange: str, symbols: list[str]) -> int:
        """Drop the latest predictions of ``symbols`` (removed from their feed); returns how
        many keys went. The stream tail keeps them: it is history, not the current state."""
        gone = set(symbols)
        keys = [k for k in self._where if k[0] == exchange and k[1] in gone]
        for key in keys:
            del self._where[key]
        self._trim()
        return len(keys)

    def rows(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        wanted: dict[int, list[int]] = {}
        for key, (_, table_id, row) in self._where.items():
            if (symbol is None or key[1] == symbol) and (timeframe is None or key[2] == timeframe):
                wanted.setdefault(table_id, []).append(row)
        selected = [r for t, rows in wanted.items() for r in _pylist(self._tables[t].take(rows))]
        return sorted(
            selected, key=lambda r: (r["exchange"], r["symbol"], r["timeframe"], r["model_id"])
        )

    def snapshot(self) -> tuple[int, list[dict]]:
        """The latest rows with the cursor they are current at: ``since(cursor)`` then gives
        exactly what was recorded after them, neither a row twice nor an older one later."""
        return self.cursor, self.rows()

    def since(self, cursor: int, limit: int = 5000) -> tuple[int, list[dict], bool]:
        """(new cursor, rows after ``cursor``, whether rows were lost to the tail's bound)."""
        if not self._segments or cursor >= self.cursor:
            return self.cursor, [], False
        oldest = self._segments[0][0]
        lost = cursor + 1 < oldest
        position, rows = max(cursor, oldest - 1), []
        for first, table in self._segments:
            last = first + table.num_rows - 1
            if last <= position or len(rows) >= limit:
                continue
            start = position + 1 - first
            part = _pylist(table.slice(start, limit - len(rows)))
            rows.extend(part)
            position += len(part)
        return position, rows, lost

    def __len__(self) -> int:
        return len(self._where)


def _last(segment: tuple[int, pa.Table]) -> int:
    return segment[0] + segment[1].num_rows - 1


def _pylist(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for row in rows:
        row["outputs"] = dict(row.get("outputs") or [])
    return rows
