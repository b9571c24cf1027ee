"""The pipeline fed from a Kafka topic and writing to one, against a real broker (tansu):
real candles in the three formats go in, a read_committed consumer and the Parquet log each
hold one prediction per expected key, also when the feed, a shard and the sink are killed
mid-stream (SIGKILL), and bad messages are quarantined with their reason."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
from confluent_kafka import Producer

from orchestrator.config import KafkaConnection
from orchestrator.feeds.kafka import publish_candles
from orchestrator.feeds.replay import load_timeline, replay_files
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.sinks.parquet_log import read_log
from orchestrator.stream.shard import ShardState
from serve_app.app import build_app
from tests.integration.polling import pipeline_status, wait_for_status
from tests.kafka_support import event_ids, read_topic

MINUTES = 600
FORMATS = {"BTC/USDT": "binance", "ETH/USDT": "cryptofeed", "SOL/USDT": "tickcast"}


@pytest.fixture(scope="module")
def candles(shared_data) -> pa.Table:
    """The first MINUTES minutes of the three spot symbols (real Binance candles)."""
    files = replay_files(shared_data / "binance-spot-1m", None)
    timeline = load_timeline(files, "binance")
    first = pc.min(timeline.column("open_time")).as_py()
    return timeline.filter(pc.less(timeline.column("open_time"), first + MINUTES * MINUTE_MS))


def expected_keys(candles: pa.Table) -> set[tuple[str, int]]:
    """(symbol, open time) of every candle whose features are warm: the uninterrupted run."""
    state, keys = ShardState(("1m",)), set()
    times = candles.column("open_time")
    for minute in pc.unique(times).to_pylist():
        for tick in state.process(candles.filter(pc.equal(times, minute))):
            keys |= {(s, int(t)) for s, t in zip(tick.symbol, tick.open_time, strict=True)}
    return keys


def publish(broker, candles: pa.Table) -> None:
    """Each symbol in its own format, as three upstream producers would write them."""
    connection = KafkaConnection(bootstrap_servers=broker.bootstrap)
    for symbol, format in FORMATS.items():
        mine = candles.filter(pc.equal(candles.column("symbol"), symbol))
        publish_candles(connection, "candles", mine, format)


def app_args(broker, tmp_path, environment: str) -> dict:
    return {
        "environment": environment,
        "feeds": [
            {
                "kind": "kafka",
                "bootstrap_servers": broker.bootstrap,
                "topics": ["candles"],
                "exchange": "binance",
                "start": "earliest",
                "max_messages": 60,
            }
        ],
        "features": {"shards": 2, "num_cpus": 0.1},
        "stream": {"checkpoint_every": 20, "state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1},
        "sink": {
            "log_dir": str(tmp_path / "log"),
            "flush_rows": 200,
            "flush_seconds": 1.0,
            "kafka": {
                "bootstrap_servers": broker.bootstrap,
                "partitions": 3,
                "flush_seconds": 0.2,
                "timeout_s": 5.0,
                "max_backoff_s": 2.0,
            },
        },
    }


def _status(pipeline) -> dict:
    return pipeline_status(pipeline)


def wait_for(pipeline, open_time: int, timeout_s: float = 120) -> None:
    """Until the feed has routed the candles up to ``open_time``."""

    def routed(status: dict) -> bool:
        return (status["feeds"][0].get("last_open_time") or 0) >= open_time

    wait_for_status(pipeline, routed, f"the feed to reach {open_time}", timeout_s)


def settle(pipeline, broker, expected: int, timeout_s: float = 120) -> list[str]:
    """Event ids on the predictions topic once it holds ``expected`` events (or the time
    is up), the sink's log flushed."""
    deadline = time.monotonic() + timeout_s
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = event_ids(read_topic(broker.bootstrap, "tickcast.predictions"))
        if len(set(ids)) >= expected:
            break
        time.sleep(1.0)
    time.sleep(1.0)  # a duplicate would land now, if any was coming
    pipeline.flush.remote().result(timeout_s=60)
    return event_ids(read_topic(broker.bootstrap, "tickcast.predictions"))


def check_once_each(ids: list[str], log_dir, expected: set[tuple[str, int]]) -> None:
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events twice on the topic"
    log = read_log(log_dir).to_pylist()
    keys = [(r["symbol"], r["open_time"]) for r in log]
    assert len(keys) == len(set(keys)), "a prediction was written twice to the log"
    missing, extra = sorted(expected - set(keys)), sorted(set(keys) - expected)
    assert not missing and not extra, (
        f"log: {len(missing)} missing {missing[:3]}, extra {extra[:3]}"
    )
    logged = {r["event_id"] for r in log}
    assert set(ids) == logged, (
        f"topic-only {len(set(ids) - logged)}, log-only {len(logged - set(ids))}"
    )


def test_kafka_in_and_out_with_bad_messages(serve_app, kafka_broker, candles, tmp_path):
    kafka_broker.create_topic("candles", 3)
    first = pc.min(candles.column("open_time")).as_py()
    last = pc.max(candles.column("open_time")).as_py()
    half = candles.filter(pc.less(candles.column("open_time"), first + 300 * MINUTE_MS))
    publish(kafka_broker, half)
    serve_app.run(build_app(app_args(kafka_broker, tmp_path, "kafka-bad")), name="tickcast")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    wait_for(pipeline, first + 299 * MINUTE_MS)

    btc = candles.filter(pc.equal(candles.column("symbol"), "BTC/USDT")).slice(0, 1).to_pylist()[0]
    future = {**btc, "open_time": (time.time_ns() // 10**6 // MINUTE_MS + 1440) * MINUTE_MS}
    future["close_time"] = future["open_time"] + MINUTE_MS - 1
    older = {**btc, "open_time": first - 60 * MINUTE_MS, "close_time": first - 1 - 59 * MINUTE_MS}
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for value in (
        b"\x00\xffgarbage",
        b'{"kind": "not a candle"}',
        b'{"symbol": "BTC/USDT", "open_time": "soon", "open": 1}',
        orjson.dumps(future),
        orjson.dumps(older),
    ):
        producer.produce("candles", value, b"BTC/USDT")
    producer.flush(10)
    publish(
        kafka_broker,
        candles.filter(pc.greater_equal(candles.column("open_time"), first + 300 * MINUTE_MS)),
    )
    wait_for(pipeline, last)

    ids = settle(pipeline, kafka_broker, len(expected_keys(candles)))
    check_once_each(ids, tmp_path / "log", expected_keys(candles))
    reasons = [r["reason"] for r in pipeline.quarantine.remote().result(timeout_s=30)["kafka-0"]]
    assert sorted(reasons) == sorted(
        ["undecodable", "bad_message", "bad_message", "future_open_time", "out_of_order"]
    )
    feed = _status(pipeline)["feeds"][0]
    assert feed["source"]["rejected"] == 3 and feed["position_commits"] >= 1
    assert _status(pipeline)["sink"]["kafka"]["state"] == "up"


def test_killing_the_feed_a_shard_and_the_sink_writes_each_event_once(
    serve_app, kafka_broker, candles, tmp_path
):
    kafka_broker.create_topic("candles", 3)
    times = candles.column("open_time")
    minutes = pc.unique(times).to_pylist()
    chunks = [minutes[i : i + MINUTES // 4] for i in range(0, MINUTES, MINUTES // 4)]

    def publish_chunk(chunk: list[int]) -> None:
        publish(kafka_broker, candles.filter(pc.is_in(times, pa.array(chunk, pa.int64()))))

    publish_chunk(chunks[0])
    serve_app.run(build_app(app_args(kafka_broker, tmp_path, "kafka-crash")), name="tickcast")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    actors = pipeline.actors.remote().result(timeout_s=30)
    wait_for(pipeline, chunks[0][-1])
    publish_chunk(chunks[1])
    os.kill(ray.get(actors["feeds"][0].pid.remote()), signal.SIGKILL)  # the Kafka feed
    wait_for(pipeline, chunks[1][-1])
    publish_chunk(chunks[2])
    os.kill(ray.get(actors["shards"][1].pid.remote()), signal.SIGKILL)  # a shard
    wait_for(pipeline, chunks[2][-1])
    publish_chunk(chunks[3])
    os.kill(ray.get(actors["sink"].pid.remote()), signal.SIGKILL)  # the sink, mid-write
    wait_for(pipeline, chunks[3][-1])

    expected = expected_keys(candles)
    ids = settle(pipeline, kafka_broker, len(expected))
    check_once_each(ids, tmp_path / "log", expected)
    assert _status(pipeline)["feeds"][0]["epoch"] >= 1  # the feed was restored


def worker_log_lines(text: str) -> list[str]:
    """Lines of this Ray session's worker logs that contain ``text``."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return [
        line
        for path in logs.glob("worker-*.err")
        for line in path.read_text(errors="replace").splitlines()
        if text in line
    ]


def test_broker_down_30_s_mid_run_loses_nothing_and_warns_once(
    serve_app, kafka_broker, candles, tmp_path
):
    kafka_broker.create_topic("candles", 3)
    times = candles.column("open_time")
    first = pc.min(times).as_py()
    middle = first + (MINUTES // 2) * MINUTE_MS
    publish(kafka_broker, candles.filter(pc.less(times, middle)))
    serve_app.run(build_app(app_args(kafka_broker, tmp_path, "kafka-outage")), name="tickcast")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    wait_for(pipeline, first + 100 * MINUTE_MS)
    kafka_broker.pause()  # mid-stream: the feed cannot read, the sink cannot write
    try:
        time.sleep(30)
        down = _status(pipeline)["sink"]["kafka"]
    finally:
        kafka_broker.resume()
    assert down["state"] == "down" and down["waiting"] > 0, down
    publish(kafka_broker, candles.filter(pc.greater_equal(times, middle)))
    wait_for(pipeline, pc.max(times).as_py())

    expected = expected_keys(candles)
    ids = settle(pipeline, kafka_broker, len(expected))
    check_once_each(ids, tmp_path / "log", expected)
    kafka = _status(pipeline)["sink"]["kafka"]
    assert kafka["state"] == "up" and kafka["outages"] == 1 and kafka["dropped"] == 0
    server = f"kafka {kafka_broker.bootstrap}"
    assert len(worker_log_lines(f"{server} is down")) == 1
    assert len(worker_log_lines(f"{server} is back")) == 1
    # librdkafka's own lines (timeouts, reconnects of five clients) stay a few per minute.
    assert len(worker_log_lines("orchestrator.kafka.client")) < 60
