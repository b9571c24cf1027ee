"""Kafka in and out on a real broker (tansu, in memory, on 127.0.0.1), beside plain loops of
the same client (confluent-kafka) as baselines.

1. **Events into a topic** (the sink's outbox alone, no Ray): ``--events`` prediction events
   handed over a tick of ``--symbols`` at a time and written by the outbox, transactional
   (the default) and idempotent-only, beside a plain loop that produces the same JSON
   values with an idempotent producer and flushes once.
2. **Candles from a topic through the pipeline**: ``--symbols`` x ``--minutes`` synthetic
   candles (Binance kline JSON) in a topic; the application reads them with a Kafka feed
   and writes its predictions to Kafka with the transactional sink; candles/s from the
   feed's first live candle to the last event committed, beside a plain consume-produce
   loop (consume each candle, decode it, produce one JSON message for it, idempotent).

    tickcast bench kafka [--symbols 1000] [--minutes 240] [--events 200000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    print_header,
    print_table,
)
from orchestrator.bench.history import prediction_rows
from orchestrator.bench.kafka_broker import LocalBroker, local_broker
from orchestrator.bench.pipeline import market_minute
from orchestrator.config import KafkaConnection, KafkaSinkConfig
from orchestrator.feeds.kafka import publish_candles
from orchestrator.health.outage import Outage
from orchestrator.market.synthetic import SyntheticMarket
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.sinks.kafka_out import KafkaOutbox, event_messages

log = logging.getLogger(__name__)
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


# --- 1. events into a topic ----------------------------------------------------------------
def events(n_events: int, symbols: int) -> list[pa.Table]:
    """Prediction events, one table per tick of ``symbols`` rows."""
    names = [f"SYN{i:04d}/USDT" for i in range(symbols)]
    ticks = max(1, n_events // symbols)
    return [
        prediction_rows([START_MS + i * MINUTE_MS], names, "1m", ["direction"])
        for i in range(ticks)
    ]


def outbox_rate(
    broker: LocalBroker, ticks: list[pa.Table], transactional: bool, tmp: Path
) -> float:
    config = KafkaSinkConfig(
        bootstrap_servers=broker.bootstrap,
        predictions_topic=f"bench.events.{'tx' if transactional else 'idem'}",
        outcomes_topic=None,
        transactional=transactional,
        transactional_id=f"bench-{transactional}",
        partitions=3,
    )
    box = KafkaOutbox(config, tmp / f"outbox-{transactional}", Outage("kafka", log))

    async def run() -> float:
        box.add_predictions(ticks[0])  # the producer and topics start before the clock
        await box.pump()
        started = time.perf_counter()
        pump_every = max(1, len(ticks) // 20)  # a transaction per few ticks, as live
        for i, tick in enumerate(ticks[1:], 1):
            box.add_predictions(tick)
            if i % pump_every == 0:
                await box.pump()
        while box.pending_rows:
            await box.pump()
        return sum(t.num_rows for t in ticks[1:]) / (time.perf_counter() - started)

    try:
        return asyncio.run(run())
    finally:
        box.close()


def plain_produce_rate(broker: LocalBroker, ticks: list[pa.Table]) -> float:
    """The same JSON values (encoded in the loop too), produced and flushed once."""
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    broker.create_topic("bench.events.plain", 3)
    started = time.perf_counter()
    n = 0
    for tick in ticks[1:]:
        messages = event_messages(tick, "bench.events.plain")
        keys, values = messages.column("key").to_pylist(), messages.column("value").to_pylist()
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    producer.produce("bench.events.plain", value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        n += len(values)
    producer.flush(60)
    return n / (time.perf_counter() - started)


# --- 2. candles through the pipeline -------------------------------------------------------
def candle_table(symbols: int, minutes: int) -> pa.Table:
    names = [f"SYN{i:04d}/USDT" for i in range(symbols)]
    market = SyntheticMarket(symbols, seed=7)
    return pa.Table.from_batches([market_minute(market, names) for _ in range(minutes)])


def plain_loop_rate(broker: LocalBroker, n_candles: int) -> float:
    """Consume each candle, decode it, produce one JSON message for it (idempotent)."""
    broker.create_topic("bench.loop.out", 3)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "bench-loop",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    partitions = consumer.list_topics(timeout=10).topics["bench.candles"].partitions
    consumer.assign([TopicPartition("bench.candles", p, 0) for p in partitions])
    started, seen = time.perf_counter(), 0
    while seen < n_candles:
        for message in consumer.consume(10_000, 1.0):
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(message.error()))
                continue
            candle = orjson.loads(message.value())
            out = {"symbol": candle["s"], "open_time": candle["k"]["t"], "close": candle["k"]["c"]}
            while True:
                try:
                    producer.produce("bench.loop.out", orjson.dumps(out), message.key())
                    break
                except BufferError:
                    producer.poll(0.05)
            seen += 1
    producer.flush(60)
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    return rate


def pipeline_run(broker: LocalBroker, n_candles: int, tmp: Path) -> dict:
    import ray
    from ray import serve

    from orchestrator.bench.pipeline import wait_done
    from serve_app.app import build_app

    args = {
        "environment": "bench-kafka",
        "feeds": [
            {
                "kind": "kafka",
                "bootstrap_servers": broker.bootstrap,
                "topics": ["bench.candles"],
                "exchange": "synthetic",
                "start": "earliest",
                "stop_at_end": True,
            }
        ],
        "features": {"shards": 1, "num_cpus": 0.1},
        "stream": {"state_dir": f"{tmp}/state"},
        "serving": {"num_cpus": 0.1},
        "sink": {
            "log_dir": f"{tmp}/log",
            "flush_rows": 200_000,
            "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3},
        },
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.run(build_app(args), name="tickcast", route_prefix=None)
        pipeline = serve.get_deployment_handle("Pipeline", app_name="tickcast")
        status = wait_done(pipeline)
        feed = status["feeds"][0]
        while True:  # the last events committed to Kafka
            kafka = pipeline.status.remote().result()["sink"]["kafka"]
            if kafka["waiting"] == 0 and kafka["written"] >= status["sink"]["received"]:
                break
            time.sleep(0.2)
        serve.delete("tickcast")
    finally:
        ray.shutdown()
    return {
        "candles": feed["candles"],
        "seconds": max(feed["done_at"], kafka["last_commit_at"]) - feed["live_since"],
        "events": kafka["written"],
        "transactions": kafka["transactions"],
        "cpu": status["cpu"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=240)
    parser.add_argument("--events", type=int, default=200_000)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=20, minutes=40, events=4000)
    print_header(
        "kafka",
        f"tansu broker in memory; {args.events:,} events; {args.symbols} symbols x "
        f"{args.minutes} minutes through the pipeline",
        smoke=args.smoke,
    )
    with tempfile.TemporaryDirectory() as folder, local_broker() as broker:
        tmp = Path(folder)
        ticks = events(args.events, args.symbols)
        plain = plain_produce_rate(broker, ticks)
        transactional = outbox_rate(broker, ticks, True, tmp)
        idempotent = outbox_rate(broker, ticks, False, tmp)
        print_table(
            ("writing events", "events/s", "vs plain loop"),
            [
                ("plain produce loop (baseline)", plain, "1.00x"),
                ("sink outbox, idempotent only", idempotent, f"{idempotent / plain:.2f}x"),
                ("sink outbox, transactional", transactional, f"{transactional / plain:.2f}x"),
            ],
        )
        print()
        table = candle_table(args.symbols, args.minutes)
        broker.create_topic("bench.candles", 3)
        publish_candles(
            KafkaConnection(bootstrap_servers=broker.bootstrap), "bench.candles", table, "binance"
        )
        loop = plain_loop_rate(broker, table.num_rows)
        run = pipeline_run(broker, table.num_rows, tmp)
    rate = run["candles"] / run["seconds"]
    print_table(
        ("candles from a topic", "candles", "seconds", "candles/s", "vs plain loop"),
        [
            (
                "plain consume-produce loop (baseline)",
                table.num_rows,
                table.num_rows / loop,
                loop,
                "1.00x",
            ),
            (
                f"pipeline: Kafka feed -> features -> model -> Kafka sink "
                f"({run['events']:,} events, {run['transactions']} transactions)",
                run["candles"],
                run["seconds"],
                rate,
                f"{rate / loop:.2f}x",
            ),
        ],
        formats=(None, None, ".1f", None, None),
    )
    print()
    print_table(
        ("process (pipeline run)", "CPU s"),
        sorted(run["cpu"].items(), key=lambda kv: -kv[1]),
        formats=(None, ".1f"),
    )
    return 0
