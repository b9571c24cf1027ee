"""Closed candles consumed from Kafka topics (``kind: kafka``), with confluent-kafka.

The consumer is assigned every partition of the configured topics (no group rebalancing:
one feed actor reads them all) and reads with ``isolation.level=read_committed``. Where it
starts: the feed's own checkpoint when there is one (``snapshot``: the next offset of every
partition read); otherwise ``start`` in the config: the group's committed offsets (the
earliest where none), the earliest or latest, or the first offsets at a time.

**Offsets are committed to the group only after the feed's checkpoint** (``commit``), and
the feed checkpoints only once the shards have checkpointed, which they do only after the
sink confirmed their predictions durable: a crash anywhere re-reads from the last checkpoint,
and the shards and the sink drop what they already have.

Messages are decoded by ``orchestrator.market.formats`` (tickcast JSON, Binance kline events,
cryptofeed candles); what cannot be decoded is handed to the feed's quarantine
(``take_rejects``), counted per reason, and never stops the feed.
"""

from __future__ import annotations

import asyncio
import logging

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from orchestrator.config import KafkaConnection, KafkaFeedConfig
from orchestrator.market.formats import decode_candles, encode_candles
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.validate import Rejects, table_to_batch

log = logging.getLogger(__name__)
TIME_ORDER = [("open_time", "ascending"), ("symbol", "ascending")]
METADATA_TIMEOUT_S = 10.0


class KafkaFeedError(RuntimeError):
    """The topics cannot be read (missing, unauthorised, no broker): the feed retries."""


class _Origins:
    """Where each message came from, formatted only for the few that are rejected."""

    def __init__(self, messages: list):
        self._messages = messages

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, i: int) -> str:
        m = self._messages[i]
        return f"{m.topic()}/{m.partition()}@{m.offset()}"


class KafkaSource:
    def __init__(self, config: KafkaFeedConfig, state: dict | None = None, name: str = "kafka"):
        self.exchange = config.exchange
        self._config = config
        self._any_symbol = config.symbols is None
        self.symbols: tuple[str, ...] = tuple(config.symbols or ())
        self._seen: set[str] = set(self.symbols)
        self.group_id = config.group_id or f"tickcast-{name}"
        self._consumer = Consumer(
            config.client_config(
                {
                    "group.id": self.group_id,
                    "client.id": f"tickcast-{name}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
        )
        # The next offset to read per (topic, partition): what a checkpoint records.
        self._positions: dict[tuple[str, int], int] = dict(state["offsets"]) if state else {}
        self._partitions: list[tuple[str, int]] = []
        self._at_end: set[tuple[str, int]] = set()
        # Partitions started at a time: messages stamped before it are passed over until the
        # first one at or after it (a broker's offset for a time may be coarser: tansu's is
        # the partition's start).
        self._not_before: dict[tuple[str, int], int] = {}
        self._rejects: list[Rejects] = []
        self._counters = {"messages": 0, "candles": 0, "not_closed": 0, "rejected": 0}
        self._errors = 0
        self._last_error: str | None = None

    # --- FeedSource ----------------------------------------------------------------------
    async def next_batch(self) -> pa.RecordBatch | None:
        if not self._partitions:
            await asyncio.to_thread(self._assign)
        messages = await asyncio.to_thread(
            self._consumer.consume, self._config.max_messages, self._config.poll_s
        )
        readable = [m for m in messages if self._readable(m)]
        if not readable:
            if self._config.stop_at_end and len(self._at_end) == len(self._partitions):
                return None
            return table_to_batch(CANDLE_SCHEMA.empty_table())
        decoded = decode_candles(
            [m.value() for m in readable], self.exchange, self._config.format, _Origins(readable)
        )
        if len(decoded.rejects):
            self._rejects.append(decoded.rejects)
        candles = decoded.candles
        self._counters["messages"] += len(readable)
        self._counters["candles"] += candles.num_rows
        self._counters["not_closed"] += decoded.not_closed
        self._counters["rejected"] += len(decoded.rejects)
        if self._any_symbol and candles.num_rows:
            new = set(pc.unique(candles.column("symbol")).to_pylist()) - self._seen
            if new:  # the tuple is rebuilt only when a symbol appears, not per batch
                self._seen |= new
                self.symbols = tuple(sorted(self._seen))
        return table_to_batch(candles.sort_by(TIME_ORDER))

    def _readable(self, message) -> bool:
        """Records the message's position; False for an event that is not a message."""
        key = (message.topic(), message.partition())
        error = message.error()
        if error is None:
            self._positions[key] = message.offset() + 1
            self._at_end.discard(key)
            if key in self._not_before:
                if message.timestamp()[1] < self._not_before[key]:
                    return False
                del self._not_before[key]
            return True
        if error.code() == KafkaError._PARTITION_EOF:
            self._at_end.add(key)
            return False
        self._errors += 1
        self._last_error = str(error)
        if error.fatal():
            raise KafkaFeedError(f"kafka feed on {self._config.topics}: {error}")
        return False

    def _assign(self) -> None:
        metadata = self._consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        partitions = []
        for topic in self._config.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                detail = found.error if found is not None else "not found"
                raise KafkaFeedError(
                    f"topic {topic!r} on {self._config.bootstrap_servers}: {detail}"
                )
            partitions += [(topic, p) for p in sorted(found.partitions)]
        starts = self._starts([tp for tp in partitions if tp not in self._positions])
        self._consumer.assign(
            [
                TopicPartition(topic, p, self._positions.get((topic, p), starts.get((topic, p))))
                for topic, p in partitions
            ]
        )
        self._partitions = partitions
        log.info(
            "kafka feed: reading %d partitions of %s (group %s)",
            len(partitions),
            ", ".join(self._config.topics),
            self.group_id,
        )

    def _starts(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Start offsets of partitions the checkpoint does not know (the config's ``start``)."""
        if not partitions:
            return {}
        start = self._config.start
        if start == "earliest":
            return dict.fromkeys(partitions, OFFSET_BEGINNING)
        if start == "latest":
            return dict.fromkeys(partitions, OFFSET_END)
        tps = [TopicPartition(t, p) for t, p in partitions]
        if start == "committed":
            found = self._consumer.committed(tps, timeout=METADATA_TIMEOUT_S)
            return {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                for tp in found
            }
        at = self._config.start_ms
        found = self._consumer.offsets_for_times(
            [TopicPartition(t, p, at) for t, p in partitions], timeout=METADATA_TIMEOUT_S
        )
        self._not_before.update(dict.fromkeys(partitions, at))
        return {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_END for tp in found
        }

    async def close(self) -> None:
        await asyncio.to_thread(self._consumer.close)

    def status(self) -> dict:
        return {
            "kind": "kafka",
            "topics": list(self._config.topics),
            "group_id": self.group_id,
            "partitions": len(self._partitions),
            "partitions_at_end": len(self._at_end),
            "symbols": len(self.symbols),
            "errors": self._errors,
            "last_error": self._last_error,
            **self._counters,
        }

    # --- capabilities ----------------------------------------------------------------------
    def takes_any_symbol(self) -> bool:
        return self._any_symbol

    def take_rejects(self) -> list[Rejects]:
        taken, self._rejects = self._rejects, []
        return taken

    def snapshot(self) -> dict:
        return {"offsets": dict(self._positions)}

    async def commit(self, snapshot: dict) -> None:
        """The checkpointed positions become the group's committed offsets."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in snapshot["offsets"].items()]
        if offsets:
            await asyncio.to_thread(self._consumer.commit, offsets=offsets, asynchronous=False)


def candle_producer(connection: KafkaConnection) -> Producer:
    return Producer(connection.client_config({"enable.idempotence": True, "linger.ms": 20}))


def publish_candles(
    connection: KafkaConnection,
    topic: str,
    candles: pa.Table,
    format: str = "tickcast",
    producer: Producer | None = None,
) -> int:
    """Writes ``candles`` to ``topic`` as closed-candle messages of ``format``, keyed by
    symbol (one symbol's candles stay in order in one partition), in the table's order:
    what an upstream producer does (``tickcast kafka-produce``, tests, the benchmark)."""
    producer = producer or candle_producer(connection)
    keys = candles.column("symbol").to_pylist()
    # Each message stamped with the instant its candle closed: a feed started at a time
    # replays from the candles that closed then.
    stamps = pc.add(candles.column("close_time"), 1).to_pylist()
    for key, value, stamp in zip(keys, encode_candles(candles, format), stamps, strict=True):
        while True:
            try:
                producer.produce(topic, value, key.encode(), timestamp=stamp)
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(60)
    if left:
        raise KafkaFeedError(f"{left} candles not delivered to {topic}")
    return len(keys)
