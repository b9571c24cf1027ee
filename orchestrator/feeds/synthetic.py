"""The synthetic market as a feed source: one 1m candle per symbol per tick."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from orchestrator.config import SyntheticFeedConfig
from orchestrator.feeds.pacing import Pacer
from orchestrator.market.schema import candles_from_arrays, cycled_strings
from orchestrator.market.synthetic import SyntheticMarket

# Any market's unified symbol can be simulated; it only has to look like one (BASE/QUOTE,
# optionally :SETTLE), since downstream names files and routes shards by it.
UNIFIED_SYMBOL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9]+)?"
)


def _start(config: SyntheticFeedConfig) -> dict:
    return {} if config.start_ms is None else {"start_ms": config.start_ms}


class SyntheticSource:
    """Deterministic, paced, endless unless ``max_minutes`` is set."""

    def __init__(self, config: SyntheticFeedConfig, state: dict | None = None):
        self.exchange = config.exchange
        # Snapshots before symbols could change lack the list: it was the config's.
        self.symbols: tuple[str, ...] = tuple(
            state["symbols"] if state and "symbols" in state else config.symbol_list()
        )
        self._seed = config.seed
        self._max_minutes = config.max_minutes
        self._market = (
            SyntheticMarket.from_snapshot(state["market"])
            if state
            else SyntheticMarket(len(self.symbols), seed=config.seed, **_start(config))
        )
        self._emitted = state["emitted"] if state else 0
        self._pacer = Pacer(config.speed)
        self._batch_minutes = config.minutes_per_batch

    async def history(self, minutes: int) -> pa.RecordBatch:
        """The market's first ``minutes`` minutes at once; the live stream continues after."""
        return self._minutes(minutes)

    async def next_batch(self) -> pa.RecordBatch | None:
        minutes = self._batch_minutes
        if self._max_minutes is not None:
            minutes = min(minutes, self._max_minutes - self._emitted)
        if minutes <= 0:
            return None
        await self._pacer.wait()
        self._emitted += minutes
        return self._minutes(minutes)

    async def unknown_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Those that are not unified ``BASE/QUOTE`` symbols."""
        return [s for s in symbols if not (isinstance(s, str) and UNIFIED_SYMBOL.fullmatch(s))]

    async def add_symbols(self, symbols: Sequence[str], warmup_minutes: int) -> pa.RecordBatch:
        """Each new symbol walks on its own from a seed of the feed's seed and its name (so
        the same feed always gives a symbol the same history), its ``warmup_minutes`` before
        the market's clock returned, its live candles next minute on."""
        unknown = await self.unknown_symbols(symbols)
        if unknown:
            raise ValueError(f"not unified BASE/QUOTE symbols: {unknown[:5]}")
        carried = set(self.symbols)
        new = [s for s in dict.fromkeys(symbols) if s not in carried]
        seeds = [(self._seed, zlib.crc32(s.encode())) for s in new]
        history = self._market.add_symbols(seeds, warmup_minutes)
        self.symbols = (*self.symbols, *new)
        ohlcv = {k: getattr(history, k).ravel() for k in ("open", "high", "low", "close", "volume")}
        return candles_from_arrays(
            self.exchange,
            np.tile(np.array(new, dtype=object), warmup_minutes),
            "1m",
            np.repeat(history.open_time, len(new)),
            ohlcv,
        )

    def remove_symbols(self, symbols: Sequence[str]) -> None:
        gone = set(symbols)
        dropped = [i for i, s in enumerate(self.symbols) if s in gone]
        if dropped:
            self._market.remove(dropped)
            self.symbols = tuple(s for s in self.symbols if s not in gone)

    def _minutes(self, minutes: int) -> pa.RecordBatch:
        """The market's next ``minutes`` minutes, minute after minute, every symbol in each:
        built as one batch from the walk's arrays (a batch per minute, then joined, cost
        the feed a fifth of its CPU in a fast replay)."""
        walk = [self._market.next_minute() for _ in range(minutes)]
        ohlcv = {
            k: np.concatenate([getattr(m, k) for m in walk])
            for k in ("open", "high", "low", "close", "volume")
        }
        times = np.repeat(np.array([m.open_time for m in walk], dtype=np.int64), len(self.symbols))
        symbols = cycled_strings(self.symbols, minutes)
        return candles_from_arrays(self.exchange, symbols, "1m", times, ohlcv)

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict:
        return {
            "market": self._market.snapshot(),
            "emitted": self._emitted,
            "symbols": list(self.symbols),
        }

    def status(self) -> dict:
        return {"kind": "synthetic", "symbols": len(self.symbols), "minutes_emitted": self._emitted}
