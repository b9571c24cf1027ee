"""Live 1m candles from ccxt.pro websockets (``watch_ohlcv_for_symbols`` / ``watch_ohlcv``).

How it reads ccxt.pro: background *pump* tasks keep calling the watch method, which keeps
the connection up and the subscriptions alive; ccxt stores every kline update in its
per-symbol cache (``client.ohlcvs[symbol]['1m']``, updated in place by open time). A watch
call only resolves for the one symbol whose message woke it, and updates that arrive
while nobody is waiting resolve nothing, so the candles are not taken from the watch
results: ``next_batch`` *sweeps* the caches instead, newest first, and passes on every
row whose values changed since it was last passed on (new candles and revisions alike).

When the connection drops, the pump counts it, waits a capped, jittered exponential
backoff and watches again (ccxt opens a new connection and resubscribes). Candles missed
while disconnected are not replayed by the exchange. Two things cover them, both over
REST with the same ccxt.pro client (it subclasses ccxt's async REST client):
- *REST fallback* (``ws_rest_fallback``, on by default): while the socket is down or
  silent for ``ws_silence_s`` (a dead peer without a TCP reset is only noticed by ccxt's
  keep-alive after minutes), and once more after it is back, ``next_batch`` polls one page
  of each symbol's candles from the newest open time it has passed on. This matters beyond
  the gap: the candle still open when the connection dropped never gets its final update
  over the socket, and the gate downstream finalises pending candles by time (close +
  grace), so the final version must arrive within the grace, not after the reconnect;
- ``fetch_range``: the gate detects any gap left (REST down too, or an outage longer
  than one page per poll) and repairs it through this method.
``status()['outages']`` lists the recent disconnected windows.

Symbols added or removed while running restart the pumps: the next ``next_batch`` watches
the new symbol list (ccxt subscribes only the streams it has not yet). Removed symbols are
unsubscribed with ccxt.pro's ``un_watch_ohlcv_for_symbols``/``un_watch_ohlcv`` where the
exchange has them (best effort: a failure leaves streams that are no longer swept); without
them their streams run on, unswept, until the next reconnect. An added symbol's history
comes over REST up to the current minute, and its first batch polls one REST page from that
minute, since the stream only brings updates sent after it subscribed.

Not implemented: building 1m candles from ``watch_trades`` for exchanges without kline
streams; such an exchange is rejected with a fatal error naming the missing capability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import pyarrow as pa
from ccxt.base.errors import UnsubscribeError

from orchestrator.feeds.ccxt.common import (
    TIMEFRAME,
    CcxtSourceBase,
    client_secrets,
    count_batch,
    gather_bounded,
    observe_batch,
    raise_first_error,
    row_open_time,
    rows_to_batch,
)
from orchestrator.feeds.ccxt.config import ExchangeConfig
from orchestrator.feeds.errors import (
    RETRYABLE_KINDS,
    ErrorKind,
    FatalFeedError,
    FeedError,
    to_feed_error,
)
from orchestrator.feeds.retry import Backoff

log = logging.getLogger(__name__)

# A sweep walks each cache from the newest row and stops after this many rows in a row
# that were already passed on unchanged; revisions land on the newest rows, so 3 covers
# a late final update of the previous candle arriving after the next one started.
UNCHANGED_ROWS_TO_STOP = 3
# Open times remembered per symbol to recognise unchanged rows.
REMEMBERED_PER_SYMBOL = 64
OUTAGES_KEPT = 16
UNWATCH_TIMEOUT_S = 10.0


class CcxtWsSource(CcxtSourceBase):
    """``FeedSource`` over ccxt.pro kline streams for one exchange and a group of symbols."""

    websocket = True

    def __init__(self, config: ExchangeConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self._secrets = client_secrets(self._client)
        self._passed_on: dict[str, dict[int, tuple]] = {}
        self._data_ready = asyncio.Event()
        self._pumps: list[asyncio.Task] = []
        self._stopped_pumps: list[asyncio.Task] = []
        self._to_unwatch: set[str] = set()
        self._live_from: dict[str, int] = {}  # added symbols: where their first poll starts
        self._fatal: FeedError | None = None
        self._closed = False
        self._connected = False
        self._ever_connected = False
        self._messages = 0
        self._disconnects = 0
        self._reconnects = 0
        self._outages: deque[list[int | None]] = deque(maxlen=OUTAGES_KEPT)
        self._resync_pending = False
        self._rest_polls = 0
        self._last_message_at = 0.0

    def __repr__(self) -> str:
        return f"CcxtWsSource(exchange={self.exchange!r}, symbols={len(self.symbols)})"

    # --- FeedSource -------------------------------------------------------------------------

    async def next_batch(self) -> pa.RecordBatch | None:
        if self._closed:
            return None
        await self._settle_subscriptions()
        self._start_pumps()
        await self._wait_for_data()
        if self._fatal is not None:
            raise self._fatal
        polled = await self._poll_rest() if self._rest_needed() else {}
        polled = _concat_rows(polled, await self._poll_added(skip=polled))
        now_ms = self._clock()
        batch, rejected = rows_to_batch(self.exchange, _concat_rows(polled, self._sweep()))
        count_batch(self.counters, batch, rejected, self.exchange)
        observe_batch(self._staleness, batch, now_ms)
        return batch

    async def add_symbols(self, symbols: Sequence[str], warmup_minutes: int) -> pa.RecordBatch:
        """History over REST up to the current minute; the next batch polls them from it."""
        new, live_from, history = await self._start_carrying(symbols, warmup_minutes)
        for symbol in new:
            self._forget_cache(symbol)  # rows from before a removal must not be swept again
            self._live_from[symbol] = live_from
        if new:
            self._to_unwatch.difference_update(new)
            self._stop_pumps()
        return history

    def remove_symbols(self, symbols: Sequence[str]) -> None:
        gone = self._stop_carrying(symbols)
        for symbol in gone:
            self._forget_cache(symbol)
            self._live_from.pop(symbol, None)
        if gone:
            self._to_unwatch.update(gone)
            self._stop_pumps()

    async def fetch_range(self, symbol: str, start_ms: int, end_ms: int) -> pa.RecordBatch:
        """Candles of ``symbol`` with ``start_ms <= open_time < end_ms``, over REST."""
        rows = await self._fetcher.fetch_range(symbol, start_ms, end_ms)
        batch, rejected = rows_to_batch(self.exchange, {symbol: rows})
        self.counters.rejected_rows += rejected
        return batch

    async def close(self) -> None:
        self._closed = True
        self._stop_pumps()
        await asyncio.gather(*self._stopped_pumps, return_exceptions=True)
        self._stopped_pumps.clear()
        await self._client.close()

    def status(self) -> dict:
        now_ms = self._clock()
        return {
            "kind": "ccxt_ws",
            **self.config.describe(),
            "connected": self._connected,
            "subscriptions": len(self._pumps),
            "messages": self._messages,
            "disconnects": self._disconnects,
            "reconnects": self._reconnects,
            "outages": [list(o) for o in self._outages],
            "rest_polls": self._rest_polls,
            "fatal": None if self._fatal is None else str(self._fatal),
            **self.counters.as_dict(),
            **self._staleness.summary(now_ms),
            "rest_health": self._fetcher.health.status(),
        }

    # --- pumps: keep the streams flowing ---------------------------------------------------

    def _start_pumps(self) -> None:
        if self._pumps or self._fatal is not None:
            return
        try:
            watches = self._watch_calls()
        except FeedError as error:
            self._fail(error)
            return
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump(watch)) for watch in watches]

    def _stop_pumps(self) -> None:
        for task in self._pumps:
            task.cancel()
        self._stopped_pumps.extend(self._pumps)
        self._pumps = []

    async def _settle_subscriptions(self) -> None:
        """After symbols changed: the old pumps have ended and removed symbols' streams are
        unsubscribed before ``_start_pumps`` watches the new list."""
        if self._stopped_pumps:
            await asyncio.gather(*self._stopped_pumps, return_exceptions=True)
            self._stopped_pumps.clear()
        if self._to_unwatch:
            gone, self._to_unwatch = sorted(self._to_unwatch), set()
            if self._connected:  # a new connection subscribes the current symbols only
                await self._unwatch(gone)

    async def _unwatch(self, symbols: list[str]) -> None:
        has, size = self._client.has, self.config.ws_symbols_per_subscription
        if has.get("unWatchOHLCVForSymbols"):
            calls = [
                self._client.un_watch_ohlcv_for_symbols([[s, TIMEFRAME] for s in chunk])
                for chunk in (symbols[i : i + size] for i in range(0, len(symbols), size))
            ]
        elif has.get("unWatchOHLCV"):
            calls = [self._client.un_watch_ohlcv(s, TIMEFRAME) for s in symbols]
        else:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*calls), UNWATCH_TIMEOUT_S)
        except Exception as exc:  # their streams are no longer swept: only bandwidth is lost
            error = to_feed_error(exc, self.exchange, secrets=self._secrets)
            log.warning(
                "%s: unsubscribing %d symbols failed: %s", self.exchange, len(symbols), error
            )
        for symbol in symbols:
            self._forget_cache(symbol)

    def _forget_cache(self, symbol: str) -> None:
        self._passed_on.pop(symbol, None)
        caches = getattr(self._client, "ohlcvs", None)
        if caches:
            caches.pop(symbol, None)

    def _watch_calls(self) -> list[Callable[[], Awaitable]]:
        """One call per subscription: symbol chunks where the exchange can, else per symbol."""
        has = self._client.has
        if has.get("watchOHLCVForSymbols"):
            size = self.config.ws_symbols_per_subscription
            chunks = [self.symbols[i : i + size] for i in range(0, len(self.symbols), size)]
            return [
                partial(self._client.watch_ohlcv_for_symbols, [[s, TIMEFRAME] for s in chunk])
                for chunk in chunks
            ]
        if has.get("watchOHLCV"):
            return [partial(self._client.watch_ohlcv, s, TIMEFRAME) for s in self.symbols]
        raise FatalFeedError(
            f"{self.exchange}: ccxt.pro offers no watchOHLCV (trade aggregation not built)"
        )

    async def _pump(self, watch: Callable[[], Awaitable]) -> None:
        backoff = Backoff(self.config.reconnect, rand=self._rand)
        while not self._closed:
            try:
                await self._fetcher.load_markets()  # retried and counted by the fetcher
                await watch()
            except FeedError as error:
                if error.kind is ErrorKind.FATAL:
                    self._fail(error)
                    return
                await self._sleep(backoff.next_delay(error.kind, error.retry_after_s))
                continue
            except UnsubscribeError:  # a stream unsubscribed when its symbol was removed,
                continue  # since added again: this watch has subscribed it anew
            except Exception as exc:  # CancelledError is a BaseException: close() ends us
                error = to_feed_error(exc, self.exchange, secrets=self._secrets)
                if not self._on_watch_error(error):
                    return
                await self._sleep(backoff.next_delay(error.kind, error.retry_after_s))
                continue
            backoff.reset()
            self._on_message()

    def _on_watch_error(self, error: FeedError) -> bool:
        """Count ``error``; True when the pump should back off and watch again."""
        if error.kind is ErrorKind.FATAL:
            self.counters.record_error(error, retried=False)
            self._fail(error)
            return False
        self.counters.record_error(error, retried=error.kind in RETRYABLE_KINDS)
        log.warning("%s websocket: %s", self.exchange, error)
        if self._connected:
            self._connected = False
            self._disconnects += 1
            self._outages.append([self._clock(), None])
            self._data_ready.set()  # wake next_batch: it polls REST while we are away
        return True

    def _on_message(self) -> None:
        self._messages += 1
        self._last_message_at = asyncio.get_running_loop().time()
        if not self._connected:
            self._connected = True
            if self._ever_connected:
                self._reconnects += 1
                self._resync_pending = True
            self._ever_connected = True
            if self._outages and self._outages[-1][1] is None:
                self._outages[-1][1] = self._clock()
        self._data_ready.set()

    def _fail(self, error: FeedError) -> None:
        log.error("%s websocket source stopped: %s", self.exchange, error)
        self._fatal = error
        self._data_ready.set()

    # --- REST fallback while the socket is down ----------------------------------------------

    def _rest_needed(self) -> bool:
        if not (self.config.ws_rest_fallback and self._ever_connected):
            return False
        silent = (
            asyncio.get_running_loop().time() - self._last_message_at > self.config.ws_silence_s
        )
        return not self._connected or silent or self._resync_pending

    async def _poll_rest(self) -> dict[str, list]:
        """One REST page per symbol from the newest open time it has passed on."""
        self._resync_pending = False
        self._rest_polls += 1
        starts = {s: t for s in self.symbols if (t := self._staleness.newest(s)) is not None}
        results = await gather_bounded(
            [partial(self._poll_symbol, s, t) for s, t in starts.items()],
            self.config.max_concurrency,
        )
        raise_first_error(results)
        return dict(zip(starts, results, strict=True))

    async def _poll_added(self, skip: dict[str, list]) -> dict[str, list]:
        """One REST page of each symbol added since the last batch, from where its history
        ended (unless ``skip`` has its rows already)."""
        if not self._live_from:
            return {}
        starts = {s: t for s, t in self._live_from.items() if s not in skip}
        self._live_from.clear()
        results = await gather_bounded(
            [partial(self._poll_symbol, s, t) for s, t in starts.items()],
            self.config.max_concurrency,
        )
        raise_first_error(results)
        return dict(zip(starts, results, strict=True))

    async def _poll_symbol(self, symbol: str, since: int) -> list:
        try:
            return await self._fetcher.fetch_since(symbol, since, self.config.page_limit)
        except FeedError as error:
            if error.kind is ErrorKind.FATAL:
                raise
            return []  # counted by the fetcher; the gate's gap repair is the fallback

    # --- sweeping ccxt's caches ---------------------------------------------------------------

    async def _wait_for_data(self) -> None:
        if not self._data_ready.is_set() and self.config.poll_interval_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data_ready.wait(), self.config.poll_interval_s)
        self._data_ready.clear()

    def _sweep(self) -> dict[str, list]:
        caches = getattr(self._client, "ohlcvs", None) or {}
        changed = {}
        for symbol in self.symbols:
            cache = caches.get(symbol, {}).get(TIMEFRAME)
            if cache:
                rows = self._changed_rows(symbol, cache)
                if rows:
                    changed[symbol] = rows
        return changed

    def _changed_rows(self, symbol: str, cache) -> list:
        """Rows of ``cache`` not yet passed on with their current values, oldest first."""
        passed_on = self._passed_on.setdefault(symbol, {})
        changed, unchanged_in_a_row = [], 0
        for row in reversed(cache):
            values = tuple(row[1:6])
            open_time = row_open_time(row)
            if passed_on.get(open_time) == values:
                unchanged_in_a_row += 1
                if unchanged_in_a_row >= UNCHANGED_ROWS_TO_STOP:
                    break
                continue
            unchanged_in_a_row = 0
            changed.append(list(row))
            passed_on[open_time] = values
        _forget_oldest(passed_on, REMEMBERED_PER_SYMBOL)
        changed.reverse()
        return changed


def _concat_rows(first: dict[str, list], then: dict[str, list]) -> dict[str, list]:
    """Per-symbol rows of ``first`` followed by those of ``then`` (later rows are newer)."""
    return {s: first.get(s, []) + then.get(s, []) for s in {**first, **then}}


def _forget_oldest(passed_on: dict[int | None, tuple], keep: int) -> None:
    if len(passed_on) > keep:
        for open_time in sorted(passed_on, key=lambda t: -1 if t is None else t)[
            : len(passed_on) - keep
        ]:
            del passed_on[open_time]
