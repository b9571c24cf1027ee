"""PredictionSink actor: the latest store, the Parquet logs and the stream tail, fed by every
shard, writing each prediction key exactly once.

A ``record`` call returns only once its rows are in the write-ahead log, so when a shard's
checkpoint says they were delivered, they survive a crash of this actor. Replayed rows (a
shard or feed restored from a checkpoint predicts some candles again) are recognised by
their event id and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

import pyarrow as pa
import ray

from orchestrator.actors import every_batch
from orchestrator.config import SinkConfig
from orchestrator.health.log_limit import limit_logging
from orchestrator.health.outage import Outage
from orchestrator.sinks.bus_link import BusLink
from orchestrator.sinks.compaction import Compactor
from orchestrator.sinks.dedupe import SeenKeys, recent_event_ids, recently_written_event_ids
from orchestrator.sinks.latest import LatestStore
from orchestrator.sinks.parquet_log import ParquetLog
from orchestrator.sinks.redis_bus import RedisStreamBus
from orchestrator.sinks.wal import WriteAheadLog
from orchestrator.storage import Location, locate
from orchestrator.stream.events import PREDICTION_SCHEMA, published_only
from orchestrator.stream.outcomes import OUTCOME_SCHEMA

if TYPE_CHECKING:
    from orchestrator.sinks.kafka_out import KafkaOutbox

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1)
class PredictionSink:
    def __init__(self, config: SinkConfig):
        limit_logging()  # a failure repeated per batch is a few lines, then a count
        self._config = config
        root = locate(config.log_dir)
        self._latest = LatestStore()
        self._predictions = ParquetLog(root, config.flush_rows)
        self._features = ParquetLog(root.sibling("features"), config.flush_rows)
        self._wal = WriteAheadLog(root.sibling("wal"), PREDICTION_SCHEMA)
        # What replays can repeat: the log's newest dates (a live feed's) and the files it
        # took in its last dedupe_window_s of writing, whatever their dates (a replay of
        # other days, a second feed's). The same for outcomes: a restored shard scores its
        # replayed predictions again.
        self._seen = SeenKeys()
        self._seen.add(recent_event_ids(root))
        self._seen.add(recently_written_event_ids(root, config.dedupe_window_s))
        outcome_root = root.sibling("outcomes")
        self._outcomes_seen = SeenKeys()
        self._outcomes_seen.add(recent_event_ids(outcome_root))
        self._outcomes_seen.add(recently_written_event_ids(outcome_root, config.dedupe_window_s))
        self._outcome_log = ParquetLog(outcome_root, config.flush_rows)
        # Outcomes have their own WAL: a shard checkpoints once the sink took them, and a
        # restored shard does not score those predictions again.
        self._outcome_wal = WriteAheadLog(outcome_root.sibling("wal"), OUTCOME_SCHEMA)
        for parquet_log in (self._predictions, self._features, self._outcome_log):
            parquet_log.remove_torn_flushes()
        self._bus = _bus_or_none(config)
        self._kafka = _kafka_or_none(config, root)
        self._kafka_pump: asyncio.Task | None = None
        self._counters = {"outcomes": 0, "unpublished": 0}  # unpublished: logged, not signals
        self._received = 0
        self._recover()
        self._compactors = [
            Compactor(log.root, config.compact_fanout, config.compact_closed_after_s)
            for log in (self._predictions, self._features, self._outcome_log)
        ]
        self._compacted_at = -float("inf")  # a first pass soon after start: old files pile up
        self._compacting: asyncio.Task | None = None
        self._flusher: asyncio.Task | None = None
        self._recorded = asyncio.Event()  # set on every record: wakes stream long-polls

    def _recover(self) -> None:
        """Rows confirmed before a crash but not yet in the Parquet logs are written now."""
        pending = self._seen.keep_new(self._wal.recover())
        outcomes = self._outcomes_seen.keep_new(self._outcome_wal.recover())
        if pending.num_rows:
            self._latest.update(published_only(pending))
            self._predictions.append(pending)
        if outcomes.num_rows:
            self._outcome_log.append(outcomes)
        if pending.num_rows or outcomes.num_rows:
            self._flush_all()
            log.info(
                "sink: recovered %d predictions and %d outcomes from the write-ahead logs",
                pending.num_rows,
                outcomes.num_rows,
            )
        self._wal.truncate()
        self._outcome_wal.truncate()

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())
        if self._kafka is not None and self._kafka_pump is None:
            self._kafka_pump = asyncio.get_running_loop().create_task(self._pump_kafka())

    async def _pump_kafka(self) -> None:
        """Every ``kafka.flush_seconds``: what waits for Kafka goes in one transaction."""
        assert self._kafka is not None
        more = False
        while True:
            await asyncio.sleep(0 if more else self._kafka.config.flush_seconds)
            try:
                more = await self._kafka.pump()  # a backlog: the next transaction at once
            except Exception:  # never the end of the pump: the outbox keeps what waits
                more = False
                log.exception("kafka sink: pump failed")

    async def record(self, predictions: pa.Table) -> int:
        """Keep the rows never seen before; returns how many were new. Every new row goes
        to the log; only the published ones (not a shadow's, not the side of a canary split
        that is not the signal) to the latest store, the stream, Redis and Kafka."""
        self._ensure_flusher()
        self._received += predictions.num_rows
        fresh = self._seen.keep_new(predictions)
        if fresh.num_rows:
            signals = published_only(fresh)
            self._counters["unpublished"] += fresh.num_rows - signals.num_rows
            if self._kafka is not None and signals.num_rows:  # first: every signal in the
                # WAL is in the outbox too
                self._kafka.add_predictions(signals)
            self._wal.append(fresh)
            self._latest.update(signals)
            if self._predictions.append(fresh):
                self._wal.truncate()
            self._publish(signals)
            self._recorded.set()
            self._recorded.clear()
        return fresh.num_rows

    def _publish(self, fresh: pa.Table) -> None:
        """Downstream consumers get every new prediction; a Redis outage is one warning, a
        bounded buffer and a backoff (``BusLink``), and never stops the pipeline (the Parquet
        log stays the record of truth)."""
        if self._bus is not None:
            self._bus.publish(fresh)

    @every_batch
    async def deliver(self, ticks: list[tuple]) -> None:
        """One shard call: per timeframe, the predictions and/or the outcomes the shard
        scored (either may be None)."""
        for predictions, outcomes in ticks:
            if predictions is not None:
                await self.record(predictions)
            if outcomes is not None:
                self.record_outcomes(outcomes)

    def record_outcomes(self, outcomes: pa.Table) -> None:
        fresh = self._outcomes_seen.keep_new(outcomes)
        if fresh.num_rows:
            self._counters["outcomes"] += fresh.num_rows
            self._outcome_wal.append(fresh)
            if self._outcome_log.append(fresh):
                self._outcome_wal.truncate()
            if self._kafka is not None:
                self._kafka.add_outcomes(fresh)

    @every_batch
    async def record_features(self, rows: pa.Table) -> None:
        self._ensure_flusher()
        self._features.append(rows)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.flush_seconds)
            try:
                self._flush_all()
            except OSError:
                log.exception("log flush failed; rows stay buffered (and in the WAL)")
            if self._bus is not None and self._bus.outage.ready():
                self._bus.flush()  # a quiet pipeline still drains what waited out an outage
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        """The logs' small files merged in a thread beside the event loop (files are
        immutable, so flushes go on meanwhile); one pass at a time."""
        every = self._config.compact_every_s
        if not every or time.monotonic() - self._compacted_at < every:
            return
        if self._compacting is not None and not self._compacting.done():
            return
        self._compacted_at = time.monotonic()
        self._compacting = asyncio.get_running_loop().create_task(self._compact())

    async def _compact(self) -> None:
        for compactor in self._compactors:
            try:
                await asyncio.to_thread(compactor.run)
            except Exception as exc:  # a log stays readable unmerged: warn, try next time
                compactor.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("compaction of %s failed: %s", compactor.root, exc)

    def _flush_all(self) -> int:
        written = self._predictions.flush()
        if not self._predictions.pending_rows:
            self._wal.truncate()
        outcomes = self._outcome_log.flush()
        if not self._outcome_log.pending_rows:
            self._outcome_wal.truncate()
        return written + self._features.flush() + outcomes

    @every_batch
    async def since(self, cursor: int, timeout_s: float = 1.0) -> tuple[int, list[dict], bool]:
        """Predictions after ``cursor``; waits up to ``timeout_s`` when there are none yet."""
        result = self._latest.since(cursor)
        if result[1] or timeout_s <= 0:
            return result
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recorded.wait(), timeout_s)
        return self._latest.since(cursor)

    @every_batch
    async def latest(self, symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
        return self._latest.rows(symbol, timeframe)

    @every_batch
    async def snapshot(self) -> tuple[int, list[dict]]:
        """For a stream's start: the latest rows and the ``since`` cursor they are current at."""
        return self._latest.snapshot()

    def forget(self, exchange: str, symbols: list[str]) -> int:
        """Symbols removed from their feed leave /v1/predictions/latest."""
        return self._latest.forget(exchange, symbols)

    async def flush(self) -> int:
        return self._flush_all()

    def pid(self) -> int:
        return os.getpid()

    @every_batch
    async def status(self) -> dict:
        return {
            "received": self._received,
            "duplicates_dropped": self._seen.duplicates,
            "written": self._predictions.rows_written,
            "buffered": self._predictions.pending_rows,
            "feature_rows_written": self._features.rows_written,
            "latest_keys": len(self._latest),
            "compaction": self._compactors[0].stats.as_dict(),
            **self._counters,
            **self._bus_status(),
            "kafka": self._kafka_status(),
        }

    def _kafka_status(self) -> dict:
        if self._kafka is None:
            return {"state": "off"}
        link = self._kafka.status()
        state = "down" if not link["up"] else "up" if link["tried"] else "not tried yet"
        return {"state": state, "servers": self._kafka.config.bootstrap_servers, **link}

    def _bus_status(self) -> dict:
        if self._bus is None:
            return {"bus_published": 0, "bus_errors": 0, "bus": {"state": "off"}}
        link = self._bus.status()
        state = "down" if not link["up"] else "up" if link["tried"] else "not tried yet"
        return {
            "bus_published": link["published"],
            "bus_errors": link["failed_attempts"],
            "bus": {"state": state, "url": self._bus.bus.url, **link},
        }


def _kafka_or_none(config: SinkConfig, root: Location) -> KafkaOutbox | None:
    if config.kafka is None:
        return None
    from orchestrator.sinks.kafka_out import KafkaOutbox  # confluent-kafka only when used

    name = f"kafka {config.kafka.bootstrap_servers}"
    outage = Outage(name, log, max_backoff_s=config.kafka.max_backoff_s)
    return KafkaOutbox(config.kafka, root.sibling("kafka-outbox"), outage)


def _bus_or_none(config: SinkConfig) -> BusLink | None:
    if config.redis_url is None:
        return None
    bus = RedisStreamBus(config.redis_url, stream=config.redis_stream, maxlen=config.redis_maxlen)
    outage = Outage(f"event bus {bus.url}", log, max_backoff_s=config.bus_max_backoff_s)
    return BusLink(bus, outage, max_rows=config.bus_buffer_rows)
