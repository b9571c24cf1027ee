"""A local fake of Binance's spot REST API and kline websocket stream, for real ccxt clients.

ccxt's ``binance`` (REST, ``ccxt.async_support``) and ``ccxt.pro`` talk to it unchanged
except for URL overrides (``FakeBinance.ccxt_urls()``). What ccxt needs, found in its
source: ``load_markets`` calls ``GET /api/v3/exchangeInfo`` when ``fetchMarkets`` is
limited to spot and there are no credentials; ``fetch_ohlcv`` calls ``GET /api/v3/klines``;
``watch_ohlcv[_for_symbols]`` connects to ``<urls.api.ws.spot>/<n>``, sends
``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": n}`` and parses
``{"e": "kline", "k": {...}}`` events.

The test controls the clock (``now_ms``) and injects faults (``add_fault``). The server
binds 127.0.0.1 on an ephemeral port and stops when its ``async with`` block ends.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import ccxt.pro
from aiohttp import WSMsgType, web

from tests.fakes.candle_series import MINUTE_MS, kline_event, kline_row, market_id

FaultKind = Literal[
    "drop",
    "http_429",
    "http_418",
    "http_5xx",
    "auth",
    "malformed",
    "garbage_rows",
    "duplicate",
    "shuffle",
    "gap",
]
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500


@dataclass
class Fault:
    """One injected misbehaviour of ``/api/v3/klines``, applied to the next ``times`` matches."""

    kind: FaultKind
    symbol: str | None = None  # unified symbol; None matches any
    times: int = 1
    retry_after_s: float = 1.0
    status: int = 503
    hide: frozenset[int] = frozenset()  # open times a "gap" response leaves out

    def matches(self, symbol: str) -> bool:
        return self.times > 0 and self.symbol in (None, symbol)


@dataclass
class _WsConnection:
    response: web.WebSocketResponse
    request: web.Request
    streams: set[str] = field(default_factory=set)


@functools.cache
def _binance_urls() -> dict:
    return ccxt.pro.binance().urls["api"]


def _binance_api_roots() -> list[str]:
    return [key for key, value in _binance_urls().items() if isinstance(value, str)]


def _binance_ws_roots() -> dict:
    return _binance_urls()["ws"]


def _all_leaves(tree: dict, url: str) -> dict:
    """``tree`` with every string leaf replaced by ``url/<path>``."""
    return {
        key: _all_leaves(value, f"{url}/{key}") if isinstance(value, dict) else f"{url}/{key}"
        for key, value in tree.items()
    }


def _symbol_info(symbol: str) -> dict:
    base, quote = symbol.split("/")
    return {
        "symbol": market_id(symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "permissions": ["SPOT"],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01",
                "maxPrice": "1000000",
                "tickSize": "0.01",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.0001"},
        ],
    }


def kline_open_times(first_open_ms: int, now_ms: int, query: dict[str, str]) -> list[int]:
    """The open times Binance would answer for ``startTime``/``endTime``/``limit``.

    Binance includes the still-open candle; ``startTime`` and ``endTime`` bound open times
    inclusively; without ``startTime`` it answers the most recent ``limit`` candles.
    """
    limit = min(int(query.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
    last = now_ms - now_ms % MINUTE_MS
    if "endTime" in query:
        end = int(query["endTime"])
        last = min(last, end - end % MINUTE_MS)
    if "startTime" not in query:
        first = max(first_open_ms, last - (limit - 1) * MINUTE_MS)
        return list(range(first, last + 1, MINUTE_MS))
    start = int(query["startTime"])
    first = max(first_open_ms, -(-start // MINUTE_MS) * MINUTE_MS)
    return list(range(first, last + 1, MINUTE_MS))[:limit]


class FakeBinance:
    """Fake Binance spot REST + websocket server; use as ``async with FakeBinance(...) as fake``."""

    def __init__(self, symbols: tuple[str, ...], *, now_ms: int, first_open_ms: int):
        self.symbols = tuple(symbols)
        self.now_ms = now_ms
        self.first_open_ms = first_open_ms
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        self.faults_applied: Counter[str] = Counter()
        self.kline_queries: list[dict[str, str]] = []
        self.ws_connections_total = 0
        self.klines_in_flight = 0
        self.max_klines_in_flight = 0
        self._by_id = {market_id(s): s for s in self.symbols}
        self._ws: list[_WsConnection] = []
        self._ws_changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> FakeBinance:
        app = web.Application()
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/stream/ws/{index}", self._websocket)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        for conn in list(self._ws):
            await conn.response.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream/ws"

    def ccxt_urls(self) -> dict:
        """The ``urls`` override pointing ccxt's binance (REST and pro) at this server.

        Every API root ccxt knows is overridden, not just the two we serve, so a code path
        that calls anything else gets a local 404 instead of reaching the real exchange.
        """
        root = f"http://127.0.0.1:{self.port}"
        api = {key: f"{root}/unmocked/{key}" for key in _binance_api_roots()}
        api["public"] = self.rest_url
        api["ws"] = _all_leaves(_binance_ws_roots(), f"ws://127.0.0.1:{self.port}/unmocked/ws")
        api["ws"]["spot"] = self.ws_url
        return {"api": api}

    def add_fault(self, kind: FaultKind, **kwargs) -> Fault:
        fault = Fault(kind, **kwargs)
        self.faults.append(fault)
        return fault

    # REST ------------------------------------------------------------------------------
    async def _exchange_info(self, request: web.Request) -> web.Response:
        self.requests["exchangeInfo"] += 1
        body = {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [_symbol_info(s) for s in self.symbols],
        }
        return web.json_response(body)

    async def _time(self, request: web.Request) -> web.Response:
        self.requests["time"] += 1
        return web.json_response({"serverTime": self.now_ms})

    async def _klines(self, request: web.Request) -> web.StreamResponse:
        self.klines_in_flight += 1
        self.max_klines_in_flight = max(self.max_klines_in_flight, self.klines_in_flight)
        try:
            await asyncio.sleep(0.001)  # let concurrent requests overlap, as on a real server
            return await self._answer_klines(request)
        finally:
            self.klines_in_flight -= 1

    async def _answer_klines(self, request: web.Request) -> web.StreamResponse:
        self.requests["klines"] += 1
        query = dict(request.query)
        self.kline_queries.append(query)
        symbol = self._by_id.get(query.get("symbol", ""))
        if symbol is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if query.get("interval") != "1m":
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        rows = [
            kline_row(symbol, t, self.now_ms)
            for t in kline_open_times(self.first_open_ms, self.now_ms, query)
        ]
        fault = self._take_fault(symbol)
        if fault is None:
            return web.json_response(rows)
        self.faults_applied[fault.kind] += 1
        return await _FAULT_RESPONSES[fault.kind](request, fault, rows)

    def _take_fault(self, symbol: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(symbol):
                fault.times -= 1
                return fault
        return None

    # websocket -------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        response = web.WebSocketResponse(autoping=True)
        await response.prepare(request)
        conn = _WsConnection(response, request)
        self._ws.append(conn)
        self.ws_connections_total += 1
        try:
            async for message in response:
                if message.type == WSMsgType.TEXT:
                    await self._on_ws_request(conn, json.loads(message.data))
        finally:
            self._ws.remove(conn)
            await self._notify_ws_change()
        return response

    async def _on_ws_request(self, conn: _WsConnection, request: dict) -> None:
        streams = set(request.get("params", []))
        if request.get("method") == "SUBSCRIBE":
            conn.streams |= streams
        elif request.get("method") == "UNSUBSCRIBE":
            conn.streams -= streams
        await conn.response.send_json({"result": None, "id": request.get("id")})
        await self._notify_ws_change()

    async def _notify_ws_change(self) -> None:
        async with self._ws_changed:
            self._ws_changed.notify_all()

    def subscribed_streams(self) -> set[str]:
        return set().union(*(c.streams for c in self._ws if not c.response.closed))

    async def wait_subscribed(self, symbols: tuple[str, ...], timeout: float = 5.0) -> None:
        """Wait until live connections are subscribed to every symbol's 1m kline stream."""
        wanted = {f"{market_id(s).lower()}@kline_1m" for s in symbols}
        async with self._ws_changed:
            await asyncio.wait_for(
                self._ws_changed.wait_for(lambda: wanted <= self.subscribed_streams()), timeout
            )

    async def push_kline(self, symbol: str, open_time: int) -> int:
        """Send ``symbol``'s kline at ``open_time`` (as of ``now_ms``); returns the connections
        reached."""
        stream = f"{market_id(symbol).lower()}@kline_1m"
        event = kline_event(symbol, open_time, self.now_ms)
        targets = [c for c in self._ws if stream in c.streams and not c.response.closed]
        for conn in targets:
            await conn.response.send_json(event)
        return len(targets)

    async def drop_websockets(self) -> int:
        """Cut every websocket connection without a closing handshake (like a network drop)."""
        dropped = 0
        for conn in list(self._ws):
            if conn.request.transport is not None:
                conn.request.transport.abort()
                dropped += 1
            conn.streams.clear()
        return dropped


async def _drop(request: web.Request, fault: Fault, rows: list) -> web.StreamResponse:
    # Cut the TCP connection in the middle of the body. (Aborting before any byte is sent
    # is not enough: aiohttp's client silently retries a request on a reused connection.)
    response = web.StreamResponse(status=200, headers={"Content-Length": "100000"})
    response.content_type = "application/json"
    await response.prepare(request)
    await response.write(json.dumps(rows).encode()[:20])
    request.transport.abort()
    return response


async def _too_many_requests(request: web.Request, fault: Fault, rows: list) -> web.Response:
    body = {
        "code": -1003,
        "msg": "Too many requests; current limit is 1200 request weight per 1 MINUTE.",
    }
    headers = {"Retry-After": str(fault.retry_after_s)}
    return web.json_response(body, status=429, headers=headers)


async def _ip_banned(request: web.Request, fault: Fault, rows: list) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after_s)}
    return web.json_response(
        {"code": -1003, "msg": "Way too many requests; IP banned."}, status=418, headers=headers
    )


async def _server_error(request: web.Request, fault: Fault, rows: list) -> web.Response:
    return web.Response(
        status=fault.status, text="<html>upstream unavailable</html>", content_type="text/html"
    )


async def _unauthorized(request: web.Request, fault: Fault, rows: list) -> web.Response:
    body = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
    return web.json_response(body, status=401)


async def _malformed(request: web.Request, fault: Fault, rows: list) -> web.Response:
    text = json.dumps(rows)
    return web.Response(
        status=200, text=text[: max(1, len(text) // 2)], content_type="application/json"
    )


async def _garbage_rows(request: web.Request, fault: Fault, rows: list) -> web.Response:
    # Valid JSON, broken rows: one without a usable open time, one with a non-numeric price.
    broken_time = ["soon", *rows[0][1:]]
    broken_price = [rows[-1][0] + MINUTE_MS, "n/a", *rows[-1][2:]]
    return web.json_response([*rows, broken_time, broken_price])


async def _duplicate(request: web.Request, fault: Fault, rows: list) -> web.Response:
    return web.json_response([r for row in rows for r in (row, row)])


async def _shuffle(request: web.Request, fault: Fault, rows: list) -> web.Response:
    return web.json_response(rows[::-1])


async def _gap(request: web.Request, fault: Fault, rows: list) -> web.Response:
    return web.json_response([r for r in rows if r[0] not in fault.hide])


_FAULT_RESPONSES = {
    "drop": _drop,
    "http_429": _too_many_requests,
    "http_418": _ip_banned,
    "http_5xx": _server_error,
    "auth": _unauthorized,
    "malformed": _malformed,
    "garbage_rows": _garbage_rows,
    "duplicate": _duplicate,
    "shuffle": _shuffle,
    "gap": _gap,
}


class FakeBinanceInThread:
    """A ``FakeBinance`` on its own event loop in a daemon thread, for code under test that
    runs ``asyncio.run`` itself (a CLI's ``main``). ``with FakeBinanceInThread(...) as fake``."""

    START_STOP_TIMEOUT_S = 10.0

    def __init__(self, symbols: tuple[str, ...], *, now_ms: int, first_open_ms: int):
        self._args = (symbols,)
        self._kwargs = {"now_ms": now_ms, "first_open_ms": first_open_ms}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-binance", daemon=True
        )
        self.fake: FakeBinance | None = None

    def __enter__(self) -> FakeBinance:
        self._thread.start()
        self.fake = self._call(self._start())
        return self.fake

    def __exit__(self, *exc) -> None:
        try:
            self._call(self.fake.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.START_STOP_TIMEOUT_S)
            self._loop.close()

    async def _start(self) -> FakeBinance:
        return await FakeBinance(*self._args, **self._kwargs).__aenter__()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.START_STOP_TIMEOUT_S)
