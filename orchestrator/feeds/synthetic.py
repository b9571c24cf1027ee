"""The synthetic market as a feed source: one 1m candle per symbol per tick."""

from __future__ import annotations

import pyarrow as pa

from orchestrator.config import SyntheticFeedConfig
from orchestrator.feeds.pacing import Pacer
from orchestrator.market.schema import CANDLE_SCHEMA, candles_from_arrays
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.market.validate import table_to_batch


class SyntheticSource:
    """Deterministic, paced, endless unless ``max_minutes`` is set."""

    def __init__(self, config: SyntheticFeedConfig, state: dict | None = None):
        self.exchange = config.exchange
        self.symbols = config.symbol_list()
        self._max_minutes = config.max_minutes
        self._market = (
            SyntheticMarket.from_snapshot(state["market"])
            if state
            else SyntheticMarket(len(self.symbols), seed=config.seed)
        )
        self._emitted = state["emitted"] if state else 0
        self._pacer = Pacer(config.speed)
        self._batch_minutes = config.minutes_per_batch

    async def history(self, minutes: int) -> pa.RecordBatch:
        """The market's first ``minutes`` minutes at once; the live stream continues after."""
        return self._minutes(minutes)

    async def next_batch(self) -> pa.RecordBatch | None:
        minutes = self._batch_minutes
        if self._max_minutes is not None:
            minutes = min(minutes, self._max_minutes - self._emitted)
        if minutes <= 0:
            return None
        await self._pacer.wait()
        self._emitted += minutes
        return self._minutes(minutes)

    def _minutes(self, minutes: int) -> pa.RecordBatch:
        if minutes == 1:
            return self._next_minute()
        batches = [self._next_minute() for _ in range(minutes)]
        return table_to_batch(pa.Table.from_batches(batches, schema=CANDLE_SCHEMA))

    def _next_minute(self) -> pa.RecordBatch:
        minute = self._market.next_minute()
        ohlcv = {k: getattr(minute, k) for k in ("open", "high", "low", "close", "volume")}
        times = [minute.open_time] * len(self.symbols)
        return candles_from_arrays(self.exchange, list(self.symbols), "1m", times, ohlcv)

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict:
        return {"market": self._market.snapshot(), "emitted": self._emitted}

    def status(self) -> dict:
        return {"kind": "synthetic", "symbols": len(self.symbols), "minutes_emitted": self._emitted}
