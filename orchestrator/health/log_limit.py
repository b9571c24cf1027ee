"""At most a few log lines per kind of message a minute, whatever happens (pure: logging only).

A kind is the logger and the message's format string (``"feed %s: batch failed"``), not
its arguments, so a failure repeated for every batch or symbol is one kind. The first
``per_window`` records of a kind in a window pass; the rest are counted and dropped, and
the next record of that kind to pass says how many were dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


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


def limit_logging(logger: logging.Logger | None = None, **settings) -> RateLimit:
    """Install one ``RateLimit`` on ``logger``'s handlers (the root's by default), once.

    A Ray worker's root logger has no handler: its warnings reach stderr (and so the worker
    log and ``serve run``'s output) through Python's last-resort handler, which takes no
    filter. It gets a handler that does what that one does (WARNING and up, the bare
    message, to stderr), with the filter.
    """
    target = logger or logging.getLogger()
    if not target.handlers:
        last_resort = logging.StreamHandler()
        last_resort.setLevel(logging.WARNING)
        target.addHandler(last_resort)
    for handler in target.handlers:
        found = next((f for f in handler.filters if isinstance(f, RateLimit)), None)
        if found is not None:
            return found
    limit = RateLimit(**settings)
    for handler in target.handlers:
        handler.addFilter(limit)
    return limit
