"""What the HTTP API needs from the system behind it, as one interface.

The Serve ingress implements it with deployment and actor handles (``ServeBackend`` in
``serve_app/ingress.py``); ``LocalBackend`` implements it in one process with no Ray — the
same models, the same prediction log — for the plain-uvicorn baseline and for fuzzing.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from orchestrator.sinks.history import HistoryPage, HistoryQuery


class BackendError(RuntimeError):
    """A request the backend cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # raised in a deployment, re-raised in the ingress: keep the status
        return type(self), (self.status, str(self))


class Backend(Protocol):
    async def predict(
        self, model_type: str, timeframe: str, version: str | None, rows: np.ndarray
    ) -> dict:
        """{model_id, model_type, version, names, values (n, len(names))}."""
        ...

    async def latest(self, symbol: str | None, timeframe: str | None) -> list[dict]: ...

    async def history(self, query: HistoryQuery) -> HistoryPage: ...

    async def snapshot(self) -> tuple[int, list[dict]]:
        """The latest prediction of every key and the ``since`` cursor it is current at, read
        at one instant (a stream's first message)."""
        ...

    async def since(self, cursor: int, timeout_s: float) -> tuple[int, list[dict], bool]:
        """Predictions recorded after ``cursor`` (waiting up to ``timeout_s`` for one)."""
        ...

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, limit: int
    ) -> dict[str, list] | None:
        """Recent closed candles, oldest first, as columns (open_time, open, ..., volume);
        None when no shard holds the series."""
        ...

    async def outcomes(self) -> dict:
        """Live outcome metrics merged over the shards (``merge_metrics``)."""
        ...

    async def status(self) -> dict: ...

    async def ready(self) -> tuple[bool, dict]: ...

    async def served_models(self) -> dict[str, str]:
        """model id -> version currently served."""
        ...

    async def feed_symbols(self, feed: str) -> dict:
        """{feed, symbols}: what one feed carries now (404: no such feed)."""
        ...

    async def change_symbols(
        self, feed: str, add: list[str], remove: list[str], warmup_minutes: int | None
    ) -> dict:
        """Symbols added to and removed from a running feed: {feed, exchange, added,
        removed, unchanged, warmup_candles, symbols}; 404 no feed, 422 unknown symbols,
        409 a source that cannot change."""
        ...
