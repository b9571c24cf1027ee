"""The newest prediction per (exchange, symbol, timeframe, model), and a short replayable
tail of every prediction for live streams (pure).

``/v1/predictions/latest`` reads ``rows``; WebSocket streams read ``since(cursor)``: every
prediction recorded after ``cursor``, as long as it is still in the bounded tail.
"""

from __future__ import annotations

from collections import deque

import pyarrow as pa


class LatestStore:
    def __init__(self, tail: int = 20_000) -> None:
        self._rows: dict[tuple, dict] = {}
        self._tail: deque[tuple[int, dict]] = deque(maxlen=tail)
        self.cursor = 0  # sequence number of the newest recorded prediction

    def update(self, predictions: pa.Table) -> None:
        for row in predictions.to_pylist():
            row["outputs"] = dict(row.get("outputs") or [])
            self.cursor += 1
            self._tail.append((self.cursor, row))
            key = (row["exchange"], row["symbol"], row["timeframe"], row["model_id"])
            current = self._rows.get(key)
            if current is None or row["open_time"] >= current["open_time"]:
                self._rows[key] = row

    def rows(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        selected = [r for r in self._rows.values() if _matches(r, symbol, timeframe)]
        return sorted(selected, key=lambda r: (r["exchange"], r["symbol"], r["timeframe"], r["model_id"]))

    def since(self, cursor: int, limit: int = 5000) -> tuple[int, list[dict], bool]:
        """(new cursor, rows after ``cursor``, whether rows were lost to the tail's bound)."""
        if not self._tail or cursor >= self.cursor:
            return self.cursor, [], False
        oldest = self._tail[0][0]
        lost = cursor + 1 < oldest
        start = max(cursor + 1, oldest) - oldest
        rows = [row for _, row in list(self._tail)[start : start + limit]]
        return max(cursor, oldest - 1) + len(rows), rows, lost

    def __len__(self) -> int:
        return len(self._rows)


def _matches(row: dict, symbol: str | None, timeframe: str | None) -> bool:
    return (symbol is None or row["symbol"] == symbol) and (timeframe is None or row["timeframe"] == timeframe)
