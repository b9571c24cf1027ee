"""Prediction events and outcomes into Kafka topics, once each for a read_committed reader.

**Messages.** The value is the event as one JSON object (its ``PREDICTION_SCHEMA`` or
``OUTCOME_SCHEMA`` columns; ``outputs`` an object; NaN and infinities null), the key
``exchange:symbol`` (one symbol's events stay in order in one partition), and the header
``event_id`` the idempotent key.

**The outbox.** ``add`` encodes the events, numbers them (``seq``, never reused: the next
number outlives the outbox in ``next-seq``) and appends them to an on-disk outbox (an Arrow
IPC log, flushed to the OS). The sink calls it *before* its own WAL, so every row the WAL
holds is in the outbox, and before it answers the shard, so what the shard's checkpoint
counts as delivered reaches Kafka even if the sink dies. ``pump`` (every
``flush_seconds``) writes what waits in one transaction of an idempotent producer and, in
the same transaction, commits two kinds of consumer-group offsets: the seq after its last
event (group ``<transactional id>.seq``) and, per partition, the offset after its last
message (group ``<transactional id>``, the *marks*). Outbox segments are deleted once their
transaction committed.

**After a crash or a failed transaction** the producer is started again under the same
``transactional.id`` (the broker aborts whatever the old one left open). Of the events
waiting, those below the committed seq are written already (the sink died after a commit,
before deleting them); the others are looked for in the topics with a read_committed read
from the marks to the end, and those found are not written again. Events the shards send
again (the sink died between the outbox and its WAL) are recognised by their topic and
event id and not queued twice. So a read_committed consumer sees each event once whether
the sink died before, during or after a commit. (A broker that hands aborted messages to
read_committed readers, like tansu 0.6, also hands them to this read, so the events are not
written twice there either.)

**Outages** are an ``Outage``: one warning, a capped backoff, one line when the brokers are
back; events wait in a queue bounded by ``buffer_rows`` (past it the oldest are dropped
from the queue and counted; the Parquet log keeps every event).

With ``transactional: false`` the producer is idempotent only: no seq, marks or look-up, so
a sink crash between a write and its outbox deletion writes those events again (at least
once; consumers dedupe on the ``event_id`` header).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from orchestrator.health.outage import Outage
from orchestrator.sinks.wal import WriteAheadLog
from orchestrator.storage import Location, locate

log = logging.getLogger(__name__)

OUTBOX_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("key", pa.binary(), nullable=False),
        pa.field("value", pa.binary(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # the outbox's own order, never reused
    ]
)


MAX_TRANSACTION_ROWS = 50_000  # a backlog after an outage goes out in transactions this big
RESEND_WINDOW_S = 300.0  # how long after a restart shards may still send recovered events


class KafkaSinkSettings(Protocol):
    """What the outbox reads of ``orchestrator.config.KafkaSinkConfig`` (sinks take values,
    not the config module)."""

    bootstrap_servers: str
    predictions_topic: str
    outcomes_topic: str | None
    transactional: bool
    transactional_id: str | None
    flush_seconds: float
    buffer_rows: int
    partitions: int
    replication: int
    timeout_s: float

    def client_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]: ...


class KafkaSinkError(RuntimeError):
    """A write to Kafka did not complete (brokers unreachable, topic missing, fenced)."""


KEY_SEPARATOR = "\x1f"


def message_keys(messages: pa.Table) -> pa.Array:
    """topic + event id: a prediction and its outcome share the event id, not the topic."""
    return pc.binary_join_element_wise(
        messages.column("topic"), messages.column("event_id"), KEY_SEPARATOR
    ).combine_chunks()


def event_messages(events: pa.Table, topic: str) -> pa.Table:
    """Events (predictions or outcomes) as messages for ``topic`` (outbox rows but ``seq``)."""
    key = pc.binary_join_element_wise(events.column("exchange"), events.column("symbol"), ":")
    return pa.Table.from_arrays(
        [
            pa.array(np.full(events.num_rows, topic, dtype=object), pa.string()),
            key.cast(pa.binary()),
            json_objects(events).cast(pa.binary()),
            events.column("event_id"),
        ],
        schema=pa.schema(list(OUTBOX_SCHEMA)[:-1]),
    )


# --- JSON in Arrow: a column at a time, not a row at a time (at 10,000 symbols x 24 models
# the per-row dicts of to_pylist() and orjson cost more than the rest of the sink) ----------


def json_objects(table: pa.Table) -> pa.Array:
    """Each row as one JSON object (the schema's names in order; NaN, infinities and nulls
    as ``null``; a map as an object), byte for byte what ``orjson.dumps(row)`` reads back
    as: a float always has a fraction or exponent (``5.0``). Rows with a string that is not
    printable (a control character) are encoded by orjson instead."""
    parts: list = []
    odd = np.zeros(table.num_rows, dtype=bool)
    for i, field in enumerate(table.schema):
        column = table.column(field.name).combine_chunks()
        text, strange = _json_values(column, field.type)
        if strange is not None:
            odd |= strange
        parts += [("{" if i == 0 else ",") + orjson.dumps(field.name).decode() + ":", text]
    parts.append("}")
    joined = pc.binary_join_element_wise(*parts, "")
    if not odd.any():
        return joined
    rows = table.filter(pa.array(odd)).to_pylist()
    maps = {f.name for f in table.schema if pa.types.is_map(f.type)}
    fixed = pa.array([orjson.dumps(_plain(r, maps)).decode() for r in rows], pa.string())
    values = joined.to_numpy(zero_copy_only=False)
    values[odd] = fixed.to_numpy(zero_copy_only=False)
    return pa.array(values, pa.string())


def _json_values(column: pa.Array, type_: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """The column's values as JSON text (``null`` for nulls), and which rows hold a string
    this fast path cannot escape (control characters)."""
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        encoded = pc.dictionary_encode(column)
        if len(encoded.dictionary) == 0:  # all null
            return pa.array(np.full(len(column), "null", dtype=object)), None
        if len(encoded.dictionary) * 4 < len(column):  # few distinct: each quoted once
            text, strange = _json_strings(encoded.dictionary)
            rows = pc.fill_null(encoded.indices, 0).to_numpy()  # a null row: orjson at worst
            return pc.fill_null(pc.take(text, encoded.indices), "null"), strange[rows]
        text, strange = _json_strings(column)
        return pc.fill_null(text, "null"), strange
    if pa.types.is_floating(type_):
        text = pc.cast(column, pa.string())
        whole = pc.and_(  # "5" -> "5.0"; "1e+300" stays
            pc.fill_null(pc.equal(column, pc.floor(column)), False),
            pc.invert(pc.fill_null(pc.match_substring(text, "e"), True)),
        )
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        finite = pc.is_finite(column)
        return pc.fill_null(pc.if_else(finite, text, pa.scalar(None, pa.string())), "null"), None
    if pa.types.is_integer(type_) or pa.types.is_boolean(type_):
        return pc.fill_null(pc.cast(column, pa.string()), "null"), None
    if pa.types.is_map(type_):
        keys, _ = _json_values(column.keys, column.type.key_type)
        items, _ = _json_values(column.items, column.type.item_type)
        pairs = pc.binary_join_element_wise(keys, ":", items, "")
        lists = pa.ListArray.from_arrays(column.offsets, pairs, mask=column.is_null())
        body = pc.binary_join(lists, ",")
        return pc.fill_null(pc.binary_join_element_wise("{", body, "}", ""), "null"), None
    raise TypeError(f"no JSON encoding for {type_}")


def _json_strings(strings: pa.Array) -> tuple[pa.Array, np.ndarray]:
    escaped = pc.replace_substring(pc.replace_substring(strings, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    printable = pc.fill_null(pc.utf8_is_printable(strings), True)
    return quoted, np.logical_not(printable.to_numpy(zero_copy_only=False))


def _plain(row: dict, maps: set[str]) -> dict:
    return {k: dict(v) if k in maps and v is not None else v for k, v in row.items()}


class KafkaOutbox:
    def __init__(self, config: KafkaSinkSettings, directory: Location | Path | str, outage: Outage):
        self.config, self.outage = config, outage
        self.transactional_id = config.transactional_id or "tickcast-sink"
        self._wal = WriteAheadLog(directory, OUTBOX_SCHEMA)
        self._seq_path = locate(directory) / "next-seq"
        # (number, events, the outbox segment they are in), oldest first
        self._queue: deque[tuple[int, pa.Table, int]] = deque()
        self._next = 0
        self.pending_rows = self.written = self.dropped = self.found_written = 0
        self.transactions = 0
        self.last_commit_s: float | None = None
        self.last_commit_at: float | None = None  # wall clock
        recovered = self._wal.recover()
        self._next_seq = self._saved_next_seq()
        if recovered.num_rows:  # maybe written already: looked up before sending
            self._enqueue(recovered, self._wal.segment - 1)
            self._next_seq = max(self._next_seq, pc.max(recovered.column("seq")).as_py() + 1)
        # Their keys, for a while: a shard may send them again (the sink may have died
        # between this outbox and its WAL), within seconds of the sink being back.
        self._recovered_keys = message_keys(recovered) if recovered.num_rows else None
        self._resends_until = time.monotonic() + RESEND_WINDOW_S
        self._reconcile = recovered.num_rows > 0 and config.transactional
        self.recovered_rows = recovered.num_rows
        self._producer: Producer | None = None
        self._marks: Consumer | None = None  # group <id>: per partition, after our last write
        self._seq_group: Consumer | None = None  # group <id>.seq: the last seq written

    @property
    def topics(self) -> list[str]:
        return [t for t in (self.config.predictions_topic, self.config.outcomes_topic) if t]

    # --- on the sink's event loop ---------------------------------------------------------
    def add_predictions(self, predictions: pa.Table) -> None:
        self.add(event_messages(predictions, self.config.predictions_topic))

    def add_outcomes(self, outcomes: pa.Table) -> None:
        if self.config.outcomes_topic:
            self.add(event_messages(outcomes, self.config.outcomes_topic))

    def add(self, messages: pa.Table) -> None:
        """Durable (in the outbox on disk) when this returns."""
        if self._recovered_keys is not None and time.monotonic() > self._resends_until:
            self._recovered_keys = None
        if self._recovered_keys is not None and messages.num_rows:
            again = pc.is_in(message_keys(messages), self._recovered_keys)
            messages = messages.filter(pc.invert(again))
        if messages.num_rows:
            seq = pa.array(range(self._next_seq, self._next_seq + messages.num_rows), pa.int64())
            self._next_seq += messages.num_rows
            messages = messages.append_column(OUTBOX_SCHEMA.field("seq"), seq)
            segment = self._wal.segment
            self._wal.append(messages)
            self._enqueue(messages, segment)
            self._bound()

    def _saved_next_seq(self) -> int:
        try:
            return int(self._seq_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def _save_next_seq(self) -> None:
        """After outbox segments go, the next seq must outlive them (it orders the writes)."""
        self._seq_path.write_text(str(self._next_seq))  # atomic: the old or the new

    def _enqueue(self, messages: pa.Table, segment: int) -> None:
        self._queue.append((self._next, messages, segment))
        self._next += 1
        self.pending_rows += messages.num_rows

    def _bound(self) -> None:
        while self.pending_rows > self.config.buffer_rows and len(self._queue) > 1:
            _, oldest, _ = self._queue.popleft()
            self.pending_rows -= oldest.num_rows
            self.dropped += oldest.num_rows

    async def pump(self) -> bool:
        """Write the oldest events waiting, up to ``MAX_TRANSACTION_ROWS``, in one
        transaction (in a thread; the sink goes on meanwhile). True if more wait."""
        if not self._queue or not self.outage.ready():
            return False
        self._wal.rotate()  # later events go to a new segment
        taken, rows = [], 0
        for item in self._queue:
            if taken and rows + item[1].num_rows > MAX_TRANSACTION_ROWS:
                break
            taken.append(item)
            rows += item[1].num_rows
        started = time.monotonic()
        try:
            written = await asyncio.to_thread(self._write, [t for _, t, _ in taken])
        except (KafkaSinkError, KafkaException, BufferError) as exc:
            self.outage.failed(str(exc))
            return False
        last = taken[-1][0]
        while self._queue and self._queue[0][0] <= last:
            _, table, _ = self._queue.popleft()
            self.pending_rows -= table.num_rows
        # Segments holding only written events go; one shared with a waiting event stays
        # (after a crash its written events are known by their seq).
        self._wal.drop_through(self._queue[0][2] - 1 if self._queue else self._wal.segment - 1)
        self._save_next_seq()
        self.written += written
        self.transactions += 1
        self.last_commit_s = time.monotonic() - started
        self.last_commit_at = time.time()
        self.outage.succeeded()
        return bool(self._queue)

    # --- in the pump's thread -------------------------------------------------------------
    def _write(self, tables: list[pa.Table]) -> int:
        try:
            if self._producer is None:
                self._start()
            messages = pa.concat_tables(tables)
            if self._reconcile:
                messages = self._not_written(messages)
                self._reconcile = False
            if messages.num_rows:
                self._send(messages)
            return messages.num_rows
        except Exception:
            self._discard_producer()  # a new one fences it and aborts what it left open
            raise

    def _start(self) -> None:
        self._ensure_topics()
        transactional = self.config.transactional
        producer = Producer(
            self.config.client_config(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": int(self.config.timeout_s * 1000),
                    "client.id": self.transactional_id,
                    **(
                        {"transactional.id": self.transactional_id, "transaction.timeout.ms": 60000}
                        if transactional
                        else {}
                    ),
                }
            )
        )
        if transactional:
            producer.init_transactions(self.config.timeout_s)
            self._marks = self._marks or self._consumer(self.transactional_id)
            self._seq_group = self._seq_group or self._consumer(f"{self.transactional_id}.seq")
            self._reconcile = self._reconcile or self.pending_rows > 0
        self._producer = producer

    def _consumer(self, group: str) -> Consumer:
        return Consumer(
            self.config.client_config(
                {
                    "group.id": group,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )

    def _ensure_topics(self) -> None:
        admin = AdminClient(self.config.client_config())
        existing = admin.list_topics(timeout=self.config.timeout_s).topics
        missing = [t for t in self.topics if t not in existing]
        if not missing:
            return
        futures = admin.create_topics(
            [NewTopic(t, self.config.partitions, self.config.replication) for t in missing]
        )
        for topic, future in futures.items():
            try:
                future.result(self.config.timeout_s)
                log.info(
                    "kafka sink: created topic %s (%d partitions)", topic, self.config.partitions
                )
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaSinkError(f"cannot create topic {topic}: {exc}") from None

    def _send(self, messages: pa.Table) -> None:
        producer = self._producer
        assert producer is not None
        transactional = self.config.transactional
        failures: list[str] = []
        ends: dict[tuple[str, int], int] = {}

        def delivered(error, message) -> None:
            if error is not None:
                failures.append(str(error))
            else:
                key = (message.topic(), message.partition())
                ends[key] = max(ends.get(key, 0), message.offset() + 1)

        if transactional:
            producer.begin_transaction()
        columns = [messages.column(n).to_pylist() for n in ("topic", "key", "value", "event_id")]
        for topic, key, value, event_id in zip(*columns, strict=True):
            while True:
                try:
                    producer.produce(
                        topic, value, key, headers=[("event_id", event_id)], on_delivery=delivered
                    )
                    break
                except BufferError:  # the client's queue is full: let it drain
                    producer.poll(0.1)
        if producer.flush(self.config.timeout_s) or failures:
            raise KafkaSinkError(
                f"kafka sink: {len(failures)} events not delivered"
                + (f" ({failures[0]})" if failures else " in time")
            )
        if transactional:
            assert self._marks is not None and self._seq_group is not None
            marks = [TopicPartition(t, p, end) for (t, p), end in ends.items()]
            producer.send_offsets_to_transaction(
                marks, self._marks.consumer_group_metadata(), self.config.timeout_s
            )
            # The seq after the last event of this transaction, committed with it: after a
            # crash, outbox rows below it are known written. An offset is just a number here.
            last_seq = pc.max(messages.column("seq")).as_py()
            producer.send_offsets_to_transaction(
                [TopicPartition(self.config.predictions_topic, 0, last_seq + 1)],
                self._seq_group.consumer_group_metadata(),
                self.config.timeout_s,
            )
            producer.commit_transaction(self.config.timeout_s)

    def _not_written(self, messages: pa.Table) -> pa.Table:
        """Those of ``messages`` a read_committed reader does not see in the topics yet:
        below the committed seq they are written; above it, looked for from the marks on
        (an aborted transaction's events, which a broker may show anyway)."""
        assert self._seq_group is not None
        committed = self._seq_group.committed(
            [TopicPartition(self.config.predictions_topic, 0)], timeout=self.config.timeout_s
        )[0].offset
        below = pc.less(messages.column("seq"), max(committed, 0))
        known = pc.sum(below).as_py() or 0
        messages = messages.filter(pc.invert(below))
        keys = message_keys(messages).to_pylist()
        found = self._written_keys(set(keys)) if keys else set()
        found_count = known + len(found)
        if found_count:
            self.found_written += found_count
            log.info("kafka sink: %d waiting events were already written; not again", found_count)
        seen = set(found)  # and each once: after a crash one can be in the outbox twice
        keep = []
        for key in keys:
            keep.append(key not in seen)
            seen.add(key)
        return messages.filter(pa.array(keep, pa.bool_()))

    def _written_keys(self, wanted: set[str]) -> set[str]:
        """Those of ``wanted`` (``message_keys``) in the topics from the marks on, as a
        read_committed reader sees them."""
        consumer = self._marks
        assert consumer is not None
        metadata = consumer.list_topics(timeout=self.config.timeout_s)
        partitions = [
            TopicPartition(t, p)
            for t in self.topics
            if t in metadata.topics
            for p in sorted(metadata.topics[t].partitions)
        ]
        if not partitions:
            return set()
        marks = consumer.committed(partitions, timeout=self.config.timeout_s)
        consumer.assign(
            [TopicPartition(m.topic, m.partition, max(m.offset, OFFSET_BEGINNING)) for m in marks]
        )
        reading = {(tp.topic, tp.partition) for tp in partitions}
        found: set[str] = set()
        deadline = time.monotonic() + 4 * self.config.timeout_s
        try:
            while reading:
                if time.monotonic() > deadline:
                    raise KafkaSinkError("kafka sink: looking up written events timed out")
                for message in consumer.consume(10_000, 0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaSinkError(f"kafka sink: reading back: {error}")
                        reading.discard((message.topic(), message.partition()))
                        continue
                    for name, value in message.headers() or ():
                        if name == "event_id" and value is not None:
                            key = f"{message.topic()}{KEY_SEPARATOR}{value.decode()}"
                            if key in wanted:
                                found.add(key)
        finally:
            consumer.unassign()
        return found

    def _discard_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                self._producer.flush(0)
            except Exception:  # noqa: BLE001 - it is dropped either way
                pass
        self._producer = None
        self._reconcile = self.config.transactional

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.config.timeout_s)
        for consumer in (self._marks, self._seq_group):
            if consumer is not None:
                consumer.close()

    def status(self) -> dict:
        return {
            **self.outage.status(),
            "transactional": self.config.transactional,
            "written": self.written,
            "waiting": self.pending_rows,
            "dropped": self.dropped,
            "transactions": self.transactions,
            "recovered": self.recovered_rows,
            "found_written": self.found_written,
            "last_commit_s": None if self.last_commit_s is None else round(self.last_commit_s, 3),
            "last_commit_at": self.last_commit_at,
        }
