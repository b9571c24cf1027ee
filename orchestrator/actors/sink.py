"""PredictionSink actor: the latest store and the prediction log, fed by every shard."""

from __future__ import annotations

import asyncio
import logging

import pyarrow as pa
import ray

from orchestrator import resolve_path
from orchestrator.config import SinkConfig
from orchestrator.sinks.latest import LatestStore
from orchestrator.sinks.parquet_log import PredictionLog

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1)
class PredictionSink:
    def __init__(self, config: SinkConfig):
        self._config = config
        self._latest = LatestStore()
        self._log = PredictionLog(resolve_path(config.log_dir), config.flush_rows)
        self._received = 0
        self._flusher: asyncio.Task | None = None

    async def record(self, predictions: pa.Table) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        self._received += predictions.num_rows
        self._latest.update(predictions)
        self._log.append(predictions)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.flush_seconds)
            try:
                self._log.flush()
            except OSError:
                log.exception("prediction log flush failed; rows stay buffered")

    async def latest(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        return self._latest.rows(symbol, timeframe)

    async def flush(self) -> int:
        return self._log.flush()

    async def status(self) -> dict:
        return {"received": self._received, "written": self._log.rows_written, "latest_keys": len(self._latest)}
