"""The event bus through an outage, against a real redis-server that stops and comes back on
the same port: one warning down, one back, a bounded buffer sent in order, a backoff."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from orchestrator.health.outage import Outage
from orchestrator.sinks.bus_link import BusLink
from orchestrator.sinks.redis_bus import RedisStreamBus, decode_prediction
from tests.fakes.predictions import direction_predictions
from tests.redis_server import free_port, running_redis


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _predictions(open_time: int, n: int = 3) -> pa.Table:
    return direction_predictions(open_time, [f"S{i}/USDT" for i in range(n)], prob_up=0.6)


def _times(bus: RedisStreamBus) -> list[int]:
    return [decode_prediction(fields)["open_time"] for _, fields in bus.read(count=10_000)]


def test_an_outage_is_two_lines_a_bounded_buffer_and_every_event_after_it(tmp_path, caplog):
    port, clock = free_port(), Clock()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    log = logging.getLogger("test.bus")
    outage = Outage("event bus", log, first_backoff_s=1.0, max_backoff_s=8.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.bus"):
        with running_redis(tmp_path / "a", port=port) as server:
            link = BusLink(RedisStreamBus(server.url, timeout_s=1.0), outage, max_rows=9)
            link.publish(_predictions(0))
            assert link.status()["up"] and link.published == 3
        for minute in range(1, 6):  # 15 rows while down: 9 kept, 6 dropped, oldest first
            clock.now += 0.4
            link.publish(_predictions(minute * 60_000))
        status = link.status()
        assert (status["up"], status["waiting"], status["dropped"]) == (False, 9, 6)
        assert status["failed_attempts"] < 5  # the backoff skipped most publishes
        with running_redis(tmp_path / "b", port=port) as server:
            clock.now += 60
            link.publish(_predictions(6 * 60_000))
            assert link.status()["up"] and link.pending_rows == 0
            # the restarted server starts empty: the kept minutes 3, 4, 5, then minute 6
            assert _times(RedisStreamBus(server.url)) == [
                m * 60_000 for m in (3, 4, 5, 6) for _ in range(3)
            ]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "is down" in lines[0] and "is back after" in lines[1]
    assert outage.outages == 1


def test_the_backoff_doubles_up_to_its_cap():
    clock = Clock()
    outage = Outage("x", logging.getLogger("test.backoff"), 1.0, 8.0, clock)
    assert outage.status()["tried"] is False  # "up" is only a default until a call says
    waits = []
    for _ in range(6):
        outage.failed("refused")
        waits.append(outage.status()["retry_in_s"])
        assert not outage.ready()
        clock.now += waits[-1]
        assert outage.ready()
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    outage.succeeded()
    assert outage.status()["up"] and outage.ready()


@pytest.mark.parametrize("max_rows", [0, 4])
def test_the_buffer_drops_oldest_rows_first(max_rows):
    class Down:
        def publish(self, table):
            from orchestrator.sinks.redis_bus import EventBusError

            raise EventBusError("down")

    link = BusLink(Down(), Outage("x", logging.getLogger("test.drop")), max_rows=max_rows)
    for minute in range(3):
        link.publish(_predictions(minute * 60_000))
    assert (link.pending_rows, link.dropped) == (max_rows, 9 - max_rows)
    kept = sum((t.column("open_time").to_pylist() for t in link._pending), [])
    assert kept == ([60_000] + [120_000] * 3)[4 - max_rows :]  # the newest rows stay


def test_calls_failing_beside_successes_stay_down_until_quiet_for_the_settle_time(caplog):
    clock = Clock()
    outage = Outage("exchange", logging.getLogger("test.settle"), clock=clock, settle_s=30.0)
    with caplog.at_level(logging.WARNING, logger="test.settle"):
        for _ in range(10):  # one symbol of many fails at every poll
            outage.failed("503")
            clock.now += 2
            outage.succeeded()
            clock.now += 3
        assert not outage.up
        clock.now += 30
        outage.succeeded()
    assert outage.up and len(caplog.records) == 2
