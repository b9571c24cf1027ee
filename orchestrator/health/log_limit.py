"""At most a few log lines per kind of message a minute, whatever happens, in the format the
deployment asks for: readable text, or one JSON object a line (pure: logging only).

A kind is the logger and the message's format string (``"feed %s: batch failed"``), not
its arguments, so a failure repeated for every batch or symbol is one kind. The first
``per_window`` records of a kind in a window pass; the rest are counted and dropped, and
the next record of that kind to pass says how many were dropped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

LOG_FORMAT_ENV = "TICKCAST_LOG_FORMAT"  # "json" (configs/production.yaml) or "text"
TEXT_FORMAT = "%(levelname)s %(asctime)s %(name)s -- %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line, the keys Serve's JSON logs use, so a log shipper parses the
    actors' lines and the replicas' alike."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_formatter(environ: dict | None = None) -> logging.Formatter:
    """The formatter ``TICKCAST_LOG_FORMAT`` asks for (text by default)."""
    wanted = (environ if environ is not None else os.environ).get(LOG_FORMAT_ENV, "text")
    return JsonFormatter() if wanted.strip().lower() == "json" else logging.Formatter(TEXT_FORMAT)


class RateLimit(logging.Filter):
    def __init__(
        self,
        per_window: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1000,
    ):
        super().__init__()
        self.per_window, self.window_s, self._clock, self.max_kinds = (
            per_window,
            window_s,
            clock,
            max_kinds,
        )
        self._kinds: dict[tuple[str, str], list] = {}  # kind -> [window start, passed, dropped]
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now, kind = self._clock(), (record.name, str(record.msg))
        seen = self._kinds.get(kind)
        if seen is None or now - seen[0] >= self.window_s:
            dropped = seen[2] if seen else 0
            seen = self._kinds[kind] = [now, 0, 0]
            self._forget_oldest()
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this were not logged]"
        if seen[1] < self.per_window:
            seen[1] += 1
            return True
        seen[2] += 1
        self.dropped += 1
        return False

    def _forget_oldest(self) -> None:
        while len(self._kinds) > self.max_kinds:
            self._kinds.pop(next(iter(self._kinds)))


def limit_logging(
    logger: logging.Logger | None = None, environ: dict | None = None, **settings
) -> RateLimit:
    """Install one ``RateLimit`` on ``logger``'s handlers (the root's by default), once.

    A Ray worker's root logger has no handler: its warnings reach stderr (and so the worker
    log and ``serve run``'s output) through Python's last-resort handler, bare and
    unfiltered. It gets a handler to stderr in ``TICKCAST_LOG_FORMAT`` with the filter, and
    tickcast's own loggers log from INFO (a symbol change, a restore); other libraries keep
    the root's WARNING.
    """
    target = logger or logging.getLogger()
    if not target.handlers:
        to_stderr = logging.StreamHandler()
        to_stderr.setFormatter(log_formatter(environ))
        target.addHandler(to_stderr)
        if logger is None:
            logging.getLogger("orchestrator").setLevel(logging.INFO)
    for handler in target.handlers:
        found = next((f for f in handler.filters if isinstance(f, RateLimit)), None)
        if found is not None:
            return found
    limit = RateLimit(**settings)
    for handler in target.handlers:
        handler.addFilter(limit)
    return limit
