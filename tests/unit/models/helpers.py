"""Candles for model tests: a seeded random walk (always available) or a slice of real data."""

from __future__ import annotations

import numpy as np
import pandas as pd

MINUTE_MS = 60_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


def random_candles(
    n: int, seed: int = 0, step_ms: int = MINUTE_MS, drift: float = 0.0
) -> pd.DataFrame:
    """One symbol's candles: open_time, open, high, low, close, volume (a random walk)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.001, (2, n))) * close
    return pd.DataFrame(
        {
            "open_time": START_MS + step_ms * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) + spread[0],
            "low": np.minimum(open_, close) - spread[1],
            "close": close,
            "volume": rng.gamma(2.0, 10.0, n),
        }
    )


def perturbed_after(candles: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """The same candles with every candle after index t changed (prices and volume)."""
    changed = candles.copy()
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0, 0.05, len(candles) - t - 1))
    for column in ("open", "high", "low", "close"):
        changed.loc[changed.index[t + 1 :], column] *= factor
    changed.loc[changed.index[t + 1 :], "volume"] *= rng.uniform(0.1, 10, len(factor))
    return changed


def perturbed_before(candles: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """The same candles with every candle before index t changed."""
    changed = candles.copy()
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.normal(0, 0.05, t))
    for column in ("open", "high", "low", "close"):
        changed.loc[changed.index[:t], column] *= factor
    return changed


def real_candles(shared_data, rows: int, symbol: str = "BTC_USDT") -> pd.DataFrame:
    """The first ``rows`` real 1m candles of a symbol, with open_time in epoch ms."""
    frame = pd.read_parquet(shared_data / "binance-spot-1m" / f"{symbol}-1m.parquet").iloc[:rows]
    open_time = frame["date"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    return frame.drop(columns="date").assign(open_time=open_time).reset_index(drop=True)
