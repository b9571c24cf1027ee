"""Live 1m candles by polling ccxt's REST ``fetch_ohlcv``, plus paginated gap repair.

Each poll asks every symbol for ``since = last closed open time + 1``, so the still-open
candle is fetched again until it closes: its revisions go downstream, where the gate
decides finality by time. Requests run with bounded concurrency and go through ccxt's
own throttle (``enableRateLimit``) and one retry decorator. A symbol whose request fails
for good (after retries, or at once when invalid) is counted and simply asked again from
the same ``since`` next poll: nothing is skipped. Fatal errors stop the source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pyarrow as pa

from orchestrator.feeds.ccxt.common import (
    MAX_LISTED,
    CcxtSourceBase,
    count_batch,
    empty_batch,
    gather_bounded,
    observe_batch,
    raise_first_error,
    row_open_time,
    rows_to_batch,
)
from orchestrator.feeds.ccxt.config import ExchangeConfig
from orchestrator.feeds.errors import ErrorKind, FeedError
from orchestrator.market.timeframes import MINUTE_MS

log = logging.getLogger(__name__)


class CcxtRestSource(CcxtSourceBase):
    """``FeedSource`` over ccxt REST polling for one exchange and a group of symbols."""

    def __init__(self, config: ExchangeConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self._next_since: dict[str, int] = {}
        self._failing: dict[str, str] = {}
        self._next_poll_at: float | None = None
        self._last_poll_ms: int | None = None
        self._polls = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"CcxtRestSource(exchange={self.exchange!r}, symbols={len(self.symbols)})"

    async def next_batch(self) -> pa.RecordBatch | None:
        if self._closed:
            return None
        await self._pace()
        now_ms = self._clock()
        if not await self._markets_ready():
            return empty_batch()
        results = await gather_bounded(
            [lambda s=s: self._poll_symbol(s, now_ms) for s in self.symbols],
            self.config.max_concurrency,
        )
        raise_first_error(results)
        batch, rejected = rows_to_batch(
            self.exchange, dict(zip(self.symbols, results, strict=True))
        )
        self._account(batch, rejected, now_ms)
        return batch

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        if self._next_poll_at is not None and self._next_poll_at > loop.time():
            await self._sleep(self._next_poll_at - loop.time())
        self._next_poll_at = (
            max(loop.time(), self._next_poll_at or 0.0) + self.config.poll_interval_s
        )

    async def _markets_ready(self) -> bool:
        """Load markets once; a non-fatal failure (already counted) just skips this poll."""
        try:
            await self._fetcher.load_markets()
        except FeedError as error:
            if error.kind is ErrorKind.FATAL:
                raise
            return False
        return True

    async def _poll_symbol(self, symbol: str, now_ms: int) -> list:
        since = self._since(symbol, now_ms)
        try:
            rows = await self._fetcher.fetch_since(symbol, since)
        except FeedError as error:
            if error.kind is ErrorKind.FATAL:
                raise
            self._failing[symbol] = str(error)
            return []
        self._failing.pop(symbol, None)
        self._advance(symbol, rows, now_ms)
        return rows

    def _since(self, symbol: str, now_ms: int) -> int:
        """Where the next request for ``symbol`` starts: just after its last closed candle.

        Before the first success it is the first poll's lookback start, kept fixed, so a
        symbol whose first polls fail still starts there rather than drifting with time.
        """
        if symbol not in self._next_since:
            current = now_ms - now_ms % MINUTE_MS
            self._next_since[symbol] = current - self.config.start_lookback_minutes * MINUTE_MS
        return self._next_since[symbol]

    def _advance(self, symbol: str, rows: list, now_ms: int) -> None:
        closed = [t for t in map(row_open_time, rows) if t is not None and t + MINUTE_MS <= now_ms]
        if closed:
            self._next_since[symbol] = max(max(closed) + 1, self._next_since[symbol])

    def _account(self, batch: pa.RecordBatch, rejected: int, now_ms: int) -> None:
        self._polls += 1
        self._last_poll_ms = now_ms
        count_batch(self.counters, batch, rejected, self.exchange)
        observe_batch(self._staleness, batch, now_ms)

    async def add_symbols(self, symbols: Sequence[str], warmup_minutes: int) -> pa.RecordBatch:
        """History up to the current minute, then polled from it: the first poll asks for the
        current minute, the first live candle, right after the history."""
        new, live_from, history = await self._start_carrying(symbols, warmup_minutes)
        for symbol in new:
            self._next_since[symbol] = live_from
            self._failing.pop(symbol, None)
        return history

    def remove_symbols(self, symbols: Sequence[str]) -> None:
        for symbol in self._stop_carrying(symbols):
            self._next_since.pop(symbol, None)
            self._failing.pop(symbol, None)

    async def fetch_range(self, symbol: str, start_ms: int, end_ms: int) -> pa.RecordBatch:
        """Candles of ``symbol`` with ``start_ms <= open_time < end_ms`` (gap repair)."""
        rows = await self._fetcher.fetch_range(symbol, start_ms, end_ms)
        batch, rejected = rows_to_batch(self.exchange, {symbol: rows})
        if rejected:
            self.counters.rejected_rows += rejected
            log.warning(
                "%s %s: %d rows without a usable open time", self.exchange, symbol, rejected
            )
        return batch

    async def close(self) -> None:
        self._closed = True
        await self._client.close()

    def status(self) -> dict:
        now_ms = self._clock()
        return {
            "kind": "ccxt_rest",
            **self.config.describe(),
            "markets_loaded": self._fetcher.markets_loaded,
            "polls": self._polls,
            "last_poll_ms": self._last_poll_ms,
            **self.counters.as_dict(),
            **self._staleness.summary(now_ms),
            "failing_count": len(self._failing),
            "failing_symbols": dict(sorted(self._failing.items())[:MAX_LISTED]),
            "rest_health": self._fetcher.health.status(),
        }
