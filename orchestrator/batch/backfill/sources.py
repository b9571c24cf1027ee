"""Where a backfill's candles come from: data folders, the series in them, and reading them.

A source is a folder in either layout the replay feed reads (a flat folder of candle files
or the hive dataset ``tickcast fetch-history`` writes), optionally labelled with the
exchange name its rows get (``binanceusdm=../shared/data/binance-usdm-1m``). Each symbol
of a source is read at one *base* timeframe per requested timeframe: the files of exactly
that timeframe when the source has them (an exchange's own 5m candles), otherwise the
finest timeframe that divides it (1m candles resampled, as the live pipeline does).

Reading validates candles as the live gate does: invalid rows are dropped and counted, a
repeated open time keeps its last row. File I/O happens only in ``load_series``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from orchestrator.batch.backfill.record import LoadStats
from orchestrator.feeds.replay import candle_files
from orchestrator.market.archives import path_safe_symbol, read_candles
from orchestrator.market.resample import resample_table
from orchestrator.market.schema import CANDLE_SCHEMA
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.market.validate import validate_candles

DEFAULT_EXCHANGE = "binance"  # the exchange of a flat folder nobody labelled


@dataclass(frozen=True)
class DataSource:
    """A candle folder; ``exchange`` names its rows (None: as stored, or DEFAULT_EXCHANGE)."""

    path: Path | str  # a folder, or an object-store URI (s3://bucket/candles)
    exchange: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """``PATH`` or ``EXCHANGE=PATH``; an existing path wins (hive folders hold '=')."""
        if "=" in spec and not Path(spec).exists():
            label, _, path = spec.partition("=")
            if label and "/" not in label:
                return cls(_path(path), label)
        return cls(_path(spec))

    def describe(self) -> str:
        return f"{self.exchange}={self.path}" if self.exchange else str(self.path)


@dataclass(frozen=True)
class SeriesPlan:
    """One symbol of one source, read at ``base`` and resampled to each of ``targets``."""

    source: DataSource
    symbol: str  # as the files name it (path-safe in the hive layout)
    base: str
    files: tuple[Path, ...]
    targets: tuple[str, ...]


def plan_series(
    source: DataSource, symbols: tuple[str, ...] | None, timeframes: tuple[str, ...]
) -> list[SeriesPlan]:
    """Every (symbol, base timeframe) of ``source`` needed for ``timeframes``."""
    by_symbol = _files_by_symbol(source.path, symbols)
    plans = []
    for symbol, by_base in sorted(by_symbol.items()):
        chosen: dict[str, list[str]] = {}
        for target in timeframes:
            base = base_timeframe(tuple(by_base), target)
            if base is not None:
                chosen.setdefault(base, []).append(target)
        for base, targets in sorted(chosen.items(), key=lambda kv: timeframe_ms(kv[0])):
            plans.append(SeriesPlan(source, symbol, base, tuple(by_base[base]), tuple(targets)))
    return plans


def _path(text: str) -> Path | str:
    return text if "://" in text else Path(text)


def _files_by_symbol(path: Path | str, symbols: tuple[str, ...] | None) -> dict[str, dict]:
    wanted = None if symbols is None else {path_safe_symbol(s) for s in symbols}
    found: dict[str, dict[str, list[Path]]] = {}
    for file, symbol, timeframe in candle_files(path):
        if wanted is None or path_safe_symbol(symbol) in wanted:
            found.setdefault(symbol, {}).setdefault(timeframe, []).append(file)
    return found


def base_timeframe(available: tuple[str, ...], target: str) -> str | None:
    """``target`` itself if available, else the finest available timeframe dividing it."""
    if target in available:
        return target
    step = timeframe_ms(target)
    dividing = [tf for tf in available if step % timeframe_ms(tf) == 0]
    return min(dividing, key=timeframe_ms) if dividing else None


def load_series(plan: SeriesPlan) -> tuple[pa.Table, LoadStats]:
    """The plan's base candles: validated, one row per open time, ordered by time."""
    source = plan.source
    exchange = source.exchange or DEFAULT_EXCHANGE
    # A hive file stores its own names (they win over these, as in the replay feed).
    tables = [read_candles(path, exchange, plan.symbol, plan.base) for path in plan.files]
    table = pa.concat_tables(tables)
    if source.exchange is not None:  # a label wins over what a hive file stores
        table = table.set_column(
            0, CANDLE_SCHEMA.field("exchange"), pa.repeat(source.exchange, table.num_rows)
        )
    checked = validate_candles(table, timeframe=plan.base)
    stats = LoadStats(
        files=len(plan.files),
        invalid=checked.rejects.rows.num_rows,
        by_reason=dict(checked.rejects.counts()),
    )
    candles, stats.duplicates = last_per_open_time(checked.valid)
    stats.candles = candles.num_rows
    return candles, stats


def last_per_open_time(candles: pa.Table) -> tuple[pa.Table, int]:
    """Candles of one series ordered by open time, keeping the last row of a repeated time
    (the live gate's rule: last write wins); returns them and how many were dropped."""
    open_time = candles.column("open_time").to_numpy()
    order = np.argsort(open_time, kind="stable")
    ordered = open_time[order]
    keep = np.ones(len(order), dtype=bool)
    keep[:-1] = ordered[1:] != ordered[:-1]  # the last of each run of equal times
    return candles.take(pa.array(order[keep])), int((~keep).sum())


def target_candles(candles: pa.Table, targets: tuple[str, ...]) -> dict[str, pa.Table]:
    """The base candles resampled to each target (complete buckets only)."""
    return {tf: resample_table(candles, tf) for tf in targets}
