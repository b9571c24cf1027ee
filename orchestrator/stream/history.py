"""The last candles of every series a shard holds, per timeframe, for charts (pure).

A ring of ``size`` candles per slot: column (open_time / step) mod size, as the outcome
tracker's ring, so writing a tick is one fancy-indexed assignment per column. It is not
checkpointed: after a restart it fills again as candles close (a chart starts short).
"""

from __future__ import annotations

import numpy as np

from orchestrator.market.timeframes import timeframe_ms

COLUMNS = ("open", "high", "low", "close", "volume")


class CandleHistory:
    def __init__(self, timeframe: str, size: int = 200, n_slots: int = 0):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.timeframe, self.size, self.step = timeframe, size, timeframe_ms(timeframe)
        self.open_time = np.full((n_slots, size), -1, dtype=np.int64)
        self.values = {c: np.full((n_slots, size), np.nan) for c in COLUMNS}

    @property
    def n_slots(self) -> int:
        return len(self.open_time)

    def resize(self, n_slots: int) -> None:
        """Room for ``n_slots`` symbols; never shrinks (``drop_slots`` removes symbols)."""
        grow = n_slots - self.n_slots
        if grow <= 0:
            return
        self.open_time = np.vstack([self.open_time, np.full((grow, self.size), -1, np.int64)])
        for c in COLUMNS:
            self.values[c] = np.vstack([self.values[c], np.full((grow, self.size), np.nan)])

    def write(self, slots: np.ndarray, open_time: np.ndarray, candles: dict) -> None:
        """One closed candle per slot (each slot at most once per call)."""
        slots = np.asarray(slots, dtype=np.int64)
        open_time = np.asarray(open_time, dtype=np.int64)
        column = (open_time // self.step) % self.size
        self.open_time[slots, column] = open_time
        for c in COLUMNS:
            self.values[c][slots, column] = np.asarray(candles[c], dtype=np.float64)

    def forget(self, slots: list[int]) -> None:
        """A symbol that warms up again (an unrepairable gap) starts a new chart."""
        self.open_time[slots] = -1
        for c in COLUMNS:
            self.values[c][slots] = np.nan

    def drop_slots(self, slots: list[int] | np.ndarray) -> None:
        """A symbol removed from the shard takes its chart along; later slots move down."""
        self.open_time = np.delete(self.open_time, slots, axis=0)
        for c in COLUMNS:
            self.values[c] = np.delete(self.values[c], slots, axis=0)

    def read(self, slot: int, limit: int | None = None) -> dict[str, np.ndarray]:
        """The slot's candles, oldest first: ``open_time`` and the OHLCV columns.

        Only the newest unbroken run of the ring counts as history: a column left from an
        older lap (a gap longer than the ring) is older than the newest candle by more than
        the ring spans, and is dropped.
        """
        times = self.open_time[slot]
        kept = times >= 0
        if kept.any():
            kept &= times > times.max() - self.size * self.step
        order = np.argsort(times[kept], kind="stable")
        index = np.flatnonzero(kept)[order]
        if limit is not None:
            index = index[-limit:] if limit > 0 else index[:0]
        return {"open_time": times[index], **{c: self.values[c][slot, index] for c in COLUMNS}}
