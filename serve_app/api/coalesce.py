"""Coalescing of concurrent predict calls into one model call (pure: asyncio, no Ray).

A Ray Serve handle call costs milliseconds of CPU whatever it carries, while the model
costs microseconds a row: HTTP requests for the same model that arrive together should share
one call. ``Coalescer.predict(key, rows)`` stands in for ``call(key, rows)``: when no call
for ``key`` is in flight the request goes at once (a lone request is never delayed); while
one is, requests gather until it returns, for at most ``window_s`` (or until ``max_rows``
rows), and then go as one matrix, whose result is split back, in order, to each request. A
failed call fails every request it carried, with the call's own exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

PredictCall = Callable[[Hashable, np.ndarray], Awaitable[dict]]


def split_result(result: dict, sizes: list[int]) -> list[dict]:
    """One model result over concatenated rows -> one result per part, ``values`` sliced."""
    values = np.asarray(result["values"])
    if len(values) != sum(sizes):
        raise ValueError(f"the model answered {len(values)} rows for {sum(sizes)}")
    parts = np.split(values, np.cumsum(sizes)[:-1])
    return [{**result, "values": part} for part in parts]


@dataclass
class _Batch:
    parts: list[np.ndarray] = field(default_factory=list)
    waiters: list[asyncio.Future] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None

    def add(self, rows: np.ndarray, waiter: asyncio.Future) -> None:
        self.parts.append(rows)
        self.waiters.append(waiter)
        self.rows += len(rows)


class Coalescer:
    def __init__(self, call: PredictCall, window_s: float, max_rows: int):
        if window_s < 0 or max_rows < 1:
            raise ValueError("window_s must be >= 0 and max_rows >= 1")
        self._call, self.window_s, self.max_rows = call, window_s, max_rows
        self._open: dict[Hashable, _Batch] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task] = set()  # strong references until each call ends
        self.calls = self.requests = 0  # counters, for status pages and tests

    async def predict(self, key: Hashable, rows: np.ndarray) -> dict:
        self.requests += 1
        if self.window_s == 0:  # off: every request is its own call
            self.calls += 1
            return await self._call(key, rows)
        waiter = asyncio.get_running_loop().create_future()
        batch = self._batch_for(key, len(rows))
        batch.add(rows, waiter)
        if batch.rows >= self.max_rows or batch.timer is None:  # full, or nothing to wait for
            self._send(key)
        return await waiter

    def _batch_for(self, key: Hashable, n_rows: int) -> _Batch:
        """The open batch for ``key`` with room for ``n_rows`` more (a full one is sent)."""
        batch = self._open.get(key)
        if batch is not None and batch.rows + n_rows > self.max_rows:
            self._send(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch()
            if self._in_flight.get(key):  # a call is out: wait for company, at most window_s
                batch.timer = asyncio.get_running_loop().call_later(self.window_s, self._send, key)
        return batch

    def _send(self, key: Hashable) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, batch: _Batch) -> None:
        try:
            rows = batch.parts[0] if len(batch.parts) == 1 else np.concatenate(batch.parts)
            results = split_result(await self._call(key, rows), [len(p) for p in batch.parts])
        except asyncio.CancelledError:
            _cancel(batch.waiters)
            raise
        except Exception as exc:  # every waiter gets the call's own error
            _settle(batch.waiters, exc=exc)
        else:
            _settle(batch.waiters, results=results)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
                self._send(key)  # the model is idle: what gathered meanwhile goes now


def _settle(
    waiters: list[asyncio.Future], results: list[dict] | None = None, exc: Exception | None = None
) -> None:
    for i, waiter in enumerate(waiters):
        if waiter.done():  # its request was cancelled (the client went away)
            continue
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(results[i])


def _cancel(waiters: list[asyncio.Future]) -> None:
    for waiter in waiters:
        waiter.cancel()
