"""Candles for backfill tests: a synthetic random walk, or a slice of the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.archives import read_candles
from orchestrator.market.schema import candles_from_arrays

MINUTE = 60_000
START = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def random_candles(
    n: int,
    *,
    seed: int = 0,
    symbol: str = "AAA/USDT",
    exchange: str = "test",
    start: int = START,
    missing: tuple[int, ...] = (),
) -> pa.Table:
    """``n`` 1m candles from ``start``, without the minutes whose index is in ``missing``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    keep = np.ones(n, dtype=bool)
    keep[list(missing)] = False
    ohlcv = {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": rng.lognormal(3.0, 1.0, n),
    }
    batch = candles_from_arrays(
        exchange,
        symbol,
        "1m",
        (start + MINUTE * np.arange(n))[keep],
        {k: v[keep] for k, v in ohlcv.items()},
    )
    return pa.Table.from_batches([batch])


def real_candles(
    shared_data: Path,
    symbols: tuple[str, ...],
    minutes: int,
    folder: str = "binance-spot-1m",
    exchange: str = "binance",
) -> pa.Table:
    """The first ``minutes`` 1m candles of each symbol's real file, as one table."""
    tables = []
    for symbol in symbols:
        path = shared_data / folder / f"{symbol.replace('/', '_')}-1m.parquet"
        tables.append(read_candles(path, exchange).slice(0, minutes))
    return pa.concat_tables(tables)


def first_open_time(table: pa.Table) -> int:
    return pc.min(table.column("open_time")).as_py()
