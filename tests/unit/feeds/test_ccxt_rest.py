"""CcxtRestSource against the local fake Binance: real ccxt client code, injected faults."""

from __future__ import annotations

import json
import logging

import pytest

from orchestrator.feeds.base import ChangesSymbols
from orchestrator.feeds.ccxt.common import rows_to_batch
from orchestrator.feeds.ccxt.rest import CcxtRestSource
from orchestrator.feeds.errors import ErrorKind, FatalFeedError, FeedError
from orchestrator.feeds.retry import RetryPolicy
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

NOW = T0 + 10 * MINUTE_MS + 30_000  # 30 s into minute 10


async def _polls(fake: FakeBinance, n: int, *, advance_ms: int = 0, **overrides):
    """Poll ``n`` times (the fake's clock moving ``advance_ms`` between polls)."""
    sleep = overrides.pop("sleep", RecordingSleep())
    source = CcxtRestSource(
        fake_config(fake, **overrides), clock_ms=lambda: fake.now_ms, sleep=sleep
    )
    try:
        batches = []
        for _ in range(n):
            batches.append(await source.next_batch())
            fake.now_ms += advance_ms
        return batches, source.status()
    finally:
        await source.close()


def test_polling_streams_closed_and_provisional_candles_then_revises():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            batches, status = await _polls(
                fake, 2, advance_ms=2 * MINUTE_MS, start_lookback_minutes=3
            )
            return batches, status, fake.kline_queries, fake.requests

    (first, second), status, queries, requests = run(scenario())
    closed_first = expected_values(SYMBOLS, minutes(7, 8, 9))
    values = candle_values(first)
    assert sorted(values) == sorted([(s, t) for s in SYMBOLS for t in minutes(7, 8, 9, 10)])
    assert {k: values[k] for k in closed_first} == closed_first
    # the still-open minute 10 came with its volume so far (a provisional candle)
    assert values[("BTC/USDT", minutes(10)[0])][4] == float(
        provisional_fields("BTC/USDT", minutes(10)[0], NOW)[4]
    )
    assert first.column("open_time").to_pylist() == sorted(first.column("open_time").to_pylist())
    # second poll: since = last closed + 1, so minute 10 comes again, now final
    assert candle_values(second) == {
        **expected_values(SYMBOLS, minutes(10, 11)),
        **{k: v for k, v in candle_values(second).items() if k[1] == minutes(12)[0]},
    }
    assert sorted({k[1] for k in candle_keys(second)}) == minutes(10, 11, 12)
    assert {q["startTime"] for q in queries[:2]} == {str(minutes(7)[0])}
    assert {q["startTime"] for q in queries[2:]} == {str(minutes(9)[0] + 1)}
    assert status["requests"] == requests["klines"] + requests["exchangeInfo"] == 5
    assert status["candles"] == first.num_rows + second.num_rows == 14
    assert status["errors"] == {"transient": 0, "rate_limited": 0, "invalid": 0, "fatal": 0}
    assert status["polls"] == 2 and status["stale_count"] == 0 and status["failing_count"] == 0


@pytest.mark.parametrize(
    ("fault", "times", "kind"),
    [
        ("http_429", 1, "rate_limited"),
        ("http_418", 1, "rate_limited"),
        ("http_5xx", 2, "transient"),
        ("drop", 1, "transient"),
    ],
)
def test_retryable_failures_are_retried_counted_and_lose_nothing(fault, times, kind):
    sleep = RecordingSleep()

    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault(fault, symbol="BTC/USDT", times=times, retry_after_s=0.04)
            (batch,), status = await _polls(fake, 1, start_lookback_minutes=3, sleep=sleep)
            return batch, status, fake.faults_applied

    batch, status, applied = run(scenario())
    assert applied[fault] == times
    assert sorted(candle_keys(batch)) == sorted(
        (s, t) for s in SYMBOLS for t in minutes(7, 8, 9, 10)
    )
    assert status["errors"][kind] == times and status["retries"] == times
    assert status["requests"] == 1 + 2 + times
    assert len(sleep.delays) == times
    if kind == "rate_limited":  # waited at least the server's Retry-After
        assert sleep.delays[0] >= 0.04
    assert status["failing_count"] == 0


def test_exhausted_retries_skip_the_symbol_this_poll_and_catch_up_next_poll():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("http_5xx", symbol="ETH/USDT", times=3)
            batches, status = await _polls(
                fake,
                2,
                advance_ms=MINUTE_MS,
                start_lookback_minutes=3,
                retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02),
            )
            return batches, status

    (first, second), status = run(scenario())
    assert {s for s, _ in candle_keys(first)} == {"BTC/USDT"}
    eth_second = sorted(t for s, t in candle_keys(second) if s == "ETH/USDT")
    assert eth_second == minutes(7, 8, 9, 10, 11)  # asked again from the same since
    assert status["errors"]["transient"] == 3 and status["retries"] == 2
    assert status["failing_count"] == 0  # recovered on the second poll


def test_malformed_json_is_invalid_counted_not_retried_and_the_source_keeps_running():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("malformed", symbol="BTC/USDT")
            source = CcxtRestSource(
                fake_config(fake, start_lookback_minutes=3), clock_ms=lambda: fake.now_ms
            )
            try:
                first = await source.next_batch()
                mid_status = source.status()
                second = await source.next_batch()
                return first, mid_status, second, source.status()
            finally:
                await source.close()

    first, mid_status, second, status = run(scenario())
    assert {s for s, _ in candle_keys(first)} == {"ETH/USDT"}
    assert list(mid_status["failing_symbols"]) == ["BTC/USDT"]
    assert "BadResponse" in mid_status["failing_symbols"]["BTC/USDT"]
    assert status["errors"]["invalid"] == 1 and status["retries"] == 0
    assert sorted(t for s, t in candle_keys(second) if s == "BTC/USDT") == minutes(7, 8, 9, 10)
    assert status["failing_count"] == 0


def test_duplicates_are_passed_on_and_out_of_order_answers_come_out_sorted():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("duplicate", symbol="BTC/USDT")
            fake.add_fault("shuffle", symbol="ETH/USDT")
            (batch,), status = await _polls(fake, 1, start_lookback_minutes=3)
            return batch, status

    batch, status = run(scenario())
    keys = candle_keys(batch)
    assert sorted(t for s, t in keys if s == "BTC/USDT") == sorted(minutes(7, 8, 9, 10) * 2)
    assert sorted(t for s, t in keys if s == "ETH/USDT") == minutes(7, 8, 9, 10)
    assert batch.column("open_time").to_pylist() == sorted(batch.column("open_time").to_pylist())
    assert status["candles"] == 12


def test_gap_in_an_answer_is_filled_by_fetch_range_through_the_gate():
    hidden = frozenset(minutes(8))  # minute 9 closed and came: the cursor moves past 8

    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("gap", symbol="BTC/USDT", hide=hidden)
            source = CcxtRestSource(
                fake_config(fake, start_lookback_minutes=3), clock_ms=lambda: fake.now_ms
            )
            gate = CandleGate("binance", grace_ms=0)
            emitted, gaps = [], []
            try:
                for _ in range(3):
                    emitted.append(gate.offer(await source.next_batch(), fake.now_ms))
                    for gap in gate.take_gaps():
                        gaps.append((gap.symbol, gap.start_ms, gap.end_ms))
                        repaired = await source.fetch_range(gap.symbol, gap.start_ms, gap.end_ms)
                        emitted.append(gate.resolve_gap(gap, repaired, fake.now_ms).candles)
                    fake.now_ms += MINUTE_MS
                return emitted, gaps
            finally:
                await source.close()

    emitted, gaps = run(scenario())
    assert gaps == [("BTC/USDT", minutes(8)[0], minutes(9)[0])]
    keys = [k for batch in emitted for k in candle_keys(batch)]
    assert sorted(keys) == sorted(
        (s, t) for s in SYMBOLS for t in minutes(7, 8, 9, 10, 11)
    )  # once each
    values = {k: v for batch in emitted for k, v in candle_values(batch).items()}
    assert values == expected_values(SYMBOLS, minutes(7, 8, 9, 10, 11))


def test_duplicates_from_the_source_reach_the_gate_and_leave_it_once():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("duplicate", times=4)
            source = CcxtRestSource(
                fake_config(fake, start_lookback_minutes=3), clock_ms=lambda: fake.now_ms
            )
            gate = CandleGate("binance", grace_ms=0)
            try:
                emitted = []
                for _ in range(2):
                    emitted.append(gate.offer(await source.next_batch(), fake.now_ms))
                    fake.now_ms += MINUTE_MS
                return emitted, gate.counters
            finally:
                await source.close()

    emitted, counters = run(scenario())
    keys = [k for batch in emitted for k in candle_keys(batch)]
    assert sorted(keys) == sorted((s, t) for s in SYMBOLS for t in minutes(7, 8, 9, 10))
    assert counters["duplicates"] > 0


def test_fetch_range_paginates_half_open_and_exact():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=T0 + 400 * MINUTE_MS, first_open_ms=T0) as fake:
            source = CcxtRestSource(fake_config(fake, page_limit=100), clock_ms=lambda: fake.now_ms)
            try:
                batch = await source.fetch_range("ETH/USDT", minutes(10)[0], minutes(260)[0])
                return batch, fake.kline_queries, source.status()
            finally:
                await source.close()

    batch, queries, status = run(scenario())
    open_times = list(range(minutes(10)[0], minutes(260)[0], MINUTE_MS))
    assert candle_keys(batch) == [("ETH/USDT", t) for t in open_times]
    assert candle_values(batch) == expected_values(["ETH/USDT"], open_times)
    assert [int(q["startTime"]) for q in queries] == [
        minutes(10)[0],
        minutes(110)[0] - MINUTE_MS + 1,
        minutes(210)[0] - MINUTE_MS + 1,
    ]
    assert all(q["limit"] == "100" for q in queries)
    assert status["requests"] == 1 + 3


def test_unknown_symbol_is_invalid_for_that_symbol_only():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            config = fake_config(fake, symbols=(*SYMBOLS, "DOGE/USDT"), start_lookback_minutes=3)
            source = CcxtRestSource(config, clock_ms=lambda: fake.now_ms)
            try:
                return await source.next_batch(), source.status()
            finally:
                await source.close()

    batch, status = run(scenario())
    assert {s for s, _ in candle_keys(batch)} == set(SYMBOLS)
    assert list(status["failing_symbols"]) == ["DOGE/USDT"] and status["errors"]["invalid"] == 1


def test_authentication_failure_is_fatal():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("auth", symbol="ETH/USDT")
            source = CcxtRestSource(fake_config(fake), clock_ms=lambda: fake.now_ms)
            try:
                with pytest.raises(FatalFeedError, match="AuthenticationError"):
                    await source.next_batch()
                return source.status()
            finally:
                await source.close()

    status = run(scenario())
    assert status["errors"]["fatal"] == 1 and status["retries"] == 0


def test_symbols_without_new_candles_become_stale():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            source_now = [NOW]
            config = fake_config(fake, start_lookback_minutes=3, stale_after_periods=2)
            source = CcxtRestSource(config, clock_ms=lambda: source_now[0])
            try:
                await source.next_batch()
                fresh = source.status()
                source_now[0] += 3 * MINUTE_MS  # time passes, the exchange publishes nothing
                await source.next_batch()
                return fresh, source.status()
            finally:
                await source.close()

    fresh, stale = run(scenario())
    assert fresh["stale_count"] == 0
    assert stale["stale_count"] == 2 and stale["stale_symbols"] == sorted(SYMBOLS)


def test_secrets_never_appear_in_repr_status_or_logs(monkeypatch, caplog):
    key, secret = "KEY-d41d8cd98f00b204e980", "SECRET-9800998ecf8427e"
    monkeypatch.setenv("TICKCAST_TEST_KEY", key)
    monkeypatch.setenv("TICKCAST_TEST_SECRET", secret)
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("http_429", retry_after_s=0.01)
            fake.add_fault("malformed", symbol="ETH/USDT")
            config = fake_config(
                fake, api_key_env="TICKCAST_TEST_KEY", api_secret_env="TICKCAST_TEST_SECRET"
            )
            source = CcxtRestSource(config, clock_ms=lambda: fake.now_ms, sleep=RecordingSleep())
            try:
                await source.next_batch()
                assert source._client.apiKey == key  # the client did get the credentials
                return config, source, source.status()
            finally:
                await source.close()

    config, source, status = run(scenario())
    assert status["errors"]["rate_limited"] == 1 and status["errors"]["invalid"] == 1
    exposed = [
        repr(config),
        str(config),
        config.model_dump_json(),
        repr(source),
        json.dumps(status),
        caplog.text,
    ]
    for text in exposed:
        assert key not in text and secret not in text
    assert "TICKCAST_TEST_KEY" in json.dumps(status)  # the variable's name is fine to show


def test_hundreds_of_symbols_with_bounded_concurrency():
    many = tuple(f"C{i:03d}/USDT" for i in range(300))

    async def scenario():
        async with FakeBinance(many, now_ms=NOW, first_open_ms=T0) as fake:
            (batch,), status = await _polls(
                fake, 1, symbols=many, max_concurrency=8, start_lookback_minutes=2
            )
            return batch, status, fake.max_klines_in_flight

    batch, status, max_in_flight = run(scenario())
    assert sorted(candle_keys(batch)) == sorted((s, t) for s in many for t in minutes(8, 9, 10))
    assert 1 < max_in_flight <= 8
    assert status["requests"] == 301 and status["candles"] == 900


def test_rows_without_a_usable_time_are_counted_not_converted():
    rows = [
        [None, 1, 2, 0.5, 1, 3],
        [T0, 1, 2, 0.5, 1, 3],
        ["soon", 1, 2, 0.5, 1, 3],
        [T0 + 1.5, 1, 2, 0.5, 1, 3],
    ]
    batch, rejected = rows_to_batch("binance", {"BTC/USDT": rows})
    assert candle_keys(batch) == [("BTC/USDT", T0)] and rejected == 3


def test_garbage_rows_are_left_for_the_validator_never_dropped_silently():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            fake.add_fault("garbage_rows", symbol="BTC/USDT")
            source = CcxtRestSource(
                fake_config(fake, start_lookback_minutes=3), clock_ms=lambda: fake.now_ms
            )
            gate = CandleGate("binance", grace_ms=0)
            try:
                batch = await source.next_batch()
                gate.offer(batch, fake.now_ms)
                return batch, source.status(), gate.counters
            finally:
                await source.close()

    batch, status, gate_counters = run(scenario())
    # The row without an open time never reaches us: ccxt's filter_by_since_limit drops it.
    assert status["rejected_rows"] == 0
    btc_times = sorted(t for s, t in candle_keys(batch) if s == "BTC/USDT")
    assert btc_times == minutes(7, 8, 9, 10, 11)  # the row priced "n/a" is passed on (as NaN)...
    assert gate_counters["rejected"] == 1  # ...and quarantined by the gate's validation


def test_a_60_s_exchange_outage_is_two_log_lines_a_status_field_and_no_lost_candle(caplog):
    """503s on every request for 60 s of the exchange's clock: counted one by one, backing
    off (status), logged once down and once back, and every minute it held back comes after
    it all the same."""

    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            source = CcxtRestSource(
                fake_config(fake, start_lookback_minutes=3),
                clock_ms=lambda: fake.now_ms,
                sleep=RecordingSleep(),
            )
            try:
                fake.add_fault("http_5xx", times=10**6)  # every request, until removed
                down = []
                for _ in range(12):  # a poll every 5 s for 60 s
                    down.append(await source.next_batch())
                    fake.now_ms += 5_000
                during = source.status()
                fake.faults.clear()
                after = await source.next_batch()  # answers again: not yet "back"
                settling = source.status()
                fake.now_ms += 60_000  # a quiet minute later
                await source.next_batch()
                return down, during, after, settling, source.status()
            finally:
                await source.close()

    with caplog.at_level(logging.WARNING, logger="orchestrator.feeds.ccxt.common"):
        down, during, after, settling, status = run(scenario())
    assert all(b.num_rows == 0 for b in down) and during["errors"]["transient"] >= 24
    health = during["rest_health"]
    assert health["up"] is False and health["outages"] == 1 and health["down_for_s"] >= 55
    assert health["retry_in_s"] is not None and health["failed_attempts"] >= 24
    lines = [r.getMessage() for r in caplog.records if r.name == "orchestrator.feeds.ccxt.common"]
    assert len(lines) == 2, lines
    assert "is down" in lines[0] and "is back after" in lines[1]
    assert settling["rest_health"]["up"] is False and status["rest_health"]["up"] is True
    # NOW is 30 s into minute 10; 60 s later minute 11 has closed: 7 (lookback) to 11, all.
    assert sorted({k[1] for k in candle_keys(after)}) == minutes(7, 8, 9, 10, 11)


# --- symbols added and removed while running ----------------------------------------------

LISTED = (*SYMBOLS, "SOL/USDT", "XRP/USDT")  # the fake's markets; the source starts with SYMBOLS


def test_added_symbols_get_history_up_to_the_current_minute_then_are_polled_from_it():
    async def scenario():
        async with FakeBinance(LISTED, now_ms=NOW, first_open_ms=T0) as fake:
            source = CcxtRestSource(
                fake_config(fake, symbols=SYMBOLS, start_lookback_minutes=3, max_concurrency=1),
                clock_ms=lambda: fake.now_ms,
            )
            assert isinstance(source, ChangesSymbols)
            try:
                await source.next_batch()
                history = await source.add_symbols(["SOL/USDT", "BTC/USDT", "XRP/USDT"], 6)
                symbols, added_status = source.symbols, source.status()
                live = [await source.next_batch()]
                fake.now_ms += MINUTE_MS
                live.append(await source.next_batch())
                return history, symbols, added_status, live, fake.max_klines_in_flight
            finally:
                await source.close()

    history, symbols, status, live, in_flight = run(scenario())
    added = ("SOL/USDT", "XRP/USDT")
    assert symbols == (*SYMBOLS, *added)
    assert sorted(candle_keys(history)) == sorted(
        (s, t) for s in added for t in minutes(*range(4, 10))
    )
    assert candle_values(history) == expected_values(added, minutes(*range(4, 10)))
    assert history.column("open_time").to_pylist() == sorted(
        history.column("open_time").to_pylist()
    )
    for symbol in added:  # minute 10 was still open at the add: it is the first live candle
        times = [t for s, t in candle_keys(history) if s == symbol]
        times += sorted({t for b in live for s, t in candle_keys(b) if s == symbol})
        assert times == minutes(*range(4, 12))
        assert min(t for s, t in candle_keys(live[0]) if s == symbol) == minutes(10)[0]
    assert sorted({s for s, _ in candle_keys(live[0])}) == sorted(symbols)
    assert in_flight == 1  # history requests share next_batch's concurrency bound
    assert status["stale_count"] == 0 and status["failing_count"] == 0


def test_removed_symbols_are_no_longer_polled_nor_reported():
    async def scenario():
        async with FakeBinance(LISTED, now_ms=NOW, first_open_ms=T0) as fake:
            source_now = [NOW]
            config = fake_config(
                fake, symbols=LISTED, start_lookback_minutes=3, stale_after_periods=2
            )
            source = CcxtRestSource(config, clock_ms=lambda: source_now[0])
            try:
                fake.add_fault("malformed", symbol="XRP/USDT")
                await source.next_batch()
                failing = source.status()["failing_symbols"]
                source.remove_symbols(["XRP/USDT", "ETH/USDT", "DOGE/USDT"])
                queries_before = len(fake.kline_queries)
                source_now[0] += 3 * MINUTE_MS  # time passes, the exchange publishes nothing
                after = await source.next_batch()
                asked = {q["symbol"] for q in fake.kline_queries[queries_before:]}
                return failing, source.symbols, after, asked, source.status()
            finally:
                await source.close()

    failing, symbols, after, asked, status = run(scenario())
    assert list(failing) == ["XRP/USDT"]
    assert symbols == ("BTC/USDT", "SOL/USDT")
    assert asked == {"BTCUSDT", "SOLUSDT"}
    assert {s for s, _ in candle_keys(after)} == set(symbols)
    assert status["failing_count"] == 0  # XRP's failure went with it
    assert status["stale_symbols"] == list(symbols)  # only carried symbols can be stale


def test_unknown_symbols_are_the_ones_the_exchange_does_not_list():
    async def scenario():
        async with FakeBinance(LISTED, now_ms=NOW, first_open_ms=T0) as fake:
            source = CcxtRestSource(
                fake_config(fake, symbols=SYMBOLS), clock_ms=lambda: fake.now_ms
            )
            try:
                asked = ["DOGE/USDT", "SOL/USDT", "BTC/USDT", "sol/usdt", "XRP/USDT"]
                unknown = await source.unknown_symbols(asked)
                loads_first = fake.requests["exchangeInfo"]
                with pytest.raises(ValueError, match="DOGE/USDT"):
                    await source.add_symbols(["SOL/USDT", "DOGE/USDT"], 3)
                return unknown, loads_first, source.symbols, fake.requests
            finally:
                await source.close()

    unknown, loads_first, symbols, requests = run(scenario())
    assert unknown == ["DOGE/USDT", "sol/usdt"]
    assert loads_first == 1
    assert symbols == SYMBOLS and requests["klines"] == 0  # nothing added, nothing fetched
    assert requests["exchangeInfo"] == 2  # missing from loaded markets: loaded once more


def test_a_market_listed_after_the_start_is_found_by_loading_markets_again():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            source = CcxtRestSource(fake_config(fake), clock_ms=lambda: fake.now_ms)
            try:
                await source.next_batch()  # markets loaded: SOL is not listed yet
                fake.symbols = (*SYMBOLS, "SOL/USDT")
                fake._by_id["SOLUSDT"] = "SOL/USDT"
                unknown = await source.unknown_symbols(["SOL/USDT", "DOGE/USDT"])
                history = await source.add_symbols(["SOL/USDT"], 2)
                return unknown, history
            finally:
                await source.close()

    unknown, history = run(scenario())
    assert unknown == ["DOGE/USDT"]
    assert candle_keys(history) == [("SOL/USDT", t) for t in minutes(8, 9)]


def test_a_failure_to_load_markets_raises_from_unknown_symbols():
    async def scenario():
        async with FakeBinance(SYMBOLS, now_ms=NOW, first_open_ms=T0) as fake:
            config = fake_config(fake)
        sleep = RecordingSleep()  # the server is gone: every attempt is refused
        source = CcxtRestSource(config, clock_ms=lambda: NOW, sleep=sleep)
        try:
            with pytest.raises(FeedError) as raised:
                await source.unknown_symbols(["SOL/USDT"])
            return raised.value, source.status(), sleep.delays
        finally:
            await source.close()

    error, status, delays = run(scenario())
    assert error.kind is ErrorKind.TRANSIENT
    assert status["errors"]["transient"] == 3 and len(delays) == 2
    assert status["markets_loaded"] is False
