"""A deterministic synthetic market: the embedded default when no data source is configured.

Each symbol follows a geometric random walk whose volatility switches between regimes
(a two-state Markov chain: calm and turbulent), with volume that rises with the size of
the move. The same seed and symbols always give the same candles, and the whole state is
plain data, so a restarted feed continues exactly where its snapshot left off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.market.timeframes import MINUTE_MS

CALM_VOL, TURBULENT_VOL = 0.0006, 0.0025  # per-minute log-return std in each regime
SWITCH_PROB = (0.002, 0.01)  # per-minute chance to leave calm, to leave turbulent
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SyntheticMinute:
    """One minute of candles for every symbol, as aligned numpy arrays."""

    open_time: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


@dataclass(frozen=True)
class SyntheticHistory:
    """Minutes before the market's clock for some symbols: ``open_time`` is (minutes,), the
    prices and volumes are (minutes, symbols)."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class SyntheticMarket:
    """Vectorized generator: ``next_minute()`` advances every symbol by one 1m candle."""

    def __init__(self, n_symbols: int, seed: int = 7, start_ms: int = DEFAULT_START_MS):
        if start_ms % MINUTE_MS:
            raise ValueError("start_ms must be aligned to a minute")
        self._rng = np.random.default_rng(seed)
        self.open_time = start_ms
        self.price = 10.0 ** self._rng.uniform(0, 4.5, n_symbols)  # 1 .. ~30,000
        self.turbulent = np.zeros(n_symbols, dtype=bool)
        self.base_volume = 10.0 ** self._rng.uniform(1, 4, n_symbols)

    def next_minute(self) -> SyntheticMinute:
        rng, n = self._rng, len(self.price)
        self._switch_regimes(rng.random(n))
        sigma = np.where(self.turbulent, TURBULENT_VOL, CALM_VOL)
        log_ret = rng.standard_normal(n) * sigma
        open_ = self.price
        close = open_ * np.exp(log_ret)
        wick_up, wick_down = np.abs(rng.standard_normal((2, n))) * sigma * 0.5
        high = np.maximum(open_, close) * np.exp(wick_up)
        low = np.minimum(open_, close) * np.exp(-wick_down)
        surprise = np.abs(log_ret) / sigma
        volume = self.base_volume * rng.lognormal(0.0, 0.5, n) * (1.0 + surprise)
        minute = SyntheticMinute(self.open_time, open_, high, low, close, volume)
        self.price, self.open_time = close, self.open_time + MINUTE_MS
        return minute

    def _switch_regimes(self, draws: np.ndarray) -> None:
        leave = np.where(self.turbulent, SWITCH_PROB[1], SWITCH_PROB[0])
        self.turbulent = self.turbulent ^ (draws < leave)

    def add_symbols(
        self, seeds: Sequence[int | Sequence[int]], history_minutes: int
    ) -> SyntheticHistory:
        """Appends one symbol per seed and returns their ``history_minutes`` minutes before
        ``open_time``, ending at their current price.

        A new symbol's start and history come from a generator of its own seed, so they depend
        on that seed alone, not on the market's draws nor on the symbols added with it. From
        ``open_time`` on it moves with the market's generator: a minute stays one vectorised
        draw for all symbols.
        """
        rngs = [np.random.default_rng(seed) for seed in seeds]
        price = 10.0 ** np.array([r.uniform(0, 4.5) for r in rngs])
        base_volume = 10.0 ** np.array([r.uniform(1, 4) for r in rngs])
        switch, ret, wick_up, wick_down, noise = (
            np.stack([_own_draws(r, history_minutes) for r in rngs], axis=-1)
            if rngs
            else np.empty((5, history_minutes, 0))
        )
        turbulent = np.empty(switch.shape, dtype=bool)
        state = np.zeros(len(rngs), dtype=bool)
        for minute, draws in enumerate(switch):  # a Markov chain: each minute needs the last
            state = state ^ (draws < np.where(state, SWITCH_PROB[1], SWITCH_PROB[0]))
            turbulent[minute] = state
        sigma = np.where(turbulent, TURBULENT_VOL, CALM_VOL)
        log_ret = ret * sigma
        close = price * np.exp(np.cumsum(log_ret, axis=0))
        open_ = np.concatenate([price[np.newaxis], close])[:-1]
        high = np.maximum(open_, close) * np.exp(np.abs(wick_up) * sigma * 0.5)
        low = np.minimum(open_, close) * np.exp(-np.abs(wick_down) * sigma * 0.5)
        volume = base_volume * noise * (1.0 + np.abs(log_ret) / sigma)
        open_time = self.open_time + MINUTE_MS * np.arange(-history_minutes, 0, dtype=np.int64)
        self.price = np.concatenate([self.price, close[-1] if history_minutes else price])
        self.turbulent = np.concatenate([self.turbulent, state])
        self.base_volume = np.concatenate([self.base_volume, base_volume])
        return SyntheticHistory(open_time, open_, high, low, close, volume)

    def remove(self, indices: Sequence[int] | np.ndarray) -> None:
        """Drops the symbols at ``indices``; the others keep their state."""
        self.price = np.delete(self.price, indices)
        self.turbulent = np.delete(self.turbulent, indices)
        self.base_volume = np.delete(self.base_volume, indices)

    def snapshot(self) -> dict:
        return {
            "rng": self._rng.bit_generator.state,
            "open_time": self.open_time,
            "price": self.price.copy(),
            "turbulent": self.turbulent.copy(),
            "base_volume": self.base_volume.copy(),
        }

    @classmethod
    def from_snapshot(cls, state: dict) -> SyntheticMarket:
        market = cls(len(state["price"]), start_ms=state["open_time"])
        market._rng.bit_generator.state = state["rng"]
        market.price = np.array(state["price"])
        market.turbulent = np.array(state["turbulent"])
        market.base_volume = np.array(state["base_volume"])
        return market


def _own_draws(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """(5, minutes) draws of one symbol: regime switch, return, two wicks, volume noise."""
    return np.concatenate(
        [
            rng.random((1, minutes)),
            rng.standard_normal((3, minutes)),
            rng.lognormal(0.0, 0.5, (1, minutes)),
        ]
    )
