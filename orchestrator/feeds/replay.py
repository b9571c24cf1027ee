"""Replay of history files (Parquet/Feather candle files, Binance kline zip archives).

Candles of every selected symbol are merged into one time line and emitted one minute
at a time (every symbol's candle for that minute in one batch), paced like a live feed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from orchestrator import resolve_path
from orchestrator.config import ReplayFeedConfig
from orchestrator.feeds.pacing import Pacer
from orchestrator.market.archives import infer_symbol_timeframe, read_candles
from orchestrator.market.validate import table_to_batch

REPLAYABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".zip")


def replay_files(directory: Path, symbols: tuple[str, ...] | None) -> list[Path]:
    """The 1m candle files in ``directory`` (optionally only ``symbols``), sorted by name."""
    if not directory.is_dir():
        raise FileNotFoundError(f"replay path {directory} is not a directory")
    chosen = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in REPLAYABLE_SUFFIXES:
            continue
        symbol, timeframe = infer_symbol_timeframe(path)
        if timeframe == "1m" and (symbols is None or symbol in symbols):
            chosen.append(path)
    if not chosen:
        raise FileNotFoundError(f"no 1m candle files for {symbols or 'any symbol'} in {directory}")
    return chosen


def load_timeline(files: list[Path], exchange: str) -> pa.Table:
    table = pa.concat_tables([read_candles(f, exchange) for f in files])
    return table.sort_by([("open_time", "ascending"), ("symbol", "ascending")])


class ReplaySource:
    def __init__(self, config: ReplayFeedConfig, state: dict | None = None):
        self.exchange = config.exchange
        files = replay_files(resolve_path(config.path), config.symbols)
        self._timeline = load_timeline(files, config.exchange)
        self.symbols = tuple(sorted(set(self._timeline.column("symbol").to_pylist())))
        self._bounds = _minute_bounds(self._timeline.column("open_time").to_numpy())
        if config.max_minutes is not None:
            self._bounds = self._bounds[: config.warmup_minutes + config.max_minutes + 1]
        self._position = state["position"] if state else 0
        self._pacer = Pacer(config.speed)

    async def history(self, minutes: int) -> pa.RecordBatch:
        """The next ``minutes`` minutes of the timeline at once (features warm up on them)."""
        end = min(self._position + minutes, len(self._bounds) - 1)
        start, stop = self._bounds[self._position], self._bounds[end]
        self._position = end
        return table_to_batch(self._timeline.slice(start, stop - start))

    async def next_batch(self) -> pa.RecordBatch | None:
        if self._position >= len(self._bounds) - 1:
            return None
        await self._pacer.wait()
        start, stop = self._bounds[self._position], self._bounds[self._position + 1]
        self._position += 1
        return table_to_batch(self._timeline.slice(start, stop - start))

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict:
        return {"position": self._position}

    def status(self) -> dict:
        total = len(self._bounds) - 1
        return {"kind": "replay", "symbols": len(self.symbols), "minutes_emitted": self._position,
                "minutes_total": total}


def _minute_bounds(open_time: np.ndarray) -> np.ndarray:
    edges = np.flatnonzero(np.diff(open_time)) + 1
    return np.concatenate([[0], edges, [len(open_time)]])
