#!/usr/bin/env python
"""Terminal client for tickcast's live stream, ``WS /v1/stream``.

    tickcast stream [--url ws://127.0.0.1:8000/v1/stream] [--api-key KEY]
        [--symbols BTC/USDT,ETH/USDT] [--timeframes 1m,5m] [--count N] [--no-color]

Subscribes, prints the latest snapshot, then one coloured line per prediction (green
LONG, red SHORT, yellow anything else). While it streams, type a command and Enter:
``status`` (the pipeline's status, summarised), ``stats`` (this connection's counters),
``quit``. ``--count N`` exits after N live predictions (the snapshot does not count).

Exit codes: 0 after ``quit`` or ``--count``; 1 when the server closes the connection or
it is lost; 2 when it cannot connect (refused, unknown API key, bad URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator
from typing import TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

API_KEY_HEADER = "X-API-Key"
COMMANDS = ("status", "stats", "quit")
RESET = "\x1b[0m"
SIGNAL_COLORS = {"LONG": "\x1b[32m", "SHORT": "\x1b[31m"}
OTHER_COLOR = "\x1b[33m"


# --- formatting: server message -> printable lines ------------------------------------------


def format_prediction(p: dict, color: bool = True, label: str = "") -> str:
    if p.get("prob_up") is not None:
        value = f"p_up={p['prob_up']:.4f}"
    else:
        value = f"value={p.get('value', float('nan')):.6g}"
    if p.get("predicted_price") is not None:
        value += f" price={p['predicted_price']:.6g}"
    signal = p.get("signal") or "-"
    line = (
        f"{label}{p.get('open_time_iso', p.get('open_time'))}  {p.get('symbol', '?'):<12} "
        f"{p.get('timeframe', '?'):>3}  {p.get('model_id', '?')}@{p.get('model_version', '?')}  "
        f"{value}  {signal:<7} {p.get('confidence') or '-':<9} {p.get('latency_ms', 0):.1f} ms"
    )
    return f"{SIGNAL_COLORS.get(signal, OTHER_COLOR)}{line}{RESET}" if color else line


def summarize(value) -> str:
    """A value in a few characters: scalars as they are, containers by size unless short."""
    text = json.dumps(value, default=str)
    if not isinstance(value, dict | list) or len(text) <= 60:
        return text
    return f"[{len(value)} items]" if isinstance(value, list) else f"{{{len(value)} keys}}"


def format_status(status: dict) -> str:
    return "status: " + "  ".join(f"{k}={summarize(v)}" for k, v in status.items())


def format_message(message: dict, color: bool = True) -> list[str]:
    kind = message.get("type")
    if kind == "prediction":
        return [format_prediction(message, color)]
    if kind == "snapshot":
        rows = message.get("predictions") or []
        return [f"snapshot: {len(rows)} latest predictions"] + [
            format_prediction(p, color, label="[snapshot] ") for p in rows
        ]
    if kind == "status":
        return [format_status(message.get("status") or {})]
    if kind == "stats":
        return [
            f"stats: sent={message.get('sent')} queued={message.get('queued')} "
            f"connected={message.get('connected_s')} s"
        ]
    if kind == "gap":
        return [f"gap: {message.get('detail')}"]
    if kind == "error":
        return [f"server refused a command: {json.dumps(message.get('detail'))}"]
    return [f"unknown message: {json.dumps(message)[:200]}"]


# --- commands: typed line -> message to send ------------------------------------------------


def subscribe_message(symbols: list[str] | None, timeframes: list[str] | None) -> dict:
    return {"action": "subscribe", "symbols": symbols or None, "timeframes": timeframes or None}


def command_message(line: str) -> dict | None:
    """The message a typed command sends; None for ``quit``; ValueError if unknown."""
    word = line.strip().lower()
    if word not in COMMANDS:
        raise ValueError(f"unknown command {word!r}; commands: {', '.join(COMMANDS)}")
    return None if word == "quit" else {"action": word}


# --- the session ----------------------------------------------------------------------------


class Session:
    def __init__(self, socket: ClientConnection, out: TextIO, color: bool, count: int | None):
        self.socket, self.out, self.color, self.count = socket, out, color, count
        self.predictions = 0

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    async def receive(self) -> int:
        """Print what arrives until ``--count`` is reached (0) or the server goes away (1)."""
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                self.say(*format_message(message, self.color))
                self.predictions += message.get("type") == "prediction"
                if self.count is not None and self.predictions >= self.count:
                    return 0
        except ConnectionClosed:
            pass
        code = self.socket.close_code
        reason = self.socket.close_reason
        because = f", {reason}" if reason else ""
        self.say(f"disconnected: the server closed the stream (code {code}{because})")
        return 1

    async def commands(self, lines: AsyncIterator[str]) -> int | None:
        """Send typed commands; 0 on ``quit``; None when input ends (streaming goes on)."""
        async for line in lines:
            if not line.strip():
                continue
            try:
                message = command_message(line)
            except ValueError as exc:
                self.say(str(exc))
                continue
            if message is None:
                return 0
            try:
                await self.socket.send(json.dumps(message))
            except ConnectionClosed:
                return None  # receive() reports the disconnect
        return None


async def first_result(*coroutines) -> int:
    """The first result that is not None; the other tasks are cancelled."""
    pending = {asyncio.ensure_future(c) for c in coroutines}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            results = [t.result() for t in done if t.result() is not None]
            if results:
                return results[0]
        return 0
    finally:
        for task in pending:
            task.cancel()


async def stream(
    url: str,
    lines: AsyncIterator[str],
    out: TextIO,
    *,
    api_key: str | None = None,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    count: int | None = None,
    color: bool = True,
) -> int:
    headers = {API_KEY_HEADER: api_key} if api_key else None
    try:
        socket = await connect(url, additional_headers=headers, open_timeout=10)
    except InvalidStatus as exc:
        hint = " (missing or unknown API key?)" if exc.response.status_code in (401, 403) else ""
        print(
            f"cannot connect to {url}: the server answered HTTP {exc.response.status_code}{hint}",
            file=out,
            flush=True,
        )
        return 2
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        print(f"cannot connect to {url}: {exc}", file=out, flush=True)
        return 2
    async with socket:
        session = Session(socket, out, color, count)
        await socket.send(json.dumps(subscribe_message(symbols, timeframes)))
        return await first_result(session.receive(), session.commands(lines))


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin. A daemon thread reads, so a pending read never blocks exit."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/stream")
    parser.add_argument("--api-key", help=f"sent as the {API_KEY_HEADER} header")
    parser.add_argument("--symbols", type=csv_list, help="comma-separated, e.g. BTC/USDT,ETH/USDT")
    parser.add_argument("--timeframes", type=csv_list, help="comma-separated, e.g. 1m,5m")
    parser.add_argument("--count", type=int, help="exit after this many live predictions")
    parser.add_argument("--no-color", action="store_true")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(
            stream(
                args.url,
                stdin_lines(),
                sys.stdout,
                api_key=args.api_key,
                symbols=args.symbols,
                timeframes=args.timeframes,
                count=args.count,
                color=not args.no_color,
            )
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
