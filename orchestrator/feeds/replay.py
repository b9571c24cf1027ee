"""Replay of history files (Parquet/Feather candle files, Binance kline zip archives).

Candles of every selected symbol are merged into one time line and emitted one minute
at a time (every symbol's candle for that minute in one batch), paced like a live feed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from orchestrator import resolve_path
from orchestrator.config import ReplayFeedConfig
from orchestrator.feeds.pacing import Pacer
from orchestrator.market.archives import infer_symbol_timeframe, path_safe_symbol, read_candles
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import run_bounds
from orchestrator.market.validate import table_to_batch

REPLAYABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".zip")


def replay_files(directory: Path, symbols: tuple[str, ...] | None) -> list[tuple[Path, str]]:
    """(file, symbol) of every 1m candle file to replay, optionally only ``symbols``.

    Two layouts: a flat folder of ``BTC_USDT-1m.parquet`` / ``LINKUSDT-1m-2026-02.zip`` files,
    or the hive dataset ``tickcast fetch-history`` writes
    (``exchange=…/symbol=BTC_USDT/timeframe=1m/*.parquet``).
    """
    found = [(path, symbol) for path, symbol, tf in candle_files(directory) if tf == "1m"]
    wanted = None if symbols is None else {path_safe_symbol(s) for s in symbols}
    chosen = [(p, sym) for p, sym in found if wanted is None or path_safe_symbol(sym) in wanted]
    if not chosen:
        raise FileNotFoundError(f"no 1m candle files for {symbols or 'any symbol'} in {directory}")
    return chosen


def candle_files(directory: Path) -> list[tuple[Path, str, str]]:
    """(file, symbol, timeframe) of every candle file in either layout (see replay_files);
    the backfill reads other timeframes than 1m through this too."""
    if not directory.is_dir():
        raise FileNotFoundError(f"replay path {directory} is not a directory")
    return _hive_files(directory) if any(directory.glob("exchange=*")) else _flat_files(directory)


def _flat_files(directory: Path) -> list[tuple[Path, str, str]]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in REPLAYABLE_SUFFIXES:
            found.append((path, *infer_symbol_timeframe(path)))
    return found


def _hive_files(directory: Path) -> list[tuple[Path, str, str]]:
    """Files of the hive layout; the symbol here is the folder's path-safe name (the files
    themselves hold the unified symbol, which is what gets replayed)."""
    paths = sorted(directory.glob("exchange=*/symbol=*/timeframe=*/*.parquet"))
    return [
        (
            path,
            path.parent.parent.name.removeprefix("symbol="),
            path.parent.name.removeprefix("timeframe="),
        )
        for path in paths
    ]


def load_timeline(files: list[tuple[Path, str]], exchange: str) -> pa.Table:
    """Every file's candles on one time line, labelled with the configured exchange name."""
    tables = [read_candles(path, exchange, symbol, "1m") for path, symbol in files]
    table = pa.concat_tables(tables)
    table = table.set_column(
        0, CANDLE_SCHEMA.field("exchange"), pa.array([exchange] * table.num_rows, pa.string())
    )
    return table.sort_by([("open_time", "ascending"), ("symbol", "ascending")])


class ReplaySource:
    def __init__(self, config: ReplayFeedConfig, state: dict | None = None):
        self.exchange = config.exchange
        files = replay_files(resolve_path(config.path), config.symbols)
        self._timeline = load_timeline(files, config.exchange)
        self.symbols = tuple(sorted(set(self._timeline.column("symbol").to_pylist())))
        self._bounds = run_bounds(self._timeline.column("open_time").to_numpy())
        if config.max_minutes is not None:
            self._bounds = self._bounds[: config.warmup_minutes + config.max_minutes + 1]
        self._position = state["position"] if state else 0
        self._pacer = Pacer(config.speed)
        self._batch_minutes = config.minutes_per_batch

    async def history(self, minutes: int) -> pa.RecordBatch:
        """The next ``minutes`` minutes of the timeline at once (features warm up on them)."""
        return self._take(minutes)

    async def next_batch(self) -> pa.RecordBatch | None:
        if self._position >= len(self._bounds) - 1:
            return None
        await self._pacer.wait()
        return self._take(self._batch_minutes)

    def _take(self, minutes: int) -> pa.RecordBatch:
        end = min(self._position + minutes, len(self._bounds) - 1)
        start, stop = self._bounds[self._position], self._bounds[end]
        self._position = end
        return table_to_batch(self._timeline.slice(start, stop - start))

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict:
        return {"position": self._position}

    def status(self) -> dict:
        total = len(self._bounds) - 1
        return {
            "kind": "replay",
            "symbols": len(self.symbols),
            "minutes_emitted": self._position,
            "minutes_total": total,
        }
