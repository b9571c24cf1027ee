#!/usr/bin/env python
"""The measurement behind the choice of Kafka client (docs/performance.md#kafka): 100,000
messages of ~390 bytes on a local tansu broker, 3 partitions, written and read back with
confluent-kafka (transactions of 1,000, then read_committed) and with aiokafka (its
transactional and idempotent producers first, then a plain one). Needs aiokafka, which
tickcast does not install: ``pip install aiokafka`` in a scratch environment.

    python scripts/kafka_clients.py
"""

from __future__ import annotations

import asyncio
import time

from orchestrator.bench.kafka_broker import local_broker

N, PER_TRANSACTION = 100_000, 1000
VALUE = (
    b'{"event_id":"direction-1m@v1|binance|BTC/USDT|1m|1774294740000","value":0.51,'
    b'"signal":"NEUTRAL","outputs":{"prob_up":0.51}}'
) * 3


def confluent(bootstrap: str) -> tuple[float, float]:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic("c", 3, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "c", "linger.ms": 5})
    producer.init_transactions(10)
    started = time.perf_counter()
    for _ in range(0, N, PER_TRANSACTION):
        producer.begin_transaction()
        for j in range(PER_TRANSACTION):
            while True:
                try:
                    producer.produce("c", VALUE, str(j).encode())
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.commit_transaction(30)
    produced = N / (time.perf_counter() - started)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "g",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition("c", p, 0) for p in range(3)])
    started, read, ended = time.perf_counter(), 0, set()
    while len(ended) < 3:
        for message in consumer.consume(10_000, 1.0):
            if message.error():
                ended.add(message.partition())
            else:
                read += 1
    return produced, read / (time.perf_counter() - started)


async def aiokafka_rates(bootstrap: str) -> tuple[str, float, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("a", 3, 1)])
    await admin.close()
    failed = []
    for kind, settings in (
        ("transactional", {"transactional_id": "a"}),
        ("idempotent", {"enable_idempotence": True}),
    ):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
        try:
            await producer.start()
        except Exception as exc:  # noqa: BLE001 - what failed is the finding
            failed.append(f"{kind}: {type(exc).__name__}")
        finally:
            await producer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    for _ in range(0, N, PER_TRANSACTION):
        sent = [await producer.send("a", VALUE, key=str(j).encode()) for j in range(1000)]
        await asyncio.gather(*sent)
    produced = N / (time.perf_counter() - started)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    partitions = [TopicPartition("a", p) for p in range(3)]
    consumer.assign(partitions)
    for partition in partitions:
        consumer.seek(partition, 0)
    started, read = time.perf_counter(), 0
    while read < N:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        read += sum(len(v) for v in batch.values())
    consumed = read / (time.perf_counter() - started)
    await consumer.stop()
    return "; ".join(failed) or "none", produced, consumed


def main() -> None:
    with local_broker() as broker:
        produced, consumed = confluent(broker.bootstrap)
        print(
            f"confluent-kafka: transactional produce {produced:,.0f}/s, read_committed "
            f"consume {consumed:,.0f}/s"
        )
        failed, produced, consumed = asyncio.run(aiokafka_rates(broker.bootstrap))
        print(
            f"aiokafka: failed to start: {failed}; plain produce (acks=1) {produced:,.0f}/s, "
            f"read_committed consume {consumed:,.0f}/s"
        )


if __name__ == "__main__":
    main()
