"""FeedActor: runs one feed source behind the closed-candle gate and routes final candles
to the feature shards.

Whatever the source, candles pass validation (bad ones are quarantined and counted), the
exactly-once gate, and gap repair (``fetch_range`` where the source has it) before any shard
sees them. One bad message never stops the feed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from orchestrator.config import ReplayFeedConfig, SyntheticFeedConfig
from orchestrator.market.gate import CandleGate, Gap
from orchestrator.sharding import shard_indices

log = logging.getLogger(__name__)


def build_source(config: SyntheticFeedConfig | ReplayFeedConfig):
    if isinstance(config, SyntheticFeedConfig):
        from orchestrator.feeds.synthetic import SyntheticSource

        return SyntheticSource(config)
    from orchestrator.feeds.replay import ReplaySource

    return ReplaySource(config)


def now_ms() -> int:
    return int(time.time() * 1000)


@ray.remote(max_restarts=-1)
class FeedActor:
    def __init__(self, name: str, config, shards: list):
        self.name = name
        self._source = build_source(config)
        self._gate = CandleGate(self._source.exchange, "1m", symbols=self._source.symbols)
        self._shards = shards
        self._counters = {"batches": 0, "candles": 0, "source_errors": 0, "unrepairable_gaps": 0}
        self._last_open_time: int | None = None
        self._done = False
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                batch = await self._source.next_batch()
            except Exception:  # a source error is counted and retried, never fatal to the feed
                self._counters["source_errors"] += 1
                log.exception("feed %s: source error", self.name)
                await asyncio.sleep(1.0)
                continue
            if batch is None:
                break
            await self._route(self._gate.offer(batch, now_ms()))
            await self._repair_gaps()
        await self._route(self._gate.flush(now_ms() + 10**12))  # a finished source: all is final
        self._done = True
        log.info("feed %s: source exhausted", self.name)

    async def _repair_gaps(self) -> None:
        for gap in self._gate.take_gaps():
            repaired = await self._fetch_gap(gap)
            resolution = self._gate.resolve_gap(gap, repaired, now_ms())
            if resolution.unrepairable:
                self._counters["unrepairable_gaps"] += len(resolution.unrepairable)
                log.warning("feed %s: unrepairable gaps %s", self.name, resolution.unrepairable)
            await self._route(resolution.candles)

    async def _fetch_gap(self, gap: Gap) -> pa.RecordBatch | None:
        fetch = getattr(self._source, "fetch_range", None)
        if fetch is None:
            return None
        try:
            return await fetch(gap.symbol, gap.start_ms, gap.end_ms)
        except Exception:
            log.exception("feed %s: gap repair failed for %s", self.name, gap)
            return None

    async def _route(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        emitted_at_ms = time.time() * 1000.0
        shard_of_row = shard_indices(
            batch.column("exchange").to_numpy(zero_copy_only=False),
            batch.column("symbol").to_numpy(zero_copy_only=False),
            len(self._shards),
        )
        calls = []
        for shard_id in np.unique(shard_of_row):
            part = batch.filter(pa.array(shard_of_row == shard_id))
            calls.append(self._shards[shard_id].on_candles.remote(part, emitted_at_ms))
        # Awaiting the shards is the backpressure: a feed never runs ahead of its slowest shard.
        await asyncio.gather(*calls)
        self._counters["batches"] += 1
        self._counters["candles"] += batch.num_rows
        self._last_open_time = int(pc.max(batch.column("open_time")).as_py())

    def status(self) -> dict:
        return {
            "name": self.name,
            "done": self._done,
            "last_open_time": self._last_open_time,
            "source": self._source.status(),
            "gate": self._gate.status(),
            **self._counters,
        }
