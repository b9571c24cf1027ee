"""The one interface every feed source implements, and the optional capabilities a
source may add, each a small Protocol the feed actor checks with ``isinstance``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import pyarrow as pa

from orchestrator.market.validate import Rejects


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


@runtime_checkable
class HasHistory(Protocol):
    """Sends the candles before the live stream at start, without predictions, so features
    are warm when the first live candle closes."""

    async def history(self, minutes: int) -> pa.RecordBatch: ...


@runtime_checkable
class FetchesRange(Protocol):
    """Fetches [start, end) for one symbol (REST): gap repair, and warm-up where the source
    has no ``history``."""

    async def fetch_range(self, symbol: str, start_ms: int, end_ms: int) -> pa.RecordBatch: ...


@runtime_checkable
class Snapshottable(Protocol):
    """An offline source's position, as plain picklable data, to resume from after a restart
    (live sources just go on)."""

    def snapshot(self) -> dict: ...


@runtime_checkable
class ChangesSymbols(Protocol):
    """Symbols added and removed while the feed runs, between two ``next_batch`` calls
    (never during one); ``symbols`` always names the current set."""

    async def unknown_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Those of ``symbols`` this source cannot carry (not an exchange market, no replay
        file ...), in input order."""
        ...

    async def add_symbols(self, symbols: Sequence[str], warmup_minutes: int) -> pa.RecordBatch:
        """Starts carrying ``symbols`` (ones already carried are ignored) and returns their
        history: ``warmup_minutes`` 1m candles each (``CANDLE_SCHEMA``, time-ordered) that end
        where their live stream continues, so the next ``next_batch`` brings their first live
        candle right after it. Raises ``ValueError`` on unknown symbols, adding none."""
        ...

    def remove_symbols(self, symbols: Sequence[str]) -> None:
        """Stops carrying them (unknown ones ignored): ``next_batch`` never returns them again."""
        ...


@runtime_checkable
class Prefetches(Protocol):
    """Fetches what ``add_symbols`` needs (history over the network, files) ahead of it,
    while the feed keeps running; ``add_symbols`` then only takes it, so the feed pauses
    for milliseconds, not for the fetch."""

    async def prefetch(self, symbols: Sequence[str], warmup_minutes: int) -> None: ...


@runtime_checkable
class TakesAnySymbol(Protocol):
    """Carries whatever symbols its messages name (a topic's): when ``takes_any_symbol()``
    the gate accepts any symbol and ``symbols`` names those seen so far."""

    def takes_any_symbol(self) -> bool: ...


@runtime_checkable
class Rejecting(Protocol):
    """Reads messages that may not hold a candle at all (garbage bytes, an unknown format):
    hands them over with a reason, for the feed's quarantine."""

    def take_rejects(self) -> list[Rejects]: ...


@runtime_checkable
class CommitsPosition(Protocol):
    """Tells its upstream how far it has been read (Kafka offsets to a consumer group), once
    the feed's checkpoint holds that position: upstream then never forgets what a crash
    would need again."""

    async def commit(self, snapshot: dict) -> None: ...
