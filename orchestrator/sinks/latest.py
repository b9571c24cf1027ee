"""The newest prediction per (exchange, symbol, timeframe, model): what /v1/predictions/latest shows."""

from __future__ import annotations

import pyarrow as pa


class LatestStore:
    def __init__(self) -> None:
        self._rows: dict[tuple, dict] = {}

    def update(self, predictions: pa.Table) -> None:
        for row in predictions.to_pylist():
            key = (row["exchange"], row["symbol"], row["timeframe"], row["model_id"])
            current = self._rows.get(key)
            if current is None or row["open_time"] >= current["open_time"]:
                self._rows[key] = row

    def rows(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        selected = [
            r
            for r in self._rows.values()
            if (symbol is None or r["symbol"] == symbol) and (timeframe is None or r["timeframe"] == timeframe)
        ]
        return sorted(selected, key=lambda r: (r["exchange"], r["symbol"], r["timeframe"], r["model_id"]))

    def __len__(self) -> int:
        return len(self._rows)
