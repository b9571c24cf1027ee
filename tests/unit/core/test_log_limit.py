"""A few lines per kind of message a window, and a count of what was not logged."""

from __future__ import annotations

import json
import logging
import sys

from orchestrator.health.log_limit import JsonFormatter, RateLimit, limit_logging, log_formatter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _logger(name: str) -> tuple[logging.Logger, list[str], RateLimit, Clock]:
    logger = logging.getLogger(name)
    logger.propagate, logger.handlers = False, []
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    clock = Clock()
    return logger, lines, limit_logging(logger, per_window=3, window_s=60, clock=clock), clock


def test_a_repeated_failure_is_a_few_lines_and_then_a_count():
    log, lines, limit, clock = _logger("test.limit.repeat")
    for batch in range(1000):
        log.warning("feed %s: batch %d failed", "replay-0", batch)
        log.warning("another kind %d", batch)
        clock.now += 0.01
    assert lines[:2] == ["feed replay-0: batch 0 failed", "another kind 0"]
    assert len(lines) == 6 and limit.dropped == 2 * 997
    clock.now += 60
    log.warning("feed %s: batch %d failed", "replay-0", 1000)
    assert lines[-1] == "feed replay-0: batch 1000 failed [997 more like this were not logged]"


def test_installing_twice_keeps_one_filter():
    log, _, first, _ = _logger("test.limit.once")
    assert limit_logging(log) is first
    assert sum(isinstance(f, RateLimit) for h in log.handlers for f in h.filters) == 1


def test_json_lines_when_the_deployment_asks_for_them():
    assert isinstance(log_formatter({"TICKCAST_LOG_FORMAT": "json"}), JsonFormatter)
    assert not isinstance(log_formatter({}), JsonFormatter)
    logger = logging.getLogger("test.limit.json")
    logger.propagate, logger.handlers = False, []
    limit_logging(logger, environ={"TICKCAST_LOG_FORMAT": "json"})
    (handler,) = logger.handlers
    try:
        raise ValueError("bad candle")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "feed %s: batch failed",
            ("replay-0",),
            sys.exc_info(),
        )
    line = json.loads(handler.format(record))
    assert line["levelname"] == "ERROR" and line["name"] == "test.limit.json"
    assert line["message"] == "feed replay-0: batch failed" and "ValueError" in line["exc_text"]
