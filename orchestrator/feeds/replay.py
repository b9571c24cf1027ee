"""Replay of history files (Parquet/Feather candle files, Binance kline zip archives).

Candles of every selected symbol are merged into one time line and emitted one minute
at a time (every symbol's candle for that minute in one batch), paced like a live feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import resolve_path
from orchestrator.config import ReplayFeedConfig
from orchestrator.feeds.pacing import Pacer
from orchestrator.market.archives import infer_symbol_timeframe, path_safe_symbol, read_candles
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import MINUTE_MS, run_bounds
from orchestrator.market.validate import table_to_batch
from orchestrator.storage import Location, locate

REPLAYABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".zip")
TIMELINE_ORDER = [("open_time", "ascending"), ("symbol", "ascending")]
IDLE_S = 0.5  # how often a replay left without symbols looks for added ones


def replay_files(directory: Path, symbols: tuple[str, ...] | None) -> list[tuple[Path, str]]:
    """(file, symbol) of every 1m candle file to replay, optionally only ``symbols``.

    Two layouts: a flat folder of ``BTC_USDT-1m.parquet`` / ``LINKUSDT-1m-2026-02.zip`` files,
    or the hive dataset ``tickcast fetch-history`` writes
    (``exchange=…/symbol=BTC_USDT/timeframe=1m/*.parquet``).
    """
    found = _one_minute_files(directory)
    wanted = None if symbols is None else {path_safe_symbol(s) for s in symbols}
    chosen = [(p, sym) for p, sym in found if wanted is None or path_safe_symbol(sym) in wanted]
    if not chosen:
        raise FileNotFoundError(f"no 1m candle files for {symbols or 'any symbol'} in {directory}")
    return chosen


def missing_symbols(directory: Path, symbols: Sequence[str]) -> list[str]:
    """Those of ``symbols`` without a 1m candle file in ``directory``, in input order."""
    present = {path_safe_symbol(symbol) for _, symbol in _one_minute_files(directory)}
    return [s for s in symbols if not isinstance(s, str) or path_safe_symbol(s) not in present]


def _one_minute_files(directory: Path) -> list[tuple[Path, str]]:
    return [(path, symbol) for path, symbol, tf in candle_files(directory) if tf == "1m"]


def candle_files(directory: Path | str) -> list[tuple[Path, str, str]]:
    """(file, symbol, timeframe) of every candle file in either layout (see replay_files);
    the backfill reads other timeframes than 1m through this too. ``directory`` may be an
    object-store URI: its files come back as URIs (``read_candles`` reads them)."""
    if "://" in str(directory):
        where = locate(str(directory))
        if not where.local:
            return _object_store_files(where)
        directory = where.local_path()  # file:///…
    directory = Path(directory)
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


def _object_store_files(where: Location) -> list:
    """``candle_files`` of a prefix on an object store (either layout; one listing)."""
    found = []
    for entry in where.files(recursive=True):
        parts = entry.location.path[len(where.path) + 1 :].split("/")
        hive = len(parts) == 4 and parts[0].startswith("exchange=")
        if hive and parts[1].startswith("symbol=") and parts[2].startswith("timeframe="):
            if entry.name.endswith(".parquet"):
                symbol, timeframe = parts[1][7:], parts[2][10:]
                found.append((entry.location.uri, symbol, timeframe))
        elif len(parts) == 1 and entry.name.lower().endswith(REPLAYABLE_SUFFIXES):
            found.append((entry.location.uri, *infer_symbol_timeframe(entry.name)))
    if not found:
        raise FileNotFoundError(f"no candle files in {where}")
    return found


def load_timeline(files: list[tuple[Path, str]], exchange: str) -> pa.Table:
    """Every file's candles on one time line, labelled with the configured exchange name."""
    tables = [read_candles(path, exchange, symbol, "1m") for path, symbol in files]
    table = pa.concat_tables(tables)
    table = table.set_column(
        0, CANDLE_SCHEMA.field("exchange"), pa.array([exchange] * table.num_rows, pa.string())
    )
    return table.sort_by(TIMELINE_ORDER)


class ReplaySource:
    """Replays on a clock: ``_cursor`` is the open time the next batch starts at (one minute
    after the last minute sent) and ``max_minutes`` becomes an end time, fixed once, so adding
    or removing symbols, which changes the minutes the timeline holds, keeps the same clock.
    Only the timeline from the cursor on is kept once symbols change."""

    def __init__(self, config: ReplayFeedConfig, state: dict | None = None):
        self.exchange = config.exchange
        self._directory = resolve_path(config.path)
        self._prefetched: dict[tuple[str, ...], pa.Table] = {}  # files read ahead of an add
        resumed = state if state is not None and "cursor" in state else None
        self._set_timeline(self._load(tuple(resumed["symbols"]) if resumed else config.symbols))
        self.symbols = tuple(sorted(pc.unique(self._timeline.column("symbol")).to_pylist()))
        if resumed:
            self._cursor, self._end = resumed["cursor"], resumed["end"]
            self._emitted = resumed["emitted"]
        else:  # a fresh start, or a snapshot from before symbols could change: {"position": n}
            self._emitted = state["position"] if state else 0
            self._cursor = self._minute_time(self._emitted)
            self._end = (
                None
                if config.max_minutes is None
                else self._minute_time(config.warmup_minutes + config.max_minutes)
            )
        self._pacer = Pacer(config.speed)
        self._batch_minutes = config.minutes_per_batch

    def _load(self, symbols: tuple[str, ...] | None) -> pa.Table:
        if symbols == ():
            return CANDLE_SCHEMA.empty_table()
        return load_timeline(replay_files(self._directory, symbols), self.exchange)

    def _set_timeline(self, timeline: pa.Table) -> None:
        self._timeline = timeline
        times = timeline.column("open_time").to_numpy()
        self._bounds = run_bounds(times)
        self._minute_times = times[self._bounds[:-1]]

    def _minute_time(self, index: int) -> int:
        """Open time of the timeline's ``index``-th minute; past the last, the minute after it."""
        if index < len(self._minute_times):
            return int(self._minute_times[index])
        return int(self._minute_times[-1]) + MINUTE_MS if len(self._minute_times) else 0

    def _span(self) -> tuple[int, int]:
        """Indices of the minutes still to send: from the cursor to the end time."""
        first = int(np.searchsorted(self._minute_times, self._cursor))
        if self._end is None:
            return first, len(self._minute_times)
        return first, max(first, int(np.searchsorted(self._minute_times, self._end)))

    async def history(self, minutes: int) -> pa.RecordBatch:
        """The next ``minutes`` minutes of the timeline at once (features warm up on them)."""
        return self._take(minutes)

    async def next_batch(self) -> pa.RecordBatch | None:
        first, stop = self._span()
        if first >= stop:
            if self.symbols or (self._end is not None and self._cursor >= self._end):
                return None
            await asyncio.sleep(IDLE_S)  # every symbol removed: wait for added ones, not done
            return table_to_batch(CANDLE_SCHEMA.empty_table())
        await self._pacer.wait()
        return self._take(self._batch_minutes)

    def _take(self, minutes: int) -> pa.RecordBatch:
        first, stop = self._span()
        end = min(first + minutes, stop)
        start_row, stop_row = self._bounds[first], self._bounds[end]
        if end > first:
            self._cursor = int(self._minute_times[end - 1]) + MINUTE_MS
            self._emitted += end - first
        return table_to_batch(self._timeline.slice(start_row, stop_row - start_row))

    def _ahead(self) -> pa.Table:
        """The timeline from the cursor on (what is left to send)."""
        start = self._bounds[self._span()[0]]
        return self._timeline.slice(start)

    async def unknown_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Those without a 1m candle file in the replayed folder."""
        return missing_symbols(self._directory, symbols)

    async def add_symbols(self, symbols: Sequence[str], warmup_minutes: int) -> pa.RecordBatch:
        """Loads their files: their candles in the ``warmup_minutes`` before the cursor are
        returned, those from the cursor on join the timeline."""
        unknown = await self.unknown_symbols(symbols)
        if unknown:
            raise ValueError(f"no 1m candle files in {self._directory} for {unknown[:5]}")
        carried = {path_safe_symbol(s) for s in self.symbols}
        new = tuple(s for s in dict.fromkeys(symbols) if path_safe_symbol(s) not in carried)
        if not new:
            return table_to_batch(CANDLE_SCHEMA.empty_table())
        added = self._prefetched.pop(new, None) or self._load(new)
        times = added.column("open_time")
        ahead = pc.greater_equal(times, self._cursor)
        since = pc.greater_equal(times, self._cursor - warmup_minutes * MINUTE_MS)
        history = added.filter(pc.and_(since, pc.invert(ahead)))
        timeline = pa.concat_tables([self._ahead(), added.filter(ahead)])
        self._set_timeline(timeline.sort_by(TIMELINE_ORDER))
        loaded = pc.unique(added.column("symbol")).to_pylist()
        self.symbols = tuple(sorted({*self.symbols, *loaded}))
        return table_to_batch(history)

    async def prefetch(self, symbols: Sequence[str], warmup_minutes: int) -> None:
        """Reads their files now, in a thread (the feed keeps running); kept for add_symbols."""
        carried = {path_safe_symbol(s) for s in self.symbols}
        new = tuple(s for s in dict.fromkeys(symbols) if path_safe_symbol(s) not in carried)
        if new and not missing_symbols(self._directory, new):
            self._prefetched = {new: await asyncio.to_thread(self._load, new)}

    def remove_symbols(self, symbols: Sequence[str]) -> None:
        gone = set(symbols) & set(self.symbols)
        if gone:
            ahead = self._ahead()
            kept = pc.invert(pc.is_in(ahead.column("symbol"), pa.array(sorted(gone), pa.string())))
            self._set_timeline(ahead.filter(kept))
            self.symbols = tuple(s for s in self.symbols if s not in gone)

    async def close(self) -> None:
        return None

    def snapshot(self) -> dict:
        return {
            "cursor": self._cursor,
            "end": self._end,
            "emitted": self._emitted,
            "symbols": list(self.symbols),
        }

    def status(self) -> dict:
        first, stop = self._span()
        return {
            "kind": "replay",
            "symbols": len(self.symbols),
            "minutes_emitted": self._emitted,
            "minutes_total": self._emitted + stop - first,
        }
