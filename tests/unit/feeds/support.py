"""Shared helpers for feed tests: a bounded event loop runner, configs pointing at the fakes,
and expectations computed from the fake's candle series (never from the code under test)."""

from __future__ import annotations

import asyncio

import pyarrow as pa

from orchestrator.feeds.ccxt.config import ExchangeConfig
from orchestrator.feeds.retry import BackoffPolicy, RetryPolicy
from tests.fakes.candle_series import MINUTE_MS, expected_ohlcv

T0 = 1_699_999_980_000  # a minute boundary (2023-11-14 22:13 UTC)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
TEST_TIMEOUT_S = 20.0


def run(coro, timeout: float = TEST_TIMEOUT_S):
    """Run ``coro`` in a fresh event loop, failing (not hanging) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class RecordingSleep:
    """An injectable ``sleep`` that records the delays and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def fake_config(fake, **overrides) -> ExchangeConfig:
    """A binance config aimed at ``fake``, with fast throttling and short backoffs."""
    fields = {
        "exchange": "binance",
        "symbols": fake.symbols,
        "urls": fake.ccxt_urls(),
        "rate_limit_ms": 1,
        "poll_interval_s": 0,
        "retry": RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05),
        "reconnect": BackoffPolicy(base_delay_s=0.01, max_delay_s=0.05),
    }
    fields.update(overrides)
    return ExchangeConfig(**fields)


def minutes(*offsets: int) -> list[int]:
    return [T0 + k * MINUTE_MS for k in offsets]


def candle_keys(batch: pa.RecordBatch | pa.Table) -> list[tuple[str, int]]:
    return list(
        zip(batch.column("symbol").to_pylist(), batch.column("open_time").to_pylist(), strict=True)
    )


def candle_values(batch: pa.RecordBatch | pa.Table) -> dict[tuple[str, int], tuple]:
    """(symbol, open_time) -> (o, h, l, c, v); the last occurrence wins."""
    columns = [
        batch.column(c).to_pylist()
        for c in ("symbol", "open_time", "open", "high", "low", "close", "volume")
    ]
    return {(s, t): tuple(v) for s, t, *v in zip(*columns, strict=True)}


def expected_values(symbols, open_times) -> dict[tuple[str, int], tuple]:
    return {(s, t): expected_ohlcv(s, t) for s in symbols for t in open_times}
