"""The Kafka sink's outbox against a real broker: transactions, and each event once for a
read_committed reader across crashes at every point of a write."""

from __future__ import annotations

import asyncio
import logging
import shutil

import orjson
import pyarrow as pa
import pytest

from orchestrator.config import KafkaSinkConfig
from orchestrator.health.outage import Outage
from orchestrator.sinks import kafka_out
from orchestrator.sinks.kafka_out import KafkaOutbox
from orchestrator.stream.events import PREDICTION_SCHEMA
from orchestrator.stream.outcomes import OUTCOME_SCHEMA
from tests.kafka_support import event_ids, read_topic

log = logging.getLogger(__name__)


def predictions(start: int, stop: int) -> pa.Table:
    n = stop - start
    rows = {
        "event_id": [f"direction-1m@v1|x|S{i % 7}/USDT|1m|{i}" for i in range(start, stop)],
        "service": ["tickcast"] * n,
        "environment": ["test"] * n,
        "exchange": ["x"] * n,
        "symbol": [f"S{i % 7}/USDT" for i in range(start, stop)],
        "timeframe": ["1m"] * n,
        "open_time": [i * 60_000 for i in range(start, stop)],
        "model_id": ["direction-1m"] * n,
        "model_version": ["v1"] * n,
        "model_type": ["direction"] * n,
        "value": [0.5] * n,
        "outputs": [[("p_up", 0.5), ("p_odd", float("nan"))]] * n,
        "predicted_price": [None] * n,
        "signal": ["NEUTRAL"] * n,
        "confidence": ["LOW"] * n,
        "trend": [None] * n,
        "warm": [True] * n,
        "in_distribution": [True] * n,
        "model_age_s": [None] * n,
        "role": ["production"] * n,
        "published": [True] * n,
        "predicted_at": [1] * n,
        "latency_ms": [1.0] * n,
    }
    return pa.table(rows, schema=PREDICTION_SCHEMA)


def outbox(broker, directory, **settings) -> KafkaOutbox:
    config = KafkaSinkConfig(
        bootstrap_servers=broker.bootstrap, transactional_id="tickcast-sink-test", **settings
    )
    return KafkaOutbox(config, directory, Outage("kafka", log, max_backoff_s=1.0))


def test_events_arrive_once_as_json_keyed_by_symbol(kafka_broker, tmp_path):
    box = outbox(kafka_broker, tmp_path / "outbox", partitions=3)
    box.add_predictions(predictions(0, 500))
    asyncio.run(box.pump())
    box.add_predictions(predictions(500, 800))
    outcome = {**predictions(0, 1).select(OUTCOME_SCHEMA.names[:8]).to_pylist()[0]}
    outcome.update(value=0.5, realized=1.0, correct=False, error=0.25, scored_at_open_time=60_000)
    box.add_outcomes(pa.Table.from_pylist([outcome], schema=OUTCOME_SCHEMA))
    asyncio.run(box.pump())
    assert box.status()["written"] == 801 and box.status()["waiting"] == 0
    (scored,) = read_topic(kafka_broker.bootstrap, "tickcast.outcomes")
    assert orjson.loads(scored.value())["realized"] == 1.0 and scored.key() == b"x:S0/USDT"
    messages = read_topic(kafka_broker.bootstrap, "tickcast.predictions")
    assert sorted(event_ids(messages)) == sorted(predictions(0, 800)["event_id"].to_pylist())
    first = orjson.loads(messages[0].value())
    assert first["outputs"]["p_up"] == 0.5 and first["outputs"]["p_odd"] is None  # NaN -> null
    by_key: dict[bytes, set[int]] = {}
    for m in messages:  # one symbol, one partition: its events stay in order
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert by_key and all(len(parts) == 1 for parts in by_key.values())
    assert not list((tmp_path / "outbox").glob("segment-*"))  # written: the outbox is empty


@pytest.mark.parametrize("crash", ["before the write", "after the commit"])
def test_a_sink_dead_at_any_point_writes_each_event_once(kafka_broker, tmp_path, crash):
    directory = tmp_path / "outbox"
    box = outbox(kafka_broker, directory)
    box.add_predictions(predictions(0, 300))
    asyncio.run(box.pump())
    box.add_predictions(predictions(300, 600))
    if crash == "after the commit":  # the transaction committed, its outbox files survived
        kept = tmp_path / "kept"
        shutil.copytree(directory, kept)
        asyncio.run(box.pump())
        shutil.rmtree(directory)
        shutil.copytree(kept, directory)
        (directory / "next-seq").unlink(missing_ok=True)
    # A new sink process on the same outbox; its shards send again what they had not heard
    # was durable, and new events.
    again = outbox(kafka_broker, directory)
    assert again.status()["recovered"] == 300
    again.add_predictions(predictions(300, 700))
    asyncio.run(again.pump())
    ids = event_ids(read_topic(kafka_broker.bootstrap, "tickcast.predictions"))
    assert len(ids) == len(set(ids)), "an event was written twice"
    assert set(ids) == set(predictions(0, 700)["event_id"].to_pylist())
    if crash == "after the commit":
        assert again.status()["found_written"] == 300


def test_broker_down_then_back_loses_nothing_and_warns_once(
    kafka_broker, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(kafka_out, "MAX_TRANSACTION_ROWS", 120)  # the backlog: 3 transactions
    box = outbox(kafka_broker, tmp_path / "outbox", buffer_rows=1000, timeout_s=2.0)
    box.add_predictions(predictions(0, 100))
    asyncio.run(box.pump())
    kafka_broker.pause()
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(3):
                box.add_predictions(predictions(100 + 100 * i, 200 + 100 * i))
                asyncio.run(box.pump())
                box.outage._next_try = 0.0  # retry now rather than after the backoff
        assert box.status()["up"] is False and box.status()["waiting"] == 300
    finally:
        kafka_broker.resume()
    before = box.status()["transactions"]

    async def drain() -> None:
        while await box.pump():
            pass

    asyncio.run(drain())
    status = box.status()
    assert status["up"] is True and status["waiting"] == 0
    assert status["transactions"] - before == 3
    assert not list((tmp_path / "outbox").glob("segment-*"))
    ids = event_ids(read_topic(kafka_broker.bootstrap, "tickcast.predictions"))
    assert sorted(ids) == sorted(predictions(0, 400)["event_id"].to_pylist())
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in caplog.records]
