"""The one interface every feed source implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class FeedSource(Protocol):
    """An async producer of 1m candles in ``CANDLE_SCHEMA``.

    ``next_batch`` returns the candles that became final since the last call, for any
    subset of the source's symbols, ordered by open time (a batch may span several
    minutes after a gap repair). It returns ``None`` once the source is exhausted
    (a finished replay); live sources never do. It may return an empty batch.
    The caller validates and gates the candles; a source never drops one silently.
    """

    exchange: str
    symbols: tuple[str, ...]

    async def next_batch(self) -> pa.RecordBatch | None: ...

    async def close(self) -> None: ...

    def status(self) -> dict:
        """Plain, JSON-able status (no secrets): counters, staleness, reconnects."""
        ...

    # Optional, not part of the protocol check:
    #   async history(minutes) -> RecordBatch: the candles before the live stream, sent at
    #     start without predictions so features are warm when the first live candle closes;
    #   async fetch_range(symbol, start_ms, end_ms) -> RecordBatch: [start, end) by REST,
    #     for gap repair (and, where there is no ``history``, for warm-up).
