"""One external dependency's health, for quiet degradation (pure: no I/O).

A dependency that goes down yields one warning; while down, calls wait out a capped
exponential backoff instead of failing once per event; when it answers again, one line
says it is back and for how long it was gone. ``status()`` is the status field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    def __init__(
        self,
        name: str,
        log: logging.Logger,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        settle_s: float = 0.0,
    ):
        """``settle_s``: how long without a failure before it counts as back, for a
        dependency whose calls fail and succeed side by side (one symbol of many)."""
        self.name, self._log, self._clock = name, log, clock
        self.first_backoff_s, self.max_backoff_s, self.settle_s = (
            first_backoff_s,
            max_backoff_s,
            settle_s,
        )
        self.up = True  # until a call says otherwise; ``tried`` says whether one has
        self.tried = False
        self.down_since: float | None = None
        self.outages = 0  # times it went down
        self.failures = 0  # failed attempts, all outages
        self.last_error = ""
        self._backoff_s = 0.0
        self._next_try = 0.0
        self._last_failure = 0.0

    def ready(self) -> bool:
        """Whether to try the dependency now (always while up; after the backoff if down)."""
        return self.up or self._clock() >= self._next_try

    def failed(self, error: str) -> None:
        now = self._clock()
        self.tried = True
        self.failures += 1
        self.last_error = error
        self._last_failure = now
        if self.up:
            self.up, self.down_since, self.outages = False, now, self.outages + 1
            self._backoff_s = self.first_backoff_s
            self._log.warning(
                "%s is down (%s); retrying with backoff up to %.0f s, one line when it is back",
                self.name,
                error,
                self.max_backoff_s,
            )
        else:
            self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)
        self._next_try = now + self._backoff_s

    def succeeded(self) -> None:
        self.tried = True
        if self.up or self._clock() - self._last_failure < self.settle_s:
            return
        gone = self._clock() - (self.down_since or self._clock())
        self._log.warning("%s is back after %.1f s", self.name, gone)
        self.up, self.down_since, self._backoff_s = True, None, 0.0

    def status(self) -> dict:
        now = self._clock()
        return {
            "up": self.up,
            "tried": self.tried,
            "down_for_s": None if self.up else round(now - (self.down_since or now), 1),
            "retry_in_s": None if self.up else round(max(0.0, self._next_try - now), 1),
            "outages": self.outages,
            "failed_attempts": self.failures,
            "last_error": self.last_error,
        }
