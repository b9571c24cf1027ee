"""The sink's link to the event bus: publishes through outages without noise or growth.

While the bus is down, new predictions wait in a buffer bounded by ``max_rows``; past it the
oldest are dropped and counted (the Parquet log stays the record of truth). When the bus
answers again the buffer goes out first, in order, so consumers see every event published
after it came back and, of the outage, as many as the buffer held. Delivery stays at least
once: a batch that failed half-way is sent again whole (consumers dedupe on ``event_id``).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import pyarrow as pa

from orchestrator.health.outage import Outage
from orchestrator.sinks.redis_bus import EventBusError


class Bus(Protocol):
    def publish(self, table: pa.Table) -> list[str]: ...


class BusLink:
    def __init__(self, bus: Bus, outage: Outage, max_rows: int = 100_000):
        self.bus, self.outage, self.max_rows = bus, outage, max_rows
        self._pending: deque[pa.Table] = deque()
        self.pending_rows = self.published = self.dropped = 0

    def publish(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table)
            self.pending_rows += table.num_rows
        if self.outage.ready():
            self.flush()
        self._bound()  # after a try: a bus that came back takes this batch too

    def flush(self) -> None:
        """Send what waits, oldest first; stop at the first failure (the outage backs off)."""
        while self._pending:
            table = self._pending[0]
            try:
                self.bus.publish(table)
            except EventBusError as exc:
                self.outage.failed(str(exc))
                return
            self._pending.popleft()
            self.pending_rows -= table.num_rows
            self.published += table.num_rows
            self.outage.succeeded()

    def _bound(self) -> None:
        while self.pending_rows > self.max_rows:
            over = self.pending_rows - self.max_rows
            oldest = self._pending[0]
            if oldest.num_rows <= over:
                self._pending.popleft()
                cut = oldest.num_rows
            else:
                self._pending[0] = oldest.slice(over)
                cut = over
            self.pending_rows -= cut
            self.dropped += cut

    def status(self) -> dict:
        return {
            **self.outage.status(),
            "published": self.published,
            "waiting": self.pending_rows,
            "dropped": self.dropped,
        }
