"""WS /v1/stream: a subscription per socket, a snapshot, then every new prediction."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from serve_app.api.auth import API_KEY_HEADER, caller_of, key_is_valid
from serve_app.api.backend import Backend, BackendError
from serve_app.api.schemas import ApiError, StreamCommand, to_prediction

AUTH_TIMEOUT_S = 5.0  # for the first message, when the key comes in it


async def serve_stream(socket: WebSocket) -> None:
    """Subscribe, get the latest snapshot at once, then every new prediction; a client that
    falls ``stream_queue`` messages behind is dropped rather than allowed to slow others."""
    state = socket.app.state
    required = state.config.require_api_key
    if required and not (socket.headers.get(API_KEY_HEADER) or socket.query_params.get("api_key")):
        # A browser cannot send headers on a WebSocket: its key comes as the first message.
        await socket.accept()
        if not await _first_message_authenticates(socket, state.keys):
            with contextlib.suppress(RuntimeError):  # the client may be gone already
                await socket.close(code=1008, reason="missing or unknown API key")
            return
    else:
        try:
            caller_of(socket, state.keys, required)
        except ApiError as exc:
            await socket.close(code=1008, reason=exc.message)
            return
        await socket.accept()
    state.stream_clients += 1
    session = StreamSession(socket, state.backend, state.config.stream_queue)
    try:
        await session.run()
    finally:
        state.stream_clients -= 1


async def _first_message_authenticates(socket: WebSocket, keys: frozenset[str]) -> bool:
    try:
        text = await asyncio.wait_for(socket.receive_text(), AUTH_TIMEOUT_S)
        command = StreamCommand.model_validate_json(text)
    except (TimeoutError, ValidationError, WebSocketDisconnect, KeyError):
        return False
    if command.action != "auth" or not key_is_valid(command.api_key, keys):
        return False
    await socket.send_json({"type": "auth", "ok": True})
    return True


class StreamSession:
    def __init__(self, socket: WebSocket, backend: Backend, queue_size: int):
        self.socket, self.backend = socket, backend
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.symbols: set[str] | None = None
        self.timeframes: set[str] | None = None
        self.subscribed = asyncio.Event()  # set by a subscribe, cleared by its snapshot
        self.sent = 0
        self.started = time.monotonic()

    async def run(self) -> None:
        tasks = [asyncio.create_task(t) for t in (self._read(), self._pump(), self._write())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.socket.close()

    async def _read(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await self._command(await self.socket.receive_text())

    async def _command(self, text: str) -> None:
        try:
            command = StreamCommand.model_validate_json(text)
        except ValidationError as exc:
            self._offer(
                {"type": "error", "detail": exc.errors(include_url=False, include_context=False)}
            )
            return
        if command.action == "auth":  # already authenticated, or keys are off
            self._offer({"type": "auth", "ok": True})
        elif command.action == "subscribe":
            self.symbols = set(command.symbols) if command.symbols else None
            self.timeframes = set(command.timeframes) if command.timeframes else None
            self.subscribed.set()  # the pump sends the snapshot, in order with what follows
        elif command.action == "status":
            self._offer({"type": "status", "status": await self.backend.status()})
        else:
            self._offer(
                {
                    "type": "stats",
                    "sent": self.sent,
                    "queued": self.queue.qsize(),
                    "connected_s": round(time.monotonic() - self.started, 1),
                }
            )

    async def _pump(self) -> None:
        """One task sends the snapshot and the predictions after it, so that each subscription
        reads as "the latest, then every newer one": the snapshot's cursor is where the stream
        goes on, and a poll in flight when a subscription comes is dropped (the snapshot
        holds what it would have said)."""
        cursor, _, _ = await self.backend.since(1 << 62, 0)  # start from now
        while True:
            if self.subscribed.is_set():
                self.subscribed.clear()
                cursor = await self._snapshot(cursor)
                continue
            poll = asyncio.ensure_future(self.backend.since(cursor, 1.0))
            woken = asyncio.ensure_future(self.subscribed.wait())
            try:
                await asyncio.wait({poll, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the session ends: nothing is left waiting on the sink
                woken.cancel()
                if self.subscribed.is_set() or not poll.done():
                    poll.cancel()
                    poll.add_done_callback(_consume)
            if self.subscribed.is_set():
                continue
            cursor, rows, lost = poll.result()
            if lost:
                self._offer({"type": "gap", "detail": "some predictions were not streamed"})
            for row in rows:
                if self._wanted(row):
                    self._offer({"type": "prediction", **to_prediction(row).model_dump()})

    async def _snapshot(self, cursor: int) -> int:
        try:
            cursor, rows = await self.backend.snapshot()
        except BackendError as exc:
            self._offer({"type": "error", "detail": str(exc)})
            return cursor
        wanted = [to_prediction(r).model_dump() for r in rows if self._wanted(r)]
        self._offer({"type": "snapshot", "predictions": wanted})
        return cursor

    def _offer(self, message: dict) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            raise SlowClient from None

    async def _write(self) -> None:
        while True:
            await self.socket.send_json(await self.queue.get())
            self.sent += 1

    def _wanted(self, row: dict) -> bool:
        return (self.symbols is None or row["symbol"] in self.symbols) and (
            self.timeframes is None or row["timeframe"] in self.timeframes
        )


def _consume(task: asyncio.Future) -> None:
    """A dropped poll's error, if it had one, is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


class SlowClient(Exception):
    """The client let its queue fill up: it is disconnected."""
