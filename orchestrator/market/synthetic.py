"""A deterministic synthetic market: the embedded default when no data source is configured.

Each symbol follows a geometric random walk whose volatility switches between regimes
(a two-state Markov chain: calm and turbulent), with volume that rises with the size of
the move. The same seed and symbols always give the same candles, and the whole state is
plain data, so a restarted feed continues exactly where its snapshot left off.
"""

from __future__ import annotations

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
