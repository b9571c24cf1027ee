"""The Kafka feed source against a real broker (tansu), without Ray: where it starts (the
group's committed offsets, the earliest, a time, its own checkpoint), what it commits, and
what it does with messages that hold no candle."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer

from orchestrator.config import KafkaFeedConfig
from orchestrator.feeds.kafka import KafkaFeedError, KafkaSource, publish_candles
from orchestrator.market.archives import read_candles


@pytest.fixture(scope="module")
def candles(shared_data) -> pa.Table:
    path = shared_data / "binance-usdm-1m" / "DOTUSDT-1m-2026-02.zip"
    return read_candles(path, "binance", "DOT/USDT:USDT", "1m").slice(0, 300)


def config(broker, **settings) -> KafkaFeedConfig:
    defaults = {"topics": ("candles",), "exchange": "binance", "stop_at_end": True}
    return KafkaFeedConfig(
        bootstrap_servers=broker.bootstrap, max_messages=50, **{**defaults, **settings}
    )


def read_all(source: KafkaSource, commit_after: int | None = None) -> pa.Table:
    """Every candle to the end; the position committed once ``commit_after`` were read."""

    async def run() -> pa.Table:
        batches, committed = [], commit_after is None
        while (batch := await source.next_batch()) is not None:
            batches.append(batch)
            if not committed and sum(b.num_rows for b in batches) >= commit_after:
                await source.commit(source.snapshot())
                committed = True
        await source.close()
        return pa.Table.from_batches(batches) if batches else pa.table({})

    return asyncio.run(run())


def test_it_resumes_from_committed_offsets_and_from_its_checkpoint(kafka_broker, candles):
    kafka_broker.create_topic("candles", 1)
    publish_candles(config(kafka_broker), "candles", candles, "tickcast")
    first = KafkaSource(config(kafka_broker), None, "feed-a")
    everything = read_all(first, commit_after=100)
    assert everything.column("open_time").equals(candles.column("open_time"))
    assert everything.column("close").equals(candles.column("close"))
    # A new feed without a checkpoint: from the group's committed offsets (100 candles on).
    again = read_all(KafkaSource(config(kafka_broker), None, "feed-a"))
    assert again.num_rows == 200 and again["open_time"][0] == candles["open_time"][100]
    # With a checkpoint: from its own position, whatever the group says.
    resumed = KafkaSource(config(kafka_broker), {"offsets": {("candles", 0): 250}}, "feed-a")
    assert read_all(resumed).num_rows == 50
    # Another group, nothing committed: from the earliest.
    assert read_all(KafkaSource(config(kafka_broker), None, "feed-b")).num_rows == 300


def test_it_starts_at_a_time(kafka_broker, candles):
    kafka_broker.create_topic("candles", 2)
    publish_candles(config(kafka_broker), "candles", candles.slice(0, 100), "binance")
    # Messages are stamped with their candle's close: a time is a point in the candles.
    closed_40 = datetime.fromtimestamp((candles["close_time"][39].as_py() + 1) / 1000, UTC)
    later = read_all(KafkaSource(config(kafka_broker, start=closed_40), None, "t"))
    assert later["open_time"].to_pylist() == candles["open_time"].to_pylist()[39:100]
    future = datetime(2100, 1, 1, tzinfo=UTC)
    assert read_all(KafkaSource(config(kafka_broker, start=future), None, "f")).num_rows == 0
    # Not asserted here: start "latest". tansu 0.6 answers ListOffsets with one offset per
    # record batch, so librdkafka's end of a batched partition lands inside it.


def test_messages_without_a_candle_are_handed_over_with_their_reason(kafka_broker, candles):
    kafka_broker.create_topic("candles", 1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce("candles", b"\x00garbage", b"k")
    producer.produce("candles", b'{"symbol": "DOT/USDT"}', b"k")
    producer.flush(10)
    publish_candles(config(kafka_broker), "candles", candles.slice(0, 10), "cryptofeed")
    source = KafkaSource(config(kafka_broker), None, "bad")
    read = read_all(source)
    assert read.num_rows == 10
    (rejects,) = source.take_rejects()
    assert rejects.counts() == {"undecodable": 1, "bad_message": 1}
    assert [r.payload["origin"] for r in rejects.records()] == ["candles/0@0", "candles/0@1"]
    status = source.status()
    assert status["messages"] == 12 and status["rejected"] == 2 and status["candles"] == 10
    assert source.takes_any_symbol() and source.symbols == ("DOT/USDT:USDT",)
    assert pc.all(pc.equal(read["exchange"], "binance")).as_py()


def test_a_missing_topic_is_an_error_naming_it(kafka_broker):
    source = KafkaSource(config(kafka_broker, topics=("nowhere",)), None, "x")
    with pytest.raises(KafkaFeedError, match="nowhere"):
        asyncio.run(source.next_batch())
    asyncio.run(source.close())
