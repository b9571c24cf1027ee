"""PredictionSink actor: the latest store and the Parquet logs, fed by every shard."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pyarrow as pa
import ray

from orchestrator import resolve_path
from orchestrator.config import SinkConfig
from orchestrator.sinks.latest import LatestStore
from orchestrator.sinks.parquet_log import ParquetLog

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1)
class PredictionSink:
    def __init__(self, config: SinkConfig):
        self._config = config
        root = resolve_path(config.log_dir)
        self._latest = LatestStore()
        self._predictions = ParquetLog(root, config.flush_rows)
        self._features = ParquetLog(root.parent / f"{root.name}-features", config.flush_rows)
        self._received = 0
        self._flusher: asyncio.Task | None = None
        self._recorded = asyncio.Event()  # set on every record: wakes stream long-polls

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def record(self, predictions: pa.Table) -> None:
        self._ensure_flusher()
        self._received += predictions.num_rows
        self._latest.update(predictions)
        self._predictions.append(predictions)
        self._recorded.set()
        self._recorded.clear()

    async def record_features(self, rows: pa.Table) -> None:
        self._ensure_flusher()
        self._features.append(rows)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.flush_seconds)
            try:
                self._flush_all()
            except OSError:
                log.exception("log flush failed; rows stay buffered for the next flush")

    def _flush_all(self) -> int:
        return self._predictions.flush() + self._features.flush()

    async def latest(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        return self._latest.rows(symbol, timeframe)

    async def since(self, cursor: int, timeout_s: float = 1.0) -> tuple[int, list[dict], bool]:
        """Predictions after ``cursor``; waits up to ``timeout_s`` when there are none yet."""
        result = self._latest.since(cursor)
        if result[1] or timeout_s <= 0:
            return result
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recorded.wait(), timeout_s)
        return self._latest.since(cursor)

    async def flush(self) -> int:
        return self._flush_all()

    async def status(self) -> dict:
        return {
            "received": self._received,
            "written": self._predictions.rows_written,
            "feature_rows_written": self._features.rows_written,
            "latest_keys": len(self._latest),
        }
