"""RedisStreamBus against a real redis-server (skipped only when the binary is missing)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pyarrow as pa
import pytest
import redis

from orchestrator.sinks.redis_bus import (
    EventBusError,
    RedisStreamBus,
    decode_prediction,
    redact,
    url_secrets,
)
from orchestrator.stream.events import ModelOutput, TickRows, build_predictions
from tests.redis_server import free_port, running_redis

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_redis(tmp_path_factory.mktemp("redis"), password=PASSWORD) as running:
        yield running


@pytest.fixture
def bus(server, request):
    stream = f"test:{request.node.name}"
    bus = RedisStreamBus(server.url, stream=stream, record_stream=f"{stream}:records")
    yield bus
    bus.close()


def prediction_table(n: int = 3, model_type: str = "direction") -> pa.Table:
    names = {
        "direction": ("prob_up",),
        "swing": ("p_swing_high", "p_swing_low"),
        "return": ("log_return",),
    }[model_type]
    rng = np.random.default_rng(n)
    values = (
        rng.dirichlet([2, 1, 1], n)[:, : len(names)]
        if model_type == "swing"
        else rng.uniform(0, 1, (n, 1)) / (1 if model_type == "direction" else 100)
    )
    rows = TickRows(
        np.full(n, "binance", dtype=object),
        np.array([f"S{i}/USDT" for i in range(n)], dtype=object),
        "1m",
        60_000 * np.arange(n, dtype=np.int64) + 1_700_000_040_000,
        rng.uniform(10, 20, n),
        1.5,
    )
    output = ModelOutput(f"{model_type}-1m", model_type, "v7", names, values)
    return build_predictions(output, rows, 1_700_000_100_123.25, 0.6, 0.7)


def expected_rows(table: pa.Table) -> list[dict]:
    return [{**row, "outputs": dict(row["outputs"])} for row in table.to_pylist()]


def test_published_rows_read_back_exactly_in_order(bus):
    table = pa.concat_tables(
        [prediction_table(5), prediction_table(4, "swing"), prediction_table(3, "return")]
    )
    ids = bus.publish(table)
    entries = bus.read(count=100)
    assert [entry_id for entry_id, _ in entries] == ids and len(ids) == 12
    assert [decode_prediction(fields) for _, fields in entries] == expected_rows(table)
    fields = entries[5][1]  # a swing row: no signal, no price
    assert "signal" not in fields and "predicted_price" not in fields
    assert all(isinstance(v, str) for v in fields.values())
    assert set(json.loads(fields["outputs"])) == {"p_swing_high", "p_swing_low"}
    assert bus.read(count=2, start=ids[3]) == entries[3:5]


def test_an_empty_table_publishes_nothing(bus):
    assert bus.publish(prediction_table(0)) == []
    assert bus.length() == 0


def test_a_consumer_group_gets_every_entry_once_until_acked(bus, server):
    ids = bus.publish(prediction_table(6))
    assert bus.ensure_group("api") is True
    assert bus.ensure_group("api") is False  # idempotent
    first = bus.read_group("api", "c1", count=4)
    second = bus.read_group("api", "c2", count=10)
    assert [i for i, _ in first + second] == ids
    assert bus.read_group("api", "c1") == []
    raw = redis.Redis.from_url(server.url, decode_responses=True)
    assert raw.xpending(bus.stream, "api")["pending"] == 6
    assert bus.ack("api", [i for i, _ in first]) == 4
    assert raw.xpending(bus.stream, "api")["pending"] == 2
    assert bus.ack("api", []) == 0
    raw.close()


def test_a_group_created_before_the_stream_sees_later_entries(bus):
    assert bus.ensure_group("late", start="$") is True
    ids = bus.publish(prediction_table(2))
    assert [i for i, _ in bus.read_group("late", "c")] == ids


def test_maxlen_trims_the_stream_approximately(server, request):
    bus = RedisStreamBus(server.url, stream=f"test:{request.node.name}", maxlen=50)
    table = prediction_table(600)
    ids = bus.publish(table)
    # "~" trims whole stream nodes (100 entries by default): never below maxlen.
    assert 50 <= bus.length() <= 150
    entries = bus.read(count=1000)
    assert entries[-1][0] == ids[-1] and entries[0][0] != ids[0]
    assert decode_prediction(entries[-1][1])["event_id"] == table["event_id"][-1].as_py()
    bus.close()


def test_records_go_to_their_own_stream(bus):
    bus.publish(prediction_table(1))
    record = {"exchange": "binance", "candles": np.int64(1440), "gaps": np.array([1, 2])}
    entry_id = bus.publish_record("backfill_complete", record)
    ((got_id, fields),) = bus.read(stream=bus.record_stream)
    assert got_id == entry_id and fields["kind"] == "backfill_complete"
    assert json.loads(fields["data"]) == {"exchange": "binance", "candles": 1440, "gaps": [1, 2]}
    assert bus.length() == 1


def assert_redacted(error: EventBusError, secret: str = PASSWORD) -> None:
    text = f"{error} {error!r} {error.args}"
    assert secret not in text and "***" in text
    assert error.__cause__ is None and error.__suppress_context__


def test_a_stopped_server_raises_our_error_without_the_password(tmp_path):
    with running_redis(tmp_path, password=PASSWORD) as server:
        bus = RedisStreamBus(server.url, timeout_s=1.0)
        bus.publish(prediction_table(1))
        server.stop()
        for call in (
            lambda: bus.publish(prediction_table(2)),
            bus.read,
            bus.length,
            lambda: bus.ensure_group("g"),
            lambda: bus.publish_record("k", {}),
        ):
            with pytest.raises(EventBusError, match="127.0.0.1") as caught:
                call()
            assert_redacted(caught.value)


def test_connection_refused_names_the_server_not_the_password():
    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    bus = RedisStreamBus(url, timeout_s=1.0)
    assert bus.url == f"redis://user:***@127.0.0.1:{url.rsplit(':', 1)[1]}"
    with pytest.raises(EventBusError, match="ConnectionError") as caught:
        bus.ping()
    assert_redacted(caught.value)


def test_a_wrong_password_is_our_error_and_not_echoed(server):
    wrong = "not-the-Password-42"
    bus = RedisStreamBus(server.url.replace(PASSWORD, wrong))
    with pytest.raises(EventBusError, match="publish") as caught:
        bus.publish(prediction_table(1))
    assert_redacted(caught.value, wrong)


def test_a_server_that_never_answers_times_out_as_our_error():
    with socket.socket() as silent:  # accepts connections (kernel backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        bus = RedisStreamBus(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", timeout_s=0.3)
        with pytest.raises(EventBusError, match="Timeout") as caught:
            bus.publish(prediction_table(1))
    assert_redacted(caught.value)


def test_a_malformed_url_is_our_error():
    with pytest.raises(EventBusError, match="connect") as caught:
        RedisStreamBus(f"http://:{PASSWORD}@127.0.0.1:1/0")
    assert_redacted(caught.value)


def test_every_spelling_of_the_password_is_redacted():
    url = "redis://me:p%40ss@host:6379/0?password=other"
    secrets = url_secrets(url)
    assert set(secrets) == {"p%40ss", "p@ss", "other"}
    assert redact(f"{url} auth p@ss failed", secrets) == (
        "redis://me:***@host:6379/0?password=*** auth *** failed"
    )
    assert url_secrets("redis://127.0.0.1:6379/0") == []


def test_the_helper_skips_naming_the_package_only_without_the_binary(monkeypatch, tmp_path):
    import tests.redis_server as helper

    monkeypatch.setattr(helper.shutil, "which", lambda name: None)
    with (
        pytest.raises(pytest.skip.Exception, match="apt-get install -y redis-server"),
        running_redis(tmp_path),
    ):
        pass
