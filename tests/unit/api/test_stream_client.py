"""``tickcast stream`` (orchestrator/cli/stream_client.py) against an in-process websockets
server on 127.0.0.1 that speaks the protocol of ``WS /v1/stream`` (serve_app/api/stream.py):
messages are built with the API's own schema (``to_prediction``), and the commands the
client sends are parsed with the API's ``StreamCommand``. No Ray, no uvicorn."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from http import HTTPStatus

import pytest
from websockets.asyncio.server import serve

from orchestrator.cli import stream_client as client
from serve_app.api.schemas import StreamCommand, to_prediction

GREEN, RED, YELLOW = "\x1b[32m", "\x1b[31m", "\x1b[33m"


def row(
    symbol="BTC/USDT",
    timeframe="1m",
    model_type="direction",
    value=0.61,
    signal="LONG",
    confidence="high",
    open_time=1_767_225_600_000,
) -> dict:
    """A prediction row as the pipeline's sink stores it."""
    return {
        "exchange": "synthetic",
        "symbol": symbol,
        "timeframe": timeframe,
        "open_time": open_time,
        "model_id": f"{model_type}-{timeframe}",
        "model_version": "v3",
        "model_type": model_type,
        "value": value,
        "outputs": {"p": value},
        "predicted_price": None,
        "signal": signal,
        "confidence": confidence,
        "latency_ms": 12.34,
    }


def wire(r: dict) -> dict:
    """What the API sends for one live prediction."""
    return json.loads(json.dumps({"type": "prediction", **to_prediction(r).model_dump()}))


# --- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "colour"), [("LONG", GREEN), ("SHORT", RED), ("NEUTRAL", YELLOW), (None, YELLOW)]
)
def test_prediction_line_is_coloured_by_signal(signal, colour):
    (line,) = client.format_message(wire(row(signal=signal)), color=True)
    assert line.startswith(colour) and line.endswith(client.RESET)
    others = {GREEN, RED, YELLOW} - {colour}
    assert not any(c in line for c in others)


def test_prediction_line_carries_every_field():
    (line,) = client.format_message(
        wire(
            row(
                symbol="ETH/USDT",
                timeframe="5m",
                value=0.4321,
                signal="SHORT",
                confidence="very_high",
            )
        ),
        color=False,
    )
    assert "\x1b" not in line
    for part in (
        "2026-01-01T00:00:00Z",
        "ETH/USDT",
        "5m",
        "direction-5m@v3",
        "p_up=0.4321",
        "SHORT",
        "very_high",
        "12.3 ms",
    ):
        assert part in line, part


def test_non_direction_model_shows_its_value_not_a_probability():
    (line,) = client.format_message(
        wire(row(model_type="volatility", value=0.0123, signal=None, confidence=None)), color=False
    )
    assert "value=0.0123" in line and "p_up" not in line


def test_snapshot_status_stats_gap_error_lines():
    snapshot = {
        "type": "snapshot",
        "predictions": [
            to_prediction(row(symbol=s)).model_dump() for s in ("BTC/USDT", "SOL/USDT")
        ],
    }
    lines = client.format_message(snapshot, color=False)
    assert lines[0] == "snapshot: 2 latest predictions"
    assert "BTC/USDT" in lines[1] and "SOL/USDT" in lines[2] and len(lines) == 3
    status = {
        "environment": "local",
        "run_id": "r1",
        "feeds": [{"name": f"f{i}"} for i in range(9)],
    }
    (line,) = client.format_message({"type": "status", "status": status}, color=False)
    assert 'environment="local"' in line and "feeds=[9 items]" in line
    (line,) = client.format_message({"type": "stats", "sent": 7, "queued": 2, "connected_s": 1.5})
    assert "sent=7" in line and "queued=2" in line and "1.5 s" in line
    assert "not streamed" in client.format_message({"type": "gap", "detail": "not streamed"})[0]
    assert "action" in client.format_message({"type": "error", "detail": [{"loc": ["action"]}]})[0]


def test_typed_commands_become_stream_commands():
    for word in ("status", " STATS \n"):
        message = client.command_message(word)
        assert StreamCommand.model_validate(message).action == word.strip().lower()
    assert client.command_message("quit") is None
    with pytest.raises(ValueError, match="unknown command"):
        client.command_message("launch")
    subscribe = client.subscribe_message(["BTC/USDT"], ["1m", "5m"])
    assert StreamCommand.model_validate(subscribe).symbols == ["BTC/USDT"]


# --- against a server ---------------------------------------------------------------------------


class FakeStream:
    """The /v1/stream protocol: subscribe -> snapshot, status -> status, stats -> stats; after
    ``push_after`` commands it sends ``live`` predictions, then optionally closes."""

    def __init__(self, live=(), push_after=1, close_after_push=False, api_key=None):
        self.latest = [row(symbol="BTC/USDT"), row(symbol="ETH/USDT", timeframe="5m")]
        self.live, self.push_after, self.close_after_push = list(live), push_after, close_after_push
        self.api_key = api_key
        self.received: list[dict] = []
        self.headers: list = []

    def refuse_without_key(self, connection, request):
        self.headers.append(request.headers)
        if self.api_key and request.headers.get("X-API-Key") != self.api_key:
            return connection.respond(HTTPStatus.FORBIDDEN, "missing or unknown API key\n")
        return None

    def reply(self, command: StreamCommand, sent: int) -> dict:
        if command.action == "subscribe":
            wanted = [
                r
                for r in self.latest
                if (command.symbols is None or r["symbol"] in command.symbols)
                and (command.timeframes is None or r["timeframe"] in command.timeframes)
            ]
            return {
                "type": "snapshot",
                "predictions": [to_prediction(r).model_dump() for r in wanted],
            }
        if command.action == "status":
            return {"type": "status", "status": {"backend": "fake", "feeds": [{"ok": True}] * 12}}
        return {"type": "stats", "sent": sent, "queued": 0, "connected_s": 0.2}

    async def handler(self, ws) -> None:
        sent = 0
        async for raw in ws:
            message = json.loads(raw)
            self.received.append(message)
            await ws.send(json.dumps(self.reply(StreamCommand.model_validate(message), sent)))
            sent += 1
            if len(self.received) == self.push_after:
                for r in self.live:
                    await ws.send(json.dumps(wire(r)))
                if self.close_after_push:
                    await ws.close(1001, "server shutting down")
                    return


async def typed(*lines: str, then_wait: bool = False):
    for line in lines:
        yield line
    if then_wait:
        await asyncio.sleep(30)


def run_client(fake: FakeStream, lines, **options) -> tuple[int, list[str]]:
    out = io.StringIO()

    async def scenario() -> int:
        async with serve(
            fake.handler, "127.0.0.1", 0, process_request=fake.refuse_without_key
        ) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/v1/stream"
            return await asyncio.wait_for(client.stream(url, lines, out, **options), timeout=10)

    code = asyncio.run(scenario())
    return code, out.getvalue().splitlines()


def test_subscribes_prints_snapshot_and_exits_after_count():
    live = [row(signal="LONG"), row(signal="SHORT", value=0.3), row(signal="NEUTRAL", value=0.5)]
    fake = FakeStream(live=live)
    code, lines = run_client(
        fake, typed(then_wait=True), symbols=["BTC/USDT"], timeframes=["1m"], count=2, color=False
    )
    assert code == 0
    assert fake.received == [{"action": "subscribe", "symbols": ["BTC/USDT"], "timeframes": ["1m"]}]
    assert lines[0] == "snapshot: 1 latest predictions" and "[snapshot]" in lines[1]
    assert [("LONG" in x, "SHORT" in x) for x in lines[2:]] == [(True, False), (False, True)]


def test_status_and_stats_commands_while_streaming():
    fake = FakeStream(live=[row(), row(signal="SHORT")], push_after=3)
    code, lines = run_client(
        fake, typed("status", "", "stats", then_wait=True), count=2, color=False
    )
    assert code == 0
    assert [m["action"] for m in fake.received] == ["subscribe", "status", "stats"]
    assert lines[3].startswith("status:") and "feeds=[12 items]" in lines[3]
    assert lines[4] == "stats: sent=2 queued=0 connected=0.2 s"
    assert len(lines) == 7  # snapshot header, 2 snapshot rows, status, stats, 2 predictions


def test_unknown_command_is_explained_and_quit_exits_cleanly():
    fake = FakeStream()
    code, lines = run_client(fake, typed("launch", "quit"), color=False)
    assert code == 0
    assert any(
        "unknown command 'launch'" in line and "status, stats, quit" in line for line in lines
    )
    assert [m["action"] for m in fake.received] == ["subscribe"]


def test_end_of_input_keeps_streaming():
    fake = FakeStream(live=[row(), row()])
    code, lines = run_client(fake, typed(), count=2, color=False)
    assert code == 0 and sum("p_up=" in x and "[snapshot]" not in x for x in lines) == 2


def test_server_disconnect_is_reported_with_non_zero_exit():
    fake = FakeStream(live=[row()], close_after_push=True)
    code, lines = run_client(fake, typed(then_wait=True), color=True)
    assert code == 1
    assert lines[-2].startswith(GREEN)
    assert (
        lines[-1] == "disconnected: the server closed the stream (code 1001, server shutting down)"
    )


def test_api_key_is_sent_as_header_and_a_refusal_exits_2():
    fake = FakeStream(live=[row()], api_key="k-123")
    code, _ = run_client(fake, typed(then_wait=True), api_key="k-123", count=1)
    assert code == 0 and fake.headers[-1]["X-API-Key"] == "k-123"
    code, lines = run_client(fake, typed(then_wait=True), api_key="wrong", count=1)
    assert code == 2 and "HTTP 403" in lines[-1] and "API key" in lines[-1]
    assert len(fake.received) == 1  # only the accepted connection subscribed


def test_nothing_listening_exits_2():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = io.StringIO()
    code = asyncio.run(client.stream(f"ws://127.0.0.1:{port}/v1/stream", typed(), out))
    assert code == 2 and out.getvalue().startswith(f"cannot connect to ws://127.0.0.1:{port}")
