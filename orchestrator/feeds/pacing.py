"""Replay pacing: N candles per second per symbol, or as fast as possible (speed 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """Schedules ticks on a fixed grid so pacing does not drift with processing time."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic):
        self._interval = 1.0 / speed if speed > 0 else 0.0
        self._clock = clock
        self._next: float | None = None

    async def wait(self) -> None:
        if self._interval == 0.0:
            await asyncio.sleep(0)  # still yield, so status calls are served during a fast replay
            return
        now = self._clock()
        self._next = now if self._next is None else max(self._next + self._interval, now - 1.0)
        await asyncio.sleep(max(0.0, self._next - now))
