"""In-order processing of pipelined batches (asyncio only: no Ray, no I/O).

A feed keeps several batches in flight to each shard, so the shard's CPU never waits for a
round trip. Ray does not promise that an async actor starts calls in the order they were
sent, so the shard admits each feed's batches strictly by sequence number; batch n + 1 may
update features as soon as batch n has (while n waits for its model), and a checkpoint
pauses admission until every admitted batch has finished, so a snapshot never includes a
batch whose predictions are still on their way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class BatchSequencer:
    def __init__(self, last_seq: dict[str, int] | None = None, wait_s: float = 120.0):
        self.last: dict[str, int] = dict(last_seq or {})  # feed -> newest batch whose state is in
        self._wait_s = wait_s
        self._changed = asyncio.Condition()
        self._busy = 0
        self._paused = False
        self.skipped = 0  # batches never received, given up after wait_s

    @contextlib.asynccontextmanager
    async def turn(self, feed: str, seq: int) -> AsyncIterator[bool]:
        """Wait until every earlier batch of ``feed`` has updated the state (and no checkpoint
        is running); yields whether the batch is new (False: a replay of one already seen).
        A predecessor that has not arrived after ``wait_s`` is given up (counted in
        ``skipped``): a call lost on the way must not stop the stream for good."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._admits(feed, seq)), self._wait_s
                )
            except TimeoutError:
                await self._changed.wait_for(lambda: not self._paused)
                self.skipped += max(0, seq - 1 - self.last.get(feed, -1))
                self.last[feed] = max(self.last.get(feed, -1), seq - 1)
            self._busy += 1
        try:
            yield seq > self.last.get(feed, -1)
        finally:
            # Even a batch that failed counts as done: one bad batch never blocks the next.
            self.last[feed] = max(seq, self.last.get(feed, -1))
            async with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def _admits(self, feed: str, seq: int) -> bool:
        return not self._paused and seq <= self.last.get(feed, -1) + 1

    async def advance(self, feed: str, seq: int) -> None:
        """Batch ``seq`` has updated the state: its successor may start."""
        self.last[feed] = max(seq, self.last.get(feed, -1))
        async with self._changed:
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[dict[str, int]]:
        """Admit nothing new and wait for admitted batches to finish; yields the sequence
        numbers the state then holds."""
        async with self._changed:
            self._paused = True
            await self._changed.wait_for(lambda: self._busy == 0)
        try:
            yield dict(self.last)
        finally:
            async with self._changed:
                self._paused = False
                self._changed.notify_all()
