"""CcxtWsSource against the local fake Binance kline stream: real ccxt.pro client code."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from orchestrator.feeds.base import ChangesSymbols
from orchestrator.feeds.ccxt.ws import CcxtWsSource
from orchestrator.feeds.errors import FatalFeedError
from orchestrator.market.gate import CandleGate
from tests.fakes.binance import FakeBinance
from tests.fakes.candle_series import MINUTE_MS, provisional_fields
from tests.unit.feeds.support import (
    SYMBOLS,
    T0,
    RecordingSleep,
    candle_keys,
    candle_values,
    expected_values,
    fake_config,
    minutes,
    run,
)

MAX_BATCHES = 40  # each next_batch waits at most poll_interval_s for data


def ws_source(fake: FakeBinance, sleep=None, **overrides) -> CcxtWsSource:
    config = fake_config(fake, mode="websocket", poll_interval_s=0.2, **overrides)
    return CcxtWsSource(config, clock_ms=lambda: fake.now_ms, sleep=sleep or RecordingSleep())


async def collect(source: CcxtWsSource, wanted: set[tuple[str, int]]) -> list[pa.RecordBatch]:
    """Batches until every wanted (symbol, open_time) has been seen (bounded by MAX_BATCHES)."""
    batches, seen = [], set()
    for _ in range(MAX_BATCHES):
        batch = await source.next_batch()
        batches.append(batch)
        seen.update(candle_keys(batch))
        if wanted <= seen:
            return batches
    raise AssertionError(f"never received {sorted(wanted - seen)}")


async def collect_final(source: CcxtWsSource, symbols, open_times) -> list[pa.RecordBatch]:
    """Batches until the final values of these candles have been seen (bounded)."""
    wanted = expected_values(symbols, open_times)
    batches = []
    for _ in range(MAX_BATCHES):
        batches.append(await source.next_batch())
        got = merged(batches)
        if all(got.get(k) == v for k, v in wanted.items()):
            return batches
    raise AssertionError(f"never received the final values of {sorted(wanted)}")


async def push(fake: FakeBinance, open_times: list[int], symbols=SYMBOLS) -> None:
    for t in open_times:
        for symbol in symbols:
            assert await fake.push_kline(symbol, t) == 1


def merged(batches) -> dict:
    return {k: v for b in batches for k, v in candle_values(b).items()}


@pytest.mark.parametrize(
    "per_symbol", [False, True], ids=["watch_ohlcv_for_symbols", "watch_ohlcv"]
)
def test_streams_candles_and_revisions(per_symbol):
    async def scenario():
        async with FakeBinance(
            SYMBOLS, now_ms=T0 + 2 * MINUTE_MS + 30_000, first_open_ms=T0
        ) as fake:
            source = ws_source(fake)
            if per_symbol:  # an exchange without the multi-symbol method
                source._client.has["watchOHLCVForSymbols"] = False
            try:
                assert (await source.next_batch()).num_rows == 0  # starts the streams
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(0, 1, 2))  # minute 2 is still open
                first = await collect(source, {(s, t) for s in SYMBOLS for t in minutes(0, 1, 2)})
                fake.now_ms += MINUTE_MS
                await push(fake, minutes(2, 3))  # the final minute 2, then the open minute 3
                second = await collect(source, {(s, t) for s in SYMBOLS for t in minutes(3)})
                return first, second, source.status(), fake.ws_connections_total
            finally:
                await source.close()

    first, second, status, connections = run(scenario())
    got_first = merged(first)
    assert set(got_first) == {(s, t) for s in SYMBOLS for t in minutes(0, 1, 2)}
    closed = expected_values(SYMBOLS, minutes(0, 1))
    assert {k: got_first[k] for k in closed} == closed
    open_volume = float(
        provisional_fields("ETH/USDT", minutes(2)[0], T0 + 2 * MINUTE_MS + 30_000)[4]
    )
    assert got_first[("ETH/USDT", minutes(2)[0])][4] == open_volume
    got_second = merged(second)
    assert {k: got_second[k] for k in expected_values(SYMBOLS, minutes(2))} == expected_values(
        SYMBOLS, minutes(2)
    )
    assert {t for _, t in got_second} == set(minutes(2, 3))  # unchanged candles are not repeated
    assert status["messages"] >= 1 and status["connected"] is True
    assert status["reconnects"] == 0 and status["disconnects"] == 0 and connections == 1
    assert status["candles"] == sum(b.num_rows for b in first + second) == 10
    assert status["subscriptions"] == (2 if per_symbol else 1)


async def _drop_and_reconnect(fake: FakeBinance, source: CcxtWsSource, *, final_before_drop: bool):
    """Stream minutes 0-2, drop the socket (minutes 3-5 pass unseen), stream minute 6, all
    through a gate whose gaps are repaired with ``fetch_range``; returns the gate's output."""
    # A grace longer than the fake's message latency: the gate must not finalise a candle
    # by time before its final update, sent a second after its close, has been swept.
    gate = CandleGate("binance", grace_ms=20_000)
    out, gaps = [], []

    async def settle(batches):
        out.extend(gate.offer(batch, fake.now_ms) for batch in batches)
        for gap in gate.take_gaps():
            gaps.append((gap.symbol, gap.start_ms, gap.end_ms))
            repaired = await source.fetch_range(gap.symbol, gap.start_ms, gap.end_ms)
            out.append(gate.resolve_gap(gap, repaired, fake.now_ms).candles)

    await source.next_batch()
    await fake.wait_subscribed(SYMBOLS)
    await push(fake, minutes(0, 1, 2))
    await settle(await collect(source, {(s, t) for s in SYMBOLS for t in minutes(0, 1, 2)}))
    if final_before_drop:
        fake.now_ms = T0 + 3 * MINUTE_MS + 1_000
        await push(fake, minutes(2))
        await settle(await collect_final(source, SYMBOLS, minutes(2)))
    assert await fake.drop_websockets() == 1
    for _ in range(MAX_BATCHES):  # the pump notices the drop (at once: the peer reset)
        await settle([await source.next_batch()])
        if source.status()["disconnects"]:
            break
    fake.now_ms = T0 + 6 * MINUTE_MS + 30_000  # minutes 2..5 close while we are away
    await settle([await source.next_batch()])
    await fake.wait_subscribed(SYMBOLS)
    await push(fake, minutes(6))
    await settle(await collect(source, {(s, t) for s in SYMBOLS for t in minutes(6)}))
    fake.now_ms = T0 + 7 * MINUTE_MS + 1_000
    await push(fake, minutes(6))  # minute 6's final update
    await settle(await collect_final(source, SYMBOLS, minutes(6)))
    fake.now_ms = T0 + 8 * MINUTE_MS  # past minute 6's grace: everything is final
    out.append(gate.flush(fake.now_ms))
    await settle([])
    return out, gaps


def test_reconnects_after_a_drop_and_the_gate_repairs_the_gap_with_fetch_range():
    sleep = RecordingSleep()

    async def scenario():
        async with FakeBinance(
            SYMBOLS, now_ms=T0 + 2 * MINUTE_MS + 30_000, first_open_ms=T0
        ) as fake:
            source = ws_source(fake, sleep=sleep, ws_rest_fallback=False)
            try:
                out, gaps = await _drop_and_reconnect(fake, source, final_before_drop=True)
                return out, gaps, source.status(), fake.ws_connections_total
            finally:
                await source.close()

    out, gaps, status, connections = run(scenario())
    assert sorted(gaps) == [(s, minutes(3)[0], minutes(6)[0]) for s in SYMBOLS]
    keys = [k for batch in out for k in candle_keys(batch)]
    assert sorted(keys) == sorted(
        (s, t) for s in SYMBOLS for t in minutes(0, 1, 2, 3, 4, 5, 6)
    )  # once each
    assert merged(out) == expected_values(SYMBOLS, minutes(0, 1, 2, 3, 4, 5, 6))
    assert status["disconnects"] == 1 and status["reconnects"] == 1 and connections == 2
    assert status["rest_polls"] == 0
    assert status["errors"]["transient"] >= 1 and len(sleep.delays) >= 1
    assert all(0 <= d <= 0.05 for d in sleep.delays)  # the configured reconnect cap
    (outage,) = status["outages"]
    assert outage[0] is not None and outage[1] is not None and outage[0] <= outage[1]
    assert status["connected"] is True


def test_rest_fallback_finalises_the_candle_open_at_the_drop_and_fills_the_gap():
    async def scenario():
        async with FakeBinance(
            SYMBOLS, now_ms=T0 + 2 * MINUTE_MS + 30_000, first_open_ms=T0
        ) as fake:
            source = ws_source(fake)
            try:
                out, gaps = await _drop_and_reconnect(fake, source, final_before_drop=False)
                return out, gaps, source.status(), fake.kline_queries
            finally:
                await source.close()

    out, gaps, status, queries = run(scenario())
    assert gaps == []  # nothing left for the gate to repair
    keys = [k for batch in out for k in candle_keys(batch)]
    assert sorted(keys) == sorted((s, t) for s in SYMBOLS for t in minutes(0, 1, 2, 3, 4, 5, 6))
    # minute 2 was still open when the socket dropped: the gate got its final version
    assert merged(out) == expected_values(SYMBOLS, minutes(0, 1, 2, 3, 4, 5, 6))
    assert status["reconnects"] == 1 and status["rest_polls"] >= 2  # while down + once after
    # every REST poll starts at the newest candle passed on: 2 while down, 6 after
    starts = sorted({int(q["startTime"]) for q in queries})
    assert starts[0] == minutes(2)[0] and starts[-1] == minutes(6)[0]


def test_out_of_order_candles_and_revisions_are_passed_on():
    async def scenario():
        async with FakeBinance(
            SYMBOLS, now_ms=T0 + 3 * MINUTE_MS + 30_000, first_open_ms=T0
        ) as fake:
            source = ws_source(fake)
            try:
                await source.next_batch()
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(2), symbols=("BTC/USDT",))
                first = await collect(source, {("BTC/USDT", minutes(2)[0])})
                await push(fake, minutes(0), symbols=("BTC/USDT",))  # older, after a newer one
                second = await collect(source, {("BTC/USDT", minutes(0)[0])})
                fake.now_ms = T0 + 3 * MINUTE_MS + 45_000
                await push(fake, minutes(3), symbols=("BTC/USDT",))
                await push(fake, minutes(3), symbols=("BTC/USDT",))  # same values: nothing new
                fake.now_ms = T0 + 3 * MINUTE_MS + 50_000
                await push(fake, minutes(3), symbols=("BTC/USDT",))  # a revision of minute 3
                third = await collect(source, {("BTC/USDT", minutes(3)[0])})
                rest = [await source.next_batch() for _ in range(2)]
                return first, second, third, rest
            finally:
                await source.close()

    first, second, third, rest = run(scenario())
    assert [k for b in first for k in candle_keys(b)] == [("BTC/USDT", minutes(2)[0])]
    assert [k for b in second for k in candle_keys(b)] == [("BTC/USDT", minutes(0)[0])]
    minute3 = [candle_values(b)[("BTC/USDT", minutes(3)[0])] for b in third + rest if b.num_rows]
    revised = float(provisional_fields("BTC/USDT", minutes(3)[0], T0 + 3 * MINUTE_MS + 50_000)[4])
    assert minute3[-1][4] == revised  # the latest revision went out last
    assert all(b.num_rows == 0 for b in rest)


def test_exchange_without_kline_streams_is_fatal():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=T0, first_open_ms=T0) as fake:
            source = ws_source(fake)
            source._client.has["watchOHLCVForSymbols"] = False
            source._client.has["watchOHLCV"] = False
            try:
                with pytest.raises(FatalFeedError, match="watchOHLCV"):
                    await source.next_batch()
                return source.status()
            finally:
                await source.close()

    status = run(scenario())
    assert "watchOHLCV" in status["fatal"] and status["subscriptions"] == 0


def test_ws_status_is_json_and_has_no_secret(monkeypatch):
    monkeypatch.setenv("TICKCAST_WS_KEY", "ws-key-0123456789")

    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=T0 + 30_000, first_open_ms=T0) as fake:
            source = ws_source(fake, api_key_env="TICKCAST_WS_KEY")
            try:
                await source.next_batch()
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(0))
                await collect(source, {(s, minutes(0)[0]) for s in SYMBOLS})
                return repr(source), json.dumps(source.status())
            finally:
                await source.close()

    text_repr, text_status = run(scenario())
    assert "ws-key-0123456789" not in text_repr + text_status
    assert json.loads(text_status)["credentials_from_env"] == ["TICKCAST_WS_KEY"]


def test_a_silent_socket_falls_back_to_rest_polling():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=T0 + 30_000, first_open_ms=T0) as fake:
            source = ws_source(fake, ws_silence_s=0.05)
            try:
                await source.next_batch()
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(0))
                await collect(source, {(s, minutes(0)[0]) for s in SYMBOLS})
                fake.now_ms = T0 + 2 * MINUTE_MS + 30_000  # the socket stays silent meanwhile
                batches = await collect_final(source, SYMBOLS, minutes(0, 1))
                return batches, source.status()
            finally:
                await source.close()

    batches, status = run(scenario())
    assert (
        merged(batches)[("BTC/USDT", minutes(1)[0])]
        == expected_values(["BTC/USDT"], minutes(1))[("BTC/USDT", minutes(1)[0])]
    )
    assert status["rest_polls"] >= 1 and status["disconnects"] == 0 and status["connected"] is True


def test_hundreds_of_symbols_over_chunked_subscriptions():
    many = tuple(f"C{i:03d}/USDT" for i in range(250))

    async def scenario():
        async with FakeBinance(many, now_ms=T0 + 30_000, first_open_ms=T0) as fake:
            source = ws_source(fake, symbols=many, ws_symbols_per_subscription=100)
            try:
                await source.next_batch()
                await fake.wait_subscribed(many)
                await push(fake, minutes(0), symbols=many)
                batches = await collect(source, {(s, minutes(0)[0]) for s in many})
                return batches, source.status(), fake.ws_connections_total
            finally:
                await source.close()

    batches, status, connections = run(scenario())
    assert sorted(k for b in batches for k in candle_keys(b)) == sorted(
        (s, minutes(0)[0]) for s in many
    )
    assert status["subscriptions"] == 3 and connections == 1  # ccxt multiplexes them on one socket


# --- symbols added and removed while running ----------------------------------------------

LISTED = (*SYMBOLS, "SOL/USDT")  # the fake's markets; the source starts with SYMBOLS


def _times_of(batches, symbol: str) -> list[int]:
    return sorted({t for b in batches for s, t in candle_keys(b) if s == symbol})


@pytest.mark.parametrize(
    "per_symbol", [False, True], ids=["watch_ohlcv_for_symbols", "watch_ohlcv"]
)
def test_added_symbols_get_rest_history_then_stream_from_the_current_minute(per_symbol):
    async def scenario():
        async with FakeBinance(
            LISTED, now_ms=T0 + 5 * MINUTE_MS + 30_000, first_open_ms=T0
        ) as fake:
            source = ws_source(fake, symbols=SYMBOLS)
            if per_symbol:
                source._client.has["watchOHLCVForSymbols"] = False
            assert isinstance(source, ChangesSymbols)
            try:
                await source.next_batch()
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(5))
                await collect(source, {(s, minutes(5)[0]) for s in SYMBOLS})
                unknown = await source.unknown_symbols(["DOGE/USDT", "SOL/USDT"])
                history = await source.add_symbols(["SOL/USDT", "ETH/USDT"], 4)
                symbols = source.symbols
                first = await source.next_batch()  # polls SOL's current minute over REST
                await fake.wait_subscribed(LISTED)
                fake.now_ms = T0 + 6 * MINUTE_MS + 1_000
                await push(fake, minutes(5, 6), symbols=LISTED)
                rest = await collect_final(source, LISTED, minutes(5))
                return unknown, history, symbols, first, rest, source.status(), fake
            finally:
                await source.close()

    unknown, history, symbols, first, rest, status, fake = run(scenario())
    assert unknown == ["DOGE/USDT"]
    assert symbols == LISTED
    assert candle_keys(history) == [("SOL/USDT", t) for t in minutes(1, 2, 3, 4)]
    assert candle_values(history) == expected_values(["SOL/USDT"], minutes(1, 2, 3, 4))
    assert _times_of([first], "SOL/USDT")[0] == minutes(5)[0]  # right after the history
    assert _times_of([first, *rest], "SOL/USDT") == minutes(5, 6)
    assert (
        merged([first, *rest])[("SOL/USDT", minutes(5)[0])]
        == expected_values(["SOL/USDT"], minutes(5))[("SOL/USDT", minutes(5)[0])]
    )
    assert status["subscriptions"] == (3 if per_symbol else 1)
    assert status["disconnects"] == 0 and status["fatal"] is None
    assert sum(status["errors"].values()) == 0
    assert fake.ws_connections_total == 1  # resubscribed on the same connection


@pytest.mark.parametrize("un_watch", [True, False], ids=["un_watch", "no_un_watch"])
def test_removed_symbols_stop_and_can_be_added_again(un_watch):
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=T0 + 30_000, first_open_ms=T0) as fake:
            source = ws_source(fake)
            if not un_watch:  # an exchange without un_watch: the stream stays, unswept
                source._client.has["unWatchOHLCVForSymbols"] = False
                source._client.has["unWatchOHLCV"] = False
            try:
                await source.next_batch()
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(0))
                await collect(source, {(s, minutes(0)[0]) for s in SYMBOLS})
                source.remove_symbols(["ETH/USDT", "DOGE/USDT"])
                removed_symbols = source.symbols
                await source.next_batch()
                streams = fake.subscribed_streams()
                fake.now_ms = T0 + MINUTE_MS + 30_000
                eth_reached = await fake.push_kline("ETH/USDT", minutes(1)[0])
                await push(fake, minutes(1), symbols=("BTC/USDT",))
                without = await collect(source, {("BTC/USDT", minutes(1)[0])})
                without += [await source.next_batch() for _ in range(2)]
                fake.now_ms = T0 + 2 * MINUTE_MS + 30_000
                history = await source.add_symbols(["ETH/USDT"], 2)
                again = [await source.next_batch()]
                await fake.wait_subscribed(SYMBOLS)
                await push(fake, minutes(2))
                again += await collect(source, {(s, minutes(2)[0]) for s in SYMBOLS})
                return removed_symbols, streams, eth_reached, without, history, again, source
            finally:
                await source.close()

    removed_symbols, streams, eth_reached, without, history, again, source = run(scenario())
    assert removed_symbols == ("BTC/USDT",)
    if un_watch:
        assert streams == {"btcusdt@kline_1m"} and eth_reached == 0
    else:
        assert "ethusdt@kline_1m" in streams and eth_reached == 1
    assert {s for b in without for s, _ in candle_keys(b)} == {"BTC/USDT"}
    assert source.symbols == SYMBOLS
    assert candle_keys(history) == [("ETH/USDT", t) for t in minutes(0, 1)]
    # ETH's first batch is the REST poll of minute 2: nothing swept from before the removal
    assert [t for s, t in candle_keys(again[0]) if s == "ETH/USDT"] == minutes(2)
    assert _times_of(again, "ETH/USDT") == minutes(2)
    status = source.status()
    assert status["fatal"] is None and status["errors"]["fatal"] == 0
    assert status["disconnects"] == 0
