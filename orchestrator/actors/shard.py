"""FeatureShard actor: keeps rolling features for its symbols and calls the models per tick."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pyarrow as pa
import ray

from orchestrator.config import SignalConfig
from orchestrator.events import ModelOutput, TickRows, build_predictions
from orchestrator.shard import FeatureTick, ShardState

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1)
class FeatureShard:
    """One shard of the feature pool.

    ``models`` maps timeframe -> list of model DeploymentHandles; each tick makes exactly one
    call per (model, timeframe) carrying every closed symbol's row, never one per symbol.
    """

    def __init__(self, shard_id: int, timeframes: tuple[str, ...], models: dict, sink, signals: SignalConfig):
        self.shard_id = shard_id
        self._state = ShardState(timeframes)
        self._models = models
        self._sink = sink
        self._signals = signals
        self._counters = {"ticks": 0, "rows_predicted": 0, "rows_cold": 0, "model_errors": 0}

    async def on_candles(self, batch: pa.RecordBatch, emitted_at_ms: float) -> int:
        """Process one batch of closed 1m candles; returns the number of predictions made."""
        made = 0
        for tick in self._state.process(batch):
            made += await self._predict_tick(tick, emitted_at_ms)
        return made

    async def _predict_tick(self, tick: FeatureTick, emitted_at_ms: float) -> int:
        self._counters["ticks"] += 1
        self._counters["rows_cold"] += tick.cold
        if len(tick.features) == 0:
            return 0
        handles = self._models.get(tick.timeframe, [])
        results = await asyncio.gather(
            *(h.predict.remote(tick.features) for h in handles), return_exceptions=True
        )
        rows = TickRows(tick.exchange, tick.symbol, tick.timeframe, tick.open_time, emitted_at_ms)
        tables = [self._to_events(r, rows) for r in results]
        tables = [t for t in tables if t is not None]
        if tables:
            self._sink.record.remote(pa.concat_tables(tables))
        return sum(t.num_rows for t in tables)

    def _to_events(self, result, rows: TickRows) -> pa.Table | None:
        if isinstance(result, BaseException):
            self._counters["model_errors"] += 1
            log.warning("shard %d: model call failed: %s", self.shard_id, result)
            return None
        output = ModelOutput(result["model_id"], result["model_type"], result["version"],
                             np.asarray(result["values"]))
        self._counters["rows_predicted"] += len(output.values)
        now_ms = time.time() * 1000.0
        return build_predictions(output, rows, now_ms, self._signals.high, self._signals.very_high)

    def status(self) -> dict:
        return {"shard": self.shard_id, "candles_in": self._state.candles_in, **self._counters}
