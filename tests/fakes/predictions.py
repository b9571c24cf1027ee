"""Prediction rows as the shards build them, for tests of what consumes them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from orchestrator.stream.events import ModelOutput, TickRows, build_predictions


def direction_predictions(
    open_time: int,
    symbols: Sequence[str] = ("A/USDT", "B/USDT"),
    prob_up: float | Sequence[float] = 0.65,
    *,
    version: str = "v1",
    close: float = 10.0,
    emitted_at_ms: float = 0.0,
    now_ms: float = 5.0,
) -> pa.Table:
    """direction-1m predictions of ``symbols`` on exchange ``x`` for one 1m candle;
    ``prob_up`` one value for all, or one per symbol."""
    n = len(symbols)
    rows = TickRows(
        np.array(["x"] * n, dtype=object),
        np.array(symbols, dtype=object),
        "1m",
        np.full(n, open_time, dtype=np.int64),
        np.full(n, close),
        emitted_at_ms=emitted_at_ms,
    )
    values = np.broadcast_to(np.asarray(prob_up, dtype=np.float64), (n,))[:, None]
    out = ModelOutput("direction-1m", "direction", version, ("prob_up",), values)
    return build_predictions(out, rows, now_ms, 0.6, 0.7)
