"""The state of one feature shard: candles in, one feature matrix per timeframe tick out.

Pure (no Ray): the FeatureShard actor is a thin shell that forwards candle batches here
and sends each resulting tick to the model deployments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from orchestrator.features import IncrementalFeatures, warm_rows


@dataclass(frozen=True)
class FeatureTick:
    """Warm feature rows of every symbol whose ``timeframe`` candle closed at ``open_time``."""

    timeframe: str
    exchange: np.ndarray
    symbol: np.ndarray
    open_time: np.ndarray
    features: np.ndarray  # (n, len(FEATURE_NAMES)), every required feature finite
    cold: int  # rows that closed but were still warming up


class ShardState:
    def __init__(self, timeframes: tuple[str, ...] = ("1m",)):
        if timeframes != ("1m",):
            raise ValueError("only the 1m timeframe is computed so far")
        self.timeframes = timeframes
        self.engine = IncrementalFeatures()
        self.candles_in = 0

    def process(self, batch: pa.RecordBatch) -> list[FeatureTick]:
        """Update features with ``batch`` (1m candles, time-ordered) and return its ticks."""
        cols = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
        self.candles_in += batch.num_rows
        ticks = []
        for start, stop in _runs_of_equal(cols["open_time"]):
            ticks.append(self._tick({k: v[start:stop] for k, v in cols.items()}))
        return ticks

    def _tick(self, cols: dict[str, np.ndarray]) -> FeatureTick:
        keys = np.char.add(np.char.add(cols["exchange"].astype(str), ":"), cols["symbol"].astype(str))
        slots = self.engine.add_symbols(list(keys))
        taker = cols.get("taker_buy_base")
        rows = self.engine.update(
            slots, cols["open_time"], cols["open"], cols["high"], cols["low"], cols["close"],
            cols["volume"], taker_buy_base=taker,
        )
        warm = warm_rows(rows)
        return FeatureTick(
            "1m", cols["exchange"][warm], cols["symbol"][warm], cols["open_time"][warm],
            rows[warm], int((~warm).sum()),
        )

    def snapshot(self) -> dict:
        return {"engine": self.engine.snapshot(), "candles_in": self.candles_in}


def _runs_of_equal(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive equal values in a sorted array."""
    if len(values) == 0:
        return []
    edges = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate([[0], edges, [len(values)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
