"""Prediction rows as the shards build them, for tests of what consumes them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from orchestrator.stream.events import ModelOutput, TickRows, build_predictions


def direction_predictions(
    open_time: int, symbols=("A/USDT", "B/USDT"), prob_up: float = 0.65
) -> pa.Table:
    """direction-1m v1 predictions of ``symbols`` on exchange ``x`` for one 1m candle."""
    n = len(symbols)
    rows = TickRows(
        np.array(["x"] * n, dtype=object),
        np.array(symbols, dtype=object),
        "1m",
        np.full(n, open_time),
        np.full(n, 10.0),
        emitted_at_ms=0.0,
    )
    out = ModelOutput("direction-1m", "direction", "v1", ("prob_up",), np.full((n, 1), prob_up))
    return build_predictions(out, rows, 5.0, 0.6, 0.7)
