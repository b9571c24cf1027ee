"""What both ccxt sources share: ``OhlcvFetcher`` (retried, counted REST calls and
pagination), ``FeedCounters``, ``Staleness``, ``rows_to_batch`` and ``CcxtSourceBase``
(config, client, fetcher, counters and the injectable clock, sleep and random)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial

import numpy as np
import pyarrow as pa

from orchestrator.feeds.ccxt.config import ExchangeConfig, build_client
from orchestrator.feeds.errors import (
    RETRYABLE_KINDS,
    ErrorKind,
    FeedError,
    InvalidFeedError,
    retry_after_seconds,
)
from orchestrator.feeds.retry import Rand, Sleep, with_retries
from orchestrator.health.outage import Outage
from orchestrator.market.archives import candles_from_ccxt
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS, timeframe_ms
from orchestrator.market.validate import table_to_batch

log = logging.getLogger(__name__)

TIMEFRAME = "1m"
HEALTHY_AFTER_S = 30.0  # an exchange counts as back after this long without a failure
MAX_LISTED = 20  # symbols listed by name in status (the counts are always complete)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


# --- conversion ------------------------------------------------------------------------


def rows_to_batch(
    exchange: str, rows_by_symbol: Mapping[str, Sequence], timeframe: str = TIMEFRAME
) -> tuple[pa.RecordBatch, int]:
    """ccxt OHLCV rows per symbol -> one batch ordered by open time, and the unusable row count.

    The sort is stable, so repeated candles keep their arrival order (the last is newest).
    Rows that cannot be placed in time are counted, not converted (``candles_from_ccxt``).
    """
    tables, rejected = [], 0
    for symbol, rows in rows_by_symbol.items():
        if len(rows):
            converted = candles_from_ccxt(
                rows, exchange=exchange, symbol=symbol, timeframe=timeframe
            )
            tables.append(converted.candles)
            rejected += len(converted.rejected)
    if not tables:
        return empty_batch(), rejected
    table = pa.concat_tables(tables)
    order = np.argsort(table.column("open_time").to_numpy(), kind="stable")
    return table_to_batch(table.take(pa.array(order))), rejected


def empty_batch() -> pa.RecordBatch:
    return table_to_batch(CANDLE_SCHEMA.empty_table())


def row_open_time(row: object) -> int | None:
    """A ccxt row's open time when it has a usable one (garbage rows are counted later)."""
    try:
        value = row[0]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- counters and staleness ---------------------------------------------------------------


class FeedCounters:
    """Plain counters a source reports in ``status()``."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.candles = 0
        self.rejected_rows = 0
        self.batches = 0
        self.errors: Counter[str] = Counter()
        self.last_error: str | None = None

    def record_error(self, error: FeedError, retried: bool) -> None:
        self.errors[error.kind.value] += 1
        self.retries += int(retried)
        self.last_error = f"{error.kind.value}: {error}"

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "candles": self.candles,
            "rejected_rows": self.rejected_rows,
            "batches": self.batches,
            "errors": {kind.value: self.errors.get(kind.value, 0) for kind in ErrorKind},
            "last_error": self.last_error,
        }


class Staleness:
    """Per symbol: when a candle with a newer open time was last seen (source clock, ms)."""

    def __init__(self, symbols: Iterable[str], started_ms: int, stale_after_ms: int) -> None:
        self.stale_after_ms = stale_after_ms
        self._newest: dict[str, int] = {}
        self._progress_ms = dict.fromkeys(symbols, started_ms)

    def track(self, symbols: Iterable[str], now_ms: int) -> None:
        """Symbols added while running: stale once ``stale_after_ms`` passes from ``now_ms``
        without a newer candle."""
        for symbol in symbols:
            self._progress_ms.setdefault(symbol, now_ms)

    def forget(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self._progress_ms.pop(symbol, None)
            self._newest.pop(symbol, None)

    def observe(self, symbol: str, newest_open_time: int, now_ms: int) -> None:
        if newest_open_time > self._newest.get(symbol, -1):
            self._newest[symbol] = newest_open_time
            self._progress_ms[symbol] = now_ms

    def stale(self, now_ms: int) -> list[str]:
        return sorted(s for s, t in self._progress_ms.items() if now_ms - t > self.stale_after_ms)

    def newest(self, symbol: str) -> int | None:
        return self._newest.get(symbol)

    def summary(self, now_ms: int) -> dict:
        stale = self.stale(now_ms)
        return {"stale_count": len(stale), "stale_symbols": stale[:MAX_LISTED]}


def observe_batch(staleness: Staleness, batch: pa.RecordBatch, now_ms: int) -> None:
    """Feed each symbol's newest open time in ``batch`` to ``staleness`` (one pass, vectorised)."""
    if batch.num_rows == 0:
        return
    names, symbol_ids = np.unique(
        batch.column("symbol").to_numpy(zero_copy_only=False), return_inverse=True
    )
    newest = np.full(len(names), np.iinfo(np.int64).min)
    np.maximum.at(newest, symbol_ids, batch.column("open_time").to_numpy())
    for name, open_time in zip(names, newest, strict=True):
        staleness.observe(str(name), int(open_time), now_ms)


def count_batch(
    counters: FeedCounters, batch: pa.RecordBatch, rejected: int, exchange: str
) -> None:
    counters.batches += 1
    counters.candles += batch.num_rows
    counters.rejected_rows += rejected
    if rejected:
        log.warning("%s: %d rows without a usable open time were not converted", exchange, rejected)


# --- REST calls ----------------------------------------------------------------------------


class OhlcvFetcher:
    """Retried, counted ``fetch_ohlcv`` calls on one ccxt client, and range pagination."""

    def __init__(
        self,
        client,
        config: ExchangeConfig,
        counters: FeedCounters,
        *,
        sleep: Sleep = asyncio.sleep,
        rand: Rand = random.random,
        timeframe: str = TIMEFRAME,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.counters = counters
        # Requests of many symbols fail and succeed side by side: "back" only after
        # HEALTHY_AFTER_S without a failure, so one bad symbol does not flap the log.
        self.health = Outage(
            f"exchange {config.exchange} (REST)", log, clock=clock_s, settle_s=HEALTHY_AFTER_S
        )
        self.timeframe = timeframe
        self.timeframe_ms = timeframe_ms(timeframe)
        self.markets_loaded = False
        self._secrets = client_secrets(client)
        self._fetch = self._retried(self._fetch_once, sleep, rand)
        self._load_markets = self._retried(self._load_markets_once, sleep, rand)

    def _retried(self, call: Callable[..., Awaitable], sleep: Sleep, rand: Rand):
        return with_retries(
            self.config.retry,
            exchange=self.config.exchange,
            sleep=sleep,
            rand=rand,
            on_error=self._on_error,
            retry_after_hint=lambda: retry_after_seconds(
                getattr(self.client, "last_response_headers", None)
            ),
            secrets=self._secrets,
        )(call)

    def _on_error(self, error: FeedError, attempt: int) -> None:
        retried = error.kind in RETRYABLE_KINDS and attempt < self.config.retry.max_attempts
        self.counters.record_error(error, retried)
        # Every failure is counted (status "errors"); the log gets one line when the
        # exchange starts failing and one when it has answered for a while again.
        self.health.failed(f"{error} (attempt {attempt})")

    async def _load_markets_once(self, reload: bool = False) -> None:
        self.counters.requests += 1
        await self.client.load_markets(reload)

    async def _fetch_once(self, symbol: str, since: int, limit: int | None) -> list:
        self.counters.requests += 1
        rows = await self.client.fetch_ohlcv(symbol, self.timeframe, since=since, limit=limit)
        if not isinstance(rows, list):
            raise InvalidFeedError(
                f"fetch_ohlcv({symbol}) answered {type(rows).__name__}, not a list"
            )
        self.health.succeeded()
        return rows

    async def load_markets(self, reload: bool = False) -> None:
        """Once; again with ``reload`` (markets listed since)."""
        if reload or not self.markets_loaded:
            await self._load_markets(reload)
            self.markets_loaded = True

    async def fetch_since(self, symbol: str, since: int, limit: int | None = None) -> list:
        """Candles with open time >= ``since`` (as many as the exchange gives in one page)."""
        await self.load_markets()
        return await self._fetch(symbol, since, limit)

    async def fetch_range(self, symbol: str, start_ms: int, end_ms: int) -> list:
        """Every candle with ``start_ms <= open_time < end_ms``, page by page."""
        rows: list = []
        async for page in self.pages(symbol, start_ms, end_ms):
            rows.extend(page)
        return rows

    async def pages(self, symbol: str, start_ms: int, end_ms: int) -> AsyncIterator[list]:
        """Pages of candles with ``start_ms <= open_time < end_ms``.

        Each page starts one ms after the newest candle of the previous one, so pages never
        overlap; the loop ends on an empty page, on reaching ``end_ms``, or when a page
        makes no progress (so it is bounded by the number of candles in the range).
        """
        cursor = start_ms
        while cursor < end_ms:
            page = await self.fetch_since(symbol, cursor, self.config.page_limit)
            yield [r for r in page if _in_range(r, start_ms, end_ms)]
            times = [t for t in map(row_open_time, page) if t is not None]
            if not times or max(times) < cursor:
                return
            cursor = max(times) + 1
            if max(times) + self.timeframe_ms >= end_ms:
                return


def _in_range(row: object, start_ms: int, end_ms: int) -> bool:
    t = row_open_time(row)
    return t is None or start_ms <= t < end_ms  # timeless rows pass on, to be counted


def client_secrets(client) -> tuple[str, ...]:
    """Credential values a client holds, so messages can be scrubbed of them."""
    names = ("apiKey", "secret", "password", "uid", "privateKey", "token")
    return tuple(v for v in (getattr(client, n, None) for n in names) if isinstance(v, str) and v)


async def gather_bounded(calls: Sequence[Callable[[], Awaitable]], limit: int) -> list:
    """Run ``calls`` with at most ``limit`` in flight; exceptions are returned, not raised."""
    semaphore = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable]):
        async with semaphore:
            return await call()

    return await asyncio.gather(*(run(c) for c in calls), return_exceptions=True)


def raise_first_error(results: Sequence) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


# --- the source -------------------------------------------------------------------------


class CcxtSourceBase:
    """What both ccxt sources hold: the config, a client, the REST fetcher (polling, gap
    repair and warm-up), counters, staleness, and the injectable clock, sleep and random."""

    websocket = False

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        client=None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        sleep: Sleep = asyncio.sleep,
        rand: Rand = random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.exchange = config.exchange
        self.symbols = config.symbols
        self.counters = FeedCounters()
        if client is None:
            client = build_client(config, websocket=self.websocket, environ=environ)
        self._client = client
        self._fetcher = OhlcvFetcher(
            self._client,
            config,
            self.counters,
            sleep=sleep,
            rand=rand,
            clock_s=lambda: clock_ms() / 1000.0,
        )
        self._clock, self._sleep, self._rand = clock_ms, sleep, rand
        self._staleness = Staleness(
            config.symbols, clock_ms(), config.stale_after_periods * MINUTE_MS
        )
        # symbols -> (the minute their history ends at, each one's rows), fetched ahead
        self._prefetched: dict[tuple[str, ...], tuple[int, list]] = {}

    async def unknown_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Those of ``symbols`` that are not markets of the exchange, in input order.

        Markets loaded earlier are loaded again when some are missing, so a market listed
        since the start is found. A failure to load raises (the fetcher's ``FeedError``).
        """
        fresh = not self._fetcher.markets_loaded
        await self._fetcher.load_markets()
        unknown = self._unlisted(symbols)
        if unknown and not fresh:
            await self._fetcher.load_markets(reload=True)
            unknown = self._unlisted(symbols)
        return unknown

    def _unlisted(self, symbols: Sequence[str]) -> list[str]:
        markets = self._client.markets or {}
        return [s for s in symbols if s not in markets]

    async def _start_carrying(
        self, symbols: Sequence[str], warmup_minutes: int
    ) -> tuple[list[str], int, pa.RecordBatch]:
        """Adds the symbols not yet carried; returns them, the open time their live candles
        start at (the current minute) and their ``warmup_minutes`` of history before it.

        Nothing changes unless every history fetch succeeds; an unknown symbol is a
        ``ValueError`` and a failed fetch its ``FeedError``.
        """
        carried = set(self.symbols)
        new = [s for s in dict.fromkeys(symbols) if s not in carried]
        now_ms = self._clock()
        live_from = now_ms - now_ms % MINUTE_MS
        if not new:
            return new, live_from, empty_batch()
        unknown = await self.unknown_symbols(new)
        if unknown:
            raise ValueError(f"not markets of {self.exchange}: {unknown[:5]}")
        fetched_to, results = self._prefetched.pop(tuple(new), (None, None))
        if results is None or fetched_to is None:
            results = await self._fetch_history(
                new, live_from - warmup_minutes * MINUTE_MS, live_from
            )
        elif fetched_to < live_from:  # a minute closed since the prefetch: its candles too
            later = await self._fetch_history(new, fetched_to, live_from)
            results = [a + b for a, b in zip(results, later, strict=True)]
        history, rejected = rows_to_batch(self.exchange, dict(zip(new, results, strict=True)))
        self.counters.rejected_rows += rejected
        self.symbols = (*self.symbols, *new)
        self._staleness.track(new, now_ms)
        observe_batch(self._staleness, history, now_ms)
        return new, live_from, history

    async def prefetch(self, symbols: Sequence[str], warmup_minutes: int) -> None:
        """The history ``add_symbols`` would fetch, fetched now (the feed keeps running)."""
        new = tuple(s for s in dict.fromkeys(symbols) if s not in set(self.symbols))
        if new:
            now_ms = self._clock()
            live_from = now_ms - now_ms % MINUTE_MS
            start = live_from - warmup_minutes * MINUTE_MS
            self._prefetched = {new: (live_from, await self._fetch_history(new, start, live_from))}

    async def _fetch_history(self, symbols: Sequence[str], start: int, end: int) -> list:
        results = await gather_bounded(
            [partial(self._fetcher.fetch_range, s, start, end) for s in symbols],
            self.config.max_concurrency,
        )
        raise_first_error(results)
        return results

    def _stop_carrying(self, symbols: Sequence[str]) -> list[str]:
        """Drops the carried ones of ``symbols`` from ``symbols`` and staleness; returns them."""
        gone = set(symbols) & set(self.symbols)
        self.symbols = tuple(s for s in self.symbols if s not in gone)
        self._staleness.forget(gone)
        return sorted(gone)
